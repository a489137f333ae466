// kernels/quantize.h — KV-cache quantization: fp16/bf16/fp32 blocks to fp8 (e4m3) or int8
// with one float32 scale per (block, layer, K/V, kv_head), dequantization back to the
// original dtype (the load path), and an error report of a round trip against the original.
//
// A quantized block is self-contained, so a tier slot holds everything needed to restore it:
//
//     payload  one byte per element, in the block's own layout
//              [layer][part][token][kv_head][head_dim]
//     padding  zero bytes up to the next multiple of 16 (QuantizedScalesOffset)
//     scales   float32, little-endian, [layer][part][kv_head]
//
// where the parts are K and V, or the one latent of an mla geometry (whose one "head" is the
// whole 576-element latent: one scale per layer).
//     padding  zero bytes up to the next multiple of 16 (QuantizedBlockBytes)
//
// Every byte of a quantized block, padding included, is written, so equal originals give
// byte-identical quantized blocks on every device.
//
// The computation, per (block, layer, K/V, kv_head) — "a head" below — over its
// block_tokens × head_dim elements x (each converted exactly to float):
//
//   amax  = the largest |x| over the head's FINITE elements (NaN and ±Inf are ignored)
//   scale = amax / 448 (fp8) or amax / 127 (int8), one correctly rounded float division
//   q     = e4m3(x / scale) or int8(x / scale): again a correctly rounded float division
//           (not a multiplication by 1/scale, which would round twice), then numeric.h's
//           FloatToE4m3Bits / FloatToInt8: round to nearest even, saturating at ±448 / ±127
//   x̂     = original_dtype(float(q) * scale): one float multiplication, then numeric.h's
//           round-to-nearest-even conversion to fp16 / bf16 (exact for fp32)
//
// Special values: a head whose scale is 0 (every finite element is ±0, or amax / 448
// underflows — only possible for fp32 originals below ~6e-43) stores all-zero payload bytes
// and dequantizes to +0 everywhere, whatever non-finite values it held. Otherwise +Inf / -Inf
// saturate to the largest code (±448 · scale for fp8, ±127 · scale for int8) and NaN becomes
// the e4m3 NaN 0x7f / 0xff (dequantizing to NaN) for fp8 and 0 for int8 (int8 has no NaN).
// (One corner: fp32 originals within 2^-24 of FLT_MAX may dequantize to ±Inf, as the largest
// code times scale can round past FLT_MAX.)
//
// The CUDA kernels (quantize.cu) compute exactly this, with the same float operations in the
// same order (explicitly rounded __fdiv_rn / __fmul_rn on the device, so neither FMA
// contraction nor fast-math can change a bit): quantized bytes and dequantized values are
// identical on the emulated and the CUDA device. The CPU reference calls branch-free host
// versions of the numeric.h conversions on the common path (quantize_internal.h; tested equal
// to numeric.h bit for bit), which makes it several times faster.

#ifndef KVTIER_KERNELS_QUANTIZE_H_
#define KVTIER_KERNELS_QUANTIZE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier {

enum class QuantFormat : uint8_t { kNone = 0, kFp8E4m3 = 1, kInt8 = 2 };

// "none", "fp8", "int8"; "?" for a value outside the enum.
const char* QuantFormatName(QuantFormat format);
// Accepts the names above ("fp8_e4m3" and "e4m3" too); InvalidArgument otherwise.
absl::StatusOr<QuantFormat> ParseQuantFormat(absl::string_view name);

// Byte offset of the scales inside a quantized block: the payload (one byte per element)
// rounded up to 16. REQUIRES: g.Validate().ok().
size_t QuantizedScalesOffset(const Geometry& g);
// Bytes of one quantized block: payload + scales, each rounded up to 16 bytes; 0 for kNone.
// REQUIRES: g.Validate().ok().
size_t QuantizedBlockBytes(const Geometry& g, QuantFormat format);

struct QuantizeParams {
  Geometry geometry;                        // of the original blocks; dtype fp16, bf16 or fp32
  QuantFormat format = QuantFormat::kNone;  // kFp8E4m3 or kInt8
  uint32_t num_blocks = 0;
  // Quantize: src = original blocks, dst = quantized blocks. Dequantize: the other way round.
  // Strides are in bytes between consecutive blocks and must be at least the block size of
  // their side. Original-side addresses and strides must be multiples of the element size,
  // quantized-side ones multiples of 4 (the float scales); the src and dst ranges must not
  // overlap.
  DevicePtr src;
  uint64_t src_stride = 0;
  DevicePtr dst;
  uint64_t dst_stride = 0;

  // OK or InvalidArgument naming the field. `quantize` says which way the kernel goes (which
  // side holds original blocks). num_blocks == 0 is valid (nothing to do); the pointers are
  // not checked then.
  absl::Status Validate(bool quantize) const;
};

// Original → quantized, and quantized → original dtype. Invalid params: the returned kernel's
// cpu and cuda functions return the Validate() error (the emulated device surfaces it from
// Synchronize, the CUDA device from Launch). On the emulated device every block's range is
// resolved before anything is written; a range that is not device memory is an error naming it.
KernelLaunch MakeQuantizeKernel(const QuantizeParams& p);
KernelLaunch MakeDequantizeKernel(const QuantizeParams& p);

// CPU references over host memory: p.src / p.dst are ignored and `src` / `dst` used instead,
// with p's strides and block count. These are what the emulated device runs, and reasonably
// fast (two passes over each head, no allocation per element; dequantization goes through a
// 256-entry table per head where a head is large enough for that to pay).
// REQUIRES: p.Validate(quantize) would pass for host addresses.
void QuantizeBlocksCpu(const QuantizeParams& p, const void* src, void* dst);
void DequantizeBlocksCpu(const QuantizeParams& p, const void* src, void* dst);

// The error of a round trip (quantize then dequantize) against the original.
struct QuantError {
  double max_abs = 0;             // max |x̂ − x|
  double rms = 0;                 // sqrt(mean (x̂ − x)²)
  double relative_rms = 0;        // ‖x̂ − x‖₂ / ‖x‖₂ (0 when ‖x‖₂ = 0)
  double max_abs_over_scale = 0;  // max |x̂ − x| / scale of its head (heads with scale 0 skipped)
  uint64_t elements = 0;          // elements compared (finite originals)
  uint64_t nonfinite = 0;         // originals that are NaN or ±Inf, left out of the above
};

// Compares `num_blocks` contiguous original blocks with their round trip (same geometry and
// dtype). Scales are recomputed from the original exactly as the quantizer computes them.
// InvalidArgument for a bad geometry or format, or null pointers with num_blocks > 0.
absl::StatusOr<QuantError> MeasureQuantError(const Geometry& g, QuantFormat format,
                                             const void* original, const void* roundtrip,
                                             size_t num_blocks);

}  // namespace kvtier

#endif  // KVTIER_KERNELS_QUANTIZE_H_
