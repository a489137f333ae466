// tests/tiers/disk_record_test.cc — the on-disk record codec, as a specification.
//
// Round trips for every codec on fp16-like KV data and on incompressible bytes; the byte
// layout of docs/disk-format.md pinned at its offsets; every header corruption, payload
// corruption and truncation answered with DataLoss naming what is wrong (never wrong data);
// bad arguments answered with InvalidArgument; and a randomized run of garbage through the
// parser and decoder (run under ASan in CI) that must only ever return errors. The lossy
// codecs (fp8, int8) on fresh random fp16 / bf16 / fp32 blocks each run: exact record sizes,
// decoding equal to the quantization kernels' own round trip and within the formats' error
// bounds (tests/tiers/quantized_kv.h), their header fields, and their corruptions.

#include "tiers/disk_record.h"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tests/tiers/quantized_kv.h"
#include "xxhash.h"

namespace kvtier {
namespace {

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

AlignedBuffer Aligned(size_t bytes) {
  const size_t rounded = (bytes + 4095) / 4096 * 4096;
  return AlignedBuffer(
      static_cast<uint8_t*>(std::aligned_alloc(4096, rounded == 0 ? 4096 : rounded)));
}

uint64_t ReadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint32_t ReadU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void WriteU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void WriteU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void WriteU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// Recomputes the header checksum (XXH3-64 of bytes [0, 4088), stored at 4088), so a test can
// reach the field checks that come after it.
void Reseal(uint8_t* header) {
  WriteU64(header + kOffHeaderChecksum, XXH3_64bits(header, kOffHeaderChecksum));
}

// IEEE binary16 from binary32, rounding half up; values too small for a normal half become 0.
uint16_t FloatToHalf(float f) {
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
std::vector<uint8_t> Fp16Like(size_t bytes, uint32_t seed, float sigma = 1.0f) {
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

std::vector<uint8_t> RandomBytes(size_t bytes, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(bytes);
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

RecordHeader SampleHeader() {
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

Encoded MustEncode(const std::vector<uint8_t>& raw, Codec codec, size_t element_bytes = 2,
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
RecordHeader HeaderFor(const Geometry& g) {
  RecordHeader h = SampleHeader();
  h.geometry_fingerprint = g.Fingerprint();
  return h;
}

// Encodes with a quantized codec (or any codec, given the geometry).
Encoded MustEncodeQuantized(const std::vector<uint8_t>& raw, const Geometry& g, Codec codec) {
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

bool Contains(const absl::Status& s, absl::string_view what) {
  return s.message().find(what) != absl::string_view::npos;
}

// Parses the record in `e` and decodes its payload; returns the raw bytes or the error.
absl::StatusOr<std::vector<uint8_t>> ParseAndDecode(const uint8_t* record, size_t record_bytes) {
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(record, record_bytes);
  if (!h.ok()) return h.status();
  std::vector<uint8_t> raw(h->raw_bytes);
  absl::Status s = DecodeRecordPayload(*h, record + kRecordHeaderBytes,
                                       record_bytes - kRecordHeaderBytes, raw.data(), raw.size());
  if (!s.ok()) return s;
  return raw;
}

constexpr size_t kBlock = 256 << 10;  // a small KV block: 256 KiB

TEST(DiskRecord, EveryCodecRoundTripsFp16LikeData) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 1);
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle}) {
    SCOPED_TRACE(CodecName(codec));
    Encoded e = MustEncode(raw, codec);
    EXPECT_EQ(e.written.codec, codec);  // fp16 data compresses enough to keep the codec
    EXPECT_EQ(e.record_bytes, RecordSize(e.written.stored_bytes));
    absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, raw);
  }
}

TEST(DiskRecord, ShuffleCompressesFp16BetterThanPlainZstd) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 2);
  Encoded zstd = MustEncode(raw, Codec::kZstd);
  Encoded shuffle = MustEncode(raw, Codec::kZstdShuffle);
  ASSERT_EQ(zstd.written.codec, Codec::kZstd);
  ASSERT_EQ(shuffle.written.codec, Codec::kZstdShuffle);
  EXPECT_LT(zstd.written.stored_bytes, raw.size());
  EXPECT_LT(shuffle.written.stored_bytes, zstd.written.stored_bytes);
  std::printf("fp16 N(0,1), %zu bytes: zstd-1 stores %.3f of raw, zstd-shuffle-1 %.3f\n",
              raw.size(), static_cast<double>(zstd.written.stored_bytes) / raw.size(),
              static_cast<double>(shuffle.written.stored_bytes) / raw.size());
}

TEST(DiskRecord, ShuffleRoundTripsForEveryElementWidth) {
  // Not a multiple of 16 elements, so vectorized loops' tails are covered too.
  const std::vector<uint8_t> raw = Fp16Like(kBlock + 28, 3, 0.01f);
  for (size_t width : {1, 2, 4}) {
    SCOPED_TRACE(width);
    Encoded e = MustEncode(raw, Codec::kZstdShuffle, width);
    EXPECT_EQ(e.written.codec, Codec::kZstdShuffle);
    EXPECT_EQ(e.written.element_bytes, width);
    absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, raw);
  }
}

TEST(DiskRecord, ShuffleGroupsByteZeroOfEveryElementThenByteOne) {
  // The payload of kZstdShuffle is one zstd frame of the shuffled block (docs/disk-format.md).
  const std::vector<uint8_t> raw = Fp16Like(kBlock + 36, 21, 0.01f);
  for (size_t width : {2, 4}) {
    SCOPED_TRACE(width);
    Encoded e = MustEncode(raw, Codec::kZstdShuffle, width);
    ASSERT_EQ(e.written.codec, Codec::kZstdShuffle);
    std::vector<uint8_t> shuffled(raw.size());
    const size_t n = ZSTD_decompress(shuffled.data(), shuffled.size(),
                                     e.buffer.get() + kRecordHeaderBytes, e.written.stored_bytes);
    ASSERT_EQ(n, raw.size()) << ZSTD_getErrorName(n);
    const size_t elements = raw.size() / width;
    for (size_t i = 0; i < elements; ++i) {
      for (size_t b = 0; b < width; ++b) {
        ASSERT_EQ(shuffled[b * elements + i], raw[i * width + b]) << i << " " << b;
      }
    }
  }
}

TEST(DiskRecord, IncompressibleBytesFallBackToNone) {
  const std::vector<uint8_t> raw = RandomBytes(kBlock, 4);
  for (Codec codec : {Codec::kZstd, Codec::kZstdShuffle}) {
    SCOPED_TRACE(CodecName(codec));
    Encoded e = MustEncode(raw, codec);
    EXPECT_EQ(e.written.codec, Codec::kNone);
    EXPECT_EQ(e.written.element_bytes, 0);
    EXPECT_EQ(e.written.stored_bytes, raw.size());
    EXPECT_EQ(e.record_bytes, MaxRecordSize(raw.size()));
    absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, raw);
  }
}

TEST(DiskRecord, CompressionIsKeptOnlyWhenItSavesAPage) {
  // One page of zeros compresses to a few bytes, but the record cannot get smaller than a
  // header and one page: stored raw.
  std::vector<uint8_t> page(4096, 0);
  EXPECT_EQ(MustEncode(page, Codec::kZstd).written.codec, Codec::kNone);
  EXPECT_EQ(MustEncode(page, Codec::kZstdShuffle).written.codec, Codec::kNone);
  // Two pages of zeros: compressing saves one.
  std::vector<uint8_t> two_pages(8192, 0);
  Encoded e = MustEncode(two_pages, Codec::kZstd);
  EXPECT_EQ(e.written.codec, Codec::kZstd);
  EXPECT_EQ(e.record_bytes, 2 * 4096u);
  // A size that is not a whole number of pages survives every codec.
  std::vector<uint8_t> odd = Fp16Like(12290, 5, 0.01f);
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle}) {
    Encoded o = MustEncode(odd, codec);
    absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(o.buffer.get(), o.record_bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, odd);
  }
}

TEST(DiskRecord, RecordSizesArePagesAndMaxCoversEveryCodec) {
  EXPECT_EQ(RecordSize(0), 4096u);
  EXPECT_EQ(RecordSize(1), 8192u);
  EXPECT_EQ(RecordSize(4096), 8192u);
  EXPECT_EQ(RecordSize(4097), 12288u);
  EXPECT_EQ(MaxRecordSize(2 << 20), 4096u + (2 << 20));
  const std::vector<uint8_t> raw = RandomBytes(5000, 6);
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle}) {
    Encoded e = MustEncode(raw, codec);
    EXPECT_LE(e.record_bytes, MaxRecordSize(raw.size()));
    EXPECT_EQ(e.record_bytes % kRecordAlignment, 0u);
  }
}

TEST(DiskRecord, HeaderFieldsRoundTrip) {
  RecordHeader in = SampleHeader();
  in.ns = std::string(128, 'n');  // the longest namespace fits
  in.region = 0xfffffffe;
  in.generation = 0xfedcba9876543210ULL;
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 7);
  Encoded e = MustEncode(raw, Codec::kZstdShuffle, 2, in);
  absl::StatusOr<RecordHeader> out = ParseRecordHeader(e.buffer.get(), e.record_bytes);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->key, in.key);
  EXPECT_EQ(out->ns, in.ns);
  EXPECT_EQ(out->geometry_fingerprint, in.geometry_fingerprint);
  EXPECT_EQ(out->region, in.region);
  EXPECT_EQ(out->generation, in.generation);
  EXPECT_EQ(out->created_unix_ms, in.created_unix_ms);
  EXPECT_EQ(out->codec, Codec::kZstdShuffle);
  EXPECT_EQ(out->element_bytes, 2);
  EXPECT_EQ(out->raw_bytes, raw.size());
  // What EncodeRecord filled in is what the parser reads back.
  EXPECT_EQ(out->stored_bytes, e.written.stored_bytes);
  EXPECT_EQ(out->payload_checksum, e.written.payload_checksum);
  EXPECT_EQ(out->payload_checksum,
            XXH3_64bits(e.buffer.get() + kRecordHeaderBytes, out->stored_bytes));
}

// A record is encoded before it has a place (on a codec thread), then placed: rewriting its
// region and generation gives the header EncodeRecord would have written there, checksum
// included, and leaves every other byte as it was.
TEST(DiskRecord, SetRecordPlacementRewritesOnlyRegionGenerationAndChecksum) {
  RecordHeader placed = SampleHeader();
  placed.region = 41;
  placed.generation = 0x1234567890ULL;
  RecordHeader unplaced = placed;
  unplaced.region = 0;
  unplaced.generation = 0;
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 9);
  Encoded want = MustEncode(raw, Codec::kZstdShuffle, 2, placed);
  Encoded got = MustEncode(raw, Codec::kZstdShuffle, 2, unplaced);
  ASSERT_EQ(got.record_bytes, want.record_bytes);
  ASSERT_NE(std::memcmp(got.buffer.get(), want.buffer.get(), kRecordHeaderBytes), 0);
  SetRecordPlacement(got.buffer.get(), placed.region, placed.generation);
  EXPECT_EQ(std::memcmp(got.buffer.get(), want.buffer.get(), got.record_bytes), 0);
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(got.buffer.get(), got.record_bytes);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->region, 41u);
  EXPECT_EQ(h->generation, 0x1234567890ULL);
}

TEST(DiskRecord, HeaderLayoutMatchesDocs) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 8);
  Encoded e = MustEncode(raw, Codec::kZstdShuffle);
  const uint8_t* p = e.buffer.get();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(p), 8), "TVTRREC1");
  EXPECT_EQ(ReadU64(p), kRecordMagic);
  EXPECT_EQ(ReadU32(p + kOffVersion), 1u);
  EXPECT_EQ(p[kOffCodec], 2);
  EXPECT_EQ(p[kOffElementBytes], 2);
  EXPECT_EQ(p[kOffNamespaceBytes] | (p[kOffNamespaceBytes + 1] << 8), 8);
  EXPECT_EQ(ReadU64(p + kOffKeyHi), 0x0123456789abcdefULL);
  EXPECT_EQ(ReadU64(p + kOffKeyLo), 0xfedcba9876543210ULL);
  EXPECT_EQ(ReadU64(p + kOffGeometry), 0x1122334455667788ULL);
  EXPECT_EQ(ReadU32(p + kOffRawBytes), kBlock);
  EXPECT_EQ(ReadU32(p + kOffStoredBytes), e.written.stored_bytes);
  EXPECT_EQ(ReadU32(p + kOffRegion), 7u);
  EXPECT_EQ(ReadU64(p + kOffGeneration), 42u);
  EXPECT_EQ(ReadU64(p + kOffPayloadChecksum), e.written.payload_checksum);
  EXPECT_EQ(ReadU64(p + kOffCreated), 1700000000123ULL);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(p + kOffNamespace), 8), "tenant-a");
  EXPECT_EQ(ReadU64(p + kOffHeaderChecksum), XXH3_64bits(p, kOffHeaderChecksum));
}

TEST(DiskRecord, PaddingBytesAreZero) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock + 1000, 9);
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle}) {
    SCOPED_TRACE(CodecName(codec));
    const size_t capacity = MaxRecordSize(raw.size());
    AlignedBuffer out = Aligned(capacity);
    std::memset(out.get(), 0xAB, capacity);  // stale bytes from a previous use of the buffer
    EncodeOptions options;
    options.codec = codec;
    RecordHeader written;
    absl::StatusOr<size_t> n = EncodeRecord(SampleHeader(), raw.data(), raw.size(), options,
                                            out.get(), capacity, &written);
    ASSERT_TRUE(n.ok()) << n.status();
    const uint8_t* p = out.get();
    for (size_t i = kOffReserved; i < kOffReserved + 4; ++i) ASSERT_EQ(p[i], 0) << i;
    for (size_t i = kOffNamespace + written.ns.size(); i < kOffHeaderChecksum; ++i) {
      ASSERT_EQ(p[i], 0) << "header byte " << i;
    }
    for (size_t i = kRecordHeaderBytes + written.stored_bytes; i < *n; ++i) {
      ASSERT_EQ(p[i], 0) << "payload padding byte " << i;
    }
  }
}

// Corrupts one header, optionally reseals it, and expects DataLoss whose message names `field`.
void ExpectHeaderDataLoss(void (*corrupt)(uint8_t*), bool reseal, absl::string_view field) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 10);
  Encoded e = MustEncode(raw, Codec::kZstdShuffle);
  corrupt(e.buffer.get());
  if (reseal) Reseal(e.buffer.get());
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(e.buffer.get(), e.record_bytes);
  ASSERT_FALSE(h.ok()) << "corrupted " << field << " was accepted";
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << h.status();
  EXPECT_TRUE(Contains(h.status(), field)) << h.status();
}

TEST(DiskRecord, WrongMagicIsDataLossNamingMagic) {
  ExpectHeaderDataLoss([](uint8_t* p) { p[0] ^= 0x01; }, false, "magic");
  ExpectHeaderDataLoss([](uint8_t* p) { std::memset(p, 0, 8); }, true, "magic");
}

TEST(DiskRecord, OtherFormatVersionIsDataLossNamingVersion) {
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU32(p + kOffVersion, 3); }, false, "format_version");
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU32(p + kOffVersion, 0); }, true, "format_version");
}

TEST(DiskRecord, FlippedHeaderBitIsDataLossNamingHeaderChecksum) {
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffGeneration] ^= 0x10; }, false, "header_checksum");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffNamespace + 3] ^= 0x01; }, false, "header_checksum");
  ExpectHeaderDataLoss([](uint8_t* p) { p[3000] = 1; }, false, "header_checksum");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffHeaderChecksum] ^= 0x80; }, false, "header_checksum");
}

TEST(DiskRecord, EachBadLengthFieldIsDataLossNamingIt) {
  // Resealed, so the header checksum passes and the field checks are what refuse them.
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU16(p + kOffNamespaceBytes, 129); }, true,
                       "namespace_bytes");
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU16(p + kOffNamespaceBytes, 0xffff); }, true,
                       "namespace_bytes");
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU32(p + kOffRawBytes, 0); }, true, "raw_bytes");
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU32(p + kOffStoredBytes, 0); }, true, "stored_bytes");
  // More payload than a block of raw_bytes can ever need.
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU32(p + kOffStoredBytes, kBlock + 4097); }, true,
                       "stored_bytes");
  ExpectHeaderDataLoss([](uint8_t* p) { WriteU32(p + kOffStoredBytes, 0xffffffff); }, true,
                       "stored_bytes");
  // Under codec none the payload is the block itself.
  ExpectHeaderDataLoss(
      [](uint8_t* p) {
        p[kOffCodec] = 0;
        p[kOffElementBytes] = 0;
        WriteU32(p + kOffStoredBytes, kBlock - 2);
      },
      true, "stored_bytes");
}

TEST(DiskRecord, EachBadCodecFieldIsDataLossNamingIt) {
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffCodec] = 5; }, true, "codec");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffCodec] = 0xff; }, true, "codec");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffElementBytes] = 3; }, true, "element_bytes");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffElementBytes] = 0; }, true, "element_bytes");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffCodec] = 1; }, true, "element_bytes");
  ExpectHeaderDataLoss(
      [](uint8_t* p) {
        p[kOffElementBytes] = 4;
        WriteU32(p + kOffRawBytes, kBlock - 2);
      },
      true, "element_bytes");
}

TEST(DiskRecord, NonZeroUnassignedHeaderBytesAreDataLoss) {
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffReserved + 1] = 1; }, true, "reserved");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffNamespace + 8] = 'x'; }, true, "padding");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffHeaderChecksum - 1] = 1; }, true, "padding");
}

TEST(DiskRecord, TruncatedHeaderIsDataLoss) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 11);
  Encoded e = MustEncode(raw, Codec::kNone);
  for (size_t size : {size_t{0}, size_t{8}, kRecordHeaderBytes - 1}) {
    absl::StatusOr<RecordHeader> h = ParseRecordHeader(e.buffer.get(), size);
    EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_TRUE(Contains(h.status(), "truncated")) << h.status();
  }
  EXPECT_EQ(ParseRecordHeader(nullptr, 4096).status().code(), absl::StatusCode::kDataLoss);
}

TEST(DiskRecord, FlippedPayloadBitIsDataLossNotWrongData) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 12);
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle}) {
    SCOPED_TRACE(CodecName(codec));
    Encoded e = MustEncode(raw, codec);
    for (size_t at :
         {size_t{0}, size_t{e.written.stored_bytes / 2}, size_t{e.written.stored_bytes - 1}}) {
      e.buffer[kRecordHeaderBytes + at] ^= 0x04;
      absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
      EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
      EXPECT_TRUE(Contains(back.status(), "payload_checksum")) << back.status();
      e.buffer[kRecordHeaderBytes + at] ^= 0x04;
    }
    EXPECT_TRUE(ParseAndDecode(e.buffer.get(), e.record_bytes).ok());
  }
}

TEST(DiskRecord, AnUncompressedPayloadIsVerifiedAsItIsCopiedAndAFailureLeavesZeros) {
  // Codec none into another buffer verifies and copies in one pass (in 64 KiB chunks): a flip
  // in any chunk, the last partial one included, is caught, and the destination, already
  // written by then, is left all zero, never with the unverified bytes.
  const size_t n = kBlock + 4096 + 12;  // a partial last chunk
  const std::vector<uint8_t> raw = Fp16Like(n, 13);
  Encoded e = MustEncode(raw, Codec::kNone);
  ASSERT_EQ(e.written.codec, Codec::kNone);
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(e.buffer.get(), e.record_bytes);
  ASSERT_TRUE(h.ok()) << h.status();
  uint8_t* payload = e.buffer.get() + kRecordHeaderBytes;
  std::vector<uint8_t> out(n, 0xAB);
  absl::Status ok = DecodeRecordPayload(*h, payload, n, out.data(), out.size());
  ASSERT_TRUE(ok.ok()) << ok;
  EXPECT_EQ(out, raw);
  for (size_t at : {size_t{0}, size_t{65536}, size_t{n - 1}}) {
    payload[at] ^= 0x10;
    std::fill(out.begin(), out.end(), 0xAB);
    absl::Status s = DecodeRecordPayload(*h, payload, n, out.data(), out.size());
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << at;
    EXPECT_TRUE(Contains(s, "payload_checksum")) << s;
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0; })) << at;
    payload[at] ^= 0x10;
  }
  // In place (the payload is its own destination) is verified without a copy.
  ok = DecodeRecordPayload(*h, payload, n, payload, n);
  ASSERT_TRUE(ok.ok()) << ok;
  EXPECT_TRUE(std::equal(raw.begin(), raw.end(), payload));
  // A destination that partly overlaps the payload is refused, naming why.
  absl::Status overlap = DecodeRecordPayload(*h, payload, n, payload + 4096, n);
  EXPECT_EQ(overlap.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(overlap, "overlap")) << overlap;
}

TEST(DiskRecord, BitFlipInPaddingIsHarmless) {
  // The checksum covers the stored bytes, not the padding after them.
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 13);
  Encoded e = MustEncode(raw, Codec::kZstd);
  ASSERT_LT(kRecordHeaderBytes + e.written.stored_bytes, e.record_bytes);
  e.buffer[e.record_bytes - 1] ^= 0xff;
  absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, raw);
}

TEST(DiskRecord, TruncatedPayloadIsDataLoss) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 14);
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle}) {
    SCOPED_TRACE(CodecName(codec));
    Encoded e = MustEncode(raw, codec);
    std::vector<uint8_t> out(raw.size());
    for (size_t available : {size_t{0}, size_t{e.written.stored_bytes - 1}}) {
      absl::Status s = DecodeRecordPayload(e.written, e.buffer.get() + kRecordHeaderBytes,
                                           available, out.data(), out.size());
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
      EXPECT_TRUE(Contains(s, "truncated")) << s;
    }
    EXPECT_EQ(
        DecodeRecordPayload(e.written, nullptr, e.written.stored_bytes, out.data(), out.size())
            .code(),
        absl::StatusCode::kDataLoss);
  }
}

TEST(DiskRecord, CorruptFrameWithMatchingChecksumIsDataLoss) {
  // A writer bug (or a forged record) whose checksum matches bytes zstd cannot decode.
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 15);
  for (Codec codec : {Codec::kZstd, Codec::kZstdShuffle}) {
    SCOPED_TRACE(CodecName(codec));
    Encoded e = MustEncode(raw, codec);
    uint8_t* payload = e.buffer.get() + kRecordHeaderBytes;
    std::vector<uint8_t> out(raw.size());

    RecordHeader cut = e.written;  // the frame's last half is missing
    cut.stored_bytes /= 2;
    cut.payload_checksum = XXH3_64bits(payload, cut.stored_bytes);
    absl::Status s = DecodeRecordPayload(cut, payload, cut.stored_bytes, out.data(), out.size());
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;

    RecordHeader big = e.written;  // the frame holds fewer bytes than raw_bytes claims
    big.raw_bytes += 2;
    out.resize(big.raw_bytes);
    s = DecodeRecordPayload(big, payload, big.stored_bytes, out.data(), out.size());
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;

    RecordHeader small = e.written;  // ... or more
    small.raw_bytes -= 2;
    s = DecodeRecordPayload(small, payload, small.stored_bytes, out.data(), out.size());
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;

    std::memset(payload, 0x5a, 64);  // garbage where the frame header was
    RecordHeader garbage = e.written;
    garbage.payload_checksum = XXH3_64bits(payload, garbage.stored_bytes);
    s = DecodeRecordPayload(garbage, payload, garbage.stored_bytes, out.data(), out.size());
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  }
}

TEST(DiskRecord, DecodeChecksTheHeaderItIsGiven) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 16);
  Encoded e = MustEncode(raw, Codec::kZstdShuffle);
  std::vector<uint8_t> out(raw.size());
  const uint8_t* payload = e.buffer.get() + kRecordHeaderBytes;
  RecordHeader h = e.written;
  h.element_bytes = 0;
  absl::Status s = DecodeRecordPayload(h, payload, e.written.stored_bytes, out.data(), out.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s, "element_bytes")) << s;
  h = e.written;
  h.codec = static_cast<Codec>(9);
  s = DecodeRecordPayload(h, payload, e.written.stored_bytes, out.data(), out.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s, "codec")) << s;
}

TEST(DiskRecord, RawCapacityTooSmallIsInvalidArgument) {
  const std::vector<uint8_t> raw = Fp16Like(kBlock, 17);
  Encoded e = MustEncode(raw, Codec::kZstd);
  std::vector<uint8_t> out(raw.size() - 1);
  absl::Status s = DecodeRecordPayload(e.written, e.buffer.get() + kRecordHeaderBytes,
                                       e.written.stored_bytes, out.data(), out.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "raw_capacity")) << s;
}

// Encodes with one thing wrong and expects InvalidArgument naming `what`.
void ExpectEncodeInvalid(const RecordHeader& header, size_t raw_bytes, const EncodeOptions& options,
                         size_t capacity, size_t misalign, absl::string_view what) {
  const std::vector<uint8_t> raw = Fp16Like(raw_bytes == 0 ? 2 : raw_bytes, 18);
  AlignedBuffer out = Aligned(capacity + 4096);
  absl::StatusOr<size_t> n =
      EncodeRecord(header, raw.data(), raw_bytes, options, out.get() + misalign, capacity, nullptr);
  ASSERT_FALSE(n.ok()) << what;
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << n.status();
  EXPECT_TRUE(Contains(n.status(), what)) << n.status();
}

TEST(DiskRecord, OutputCapacityTooSmallIsInvalidArgument) {
  ExpectEncodeInvalid(SampleHeader(), kBlock, EncodeOptions{}, MaxRecordSize(kBlock) - 1, 0,
                      "out_capacity");
  // Even where the block would compress far below that: the caller must size for the worst.
  EncodeOptions zstd;
  zstd.codec = Codec::kZstd;
  ExpectEncodeInvalid(SampleHeader(), kBlock, zstd, 3 * 4096, 0, "out_capacity");
}

TEST(DiskRecord, NamespaceTooLongIsInvalidArgument) {
  RecordHeader h = SampleHeader();
  h.ns = std::string(129, 'n');
  ExpectEncodeInvalid(h, kBlock, EncodeOptions{}, MaxRecordSize(kBlock), 0, "namespace");
}

TEST(DiskRecord, BadEncodeOptionsAreInvalidArgument) {
  const size_t cap = MaxRecordSize(kBlock);
  EncodeOptions o;
  o.codec = Codec::kZstdShuffle;
  o.element_bytes = 3;
  ExpectEncodeInvalid(SampleHeader(), kBlock, o, cap, 0, "element_bytes");
  o.element_bytes = 4;
  ExpectEncodeInvalid(SampleHeader(), kBlock - 2, o, cap, 0, "does not divide");
  o.element_bytes = 2;
  o.zstd_level = 0;
  ExpectEncodeInvalid(SampleHeader(), kBlock, o, cap, 0, "zstd_level");
  o.zstd_level = 20;
  ExpectEncodeInvalid(SampleHeader(), kBlock, o, cap, 0, "zstd_level");
  o.codec = static_cast<Codec>(7);
  ExpectEncodeInvalid(SampleHeader(), kBlock, o, cap, 0, "codec");
  ExpectEncodeInvalid(SampleHeader(), 0, EncodeOptions{}, cap, 0, "raw_bytes");
  ExpectEncodeInvalid(SampleHeader(), kBlock, EncodeOptions{}, cap, 512, "aligned");
}

TEST(DiskRecord, CodecNames) {
  EXPECT_STREQ(CodecName(Codec::kNone), "none");
  EXPECT_STREQ(CodecName(Codec::kZstd), "zstd");
  EXPECT_STREQ(CodecName(Codec::kZstdShuffle), "zstd-shuffle");
  EXPECT_STREQ(CodecName(Codec::kFp8), "fp8");
  EXPECT_STREQ(CodecName(Codec::kInt8), "int8");
  EXPECT_STREQ(CodecName(static_cast<Codec>(9)), "invalid");
  for (int i = 0; i < kNumCodecs; ++i) {
    const auto codec = static_cast<Codec>(i);
    absl::StatusOr<Codec> parsed = ParseCodec(CodecName(codec));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, codec);
  }
  absl::StatusOr<Codec> bad = ParseCodec("lz5");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status(), "fp8, int8")) << bad.status();
  EXPECT_FALSE(IsQuantizedCodec(Codec::kZstdShuffle));
  EXPECT_EQ(CodecQuantFormat(Codec::kFp8), QuantFormat::kFp8E4m3);
  EXPECT_EQ(CodecQuantFormat(Codec::kInt8), QuantFormat::kInt8);
}

// Feeds random bytes, mutated records and random truncations to the parser and the decoder.
// They must only return errors (or, for an intact record, the block): never crash, never read
// outside what they were given (ASan checks that in CI).
TEST(DiskRecord, GarbageNeverCrashesTheParserOrDecoder) {
  std::mt19937_64 rng(20240601);
  auto uniform = [&rng](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<uint8_t> blocks[] = {Fp16Like(3 * 4096 + 6, 19), RandomBytes(9000, 20),
                                         std::vector<uint8_t>(20000, 0)};
  std::vector<Encoded> records;
  for (const std::vector<uint8_t>& b : blocks) {
    for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle}) {
      records.push_back(MustEncode(b, codec));
    }
  }
  // Quantized records too (16 KiB fp16 blocks: the quantized form saves a page).
  const Geometry quantized{2, 2, 32, DType::kFloat16, 32};
  const std::vector<uint8_t> kv = Fp16Like(quantized.block_bytes(), 22);
  for (Codec codec : {Codec::kFp8, Codec::kInt8}) {
    records.push_back(MustEncodeQuantized(kv, quantized, codec));
    ASSERT_EQ(records.back().written.codec, codec);
  }
  std::vector<uint8_t> out(1 << 16);
  int parsed_ok = 0, decoded_ok = 0, zstd_refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const Encoded& base = records[uniform(records.size())];
    std::vector<uint8_t> bytes(base.buffer.get(), base.buffer.get() + base.record_bytes);
    const int mutation = static_cast<int>(uniform(5));
    switch (mutation) {
      case 0:  // pure garbage
        bytes = RandomBytes(uniform(3 * 4096), static_cast<uint32_t>(rng()));
        break;
      case 1:  // a few bit flips anywhere, header resealed half the time
        for (int k = 0, n = 1 + static_cast<int>(uniform(4)); k < n; ++k) {
          bytes[uniform(bytes.size())] ^= static_cast<uint8_t>(1u << uniform(8));
        }
        if (uniform(2) == 0) Reseal(bytes.data());
        break;
      case 2:  // random values in the fields, resealed: exercises every field check
        for (int k = 0, n = 1 + static_cast<int>(uniform(3)); k < n; ++k) {
          const size_t at = uniform(kOffNamespace + 16);
          bytes[at] = static_cast<uint8_t>(rng());
        }
        Reseal(bytes.data());
        break;
      case 3:  // payload garbage with a matching checksum
        for (size_t i = kRecordHeaderBytes; i < bytes.size(); ++i) {
          if (uniform(64) == 0) bytes[i] = static_cast<uint8_t>(rng());
        }
        WriteU64(bytes.data() + kOffPayloadChecksum,
                 XXH3_64bits(bytes.data() + kRecordHeaderBytes,
                             std::min<size_t>(ReadU32(bytes.data() + kOffStoredBytes),
                                              bytes.size() - kRecordHeaderBytes)));
        Reseal(bytes.data());
        break;
      default:  // intact
        break;
    }
    // A heap copy of exactly the bytes given, so any read past them is an ASan error.
    const size_t size = uniform(4) == 0 ? uniform(bytes.size() + 1) : bytes.size();
    std::vector<uint8_t> exact(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(size));
    absl::StatusOr<RecordHeader> h = ParseRecordHeader(exact.data(), exact.size());
    if (!h.ok()) {
      EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << h.status();
      continue;
    }
    ++parsed_ok;
    ASSERT_LE(h->ns.size(), 128u);
    std::vector<uint8_t> payload_copy(exact.begin() + kRecordHeaderBytes, exact.end());
    absl::Status s = DecodeRecordPayload(*h, payload_copy.empty() ? nullptr : payload_copy.data(),
                                         payload_copy.size(), out.data(), out.size());
    if (s.ok()) {
      ++decoded_ok;
    } else {
      EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                  s.code() == absl::StatusCode::kInvalidArgument)
          << s;
      EXPECT_FALSE(mutation == 4 && size == bytes.size()) << "intact record refused: " << s;
      zstd_refused += Contains(s, "zstd") || Contains(s, "decodes to");
    }
  }
  // The run reached every stage: parser, decoder, and zstd on checksummed garbage.
  EXPECT_GT(parsed_ok, 100);
  EXPECT_GT(decoded_ok, 100);
  EXPECT_GT(zstd_refused, 10);
}

// ------------------------------------------------------------------ quantized codecs (lossy)

// A Llama-like slice: 2 layers x 4 kv heads x 64 dim x 16 tokens; 32 KiB in fp16 / bf16.
Geometry QuantGeometry(DType dtype) { return Geometry{2, 4, 64, dtype, 16}; }

size_t RoundUp16(size_t n) { return (n + 15) / 16 * 16; }

class QuantizedRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = quantized_kv::TestSeed();
    rng_.seed(seed_);
  }
  std::string Seed() const {
    return absl::StrFormat("seed %d (KVTIER_TEST_SEED=%d reproduces)", seed_, seed_);
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(QuantizedRecordTest, RoundTripIsTheKernelsRoundTripWithinTheFormatsBounds) {
  SCOPED_TRACE(Seed());
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    const Geometry g = QuantGeometry(dtype);
    const std::vector<uint8_t> raw = quantized_kv::RandomBlock(g, rng_);
    for (Codec codec : {Codec::kFp8, Codec::kInt8}) {
      SCOPED_TRACE(absl::StrFormat("%s %s", DTypeName(dtype), CodecName(codec)));
      const QuantFormat format = CodecQuantFormat(codec);
      Encoded e = MustEncodeQuantized(raw, g, codec);
      ASSERT_EQ(e.written.codec, codec);
      // Exact sizes: one byte per element rounded up to 16, then a float per (layer, K/V,
      // head), rounded up to 16; the record is a header and that payload in whole pages.
      const size_t elements = g.block_bytes() / g.element_bytes();
      const size_t expected =
          RoundUp16(RoundUp16(elements) + 4 * 2 * g.num_layers * g.num_kv_heads);
      EXPECT_EQ(expected, QuantizedBlockBytes(g, format));
      EXPECT_EQ(e.written.stored_bytes, expected);
      EXPECT_EQ(e.written.raw_bytes, g.block_bytes());
      EXPECT_EQ(e.record_bytes, RecordSize(expected));
      // 16,384 payload bytes + 64 of scales = 16,448 stored: 0.502 of a 2-byte block, 0.251
      // of a 4-byte one; the record (header included) 24 KiB against 36 or 68 KiB raw.
      const double ratio = static_cast<double>(e.written.stored_bytes) / g.block_bytes();
      EXPECT_GT(ratio, 1.0 / g.element_bytes());
      EXPECT_LT(ratio, 1.01 / g.element_bytes());
      EXPECT_EQ(e.record_bytes, 24u * 1024);

      absl::StatusOr<RecordHeader> h = ParseRecordHeader(e.buffer.get(), e.record_bytes);
      ASSERT_TRUE(h.ok()) << h.status();
      EXPECT_EQ(h->codec, codec);
      EXPECT_EQ(h->element_bytes, 0);
      ASSERT_TRUE(h->geometry.has_value());
      EXPECT_EQ(*h->geometry, g);
      absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
      ASSERT_TRUE(back.ok()) << back.status();
      // Decoding is exactly DequantizeBlocksCpu(QuantizeBlocksCpu(block)) ...
      EXPECT_EQ(*back, quantized_kv::ReferenceRoundTrip(g, format, raw));
      // ... and within the error bounds the format promises for every element.
      quantized_kv::ExpectDequantizedWithinBounds(g, format, raw, *back);
      // The payload is the quantized block itself.
      std::vector<uint8_t> quantized(expected);
      QuantizeParams p;
      p.geometry = g;
      p.format = format;
      p.num_blocks = 1;
      p.src_stride = g.block_bytes();
      p.dst_stride = expected;
      QuantizeBlocksCpu(p, raw.data(), quantized.data());
      EXPECT_EQ(std::memcmp(e.buffer.get() + kRecordHeaderBytes, quantized.data(), expected), 0);
    }
  }
}

TEST_F(QuantizedRecordTest, HeaderCarriesTheGeometryAtItsDocumentedOffsets) {
  SCOPED_TRACE(Seed());
  const Geometry g = QuantGeometry(DType::kBFloat16);
  Encoded e = MustEncodeQuantized(quantized_kv::RandomBlock(g, rng_), g, Codec::kInt8);
  const uint8_t* p = e.buffer.get();
  EXPECT_EQ(ReadU32(p + kOffVersion), 1u);  // the format version did not change
  EXPECT_EQ(p[kOffCodec], 4);
  EXPECT_EQ(p[kOffElementBytes], 0);
  EXPECT_EQ(ReadU64(p + kOffGeometry), g.Fingerprint());
  EXPECT_EQ(p[kOffGeomDtype], 2);  // DType::kBFloat16
  for (size_t i = kOffGeomDtype + 1; i < kOffGeomLayers; ++i) EXPECT_EQ(p[i], 0) << i;
  EXPECT_EQ(ReadU32(p + kOffGeomLayers), 2u);
  EXPECT_EQ(ReadU32(p + kOffGeomKvHeads), 4u);
  EXPECT_EQ(ReadU32(p + kOffGeomHeadDim), 64u);
  EXPECT_EQ(ReadU32(p + kOffGeomBlockTokens), 16u);
  for (size_t i = kOffNamespace + 8; i < kOffGeomDtype; ++i) ASSERT_EQ(p[i], 0) << i;
  for (size_t i = kOffGeomBlockTokens + 4; i < kOffHeaderChecksum; ++i) ASSERT_EQ(p[i], 0) << i;
  EXPECT_EQ(ReadU64(p + kOffHeaderChecksum), XXH3_64bits(p, kOffHeaderChecksum));
  // Under fp8 the codec byte is 3; lossless records leave the geometry bytes zero.
  const Encoded fp8 = MustEncodeQuantized(quantized_kv::RandomBlock(g, rng_), g, Codec::kFp8);
  EXPECT_EQ(fp8.buffer[kOffCodec], 3);
  Encoded lossless = MustEncode(Fp16Like(kBlock, 30), Codec::kZstdShuffle);
  for (size_t i = kOffGeomDtype; i < kOffGeomBlockTokens + 4; ++i) {
    ASSERT_EQ(lossless.buffer[i], 0) << i;
  }
}

TEST_F(QuantizedRecordTest, BlocksThatWouldNotSaveAPageAreStoredExactly) {
  SCOPED_TRACE(Seed());
  // 8 KiB fp16 blocks quantize to 4,160 bytes: still two pages, as the raw block.
  const Geometry small{4, 2, 16, DType::kFloat16, 16};
  ASSERT_EQ(small.block_bytes(), 8192u);
  const std::vector<uint8_t> raw = quantized_kv::RandomBlock(small, rng_);
  for (Codec codec : {Codec::kFp8, Codec::kInt8}) {
    Encoded e = MustEncodeQuantized(raw, small, codec);
    EXPECT_EQ(e.written.codec, Codec::kNone);
    EXPECT_FALSE(e.written.geometry.has_value());
    absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, raw);
  }
  // 12 KiB fp16 blocks quantize to 6,208 bytes: two pages instead of three, so they are.
  const Geometry twelve{6, 2, 16, DType::kFloat16, 16};
  const std::vector<uint8_t> raw12 = quantized_kv::RandomBlock(twelve, rng_);
  EXPECT_EQ(MustEncodeQuantized(raw12, twelve, Codec::kInt8).written.codec, Codec::kInt8);
}

TEST_F(QuantizedRecordTest, CorruptedPayloadIsDataLossNeverWrongValues) {
  SCOPED_TRACE(Seed());
  const Geometry g = QuantGeometry(DType::kFloat16);
  const std::vector<uint8_t> raw = quantized_kv::RandomBlock(g, rng_);
  for (Codec codec : {Codec::kFp8, Codec::kInt8}) {
    SCOPED_TRACE(CodecName(codec));
    Encoded e = MustEncodeQuantized(raw, g, codec);
    const size_t scales = QuantizedScalesOffset(g);
    // A code byte, a scale's byte, and the last stored byte (padding after the scales).
    for (size_t at : {size_t{0}, size_t{777}, scales + 5, size_t{e.written.stored_bytes - 1}}) {
      e.buffer[kRecordHeaderBytes + at] ^= 0x10;
      absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
      EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss) << at;
      EXPECT_TRUE(Contains(back.status(), "payload_checksum")) << back.status();
      e.buffer[kRecordHeaderBytes + at] ^= 0x10;
    }
    // Truncated: DataLoss too.
    std::vector<uint8_t> out(raw.size());
    absl::Status s = DecodeRecordPayload(e.written, e.buffer.get() + kRecordHeaderBytes,
                                         e.written.stored_bytes - 1, out.data(), out.size());
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(e.buffer.get(), e.record_bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, quantized_kv::ReferenceRoundTrip(g, CodecQuantFormat(codec), raw));
  }
}

// Corrupts a quantized record's header, reseals it, and expects DataLoss naming `field`.
void ExpectQuantizedHeaderDataLoss(void (*corrupt)(uint8_t*), absl::string_view field) {
  const Geometry g = QuantGeometry(DType::kFloat16);
  Encoded e = MustEncodeQuantized(Fp16Like(g.block_bytes(), 31), g, Codec::kFp8);
  ASSERT_EQ(e.written.codec, Codec::kFp8);
  corrupt(e.buffer.get());
  Reseal(e.buffer.get());
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(e.buffer.get(), e.record_bytes);
  ASSERT_FALSE(h.ok()) << "corrupted " << field << " was accepted";
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << h.status();
  EXPECT_TRUE(Contains(h.status(), field)) << h.status();
}

TEST(DiskRecord, EachBadQuantizedFieldIsDataLossNamingIt) {
  // A geometry that is not the fingerprinted one (same sizes, other shape): refused.
  ExpectQuantizedHeaderDataLoss(
      [](uint8_t* p) {
        WriteU32(p + kOffGeomKvHeads, 8);
        WriteU32(p + kOffGeomHeadDim, 32);
      },
      "geometry_fingerprint");
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { p[kOffGeomDtype] = 0; }, "dtype");
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { p[kOffGeomDtype] = 9; }, "dtype");
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { WriteU32(p + kOffGeomLayers, 0); }, "geometry");
  // A bf16 block has the fp16 block's size but another fingerprint.
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { p[kOffGeomDtype] = 2; }, "geometry_fingerprint");
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { p[kOffGeomDtype + 1] = 1; }, "padding");
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { p[kOffGeomBlockTokens + 4] = 1; }, "padding");
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { p[kOffElementBytes] = 2; }, "element_bytes");
  ExpectQuantizedHeaderDataLoss(
      [](uint8_t* p) { WriteU32(p + kOffStoredBytes, ReadU32(p + kOffStoredBytes) - 16); },
      "stored_bytes");
  ExpectQuantizedHeaderDataLoss(
      [](uint8_t* p) { WriteU32(p + kOffRawBytes, ReadU32(p + kOffRawBytes) + 4096); },
      "raw_bytes");
  // The same geometry bytes under a lossless codec are unassigned, hence refused.
  ExpectQuantizedHeaderDataLoss([](uint8_t* p) { p[kOffCodec] = 1; }, "padding");
}

TEST(DiskRecord, DecodeChecksAQuantizedHeaderItIsGiven) {
  const Geometry g = QuantGeometry(DType::kFloat16);
  Encoded e = MustEncodeQuantized(Fp16Like(g.block_bytes(), 32), g, Codec::kInt8);
  ASSERT_EQ(e.written.codec, Codec::kInt8);
  std::vector<uint8_t> out(g.block_bytes());
  const uint8_t* payload = e.buffer.get() + kRecordHeaderBytes;
  auto decode = [&](const RecordHeader& h) {
    return DecodeRecordPayload(h, payload, e.written.stored_bytes, out.data(), out.size());
  };
  ASSERT_TRUE(decode(e.written).ok());
  RecordHeader h = e.written;
  h.geometry.reset();
  EXPECT_TRUE(Contains(decode(h), "geometry missing")) << decode(h);
  h = e.written;
  h.geometry->num_layers = 4;
  EXPECT_EQ(decode(h).code(), absl::StatusCode::kDataLoss);
  h = e.written;
  h.codec = Codec::kZstd;  // a lossless codec with a geometry
  EXPECT_TRUE(Contains(decode(h), "geometry set")) << decode(h);
  h = e.written;
  h.codec = Codec::kFp8;  // the same sizes, but the bytes were quantized as int8: the payload
  EXPECT_TRUE(decode(h).ok());  // checksum is all that ties them; the tier checks the index
}

TEST(DiskRecord, BadQuantizedEncodeOptionsAreInvalidArgument) {
  const Geometry g = QuantGeometry(DType::kFloat16);
  const size_t bytes = g.block_bytes();
  const size_t cap = MaxRecordSize(bytes);
  EncodeOptions o;
  o.codec = Codec::kFp8;
  ExpectEncodeInvalid(HeaderFor(g), bytes, o, cap, 0, "EncodeOptions.geometry");
  o.geometry = g;
  ExpectEncodeInvalid(HeaderFor(g), bytes - 2, o, cap, 0, "raw_bytes");
  ExpectEncodeInvalid(SampleHeader(), bytes, o, cap, 0, "geometry_fingerprint");
  o.geometry->num_layers = 0;
  ExpectEncodeInvalid(HeaderFor(g), bytes, o, cap, 0, "num_layers");
  // In place (raw at the payload position) cannot work for a quantized codec.
  o.geometry = g;
  o.codec = Codec::kInt8;
  const std::vector<uint8_t> raw = Fp16Like(bytes, 33);
  AlignedBuffer out = Aligned(cap);
  std::memcpy(out.get() + kRecordHeaderBytes, raw.data(), bytes);
  absl::StatusOr<size_t> n = EncodeRecord(HeaderFor(g), out.get() + kRecordHeaderBytes, bytes, o,
                                          out.get(), cap, nullptr);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << n.status();
  EXPECT_TRUE(Contains(n.status(), "overlap")) << n.status();
}

// ---------------------------------------------------------------- format version 2

Geometry MlaGeometry(DType dtype) {
  Geometry g{3, 1, 96, dtype, 16};  // a small DeepSeek-like latent: 64 + 32 rope
  g.kind = KvKind::kLatent;
  g.rope_dim = 32;
  return g;
}

Geometry ShardGeometry() {
  return *Geometry{2, 8, 32, DType::kBFloat16, 16}.ForTensorParallelRank(1, 4);
}

TEST(DiskRecordV2, ExtendedGeometriesRoundTripUnderEveryCodecAsVersion2) {
  const uint64_t seed = quantized_kv::TestSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  for (const Geometry& g : {MlaGeometry(DType::kBFloat16), ShardGeometry()}) {
    SCOPED_TRACE(g.ToString());
    const std::vector<uint8_t> raw = quantized_kv::RandomBlock(g, rng);
    for (Codec codec :
         {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle, Codec::kFp8, Codec::kInt8}) {
      SCOPED_TRACE(CodecName(codec));
      Encoded e = MustEncodeQuantized(raw, g, codec);
      const uint8_t* p = e.buffer.get();
      EXPECT_EQ(ReadU32(p + kOffVersion), 2u);
      EXPECT_EQ(e.written.format_version(), 2u);
      ASSERT_TRUE(e.written.geometry.has_value());
      EXPECT_EQ(*e.written.geometry, g);
      // The whole geometry at its documented offsets, under every codec.
      EXPECT_EQ(p[kOffGeomDtype], static_cast<uint8_t>(g.dtype));
      EXPECT_EQ(ReadU32(p + kOffGeomLayers), g.num_layers);
      EXPECT_EQ(ReadU32(p + kOffGeomKvHeads), g.num_kv_heads);
      EXPECT_EQ(ReadU32(p + kOffGeomHeadDim), g.head_dim);
      EXPECT_EQ(ReadU32(p + kOffGeomBlockTokens), g.block_tokens);
      EXPECT_EQ(p[kOffGeomKind], static_cast<uint8_t>(g.kind));
      for (size_t i = kOffGeomKind + 1; i < kOffGeomRopeDim; ++i) EXPECT_EQ(p[i], 0) << i;
      EXPECT_EQ(ReadU32(p + kOffGeomRopeDim), g.rope_dim);
      EXPECT_EQ(ReadU32(p + kOffGeomHeadBegin), g.kv_head_begin);
      EXPECT_EQ(ReadU32(p + kOffGeomTotalHeads), g.total_kv_heads);
      for (size_t i = kOffGeomTotalHeads + 4; i < kOffHeaderChecksum; ++i) {
        ASSERT_EQ(p[i], 0) << i;
      }
      absl::StatusOr<RecordHeader> h = ParseRecordHeader(p, e.record_bytes);
      ASSERT_TRUE(h.ok()) << h.status();
      ASSERT_TRUE(h->geometry.has_value());
      EXPECT_EQ(*h->geometry, g);
      absl::StatusOr<std::vector<uint8_t>> back = ParseAndDecode(p, e.record_bytes);
      ASSERT_TRUE(back.ok()) << back.status();
      if (!IsQuantizedCodec(codec)) {
        EXPECT_EQ(*back, raw);  // lossless: byte for byte
      } else {
        EXPECT_EQ(back->size(), raw.size());
      }
    }
  }
}

TEST(DiskRecordV2, LegacyGeometriesStillWriteVersion1BitForBit) {
  // Given its (kind kv, unsharded) geometry, a lossless record is exactly what it was before
  // version 2 existed: version 1, geometry bytes zero.
  const Geometry g{2, 4, 64, DType::kFloat16, 16};
  std::mt19937_64 rng(7);
  Encoded with = MustEncodeQuantized(quantized_kv::RandomBlock(g, rng), g, Codec::kNone);
  EXPECT_EQ(ReadU32(with.buffer.get() + kOffVersion), 1u);
  for (size_t i = kOffGeomDtype; i < kOffHeaderChecksum; ++i) {
    ASSERT_EQ(with.buffer[i], 0) << i;
  }
  EXPECT_FALSE(with.written.geometry.has_value());
  EXPECT_EQ(with.written.format_version(), 1u);
}

// Corrupts a version 2 record's header, reseals it, and expects DataLoss naming `what`.
void ExpectV2DataLoss(void (*corrupt)(uint8_t*), absl::string_view what) {
  const Geometry g = MlaGeometry(DType::kBFloat16);
  std::mt19937_64 rng(11);
  Encoded e = MustEncodeQuantized(quantized_kv::RandomBlock(g, rng), g, Codec::kZstd);
  corrupt(e.buffer.get());
  Reseal(e.buffer.get());
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(e.buffer.get(), e.record_bytes);
  ASSERT_FALSE(h.ok()) << "corruption naming " << what << " was accepted";
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << h.status();
  EXPECT_TRUE(Contains(h.status(), what)) << h.status();
}

TEST(DiskRecordV2, EachBadGeometryFieldIsDataLossNamingIt) {
  // A version 2 record must carry an extended geometry.
  ExpectV2DataLoss(
      [](uint8_t* p) {
        p[kOffGeomKind] = 0;
        WriteU32(p + kOffGeomRopeDim, 0);
      },
      "not extended");
  ExpectV2DataLoss([](uint8_t* p) { p[kOffGeomKind] = 7; }, "kind = 7");
  ExpectV2DataLoss([](uint8_t* p) { WriteU32(p + kOffGeomRopeDim, 96); }, "rope_dim = 96");
  ExpectV2DataLoss([](uint8_t* p) { WriteU32(p + kOffGeomKvHeads, 2); }, "num_kv_heads = 2");
  ExpectV2DataLoss([](uint8_t* p) { WriteU32(p + kOffGeomTotalHeads, 4); }, "never sharded");
  // Fields that validate but are not the fingerprinted geometry.
  ExpectV2DataLoss([](uint8_t* p) { WriteU32(p + kOffGeomRopeDim, 16); }, "fingerprint");
  ExpectV2DataLoss([](uint8_t* p) { WriteU32(p + kOffGeomLayers, 4); }, "fingerprint");
  // Bytes only version 2 assigns, in a version 1 record (or as a version 1 record).
  ExpectV2DataLoss([](uint8_t* p) { WriteU32(p + kOffVersion, 1); }, "padding");
  ExpectV2DataLoss([](uint8_t* p) { p[kOffGeomKind + 1] = 1; }, "padding");
  ExpectHeaderDataLoss([](uint8_t* p) { p[kOffGeomKind] = 1; }, true, "padding");
}

TEST(DiskRecordV2, EncodeRefusesAnExtendedGeometryThatIsNotTheBlocks) {
  const Geometry g = MlaGeometry(DType::kBFloat16);
  const size_t bytes = g.block_bytes();
  const size_t cap = MaxRecordSize(bytes);
  EncodeOptions o;
  o.codec = Codec::kZstd;
  o.geometry = g;
  ExpectEncodeInvalid(SampleHeader(), bytes, o, cap, 0, "geometry_fingerprint");
  ExpectEncodeInvalid(HeaderFor(g), bytes + 4096, o, MaxRecordSize(bytes + 4096), 0, "raw_bytes");
  o.geometry->num_kv_heads = 2;
  ExpectEncodeInvalid(HeaderFor(g), bytes, o, cap, 0, "num_kv_heads");
}

}  // namespace
}  // namespace kvtier
