// examples/llm/model.cc — the example decoder's weights, layer math and reference session.
//
// All matmuls go through MatMul below: y[t][n] = dot(x[t], w[n]) with w in Hugging Face's
// [out][in] layout. Each dot product keeps 8 interleaved float partial sums, summed in a
// fixed tree at the end: the compiler turns the 8 lanes into SIMD registers without being
// allowed to reassociate (no -ffast-math), and every output element is computed by the same
// sequence of operations whichever tile, thread or batch size computes it. That is what
// makes chunked prefill, one-shot prefill and any thread count agree bit for bit.

#include "examples/llm/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "examples/llm/decoder.h"
#include "examples/llm/layer_math.h"
#include "examples/llm/safetensors.h"
#include "kernels/numeric.h"

// Violated preconditions of the layer API are programming errors in the caller (wrong
// shapes): they abort with a message rather than read out of bounds.
#define KVTIER_LLM_CHECK(cond, ...)                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", __FILE__, __LINE__, #cond, \
                   absl::StrFormat(__VA_ARGS__).c_str());                              \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

namespace kvtier::llm {
namespace {

using layer_math::RmsNorm;

// ---------------------------------------------------------------------------------- matmul

constexpr size_t kLanes = 8;
constexpr size_t kTileRows = 4;  // weight rows per tile: one x row load feeds 4 dot products
// A matmul smaller than this many multiply-adds per thread runs on fewer threads. Starting
// and joining a thread costs 10-20 µs (~256K multiply-adds at ~10 G/s per core), but on a
// busy machine a helper thread can wait milliseconds for a core. Measured on 2 shared cores,
// default config, T=1: 0.40-0.45 ms per layer at 2^18 when idle, 0.50 at 2^20; under load
// 2^18 gave 0.65 ms with spikes to 6 ms, 2^20 a steady 0.53 ms. So decode steps (T=1) stay
// on the caller's thread, and prefill chunks split.
constexpr size_t kMinMacsPerThread = size_t{1} << 20;

// y[r] = dot(x, w + r * k) for r < R. The per-element arithmetic is the same for every R.
template <size_t R>
inline void DotRows(const float* x, const float* w, size_t k, float* y) {
  float acc[R][kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    // Unrolled so that the accumulators live in registers rather than on the stack.
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      const float* wr = w + r * k + i;
      for (size_t j = 0; j < kLanes; ++j) acc[r][j] += x[i + j] * wr[j];
    }
  }
  for (size_t r = 0; r < R; ++r) {
    float tail = 0.0f;
    for (size_t t = i; t < k; ++t) tail += x[t] * w[r * k + t];
    const float* a = acc[r];
    y[r] = (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))) + tail;
  }
}

// y [rows][n] = x [rows][k] · w [n][k]ᵀ for weight rows [n0, n1).
void MatMulRange(const float* x, size_t rows, size_t k, const float* w, size_t n, size_t n0,
                 size_t n1, float* y) {
  size_t j = n0;
  // Weight tile outermost: its 4 rows stay in L1 while every x row streams past them.
  for (; j + kTileRows <= n1; j += kTileRows) {
    for (size_t t = 0; t < rows; ++t) DotRows<kTileRows>(x + t * k, w + j * k, k, y + t * n + j);
  }
  for (; j < n1; ++j) {
    for (size_t t = 0; t < rows; ++t) DotRows<1>(x + t * k, w + j * k, k, y + t * n + j);
  }
}

// Runs fn(part, parts) for every part in [0, parts): the caller's thread takes part 0, one
// new thread each of the others. Threads are started per call rather than pooled: a call
// worth splitting (see kMinMacsPerThread) runs long enough to pay for it.
void RunParts(size_t parts, const std::function<void(size_t, size_t)>& fn) {
  std::vector<std::thread> workers;
  workers.reserve(parts - 1);
  for (size_t p = 1; p < parts; ++p) workers.emplace_back(fn, p, parts);
  fn(0, parts);
  for (std::thread& worker : workers) worker.join();
}

size_t Parts(uint32_t threads, size_t macs) {
  return std::max<size_t>(1, std::min<size_t>(threads, macs / kMinMacsPerThread));
}

// y [rows][n] = x [rows][k] · w [n][k]ᵀ.
void MatMul(const float* x, size_t rows, size_t k, const std::vector<float>& w, size_t n,
            uint32_t threads, float* y) {
  const size_t tiles = (n + kTileRows - 1) / kTileRows;
  const size_t parts = std::min(Parts(threads, rows * k * n), tiles);
  // Part p computes whole tiles [tiles·p/parts, tiles·(p+1)/parts): disjoint columns of y.
  RunParts(parts, [&](size_t p, size_t num_parts) {
    const size_t begin = std::min(n, tiles * p / num_parts * kTileRows);
    const size_t end = std::min(n, tiles * (p + 1) / num_parts * kTileRows);
    MatMulRange(x, rows, k, w.data(), n, begin, end, y);
  });
}

// ------------------------------------------------------------------------------ layer math

// Intermediates of a layer, kept per calling thread across calls: on some VMs the page
// faults of fresh multi-MiB allocations cost a third of a T=256 layer (measured). They grow
// to the largest T seen.
struct Scratch {
  std::vector<float> norm;    // [T][d_model]
  std::vector<float> wide;    // [T][q + 2 kv] or [T][2 ffn]
  std::vector<float> act;     // [T][ffn]
  std::vector<float> narrow;  // [T][d_model]
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

float* Grow(std::vector<float>* v, size_t n) {
  if (v->size() < n) v->resize(n);
  return v->data();
}

// ----------------------------------------------------------------------------------- init

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fills `out` uniformly in [-a, a), a = stddev·√3 (so its standard deviation is `stddev`),
// from a stream of its own: integer arithmetic, then exact conversions and one rounding, so
// every machine draws the same floats. (std::normal_distribution is implementation-defined.)
void FillUniform(uint64_t seed, uint64_t stream, double stddev, absl::Span<float> out) {
  uint64_t state = seed ^ (stream * 0xd1b54a32d192ed03ull);
  SplitMix64(&state);
  const double a = stddev * std::sqrt(3.0);
  for (float& v : out) {
    const double u = static_cast<double>(SplitMix64(&state) >> 11) * 0x1.0p-53;  // [0, 1)
    v = static_cast<float>((2.0 * u - 1.0) * a);
  }
}

std::string ShapeString(absl::Span<const uint64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// ------------------------------------------------------------------ reference attention

uint32_t HardwareThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

// Every fp16 value as float, built once (thread-safe static initialization).
const float* HalfTable() {
  static const std::vector<float>* const table = [] {
    auto* t = new std::vector<float>(65536);
    for (uint32_t h = 0; h < 65536; ++h) {
      (*t)[h] = numeric::HalfBitsToFloat(static_cast<uint16_t>(h));
    }
    return t;
  }();
  return table->data();
}

// dot(a, b) in double with 4 interleaved partial sums (SIMD without reassociation, as
// DotRows).
inline double DotDouble(const double* a, const float* b, size_t n) {
  double acc[4] = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (size_t l = 0; l < 4; ++l) acc[l] += a[i + l] * b[i + l];
  }
  double tail = 0.0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;
}

// y += p · x.
inline void AxpyDouble(double p, const float* x, size_t n, double* y) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (size_t l = 0; l < 4; ++l) y[i + l] += p * x[i + l];
  }
  for (; i < n; ++i) y[i] += p * x[i];
}

}  // namespace

// ---------------------------------------------------------------------------- ModelConfig

absl::Status ModelConfig::Validate() const {
  auto nonzero = [](uint32_t v, const char* name) {
    return v == 0 ? absl::InvalidArgumentError(absl::StrCat("ModelConfig: ", name, " is 0"))
                  : absl::OkStatus();
  };
  for (const auto& [v, name] : {std::pair<uint32_t, const char*>{num_layers, "num_layers"},
                                {d_model, "d_model"},
                                {num_heads, "num_heads"},
                                {num_kv_heads, "num_kv_heads"},
                                {head_dim, "head_dim"},
                                {ffn_dim, "ffn_dim"},
                                {vocab_size, "vocab_size"}}) {
    if (absl::Status s = nonzero(v, name); !s.ok()) return s;
  }
  if (num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig: num_heads %d is not a multiple of num_kv_heads %d", num_heads, num_kv_heads));
  }
  if (uint64_t{num_heads} * head_dim != d_model) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig: d_model %d != num_heads %d * head_dim %d", d_model, num_heads, head_dim));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ModelConfig: head_dim %d is odd (RoPE rotates pairs)", head_dim));
  }
  if (vocab_size > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ModelConfig: vocab_size %d does not fit an int32 token id", vocab_size));
  }
  if (!(std::isfinite(rope_theta) && rope_theta > 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ModelConfig: rope_theta %g must be finite and > 1", rope_theta));
  }
  if (!(std::isfinite(norm_eps) && norm_eps > 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ModelConfig: norm_eps %g must be finite and > 0", norm_eps));
  }
  return absl::OkStatus();
}

std::string ModelConfig::ToString() const {
  return absl::StrFormat(
      "layers=%d d_model=%d heads=%d kv_heads=%d head_dim=%d ffn=%d vocab=%d rope_theta=%g "
      "eps=%g",
      num_layers, d_model, num_heads, num_kv_heads, head_dim, ffn_dim, vocab_size, rope_theta,
      norm_eps);
}

// ---------------------------------------------------------------------------------- Model

Model::Model(const ModelConfig& config) : config_(config) {
  set_threads(0);
  const size_t d = config.d_model;
  embed_.resize(size_t{config.vocab_size} * d);
  lm_head_.resize(size_t{config.vocab_size} * d);
  norm_.assign(d, 1.0f);
  layers_.resize(config.num_layers);
  for (Layer& layer : layers_) {
    layer.input_norm.assign(d, 1.0f);
    layer.post_norm.assign(d, 1.0f);
    layer.qkv.resize(size_t{config.q_dim() + 2 * config.kv_dim()} * d);
    layer.o.resize(d * config.q_dim());
    layer.gate_up.resize(2 * size_t{config.ffn_dim} * d);
    layer.down.resize(d * config.ffn_dim);
  }
}

void Model::set_threads(uint32_t threads) { threads_ = threads != 0 ? threads : HardwareThreads(); }

// Calls fn(name, shape, span) for every weight in a fixed order; the span is mutable when
// `self` is, so one list of names and shapes serves initialization, loading and Weights().
template <typename Self, typename Fn>
void Model::ForEachWeight(Self& self, Fn fn) {
  const ModelConfig& c = self.config_;
  const uint64_t d = c.d_model, q = c.q_dim(), kv = c.kv_dim(), f = c.ffn_dim, vocab = c.vocab_size;
  fn("model.embed_tokens.weight", std::vector<uint64_t>{vocab, d}, absl::MakeSpan(self.embed_));
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    auto& layer = self.layers_[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const auto qkv = absl::MakeSpan(layer.qkv);
    const auto gate_up = absl::MakeSpan(layer.gate_up);
    fn(p + "input_layernorm.weight", std::vector<uint64_t>{d}, absl::MakeSpan(layer.input_norm));
    fn(p + "self_attn.q_proj.weight", std::vector<uint64_t>{q, d}, qkv.subspan(0, q * d));
    fn(p + "self_attn.k_proj.weight", std::vector<uint64_t>{kv, d}, qkv.subspan(q * d, kv * d));
    fn(p + "self_attn.v_proj.weight", std::vector<uint64_t>{kv, d},
       qkv.subspan((q + kv) * d, kv * d));
    fn(p + "self_attn.o_proj.weight", std::vector<uint64_t>{d, q}, absl::MakeSpan(layer.o));
    fn(p + "post_attention_layernorm.weight", std::vector<uint64_t>{d},
       absl::MakeSpan(layer.post_norm));
    fn(p + "mlp.gate_proj.weight", std::vector<uint64_t>{f, d}, gate_up.subspan(0, f * d));
    fn(p + "mlp.up_proj.weight", std::vector<uint64_t>{f, d}, gate_up.subspan(f * d, f * d));
    fn(p + "mlp.down_proj.weight", std::vector<uint64_t>{d, f}, absl::MakeSpan(layer.down));
  }
  fn("model.norm.weight", std::vector<uint64_t>{d}, absl::MakeSpan(self.norm_));
  // Last, so that a loader can tie it to the embeddings, loaded by then.
  fn("lm_head.weight", std::vector<uint64_t>{vocab, d}, absl::MakeSpan(self.lm_head_));
}

absl::StatusOr<Model> Model::Random(const ModelConfig& config, uint64_t seed) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  Model model(config);
  // One stream per tensor, numbered in ForEachWeight order; a matrix's fan-in is shape[1].
  uint64_t stream = 0;
  ForEachWeight(model, [&](const std::string& name, const std::vector<uint64_t>& shape,
                           absl::Span<float> data) {
    ++stream;
    if (shape.size() != 2) return;  // RMSNorm weights stay 1
    const double stddev =
        name == "model.embed_tokens.weight" ? 1.0 : 1.0 / std::sqrt(static_cast<double>(shape[1]));
    FillUniform(seed, stream, stddev, data);
  });
  return model;
}

std::vector<Model::NamedWeight> Model::Weights() const {
  std::vector<NamedWeight> out;
  ForEachWeight(*this,
                [&](std::string name, std::vector<uint64_t> shape, absl::Span<const float> data) {
                  out.push_back({std::move(name), std::move(shape), data});
                });
  return out;
}

absl::StatusOr<Model> Model::FromSafetensors(const std::string& path, const ModelConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  Model model(config);
  absl::Status status;
  ForEachWeight(model, [&](const std::string& name, const std::vector<uint64_t>& shape,
                           absl::Span<float> data) {
    if (!status.ok()) return;
    const SafetensorsTensorInfo* info = file->Find(name);
    if (info == nullptr) {
      if (name == "lm_head.weight") {  // tied embeddings: lm_head is embed_tokens
        model.lm_head_ = model.embed_;
        return;
      }
      status = absl::InvalidArgumentError(
          absl::StrFormat("%s: missing tensor \"%s\" (config: %s)", path, name, config.ToString()));
      return;
    }
    if (info->shape != shape) {
      status = absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor \"%s\" has shape %s, the config expects %s", path, name,
                          ShapeString(info->shape), ShapeString(shape)));
      return;
    }
    status = file->ReadAsFloat(name, data);
  });
  if (!status.ok()) return status;
  return model;
}

absl::StatusOr<std::vector<float>> EmbedTokens(absl::Span<const float> table, size_t d_model,
                                               uint32_t vocab_size,
                                               absl::Span<const int32_t> tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("Embed: no tokens");
  std::vector<float> out(tokens.size() * d_model);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int32_t id = tokens[t];
    if (id < 0 || static_cast<uint32_t>(id) >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Embed: token %d (at index %d) is outside the vocabulary [0, %d)", id, t, vocab_size));
    }
    std::copy_n(table.begin() + static_cast<size_t>(id) * d_model, d_model,
                out.begin() + t * d_model);
  }
  return out;
}

absl::StatusOr<std::vector<float>> Model::Embed(absl::Span<const int32_t> tokens) const {
  return EmbedTokens(embed_, config_.d_model, config_.vocab_size, tokens);
}

Model::QkvOut Model::Qkv(uint32_t layer, absl::Span<const float> hidden, uint32_t pos) const {
  const size_t d = config_.d_model, q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  KVTIER_LLM_CHECK(layer < config_.num_layers, "layer %d of %d", layer, config_.num_layers);
  KVTIER_LLM_CHECK(!hidden.empty() && hidden.size() % d == 0,
                   "hidden has %d floats, not a nonzero multiple of d_model %d", hidden.size(), d);
  const size_t rows = hidden.size() / d;
  const Layer& w = layers_[layer];
  Scratch& scratch = ThreadScratch();
  float* const x = Grow(&scratch.norm, rows * d);
  RmsNorm(hidden.data(), rows, w.input_norm, config_.norm_eps, x);
  const size_t n = q_dim + 2 * kv_dim;
  float* const qkv = Grow(&scratch.wide, rows * n);
  MatMul(x, rows, d, w.qkv, n, threads_, qkv);

  QkvOut out;
  out.q.resize(rows * q_dim);
  out.k.resize(rows * kv_dim);
  out.v.resize(rows * kv_dim);
  for (size_t t = 0; t < rows; ++t) {
    const float* row = qkv + t * n;
    std::copy_n(row, q_dim, out.q.begin() + t * q_dim);
    std::copy_n(row + q_dim, kv_dim, out.k.begin() + t * kv_dim);
    std::copy_n(row + q_dim + kv_dim, kv_dim, out.v.begin() + t * kv_dim);
  }

  layer_math::ApplyRope(config_.rope_theta, pos, rows, config_.head_dim, config_.num_heads,
                        out.q.data(), config_.num_kv_heads, out.k.data());
  return out;
}

void Model::FinishLayer(uint32_t layer, absl::Span<const float> attn,
                        std::vector<float>* hidden) const {
  const size_t d = config_.d_model, q_dim = config_.q_dim(), f = config_.ffn_dim;
  KVTIER_LLM_CHECK(layer < config_.num_layers, "layer %d of %d", layer, config_.num_layers);
  KVTIER_LLM_CHECK(hidden != nullptr && !hidden->empty() && hidden->size() % d == 0,
                   "hidden is not a nonzero multiple of d_model %d", d);
  const size_t rows = hidden->size() / d;
  KVTIER_LLM_CHECK(attn.size() == rows * q_dim, "attn has %d floats, expected %d x %d", attn.size(),
                   rows, q_dim);
  const Layer& w = layers_[layer];

  Scratch& scratch = ThreadScratch();
  float* const o = Grow(&scratch.narrow, rows * d);
  MatMul(attn.data(), rows, q_dim, w.o, d, threads_, o);
  for (size_t i = 0; i < rows * d; ++i) (*hidden)[i] += o[i];

  float* const x = Grow(&scratch.norm, rows * d);
  RmsNorm(hidden->data(), rows, w.post_norm, config_.norm_eps, x);
  float* const gate_up = Grow(&scratch.wide, rows * 2 * f);
  MatMul(x, rows, d, w.gate_up, 2 * f, threads_, gate_up);
  float* const act = Grow(&scratch.act, rows * f);
  layer_math::SwiGlu(gate_up, rows, f, act);
  float* const down = Grow(&scratch.narrow, rows * d);
  MatMul(act, rows, f, w.down, d, threads_, down);
  for (size_t i = 0; i < rows * d; ++i) (*hidden)[i] += down[i];
}

std::vector<float> Model::Logits(absl::Span<const float> hidden_row) const {
  KVTIER_LLM_CHECK(hidden_row.size() == config_.d_model, "hidden_row has %d floats, d_model %d",
                   hidden_row.size(), config_.d_model);
  std::vector<float> x(config_.d_model);
  RmsNorm(hidden_row.data(), 1, norm_, config_.norm_eps, x.data());
  std::vector<float> logits(config_.vocab_size);
  MatMul(x.data(), 1, config_.d_model, lm_head_, config_.vocab_size, threads_, logits.data());
  return logits;
}

// ------------------------------------------------------------------------- free functions

std::vector<uint16_t> RoundToHalfBits(absl::Span<const float> values) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = numeric::FloatToHalfBits(values[i]);
  return out;
}

std::vector<float> ReferenceAttention(const ModelConfig& config, absl::Span<const float> q,
                                      uint32_t pos, absl::Span<const uint16_t> k_fp16,
                                      absl::Span<const uint16_t> v_fp16, uint32_t threads) {
  const size_t heads = config.num_heads, kv_heads = config.num_kv_heads, d = config.head_dim;
  const size_t group = config.group_size();
  KVTIER_LLM_CHECK(!q.empty() && q.size() % (heads * d) == 0,
                   "q has %d floats, not a nonzero multiple of %d x %d", q.size(), heads, d);
  const size_t rows = q.size() / (heads * d);
  const size_t ctx = size_t{pos} + rows;
  const size_t row_elems = kv_heads * d;
  KVTIER_LLM_CHECK(k_fp16.size() >= ctx * row_elems && v_fp16.size() >= ctx * row_elems,
                   "the caches hold %d / %d halves, need %d rows of %d", k_fp16.size(),
                   v_fp16.size(), ctx, row_elems);

  // Scratch memory is kept per calling thread across calls: on some VMs a fresh multi-MiB
  // allocation per call costs more in page faults than the attention itself (measured: 25
  // ms instead of 2 for one token over 4096 positions). It grows to the largest context
  // seen: 2 * ctx * kv_heads * head_dim floats plus the parts' scores.
  thread_local std::vector<float> k, v;
  thread_local std::vector<double> work;
  if (k.size() < ctx * row_elems) {
    k.resize(ctx * row_elems);
    v.resize(ctx * row_elems);
  }
  // fp16 converts to float exactly; converting the used prefix once (through a table)
  // keeps the inner loops free of branches.
  const float* table = HalfTable();
  for (size_t i = 0; i < ctx * row_elems; ++i) {
    k[i] = table[k_fp16[i]];
    v[i] = table[v_fp16[i]];
  }

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<float> out(q.size());
  // A unit is one query token and one kv head: the group's q heads share each K/V row read.
  // Parts take units round-robin, which balances the causal triangle; every unit is computed
  // the same way in any part, so the thread count changes nothing.
  const size_t units = rows * kv_heads;
  const size_t macs = 2 * heads * d * (rows * size_t{pos} + rows * (rows + 1) / 2);
  const size_t parts = std::min(Parts(threads != 0 ? threads : HardwareThreads(), macs), units);
  const size_t work_per_part = group * (ctx + 2 * d + 1);
  if (work.size() < parts * work_per_part) work.resize(parts * work_per_part);
  const float* kp = k.data();  // thread_locals are not captured: name the caller's buffers
  const float* vp = v.data();
  double* wp = work.data();
  RunParts(parts, [&](size_t part, size_t num_parts) {
    double* const scores = wp + part * work_per_part;  // [group][ctx]
    double* const qd = scores + group * ctx;           // [group][d]
    double* const acc = qd + group * d;                // [group][d]
    double* const denom = acc + group * d;             // [group]
    for (size_t u = part; u < units; u += num_parts) {
      const size_t t = u / kv_heads, kvh = u % kv_heads;
      const size_t visible = size_t{pos} + t + 1;  // causal: keys [0, pos + t]
      const float* qt = q.data() + (t * heads + kvh * group) * d;
      for (size_t i = 0; i < group * d; ++i) qd[i] = qt[i];
      for (size_t j = 0; j < visible; ++j) {
        const float* kr = kp + j * row_elems + kvh * d;
        for (size_t g = 0; g < group; ++g) {
          scores[g * ctx + j] = DotDouble(qd + g * d, kr, d) * scale;
        }
      }
      for (size_t g = 0; g < group; ++g) {
        double* s = scores + g * ctx;
        denom[g] = 0.0;
        const double max_score = *std::max_element(s, s + visible);
        for (size_t j = 0; j < visible; ++j) {
          s[j] = std::exp(s[j] - max_score);
          denom[g] += s[j];
        }
      }
      std::fill(acc, acc + group * d, 0.0);
      for (size_t j = 0; j < visible; ++j) {
        const float* vr = vp + j * row_elems + kvh * d;
        for (size_t g = 0; g < group; ++g) {
          AxpyDouble(scores[g * ctx + j], vr, d, acc + g * d);
        }
      }
      float* o = out.data() + (t * heads + kvh * group) * d;
      for (size_t g = 0; g < group; ++g) {
        for (size_t i = 0; i < d; ++i) {
          o[g * d + i] = static_cast<float>(acc[g * d + i] / denom[g]);
        }
      }
    }
  });
  return out;
}

int32_t Argmax(absl::Span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[static_cast<size_t>(best)]) {
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

// ----------------------------------------------------------------------- ReferenceSession

ReferenceSession::ReferenceSession(const Model* model)
    : owned_(std::make_unique<CpuDecoder>(model)),
      model_(owned_.get()),
      k_(model->config().num_layers),
      v_(model->config().num_layers) {}

ReferenceSession::ReferenceSession(const Decoder* decoder)
    : model_(decoder), k_(decoder->config().num_layers), v_(decoder->config().num_layers) {}

ReferenceSession::~ReferenceSession() = default;

absl::StatusOr<std::vector<float>> ReferenceSession::Prefill(absl::Span<const int32_t> tokens) {
  const ModelConfig& config = model_->config();
  if (tokens.size() > std::numeric_limits<uint32_t>::max() - position_) {
    return absl::InvalidArgumentError("ReferenceSession: positions would pass 2^32");
  }
  absl::StatusOr<std::vector<float>> hidden = model_->Embed(tokens);
  if (!hidden.ok()) return hidden.status();
  for (uint32_t l = 0; l < config.num_layers; ++l) {
    absl::StatusOr<Model::QkvOut> qkv_or = model_->Qkv(l, *hidden, position_);
    if (!qkv_or.ok()) return qkv_or.status();
    Model::QkvOut& qkv = *qkv_or;
    // The new tokens' K/V join the cache as fp16 before attention reads them, exactly as a
    // cache in kvtier's fp16 blocks would.
    const std::vector<uint16_t> k = RoundToHalfBits(qkv.k);
    const std::vector<uint16_t> v = RoundToHalfBits(qkv.v);
    k_[l].insert(k_[l].end(), k.begin(), k.end());
    v_[l].insert(v_[l].end(), v.begin(), v.end());
    const std::vector<float> attn =
        ReferenceAttention(config, qkv.q, position_, k_[l], v_[l], model_->threads());
    if (absl::Status s = model_->FinishLayer(l, attn, &*hidden); !s.ok()) return s;
  }
  position_ += static_cast<uint32_t>(tokens.size());
  const size_t d = config.d_model;
  absl::StatusOr<std::vector<float>> logits =
      model_->Logits(absl::MakeConstSpan(*hidden).subspan(hidden->size() - d, d));
  if (!logits.ok()) return logits.status();
  last_logits_ = *std::move(logits);
  return last_logits_;
}

absl::StatusOr<std::vector<float>> ReferenceSession::Step(int32_t token) {
  return Prefill(absl::MakeConstSpan(&token, 1));
}

absl::StatusOr<std::vector<int32_t>> ReferenceSession::Greedy(uint32_t n) {
  if (last_logits_.empty()) {
    return absl::FailedPreconditionError("ReferenceSession::Greedy before any Prefill");
  }
  std::vector<int32_t> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t token = Argmax(last_logits_);
    if (token < 0) return absl::InternalError("ReferenceSession::Greedy: logits are all NaN");
    out.push_back(token);
    if (absl::StatusOr<std::vector<float>> logits = Step(token); !logits.ok()) {
      return logits.status();
    }
  }
  return out;
}

const std::vector<uint16_t>& ReferenceSession::k(uint32_t layer) const {
  KVTIER_LLM_CHECK(layer < k_.size(), "layer %d of %d", layer, k_.size());
  return k_[layer];
}

const std::vector<uint16_t>& ReferenceSession::v(uint32_t layer) const {
  KVTIER_LLM_CHECK(layer < v_.size(), "layer %d of %d", layer, v_.size());
  return v_[layer];
}

}  // namespace kvtier::llm
