// tests/tiers/quantized_kv.h — random KV blocks and the error bounds of the quantized disk
// codecs (fp8, int8), shared by the record, disk tier and engine tests.
//
// Data: fresh random values every run (the seed is printed on failure; KVTIER_TEST_SEED=N
// pins it), N(0, σ) with σ drawn per head over e^±3 so the heads' scales differ by up to
// e^6, never exactly zero and always finite.
//
// Bounds, per element, derived from the formats (kernels/quantize.h): with x the original,
// x̂ what came back, s = (max |x| over the head) / 127 (int8) or / 448 (fp8) — the head being
// one (block, layer, K/V, kv_head) — and u(v) half an ulp of the block's dtype at v:
//   int8: x / s is rounded to the nearest integer, so |x̂ − x| ≤ s/2 + u(x̂) + slack;
//   fp8:  x / s is rounded to e4m3 — 3 mantissa bits, so at most 2^-4 of the value in the
//         normal range, and at most 2^-10 (half the 2^-9 step) in the subnormal range — so
//         |x̂ − x| ≤ 2^-4·|x| + 2^-10·s + u(x̂) + slack.
// u(x̂) is the final rounding to the dtype (2^-11 relative for fp16, 2^-8 for bf16, 0 for
// fp32); slack = 2^-21·(|x| + 448·s) covers the float division and multiplication.

#ifndef KVTIER_TESTS_TIERS_QUANTIZED_KV_H_
#define KVTIER_TESTS_TIERS_QUANTIZED_KV_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/numeric.h"
#include "kernels/quantize.h"
#include "kvtier/geometry.h"

namespace kvtier::quantized_kv {

// A fresh seed per run, or KVTIER_TEST_SEED.
inline uint64_t TestSeed() {
  if (const char* env = std::getenv("KVTIER_TEST_SEED"); env != nullptr) {
    return std::strtoull(env, nullptr, 10);
  }
  std::random_device rd;
  return (uint64_t{rd()} << 32) | rd();
}

inline double GetValue(DType dtype, const uint8_t* p) {
  switch (dtype) {
    case DType::kFloat16: {
      uint16_t b;
      std::memcpy(&b, p, 2);
      return numeric::HalfBitsToFloat(b);
    }
    case DType::kBFloat16: {
      uint16_t b;
      std::memcpy(&b, p, 2);
      return numeric::Bf16BitsToFloat(b);
    }
    case DType::kFp8E4m3:  // one byte per element: never quantized, never here
    case DType::kFp8E5m2:
      std::abort();
    case DType::kFloat32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
  }
  return 0;
}

// Stores v rounded to dtype; returns the stored value.
inline double SetValue(DType dtype, uint8_t* p, double v) {
  const float f = static_cast<float>(v);
  switch (dtype) {
    case DType::kFloat16: {
      const uint16_t b = numeric::FloatToHalfBits(f);
      std::memcpy(p, &b, 2);
      break;
    }
    case DType::kBFloat16: {
      const uint16_t b = numeric::FloatToBf16Bits(f);
      std::memcpy(p, &b, 2);
      break;
    }
    case DType::kFp8E4m3:  // one byte per element: never quantized, never here
    case DType::kFp8E5m2:
      std::abort();
    case DType::kFloat32:
      std::memcpy(p, &f, 4);
      break;
  }
  return GetValue(dtype, p);
}

// Half an ulp of `dtype` at |v|.
inline double HalfUlp(DType dtype, double v) {
  if (dtype == DType::kFloat32 || v == 0) return 0;
  int exp = 0;
  std::frexp(std::fabs(v), &exp);  // |v| in [2^(exp-1), 2^exp)
  if (dtype == DType::kFloat16) return std::ldexp(1.0, std::max(exp - 1, -14) - 11);
  return std::ldexp(1.0, std::max(exp - 1, -126) - 8);
}

// Byte offset of an element inside one block (through Geometry::Offset).
inline size_t ElementOffset(const Geometry& g, uint32_t layer, KvPart part, uint32_t token,
                            uint32_t head, uint32_t d) {
  return g.Offset(layer, part, token) + (size_t{head} * g.head_dim + d) * g.element_bytes();
}

// fn(layer, part, head) for every head of one block.
template <typename Fn>
void ForEachHead(const Geometry& g, Fn&& fn) {
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    for (uint32_t p = 0; p < g.parts(); ++p) {
      for (uint32_t h = 0; h < g.num_kv_heads; ++h) fn(l, static_cast<KvPart>(p), h);
    }
  }
}

// One random block of `g` (see the top of this file).
inline std::vector<uint8_t> RandomBlock(const Geometry& g, std::mt19937_64& rng) {
  std::vector<uint8_t> out(g.block_bytes());
  std::uniform_real_distribution<double> log_sigma(-3, 3);
  ForEachHead(g, [&](uint32_t l, KvPart part, uint32_t h) {
    std::normal_distribution<double> normal(0, std::exp(log_sigma(rng)));
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t d = 0; d < g.head_dim; ++d) {
        uint8_t* p = out.data() + ElementOffset(g, l, part, t, h, d);
        while (SetValue(g.dtype, p, normal(rng)) == 0) {
        }
      }
    }
  });
  return out;
}

// The scale the format defines for one head of `block`: max |x| / 127 or / 448, in float.
inline float HeadScale(const Geometry& g, QuantFormat f, const uint8_t* block, uint32_t layer,
                       KvPart part, uint32_t head) {
  float amax = 0;
  for (uint32_t t = 0; t < g.block_tokens; ++t) {
    for (uint32_t d = 0; d < g.head_dim; ++d) {
      const auto x =
          static_cast<float>(GetValue(g.dtype, block + ElementOffset(g, layer, part, t, head, d)));
      if (std::isfinite(x)) amax = std::max(amax, std::fabs(x));
    }
  }
  return amax / (f == QuantFormat::kFp8E4m3 ? 448.0f : 127.0f);
}

inline double ErrorBound(DType dtype, QuantFormat f, double x, double x_hat, double s) {
  const double slack = std::ldexp(std::fabs(x) + 448 * s, -21);
  if (f == QuantFormat::kInt8) return s / 2 + HalfUlp(dtype, x_hat) + slack;
  return std::ldexp(std::fabs(x), -4) + std::ldexp(s, -10) + HalfUlp(dtype, x_hat) + slack;
}

// How `roundtrip` compares with `original` (one block each).
struct BoundCheck {
  size_t violations = 0;
  std::string first;     // the first violation, described
  size_t exact = 0;      // elements that came back bit for bit
  size_t elements = 0;
};

inline BoundCheck CheckBlockWithinBounds(const Geometry& g, QuantFormat f,
                                         const uint8_t* original, const uint8_t* roundtrip) {
  BoundCheck c;
  ForEachHead(g, [&](uint32_t l, KvPart part, uint32_t h) {
    const double s = HeadScale(g, f, original, l, part, h);
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t d = 0; d < g.head_dim; ++d) {
        const size_t at = ElementOffset(g, l, part, t, h, d);
        const double x = GetValue(g.dtype, original + at);
        const double y = GetValue(g.dtype, roundtrip + at);
        ++c.elements;
        c.exact += std::memcmp(original + at, roundtrip + at, g.element_bytes()) == 0;
        const double bound = ErrorBound(g.dtype, f, x, y, s);
        if (std::isfinite(y) && std::fabs(y - x) <= bound) continue;
        if (c.violations++ == 0) {
          c.first = absl::StrFormat(
              "layer %d %s token %d head %d dim %d: x = %.9g, x̂ = %.9g, scale = %.9g, "
              "|x̂ − x| = %.9g > bound %.9g",
              l, part == KvPart::kKey ? "K" : "V", t, h, d, x, y, s, std::fabs(y - x), bound);
        }
      }
    }
  });
  return c;
}

// Expects every element of `roundtrip` within its bound, and the block not to have come back
// unchanged (which would mean it was never quantized).
inline void ExpectDequantizedWithinBounds(const Geometry& g, QuantFormat f,
                                          const std::vector<uint8_t>& original,
                                          const std::vector<uint8_t>& roundtrip) {
  ASSERT_EQ(original.size(), g.block_bytes());
  ASSERT_EQ(roundtrip.size(), g.block_bytes());
  const BoundCheck c = CheckBlockWithinBounds(g, f, original.data(), roundtrip.data());
  EXPECT_EQ(c.violations, 0u) << QuantFormatName(f) << " " << g.ToString()
                              << ", first: " << c.first;
  EXPECT_LT(c.exact, c.elements) << "every element came back exact: not quantized?";
}

// The CPU reference's round trip of one block: what a quantized record must decode to.
inline std::vector<uint8_t> ReferenceRoundTrip(const Geometry& g, QuantFormat f,
                                               const std::vector<uint8_t>& original) {
  QuantizeParams p;
  p.geometry = g;
  p.format = f;
  p.num_blocks = 1;
  p.src_stride = g.block_bytes();
  p.dst_stride = QuantizedBlockBytes(g, f);
  std::vector<uint8_t> quantized(QuantizedBlockBytes(g, f));
  QuantizeBlocksCpu(p, original.data(), quantized.data());
  std::vector<uint8_t> back(g.block_bytes());
  p.src_stride = QuantizedBlockBytes(g, f);
  p.dst_stride = g.block_bytes();
  DequantizeBlocksCpu(p, quantized.data(), back.data());
  return back;
}

}  // namespace kvtier::quantized_kv

#endif  // KVTIER_TESTS_TIERS_QUANTIZED_KV_H_
