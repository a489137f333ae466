// engine/placement.h — where every block's bytes live: the slots of the GPU and host tiers,
// who owns each, what a freed slot's next writer must wait for, the tiers' eviction policies,
// namespaces' quotas, block counts and time to live, pins and leases.
//
// Placement decides; it moves bytes only where a decision needs it at once: a GPU copy that
// is its block's only copy is demoted to a host slot when evicted (a device copy on the
// offload stream), and secure_erase zeroes freed slots. A host copy that is its block's only
// copy is handed to the tier below (LowerTier: the disk) when evicted; that tier copies the
// bytes out later, off every lock, and the slot's next writer waits for it through the slot's
// SlotReuse gate.
//
// Promises:
//   * A block that is pinned, leased, prefetched-and-protected or being written is never
//     evicted; a copy whose write has landed (its ready event completed, its disk read
//     verified) counts as landed when a slot is asked for, even before the transfer's
//     completion has run (Settle).
//   * A freed slot's next writer waits for whatever still reads it (SlotReuse): the
//     demotion copy out of a GPU slot, the zeroing of a slot, the copy-out of a host slot to
//     the disk tier.
//   * A namespace at its quota in a tier evicts only its own blocks there.
//   * Nothing waits for I/O or for a device copy while holding the lock.
//
// Locking: mu_ guards everything here and every change to a BlockEntry's slots, pins, writing
// and prefetched bits. Order: mu_ → block table shard lock → the namespace registry's lock and
// the prefetcher's hint lock (both leaves). Methods marked REQUIRES(mu()) are called by the
// engine's orchestration inside one critical section; the others take the lock themselves.
// Completions (OnWritesLanded, OnReadsDone, ReleaseLease) take it: they run on the engine's
// completion queue, never in a device callback.

#ifndef KVTIER_ENGINE_PLACEMENT_H_
#define KVTIER_ENGINE_PLACEMENT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "engine/block_table.h"
#include "engine/completion_queue.h"
#include "engine/copy_planner.h"
#include "engine/engine_counters.h"
#include "engine/eviction/eviction_policy.h"
#include "engine/namespace_registry.h"
#include "kvtier/engine.h"
#include "kvtier/tier_kind.h"
#include "tiers/tier.h"

namespace kvtier {

class Prefetcher;

// What the next writer of a freed slot must wait for before it writes.
struct SlotReuse {
  // Device work still reading the slot: a demotion's copy out of a GPU slot, or the copy of
  // zeros secure_erase put after it.
  std::shared_ptr<Event> event;
  // The slot's old bytes still being copied out by the tier below (host slots).
  std::shared_ptr<Notification> gate;

  bool pending() const { return event != nullptr || (gate != nullptr && !gate->HasBeenNotified()); }
  // Orders `stream`'s later work after both (a stream wait; a host callback for the gate).
  absl::Status OrderStream(Stream& stream) const;
};

// The tier below the host tier, as placement sees it when it evicts a host copy that is its
// block's only copy.
class LowerTier {
 public:
  virtual ~LowerTier() = default;
  // Takes the host copy of `key` at host slot `slot` (e's host copy) down, if the tier admits
  // it: attaches the block's new copy to `e` (through Placement::Attach) and returns the gate
  // that opens once the slot's bytes have been copied out; nullptr when it refuses (admission,
  // quota). The copy-out runs later, off every engine lock. REQUIRES: the placement lock.
  virtual std::shared_ptr<Notification> TakeHostCopy(const BlockKey& key, BlockEntry& e,
                                                     SlotId slot) = 0;
  // Drops the lower tier's copy `slot` of `key` (the block was erased or expired).
  // REQUIRES: the placement lock.
  virtual void Erase(const BlockKey& key, SlotId slot) = 0;
};

// The remote tier as placement sees it (write on eviction): told when a host copy that is its
// block's last copy above disk is evicted, while its bytes are still in the slot.
class RemoteSink {
 public:
  virtual ~RemoteSink() = default;
  // `bytes`: the slot's block_bytes, valid only during the call. REQUIRES: the placement lock.
  virtual void OnLastHostCopyEvicted(const BlockKey& key, BlockEntry& e, const void* bytes) = 0;
};

class Placement {
 public:
  struct Options {
    size_t block_bytes = 0;
    // A disk record of one block (the unit of disk quotas).
    size_t disk_record_bytes = 0;
    bool secure_erase = false;
    bool prefix_aware_eviction = false;
    bool cost_aware_eviction = false;
    uint32_t eviction_window = 8;
    absl::Duration lease_timeout = absl::Seconds(30);
  };

  // `tiers`: the GPU tier (may be null) and the host tier; tiers[kDisk] is null (the disk
  // tier places its own records; see LowerTier). `policies`: one per non-null tier.
  // `offload`: the stream demotions and secure_erase's GPU zeroing go on. `zeros`: a block of
  // zeros in pinned memory (secure_erase with a GPU tier; else null). `prefetcher` may be
  // null (no prefetch accounting). Everything passed by reference or pointer outlives this.
  // `completions` runs the demotions' completions.
  Placement(const Options& options, BlockTable& table, TierArray<Tier*> tiers,
            TierArray<std::unique_ptr<EvictionPolicy>> policies, Device& device, Stream& offload,
            CompletionQueue& completions, const CopyPlanner& planner, EngineCounters& counters,
            NamespaceRegistry& namespaces, Prefetcher* prefetcher, const void* zeros);
  ~Placement();
  Placement(const Placement&) = delete;
  Placement& operator=(const Placement&) = delete;

  // The tier below host (the disk mover); null = none.
  void set_lower_tier(LowerTier* lower) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    lower_ = lower;
  }

  // The remote tier's write-on-eviction hook; null = none.
  void set_remote_sink(RemoteSink* sink) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    remote_sink_ = sink;
  }

  Mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }
  Tier* tier(TierKind t) const { return tiers_[t]; }
  // The fastest tier the engine has: GPU, or host without a GPU tier.
  TierKind top_tier() const { return tiers_[TierKind::kGpu] != nullptr ? TierKind::kGpu : TierKind::kHost; }
  SlotAddress Address(TierKind t, SlotId slot) const { return tiers_[t]->Address(slot); }

  // ---------------------------------------------------------------- namespaces
  // Sizes the per-namespace state for namespace `ns_id` (ids are dense).
  void AddNamespace(uint32_t ns_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets the namespace's quotas and time to live. Returns the shortest time to live of any
  // namespace in ms (0 = none has one), which paces the sweep of expired blocks.
  int64_t ApplyLimits(uint32_t ns_id, const NamespaceLimits& limits)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether namespace ns_id is at its quota in tier t, counting `pending` slots it has
  // acquired there and not attached yet.
  bool AtQuota(uint32_t ns_id, TierKind t, size_t pending = 0) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t quota_blocks(uint32_t ns_id, TierKind t) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ns_[ns_id].quota[t];
  }
  // Whether the block's time to live has passed at `now_ms` (Unix milliseconds).
  bool Expired(const BlockEntry& e, int64_t now_ms) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A new table entry for namespace ns_id exists (its first copy is being attached).
  void CountNewBlock(uint32_t ns_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { ++ns_[ns_id].blocks; }

  // ---------------------------------------------------------------- slots
  // A free slot in tier t for namespace ns_id, evicting (dropping or demoting) an unpinned
  // copy if needed; *reuse says what its writer must wait for. nullopt when every copy in
  // the tier (or, at its quota, every copy of the namespace there) is pinned, leased or in
  // flight. `pending`: slots the caller acquired in t for ns_id and has not attached yet.
  std::optional<SlotId> AcquireSlot(TierKind t, uint32_t ns_id, size_t pending,
                                    SlotReuse* reuse) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `n` slots in tier t for namespace ns_id, all or none (AcquireSlot each, counting the
  // earlier ones as pending). ResourceExhausted naming `op`, the namespace `ns` and what holds
  // the tier (its quota, or pins, leases and copies in flight) when they cannot all be had.
  absl::StatusOr<std::vector<std::pair<SlotId, SlotReuse>>> AcquireSlots(
      TierKind t, uint32_t ns_id, absl::string_view ns, size_t n, const char* op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns a slot AcquireSlot gave (with the reuse it came with) that nothing was attached
  // to or written into.
  void ReturnSlot(TierKind t, SlotId slot, SlotReuse reuse) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The tier's policy: the block in `slot` was read.
  void Touch(TierKind t, SlotId slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    policies_[t]->OnAccess(slot);
  }
  // Returns a slot Detach kept (release_slot = false) once nothing writes it any more.
  void ReleaseHeldSlot(TierKind t, SlotId slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ReleaseHeldSlot for a host slot that transfers may still be copying out of: its next
  // writer waits (SlotReuse::gate) until every event of `readers` has completed (a host
  // callback on the offload stream, after stream waits on them).
  void ReleaseHeldSlotAfter(TierKind t, SlotId slot,
                            absl::Span<const std::shared_ptr<Event>> readers)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts one copy from tier t (only namespace only_ns's when it is not kAnyNs). Returns
  // false when none can go.
  static constexpr uint32_t kAnyNs = UINT32_MAX;
  bool EvictOne(TierKind t, uint32_t only_ns = kAnyNs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Records that `e`'s copy in tier t is at `slot` (for the disk tier: its record id).
  // `cold`: a copy made in passing (EvictionPolicy::OnInsertCold).
  void Attach(const BlockKey& key, BlockEntry& e, TierKind t, SlotId slot, bool cold = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets `e`'s copy in tier t and frees its slot (the disk tier: erases the record).
  // `release_slot` false: the caller returns the slot later (ReleaseHeldSlot), once copies
  // still writing it are done.
  void Detach(const BlockKey& key, BlockEntry& e, TierKind t, bool release_slot = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the lower tier's copy of `e` without erasing it there (that tier dropped it).
  void ForgetLowerCopy(BlockEntry& e, TierKind t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees every copy of `e` and uncounts the block; the caller then removes the entry.
  void DetachAll(const BlockKey& key, BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For an entry whose last copy is gone: true (the caller removes it) unless it is busy,
  // in which case it is marked erased and reclaimed when the last pin or write goes.
  bool ForgetIfEmpty(BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For a completion that touched `e`: detaches an erased entry nobody uses any more.
  // Returns true when the caller must remove it.
  bool ReclaimIfErased(const BlockKey& key, BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---------------------------------------------------------------- writes in flight
  // An id for a write whose completion is not an event (a disk write or read).
  uint64_t NextWriteId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return next_write_id_++; }
  // An id for a transfer's device copies, whose ready event is recorded only once the whole
  // transfer is enqueued: until CloseWrite, Settle (and ReadersLanded) does not take the
  // (unrecorded, hence "complete") event for a landed copy. Call CloseWrite once the transfer's event is
  // recorded, or once its stream has drained after a failure.
  uint64_t OpenWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    open_writes_.push_back(next_write_id_);
    return next_write_id_++;
  }
  void CloseWrite(uint64_t write_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::erase(open_writes_, write_id);
  }
  // Marks slot[t] of `e` as being written by transfer `write_id`, landing at `ready`.
  void StartWrite(BlockEntry& e, TierKind t, uint64_t write_id, std::shared_ptr<Event> ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Clears e's writing bit for tier t if that copy has landed (its ready event completed, or
  // its disk read was verified), as its completion would. Returns whether it is still being
  // written.
  bool Settle(BlockEntry& e, TierKind t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completion of transfer `write_id`'s writes into tier t.
  void OnWritesLanded(TierKind t, absl::Span<const BlockKey> keys, uint64_t write_id)
      ABSL_LOCKS_EXCLUDED(mu_);

  // ---------------------------------------------------------------- failed transfers
  // What a transfer whose enqueueing failed leaves to undo once its stream is idle.
  struct FailedTransfer {
    uint64_t write_id = 0;  // its OpenWrite id (0: none)
    TierKind tier = TierKind::kHost;
    std::vector<SlotId> held_slots;  // slots of the copies it withdrew, in `tier`
    std::vector<BlockKey> unpin;     // keys it pinned
    std::vector<BlockKey> read;      // keys it was reading (AddReader, with its write id)
  };
  // A failed transfer withdraws the copies it was writing into tier t: they are forgotten at
  // once (nobody may read them) and their slots stay out of the pool, in *failed, until
  // copies already enqueued into them are done.
  void WithdrawWrites(TierKind t, absl::Span<const BlockKey> keys, FailedTransfer* failed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Once the failed transfer's stream is idle (PendingTransfer::Settle): releases its held
  // slots, unpins its keys, lets go of what it read and closes its write id.
  void ReleaseAfterFailure(const FailedTransfer& failed) ABSL_LOCKS_EXCLUDED(mu_);

  // ---------------------------------------------------------------- pins and leases
  // Pins `keys` of namespace ns_id (named `ns` in errors); on a key that is not cached (or
  // expired) unpins what it pinned and returns NotFound naming `op` and the key. With a
  // `reader`, the keys are held by transfer `transfer` reading them until `reader` completes
  // (AddReader) rather than pinned.
  absl::Status PinAll(uint32_t ns_id, absl::string_view ns, absl::Span<const BlockKey> keys,
                      const char* op, const std::shared_ptr<Event>* reader = nullptr,
                      uint64_t transfer = 0) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unpin(absl::Span<const BlockKey> keys) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Transfer `transfer` (an OpenWrite id, open until its event is recorded) reads `e`'s copies
  // until `done` completes: they are not evicted before.
  void AddReader(BlockEntry& e, std::shared_ptr<Event> done, uint64_t transfer)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Transfer `transfer` no longer reads `keys` (its completion, or its failure).
  void ReleaseReaders(absl::Span<const BlockKey> keys, uint64_t transfer)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completion of transfer `transfer`'s reads of `keys`.
  void OnReadsDone(absl::Span<const BlockKey> keys, uint64_t transfer) ABSL_LOCKS_EXCLUDED(mu_);
  // Leases pinned `keys` until ReleaseLease or the timeout (ZeroDuration: the default).
  uint64_t AddLease(absl::Span<const BlockKey> keys, absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unpins a lease's keys; OK for a lease that expired (and was reaped) already.
  absl::Status ReleaseLease(uint64_t lease_id) ABSL_LOCKS_EXCLUDED(mu_);
  void ReapExpiredLeases() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The events of copies in flight into or out of tier t's slots whose blocks are not
  // pinned: what a caller that found no free slot may wait for before trying again (each
  // such slot is evictable once its copies land). Empty when every busy slot is pinned or
  // leased: then waiting would not free one (and the holder may be the caller).
  std::vector<std::shared_ptr<Event>> InFlightCopies(TierKind t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---------------------------------------------------------------- erase
  // Erases `keys` of namespace ns_id from every tier; busy blocks vanish from lookups now and
  // free their slots when the last pin or write goes. Returns how many were present.
  size_t Erase(uint32_t ns_id, absl::Span<const BlockKey> keys) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every block of namespace ns_id.
  size_t EraseNamespace(uint32_t ns_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Erases every block whose time to live has passed; counts them per namespace.
  void SweepExpired() ABSL_LOCKS_EXCLUDED(mu_);

  // ---------------------------------------------------------------- events
  // Events must not be destroyed inside device callbacks (CUDA forbids API calls there):
  // completions retire them here and API calls destroy them (DestroyRetiredEvents).
  void RetireEvent(std::shared_ptr<Event> event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DestroyRetiredEvents() ABSL_LOCKS_EXCLUDED(mu_);

  // ---------------------------------------------------------------- prefetch
  // A hinted block now on its way into the top tier: marked prefetched there.
  void MarkPrefetched(BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A Load or LoadToGpuTier touches `e`: settles a pending prefetch of it (in time or late).
  void ConsumePrefetch(BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // While set, eviction spares blocks hints brought up and nobody used yet (a hinted
  // prefetch must not evict another hint's blocks before they are used).
  void set_protect_prefetched(bool on) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    protect_prefetched_ = on;
  }

  // ---------------------------------------------------------------- stats
  // Fills what placement knows: per tier capacity, used and pinned blocks; per namespace
  // blocks (total and per tier) and quotas (out->namespaces must be sized by id already);
  // leases held. Reaps expired leases first.
  void FillStats(EngineStats* out) ABSL_LOCKS_EXCLUDED(mu_);

  // ---------------------------------------------------------------- teardown
  // Drops every reuse event and retired event (the engine's destructor, streams drained).
  void ClearEvents() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct NamespaceState {
    size_t blocks = 0;                // blocks with at least one copy
    TierArray<size_t> tier_blocks;    // copies per tier
    TierArray<size_t> quota;          // in blocks (disk: records); 0 = none
    int64_t ttl_ms = 0;               // 0 = none
  };
  struct Lease {
    std::vector<BlockKey> keys;
    absl::Time expires;
  };

  // Drops e's readers whose transfers have landed; returns whether none is left.
  bool ReadersLanded(BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // May the copy of `e` in tier t go now? (Settles a landed write first.)
  bool Evictable(BlockEntry& e, TierKind t, uint32_t only_ns, bool spare_only_copies)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The policy's victim in tier t among evictable slots (with the prefix- and cost-aware
  // refinements when enabled).
  std::optional<SlotId> PickVictim(TierKind t, uint32_t only_ns, bool spare_only_copies)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Demotes the GPU copy at `gpu_slot` of `key` into a new host slot: the copy is enqueued on
  // the offload stream. Returns the host slot and the copy's event, or nullopt when no host
  // slot can be had (or the copy could not be enqueued).
  std::optional<std::pair<SlotId, std::shared_ptr<Event>>> DemoteToHost(const BlockKey& key,
                                                                        SlotId gpu_slot,
                                                                        uint32_t ns_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // secure_erase: zeroes a freed slot (host: at once, unless its bytes are still being copied
  // out, which then zeroes it; GPU: a copy of zeros on the offload stream, which the slot's
  // next writer waits for).
  void ZeroSlot(TierKind t, SlotId slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleasePrefetch(BlockEntry& e, TierKind t, bool used, bool late)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  BlockTable& table_;
  const TierArray<Tier*> tiers_;
  Device& device_;
  Stream& offload_;
  CompletionQueue& completions_;
  const CopyPlanner& planner_;
  EngineCounters& counters_;
  NamespaceRegistry& namespaces_;
  Prefetcher* const prefetcher_;
  const void* const zeros_;
  Mutex mu_;
  LowerTier* lower_ ABSL_GUARDED_BY(mu_) = nullptr;
  RemoteSink* remote_sink_ ABSL_GUARDED_BY(mu_) = nullptr;
  TierArray<std::unique_ptr<EvictionPolicy>> policies_ ABSL_GUARDED_BY(mu_);
  TierArray<std::vector<BlockKey>> slot_owner_ ABSL_GUARDED_BY(mu_);
  TierArray<std::vector<SlotReuse>> reuse_ ABSL_GUARDED_BY(mu_);
  std::vector<NamespaceState> ns_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Lease> leases_ ABSL_GUARDED_BY(mu_);
  uint64_t next_lease_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_write_id_ ABSL_GUARDED_BY(mu_) = 1;
  // OpenWrite ids not yet closed (a handful: one per transfer being planned, or failing).
  std::vector<uint64_t> open_writes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Event>> retired_events_ ABSL_GUARDED_BY(mu_);
  bool protect_prefetched_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_PLACEMENT_H_
