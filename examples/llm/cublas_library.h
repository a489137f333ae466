// examples/llm/cublas_library.h — cuBLAS, loaded at run time.
//
// The demo's device matmuls go through cublasGemmEx. The library is opened with dlopen
// rather than linked, so a binary built here runs on a GPU machine that has only the
// driver and a pip wheel's libcublas.so.13 (LD_LIBRARY_PATH or KVTIER_CUBLAS naming it), and
// still runs where there is no cuBLAS at all: Load() says why not and the caller falls back
// to the CPU matmuls. The function types come from cublas_v2.h, so a signature that changed
// between toolkits fails to compile rather than to run.
//
// Every cuBLAS call is checked; an error is a Status naming the call and cuBLAS's reason.
//
// Thread safety: Gemm may be called from any thread (the handle's stream is set and used
// under a lock).

#ifndef KVTIER_EXAMPLES_LLM_CUBLAS_LIBRARY_H_
#define KVTIER_EXAMPLES_LLM_CUBLAS_LIBRARY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier::llm {

class CublasLibrary {
 public:
  // The library Load opens: $KVTIER_CUBLAS when set, else "libcublas.so.13".
  static std::string LibraryName();

  // Opens the library, resolves its functions and creates a handle on the calling thread's
  // current CUDA device (create the CUDA Device first). Unavailable naming dlopen / dlsym /
  // cublasCreate and the reason; Unimplemented in a build without CUDA.
  static absl::StatusOr<std::unique_ptr<CublasLibrary>> Load();

  ~CublasLibrary();
  CublasLibrary(const CublasLibrary&) = delete;
  CublasLibrary& operator=(const CublasLibrary&) = delete;

  // y [rows][n] (float32) = x [rows][k] · w [n][k]ᵀ, x and w fp16 (dtype 1) or bf16 (dtype 2)
  // (DType's values), accumulated in float32, enqueued on `cuda_stream`. Addresses are
  // device addresses. Internal naming cublasGemmEx and its status on failure.
  absl::Status Gemm(void* cuda_stream, int dtype, uint32_t rows, uint32_t k, uint32_t n, uint64_t x,
                    uint64_t w, uint64_t y) const;

  // The path the library was opened from, as dlopen was given it.
  const std::string& path() const { return path_; }

 private:
  struct Api;
  CublasLibrary(std::string path, std::unique_ptr<Api> api);

  std::string path_;
  std::unique_ptr<Api> api_;
};

}  // namespace kvtier::llm

#endif  // KVTIER_EXAMPLES_LLM_CUBLAS_LIBRARY_H_
