// tests/tiers/disk_record_test_util.h — what the record codec's tests share: the header's
// byte offsets (docs/disk-format.md), aligned buffers, little-endian field access, fp16-like
// KV content, and encoding helpers. For disk_record_test.cc and disk_record_quantized_test.cc.

#ifndef KVTIER_TESTS_TIERS_DISK_RECORD_TEST_UTIL_H_
#define KVTIER_TESTS_TIERS_DISK_RECORD_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tiers/disk_record.h"
#include "xxhash.h"

namespace kvtier::record_test {

// The header layout of docs/disk-format.md, repeated here on purpose: these tests pin it.
constexpr size_t kOffVersion = 8;
constexpr size_t kOffCodec = 12;
constexpr size_t kOffElementBytes = 13;
constexpr size_t kOffNamespaceBytes = 14;
constexpr size_t kOffKeyHi = 16;
constexpr size_t kOffKeyLo = 24;
constexpr size_t kOffGeometry = 32;
constexpr size_t kOffRawBytes = 40;
constexpr size_t kOffStoredBytes = 44;
constexpr size_t kOffRegion = 48;
constexpr size_t kOffReserved = 52;
constexpr size_t kOffGeneration = 56;
constexpr size_t kOffPayloadChecksum = 64;
constexpr size_t kOffCreated = 72;
constexpr size_t kOffNamespace = 80;
constexpr size_t kOffGeomDtype = 208;  // quantized codecs only: the block's geometry
constexpr size_t kOffGeomLayers = 212;
constexpr size_t kOffGeomKvHeads = 216;
constexpr size_t kOffGeomHeadDim = 220;
constexpr size_t kOffGeomBlockTokens = 224;
constexpr size_t kOffGeomKind = 228;  // format version 2 only: the rest of the geometry
constexpr size_t kOffGeomRopeDim = 232;
constexpr size_t kOffGeomHeadBegin = 236;
constexpr size_t kOffGeomTotalHeads = 240;
constexpr size_t kOffHeaderChecksum = 4088;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t[], FreeDeleter>;

inline AlignedBuffer Aligned(size_t bytes) {
  const size_t rounded = (bytes + 4095) / 4096 * 4096;
  return AlignedBuffer(
      static_cast<uint8_t*>(std::aligned_alloc(4096, rounded == 0 ? 4096 : rounded)));
}

inline uint64_t ReadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint32_t ReadU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline void WriteU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void WriteU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void WriteU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// Recomputes the header checksum (XXH3-64 of bytes [0, 4088), stored at 4088), so a test can
// reach the field checks that come after it.
inline void Reseal(uint8_t* header) {
  WriteU64(header + kOffHeaderChecksum, XXH3_64bits(header, kOffHeaderChecksum));
}

// IEEE binary16 from binary32, rounding half up; values too small for a normal half become 0.
inline uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const int exp = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = x & 0x7fffff;
  if (exp <= 0) return sign;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  auto h = static_cast<uint16_t>(sign | (exp << 10) | (mant >> 13));
  if ((mant & 0x1000) != 0) ++h;
  return h;
}

// What an LLM KV cache holds: fp16 values drawn from N(0, sigma^2), little-endian.
inline std::vector<uint8_t> Fp16Like(size_t bytes, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<uint8_t> out(bytes);
  for (size_t i = 0; i + 1 < bytes; i += 2) {
    const uint16_t h = FloatToHalf(normal(rng));
    out[i] = static_cast<uint8_t>(h);
    out[i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return out;
}

inline std::vector<uint8_t> RandomBytes(size_t bytes, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(bytes);
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

inline RecordHeader SampleHeader() {
  RecordHeader h;
  h.key = BlockKey{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  h.ns = "tenant-a";
  h.geometry_fingerprint = 0x1122334455667788ULL;
  h.region = 7;
  h.generation = 42;
  h.created_unix_ms = 1700000000123ULL;
  return h;
}

struct Encoded {
  AlignedBuffer buffer;
  size_t record_bytes = 0;
  RecordHeader written;
};

inline Encoded MustEncode(const std::vector<uint8_t>& raw, Codec codec, size_t element_bytes = 2,
                          const RecordHeader& header = SampleHeader()) {
  Encoded e;
  const size_t capacity = MaxRecordSize(raw.size());
  e.buffer = Aligned(capacity);
  EncodeOptions options;
  options.codec = codec;
  options.element_bytes = element_bytes;
  absl::StatusOr<size_t> n =
      EncodeRecord(header, raw.data(), raw.size(), options, e.buffer.get(), capacity, &e.written);
  EXPECT_TRUE(n.ok()) << n.status();
  e.record_bytes = n.ok() ? *n : 0;
  return e;
}

// The header of a block of geometry `g`: SampleHeader with g's fingerprint.
inline RecordHeader HeaderFor(const Geometry& g) {
  RecordHeader h = SampleHeader();
  h.geometry_fingerprint = g.Fingerprint();
  return h;
}

// Encodes with a quantized codec (or any codec, given the geometry).
inline Encoded MustEncodeQuantized(const std::vector<uint8_t>& raw, const Geometry& g,
                                   Codec codec) {
  Encoded e;
  const size_t capacity = MaxRecordSize(raw.size());
  e.buffer = Aligned(capacity);
  EncodeOptions options;
  options.codec = codec;
  options.geometry = g;
  absl::StatusOr<size_t> n = EncodeRecord(HeaderFor(g), raw.data(), raw.size(), options,
                                          e.buffer.get(), capacity, &e.written);
  EXPECT_TRUE(n.ok()) << n.status();
  e.record_bytes = n.ok() ? *n : 0;
  return e;
}

inline bool Contains(const absl::Status& s, absl::string_view what) {
  return s.message().find(what) != absl::string_view::npos;
}

// Parses the record in `e` and decodes its payload; returns the raw bytes or the error.
inline absl::StatusOr<std::vector<uint8_t>> ParseAndDecode(const uint8_t* record,
                                                           size_t record_bytes) {
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(record, record_bytes);
  if (!h.ok()) return h.status();
  std::vector<uint8_t> raw(h->raw_bytes);
  absl::Status s = DecodeRecordPayload(*h, record + kRecordHeaderBytes,
                                       record_bytes - kRecordHeaderBytes, raw.data(), raw.size());
  if (!s.ok()) return s;
  return raw;
}

constexpr size_t kBlock = 256 << 10;  // a small KV block: 256 KiB

// Corrupts one header, optionally reseals it, and expects DataLoss whose message names `field`.
inline void ExpectHeaderDataLoss(void (*corrupt)(uint8_t*), bool reseal, absl::string_view field) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 10);
  Encoded e = MustEncode(raw, Codec::kZstdShuffle);
  corrupt(e.buffer.get());
  if (reseal) Reseal(e.buffer.get());
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(e.buffer.get(), e.record_bytes);
  ASSERT_FALSE(h.ok()) << "corrupted " << field << " was accepted";
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << h.status();
  EXPECT_TRUE(Contains(h.status(), field)) << h.status();
}

// Encodes with one thing wrong and expects InvalidArgument naming `what`.
inline void ExpectEncodeInvalid(const RecordHeader& header, size_t raw_bytes,
                                const EncodeOptions& options, size_t capacity, size_t misalign,
                                absl::string_view what) {
  const std::vector<uint8_t> raw = Fp16Like(raw_bytes == 0 ? 2 : raw_bytes, 18);
  AlignedBuffer out = Aligned(capacity + 4096);
  absl::StatusOr<size_t> n =
      EncodeRecord(header, raw.data(), raw_bytes, options, out.get() + misalign, capacity, nullptr);
  ASSERT_FALSE(n.ok()) << what;
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << n.status();
  EXPECT_TRUE(Contains(n.status(), what)) << n.status();
}

}  // namespace kvtier::record_test

#endif  // KVTIER_TESTS_TIERS_DISK_RECORD_TEST_UTIL_H_
