// examples/llm/model.h — a small Llama-style decoder on the CPU, for the long-context demo.
//
// The demo keeps the KV cache in kvtier's tiers, so the model does not own one: the caller
// drives each forward pass layer by layer and computes attention itself over whatever KV
// source it has. For T new tokens at positions [pos, pos + T):
//
//     std::vector<float> h = *model.Embed(tokens);                  // [T][d_model]
//     for (uint32_t l = 0; l < config.num_layers; ++l) {
//       Model::QkvOut qkv = model.Qkv(l, h, pos);   // q [T][H][D]; k, v [T][KVH][D]; RoPE'd
//       // Round k and v to fp16 (RoundToHalfBits) and append them to the cache; attention
//       // for the T queries then runs over positions [0, pos + T) of the fp16 cache, the
//       // new tokens included, causally (ReferenceAttention is the specification).
//       model.FinishLayer(l, attn, &h);             // o_proj + residual, RMSNorm, SwiGLU + res.
//     }
//     std::vector<float> logits = model.Logits(last row of h);     // [vocab]
//
// ReferenceSession is that loop with a host-memory fp16 cache: the expected output of any
// other KV source. Because the cache is fp16 on both paths, a demo whose K/V went through the
// tiers and came back byte for byte, attending with ReferenceAttention, produces the same
// logits bit for bit; with another attention (a float kernel) they agree to float rounding.
//
// Numerics: float32 weights and activations; matmuls accumulate each output in float with a
// fixed order (8 interleaved partial sums), so an output element does not depend on how many
// tokens are processed together or on the thread count — chunked and one-shot prefill agree
// bit for bit. RoPE angles are computed in double (exact enough at any position; Hugging
// Face computes them in float32, so a real checkpoint's outputs drift from transformers' at
// large positions); ReferenceAttention accumulates in double. Results are deterministic for
// a given build.
//
// Conventions are Hugging Face Llama's: weights [out_features][in_features], RMSNorm
// x / sqrt(mean(x²) + eps) * w, RoPE rotating the two halves of each head (rotate_half),
// SwiGLU MLP down(silu(gate(x)) * up(x)), GQA q head h reading kv head h / (H / KVH).
//
// Model's const methods are thread-safe. Each calling thread keeps scratch buffers for the
// layer intermediates (and ReferenceAttention for the float copy of the cache) sized for the
// largest call it has made, so repeated calls do not page-fault fresh memory. A
// ReferenceSession is used by one thread at a time.

#ifndef KVTIER_EXAMPLES_LLM_MODEL_H_
#define KVTIER_EXAMPLES_LLM_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier::llm {

class Decoder;  // decoder.h

struct ModelConfig {
  uint32_t num_layers = 4;
  uint32_t d_model = 512;
  uint32_t num_heads = 8;
  uint32_t num_kv_heads = 2;
  uint32_t head_dim = 64;
  uint32_t ffn_dim = 1408;
  uint32_t vocab_size = 4096;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;

  // InvalidArgument naming the field: sizes nonzero, num_heads a multiple of num_kv_heads,
  // d_model == num_heads * head_dim, head_dim even (RoPE rotates pairs), vocab_size that fits
  // an int32 token id, rope_theta > 1 and norm_eps > 0 (both finite).
  absl::Status Validate() const;
  std::string ToString() const;

  uint32_t q_dim() const { return num_heads * head_dim; }
  uint32_t kv_dim() const { return num_kv_heads * head_dim; }
  uint32_t group_size() const { return num_heads / num_kv_heads; }
};

// The rows of `table` ([vocab_size][d_model]) for `tokens`, [T][d_model]. InvalidArgument for
// no tokens, or naming a token outside [0, vocab_size) and its index.
absl::StatusOr<std::vector<float>> EmbedTokens(absl::Span<const float> table, size_t d_model,
                                               uint32_t vocab_size,
                                               absl::Span<const int32_t> tokens);

class Model {
 public:
  // Weights drawn from `seed` by splitmix64 (bit-identical on every machine): each matrix
  // uniform with standard deviation 1/sqrt(fan_in), embeddings with standard deviation 1,
  // RMSNorm weights 1, lm_head separate from the embeddings. Activations stay O(1).
  static absl::StatusOr<Model> Random(const ModelConfig& config, uint64_t seed);

  // Weights from a safetensors file with Hugging Face Llama names (model.embed_tokens.weight,
  // model.layers.N.self_attn.{q,k,v,o}_proj.weight, model.layers.N.mlp.{gate,up,down}_proj
  // .weight, model.layers.N.{input,post_attention}_layernorm.weight, model.norm.weight,
  // lm_head.weight — tied to the embeddings when absent). F32, F16 and BF16 tensors. Every
  // tensor's shape is checked against `config`: a mismatch or a missing tensor is
  // InvalidArgument naming the tensor (and both shapes); file errors as SafetensorsFile::Open.
  static absl::StatusOr<Model> FromSafetensors(const std::string& path, const ModelConfig& config);

  const ModelConfig& config() const { return config_; }

  // Threads a large matmul is split over (by output rows); small ones run on the caller's
  // thread alone, where starting threads would cost more than it saves. 0 means
  // std::thread::hardware_concurrency(), the default. Results do not depend on it.
  void set_threads(uint32_t threads);
  uint32_t threads() const { return threads_; }

  // Embedding rows of `tokens`: [T][d_model]. InvalidArgument for an id outside
  // [0, vocab_size) or no tokens.
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const;

  struct QkvOut {
    std::vector<float> q;  // [T][num_heads][head_dim]
    std::vector<float> k;  // [T][num_kv_heads][head_dim]
    std::vector<float> v;  // [T][num_kv_heads][head_dim]
  };
  // Input RMSNorm then the q, k, v projections of `hidden` [T][d_model] (T >= 1), with RoPE
  // applied to q and k for positions [pos, pos + T).
  // REQUIRES (else aborts): layer < num_layers, hidden.size() a nonzero multiple of d_model.
  QkvOut Qkv(uint32_t layer, absl::Span<const float> hidden, uint32_t pos) const;

  // The rest of the layer, updating `hidden` [T][d_model] in place: hidden += o_proj(attn);
  // hidden += down(silu(gate(x)) * up(x)) with x = post_attention_layernorm(hidden).
  // REQUIRES (else aborts): layer < num_layers, attn.size() == T * num_heads * head_dim.
  void FinishLayer(uint32_t layer, absl::Span<const float> attn, std::vector<float>* hidden) const;

  // Final RMSNorm and lm_head of one hidden row: [vocab_size] logits.
  // REQUIRES (else aborts): hidden_row.size() == d_model.
  std::vector<float> Logits(absl::Span<const float> hidden_row) const;

  // Every weight under its Hugging Face name, [out][in] row-major (lm_head.weight included
  // even when tied): what a safetensors writer needs to save this model.
  struct NamedWeight {
    std::string name;
    std::vector<uint64_t> shape;
    absl::Span<const float> data;
  };
  std::vector<NamedWeight> Weights() const;

 private:
  struct Layer {
    std::vector<float> input_norm;  // [d_model]
    std::vector<float> qkv;         // [q_dim + 2 kv_dim][d_model]: q_proj, k_proj, v_proj rows
    std::vector<float> o;           // [d_model][q_dim]
    std::vector<float> post_norm;   // [d_model]
    std::vector<float> gate_up;     // [2 ffn_dim][d_model]: gate_proj rows, then up_proj rows
    std::vector<float> down;        // [d_model][ffn_dim]
  };

  // Sized storage, norms 1, matrices 0.
  explicit Model(const ModelConfig& config);

  template <typename Self, typename Fn>
  static void ForEachWeight(Self& self, Fn fn);

  ModelConfig config_;
  uint32_t threads_ = 1;
  std::vector<float> embed_;  // [vocab][d_model]
  std::vector<Layer> layers_;
  std::vector<float> norm_;     // [d_model]
  std::vector<float> lm_head_;  // [vocab][d_model]
};

// K or V rounded to fp16 bits exactly as ReferenceSession stores them (round to nearest
// even, numeric::FloatToHalfBits): a caller that stores its KV the same way attends over the
// same bits.
std::vector<uint16_t> RoundToHalfBits(absl::Span<const float> values);

// Causal GQA attention over an fp16 KV cache in host memory: queries q [T][H][D] at positions
// [pos, pos + T); query t sees keys and values [0, pos + t], read from k_fp16 / v_fp16
// [ctx][KVH][D] with ctx >= pos + T (rows beyond pos + T - 1 are ignored). Scale
// 1/sqrt(head_dim); scores, softmax and the weighted sum in double. Returns [T][H][D].
// Large calls are split over `threads` threads (0: hardware_concurrency); the result does
// not depend on it.
// REQUIRES (else aborts): q.size() a nonzero multiple of H * D, the caches hold >= pos + T rows.
std::vector<float> ReferenceAttention(const ModelConfig& config, absl::Span<const float> q,
                                      uint32_t pos, absl::Span<const uint16_t> k_fp16,
                                      absl::Span<const uint16_t> v_fp16, uint32_t threads = 0);

// The index of the largest logit (the first of equals; NaNs are skipped); -1 when empty or
// all NaN.
int32_t Argmax(absl::Span<const float> logits);

// A complete forward pass with its own fp16 KV cache in host memory: the reference any other
// KV source must reproduce. Prefill may be called repeatedly (chunked prefill); each call
// appends its tokens at position() onwards.
class ReferenceSession {
 public:
  // `model` must outlive the session; its matmuls run on the CPU (CpuDecoder).
  explicit ReferenceSession(const Model* model);
  // Any decoder (decoder.h), e.g. a DeviceDecoder: the all-resident reference of a run whose
  // matmuls go through the same decoder. `decoder` must outlive the session.
  explicit ReferenceSession(const Decoder* decoder);
  ~ReferenceSession();
  ReferenceSession(const ReferenceSession&) = delete;
  ReferenceSession& operator=(const ReferenceSession&) = delete;

  // Runs `tokens` at positions [position(), position() + T) and returns the logits of the
  // last. InvalidArgument for an empty span or an out-of-range id (the session is unchanged);
  // a decoder's error (a device call that failed) as it returned it.
  absl::StatusOr<std::vector<float>> Prefill(absl::Span<const int32_t> tokens);
  // Prefill of one token.
  absl::StatusOr<std::vector<float>> Step(int32_t token);
  // Greedy decoding of n tokens: each is the argmax of the previous logits and is then run
  // (appended to the cache), so a later Greedy continues where this one stopped.
  // FailedPrecondition before any Prefill.
  absl::StatusOr<std::vector<int32_t>> Greedy(uint32_t n);

  uint32_t position() const { return position_; }  // tokens in the cache
  const std::vector<float>& last_logits() const { return last_logits_; }
  // The layer's fp16 cache, [position()][num_kv_heads][head_dim].
  // REQUIRES (else aborts): layer < num_layers.
  const std::vector<uint16_t>& k(uint32_t layer) const;
  const std::vector<uint16_t>& v(uint32_t layer) const;

 private:
  std::unique_ptr<Decoder> owned_;  // the CpuDecoder of the Model constructor
  const Decoder* model_;
  uint32_t position_ = 0;
  std::vector<std::vector<uint16_t>> k_;  // per layer
  std::vector<std::vector<uint16_t>> v_;
  std::vector<float> last_logits_;
};

}  // namespace kvtier::llm

#endif  // KVTIER_EXAMPLES_LLM_MODEL_H_
