// tests/kernels/quantize_test.cc — the KV quantization kernels on the emulated device and
// their CPU references: the exact layout and arithmetic (against a naive re-implementation
// that walks the block through Geometry::Offset), every output byte written, per-element
// error bounds, measured error levels, zero / outlier / NaN / Inf heads, strided blocks, and
// parameter validation.
//
// Inputs are fresh random data each run; the seed is printed on failure and can be pinned
// with KVTIER_TEST_SEED=N to reproduce one.

#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/numeric.h"
#include "kernels/quantize_internal.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"
#include "tests/device/test_util.h"

namespace kvtier {
namespace {

constexpr uint8_t kPoison = 0xA5;
constexpr uint8_t kOtherPoison = 0x5A;

uint64_t TestSeed() {
  if (const char* env = std::getenv("KVTIER_TEST_SEED"); env != nullptr) {
    return std::strtoull(env, nullptr, 10);
  }
  std::random_device rd;
  return (uint64_t{rd()} << 32) | rd();
}

// ------------------------------------------------------------------ element access by dtype

double GetValue(DType dtype, const uint8_t* p) {
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
double SetValue(DType dtype, uint8_t* p, double v) {
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

// Half an ulp of `dtype` at |v|: what rounding the dequantized float to the dtype can add.
double HalfUlp(DType dtype, double v) {
  if (dtype == DType::kFloat32 || v == 0) return 0;
  int exp = 0;
  std::frexp(std::fabs(v), &exp);  // |v| in [2^(exp-1), 2^exp)
  if (dtype == DType::kFloat16) return std::ldexp(1.0, std::max(exp - 1, -14) - 11);
  return std::ldexp(1.0, std::max(exp - 1, -126) - 8);
}

// Visits every head of `blocks` contiguous blocks: fn(block, layer, part, head).
template <typename Fn>
void ForEachHead(const Geometry& g, size_t blocks, Fn&& fn) {
  for (size_t b = 0; b < blocks; ++b) {
    for (uint32_t l = 0; l < g.num_layers; ++l) {
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        for (uint32_t h = 0; h < g.num_kv_heads; ++h) fn(b, l, part, h);
      }
    }
  }
}

// Byte offset of an element of an original block (through Geometry::Offset, independently
// of the kernels' own index arithmetic). Divided by the element size: its quantized byte.
size_t ElementOffset(const Geometry& g, size_t block, uint32_t layer, KvPart part, uint32_t token,
                     uint32_t head, uint32_t d) {
  return block * g.block_bytes() + g.Offset(layer, part, token) +
         (size_t{head} * g.head_dim + d) * g.element_bytes();
}

size_t ScaleIndex(const Geometry& g, uint32_t layer, KvPart part, uint32_t head) {
  return (size_t{layer} * 2 + static_cast<size_t>(part)) * g.num_kv_heads + head;
}

float StoredScale(const Geometry& g, QuantFormat f, const std::vector<uint8_t>& quantized,
                  size_t block, uint32_t layer, KvPart part, uint32_t head) {
  float s;
  std::memcpy(&s,
              quantized.data() + block * QuantizedBlockBytes(g, f) + QuantizedScalesOffset(g) +
                  4 * ScaleIndex(g, layer, part, head),
              4);
  return s;
}

// ------------------------------------------------------------------------------ input data

enum class Data {
  kGaussian,              // N(0, σ) with σ drawn per head over e^±3
  kGaussianWithOutliers,  // the same plus 3 values per head at ±(6..12)σ
};

// Random original blocks, never exactly zero.
std::vector<uint8_t> MakeBlocks(const Geometry& g, size_t blocks, Data data, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(blocks * g.block_bytes());
  std::uniform_real_distribution<double> log_sigma(-3, 3), outlier(6, 12);
  std::uniform_int_distribution<uint32_t> token(0, g.block_tokens - 1), dim(0, g.head_dim - 1);
  ForEachHead(g, blocks, [&](size_t b, uint32_t l, KvPart part, uint32_t h) {
    const double sigma = std::exp(log_sigma(rng));
    std::normal_distribution<double> normal(0, sigma);
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t d = 0; d < g.head_dim; ++d) {
        uint8_t* p = out.data() + ElementOffset(g, b, l, part, t, h, d);
        while (SetValue(g.dtype, p, normal(rng)) == 0) {
        }
      }
    }
    if (data == Data::kGaussianWithOutliers) {
      for (int i = 0; i < 3; ++i) {
        const double v = outlier(rng) * sigma * ((rng() & 1) != 0 ? 1 : -1);
        SetValue(g.dtype, out.data() + ElementOffset(g, b, l, part, token(rng), h, dim(rng)), v);
      }
    }
  });
  return out;
}

// ------------------------------------------------------------------------ naive reference

// The quantized blocks as quantize.h describes them, computed the obvious way: per head, the
// amax by float comparison over finite values, scale = amax / max_code, q = code(x / scale).
std::vector<uint8_t> NaiveQuantize(const Geometry& g, QuantFormat f,
                                   const std::vector<uint8_t>& original, size_t blocks) {
  const size_t qbytes = QuantizedBlockBytes(g, f);
  std::vector<uint8_t> out(blocks * qbytes, 0);
  const float max_code = f == QuantFormat::kFp8E4m3 ? 448.0f : 127.0f;
  ForEachHead(g, blocks, [&](size_t b, uint32_t l, KvPart part, uint32_t h) {
    float amax = 0;
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t d = 0; d < g.head_dim; ++d) {
        const float x = static_cast<float>(
            GetValue(g.dtype, original.data() + ElementOffset(g, b, l, part, t, h, d)));
        if (std::isfinite(x)) amax = std::max(amax, std::fabs(x));
      }
    }
    const float scale = amax / max_code;
    uint8_t* block = out.data() + b * qbytes;
    std::memcpy(block + QuantizedScalesOffset(g) + 4 * ScaleIndex(g, l, part, h), &scale, 4);
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t d = 0; d < g.head_dim; ++d) {
        const size_t at = ElementOffset(g, b, l, part, t, h, d);
        const float x = static_cast<float>(GetValue(g.dtype, original.data() + at));
        uint8_t q = 0;
        if (scale != 0) {
          q = f == QuantFormat::kFp8E4m3 ? numeric::FloatToE4m3Bits(x / scale)
                                         : static_cast<uint8_t>(numeric::FloatToInt8(x / scale));
        }
        block[(at - b * g.block_bytes()) / g.element_bytes()] = q;
      }
    }
  });
  return out;
}

// ------------------------------------------------------------------------- error checking

// Per element, with x the original, x̂ the round trip, s its head's scale and u(v) half an ulp
// of the original dtype at v (HalfUlp; 0 for fp32). With y = fl(x / s) = (x / s)(1 + δ),
// |δ| ≤ 2^-24:
//   int8: |q − y| ≤ 1/2 (round to nearest; the clamp at ±127 only cuts |y| ≤ 127(1 + 2^-23)),
//         so |x̂ − x| ≤ s/2 + u(x̂) + slack.
//   fp8:  |q − y| ≤ |y|·2^-4 in the normal range (half of e4m3's ulp 2^(e−3) for |y| ≥ 2^e)
//         and ≤ 2^-10 in the subnormal range (half the step 2^-9), so
//         |x̂ − x| ≤ |x|·2^-4 + s·2^-10 + u(x̂) + slack.
// u(x̂) is there because x̂ is rounded once more, to fp16 (2^-11 relative) or bf16 (2^-8);
// slack = 2^-21·(|x| + 448·s) covers the float division and multiplication (2^-24 each).
double ErrorBound(DType dtype, QuantFormat f, double x, double x_hat, double s) {
  const double slack = std::ldexp(std::fabs(x) + 448 * s, -21);
  if (f == QuantFormat::kInt8) return s / 2 + HalfUlp(dtype, x_hat) + slack;
  return std::ldexp(std::fabs(x), -4) + std::ldexp(s, -10) + HalfUlp(dtype, x_hat) + slack;
}

// Checks every element of the round trip against its bound; heads with scale 0 must come
// back as +0 exactly. Reports the first violation and how many there were.
void ExpectWithinBounds(const Geometry& g, QuantFormat f, const std::vector<uint8_t>& original,
                        const std::vector<uint8_t>& quantized,
                        const std::vector<uint8_t>& roundtrip, size_t blocks) {
  size_t violations = 0;
  std::string first;
  ForEachHead(g, blocks, [&](size_t b, uint32_t l, KvPart part, uint32_t h) {
    const double s = StoredScale(g, f, quantized, b, l, part, h);
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t d = 0; d < g.head_dim; ++d) {
        const size_t at = ElementOffset(g, b, l, part, t, h, d);
        const double x = GetValue(g.dtype, original.data() + at);
        const double y = GetValue(g.dtype, roundtrip.data() + at);
        if (!std::isfinite(x)) continue;  // checked by the NaN / Inf test
        bool ok;
        if (s == 0) {
          ok = y == 0 && !std::signbit(y);
        } else {
          ok = std::isfinite(y) && std::fabs(y - x) <= ErrorBound(g.dtype, f, x, y, s);
        }
        if (!ok && violations++ == 0) {
          first = absl::StrFormat(
              "block %d layer %d %s token %d head %d dim %d: x = %.9g, x̂ = %.9g, scale = %.9g, "
              "|x̂ − x| = %.9g > bound %.9g",
              b, l, part == KvPart::kKey ? "K" : "V", t, h, d, x, y, s, std::fabs(y - x),
              ErrorBound(g.dtype, f, x, y, s));
        }
      }
    }
  });
  EXPECT_EQ(violations, 0u) << "first: " << first;
}

// Offset of the first byte where a and b differ, or -1.
long FirstDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<long>(i);
  }
  return -1;
}

// ----------------------------------------------------------------------------- the fixture

struct Case {
  DType dtype;
  QuantFormat format;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrFormat("%s_to_%s", DTypeName(info.param.dtype),
                         QuantFormatName(info.param.format));
}

class QuantizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = TestSeed();
    DeviceOptions options;
    options.choice = DeviceChoice::kEmulated;
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
    absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    stream_ = std::move(*stream);
  }

  void TearDown() override {
    if (stream_ != nullptr) (void)stream_->Synchronize();
    for (DevicePtr p : allocations_) (void)device_->Free(p);
  }

  // Device memory holding `bytes` (synchronized: callers pass temporaries).
  DevicePtr Upload(const std::vector<uint8_t>& bytes) {
    absl::StatusOr<DevicePtr> p = device_->Allocate(bytes.size());
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return DevicePtr();
    allocations_.push_back(*p);
    EXPECT_TRUE(stream_->CopyToDevice(*p, bytes.data(), bytes.size()).ok());
    EXPECT_TRUE(stream_->Synchronize().ok());
    return *p;
  }

  std::vector<uint8_t> Download(DevicePtr p, size_t bytes) {
    std::vector<uint8_t> out(bytes);
    EXPECT_TRUE(stream_->CopyToHost(out.data(), p, bytes).ok());
    EXPECT_TRUE(stream_->Synchronize().ok());
    return out;
  }

  struct RoundTrip {
    std::vector<uint8_t> quantized;
    std::vector<uint8_t> roundtrip;
  };

  // Quantizes `blocks` contiguous original blocks on the emulated device into poisoned
  // memory, dequantizes them into poisoned memory, and brings both back.
  void RunOnDevice(const Geometry& g, QuantFormat f, const std::vector<uint8_t>& original,
                   size_t blocks, RoundTrip* out) {
    const size_t qbytes = QuantizedBlockBytes(g, f);
    const DevicePtr src = Upload(original);
    const DevicePtr q = Upload(std::vector<uint8_t>(blocks * qbytes, kPoison));
    const DevicePtr back = Upload(std::vector<uint8_t>(original.size(), kPoison));
    ASSERT_FALSE(src.is_null() || q.is_null() || back.is_null());
    QuantizeParams p{g, f, static_cast<uint32_t>(blocks), src, g.block_bytes(), q, qbytes};
    KVTIER_ASSERT_OK(p.Validate(true));
    KVTIER_ASSERT_OK(stream_->Launch(MakeQuantizeKernel(p)));
    QuantizeParams d{g, f, static_cast<uint32_t>(blocks), q, qbytes, back, g.block_bytes()};
    KVTIER_ASSERT_OK(d.Validate(false));
    KVTIER_ASSERT_OK(stream_->Launch(MakeDequantizeKernel(d)));
    KVTIER_ASSERT_OK(stream_->Synchronize());
    out->quantized = Download(q, blocks * qbytes);
    out->roundtrip = Download(back, original.size());
  }

  // The device's results equal the CPU references run into memory with another poison (so
  // every byte was written by both) and the naive re-implementation; the padding is zero;
  // every element is within its bound. Returns the measured error.
  QuantError CheckRoundTrip(const Geometry& g, QuantFormat f, const std::vector<uint8_t>& original,
                            const RoundTrip& rt, size_t blocks) {
    const size_t qbytes = QuantizedBlockBytes(g, f);
    std::vector<uint8_t> cpu_q(blocks * qbytes, kOtherPoison);
    QuantizeBlocksCpu(
        QuantizeParams{g, f, static_cast<uint32_t>(blocks), {}, g.block_bytes(), {}, qbytes},
        original.data(), cpu_q.data());
    EXPECT_EQ(FirstDifference(rt.quantized, cpu_q), -1) << "device vs QuantizeBlocksCpu";
    EXPECT_EQ(FirstDifference(rt.quantized, NaiveQuantize(g, f, original, blocks)), -1)
        << "device vs the naive reference";
    std::vector<uint8_t> cpu_back(original.size(), kOtherPoison);
    DequantizeBlocksCpu(
        QuantizeParams{g, f, static_cast<uint32_t>(blocks), {}, qbytes, {}, g.block_bytes()},
        rt.quantized.data(), cpu_back.data());
    EXPECT_EQ(FirstDifference(rt.roundtrip, cpu_back), -1) << "device vs DequantizeBlocksCpu";
    ExpectWithinBounds(g, f, original, rt.quantized, rt.roundtrip, blocks);
    absl::StatusOr<QuantError> e =
        MeasureQuantError(g, f, original.data(), rt.roundtrip.data(), blocks);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *e : QuantError{};
  }

  uint64_t seed_ = 0;
  std::unique_ptr<Device> device_;
  std::unique_ptr<Stream> stream_;
  std::vector<DevicePtr> allocations_;
};

class QuantizeRoundTripTest : public QuantizeTest, public ::testing::WithParamInterface<Case> {};

// Error levels. relative_rms measured over 40 seeds (16-token × 128-dim heads; the tiny
// 5 × 8 heads measure lower, fp8 down to 0.016, int8 down to 0.0047):
//   fp8:  0.0262-0.0268 (e4m3 keeps 3 mantissa bits: a relative error, independent of σ)
//   int8: 0.0079-0.0088 on gaussian heads (amax ≈ 3.5σ); 0.0216-0.0236 with 6-12σ outliers,
//         which stretch the scale — the price of one scale per head
// The limits leave ≥ 15% margin (the spread between seeds is ~±5%) and the lower limits catch a
// quantizer that does nothing. max |x̂ − x| / scale has a hard ceiling: half the largest
// step (16 for e4m3's top binade [256, 448], 1/2 for int8) plus the rounding of x̂ to the
// original dtype at the largest code (448 or 127 times 2^-11 for fp16, 2^-8 for bf16, 0 for
// fp32); measured: fp8 16.00 / 16.15 / 17.12 and int8 0.500 / 0.552 / 0.934 (fp32/fp16/bf16).
double MaxAbsOverScaleCeiling(DType dtype, QuantFormat f) {
  const double code = f == QuantFormat::kFp8E4m3 ? 448 : 127;
  const double u = dtype == DType::kFloat16    ? std::ldexp(1.0, -11)
                   : dtype == DType::kBFloat16 ? std::ldexp(1.0, -8)
                                               : 0.0;
  return (f == QuantFormat::kFp8E4m3 ? 16.0 : 0.5) + code * u + 1e-3;
}

TEST_P(QuantizeRoundTripTest, GaussianDataIsExactAndWithinBounds) {
  SCOPED_TRACE(absl::StrFormat("seed %d (KVTIER_TEST_SEED=%d reproduces)", seed_, seed_));
  const Case c = GetParam();
  for (Data data : {Data::kGaussian, Data::kGaussianWithOutliers}) {
    // Large heads (16 × 128: the dequantization table path) and tiny ones (the direct path).
    for (const Geometry& g : {Geometry{3, 4, 128, c.dtype, 16}, Geometry{2, 3, 8, c.dtype, 5}}) {
      SCOPED_TRACE(g.ToString() + (data == Data::kGaussian ? " gaussian" : " with outliers"));
      constexpr size_t kBlocks = 5;
      const std::vector<uint8_t> original = MakeBlocks(g, kBlocks, data, seed_);
      RoundTrip rt;
      ASSERT_NO_FATAL_FAILURE(RunOnDevice(g, c.format, original, kBlocks, &rt));
      const QuantError e = CheckRoundTrip(g, c.format, original, rt, kBlocks);
      std::printf(
          "[  error   ] %s %s -> %s: relative_rms %.5f, max_abs_over_scale %.4f, "
          "max_abs %.4g\n",
          data == Data::kGaussian ? "gaussian     " : "with outliers", DTypeName(c.dtype),
          QuantFormatName(c.format), e.relative_rms, e.max_abs_over_scale, e.max_abs);
      EXPECT_EQ(e.elements, kBlocks * g.block_bytes() / g.element_bytes());
      EXPECT_EQ(e.nonfinite, 0u);
      if (c.format == QuantFormat::kFp8E4m3) {
        EXPECT_LT(e.relative_rms, 0.032);
        EXPECT_GT(e.relative_rms, 0.01);
      } else {
        EXPECT_LT(e.relative_rms, data == Data::kGaussian ? 0.01 : 0.028);
        EXPECT_GT(e.relative_rms, 0.002);
      }
      EXPECT_LE(e.max_abs_over_scale, MaxAbsOverScaleCeiling(c.dtype, c.format));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypesAndFormats, QuantizeRoundTripTest,
                         ::testing::Values(Case{DType::kFloat16, QuantFormat::kFp8E4m3},
                                           Case{DType::kFloat16, QuantFormat::kInt8},
                                           Case{DType::kBFloat16, QuantFormat::kFp8E4m3},
                                           Case{DType::kBFloat16, QuantFormat::kInt8},
                                           Case{DType::kFloat32, QuantFormat::kFp8E4m3},
                                           Case{DType::kFloat32, QuantFormat::kInt8}),
                         CaseName);

// One head of +0, one of -0 and one of ±0 mixed with NaN: scale 0, zero payload, +0 back.
TEST_P(QuantizeRoundTripTest, ZeroHeadsGetScaleZeroAndComeBackAsPositiveZero) {
  SCOPED_TRACE(absl::StrFormat("seed %d", seed_));
  const Case c = GetParam();
  const Geometry g{2, 4, 16, c.dtype, 8};
  std::vector<uint8_t> original = MakeBlocks(g, 1, Data::kGaussian, seed_);
  for (uint32_t t = 0; t < g.block_tokens; ++t) {
    for (uint32_t d = 0; d < g.head_dim; ++d) {
      SetValue(c.dtype, original.data() + ElementOffset(g, 0, 1, KvPart::kValue, t, 2, d), 0.0);
      SetValue(c.dtype, original.data() + ElementOffset(g, 0, 0, KvPart::kKey, t, 0, d), -0.0);
      SetValue(c.dtype, original.data() + ElementOffset(g, 0, 1, KvPart::kKey, t, 3, d),
               d == 3 ? std::nan("") : ((t + d) % 2 == 0 ? 0.0 : -0.0));
    }
  }
  RoundTrip rt;
  ASSERT_NO_FATAL_FAILURE(RunOnDevice(g, c.format, original, 1, &rt));
  CheckRoundTrip(g, c.format, original, rt, 1);
  for (auto [l, part, h] : {std::tuple{1u, KvPart::kValue, 2u}, std::tuple{0u, KvPart::kKey, 0u},
                            std::tuple{1u, KvPart::kKey, 3u}}) {
    EXPECT_EQ(StoredScale(g, c.format, rt.quantized, 0, l, part, h), 0.0f);
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t d = 0; d < g.head_dim; ++d) {
        const size_t at = ElementOffset(g, 0, l, part, t, h, d);
        EXPECT_EQ(rt.quantized[at / g.element_bytes()], 0);
        for (size_t i = 0; i < g.element_bytes(); ++i) EXPECT_EQ(rt.roundtrip[at + i], 0);
      }
    }
  }
  // The neighbours keep their own scales.
  EXPECT_GT(StoredScale(g, c.format, rt.quantized, 0, 1, KvPart::kValue, 1), 0.0f);
}

// One huge value in a head of N(0, 1): it sets the scale and comes back within its bound
// (fp8: within 2^-4 relative; int8: within scale / 2); the rest of the head stays within
// theirs; other heads are unaffected.
TEST_P(QuantizeRoundTripTest, OneHugeOutlierSetsItsHeadsScaleOnly) {
  SCOPED_TRACE(absl::StrFormat("seed %d", seed_));
  const Case c = GetParam();
  const Geometry g{1, 2, 64, c.dtype, 16};
  std::vector<uint8_t> original = MakeBlocks(g, 1, Data::kGaussian, seed_);
  const double huge = c.dtype == DType::kFloat16 ? 60000.0 : 1e30;
  const double stored =
      SetValue(c.dtype, original.data() + ElementOffset(g, 0, 0, KvPart::kKey, 7, 1, 33), -huge);
  RoundTrip rt;
  ASSERT_NO_FATAL_FAILURE(RunOnDevice(g, c.format, original, 1, &rt));
  CheckRoundTrip(g, c.format, original, rt, 1);
  const float scale = StoredScale(g, c.format, rt.quantized, 0, 0, KvPart::kKey, 1);
  EXPECT_EQ(scale,
            static_cast<float>(-stored) / (c.format == QuantFormat::kFp8E4m3 ? 448.0f : 127.0f));
  const double back =
      GetValue(c.dtype, rt.roundtrip.data() + ElementOffset(g, 0, 0, KvPart::kKey, 7, 1, 33));
  EXPECT_NEAR(back, stored, std::fabs(stored) * 1e-2) << "the outlier itself is the max code";
  EXPECT_LT(StoredScale(g, c.format, rt.quantized, 0, 0, KvPart::kKey, 0), 1.0f);
}

// NaN and ±Inf are left out of the amax; Inf saturates to ±max code · scale; NaN becomes the
// e4m3 NaN (fp8) or 0 (int8). MeasureQuantError leaves them out and counts them.
TEST_P(QuantizeRoundTripTest, NanAndInfAreHandledAsDocumented) {
  SCOPED_TRACE(absl::StrFormat("seed %d", seed_));
  const Case c = GetParam();
  const Geometry g{1, 2, 16, c.dtype, 16};
  std::vector<uint8_t> original = MakeBlocks(g, 1, Data::kGaussian, seed_);
  const double inf = std::numeric_limits<double>::infinity();
  auto at = [&](uint32_t t, uint32_t d) { return ElementOffset(g, 0, 0, KvPart::kValue, t, 1, d); };
  SetValue(c.dtype, original.data() + at(0, 0), std::nan(""));
  SetValue(c.dtype, original.data() + at(1, 1), inf);
  SetValue(c.dtype, original.data() + at(2, 2), -inf);
  SetValue(c.dtype, original.data() + at(3, 3), 5.0);
  double amax = 0;
  for (uint32_t t = 0; t < g.block_tokens; ++t) {
    for (uint32_t d = 0; d < g.head_dim; ++d) {
      const double x = GetValue(c.dtype, original.data() + at(t, d));
      if (std::isfinite(x)) amax = std::max(amax, std::fabs(x));
    }
  }
  RoundTrip rt;
  ASSERT_NO_FATAL_FAILURE(RunOnDevice(g, c.format, original, 1, &rt));
  CheckRoundTrip(g, c.format, original, rt, 1);
  const bool fp8 = c.format == QuantFormat::kFp8E4m3;
  const float scale = StoredScale(g, c.format, rt.quantized, 0, 0, KvPart::kValue, 1);
  EXPECT_EQ(scale, static_cast<float>(amax) / (fp8 ? 448.0f : 127.0f));
  const size_t es = g.element_bytes();
  EXPECT_EQ(rt.quantized[at(0, 0) / es], fp8 ? 0x7f : 0x00);
  EXPECT_EQ(rt.quantized[at(1, 1) / es], fp8 ? 0x7e : 0x7f);  // +448 / +127
  EXPECT_EQ(rt.quantized[at(2, 2) / es], fp8 ? 0xfe : 0x81);  // -448 / -127
  const double nan_back = GetValue(c.dtype, rt.roundtrip.data() + at(0, 0));
  if (fp8) {
    EXPECT_TRUE(std::isnan(nan_back)) << nan_back;
  } else {
    EXPECT_EQ(nan_back, 0.0);
  }
  const double max_code = fp8 ? 448.0 : 127.0;
  EXPECT_NEAR(GetValue(c.dtype, rt.roundtrip.data() + at(1, 1)), max_code * scale, amax * 1e-2);
  EXPECT_NEAR(GetValue(c.dtype, rt.roundtrip.data() + at(2, 2)), -max_code * scale, amax * 1e-2);
  absl::StatusOr<QuantError> e =
      MeasureQuantError(g, c.format, original.data(), rt.roundtrip.data(), 1);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->nonfinite, 3u);
  EXPECT_EQ(e->elements, g.block_bytes() / es - 3);
  EXPECT_TRUE(std::isfinite(e->max_abs));
}

// Blocks `stride` bytes apart: the kernels read and write only the blocks, never the gaps.
TEST_P(QuantizeRoundTripTest, StridedBlocksLeaveTheGapsUntouched) {
  SCOPED_TRACE(absl::StrFormat("seed %d", seed_));
  const Case c = GetParam();
  const Geometry g{2, 2, 32, c.dtype, 16};
  constexpr size_t kBlocks = 4;
  const size_t block = g.block_bytes();
  const size_t qbytes = QuantizedBlockBytes(g, c.format);
  const size_t src_stride = block + 4096 + 16;
  const size_t q_stride = qbytes + 48;
  const size_t back_stride = block + 256;
  const std::vector<uint8_t> dense = MakeBlocks(g, kBlocks, Data::kGaussianWithOutliers, seed_);
  std::vector<uint8_t> src_host(kBlocks * src_stride, kPoison);
  for (size_t i = 0; i < kBlocks; ++i) {
    std::memcpy(src_host.data() + i * src_stride, dense.data() + i * block, block);
  }
  const DevicePtr src = Upload(src_host);
  const DevicePtr q = Upload(std::vector<uint8_t>(kBlocks * q_stride, kPoison));
  const DevicePtr back = Upload(std::vector<uint8_t>(kBlocks * back_stride, kPoison));
  ASSERT_FALSE(src.is_null() || q.is_null() || back.is_null());
  KVTIER_ASSERT_OK(
      stream_->Launch(MakeQuantizeKernel({g, c.format, kBlocks, src, src_stride, q, q_stride})));
  KVTIER_ASSERT_OK(stream_->Launch(
      MakeDequantizeKernel({g, c.format, kBlocks, q, q_stride, back, back_stride})));
  KVTIER_ASSERT_OK(stream_->Synchronize());
  EXPECT_EQ(FirstDifference(Download(src, src_host.size()), src_host), -1) << "src changed";
  const std::vector<uint8_t> q_host = Download(q, kBlocks * q_stride);
  const std::vector<uint8_t> back_host = Download(back, kBlocks * back_stride);
  RoundTrip rt;
  for (size_t i = 0; i < kBlocks; ++i) {
    for (size_t j = qbytes; j < q_stride; ++j) ASSERT_EQ(q_host[i * q_stride + j], kPoison);
    for (size_t j = block; j < back_stride; ++j) ASSERT_EQ(back_host[i * back_stride + j], kPoison);
    rt.quantized.insert(rt.quantized.end(), q_host.begin() + i * q_stride,
                        q_host.begin() + i * q_stride + qbytes);
    rt.roundtrip.insert(rt.roundtrip.end(), back_host.begin() + i * back_stride,
                        back_host.begin() + i * back_stride + block);
  }
  // Strided or dense, the bytes are the same.
  CheckRoundTrip(g, c.format, dense, rt, kBlocks);

  // The CPU references take the same strides.
  std::vector<uint8_t> cpu_q(kBlocks * q_stride, kPoison);
  QuantizeBlocksCpu({g, c.format, kBlocks, {}, src_stride, {}, q_stride}, src_host.data(),
                    cpu_q.data());
  EXPECT_EQ(FirstDifference(cpu_q, q_host), -1);
  std::vector<uint8_t> cpu_back(kBlocks * back_stride, kPoison);
  DequantizeBlocksCpu({g, c.format, kBlocks, {}, q_stride, {}, back_stride}, cpu_q.data(),
                      cpu_back.data());
  EXPECT_EQ(FirstDifference(cpu_back, back_host), -1);
}

// ------------------------------------------------- host fast paths == numeric.h, bit for bit

TEST(QuantizeFastPaths, HalfToFloatMatchesNumericForEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float fast = quantize_internal::HalfBitsToFloatFast(static_cast<uint16_t>(h));
    const float ref = numeric::HalfBitsToFloat(static_cast<uint16_t>(h));
    ASSERT_EQ(numeric::FloatBits(fast), numeric::FloatBits(ref)) << absl::StrFormat("0x%04x", h);
  }
}

// Every (sign, exponent, top mantissa bits) with the rounding-relevant low bits at each edge
// (0, just above 0, just below / at / above half, just below the next step) and random ones.
std::vector<uint32_t> RoundingSweep(int kept_bits, uint64_t seed) {
  const int low = 23 - kept_bits;  // mantissa bits below the swept ones
  const uint32_t half = 1u << (low - 1), full = (1u << low) - 1;
  std::vector<uint32_t> lows = {0, 1, 2, half - 1, half, half + 1, full - 1, full};
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 6; ++i) lows.push_back(static_cast<uint32_t>(rng()) & full);
  std::vector<uint32_t> out;
  for (uint32_t top = 0; top < (1u << (9 + kept_bits)); ++top) {
    for (uint32_t l : lows) out.push_back((top << low) | l);
  }
  return out;
}

TEST(QuantizeFastPaths, FloatToE4m3MatchesNumericAtEveryRoundingEdge) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(absl::StrFormat("seed %d", seed));
  // 3 mantissa bits are kept in the normal range; sweeping 6 covers the subnormal shifts too.
  for (uint32_t bits : RoundingSweep(6, seed)) {
    const float f = numeric::BitsToFloat(bits);
    ASSERT_EQ(quantize_internal::FloatToE4m3BitsFast(f), numeric::FloatToE4m3Bits(f))
        << absl::StrFormat("0x%08x (%g)", bits, f);
  }
}

TEST(QuantizeFastPaths, FloatToInt8MatchesNumericAtEveryRoundingEdge) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(absl::StrFormat("seed %d", seed));
  // |f| < 2^7 has at most 7 integer bits, so the half point of its rounding is one of the top
  // 8 mantissa bits (or the exponent, for |f| < 1): sweeping 8 hits every half point exactly.
  for (uint32_t bits : RoundingSweep(8, seed)) {
    const float f = numeric::BitsToFloat(bits);
    ASSERT_EQ(quantize_internal::FloatToInt8Fast(f), numeric::FloatToInt8(f))
        << absl::StrFormat("0x%08x (%g)", bits, f);
  }
}

// End to end over the whole fp16 domain: every half, divided by assorted scales, quantizes as
// numeric.h's own functions would.
TEST(QuantizeFastPaths, QuantizeValueMatchesNumericForEveryHalf) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(absl::StrFormat("seed %d", seed));
  std::mt19937_64 rng(seed);
  std::vector<float> scales = {1.0f, 1e-9f, 3e-5f, 65504.0f / 448, 65504.0f / 127, 0.37f};
  for (int i = 0; i < 6; ++i) {
    scales.push_back(std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f,
                                -20 + static_cast<int>(rng() % 30)));
  }
  for (float s : scales) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
      const float x = numeric::HalfBitsToFloat(static_cast<uint16_t>(h));
      ASSERT_EQ(quantize_internal::QuantizeValue<quantize_internal::kFormatFp8>(x, s),
                numeric::FloatToE4m3Bits(x / s))
          << absl::StrFormat("half 0x%04x / %g", h, s);
      ASSERT_EQ(quantize_internal::QuantizeValue<quantize_internal::kFormatInt8>(x, s),
                static_cast<uint8_t>(numeric::FloatToInt8(x / s)))
          << absl::StrFormat("half 0x%04x / %g", h, s);
    }
  }
}

// ---------------------------------------------------------------------- layout and names

TEST(QuantFormat, NamesAndParsing) {
  EXPECT_STREQ(QuantFormatName(QuantFormat::kNone), "none");
  EXPECT_STREQ(QuantFormatName(QuantFormat::kFp8E4m3), "fp8");
  EXPECT_STREQ(QuantFormatName(QuantFormat::kInt8), "int8");
  for (QuantFormat f : {QuantFormat::kNone, QuantFormat::kFp8E4m3, QuantFormat::kInt8}) {
    absl::StatusOr<QuantFormat> parsed = ParseQuantFormat(QuantFormatName(f));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, f);
  }
  EXPECT_EQ(*ParseQuantFormat("E4M3"), QuantFormat::kFp8E4m3);
  EXPECT_EQ(ParseQuantFormat("int4").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseQuantFormat("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantizedBlockLayout, PayloadThenScalesEachRoundedTo16) {
  // Llama-3-8B, 16 tokens: 2 MiB of fp16 → 1 MiB of codes + 32 × 2 × 8 float scales.
  const Geometry llama{32, 8, 128, DType::kFloat16, 16};
  EXPECT_EQ(QuantizedScalesOffset(llama), size_t{1} << 20);
  EXPECT_EQ(QuantizedBlockBytes(llama, QuantFormat::kFp8E4m3), (size_t{1} << 20) + 2048);
  EXPECT_EQ(QuantizedBlockBytes(llama, QuantFormat::kInt8), (size_t{1} << 20) + 2048);
  EXPECT_EQ(QuantizedBlockBytes(llama, QuantFormat::kNone), 0u);
  // 2 × 2 × 7 × 3 × 5 = 420 codes → scales at 432; 12 scales end at 480.
  const Geometry odd{2, 3, 5, DType::kFloat32, 7};
  EXPECT_EQ(QuantizedScalesOffset(odd), 432u);
  EXPECT_EQ(QuantizedBlockBytes(odd, QuantFormat::kInt8), 480u);
  // 1 code, 2 scales: 16 + 8 → 32.
  EXPECT_EQ(QuantizedBlockBytes(Geometry{1, 1, 1, DType::kBFloat16, 1}, QuantFormat::kFp8E4m3),
            32u);
}

TEST(QuantizeKernels, HaveNamesACpuReferenceAndACudaPartOnlyWithCuda) {
  const QuantizeParams p{Geometry{1, 1, 16, DType::kFloat16, 16},
                         QuantFormat::kFp8E4m3,
                         1,
                         DevicePtr::FromAddress(0x1000),
                         512,
                         DevicePtr::FromAddress(0x10000),
                         512};
  KernelLaunch q = MakeQuantizeKernel(p);
  KernelLaunch d = MakeDequantizeKernel(p);
  EXPECT_STREQ(q.name, "quantize_kv");
  EXPECT_STREQ(d.name, "dequantize_kv");
  EXPECT_TRUE(static_cast<bool>(q.cpu));
  EXPECT_TRUE(static_cast<bool>(d.cpu));
#if defined(KVTIER_HAVE_CUDA)
  EXPECT_TRUE(static_cast<bool>(q.cuda));
#else
  EXPECT_FALSE(static_cast<bool>(q.cuda));
#endif
}

// The reference resolves every block before writing: a foreign range is an error naming it
// and nothing is written.
TEST(QuantizeKernels, AnUnresolvableBlockIsAnErrorAndNothingIsWritten) {
  const Geometry g{1, 1, 16, DType::kFloat16, 16};
  const size_t block = g.block_bytes();
  const size_t qbytes = QuantizedBlockBytes(g, QuantFormat::kInt8);
  std::vector<uint8_t> src(2 * block, 0x3c), dst(2 * qbytes, kPoison);
  const KernelLaunch::Resolver resolve = [&](DevicePtr ptr, size_t bytes) -> void* {
    if (ptr.address() == 0x100000 && bytes == block) return src.data();
    if (ptr.address() == 0x100000 + block && bytes == block) return nullptr;  // block 1: foreign
    if (ptr.address() >= 0x800000 && bytes == qbytes)
      return dst.data() + (ptr.address() - 0x800000);
    return nullptr;
  };
  KernelLaunch k = MakeQuantizeKernel({g, QuantFormat::kInt8, 2, DevicePtr::FromAddress(0x100000),
                                       block, DevicePtr::FromAddress(0x800000), qbytes});
  const absl::Status s = k.cpu(resolve);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "src block 1")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), absl::StrFormat("0x%x", 0x100000 + block))) << s;
  EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](uint8_t b) { return b == kPoison; }));
}

// ---------------------------------------------------------------------- invalid parameters

struct BadParams {
  const char* what;
  bool quantize;
  QuantizeParams params;
  const char* field;  // the message must contain this
};

TEST_F(QuantizeTest, BadParamsAreInvalidArgumentNamingTheField) {
  const Geometry g{2, 2, 16, DType::kFloat16, 16};
  const QuantFormat f = QuantFormat::kFp8E4m3;
  const size_t block = g.block_bytes();  // 4096
  const size_t qbytes = QuantizedBlockBytes(g, f);
  absl::StatusOr<DevicePtr> a = device_->Allocate(4 * block);
  absl::StatusOr<DevicePtr> b = device_->Allocate(4 * qbytes);
  ASSERT_TRUE(a.ok() && b.ok());
  allocations_ = {*a, *b};
  const QuantizeParams good_q{g, f, 4, *a, block, *b, qbytes};
  const QuantizeParams good_d{g, f, 4, *b, qbytes, *a, block};
  KVTIER_ASSERT_OK(good_q.Validate(true));
  KVTIER_ASSERT_OK(good_d.Validate(false));
  // Validation is side-specific: the dequantize params are not valid for quantizing.
  EXPECT_FALSE(good_d.Validate(true).ok());

  std::vector<BadParams> cases;
  auto add = [&](const char* what, bool quantize, const char* field, auto mutate) {
    QuantizeParams p = quantize ? good_q : good_d;
    mutate(p);
    cases.push_back({what, quantize, p, field});
  };
  add("zero layers", true, "num_layers", [](QuantizeParams& p) { p.geometry.num_layers = 0; });
  add("bad dtype", true, "dtype", [](QuantizeParams& p) { p.geometry.dtype = DType{9}; });
  // Blocks already one byte per element are never quantized (nor dequantized into).
  add("fp8 e4m3 dtype", true, "dtype",
      [](QuantizeParams& p) { p.geometry.dtype = DType::kFp8E4m3; });
  add("fp8 e5m2 dtype", false, "dtype",
      [](QuantizeParams& p) { p.geometry.dtype = DType::kFp8E5m2; });
  add("format none", true, "format", [](QuantizeParams& p) { p.format = QuantFormat::kNone; });
  add("format 7", false, "format", [](QuantizeParams& p) { p.format = QuantFormat{7}; });
  add("null src", true, "src", [](QuantizeParams& p) { p.src = DevicePtr(); });
  add("null dst", false, "dst", [](QuantizeParams& p) { p.dst = DevicePtr(); });
  add("src stride", true, "src_stride", [&](QuantizeParams& p) { p.src_stride = block - 2; });
  add("dst stride", true, "dst_stride", [&](QuantizeParams& p) { p.dst_stride = qbytes - 4; });
  add("dq src stride", false, "src_stride", [&](QuantizeParams& p) { p.src_stride = qbytes - 16; });
  add("dq dst stride", false, "dst_stride", [&](QuantizeParams& p) { p.dst_stride = 0; });
  add("odd original", true, "src", [](QuantizeParams& p) { p.src = p.src + 1; });
  add("unaligned scales", true, "dst", [](QuantizeParams& p) { p.dst = p.dst + 2; });
  add("odd stride", false, "dst_stride", [&](QuantizeParams& p) { p.dst_stride = block + 1; });
  add("overlap", true, "overlap", [&](QuantizeParams& p) { p.dst = p.src + 2 * block; });
  add("in place", false, "overlap", [](QuantizeParams& p) { p.dst = p.src; });
  add("wraps", true, "src_stride", [](QuantizeParams& p) {
    p.src = DevicePtr::FromAddress(~uint64_t{0} - 4095);
    p.src_stride = uint64_t{1} << 62;
  });

  for (const BadParams& c : cases) {
    SCOPED_TRACE(c.what);
    const absl::Status s = c.params.Validate(c.quantize);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), c.field)) << s;
    // Through the device: the launch's error surfaces (from Synchronize on the emulated
    // device) as the same InvalidArgument, and the stream stays usable.
    KernelLaunch k = c.quantize ? MakeQuantizeKernel(c.params) : MakeDequantizeKernel(c.params);
    absl::Status launched = stream_->Launch(std::move(k));
    if (launched.ok()) launched = stream_->Synchronize();
    EXPECT_EQ(launched.code(), absl::StatusCode::kInvalidArgument) << launched;
    EXPECT_TRUE(absl::StrContains(launched.message(), c.field)) << launched;
    KernelLaunch none = MakeQuantizeKernel(QuantizeParams{g, f, 0});
    KVTIER_EXPECT_OK(stream_->Launch(std::move(none)));
    KVTIER_EXPECT_OK(stream_->Synchronize());
  }
}

TEST(QuantizeParams, ZeroBlocksNeedNoPointers) {
  KVTIER_EXPECT_OK(
      (QuantizeParams{Geometry{1, 1, 8, DType::kBFloat16, 4}, QuantFormat::kInt8, 0}.Validate(
          true)));
}

TEST(MeasureQuantError, IdenticalIsZeroAndBadArgumentsAreRejected) {
  const Geometry g{1, 2, 8, DType::kFloat16, 4};
  const std::vector<uint8_t> a = MakeBlocks(g, 2, Data::kGaussian, 1);
  absl::StatusOr<QuantError> e = MeasureQuantError(g, QuantFormat::kInt8, a.data(), a.data(), 2);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->max_abs, 0);
  EXPECT_EQ(e->relative_rms, 0);
  EXPECT_EQ(e->elements, 2 * g.block_bytes() / 2);
  // A known error: one element off by 1 → rms = sqrt(1 / n).
  std::vector<uint8_t> b = a;
  const double x = GetValue(g.dtype, b.data() + 6);
  SetValue(g.dtype, b.data() + 6, x + 1.0);
  e = MeasureQuantError(g, QuantFormat::kFp8E4m3, a.data(), b.data(), 2);
  ASSERT_TRUE(e.ok()) << e.status();
  const double err = GetValue(g.dtype, b.data() + 6) - x;
  EXPECT_DOUBLE_EQ(e->max_abs, err);
  EXPECT_DOUBLE_EQ(e->rms, std::sqrt(err * err / static_cast<double>(e->elements)));
  EXPECT_GT(e->max_abs_over_scale, 0);

  EXPECT_EQ(MeasureQuantError(g, QuantFormat::kNone, a.data(), a.data(), 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      MeasureQuantError(Geometry{}, QuantFormat::kInt8, a.data(), a.data(), 2).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MeasureQuantError(g, QuantFormat::kInt8, nullptr, a.data(), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
