// kernels/copy_kernels_internal.h — what copy_kernels.cc and copy_kernels.cu share.
//
// Plain C++ that both the host compiler and nvcc accept (no Abseil): the pattern word
// function, compiled for host and device so the CPU reference and the CUDA kernel cannot
// drift apart, and the CUDA launcher's declaration.

#ifndef KVTIER_KERNELS_COPY_KERNELS_INTERNAL_H_
#define KVTIER_KERNELS_COPY_KERNELS_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define KVTIER_HOST_DEVICE __host__ __device__
#else
#define KVTIER_HOST_DEVICE
#endif

namespace kvtier::copy_kernels_internal {

// splitmix64's output number `word_index` (0-based) for initial state `seed`.
KVTIER_HOST_DEVICE inline uint64_t FillPatternWord(uint64_t seed, uint64_t word_index) {
  uint64_t z = seed + (word_index + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

#if defined(KVTIER_HAVE_CUDA)
// Launches the fill kernel on `cuda_stream` (a cudaStream_t) for the device range
// [dst, dst+bytes); returns the cudaError_t of the launch (0 = success).
int LaunchFillPatternCuda(void* cuda_stream, uint64_t dst, size_t bytes, uint64_t seed);
#endif

}  // namespace kvtier::copy_kernels_internal

#endif  // KVTIER_KERNELS_COPY_KERNELS_INTERNAL_H_
