#include "tiers/disk_index.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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
    return absl::DataLossError(
        absl::StrFormat("index entry version %d is not supported (expected %d)", version,
                        kEntryVersion));
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
    return absl::DataLossError(absl::StrFormat("expected an 8-byte integer, got %d bytes",
                                               value.size()));
  }
  return v;
}

}  // namespace kvtier
