// examples/llm/device_gemm.h — the DeviceDecoder's two device kernels, as KernelLaunch
// builders (kvtier/device.h): a matmul with fp16/bf16 inputs and float32 output, and the
// counter-based random fill of a weight matrix.
//
// Matmul: `cuda` is cublasGemmEx (fp32 accumulation, cuBLAS's own order), `cpu` the reference
// the emulated device runs: every input converted exactly to float, dot products accumulated
// in float with 8 interleaved partial sums. Both read the same rounded inputs, so they differ
// only by accumulation order: ~k · 2^-24 relative to Σ|x·w| at worst, ~√k · 2^-24 typically.
//
// Fill: both implementations compute device_gemm_internal::RandomWeightBits, bit for bit the
// same on the CPU and the GPU, so a model drawn on the emulated device has exactly the
// weights the GPU draws.

#ifndef KVTIER_EXAMPLES_LLM_DEVICE_GEMM_H_
#define KVTIER_EXAMPLES_LLM_DEVICE_GEMM_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier::llm {

class CublasLibrary;

// y [rows][n] = x [rows][k] · w [n][k]ᵀ (w in Hugging Face's [out][in] layout).
struct DeviceGemmParams {
  DType dtype = DType::kFloat16;  // of x and w: kFloat16 or kBFloat16
  uint32_t rows = 0;
  uint32_t k = 0;
  uint32_t n = 0;
  DevicePtr x;  // [rows][k] dtype
  DevicePtr w;  // [n][k] dtype
  DevicePtr y;  // [rows][n] float32

  absl::Status Validate() const;  // InvalidArgument naming the bad field
};

// `cublas` runs the CUDA implementation; with null, a CUDA launch fails with
// FailedPrecondition (the emulated device never needs it). An invalid `p` makes both
// implementations return the Validate error.
KernelLaunch MakeDeviceGemmKernel(const DeviceGemmParams& p, const CublasLibrary* cublas);

// out[i] = RandomWeightBits(seed, stream, i): uniform with standard deviation `stddev`
// (|value| < stddev·√3), as dtype.
struct FillUniformParams {
  DType dtype = DType::kFloat16;  // kFloat16 or kBFloat16
  uint64_t count = 0;
  uint64_t seed = 0;
  uint64_t stream = 0;  // which tensor: tensors of one seed draw independent values
  double stddev = 0;    // finite, > 0
  DevicePtr out;        // count elements of dtype

  absl::Status Validate() const;  // InvalidArgument naming the bad field
};
KernelLaunch MakeFillUniformKernel(const FillUniformParams& p);

}  // namespace kvtier::llm

#endif  // KVTIER_EXAMPLES_LLM_DEVICE_GEMM_H_
