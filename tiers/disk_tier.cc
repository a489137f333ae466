// tiers/disk_tier.cc — DiskTier: options, opening and recovery, closing and draining, erase
// and stats, over the parts it composes (StagingPool, RegionAllocator, DiskIndex). The write
// path is in disk_tier_write.cc, the read path in disk_tier_read.cc.

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
namespace {}  // namespace

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
  absl::StatusOr<std::unique_ptr<DiskIndex>> index =
      DiskIndex::Open(dir, *state == DirectoryState::kCache ? DiskIndex::Mode::kReadWrite
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

  HugePageSetting huge_pages;
  {
    MutexLock lock(&mu_);
    stats_.capacity_bytes = regions * options_.region_bytes;
    stats_.regions = regions;
    stats_.io_backend = io_->backend();
    stats_.staging_bytes = memory.second;
    stats_.staging_huge_page_bytes = staging_->HugePageBytes();
    // In place only where destinations are in huge pages (DiskTierOptions::read_in_place).
    stats_.huge_pages = ReadHugePageSetting(options_.hugepage_setting_path);
    read_in_place_ = options_.read_in_place && (stats_.huge_pages == HugePageSetting::kAlways ||
                                                stats_.huge_pages == HugePageSetting::kMadvise);
    stats_.read_in_place = read_in_place_;
    huge_pages = stats_.huge_pages;
  }
  if (options_.read_in_place && !read_in_place_) {
    KVTIER_LOG_ONCE(kInfo,
                    "disk tier: transparent huge pages are '%s' here (%s): reads go through "
                    "staging buffers (in place, each read would pin every 4 KiB page of its "
                    "destination)",
                    HugePageSettingName(huge_pages), options_.hugepage_setting_path);
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
  KVTIER_LOG(kInfo,
             "disk tier: %s: %d records recovered, %d regions of %d MiB, I/O %s, staging %.1f MiB "
             "(%.1f MiB in huge pages), reads %s",
             options_.directory, r->recovered, regions_.regions(), options_.region_bytes >> 20,
             io_->backend(), stats_.staging_bytes / 1048576.0,
             stats_.staging_huge_page_bytes / 1048576.0,
             read_in_place_ ? "in place" : "through staging");
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
