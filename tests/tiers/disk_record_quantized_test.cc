// tests/tiers/disk_record_quantized_test.cc — the record codec's lossy codecs and its version-2
// geometries, as a specification. The lossy codecs (fp8, int8) on fresh random fp16 / bf16 /
// fp32 blocks each run: exact record sizes, decoding equal to the quantization kernels' own
// round trip and within the formats' error bounds (tests/tiers/quantized_kv.h), their header
// fields, and their corruptions; extended geometries (MLA latents, tensor-parallel shards)
// round-trip as format version 2 while the legacy ones still write version 1 bit for bit.
// (The lossless codecs and the header: disk_record_test.cc.)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/tiers/disk_record_test_util.h"
#include "tests/tiers/quantized_kv.h"
#include "tiers/disk_record.h"

namespace kvtier {
namespace {

using namespace record_test;  // NOLINT: the shared helpers of disk_record_test_util.h

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
  h.codec = Codec::kFp8;        // the same sizes, but the bytes were quantized as int8: the payload
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
  absl::StatusOr<size_t> n =
      EncodeRecord(HeaderFor(g), out.get() + kRecordHeaderBytes, bytes, o, out.get(), cap, nullptr);
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
