// tiers/disk_tier_write.cc — DiskTier's write path: Reserve and Submit, the encode on the codec
// threads, the encoder thread that places encoded records in submission order (placement,
// region reclaim, the header's region and generation), the write I/O and its completion.
// Opening, recovery, erase and stats are in disk_tier.cc, the read path in
// disk_tier_read.cc; all share the record table under DiskTier::mu_ (disk_tier.h).

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "tiers/disk_tier.h"

namespace kvtier {
namespace {

uint64_t UnixMillis() { return static_cast<uint64_t>(absl::ToUnixMillis(absl::Now())); }

}  // namespace

void DiskTier::PostLocked(absl::AnyInvocable<void()> task) {
  MutexLock lock(&task_mu_);
  tasks_.push_back(std::move(task));
}

void DiskTier::PostPlacement(uint64_t sequence, absl::AnyInvocable<void()> task) {
  MutexLock lock(&task_mu_);
  if (sequence != next_placement_) {
    encoded_early_.emplace(sequence, std::move(task));
    return;
  }
  tasks_.push_back(std::move(task));
  ++next_placement_;
  for (auto it = encoded_early_.begin(); it != encoded_early_.end() && it->first == next_placement_;
       it = encoded_early_.erase(it)) {
    tasks_.push_back(std::move(it->second));
    ++next_placement_;
  }
}

void DiskTier::EncoderLoop() {
  for (;;) {
    absl::AnyInvocable<void()> task;
    {
      // On a lock of its own: waiting on mu_ would wake this thread at every unlock of mu_,
      // several per read (a context switch each, measured at a third of the CPU time of
      // random 256 KiB reads).
      MutexLock lock(&task_mu_);
      task_mu_.Await([this] {
        task_mu_.AssertHeld();
        return !tasks_.empty() || tasks_stopping_;
      });
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

// ----------------------------------------------------------------------------- writes

absl::StatusOr<RecordId> DiskTier::Reserve(const BlockKey& key, const std::string& ns) {
  if (ns.empty() || ns.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: namespace of %d bytes for block %s; it must be 1 to 128 bytes",
                        ns.size(), key.ToHex()));
  }
  MutexLock lock(&mu_);
  RecordId id;
  if (free_ids_.empty()) {
    id = static_cast<RecordId>(records_.size());
    records_.emplace_back();
  } else {
    id = free_ids_.back();
    free_ids_.pop_back();
  }
  Record& r = records_[id];
  r = Record{};
  r.key = key;
  r.ns = ns;
  r.live = true;
  ++ops_in_flight_;  // until submitted and written, or erased
  return id;
}

absl::Status DiskTier::Submit(RecordId id, const void* src,
                              absl::AnyInvocable<void(absl::Status)> done) {
  BlockKey key;
  std::string ns;
  {
    MutexLock lock(&mu_);
    if (id >= records_.size() || !records_[id].live) {
      return absl::NotFoundError(
          absl::StrFormat("disk tier: Submit of record %u, which is not reserved", id));
    }
    Record& r = records_[id];
    if (r.submitted) {
      return absl::FailedPreconditionError(
          absl::StrFormat("disk tier: Submit of record %u (block %s), which was already submitted",
                          id, r.key.ToHex()));
    }
    r.submitted = true;
    if (r.erased) {
      // Erased since Reserve (its op ended then): nothing is written; `done` hears so on
      // the encoder thread, and the id is free from then on.
      ++ops_in_flight_;
      PostLocked([this, id, key = r.key, done = std::move(done)]() mutable {
        {
          MutexLock lock(&mu_);
          DropRecordLocked(id);
        }
        done(absl::CancelledError(
            absl::StrFormat("disk tier: block %s erased before it was written", key.ToHex())));
        OpFinished();
      });
      return absl::OkStatus();
    }
    key = r.key;
    ns = r.ns;
  }
  // Uncompressed records are encoded in place: the block goes straight to its payload
  // position in the record buffer (one copy, one buffer). Compressed ones need the raw copy
  // and a second buffer for the output; both are taken now so the encoder never waits.
  const bool in_place = options_.codec == Codec::kNone;
  int buffers[2] = {-1, -1};
  // A fast GPU prefilling a long context evicts faster than a disk writes: waiting (a
  // bounded time) for writes in flight to free a buffer keeps blocks that refusing at once
  // would drop. Only the encoder and the I/O thread free buffers, and neither waits for a
  // caller's locks.
  if (absl::Status s =
          staging_->TakeForWrite(absl::MakeSpan(buffers, in_place ? 1 : 2), kStagingWait);
      !s.ok()) {
    MutexLock lock(&mu_);
    AbandonLocked(
        id, absl::Status(s.code(), absl::StrFormat("disk tier: block %s was never written: %s",
                                                   key.ToHex(), s.message())));
    return s;
  }
  const int raw = in_place ? -1 : buffers[0];
  const int out = in_place ? buffers[0] : buffers[1];
  // The caller may reuse `src` as soon as we return.
  std::memcpy(raw >= 0 ? staging_->Buffer(raw) : staging_->Buffer(out) + kRecordHeaderBytes, src,
              block_bytes_);
  // From here on the job always reaches PostPlacement: no sequence is ever skipped.
  const uint64_t sequence = next_write_sequence_.fetch_add(1, std::memory_order_relaxed);
  codec_pool_->Post([this, job = WriteJob{id, key, std::move(ns), raw, out, std::move(done),
                                          sequence}]() mutable { Encode(std::move(job)); });
  return absl::OkStatus();
}

absl::StatusOr<RecordId> DiskTier::Write(const BlockKey& key, const std::string& ns,
                                         const void* src,
                                         absl::AnyInvocable<void(absl::Status)> done) {
  absl::StatusOr<RecordId> id = Reserve(key, ns);
  if (!id.ok()) return id.status();
  if (absl::Status s = Submit(*id, src, std::move(done)); !s.ok()) return s;
  return *id;
}

void DiskTier::AbandonLocked(RecordId id, const absl::Status& why) {
  DropRecordLocked(id);
  --ops_in_flight_;  // the reservation's
  FailWaitersLocked(id, why);
}

bool DiskTier::PlaceLocked(RecordId id, uint32_t bytes,
                           std::vector<std::pair<BlockKey, RecordId>>* dropped) {
  const std::optional<RegionLocation> at =
      regions_.Allocate(bytes, [&](uint32_t region, uint64_t generation) {
        mu_.AssertHeld();
        return ReclaimLocked(region, generation, dropped);
      });
  if (!at) return false;
  Record& r = records_[id];
  r.entry.region = at->region;
  r.entry.offset = at->offset;
  r.entry.record_bytes = bytes;
  r.entry.generation = at->generation;
  r.placed = true;
  return true;
}

absl::Status DiskTier::ReclaimLocked(uint32_t region, uint64_t generation,
                                     std::vector<std::pair<BlockKey, RecordId>>* dropped) {
  // One batch: the region's index entries go and its generation moves on, before any byte of
  // it is overwritten. A crash after this batch loses those blocks, never misreads them.
  std::vector<RecordId> victims;
  std::vector<BlockKey> indexed;
  if (regions_.live_records(region) > 0) {
    for (RecordId id = 0; id < records_.size(); ++id) {
      const Record& r = records_[id];
      if (r.live && r.placed && r.entry.region == region) {
        if (r.indexed) indexed.push_back(r.key);
        victims.push_back(id);
      }
    }
  }
  if (absl::Status s =
          index_->ReclaimRegion(region, generation, indexed, options_.sync != SyncPolicy::kNone);
      !s.ok()) {
    return s;
  }
  for (RecordId id : victims) {
    dropped->push_back({records_[id].key, id});
    DropRecordLocked(id);
    ++stats_.records_dropped;
  }
  if (!victims.empty() || regions_.used_bytes(region) > 0) ++stats_.regions_reclaimed;
  if (options_.secure_erase) {
    // The index no longer points into the region; now its old bytes go, before any new
    // record is placed there. On failure the region stays out of use (not active).
    if (absl::Status s = ZeroRegionLocked(region); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void DiskTier::DropRecordLocked(RecordId id) {
  Record& r = records_[id];
  if (!r.live) return;
  if (r.placed) {
    if (r.indexed) {
      stats_.used_bytes -= r.entry.record_bytes;
      --stats_.records;
    }
    regions_.RecordDropped(r.entry.region);
  }
  r = Record{};
  free_ids_.push_back(id);
}

void DiskTier::Encode(WriteJob job) {
  // A codec thread: the codec's work (a checksum at least; zstd or quantization) runs on as
  // many threads as the pool has, before the record has a place. Its header names region 0,
  // generation 0 until Place rewrites them.
  const char* raw = job.staging >= 0 ? staging_->Buffer(job.staging)
                                     : staging_->Buffer(job.out) + kRecordHeaderBytes;
  RecordHeader header;
  header.key = job.key;
  header.ns = job.ns;
  header.geometry_fingerprint = geometry_.Fingerprint();
  header.created_unix_ms = UnixMillis();
  EncodeOptions eo;
  eo.codec = options_.codec;
  eo.zstd_level = options_.zstd_level;
  eo.element_bytes = geometry_.element_bytes();
  eo.geometry = geometry_;
  RecordHeader written;
  absl::StatusOr<size_t> size = EncodeRecord(
      header, raw, block_bytes_, eo, staging_->Buffer(job.out), max_record_bytes_, &written);
  if (job.staging >= 0) staging_->Return(job.staging);
  job.staging = -1;
  const uint64_t sequence = job.sequence;
  PostPlacement(sequence, [this, job = std::move(job), size = std::move(size),
                           written = std::move(written)]() mutable {
    Place(std::move(job), std::move(size), std::move(written));
  });
}

void DiskTier::Place(WriteJob job, absl::StatusOr<size_t> encoded, RecordHeader written) {
  std::vector<std::pair<BlockKey, RecordId>> dropped;
  const int out = job.out;
  absl::Status failure = encoded.status();
  const size_t size = encoded.ok() ? *encoded : 0;
  if (failure.ok()) {
    bool placed = false;
    bool erased = false;
    {
      MutexLock lock(&mu_);
      // Every region busy with reads or writes in flight is a moment's condition: wait (a
      // bounded time) for one to land rather than fail the write and lose the block.
      mu_.AwaitWithTimeout(
          [&] {
            mu_.AssertHeld();
            erased = records_[job.id].erased;
            if (!erased) placed = PlaceLocked(job.id, static_cast<uint32_t>(size), &dropped);
            return erased || placed || stopping_;
          },
          kStagingWait);
      if (placed) {
        Record& r = records_[job.id];
        SetRecordPlacement(staging_->Buffer(out), r.entry.region, r.entry.generation);
        r.entry.codec = written.codec;
        r.entry.stored_bytes = written.stored_bytes;
        r.entry.payload_checksum = written.payload_checksum;
        r.entry.created_unix_ms = written.created_unix_ms;
        r.entry.ns = job.ns;
        stats_.raw_bytes_written += block_bytes_;
      }
    }
    if (!dropped.empty() && dropped_) dropped_(std::move(dropped));
    if (erased) {
      failure = absl::CancelledError("disk tier: block erased before it was written");
    } else if (!placed) {
      failure = absl::ResourceExhaustedError(
          "disk tier: no region can take the record (every region has writes or reads in "
          "flight)");
    }
  }
  if (!failure.ok()) {
    std::vector<PendingRead> waiters;
    {
      MutexLock lock(&mu_);
      Record& r = records_[job.id];
      if (r.placed) regions_.WriteLanded(r.entry.region);
      DropRecordLocked(job.id);
      // With the drop: once the id is free, reads that wait on it belong to its next record.
      waiters = TakeWaitersLocked(job.id);
      if (failure.code() != absl::StatusCode::kCancelled) ++stats_.writes_failed;
    }
    staging_->Return(out);
    ResumeWaiters(std::move(waiters), false);
    job.done(failure);
    OpFinished();
    return;
  }
  IoOp op;
  op.kind = IoOp::Kind::kWrite;
  op.file = file_;
  {
    MutexLock lock(&mu_);
    op.offset = records_[job.id].entry.offset;
  }
  op.buffer = staging_->Buffer(out);
  op.length = size;
  auto shared_job = std::make_shared<WriteJob>(std::move(job));
  op.done = [this, shared_job, out](absl::StatusOr<size_t> r) mutable {
    absl::Status s = r.ok() ? absl::OkStatus() : r.status();
    OnWritten(std::move(*shared_job), out, s);
  };
  if (absl::Status s = io_->Submit({&op, 1}); !s.ok()) {
    OnWritten(std::move(*shared_job), out, s);
  }
}

void DiskTier::OnWritten(WriteJob job, int encoded_staging, absl::Status status) {
  staging_->Return(encoded_staging);
  struct Range {
    uint32_t region;
    uint64_t offset;
    uint32_t bytes;
  };
  std::optional<Range> zero;
  std::vector<PendingRead> waiters;
  if (status.ok() && options_.sync != SyncPolicy::kNone && ::fdatasync(fd_) != 0) {
    status = absl::UnavailableError(
        absl::StrFormat("disk tier: fdatasync of the data file: %s", std::strerror(errno)));
  }
  {
    MutexLock lock(&mu_);
    Record& r = records_[job.id];
    regions_.WriteLanded(r.entry.region);
    if (status.ok() && !r.erased) {
      // Data first, index second: the bytes are written, now the entry may point at them.
      status = index_->Put(r.key, r.entry, options_.sync == SyncPolicy::kFull);
    }
    if (status.ok() && !r.erased) {
      r.indexed = true;
      stats_.used_bytes += r.entry.record_bytes;
      ++stats_.records;
      stats_.bytes_written += r.entry.record_bytes;
    } else {
      if (!status.ok()) {
        ++stats_.writes_failed;
        status = absl::Status(status.code(), absl::StrFormat("disk tier: writing block %s: %s",
                                                             job.key.ToHex(), status.message()));
      } else {
        status = absl::CancelledError("disk tier: block erased while it was written");
      }
      if (options_.secure_erase && r.placed) {
        // The bytes (or part of them) reached the file: they go too.
        zero = {r.entry.region, r.entry.offset, r.entry.record_bytes};
        regions_.WriteStarted(r.entry.region);
        ++ops_in_flight_;
      }
      DropRecordLocked(job.id);
    }
    waiters = TakeWaitersLocked(job.id);
  }
  if (zero) SubmitZeroWrite(zero->region, zero->offset, zero->bytes);
  ResumeWaiters(std::move(waiters), status.ok());
  job.done(status);
  OpFinished();
}

}  // namespace kvtier
