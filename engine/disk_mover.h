// engine/disk_mover.h — how the engine uses the disk tier: what goes down, what comes up, and
// the bookkeeping of both.
//
// Down: a host copy evicted while it is its block's only copy is handed here
// (LowerTier::TakeHostCopy, under the placement lock). If the admission policy admits it, a
// record is reserved at once (no I/O, no waiting) and attached to the block; the copy of the
// slot's bytes into the disk tier's staging — which may wait for a staging buffer on a
// saturated disk — runs on this part's own thread, off every engine lock. The slot goes back
// to the host tier at once with a gate its next writer waits at until the bytes are out.
//
// Up: a block whose only copy is on disk is read into a host slot (EnsureHostCopy); device
// streams that copy out of that slot first wait for the verified read (a host callback), so
// the host never blocks. A read into a slot whose old bytes are still being copied out goes
// to a bounce buffer, and this part's thread copies it into the slot once they are out. A read that fails verification zero-fills the
// slot and marks the block erased: readers already queued get zeros and DataLoss, never
// another block's bytes; everyone else sees a miss.
//
// The disk tier evicts on its own (regions are reclaimed whole) and reports the records it
// dropped (OnDiskDropped). Reopening a directory puts every record it recovers into the block
// table (Open).
//
// Thread-safe. Locking: methods marked REQUIRES take the placement lock from their caller;
// completions (OnDiskWritten, OnHostFilled, OnDiskDropped) take it themselves on the
// completion queue. The thread never takes an engine lock and never waits for the device: it
// waits only for the disk tier (a staging buffer) and for gates it opens itself, in order.

#ifndef KVTIER_ENGINE_DISK_MOVER_H_
#define KVTIER_ENGINE_DISK_MOVER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "engine/admission_policy.h"
#include "engine/block_table.h"
#include "engine/completion_queue.h"
#include "engine/engine_counters.h"
#include "engine/namespace_registry.h"
#include "engine/placement.h"
#include "kvtier/engine.h"
#include "tiers/disk_tier.h"

namespace kvtier {

class DiskMover final : public LowerTier {
 public:
  // The namespace id of a recovered record's namespace, created if this run did not list it.
  using NamespaceFn = absl::AnyInvocable<absl::StatusOr<uint32_t>(const std::string& name)>;

  // Opens the disk tier in options.directory and puts every recovered block into the table.
  // Everything passed by reference outlives the mover. REQUIRES: placement's lock not held.
  static absl::StatusOr<std::unique_ptr<DiskMover>> Open(
      const DiskOptions& options, const Geometry& geometry, bool secure_erase,
      Placement& placement, BlockTable& table, NamespaceRegistry& namespaces,
      CompletionQueue& completions, EngineCounters& counters, NamespaceFn ensure_namespace);
  // Finishes queued work (Drain), stops the thread, closes the disk tier and runs the
  // completions that posted. REQUIRES: not called from a completion, nor with a lock a
  // completion takes.
  ~DiskMover() override;
  DiskMover(const DiskMover&) = delete;
  DiskMover& operator=(const DiskMover&) = delete;

  // LowerTier. REQUIRES: the placement lock.
  std::shared_ptr<Notification> TakeHostCopy(const BlockKey& key, BlockEntry& e,
                                             SlotId slot) override;
  void Erase(const BlockKey& key, SlotId slot) override;

  // Counts a block as seen by the admission policy (a Store or a hit).
  void RecordSeen(const BlockKey& key) { admission_->Record(key); }

  // Makes sure the block has a host copy: if it has only a disk copy, takes a host slot and
  // starts reading the record into it (readers then wait with
  // PendingTransfer::WaitForCopy). ResourceExhausted when no host slot can be had; NotFound
  // when the record is gone. `passing`: the block is on its way to the GPU tier; its host copy
  // is inserted cold. REQUIRES: the placement lock.
  absl::Status EnsureHostCopy(const BlockKey& key, bool passing);

  // Waits until every copy-out and read this part started has been handed to the disk tier,
  // then until the disk tier has finished them and run their callbacks. REQUIRES: no engine
  // lock held.
  void Drain();

  // The disk tier's row of the stats (capacity, records, bytes, drops, failures, admission).
  void FillStats(TierStats* disk) const;
  DiskTier& tier() { return *disk_; }

 private:
  DiskMover(const DiskOptions& options, const Geometry& geometry, bool secure_erase,
            Placement& placement, BlockTable& table, NamespaceRegistry& namespaces,
            CompletionQueue& completions, EngineCounters& counters);
  // Runs `job` on the thread, after every job posted before it.
  void Post(absl::AnyInvocable<void() &&> job) ABSL_LOCKS_EXCLUDED(mu_);
  void Loop();

  // Completions, on the completion queue.
  void OnDiskWritten(const BlockKey& key, uint64_t write_id, absl::Status status)
      ABSL_LOCKS_EXCLUDED(placement_.mu());
  void OnHostFilled(const BlockKey& key, uint64_t write_id, std::shared_ptr<HostFill> fill,
                    absl::Status status) ABSL_LOCKS_EXCLUDED(placement_.mu());
  // A reader abandoned the read of `key`'s host copy (its deadline passed): the block becomes
  // a miss at once.
  void OnFillAbandoned(const BlockKey& key, uint64_t write_id, std::shared_ptr<HostFill> fill)
      ABSL_LOCKS_EXCLUDED(placement_.mu());
  void OnDiskDropped(std::vector<std::pair<BlockKey, RecordId>> dropped)
      ABSL_LOCKS_EXCLUDED(placement_.mu());

  const size_t block_bytes_;
  const size_t record_bytes_;
  const bool secure_erase_;
  Placement& placement_;
  BlockTable& table_;
  NamespaceRegistry& namespaces_;
  CompletionQueue& completions_;
  EngineCounters& counters_;
  std::unique_ptr<AdmissionPolicy> admission_;
  std::unique_ptr<DiskTier> disk_;

  Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> jobs_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // a job is being run
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_DISK_MOVER_H_
