// kernels/quantize.cu — CUDA implementations of the KV quantization kernels (see quantize.h).
//
// Kernels only: no Abseil, no Status. Each launcher enqueues on the caller's stream and
// returns the launch's cudaError_t; quantize.cc turns it into a Status naming the kernel.
//
//  * Quantize: one CTA per head (block, layer, K/V, kv_head) — grid-stride over heads. Pass 1
//    takes the max of the heads' magnitude bits (warp shuffles, then one warp over the
//    per-warp maxima: an integer max, exact in any order); thread 0 turns it into the scale
//    and stores it; pass 2 re-reads the head (from L1/L2: 4 KiB for a Llama-3-8B head of 16
//    tokens) and stores one byte per element.
//  * Dequantize: one CTA per (block, layer, K/V) — its payload and its output are contiguous,
//    so threads stride over 16-element chunks, each inside one head.
//
// Both move 16 elements per thread step with 16-byte loads and stores when head_dim is a
// multiple of 16 and every base address and stride is a multiple of 16 (the usual case);
// otherwise they fall back to one element at a time. The arithmetic is quantize_internal.h's,
// shared with the CPU reference, so results are bit-identical.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/quantize_internal.h"

namespace kvtier::quantize_internal {
namespace {

constexpr unsigned kQuantizeThreads = 128;
constexpr unsigned kDequantizeThreads = 256;
constexpr unsigned kChunk = 16;  // elements per vectorized step
// Enough CTAs to fill an H100 many times over; the grid-stride loops cover the rest.
constexpr uint64_t kMaxGrid = 65536;

__device__ inline uint32_t WarpMax(uint32_t v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// 16 elements of an original dtype, as whole 16-byte vectors.
template <typename Bits>
union OriginalChunk {
  uint4 vec[kChunk * sizeof(Bits) / 16];
  Bits e[kChunk];
};
union QuantizedChunk {
  uint4 vec;
  uint8_t q[kChunk];
};

template <typename Bits>
__device__ inline void LoadChunk(const Bits* p, OriginalChunk<Bits>& c) {
  const uint4* v = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (unsigned i = 0; i < sizeof(c.vec) / 16; ++i) c.vec[i] = v[i];
}

template <typename Bits>
__device__ inline void StoreChunk(Bits* p, const OriginalChunk<Bits>& c) {
  uint4* v = reinterpret_cast<uint4*>(p);
#pragma unroll
  for (unsigned i = 0; i < sizeof(c.vec) / 16; ++i) v[i] = c.vec[i];
}

template <int kDtype, int kFormat>
__global__ void __launch_bounds__(kQuantizeThreads)
    QuantizeKernel(QuantizeLaunchArgs a, bool vectorized) {
  using Bits = typename Original<kDtype>::Bits;
  __shared__ uint32_t warp_max[kQuantizeThreads / 32];
  __shared__ float head_scale;

  const uint32_t heads_per_block = a.num_layers * a.parts * a.num_kv_heads;
  const uint64_t units = uint64_t{a.num_blocks} * heads_per_block;
  const uint32_t row = a.num_kv_heads * a.head_dim;  // elements of one token
  const uint32_t part_elements = row * a.block_tokens;
  const uint64_t elements = uint64_t{part_elements} * a.parts * a.num_layers;
  const uint64_t scales_offset = ScalesOffset(elements);
  const uint32_t head_elements = a.block_tokens * a.head_dim;
  const unsigned lane = threadIdx.x % 32;
  const unsigned warp = threadIdx.x / 32;

  for (uint64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
    const uint64_t block = unit / heads_per_block;
    const uint32_t in_block = static_cast<uint32_t>(unit % heads_per_block);  // (lp, head)
    const uint32_t lp = in_block / a.num_kv_heads;
    const uint32_t head = in_block % a.num_kv_heads;
    const uint64_t first = uint64_t{lp} * part_elements + uint64_t{head} * a.head_dim;
    const Bits* src =
        reinterpret_cast<const Bits*>(static_cast<uintptr_t>(a.src + block * a.src_stride)) + first;
    uint8_t* dst_block =
        reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(a.dst + block * a.dst_stride));
    uint8_t* dst = dst_block + first;

    // Pass 1: the head's largest finite magnitude.
    uint32_t magnitude = 0;
    if (vectorized) {
      const uint32_t chunks_per_row = a.head_dim / kChunk;
      const uint32_t chunks = a.block_tokens * chunks_per_row;
      for (uint32_t c = threadIdx.x; c < chunks; c += blockDim.x) {
        const uint32_t t = c / chunks_per_row;
        const uint32_t d = (c - t * chunks_per_row) * kChunk;
        OriginalChunk<Bits> x;
        LoadChunk(src + uint64_t{t} * row + d, x);
#pragma unroll
        for (unsigned i = 0; i < kChunk; ++i)
          magnitude = max(magnitude, FiniteMagnitude<kDtype>(x.e[i]));
      }
    } else {
      for (uint32_t i = threadIdx.x; i < head_elements; i += blockDim.x) {
        const uint32_t t = i / a.head_dim;
        const uint32_t d = i - t * a.head_dim;
        magnitude = max(magnitude, FiniteMagnitude<kDtype>(src[uint64_t{t} * row + d]));
      }
    }
    magnitude = WarpMax(magnitude);
    if (lane == 0) warp_max[warp] = magnitude;
    __syncthreads();
    if (warp == 0) {
      magnitude = lane < blockDim.x / 32 ? warp_max[lane] : 0u;
      magnitude = WarpMax(magnitude);
      if (lane == 0) {
        const float scale = ScaleFromMagnitude<kDtype, kFormat>(magnitude);
        head_scale = scale;
        reinterpret_cast<float*>(dst_block + scales_offset)[in_block] = scale;
      }
    }
    __syncthreads();
    const float scale = head_scale;

    // Pass 2: one byte per element (zeros for a head with scale 0).
    if (vectorized) {
      const uint32_t chunks_per_row = a.head_dim / kChunk;
      const uint32_t chunks = a.block_tokens * chunks_per_row;
      for (uint32_t c = threadIdx.x; c < chunks; c += blockDim.x) {
        const uint32_t t = c / chunks_per_row;
        const uint32_t d = (c - t * chunks_per_row) * kChunk;
        QuantizedChunk q;
        if (scale == 0.0f) {
          q.vec = make_uint4(0, 0, 0, 0);
        } else {
          OriginalChunk<Bits> x;
          LoadChunk(src + uint64_t{t} * row + d, x);
#pragma unroll
          for (unsigned i = 0; i < kChunk; ++i) {
            q.q[i] = QuantizeValue<kFormat>(Original<kDtype>::ToFloat(x.e[i]), scale);
          }
        }
        *reinterpret_cast<uint4*>(dst + uint64_t{t} * row + d) = q.vec;
      }
    } else {
      for (uint32_t i = threadIdx.x; i < head_elements; i += blockDim.x) {
        const uint32_t t = i / a.head_dim;
        const uint32_t d = i - t * a.head_dim;
        const uint64_t at = uint64_t{t} * row + d;
        dst[at] = scale == 0.0f ? uint8_t{0}
                                : QuantizeValue<kFormat>(Original<kDtype>::ToFloat(src[at]), scale);
      }
    }

    // The first head of each block also zeroes the block's padding (at most 15 + 15 bytes).
    if (in_block == 0) {
      const uint64_t scales_end = scales_offset + 4 * uint64_t{heads_per_block};
      const uint64_t pad1 = scales_offset - elements;
      const uint64_t pad2 = RoundUpTo16(scales_end) - scales_end;
      if (threadIdx.x < pad1) dst_block[elements + threadIdx.x] = 0;
      if (threadIdx.x < pad2) dst_block[scales_end + threadIdx.x] = 0;
    }
    __syncthreads();  // warp_max and head_scale are reused by the next head
  }
}

template <int kDtype, int kFormat>
__global__ void __launch_bounds__(kDequantizeThreads)
    DequantizeKernel(QuantizeLaunchArgs a, bool vectorized) {
  using Bits = typename Original<kDtype>::Bits;
  const uint32_t parts_per_block = a.num_layers * a.parts;
  const uint64_t units = uint64_t{a.num_blocks} * parts_per_block;
  const uint32_t part_elements = a.num_kv_heads * a.head_dim * a.block_tokens;
  const uint64_t elements = uint64_t{part_elements} * parts_per_block;
  const uint64_t scales_offset = ScalesOffset(elements);

  for (uint64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
    const uint64_t block = unit / parts_per_block;
    const uint32_t lp = static_cast<uint32_t>(unit % parts_per_block);
    const uint8_t* src_block =
        reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(a.src + block * a.src_stride));
    const uint8_t* src = src_block + uint64_t{lp} * part_elements;
    const float* scales =
        reinterpret_cast<const float*>(src_block + scales_offset) + uint64_t{lp} * a.num_kv_heads;
    Bits* dst = reinterpret_cast<Bits*>(static_cast<uintptr_t>(a.dst + block * a.dst_stride)) +
                uint64_t{lp} * part_elements;
    if (vectorized) {
      const uint32_t chunks = part_elements / kChunk;
      for (uint32_t c = threadIdx.x; c < chunks; c += blockDim.x) {
        const uint32_t e = c * kChunk;
        const float scale = scales[(e / a.head_dim) % a.num_kv_heads];
        QuantizedChunk q;
        q.vec = *reinterpret_cast<const uint4*>(src + e);
        OriginalChunk<Bits> x;
#pragma unroll
        for (unsigned i = 0; i < kChunk; ++i) {
          x.e[i] = Original<kDtype>::FromFloat(DequantizeValue<kFormat>(q.q[i], scale));
        }
        StoreChunk(dst + e, x);
      }
    } else {
      for (uint32_t e = threadIdx.x; e < part_elements; e += blockDim.x) {
        const float scale = scales[(e / a.head_dim) % a.num_kv_heads];
        dst[e] = Original<kDtype>::FromFloat(DequantizeValue<kFormat>(src[e], scale));
      }
    }
  }
}

// Whether the 16-byte paths apply: 16-element chunks stay inside one head's row, and every
// chunk's address on both sides is a multiple of 16.
bool Vectorized(const QuantizeLaunchArgs& a) {
  return a.head_dim % kChunk == 0 && a.src % 16 == 0 && a.src_stride % 16 == 0 && a.dst % 16 == 0 &&
         a.dst_stride % 16 == 0;
}

template <template <int, int> class Launch>
int Dispatch(const QuantizeLaunchArgs& a, void* cuda_stream) {
  const bool fp8 = a.format == kFormatFp8;
  switch (a.dtype) {
    case kDtypeF16:
      return fp8 ? Launch<kDtypeF16, kFormatFp8>::Run(a, cuda_stream)
                 : Launch<kDtypeF16, kFormatInt8>::Run(a, cuda_stream);
    case kDtypeBf16:
      return fp8 ? Launch<kDtypeBf16, kFormatFp8>::Run(a, cuda_stream)
                 : Launch<kDtypeBf16, kFormatInt8>::Run(a, cuda_stream);
    case kDtypeF32:
      return fp8 ? Launch<kDtypeF32, kFormatFp8>::Run(a, cuda_stream)
                 : Launch<kDtypeF32, kFormatInt8>::Run(a, cuda_stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

template <int kDtype, int kFormat>
struct QuantizeLauncher {
  static int Run(const QuantizeLaunchArgs& a, void* cuda_stream) {
    const uint64_t units = uint64_t{a.num_blocks} * a.num_layers * a.parts * a.num_kv_heads;
    const unsigned grid = static_cast<unsigned>(std::min(units, kMaxGrid));
    QuantizeKernel<kDtype, kFormat>
        <<<grid, kQuantizeThreads, 0, static_cast<cudaStream_t>(cuda_stream)>>>(a, Vectorized(a));
    return static_cast<int>(cudaGetLastError());
  }
};

template <int kDtype, int kFormat>
struct DequantizeLauncher {
  static int Run(const QuantizeLaunchArgs& a, void* cuda_stream) {
    const uint64_t units = uint64_t{a.num_blocks} * a.num_layers * a.parts;
    const unsigned grid = static_cast<unsigned>(std::min(units, kMaxGrid));
    DequantizeKernel<kDtype, kFormat>
        <<<grid, kDequantizeThreads, 0, static_cast<cudaStream_t>(cuda_stream)>>>(a, Vectorized(a));
    return static_cast<int>(cudaGetLastError());
  }
};

}  // namespace

int LaunchQuantizeCuda(void* cuda_stream, const QuantizeLaunchArgs& args) {
  if (args.num_blocks == 0) return cudaSuccess;
  return Dispatch<QuantizeLauncher>(args, cuda_stream);
}

int LaunchDequantizeCuda(void* cuda_stream, const QuantizeLaunchArgs& args) {
  if (args.num_blocks == 0) return cudaSuccess;
  return Dispatch<DequantizeLauncher>(args, cuda_stream);
}

}  // namespace kvtier::quantize_internal
