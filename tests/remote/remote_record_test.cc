// Tests of the remote tier's keys and self-verifying values (remote/remote_record.h): round
// trips under every codec, the header layout of docs/remote-format.md, and a verdict for every
// way a value read from Redis can be something other than the block asked for.

#include "remote/remote_record.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/tiers/quantized_kv.h"
#include "xxhash.h"

namespace kvtier::remote {
namespace {

// The header layout of docs/remote-format.md, repeated here on purpose: these tests pin it.
constexpr size_t kOffVersion = 8;
constexpr size_t kOffCodec = 12;
constexpr size_t kOffElementBytes = 13;
constexpr size_t kOffFlags = 14;
constexpr size_t kOffNamespaceBytes = 15;
constexpr size_t kOffKeyHi = 16;
constexpr size_t kOffKeyLo = 24;
constexpr size_t kOffModelId = 32;
constexpr size_t kOffGeometry = 40;
constexpr size_t kOffRawBytes = 48;
constexpr size_t kOffStoredBytes = 52;
constexpr size_t kOffCreated = 56;
constexpr size_t kOffPayloadChecksum = 64;
constexpr size_t kOffNamespace = 72;
constexpr size_t kOffReserved = 200;
constexpr size_t kOffMac = 216;
constexpr size_t kOffHeaderChecksum = 248;

uint64_t ReadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint32_t ReadU32(const uint8_t* p) { return static_cast<uint32_t>(ReadU64(p) & 0xffffffffu); }
void WriteU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void FixHeaderChecksum(uint8_t* header) {
  WriteU64(header + kOffHeaderChecksum, XXH3_64bits(header, kOffHeaderChecksum));
}

// A small fp16 model: 2 layers, 4 kv heads, head_dim 64, 16 tokens: 64 KiB blocks.
Geometry TestGeometry(DType dtype = DType::kFloat16) { return Geometry{2, 4, 64, dtype, 16}; }

constexpr BlockKey kKey{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
constexpr absl::string_view kNs = "tenant-a";

// Random KV values (tests/tiers/quantized_kv.h), each head on its own scale: what the
// quantized codecs' error bounds are stated for.
std::vector<uint8_t> KvBlock(const Geometry& g, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return quantized_kv::RandomBlock(g, rng);
}

// Values of a few significant bits (the low 7 mantissa bits of each fp16 zero), which zstd
// shrinks by far more than the 1/16 a codec must save, with or without the shuffle.
std::vector<uint8_t> CompressibleBlock(const Geometry& g, uint64_t seed) {
  std::vector<uint8_t> block = KvBlock(g, seed);
  for (size_t i = 0; i + 1 < block.size(); i += 2) block[i] &= 0x80;
  return block;
}

struct Record {
  std::vector<uint8_t> value;  // header, then payload: what Redis holds
  Codec codec = Codec::kNone;
  RemoteExpect expect;  // what a reader of this block expects (its views point into statics)
  Geometry geometry;

  uint8_t* header() { return value.data(); }
  uint8_t* payload() { return value.data() + kRemoteHeaderBytes; }
  size_t payload_size() const { return value.size() - kRemoteHeaderBytes; }
};

Record MakeRecord(const std::vector<uint8_t>& raw, const Geometry& g, Codec codec,
                  absl::string_view secret = "", absl::string_view ns = kNs, BlockKey key = kKey) {
  Record r;
  r.geometry = g;
  EncodeOptions options;
  options.codec = codec;
  options.geometry = g;
  std::vector<uint8_t> encoded(MaxRemotePayload(raw.size()));
  Codec used = Codec::kZstd;  // overwritten
  absl::StatusOr<size_t> n =
      EncodeRemotePayload(raw.data(), raw.size(), options, encoded.data(), encoded.size(), &used);
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return r;
  const uint8_t* payload = used == Codec::kNone ? raw.data() : encoded.data();
  RemoteHeader h;
  h.key = key;
  h.ns = std::string(ns);
  h.model_id = RemoteModelId("model-x", g.Fingerprint());
  h.geometry_fingerprint = g.Fingerprint();
  h.codec = used;
  h.element_bytes = used == Codec::kZstdShuffle ? static_cast<uint8_t>(options.element_bytes) : 0;
  h.raw_bytes = static_cast<uint32_t>(raw.size());
  h.stored_bytes = static_cast<uint32_t>(*n);
  h.created_unix_ms = 1700000000123ULL;
  r.value.resize(kRemoteHeaderBytes + *n);
  EXPECT_TRUE(WriteRemoteHeader(h, payload, secret, r.value.data()).ok());
  std::memcpy(r.payload(), payload, *n);
  r.codec = used;
  r.expect.key = key;
  r.expect.ns = ns;
  r.expect.model_id = h.model_id;
  r.expect.geometry_fingerprint = g.Fingerprint();
  r.expect.raw_bytes = h.raw_bytes;
  r.expect.mac_secret = secret;
  return r;
}

struct ReadResult {
  RemoteVerdict verdict = RemoteVerdict::kCorrupt;
  std::vector<uint8_t> raw;
};

// What a reader does with a value: the header, then (if accepted) the payload.
ReadResult Read(const uint8_t* value, size_t size, const RemoteExpect& expect, const Geometry& g) {
  ReadResult out;
  RemoteHeader h;
  out.verdict = CheckRemoteHeader(value, size, expect, &h);
  if (out.verdict != RemoteVerdict::kOk) return out;
  out.raw.assign(expect.raw_bytes, 0xA5);
  out.verdict = VerifyRemotePayload(value, h, value + kRemoteHeaderBytes, size - kRemoteHeaderBytes,
                                    expect, g, out.raw.data());
  return out;
}
ReadResult Read(Record& r) { return Read(r.value.data(), r.value.size(), r.expect, r.geometry); }
ReadResult ReadAs(Record& r, const RemoteExpect& expect) {
  return Read(r.value.data(), r.value.size(), expect, r.geometry);
}

const Codec kAllCodecs[] = {Codec::kNone, Codec::kZstd, Codec::kZstdShuffle, Codec::kFp8,
                            Codec::kInt8};

TEST(RemoteKey, HasTheDocumentedShape) {
  EXPECT_EQ(RemoteKey("tenant-a", 0x1f, kKey),
            "kvtier:1:tenant-a:000000000000001f:0123456789abcdeffedcba9876543210");
  EXPECT_EQ(RemoteNamespacePattern("tenant-a"), "kvtier:1:tenant-a:*");
  // Glob metacharacters in a namespace match only themselves.
  EXPECT_EQ(RemoteNamespacePattern("a*b?[c]\\"), "kvtier:1:a\\*b\\?\\[c\\]\\\\:*");
}

TEST(RemoteKey, ParseRoundTripsEveryKeyRemoteKeyMakes) {
  for (const std::string& ns :
       {std::string("t"), std::string("a:b:c"), std::string(128, 'n'), std::string("x@y.z-_")}) {
    for (uint64_t model : {uint64_t{0}, uint64_t{0xdeadbeefcafef00dULL}, ~uint64_t{0}}) {
      const std::string key = RemoteKey(ns, model, kKey);
      absl::StatusOr<ParsedRemoteKey> parsed = ParseRemoteKey(key);
      ASSERT_TRUE(parsed.ok()) << key << ": " << parsed.status();
      EXPECT_EQ(parsed->ns, ns);
      EXPECT_EQ(parsed->model_id, model);
      EXPECT_EQ(parsed->key, kKey);
    }
  }
}

TEST(RemoteKey, ParseRejectsGarbage) {
  const std::string good = RemoteKey("ns", 7, kKey);
  std::vector<std::string> bad = {
      "",
      "kvtier:1:",
      "kvtier:2:ns:0000000000000007:0123456789abcdeffedcba9876543210",
      "kvtier:1::0000000000000007:0123456789abcdeffedcba9876543210",    // empty namespace
      "kvtier:1:ns:000000000000007:0123456789abcdeffedcba9876543210",   // 15 hex digits
      "kvtier:1:ns:0000000000000007:0123456789abcdeffedcba987654321",   // 31 hex digits
      "kvtier:1:ns:0000000000000007:0123456789ABCDEFfedcba9876543210",  // upper case
      "kvtier:1:ns:000000000000000g:0123456789abcdeffedcba9876543210",
      "kvtier:1:ns;0000000000000007:0123456789abcdeffedcba9876543210",
      "kvtier:1:ns:0000000000000007;0123456789abcdeffedcba9876543210",
      absl::StrCat("kvtier:1:", std::string(129, 'n'),
                   ":0000000000000007:", "0123456789abcdeffedcba9876543210"),
      "other:1:ns:0000000000000007:0123456789abcdeffedcba9876543210",
      good + "0",
      good.substr(1),
  };
  for (const std::string& key : bad) {
    absl::StatusOr<ParsedRemoteKey> parsed = ParseRemoteKey(key);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << key;
  }
}

TEST(RemoteKey, ModelIdSeparatesModelsAndGeometries) {
  const uint64_t a = RemoteModelId("model-x", 1);
  EXPECT_EQ(a, RemoteModelId("model-x", 1));  // deterministic
  EXPECT_NE(a, RemoteModelId("model-y", 1));
  EXPECT_NE(a, RemoteModelId("model-x", 2));
  EXPECT_NE(RemoteModelId("", 1), RemoteModelId(std::string(1, '\0'), 1));
}

TEST(RemoteRecord, EveryCodecRoundTrips) {
  const Geometry g = TestGeometry();
  const uint64_t seed = quantized_kv::TestSeed();
  SCOPED_TRACE(absl::StrCat("KVTIER_TEST_SEED=", seed));
  for (Codec codec : kAllCodecs) {
    SCOPED_TRACE(CodecName(codec));
    const std::vector<uint8_t> raw =
        IsQuantizedCodec(codec) ? KvBlock(g, seed) : CompressibleBlock(g, seed);
    Record r = MakeRecord(raw, g, codec);
    EXPECT_EQ(r.codec, codec);  // every codec saves 1/16 of these blocks
    ReadResult back = Read(r);
    ASSERT_EQ(back.verdict, RemoteVerdict::kOk) << RemoteVerdictName(back.verdict);
    if (!IsQuantizedCodec(codec)) {
      EXPECT_EQ(back.raw, raw);
      if (codec != Codec::kNone) {
        EXPECT_LT(r.payload_size(), raw.size());
      }
      continue;
    }
    // Exactly the kernels' round trip, and within the format's error bounds.
    const QuantFormat f = CodecQuantFormat(codec);
    EXPECT_EQ(r.payload_size(), QuantizedBlockBytes(g, f));
    EXPECT_EQ(back.raw, quantized_kv::ReferenceRoundTrip(g, f, raw));
    quantized_kv::ExpectDequantizedWithinBounds(g, f, raw, back.raw);
  }
}

TEST(RemoteRecord, QuantizedCodecsTakeEveryFloatDType) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat32}) {
    const Geometry g = TestGeometry(dtype);
    const std::vector<uint8_t> raw = KvBlock(g, 7);
    for (Codec codec : {Codec::kFp8, Codec::kInt8}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " ", DTypeName(dtype)));
      Record r = MakeRecord(raw, g, codec);
      ASSERT_EQ(r.codec, codec);
      ReadResult back = Read(r);
      ASSERT_EQ(back.verdict, RemoteVerdict::kOk);
      quantized_kv::ExpectDequantizedWithinBounds(g, CodecQuantFormat(codec), raw, back.raw);
    }
  }
}

TEST(RemoteRecord, CodecThatSavesLessThanASixteenthFallsBackToNoneWithoutWriting) {
  const Geometry g = TestGeometry();
  std::vector<uint8_t> noise(g.block_bytes());
  std::mt19937_64 rng(3);
  for (uint8_t& b : noise) b = static_cast<uint8_t>(rng());
  EncodeOptions options;
  options.codec = Codec::kZstd;
  std::vector<uint8_t> out(noise.size(), 0x5A);
  Codec used = Codec::kZstd;
  absl::StatusOr<size_t> n =
      EncodeRemotePayload(noise.data(), noise.size(), options, out.data(), out.size(), &used);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(used, Codec::kNone);
  EXPECT_EQ(*n, noise.size());
  // Under kNone the payload is the caller's block: the record round-trips from it.
  Record r = MakeRecord(noise, g, Codec::kZstd);
  EXPECT_EQ(r.codec, Codec::kNone);
  EXPECT_EQ(Read(r).raw, noise);

  // kNone requested: nothing is written, even with no output buffer at all.
  options.codec = Codec::kNone;
  used = Codec::kZstd;
  n = EncodeRemotePayload(noise.data(), noise.size(), options, nullptr, 0, &used);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(used, Codec::kNone);
  EXPECT_EQ(*n, noise.size());

  // int8 of a 1-wide head costs 1 byte per element plus a 4-byte scale per head: larger than
  // the fp16 block, so it is stored exactly.
  const Geometry tiny{1, 8, 1, DType::kFloat16, 1};
  Record small = MakeRecord(KvBlock(tiny, 4), tiny, Codec::kInt8);
  EXPECT_EQ(small.codec, Codec::kNone);
  EXPECT_EQ(Read(small).verdict, RemoteVerdict::kOk);
}

TEST(RemoteRecord, HeaderFieldsAreAtTheirDocumentedOffsets) {
  const Geometry g = TestGeometry();
  Record r = MakeRecord(CompressibleBlock(g, 1), g, Codec::kZstdShuffle, "s3cret");
  const uint8_t* h = r.header();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(h), 8), "TVTREM01");
  EXPECT_EQ(ReadU64(h), kRemoteMagic);
  EXPECT_EQ(ReadU32(h + kOffVersion), kRemoteFormatVersion);
  EXPECT_EQ(h[kOffCodec], static_cast<uint8_t>(Codec::kZstdShuffle));
  EXPECT_EQ(h[kOffElementBytes], 2);
  EXPECT_EQ(h[kOffFlags], 1);  // MAC present
  EXPECT_EQ(h[kOffNamespaceBytes], kNs.size());
  EXPECT_EQ(ReadU64(h + kOffKeyHi), kKey.hi);
  EXPECT_EQ(ReadU64(h + kOffKeyLo), kKey.lo);
  EXPECT_EQ(ReadU64(h + kOffModelId), RemoteModelId("model-x", g.Fingerprint()));
  EXPECT_EQ(ReadU64(h + kOffGeometry), g.Fingerprint());
  EXPECT_EQ(ReadU32(h + kOffRawBytes), g.block_bytes());
  EXPECT_EQ(ReadU32(h + kOffStoredBytes), r.payload_size());
  EXPECT_EQ(ReadU64(h + kOffCreated), 1700000000123ULL);
  EXPECT_EQ(ReadU64(h + kOffPayloadChecksum), XXH3_64bits(r.payload(), r.payload_size()));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(h + kOffNamespace), kNs.size()), kNs);
  for (size_t i = kOffNamespace + kNs.size(); i < kOffMac; ++i) EXPECT_EQ(h[i], 0) << i;
  size_t mac_nonzero = 0;
  for (size_t i = kOffMac; i < kOffHeaderChecksum; ++i) mac_nonzero += h[i] != 0;
  EXPECT_GT(mac_nonzero, 0u);
  EXPECT_EQ(ReadU64(h + kOffHeaderChecksum), XXH3_64bits(h, kOffHeaderChecksum));

  RemoteHeader parsed;
  ASSERT_EQ(CheckRemoteHeader(h, kRemoteHeaderBytes, r.expect, &parsed), RemoteVerdict::kOk);
  EXPECT_EQ(parsed.key, kKey);
  EXPECT_EQ(parsed.ns, kNs);
  EXPECT_TRUE(parsed.has_mac);
  EXPECT_EQ(parsed.codec, Codec::kZstdShuffle);
  EXPECT_EQ(parsed.stored_bytes, r.payload_size());

  // Without a secret the MAC field is zero and the flag clear.
  Record plain = MakeRecord(KvBlock(g, 1), g, Codec::kNone);
  EXPECT_EQ(plain.header()[kOffFlags], 0);
  for (size_t i = kOffMac; i < kOffHeaderChecksum; ++i) EXPECT_EQ(plain.header()[i], 0) << i;
}

TEST(RemoteRecord, NoneVerifiesInPlace) {
  const Geometry g = TestGeometry();
  const std::vector<uint8_t> raw = KvBlock(g, 2);
  Record r = MakeRecord(raw, g, Codec::kNone, "k");
  RemoteHeader h;
  ASSERT_EQ(CheckRemoteHeader(r.header(), kRemoteHeaderBytes, r.expect, &h), RemoteVerdict::kOk);
  // The block received straight into its destination: payload == raw_out.
  EXPECT_EQ(
      VerifyRemotePayload(r.header(), h, r.payload(), r.payload_size(), r.expect, g, r.payload()),
      RemoteVerdict::kOk);
  EXPECT_EQ(std::memcmp(r.payload(), raw.data(), raw.size()), 0);
  r.payload()[raw.size() / 2] ^= 0x10;
  EXPECT_EQ(
      VerifyRemotePayload(r.header(), h, r.payload(), r.payload_size(), r.expect, g, r.payload()),
      RemoteVerdict::kCorrupt);
}

TEST(RemoteRecord, EveryFlippedHeaderByteIsRefused) {
  const Geometry g = TestGeometry();
  const std::vector<uint8_t> raw = CompressibleBlock(g, 5);
  for (absl::string_view secret : {absl::string_view(""), absl::string_view("s3cret")}) {
    for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kInt8}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), secret.empty() ? "" : " with MAC"));
      Record r = MakeRecord(raw, g, codec, secret);
      ASSERT_EQ(r.codec, codec);
      ASSERT_EQ(Read(r).verdict, RemoteVerdict::kOk);
      for (size_t i = 0; i < kRemoteHeaderBytes; ++i) {
        for (uint8_t x : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
          r.header()[i] ^= x;
          const RemoteVerdict v = Read(r).verdict;
          EXPECT_TRUE(v == RemoteVerdict::kCorrupt || v == RemoteVerdict::kBadMac)
              << "byte " << i << " ^ " << int{x} << ": " << RemoteVerdictName(v);
          r.header()[i] ^= x;
        }
      }
      EXPECT_EQ(Read(r).verdict, RemoteVerdict::kOk);
    }
  }
}

TEST(RemoteRecord, CorruptedPayloadIsCorrupt) {
  const Geometry g = TestGeometry();
  const std::vector<uint8_t> raw = CompressibleBlock(g, 6);
  for (Codec codec : kAllCodecs) {
    SCOPED_TRACE(CodecName(codec));
    Record r = MakeRecord(raw, g, codec);
    ASSERT_EQ(r.codec, codec);
    for (size_t at : {size_t{0}, r.payload_size() / 3, r.payload_size() - 1}) {
      r.payload()[at] ^= 0x04;
      EXPECT_EQ(Read(r).verdict, RemoteVerdict::kCorrupt) << at;
      r.payload()[at] ^= 0x04;
    }
    EXPECT_EQ(Read(r).verdict, RemoteVerdict::kOk);
  }
}

TEST(RemoteRecord, TruncatedOrExtendedValuesAreCorrupt) {
  const Geometry g = TestGeometry();
  Record r = MakeRecord(CompressibleBlock(g, 8), g, Codec::kZstd);
  ASSERT_EQ(r.codec, Codec::kZstd);
  const size_t full = r.value.size();
  for (size_t size : {size_t{0}, size_t{1}, kRemoteHeaderBytes - 1, kRemoteHeaderBytes,
                      kRemoteHeaderBytes + 1, full - 1}) {
    EXPECT_EQ(Read(r.value.data(), size, r.expect, g).verdict, RemoteVerdict::kCorrupt) << size;
  }
  EXPECT_EQ(CheckRemoteHeader(nullptr, 0, r.expect, nullptr), RemoteVerdict::kCorrupt);
  r.value.push_back(0);  // a value longer than its header says was not written by this format
  EXPECT_EQ(Read(r.value.data(), r.value.size(), r.expect, g).verdict, RemoteVerdict::kCorrupt);
  EXPECT_EQ(Read(r.value.data(), full, r.expect, g).verdict, RemoteVerdict::kOk);
}

TEST(RemoteRecord, ValidRecordOfAnotherBlockIsNamed) {
  const Geometry g = TestGeometry();
  Record r = MakeRecord(CompressibleBlock(g, 9), g, Codec::kZstdShuffle, "k");
  RemoteExpect other = r.expect;
  other.key.lo ^= 1;
  EXPECT_EQ(ReadAs(r, other).verdict, RemoteVerdict::kWrongKey);
  other = r.expect;
  other.ns = "tenant-b";
  EXPECT_EQ(ReadAs(r, other).verdict, RemoteVerdict::kWrongNamespace);
  other.ns = "tenant-a2";  // a prefix of the other is still another namespace
  EXPECT_EQ(ReadAs(r, other).verdict, RemoteVerdict::kWrongNamespace);
  other = r.expect;
  other.model_id = RemoteModelId("model-y", g.Fingerprint());
  EXPECT_EQ(ReadAs(r, other).verdict, RemoteVerdict::kWrongModel);
  other = r.expect;
  other.geometry_fingerprint = TestGeometry(DType::kBFloat16).Fingerprint();
  EXPECT_EQ(ReadAs(r, other).verdict, RemoteVerdict::kWrongModel);
  other = r.expect;
  other.raw_bytes += 2;
  EXPECT_EQ(ReadAs(r, other).verdict, RemoteVerdict::kWrongModel);

  // A value swapped between two keys of one namespace: each read names it.
  Record r2 = MakeRecord(KvBlock(g, 10), g, Codec::kZstdShuffle, "k", kNs, BlockKey{5, 6});
  std::swap(r.value, r2.value);
  EXPECT_EQ(Read(r).verdict, RemoteVerdict::kWrongKey);
  EXPECT_EQ(Read(r2).verdict, RemoteVerdict::kWrongKey);
}

TEST(RemoteRecord, QuantizedRecordReadWithAnotherGeometryIsWrongModel) {
  const Geometry g = TestGeometry();
  Record r = MakeRecord(KvBlock(g, 11), g, Codec::kFp8);
  RemoteHeader h;
  ASSERT_EQ(CheckRemoteHeader(r.header(), kRemoteHeaderBytes, r.expect, &h), RemoteVerdict::kOk);
  const Geometry other{4, 2, 64, DType::kFloat16, 16};  // same block size, another shape
  ASSERT_EQ(other.block_bytes(), g.block_bytes());
  std::vector<uint8_t> out(g.block_bytes());
  EXPECT_EQ(VerifyRemotePayload(r.header(), h, r.payload(), r.payload_size(), r.expect, other,
                                out.data()),
            RemoteVerdict::kWrongModel);
}

TEST(RemoteRecord, MacVerdicts) {
  const Geometry g = TestGeometry();
  const std::vector<uint8_t> raw = CompressibleBlock(g, 12);
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kFp8}) {
    SCOPED_TRACE(CodecName(codec));
    Record signed_record = MakeRecord(raw, g, codec, "secret-a");
    EXPECT_EQ(Read(signed_record).verdict, RemoteVerdict::kOk);

    // Another tenant's secret.
    RemoteExpect wrong = signed_record.expect;
    wrong.mac_secret = "secret-b";
    EXPECT_EQ(ReadAs(signed_record, wrong).verdict, RemoteVerdict::kBadMac);

    // MAC present, none expected: the record is still good.
    RemoteExpect none = signed_record.expect;
    none.mac_secret = "";
    EXPECT_EQ(ReadAs(signed_record, none).verdict, RemoteVerdict::kOk);

    // A MAC expected, the record has none: refused at the header.
    Record unsigned_record = MakeRecord(raw, g, codec);
    RemoteExpect expect_mac = unsigned_record.expect;
    expect_mac.mac_secret = "secret-a";
    EXPECT_EQ(CheckRemoteHeader(unsigned_record.header(), kRemoteHeaderBytes, expect_mac, nullptr),
              RemoteVerdict::kBadMac);
    // ... and at the payload, if a caller skips the header's verdict.
    RemoteHeader h;
    ASSERT_EQ(
        CheckRemoteHeader(unsigned_record.header(), kRemoteHeaderBytes, unsigned_record.expect, &h),
        RemoteVerdict::kOk);
    std::vector<uint8_t> out(raw.size());
    EXPECT_EQ(VerifyRemotePayload(unsigned_record.header(), h, unsigned_record.payload(),
                                  unsigned_record.payload_size(), expect_mac, g, out.data()),
              RemoteVerdict::kBadMac);

    // A forger without the secret: payload changed, both checksums recomputed so only the MAC
    // can tell.
    Record forged = MakeRecord(raw, g, codec, "secret-a");
    forged.payload()[0] ^= 1;
    WriteU64(forged.header() + kOffPayloadChecksum,
             XXH3_64bits(forged.payload(), forged.payload_size()));
    FixHeaderChecksum(forged.header());
    EXPECT_EQ(Read(forged).verdict, RemoteVerdict::kBadMac);
    // ... or the header's key rewritten to plant the value under another block.
    Record replanted = MakeRecord(raw, g, codec, "secret-a");
    WriteU64(replanted.header() + kOffKeyLo, kKey.lo ^ 0xff);
    FixHeaderChecksum(replanted.header());
    RemoteExpect planted_at = replanted.expect;
    planted_at.key.lo ^= 0xff;
    EXPECT_EQ(ReadAs(replanted, planted_at).verdict, RemoteVerdict::kBadMac);
  }
}

TEST(RemoteRecord, ChecksummedHeaderWithUnassignedBitsIsCorrupt) {
  const Geometry g = TestGeometry();
  Record r = MakeRecord(KvBlock(g, 13), g, Codec::kNone);
  auto expect_corrupt = [&](size_t offset, uint8_t value) {
    Record c = r;
    c.header()[offset] = value;
    FixHeaderChecksum(c.header());
    EXPECT_EQ(Read(c).verdict, RemoteVerdict::kCorrupt) << offset;
  };
  expect_corrupt(kOffFlags, 2);              // unknown flag
  expect_corrupt(kOffNamespaceBytes, 129);   // namespace too long
  expect_corrupt(kOffNamespace + 100, 'x');  // namespace tail
  expect_corrupt(kOffReserved + 3, 1);       // reserved
  expect_corrupt(kOffMac + 5, 1);            // a MAC without its flag
  expect_corrupt(kOffCodec, kNumCodecs);     // unknown codec
  expect_corrupt(kOffCodec, 1);              // zstd, stored == raw: saves nothing
  expect_corrupt(kOffElementBytes, 2);       // element width outside zstd-shuffle
  expect_corrupt(kOffVersion, 2);            // another format version
}

TEST(RemoteRecord, WriterAndEncoderRefuseBadInput) {
  const Geometry g = TestGeometry();
  const std::vector<uint8_t> raw = KvBlock(g, 14);
  uint8_t header[kRemoteHeaderBytes];
  RemoteHeader h;
  h.codec = Codec::kNone;
  h.raw_bytes = h.stored_bytes = static_cast<uint32_t>(raw.size());
  h.ns = std::string(129, 'n');
  EXPECT_EQ(WriteRemoteHeader(h, raw.data(), "", header).code(),
            absl::StatusCode::kInvalidArgument);
  h.ns = "ok";
  EXPECT_TRUE(WriteRemoteHeader(h, raw.data(), "", header).ok());
  h.stored_bytes -= 1;  // none stores the block as is
  EXPECT_EQ(WriteRemoteHeader(h, raw.data(), "", header).code(),
            absl::StatusCode::kInvalidArgument);
  h.codec = Codec::kZstd;  // saves 1 byte of 64 KiB: less than 1/16
  EXPECT_EQ(WriteRemoteHeader(h, raw.data(), "", header).code(),
            absl::StatusCode::kInvalidArgument);
  h.stored_bytes = h.raw_bytes - h.raw_bytes / 16;  // exactly 1/16 saved
  EXPECT_TRUE(WriteRemoteHeader(h, raw.data(), "", header).ok());
  h.raw_bytes = 0;
  EXPECT_EQ(WriteRemoteHeader(h, raw.data(), "", header).code(),
            absl::StatusCode::kInvalidArgument);

  EncodeOptions options;
  options.codec = Codec::kZstd;
  std::vector<uint8_t> out(raw.size());
  Codec used;
  EXPECT_EQ(
      EncodeRemotePayload(raw.data(), 0, options, out.data(), out.size(), &used).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeRemotePayload(raw.data(), raw.size(), options, out.data(), out.size() - 1, &used)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  options.codec = Codec::kFp8;  // no geometry
  EXPECT_EQ(EncodeRemotePayload(raw.data(), raw.size(), options, out.data(), out.size(), &used)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  options.geometry = TestGeometry(DType::kBFloat16);
  options.geometry->num_layers = 1;  // a geometry of another block size
  EXPECT_EQ(EncodeRemotePayload(raw.data(), raw.size(), options, out.data(), out.size(), &used)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  options.codec = Codec::kZstdShuffle;
  options.element_bytes = 3;
  EXPECT_EQ(EncodeRemotePayload(raw.data(), raw.size(), options, out.data(), out.size(), &used)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> both(2 * raw.size());
  options.element_bytes = 2;
  EXPECT_EQ(EncodeRemotePayload(both.data(), raw.size(), options, both.data() + raw.size() / 2,
                                raw.size(), &used)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);  // overlap
}

TEST(RemoteRecord, VerdictsHaveNames) {
  EXPECT_STREQ(RemoteVerdictName(RemoteVerdict::kOk), "ok");
  EXPECT_STREQ(RemoteVerdictName(RemoteVerdict::kCorrupt), "corrupt");
  EXPECT_STREQ(RemoteVerdictName(RemoteVerdict::kWrongKey), "wrong_key");
  EXPECT_STREQ(RemoteVerdictName(RemoteVerdict::kWrongNamespace), "wrong_namespace");
  EXPECT_STREQ(RemoteVerdictName(RemoteVerdict::kWrongModel), "wrong_model");
  EXPECT_STREQ(RemoteVerdictName(RemoteVerdict::kBadMac), "bad_mac");
  EXPECT_STREQ(RemoteVerdictName(RemoteVerdict::kCount), "invalid");
}

}  // namespace
}  // namespace kvtier::remote
