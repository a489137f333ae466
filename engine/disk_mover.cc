// engine/disk_mover.cc — see disk_mover.h.

#include "engine/disk_mover.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "engine/options.h"

namespace kvtier {

constexpr TierKind kHost = TierKind::kHost;
constexpr TierKind kDisk = TierKind::kDisk;

DiskMover::DiskMover(const DiskOptions& options, const Geometry& geometry, bool secure_erase,
                     Placement& placement, BlockTable& table, NamespaceRegistry& namespaces,
                     CompletionQueue& completions, EngineCounters& counters)
    : block_bytes_(geometry.block_bytes()),
      record_bytes_(DiskRecordBytes(options, geometry)),
      secure_erase_(secure_erase),
      placement_(placement),
      table_(table),
      namespaces_(namespaces),
      completions_(completions),
      counters_(counters) {}

absl::StatusOr<std::unique_ptr<DiskMover>> DiskMover::Open(
    const DiskOptions& options, const Geometry& geometry, bool secure_erase,
    Placement& placement, BlockTable& table, NamespaceRegistry& namespaces,
    CompletionQueue& completions, EngineCounters& counters, NamespaceFn ensure_namespace) {
  absl::StatusOr<DiskTierOptions> dto = MakeDiskTierOptions(options, geometry);
  if (!dto.ok()) return dto.status();
  dto->secure_erase = secure_erase;
  AdmissionOptions ao;
  ao.min_seen = options.admit_min_seen;
  ao.write_budget_mbps = options.write_budget_mbps;
  absl::StatusOr<std::unique_ptr<AdmissionPolicy>> admission = AdmissionPolicy::Create(ao);
  if (!admission.ok()) return admission.status();
  std::unique_ptr<DiskMover> mover(new DiskMover(options, geometry, secure_erase, placement,
                                                 table, namespaces, completions, counters));
  mover->admission_ = std::move(*admission);

  struct Recovered {
    BlockKey key;
    std::string ns;
    RecordId id;
  };
  std::vector<Recovered> recovered;
  DiskMover* self = mover.get();
  absl::StatusOr<std::unique_ptr<DiskTier>> disk = DiskTier::Open(
      *dto, geometry,
      [&](const BlockKey& key, const std::string& ns, RecordId id) {
        recovered.push_back({key, ns, id});
      },
      [self](std::vector<std::pair<BlockKey, RecordId>> dropped) {
        // On a tier thread, which must not wait for the placement lock: the bookkeeping goes
        // to the completion queue. Meanwhile a read of a dropped record fails its checks and
        // is a miss.
        self->completions_.Post([self, dropped = std::move(dropped)]() mutable {
          self->OnDiskDropped(std::move(dropped));
        });
      });
  if (!disk.ok()) return disk.status();
  mover->disk_ = std::move(*disk);
  mover->thread_ = std::thread([self] { self->Loop(); });
  // Every recovered record becomes a block with a disk copy, in its namespace.
  for (const Recovered& r : recovered) {
    absl::StatusOr<uint32_t> ns_id = ensure_namespace(r.ns);
    if (!ns_id.ok()) {
      KVTIER_LOG(kWarning, "disk tier: skipping block %s of namespace '%s': %s", r.key.ToHex(),
                 r.ns, ns_id.status().ToString());
      (void)mover->disk_->Erase(r.id, r.key);
      continue;
    }
    MutexLock lock(&placement.mu());
    table.Upsert(r.key, [&](BlockEntry& e, bool inserted) {
      placement.mu().AssertHeld();
      if (!inserted) return;  // the same key twice cannot happen: index keys are unique
      e.ns_id = *ns_id;
      e.stored_unix_ms = static_cast<int64_t>(mover->disk_->CreatedUnixMs(r.id));
      placement.Attach(r.key, e, kDisk, r.id);
      placement.CountNewBlock(*ns_id);
    });
  }
  return mover;
}

DiskMover::~DiskMover() {
  if (thread_.joinable()) {
    Drain();
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  // Closing the disk tier may cancel what is left; the completions its callbacks post refer
  // to this object, so they run before it goes.
  disk_.reset();
  completions_.Drain();
}

// ----------------------------------------------------------------------------- the thread

void DiskMover::Post(absl::AnyInvocable<void() &&> job) {
  MutexLock lock(&mu_);
  jobs_.push_back(std::move(job));
}

void DiskMover::Loop() {
  for (;;) {
    absl::AnyInvocable<void() &&> job;
    {
      MutexLock lock(&mu_);
      mu_.Await([this] {
        mu_.AssertHeld();
        return stop_ || !jobs_.empty();
      });
      if (jobs_.empty()) return;  // stopping, and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
      running_ = true;
    }
    std::move(job)();
    MutexLock lock(&mu_);
    running_ = false;
  }
}

void DiskMover::Drain() {
  {
    MutexLock lock(&mu_);
    mu_.Await([this] {
      mu_.AssertHeld();
      return jobs_.empty() && !running_;
    });
  }
  disk_->Drain();
}

// ----------------------------------------------------------------------------- down

std::shared_ptr<Notification> DiskMover::TakeHostCopy(const BlockKey& key, BlockEntry& e,
                                                      SlotId slot) {
  placement_.mu().AssertHeld();
  if (placement_.AtQuota(e.ns_id, kDisk)) {
    // Records are reclaimed a region at a time, so no single record of the namespace can be
    // evicted to make room: the block is refused, as admission would refuse it.
    namespaces_.Get(e.ns_id).counters.quota_rejections.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (!admission_->Admit(key, block_bytes_, absl::Now())) return nullptr;
  absl::StatusOr<RecordId> id = disk_->Reserve(key, namespaces_.Name(e.ns_id));
  if (!id.ok()) {
    counters_.disk_busy_rejections.fetch_add(1, std::memory_order_relaxed);
    KVTIER_LOG_ONCE(kWarning, "disk tier refused a record: evicted blocks are dropped (%s)",
                    id.status().ToString());
    return nullptr;
  }
  const uint64_t write_id = placement_.NextWriteId();
  placement_.Attach(key, e, kDisk, *id);
  e.set_writing(kDisk, true);
  e.write_id[kDisk] = write_id;
  counters_.tier(kDisk).demotions.fetch_add(1, std::memory_order_relaxed);
  auto gate = std::make_shared<Notification>();
  void* const src = placement_.Address(kHost, slot).host;
  Post([this, key, id = *id, write_id, src, gate] {
    // The slot is not reused before the gate opens, so its bytes are still the block's.
    absl::Status s = disk_->Submit(id, src, [this, key, write_id](absl::Status st) {
      completions_.Post([this, key, write_id, st = std::move(st)]() mutable {
        OnDiskWritten(key, write_id, std::move(st));
      });
    });
    if (!s.ok()) {
      // No staging buffer in time: the disk tier abandoned the record; the block is lost.
      counters_.disk_busy_rejections.fetch_add(1, std::memory_order_relaxed);
      KVTIER_LOG_ONCE(kWarning, "disk tier busy: evicted blocks are dropped, not written (%s)",
                      s.ToString());
      completions_.Post([this, key, write_id, s = std::move(s)]() mutable {
        OnDiskWritten(key, write_id, std::move(s));
      });
    }
    if (secure_erase_) std::memset(src, 0, block_bytes_);
    gate->Notify();
  });
  return gate;
}

void DiskMover::Erase(const BlockKey& key, SlotId slot) {
  placement_.mu().AssertHeld();
  if (absl::Status s = disk_->Erase(slot, key); !s.ok()) {
    KVTIER_LOG(kWarning, "erasing block %s from disk: %s", key.ToHex(), s.ToString());
  }
}

// ----------------------------------------------------------------------------- up

absl::Status DiskMover::EnsureHostCopy(const BlockKey& key, bool passing) {
  placement_.mu().AssertHeld();
  RecordId record = kNoSlot;
  uint32_t ns_id = 0;
  table_.Find(key, [&](BlockEntry* e) {
    if (e->has(kHost) || !e->has(kDisk)) return;
    record = e->slot[kDisk];
    ns_id = e->ns_id;
  });
  if (record == kNoSlot) return absl::OkStatus();  // already has a host copy
  SlotReuse reuse;
  std::optional<SlotId> slot = placement_.AcquireSlot(kHost, ns_id, 0, &reuse);
  if (!slot) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "block %s is on disk and no host slot is free to read it into (all %u are pinned or in "
        "flight%s)",
        key.ToHex(), placement_.tier(kHost)->num_slots(),
        placement_.AtQuota(ns_id, kHost) ? ", or its namespace is at its host quota with every "
                                           "block of it pinned"
                                         : ""));
  }
  const uint64_t write_id = placement_.NextWriteId();
  auto fill = std::make_shared<HostFill>();
  void* const dst = placement_.Address(kHost, *slot).host;
  const std::string ns = namespaces_.Name(ns_id);
  // When the read is over: first release the streams gated on it (their copies out of the
  // slot may start: its bytes are final), then the bookkeeping, on the completion queue. The
  // I/O thread must never wait for the placement lock: a thread holding it can be blocked in
  // a device call behind a Free that synchronizes the device, which waits for a stream gated
  // on a read that only this callback completes.
  //
  // A reader with a deadline may abandon the read (HostFill::Abandon, in its stream's gate):
  // it zeroes the slot and fails the fill itself, so the read, when it settles, neither writes
  // the slot nor notifies. The block loses that host copy at once and keeps its disk record
  // (OnFillAbandoned); the slot goes back when the read has settled (OnHostFilled).
  fill->slot = dst;
  fill->bytes = block_bytes_;
  // (A weak pointer: the fill owns this callback.)
  fill->on_abandon = [this, key, write_id, weak = std::weak_ptr<HostFill>(fill)] {
    completions_.Post([this, key, write_id, weak] {
      if (std::shared_ptr<HostFill> f = weak.lock()) {
        OnFillAbandoned(key, write_id, f);
        f->abandon_settled.Notify();
      }
    });
  };
  // Every read is a sample of the disk tier's rate (TierRates): its bytes when it delivered,
  // its time either way (a read held past its reader's deadline says the disk is slow).
  const absl::Time started = absl::Now();
  auto on_read = [this, key, write_id, fill, started](absl::Status st) {
    counters_.rates().Finished(kDisk, st.ok() ? block_bytes_ : 0, absl::Now() - started);
    if (!fill->claim.abandoned()) {
      fill->status = st;
      fill->done.Notify();
    }
    // After OnFillAbandoned where the read was abandoned (HostFill::SettleAfterAbandonment).
    fill->SettleAfterAbandonment([this, key, write_id, fill, st = std::move(st)]() mutable {
      completions_.Post([this, key, write_id, fill, st = std::move(st)]() mutable {
        OnHostFilled(key, write_id, fill, std::move(st));
      });
    });
  };
  counters_.rates().Started(kDisk);
  absl::Status s;
  if (reuse.pending()) {
    // The slot's old bytes are still being copied out (a job on this part's thread): the
    // read goes to a bounce buffer now, and into the slot as soon as that copy is done — on
    // the thread that finishes second, never by waiting. (Waiting in a job queued behind
    // the other copy-outs held every such read behind the slowest of them: with the disk's
    // writes stalled, reads that had landed missed their load's deadline by 100+ ms.)
    fill->slot_free = reuse.gate;
    std::shared_ptr<char[]> bounce(new char[block_bytes_]);
    s = disk_->Read(
        record, key, ns, bounce.get(),
        [this, bounce, dst, gate = reuse.gate, fill, on_read](absl::Status st) mutable {
          gate->OnNotified([this, bounce, dst, fill, on_read, st = std::move(st)]() mutable {
            if (!fill->claim.Claim()) {
              on_read(absl::CancelledError("abandoned by its reader"));
              return;
            }
            std::memcpy(dst, bounce.get(), block_bytes_);
            on_read(std::move(st));
          });
        });
  } else {
    s = disk_->Read(record, key, ns, dst, on_read, std::shared_ptr<ReadClaim>(fill, &fill->claim));
  }
  if (!s.ok()) {
    counters_.rates().Finished(kDisk, 0, absl::ZeroDuration());  // nothing was read
    // The record vanished (its region was reclaimed) between the lookup and the read: give
    // the slot back untouched; the block is a miss for this caller.
    placement_.ReturnSlot(kHost, *slot, std::move(reuse));
    return absl::Status(s.code(), absl::StrCat("reading from disk: ", s.message()));
  }
  // The read completes on the I/O thread, whose bookkeeping needs the placement lock (held
  // here): the entry is marked before it can run.
  table_.Find(key, [&](BlockEntry* e) {
    placement_.mu().AssertHeld();
    placement_.Attach(key, *e, kHost, *slot, passing);
    e->set_writing(kHost, true);
    e->write_id[kHost] = write_id;
    e->host_fill = fill;
  });
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------- completions

void DiskMover::OnDiskWritten(const BlockKey& key, uint64_t write_id, absl::Status status) {
  MutexLock lock(&placement_.mu());
  table_.Mutate(key, [&](BlockEntry& e) {
    placement_.mu().AssertHeld();
    if (!e.is_writing(kDisk) || e.write_id[kDisk] != write_id) {
      return placement_.ReclaimIfErased(key, e);
    }
    e.set_writing(kDisk, false);
    if (!status.ok()) {
      // The disk tier dropped the record already: forget the location without erasing it.
      if (status.code() != absl::StatusCode::kCancelled) {
        KVTIER_LOG(kWarning, "block %s was not written to disk: %s", key.ToHex(),
                   status.ToString());
      }
      // A read that waited for this write was told already (and OnHostFilled may have let go
      // of the location): forget it once.
      placement_.ForgetLowerCopy(e, kDisk);
    }
    if (placement_.ReclaimIfErased(key, e)) return true;
    return placement_.ForgetIfEmpty(e);
  });
}

void DiskMover::OnHostFilled(const BlockKey& key, uint64_t write_id,
                             std::shared_ptr<HostFill> fill, absl::Status status) {
  // The gated streams were released already (the read's callback, or the reader that
  // abandoned it); this is the bookkeeping.
  const bool abandoned = fill->claim.abandoned();
  {
    MutexLock lock(&placement_.mu());
    if (abandoned && fill->held_slot != kNoSlot) {
      // Nothing writes the slot any more: it goes back once its readers are done.
      placement_.ReleaseHeldSlotAfter(kHost, fill->held_slot, fill->held_readers);
      fill->held_slot = kNoSlot;
      fill->held_readers.clear();
    }
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_.mu().AssertHeld();
      if (!e.is_writing(kHost) || e.write_id[kHost] != write_id) {
        return placement_.ReclaimIfErased(key, e);
      }
      e.set_writing(kHost, false);
      e.host_fill.reset();
      if (abandoned) {
        // Erased (OnFillAbandoned found a GPU copy made from the zeros): the record is still
        // the tier's, so the entry's reclaim erases it there.
        e.erased = true;
      } else if (!status.ok()) {
        // The slot holds zeros now and the disk record is gone (dropped by the disk tier):
        // the block becomes a miss; readers already queued get zeros and the error.
        placement_.ForgetLowerCopy(e, kDisk);
        e.erased = true;
      }
      return placement_.ReclaimIfErased(key, e);
    });
  }
  if (status.ok()) counters_.tier(kHost).bytes_in.fetch_add(block_bytes_, std::memory_order_relaxed);
  fill->settled.Notify();
}

void DiskMover::OnFillAbandoned(const BlockKey& key, uint64_t write_id,
                                std::shared_ptr<HostFill> fill) {
  {
    MutexLock lock(&placement_.mu());
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_.mu().AssertHeld();
      if (!e.is_writing(kHost) || e.write_id[kHost] != write_id) return false;
      if (e.has(TierKind::kGpu)) {
        // A GPU copy made since the read started came out of the abandoned slot (zeros): the
        // block goes, as after a failed verification, once nobody uses it.
        e.erased = true;
        return false;
      }
      // The block loses the host copy it was getting (the slot holds zeros) and keeps its disk
      // record: a later Load reads it again. The slot stays out of the pool until the read
      // has settled (OnHostFilled), and its next writer waits for the transfers still
      // copying out of it.
      for (const BlockEntry::Reader& r : e.readers) fill->held_readers.push_back(r.done);
      fill->held_slot = e.slot[kHost];
      placement_.Detach(key, e, kHost, /*release_slot=*/false);
      return false;
    });
  }
  counters_.blocks_abandoned.fetch_add(1, std::memory_order_relaxed);
}

void DiskMover::OnDiskDropped(std::vector<std::pair<BlockKey, RecordId>> dropped) {
  MutexLock lock(&placement_.mu());
  for (const std::pair<BlockKey, RecordId>& record : dropped) {
    const BlockKey& key = record.first;
    const RecordId id = record.second;
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_.mu().AssertHeld();
      if (e.slot[kDisk] != id) return false;
      placement_.ForgetLowerCopy(e, kDisk);
      if (placement_.ReclaimIfErased(key, e)) return true;
      return placement_.ForgetIfEmpty(e);
    });
  }
}

// ----------------------------------------------------------------------------- stats

void DiskMover::FillStats(TierStats* ts) const {
  const DiskTierStats ds = disk_->Stats();
  ts->capacity_blocks = ds.capacity_bytes / record_bytes_;
  ts->used_blocks = ds.records;
  ts->bytes_in = ds.bytes_written;
  ts->bytes_out = ds.bytes_read;
  ts->evictions = ds.records_dropped;
  ts->checksum_failures = ds.checksum_failures;
  ts->write_failures = ds.writes_failed;
  const AdmissionStats as = admission_->stats();
  ts->admissions_rejected = counters_.disk_busy_rejections.load(std::memory_order_relaxed) +
                            as.rejected_frequency + as.rejected_budget;
}

}  // namespace kvtier
