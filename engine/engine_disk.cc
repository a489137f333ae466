// engine/engine_disk.cc — how the engine uses the disk tier.
//
// Down: a host copy evicted while it is the block's only copy is written to disk if the
// admission policy admits it (StartDiskWrite). The write copies the bytes into a staging
// buffer at once, so the host slot is free as soon as the eviction returns.
//
// Up: a block whose only copy is on disk is read into a host slot (EnsureHostCopy); the read
// is verified on the I/O thread, and device streams that copy out of that host slot first wait
// for it with a host callback (AwaitHostCopy), so the host never blocks. A read that fails
// verification zero-fills the slot and marks the block erased: readers already queued get
// zeros and a DataLoss status, never another block's bytes; everyone else sees a miss.
//
// The disk tier evicts on its own (regions are reclaimed whole) and tells the engine which
// records it dropped (OnDiskDropped).

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "engine/engine_impl.h"

namespace kvtier {
namespace {

constexpr int kHost = static_cast<int>(TierKind::kHost);
constexpr int kDisk = static_cast<int>(TierKind::kDisk);

uint8_t Bit(TierKind t) { return static_cast<uint8_t>(1u << static_cast<int>(t)); }

}  // namespace

absl::Status EngineImpl::OpenDisk() {
  absl::StatusOr<DiskTierOptions> dto =
      MakeDiskTierOptions(options_.disk, options_.geometry);
  if (!dto.ok()) return dto.status();
  dto->secure_erase = options_.secure_erase;
  AdmissionOptions ao;
  ao.min_seen = options_.disk.admit_min_seen;
  ao.write_budget_mbps = options_.disk.write_budget_mbps;
  absl::StatusOr<std::unique_ptr<AdmissionPolicy>> admission = AdmissionPolicy::Create(ao);
  if (!admission.ok()) return admission.status();
  admission_ = std::move(*admission);

  struct Recovered {
    BlockKey key;
    std::string ns;
    RecordId id;
  };
  std::vector<Recovered> recovered;
  absl::StatusOr<std::unique_ptr<DiskTier>> disk = DiskTier::Open(
      *dto, options_.geometry,
      [&](const BlockKey& key, const std::string& ns, RecordId id) {
        recovered.push_back({key, ns, id});
      },
      [this](std::vector<std::pair<BlockKey, RecordId>> dropped) {
        // On the encoder thread, which must not wait for placement_mu_: a Write under
        // placement_mu_ may be waiting for a staging buffer that only this thread frees.
        // Meanwhile a read of a dropped record fails its checks and is a miss.
        completions_.Post([this, dropped = std::move(dropped)]() mutable {
          OnDiskDropped(std::move(dropped));
        });
      });
  if (!disk.ok()) return disk.status();
  disk_ = std::move(*disk);
  // Every recovered record becomes a block with a disk copy, in its namespace (created if
  // this run did not list it).
  for (const Recovered& r : recovered) {
    absl::StatusOr<const Namespace*> space = FindNamespace(r.ns);
    if (!space.ok()) {
      if (absl::Status s = CreateNamespace(r.ns); !s.ok()) {
        KVTIER_LOG(kWarning, "disk tier: skipping block %s of namespace '%s': %s",
                   r.key.ToHex(), r.ns, s.ToString());
        (void)disk_->Erase(r.id, r.key);
        continue;
      }
      space = FindNamespace(r.ns);
    }
    MutexLock lock(&placement_mu_);
    table_.Upsert(r.key, [&](BlockEntry& e, bool inserted) {
      placement_mu_.AssertHeld();
      if (!inserted) return;  // the same key twice cannot happen: index keys are unique
      e.ns_id = (*space)->id;
      e.stored_unix_ms = static_cast<int64_t>(disk_->CreatedUnixMs(r.id));
      Attach(r.key, e, TierKind::kDisk, r.id);
      ++ns_blocks_[e.ns_id];
    });
  }
  return absl::OkStatus();
}

std::string EngineImpl::NamespaceName(uint32_t ns_id) const {
  MutexLock lock(&ns_mu_);
  return ns_id < namespaces_.size() ? namespaces_[ns_id]->name : std::string();
}

bool EngineImpl::StartDiskWrite(const BlockKey& key, BlockEntry& e) {
  if (disk_ == nullptr) return false;
  if (AtQuota(e.ns_id, kDisk)) {
    // Records are reclaimed a region at a time, so no single record of the namespace can be
    // evicted to make room: the block is refused, as admission would refuse it.
    MutexLock ns_lock(&ns_mu_);
    namespaces_[e.ns_id]->counters->quota_rejections.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const size_t bytes = options_.geometry.block_bytes();
  if (!admission_->Admit(key, bytes, absl::Now())) return false;
  const uint64_t write_id = next_write_id_++;
  const SlotAddress src = tier(TierKind::kHost)->Address(e.slot[kHost]);
  absl::StatusOr<RecordId> id =
      disk_->Write(key, NamespaceName(e.ns_id), src.host, [this, key, write_id](absl::Status s) {
        // Runs on the I/O thread, which must never wait for placement_mu_ (see the read's
        // callback below): the bookkeeping goes to the completion queue.
        completions_.Post([this, key, write_id, s = std::move(s)]() mutable {
          OnDiskWritten(key, write_id, std::move(s));
        });
      });
  if (!id.ok()) {
    disk_busy_rejections_.fetch_add(1, std::memory_order_relaxed);
    KVTIER_LOG_ONCE(kWarning, "disk tier busy: evicted blocks are dropped, not written (%s)",
                    id.status().ToString());
    return false;
  }
  Attach(key, e, TierKind::kDisk, *id);
  e.writing |= Bit(TierKind::kDisk);
  e.write_id[kDisk] = write_id;
  counters_[kDisk].demotions.fetch_add(1, std::memory_order_relaxed);
  return true;
}

absl::Status EngineImpl::EnsureHostCopy(const BlockKey& key, bool passing) {
  RecordId record = kNoSlot;
  std::string ns;
  uint32_t ns_id = 0;
  table_.Find(key, [&](BlockEntry* e) {
    if (e->has(TierKind::kHost) || !e->has(TierKind::kDisk)) return;
    record = e->slot[kDisk];
    ns_id = e->ns_id;
    ns = NamespaceName(e->ns_id);
  });
  if (record == kNoSlot) return absl::OkStatus();  // already has a host copy
  std::shared_ptr<Event> reuse;
  std::optional<SlotId> slot = AcquireSlot(TierKind::kHost, &reuse, ns_id);
  if (!slot) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "block %s is on disk and no host slot is free to read it into (all %u are pinned or in "
        "flight%s)",
        key.ToHex(), tier(TierKind::kHost)->num_slots(),
        AtQuota(ns_id, kHost) ? ", or its namespace is at its host quota with every block "
                                "of it pinned"
                              : ""));
  }
  // Host slots are freed only once nothing reads them (pins), so no reuse event exists for
  // the host tier and the disk read may write the slot at once.
  const uint64_t write_id = next_write_id_++;
  auto fill = std::make_shared<HostFill>();
  void* dst = tier(TierKind::kHost)->Address(*slot).host;
  absl::Status s = disk_->Read(record, key, ns, dst, [this, key, write_id, fill](absl::Status st) {
    // On the I/O thread. First release the streams gated on this read (AwaitHostCopy): the
    // slot's bytes are final. Then the bookkeeping, on the completion queue: this thread
    // must never wait for placement_mu_. A thread holding placement_mu_ can be blocked in a
    // device call behind a Free that synchronizes the device, which waits for a stream gated
    // on a read that only this thread can complete (a deadlock the emulated device
    // reproduces: EngineStress.ConcurrentClientsWithADiskTierNeverSeeWrongBytes).
    fill->status = st;
    fill->done.Notify();
    completions_.Post([this, key, write_id, fill, st = std::move(st)]() mutable {
      OnHostFilled(key, write_id, fill, std::move(st));
    });
  });
  if (!s.ok()) {
    // The record vanished (its region was reclaimed) between the lookup and the read: give
    // the slot back untouched; the block is a miss for this caller.
    tier(TierKind::kHost)->Release(*slot);
    return absl::Status(s.code(), absl::StrCat("reading from disk: ", s.message()));
  }
  // The read completes on the I/O thread, which needs placement_mu_ (held here) to report:
  // the entry is marked before it can.
  table_.Find(key, [&](BlockEntry* e) {
    placement_mu_.AssertHeld();
    Attach(key, *e, TierKind::kHost, *slot, passing);
    e->writing |= Bit(TierKind::kHost);
    e->write_id[kHost] = write_id;
    e->host_fill = fill;
  });
  return absl::OkStatus();
}

absl::Status EngineImpl::AwaitHostCopy(Stream& stream, const BlockEntry& e,
                                       std::vector<std::shared_ptr<HostFill>>* fills) {
  if (!e.is_writing(TierKind::kHost)) return absl::OkStatus();
  if (e.ready[kHost] != nullptr) return stream.Wait(*e.ready[kHost]);
  if (e.host_fill == nullptr) return absl::OkStatus();
  std::shared_ptr<HostFill> fill = e.host_fill;
  fills->push_back(fill);
  // A host callback that holds the stream (not the host) until the disk read is verified.
  return stream.AddCallback([fill] { fill->done.WaitForNotification(); });
}

bool EngineImpl::ForgetIfEmpty(BlockEntry& e) {
  if (e.has_any()) return false;
  if (e.busy()) {
    e.erased = true;  // reclaimed by the last unpin
    return false;
  }
  --ns_blocks_[e.ns_id];
  return true;
}

void EngineImpl::OnDiskWritten(const BlockKey& key, uint64_t write_id, absl::Status status) {
  MutexLock lock(&placement_mu_);
  table_.Mutate(key, [&](BlockEntry& e) {
    placement_mu_.AssertHeld();
    if (!e.is_writing(TierKind::kDisk) || e.write_id[kDisk] != write_id) return false;
    e.writing &= static_cast<uint8_t>(~Bit(TierKind::kDisk));
    if (!status.ok()) {
      // The disk tier already dropped the record: forget the location without erasing it.
      if (status.code() != absl::StatusCode::kCancelled) {
        KVTIER_LOG(kWarning, "block %s was not written to disk: %s", key.ToHex(),
                   status.ToString());
      }
      // A read that waited for this write has already been told (ReleaseWaiters runs before
      // this callback) and OnHostFilled let go of the location: count it once.
      if (e.has(TierKind::kDisk)) {
        e.slot[kDisk] = kNoSlot;
        --ns_tier_blocks_[e.ns_id][kDisk];
      }
    }
    if (e.erased && !e.busy()) {
      DetachAll(key, e);
      return true;
    }
    return ForgetIfEmpty(e);
  });
}

void EngineImpl::OnHostFilled(const BlockKey& key, uint64_t write_id,
                              std::shared_ptr<HostFill> fill, absl::Status status) {
  // The gated streams were released already (Read's callback); this is the bookkeeping.
  {
    MutexLock lock(&placement_mu_);
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_mu_.AssertHeld();
      if (!e.is_writing(TierKind::kHost) || e.write_id[kHost] != write_id) return false;
      e.writing &= static_cast<uint8_t>(~Bit(TierKind::kHost));
      e.host_fill.reset();
      if (!status.ok()) {
        // The slot holds zeros now and the disk record is gone (dropped by the disk tier):
        // the block becomes a miss; readers already queued get zeros and the error.
        if (e.has(TierKind::kDisk)) {
          e.slot[kDisk] = kNoSlot;
          --ns_tier_blocks_[e.ns_id][kDisk];
        }
        e.erased = true;
      }
      if (e.erased && !e.busy()) {
        DetachAll(key, e);
        return true;
      }
      return false;
    });
  }
  if (status.ok()) {
    counters_[kHost].bytes_in.fetch_add(options_.geometry.block_bytes(),
                                        std::memory_order_relaxed);
  }
  fill->settled.Notify();
}

void EngineImpl::OnDiskDropped(std::vector<std::pair<BlockKey, RecordId>> dropped) {
  MutexLock lock(&placement_mu_);
  for (const auto& dropped_record : dropped) {
    const BlockKey& key = dropped_record.first;
    const RecordId id = dropped_record.second;
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_mu_.AssertHeld();
      if (e.slot[kDisk] != id) return false;
      e.slot[kDisk] = kNoSlot;
      e.writing &= static_cast<uint8_t>(~Bit(TierKind::kDisk));
      --ns_tier_blocks_[e.ns_id][kDisk];
      if (e.erased && !e.busy()) {
        DetachAll(key, e);
        return true;
      }
      return ForgetIfEmpty(e);
    });
  }
}

}  // namespace kvtier
