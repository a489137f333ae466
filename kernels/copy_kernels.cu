// kernels/copy_kernels.cu — CUDA implementations of the copy kernels (see copy_kernels.h).
//
// Kernels only: no Abseil, no Status. Each launcher enqueues on the caller's stream and
// returns the launch's cudaError_t; copy_kernels.cc turns it into a Status.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/copy_kernels_internal.h"

namespace kvtier::copy_kernels_internal {
namespace {

constexpr unsigned kThreadsPerBlock = 256;
// Enough blocks to fill an H100 several times over; the grid-stride loop covers the rest.
constexpr size_t kMaxBlocks = 8192;

__global__ void FillPatternKernel(unsigned char* dst, size_t bytes, uint64_t seed) {
  const size_t words = (bytes + 7) / 8;
  const bool aligned = (reinterpret_cast<uintptr_t>(dst) & 7) == 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t w = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < words;
       w += stride) {
    const uint64_t value = FillPatternWord(seed, w);
    const size_t offset = w * 8;
    if (aligned && offset + 8 <= bytes) {
      *reinterpret_cast<uint64_t*>(dst + offset) = value;  // little-endian, as on the host
    } else {
      const size_t count = bytes - offset < 8 ? bytes - offset : 8;
      for (size_t b = 0; b < count; ++b) {
        dst[offset + b] = static_cast<unsigned char>(value >> (8 * b));
      }
    }
  }
}

}  // namespace

int LaunchFillPatternCuda(void* cuda_stream, uint64_t dst, size_t bytes, uint64_t seed) {
  if (bytes == 0) return cudaSuccess;
  const size_t words = (bytes + 7) / 8;
  const size_t blocks = std::min(kMaxBlocks, (words + kThreadsPerBlock - 1) / kThreadsPerBlock);
  FillPatternKernel<<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0,
                      static_cast<cudaStream_t>(cuda_stream)>>>(
      reinterpret_cast<unsigned char*>(static_cast<uintptr_t>(dst)), bytes, seed);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kvtier::copy_kernels_internal
