// kernels/quantize.cc — CPU references of the KV quantization kernels, their KernelLaunch
// builders, parameter validation and the round-trip error report (see quantize.h). The CUDA
// implementations live in quantize.cu; the arithmetic both use is in quantize_internal.h.

#include "kernels/quantize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "kernels/quantize_internal.h"

#if defined(KVTIER_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace kvtier {
namespace {

// Scales are stored as host floats; the format says little-endian.
static_assert(std::endian::native == std::endian::little, "quantized scales are little-endian");
static_assert(static_cast<int>(DType::kFloat16) == quantize_internal::kDtypeF16);
static_assert(static_cast<int>(DType::kBFloat16) == quantize_internal::kDtypeBf16);
static_assert(static_cast<int>(DType::kFloat32) == quantize_internal::kDtypeF32);
static_assert(static_cast<int>(QuantFormat::kFp8E4m3) == quantize_internal::kFormatFp8);
static_assert(static_cast<int>(QuantFormat::kInt8) == quantize_internal::kFormatInt8);

using quantize_internal::DequantizeValue;
using quantize_internal::FiniteMagnitude;
using quantize_internal::Original;
using quantize_internal::QuantizeValue;
using quantize_internal::ScaleFromMagnitude;

constexpr char kQuantizeKernelName[] = "quantize_kv";
constexpr char kDequantizeKernelName[] = "dequantize_kv";

// Below this many elements per head, building a 256-entry dequantization table costs more
// than it saves (the table is 256 conversions; the direct path is one per element).
constexpr size_t kTableMinElements = 256;

// Element loads and stores through memcpy: no alignment or aliasing assumptions, and the
// compiler turns them into plain moves.
template <typename T>
T Load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <typename T>
void Store(unsigned char* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

// Scratch reused across the blocks of one call: one entry per kv_head.
struct Scratch {
  std::vector<uint32_t> magnitude;
  std::vector<float> scale;
};

// Quantizes one block. Per (layer, K/V) the token-major region is walked twice, front to
// back: once for every head's amax, once to quantize (the region is small enough — 32 KiB
// for a Llama-3-8B block of 16 tokens — that the second pass reads from cache).
template <int kDtype, int kFormat>
void QuantizeBlock(const Geometry& g, const unsigned char* src, unsigned char* dst,
                   Scratch& scratch) {
  using Bits = typename Original<kDtype>::Bits;
  const size_t heads = g.num_kv_heads;
  const size_t dim = g.head_dim;
  const size_t row = heads * dim;  // elements of one token
  const size_t part_elements = row * g.block_tokens;
  const size_t elements = part_elements * g.parts() * g.num_layers;
  const size_t scales_offset = quantize_internal::ScalesOffset(elements);
  uint32_t* magnitude = scratch.magnitude.data();
  float* scale = scratch.scale.data();
  for (size_t lp = 0; lp < size_t{g.parts()} * g.num_layers; ++lp) {
    const unsigned char* in = src + lp * part_elements * sizeof(Bits);
    unsigned char* out = dst + lp * part_elements;
    std::fill_n(magnitude, heads, 0u);
    for (size_t t = 0; t < g.block_tokens; ++t) {
      for (size_t h = 0; h < heads; ++h) {
        const unsigned char* x = in + (t * row + h * dim) * sizeof(Bits);
        uint32_t m = magnitude[h];
        for (size_t d = 0; d < dim; ++d) {
          m = std::max(m, FiniteMagnitude<kDtype>(Load<Bits>(x + d * sizeof(Bits))));
        }
        magnitude[h] = m;
      }
    }
    for (size_t h = 0; h < heads; ++h) {
      scale[h] = ScaleFromMagnitude<kDtype, kFormat>(magnitude[h]);
      Store<float>(dst + scales_offset + 4 * (lp * heads + h), scale[h]);
    }
    for (size_t t = 0; t < g.block_tokens; ++t) {
      for (size_t h = 0; h < heads; ++h) {
        const unsigned char* x = in + (t * row + h * dim) * sizeof(Bits);
        unsigned char* q = out + t * row + h * dim;
        const float s = scale[h];
        if (s == 0.0f) {
          std::memset(q, 0, dim);
          continue;
        }
        for (size_t d = 0; d < dim; ++d) {
          q[d] = QuantizeValue<kFormat>(Original<kDtype>::ToFloat(Load<Bits>(x + d * sizeof(Bits))),
                                        s);
        }
      }
    }
  }
  // Padding after the payload and after the scales: zeros, so equal inputs give equal bytes.
  const size_t scales_end = scales_offset + 4 * size_t{g.parts()} * g.num_layers * heads;
  std::memset(dst + elements, 0, scales_offset - elements);
  std::memset(dst + scales_end, 0, quantize_internal::RoundUpTo16(scales_end) - scales_end);
}

// Dequantizes one block, head by head. A large head goes through a table of its 256
// possible results — each entry computed by the same DequantizeValue + conversion as the
// direct path, so the output is bit-identical either way.
template <int kDtype, int kFormat>
void DequantizeBlock(const Geometry& g, const unsigned char* src, unsigned char* dst) {
  using Bits = typename Original<kDtype>::Bits;
  const size_t heads = g.num_kv_heads;
  const size_t dim = g.head_dim;
  const size_t row = heads * dim;
  const size_t part_elements = row * g.block_tokens;
  const size_t elements = part_elements * g.parts() * g.num_layers;
  const size_t scales_offset = quantize_internal::ScalesOffset(elements);
  const bool use_table = size_t{g.block_tokens} * dim >= kTableMinElements;
  Bits table[256];
  for (size_t lp = 0; lp < size_t{g.parts()} * g.num_layers; ++lp) {
    const unsigned char* in = src + lp * part_elements;
    unsigned char* out = dst + lp * part_elements * sizeof(Bits);
    for (size_t h = 0; h < heads; ++h) {
      const float s = Load<float>(src + scales_offset + 4 * (lp * heads + h));
      if (use_table) {
        for (int b = 0; b < 256; ++b) {
          table[b] =
              Original<kDtype>::FromFloat(DequantizeValue<kFormat>(static_cast<uint8_t>(b), s));
        }
      }
      for (size_t t = 0; t < g.block_tokens; ++t) {
        const unsigned char* q = in + t * row + h * dim;
        unsigned char* x = out + (t * row + h * dim) * sizeof(Bits);
        if (use_table) {
          for (size_t d = 0; d < dim; ++d) Store<Bits>(x + d * sizeof(Bits), table[q[d]]);
        } else {
          for (size_t d = 0; d < dim; ++d) {
            Store<Bits>(x + d * sizeof(Bits),
                        Original<kDtype>::FromFloat(DequantizeValue<kFormat>(q[d], s)));
          }
        }
      }
    }
  }
}

// Calls fn.template operator()<kDtype, kFormat>() for the runtime (dtype, format).
template <typename Fn>
void Dispatch(DType dtype, QuantFormat format, Fn&& fn) {
  namespace qi = quantize_internal;
  const bool fp8 = format == QuantFormat::kFp8E4m3;
  switch (dtype) {
    case DType::kFloat16:
      fp8 ? fn.template operator()<qi::kDtypeF16, qi::kFormatFp8>()
          : fn.template operator()<qi::kDtypeF16, qi::kFormatInt8>();
      return;
    case DType::kBFloat16:
      fp8 ? fn.template operator()<qi::kDtypeBf16, qi::kFormatFp8>()
          : fn.template operator()<qi::kDtypeBf16, qi::kFormatInt8>();
      return;
    case DType::kFloat32:
      fp8 ? fn.template operator()<qi::kDtypeF32, qi::kFormatFp8>()
          : fn.template operator()<qi::kDtypeF32, qi::kFormatInt8>();
      return;
    case DType::kFp8E4m3:
    case DType::kFp8E5m2:
      return;  // refused by QuantizeParams::Validate / MeasureQuantError before any dispatch
  }
}

// Runs the reference over blocks given as host pointers (already resolved).
void QuantizeResolved(const QuantizeParams& p, const std::vector<const unsigned char*>& src,
                      const std::vector<unsigned char*>& dst) {
  Scratch scratch{std::vector<uint32_t>(p.geometry.num_kv_heads),
                  std::vector<float>(p.geometry.num_kv_heads)};
  Dispatch(p.geometry.dtype, p.format, [&]<int kDtype, int kFormat>() {
    for (size_t i = 0; i < src.size(); ++i) {
      QuantizeBlock<kDtype, kFormat>(p.geometry, src[i], dst[i], scratch);
    }
  });
}

void DequantizeResolved(const QuantizeParams& p, const std::vector<const unsigned char*>& src,
                        const std::vector<unsigned char*>& dst) {
  Dispatch(p.geometry.dtype, p.format, [&]<int kDtype, int kFormat>() {
    for (size_t i = 0; i < src.size(); ++i)
      DequantizeBlock<kDtype, kFormat>(p.geometry, src[i], dst[i]);
  });
}

// Checks one side's range: non-null, stride and alignment, no wrap-around. Sets *end to one
// past the last byte of the last block.
absl::Status CheckSide(const char* field, DevicePtr ptr, uint64_t stride, uint64_t block_bytes,
                       uint64_t align, const char* what, uint32_t num_blocks, uint64_t* end) {
  if (ptr.is_null())
    return absl::InvalidArgumentError(absl::StrFormat("QuantizeParams.%s is null", field));
  if (ptr.address() % align != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("QuantizeParams.%s = 0x%x is not %d-byte aligned (%s blocks)", field,
                        ptr.address(), align, what));
  }
  if (stride < block_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("QuantizeParams.%s_stride = %d is smaller than one %s block (%d bytes)",
                        field, stride, what, block_bytes));
  }
  if (stride % align != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("QuantizeParams.%s_stride = %d is not a multiple of %d (%s blocks)", field,
                        stride, align, what));
  }
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t steps = num_blocks - 1;
  if ((steps != 0 && stride > (max - block_bytes - ptr.address()) / steps) ||
      block_bytes > max - ptr.address()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "QuantizeParams.%s_stride = %d: %d blocks from 0x%x wrap around the address space", field,
        stride, num_blocks, ptr.address()));
  }
  *end = ptr.address() + steps * stride + block_bytes;
  return absl::OkStatus();
}

// The cpu function of both kernels: validate, resolve every block, then run.
absl::Status RunOnEmulated(const QuantizeParams& p, bool quantize,
                           const KernelLaunch::Resolver& resolve) {
  if (absl::Status s = p.Validate(quantize); !s.ok()) return s;
  const size_t original = p.geometry.block_bytes();
  const size_t quantized = QuantizedBlockBytes(p.geometry, p.format);
  const size_t src_bytes = quantize ? original : quantized;
  const size_t dst_bytes = quantize ? quantized : original;
  std::vector<const unsigned char*> src(p.num_blocks);
  std::vector<unsigned char*> dst(p.num_blocks);
  for (uint32_t i = 0; i < p.num_blocks; ++i) {
    const DevicePtr s = p.src + i * p.src_stride;
    const DevicePtr d = p.dst + i * p.dst_stride;
    src[i] = static_cast<const unsigned char*>(resolve(s, src_bytes));
    dst[i] = static_cast<unsigned char*>(resolve(d, dst_bytes));
    if (src[i] == nullptr || dst[i] == nullptr) {
      const bool bad_src = src[i] == nullptr;
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s block %d: device range [0x%x, +%d bytes) is not inside one live allocation",
          bad_src ? "src" : "dst", i, (bad_src ? s : d).address(),
          bad_src ? src_bytes : dst_bytes));
    }
  }
  if (quantize) {
    QuantizeResolved(p, src, dst);
  } else {
    DequantizeResolved(p, src, dst);
  }
  return absl::OkStatus();
}

// Host pointers of every block of a Cpu call.
void HostBlocks(const QuantizeParams& p, const void* src, void* dst,
                std::vector<const unsigned char*>* src_blocks,
                std::vector<unsigned char*>* dst_blocks) {
  for (uint32_t i = 0; i < p.num_blocks; ++i) {
    src_blocks->push_back(static_cast<const unsigned char*>(src) + i * p.src_stride);
    dst_blocks->push_back(static_cast<unsigned char*>(dst) + i * p.dst_stride);
  }
}

KernelLaunch MakeKernel(const QuantizeParams& p, bool quantize) {
  KernelLaunch launch;
  launch.name = quantize ? kQuantizeKernelName : kDequantizeKernelName;
  launch.cpu = [p, quantize](const KernelLaunch::Resolver& resolve) -> absl::Status {
    return RunOnEmulated(p, quantize, resolve);
  };
#if defined(KVTIER_HAVE_CUDA)
  launch.cuda = [p, quantize](void* cuda_stream) -> absl::Status {
    if (absl::Status s = p.Validate(quantize); !s.ok()) return s;
    if (p.num_blocks == 0) return absl::OkStatus();
    quantize_internal::QuantizeLaunchArgs args;
    args.src = p.src.address();
    args.src_stride = p.src_stride;
    args.dst = p.dst.address();
    args.dst_stride = p.dst_stride;
    args.num_blocks = p.num_blocks;
    args.num_layers = p.geometry.num_layers;
    args.parts = p.geometry.parts();
    args.num_kv_heads = p.geometry.num_kv_heads;
    args.head_dim = p.geometry.head_dim;
    args.block_tokens = p.geometry.block_tokens;
    args.dtype = static_cast<int>(p.geometry.dtype);
    args.format = static_cast<int>(p.format);
    const int error = quantize ? quantize_internal::LaunchQuantizeCuda(cuda_stream, args)
                               : quantize_internal::LaunchDequantizeCuda(cuda_stream, args);
    if (error != 0) {
      return absl::InternalError(
          absl::StrFormat("%s kernel launch (%d blocks, %s → %s): %s",
                          quantize ? kQuantizeKernelName : kDequantizeKernelName, p.num_blocks,
                          quantize ? DTypeName(p.geometry.dtype) : QuantFormatName(p.format),
                          quantize ? QuantFormatName(p.format) : DTypeName(p.geometry.dtype),
                          cudaGetErrorString(static_cast<cudaError_t>(error))));
    }
    return absl::OkStatus();
  };
#endif
  return launch;
}

// Accumulates the error of one head: its elements sit at rows of `dim` elements,
// `row` elements apart, `tokens` rows.
template <int kDtype, int kFormat>
void MeasureHead(const unsigned char* original, const unsigned char* roundtrip, size_t tokens,
                 size_t row, size_t dim, QuantError& e, double& sum_sq_err, double& sum_sq_x) {
  using Bits = typename Original<kDtype>::Bits;
  uint32_t magnitude = 0;
  for (size_t t = 0; t < tokens; ++t) {
    for (size_t d = 0; d < dim; ++d) {
      magnitude = std::max(
          magnitude, FiniteMagnitude<kDtype>(Load<Bits>(original + (t * row + d) * sizeof(Bits))));
    }
  }
  const double scale = ScaleFromMagnitude<kDtype, kFormat>(magnitude);
  for (size_t t = 0; t < tokens; ++t) {
    for (size_t d = 0; d < dim; ++d) {
      const size_t at = (t * row + d) * sizeof(Bits);
      const double x = Original<kDtype>::ToFloat(Load<Bits>(original + at));
      if (!std::isfinite(x)) {
        ++e.nonfinite;
        continue;
      }
      const double y = Original<kDtype>::ToFloat(Load<Bits>(roundtrip + at));
      // A non-finite result for a finite original is an infinite error (NaN would slip
      // through std::max).
      const double err =
          std::isfinite(y) ? std::fabs(y - x) : std::numeric_limits<double>::infinity();
      ++e.elements;
      e.max_abs = std::max(e.max_abs, err);
      sum_sq_err += err * err;
      sum_sq_x += x * x;
      if (scale > 0) e.max_abs_over_scale = std::max(e.max_abs_over_scale, err / scale);
    }
  }
}

}  // namespace

const char* QuantFormatName(QuantFormat format) {
  switch (format) {
    case QuantFormat::kNone:
      return "none";
    case QuantFormat::kFp8E4m3:
      return "fp8";
    case QuantFormat::kInt8:
      return "int8";
  }
  return "?";
}

absl::StatusOr<QuantFormat> ParseQuantFormat(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "none") return QuantFormat::kNone;
  if (lower == "fp8" || lower == "fp8_e4m3" || lower == "e4m3") return QuantFormat::kFp8E4m3;
  if (lower == "int8") return QuantFormat::kInt8;
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown quantization format '%s' (none, fp8, int8)", name));
}

size_t QuantizedScalesOffset(const Geometry& g) {
  return quantize_internal::ScalesOffset(g.block_bytes() / g.element_bytes());
}

size_t QuantizedBlockBytes(const Geometry& g, QuantFormat format) {
  if (format != QuantFormat::kFp8E4m3 && format != QuantFormat::kInt8) return 0;
  return quantize_internal::QuantizedBytes(g.block_bytes() / g.element_bytes(),
                                           uint64_t{g.parts()} * g.num_layers * g.num_kv_heads);
}

absl::Status QuantizeParams::Validate(bool quantize) const {
  if (absl::Status s = geometry.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("QuantizeParams.%s", s.message()));
  }
  if (format != QuantFormat::kFp8E4m3 && format != QuantFormat::kInt8) {
    return absl::InvalidArgumentError(
        absl::StrFormat("QuantizeParams.format = %s (%d): must be fp8 or int8",
                        QuantFormatName(format), static_cast<int>(format)));
  }
  if (!DTypeIsQuantizable(geometry.dtype)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "QuantizeParams.geometry.dtype = %s: blocks already one byte per element are not "
        "quantized (the kernels take fp16, bf16 and fp32)",
        DTypeName(geometry.dtype)));
  }
  if (num_blocks == 0) return absl::OkStatus();
  const uint64_t original = geometry.block_bytes();
  const uint64_t quantized = QuantizedBlockBytes(geometry, format);
  const uint64_t element = geometry.element_bytes();
  uint64_t src_end = 0, dst_end = 0;
  if (absl::Status s =
          CheckSide("src", src, src_stride, quantize ? original : quantized, quantize ? element : 4,
                    quantize ? "original" : "quantized", num_blocks, &src_end);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckSide("dst", dst, dst_stride, quantize ? quantized : original, quantize ? 4 : element,
                    quantize ? "quantized" : "original", num_blocks, &dst_end);
      !s.ok()) {
    return s;
  }
  if (src.address() < dst_end && dst.address() < src_end) {
    return absl::InvalidArgumentError(
        absl::StrFormat("QuantizeParams.src and dst overlap: [0x%x, 0x%x) and [0x%x, 0x%x)",
                        src.address(), src_end, dst.address(), dst_end));
  }
  return absl::OkStatus();
}

KernelLaunch MakeQuantizeKernel(const QuantizeParams& p) { return MakeKernel(p, true); }
KernelLaunch MakeDequantizeKernel(const QuantizeParams& p) { return MakeKernel(p, false); }

void QuantizeBlocksCpu(const QuantizeParams& p, const void* src, void* dst) {
  std::vector<const unsigned char*> src_blocks;
  std::vector<unsigned char*> dst_blocks;
  HostBlocks(p, src, dst, &src_blocks, &dst_blocks);
  QuantizeResolved(p, src_blocks, dst_blocks);
}

void DequantizeBlocksCpu(const QuantizeParams& p, const void* src, void* dst) {
  std::vector<const unsigned char*> src_blocks;
  std::vector<unsigned char*> dst_blocks;
  HostBlocks(p, src, dst, &src_blocks, &dst_blocks);
  DequantizeResolved(p, src_blocks, dst_blocks);
}

absl::StatusOr<QuantError> MeasureQuantError(const Geometry& g, QuantFormat format,
                                             const void* original, const void* roundtrip,
                                             size_t num_blocks) {
  if (absl::Status s = g.Validate(); !s.ok()) return s;
  if (format != QuantFormat::kFp8E4m3 && format != QuantFormat::kInt8) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MeasureQuantError: format = %s: must be fp8 or int8", QuantFormatName(format)));
  }
  if (!DTypeIsQuantizable(g.dtype)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MeasureQuantError: dtype %s is one byte per element: not quantized", DTypeName(g.dtype)));
  }
  if (num_blocks > 0 && (original == nullptr || roundtrip == nullptr)) {
    return absl::InvalidArgumentError("MeasureQuantError: null buffer");
  }
  QuantError e;
  double sum_sq_err = 0, sum_sq_x = 0;
  const size_t row = size_t{g.num_kv_heads} * g.head_dim;
  const size_t part = row * g.block_tokens;
  const size_t parts = num_blocks * g.parts() * g.num_layers;
  const size_t es = g.element_bytes();
  Dispatch(g.dtype, format, [&]<int kDtype, int kFormat>() {
    for (size_t lp = 0; lp < parts; ++lp) {
      for (size_t h = 0; h < g.num_kv_heads; ++h) {
        const size_t at = (lp * part + h * g.head_dim) * es;
        MeasureHead<kDtype, kFormat>(static_cast<const unsigned char*>(original) + at,
                                     static_cast<const unsigned char*>(roundtrip) + at,
                                     g.block_tokens, row, g.head_dim, e, sum_sq_err, sum_sq_x);
      }
    }
  });
  if (e.elements > 0) e.rms = std::sqrt(sum_sq_err / static_cast<double>(e.elements));
  if (sum_sq_x > 0) e.relative_rms = std::sqrt(sum_sq_err / sum_sq_x);
  return e;
}

}  // namespace kvtier
