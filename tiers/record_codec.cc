// tiers/record_codec.cc — the payload codecs of the disk and remote records (see
// tiers/record_codec.h). Moved out of tiers/disk_record.cc unchanged in behaviour: the disk
// format's bytes do not depend on which file holds the code.

#include "tiers/record_codec.h"

#include <zstd.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/quantize.h"

namespace kvtier::record_codec {
namespace {

// The quantization parameters of one block of `g` one way or the other, host pointers
// standing in for device ones (QuantizeParams::Validate checks alignment and overlap on plain
// addresses as well).
QuantizeParams BlockParams(const Geometry& g, QuantFormat format, bool quantize, const void* src,
                           const void* dst) {
  QuantizeParams p;
  p.geometry = g;
  p.format = format;
  p.num_blocks = 1;
  p.src = DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(src));
  p.dst = DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(dst));
  const uint64_t original = g.block_bytes();
  const uint64_t quantized = QuantizedBlockBytes(g, format);
  p.src_stride = quantize ? original : quantized;
  p.dst_stride = quantize ? quantized : original;
  return p;
}

// Byte shuffle: element i's byte b goes to dst[b * n + i], so the high bytes of fp16 / bf16
// values (sign and exponent, which vary little) form one run and the noisy low bytes another.
template <size_t kWidth>
void ShuffleFixed(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    for (size_t b = 0; b < kWidth; ++b) dst[b * n + i] = src[i * kWidth + b];
  }
}
template <size_t kWidth>
void UnshuffleFixed(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    for (size_t b = 0; b < kWidth; ++b) dst[i * kWidth + b] = src[b * n + i];
  }
}

// Two-byte elements (fp16 / bf16, the common case) with SSE2, 16 elements per step; about
// 5x the scalar loop's speed with GCC, which keeps the shuffle a small part of the codec's time.
void Shuffle2(const uint8_t* src, size_t n, uint8_t* dst) {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i low_bytes = _mm_set1_epi16(0x00ff);
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i + 16));
    const __m128i lo = _mm_packus_epi16(_mm_and_si128(a, low_bytes), _mm_and_si128(b, low_bytes));
    const __m128i hi = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), lo);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + n + i), hi);
  }
#endif
  for (; i < n; ++i) {
    dst[i] = src[2 * i];
    dst[n + i] = src[2 * i + 1];
  }
}
void Unshuffle2(const uint8_t* src, size_t n, uint8_t* dst) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + n + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i), _mm_unpacklo_epi8(lo, hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i + 16), _mm_unpackhi_epi8(lo, hi));
  }
#endif
  for (; i < n; ++i) {
    dst[2 * i] = src[i];
    dst[2 * i + 1] = src[n + i];
  }
}

// REQUIRES: IsShuffleWidth(width) and width divides bytes.
void Shuffle(const uint8_t* src, size_t bytes, size_t width, uint8_t* dst) {
  switch (width) {
    case 1:
      std::memcpy(dst, src, bytes);
      return;
    case 2:
      return Shuffle2(src, bytes / 2, dst);
    case 4:
      return ShuffleFixed<4>(src, bytes / 4, dst);
  }
}
void Unshuffle(const uint8_t* src, size_t bytes, size_t width, uint8_t* dst) {
  switch (width) {
    case 1:
      std::memcpy(dst, src, bytes);
      return;
    case 2:
      return Unshuffle2(src, bytes / 2, dst);
    case 4:
      return UnshuffleFixed<4>(src, bytes / 4, dst);
  }
}

// Per-thread zstd contexts (creating one per call costs more than compressing a small block)
// and a scratch buffer for the shuffled bytes, grown to the largest block seen on the thread.
struct ThreadCodecState {
  ThreadCodecState() = default;
  ThreadCodecState(const ThreadCodecState&) = delete;
  ThreadCodecState& operator=(const ThreadCodecState&) = delete;
  ~ThreadCodecState() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }

  ZSTD_CCtx* Compressor() {
    if (cctx == nullptr) cctx = ZSTD_createCCtx();
    return cctx;
  }
  ZSTD_DCtx* Decompressor() {
    if (dctx == nullptr) dctx = ZSTD_createDCtx();
    return dctx;
  }
  uint8_t* Scratch(size_t bytes) {
    if (scratch_bytes < bytes) {
      scratch.reset(new uint8_t[bytes]);
      scratch_bytes = bytes;
    }
    return scratch.get();
  }

  ZSTD_CCtx* cctx = nullptr;
  ZSTD_DCtx* dctx = nullptr;
  std::unique_ptr<uint8_t[]> scratch;
  size_t scratch_bytes = 0;
};

ThreadCodecState& CodecState() {
  thread_local ThreadCodecState state;
  return state;
}

// Compresses `src` into `dst` if the result fits in `capacity`; returns the compressed size,
// or 0 if it does not fit (or zstd fails: the caller then stores the block raw).
size_t CompressInto(const uint8_t* src, size_t bytes, int level, uint8_t* dst, size_t capacity) {
  ZSTD_CCtx* cctx = CodecState().Compressor();
  if (cctx == nullptr || capacity == 0) return 0;
  const size_t n = ZSTD_compressCCtx(cctx, dst, capacity, src, bytes, level);
  return ZSTD_isError(n) ? 0 : n;
}

}  // namespace

bool IsShuffleWidth(size_t element_bytes) {
  return element_bytes == 1 || element_bytes == 2 || element_bytes == 4;
}

absl::Status CheckEncodeOptions(const char* caller, const EncodeOptions& options, size_t raw_bytes,
                                const uint64_t* geometry_fingerprint, const void* raw,
                                const void* payload_out) {
  switch (options.codec) {
    case Codec::kNone:
      return absl::OkStatus();
    case Codec::kZstdShuffle:
      if (!IsShuffleWidth(options.element_bytes)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: element_bytes = %d; zstd-shuffle takes 1, 2 or 4", caller, options.element_bytes));
      }
      if (raw_bytes % options.element_bytes != 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: element_bytes = %d does not divide raw_bytes = %d", caller,
                            options.element_bytes, raw_bytes));
      }
      [[fallthrough]];
    case Codec::kZstd:
      if (options.zstd_level < 1 || options.zstd_level > 19) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: zstd_level = %d is outside 1..19", caller, options.zstd_level));
      }
      return absl::OkStatus();
    case Codec::kFp8:
    case Codec::kInt8: {
      const char* name = CodecName(options.codec);
      if (!options.geometry.has_value()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: codec %s needs EncodeOptions.geometry (the block's shape)", caller, name));
      }
      const Geometry& g = *options.geometry;
      if (absl::Status s = g.Validate(); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(caller, ": ", s.message()));
      }
      if (absl::Status s = CheckCodecDType(options.codec, g.dtype); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(caller, ": ", s.message()));
      }
      if (g.block_bytes() != raw_bytes) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: raw_bytes = %d, but the geometry's blocks are %d bytes (codec %s)",
                            caller, raw_bytes, g.block_bytes(), name));
      }
      if (geometry_fingerprint != nullptr && g.Fingerprint() != *geometry_fingerprint) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: header.geometry_fingerprint = 0x%016x is not the fingerprint of "
                            "EncodeOptions.geometry (0x%016x; codec %s)",
                            caller, *geometry_fingerprint, g.Fingerprint(), name));
      }
      // Alignment (element size for the block, 4 for the payload's scales) and no overlap.
      const QuantizeParams p =
          BlockParams(g, CodecQuantFormat(options.codec), /*quantize=*/true, raw, payload_out);
      if (absl::Status s = p.Validate(/*quantize=*/true); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: codec %s: %s", caller, name, s.message()));
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: codec = %d is unknown", caller, static_cast<int>(options.codec)));
}

EncodedPayload EncodePayload(const void* raw, size_t raw_bytes, const EncodeOptions& options,
                             void* out, size_t limit) {
  const auto* src = static_cast<const uint8_t*>(raw);
  auto* dst = static_cast<uint8_t*>(out);
  // Writing straight into `out` with capacity `limit` lets zstd itself give up when the block
  // does not compress enough.
  size_t stored = 0;
  if (options.codec == Codec::kZstd) {
    stored = CompressInto(src, raw_bytes, options.zstd_level, dst, limit);
  } else if (options.codec == Codec::kZstdShuffle && limit != 0) {
    const uint8_t* input = src;  // width 1 shuffles nothing
    if (options.element_bytes > 1) {
      uint8_t* shuffled = CodecState().Scratch(raw_bytes);
      Shuffle(src, raw_bytes, options.element_bytes, shuffled);
      input = shuffled;
    }
    stored = CompressInto(input, raw_bytes, options.zstd_level, dst, limit);
  } else if (IsQuantizedCodec(options.codec)) {
    // Lossy, so kept only where it pays, as compression is: a block whose quantized form
    // would not fit the limit is stored exactly.
    const QuantFormat format = CodecQuantFormat(options.codec);
    const size_t quantized = QuantizedBlockBytes(*options.geometry, format);
    if (quantized <= limit) {
      QuantizeBlocksCpu(BlockParams(*options.geometry, format, true, src, dst), src, dst);
      stored = quantized;
    }
  }
  if (stored == 0) return {Codec::kNone, raw_bytes};
  return {options.codec, stored};
}

absl::Status DecodePayload(const char* caller, const char* what, Codec codec, uint8_t element_bytes,
                           const Geometry* geometry, const void* payload, size_t stored_bytes,
                           void* raw_out, size_t raw_bytes) {
  const auto* src = static_cast<const uint8_t*>(payload);
  auto* dst = static_cast<uint8_t*>(raw_out);
  switch (codec) {
    case Codec::kNone:
      if (dst != src) std::memcpy(dst, src, raw_bytes);
      return absl::OkStatus();
    case Codec::kZstd:
    case Codec::kZstdShuffle:
      break;
    case Codec::kFp8:
    case Codec::kInt8: {
      if (geometry == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: codec %s needs the block's geometry", caller, CodecName(codec)));
      }
      const QuantizeParams p = BlockParams(*geometry, CodecQuantFormat(codec), false, src, dst);
      if (absl::Status s = p.Validate(/*quantize=*/false); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: codec %s: %s", caller, CodecName(codec), s.message()));
      }
      DequantizeBlocksCpu(p, src, dst);
      return absl::OkStatus();
    }
    default:
      return absl::DataLossError(
          absl::StrFormat("%s payload: codec = %d is unknown", what, static_cast<int>(codec)));
  }
  ThreadCodecState& state = CodecState();
  ZSTD_DCtx* dctx = state.Decompressor();
  if (dctx == nullptr) return absl::ResourceExhaustedError("zstd: cannot create a context");
  const bool unshuffle = codec == Codec::kZstdShuffle && element_bytes > 1;
  uint8_t* target = unshuffle ? state.Scratch(raw_bytes) : dst;
  const size_t n = ZSTD_decompressDCtx(dctx, target, raw_bytes, src, stored_bytes);
  if (ZSTD_isError(n)) {
    return absl::DataLossError(
        absl::StrFormat("%s payload: zstd cannot decode it (%s)", what, ZSTD_getErrorName(n)));
  }
  if (n != raw_bytes) {
    return absl::DataLossError(
        absl::StrFormat("%s payload: decodes to %d bytes, raw_bytes = %d", what, n, raw_bytes));
  }
  if (unshuffle) Unshuffle(target, raw_bytes, element_bytes, dst);
  return absl::OkStatus();
}

}  // namespace kvtier::record_codec
