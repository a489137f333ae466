// engine/transfer_handle.h — the handle a Store, Load or Prefetch returns.
//
// It holds the events of the transfer (one per layer for a layer-wise load, and one for the
// whole), the counts decided when the transfer was planned, and for leased loads the slot
// addresses and the lease id. Waiting is event waiting: WaitLayer is a stream wait, Wait and
// WaitLayerHost block the host.

#ifndef KVTIER_ENGINE_TRANSFER_HANDLE_H_
#define KVTIER_ENGINE_TRANSFER_HANDLE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "common/mutex.h"
#include "engine/block_table.h"
#include "kvtier/engine.h"

namespace kvtier {

// Where a load's stall time goes (EngineStats::stall_ns): shared by the engine and every
// handle, so a handle that outlives its engine still has somewhere to count.
struct StallMeter {
  std::atomic<uint64_t> ns{0};
  std::atomic<uint64_t> waits{0};
  void Add(uint64_t stalled_ns) {
    ns.fetch_add(stalled_ns, std::memory_order_relaxed);
    waits.fetch_add(1, std::memory_order_relaxed);
  }
};

class TransferHandleImpl final : public TransferHandle {
 public:
  struct Counts {
    size_t moved = 0;
    size_t present = 0;
    size_t rejected = 0;
  };
  // Everything a handle holds, by name (engine/pending_transfer.h fills it).
  struct Parts {
    // Recorded after the transfer's copies; null when nothing was enqueued (ready at once,
    // after `waits`).
    std::shared_ptr<Event> done;
    // Notified by the transfer's completion once the engine's bookkeeping is done; null when
    // `done` is.
    std::shared_ptr<Notification> finished;
    // Loads: one event per layer (null entries: the layer is ready once `waits` are). Empty
    // for transfers that are not loads.
    std::vector<std::shared_ptr<Event>> layers;
    Counts counts;
    // LoadToGpuTier: the leased slots' addresses.
    std::vector<DevicePtr> slots;
    // Leased transfers: called at most once, by Release().
    absl::AnyInvocable<absl::Status()> release;
    // Disk reads the transfer's copies were gated on; their failures are the transfer's.
    std::vector<std::shared_ptr<HostFill>> fills;
    // fills[i] filled block fill_blocks[i] of the request (SIZE_MAX: not a request's block).
    std::vector<size_t> fill_blocks;
    // Copies enqueued by earlier transfers that this one depends on without having enqueued
    // anything itself (blocks a prefetch is still landing); every wait covers them.
    std::vector<std::shared_ptr<Event>> waits;
    // Loads: where time spent waiting for this transfer's bytes is charged (the engine's and
    // the namespace's stall meters).
    std::vector<std::shared_ptr<StallMeter>> meters;
  };

  explicit TransferHandleImpl(Parts parts)
      : waits_(std::move(parts.waits)),
        done_(std::move(parts.done)),
        finished_(std::move(parts.finished)),
        layers_(std::move(parts.layers)),
        counts_(parts.counts),
        slots_(std::move(parts.slots)),
        release_(std::move(parts.release)),
        fills_(std::move(parts.fills)),
        fill_blocks_(std::move(parts.fill_blocks)),
        meters_(std::move(parts.meters)) {}

  bool IsReady() override;
  absl::Status Wait() override;
  absl::Status WaitLayer(uint32_t layer, Stream& stream) override;
  absl::Status WaitLayerHost(uint32_t layer) override;
  size_t blocks_moved() const override { return counts_.moved; }
  size_t blocks_present() const override { return counts_.present; }
  size_t blocks_rejected() const override { return counts_.rejected; }
  absl::Span<const DevicePtr> slots() const override { return slots_; }
  absl::Status Release() override;
  absl::StatusOr<std::vector<size_t>> FailedBlocks() override;

 private:
  absl::StatusOr<Event*> LayerEvent(uint32_t layer);
  // Whether `event` and every event in waits_ have completed (errors count as completed).
  bool Landed(Event* event);
  void ChargeStall(uint64_t ns);
  // Waits for everything; the first error of the copies (`device`) and of the reads (`reads`)
  // separately.
  void WaitAll(absl::Status* device, absl::Status* reads);
  // The stream waits of WaitLayer, with the stream's time at them measured when `measure`.
  absl::Status StreamWaits(Event* event, Stream& stream, bool measure);

  const std::vector<std::shared_ptr<Event>> waits_;
  const std::shared_ptr<Event> done_;
  const std::shared_ptr<Notification> finished_;
  const std::vector<std::shared_ptr<Event>> layers_;
  const Counts counts_;
  const std::vector<DevicePtr> slots_;
  Mutex release_mu_;
  absl::AnyInvocable<absl::Status()> release_ ABSL_GUARDED_BY(release_mu_);
  // Disk reads this transfer's copies were gated on; their failures are the transfer's.
  const std::vector<std::shared_ptr<HostFill>> fills_;
  const std::vector<size_t> fill_blocks_;
  const std::vector<std::shared_ptr<StallMeter>> meters_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_TRANSFER_HANDLE_H_
