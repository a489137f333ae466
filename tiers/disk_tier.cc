#include "tiers/disk_tier.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/cache.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace kvtier {
namespace {

constexpr char kDataFile[] = "data.kvt";
constexpr char kIndexDir[] = "index";

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const absl::StatusCode code = s.IsNoSpace()      ? absl::StatusCode::kResourceExhausted
                                : s.IsCorruption() ? absl::StatusCode::kDataLoss
                                : s.IsIOError()    ? absl::StatusCode::kUnavailable
                                                   : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat("disk tier index: ", what, ": ", s.ToString()));
}

uint64_t UnixMillis() { return static_cast<uint64_t>(absl::ToUnixMillis(absl::Now())); }

}  // namespace

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
  const size_t largest = codec == Codec::kNone ? RecordSize(block_bytes) : MaxRecordSize(block_bytes);
  if (region_bytes < largest) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk tier: region_bytes = %d cannot hold one record of a %d-byte block (%d bytes)",
        region_bytes, block_bytes, largest));
  }
  if (capacity_bytes / region_bytes < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk tier: capacity_bytes = %d holds fewer than 2 regions of %d bytes", capacity_bytes,
        region_bytes));
  }
  if (zstd_level < 1 || zstd_level > 19) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: zstd_level = %d must be in [1, 19]", zstd_level));
  }
  if (queue_depth == 0 || queue_depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("disk tier: queue_depth = %u must be in [1, 4096]", queue_depth));
  }
  if (staging_buffers < 2 || staging_buffers > 4096) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk tier: staging_buffers = %u must be in [2, 4096]", staging_buffers));
  }
  return absl::OkStatus();
}

DiskTier::DiskTier(const DiskTierOptions& options, const Geometry& geometry, DroppedFn dropped)
    : options_(options),
      geometry_(geometry),
      block_bytes_(geometry.block_bytes()),
      max_record_bytes_(options.codec == Codec::kNone ? RecordSize(geometry.block_bytes())
                                                      : MaxRecordSize(geometry.block_bytes())),
      dropped_(std::move(dropped)) {}

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
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: cannot create cache directory '%s': %s", dir, std::strerror(errno)));
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("disk tier: '%s' is not a directory", dir));
  }
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 2;
  // Bounded memory. The index's live data is small (~100 bytes per record) but it churns
  // (a put and a delete per record written and reclaimed): RocksDB's default 64 MiB
  // memtable made resident memory a 60 MiB sawtooth under sustained load, and index and
  // filter blocks outside the block cache grow with the number of table files. 8 MiB
  // memtables (two at most) and one 8 MiB block cache holding index and filter blocks too.
  db_options.write_buffer_size = 8 << 20;
  db_options.max_write_buffer_number = 2;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(8 << 20);
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* db = nullptr;
  rocksdb::Status rs = rocksdb::DB::Open(db_options, dir + "/" + kIndexDir, &db);
  if (!rs.ok()) {
    if (rs.IsIOError() && rs.ToString().find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "disk tier: cache directory '%s' is in use by another process (%s)", dir,
          rs.ToString()));
    }
    return FromRocks(rs, absl::StrCat("opening ", dir, "/", kIndexDir));
  }
  db_.reset(db);
  if (absl::Status s = CheckOrWriteMeta(); !s.ok()) return s;

  const uint64_t regions = options_.capacity_bytes / options_.region_bytes;
  absl::StatusOr<int> fd =
      OpenPreallocated(dir + "/" + kDataFile, regions * options_.region_bytes);
  if (!fd.ok()) return fd.status();
  fd_ = *fd;

  IoEngine::Options io_options;
  io_options.queue_depth = options_.queue_depth;
  io_options.force_fallback = options_.force_fallback_io;
  absl::StatusOr<std::unique_ptr<IoEngine>> io = IoEngine::Create(io_options);
  if (!io.ok()) return io.status();
  io_ = std::move(*io);
  absl::StatusOr<int> file = io_->RegisterFile(fd_);
  if (!file.ok()) return file.status();
  file_ = *file;
  const size_t staging_bytes = size_t{options_.staging_buffers} * max_record_bytes_;
  absl::StatusOr<void*> staging = AllocateAligned(staging_bytes);
  if (!staging.ok()) return staging.status();
  staging_memory_ = *staging;
  const std::pair<void*, size_t> region{staging_memory_, staging_bytes};
  if (absl::Status s = io_->RegisterBuffers({&region, 1}); !s.ok()) return s;
  if (options_.secure_erase) {
    zeros_bytes_ = std::max<size_t>(max_record_bytes_, size_t{1} << 20);
    absl::StatusOr<void*> zeros = AllocateAligned(zeros_bytes_);
    if (!zeros.ok()) return zeros.status();
    zeros_ = *zeros;
    std::memset(zeros_, 0, zeros_bytes_);
  }

  {
    MutexLock lock(&mu_);
    regions_.resize(regions);
    for (uint32_t i = 0; i < options_.staging_buffers; ++i) free_staging_.push_back(i);
    stats_.capacity_bytes = regions * options_.region_bytes;
    stats_.regions = regions;
    stats_.io_backend = io_->backend();
  }
  if (absl::Status s = Recover(recovered); !s.ok()) return s;
  encoder_ = std::thread([this] { EncoderLoop(); });
  return absl::OkStatus();
}

absl::Status DiskTier::CheckOrWriteMeta() {
  struct Meta {
    const char* name;
    std::string want;
  };
  const Meta metas[] = {
      {"format", absl::StrCat(kRecordFormatVersion)},
      {"geometry", absl::StrFormat("%016x %s", geometry_.Fingerprint(), geometry_.ToString())},
      {"layout", absl::StrFormat("region_bytes=%d regions=%d", options_.region_bytes,
                                 options_.capacity_bytes / options_.region_bytes)},
  };
  std::string format;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), MetaIndexKey("format"), &format);
  if (rs.IsNotFound()) {
    rocksdb::WriteBatch batch;
    for (const Meta& m : metas) batch.Put(MetaIndexKey(m.name), m.want);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return FromRocks(db_->Write(wo, &batch), "writing metadata");
  }
  if (!rs.ok()) return FromRocks(rs, "reading metadata");
  for (const Meta& m : metas) {
    std::string have;
    rs = db_->Get(rocksdb::ReadOptions(), MetaIndexKey(m.name), &have);
    if (!rs.ok()) return FromRocks(rs, absl::StrCat("reading metadata '", m.name, "'"));
    if (have != m.want) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "disk tier: cache directory '%s' has %s '%s' but this engine needs '%s'; it is "
          "refused rather than misread (use another directory, or erase this one)",
          options_.directory, m.name, have, m.want));
    }
  }
  return absl::OkStatus();
}

absl::Status DiskTier::Recover(RecoveredFn recovered) {
  MutexLock lock(&mu_);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  // Region generations first: records of an older generation were overwritten.
  for (it->Seek("r"); it->Valid() && it->key().starts_with("r"); it->Next()) {
    const std::string k = it->key().ToString();
    if (k.size() != 5) continue;
    const uint32_t region = (uint32_t{static_cast<uint8_t>(k[1])} << 24) |
                            (uint32_t{static_cast<uint8_t>(k[2])} << 16) |
                            (uint32_t{static_cast<uint8_t>(k[3])} << 8) | static_cast<uint8_t>(k[4]);
    absl::StatusOr<uint64_t> gen = DecodeU64(it->value().ToString());
    if (region >= regions_.size() || !gen.ok()) continue;
    regions_[region].generation = *gen;
    next_generation_ = std::max(next_generation_, *gen + 1);
  }
  rocksdb::WriteBatch stale;
  size_t recovered_count = 0, stale_count = 0;
  for (it->Seek("b"); it->Valid() && it->key().starts_with("b"); it->Next()) {
    absl::StatusOr<BlockKey> key = ParseBlockIndexKey(it->key().ToString());
    absl::StatusOr<IndexEntry> e = DecodeIndexEntry(it->value().ToString());
    // The record must lie inside its region. Written as differences, never as a sum: an
    // offset near 2^64 would make offset + record_bytes wrap around and pass.
    const uint64_t region_begin = e.ok() ? uint64_t{e->region} * options_.region_bytes : 0;
    const bool valid =
        key.ok() && e.ok() && e->region < regions_.size() && e->offset >= region_begin &&
        e->offset - region_begin <= options_.region_bytes &&
        e->record_bytes <= options_.region_bytes - (e->offset - region_begin) &&
        e->generation == regions_[e->region].generation && e->generation != 0;
    if (!valid) {
      stale.Delete(it->key());
      ++stale_count;
      continue;
    }
    const RecordId id = static_cast<RecordId>(records_.size());
    Record r;
    r.key = *key;
    r.ns = e->ns;
    r.entry = *e;
    r.live = r.placed = r.indexed = true;
    records_.push_back(std::move(r));
    Region& region = regions_[e->region];
    region.free = false;
    ++region.live_records;
    region.write_offset = std::max(
        region.write_offset, e->offset - uint64_t{e->region} * options_.region_bytes + e->record_bytes);
    stats_.used_bytes += e->record_bytes;
    ++stats_.records;
    recovered(*key, e->ns, id);
    ++recovered_count;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scanning the index");
  if (stale_count > 0) {
    KVTIER_LOG(kWarning, "disk tier: dropped %d index entries that point at overwritten or "
               "invalid records", stale_count);
    if (absl::Status s = FromRocks(db_->Write(rocksdb::WriteOptions(), &stale), "dropping stale entries");
        !s.ok()) {
      return s;
    }
  }
  KVTIER_LOG(kInfo, "disk tier: %s: %d records recovered, %d regions of %d MiB, I/O %s",
             options_.directory, recovered_count, regions_.size(), options_.region_bytes >> 20,
             io_->backend());
  return absl::OkStatus();
}

DiskTier::~DiskTier() {
  Drain();
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (encoder_.joinable()) encoder_.join();
  if (io_ != nullptr) {
    io_->Drain();
    io_.reset();
  }
  if (db_ != nullptr) {
    (void)db_->Close();
    db_.reset();
  }
  if (fd_ >= 0) ::close(fd_);
  if (staging_memory_ != nullptr) FreeAligned(staging_memory_);
  if (zeros_ != nullptr) FreeAligned(zeros_);
  for (char* p : overflow_) {
    if (p != nullptr) FreeAligned(p);
  }
}

int DiskTier::TakeStaging() {
  if (free_staging_.empty()) return -1;
  const int i = free_staging_.back();
  free_staging_.pop_back();
  return i;
}

int DiskTier::TakeOverflowStaging() {
  // Beyond the registered pool, writes borrow plain aligned buffers (I/O on them skips the
  // fixed-buffer path), up to 4x the pool, so a burst of evictions is absorbed, not dropped.
  if (overflow_in_use_ >= 4 * options_.staging_buffers) return -1;
  absl::StatusOr<void*> p = AllocateAligned(max_record_bytes_);
  if (!p.ok()) return -1;
  int i;
  if (!free_overflow_ids_.empty()) {
    i = free_overflow_ids_.back();
    free_overflow_ids_.pop_back();
    overflow_[i - options_.staging_buffers] = static_cast<char*>(*p);
  } else {
    i = static_cast<int>(options_.staging_buffers + overflow_.size());
    overflow_.push_back(static_cast<char*>(*p));
  }
  ++overflow_in_use_;
  return i;
}

char* DiskTier::StagingBuffer(int i) {
  if (i < static_cast<int>(options_.staging_buffers)) {
    return static_cast<char*>(staging_memory_) + size_t(i) * max_record_bytes_;
  }
  MutexLock lock(&mu_);
  return overflow_[i - options_.staging_buffers];
}

void DiskTier::ReturnStaging(int i) {
  if (i >= static_cast<int>(options_.staging_buffers)) {
    char* p;
    {
      MutexLock lock(&mu_);
      p = overflow_[i - options_.staging_buffers];
      overflow_[i - options_.staging_buffers] = nullptr;
      free_overflow_ids_.push_back(i);
      --overflow_in_use_;
    }
    FreeAligned(p);
    return;
  }
  PendingRead next;
  {
    MutexLock lock(&mu_);
    if (pending_reads_.empty()) {
      free_staging_.push_back(i);
      return;
    }
    next = std::move(pending_reads_.front());
    pending_reads_.pop_front();
  }
  StartRead(std::move(next), i);
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

// ----------------------------------------------------------------------------- writes

absl::StatusOr<RecordId> DiskTier::Write(const BlockKey& key, const std::string& ns,
                                         const void* src,
                                         absl::AnyInvocable<void(absl::Status)> done) {
  int raw, out;
  RecordId id;
  {
    MutexLock lock(&mu_);
    // A write needs two buffers (the raw copy, then the encoded record): take both now so
    // the encoder never waits for one.
    // Uncompressed records are encoded in place: the block goes straight to its payload
    // position in the record buffer (one copy, one buffer). Compressed ones need the raw
    // copy and a second buffer for the output.
    const bool in_place = options_.codec == Codec::kNone;
    // Back-pressure: when every buffer is busy, wait (a bounded time) for writes in flight
    // to free one rather than refuse at once, which makes the caller drop the block. A fast
    // GPU prefilling a long context evicts faster than a disk writes; refusing at once lost
    // blocks the demo then needed (H100, 2026-11-22). Only the encoder and the I/O thread
    // free buffers, and neither waits for the engine's locks.
    const size_t needed = in_place ? 1 : 2;
    mu_.AwaitWithTimeout(
        [&] {
          mu_.AssertHeld();
          return free_staging_.size() + (4 * options_.staging_buffers - overflow_in_use_) >=
                 needed;
        },
        kStagingWait);
    raw = -1;
    if (!in_place) {
      raw = TakeStaging();
      if (raw < 0) raw = TakeOverflowStaging();
    }
    out = (!in_place && raw < 0) ? -1 : TakeStaging();
    if ((in_place || raw >= 0) && out < 0) out = TakeOverflowStaging();
    if (out < 0) {
      if (raw >= static_cast<int>(options_.staging_buffers)) {
        FreeAligned(overflow_[raw - options_.staging_buffers]);
        overflow_[raw - options_.staging_buffers] = nullptr;
        free_overflow_ids_.push_back(raw);
        --overflow_in_use_;
      } else if (raw >= 0) {
        free_staging_.push_back(raw);
      }
      return absl::ResourceExhaustedError(absl::StrFormat(
          "disk tier: all %u staging buffers and %u overflow buffers are busy",
          options_.staging_buffers, 4 * options_.staging_buffers));
    }
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
    ++ops_in_flight_;
  }
  // The caller may reuse `src` as soon as we return.
  std::memcpy(raw >= 0 ? StagingBuffer(raw) : StagingBuffer(out) + kRecordHeaderBytes, src,
              block_bytes_);
  MutexLock lock(&mu_);
  encode_queue_.push_back(WriteJob{id, key, ns, raw, out, std::move(done)});
  return id;
}

absl::StatusOr<RecordId> DiskTier::Reserve(const BlockKey& key, const std::string& ns) {
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
  r.reserved = true;
  return id;
}

absl::Status DiskTier::Submit(RecordId id, const void* src,
                              absl::AnyInvocable<void(absl::Status)> done) {
  int raw = -1, out = -1;
  BlockKey key;
  std::string ns;
  {
    MutexLock lock(&mu_);
    if (id >= records_.size() || !records_[id].live || !records_[id].reserved) {
      return absl::InvalidArgumentError(
          absl::StrFormat("disk tier: record %u was not reserved", id));
    }
    Record& r = records_[id];
    r.reserved = false;
    key = r.key;
    ns = r.ns;
    if (!r.erased) {
      const bool in_place = options_.codec == Codec::kNone;
      const size_t needed = in_place ? 1 : 2;
      mu_.AwaitWithTimeout(
          [&] {
            mu_.AssertHeld();
            return free_staging_.size() + (4 * options_.staging_buffers - overflow_in_use_) >=
                   needed;
          },
          kStagingWait);
      if (!in_place) {
        raw = TakeStaging();
        if (raw < 0) raw = TakeOverflowStaging();
      }
      out = (!in_place && raw < 0) ? -1 : TakeStaging();
      if ((in_place || raw >= 0) && out < 0) out = TakeOverflowStaging();
    }
    if (r.erased || out < 0) {
      if (raw >= static_cast<int>(options_.staging_buffers)) {
        FreeAligned(overflow_[raw - options_.staging_buffers]);
        overflow_[raw - options_.staging_buffers] = nullptr;
        free_overflow_ids_.push_back(raw);
        --overflow_in_use_;
      } else if (raw >= 0) {
        free_staging_.push_back(raw);
      }
      const bool erased = r.erased;
      DropRecordLocked(id);
      if (!erased) {
        mu_.Unlock();
        ReleaseWaiters(id, false);
        mu_.Lock();
        return absl::ResourceExhaustedError(absl::StrFormat(
            "disk tier: all %u staging buffers and %u overflow buffers are busy",
            options_.staging_buffers, 4 * options_.staging_buffers));
      }
      mu_.Unlock();
      ReleaseWaiters(id, false);
      done(absl::CancelledError("disk tier: block erased before it was written"));
      mu_.Lock();
      return absl::OkStatus();
    }
    ++ops_in_flight_;
  }
  std::memcpy(raw >= 0 ? StagingBuffer(raw) : StagingBuffer(out) + kRecordHeaderBytes, src,
              block_bytes_);
  MutexLock lock(&mu_);
  encode_queue_.push_back(WriteJob{id, key, ns, raw, out, std::move(done)});
  return absl::OkStatus();
}

void DiskTier::EncoderLoop() {
  for (;;) {
    WriteJob job;
    {
      MutexLock lock(&mu_);
      mu_.Await([this] {
        mu_.AssertHeld();
        return !encode_queue_.empty() || stopping_;
      });
      if (encode_queue_.empty()) return;
      job = std::move(encode_queue_.front());
      encode_queue_.pop_front();
    }
    Encode(std::move(job));
  }
}

bool DiskTier::Place(RecordId id, uint32_t bytes,
                     std::vector<std::pair<BlockKey, RecordId>>* dropped) {
  auto fits = [&](int r) {
    mu_.AssertHeld();
    return r >= 0 && regions_[r].write_offset + bytes <= options_.region_bytes;
  };
  if (!fits(active_region_)) {
    int next = -1;
    for (size_t r = 0; r < regions_.size(); ++r) {
      if (regions_[r].free && static_cast<int>(r) != active_region_) {
        next = static_cast<int>(r);
        break;
      }
    }
    if (next < 0) {
      // Reclaim the oldest region that no write is landing in (FIFO, as CacheLib's
      // BlockCache does: regions are reclaimed whole, never compacted).
      uint64_t oldest = UINT64_MAX;
      for (size_t r = 0; r < regions_.size(); ++r) {
        const Region& g = regions_[r];
        if (static_cast<int>(r) == active_region_ || g.writes_in_flight > 0 ||
            g.reads_in_flight > 0) {
          continue;
        }
        if (g.generation < oldest) {
          oldest = g.generation;
          next = static_cast<int>(r);
        }
      }
      if (next < 0) return false;
    }
    if (absl::Status s = ReclaimRegion(static_cast<uint32_t>(next), dropped); !s.ok()) {
      KVTIER_LOG(kError, "%s", s.ToString());
      return false;
    }
    active_region_ = next;
  }
  Region& g = regions_[active_region_];
  Record& r = records_[id];
  r.entry.region = static_cast<uint32_t>(active_region_);
  r.entry.offset = uint64_t(active_region_) * options_.region_bytes + g.write_offset;
  r.entry.record_bytes = bytes;
  r.entry.generation = g.generation;
  r.placed = true;
  g.write_offset += bytes;
  ++g.writes_in_flight;
  ++g.live_records;
  return true;
}

absl::Status DiskTier::ReclaimRegion(uint32_t region,
                                     std::vector<std::pair<BlockKey, RecordId>>* dropped) {
  Region& g = regions_[region];
  const uint64_t generation = next_generation_++;
  // One batch: the region's index entries go and its generation moves on, before any byte of
  // it is overwritten. A crash after this batch loses those blocks, never misreads them.
  rocksdb::WriteBatch batch;
  std::vector<RecordId> victims;
  if (g.live_records > 0) {
    for (RecordId id = 0; id < records_.size(); ++id) {
      const Record& r = records_[id];
      if (r.live && r.placed && r.entry.region == region) {
        if (r.indexed) batch.Delete(BlockIndexKey(r.key));
        victims.push_back(id);
      }
    }
  }
  batch.Put(RegionIndexKey(region), EncodeU64(generation));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync != SyncPolicy::kNone;
  if (absl::Status s = FromRocks(db_->Write(wo, &batch), "reclaiming a region"); !s.ok()) {
    return s;
  }
  for (RecordId id : victims) {
    dropped->push_back({records_[id].key, id});
    DropRecordLocked(id);
    ++stats_.records_dropped;
  }
  if (!victims.empty() || g.write_offset > 0) ++stats_.regions_reclaimed;
  if (options_.secure_erase) {
    // The index no longer points into the region; now its old bytes go, before any new
    // record is placed there. On failure the region stays out of use (not active).
    if (absl::Status s = ZeroRegionLocked(region); !s.ok()) return s;
  }
  g.generation = generation;
  g.write_offset = 0;
  g.live_records = 0;
  g.free = false;
  return absl::OkStatus();
}

void DiskTier::DropRecordLocked(RecordId id) {
  Record& r = records_[id];
  if (!r.live) return;
  if (r.placed) {
    Region& g = regions_[r.entry.region];
    if (g.live_records > 0) --g.live_records;
    if (r.indexed) {
      stats_.used_bytes -= r.entry.record_bytes;
      --stats_.records;
    }
    if (g.idle() && static_cast<int>(r.entry.region) != active_region_) g.free = true;
  }
  r = Record{};
  free_ids_.push_back(id);
}

void DiskTier::Encode(WriteJob job) {
  char* raw = job.staging >= 0 ? StagingBuffer(job.staging)
                               : StagingBuffer(job.out) + kRecordHeaderBytes;
  std::vector<std::pair<BlockKey, RecordId>> dropped;
  const int out = job.out;
  RecordHeader header;
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
          if (!erased) placed = Place(job.id, static_cast<uint32_t>(max_record_bytes_), &dropped);
          return erased || placed || stopping_;
        },
        kStagingWait);
    if (!erased) {
      if (placed) {
        const IndexEntry& e = records_[job.id].entry;
        header.region = e.region;
        header.generation = e.generation;
      }
    }
  }
  if (!dropped.empty() && dropped_) dropped_(std::move(dropped));
  absl::Status failure;
  if (erased) {
    failure = absl::CancelledError("disk tier: block erased before it was written");
  } else if (!placed) {
    failure = absl::ResourceExhaustedError(
        "disk tier: no region can take the record (every region has writes or reads in flight)");
  }
  size_t size = 0;
  if (failure.ok()) {
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
    absl::StatusOr<size_t> n =
        EncodeRecord(header, raw, block_bytes_,
                     eo, StagingBuffer(out),
                     max_record_bytes_, &written);
    if (!n.ok()) {
      failure = n.status();
    } else {
      size = *n;
      MutexLock lock(&mu_);
      Record& r = records_[job.id];
      Region& g = regions_[r.entry.region];
      // The encoder places records one at a time, so this one is last in its region: give
      // back what compression saved.
      if (r.entry.offset + r.entry.record_bytes ==
          uint64_t(r.entry.region) * options_.region_bytes + g.write_offset) {
        g.write_offset -= r.entry.record_bytes - size;
        r.entry.record_bytes = static_cast<uint32_t>(size);
      }
      r.entry.codec = written.codec;
      r.entry.stored_bytes = written.stored_bytes;
      r.entry.payload_checksum = written.payload_checksum;
      r.entry.created_unix_ms = written.created_unix_ms;
      r.entry.ns = job.ns;
      stats_.raw_bytes_written += block_bytes_;
    }
  }
  if (job.staging >= 0) ReturnStaging(job.staging);
  job.staging = -1;
  if (!failure.ok()) {
    {
      MutexLock lock(&mu_);
      Record& r = records_[job.id];
      if (r.placed) --regions_[r.entry.region].writes_in_flight;
      DropRecordLocked(job.id);
      if (failure.code() != absl::StatusCode::kCancelled) ++stats_.writes_failed;
    }
    ReturnStaging(out);
    ReleaseWaiters(job.id, false);
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
  op.buffer = StagingBuffer(out);
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
  ReturnStaging(encoded_staging);
  struct Range {
    uint32_t region;
    uint64_t offset;
    uint32_t bytes;
  };
  std::optional<Range> zero;
  if (status.ok() && options_.sync != SyncPolicy::kNone && ::fdatasync(fd_) != 0) {
    status = absl::UnavailableError(
        absl::StrFormat("disk tier: fdatasync of the data file: %s", std::strerror(errno)));
  }
  {
    MutexLock lock(&mu_);
    Record& r = records_[job.id];
    --regions_[r.entry.region].writes_in_flight;
    if (status.ok() && !r.erased) {
      // Data first, index second: the bytes are written, now the entry may point at them.
      rocksdb::WriteOptions wo;
      wo.sync = options_.sync == SyncPolicy::kFull;
      status = FromRocks(db_->Put(wo, BlockIndexKey(r.key), EncodeIndexEntry(r.entry)),
                         "writing an index entry");
    }
    if (status.ok() && !r.erased) {
      r.indexed = true;
      stats_.used_bytes += r.entry.record_bytes;
      ++stats_.records;
      stats_.bytes_written += r.entry.record_bytes;
    } else {
      if (!status.ok()) {
        ++stats_.writes_failed;
        status = absl::Status(status.code(),
                              absl::StrFormat("disk tier: writing block %s: %s", job.key.ToHex(),
                                              status.message()));
      } else {
        status = absl::CancelledError("disk tier: block erased while it was written");
      }
      if (options_.secure_erase && r.placed) {
        // The bytes (or part of them) reached the file: they go too.
        zero = {r.entry.region, r.entry.offset, r.entry.record_bytes};
        ++regions_[r.entry.region].writes_in_flight;
        ++ops_in_flight_;
      }
      DropRecordLocked(job.id);
    }
  }
  if (zero) SubmitZeroWrite(zero->region, zero->offset, zero->bytes);
  ReleaseWaiters(job.id, status.ok());
  job.done(status);
  OpFinished();
}

// ----------------------------------------------------------------------------- reads

absl::Status DiskTier::Read(RecordId id, const BlockKey& key, const std::string& ns, void* dst,
                            absl::AnyInvocable<void(absl::Status)> done) {
  // Never runs `done` on the caller's thread (the caller may hold locks the callback takes):
  // problems found here are returned; everything later is reported on the I/O thread.
  IoOp op;
  uint64_t generation;
  uint32_t region;
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
      // Its write is still in flight (the block was demoted a moment ago): read once it lands.
      waiting_for_write_[id].push_back(PendingRead{id, key, ns, dst, std::move(done)});
      return absl::OkStatus();
    }
    staging = TakeStaging();
    if (staging < 0) {
      pending_reads_.push_back(PendingRead{id, key, ns, dst, std::move(done)});
      return absl::OkStatus();
    }
    // The location is taken now; if the region is reclaimed before the read lands, the header
    // check on the I/O thread turns it into DataLoss.
    const IndexEntry& e = records_[id].entry;
    op.offset = e.offset;
    op.length = e.record_bytes;
    generation = e.generation;
    region = e.region;
    ++regions_[region].reads_in_flight;
  }
  op.kind = IoOp::Kind::kRead;
  op.file = file_;
  op.buffer = StagingBuffer(staging);
  auto shared = std::make_shared<PendingRead>(PendingRead{id, key, ns, dst, std::move(done)});
  op.done = [this, shared, staging, generation, region](absl::StatusOr<size_t> r) mutable {
    FinishRead(shared->id, shared->key, shared->ns, shared->dst, staging, generation, region,
               std::move(r), std::move(shared->done));
  };
  if (absl::Status s = io_->Submit({&op, 1}); !s.ok()) {
    MutexLock lock(&mu_);
    free_staging_.push_back(staging);  // not ReturnStaging: that may start other reads here
    ReadLandedLocked(region);
    --ops_in_flight_;
    return s;
  }
  return absl::OkStatus();
}

// Runs on the tier's own threads only (it may call `done` directly).
void DiskTier::StartRead(PendingRead read, int staging) {
  IoOp op;
  uint64_t generation = 0;
  uint32_t region = 0;
  bool found;
  {
    MutexLock lock(&mu_);
    const Record& r = records_[read.id];
    // The record may have been dropped (region reclaimed) while the read queued.
    found = r.live && r.indexed && r.key == read.key;
    if (found) {
      op.offset = r.entry.offset;
      op.length = r.entry.record_bytes;
      generation = r.entry.generation;
      region = r.entry.region;
      ++regions_[region].reads_in_flight;
    }
  }
  if (!found) {
    std::memset(read.dst, 0, block_bytes_);
    ReturnStaging(staging);
    read.done(absl::NotFoundError(absl::StrFormat(
        "disk tier: block %s was dropped before it could be read", read.key.ToHex())));
    OpFinished();
    return;
  }
  op.kind = IoOp::Kind::kRead;
  op.file = file_;
  op.buffer = StagingBuffer(staging);
  auto shared = std::make_shared<PendingRead>(std::move(read));
  op.done = [this, shared, staging, generation, region](absl::StatusOr<size_t> r) mutable {
    FinishRead(shared->id, shared->key, shared->ns, shared->dst, staging, generation, region,
               std::move(r), std::move(shared->done));
  };
  if (absl::Status s = io_->Submit({&op, 1}); !s.ok()) {
    FinishRead(shared->id, shared->key, shared->ns, shared->dst, staging, generation, region, s,
               std::move(shared->done));
  }
}

void DiskTier::ReleaseWaiters(RecordId id, bool written) {
  std::vector<PendingRead> waiters;
  {
    MutexLock lock(&mu_);
    auto it = waiting_for_write_.find(id);
    if (it == waiting_for_write_.end()) return;
    waiters = std::move(it->second);
    waiting_for_write_.erase(it);
  }
  for (PendingRead& w : waiters) {
    if (!written) {
      std::memset(w.dst, 0, block_bytes_);
      w.done(absl::NotFoundError(absl::StrFormat(
          "disk tier: block %s was never written (its write failed)", w.key.ToHex())));
      OpFinished();
      continue;
    }
    int staging;
    {
      MutexLock lock(&mu_);
      staging = TakeStaging();
      if (staging < 0) {
        pending_reads_.push_back(std::move(w));
        continue;
      }
    }
    StartRead(std::move(w), staging);
  }
}

void DiskTier::ReadLandedLocked(uint32_t region) {
  Region& g = regions_[region];
  --g.reads_in_flight;
  if (g.idle() && static_cast<int>(region) != active_region_) g.free = true;
}

void DiskTier::FinishRead(RecordId id, BlockKey key, std::string ns, void* dst, int staging,
                          uint64_t generation, uint32_t region, absl::StatusOr<size_t> io_result,
                          absl::AnyInvocable<void(absl::Status)> done) {
  const char* buf = StagingBuffer(staging);
  absl::Status status = io_result.status();
  size_t got = io_result.ok() ? *io_result : 0;
  if (status.ok()) {
    absl::StatusOr<RecordHeader> h = ParseRecordHeader(buf, got);
    if (!h.ok()) {
      status = h.status();
    } else if (h->key != key || h->ns != ns ||
               h->geometry_fingerprint != geometry_.Fingerprint() || h->region != region ||
               h->generation != generation || h->raw_bytes != block_bytes_) {
      status = absl::DataLossError(absl::StrFormat(
          "record header disagrees with the index (key %s ns '%s' region %u generation %d; "
          "header says key %s ns '%s' region %u generation %d)",
          key.ToHex(), ns, region, generation, h->key.ToHex(), h->ns, h->region, h->generation));
    } else {
      status = DecodeRecordPayload(*h, buf + kRecordHeaderBytes,
                                   got > kRecordHeaderBytes ? got - kRecordHeaderBytes : 0, dst,
                                   block_bytes_);
    }
  }
  ReturnStaging(staging);
  if (!status.ok()) {
    // Never hand back wrong bytes: the destination is zeroed and the record dropped.
    std::memset(dst, 0, block_bytes_);
    MutexLock lock(&mu_);
    ReadLandedLocked(region);
    ++stats_.checksum_failures;
    Record& r = records_[id];
    if (r.live && r.key == key && r.entry.generation == generation && r.entry.region == region) {
      if (r.indexed) (void)db_->Delete(rocksdb::WriteOptions(), BlockIndexKey(key));
      DropRecordLocked(id);
    }
    status = absl::DataLossError(absl::StrFormat("disk tier: block %s: %s", key.ToHex(),
                                                 status.message()));
  } else {
    MutexLock lock(&mu_);
    ReadLandedLocked(region);
    stats_.bytes_read += got;
  }
  done(status);
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
    if (!r.indexed) {
      r.erased = true;  // the write finishes (or is skipped) and drops it
      return absl::OkStatus();
    }
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync == SyncPolicy::kFull;
    s = FromRocks(db_->Delete(wo, BlockIndexKey(r.key)), "erasing an entry");
    zero = options_.secure_erase && r.placed;
    region = r.entry.region;
    bytes = r.entry.record_bytes;
    offset = r.entry.offset;
    if (zero) {
      ++regions_[region].writes_in_flight;  // keeps the region from reuse until zeroed
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
    Region& g = regions_[region];
    --g.writes_in_flight;
    if (g.idle() && static_cast<int>(region) != active_region_) g.free = true;
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
  const uint64_t used = regions_[region].write_offset;
  for (uint64_t done = 0; done < used;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros_bytes_, used - done));
    const ssize_t w = ::pwrite(fd_, zeros_, n, static_cast<off_t>(begin + done));
    if (w <= 0) {
      return absl::UnavailableError(absl::StrFormat(
          "disk tier: zeroing reclaimed region %d at offset %d (secure_erase): %s", region,
          begin + done, w < 0 ? std::strerror(errno) : "no progress"));
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
  st.free_regions = 0;
  for (const Region& r : regions_) st.free_regions += r.free ? 1 : 0;
  return st;
}

}  // namespace kvtier
