// examples/llm/layer_math.cc — RMSNorm, RoPE and SwiGLU on the host (see layer_math.h).

#include "examples/llm/layer_math.h"

#include <cmath>

namespace kvtier::llm::layer_math {
namespace {

void Rotate(const std::vector<float>& cos_table, const std::vector<float>& sin_table, size_t rows,
            size_t heads, size_t head_dim, float* x) {
  const size_t half = head_dim / 2;
  for (size_t t = 0; t < rows; ++t) {
    const float* c = cos_table.data() + t * half;
    const float* s = sin_table.data() + t * half;
    for (size_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (size_t i = 0; i < half; ++i) {
        const float x1 = v[i];
        const float x2 = v[i + half];
        v[i] = x1 * c[i] - x2 * s[i];
        v[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

}  // namespace

void RmsNorm(const float* x, size_t rows, const std::vector<float>& weight, float eps, float* out) {
  const size_t d = weight.size();
  for (size_t r = 0; r < rows; ++r) {
    const float* row = x + r * d;
    double sum_sq = 0.0;
    for (size_t i = 0; i < d; ++i) sum_sq += static_cast<double>(row[i]) * row[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / d + eps));
    for (size_t i = 0; i < d; ++i) out[r * d + i] = (row[i] * inv) * weight[i];
  }
}

// Angles in double: at position 10^6 a float angle would already be off by ~0.03 rad.
void ApplyRope(float rope_theta, uint32_t pos, size_t rows, size_t head_dim, size_t q_heads,
               float* q, size_t kv_heads, float* k) {
  const size_t half = head_dim / 2;
  std::vector<float> cos_table(rows * half), sin_table(rows * half);
  for (size_t i = 0; i < half; ++i) {
    const double inv_freq =
        std::pow(static_cast<double>(rope_theta), -2.0 * i / static_cast<double>(head_dim));
    for (size_t t = 0; t < rows; ++t) {
      const double angle = static_cast<double>(uint64_t{pos} + t) * inv_freq;
      cos_table[t * half + i] = static_cast<float>(std::cos(angle));
      sin_table[t * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  Rotate(cos_table, sin_table, rows, q_heads, head_dim, q);
  Rotate(cos_table, sin_table, rows, kv_heads, head_dim, k);
}

void SwiGlu(const float* gate_up, size_t rows, size_t f, float* act) {
  for (size_t t = 0; t < rows; ++t) {
    const float* g = gate_up + t * 2 * f;
    const float* u = g + f;
    for (size_t i = 0; i < f; ++i) act[t * f + i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

}  // namespace kvtier::llm::layer_math
