// Block keys: golden vectors pin the exact encoding (they were computed independently from
// the encoding documented in engine/keys.cc, with Python's hashlib and the xxhsum tool), so a
// change that would silently invalidate every cache on disk fails here.

#include <vector>

#include "gtest/gtest.h"
#include "kvtier/block_key.h"
#include "kvtier/geometry.h"

namespace kvtier {
namespace {

constexpr uint64_t kGeom = 0x0123456789abcdefULL;

std::vector<int32_t> Iota(int32_t from, int n) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = from + i;
  return v;
}

TEST(BlockKey, Sha256GoldenVectors) {
  KeyHasher h(KeyHash::kSha256, "default", "llama-test@1", kGeom);
  EXPECT_EQ(h.root().ToHex(), "1451d32f4c9790efbefbc298ca3c46b1");
  const BlockKey b0 = h.Chain(h.root(), Iota(0, 16), "");
  EXPECT_EQ(b0.ToHex(), "2b8b6b23dce0c8b80a8e5ed67d83fd84");
  std::vector<int32_t> t1 = {-1, 2147483647};
  for (int32_t t : Iota(100, 14)) t1.push_back(t);
  EXPECT_EQ(h.Chain(b0, t1, "lora:7").ToHex(), "2a41fe54dc59d3166c77300da3b6f7c8");
}

TEST(BlockKey, Xxh3GoldenVectors) {
  KeyHasher h(KeyHash::kXxh3, "default", "llama-test@1", kGeom);
  EXPECT_EQ(h.root().ToHex(), "da0db73578b9053d76fd1587532cd0ec");
  const BlockKey b0 = h.Chain(h.root(), Iota(0, 16), "");
  EXPECT_EQ(b0.ToHex(), "769472fbb70503a10b6ca02ad2ca8721");
  std::vector<int32_t> t1 = {-1, 2147483647};
  for (int32_t t : Iota(100, 14)) t1.push_back(t);
  EXPECT_EQ(h.Chain(b0, t1, "lora:7").ToHex(), "80318c245381bd3c235088d04932a594");
}

TEST(BlockKey, KeysChainSoSharedPrefixesShareKeys) {
  for (KeyHash hash : {KeyHash::kSha256, KeyHash::kXxh3}) {
    KeyHasher h(hash, "ns", "m", kGeom);
    std::vector<int32_t> a = Iota(0, 64);
    std::vector<int32_t> b = a;
    b[40] = 9999;  // differs in block 2 (tokens 32..47)
    const std::vector<BlockKey> ka = h.Keys(a, 16, "");
    const std::vector<BlockKey> kb = h.Keys(b, 16, "");
    ASSERT_EQ(ka.size(), 4u);
    ASSERT_EQ(kb.size(), 4u);
    EXPECT_EQ(ka[0], kb[0]);
    EXPECT_EQ(ka[1], kb[1]);
    EXPECT_NE(ka[2], kb[2]);
    EXPECT_NE(ka[3], kb[3]);  // chained: everything after a difference differs
    EXPECT_EQ(ka[0], h.Chain(h.root(), absl::MakeSpan(a).subspan(0, 16), ""));
  }
}

TEST(BlockKey, PartialTrailingBlockHasNoKey) {
  KeyHasher h(KeyHash::kXxh3, "ns", "m", kGeom);
  EXPECT_EQ(h.Keys(Iota(0, 47), 16, "").size(), 2u);
  EXPECT_TRUE(h.Keys(Iota(0, 15), 16, "").empty());
}

TEST(BlockKey, NamespaceModelGeometryAndExtraAllSeparateKeys) {
  const std::vector<int32_t> t = Iota(0, 16);
  auto key = [&](absl::string_view ns, absl::string_view model, uint64_t geom,
                 absl::string_view extra) {
    KeyHasher h(KeyHash::kSha256, ns, model, geom);
    return h.Keys(t, 16, extra)[0];
  };
  const BlockKey base = key("a", "m", 1, "");
  EXPECT_EQ(base, key("a", "m", 1, ""));  // deterministic
  EXPECT_NE(base, key("b", "m", 1, ""));
  EXPECT_NE(base, key("a", "m2", 1, ""));
  EXPECT_NE(base, key("a", "m", 2, ""));
  EXPECT_NE(base, key("a", "m", 1, "salt"));
  // Length-prefixed fields: moving bytes between namespace and model changes the key.
  EXPECT_NE(key("ab", "c", 1, ""), key("a", "bc", 1, ""));
}

TEST(BlockKey, HexRoundTripAndBadInput) {
  const BlockKey k{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  absl::StatusOr<BlockKey> back = BlockKey::FromHex(k.ToHex());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, k);
  EXPECT_EQ(BlockKey::FromHex("0123").status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status bad = BlockKey::FromHex("0123456789abcdef0123456789abcdeg").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("'g'"), absl::string_view::npos) << bad;
}

TEST(Geometry, LayoutOffsetsAndSizes) {
  Geometry g{4, 2, 8, DType::kFloat16, 16};
  ASSERT_TRUE(g.Validate().ok());
  EXPECT_EQ(g.token_bytes(), 2u * 8 * 2);
  EXPECT_EQ(g.part_bytes(), 16u * 32);
  EXPECT_EQ(g.layer_bytes(), 2u * 512);
  EXPECT_EQ(g.block_bytes(), 4u * 1024);
  EXPECT_EQ(g.Offset(0, KvPart::kKey), 0u);
  EXPECT_EQ(g.Offset(0, KvPart::kValue), 512u);
  EXPECT_EQ(g.Offset(3, KvPart::kValue), 3u * 1024 + 512);
  EXPECT_EQ(g.Offset(1, KvPart::kKey, 5), 1024u + 5 * 32);
}

TEST(Geometry, FingerprintIsPinned) {
  Geometry g{32, 8, 128, DType::kFloat16, 16};
  EXPECT_EQ(g.Fingerprint(), 0x657cd32b1e9837fdULL);
  Geometry other = g;
  other.dtype = DType::kBFloat16;
  EXPECT_NE(other.Fingerprint(), g.Fingerprint());
}

TEST(Geometry, Fp8GeometriesAreOneBytePerElementWithTheirOwnFingerprints) {
  const Geometry fp16{32, 8, 128, DType::kFloat16, 16};
  Geometry e4m3 = fp16, e5m2 = fp16;
  e4m3.dtype = DType::kFp8E4m3;
  e5m2.dtype = DType::kFp8E5m2;
  ASSERT_TRUE(e4m3.Validate().ok());
  EXPECT_EQ(e4m3.element_bytes(), 1u);
  EXPECT_EQ(e4m3.block_bytes() * 2, fp16.block_bytes());
  EXPECT_EQ(e4m3.Offset(1, KvPart::kValue), e4m3.layer_bytes() + e4m3.part_bytes());
  // Pinned: keys of fp8 caches must never change silently.
  EXPECT_EQ(e4m3.Fingerprint(), 0x526c294ca294eab3ULL);
  EXPECT_EQ(e5m2.Fingerprint(), 0x58d48abe7d770a0fULL);
  EXPECT_NE(e4m3.Fingerprint(), e5m2.Fingerprint());
  EXPECT_NE(e4m3.Fingerprint(), fp16.Fingerprint());
  // Same tokens, same model: an e4m3 cache never matches an e5m2 or fp16 one.
  KeyHasher a(KeyHash::kXxh3, "default", "llama-test@1", e4m3.Fingerprint());
  KeyHasher b(KeyHash::kXxh3, "default", "llama-test@1", e5m2.Fingerprint());
  KeyHasher c(KeyHash::kXxh3, "default", "llama-test@1", fp16.Fingerprint());
  const BlockKey ka = a.Chain(a.root(), Iota(0, 16), "");
  EXPECT_EQ(ka.ToHex(), "f3bf46f0fe79fc24364d931bdb6af156");
  EXPECT_NE(ka, b.Chain(b.root(), Iota(0, 16), ""));
  EXPECT_NE(ka, c.Chain(c.root(), Iota(0, 16), ""));
  EXPECT_EQ(e4m3.ToString(),
            "layers=32 kv_heads=8 head_dim=128 dtype=fp8_e4m3 block_tokens=16 (1048576 B/block)");
}

TEST(Geometry, ValidateNamesTheBadField) {
  struct Case {
    Geometry g;
    const char* field;
  };
  const Case cases[] = {
      {{0, 8, 128, DType::kFloat16, 16}, "num_layers"},
      {{32, 0, 128, DType::kFloat16, 16}, "num_kv_heads"},
      {{32, 8, 0, DType::kFloat16, 16}, "head_dim"},
      {{32, 8, 128, DType::kFloat16, 0}, "block_tokens"},
      {{32, 8, 128, static_cast<DType>(9), 16}, "dtype"},
      {{4096, 64, 1024, DType::kFloat32, 4096}, "4 GiB"},
  };
  for (const Case& c : cases) {
    absl::Status s = c.g.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(c.field), absl::string_view::npos) << s;
  }
}

TEST(Geometry, ParseDType) {
  EXPECT_EQ(*ParseDType("bf16"), DType::kBFloat16);
  EXPECT_EQ(*ParseDType("FP16"), DType::kFloat16);
  EXPECT_EQ(*ParseDType("float32"), DType::kFloat32);
  EXPECT_EQ(ParseDType("int3").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseDType("fp8_e4m3"), DType::kFp8E4m3);
  EXPECT_EQ(*ParseDType("E5M2"), DType::kFp8E5m2);
  EXPECT_EQ(ParseDType("fp8").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
