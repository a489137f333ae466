// engine/engine_impl_promote.cc — EngineImpl's calls that move cached blocks up: LoadToGpuTier
// (leases), Prefetch and hints (the prefetcher's promote hook), and the remote reads they
// start. The rest of EngineImpl: engine_impl.cc; see engine_impl.h.

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "engine/engine_impl.h"
#include "engine/pending_transfer.h"

namespace kvtier {
namespace {

constexpr TierKind kGpu = TierKind::kGpu;
constexpr TierKind kHost = TierKind::kHost;

}  // namespace

// ----------------------------------------------------------------------------- GPU tier

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::LoadToGpuTier(
    absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise,
    absl::Duration lease_timeout) {
  // No free GPU slot is often only for a moment: copies into the tier (hints, prefetches,
  // other loads) and out of it (demotions) hold their slots until they land. Wait for those
  // and try again, for up to kGpuSlotWait in all. Slots that pins and leases hold are not
  // waited for: their holder may be this caller.
  // A try that fails with nothing left to wait for ends it: the copies it saw had landed
  // (the slot they held went to someone else, or a quota is what holds this namespace back),
  // and trying again at once would only spin on the placement lock.
  const absl::Time deadline = absl::Now() + kGpuSlotWait;
  bool retried_landed = false;
  for (;;) {
    std::vector<std::shared_ptr<Event>> in_flight;
    absl::StatusOr<std::unique_ptr<TransferHandle>> h =
        TryLoadToGpuTier(ns, keys, layerwise, lease_timeout, &in_flight);
    if (h.ok() || in_flight.empty() || absl::Now() >= deadline) return h;
    const bool pending = std::any_of(in_flight.begin(), in_flight.end(), [](const auto& e) {
      const absl::StatusOr<bool> landed = e->Query();
      return landed.ok() && !*landed;
    });
    if (!pending) {
      // They landed between the try and here: one more try, then no more.
      if (retried_landed) return h;
      retried_landed = true;
      continue;
    }
    retried_landed = false;
    for (const std::shared_ptr<Event>& e : in_flight) {
      // A failed copy settles its slot through its own completion; try again either way.
      (void)e->Synchronize();
      if (absl::Now() >= deadline) break;
    }
  }
}

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::TryLoadToGpuTier(
    absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise,
    absl::Duration lease_timeout, std::vector<std::shared_ptr<Event>>* in_flight) {
  placement_->DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (!space.ok()) return space.status();
  const Namespace& n = **space;
  Tier* gpu = tiers_[kGpu].get();
  if (gpu == nullptr) {
    return absl::FailedPreconditionError(
        "LoadToGpuTier: the GPU tier is disabled (EngineOptions::gpu_tier_bytes = 0)");
  }
  if (keys.empty()) return absl::InvalidArgumentError("LoadToGpuTier: no keys given");
  if (lease_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("LoadToGpuTier: negative lease timeout");
  }
  if (absl::flat_hash_set<BlockKey>(keys.begin(), keys.end()).size() != keys.size()) {
    return absl::InvalidArgumentError("LoadToGpuTier: the same key is listed twice");
  }
  if (keys.size() > gpu->num_slots()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("LoadToGpuTier: %d blocks requested but the GPU tier holds only %u",
                        keys.size(), gpu->num_slots()));
  }
  const Geometry& g = options_.geometry;
  absl::StatusOr<PendingTransfer> t =
      PendingTransfer::Create(*device_, completions_, "LoadToGpuTier", g.num_layers);
  if (!t.ok()) return t.status();

  TransferHandleImpl::Parts parts;
  parts.slots.resize(keys.size());
  parts.meters = Meters(n);
  std::vector<BlockKey> promoted;
  size_t from_disk = 0;
  size_t from_remote = 0;
  Placement::FailedTransfer failed;
  {
    MutexLock lock(&placement_->mu());
    placement_->ReapExpiredLeases();
    std::vector<size_t> remote_reads;
    if (absl::Status s =
            StartRemoteReads(n.id, keys, /*passing=*/true, "LoadToGpuTier", &remote_reads);
        !s.ok()) {
      return s;
    }
    from_remote = remote_reads.size();
    if (absl::Status s = placement_->PinAll(n.id, ns, keys, "LoadToGpuTier"); !s.ok()) return s;
    // Which keys need a GPU slot; the copies of those already there that are still landing.
    std::vector<size_t> need;
    for (size_t i = 0; i < keys.size(); ++i) {
      table_.Find(keys[i], [&](BlockEntry* e) {
        placement_->mu().AssertHeld();
        placement_->ConsumePrefetch(*e);
        if (!e->has(kGpu)) {
          need.push_back(i);
          return;
        }
        if (e->is_writing(kGpu)) parts.waits.push_back(e->ready[kGpu]);
        placement_->Touch(kGpu, e->slot[kGpu]);
        parts.slots[i] = placement_->Address(kGpu, e->slot[kGpu]).device;
      });
    }
    // Blocks only on disk come up through a host slot first.
    Stream* stream = onboard_.get();
    // As in Load, no IoPlug: the reads go to the kernel as they are started.
    for (size_t i : need) {
      if (table_.Find(keys[i], [](BlockEntry* e) { return e->has(kHost); })) continue;
      ++from_disk;
      if (absl::Status s = disk_->EnsureHostCopy(keys[i], /*passing=*/true); !s.ok()) {
        placement_->Unpin(keys);
        return absl::Status(s.code(),
                            absl::StrFormat("LoadToGpuTier: block %d: %s", i, s.message()));
      }
    }
    // A transfer that waits for a disk read goes on its own stream.
    for (size_t i : need) {
      if (table_.Find(keys[i], [](BlockEntry* e) { return e->host_fill != nullptr; })) {
        stream = gated_onboard_.get();
      }
    }
    t->set_stream(stream);
    // Acquire every slot before changing any entry.
    absl::StatusOr<std::vector<std::pair<SlotId, SlotReuse>>> acquired =
        placement_->AcquireSlots(kGpu, n.id, ns, need.size(), "LoadToGpuTier");
    if (!acquired.ok()) {
      *in_flight = placement_->InFlightCopies(kGpu);
      placement_->Unpin(keys);
      return acquired.status();
    }
    const uint64_t write_id = failed.write_id = placement_->OpenWrite();  // no return from here
    std::vector<BlockCopy> copies;
    // Blocks all in place already: nothing to enqueue; the handle waits for those still
    // landing itself (parts.waits), without queueing behind the stream's other work.
    if (!need.empty()) {
      for (const auto& event : parts.waits) (void)t->WaitFor(event);
    }
    for (const auto& [slot, reuse] : *acquired) (void)t->WaitForReuse(reuse);
    for (size_t k = 0; k < need.size(); ++k) {
      const BlockKey& key = keys[need[k]];
      const SlotId slot = (*acquired)[k].first;
      table_.Find(key, [&](BlockEntry* e) {
        placement_->mu().AssertHeld();
        (void)t->WaitForCopy(*e, kHost, need[k]);
        copies.push_back(BlockCopy{Endpoint::Slot(placement_->Address(kHost, e->slot[kHost])),
                                   Endpoint::Slot(placement_->Address(kGpu, slot))});
        // A host copy read in from disk by this call came in passing: it stays cold.
        if (!e->is_writing(kHost)) placement_->Touch(kHost, e->slot[kHost]);
        placement_->Attach(key, *e, kGpu, slot);
        placement_->StartWrite(*e, kGpu, write_id, t->done());
      });
      parts.slots[need[k]] = placement_->Address(kGpu, slot).device;
      promoted.push_back(key);
    }
    if (!need.empty()) {
      (void)t->Enqueue(*planner_, copies, layerwise);
      (void)t->Finish(
          [this, promoted, write_id] { placement_->OnWritesLanded(kGpu, promoted, write_id); });
    }
    if (!t->ok()) {
      // The new GPU copies go at once; their slots once the copies into them are done.
      placement_->WithdrawWrites(kGpu, promoted, &failed);
    } else {
      placement_->CloseWrite(write_id);
      const uint64_t lease_id = placement_->AddLease(keys, lease_timeout);
      parts.release = [this, lease_id] { return placement_->ReleaseLease(lease_id); };
    }
  }
  if (!t->ok()) {
    failed.unpin.assign(keys.begin(), keys.end());
    return Fail(*t, failed);
  }
  const size_t moved = promoted.size();
  counters_->tier(kGpu).promotions.fetch_add(moved, std::memory_order_relaxed);
  counters_->CountMove(kHost, kGpu, moved * g.block_bytes());
  counters_->CountLookups(
      n.counters, {{keys.size() - moved, moved - from_disk - from_remote, from_disk, from_remote}},
      0);
  counters_->loaded_blocks.fetch_add(keys.size(), std::memory_order_relaxed);
  n.counters.loaded.fetch_add(keys.size(), std::memory_order_relaxed);
  parts.counts = TransferHandleImpl::Counts{moved, keys.size() - moved, 0};
  return std::unique_ptr<TransferHandle>(t->TakeHandle(std::move(parts)));
}

// ----------------------------------------------------------------------------- remote

absl::Status EngineImpl::StartRemoteReads(uint32_t ns_id, absl::Span<const BlockKey> keys,
                                          bool passing, const char* op,
                                          std::vector<size_t>* from_remote) {
  if (remote_ == nullptr) return absl::OkStatus();
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!remote_->Readable(keys[i])) continue;  // cached here (or the same key listed twice)
    if (absl::Status s = remote_->StartRead(keys[i], ns_id, passing); !s.ok()) {
      // Reads started for earlier keys go on: they land as cached host copies.
      return absl::Status(s.code(), absl::StrFormat("%s: block %d: %s", op, i, s.message()));
    }
    if (from_remote != nullptr) from_remote->push_back(i);
  }
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------- prefetch

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::Prefetch(
    absl::string_view ns, absl::Span<const BlockKey> keys) {
  placement_->DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (!space.ok()) return space.status();
  if (tiers_[kGpu] == nullptr && disk_ == nullptr && remote_ == nullptr) {
    return absl::FailedPreconditionError(
        "Prefetch: the GPU tier is disabled (EngineOptions::gpu_tier_bytes = 0) and there is no "
        "disk or remote tier: there is no tier to promote from");
  }
  return Promote((*space)->id, keys, /*hinted=*/false);
}

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::Promote(uint32_t ns_id,
                                                                    absl::Span<const BlockKey> keys,
                                                                    bool hinted) {
  // Promotion goes one step past the host tier where there is a GPU tier, else to the host.
  const bool to_gpu = tiers_[kGpu] != nullptr;
  const TierKind top = to_gpu ? kGpu : kHost;
  absl::StatusOr<PendingTransfer> t =
      PendingTransfer::Create(*device_, completions_, "Prefetch", 0);
  if (!t.ok()) return t.status();
  t->set_stream(gated_onboard_.get());
  TransferHandleImpl::Counts counts;
  std::vector<BlockKey> promoted;  // to the GPU tier
  std::vector<BlockKey> read_in;   // from disk to host only
  size_t from_disk = 0;
  Placement::FailedTransfer failed;
  {
    MutexLock lock(&placement_->mu());
    const uint64_t write_id = failed.write_id = placement_->OpenWrite();
    const int64_t now_ms = absl::ToUnixMillis(absl::Now());
    placement_->set_protect_prefetched(hinted);
    // Keys not cached here come from the remote tier, if it has them (a miss there is a
    // promotion that lands nothing).
    std::vector<size_t> remote_reads;
    (void)StartRemoteReads(ns_id, keys, /*passing=*/to_gpu, "Prefetch", &remote_reads);
    from_disk += remote_reads.size();
    // A block this call is reading from the remote tier is already attached to its host slot,
    // but it is not there yet: it is a block moved, waited for like any other.
    absl::flat_hash_set<BlockKey> reading;
    for (size_t i : remote_reads) reading.insert(keys[i]);
    std::vector<BlockCopy> copies;
    absl::flat_hash_set<BlockKey> seen;
    enum class Found { kNotCached, kAtTop, kPinned };
    // As in Load, no IoPlug: this loop also makes device calls (stream waits on the reads it
    // starts), which a Free can hold while it waits for those very reads.
    for (const BlockKey& key : keys) {
      if (!seen.insert(key).second) continue;
      const Found found = table_.Find(key, [&](BlockEntry* e) {
        placement_->mu().AssertHeld();
        if (e == nullptr || e->erased || e->ns_id != ns_id || !e->has_any()) {
          return Found::kNotCached;
        }
        if (placement_->Expired(*e, now_ms)) return Found::kNotCached;
        if (e->has(top) && !reading.contains(key)) return Found::kAtTop;
        // Keeps the source copies in place until this transfer's copies have read them.
        placement_->AddReader(*e, t->done(), write_id);
        return Found::kPinned;
      });
      if (found != Found::kPinned) {
        found == Found::kAtTop ? ++counts.present : ++counts.rejected;
        continue;
      }
      const bool disk_only = table_.Find(key, [](BlockEntry* e) { return !e->has(kHost); });
      if (disk_only) {
        if (!disk_->EnsureHostCopy(key, /*passing=*/to_gpu).ok()) {
          placement_->ReleaseReaders({&key, 1}, write_id);
          ++counts.rejected;
          continue;
        }
        ++from_disk;
      }
      if (!to_gpu) {
        table_.Find(key, [&](BlockEntry* e) {
          placement_->mu().AssertHeld();
          (void)t->WaitForCopy(*e, kHost);
          if (hinted) placement_->MarkPrefetched(*e);
        });
        read_in.push_back(key);
        continue;
      }
      SlotReuse reuse;
      std::optional<SlotId> slot = placement_->AcquireSlot(kGpu, ns_id, 0, &reuse);
      if (!slot) {
        placement_->ReleaseReaders({&key, 1}, write_id);
        ++counts.rejected;
        continue;
      }
      (void)t->WaitForReuse(reuse);
      table_.Find(key, [&](BlockEntry* e) {
        placement_->mu().AssertHeld();
        (void)t->WaitForCopy(*e, kHost);
        copies.push_back(BlockCopy{Endpoint::Slot(placement_->Address(kHost, e->slot[kHost])),
                                   Endpoint::Slot(placement_->Address(kGpu, *slot))});
        placement_->Attach(key, *e, kGpu, *slot);
        placement_->StartWrite(*e, kGpu, write_id, t->done());
        if (hinted) placement_->MarkPrefetched(*e);
      });
      promoted.push_back(key);
    }
    placement_->set_protect_prefetched(false);
    if (!promoted.empty() || !read_in.empty()) {
      (void)t->Enqueue(*planner_, copies, /*layerwise=*/false);
      std::vector<BlockKey> pinned = promoted;
      pinned.insert(pinned.end(), read_in.begin(), read_in.end());
      (void)t->Finish([this, promoted, pinned = std::move(pinned), write_id] {
        placement_->OnWritesLanded(kGpu, promoted, write_id);
        placement_->OnReadsDone(pinned, write_id);
      });
      if (!t->ok()) placement_->WithdrawWrites(kGpu, promoted, &failed);  // as LoadToGpuTier
    }
    if (t->ok()) placement_->CloseWrite(write_id);
  }
  if (!t->ok()) {
    failed.read = promoted;
    failed.read.insert(failed.read.end(), read_in.begin(), read_in.end());
    return Fail(*t, failed);
  }
  counts.moved = promoted.size() + read_in.size();
  if (hinted) prefetcher_->CountPromotion(counts.moved, counts.present, counts.rejected);
  const size_t block = options_.geometry.block_bytes();
  counters_->tier(kGpu).promotions.fetch_add(promoted.size(), std::memory_order_relaxed);
  counters_->CountMove(kHost, kGpu, promoted.size() * block);
  counters_->tier(kHost).promotions.fetch_add(from_disk, std::memory_order_relaxed);
  TransferHandleImpl::Parts parts;
  parts.counts = counts;
  return std::unique_ptr<TransferHandle>(t->TakeHandle(std::move(parts)));
}

absl::StatusOr<uint64_t> EngineImpl::Hint(absl::string_view ns, absl::Span<const BlockKey> keys) {
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (!space.ok()) return space.status();
  if (tiers_[kGpu] == nullptr && disk_ == nullptr && remote_ == nullptr) {
    return absl::FailedPreconditionError(
        "Hint: the GPU tier is disabled (EngineOptions::gpu_tier_bytes = 0) and there is no "
        "disk or remote tier: there is no tier to promote into");
  }
  return prefetcher_->Hint((*space)->id, keys);
}

absl::StatusOr<size_t> EngineImpl::CancelHint(uint64_t hint_id) {
  return prefetcher_->Cancel(hint_id);
}

}  // namespace kvtier
