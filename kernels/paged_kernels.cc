// kernels/paged_kernels.cc — the paged-transfer kernel's validation, CPU reference and
// KernelLaunch builder (see paged_kernels.h). The CUDA kernel lives in paged_kernels.cu.

#include "kernels/paged_kernels.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kernels/paged_kernels_internal.h"

#if defined(KVTIER_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace kvtier {
namespace {

using paged_kernels_internal::kMaxBlocksPerLaunch;
using paged_kernels_internal::kMaxLayers;
using paged_kernels_internal::PagedKernelArgs;
using paged_kernels_internal::PoolOffset;

constexpr char kKernelName[] = "paged_transfer";

uint32_t FirstLayer(const PagedTransfer& t) { return t.layer < 0 ? 0 : t.layer; }
uint32_t LayerCount(const PagedTransfer& t) {
  return t.layer < 0 ? t.geometry.num_layers : 1;
}

// Moves one (block, layer, part) between its block bytes and its page bytes.
void MovePart(const PagedTransfer& t, unsigned char* block_part, unsigned char* pool_part) {
  const Geometry& g = t.geometry;
  const bool to_pool = t.direction == PagedTransfer::Direction::kBlocksToPool;
  if (t.layout == PageLayout::kNhd) {
    if (to_pool) {
      std::memcpy(pool_part, block_part, g.part_bytes());
    } else {
      std::memcpy(block_part, pool_part, g.part_bytes());
    }
    return;
  }
  const uint32_t row_bytes = static_cast<uint32_t>(size_t{g.head_dim} * g.element_bytes());
  for (uint64_t offset = 0; offset < g.part_bytes(); offset += row_bytes) {
    unsigned char* pool_row =
        pool_part + PoolOffset(offset, row_bytes, g.block_tokens, g.num_kv_heads, true);
    if (to_pool) {
      std::memcpy(pool_row, block_part + offset, row_bytes);
    } else {
      std::memcpy(block_part + offset, pool_row, row_bytes);
    }
  }
}

}  // namespace

absl::Status PagedTransfer::Validate() const {
  if (absl::Status s = geometry.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("paged transfer: %s", s.message()));
  }
  if (layout != PageLayout::kNhd && layout != PageLayout::kHnd) {
    return absl::InvalidArgumentError(
        absl::StrFormat("paged transfer: unknown page layout %d", static_cast<int>(layout)));
  }
  if (direction != Direction::kPoolToBlocks && direction != Direction::kBlocksToPool) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "paged transfer: unknown direction %d", static_cast<int>(direction)));
  }
  if (geometry.num_layers > kMaxLayers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "paged transfer: %u layers, at most %u supported", geometry.num_layers, kMaxLayers));
  }
  if (layers.size() != geometry.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("paged transfer: %d layer tensors given, the geometry has %u layers",
                        layers.size(), geometry.num_layers));
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].is_null()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("paged transfer: layer tensor %d is null", l));
    }
  }
  if (layer < -1 || layer >= static_cast<int>(geometry.num_layers)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "paged transfer: layer %d is out of range (%u layers; -1 = all)", layer,
        geometry.num_layers));
  }
  if (num_pages == 0) return absl::InvalidArgumentError("paged transfer: the pool has 0 pages");
  if (blocks.size() != pages.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "paged transfer: %d blocks but %d pages given", blocks.size(), pages.size()));
  }
  absl::flat_hash_set<uint32_t> targets;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i] == 0) {
      return absl::InvalidArgumentError(absl::StrFormat("paged transfer: block %d is null", i));
    }
    if (pages[i] >= num_pages) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "paged transfer: page %u of block %d is out of range (the pool has %u pages)",
          pages[i], i, num_pages));
    }
    if (direction == Direction::kBlocksToPool && !targets.insert(pages[i]).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "paged transfer: page %u is the target of more than one block (block %d)", pages[i],
          i));
    }
  }
  return absl::OkStatus();
}

size_t PagedTransfer::bytes() const {
  return blocks.size() * LayerCount(*this) * geometry.layer_bytes();
}

absl::Status PagedTransferCpu(const PagedTransfer& t, const KernelLaunch::Resolver& resolve) {
  if (absl::Status s = t.Validate(); !s.ok()) return s;
  const Geometry& g = t.geometry;
  const uint32_t first = FirstLayer(t);
  const uint32_t last = first + LayerCount(t);
  const size_t part = g.part_bytes();
  for (size_t i = 0; i < t.blocks.size(); ++i) {
    unsigned char* block = nullptr;
    if (t.blocks_on_host) {
      block = reinterpret_cast<unsigned char*>(static_cast<uintptr_t>(t.blocks[i]));
    } else {
      // Only the layers moved need to be device memory.
      const uint64_t from = g.Offset(first, KvPart::kKey);
      const uint64_t to = g.Offset(last - 1, KvPart::kKey) + g.layer_bytes();
      auto* base = static_cast<unsigned char*>(
          resolve(DevicePtr::FromAddress(t.blocks[i]) + from, to - from));
      if (base == nullptr) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "paged transfer: block %d (device range [0x%x, +%d bytes)) is not inside one live "
            "allocation",
            i, t.blocks[i] + from, to - from));
      }
      block = base - from;
    }
    for (uint32_t l = first; l < last; ++l) {
      for (uint32_t part_index = 0; part_index < g.parts(); ++part_index) {
        const auto p = static_cast<KvPart>(part_index);
        const uint64_t index = uint64_t{part_index} * t.num_pages + t.pages[i];
        const DevicePtr page = t.layers[l] + index * part;
        auto* pool_part = static_cast<unsigned char*>(resolve(page, part));
        if (pool_part == nullptr) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "paged transfer: page %u of layer %u (device range [0x%x, +%d bytes)) is not "
              "inside one live allocation",
              t.pages[i], l, page.address(), part));
        }
        MovePart(t, block + g.Offset(l, p), pool_part);
      }
    }
  }
  return absl::OkStatus();
}

KernelLaunch MakePagedTransferKernel(PagedTransfer transfer) {
  KernelLaunch launch;
  launch.name = kKernelName;
  if (transfer.blocks_on_host) {
    const size_t bytes = transfer.bytes();
    if (transfer.direction == PagedTransfer::Direction::kBlocksToPool) {
      launch.host_bytes_read = bytes;
    } else {
      launch.host_bytes_written = bytes;
    }
  }
  auto shared = std::make_shared<const PagedTransfer>(std::move(transfer));
  launch.cpu = [shared](const KernelLaunch::Resolver& resolve) {
    return PagedTransferCpu(*shared, resolve);
  };
#if defined(KVTIER_HAVE_CUDA)
  launch.cuda = [shared](void* cuda_stream) -> absl::Status {
    const PagedTransfer& t = *shared;
    if (absl::Status s = t.Validate(); !s.ok()) return s;
    if (t.blocks.empty()) return absl::OkStatus();
    const Geometry& g = t.geometry;
    // The argument block is ~7 KiB: on the heap, not the caller's stack.
    auto args = std::make_unique<PagedKernelArgs>();
    std::memset(args.get(), 0, sizeof(PagedKernelArgs));
    for (size_t l = 0; l < t.layers.size(); ++l) args->layer_base[l] = t.layers[l].address();
    args->first_layer = FirstLayer(t);
    args->num_layers = LayerCount(t);
    args->num_pages = t.num_pages;
    args->block_tokens = g.block_tokens;
    args->kv_heads = g.num_kv_heads;
    args->row_bytes = static_cast<uint32_t>(size_t{g.head_dim} * g.element_bytes());
    args->hnd = t.layout == PageLayout::kHnd ? 1 : 0;
    args->to_pool = t.direction == PagedTransfer::Direction::kBlocksToPool ? 1 : 0;
    args->part_bytes = g.part_bytes();
    args->parts = g.parts();
    for (size_t first = 0; first < t.blocks.size(); first += kMaxBlocksPerLaunch) {
      const size_t n = std::min<size_t>(kMaxBlocksPerLaunch, t.blocks.size() - first);
      args->num_blocks = static_cast<uint32_t>(n);
      for (size_t i = 0; i < n; ++i) {
        args->block_addr[i] = t.blocks[first + i];
        args->page[i] = t.pages[first + i];
      }
      const int error = paged_kernels_internal::LaunchPagedTransferCuda(cuda_stream, *args);
      if (error != 0) {
        return absl::InternalError(absl::StrFormat(
            "paged_transfer kernel launch (%d blocks from block %d, %s, %s): %s", n, first,
            PageLayoutName(t.layout), t.blocks_on_host ? "zero-copy host" : "device",
            cudaGetErrorString(static_cast<cudaError_t>(error))));
      }
    }
    return absl::OkStatus();
  };
#endif
  return launch;
}

HostPagedPath ChooseHostPagedPath(const Geometry& geometry, PageLayout layout,
                                  size_t dma_min_part_bytes) {
  if (layout != PageLayout::kNhd) return HostPagedPath::kZeroCopyKernel;
  return geometry.part_bytes() >= dma_min_part_bytes ? HostPagedPath::kDma
                                                     : HostPagedPath::kZeroCopyKernel;
}

}  // namespace kvtier
