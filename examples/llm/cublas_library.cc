// examples/llm/cublas_library.cc — dlopen'ed cuBLAS (see cublas_library.h).

#include "examples/llm/cublas_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"

#if defined(KVTIER_HAVE_CUDA)
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

namespace kvtier::llm {

std::string CublasLibrary::LibraryName() {
  const char* env = std::getenv("KVTIER_CUBLAS");
  return env != nullptr && *env != '\0' ? env : "libcublas.so.13";
}

#if defined(KVTIER_HAVE_CUDA)

namespace {

// The exact types of the functions resolved, checked against cublas_v2.h below (cublasGemmEx
// has a C++ overload too, so decltype would be ambiguous).
using CreateFn = cublasStatus_t (*)(cublasHandle_t*);
using DestroyFn = cublasStatus_t (*)(cublasHandle_t);
using SetStreamFn = cublasStatus_t (*)(cublasHandle_t, cudaStream_t);
using GetStatusStringFn = const char* (*)(cublasStatus_t);
using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                    int, const void*, const void*, cudaDataType, int, const void*,
                                    cudaDataType, int, const void*, void*, cudaDataType, int,
                                    cublasComputeType_t, cublasGemmAlgo_t);
[[maybe_unused]] const CreateFn kCheckCreate = &cublasCreate_v2;
[[maybe_unused]] const DestroyFn kCheckDestroy = &cublasDestroy_v2;
[[maybe_unused]] const SetStreamFn kCheckSetStream = &cublasSetStream_v2;
[[maybe_unused]] const GetStatusStringFn kCheckStatusString = &cublasGetStatusString;
[[maybe_unused]] const GemmExFn kCheckGemmEx = static_cast<GemmExFn>(&cublasGemmEx);

}  // namespace

struct CublasLibrary::Api {
  void* library = nullptr;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  GetStatusStringFn status_string = nullptr;
  GemmExFn gemm_ex = nullptr;
  cublasHandle_t handle = nullptr;
  mutable absl::Mutex mu;  // the handle's stream is per handle: set and use under it

  std::string Reason(cublasStatus_t status) const {
    return absl::StrFormat("%s (%d)", status_string != nullptr ? status_string(status) : "?",
                           static_cast<int>(status));
  }
  ~Api() {
    if (handle != nullptr) destroy(handle);
    if (library != nullptr) dlclose(library);
  }
};

CublasLibrary::CublasLibrary(std::string path, std::unique_ptr<Api> api)
    : path_(std::move(path)), api_(std::move(api)) {}

CublasLibrary::~CublasLibrary() = default;

absl::StatusOr<std::unique_ptr<CublasLibrary>> CublasLibrary::Load() {
  const std::string path = LibraryName();
  auto api = std::make_unique<Api>();
  api->library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->library == nullptr) {
    const char* why = dlerror();
    return absl::UnavailableError(
        absl::StrFormat("dlopen(%s): %s", path, why != nullptr ? why : "unknown error"));
  }
  auto resolve = [&](const char* name, auto* fn) -> absl::Status {
    dlerror();
    void* symbol = dlsym(api->library, name);
    if (symbol == nullptr) {
      const char* why = dlerror();
      return absl::UnavailableError(
          absl::StrFormat("dlsym(%s, %s): %s", path, name, why != nullptr ? why : "null symbol"));
    }
    *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(symbol);
    return absl::OkStatus();
  };
  for (absl::Status s :
       {resolve("cublasCreate_v2", &api->create), resolve("cublasDestroy_v2", &api->destroy),
        resolve("cublasSetStream_v2", &api->set_stream),
        resolve("cublasGetStatusString", &api->status_string),
        resolve("cublasGemmEx", &api->gemm_ex)}) {
    if (!s.ok()) return s;
  }
  if (const cublasStatus_t status = api->create(&api->handle); status != CUBLAS_STATUS_SUCCESS) {
    api->handle = nullptr;
    return absl::UnavailableError(
        absl::StrFormat("cublasCreate (%s): %s", path, api->Reason(status)));
  }
  return std::unique_ptr<CublasLibrary>(new CublasLibrary(path, std::move(api)));
}

absl::Status CublasLibrary::Gemm(void* cuda_stream, int dtype, uint32_t rows, uint32_t k,
                                 uint32_t n, uint64_t x, uint64_t w, uint64_t y) const {
  const cudaDataType type = dtype == 2 ? CUDA_R_16BF : CUDA_R_16F;
  const float alpha = 1.0f, beta = 0.0f;
  absl::MutexLock lock(&api_->mu);
  if (const cublasStatus_t s =
          api_->set_stream(api_->handle, static_cast<cudaStream_t>(cuda_stream));
      s != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError(absl::StrFormat("cublasSetStream: %s", api_->Reason(s)));
  }
  // Column-major view: yᵀ [n][rows] = (w viewed as k x n)ᵀ · (x viewed as k x rows).
  const cublasStatus_t s = api_->gemm_ex(
      api_->handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(rows),
      static_cast<int>(k), &alpha, reinterpret_cast<const void*>(w), type, static_cast<int>(k),
      reinterpret_cast<const void*>(x), type, static_cast<int>(k), &beta,
      reinterpret_cast<void*>(y), CUDA_R_32F, static_cast<int>(n), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError(absl::StrFormat("cublasGemmEx(%s, rows %d, k %d, n %d): %s",
                                               dtype == 2 ? "bf16" : "fp16", rows, k, n,
                                               api_->Reason(s)));
  }
  return absl::OkStatus();
}

#else  // !KVTIER_HAVE_CUDA

struct CublasLibrary::Api {};

CublasLibrary::CublasLibrary(std::string path, std::unique_ptr<Api> api)
    : path_(std::move(path)), api_(std::move(api)) {}

CublasLibrary::~CublasLibrary() = default;

absl::StatusOr<std::unique_ptr<CublasLibrary>> CublasLibrary::Load() {
  return absl::UnimplementedError("cuBLAS: kvtier was built without CUDA");
}

absl::Status CublasLibrary::Gemm(void*, int, uint32_t, uint32_t, uint32_t, uint64_t, uint64_t,
                                 uint64_t) const {
  return absl::UnimplementedError("cublasGemmEx: kvtier was built without CUDA");
}

#endif  // KVTIER_HAVE_CUDA

}  // namespace kvtier::llm
