// engine/engine_impl.h — the Engine: placement, eviction, leases and transfers.
//
// State and locks:
//   * placement_mu_ guards every decision about where bytes live: the tiers' free lists,
//     their eviction policies, slot owners, slot reuse events, leases, and every change to
//     a block entry's slots, pins and writing bits. It is held only for metadata work and
//     for enqueueing copies (never for waiting on them), so the host never blocks on the
//     device while holding it.
//   * The block table's shard locks guard entries; Match takes only those.
//   * ns_mu_ guards the namespace registry; it is a leaf lock.
//   * external_mu_ guards the registered device memory and its use counts. Never held with
//     placement_mu_; only the device's own memory lock is taken under it.
//   Order: placement_mu_ → shard lock. Completion callbacks (run by the device after a
//   copy) take placement_mu_ themselves; no code holding placement_mu_ waits for a copy.
//
// Copy ordering without host waits: a slot freed while a copy still reads it (a GPU slot
// whose block is being demoted) carries a reuse event; the next writer's stream waits on
// it. A block copy that is still landing carries a ready event; a reader's stream waits on
// it. Streams: onboard_ (into caller memory and the GPU tier), gated_onboard_ (the same, for
// transfers that wait for disk reads, and for prefetches) and offload_ (into the host tier),
// so stores never queue behind loads, and loads of resident blocks never queue behind the
// disk or behind speculation.

#ifndef KVTIER_ENGINE_ENGINE_IMPL_H_
#define KVTIER_ENGINE_ENGINE_IMPL_H_

#include <array>
#include <deque>
#include <map>
#include <thread>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "common/mutex.h"
#include "engine/admission_policy.h"
#include "engine/block_table.h"
#include "engine/completion_queue.h"
#include "engine/eviction/eviction_policy.h"
#include "engine/metrics.h"
#include "engine/metrics_server.h"
#include "engine/transfer_handle.h"
#include "kernels/paged_kernels.h"
#include "kvtier/engine.h"
#include "tiers/disk_tier.h"
#include "tiers/tier.h"

namespace kvtier {

// The disk tier's options from the public ones, validated (InvalidArgument naming the field).
absl::StatusOr<DiskTierOptions> MakeDiskTierOptions(const DiskOptions& disk,
                                                    const Geometry& geometry);

absl::Status ValidateNamespaceLimits(const NamespaceLimits& limits, size_t block_bytes);

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
  DiskTier* disk_tier_for_testing() { return disk_.get(); }  // engine/testing_hooks.cc only
  CompletionQueue& completions_for_testing() { return completions_; }  // likewise
  Tier* tier_for_testing(TierKind t) const { return tier(t); }  // secure-erase tests only

 private:
  // Per-namespace counters; behind a pointer so Namespace stays movable.
  struct NamespaceCounters {
    std::atomic<uint64_t> matched{0}, missed{0}, stored{0}, loaded{0};
    std::array<std::atomic<uint64_t>, kNumTiers> hits{}, misses{};
    std::shared_ptr<StallMeter> stall = std::make_shared<StallMeter>();
    std::atomic<uint64_t> quota_evictions{0}, quota_rejections{0}, expired{0};
    // The namespace's time to live in ms (0 = none), for Match, which reads it unlocked.
    std::atomic<int64_t> ttl_ms{0};
  };
  struct Namespace {
    std::string name;
    uint32_t id;
    KeyHasher hasher;
    std::unique_ptr<NamespaceCounters> counters = std::make_unique<NamespaceCounters>();
  };
  struct TierCounters {
    std::atomic<uint64_t> hits{0}, misses{0}, bytes_in{0}, bytes_out{0}, evictions{0},
        demotions{0}, promotions{0};
  };
  struct Lease {
    std::vector<BlockKey> keys;
    absl::Time expires;
  };
  // One side of a block copy: a block in kvtier's layout at `at`, or a page of a caller's
  // paged pool.
  struct Endpoint {
    SlotAddress at;
    const KvBuffers::PagedPool* pool = nullptr;
    uint32_t page = 0;
  };
  struct BlockCopy {
    Endpoint src;
    Endpoint dst;
  };

  explicit EngineImpl(const EngineOptions& options) : options_(options) {}
  // Lookup counts (TierStats::hits / misses): found[t] blocks were read from tier t as the
  // highest tier holding them, so each is a miss in every existing tier above t;
  // `not_cached` blocks are misses in every existing tier.
  void CountLookups(NamespaceCounters& ns, const std::array<uint64_t, kNumTiers>& found,
                    uint64_t not_cached);
  bool HasTier(int t) const {
    return t == static_cast<int>(TierKind::kDisk) ? disk_ != nullptr : tiers_[t] != nullptr;
  }
  // A load's handle, charging its stall time to the engine and to namespace `ns`.
  std::unique_ptr<TransferHandle> LoadHandle(std::unique_ptr<TransferHandleImpl> handle,
                                             const NamespaceCounters& ns) const {
    handle->set_stall_meters({stall_, ns.stall});
    return handle;
  }
  absl::Status Init();
  // Opens the disk tier and puts every block it recovers into the block table.
  absl::Status OpenDisk();

  absl::StatusOr<const Namespace*> FindNamespace(absl::string_view ns) const;
  // Registered device memory in use by one Store or Load: the ranges its caller buffers lie
  // in count one more transfer each until Release (or destruction), so UnregisterDeviceMemory
  // refuses them meanwhile.
  class ExternalUse;
  // Counts the transfer against every registered range `buffers` lie in; null when they lie
  // in none. Called before ValidateBuffers, so a range cannot be unregistered between the
  // check and the copies.
  std::shared_ptr<ExternalUse> UseExternal(const KvBuffers& buffers);
  absl::Status ValidateBuffers(const KvBuffers& buffers, size_t expected_blocks,
                               const char* op) const;
  static Endpoint CallerEndpoint(const KvBuffers& buffers, size_t i);
  Endpoint SlotEndpoint(TierKind t, SlotId slot) const { return Endpoint{tier(t)->Address(slot)}; }
  SlotAddress EndpointAddress(const Endpoint& e, uint32_t layer, KvPart part) const;
  // Appends the copy ops of one block: one layer (layer >= 0) or all (layer < 0), coalesced
  // to as few ops as the layouts allow.
  void AppendCopyOps(const BlockCopy& copy, int layer, std::vector<CopyOp>* ops) const;

  Tier* tier(TierKind t) const { return tiers_[static_cast<int>(t)].get(); }

  // Placement, all REQUIRES placement_mu_.
  // A free slot in tier t, evicting (dropping or demoting) an unpinned copy if needed.
  // Sets *reuse_after to an event the writer must wait for (or null). nullopt when every
  // copy in the tier is pinned, leased or in flight.
  // `ns_id`: the namespace the slot is for: at its quota in tier t, one of its own copies
  // there is evicted instead (nullopt if none can be).
  // `pending`: slots this caller already acquired in tier t for the namespace and has not
  // attached yet (they count against its quota).
  std::optional<SlotId> AcquireSlot(TierKind t, std::shared_ptr<Event>* reuse_after,
                                    uint32_t ns_id, size_t pending = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // Evicts one unpinned copy from tier t; only namespace `only_ns`'s when it is not kAnyNs.
  static constexpr uint32_t kAnyNs = UINT32_MAX;
  bool EvictOne(TierKind t, uint32_t only_ns = kAnyNs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // Whether namespace ns_id is at its quota in tier t.
  bool AtQuota(uint32_t ns_id, int t, size_t pending = 0) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_) {
    const size_t quota = ns_quota_blocks_[ns_id][t];
    return quota != 0 && ns_tier_blocks_[ns_id][t] + pending >= quota;
  }
  // Whether the block's time to live has passed at `now_ms` (Unix milliseconds).
  bool Expired(const BlockEntry& e, int64_t now_ms) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_) {
    const int64_t ttl = ns_ttl_ms_[e.ns_id];
    return ttl > 0 && now_ms - e.stored_unix_ms >= ttl;
  }
  void ApplyLimits(uint32_t ns_id, const NamespaceLimits& limits)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // The disk record of one block under this engine's codec (NominalRecordSize): the unit of
  // the disk tier's capacity_blocks and of disk quotas.
  size_t DiskRecordBytes() const {
    const absl::StatusOr<Codec> codec = ParseCodec(options_.disk.codec);
    return NominalRecordSize(options_.geometry, codec.ok() ? *codec : Codec::kNone);
  }
  // Removes every block whose time to live has passed, from every tier.
  void SweepExpired();
  // secure_erase: zeroes the slot (host: at once; GPU: a copy of zeros on the offload stream,
  // which the slot's next writer waits for through reuse_after_).
  void ZeroSlot(TierKind t, SlotId slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // `cold`: the copy is made in passing (EvictionPolicy::OnInsertCold).
  void Attach(const BlockKey& key, BlockEntry& e, TierKind t, SlotId slot, bool cold = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // `release_slot` false: the caller returns the slot to its tier later (copies into it are
  // still in flight).
  void Detach(const BlockKey& key, BlockEntry& e, TierKind t, bool release_slot = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // Frees every slot of an entry; the caller then removes it from the table.
  void DetachAll(const BlockKey& key, BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  void Unpin(absl::Span<const BlockKey> keys) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  void ReapExpiredLeases() ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  size_t EraseLocked(uint32_t ns_id, absl::Span<const BlockKey> keys)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);

  // One attempt of Load; *out_of_slots says it failed for want of a host slot to read a
  // disk-only block into. *read_from_disk collects the indices of the blocks whose disk reads
  // an attempt started (a retry counts them as disk hits, not host).
  absl::StatusOr<std::unique_ptr<TransferHandle>> LoadOnce(const LoadRequest& r,
                                                           bool* out_of_slots,
                                                           std::vector<size_t>* read_from_disk);
  // One attempt of LoadToGpuTier; *out_of_slots says it failed for want of a free GPU slot.
  absl::StatusOr<std::unique_ptr<TransferHandle>> LoadToGpuTierOnce(
      absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise,
      absl::Duration lease_timeout, bool* out_of_slots);

  // Completions: run on completions_ (posted by stream callbacks and disk threads).
  void OnWritesLanded(TierKind t, const std::vector<BlockKey>& keys, uint64_t write_id);
  // Runs `fn` on completions_ once the work enqueued on `stream` so far has finished. Every
  // completion that takes an engine lock goes this way, never in the stream callback itself
  // (engine/completion_queue.h says why).
  absl::Status WhenDone(Stream& stream, absl::AnyInvocable<void() &&> fn);
  // Marks slot[t] of `e` as being written by transfer `write_id`, landing at `ready`.
  void StartWrite(BlockEntry& e, TierKind t, uint64_t write_id, std::shared_ptr<Event> ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // Events must not be destroyed inside device callbacks (CUDA forbids API calls there):
  // callbacks retire them here, and API calls destroy them.
  void RetireEvent(std::shared_ptr<Event> event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  void DestroyRetiredEvents() ABSL_LOCKS_EXCLUDED(placement_mu_);
  void OnReadsDone(const std::vector<BlockKey>& keys);

  // Disk tier. Host copies evicted with no other copy are written to disk (if admitted);
  // disk-only blocks are read into a host slot before anything else reads them.
  std::string NamespaceName(uint32_t ns_id) const;
  // Starts writing the host copy of `key` to disk. REQUIRES: e has a settled host copy and no
  // disk copy. Returns false if admission refused or the disk is busy.
  bool StartDiskWrite(const BlockKey& key, BlockEntry& e)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // Makes sure the block has a host copy: if it has only a disk copy, takes a host slot and
  // starts reading the record into it (readers then wait with AwaitHostCopy).
  // ResourceExhausted when no host slot can be had; NotFound when the record is gone.
  // `passing`: the block is on its way to the GPU tier; its host copy is inserted cold.
  absl::Status EnsureHostCopy(const BlockKey& key, bool passing = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // Orders `stream` after the host copy of `e` has landed (device copy or disk read), and
  // remembers disk reads in `fills` so the transfer can report their status.
  absl::Status AwaitHostCopy(Stream& stream, const BlockEntry& e,
                             std::vector<std::shared_ptr<HostFill>>* fills);
  void OnDiskWritten(const BlockKey& key, uint64_t write_id, absl::Status status);
  void OnHostFilled(const BlockKey& key, uint64_t write_id, std::shared_ptr<HostFill> fill,
                    absl::Status status);
  void OnDiskDropped(std::vector<std::pair<BlockKey, RecordId>> dropped);
  // Removes an entry's last trace when it has no copy left. Returns true to erase it.
  bool ForgetIfEmpty(BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  absl::Status ReleaseLease(uint64_t lease_id);

  // Pins `keys` in namespace ns_id for reading; on a missing key unpins what it pinned and
  // returns NotFound naming it.
  absl::Status PinAll(uint32_t ns_id, absl::string_view ns, absl::Span<const BlockKey> keys,
                      const char* op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);

  absl::StatusOr<std::shared_ptr<Event>> NewEvent();
  absl::StatusOr<std::vector<std::shared_ptr<Event>>> NewEvents(size_t n);
  // Enqueues `copies` on `stream`: layer by layer, recording layer_events[l] after layer l,
  // or whole blocks, recording every layer event after the last. Empty layer_events: whole
  // blocks, nothing recorded.
  // Promotes `keys` of namespace ns_id toward the top tier (Prefetch's work). `hinted`:
  // for the prefetcher: promoted blocks are marked prefetched and count against the budget,
  // and eviction spares other hints' unused blocks.
  absl::StatusOr<std::unique_ptr<TransferHandle>> PrefetchKeys(uint32_t ns_id,
                                                               absl::Span<const BlockKey> keys,
                                                               bool hinted);
  // The prefetcher thread: serves queued hints while the budget has room.
  void PrefetcherLoop();
  // A Load or LoadToGpuTier touches block `e`: settles a pending prefetch of it (in time or
  // late) and returns its bytes to the budget.
  void ConsumePrefetch(BlockEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  // Returns `bytes` to the prefetch budget and wakes the prefetcher.
  void ReleasePrefetchBudget(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(placement_mu_);
  TierKind top_tier() const {
    return tiers_[static_cast<int>(TierKind::kGpu)] != nullptr ? TierKind::kGpu
                                                               : TierKind::kHost;
  }

  // Paged copies move by kernel (see UsesPagedKernel), the rest by batched DMA.
  absl::Status EnqueueCopies(Stream& stream, const std::vector<BlockCopy>& copies, bool layerwise,
                             const std::vector<std::shared_ptr<Event>>& layer_events);
  // True for a paged copy that goes through the paged-transfer kernel rather than per-part
  // DMA: every device ↔ pool copy, and host ↔ pool copies per ChooseHostPagedPath.
  bool UsesPagedKernel(const BlockCopy& copy) const;
  // Adds `copy` to the transfer in `transfers` with its direction, side and pool (or a new one).
  void AddToPagedTransfers(const BlockCopy& copy, std::vector<PagedTransfer>* transfers) const;

  const EngineOptions options_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<Stream> onboard_;
  std::unique_ptr<Stream> gated_onboard_;
  std::unique_ptr<Stream> offload_;
  // Transfer completions (WhenDone). Outlives the streams: drained after they are.
  CompletionQueue completions_;
  std::array<std::unique_ptr<Tier>, kNumTiers> tiers_;  // tiers_[kDisk] stays null
  BlockTable table_;
  std::unique_ptr<AdmissionPolicy> admission_;
  std::unique_ptr<DiskTier> disk_;  // destroyed first (its callbacks reach the engine)

  Mutex placement_mu_;
  std::array<std::unique_ptr<EvictionPolicy>, kNumTiers> policies_ ABSL_GUARDED_BY(placement_mu_);
  std::array<std::vector<BlockKey>, kNumTiers> slot_owner_ ABSL_GUARDED_BY(placement_mu_);
  std::array<std::vector<std::shared_ptr<Event>>, kNumTiers> reuse_after_
      ABSL_GUARDED_BY(placement_mu_);
  absl::flat_hash_map<uint64_t, Lease> leases_ ABSL_GUARDED_BY(placement_mu_);
  uint64_t next_lease_id_ ABSL_GUARDED_BY(placement_mu_) = 1;
  uint64_t next_write_id_ ABSL_GUARDED_BY(placement_mu_) = 1;
  std::vector<std::shared_ptr<Event>> retired_events_ ABSL_GUARDED_BY(placement_mu_);
  // Blocks per namespace id and tier.
  std::vector<std::array<size_t, kNumTiers>> ns_tier_blocks_ ABSL_GUARDED_BY(placement_mu_);
  std::vector<size_t> ns_blocks_ ABSL_GUARDED_BY(placement_mu_);
  // Per namespace: quota per tier in blocks (0 = none), and time to live in ms (0 = none).
  std::vector<std::array<size_t, kNumTiers>> ns_quota_blocks_ ABSL_GUARDED_BY(placement_mu_);
  std::vector<int64_t> ns_ttl_ms_ ABSL_GUARDED_BY(placement_mu_);
  // secure_erase with a GPU tier: one block of zeros in pinned memory, the source of GPU zeroing.
  void* zeros_ = nullptr;

  // Device memory registered through RegisterDeviceMemory: base → size and the number of
  // Store / Load transfers in flight whose caller buffers lie in it.
  struct ExternalRange {
    size_t bytes = 0;
    uint64_t transfers = 0;
  };
  Mutex external_mu_;
  std::map<uint64_t, ExternalRange> external_ ABSL_GUARDED_BY(external_mu_);

  mutable Mutex ns_mu_;
  std::vector<std::unique_ptr<Namespace>> namespaces_ ABSL_GUARDED_BY(ns_mu_);
  absl::flat_hash_map<std::string, uint32_t> ns_by_name_ ABSL_GUARDED_BY(ns_mu_);

  // True while a hinted prefetch acquires slots: eviction then spares unused prefetched
  // blocks, so one hint cannot evict another's blocks before they are used.
  bool protect_prefetched_ ABSL_GUARDED_BY(placement_mu_) = false;

  // Look-ahead hints. hint_mu_ is a leaf lock: taken under placement_mu_ only to wake the
  // prefetcher; the prefetcher releases it before taking placement_mu_.
  struct HintItem {
    uint64_t hint_id;
    uint32_t ns_id;
    BlockKey key;
  };
  Mutex hint_mu_;
  std::deque<HintItem> hints_ ABSL_GUARDED_BY(hint_mu_);
  uint64_t next_hint_id_ ABSL_GUARDED_BY(hint_mu_) = 1;
  bool stop_prefetcher_ ABSL_GUARDED_BY(hint_mu_) = false;
  // How often the prefetcher thread sweeps expired blocks: a quarter of the shortest TTL,
  // in [10 ms, 1 s]; InfiniteDuration when no namespace has a TTL.
  absl::Duration sweep_interval_ ABSL_GUARDED_BY(hint_mu_) = absl::InfiniteDuration();
  // Bytes of hinted blocks in flight or unused in the top tier; written under placement_mu_,
  // read by the prefetcher without it.
  std::atomic<size_t> prefetch_outstanding_{0};
  size_t prefetch_budget_ = 0;  // set at Init
  std::thread prefetcher_;
  std::atomic<uint64_t> prefetch_hinted_{0}, prefetch_issued_{0}, prefetch_present_{0},
      prefetch_skipped_{0}, prefetch_cancelled_{0}, prefetch_in_time_{0}, prefetch_late_{0},
      prefetch_unused_{0};

  std::array<TierCounters, kNumTiers> counters_;
  std::atomic<uint64_t> disk_busy_rejections_{0};
  std::atomic<uint64_t> match_calls_{0}, matched_blocks_{0}, stored_blocks_{0},
      deduplicated_blocks_{0}, rejected_blocks_{0}, loaded_blocks_{0}, leases_expired_{0};
  std::atomic<uint64_t> missed_blocks_{0};
  const std::shared_ptr<StallMeter> stall_ = std::make_shared<StallMeter>();
  LatencyHistogram match_latency_, store_latency_, load_latency_;
  // The HTTP endpoint (EngineOptions::metrics_port); stopped first in the destructor, since
  // its thread calls Stats().
  std::unique_ptr<MetricsServer> metrics_server_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_ENGINE_IMPL_H_
