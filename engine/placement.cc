// engine/placement.cc — see placement.h.
//
// Over 700 lines, on purpose: everything here is state under the one placement lock, and
// every function changes several parts of it together (a victim's slot, its owner, its
// policy, its namespace's counts, the slot's reuse); split into classes, each would need the
// others' state under the same lock.

#include "engine/placement.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "engine/prefetcher.h"

namespace kvtier {

constexpr TierKind kGpu = TierKind::kGpu;
constexpr TierKind kHost = TierKind::kHost;
constexpr TierKind kDisk = TierKind::kDisk;

absl::Status SlotReuse::OrderStream(Stream& stream) const {
  if (event != nullptr) {
    if (absl::Status s = stream.Wait(*event); !s.ok()) return s;
  }
  if (gate != nullptr && !gate->HasBeenNotified()) {
    // Holds the stream (not the host) until the tier below has copied the slot's old bytes
    // out. The gate is opened by the disk mover's thread, which never waits for the device
    // or for an engine lock.
    return stream.AddCallback([gate = gate] { gate->WaitForNotification(); });
  }
  return absl::OkStatus();
}

Placement::Placement(const Options& options, BlockTable& table, TierArray<Tier*> tiers,
                     TierArray<std::unique_ptr<EvictionPolicy>> policies, Device& device,
                     Stream& offload, CompletionQueue& completions, const CopyPlanner& planner,
                     EngineCounters& counters, NamespaceRegistry& namespaces,
                     Prefetcher* prefetcher, const void* zeros)
    : options_(options),
      table_(table),
      tiers_(tiers),
      device_(device),
      offload_(offload),
      completions_(completions),
      planner_(planner),
      counters_(counters),
      namespaces_(namespaces),
      prefetcher_(prefetcher),
      zeros_(zeros) {
  MutexLock lock(&mu_);
  policies_ = std::move(policies);
  for (TierKind t : {kGpu, kHost}) {
    if (tiers_[t] == nullptr) continue;
    slot_owner_[t].resize(tiers_[t]->num_slots());
    reuse_[t].resize(tiers_[t]->num_slots());
  }
}

Placement::~Placement() = default;

// ----------------------------------------------------------------------------- namespaces

void Placement::AddNamespace(uint32_t ns_id) {
  if (ns_.size() <= ns_id) ns_.resize(ns_id + 1);
}

int64_t Placement::ApplyLimits(uint32_t ns_id, const NamespaceLimits& limits) {
  NamespaceState& n = ns_[ns_id];
  const size_t block = options_.block_bytes;
  n.quota[kGpu] = limits.gpu_bytes / block;
  n.quota[kHost] = limits.host_bytes / block;
  n.quota[kDisk] = options_.disk_record_bytes == 0 ? 0 : limits.disk_bytes / options_.disk_record_bytes;
  n.ttl_ms = limits.ttl == absl::InfiniteDuration()
                 ? 0
                 : std::max<int64_t>(1, absl::ToInt64Milliseconds(limits.ttl));
  namespaces_.Get(ns_id).counters.ttl_ms.store(n.ttl_ms, std::memory_order_relaxed);
  int64_t shortest = 0;
  for (const NamespaceState& s : ns_) {
    if (s.ttl_ms > 0 && (shortest == 0 || s.ttl_ms < shortest)) shortest = s.ttl_ms;
  }
  return shortest;
}

bool Placement::AtQuota(uint32_t ns_id, TierKind t, size_t pending) const {
  const NamespaceState& n = ns_[ns_id];
  return n.quota[t] != 0 && n.tier_blocks[t] + pending >= n.quota[t];
}

bool Placement::Expired(const BlockEntry& e, int64_t now_ms) const {
  const int64_t ttl = ns_[e.ns_id].ttl_ms;
  return ttl > 0 && now_ms - e.stored_unix_ms >= ttl;
}

// ----------------------------------------------------------------------------- slots

std::optional<SlotId> Placement::AcquireSlot(TierKind t, uint32_t ns_id, size_t pending,
                                             SlotReuse* reuse) {
  Tier* tier = tiers_[t];
  if (AtQuota(ns_id, t, pending)) {
    // At its quota the namespace makes room among its own copies, never another's.
    const bool evicted = EvictOne(t, ns_id);
    NamespaceCounters& c = namespaces_.Get(ns_id).counters;
    (evicted ? c.quota_evictions : c.quota_rejections).fetch_add(1, std::memory_order_relaxed);
    if (!evicted) return std::nullopt;
  }
  std::optional<SlotId> slot = tier->Allocate();
  if (!slot && EvictOne(t)) slot = tier->Allocate();
  if (!slot && !leases_.empty()) {
    // Expired leases may be what holds the tier: reclaim them and try once more.
    ReapExpiredLeases();
    if (EvictOne(t)) slot = tier->Allocate();
  }
  if (!slot) return std::nullopt;
  *reuse = std::move(reuse_[t][*slot]);
  reuse_[t][*slot] = SlotReuse{};
  return slot;
}

absl::StatusOr<std::vector<std::pair<SlotId, SlotReuse>>> Placement::AcquireSlots(
    TierKind t, uint32_t ns_id, absl::string_view ns, size_t n, const char* op) {
  std::vector<std::pair<SlotId, SlotReuse>> acquired;
  for (size_t k = 0; k < n; ++k) {
    SlotReuse reuse;
    std::optional<SlotId> slot = AcquireSlot(t, ns_id, k, &reuse);
    if (slot) {
      acquired.emplace_back(*slot, std::move(reuse));
      continue;
    }
    for (auto& [s, r] : acquired) ReturnSlot(t, s, std::move(r));
    if (AtQuota(ns_id, t, k)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s: namespace '%s' is at its %s quota of %d blocks and none of its blocks there can "
          "be evicted for the %d more this call needs",
          op, ns, absl::AsciiStrToUpper(TierKindName(t)), ns_[ns_id].quota[t], n - k));
    }
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: no free %s slot for %d more blocks: all %u slots are pinned, leased or in flight",
        op, absl::AsciiStrToUpper(TierKindName(t)), n - k, tiers_[t]->num_slots()));
  }
  return acquired;
}

std::vector<std::shared_ptr<Event>> Placement::InFlightCopies(TierKind t) {
  std::vector<std::shared_ptr<Event>> events;
  const std::vector<BlockKey>& owners = slot_owner_[t];
  for (SlotId s = 0; s < owners.size(); ++s) {
    table_.Find(owners[s], [&](BlockEntry* e) {
      mu_.AssertHeld();
      // A free slot keeps its last owner's key: only an entry that holds the slot counts.
      if (e == nullptr || e->slot[t] != s || e->pins != 0) return;
      if (e->is_writing(t) && e->ready[t] != nullptr) events.push_back(e->ready[t]);
      for (const BlockEntry::Reader& r : e->readers) events.push_back(r.done);
    });
  }
  return events;
}

void Placement::ReturnSlot(TierKind t, SlotId slot, SlotReuse reuse) {
  reuse_[t][slot] = std::move(reuse);
  tiers_[t]->Release(slot);
}

void Placement::ReleaseHeldSlot(TierKind t, SlotId slot) {
  if (options_.secure_erase) ZeroSlot(t, slot);
  tiers_[t]->Release(slot);
}

void Placement::ReleaseHeldSlotAfter(TierKind t, SlotId slot,
                                     absl::Span<const std::shared_ptr<Event>> readers) {
  std::vector<Event*> pending;
  for (const std::shared_ptr<Event>& r : readers) {
    absl::StatusOr<bool> done = r->Query();
    if (!done.ok() || !*done) pending.push_back(r.get());
  }
  if (!pending.empty()) {
    SlotReuse& reuse = reuse_[t][slot];
    auto gate = std::make_shared<Notification>();
    absl::Status s;
    for (Event* r : pending) {
      if (s = offload_.Wait(*r); !s.ok()) break;
    }
    if (s.ok() && reuse.gate != nullptr && !reuse.gate->HasBeenNotified()) {
      // Already gated (its old bytes are still on their way to disk): both must open.
      s = offload_.AddCallback([old = reuse.gate] { old->WaitForNotification(); });
    }
    if (s.ok()) s = offload_.AddCallback([gate] { gate->Notify(); });
    if (!s.ok()) {
      // No way to order the next writer after the readers: keep the slot out of the pool
      // rather than let it be overwritten under them (a slot lost until the engine closes).
      KVTIER_LOG(kError, "holding %s slot %u: cannot order its reuse after its readers (%s)",
                 TierKindName(t), slot, s.ToString());
      return;
    }
    reuse.gate = std::move(gate);
  }
  ReleaseHeldSlot(t, slot);
}

bool Placement::Settle(BlockEntry& e, TierKind t) {
  if (!e.is_writing(t)) return false;
  if (std::find(open_writes_.begin(), open_writes_.end(), e.write_id[t]) != open_writes_.end()) {
    return true;  // its event is not recorded yet
  }
  if (e.ready[t] != nullptr) {
    absl::StatusOr<bool> landed = e.ready[t]->Query();
    if (!landed.ok() || !*landed) return true;  // an error is for the completion to report
  } else if (t == kHost && e.host_fill != nullptr) {
    // A disk read: landed once verified; a failed read is the completion's to handle (it
    // turns the block into a miss).
    if (!e.host_fill->done.HasBeenNotified() || !e.host_fill->status.ok()) return true;
    e.host_fill.reset();
  } else {
    // A disk write: its completion (the record indexed, or not) decides.
    return true;
  }
  e.set_writing(t, false);
  RetireEvent(std::move(e.ready[t]));
  return false;
}

bool Placement::ReadersLanded(BlockEntry& e) {
  std::erase_if(e.readers, [&](const BlockEntry::Reader& r) {
    mu_.AssertHeld();
    if (std::find(open_writes_.begin(), open_writes_.end(), r.transfer) != open_writes_.end()) {
      return false;  // its event is not recorded yet
    }
    absl::StatusOr<bool> landed = r.done->Query();
    if (!landed.ok() || !*landed) return false;  // an error is for the completion to report
    RetireEvent(r.done);
    return true;
  });
  return e.readers.empty();
}

bool Placement::Evictable(BlockEntry& e, TierKind t, uint32_t only_ns, bool spare_only_copies) {
  if (only_ns != kAnyNs && e.ns_id != only_ns) return false;
  if (e.pins != 0 || !ReadersLanded(e)) return false;
  if (protect_prefetched_ && e.is_prefetched(t)) return false;
  if (spare_only_copies && !e.has(kHost) && !e.has(kDisk)) return false;
  return !Settle(e, t);
}

std::optional<SlotId> Placement::PickVictim(TierKind t, uint32_t only_ns, bool spare_only_copies) {
  const std::vector<BlockKey>& owners = slot_owner_[t];
  auto evictable = [&](SlotId s) {
    return table_.Find(owners[s], [&](BlockEntry* e) {
      mu_.AssertHeld();
      return e != nullptr && Evictable(*e, t, only_ns, spare_only_copies);
    });
  };
  EvictionPolicy& policy = *policies_[t];
  if (!options_.prefix_aware_eviction && !options_.cost_aware_eviction) {
    return policy.PickVictim(evictable);
  }
  // The policy's most evictable candidates, in its order; among them the cheapest to lose
  // (cost-aware: a copy in a lower tier remains, so nothing is written or recomputed), then
  // the deepest (prefix-aware: a chain's tail before its head, whose loss would make the
  // tail useless for prefix reuse), then the policy's own order.
  struct Candidate {
    SlotId slot;
    int cost;
    uint32_t depth;
  };
  std::vector<Candidate> window;
  const size_t width = std::max<uint32_t>(1, options_.eviction_window);
  (void)policy.PickVictim([&](SlotId s) {
    if (!evictable(s)) return false;
    Candidate c{s, 0, 0};
    table_.Find(owners[s], [&](BlockEntry* e) {
      bool lower = false;
      for (int u = static_cast<int>(t) + 1; u < kNumTiers; ++u) lower = lower || e->has(kAllTiers[u]);
      c.cost = options_.cost_aware_eviction && !lower ? 1 : 0;
      c.depth = options_.prefix_aware_eviction ? e->depth : 0;
    });
    window.push_back(c);
    return window.size() >= width;
  });
  if (window.empty()) return std::nullopt;
  const Candidate* best = &window[0];
  for (const Candidate& c : window) {
    if (c.cost < best->cost || (c.cost == best->cost && c.depth > best->depth)) best = &c;
  }
  const SlotId chosen = best->slot;
  // Ask the policy for exactly this slot, so that it records the eviction as its own (ghost
  // history, hand positions).
  std::optional<SlotId> victim = policy.PickVictim([&](SlotId s) { return s == chosen; });
  return victim ? victim : policy.PickVictim(evictable);  // the latter is not expected
}

std::optional<std::pair<SlotId, std::shared_ptr<Event>>> Placement::DemoteToHost(
    const BlockKey& key, SlotId gpu_slot, uint32_t ns_id) {
  absl::StatusOr<std::unique_ptr<Event>> created = device_.CreateEvent();
  if (!created.ok()) return std::nullopt;
  std::shared_ptr<Event> landed(std::move(*created));
  SlotReuse host_reuse;
  std::optional<SlotId> host_slot = AcquireSlot(kHost, ns_id, 0, &host_reuse);
  if (!host_slot) return std::nullopt;
  const BlockCopy copy{Endpoint::Slot(Address(kGpu, gpu_slot)),
                       Endpoint::Slot(Address(kHost, *host_slot))};
  absl::Status s = host_reuse.OrderStream(offload_);
  if (s.ok()) s = planner_.Enqueue(offload_, {&copy, 1}, /*layerwise=*/false, {&landed, 1});
  if (!s.ok()) {
    KVTIER_LOG(kError, "demoting block %s to host failed, dropping it: %s", key.ToHex(),
               s.ToString());
    ReturnSlot(kHost, *host_slot, std::move(host_reuse));
    return std::nullopt;
  }
  return std::make_pair(*host_slot, std::move(landed));
}

bool Placement::EvictOne(TierKind t, uint32_t only_ns) {
  std::optional<SlotId> victim = PickVictim(t, only_ns, /*spare_only_copies=*/false);
  if (!victim) return false;
  BlockKey key = slot_owner_[t][*victim];

  // A GPU copy that is the block's only copy is demoted to the host tier, not dropped.
  bool demote = false;
  uint32_t victim_ns = 0;
  table_.Find(key, [&](BlockEntry* e) {
    demote = t == kGpu && !e->has(kHost) && !e->has(kDisk);
    victim_ns = e->ns_id;
  });
  std::optional<std::pair<SlotId, std::shared_ptr<Event>>> demoted;
  if (demote) {
    demoted = DemoteToHost(key, *victim, victim_ns);
    if (!demoted) {
      // No host slot for it (every one pinned or in flight): dropping the block would lose
      // its only copy. Evict a block that keeps a copy below instead, or nothing (the caller
      // reports the tier full).
      victim = PickVictim(t, only_ns, /*spare_only_copies=*/true);
      if (!victim) return false;
      key = slot_owner_[t][*victim];
    }
  }

  const uint64_t write_id = next_write_id_++;
  bool to_lower = false;
  table_.Mutate(key, [&](BlockEntry& e) {
    mu_.AssertHeld();
    if (demoted) {
      Attach(key, e, kHost, demoted->first);
      StartWrite(e, kHost, write_id, demoted->second);
    }
    // A host copy that is the block's last copy above disk goes to the remote tier (on-evict
    // writes), which copies its bytes out at once.
    if (t == kHost && !e.has(kGpu) && !e.remote && remote_sink_ != nullptr) {
      remote_sink_->OnLastHostCopyEvicted(key, e, tiers_[kHost]->Address(*victim).host);
    }
    // A host copy that is the block's only copy goes down a tier, if that tier admits it;
    // until its bytes are copied out, the slot's next writer waits at the gate.
    if (t == kHost && !e.has(kGpu) && !e.has(kDisk) && lower_ != nullptr) {
      std::shared_ptr<Notification> gate = lower_->TakeHostCopy(key, e, *victim);
      if (gate != nullptr) {
        to_lower = true;
        reuse_[kHost][*victim].gate = std::move(gate);
      }
    }
    Detach(key, e, t);
    if (e.has_any()) return false;
    --ns_[e.ns_id].blocks;
    return true;  // its last copy is gone
  });
  const uint64_t block = options_.block_bytes;
  if (demoted) {
    // The demotion still reads the GPU slot: its next writer waits for the copy (or for the
    // zeroing secure_erase enqueued after it on the same stream, whose event is set already).
    if (reuse_[t][*victim].event == nullptr) reuse_[t][*victim].event = demoted->second;
    counters_.tier(t).demotions.fetch_add(1, std::memory_order_relaxed);
    counters_.CountMove(t, kHost, block);
    absl::Status s = offload_.AddCallback([this, key, write_id] {
      completions_.Post([this, key, write_id] { OnWritesLanded(kHost, {&key, 1}, write_id); });
    });
    if (!s.ok()) {
      // Without its completion the host copy would look in flight until eviction settles it,
      // and an erased block would never be reclaimed: wait for the copy and land it here.
      KVTIER_LOG(kError, "demoting block %s: attaching its completion failed (%s)", key.ToHex(),
                 s.ToString());
      (void)offload_.Synchronize();
      table_.Mutate(key, [&](BlockEntry& e) {
        mu_.AssertHeld();
        if (e.is_writing(kHost) && e.write_id[kHost] == write_id) {
          e.set_writing(kHost, false);
          RetireEvent(std::move(e.ready[kHost]));
        }
        return ReclaimIfErased(key, e);
      });
    }
  } else if (to_lower) {
    counters_.tier(t).demotions.fetch_add(1, std::memory_order_relaxed);
    counters_.tier(t).bytes_out.fetch_add(block, std::memory_order_relaxed);
  } else {
    counters_.tier(t).evictions.fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

void Placement::Attach(const BlockKey& key, BlockEntry& e, TierKind t, SlotId slot, bool cold) {
  e.slot[t] = slot;
  ++ns_[e.ns_id].tier_blocks[t];
  if (t == kDisk) return;  // the disk tier places and evicts records itself
  slot_owner_[t][slot] = key;
  // Policies with history (ghosts, frequency) need the block's identity, not the slot's.
  policies_[t]->SetNextKey(key.hi ^ (key.lo * 0x9e3779b97f4a7c15ULL));
  policies_[t]->SetNextDepth(e.depth);
  if (cold) {
    policies_[t]->OnInsertCold(slot);
  } else {
    policies_[t]->OnInsert(slot);
  }
}

void Placement::Detach(const BlockKey& key, BlockEntry& e, TierKind t, bool release_slot) {
  const SlotId slot = e.slot[t];
  if (t == kDisk) {
    if (lower_ != nullptr) lower_->Erase(key, slot);
  } else {
    policies_[t]->OnRemove(slot);
    if (release_slot) {
      if (options_.secure_erase) ZeroSlot(t, slot);
      tiers_[t]->Release(slot);
    }
  }
  --ns_[e.ns_id].tier_blocks[t];
  e.slot[t] = kNoSlot;
  if (e.is_prefetched(t)) ReleasePrefetch(e, t, /*used=*/false, /*late=*/false);
  RetireEvent(std::move(e.ready[t]));
  if (t == kHost) e.host_fill.reset();
  e.set_writing(t, false);
}

void Placement::ForgetLowerCopy(BlockEntry& e, TierKind t) {
  if (!e.has(t)) return;
  e.slot[t] = kNoSlot;
  e.set_writing(t, false);
  --ns_[e.ns_id].tier_blocks[t];
}

void Placement::DetachAll(const BlockKey& key, BlockEntry& e) {
  for (TierKind t : kAllTiers) {
    if (e.has(t)) Detach(key, e, t);
  }
  --ns_[e.ns_id].blocks;
}

bool Placement::ForgetIfEmpty(BlockEntry& e) {
  if (e.has_any()) return false;
  if (e.busy()) {
    e.erased = true;  // reclaimed by the last unpin
    return false;
  }
  --ns_[e.ns_id].blocks;
  return true;
}

bool Placement::ReclaimIfErased(const BlockKey& key, BlockEntry& e) {
  if (!e.erased || e.busy()) return false;
  DetachAll(key, e);
  return true;
}

void Placement::ZeroSlot(TierKind t, SlotId slot) {
  const SlotAddress at = Address(t, slot);
  SlotReuse& reuse = reuse_[t][slot];
  if (t == kHost) {
    // Nothing reads a host slot once its block has left it (readers pin the block), except
    // the tier below copying its bytes out: that copy zeroes the slot when it is done.
    if (reuse.gate == nullptr || reuse.gate->HasBeenNotified()) {
      std::memset(at.host, 0, options_.block_bytes);
    }
    return;
  }
  // A GPU slot may still be read by a demotion copy on the offload stream: the zeros follow
  // it on the same stream, and the slot's next writer waits for them.
  absl::StatusOr<std::unique_ptr<Event>> zeroed = device_.CreateEvent();
  absl::Status s = zeroed.ok() ? offload_.CopyToDevice(at.device, zeros_, options_.block_bytes)
                               : zeroed.status();
  if (s.ok()) s = offload_.Record(**zeroed);
  if (s.ok()) {
    reuse.event = std::shared_ptr<Event>(std::move(*zeroed));
    return;
  }
  KVTIER_LOG(kError, "secure_erase: zeroing GPU slot %u failed (%s); waiting for the stream",
             slot, s.ToString());
  (void)offload_.Synchronize();
}

// ----------------------------------------------------------------------------- writes

void Placement::StartWrite(BlockEntry& e, TierKind t, uint64_t write_id,
                           std::shared_ptr<Event> ready) {
  e.set_writing(t, true);
  e.write_id[t] = write_id;
  RetireEvent(std::move(e.ready[t]));
  e.ready[t] = std::move(ready);
}

void Placement::OnWritesLanded(TierKind t, absl::Span<const BlockKey> keys, uint64_t write_id) {
  MutexLock lock(&mu_);
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      mu_.AssertHeld();
      // Only the write this completion belongs to (the slot may have been freed and
      // reassigned since, or Settle may have seen it land already).
      if (e.is_writing(t) && e.write_id[t] == write_id) {
        e.set_writing(t, false);
        RetireEvent(std::move(e.ready[t]));
      }
      return ReclaimIfErased(key, e);
    });
  }
}

// ----------------------------------------------------------------------------- failures

void Placement::WithdrawWrites(TierKind t, absl::Span<const BlockKey> keys,
                               FailedTransfer* failed) {
  failed->tier = t;
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      mu_.AssertHeld();
      failed->held_slots.push_back(e.slot[t]);
      Detach(key, e, t, /*release_slot=*/false);
      return ForgetIfEmpty(e);
    });
  }
}

void Placement::ReleaseAfterFailure(const FailedTransfer& failed) {
  MutexLock lock(&mu_);
  for (SlotId slot : failed.held_slots) ReleaseHeldSlot(failed.tier, slot);
  Unpin(failed.unpin);
  ReleaseReaders(failed.read, failed.write_id);
  if (failed.write_id != 0) CloseWrite(failed.write_id);
}

// ----------------------------------------------------------------------------- pins, leases

absl::Status Placement::PinAll(uint32_t ns_id, absl::string_view ns,
                               absl::Span<const BlockKey> keys, const char* op,
                               const std::shared_ptr<Event>* reader, uint64_t transfer) {
  const int64_t now_ms = ns_[ns_id].ttl_ms > 0 ? absl::ToUnixMillis(absl::Now()) : 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const bool pinned = table_.Find(keys[i], [&](BlockEntry* e) {
      mu_.AssertHeld();
      if (e == nullptr || e->erased || e->ns_id != ns_id || !e->has_any()) return false;
      if (Expired(*e, now_ms)) return false;
      if (reader != nullptr) {
        AddReader(*e, *reader, transfer);
      } else {
        ++e->pins;
      }
      return true;
    });
    if (!pinned) {
      if (reader != nullptr) {
        ReleaseReaders(keys.subspan(0, i), transfer);
      } else {
        Unpin(keys.subspan(0, i));
      }
      return absl::NotFoundError(absl::StrFormat(
          "%s: block %d (key %s) is not cached in namespace '%s'", op, i, keys[i].ToHex(), ns));
    }
  }
  return absl::OkStatus();
}

void Placement::Unpin(absl::Span<const BlockKey> keys) {
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      mu_.AssertHeld();
      --e.pins;
      return ReclaimIfErased(key, e);
    });
  }
}

void Placement::AddReader(BlockEntry& e, std::shared_ptr<Event> done, uint64_t transfer) {
  e.readers.push_back(BlockEntry::Reader{std::move(done), transfer});
}

void Placement::ReleaseReaders(absl::Span<const BlockKey> keys, uint64_t transfer) {
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      mu_.AssertHeld();
      // A reader that landed may have been dropped already (ReadersLanded).
      auto it = std::find_if(e.readers.begin(), e.readers.end(),
                             [&](const BlockEntry::Reader& r) { return r.transfer == transfer; });
      if (it != e.readers.end()) {
        RetireEvent(std::move(it->done));
        e.readers.erase(it);
      }
      return ReclaimIfErased(key, e);
    });
  }
}

void Placement::OnReadsDone(absl::Span<const BlockKey> keys, uint64_t transfer) {
  MutexLock lock(&mu_);
  ReleaseReaders(keys, transfer);
}

uint64_t Placement::AddLease(absl::Span<const BlockKey> keys, absl::Duration timeout) {
  const uint64_t id = next_lease_id_++;
  leases_[id] = Lease{std::vector<BlockKey>(keys.begin(), keys.end()),
                      absl::Now() + (timeout == absl::ZeroDuration() ? options_.lease_timeout
                                                                     : timeout)};
  return id;
}

absl::Status Placement::ReleaseLease(uint64_t lease_id) {
  MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return absl::OkStatus();  // expired and reaped already
  Unpin(it->second.keys);
  leases_.erase(it);
  return absl::OkStatus();
}

void Placement::ReapExpiredLeases() {
  const absl::Time now = absl::Now();
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.expires > now) {
      ++it;
      continue;
    }
    KVTIER_LOG(kWarning,
               "lease %d on %d GPU slots expired without Release(); its slots return to the "
               "pool (the caller must not read them any more)",
               it->first, it->second.keys.size());
    Unpin(it->second.keys);
    counters_.leases_expired.fetch_add(1, std::memory_order_relaxed);
    leases_.erase(it++);
  }
}

// ----------------------------------------------------------------------------- erase

size_t Placement::Erase(uint32_t ns_id, absl::Span<const BlockKey> keys) {
  size_t erased = 0;
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      mu_.AssertHeld();
      if (e.ns_id != ns_id || e.erased) return false;
      ++erased;
      if (e.busy()) {
        e.erased = true;  // reclaimed by the last unpin / landed write
        return false;
      }
      DetachAll(key, e);
      return true;
    });
  }
  return erased;
}

size_t Placement::EraseNamespace(uint32_t ns_id) {
  std::vector<BlockKey> keys;
  table_.ForEach([&](const BlockKey& key, const BlockEntry& e) {
    if (e.ns_id == ns_id && !e.erased) keys.push_back(key);
  });
  return Erase(ns_id, keys);
}

void Placement::SweepExpired() {
  DestroyRetiredEvents();
  MutexLock lock(&mu_);
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::vector<std::vector<BlockKey>> expired(ns_.size());
  table_.ForEach([&](const BlockKey& key, const BlockEntry& e) {
    mu_.AssertHeld();
    if (!e.erased && Expired(e, now_ms)) expired[e.ns_id].push_back(key);
  });
  for (uint32_t ns_id = 0; ns_id < expired.size(); ++ns_id) {
    if (expired[ns_id].empty()) continue;
    const size_t n = Erase(ns_id, expired[ns_id]);
    namespaces_.Get(ns_id).counters.expired.fetch_add(n, std::memory_order_relaxed);
  }
}

// ----------------------------------------------------------------------------- events

void Placement::RetireEvent(std::shared_ptr<Event> event) {
  if (event != nullptr) retired_events_.push_back(std::move(event));
}

void Placement::DestroyRetiredEvents() {
  std::vector<std::shared_ptr<Event>> retired;
  {
    MutexLock lock(&mu_);
    retired.swap(retired_events_);
  }
  // Destroyed here, on a caller's thread, outside the lock.
}

void Placement::ClearEvents() {
  MutexLock lock(&mu_);
  for (std::vector<SlotReuse>& reuses : reuse_) {
    for (SlotReuse& r : reuses) r = SlotReuse{};
  }
  retired_events_.clear();
}

// ----------------------------------------------------------------------------- prefetch

void Placement::MarkPrefetched(BlockEntry& e) {
  e.set_prefetched(top_tier(), true);
  if (prefetcher_ != nullptr) prefetcher_->Charge();
}

void Placement::ConsumePrefetch(BlockEntry& e) {
  const TierKind top = top_tier();
  if (!e.is_prefetched(top)) return;
  ReleasePrefetch(e, top, /*used=*/true, /*late=*/e.is_writing(top) && Settle(e, top));
}

void Placement::ReleasePrefetch(BlockEntry& e, TierKind t, bool used, bool late) {
  e.set_prefetched(t, false);
  if (prefetcher_ == nullptr) return;
  prefetcher_->Settle(!used  ? Prefetcher::Use::kUnused
                      : late ? Prefetcher::Use::kLate
                             : Prefetcher::Use::kInTime);
}

// ----------------------------------------------------------------------------- stats

void Placement::FillStats(EngineStats* out) {
  MutexLock lock(&mu_);
  ReapExpiredLeases();
  TierArray<size_t> pinned;
  table_.ForEach([&](const BlockKey&, const BlockEntry& e) {
    if (!e.busy()) return;
    for (TierKind t : kAllTiers) {
      if (e.has(t)) ++pinned[t];
    }
  });
  for (TierKind t : kAllTiers) {
    TierStats& ts = out->tiers[t];
    if (tiers_[t] != nullptr) {
      ts.capacity_blocks = tiers_[t]->num_slots();
      ts.used_blocks = tiers_[t]->used_slots();
    }
    ts.pinned_blocks = pinned[t];
  }
  for (size_t id = 0; id < out->namespaces.size() && id < ns_.size(); ++id) {
    NamespaceStats& n = out->namespaces[id];
    n.blocks = ns_[id].blocks;
    for (TierKind t : kAllTiers) {
      n.blocks_per_tier[t] = ns_[id].tier_blocks[t];
      n.quota_blocks[t] = ns_[id].quota[t];
    }
  }
  out->leases_held = leases_.size();
}

}  // namespace kvtier
