// kernels/numeric.h — the narrow number formats of KV caches, bit-exact on host and device.
//
// fp16 (IEEE binary16), bf16 (the top half of a binary32) and fp8 e4m3 (OCP "E4M3FN": bias
// 7, no infinities, one NaN pattern per sign, largest finite 448) as raw bits, converted to
// and from float with round-to-nearest-even. Float → e4m3 saturates: a finite value or an
// infinity beyond ±448 becomes ±448 (CUDA's __NV_SATFINITE); NaN becomes 0x7f.
//
// Plain C++17 that both the host compiler and nvcc accept (no Abseil), compiled for host and
// device so a CPU reference and its CUDA kernel round the same way bit for bit.

#ifndef KVTIER_KERNELS_NUMERIC_H_
#define KVTIER_KERNELS_NUMERIC_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KVTIER_HOST_DEVICE __host__ __device__
#else
#define KVTIER_HOST_DEVICE
#endif

namespace kvtier::numeric {

KVTIER_HOST_DEVICE inline uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

KVTIER_HOST_DEVICE inline float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// Shifts `mant` right by `shift` (1..31), rounding to nearest, ties to even.
KVTIER_HOST_DEVICE inline uint32_t ShiftRoundEven(uint32_t mant, uint32_t shift) {
  const uint32_t result = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return result + ((rem > half || (rem == half && (result & 1u))) ? 1u : 0u);
}

// ---------------------------------------------------------------------------------- fp16

KVTIER_HOST_DEVICE inline uint16_t FloatToHalfBits(float f) {
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // ≥ 65520 → inf
  if (abs < 0x38800000u) {  // below 2^-14: a subnormal half or zero, in units of 2^-24
    const uint32_t exp = abs >> 23;
    if (exp < 102) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to zero
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    return static_cast<uint16_t>(sign | ShiftRoundEven(mant, 126 - exp));
  }
  // Normal: rebias the exponent (127 → 15) and round 23 mantissa bits to 10; a carry out of
  // the mantissa correctly bumps the exponent (up to 0x7c00 = inf, excluded above).
  return static_cast<uint16_t>(sign | ShiftRoundEven(abs - 0x38000000u, 13));
}

KVTIER_HOST_DEVICE inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsToFloat(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;  // mant · 2^-24, exact
    return sign != 0 ? -v : v;
  }
  return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

// ---------------------------------------------------------------------------------- bf16

KVTIER_HOST_DEVICE inline uint16_t FloatToBf16Bits(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // qNaN
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

KVTIER_HOST_DEVICE inline float Bf16BitsToFloat(uint16_t b) {
  return BitsToFloat(static_cast<uint32_t>(b) << 16);
}

// ----------------------------------------------------------------------------- fp8 e4m3

constexpr float kE4m3Max = 448.0f;

KVTIER_HOST_DEVICE inline uint8_t FloatToE4m3Bits(float f) {
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 24) & 0x80u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);   // NaN
  if (abs >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);  // ≥ 448 (or inf): 448
  if (abs < 0x3c800000u) {  // below 2^-6: a subnormal e4m3 or zero, in units of 2^-9
    const uint32_t exp = abs >> 23;
    if (exp < 117) return static_cast<uint8_t>(sign);  // below 2^-10: rounds to zero
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    return static_cast<uint8_t>(sign | ShiftRoundEven(mant, 141 - exp));
  }
  // Normal: rebias (127 → 7), round 23 mantissa bits to 3. Below 448 the result never
  // reaches the NaN pattern 0x7f.
  return static_cast<uint8_t>(sign | ShiftRoundEven(abs - 0x3c000000u, 20));
}

KVTIER_HOST_DEVICE inline float E4m3BitsToFloat(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t mant = b & 0x7u;
  if (exp == 0xf && mant == 0x7) return BitsToFloat(sign | 0x7fc00000u);
  if (exp == 0) {
    const float v = static_cast<float>(mant) * 0.001953125f;  // mant · 2^-9, exact
    return sign != 0 ? -v : v;
  }
  return BitsToFloat(sign | ((exp + 120) << 23) | (mant << 20));
}

// ---------------------------------------------------------------------------------- int8

// Rounds to nearest (ties to even, as rintf) and clamps to [-127, 127]: the symmetric int8
// range, so that -x dequantizes to the negation of x. NaN becomes 0.
KVTIER_HOST_DEVICE inline int8_t FloatToInt8(float f) {
  if (!(f == f)) return 0;
  const float c = f < -127.0f ? -127.0f : (f > 127.0f ? 127.0f : f);
#if defined(__CUDA_ARCH__)
  return static_cast<int8_t>(__float2int_rn(c));
#else
  // Round half to even without <cmath>'s rounding mode dependence.
  const float t = static_cast<float>(static_cast<int>(c));  // truncated toward zero
  const float diff = c - t;
  int r = static_cast<int>(t);
  if (diff > 0.5f || (diff == 0.5f && (r & 1))) ++r;
  if (diff < -0.5f || (diff == -0.5f && (r & 1))) --r;
  return static_cast<int8_t>(r);
#endif
}

}  // namespace kvtier::numeric

#endif  // KVTIER_KERNELS_NUMERIC_H_
