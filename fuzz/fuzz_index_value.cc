// fuzz/fuzz_index_value.cc — the RocksDB index encoding (tiers/disk_index.h) on hostile bytes.
//
// Reopening a cache directory decodes every value of its index, and a damaged index must
// cost blocks, never the process. The properties checked, on every input:
//   * DecodeIndexEntry returns OK or DataLoss, and reads nothing outside the value (the value
//     is copied into an exactly-sized heap buffer, so ASan sees a read one byte past it);
//   * a value it accepts meets the entry's invariants (4096-aligned offset, record_bytes =
//     RecordSize(stored_bytes), known codec, namespace of 1..128 bytes), and is canonical:
//     EncodeIndexEntry of the decoded entry gives back the very same bytes;
//   * EncodeIndexEntry of an entry built from the input decodes back to that entry whenever
//     the entry is one the tier could write;
//   * DecodeU64 and ParseBlockIndexKey: the same, for the region generation values and the
//     block keys.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_support.h"
#include "tiers/disk_index.h"
#include "tiers/disk_record.h"

namespace kvtier {
namespace {

using fuzz::Input;

void CheckDataLoss(const absl::Status& s, const char* where) {
  KVTIER_FUZZ_CHECK(s.code() == absl::StatusCode::kDataLoss,
                    std::string(where) + " returned " + s.ToString());
}

// Decodes `value` from a heap copy of exactly its size.
void DecodeValue(absl::string_view value) {
  std::unique_ptr<char[]> copy(new char[value.size() + (value.empty() ? 1 : 0)]);
  if (!value.empty()) std::memcpy(copy.get(), value.data(), value.size());
  const absl::string_view exact(copy.get(), value.size());

  absl::StatusOr<IndexEntry> e = DecodeIndexEntry(exact);
  if (!e.ok()) {
    CheckDataLoss(e.status(), "DecodeIndexEntry");
  } else {
    KVTIER_FUZZ_CHECK(e->offset % kRecordAlignment == 0, "offset alignment");
    KVTIER_FUZZ_CHECK(e->record_bytes >= kRecordHeaderBytes &&
                          e->record_bytes % kRecordAlignment == 0 &&
                          e->record_bytes == RecordSize(e->stored_bytes),
                      "record_bytes");
    KVTIER_FUZZ_CHECK(static_cast<uint8_t>(e->codec) < kNumCodecs, "codec");
    KVTIER_FUZZ_CHECK(!e->ns.empty() && e->ns.size() <= 128, "namespace length");
    KVTIER_FUZZ_CHECK(EncodeIndexEntry(*e) == value, "accepted a value that is not canonical");
  }

  absl::StatusOr<uint64_t> u = DecodeU64(exact);
  if (!u.ok()) {
    CheckDataLoss(u.status(), "DecodeU64");
  } else {
    KVTIER_FUZZ_CHECK(EncodeU64(*u) == value, "DecodeU64 round trip");
  }

  absl::StatusOr<BlockKey> k = ParseBlockIndexKey(exact);
  if (!k.ok()) {
    CheckDataLoss(k.status(), "ParseBlockIndexKey");
  } else {
    KVTIER_FUZZ_CHECK(BlockIndexKey(*k) == value, "ParseBlockIndexKey round trip");
  }
}

// An entry built from the input, encoded and decoded again.
void EncodeRoundTrip(Input& in) {
  IndexEntry e;
  e.region = in.U32();
  e.offset = in.U64() & ~uint64_t{kRecordAlignment - 1};
  e.generation = in.U64();
  e.codec = static_cast<Codec>(in.U8() % kNumCodecs);
  e.stored_bytes = in.U32();
  const size_t record = RecordSize(e.stored_bytes);
  e.record_bytes = static_cast<uint32_t>(record);
  e.payload_checksum = in.U64();
  e.created_unix_ms = in.U64();
  e.ns = std::string(in.Bytes(1 + in.U8() % 128));
  const bool writable = record <= UINT32_MAX && !e.ns.empty();
  const std::string value = EncodeIndexEntry(e);
  absl::StatusOr<IndexEntry> back = DecodeIndexEntry(value);
  if (writable) {
    KVTIER_FUZZ_CHECK(back.ok(), "a writable entry does not decode: " + back.status().ToString());
    KVTIER_FUZZ_CHECK(*back == e, "index entry round trip changed it");
  } else if (!back.ok()) {
    CheckDataLoss(back.status(), "DecodeIndexEntry");
  }
  const BlockKey key{in.U64(), in.U64()};
  absl::StatusOr<BlockKey> parsed = ParseBlockIndexKey(BlockIndexKey(key));
  KVTIER_FUZZ_CHECK(parsed.ok() && *parsed == key, "block index key round trip");
}

}  // namespace
}  // namespace kvtier

// The first byte picks: even, the rest is a value to decode; odd, an entry to encode.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::fuzz::Input in(data, size);
  if (in.U8() % 2 == 0) {
    kvtier::DecodeValue(in.Rest());
  } else {
    kvtier::EncodeRoundTrip(in);
  }
  return 0;
}
