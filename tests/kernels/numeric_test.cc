// tests/kernels/numeric_test.cc — fp16, bf16, fp8 e4m3 and int8 conversions: exact round
// trips over every value of each format, round-to-nearest-even at ties, saturation, NaN, and
// (where the compiler has _Float16) agreement with the compiler's own fp16 rounding.

#include "kernels/numeric.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace kvtier::numeric {
namespace {

TEST(Half, EveryValueRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfBitsToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_EQ((h & 0x7c00u), 0x7c00u);
      EXPECT_NE((h & 0x3ffu), 0u);
      EXPECT_TRUE(std::isnan(HalfBitsToFloat(FloatToHalfBits(f))));
      continue;
    }
    EXPECT_EQ(FloatToHalfBits(f), h) << "half bits 0x" << std::hex << h;
  }
}

TEST(Half, KnownValuesTiesAndOverflow) {
  EXPECT_EQ(FloatToHalfBits(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalfBits(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65520.0f), 0x7c00);  // the tie rounds to even: infinity
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units: tie to even 2
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to the even mantissa, 1.
  EXPECT_EQ(FloatToHalfBits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalfBits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(FloatToHalfBits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(-0.0f), 0x8000);
}

#if defined(__FLT16_MAX__)
TEST(Half, AgreesWithTheCompilersFloat16) {
  std::mt19937 rng(20261122);
  for (int i = 0; i < 2'000'000; ++i) {
    // Random bit patterns concentrated on half's range (exponents 100..150).
    const uint32_t bits = (rng() & 0x807fffffu) | ((100u + rng() % 51) << 23);
    float f;
    std::memcpy(&f, &bits, 4);
    const _Float16 expected = static_cast<_Float16>(f);
    uint16_t expected_bits;
    std::memcpy(&expected_bits, &expected, 2);
    ASSERT_EQ(FloatToHalfBits(f), expected_bits) << f;
  }
}
#endif

TEST(Bf16, EveryValueRoundTripsAndTiesGoToEven) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = Bf16BitsToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Bf16BitsToFloat(FloatToBf16Bits(f))));
      continue;
    }
    EXPECT_EQ(FloatToBf16Bits(f), b);
  }
  EXPECT_EQ(FloatToBf16Bits(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16's 1 and 1 + 2^-7: even is 1.
  EXPECT_EQ(FloatToBf16Bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(FloatToBf16Bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(FloatToBf16Bits(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
}

TEST(E4m3, EveryValueRoundTrips) {
  int nans = 0;
  for (uint32_t b = 0; b < 0x100; ++b) {
    const float f = E4m3BitsToFloat(static_cast<uint8_t>(b));
    if (std::isnan(f)) {
      ++nans;
      EXPECT_EQ(b & 0x7fu, 0x7fu);
      continue;
    }
    EXPECT_EQ(FloatToE4m3Bits(f), b) << "e4m3 bits 0x" << std::hex << b;
  }
  EXPECT_EQ(nans, 2);
}

TEST(E4m3, KnownValuesSaturationAndTies) {
  EXPECT_EQ(FloatToE4m3Bits(1.0f), 0x38);
  EXPECT_EQ(FloatToE4m3Bits(448.0f), 0x7e);
  EXPECT_EQ(FloatToE4m3Bits(-448.0f), 0xfe);
  EXPECT_EQ(FloatToE4m3Bits(1e9f), 0x7e);  // saturates, never NaN
  EXPECT_EQ(FloatToE4m3Bits(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(FloatToE4m3Bits(std::nanf("")) & 0x7f, 0x7f);
  EXPECT_EQ(E4m3BitsToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(FloatToE4m3Bits(std::ldexp(1.0f, -10)), 0x00);  // tie to even: zero
  EXPECT_EQ(FloatToE4m3Bits(std::ldexp(3.0f, -10)), 0x02);  // 1.5 units: tie to even 2
  EXPECT_EQ(FloatToE4m3Bits(1.0625f), 0x38);                // halfway 1 .. 1.125: even
  EXPECT_EQ(FloatToE4m3Bits(1.1875f), 0x3a);                // halfway 1.125 .. 1.25: even
  EXPECT_EQ(E4m3BitsToFloat(0x08), std::ldexp(1.0f, -6));   // smallest normal
}

TEST(E4m3, RelativeErrorIsAtMostHalfAnUlp) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-448.0f, 448.0f);
  for (int i = 0; i < 100000; ++i) {
    const float f = u(rng);
    const float q = E4m3BitsToFloat(FloatToE4m3Bits(f));
    if (std::fabs(f) >= std::ldexp(1.0f, -6)) {
      EXPECT_LE(std::fabs(q - f), std::fabs(f) * 0.0625f + 1e-7f) << f;
    } else {
      EXPECT_LE(std::fabs(q - f), std::ldexp(1.0f, -10)) << f;
    }
  }
}

TEST(Int8, RoundsHalfToEvenAndClamps) {
  EXPECT_EQ(FloatToInt8(0.5f), 0);
  EXPECT_EQ(FloatToInt8(1.5f), 2);
  EXPECT_EQ(FloatToInt8(2.5f), 2);
  EXPECT_EQ(FloatToInt8(-0.5f), 0);
  EXPECT_EQ(FloatToInt8(-1.5f), -2);
  EXPECT_EQ(FloatToInt8(-2.5f), -2);
  EXPECT_EQ(FloatToInt8(2.4999f), 2);
  EXPECT_EQ(FloatToInt8(-126.6f), -127);
  EXPECT_EQ(FloatToInt8(300.0f), 127);
  EXPECT_EQ(FloatToInt8(-300.0f), -127);
  EXPECT_EQ(FloatToInt8(std::nanf("")), 0);
  for (int v = -127; v <= 127; ++v) EXPECT_EQ(FloatToInt8(static_cast<float>(v)), v);
}

}  // namespace
}  // namespace kvtier::numeric
