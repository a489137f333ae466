// examples/llm/device_gemm.cu — the random-weight fill kernel (the matmuls are cuBLAS's).

#include <cuda_runtime.h>

#include "examples/llm/device_gemm_internal.h"

namespace kvtier::device_gemm_internal {
namespace {

__global__ void FillUniformKernel(int dtype, uint16_t* out, uint64_t count, uint64_t seed,
                                  uint64_t stream, float step) {
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  for (uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += stride) {
    out[i] = RandomWeightBits(seed, stream, i, step, dtype);
  }
}

}  // namespace

int LaunchFillUniformCuda(void* cuda_stream, int dtype, uint64_t out, uint64_t count, uint64_t seed,
                          uint64_t stream, float step) {
  if (count == 0) return cudaSuccess;
  constexpr unsigned kThreads = 256;
  const uint64_t wanted = (count + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < 65536 ? wanted : 65536);
  FillUniformKernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(cuda_stream)>>>(
      dtype, reinterpret_cast<uint16_t*>(out), count, seed, stream, step);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kvtier::device_gemm_internal
