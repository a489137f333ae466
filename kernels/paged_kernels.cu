// kernels/paged_kernels.cu — the paged-transfer kernel (see paged_kernels.h).
//
// One CTA per (block, layer, K/V) part. A part is block_tokens × kv_heads rows of head_dim
// elements; both sides are read and written in 16-byte vectors when every row and base is
// 16-byte aligned (the common case: head_dim a multiple of 8 at 2-byte dtypes), in 4-byte
// words when 4-aligned, bytes otherwise. Each thread keeps several independent vectors in
// flight, which is what a zero-copy read of pinned host memory across PCIe needs to reach
// the link's bandwidth.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/paged_kernels_internal.h"

namespace kvtier::paged_kernels_internal {
namespace {

constexpr unsigned kThreadsPerBlock = 256;
constexpr unsigned kUnroll = 4;

template <typename Word>
__device__ void MovePart(unsigned char* block_part, unsigned char* pool_part,
                         const PagedKernelArgs& a) {
  const uint64_t words = a.part_bytes / sizeof(Word);
  const uint64_t step = uint64_t{blockDim.x} * kUnroll;
  for (uint64_t base = threadIdx.x; base < words; base += step) {
    Word values[kUnroll];
    uint64_t pool_offsets[kUnroll];
#pragma unroll
    for (unsigned u = 0; u < kUnroll; ++u) {
      const uint64_t w = base + uint64_t{u} * blockDim.x;
      if (w >= words) break;
      const uint64_t offset = w * sizeof(Word);
      pool_offsets[u] = PoolOffset(offset, a.row_bytes, a.block_tokens, a.kv_heads, a.hnd != 0);
      values[u] = a.to_pool ? *reinterpret_cast<const Word*>(block_part + offset)
                            : *reinterpret_cast<const Word*>(pool_part + pool_offsets[u]);
    }
#pragma unroll
    for (unsigned u = 0; u < kUnroll; ++u) {
      const uint64_t w = base + uint64_t{u} * blockDim.x;
      if (w >= words) break;
      const uint64_t offset = w * sizeof(Word);
      if (a.to_pool) {
        *reinterpret_cast<Word*>(pool_part + pool_offsets[u]) = values[u];
      } else {
        *reinterpret_cast<Word*>(block_part + offset) = values[u];
      }
    }
  }
}

// The argument block is large (~7 KiB) and lives in the kernel's parameter space; reading it
// through a const reference keeps it there instead of copying it to local memory.
__global__ void __launch_bounds__(kThreadsPerBlock)
    PagedTransferKernel(const __grid_constant__ PagedKernelArgs args) {
  const uint32_t piece = blockIdx.x;
  const uint32_t part = piece % args.parts;
  const uint32_t rest = piece / args.parts;
  const uint32_t layer = args.first_layer + rest % args.num_layers;
  const uint32_t block = rest / args.num_layers;
  const uint64_t layer_bytes = args.parts * args.part_bytes;
  auto* block_part = reinterpret_cast<unsigned char*>(
      static_cast<uintptr_t>(args.block_addr[block] + layer * layer_bytes + part * args.part_bytes));
  auto* pool_part = reinterpret_cast<unsigned char*>(static_cast<uintptr_t>(
      args.layer_base[layer] +
      (uint64_t{part} * args.num_pages + args.page[block]) * args.part_bytes));
  const uintptr_t alignment = reinterpret_cast<uintptr_t>(block_part) |
                              reinterpret_cast<uintptr_t>(pool_part) | args.row_bytes;
  if (alignment % 16 == 0) {
    MovePart<uint4>(block_part, pool_part, args);
  } else if (alignment % 4 == 0) {
    MovePart<uint32_t>(block_part, pool_part, args);
  } else {
    MovePart<unsigned char>(block_part, pool_part, args);
  }
}

}  // namespace

int LaunchPagedTransferCuda(void* cuda_stream, const PagedKernelArgs& args) {
  if (args.num_blocks == 0 || args.num_layers == 0) return cudaSuccess;
  const unsigned grid = args.num_blocks * args.num_layers * args.parts;
  PagedTransferKernel<<<grid, kThreadsPerBlock, 0, static_cast<cudaStream_t>(cuda_stream)>>>(args);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kvtier::paged_kernels_internal
