// tiers/disk_index.h — the disk tier's index: what its RocksDB database stores, the byte
// encoding of it, and the database itself (DiskIndex).
//
// Keys (one byte of kind, then big-endian fields so RocksDB's order groups them):
//   'b' | key.hi | key.lo         → IndexEntry       (one per stored block)
//   'r' | u32 region               → u64 generation   (the region's current generation)
//   'm' | name                     → metadata value   (format version, geometry, layout)
//
// Values are little-endian with a leading version byte; DecodeIndexEntry never trusts a
// length and returns DataLoss naming the field on any malformed input.
//
// DiskIndex is the one place that opens, reads and writes a cache directory's index: the disk
// tier (create, check the metadata, recover, write entries) and the `kvtier` CLI (inspect,
// verify, erase) both go through it, so the rules an entry must meet to be recovered
// (CheckPlacement) and the metadata's text are written once. Layout: docs/disk-format.md.

#ifndef KVTIER_TIERS_DISK_INDEX_H_
#define KVTIER_TIERS_DISK_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvtier/block_key.h"
#include "kvtier/geometry.h"
#include "tiers/disk_record.h"

namespace rocksdb {
class DB;
}

namespace kvtier {

// Names inside a cache directory (docs/disk-format.md, "Cache directory and index").
inline constexpr char kDataFileName[] = "data.kvt";
inline constexpr char kIndexDirName[] = "index";

struct IndexEntry {
  uint32_t region = 0;
  uint64_t offset = 0;        // of the record in the data file
  uint32_t record_bytes = 0;  // header + padded payload
  uint64_t generation = 0;    // of the region when written
  Codec codec = Codec::kNone;
  uint32_t stored_bytes = 0;
  uint64_t payload_checksum = 0;
  uint64_t created_unix_ms = 0;
  std::string ns;

  friend bool operator==(const IndexEntry&, const IndexEntry&) = default;
};

std::string BlockIndexKey(const BlockKey& key);
// The block key of an index key, or DataLoss when it is not a block key.
absl::StatusOr<BlockKey> ParseBlockIndexKey(absl::string_view index_key);
std::string RegionIndexKey(uint32_t region);
// The region of an 'r' key, or DataLoss when it is not one.
absl::StatusOr<uint32_t> ParseRegionIndexKey(absl::string_view index_key);
std::string MetaIndexKey(absl::string_view name);

std::string EncodeIndexEntry(const IndexEntry& e);
absl::StatusOr<IndexEntry> DecodeIndexEntry(absl::string_view value);

std::string EncodeU64(uint64_t v);
absl::StatusOr<uint64_t> DecodeU64(absl::string_view value);

// ------------------------------------------------------------------------------ metadata

// "<16 hex digits of the fingerprint> <Geometry::ToString()>".
std::string FormatGeometryMeta(const Geometry& geometry);
// The inverse: InvalidArgument when `text` is malformed or its fingerprint does not match
// its fields.
absl::StatusOr<Geometry> ParseGeometryMeta(const std::string& text, uint64_t* fingerprint);
// "region_bytes=<n> regions=<n>".
std::string FormatLayoutMeta(uint64_t region_bytes, uint64_t regions);
// InvalidArgument when malformed or region_bytes is not a positive multiple of 4096.
absl::Status ParseLayoutMeta(const std::string& text, uint64_t* region_bytes, uint64_t* regions);

// The three 'm' values a directory is created with, and checked against on every open.
struct IndexMeta {
  std::string format;    // RecordFormatVersion(geometry), in decimal
  std::string geometry;  // FormatGeometryMeta
  std::string layout;    // FormatLayoutMeta

  static IndexMeta For(const Geometry& geometry, uint64_t region_bytes, uint64_t regions);
};

// ------------------------------------------------------------------------------ placement

// Whether an entry may be recovered: OK, or why opening the directory drops it —
// OutOfRange when its region is outside the layout or the record is not inside its region,
// FailedPrecondition ("orphan") when its generation is 0 or not its region's current one
// (the region was reclaimed after the entry was written). `generations` as
// DiskIndex::RegionGenerations returns them. Overflow-safe for any field values.
absl::Status CheckPlacement(const IndexEntry& e, uint64_t region_bytes,
                            absl::Span<const uint64_t> generations);

// One 'b' entry of the index, decoded as far as possible.
struct IndexedBlock {
  std::string index_key;  // the raw RocksDB key
  absl::StatusOr<BlockKey> key = absl::UnknownError("unset");
  absl::StatusOr<IndexEntry> entry = absl::UnknownError("unset");
};

// ------------------------------------------------------------------------------ DiskIndex

// The RocksDB database at `<cache directory>/index`.
//
// Promises:
//   * One writer process: kCreate and kReadWrite take RocksDB's lock file; when another
//     process holds it, Open fails with an error IsInUse recognises. kReadOnly takes no lock
//     (safe beside a live engine) and sees the index as of Open; its writes fail.
//   * A reclaim is one write batch (the region's entries go, its generation moves on), so a
//     crash leaves either all of it or none.
//   * Errors name the operation; RocksDB's NoSpace is ResourceExhausted, Corruption DataLoss,
//     IOError Unavailable, the rest Internal.
//
// Thread-safe (RocksDB is) and holds no lock of its own: the disk tier orders its writes
// (data first, index second; a reclaim's batch before any byte of the region is rewritten)
// by calling under its own lock.
class DiskIndex {
 public:
  enum class Mode : uint8_t {
    kCreate,     // read-write, created when missing (the disk tier)
    kReadWrite,  // read-write, must exist (kvtier verify --repair, kvtier erase)
    kReadOnly,   // no lock, no writes (kvtier inspect, verify)
  };

  // Opens `<cache_dir>/index`. REQUIRES: for kReadWrite / kReadOnly, the caller checked that
  // it exists (RocksDB's own error for a missing database is not friendly).
  static absl::StatusOr<std::unique_ptr<DiskIndex>> Open(const std::string& cache_dir, Mode mode);
  // Whether an error of Open means another process holds the index (FailedPrecondition whose
  // message says "in use by another process" and quotes RocksDB). No other Open error has
  // the code FailedPrecondition.
  static bool IsInUse(const absl::Status& open_error);
  ~DiskIndex();
  DiskIndex(const DiskIndex&) = delete;
  DiskIndex& operator=(const DiskIndex&) = delete;

  // The 'm' value `name`; NotFound when absent.
  absl::StatusOr<std::string> GetMeta(absl::string_view name);
  // A new index (no 'format' value) gets `want`, synced. Otherwise every value must equal
  // `want`'s: FailedPrecondition naming the first that differs, both values and the
  // directory ("refused rather than misread").
  absl::Status CheckOrWriteMeta(const IndexMeta& want);
  // Whether any 'b' (block) entry exists.
  absl::StatusOr<bool> HasBlocks();
  // Writes the 'm' value `name` (synced).
  absl::Status PutMeta(absl::string_view name, absl::string_view value);

  // The current generation of each of `regions` regions (0: never reclaimed). 'r' entries
  // that are malformed or outside the layout are skipped and counted in `*malformed`.
  absl::StatusOr<std::vector<uint64_t>> RegionGenerations(uint64_t regions, size_t* malformed);
  // Calls `fn` for every 'b' entry, in key order.
  absl::Status ForEachBlock(absl::FunctionRef<void(const IndexedBlock&)> fn);

  struct Recovery {
    std::vector<uint64_t> generations;  // of every region, as RegionGenerations
    size_t recovered = 0;
    size_t dropped = 0;  // entries deleted: malformed, or failing CheckPlacement
  };
  // What opening a directory does to its index: reads the region generations, calls `fn`
  // for every block entry that decodes and passes CheckPlacement, and deletes the others.
  // REQUIRES: a writable mode.
  absl::StatusOr<Recovery> Recover(uint64_t region_bytes, uint64_t regions,
                                   absl::FunctionRef<void(const BlockKey&, const IndexEntry&)> fn);

  // `sync`: RocksDB's write-ahead log is synced before the call returns.
  absl::Status Put(const BlockKey& key, const IndexEntry& entry, bool sync);
  absl::Status Delete(const BlockKey& key, bool sync);
  // One batch: the entries of `keys` go and `region`'s generation becomes `generation`.
  absl::Status ReclaimRegion(uint32_t region, uint64_t generation, absl::Span<const BlockKey> keys,
                             bool sync);
  // Deletes the given raw index keys in one synced batch.
  absl::Status DeleteKeys(absl::Span<const std::string> index_keys);

  const std::string& cache_dir() const { return cache_dir_; }

 private:
  DiskIndex(std::string cache_dir, Mode mode);
  absl::Status CheckWritable(absl::string_view op) const;

  const std::string cache_dir_;
  const Mode mode_;
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_DISK_INDEX_H_
