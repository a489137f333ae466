// examples/llm/device_gemm_internal.h — what device_gemm.cc and device_gemm.cu share.
//
// Plain C++17 that both the host compiler and nvcc accept (no Abseil): the counter-based
// random weight, compiled for host and device so that the CPU reference and the CUDA kernel
// draw the same bits, and the CUDA launcher's declaration.

#ifndef KVTIER_EXAMPLES_LLM_DEVICE_GEMM_INTERNAL_H_
#define KVTIER_EXAMPLES_LLM_DEVICE_GEMM_INTERNAL_H_

#include <cstdint>

#include "kernels/numeric.h"

namespace kvtier::device_gemm_internal {

// DType's values (kvtier/geometry.h), which the .cu file cannot include.
constexpr int kDTypeFloat16 = 1;
constexpr int kDTypeBFloat16 = 2;

// Element `index` of tensor `stream` of the weights drawn from `seed`: uniform in
// [-2^23, 2^23) · step, as fp16 or bf16 bits. A stateless hash of (seed, stream, index), so any
// thread computes any element; integer arithmetic, one exact int→float conversion and one
// float multiply (rounded to nearest), then numeric's round-to-nearest-even conversion: the
// same bits on the CPU and on a GPU.
KVTIER_HOST_DEVICE inline uint16_t RandomWeightBits(uint64_t seed, uint64_t stream, uint64_t index,
                                                    float step, int dtype) {
  uint64_t z = seed + stream * 0xd1b54a32d192ed03ull + (index + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const int32_t centered = static_cast<int32_t>(z >> 40) - (1 << 23);  // exact in a float
  const float value = static_cast<float>(centered) * step;
  return dtype == kDTypeBFloat16 ? numeric::FloatToBf16Bits(value)
                                 : numeric::FloatToHalfBits(value);
}

// Fills out[0, count) with RandomWeightBits(seed, stream, i, step, dtype); 0 or a
// cudaError_t.
int LaunchFillUniformCuda(void* cuda_stream, int dtype, uint64_t out, uint64_t count, uint64_t seed,
                          uint64_t stream, float step);

}  // namespace kvtier::device_gemm_internal

#endif  // KVTIER_EXAMPLES_LLM_DEVICE_GEMM_INTERNAL_H_
