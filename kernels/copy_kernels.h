// kernels/copy_kernels.h — kernels that fill and move device bytes, each with a CPU reference.
//
// Every kernel here is built as a KernelLaunch: `cpu` is the reference (run by the emulated
// device in stream order, through its resolver) and `cuda` the GPU implementation (empty
// when kvtier is built without CUDA). Both produce the same bytes.
//
// The fill pattern is deterministic in (seed, byte offset from the start of the range): word
// w (bytes [8w, 8w+8)) holds splitmix64's w-th output for state `seed`, least significant
// byte first; a final partial word is truncated. Tests and benchmarks use it to fill device
// memory without host copies and to check bytes that came back.

#ifndef KVTIER_KERNELS_COPY_KERNELS_H_
#define KVTIER_KERNELS_COPY_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "kvtier/device.h"

namespace kvtier {

// Fills [dst, dst+bytes) with the pattern for `seed`. A range that is not device memory of the
// device the kernel runs on is an error raised when the kernel runs.
KernelLaunch MakeFillKernel(DevicePtr dst, size_t bytes, uint64_t seed);

// CPU reference of the fill kernel, for any host buffer.
void FillPatternCpu(void* dst, size_t bytes, uint64_t seed);

// Offset of the first byte of [data, data+bytes) that differs from the pattern for `seed`,
// or `bytes` if all of them match.
size_t FindPatternMismatch(const void* data, size_t bytes, uint64_t seed);

}  // namespace kvtier

#endif  // KVTIER_KERNELS_COPY_KERNELS_H_
