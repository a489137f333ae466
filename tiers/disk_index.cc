#include "tiers/disk_index.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace kvtier {
namespace {

constexpr uint8_t kEntryVersion = 1;

void PutBe64(std::string* s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

class Writer {
 public:
  void U8(uint8_t v) { s_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(absl::string_view b) { s_.append(b.data(), b.size()); }
  std::string Take() { return std::move(s_); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s_.push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string s_;
};

class Reader {
 public:
  explicit Reader(absl::string_view s) : s_(s) {}
  bool U8(uint8_t* v) { return Le(v, 1); }
  bool U16(uint16_t* v) { return Le(v, 2); }
  bool U32(uint32_t* v) { return Le(v, 4); }
  bool U64(uint64_t* v) { return Le(v, 8); }
  bool Bytes(size_t n, std::string* out) {
    if (s_.size() - pos_ < n) return false;
    out->assign(s_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == s_.size(); }

 private:
  template <typename T>
  bool Le(T* v, int n) {
    if (s_.size() - pos_ < static_cast<size_t>(n)) return false;
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; --i) x = (x << 8) | static_cast<uint8_t>(s_[pos_ + i]);
    *v = static_cast<T>(x);
    pos_ += n;
    return true;
  }
  absl::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

std::string BlockIndexKey(const BlockKey& key) {
  std::string s = "b";
  PutBe64(&s, key.hi);
  PutBe64(&s, key.lo);
  return s;
}

absl::StatusOr<BlockKey> ParseBlockIndexKey(absl::string_view k) {
  if (k.size() != 17 || k[0] != 'b') {
    return absl::DataLossError(
        absl::StrFormat("index key of %d bytes is not a block key", k.size()));
  }
  return BlockKey{GetBe64(k.data() + 1), GetBe64(k.data() + 9)};
}

std::string RegionIndexKey(uint32_t region) {
  std::string s = "r";
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>(region >> (8 * i)));
  return s;
}

absl::StatusOr<uint32_t> ParseRegionIndexKey(absl::string_view k) {
  if (k.size() != 5 || k[0] != 'r') {
    return absl::DataLossError(
        absl::StrFormat("index key of %d bytes is not a region key", k.size()));
  }
  uint32_t region = 0;
  for (int i = 1; i < 5; ++i) region = (region << 8) | static_cast<uint8_t>(k[i]);
  return region;
}

std::string MetaIndexKey(absl::string_view name) { return absl::StrCat("m", name); }

std::string EncodeIndexEntry(const IndexEntry& e) {
  Writer w;
  w.U8(kEntryVersion);
  w.U32(e.region);
  w.U64(e.offset);
  w.U32(e.record_bytes);
  w.U64(e.generation);
  w.U8(static_cast<uint8_t>(e.codec));
  w.U32(e.stored_bytes);
  w.U64(e.payload_checksum);
  w.U64(e.created_unix_ms);
  w.U16(static_cast<uint16_t>(e.ns.size()));
  w.Bytes(e.ns);
  return w.Take();
}

absl::StatusOr<IndexEntry> DecodeIndexEntry(absl::string_view value) {
  Reader r(value);
  IndexEntry e;
  uint8_t version = 0, codec = 0;
  uint16_t ns_len = 0;
  auto bad = [&](const char* field) {
    return absl::DataLossError(absl::StrFormat(
        "index entry (%d bytes): field '%s' is truncated or invalid", value.size(), field));
  };
  if (!r.U8(&version)) return bad("version");
  if (version != kEntryVersion) {
    return absl::DataLossError(absl::StrFormat(
        "index entry version %d is not supported (expected %d)", version, kEntryVersion));
  }
  if (!r.U32(&e.region)) return bad("region");
  if (!r.U64(&e.offset)) return bad("offset");
  if (e.offset % kRecordAlignment != 0) return bad("offset");
  if (!r.U32(&e.record_bytes)) return bad("record_bytes");
  if (e.record_bytes < kRecordHeaderBytes || e.record_bytes % kRecordAlignment != 0) {
    return bad("record_bytes");
  }
  if (!r.U64(&e.generation)) return bad("generation");
  if (!r.U8(&codec) || codec >= kNumCodecs) return bad("codec");
  e.codec = static_cast<Codec>(codec);
  if (!r.U32(&e.stored_bytes)) return bad("stored_bytes");
  if (RecordSize(e.stored_bytes) != e.record_bytes) return bad("stored_bytes");
  if (!r.U64(&e.payload_checksum)) return bad("payload_checksum");
  if (!r.U64(&e.created_unix_ms)) return bad("created_unix_ms");
  if (!r.U16(&ns_len) || ns_len == 0 || ns_len > 128) return bad("ns length");
  if (!r.Bytes(ns_len, &e.ns)) return bad("ns");
  if (!r.done()) return bad("trailing bytes");
  return e;
}

std::string EncodeU64(uint64_t v) {
  Writer w;
  w.U64(v);
  return w.Take();
}

absl::StatusOr<uint64_t> DecodeU64(absl::string_view value) {
  Reader r(value);
  uint64_t v = 0;
  if (!r.U64(&v) || !r.done()) {
    return absl::DataLossError(
        absl::StrFormat("expected an 8-byte integer, got %d bytes", value.size()));
  }
  return v;
}

// ------------------------------------------------------------------------------ metadata

std::string FormatGeometryMeta(const Geometry& geometry) {
  return absl::StrFormat("%016x %s", geometry.Fingerprint(), geometry.ToString());
}

absl::StatusOr<Geometry> ParseGeometryMeta(const std::string& text, uint64_t* fingerprint) {
  // "<16 hex> layers=%u kv_heads=%u head_dim=%u dtype=%s block_tokens=%u
  //  [kind=%s rope_dim=%u] [kv_head_begin=%u total_kv_heads=%u] (%u B/block)"
  const auto bad = [&text] {
    return absl::InvalidArgumentError(absl::StrFormat("malformed geometry metadata '%s'", text));
  };
  std::vector<std::string> words = absl::StrSplit(text, ' ', absl::SkipEmpty());
  if (words.size() < 6 || words[0].size() != 16) return bad();
  uint64_t fp = 0;
  if (!absl::SimpleHexAtoi(words[0], &fp)) return bad();
  Geometry g;
  struct Field {
    const char* name;
    uint32_t* value;
    bool required;
    bool seen;
  };
  Field fields[] = {{"layers", &g.num_layers, true, false},
                    {"kv_heads", &g.num_kv_heads, true, false},
                    {"head_dim", &g.head_dim, true, false},
                    {"block_tokens", &g.block_tokens, true, false},
                    {"rope_dim", &g.rope_dim, false, false},
                    {"kv_head_begin", &g.kv_head_begin, false, false},
                    {"total_kv_heads", &g.total_kv_heads, false, false}};
  bool seen_dtype = false, seen_kind = false;
  for (size_t i = 1; i < words.size(); ++i) {
    const size_t eq = words[i].find('=');
    if (eq == std::string::npos) continue;  // the "(N B/block)" tail
    const std::string name = words[i].substr(0, eq), value = words[i].substr(eq + 1);
    Field* field = nullptr;
    for (Field& f : fields) {
      if (name == f.name) field = &f;
    }
    if (field != nullptr) {
      if (field->seen || !absl::SimpleAtoi(value, field->value)) return bad();
      field->seen = true;
    } else if (name == "dtype") {
      absl::StatusOr<DType> d = ParseDType(value);
      if (seen_dtype || !d.ok()) return bad();
      g.dtype = *d;
      seen_dtype = true;
    } else if (name == "kind") {
      absl::StatusOr<KvKind> k = ParseKvKind(value);
      if (seen_kind || !k.ok()) return bad();
      g.kind = *k;
      seen_kind = true;
    } else {
      return bad();
    }
  }
  for (const Field& f : fields) {
    if (f.required && !f.seen) return bad();
  }
  if (!seen_dtype) return bad();
  if (!g.Validate().ok()) return bad();
  if (g.Fingerprint() != fp) {
    return absl::InvalidArgumentError(
        absl::StrFormat("geometry metadata '%s': fingerprint does not match the fields", text));
  }
  *fingerprint = fp;
  return g;
}

std::string FormatLayoutMeta(uint64_t region_bytes, uint64_t regions) {
  return absl::StrFormat("region_bytes=%d regions=%d", region_bytes, regions);
}

absl::Status ParseLayoutMeta(const std::string& text, uint64_t* region_bytes, uint64_t* regions) {
  const std::vector<absl::string_view> words = absl::StrSplit(text, ' ');
  uint64_t rb = 0, n = 0;
  if (words.size() != 2 || !absl::StartsWith(words[0], "region_bytes=") ||
      !absl::StartsWith(words[1], "regions=") || !absl::SimpleAtoi(words[0].substr(13), &rb) ||
      !absl::SimpleAtoi(words[1].substr(8), &n) || rb == 0 || rb % kRecordAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("malformed layout metadata '%s'", text));
  }
  *region_bytes = rb;
  *regions = n;
  return absl::OkStatus();
}

IndexMeta IndexMeta::For(const Geometry& geometry, uint64_t region_bytes, uint64_t regions) {
  return IndexMeta{absl::StrCat(RecordFormatVersion(geometry)), FormatGeometryMeta(geometry),
                   FormatLayoutMeta(region_bytes, regions)};
}

// ------------------------------------------------------------------------------ placement

absl::Status CheckPlacement(const IndexEntry& e, uint64_t region_bytes,
                            absl::Span<const uint64_t> generations) {
  if (e.region >= generations.size()) {
    return absl::OutOfRangeError(absl::StrFormat("region %u is outside the layout (%d regions)",
                                                 e.region, generations.size()));
  }
  // Written as differences, never as a sum: an offset near 2^64 would make
  // offset + record_bytes wrap around and pass.
  const uint64_t start = uint64_t{e.region} * region_bytes;
  if (e.offset < start || e.offset - start > region_bytes ||
      e.record_bytes > region_bytes - (e.offset - start)) {
    return absl::OutOfRangeError(
        absl::StrFormat("record of %d bytes at offset %d is not inside "
                        "region %u [%d, %d)",
                        e.record_bytes, e.offset, e.region, start, start + region_bytes));
  }
  if (e.generation == 0 || e.generation != generations[e.region]) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "orphan: written in generation %d of region %u, which is now at generation %d "
        "(the region was reclaimed)",
        e.generation, e.region, generations[e.region]));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------ DiskIndex

namespace {

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const absl::StatusCode code = s.IsNoSpace()      ? absl::StatusCode::kResourceExhausted
                                : s.IsCorruption() ? absl::StatusCode::kDataLoss
                                : s.IsIOError()    ? absl::StatusCode::kUnavailable
                                                   : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat("disk tier index: ", what, ": ", s.ToString()));
}

constexpr absl::string_view kInUse = "in use by another process";

rocksdb::WriteOptions Sync(bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return wo;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DiskIndex>> DiskIndex::Open(const std::string& cache_dir,
                                                           Mode mode) {
  rocksdb::Options options;
  options.create_if_missing = mode == Mode::kCreate;
  options.max_background_jobs = 2;
  options.keep_log_file_num = 2;
  // Bounded memory. The index's live data is small (~100 bytes per record) but it churns
  // (a put and a delete per record written and reclaimed): RocksDB's default 64 MiB
  // memtable made resident memory a 60 MiB sawtooth under sustained load, and index and
  // filter blocks outside the block cache grow with the number of table files. 8 MiB
  // memtables (two at most) and one 8 MiB block cache holding index and filter blocks too.
  options.write_buffer_size = 8 << 20;
  options.max_write_buffer_number = 2;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(8 << 20);
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  const std::string path = absl::StrCat(cache_dir, "/", kIndexDirName);
  rocksdb::DB* db = nullptr;
  const rocksdb::Status rs = mode == Mode::kReadOnly
                                 ? rocksdb::DB::OpenForReadOnly(options, path, &db)
                                 : rocksdb::DB::Open(options, path, &db);
  if (!rs.ok()) {
    // RocksDB reports a held LOCK file as an IOError mentioning the lock.
    if (rs.IsIOError() && rs.ToString().find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "cache directory '%s' is %s (RocksDB: %s)", cache_dir, kInUse, rs.ToString()));
    }
    return FromRocks(rs, absl::StrCat("opening ", path));
  }
  std::unique_ptr<DiskIndex> index(new DiskIndex(cache_dir, mode));
  index->db_.reset(db);
  return index;
}

DiskIndex::DiskIndex(std::string cache_dir, Mode mode)
    : cache_dir_(std::move(cache_dir)), mode_(mode) {}

bool DiskIndex::IsInUse(const absl::Status& open_error) {
  return absl::IsFailedPrecondition(open_error) &&
         open_error.message().find(kInUse) != absl::string_view::npos;
}

DiskIndex::~DiskIndex() {
  if (db_ != nullptr) (void)db_->Close();
}

absl::Status DiskIndex::CheckWritable(absl::string_view op) const {
  if (mode_ != Mode::kReadOnly) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrFormat("disk tier index: %s on an index opened read-only", op));
}

absl::StatusOr<std::string> DiskIndex::GetMeta(absl::string_view name) {
  std::string value;
  const rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), MetaIndexKey(name), &value);
  if (rs.IsNotFound()) {
    return absl::NotFoundError(absl::StrFormat("the index has no '%s' metadata", name));
  }
  if (!rs.ok()) return FromRocks(rs, absl::StrCat("reading metadata '", name, "'"));
  return value;
}

absl::StatusOr<bool> DiskIndex::HasBlocks() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->Seek("b");
  const bool any = it->Valid() && it->key().starts_with("b");
  if (!it->status().ok()) return FromRocks(it->status(), "scanning for block entries");
  return any;
}

absl::Status DiskIndex::PutMeta(absl::string_view name, absl::string_view value) {
  if (absl::Status s = CheckWritable("writing metadata"); !s.ok()) return s;
  return FromRocks(db_->Put(Sync(true), MetaIndexKey(name), rocksdb::Slice(value.data(), value.size())),
                   absl::StrCat("writing metadata '", name, "'"));
}

absl::Status DiskIndex::CheckOrWriteMeta(const IndexMeta& want) {
  struct Field {
    const char* name;
    const std::string* want;
  };
  // The geometry first: a directory of another kind (mla, kv) or shard has another format
  // version too, and the geometry is the mismatch that names what each side is.
  const Field fields[] = {
      {"geometry", &want.geometry}, {"format", &want.format}, {"layout", &want.layout}};
  absl::StatusOr<std::string> format = GetMeta("format");
  if (absl::IsNotFound(format.status())) {
    if (absl::Status s = CheckWritable("writing metadata"); !s.ok()) return s;
    rocksdb::WriteBatch batch;
    for (const Field& f : fields) batch.Put(MetaIndexKey(f.name), *f.want);
    return FromRocks(db_->Write(Sync(true), &batch), "writing metadata");
  }
  if (!format.ok()) return format.status();
  for (const Field& f : fields) {
    absl::StatusOr<std::string> have = GetMeta(f.name);
    if (!have.ok()) {
      // A 'format' without the others: not a directory this code wrote.
      return absl::Status(
          absl::IsNotFound(have.status()) ? absl::StatusCode::kInternal : have.status().code(),
          absl::StrCat("disk tier index: reading metadata '", f.name,
                       "': ", have.status().message()));
    }
    if (*have != *f.want) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "disk tier: cache directory '%s' has %s '%s' but this engine needs '%s'; it is "
          "refused rather than misread (use another directory, or erase this one)",
          cache_dir_, f.name, *have, *f.want));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> DiskIndex::RegionGenerations(uint64_t regions,
                                                                   size_t* malformed) {
  std::vector<uint64_t> generations(regions, 0);
  *malformed = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("r"); it->Valid() && it->key().starts_with("r"); it->Next()) {
    const absl::StatusOr<uint32_t> region =
        ParseRegionIndexKey(absl::string_view(it->key().data(), it->key().size()));
    const absl::StatusOr<uint64_t> generation =
        DecodeU64(absl::string_view(it->value().data(), it->value().size()));
    if (!region.ok() || *region >= generations.size() || !generation.ok()) {
      ++*malformed;
      continue;
    }
    generations[*region] = *generation;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scanning region generations");
  return generations;
}

absl::Status DiskIndex::ForEachBlock(absl::FunctionRef<void(const IndexedBlock&)> fn) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("b"); it->Valid() && it->key().starts_with("b"); it->Next()) {
    IndexedBlock b;
    b.index_key = it->key().ToString();
    b.key = ParseBlockIndexKey(b.index_key);
    b.entry = DecodeIndexEntry(absl::string_view(it->value().data(), it->value().size()));
    fn(b);
  }
  return FromRocks(it->status(), "scanning the index");
}

absl::StatusOr<DiskIndex::Recovery> DiskIndex::Recover(
    uint64_t region_bytes, uint64_t regions,
    absl::FunctionRef<void(const BlockKey&, const IndexEntry&)> fn) {
  if (absl::Status s = CheckWritable("recovery"); !s.ok()) return s;
  Recovery r;
  size_t malformed_regions = 0;
  // Region generations first: records of an older generation were overwritten.
  absl::StatusOr<std::vector<uint64_t>> generations =
      RegionGenerations(regions, &malformed_regions);
  if (!generations.ok()) return generations.status();
  r.generations = std::move(*generations);
  rocksdb::WriteBatch stale;
  absl::Status scan = ForEachBlock([&](const IndexedBlock& b) {
    if (!b.key.ok() || !b.entry.ok() ||
        !CheckPlacement(*b.entry, region_bytes, r.generations).ok()) {
      stale.Delete(b.index_key);
      ++r.dropped;
      return;
    }
    fn(*b.key, *b.entry);
    ++r.recovered;
  });
  if (!scan.ok()) return scan;
  if (r.dropped > 0) {
    KVTIER_LOG(kWarning,
               "disk tier: dropped %d index entries that point at overwritten or "
               "invalid records",
               r.dropped);
    if (absl::Status s =
            FromRocks(db_->Write(rocksdb::WriteOptions(), &stale), "dropping stale entries");
        !s.ok()) {
      return s;
    }
  }
  return r;
}

absl::Status DiskIndex::Put(const BlockKey& key, const IndexEntry& entry, bool sync) {
  if (absl::Status s = CheckWritable("writing an index entry"); !s.ok()) return s;
  return FromRocks(db_->Put(Sync(sync), BlockIndexKey(key), EncodeIndexEntry(entry)),
                   "writing an index entry");
}

absl::Status DiskIndex::Delete(const BlockKey& key, bool sync) {
  if (absl::Status s = CheckWritable("erasing an entry"); !s.ok()) return s;
  return FromRocks(db_->Delete(Sync(sync), BlockIndexKey(key)), "erasing an entry");
}

absl::Status DiskIndex::ReclaimRegion(uint32_t region, uint64_t generation,
                                      absl::Span<const BlockKey> keys, bool sync) {
  if (absl::Status s = CheckWritable("reclaiming a region"); !s.ok()) return s;
  rocksdb::WriteBatch batch;
  for (const BlockKey& k : keys) batch.Delete(BlockIndexKey(k));
  batch.Put(RegionIndexKey(region), EncodeU64(generation));
  return FromRocks(db_->Write(Sync(sync), &batch), "reclaiming a region");
}

absl::Status DiskIndex::DeleteKeys(absl::Span<const std::string> index_keys) {
  if (absl::Status s = CheckWritable("deleting entries"); !s.ok()) return s;
  rocksdb::WriteBatch batch;
  for (const std::string& k : index_keys) batch.Delete(k);
  // Synced: a repair the user was told about must survive a crash right after.
  return FromRocks(db_->Write(Sync(true), &batch), "deleting entries");
}

}  // namespace kvtier
