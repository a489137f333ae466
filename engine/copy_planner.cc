// engine/copy_planner.cc — see copy_planner.h.

#include "engine/copy_planner.h"

#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"

namespace kvtier {
namespace {

// The remedy ValidateBuffers names for a buffer that is not the engine's device memory.
constexpr char kNotDeviceMemoryHint[] =
    "allocate it on the engine's device, or register the memory it lies in with "
    "RegisterDeviceMemory";

CopyOp MakeCopyOp(const SlotAddress& src, const SlotAddress& dst, size_t bytes) {
  CopyOp op;
  op.bytes = bytes;
  if (src.host != nullptr) {
    op.kind = CopyOp::Kind::kHostToDevice;  // host → host: no copy pairs two host endpoints
    op.src_host = src.host;
    op.dst_device = dst.device;
  } else if (dst.host != nullptr) {
    op.kind = CopyOp::Kind::kDeviceToHost;
    op.src_device = src.device;
    op.dst_host = dst.host;
  } else {
    op.kind = CopyOp::Kind::kDeviceToDevice;
    op.src_device = src.device;
    op.dst_device = dst.device;
  }
  return op;
}

SlotAddress Offset(const SlotAddress& a, size_t offset) {
  if (a.host != nullptr) return SlotAddress{DevicePtr(), static_cast<char*>(a.host) + offset};
  return SlotAddress{a.device + offset, nullptr};
}

}  // namespace

Endpoint Endpoint::Caller(const KvBuffers& buffers, size_t i) {
  if (buffers.is_paged()) return Endpoint{SlotAddress{}, &buffers.pool(), buffers.pages()[i]};
  return Endpoint{SlotAddress{buffers.blocks()[i], nullptr}};
}

absl::Status CopyPlanner::ValidateBuffers(const KvBuffers& buffers, size_t expected_blocks,
                                          const char* op, bool writes_pages) const {
  const Geometry& g = geometry_;
  if (buffers.num_blocks() != expected_blocks) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %d buffers given for %d blocks", op,
                                                      buffers.num_blocks(), expected_blocks));
  }
  if (!buffers.is_paged()) {
    for (size_t i = 0; i < buffers.blocks().size(); ++i) {
      const DevicePtr p = buffers.blocks()[i];
      if (p.is_null()) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: buffer %d is null", op, i));
      }
      if (!device_.Contains(p, g.block_bytes())) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: buffer %d (device address 0x%x, %d bytes) is not device memory of %s (%s)", op,
            i, p.address(), g.block_bytes(), device_.name(), kNotDeviceMemoryHint));
      }
    }
    return absl::OkStatus();
  }
  const KvBuffers::PagedPool& pool = buffers.pool();
  if (pool.layers.size() != g.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: paged pool has %d layer tensors, the geometry has %u layers", op,
                        pool.layers.size(), g.num_layers));
  }
  if (pool.num_pages == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: paged pool has 0 pages", op));
  }
  if (pool.layout != PageLayout::kNhd && pool.layout != PageLayout::kHnd) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: paged pool has unknown page layout %d", op, static_cast<int>(pool.layout)));
  }
  if (pool.layers.size() > kMaxPagedLayers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: paged pools of more than %d layers are not supported", op, kMaxPagedLayers));
  }
  const size_t layer_tensor_bytes = size_t{g.parts()} * pool.num_pages * g.part_bytes();
  for (size_t l = 0; l < pool.layers.size(); ++l) {
    if (pool.layers[l].is_null() || !device_.Contains(pool.layers[l], layer_tensor_bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: paged pool layer %d (device address 0x%x, %d bytes for %u pages) is not device "
          "memory of %s (%s)",
          op, l, pool.layers[l].address(), layer_tensor_bytes, pool.num_pages, device_.name(),
          kNotDeviceMemoryHint));
    }
  }
  // Writing pages: two blocks into one page would race.
  absl::flat_hash_map<uint32_t, size_t> first_block_of_page;
  for (size_t i = 0; i < buffers.pages().size(); ++i) {
    if (buffers.pages()[i] >= pool.num_pages) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: page %u for block %d is out of range (pool has %u pages)", op,
                          buffers.pages()[i], i, pool.num_pages));
    }
    if (writes_pages) {
      auto [it, inserted] = first_block_of_page.try_emplace(buffers.pages()[i], i);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: page %u is given for blocks %d and %d", op, buffers.pages()[i], it->second, i));
      }
    }
  }
  return absl::OkStatus();
}

SlotAddress CopyPlanner::Address(const Endpoint& e, uint32_t layer, KvPart part) const {
  if (e.pool != nullptr) {
    // [parts][num_pages][page_tokens][kv_heads][head_dim] per layer.
    const uint64_t index = uint64_t{static_cast<uint32_t>(part)} * e.pool->num_pages + e.page;
    return SlotAddress{e.pool->layers[layer] + index * geometry_.part_bytes(), nullptr};
  }
  return Offset(e.at, geometry_.Offset(layer, part));
}

void CopyPlanner::AppendOps(const BlockCopy& copy, int layer, std::vector<CopyOp>* ops) const {
  const Geometry& g = geometry_;
  const bool paged = copy.src.pool != nullptr || copy.dst.pool != nullptr;
  if (!paged) {
    // Both sides in kvtier layout: a whole block, or one layer's parts, is contiguous.
    if (layer < 0) {
      ops->push_back(MakeCopyOp(copy.src.at, copy.dst.at, g.block_bytes()));
    } else {
      const size_t off = g.Offset(static_cast<uint32_t>(layer), KvPart::kKey);
      ops->push_back(
          MakeCopyOp(Offset(copy.src.at, off), Offset(copy.dst.at, off), g.layer_bytes()));
    }
    return;
  }
  const uint32_t first = layer < 0 ? 0 : static_cast<uint32_t>(layer);
  const uint32_t last = layer < 0 ? g.num_layers : first + 1;
  for (uint32_t l = first; l < last; ++l) {
    for (uint32_t p = 0; p < g.parts(); ++p) {
      const auto part = static_cast<KvPart>(p);
      ops->push_back(
          MakeCopyOp(Address(copy.src, l, part), Address(copy.dst, l, part), g.part_bytes()));
    }
  }
}

bool CopyPlanner::UsesPagedKernel(const BlockCopy& copy) const {
  const Endpoint& pool_side = copy.src.pool != nullptr ? copy.src : copy.dst;
  const Endpoint& block_side = copy.src.pool != nullptr ? copy.dst : copy.src;
  if (pool_side.pool == nullptr) return false;
  // Device ↔ pool: always the kernel (one launch instead of a copy per part, at device
  // memory speed). Host ↔ pool: DMA for large contiguous parts, zero-copy kernel otherwise.
  if (block_side.at.host == nullptr) return true;
  return ChooseHostPagedPath(geometry_, pool_side.pool->layout, paged_dma_min_part_bytes_) ==
         HostPagedPath::kZeroCopyKernel;
}

void CopyPlanner::AddToKernels(const BlockCopy& copy, std::vector<PagedTransfer>* kernels) const {
  const bool to_pool = copy.dst.pool != nullptr;
  const Endpoint& pool_side = to_pool ? copy.dst : copy.src;
  const Endpoint& block_side = to_pool ? copy.src : copy.dst;
  const bool on_host = block_side.at.host != nullptr;
  const auto direction = to_pool ? PagedTransfer::Direction::kBlocksToPool
                                 : PagedTransfer::Direction::kPoolToBlocks;
  PagedTransfer* t = nullptr;
  for (PagedTransfer& candidate : *kernels) {
    if (candidate.direction == direction && candidate.blocks_on_host == on_host &&
        candidate.layers == pool_side.pool->layers) {
      t = &candidate;
      break;
    }
  }
  if (t == nullptr) {
    t = &kernels->emplace_back();
    t->geometry = geometry_;
    t->layout = pool_side.pool->layout;
    t->direction = direction;
    t->num_pages = pool_side.pool->num_pages;
    t->layers = pool_side.pool->layers;
    t->blocks_on_host = on_host;
  }
  t->blocks.push_back(on_host ? reinterpret_cast<uintptr_t>(block_side.at.host)
                              : block_side.at.device.address());
  t->pages.push_back(pool_side.page);
}

void CopyPlanner::Coalesce(std::vector<CopyOp>* ops) const {
  if (ops->size() < 2) return;
  size_t out = 0;
  for (size_t i = 1; i < ops->size(); ++i) {
    CopyOp& prev = (*ops)[out];
    const CopyOp& op = (*ops)[i];
    const bool same_kind = prev.kind == op.kind;
    const bool src_next =
        prev.kind == CopyOp::Kind::kHostToDevice
            ? static_cast<const char*>(prev.src_host) + prev.bytes == op.src_host
            : prev.src_device + prev.bytes == op.src_device;
    const bool dst_next =
        prev.kind == CopyOp::Kind::kDeviceToHost
            ? static_cast<char*>(prev.dst_host) + prev.bytes == op.dst_host
            : prev.dst_device + prev.bytes == op.dst_device;
    const size_t merged = prev.bytes + op.bytes;
    // Two allocations that merely happen to be adjacent cannot be copied as one. Host ranges
    // are always slots of the host tier's single region.
    const bool one_allocation =
        (prev.kind == CopyOp::Kind::kHostToDevice || device_.Contains(prev.src_device, merged)) &&
        (prev.kind == CopyOp::Kind::kDeviceToHost || device_.Contains(prev.dst_device, merged));
    if (same_kind && src_next && dst_next && one_allocation) {
      prev.bytes = merged;
    } else {
      (*ops)[++out] = op;
    }
  }
  ops->resize(out + 1);
}

CopyPlan CopyPlanner::Plan(absl::Span<const BlockCopy> copies, int layer) const {
  CopyPlan plan;
  for (const BlockCopy& c : copies) {
    if (UsesPagedKernel(c)) {
      AddToKernels(c, &plan.kernels);
    } else {
      AppendOps(c, layer, &plan.ops);
    }
  }
  Coalesce(&plan.ops);
  for (PagedTransfer& t : plan.kernels) t.layer = layer;
  return plan;
}

absl::Status CopyPlanner::Enqueue(Stream& stream, absl::Span<const BlockCopy> copies,
                                  bool layerwise,
                                  absl::Span<const std::shared_ptr<Event>> layer_events) const {
  // Split once: DMA copies become ops per layer; the rest become one kernel per direction,
  // side and pool, launched per layer.
  std::vector<const BlockCopy*> dma;
  std::vector<PagedTransfer> kernels;
  dma.reserve(copies.size());
  for (const BlockCopy& c : copies) {
    if (UsesPagedKernel(c)) {
      AddToKernels(c, &kernels);
    } else {
      dma.push_back(&c);
    }
  }
  std::vector<CopyOp> ops;
  auto enqueue = [&](int layer) -> absl::Status {
    ops.clear();
    for (const BlockCopy* c : dma) AppendOps(*c, layer, &ops);
    Coalesce(&ops);
    if (!ops.empty()) {
      if (absl::Status s = stream.CopyBatch(ops); !s.ok()) return s;
    }
    for (const PagedTransfer& t : kernels) {
      PagedTransfer part = t;
      part.layer = layer;
      if (absl::Status s = stream.Launch(MakePagedTransferKernel(std::move(part))); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  };
  if (layerwise && !layer_events.empty()) {
    ops.reserve(copies.size() * 2);
    for (size_t l = 0; l < layer_events.size(); ++l) {
      if (absl::Status s = enqueue(static_cast<int>(l)); !s.ok()) return s;
      if (absl::Status s = stream.Record(*layer_events[l]); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  ops.reserve(copies.size());
  if (absl::Status s = enqueue(-1); !s.ok()) return s;
  for (const auto& e : layer_events) {
    if (absl::Status s = stream.Record(*e); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kvtier
