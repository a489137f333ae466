// tiers/disk_index.h — what the RocksDB index stores, and its byte encoding.
//
// Keys (one byte of kind, then big-endian fields so RocksDB's order groups them):
//   'b' | key.hi | key.lo         → IndexEntry       (one per stored block)
//   'r' | u32 region               → u64 generation   (the region's current generation)
//   'm' | name                     → metadata value   (format version, geometry, layout)
//
// Values are little-endian with a leading version byte; DecodeIndexEntry never trusts a
// length and returns DataLoss naming the field on any malformed input.

#ifndef KVTIER_TIERS_DISK_INDEX_H_
#define KVTIER_TIERS_DISK_INDEX_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvtier/block_key.h"
#include "tiers/disk_record.h"

namespace kvtier {

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
std::string MetaIndexKey(absl::string_view name);

std::string EncodeIndexEntry(const IndexEntry& e);
absl::StatusOr<IndexEntry> DecodeIndexEntry(absl::string_view value);

std::string EncodeU64(uint64_t v);
absl::StatusOr<uint64_t> DecodeU64(absl::string_view value);

}  // namespace kvtier

#endif  // KVTIER_TIERS_DISK_INDEX_H_
