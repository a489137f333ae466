// tools/cli/cache_dir.h — a kvtier cache directory at rest, opened by the CLI.
//
// Opens `<dir>/index` (RocksDB) and `<dir>/data.kvt` the way docs/disk-format.md describes
// them, without an Engine: the CLI must work on a directory whose geometry it does not know
// in advance, and inspect/verify must work while a live engine holds the directory. The index
// is read and written through the disk tier's own DiskIndex (tiers/disk_index.h): the same
// keys, metadata text and recovery rules (CheckPlacement) as the engine.
//
//   * Read-only mode uses RocksDB's OpenForReadOnly, which takes no lock: safe next to a
//     live engine (it sees the index as of the open; the data file is only read).
//   * Read-write mode takes RocksDB's lock; when another process holds it, Open returns
//     Unavailable ("in use by another process"), so verify --repair and erase never race an
//     engine.
//
// Errors say what to do: NotFound for a missing directory, FailedPrecondition for a
// directory that is not a kvtier cache (no index, no data file, no metadata).

#ifndef KVTIER_TOOLS_CLI_CACHE_DIR_H_
#define KVTIER_TOOLS_CLI_CACHE_DIR_H_

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvtier/block_key.h"
#include "kvtier/geometry.h"
#include "tiers/disk_directory.h"
#include "tiers/disk_index.h"

namespace kvtier::cli {

// The directory's metadata ('m' keys of the index).
struct CacheMeta {
  std::string format;                  // "1"
  std::string geometry_text;           // as stored: "<16 hex> <Geometry::ToString()>"
  uint64_t geometry_fingerprint = 0;
  // Parsed from geometry_text when it is well formed and its fingerprint matches; without
  // it, raw sizes are unknown and reported as such.
  std::optional<Geometry> geometry;
  std::string layout_text;             // "region_bytes=<n> regions=<n>"
  uint64_t region_bytes = 0;
  uint64_t regions = 0;
};

// One 'b' entry of the index, decoded as far as possible.
using BlockEntry = IndexedBlock;

// Who may reach the directory's bytes, and whether data.kvt and the index belong together
// (tiers/disk_directory.h).
struct CacheAccess {
  std::string directory_mode, index_mode, data_mode;  // "0700"
  // What the engine would refuse (a mode others may read or write, or another owner); a
  // group-readable mode is listed only in `group_readable` (the engine accepts it with
  // DiskOptions::group_access).
  std::vector<std::string> problems;
  bool group_readable = false;
  // The superblock at the end of data.kvt: OK, NotFound (a directory of the format before
  // superblocks: the engine adds one at its next open), or DataLoss (truncated, damaged,
  // not kvtier's).
  absl::StatusOr<Superblock> superblock = absl::UnknownError("unread");
  std::string index_directory_id;  // the index's; empty when it has none
  // Why data.kvt does not belong with the index (empty: it does, or cannot be told yet).
  std::string mismatch;
};

class CacheDir {
 public:
  enum class Mode { kReadOnly, kReadWrite };

  static absl::StatusOr<std::unique_ptr<CacheDir>> Open(const std::string& dir, Mode mode);
  ~CacheDir();
  CacheDir(const CacheDir&) = delete;
  CacheDir& operator=(const CacheDir&) = delete;

  const std::string& dir() const { return dir_; }
  const CacheMeta& meta() const { return meta_; }
  uint64_t data_file_bytes() const { return data_file_bytes_; }
  const CacheAccess& access() const { return access_; }

  // Every 'r' entry: the current generation of each region (index = region; 0 = never
  // used). Entries for regions outside the layout are counted in `out_of_range`.
  absl::StatusOr<std::vector<uint64_t>> RegionGenerations(size_t* out_of_range);

  // Calls `fn` for every 'b' entry in key order.
  absl::Status ForEachBlock(absl::FunctionRef<void(const BlockEntry&)> fn);

  // Why the engine's recovery would drop `e` (kvtier::CheckPlacement with this directory's
  // layout), or OK. `generations` from RegionGenerations.
  absl::Status CheckPlacement(const IndexEntry& e, const std::vector<uint64_t>& generations) const;

  // Reads the record `e` points at (record_bytes from offset) into `out`.
  absl::Status ReadRecord(const IndexEntry& e, std::string* out) const;

  // Deletes the given index keys in one synced write batch. Read-write mode only.
  absl::Status DeleteKeys(const std::vector<std::string>& index_keys);

 private:
  CacheDir() = default;
  absl::Status LoadMeta();
  void LoadAccess(const struct stat& dir_st, const struct stat& index_st,
                  const struct stat& data_st);

  std::string dir_;
  Mode mode_ = Mode::kReadOnly;
  std::unique_ptr<DiskIndex> index_;
  int fd_ = -1;
  uint64_t data_file_bytes_ = 0;
  CacheMeta meta_;
  CacheAccess access_;
};

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_CACHE_DIR_H_
