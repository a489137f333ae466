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

// DeepSeek-V3's MLA cache: 61 layers, one 576-wide latent (512 + 64 rope) per token.
Geometry DeepSeekV3(DType dtype) {
  Geometry g{61, 1, 576, dtype, 64};
  g.kind = KvKind::kLatent;
  g.rope_dim = 64;
  return g;
}

TEST(Geometry, MlaBlocksHoldOneLatentPerLayer) {
  const Geometry g = DeepSeekV3(DType::kBFloat16);
  ASSERT_TRUE(g.Validate().ok()) << g.Validate();
  EXPECT_EQ(g.parts(), 1u);
  EXPECT_EQ(g.latent_dim(), 512u);
  EXPECT_EQ(g.token_bytes(), 576u * 2);
  EXPECT_EQ(g.part_bytes(), 64u * 576 * 2);
  EXPECT_EQ(g.layer_bytes(), g.part_bytes());
  EXPECT_EQ(g.block_bytes(), 4'497'408u);  // 61 x 64 x 576 x 2
  EXPECT_EQ(g.bytes_per_token(), 70'272u);
  EXPECT_EQ(g.Offset(0, KvPart::kLatent), 0u);
  EXPECT_EQ(g.Offset(60, KvPart::kLatent), 60u * g.part_bytes());
  EXPECT_EQ(g.Offset(2, KvPart::kLatent, 3), 2u * g.part_bytes() + 3u * 1152);
  EXPECT_EQ(DeepSeekV3(DType::kFp8E4m3).block_bytes(), 2'248'704u);
  // Pretending K = V (two parts of 576) doubles every byte.
  Geometry kv = g;
  kv.kind = KvKind::kKeyValue;
  kv.rope_dim = 0;
  EXPECT_EQ(kv.bytes_per_token(), 2 * g.bytes_per_token());
  EXPECT_EQ(g.ToString(),
            "layers=61 kv_heads=1 head_dim=576 dtype=bf16 block_tokens=64 kind=mla rope_dim=64 "
            "(4497408 B/block)");
}

// The values below were computed independently of this code: the documented 32- and 48-byte
// encodings (common/geometry.cc) built with Python's struct module, hashed by xxhsum -H3.
TEST(Geometry, ExtendedFingerprintsArePinnedAndLegacyOnesUnchanged) {
  EXPECT_EQ(DeepSeekV3(DType::kBFloat16).Fingerprint(), 0x3265422d8cc24330ULL);
  EXPECT_EQ(DeepSeekV3(DType::kFp8E4m3).Fingerprint(), 0x20d00d259ef157ecULL);
  const Geometry llama{32, 8, 128, DType::kFloat16, 16};
  // An explicitly unsharded geometry (all heads of the total) is the legacy one, bit for bit.
  Geometry all = llama;
  all.total_kv_heads = 8;
  EXPECT_FALSE(all.IsExtended());
  EXPECT_EQ(all.Fingerprint(), 0x657cd32b1e9837fdULL);
  EXPECT_EQ(llama.Fingerprint(), 0x657cd32b1e9837fdULL);
  const Geometry r0 = *llama.ForTensorParallelRank(0, 2);
  const Geometry r1 = *llama.ForTensorParallelRank(1, 2);
  EXPECT_EQ(r0.Fingerprint(), 0x925b01f5a117192eULL);
  EXPECT_EQ(r1.Fingerprint(), 0x9d6dc4d38db4c850ULL);
  // The rope split is part of the identity: same bytes per token, another model.
  Geometry other_split = DeepSeekV3(DType::kBFloat16);
  other_split.rope_dim = 32;
  EXPECT_NE(other_split.Fingerprint(), DeepSeekV3(DType::kBFloat16).Fingerprint());
  // An MLA latent and a one-head K=V cache of the same width never share keys.
  Geometry kv576{61, 1, 576, DType::kBFloat16, 64};
  EXPECT_NE(kv576.Fingerprint(), DeepSeekV3(DType::kBFloat16).Fingerprint());
  // Keys of the new geometries are pinned too (the chain encoding is pinned above).
  KeyHasher mla(KeyHash::kXxh3, "default", "deepseek-v3@1",
                DeepSeekV3(DType::kBFloat16).Fingerprint());
  EXPECT_EQ(mla.Chain(mla.root(), Iota(0, 64), "").ToHex(), "70687d3ea97f79ebbd50104328f5a175");
  KeyHasher shard(KeyHash::kXxh3, "default", "llama-test@1", r1.Fingerprint());
  EXPECT_EQ(shard.Chain(shard.root(), Iota(0, 16), "").ToHex(), "0b6040ab3180592d362dfaa0c121c2fe");
}

TEST(Geometry, TensorParallelRanksShardHeadsAndShareReplicatedBytes) {
  const Geometry llama{32, 8, 128, DType::kFloat16, 16};
  // TP = 2: four heads each, disjoint; neither matches the TP = 1 engine.
  const Geometry r0 = *llama.ForTensorParallelRank(0, 2);
  const Geometry r1 = *llama.ForTensorParallelRank(1, 2);
  EXPECT_EQ(r0.num_kv_heads, 4u);
  EXPECT_EQ(r0.kv_head_begin, 0u);
  EXPECT_EQ(r1.kv_head_begin, 4u);
  EXPECT_EQ(r1.total_kv_heads, 8u);
  EXPECT_TRUE(r1.sharded());
  EXPECT_EQ(r1.block_bytes() * 2, llama.block_bytes());
  EXPECT_NE(r0.Fingerprint(), r1.Fingerprint());
  EXPECT_NE(r0.Fingerprint(), llama.Fingerprint());
  EXPECT_EQ(r1.ToString(),
            "layers=32 kv_heads=4 head_dim=128 dtype=fp16 block_tokens=16 kv_head_begin=4 "
            "total_kv_heads=8 (1048576 B/block)");
  // A TP = 4 rank holding heads [0, 2) is not the TP = 2 rank holding [0, 4).
  EXPECT_NE(llama.ForTensorParallelRank(0, 4)->Fingerprint(), r0.Fingerprint());
  // TP = 16 > 8 heads: each head on two consecutive ranks, which share its blocks.
  const Geometry a = *llama.ForTensorParallelRank(2, 16);
  const Geometry b = *llama.ForTensorParallelRank(3, 16);
  EXPECT_EQ(a.num_kv_heads, 1u);
  EXPECT_EQ(a.kv_head_begin, 1u);
  EXPECT_EQ(a.Fingerprint(), b.Fingerprint());
  EXPECT_NE(a.Fingerprint(), llama.ForTensorParallelRank(4, 16)->Fingerprint());
  EXPECT_EQ(a.ReplicasUnder(16), 2u);
  EXPECT_EQ(r0.ReplicasUnder(2), 1u);
  // MQA (one head) at TP = 4: every rank holds the model's only head, as TP = 1 does.
  const Geometry mqa{18, 1, 256, DType::kBFloat16, 16};
  EXPECT_EQ(mqa.ForTensorParallelRank(3, 4)->Fingerprint(), mqa.Fingerprint());
  EXPECT_EQ(mqa.ForTensorParallelRank(3, 4)->ReplicasUnder(4), 4u);
  // MLA: the latent is replicated, every rank's geometry is the TP = 1 one.
  const Geometry mla = DeepSeekV3(DType::kBFloat16);
  for (uint32_t rank = 0; rank < 8; ++rank) {
    EXPECT_EQ(*mla.ForTensorParallelRank(rank, 8), mla);
  }
  EXPECT_EQ(mla.ReplicasUnder(8), 8u);
  // Refusals name what is wrong.
  auto refused = [](absl::StatusOr<Geometry> g, absl::string_view what) {
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(g.status().message().find(what), absl::string_view::npos) << g.status();
  };
  refused(llama.ForTensorParallelRank(2, 2), "tp_rank = 2");
  refused(llama.ForTensorParallelRank(0, 0), "tp_size = 0");
  refused(llama.ForTensorParallelRank(0, 3), "not divisible by tp_size = 3");
  refused(llama.ForTensorParallelRank(0, 12), "not a multiple");
  refused(r1.ForTensorParallelRank(0, 2), "already a shard");
  refused(Geometry{}.ForTensorParallelRank(0, 2), "num_layers");
}

TEST(Geometry, ValidateNamesTheBadFieldOfKindsAndShards) {
  struct Case {
    Geometry g;
    const char* what;
  };
  auto mla = [](auto edit) {
    Geometry g = DeepSeekV3(DType::kBFloat16);
    edit(g);
    return g;
  };
  auto kv = [](auto edit) {
    Geometry g{32, 4, 128, DType::kFloat16, 16};
    edit(g);
    return g;
  };
  const Case cases[] = {
      {mla([](Geometry& g) { g.num_kv_heads = 8; }), "num_kv_heads = 8, must be 1"},
      {mla([](Geometry& g) { g.rope_dim = 576; }), "rope_dim = 576 must be less than head_dim"},
      {mla([](Geometry& g) { g.total_kv_heads = 2; }), "never sharded"},
      {mla([](Geometry& g) { g.kv_head_begin = 1; }), "kv_head_begin = 1"},
      {kv([](Geometry& g) { g.rope_dim = 64; }), "rope_dim = 64 is for kind = mla"},
      {kv([](Geometry& g) { g.kind = static_cast<KvKind>(7); }), "kind = 7"},
      {kv([](Geometry& g) {
         g.kv_head_begin = 6;
         g.total_kv_heads = 8;
       }),
       "outside total_kv_heads = 8"},
      {kv([](Geometry& g) { g.kv_head_begin = 4; }), "kv_head_begin = 4 needs total_kv_heads"},
      {kv([](Geometry& g) { g.total_kv_heads = 5000; }), "total_kv_heads = 5000"},
  };
  for (const Case& c : cases) {
    absl::Status s = c.g.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(s.message().find(c.what), absl::string_view::npos) << s;
  }
  // A whole latent with no rope part recorded is valid (rope_dim 0 < head_dim).
  EXPECT_TRUE(mla([](Geometry& g) { g.rope_dim = 0; }).Validate().ok());
}

// The table of docs/integration.md ("Model shapes"): bytes per token, bf16 and fp8.
TEST(Geometry, ModelShapeTableMatchesTheDocs) {
  struct Row {
    const char* model;
    Geometry g;  // bf16
    size_t bf16, fp8;
  };
  const Row rows[] = {
      {"Llama-3-8B", {32, 8, 128, DType::kBFloat16, 16}, 131'072, 65'536},
      {"Llama-3-70B", {80, 8, 128, DType::kBFloat16, 16}, 327'680, 163'840},
      {"Qwen2.5-7B", {28, 4, 128, DType::kBFloat16, 16}, 57'344, 28'672},
      {"Gemma-2-9B", {42, 8, 256, DType::kBFloat16, 16}, 344'064, 172'032},
      {"Gemma-2B (MQA)", {18, 1, 256, DType::kBFloat16, 16}, 18'432, 9'216},
      {"DeepSeek-V3 (MLA)", DeepSeekV3(DType::kBFloat16), 70'272, 35'136},
      {"DeepSeek-V3 as K = V", {61, 1, 576, DType::kBFloat16, 64}, 140'544, 70'272},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.model);
    ASSERT_TRUE(r.g.Validate().ok());
    EXPECT_EQ(r.g.bytes_per_token(), r.bf16);
    Geometry fp8 = r.g;
    fp8.dtype = DType::kFp8E4m3;
    EXPECT_EQ(fp8.bytes_per_token(), r.fp8);
    EXPECT_EQ(r.g.block_bytes(), r.g.bytes_per_token() * r.g.block_tokens);
  }
  // The docs' ratio: K = V doubles an MLA latent.
  EXPECT_EQ(rows[6].bf16, 2 * rows[5].bf16);
}

TEST(Geometry, ParseKvKind) {
  EXPECT_EQ(*ParseKvKind("MLA"), KvKind::kLatent);
  EXPECT_EQ(*ParseKvKind("latent"), KvKind::kLatent);
  EXPECT_EQ(*ParseKvKind("kv"), KvKind::kKeyValue);
  EXPECT_EQ(*ParseKvKind("gqa"), KvKind::kKeyValue);
  EXPECT_EQ(ParseKvKind("kv2").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_STREQ(KvKindName(KvKind::kLatent), "mla");
  EXPECT_STREQ(KvKindName(static_cast<KvKind>(9)), "invalid");
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
