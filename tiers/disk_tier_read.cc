// tiers/disk_tier_read.cc — DiskTier's read path: Read, reads queued for a staging buffer
// (StagingPool::TakeOrQueue) or for their record's write to land, verification, and the
// failure of reads whose record is abandoned. The write path is in disk_tier_write.cc, erase
// and recovery in disk_tier.cc; all share the record table under DiskTier::mu_ (disk_tier.h).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "tiers/disk_tier.h"

namespace kvtier {

absl::Status DiskTier::Read(RecordId id, const BlockKey& key, const std::string& ns, void* dst,
                            absl::AnyInvocable<void(absl::Status)> done,
                            std::shared_ptr<ReadClaim> claim) {
  // Never runs `done` on the caller's thread (the caller may hold locks the callback takes):
  // problems found here are returned; everything later is reported on the tier's threads.
  auto read = std::make_shared<PendingRead>(
      PendingRead{id, key, ns, dst, std::move(done), std::move(claim)});
  IndexEntry at;
  int staging;
  {
    MutexLock lock(&mu_);
    if (id >= records_.size() || !records_[id].live || records_[id].erased ||
        records_[id].key != key) {
      return absl::NotFoundError(
          absl::StrFormat("disk tier: block %s has no record %u", key.ToHex(), id));
    }
    ++ops_in_flight_;
    if (!records_[id].indexed) {
      // Reserved, or its write still in flight (the block was demoted a moment ago): read
      // once it lands.
      waiting_for_write_[id].push_back(std::move(*read));
      return absl::OkStatus();
    }
    // The location is taken now, whether the read starts now or queues for a staging buffer:
    // the region is not reclaimed until the read lands.
    at = records_[id].entry;
    regions_.ReadStarted(at.region);
    read->held_region = at.region;
    staging =
        staging_->TakeOrQueue([this, read](int buffer) { StartRead(std::move(*read), buffer); });
    if (staging < 0) return absl::OkStatus();  // queued for a buffer, its region held
  }
  if (absl::Status s = SubmitReadIo(read, staging, at); !s.ok()) {
    MutexLock lock(&mu_);
    staging_->Release(staging);  // not Return: that may start other reads here
    regions_.ReadLanded(at.region);
    --ops_in_flight_;
    return s;
  }
  return absl::OkStatus();
}

bool DiskTier::InPlaceRead(const IndexEntry& at, const void* dst) const {
  return read_in_place_ && at.codec == Codec::kNone && at.stored_bytes == block_bytes_ &&
         block_bytes_ % kIoAlignment == 0 && reinterpret_cast<uintptr_t>(dst) % kIoAlignment == 0 &&
         at.record_bytes == kRecordHeaderBytes + block_bytes_;
}

absl::Status DiskTier::SubmitReadIo(std::shared_ptr<PendingRead> read, int staging,
                                    const IndexEntry& at) {
  IoOp op;
  op.kind = IoOp::Kind::kRead;
  op.file = file_;
  op.offset = at.offset;
  op.buffer = staging_->Buffer(staging);
  const bool in_place = InPlaceRead(at, read->dst);
  if (in_place) {
    // The header into the staging buffer, the payload (the block itself) straight into its
    // destination: one readv, and no copy after it.
    op.length = kRecordHeaderBytes;
    op.tail = read->dst;
    op.tail_length = block_bytes_;
  } else {
    op.length = at.record_bytes;
  }
  op.done = [this, read, staging, generation = at.generation, region = at.region,
             in_place](absl::StatusOr<size_t> r) mutable {
    FinishRead(std::move(read), staging, generation, region, in_place, std::move(r));
  };
  return io_->Submit({&op, 1});
}

void DiskTier::EndAbandonedRead(PendingRead& read) {
  {
    MutexLock lock(&mu_);
    ++stats_.reads_abandoned;
  }
  read.done(absl::CancelledError(absl::StrFormat(
      "disk tier: the read of block %s was abandoned by its reader", read.key.ToHex())));
  OpFinished();
}

void DiskTier::StartRead(PendingRead read, int staging) {
  if (read.claim != nullptr && read.claim->abandoned()) {
    // Given up on while it waited for a staging buffer: no I/O at all.
    staging_->Return(staging);
    {
      MutexLock lock(&mu_);
      if (read.held_region >= 0) regions_.ReadLanded(static_cast<uint32_t>(read.held_region));
      ++stats_.reads_abandoned_before_io;
    }
    read.held_region = -1;
    EndAbandonedRead(read);
    return;
  }
  IndexEntry at;
  bool found;
  {
    MutexLock lock(&mu_);
    const Record& r = records_[read.id];
    // The record may have been erased, or dropped by a failed read, while the read queued.
    found = r.live && r.indexed && r.key == read.key;
    if (found) {
      at = r.entry;
      regions_.ReadStarted(at.region);
    }
    if (read.held_region >= 0) regions_.ReadLanded(static_cast<uint32_t>(read.held_region));
    read.held_region = -1;
  }
  if (!found) {
    staging_->Return(staging);
    if (!ClaimDst(read)) return EndAbandonedRead(read);
    std::memset(read.dst, 0, block_bytes_);
    read.done(absl::NotFoundError(absl::StrFormat(
        "disk tier: block %s was dropped before it could be read", read.key.ToHex())));
    OpFinished();
    return;
  }
  auto shared = std::make_shared<PendingRead>(std::move(read));
  if (absl::Status s = SubmitReadIo(shared, staging, at); !s.ok()) {
    FinishRead(std::move(shared), staging, at.generation, at.region, /*in_place=*/false, s);
  }
}

void DiskTier::ResumeWaiters(std::vector<PendingRead> waiters, bool written) {
  for (PendingRead& w : waiters) {
    if (w.claim != nullptr && w.claim->abandoned()) {
      // Given up on while it waited for its record's write: no I/O at all.
      {
        MutexLock lock(&mu_);
        ++stats_.reads_abandoned_before_io;
      }
      EndAbandonedRead(w);
      continue;
    }
    if (!written) {
      if (!ClaimDst(w)) {
        EndAbandonedRead(w);
        continue;
      }
      std::memset(w.dst, 0, block_bytes_);
      w.done(absl::NotFoundError(absl::StrFormat(
          "disk tier: block %s was never written (its write failed)", w.key.ToHex())));
      OpFinished();
      continue;
    }
    auto read = std::make_shared<PendingRead>(std::move(w));
    int staging;
    {
      // As in Read: a read that queues for a buffer holds its record's region meanwhile.
      MutexLock lock(&mu_);
      const Record& r = records_[read->id];
      if (r.live && r.indexed && r.key == read->key) {
        regions_.ReadStarted(r.entry.region);
        read->held_region = r.entry.region;
      }
      staging =
          staging_->TakeOrQueue([this, read](int buffer) { StartRead(std::move(*read), buffer); });
    }
    if (staging >= 0) StartRead(std::move(*read), staging);
  }
}

void DiskTier::FinishRead(std::shared_ptr<PendingRead> read, int staging, uint64_t generation,
                          uint32_t region, bool in_place, absl::StatusOr<size_t> io_result) {
  if (!ClaimDst(*read)) {
    // Its reader gave up on it while the I/O was in the kernel: the bytes are not checked,
    // and the destination is not touched again (the record stays as it is).
    staging_->Return(staging);
    {
      MutexLock lock(&mu_);
      regions_.ReadLanded(region);
    }
    return EndAbandonedRead(*read);
  }
  // Verification and decoding (a checksum of the whole payload, a copy or a codec) run on
  // the codec threads: on the completion thread they would cap every read at one core.
  codec_pool_->Post([this, read = std::move(read), staging, generation, region, in_place,
                     io_result = std::move(io_result)]() mutable {
    VerifyRead(*read, staging, generation, region, in_place, std::move(io_result));
  });
}

void DiskTier::VerifyRead(PendingRead& read, int staging, uint64_t generation, uint32_t region,
                          bool in_place, absl::StatusOr<size_t> io_result) {
  const RecordId id = read.id;
  const BlockKey& key = read.key;
  const std::string& ns = read.ns;
  void* const dst = read.dst;
  const char* buf = staging_->Buffer(staging);
  absl::Status status = io_result.status();
  size_t got = io_result.ok() ? *io_result : 0;
  if (status.ok()) {
    absl::StatusOr<RecordHeader> h =
        ParseRecordHeader(buf, in_place ? std::min(got, kRecordHeaderBytes) : got);
    const size_t payload_got = got > kRecordHeaderBytes ? got - kRecordHeaderBytes : 0;
    if (!h.ok()) {
      status = h.status();
    } else if (h->key != key || h->ns != ns || h->geometry_fingerprint != geometry_.Fingerprint() ||
               h->region != region || h->generation != generation || h->raw_bytes != block_bytes_) {
      status = absl::DataLossError(absl::StrFormat(
          "record header disagrees with the index (key %s ns '%s' region %u generation %d; "
          "header says key %s ns '%s' region %u generation %d)",
          key.ToHex(), ns, region, generation, h->key.ToHex(), h->ns, h->region, h->generation));
    } else if (in_place) {
      // The payload landed in `dst`: it is verified there (an uncompressed payload needs no
      // decoding), so the header must say it is one.
      if (h->codec != Codec::kNone || h->stored_bytes != block_bytes_) {
        status = absl::DataLossError(absl::StrFormat(
            "record header disagrees with the index (codec %d, stored_bytes %d; the index says "
            "an uncompressed record of %d bytes)",
            static_cast<int>(h->codec), h->stored_bytes, block_bytes_));
      } else {
        status = DecodeRecordPayload(*h, dst, payload_got, dst, block_bytes_);
      }
    } else {
      status = DecodeRecordPayload(*h, buf + kRecordHeaderBytes, payload_got, dst, block_bytes_);
    }
  }
  staging_->Return(staging);
  if (!status.ok()) {
    // Never hand back wrong bytes: the destination is zeroed and the record dropped.
    std::memset(dst, 0, block_bytes_);
    MutexLock lock(&mu_);
    regions_.ReadLanded(region);
    ++stats_.checksum_failures;
    Record& r = records_[id];
    if (r.live && r.key == key && r.entry.generation == generation && r.entry.region == region) {
      if (r.indexed) (void)index_->Delete(key, /*sync=*/false);
      DropRecordLocked(id);
    }
    status = absl::DataLossError(
        absl::StrFormat("disk tier: block %s: %s", key.ToHex(), status.message()));
  } else {
    MutexLock lock(&mu_);
    regions_.ReadLanded(region);
    stats_.bytes_read += got;
    if (in_place) ++stats_.reads_in_place;
  }
  read.done(status);
  OpFinished();
}

// ----------------------------------------------------------------------------- waiters

std::vector<DiskTier::PendingRead> DiskTier::TakeWaitersLocked(RecordId id) {
  auto it = waiting_for_write_.find(id);
  if (it == waiting_for_write_.end()) return {};
  std::vector<PendingRead> waiters = std::move(it->second);
  waiting_for_write_.erase(it);
  return waiters;
}

void DiskTier::FailWaitersLocked(RecordId id, const absl::Status& why) {
  std::vector<PendingRead> waiters = TakeWaitersLocked(id);
  if (waiters.empty()) return;
  // Their callbacks must not run on this (a caller's) thread: the encoder thread runs them.
  PostLocked([this, waiters = std::move(waiters), why]() mutable {
    for (PendingRead& w : waiters) {
      if (!ClaimDst(w)) {
        EndAbandonedRead(w);
        continue;
      }
      std::memset(w.dst, 0, block_bytes_);
      w.done(why);
      OpFinished();
    }
  });
}

}  // namespace kvtier
