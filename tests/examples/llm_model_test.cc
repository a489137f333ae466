// tests/examples/llm_model_test.cc — the example decoder (examples/llm/model.h) and its
// safetensors reader: config checks, deterministic weights, the layer-by-layer API against
// the reference session, chunked prefill, RoPE's relative-position property, activation
// scale, greedy decoding, and safetensors files written here by an independent writer
// (round trips in F32, F16 and BF16, and malformed files).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "examples/llm/model.h"
#include "examples/llm/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/numeric.h"

namespace kvtier::llm {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Small but awkward: ffn_dim % 8 != 0 exercises the dot product's tail, vocab % 4 != 0 the
// matmul's single-row remainder.
ModelConfig SmallConfig() {
  ModelConfig c;
  c.num_layers = 2;
  c.d_model = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 172;
  c.vocab_size = 250;
  return c;
}

std::vector<int32_t> Tokens(size_t n, uint32_t vocab, uint32_t salt) {
  std::vector<int32_t> out(n);
  uint32_t x = 2463534242u ^ salt;
  for (int32_t& t : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    t = static_cast<int32_t>(x % vocab);
  }
  return out;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.0f;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// ------------------------------------------------------------------------------ config

TEST(ModelConfig, DefaultsAreValid) { EXPECT_TRUE(ModelConfig().Validate().ok()); }

TEST(ModelConfig, ErrorsNameTheField) {
  struct Case {
    void (*mutate)(ModelConfig&);
    const char* field;
  };
  const Case cases[] = {
      {[](ModelConfig& c) { c.num_layers = 0; }, "num_layers"},
      {[](ModelConfig& c) { c.d_model = 0; }, "d_model"},
      {[](ModelConfig& c) { c.num_heads = 0; }, "num_heads"},
      {[](ModelConfig& c) { c.num_kv_heads = 0; }, "num_kv_heads"},
      {[](ModelConfig& c) { c.head_dim = 0; }, "head_dim"},
      {[](ModelConfig& c) { c.ffn_dim = 0; }, "ffn_dim"},
      {[](ModelConfig& c) { c.vocab_size = 0; }, "vocab_size"},
      {[](ModelConfig& c) { c.num_kv_heads = 3; }, "num_kv_heads"},
      {[](ModelConfig& c) { c.d_model = 500; }, "d_model"},
      {[](ModelConfig& c) {
         c.head_dim = 63;
         c.num_heads = 8;
         c.d_model = 504;
       },
       "head_dim"},
      {[](ModelConfig& c) { c.rope_theta = 0.5f; }, "rope_theta"},
      {[](ModelConfig& c) { c.norm_eps = 0.0f; }, "norm_eps"},
  };
  for (const Case& tc : cases) {
    ModelConfig c;
    tc.mutate(c);
    const absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << tc.field;
    EXPECT_THAT(s.message(), HasSubstr(tc.field));
    EXPECT_EQ(Model::Random(c, 1).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// ------------------------------------------------------------------------------ weights

TEST(Model, RandomIsDeterministicAndDependsOnTheSeed) {
  absl::StatusOr<Model> a = Model::Random(SmallConfig(), 42);
  absl::StatusOr<Model> b = Model::Random(SmallConfig(), 42);
  absl::StatusOr<Model> c = Model::Random(SmallConfig(), 43);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const auto wa = a->Weights(), wb = b->Weights(), wc = c->Weights();
  ASSERT_EQ(wa.size(), 2u + 9u * SmallConfig().num_layers + 1u);
  size_t differing = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    EXPECT_EQ(wa[i].name, wb[i].name);
    ASSERT_EQ(wa[i].data.size(), wb[i].data.size());
    EXPECT_EQ(0, std::memcmp(wa[i].data.data(), wb[i].data.data(), wa[i].data.size() * 4))
        << wa[i].name;
    if (std::memcmp(wa[i].data.data(), wc[i].data.data(), wa[i].data.size() * 4) != 0) {
      ++differing;
    }
  }
  EXPECT_EQ(differing, 1u + 7u * SmallConfig().num_layers + 1u);  // all but the RMSNorm weights

  // The generator is integer splitmix64 and one rounding: these bits are the same on every
  // machine. A change here changes every "random" model the demo and its users have seen.
  ASSERT_EQ(wa[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(wa[0].data[0], -0x1.dca9p-1f);
  EXPECT_EQ(wa[0].data[1], -0x1.7c8284p-1f);
  EXPECT_EQ(wa[2].data[0], 0x1.abafbep-6f);
}

TEST(Model, WeightsAreScaledByFanIn) {
  absl::StatusOr<Model> model = Model::Random(ModelConfig(), 5);
  ASSERT_TRUE(model.ok());
  for (const Model::NamedWeight& w : model->Weights()) {
    double sum_sq = 0.0;
    for (float v : w.data) sum_sq += double{v} * v;
    const double rms = std::sqrt(sum_sq / w.data.size());
    const double expected = w.shape.size() == 1                     ? 1.0
                            : w.name == "model.embed_tokens.weight" ? 1.0
                                                                    : 1.0 / std::sqrt(w.shape[1]);
    EXPECT_NEAR(rms, expected, 0.05 * expected) << w.name;
  }
}

TEST(Model, EmbedRejectsOutOfRangeIds) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 1);
  ASSERT_TRUE(model.ok());
  const int32_t vocab = static_cast<int32_t>(SmallConfig().vocab_size);
  for (int32_t bad : {-1, vocab, vocab + 1000, INT32_MIN}) {
    const std::vector<int32_t> tokens = {0, bad, 1};
    absl::StatusOr<std::vector<float>> h = model->Embed(tokens);
    EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(h.status().message(), HasSubstr(absl::StrCat("token ", bad)));
  }
  EXPECT_EQ(model->Embed({}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::vector<float>> ok = model->Embed(std::vector<int32_t>{0, vocab - 1});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->size(), 2u * SmallConfig().d_model);

  ReferenceSession session(&*model);
  const std::vector<int32_t> bad_prompt = {3, vocab};
  EXPECT_EQ(session.Prefill(bad_prompt).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(session.position(), 0u);  // unchanged
  EXPECT_EQ(session.Greedy(1).status().code(), absl::StatusCode::kFailedPrecondition);
}

// ------------------------------------------------------------------------- forward pass

// The demo's loop with a host fp16 cache of its own: must equal the reference session bit
// for bit, logits and cache alike, through a prefill and two decode steps.
TEST(Model, LayerByLayerApiMatchesReferenceSession) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 7);
  ASSERT_TRUE(model.ok());
  const ModelConfig& c = model->config();
  ReferenceSession session(&*model);
  std::vector<std::vector<uint16_t>> k_cache(c.num_layers), v_cache(c.num_layers);
  uint32_t pos = 0;

  const std::vector<int32_t> prompt = Tokens(12, c.vocab_size, 1);
  const std::vector<std::vector<int32_t>> chunks = {prompt, {17}, {201}};
  for (const std::vector<int32_t>& chunk : chunks) {
    absl::StatusOr<std::vector<float>> expected = session.Prefill(chunk);
    ASSERT_TRUE(expected.ok());

    absl::StatusOr<std::vector<float>> h = model->Embed(chunk);
    ASSERT_TRUE(h.ok());
    for (uint32_t l = 0; l < c.num_layers; ++l) {
      const Model::QkvOut qkv = model->Qkv(l, *h, pos);
      ASSERT_EQ(qkv.q.size(), chunk.size() * c.q_dim());
      ASSERT_EQ(qkv.k.size(), chunk.size() * c.kv_dim());
      ASSERT_EQ(qkv.v.size(), chunk.size() * c.kv_dim());
      for (float x : qkv.k) k_cache[l].push_back(numeric::FloatToHalfBits(x));
      for (float x : qkv.v) v_cache[l].push_back(numeric::FloatToHalfBits(x));
      const std::vector<float> attn = ReferenceAttention(c, qkv.q, pos, k_cache[l], v_cache[l]);
      model->FinishLayer(l, attn, &*h);
      EXPECT_EQ(k_cache[l], session.k(l)) << "layer " << l;
      EXPECT_EQ(v_cache[l], session.v(l)) << "layer " << l;
    }
    pos += static_cast<uint32_t>(chunk.size());
    const std::vector<float> logits =
        model->Logits(absl::MakeConstSpan(*h).subspan(h->size() - c.d_model));
    ASSERT_EQ(logits.size(), c.vocab_size);
    EXPECT_EQ(logits, *expected);
    EXPECT_EQ(session.position(), pos);
  }
}

// ReferenceAttention by hand on a 1-head case: two keys, the second query sees both.
TEST(ReferenceAttention, MatchesAHandComputation) {
  ModelConfig c;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 2;
  c.d_model = 4;
  const std::vector<float> q = {1, 0, 0, 1,   // t=0: heads 0 and 1
                                2, 0, 0, 0};  // t=1
  const std::vector<uint16_t> k = RoundToHalfBits(std::vector<float>{1, 0, 0, 1});
  const std::vector<uint16_t> v = RoundToHalfBits(std::vector<float>{1, 2, 3, 4});
  const std::vector<float> out = ReferenceAttention(c, q, 0, k, v);
  ASSERT_EQ(out.size(), 8u);
  // t=0 sees only key 0: output is v0 for both heads.
  EXPECT_FLOAT_EQ(out[0], 1.0f);
  EXPECT_FLOAT_EQ(out[1], 2.0f);
  EXPECT_FLOAT_EQ(out[2], 1.0f);
  EXPECT_FLOAT_EQ(out[3], 2.0f);
  // t=1 head 0: scores 2/√2 and 0 → weights softmax([√2, 0]).
  const double w0 = std::exp(std::sqrt(2.0)) / (std::exp(std::sqrt(2.0)) + 1.0);
  EXPECT_NEAR(out[4], w0 * 1 + (1 - w0) * 3, 1e-6);
  EXPECT_NEAR(out[5], w0 * 2 + (1 - w0) * 4, 1e-6);
  // t=1 head 1: q = 0 → uniform.
  EXPECT_NEAR(out[6], 2.0, 1e-6);
  EXPECT_NEAR(out[7], 3.0, 1e-6);
}

// Chunked prefill equals one-shot prefill. Tolerance: max |Δlogit| ≤ 1e-4; by construction
// (per-element matmul order independent of T, fp16 cache on both paths) it is exact.
TEST(Model, ChunkedPrefillMatchesOneShot) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 11);
  ASSERT_TRUE(model.ok());
  const std::vector<int32_t> prompt = Tokens(40, SmallConfig().vocab_size, 2);
  ReferenceSession one_shot(&*model), chunked(&*model);
  absl::StatusOr<std::vector<float>> a = one_shot.Prefill(prompt);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(chunked.Prefill(absl::MakeConstSpan(prompt).subspan(0, 23)).ok());
  absl::StatusOr<std::vector<float>> b = chunked.Prefill(absl::MakeConstSpan(prompt).subspan(23));
  ASSERT_TRUE(b.ok());
  EXPECT_LE(MaxAbsDiff(*a, *b), 1e-4f);
  EXPECT_EQ(*a, *b) << "expected bit-identical logits";
  for (uint32_t l = 0; l < SmallConfig().num_layers; ++l) EXPECT_EQ(one_shot.k(l), chunked.k(l));
}

// RoPE makes q·k depend on the positions only through their difference: shifting both by s
// leaves every head's score unchanged (within 1e-4, float rounding of the rotations).
TEST(Model, RopeScoresDependOnlyOnRelativePosition) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 3);
  ASSERT_TRUE(model.ok());
  const ModelConfig& c = model->config();
  absl::StatusOr<std::vector<float>> hq = model->Embed(std::vector<int32_t>{5});
  absl::StatusOr<std::vector<float>> hk = model->Embed(std::vector<int32_t>{9});
  ASSERT_TRUE(hq.ok() && hk.ok());
  auto scores = [&](uint32_t pq, uint32_t pk) {
    const std::vector<float> q = model->Qkv(0, *hq, pq).q;
    const std::vector<float> k = model->Qkv(0, *hk, pk).k;
    std::vector<double> out;
    for (uint32_t h = 0; h < c.num_heads; ++h) {
      const uint32_t kvh = h / c.group_size();
      double dot = 0.0;
      for (uint32_t i = 0; i < c.head_dim; ++i) {
        dot += double{q[h * c.head_dim + i]} * k[kvh * c.head_dim + i];
      }
      out.push_back(dot);
    }
    return out;
  };
  for (auto [pq, pk] : {std::pair<uint32_t, uint32_t>{7, 3}, {3, 7}, {100, 0}, {5, 5}}) {
    const std::vector<double> base = scores(pq, pk);
    for (uint32_t shift : {1u, 1000u, 100000u, 1000000u}) {
      const std::vector<double> shifted = scores(pq + shift, pk + shift);
      for (size_t h = 0; h < base.size(); ++h) {
        EXPECT_NEAR(base[h], shifted[h], 1e-4) << "pq=" << pq << " pk=" << pk << " s=" << shift;
      }
    }
  }
  // And RoPE does something: a different distance gives a different score.
  EXPECT_GT(std::fabs(scores(7, 3)[0] - scores(3, 7)[0]), 1e-3);
}

// Default config, 4 layers, random tokens: every hidden state finite with rms in [0.1, 10];
// logits finite.
TEST(Model, ActivationsStayFiniteAndOrderOne) {
  absl::StatusOr<Model> model = Model::Random(ModelConfig(), 2024);
  ASSERT_TRUE(model.ok());
  const ModelConfig& c = model->config();
  ASSERT_EQ(c.num_layers, 4u);
  const std::vector<int32_t> tokens = Tokens(48, c.vocab_size, 3);
  absl::StatusOr<std::vector<float>> h = model->Embed(tokens);
  ASSERT_TRUE(h.ok());
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    const Model::QkvOut qkv = model->Qkv(l, *h, 0);
    const std::vector<float> attn =
        ReferenceAttention(c, qkv.q, 0, RoundToHalfBits(qkv.k), RoundToHalfBits(qkv.v));
    model->FinishLayer(l, attn, &*h);
    double min_rms = 1e9, max_rms = 0.0;
    for (size_t t = 0; t < tokens.size(); ++t) {
      double sum_sq = 0.0;
      for (uint32_t i = 0; i < c.d_model; ++i) {
        const float x = (*h)[t * c.d_model + i];
        ASSERT_TRUE(std::isfinite(x)) << "layer " << l << " token " << t;
        sum_sq += double{x} * x;
      }
      const double rms = std::sqrt(sum_sq / c.d_model);
      min_rms = std::min(min_rms, rms);
      max_rms = std::max(max_rms, rms);
    }
    EXPECT_GE(min_rms, 0.1) << "layer " << l;
    EXPECT_LE(max_rms, 10.0) << "layer " << l;
    std::printf("layer %u: hidden rms in [%.3f, %.3f]\n", l, min_rms, max_rms);
  }
  const std::vector<float> logits =
      model->Logits(absl::MakeConstSpan(*h).subspan(h->size() - c.d_model));
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
}

// Each output element is computed the same way whatever thread computes it.
TEST(Model, ThreadCountDoesNotChangeResults) {
  absl::StatusOr<Model> model = Model::Random(ModelConfig(), 77);
  ASSERT_TRUE(model.ok());
  Model single = *model;
  single.set_threads(1);
  model->set_threads(3);
  absl::StatusOr<std::vector<float>> h = model->Embed(Tokens(16, 4096, 9));
  ASSERT_TRUE(h.ok());
  std::vector<float> h1 = *h;
  const Model::QkvOut a = model->Qkv(1, *h, 50);
  const Model::QkvOut b = single.Qkv(1, h1, 50);
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.v, b.v);
  model->FinishLayer(1, a.q, &*h);
  single.FinishLayer(1, b.q, &h1);
  EXPECT_EQ(*h, h1);
}

TEST(ReferenceSession, GreedyDecodingIsReproducible) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 99);
  ASSERT_TRUE(model.ok());
  const std::vector<int32_t> prompt = Tokens(10, SmallConfig().vocab_size, 4);
  std::vector<std::vector<int32_t>> runs;
  for (int run = 0; run < 2; ++run) {
    ReferenceSession session(&*model);
    ASSERT_TRUE(session.Prefill(prompt).ok());
    absl::StatusOr<std::vector<int32_t>> tokens = session.Greedy(8);
    ASSERT_TRUE(tokens.ok());
    ASSERT_EQ(tokens->size(), 8u);
    EXPECT_EQ(session.position(), prompt.size() + 8);
    for (int32_t t : *tokens) {
      EXPECT_GE(t, 0);
      EXPECT_LT(t, static_cast<int32_t>(SmallConfig().vocab_size));
    }
    runs.push_back(*tokens);
  }
  EXPECT_EQ(runs[0], runs[1]);
  std::printf("greedy: %s\n", absl::StrJoin(runs[0], " ").c_str());
}

TEST(Argmax, FirstMaximumAndNaNs) {
  EXPECT_EQ(Argmax({}), -1);
  EXPECT_EQ(Argmax(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(Argmax(std::vector<float>{NAN, -1, NAN, 0.5f}), 3);
  EXPECT_EQ(Argmax(std::vector<float>{NAN}), -1);
}

// ------------------------------------------------------------------------- safetensors

// A safetensors writer independent of the reader under test.
struct FileTensor {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::string bytes;
};

std::string Encode(absl::Span<const float> values, const std::string& dtype) {
  std::string out;
  for (float v : values) {
    if (dtype == "F32") {
      out.append(reinterpret_cast<const char*>(&v), 4);
    } else {
      const uint16_t bits =
          dtype == "F16" ? numeric::FloatToHalfBits(v) : numeric::FloatToBf16Bits(v);
      out.append(reinterpret_cast<const char*>(&bits), 2);
    }
  }
  return out;
}

std::string HeaderJson(const std::vector<FileTensor>& tensors) {
  std::vector<std::string> entries = {
      R"("__metadata__":{"format":"pt","note":"a \"quoted\" \u00e9"})"};
  uint64_t offset = 0;
  for (const FileTensor& t : tensors) {
    entries.push_back(absl::StrCat("\"", t.name, "\":{\"dtype\":\"", t.dtype, "\",\"shape\":[",
                                   absl::StrJoin(t.shape, ","), "],\"data_offsets\":[", offset, ",",
                                   offset + t.bytes.size(), "]}"));
    offset += t.bytes.size();
  }
  return absl::StrCat("{", absl::StrJoin(entries, ","), "}");
}

std::string FileBytes(std::string json, const std::string& data) {
  while (json.size() % 8 != 0) json.push_back(' ');  // as the reference writer pads
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t{json.size()} >> (8 * i)) & 0xff);
  return out + json + data;
}

std::string FileBytes(const std::vector<FileTensor>& tensors) {
  std::string data;
  for (const FileTensor& t : tensors) data += t.bytes;
  return FileBytes(HeaderJson(tensors), data);
}

std::string WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + "/llm_model_test_" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(out.good()) << path;
  return path;
}

// Optionally rounds every weight through `round_dtype` first (kept as F32 in the file).
std::vector<FileTensor> ModelTensors(const Model& model, const std::string& dtype,
                                     bool skip_lm_head = false, const std::string& round = "") {
  std::vector<FileTensor> out;
  for (const Model::NamedWeight& w : model.Weights()) {
    if (skip_lm_head && w.name == "lm_head.weight") continue;
    std::vector<float> values(w.data.begin(), w.data.end());
    for (float& v : values) {
      if (round == "F16") v = numeric::HalfBitsToFloat(numeric::FloatToHalfBits(v));
      if (round == "BF16") v = numeric::Bf16BitsToFloat(numeric::FloatToBf16Bits(v));
    }
    out.push_back({w.name, dtype, w.shape, Encode(values, dtype)});
  }
  return out;
}

std::vector<float> PromptLogits(const Model& model) {
  ReferenceSession session(&model);
  absl::StatusOr<std::vector<float>> logits =
      session.Prefill(Tokens(9, model.config().vocab_size, 5));
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : std::vector<float>{};
}

TEST(Safetensors, F32RoundTripGivesIdenticalLogits) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 21);
  ASSERT_TRUE(model.ok());
  const std::string path = WriteFile("f32.safetensors", FileBytes(ModelTensors(*model, "F32")));

  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("note"), "a \"quoted\" \xc3\xa9");
  EXPECT_EQ(file->tensors().size(), model->Weights().size());

  absl::StatusOr<Model> loaded = Model::FromSafetensors(path, SmallConfig());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(PromptLogits(*loaded), PromptLogits(*model));
}

// F16 and BF16 files: the loaded model equals one loaded from an F32 file of the same
// rounded weights (so the conversion is exact), and stays close to the original.
TEST(Safetensors, F16AndBf16FilesConvertExactly) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 22);
  ASSERT_TRUE(model.ok());
  const std::vector<float> original = PromptLogits(*model);
  for (const std::string dtype : {"F16", "BF16"}) {
    const std::string narrow =
        WriteFile(dtype + ".safetensors", FileBytes(ModelTensors(*model, dtype)));
    const std::string wide = WriteFile(dtype + "_as_f32.safetensors",
                                       FileBytes(ModelTensors(*model, "F32", false, dtype)));
    absl::StatusOr<Model> a = Model::FromSafetensors(narrow, SmallConfig());
    absl::StatusOr<Model> b = Model::FromSafetensors(wide, SmallConfig());
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    const std::vector<float> logits = PromptLogits(*a);
    EXPECT_EQ(logits, PromptLogits(*b)) << dtype;
    // Weight rounding (2^-11 relative for F16, 2^-8 for BF16) moves O(1) logits slightly.
    const float tolerance = dtype == "F16" ? 0.02f : 0.15f;
    const float diff = MaxAbsDiff(logits, original);
    EXPECT_LE(diff, tolerance) << dtype;
    std::printf("%s: max |logit diff| vs F32 weights %g\n", dtype.c_str(), diff);
  }
}

TEST(Safetensors, MissingLmHeadTiesItToTheEmbeddings) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 23);
  ASSERT_TRUE(model.ok());
  const std::string path =
      WriteFile("tied.safetensors", FileBytes(ModelTensors(*model, "F32", /*skip_lm_head=*/true)));
  absl::StatusOr<Model> loaded = Model::FromSafetensors(path, SmallConfig());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto weights = loaded->Weights();
  ASSERT_EQ(weights.back().name, "lm_head.weight");
  ASSERT_EQ(weights.front().name, "model.embed_tokens.weight");
  EXPECT_TRUE(std::equal(weights.back().data.begin(), weights.back().data.end(),
                         weights.front().data.begin(), weights.front().data.end()));
}

TEST(Safetensors, MalformedFilesAreRejectedWithTheReason) {
  absl::StatusOr<Model> model = Model::Random(SmallConfig(), 24);
  ASSERT_TRUE(model.ok());
  const std::vector<FileTensor> tensors = ModelTensors(*model, "F32");
  const std::string good = FileBytes(tensors);
  auto load = [&](const std::string& name, const std::string& bytes) {
    return Model::FromSafetensors(WriteFile(name, bytes), SmallConfig()).status();
  };

  // Missing file.
  absl::Status s =
      Model::FromSafetensors(::testing::TempDir() + "/no_such.safetensors", SmallConfig()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("no_such.safetensors"));

  // Shorter than the length field.
  s = load("tiny", "abc");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("llm_model_test_tiny"), HasSubstr("truncated")));

  // Header length beyond the limit, and beyond the file.
  std::string bad = good;
  bad[7] = 0x01;  // 2^56 + ...
  s = load("huge_header", bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("bad header length"));
  bad = good;
  bad[3] = 0x01;  // + 16 MiB: under the limit, past the end
  s = load("long_header", bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("header length"));

  // Bad JSON: a key without its value.
  s = load("bad_json", FileBytes(std::string(R"({"a": {"dtype": "F32", "shape": [1], )"), ""));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("malformed JSON at byte"), HasSubstr("bad_json")));

  // A missing tensor.
  std::vector<FileTensor> missing = tensors;
  missing.erase(missing.begin() + 3);  // model.layers.0.self_attn.k_proj.weight
  s = load("missing", FileBytes(missing));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("missing tensor \"model.layers.0.self_attn.k_proj.weight\""));

  // A tensor of the wrong shape (the data matches its declared shape).
  std::vector<FileTensor> wrong = tensors;
  ASSERT_EQ(wrong[2].name, "model.layers.0.self_attn.q_proj.weight");
  wrong[2].shape = {32, 128};
  s = load("wrong_shape", FileBytes(wrong));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.layers.0.self_attn.q_proj.weight"),
                                 HasSubstr("[32, 128]"), HasSubstr("[64, 64]")));

  // Offsets that disagree with the shape.
  std::vector<FileTensor> short_data = tensors;
  short_data[1].bytes.resize(short_data[1].bytes.size() - 4);
  s = load("offsets", FileBytes(short_data));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("model.layers.0.input_layernorm.weight"), HasSubstr("needs 256")));

  // Truncated data: the last tensor runs past the end of the file.
  s = load("truncated", good.substr(0, good.size() - 10));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("llm_model_test_truncated"), HasSubstr("lm_head.weight"),
                                 HasSubstr("runs past the end")));

  // An unsupported dtype.
  std::vector<FileTensor> ints = tensors;
  ints[0].dtype = "I32";
  s = load("int_dtype", FileBytes(ints));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.embed_tokens.weight"), HasSubstr("I32")));
}

TEST(Safetensors, HeaderParserRejectsMalformedJson) {
  struct Case {
    std::string json;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"", "expected a value"},
      {"[]", "not an object"},
      {"{", "expected a string key"},
      {R"({"a":1)", "expected ',' or '}'"},
      {R"({"a":1} x)", "unexpected text"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "negative"},
      {R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "non-integer"},
      {R"({"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}})", "64 bits"},
      {R"({"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}})", "leading zero"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{}})", "duplicate key"},
      {R"({"a\q":1})", "unknown escape"},
      {R"({"a\ud800":1})", "surrogate"},
      {"{\"a\n\":1}", "control character"},
      {R"({"a":"unterminated)", "unterminated string"},
      {std::string(100, '[') + std::string(100, ']'), "nesting"},
      {R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "missing \"dtype\""},
      {R"({"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", "unknown dtype"},
      {R"({"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "\"shape\" is a string"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "has 1 entries"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "end before"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
       "overflows"},
      {R"({"__metadata__":{"k":1}})", "not a string"},
  };
  for (const Case& tc : cases) {
    absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(tc.json);
    EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << tc.json;
    EXPECT_THAT(h.status().message(), HasSubstr(tc.error)) << tc.json;
  }
  // Whitespace, escapes, booleans and an empty tensor are fine.
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(
      " {\"a\\u0062\" : {\"dtype\":\"BF16\", \"shape\":[2,0], \"data_offsets\":[8,8], "
      "\"extra\":[true,false,null]}, \"__metadata__\":{}}   ");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 1u);
  EXPECT_EQ(h->tensors[0].name, "ab");
  EXPECT_EQ(h->tensors[0].num_elements(), 0u);
}

// Not a check: the time of one layer (Qkv + FinishLayer, no attention) for the default
// config, single-threaded and with the default thread count, for the record. Layers rotate
// so that, as in real decoding, the weights come from memory rather than the cache.
TEST(Model, LayerStepTiming) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "timings under a sanitizer mean nothing";
#endif
  absl::StatusOr<Model> model = Model::Random(ModelConfig(), 1);
  ASSERT_TRUE(model.ok());
  const ModelConfig& c = model->config();
  for (const uint32_t threads : {1u, 0u}) {
    model->set_threads(threads);
    for (const size_t rows : {size_t{1}, size_t{256}}) {
      absl::StatusOr<std::vector<float>> h = model->Embed(Tokens(rows, c.vocab_size, 6));
      ASSERT_TRUE(h.ok());
      const std::vector<float> attn(rows * c.q_dim(), 0.01f);
      const int reps = rows == 1 ? 40 : 2;
      const auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) {
        const Model::QkvOut qkv = model->Qkv(r % c.num_layers, *h, 1000);
        model->FinishLayer(r % c.num_layers, attn, &*h);
      }
      const std::chrono::duration<double, std::milli> elapsed =
          std::chrono::steady_clock::now() - start;
      std::printf("T=%zu: %.3f ms per Qkv+FinishLayer (%u threads)\n", rows, elapsed.count() / reps,
                  model->threads());
    }
  }
}

}  // namespace
}  // namespace kvtier::llm
