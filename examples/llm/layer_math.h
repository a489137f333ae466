// examples/llm/layer_math.h — the host-side pieces of a Llama layer that both decoders share:
// RMSNorm, RoPE and the SwiGLU activation. The CPU Model (model.h) and the DeviceDecoder
// (device_decoder.h) differ only in where their matmuls run; everything between the matmuls
// is this code, so the two agree up to the matmuls' rounding.
//
// Numerics: RMSNorm sums squares in double; RoPE angles are computed in double (exact enough
// at any position) and applied in float, Hugging Face's rotate_half form.

#ifndef KVTIER_EXAMPLES_LLM_LAYER_MATH_H_
#define KVTIER_EXAMPLES_LLM_LAYER_MATH_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvtier::llm::layer_math {

// out = x / sqrt(mean(x²) + eps) * weight, row by row ([rows][weight.size()]).
void RmsNorm(const float* x, size_t rows, const std::vector<float>& weight, float eps, float* out);

// Rotates q [rows][q_heads][head_dim] and k [rows][kv_heads][head_dim] in place for positions
// [pos, pos + rows): within each head, element i pairs with i + head_dim/2 and both rotate by
// (pos + t) · theta^(-2i/head_dim).
void ApplyRope(float rope_theta, uint32_t pos, size_t rows, size_t head_dim, size_t q_heads,
               float* q, size_t kv_heads, float* k);

// act[t][i] = silu(gate[t][i]) * up[t][i], where row t of gate_up is [gate (f) | up (f)].
void SwiGlu(const float* gate_up, size_t rows, size_t f, float* act);

}  // namespace kvtier::llm::layer_math

#endif  // KVTIER_EXAMPLES_LLM_LAYER_MATH_H_
