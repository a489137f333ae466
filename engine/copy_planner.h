// engine/copy_planner.h — turning block copies (between tier slots and caller buffers, in
// kvtier's block layout or an inference engine's paged pool) into as few device operations
// as possible, and enqueueing them.
//
// A BlockCopy names one block's source and destination Endpoint: a block in kvtier's layout
// at a slot address or caller pointer, or a page of a caller's paged pool. Plan turns a batch
// of them, for all layers or one layer, into
//   * DMA copy ops (CopyOp), merged where neighbouring blocks are contiguous on both sides
//     and inside one allocation (a batch stored together lands in neighbouring slots and
//     moves as one copy), and
//   * paged-transfer kernels (kernels/paged_kernels.h), one per direction, side (device or
//     pinned host) and pool: every device ↔ pool copy, and host ↔ pool copies whose parts are
//     too small for DMA (ChooseHostPagedPath with paged_dma_min_part_bytes).
// Enqueue puts a plan on a stream, layer by layer (recording one event per layer) or whole
// blocks. ValidateBuffers checks a caller's KvBuffers before any of that.
//
// Stateless after construction: no lock, safe from any thread.

#ifndef KVTIER_ENGINE_COPY_PLANNER_H_
#define KVTIER_ENGINE_COPY_PLANNER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/paged_kernels.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"
#include "kvtier/geometry.h"
#include "tiers/tier.h"

namespace kvtier {

// One side of a block copy: a block in kvtier's layout at `at`, or page `page` of `pool`.
struct Endpoint {
  SlotAddress at;
  const KvBuffers::PagedPool* pool = nullptr;  // REQUIRES: outlives the copy's enqueueing
  uint32_t page = 0;

  static Endpoint Slot(const SlotAddress& at) { return Endpoint{at}; }
  // Block i of a caller's buffers.
  static Endpoint Caller(const KvBuffers& buffers, size_t i);
};

struct BlockCopy {
  Endpoint src;
  Endpoint dst;
};

// What one batch of copies becomes for one layer (or all).
struct CopyPlan {
  std::vector<CopyOp> ops;                  // coalesced DMA copies, in order
  std::vector<PagedTransfer> kernels;       // paged-transfer launches
};

class CopyPlanner {
 public:
  // `device` is asked whether merged ranges lie in one allocation (Device::Contains).
  CopyPlanner(const Geometry& geometry, const Device& device, size_t paged_dma_min_part_bytes)
      : geometry_(geometry), device_(device), paged_dma_min_part_bytes_(paged_dma_min_part_bytes) {}

  // The largest paged pool a transfer accepts (one kernel launch carries this many layers).
  static constexpr size_t kMaxPagedLayers = 128;

  // OK, or InvalidArgument naming `op` and what is wrong: a block count other than
  // `expected_blocks`, a null buffer or one that is not device memory of the device (or
  // registered with it), a paged pool whose layer count, pages, layout or tensors do not fit
  // the geometry, a page out of range; and, when `writes_pages` (a Load), two blocks for one
  // page.
  absl::Status ValidateBuffers(const KvBuffers& buffers, size_t expected_blocks, const char* op,
                               bool writes_pages) const;

  // True for a copy that moves by paged-transfer kernel rather than DMA.
  bool UsesPagedKernel(const BlockCopy& copy) const;

  // The ops of `copies` for layer `layer`, or for whole blocks when layer < 0.
  CopyPlan Plan(absl::Span<const BlockCopy> copies, int layer) const;

  // Enqueues `copies` on `stream`: when `layerwise` and `layer_events` is not empty, layer by
  // layer, recording layer_events[l] after layer l; otherwise whole blocks, recording every
  // event in `layer_events` after the last copy. Returns the first failing device call's
  // error (what was enqueued before it still runs).
  absl::Status Enqueue(Stream& stream, absl::Span<const BlockCopy> copies, bool layerwise,
                       absl::Span<const std::shared_ptr<Event>> layer_events) const;

 private:
  SlotAddress Address(const Endpoint& e, uint32_t layer, KvPart part) const;
  void AppendOps(const BlockCopy& copy, int layer, std::vector<CopyOp>* ops) const;
  void AddToKernels(const BlockCopy& copy, std::vector<PagedTransfer>* kernels) const;
  // Merges each op into the previous one where both are contiguous and in one allocation.
  void Coalesce(std::vector<CopyOp>* ops) const;

  const Geometry geometry_;
  const Device& device_;
  const size_t paged_dma_min_part_bytes_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_COPY_PLANNER_H_
