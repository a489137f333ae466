// kernels/quantize_internal.h — what quantize.cc and quantize.cu share.
//
// Plain C++17 that both the host compiler and nvcc accept (no Abseil): the per-element and
// per-head arithmetic of quantization (see quantize.h), compiled for host and device so the
// CPU reference and the CUDA kernels cannot drift apart by a single bit, the quantized block
// layout, and the CUDA launchers' declarations.
//
// Bit-exactness rests on three things: the conversions are numeric.h's integer code; each
// float operation is a single, correctly rounded division or multiplication (on the device
// spelled __fdiv_rn / __fmul_rn, so neither FMA contraction nor -use_fast_math can change it);
// and amax is an integer max over magnitude bits, which is exact in any reduction order.

#ifndef KVTIER_KERNELS_QUANTIZE_INTERNAL_H_
#define KVTIER_KERNELS_QUANTIZE_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "kernels/numeric.h"

namespace kvtier::quantize_internal {

// The values of kvtier::DType and kvtier::QuantFormat (whose headers nvcc cannot include).
constexpr int kDtypeF16 = 1;
constexpr int kDtypeBf16 = 2;
constexpr int kDtypeF32 = 3;
constexpr int kFormatFp8 = 1;
constexpr int kFormatInt8 = 2;

// Alignment of the scales inside a quantized block and of the block's size.
constexpr uint64_t kQuantizedAlign = 16;

KVTIER_HOST_DEVICE inline uint64_t RoundUpTo16(uint64_t n) { return (n + 15) & ~uint64_t{15}; }

// The quantized block layout (quantize.h): payload of `elements` bytes, scales (float32 per
// layer, K/V, kv_head) at the payload rounded up to 16, the whole rounded up to 16.
KVTIER_HOST_DEVICE inline uint64_t ScalesOffset(uint64_t elements) { return RoundUpTo16(elements); }
KVTIER_HOST_DEVICE inline uint64_t QuantizedBytes(uint64_t elements, uint64_t heads) {
  return RoundUpTo16(ScalesOffset(elements) + 4 * heads);
}

// Correctly rounded float division and multiplication, never contracted into an FMA.
KVTIER_HOST_DEVICE inline float DivRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
KVTIER_HOST_DEVICE inline float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

#if !defined(__CUDA_ARCH__)
// Host fast paths of numeric.h's conversions, with identical results (quantize_test.cc checks
// them against numeric.h exhaustively or over every rounding case). numeric.h's code branches
// on data — above all on the round-to-nearest-even decision, which is a coin flip per element
// — and those mispredictions cost ~4-10x on a CPU. These compute the common case without data-
// dependent branches and hand the rare rest (subnormals, zeros, saturation, NaN, Inf) to
// numeric.h itself. The device runs numeric.h directly (no branch predictor to miss there).

// numeric::ShiftRoundEven with the round-up decision as arithmetic instead of a branch.
inline uint32_t ShiftRoundEvenBranchless(uint32_t mant, uint32_t shift) {
  const uint32_t result = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return result + static_cast<uint32_t>((rem > half) | ((rem == half) & (result & 1u)));
}

// numeric::HalfBitsToFloat. Normal halves (exponent 1..30) are a rebias, as in numeric.h.
inline float HalfBitsToFloatFast(uint16_t h) {
  const uint32_t abs = h & 0x7fffu;
  if (__builtin_expect(abs - 0x400u >= 0x7800u, 0)) return numeric::HalfBitsToFloat(h);
  return numeric::BitsToFloat((static_cast<uint32_t>(h & 0x8000u) << 16) |
                              ((abs << 13) + 0x38000000u));
}

// numeric::FloatToE4m3Bits. [2^-6, 448) is numeric.h's normal branch, the same arithmetic.
inline uint8_t FloatToE4m3BitsFast(float f) {
  const uint32_t x = numeric::FloatBits(f);
  const uint32_t abs = x & 0x7fffffffu;
  if (__builtin_expect(abs - 0x3c800000u >= 0x43e00000u - 0x3c800000u, 0)) {
    return numeric::FloatToE4m3Bits(f);
  }
  return static_cast<uint8_t>(((x >> 24) & 0x80u) |
                              ShiftRoundEvenBranchless(abs - 0x3c000000u, 20));
}

// numeric::FloatToInt8. Inside [-127, 127], adding and subtracting 1.5 · 2^23 rounds to an
// integer with ties to even: the sum lies in [2^23, 2^24), where floats are the integers, and
// the subtraction is exact (IEEE arithmetic in the default rounding mode — the same premise
// as the division in DivRn; no -ffast-math, which could fold the pair away).
inline int8_t FloatToInt8Fast(float f) {
  if (__builtin_expect(!(f >= -127.0f && f <= 127.0f), 0)) return numeric::FloatToInt8(f);
  const float rounded = (f + 12582912.0f) - 12582912.0f;
  return static_cast<int8_t>(static_cast<int>(rounded));
}
#endif  // !defined(__CUDA_ARCH__)

// Per original dtype: the bits type, exact conversions through float, and the magnitude
// bits' range. |x|'s bits (sign cleared) order finite values by magnitude, so the amax of a
// head is an integer max; kInf (the smallest non-finite magnitude) marks NaN and ±Inf.
template <int kDtype>
struct Original;

template <>
struct Original<kDtypeF16> {
  using Bits = uint16_t;
  static constexpr uint32_t kAbsMask = 0x7fffu;
  static constexpr uint32_t kInf = 0x7c00u;
  KVTIER_HOST_DEVICE static float ToFloat(Bits b) {
#if defined(__CUDA_ARCH__)
    return numeric::HalfBitsToFloat(b);
#else
    return HalfBitsToFloatFast(b);
#endif
  }
  KVTIER_HOST_DEVICE static Bits FromFloat(float f) { return numeric::FloatToHalfBits(f); }
};

template <>
struct Original<kDtypeBf16> {
  using Bits = uint16_t;
  static constexpr uint32_t kAbsMask = 0x7fffu;
  static constexpr uint32_t kInf = 0x7f80u;
  KVTIER_HOST_DEVICE static float ToFloat(Bits b) { return numeric::Bf16BitsToFloat(b); }
  KVTIER_HOST_DEVICE static Bits FromFloat(float f) { return numeric::FloatToBf16Bits(f); }
};

template <>
struct Original<kDtypeF32> {
  using Bits = uint32_t;
  static constexpr uint32_t kAbsMask = 0x7fffffffu;
  static constexpr uint32_t kInf = 0x7f800000u;
  KVTIER_HOST_DEVICE static float ToFloat(Bits b) { return numeric::BitsToFloat(b); }
  KVTIER_HOST_DEVICE static Bits FromFloat(float f) { return numeric::FloatBits(f); }
};

// |x|'s bits for a finite x, 0 for NaN and ±Inf (so they never win the amax).
template <int kDtype>
KVTIER_HOST_DEVICE inline uint32_t FiniteMagnitude(typename Original<kDtype>::Bits bits) {
  const uint32_t abs = static_cast<uint32_t>(bits) & Original<kDtype>::kAbsMask;
  return abs < Original<kDtype>::kInf ? abs : 0u;
}

// The scale of a head from the max of FiniteMagnitude over its elements: amax / 448 (fp8) or
// amax / 127 (int8). 0 means "all zeros" (and also results when the division underflows).
template <int kDtype, int kFormat>
KVTIER_HOST_DEVICE inline float ScaleFromMagnitude(uint32_t max_magnitude) {
  if (max_magnitude == 0) return 0.0f;
  const float amax =
      Original<kDtype>::ToFloat(static_cast<typename Original<kDtype>::Bits>(max_magnitude));
  return DivRn(amax, kFormat == kFormatFp8 ? numeric::kE4m3Max : 127.0f);
}

// q = code(x / scale). REQUIRES: scale > 0 (a head with scale 0 stores zero bytes instead).
template <int kFormat>
KVTIER_HOST_DEVICE inline uint8_t QuantizeValue(float x, float scale) {
  const float y = DivRn(x, scale);
#if defined(__CUDA_ARCH__)
  if constexpr (kFormat == kFormatFp8) {
    return numeric::FloatToE4m3Bits(y);
  } else {
    return static_cast<uint8_t>(numeric::FloatToInt8(y));
  }
#else
  if constexpr (kFormat == kFormatFp8) {
    return FloatToE4m3BitsFast(y);
  } else {
    return static_cast<uint8_t>(FloatToInt8Fast(y));
  }
#endif
}

// float(q) * scale, before the conversion to the original dtype.
template <int kFormat>
KVTIER_HOST_DEVICE inline float DequantizeValue(uint8_t q, float scale) {
  if constexpr (kFormat == kFormatFp8) {
    // A NaN code (0x7f / 0xff) skips the product: x86 passes a NaN operand's bits through a
    // multiplication while the GPU returns its own canonical NaN (0x7fffffff), so the two
    // would write different NaN bits into the original dtype (fp16 0x7e00 vs 0x7fff;
    // tests/kernels/quantize_cuda_test.cc holds the two to the same bits). E4m3BitsToFloat's
    // NaN is the result.
    const float v = numeric::E4m3BitsToFloat(q);
    return (q & 0x7fu) == 0x7fu ? v : MulRn(v, scale);
  } else {
    return MulRn(static_cast<float>(static_cast<int8_t>(q)), scale);
  }
}

// Everything a CUDA launcher needs, in plain integers. Addresses are device addresses.
struct QuantizeLaunchArgs {
  uint64_t src = 0;
  uint64_t src_stride = 0;
  uint64_t dst = 0;
  uint64_t dst_stride = 0;
  uint32_t num_blocks = 0;
  uint32_t num_layers = 0;
  uint32_t parts = 2;  // Geometry::parts(): 2 (K, V) or 1 (an mla latent)
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t block_tokens = 0;
  int dtype = 0;   // kDtype*
  int format = 0;  // kFormat*
};

#if defined(KVTIER_HAVE_CUDA)
// Enqueue the quantize / dequantize kernels on `cuda_stream` (a cudaStream_t); return the
// cudaError_t of the launch (0 = success). REQUIRES: the args passed QuantizeParams::Validate.
int LaunchQuantizeCuda(void* cuda_stream, const QuantizeLaunchArgs& args);
int LaunchDequantizeCuda(void* cuda_stream, const QuantizeLaunchArgs& args);
#endif

}  // namespace kvtier::quantize_internal

#endif  // KVTIER_KERNELS_QUANTIZE_INTERNAL_H_
