// tiers/disk_tier.cc — DiskTier: opening and recovery, the record table, the write path
// (Reserve, Submit, the encoder thread, placement and reclaim, the write completion) and
// erase, over the parts it composes (StagingPool, RegionAllocator, DiskIndex). The read path
// is in disk_tier_read.cc.

#include "tiers/disk_tier.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/enum_names.h"
#include "common/log.h"
#include "tiers/disk_directory.h"

namespace kvtier {
namespace {

uint64_t UnixMillis() { return static_cast<uint64_t>(absl::ToUnixMillis(absl::Now())); }

}  // namespace

const char* SyncPolicyName(SyncPolicy policy) {
  switch (policy) {
    case SyncPolicy::kNone:
      return "none";
    case SyncPolicy::kData:
      return "data";
    case SyncPolicy::kFull:
      return "full";
  }
  return "invalid";
}

absl::StatusOr<SyncPolicy> ParseSyncPolicy(absl::string_view name) {
  return ParseEnumName(name, "sync policy",
                       {SyncPolicy::kNone, SyncPolicy::kData, SyncPolicy::kFull}, SyncPolicyName);
}

absl::Status DiskTierOptions::Validate(const Geometry& geometry) const {
  const size_t block_bytes = geometry.block_bytes();
  if (directory.empty()) return absl::InvalidArgumentError("disk tier: directory is empty");
  if (static_cast<int>(codec) >= kNumCodecs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: codec = %d is unknown", static_cast<int>(codec)));
  }
  if (absl::Status s = CheckCodecDType(codec, geometry.dtype); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("disk tier: ", s.message()));
  }
  if (region_bytes == 0 || region_bytes % kRecordAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk tier: region_bytes = %d must be a positive multiple of 4096", region_bytes));
  }
  const size_t largest =
      codec == Codec::kNone ? RecordSize(block_bytes) : MaxRecordSize(block_bytes);
  if (region_bytes < largest) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk tier: region_bytes = %d cannot hold one record of a %d-byte block (%d bytes)",
        region_bytes, block_bytes, largest));
  }
  if (capacity_bytes / region_bytes < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: capacity_bytes = %d holds fewer than 2 regions of %d bytes",
                        capacity_bytes, region_bytes));
  }
  if (zstd_level < 1 || zstd_level > 19) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: zstd_level = %d must be in [1, 19]", zstd_level));
  }
  if (codec_threads > TaskPool::kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk tier: codec_threads = %d exceeds %d (0 picks min(4, hardware threads))",
        codec_threads, TaskPool::kMaxThreads));
  }
  if (queue_depth == 0 || queue_depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: queue_depth = %u must be in [1, 4096]", queue_depth));
  }
  if (staging_buffers < 2 || staging_buffers > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: staging_buffers = %u must be in [2, 4096]", staging_buffers));
  }
  return absl::OkStatus();
}

DiskTier::DiskTier(const DiskTierOptions& options, const Geometry& geometry, DroppedFn dropped)
    : options_(options),
      geometry_(geometry),
      block_bytes_(geometry.block_bytes()),
      max_record_bytes_(options.codec == Codec::kNone ? RecordSize(geometry.block_bytes())
                                                      : MaxRecordSize(geometry.block_bytes())),
      dropped_(std::move(dropped)),
      regions_(options.region_bytes,
               static_cast<uint32_t>(options.capacity_bytes / options.region_bytes)) {}

absl::StatusOr<std::unique_ptr<DiskTier>> DiskTier::Open(const DiskTierOptions& options,
                                                         const Geometry& geometry,
                                                         RecoveredFn recovered, DroppedFn dropped) {
  if (absl::Status s = geometry.Validate(); !s.ok()) return s;
  if (absl::Status s = options.Validate(geometry); !s.ok()) return s;
  std::unique_ptr<DiskTier> tier(new DiskTier(options, geometry, std::move(dropped)));
  if (absl::Status s = tier->Init(recovered); !s.ok()) return s;
  return tier;
}

absl::Status DiskTier::Init(RecoveredFn recovered) {
  const std::string& dir = options_.directory;
  const bool group = options_.group_access;
  absl::StatusOr<DirectoryState> state = PrepareCacheDirectory(dir, group);
  if (!state.ok()) return state.status();
  const uint64_t regions = options_.capacity_bytes / options_.region_bytes;
  Superblock want;
  want.region_bytes = options_.region_bytes;
  want.regions = regions;
  want.record_format = RecordFormatVersion(geometry_);
  // A new cache: the index first (metadata and directory id synced), then the data file, made
  // whole under another name and renamed. A creation cut short at any point leaves either an
  // empty directory or an index that names no block and has no data file: both open as new.
  if (*state != DirectoryState::kCache) {
    if (absl::Status s = RestrictIndexDirectory(dir, group); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<DiskIndex>> index = DiskIndex::Open(
      dir, *state == DirectoryState::kCache ? DiskIndex::Mode::kReadWrite
                                            : DiskIndex::Mode::kCreate);
  if (!index.ok()) {
    if (DiskIndex::IsInUse(index.status())) {
      return absl::FailedPreconditionError(absl::StrCat("disk tier: ", index.status().message()));
    }
    return index.status();
  }
  index_ = std::move(*index);
  if (absl::Status s =
          index_->CheckOrWriteMeta(IndexMeta::For(geometry_, options_.region_bytes, regions));
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> index_id = index_->GetMeta(kDirectoryIdMeta);
  if (!index_id.ok() && !absl::IsNotFound(index_id.status())) return index_id.status();
  if (index_id.ok() && !IsDirectoryId(*index_id)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: the index of '%s' has a malformed directory id '%s' (damaged); %s", dir,
        absl::CHexEscape(*index_id), ResetAdvice(dir)));
  }
  if (*state == DirectoryState::kCache) {
    std::string id;
    absl::StatusOr<int> fd =
        OpenDataFile(dir, want, index_id.ok() ? *index_id : std::string(), group, &id);
    if (!fd.ok()) return fd.status();
    fd_ = *fd;
    if (!index_id.ok()) {
      if (absl::Status s = index_->PutMeta(kDirectoryIdMeta, id); !s.ok()) return s;
    }
  } else {
    if (*state == DirectoryState::kIndexOnly) {
      absl::StatusOr<bool> has_blocks = index_->HasBlocks();
      if (!has_blocks.ok()) return has_blocks.status();
      if (*has_blocks) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "disk tier: '%s' has an index/ that names blocks but no data.kvt: the records are "
            "gone; %s",
            dir, ResetAdvice(dir)));
      }
    }
    if (index_id.ok()) {
      want.directory_id = *index_id;
    } else {
      absl::StatusOr<std::string> id = NewDirectoryId();
      if (!id.ok()) return id.status();
      if (absl::Status s = index_->PutMeta(kDirectoryIdMeta, *id); !s.ok()) return s;
      want.directory_id = *id;
    }
    absl::StatusOr<int> fd = CreateDataFile(dir, want, group);
    if (!fd.ok()) return fd.status();
    fd_ = *fd;
  }

  IoEngine::Options io_options;
  io_options.queue_depth = options_.queue_depth;
  io_options.force_fallback = options_.force_fallback_io;
  absl::StatusOr<std::unique_ptr<IoEngine>> io = IoEngine::Create(io_options);
  if (!io.ok()) return io.status();
  io_ = std::move(*io);
  absl::StatusOr<int> file = io_->RegisterFile(fd_);
  if (!file.ok()) return file.status();
  file_ = *file;
  StagingPool::Options staging;
  staging.buffers = options_.staging_buffers;
  staging.buffer_bytes = max_record_bytes_;
  // Beyond the registered pool, writes borrow plain aligned buffers (I/O on them skips the
  // fixed-buffer path), up to 4x the pool, so a burst of evictions is absorbed, not dropped.
  staging.overflow_buffers = 4 * options_.staging_buffers;
  absl::StatusOr<std::unique_ptr<StagingPool>> pool = StagingPool::Create(staging);
  if (!pool.ok()) return pool.status();
  staging_ = std::move(*pool);
  absl::StatusOr<std::unique_ptr<TaskPool>> codec_pool = TaskPool::Create(
      options_.codec_threads != 0 ? options_.codec_threads : TaskPool::DefaultThreads(4),
      "disk tier: codec_threads");
  if (!codec_pool.ok()) return codec_pool.status();
  codec_pool_ = std::move(*codec_pool);
  const std::pair<void*, size_t> memory = staging_->memory();
  if (absl::Status s = io_->RegisterBuffers({&memory, 1}); !s.ok()) return s;
  if (options_.secure_erase) {
    zeros_bytes_ = std::max<size_t>(max_record_bytes_, size_t{1} << 20);
    absl::StatusOr<void*> zeros = AllocateAligned(zeros_bytes_);
    if (!zeros.ok()) return zeros.status();
    zeros_ = *zeros;
    std::memset(zeros_, 0, zeros_bytes_);
  }

  {
    MutexLock lock(&mu_);
    stats_.capacity_bytes = regions * options_.region_bytes;
    stats_.regions = regions;
    stats_.io_backend = io_->backend();
  }
  if (absl::Status s = Recover(recovered); !s.ok()) return s;
  encoder_ = std::thread([this] { EncoderLoop(); });
  return absl::OkStatus();
}

absl::Status DiskTier::Recover(RecoveredFn recovered) {
  MutexLock lock(&mu_);
  absl::StatusOr<DiskIndex::Recovery> r = index_->Recover(
      options_.region_bytes, regions_.regions(), [&](const BlockKey& key, const IndexEntry& e) {
        mu_.AssertHeld();
        const RecordId id = static_cast<RecordId>(records_.size());
        Record rec;
        rec.key = key;
        rec.ns = e.ns;
        rec.entry = e;
        rec.live = rec.submitted = rec.placed = rec.indexed = true;
        records_.push_back(std::move(rec));
        regions_.RestoreRecord(
            e.region, e.offset - uint64_t{e.region} * options_.region_bytes + e.record_bytes);
        stats_.used_bytes += e.record_bytes;
        ++stats_.records;
        recovered(key, e.ns, id);
      });
  if (!r.ok()) return r.status();
  for (uint32_t region = 0; region < r->generations.size(); ++region) {
    regions_.RestoreGeneration(region, r->generations[region]);
  }
  KVTIER_LOG(kInfo, "disk tier: %s: %d records recovered, %d regions of %d MiB, I/O %s",
             options_.directory, r->recovered, regions_.regions(), options_.region_bytes >> 20,
             io_->backend());
  return absl::OkStatus();
}

DiskTier::~DiskTier() {
  {
    // A reservation never submitted would hold Drain forever: abandon it as Erase would.
    MutexLock lock(&mu_);
    for (RecordId id = 0; id < records_.size(); ++id) {
      Record& r = records_[id];
      if (r.live && !r.submitted && !r.erased) {
        AbandonLocked(
            id, absl::CancelledError(absl::StrFormat(
                    "disk tier: block %s: the tier closed before it was written", r.key.ToHex())));
      }
    }
  }
  Drain();
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  {
    MutexLock lock(&task_mu_);
    tasks_stopping_ = true;
  }
  if (encoder_.joinable()) encoder_.join();
  if (io_ != nullptr) {
    io_->Drain();
    io_.reset();
  }
  codec_pool_.reset();  // idle: every read it verified finished before Drain returned
  index_.reset();
  if (fd_ >= 0) ::close(fd_);
  staging_.reset();
  if (zeros_ != nullptr) FreeAligned(zeros_);
}

void DiskTier::OpFinished() {
  MutexLock lock(&mu_);
  --ops_in_flight_;
}

void DiskTier::Drain() {
  MutexLock lock(&mu_);
  mu_.Await([this] {
    mu_.AssertHeld();
    return ops_in_flight_ == 0;
  });
}

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

// ----------------------------------------------------------------------------- erase, stats

absl::Status DiskTier::Erase(RecordId id, const BlockKey& key) {
  absl::Status s;
  bool zero = false;
  uint32_t region = 0, bytes = 0;
  uint64_t offset = 0;
  {
    MutexLock lock(&mu_);
    if (id >= records_.size() || !records_[id].live || records_[id].key != key) {
      return absl::OkStatus();
    }
    Record& r = records_[id];
    if (!r.submitted) {
      // A reservation: its op ends here and reads waiting for it fail; the id stays taken
      // until Submit (which then reports Cancelled) frees it.
      if (!r.erased) {
        r.erased = true;
        --ops_in_flight_;
        FailWaitersLocked(
            id, absl::NotFoundError(absl::StrFormat(
                    "disk tier: block %s was erased before it was written", key.ToHex())));
      }
      return absl::OkStatus();
    }
    if (!r.indexed) {
      r.erased = true;  // the write finishes (or is skipped) and drops it
      return absl::OkStatus();
    }
    s = index_->Delete(r.key, options_.sync == SyncPolicy::kFull);
    zero = options_.secure_erase && r.placed;
    region = r.entry.region;
    bytes = r.entry.record_bytes;
    offset = r.entry.offset;
    if (zero) {
      regions_.WriteStarted(region);  // keeps the region from reuse until zeroed
      ++ops_in_flight_;
    }
    DropRecordLocked(id);
  }
  if (zero) SubmitZeroWrite(region, offset, bytes);
  return s;
}

void DiskTier::SubmitZeroWrite(uint32_t region, uint64_t offset, uint32_t bytes) {
  auto finish = [this, region](const absl::Status& status) {
    if (!status.ok()) {
      KVTIER_LOG(kError, "disk tier: zeroing an erased record (secure_erase): %s",
                 status.ToString());
    }
    MutexLock lock(&mu_);
    regions_.WriteLanded(region);
    --ops_in_flight_;
  };
  // Records are at most max_record_bytes_ <= zeros_bytes_: one op.
  IoOp op;
  op.kind = IoOp::Kind::kWrite;
  op.file = file_;
  op.offset = offset;
  op.buffer = zeros_;
  op.length = bytes;
  op.done = [finish](absl::StatusOr<size_t> r) { finish(r.ok() ? absl::OkStatus() : r.status()); };
  if (absl::Status s = io_->Submit({&op, 1}); !s.ok()) finish(s);
}

absl::Status DiskTier::ZeroRegionLocked(uint32_t region) {
  const uint64_t begin = uint64_t{region} * options_.region_bytes;
  const uint64_t used = regions_.used_bytes(region);
  for (uint64_t done = 0; done < used;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros_bytes_, used - done));
    const ssize_t w = ::pwrite(fd_, zeros_, n, static_cast<off_t>(begin + done));
    if (w <= 0) {
      return absl::UnavailableError(
          absl::StrFormat("disk tier: zeroing reclaimed region %d at offset %d (secure_erase): %s",
                          region, begin + done, w < 0 ? std::strerror(errno) : "no progress"));
    }
    done += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

uint64_t DiskTier::CreatedUnixMs(RecordId id) {
  MutexLock lock(&mu_);
  return id < records_.size() ? records_[id].entry.created_unix_ms : 0;
}

DiskTierStats DiskTier::Stats() {
  MutexLock lock(&mu_);
  DiskTierStats st = stats_;
  st.free_regions = regions_.free_regions();
  return st;
}

}  // namespace kvtier
