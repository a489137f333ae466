// engine/engine_impl.h — the Engine: the public calls, orchestrating the engine's parts.
//
// EngineImpl owns the device, its three streams, the tiers and the parts, and turns each
// public call into their work; it keeps no state of its own beyond them:
//   * NamespaceRegistry (engine/namespace_registry.h): names, ids, key hashers, counters.
//   * Placement (engine/placement.h): slots, owners, eviction, quotas, leases, pins.
//   * DiskMover (engine/disk_mover.h): the disk tier, what goes down and comes up.
//   * RemoteMover (engine/remote_mover.h): the shared remote tier (Redis Cluster): Match's
//     question to it, reads into host slots, writes, erases.
//   * CopyPlanner (engine/copy_planner.h): block copies → coalesced device operations.
//   * PendingTransfer (engine/pending_transfer.h): one transfer's sequence, plan to handle.
//   * Prefetcher (engine/prefetcher.h): hints, their budget and thread, the TTL sweep.
//   * ExternalMemory (engine/external_memory.h): the caller's registered device memory.
//   * EngineCounters (engine/engine_counters.h): what the engine counts.
//   * CompletionQueue (engine/completion_queue.h): where transfer completions run.
//
// Locks, in the order they may be taken (each part's header says more):
//   placement → block table shard → namespace registry, prefetcher hints (leaves).
//   ExternalMemory's lock and the completion queue's are leaves, never held with placement's.
//   No code holding the placement lock waits for a copy or for I/O: copies are enqueued
//   under it and waited for by events; the disk mover's thread does the one wait that disk
//   back-pressure needs (a staging buffer), off every lock.
//
// Copy ordering without host waits: a copy that is still landing carries a ready event, which
// a reader's stream waits on; a freed slot still read by a copy carries a SlotReuse its next
// writer waits on. Streams: onboard_ (into caller memory and the GPU tier), gated_onboard_
// (the same, for transfers that wait for disk reads, and for prefetches) and offload_ (into
// the host tier), so stores never queue behind loads, and loads of resident blocks never
// queue behind the disk or behind speculation.

#ifndef KVTIER_ENGINE_ENGINE_IMPL_H_
#define KVTIER_ENGINE_ENGINE_IMPL_H_

#include <memory>
#include <string>
#include <vector>

#include "engine/block_table.h"
#include "engine/completion_queue.h"
#include "engine/copy_planner.h"
#include "engine/disk_mover.h"
#include "engine/engine_counters.h"
#include "engine/external_memory.h"
#include "engine/metrics_server.h"
#include "engine/namespace_registry.h"
#include "engine/pending_transfer.h"
#include "engine/placement.h"
#include "engine/prefetcher.h"
#include "engine/remote_mover.h"
#include "kvtier/engine.h"
#include "kvtier/tier_kind.h"
#include "tiers/tier.h"

namespace kvtier {

class EngineImpl final : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Open(const EngineOptions& options);
  ~EngineImpl() override;

  const EngineOptions& options() const override { return options_; }
  Device& device() override { return *device_; }
  absl::Status RegisterDeviceMemory(DevicePtr base, size_t bytes) override;
  absl::Status UnregisterDeviceMemory(DevicePtr base) override;

  absl::Status CreateNamespace(absl::string_view ns) override;
  absl::Status SetNamespaceLimits(absl::string_view ns, const NamespaceLimits& limits) override;
  std::vector<std::string> ListNamespaces() const override;
  absl::StatusOr<LoadPlan> PlanLoad(const MatchResult& match, size_t prompt_tokens,
                                    size_t local_tokens, const ComputeModel& compute,
                                    bool layerwise) override;
  absl::StatusOr<MatchResult> Match(absl::string_view ns, absl::Span<const int32_t> tokens,
                                    absl::string_view extra) override;
  absl::StatusOr<std::unique_ptr<TransferHandle>> Store(const StoreRequest& request) override;
  absl::StatusOr<std::unique_ptr<TransferHandle>> Load(const LoadRequest& request) override;
  absl::StatusOr<std::unique_ptr<TransferHandle>> LoadToGpuTier(
      absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise,
      absl::Duration lease_timeout) override;
  absl::StatusOr<std::unique_ptr<TransferHandle>> Prefetch(
      absl::string_view ns, absl::Span<const BlockKey> keys) override;
  absl::StatusOr<uint64_t> Hint(absl::string_view ns, absl::Span<const BlockKey> keys) override;
  absl::StatusOr<size_t> CancelHint(uint64_t hint_id) override;
  absl::StatusOr<size_t> Erase(absl::string_view ns, absl::Span<const BlockKey> keys) override;
  absl::StatusOr<size_t> EraseNamespace(absl::string_view ns) override;
  absl::Status Flush() override;
  EngineStats Stats() override;

  // engine/testing_hooks.cc and the tests that reach below the public API only.
  DiskTier* disk_tier_for_testing() { return disk_ != nullptr ? &disk_->tier() : nullptr; }
  CompletionQueue& completions_for_testing() { return completions_; }
  Tier* tier_for_testing(TierKind t) const { return tiers_[t].get(); }

 private:
  explicit EngineImpl(const EngineOptions& options);
  absl::Status Init();
  // Creates the engine's tiers and parts (Init's first half).
  absl::Status MakeParts();
  // Applies the namespace's limits from the options (if any) and paces the TTL sweep.
  void ApplyLimits(uint32_t ns_id, const NamespaceLimits& limits)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_->mu());
  // CreateNamespace's work, returning the id.
  absl::StatusOr<uint32_t> AddNamespace(absl::string_view ns);
  // A namespace's id for a name the disk brought back, created if needed.
  absl::StatusOr<uint32_t> RecoveredNamespace(const std::string& ns);
  // Promotes `keys` of namespace ns_id toward the top tier (Prefetch's work). `hinted`: for the
  // prefetcher: promoted blocks are marked prefetched and count against the budget, and
  // eviction spares other hints' unused blocks.
  absl::StatusOr<std::unique_ptr<TransferHandle>> Promote(uint32_t ns_id,
                                                          absl::Span<const BlockKey> keys,
                                                          bool hinted);
  // A transfer that failed after planning: waits until its stream is idle, undoes what it
  // placed, and returns its error.
  absl::Status Fail(PendingTransfer& t, const Placement::FailedTransfer& failed) {
    t.Settle();
    placement_->ReleaseAfterFailure(failed);
    return t.status();
  }
  // With a remote tier: starts reading into host slots the keys of `keys` that have no local
  // entry (RemoteMover::StartRead); *from_remote (if given) gets their indexes. REQUIRES: the
  // placement lock.
  absl::Status StartRemoteReads(uint32_t ns_id, absl::Span<const BlockKey> keys, bool passing,
                                const char* op, std::vector<size_t>* from_remote)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_->mu());
  // How long LoadToGpuTier waits in all for copies in flight to free GPU slots.
  static constexpr absl::Duration kGpuSlotWait = absl::Seconds(10);
  // One try of LoadToGpuTier. Where no GPU slot was free, *in_flight gets the copies in
  // flight that hold slots (Placement::InFlightCopies), so the caller may wait and retry.
  absl::StatusOr<std::unique_ptr<TransferHandle>> TryLoadToGpuTier(
      absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise,
      absl::Duration lease_timeout, std::vector<std::shared_ptr<Event>>* in_flight);
  // A load's stall meters: the engine's and the namespace's.
  std::vector<std::shared_ptr<StallMeter>> Meters(const Namespace& ns) const {
    return {counters_->stall(), ns.counters.stall};
  }

  const EngineOptions options_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<Stream> onboard_;
  std::unique_ptr<Stream> gated_onboard_;
  std::unique_ptr<Stream> offload_;
  // Transfer completions. Outlives the streams: drained after they are.
  CompletionQueue completions_;
  TierArray<std::unique_ptr<Tier>> tiers_;  // tiers_[kDisk] stays null: disk_ holds that tier
  // secure_erase with a GPU tier: one block of zeros in pinned memory, the source of GPU
  // zeroing.
  void* zeros_ = nullptr;
  BlockTable table_;
  NamespaceRegistry namespaces_;
  std::unique_ptr<EngineCounters> counters_;
  std::unique_ptr<ExternalMemory> external_;
  std::unique_ptr<CopyPlanner> planner_;
  std::unique_ptr<Prefetcher> prefetcher_;
  std::unique_ptr<Placement> placement_;
  std::unique_ptr<DiskMover> disk_;
  std::unique_ptr<RemoteMover> remote_;
  // The HTTP endpoint (EngineOptions::metrics_port); stopped first, since its thread calls
  // Stats().
  std::unique_ptr<MetricsServer> metrics_server_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_ENGINE_IMPL_H_
