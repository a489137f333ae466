// kernels/paged_kernels.h — moving KV blocks between kvtier's block layout and an inference
// engine's paged KV pool, with a CPU reference.
//
// A kvtier block is [layer][part][token][kv_head][head_dim]. The pool is one tensor per
// layer, [parts][num_pages][page] where a page is [page_tokens][kv_heads][head_dim] (NHD,
// vLLM's FlashAttention layout) or [kv_heads][page_tokens][head_dim] (HND); page_tokens is
// the geometry's block_tokens. The parts are K and V ([2][num_pages][page], vLLM's
// [2, num_blocks, block_size, heads, dim]), or for an mla geometry the one latent: the layer
// tensor is [num_pages][page_tokens][head_dim], vLLM's MLA [num_blocks, block_size, 576]
// (with one KV head, NHD and HND are the same bytes). A transfer moves whole blocks, all layers or
// one layer (for layer-wise overlap), driven by a block → page mapping:
//   * gather  (kPoolToBlocks): pool pages → kvtier blocks (store / offload);
//   * scatter (kBlocksToPool): kvtier blocks → pool pages (load / onboard).
// The blocks may be device memory (a device-to-device kernel) or pinned host memory: then
// the kernel reads or writes host memory directly across the bus (zero-copy), which beats a
// DMA per page when pages are small, since one launch replaces thousands of copy calls.
// ChooseHostPagedPath decides between that kernel and per-part DMA copies.
//
// Every kernel is a KernelLaunch: `cpu` is the reference the emulated device runs, `cuda` the
// GPU kernel (empty when kvtier is built without CUDA). Both move the same bytes.

#ifndef KVTIER_KERNELS_PAGED_KERNELS_H_
#define KVTIER_KERNELS_PAGED_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier {

struct PagedTransfer {
  enum class Direction : uint8_t { kPoolToBlocks, kBlocksToPool };

  Geometry geometry;
  PageLayout layout = PageLayout::kNhd;
  Direction direction = Direction::kPoolToBlocks;
  uint32_t num_pages = 0;          // pages in each layer tensor
  std::vector<DevicePtr> layers;   // each layer tensor's base; geometry.num_layers of them
  int layer = -1;                  // the one layer to move, or -1 for all layers
  // Where the blocks are: device memory, or pinned host memory (zero-copy). Each entry of
  // `blocks` is a block's base address: DevicePtr::address(), or a host pointer's value.
  bool blocks_on_host = false;
  std::vector<uint64_t> blocks;
  std::vector<uint32_t> pages;     // pages[i]: the page of blocks[i]

  // OK, or InvalidArgument naming what is wrong (geometry, layer count or null layer,
  // layer out of range, blocks/pages length mismatch, a null block, a page out of range,
  // two blocks scattered to one page).
  absl::Status Validate() const;
  // Bytes moved (each way).
  size_t bytes() const;
};

// The transfer as a kernel. Invalid transfers fail when launched (Stream::Launch returns the
// error on CUDA; the emulated stream reports it from Synchronize), naming the problem. On the
// emulated device, host bytes count against the emulated link's bandwidth like a copy.
KernelLaunch MakePagedTransferKernel(PagedTransfer transfer);

// CPU reference: moves the bytes, resolving device ranges with `resolve` (a range it cannot
// resolve is an InvalidArgument naming it) and using host block addresses as they are.
absl::Status PagedTransferCpu(const PagedTransfer& transfer,
                              const KernelLaunch::Resolver& resolve);

// Host ↔ pool transfers: per-part DMA copies (one CopyOp per block, layer and K/V; NHD only,
// since an HND page part is not contiguous with the block's) or the zero-copy kernel.
enum class HostPagedPath { kDma, kZeroCopyKernel };
// DMA when the layout allows it and each contiguous part is at least `dma_min_part_bytes`;
// the kernel otherwise. bench/run gpu-copy measures the crossover on a given machine.
HostPagedPath ChooseHostPagedPath(const Geometry& geometry, PageLayout layout,
                                  size_t dma_min_part_bytes);

}  // namespace kvtier

#endif  // KVTIER_KERNELS_PAGED_KERNELS_H_
