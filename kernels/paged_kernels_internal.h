// kernels/paged_kernels_internal.h — what paged_kernels.cc and paged_kernels.cu share.
//
// Plain C++ that both the host compiler and nvcc accept (no Abseil): the argument block of
// one launch of the paged-transfer kernel (passed by value as the kernel's parameter, so a
// launch owns its block table and nothing has to outlive the enqueue call), the offset
// arithmetic both the CPU reference and the CUDA kernel use, and the launcher's declaration.

#ifndef KVTIER_KERNELS_PAGED_KERNELS_INTERNAL_H_
#define KVTIER_KERNELS_PAGED_KERNELS_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "kernels/numeric.h"  // KVTIER_HOST_DEVICE

namespace kvtier::paged_kernels_internal {

// Layers and blocks one launch carries in its parameter block. 128 layer bases + 512
// (address, page) pairs are ~7 KiB: within the 32 KiB kernel-parameter limit of CUDA ≥ 12.1
// on Volta and newer. Larger transfers are split into several launches.
constexpr uint32_t kMaxLayers = 128;
constexpr uint32_t kMaxBlocksPerLaunch = 512;

struct PagedKernelArgs {
  uint64_t layer_base[kMaxLayers];          // device address of each layer's [2][pages][...]
  uint64_t block_addr[kMaxBlocksPerLaunch]; // kvtier-layout block base (device or mapped host)
  uint32_t page[kMaxBlocksPerLaunch];       // the pool page of each block
  uint32_t num_blocks;                      // entries used in block_addr / page
  uint32_t first_layer;                     // layers [first_layer, first_layer + num_layers)
  uint32_t num_layers;
  uint32_t num_pages;                       // pages per layer tensor
  uint32_t block_tokens;
  uint32_t kv_heads;
  uint32_t row_bytes;                       // head_dim * element size
  uint32_t hnd;                             // 1: pool pages are [heads][tokens][dim]
  uint32_t to_pool;                         // 1: blocks → pool (scatter); 0: pool → blocks
  uint64_t part_bytes;                      // one layer's K (or V, or latent) of one block
  uint32_t parts;                           // Geometry::parts(): 2 (K, V) or 1 (mla latent)
};

// Byte offset, inside one page's K (or V) part, of block-part byte `offset` (block parts are
// token-major [tokens][heads][dim]).
KVTIER_HOST_DEVICE inline uint64_t PoolOffset(uint64_t offset, uint32_t row_bytes,
                                              uint32_t block_tokens, uint32_t kv_heads,
                                              bool hnd) {
  if (!hnd) return offset;
  const uint64_t row = offset / row_bytes;  // token * kv_heads + head
  const uint64_t col = offset % row_bytes;
  const uint64_t token = row / kv_heads;
  const uint64_t head = row % kv_heads;
  return (head * block_tokens + token) * row_bytes + col;
}

#if defined(KVTIER_HAVE_CUDA)
// Enqueues one launch on `cuda_stream` (a cudaStream_t); returns the cudaError_t of the
// launch (0 = success). Block addresses may be pinned host memory (read or written across
// the bus: the zero-copy path).
int LaunchPagedTransferCuda(void* cuda_stream, const PagedKernelArgs& args);
#endif

}  // namespace kvtier::paged_kernels_internal

#endif  // KVTIER_KERNELS_PAGED_KERNELS_INTERNAL_H_
