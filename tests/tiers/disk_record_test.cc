// tests/tiers/disk_record_test.cc — the on-disk record codec, as a specification.
//
// Round trips for every codec on fp16-like KV data and on incompressible bytes; the byte
// layout of docs/disk-format.md pinned at its offsets; every header corruption, payload
// corruption and truncation answered with DataLoss naming what is wrong (never wrong data);
// bad arguments answered with InvalidArgument; and a randomized run of garbage through the
// parser and decoder (run under ASan in CI) that must only ever return errors. The lossy
// codecs (fp8, int8) and the version-2 geometries: disk_record_quantized_test.cc; the helpers
// both share: disk_record_test_util.h.

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
#include "tests/tiers/disk_record_test_util.h"
#include "xxhash.h"

namespace kvtier {
namespace {
using namespace record_test;  // NOLINT: the shared helpers of disk_record_test_util.h

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

}  // namespace
}  // namespace kvtier
