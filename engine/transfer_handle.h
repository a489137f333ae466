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

  // `waits`: copies enqueued by earlier transfers that this one depends on without having
  // enqueued anything itself (blocks a prefetch is still landing); every wait covers them.
  // `done` may be null (nothing was enqueued: ready at once, after `waits`). `finished` is notified by the
  // engine's completion callback once its bookkeeping for the transfer is done (null when
  // done is). `layers` is empty for transfers that are not loads; otherwise one event per
  // layer. `release` is called at most once, by Release(), for leased transfers.
  TransferHandleImpl(std::shared_ptr<Event> done, std::shared_ptr<Notification> finished,
                     std::vector<std::shared_ptr<Event>> layers, Counts counts,
                     std::vector<DevicePtr> slots, absl::AnyInvocable<absl::Status()> release,
                     std::vector<std::shared_ptr<HostFill>> fills = {},
                     std::vector<std::shared_ptr<Event>> waits = {})
      : waits_(std::move(waits)),
        done_(std::move(done)),
        finished_(std::move(finished)),
        layers_(std::move(layers)),
        counts_(counts),
        slots_(std::move(slots)),
        release_(std::move(release)),
        fills_(std::move(fills)) {}

  bool IsReady() override;
  absl::Status Wait() override;
  absl::Status WaitLayer(uint32_t layer, Stream& stream) override;
  absl::Status WaitLayerHost(uint32_t layer) override;
  size_t blocks_moved() const override { return counts_.moved; }
  size_t blocks_present() const override { return counts_.present; }
  size_t blocks_rejected() const override { return counts_.rejected; }
  absl::Span<const DevicePtr> slots() const override { return slots_; }
  absl::Status Release() override;

  // Loads only: charge time spent waiting for this transfer's bytes to these meters (the
  // engine's and the namespace's).
  void set_stall_meters(std::vector<std::shared_ptr<StallMeter>> meters) {
    meters_ = std::move(meters);
  }

 private:
  absl::StatusOr<Event*> LayerEvent(uint32_t layer);
  // Whether `event` and every event in waits_ have completed (errors count as completed).
  bool Landed(Event* event);
  void ChargeStall(uint64_t ns);
  absl::Status WaitAll();
  // The stream waits of WaitLayer, with the stream's time at them measured when `measure`.
  absl::Status StreamWaits(Event* event, Stream& stream, bool measure);

  const std::vector<std::shared_ptr<Event>> waits_;
  std::shared_ptr<Event> done_;
  std::shared_ptr<Notification> finished_;
  std::vector<std::shared_ptr<Event>> layers_;
  Counts counts_;
  std::vector<DevicePtr> slots_;
  Mutex release_mu_;
  absl::AnyInvocable<absl::Status()> release_ ABSL_GUARDED_BY(release_mu_);
  // Disk reads this transfer's copies were gated on; their failures are the transfer's.
  const std::vector<std::shared_ptr<HostFill>> fills_;
  std::vector<std::shared_ptr<StallMeter>> meters_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_TRANSFER_HANDLE_H_
