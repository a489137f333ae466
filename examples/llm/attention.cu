// examples/llm/attention.cu — CUDA decode attention (flash-decoding over a paged block table) and
// the merge of attention states (see attention.h).
//
// Kernels only: no Abseil, no Status. Each launcher enqueues on the caller's stream and
// returns the launch's cudaError_t; attention.cc turns it into a Status.
//
// Split kernel: grid (num_seqs, num_kv_heads × head tiles, num_splits), 128 threads. A CTA
// takes one KV head, the q heads of its GQA group (up to kMaxHeadsPerCta of them, so each
// K/V row is read once for all of them) and one split of the context. kLanes threads share a
// K/V row, each holding 8 consecutive elements (one 16-byte load for fp16/bf16, two for
// fp32), so a row is read by contiguous 16-byte loads; the other lanes of the warp take other
// tokens. Each group of kLanes lanes ("row group") runs its own online softmax over the
// tokens it sees, kUnroll tokens at a time (all their K and V loads in flight together, the
// next tokens' block-table entries loaded meanwhile); at the end the row groups' states are
// merged, first across a warp with shuffles, then across warps in shared memory. One split
// writes out/lse directly; several write partial states to the workspace and the reduce
// kernel merges them, one CTA per (sequence, q head).

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "examples/llm/attention_internal.h"
#include "kernels/numeric.h"

namespace kvtier::attention_internal {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kElemsPerLane = 8;
constexpr unsigned kFullMask = 0xffffffffu;

// The 8 elements of a K or V row one lane holds, as raw bits: 16 bytes, 32 for fp32.
template <int kDType>
struct Chunk {
  static constexpr int kVectors = kDType == kDTypeFloat32 ? 2 : 1;
  uint4 raw[kVectors];
};

template <int kDType>
__device__ __forceinline__ void LoadChunk(Chunk<kDType>& chunk, const unsigned char* src) {
  const uint4* vectors = reinterpret_cast<const uint4*>(src);
#pragma unroll
  for (int i = 0; i < Chunk<kDType>::kVectors; ++i) chunk.raw[i] = __ldg(vectors + i);
}

template <int kDType>
__device__ __forceinline__ void ZeroChunk(Chunk<kDType>& chunk) {
#pragma unroll
  for (int i = 0; i < Chunk<kDType>::kVectors; ++i) chunk.raw[i] = make_uint4(0, 0, 0, 0);
}

// Two packed 16-bit values to float, exactly (as numeric::HalfBitsToFloat / Bf16BitsToFloat).
template <int kDType>
__device__ __forceinline__ void PairToFloat(uint32_t word, float* dst) {
  if constexpr (kDType == kDTypeFloat16) {
    dst[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(word & 0xffffu)));
    dst[1] = __half2float(__ushort_as_half(static_cast<unsigned short>(word >> 16)));
  } else {
    dst[0] = __uint_as_float(word << 16);
    dst[1] = __uint_as_float(word & 0xffff0000u);
  }
}

template <int kDType>
__device__ __forceinline__ void ChunkToFloat(const Chunk<kDType>& chunk,
                                             float (&dst)[kElemsPerLane]) {
  if constexpr (kDType == kDTypeFloat32) {
    dst[0] = __uint_as_float(chunk.raw[0].x);
    dst[1] = __uint_as_float(chunk.raw[0].y);
    dst[2] = __uint_as_float(chunk.raw[0].z);
    dst[3] = __uint_as_float(chunk.raw[0].w);
    dst[4] = __uint_as_float(chunk.raw[1].x);
    dst[5] = __uint_as_float(chunk.raw[1].y);
    dst[6] = __uint_as_float(chunk.raw[1].z);
    dst[7] = __uint_as_float(chunk.raw[1].w);
  } else {
    PairToFloat<kDType>(chunk.raw[0].x, dst + 0);
    PairToFloat<kDType>(chunk.raw[0].y, dst + 2);
    PairToFloat<kDType>(chunk.raw[0].z, dst + 4);
    PairToFloat<kDType>(chunk.raw[0].w, dst + 6);
  }
}

// One element of q, converted with numeric.h (q is read once per CTA).
template <int kDType>
__device__ __forceinline__ float LoadElement(const void* base, uint64_t index) {
  if constexpr (kDType == kDTypeFloat32) {
    return static_cast<const float*>(base)[index];
  } else if constexpr (kDType == kDTypeFloat16) {
    return numeric::HalfBitsToFloat(static_cast<const uint16_t*>(base)[index]);
  } else {
    return numeric::Bf16BitsToFloat(static_cast<const uint16_t*>(base)[index]);
  }
}

// exp2(a - b) where b is a running maximum >= a, or 0 when a is -inf (also when b is).
__device__ __forceinline__ float ScaleFactor(float a, float b) {
  return a == NegativeInfinity() ? 0.0f : exp2f(a - b);
}

template <int kDType, int kLanes, int kHeads>
__global__ void __launch_bounds__(kThreads)
    DecodeAttentionSplitKernel(const DecodeAttentionLaunchArgs a) {
  constexpr int kRowsPerWarp = 32 / kLanes;
  constexpr int kRowGroups = kWarps * kRowsPerWarp;
  // Tokens per row group per iteration: more loads in flight, fewer accumulator rescales;
  // halved for 8 heads to stay within registers.
  constexpr int kUnroll = kHeads >= 8 ? 2 : 4;
  constexpr uint32_t kTokensPerIteration = kRowGroups * kUnroll;
  constexpr uint32_t kElemBytes = kDType == kDTypeFloat32 ? 4 : 2;
  constexpr int kMaxDim = kLanes * kElemsPerLane;

  __shared__ float s_max[kWarps][kHeads];
  __shared__ float s_sum[kWarps][kHeads];
  __shared__ float s_acc[kWarps][kHeads][kMaxDim];

  const uint32_t seq = blockIdx.x;
  const uint32_t kv_head = blockIdx.y / a.head_tiles;
  const uint32_t tile_head = (blockIdx.y % a.head_tiles) * kHeads;  // first head of the tile
  const uint32_t split = blockIdx.z;
  const uint32_t group = a.num_q_heads / a.num_kv_heads;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int col = lane % kLanes;
  const int row_group = warp * kRowsPerWarp + lane / kLanes;
  const bool col_active = static_cast<uint32_t>(col * kElemsPerLane) < a.head_dim;
  const float neg_inf = NegativeInfinity();

  // The GPU cannot report a context longer than the block table's row; it reads only the row.
  const uint64_t capacity = uint64_t{a.max_blocks_per_seq} * a.block_tokens;
  uint32_t context = reinterpret_cast<const uint32_t*>(a.context_lens)[seq];
  if (context > capacity) context = static_cast<uint32_t>(capacity);
  const TokenRange range = SplitTokenRange(context, a.block_tokens, a.num_splits, split);

  // This lane's 8 elements of each q head of the tile, pre-scaled into base 2.
  float q[kHeads][kElemsPerLane];
  const uint64_t q_row0 = (uint64_t{seq} * a.num_q_heads + uint64_t{kv_head} * group) * a.head_dim;
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    const bool live = col_active && tile_head + h < group;
#pragma unroll
    for (int j = 0; j < kElemsPerLane; ++j) {
      q[h][j] = live ? LoadElement<kDType>(reinterpret_cast<const void*>(a.q),
                                           q_row0 + uint64_t{tile_head + h} * a.head_dim +
                                               col * kElemsPerLane + j) *
                           a.scale_log2
                     : 0.0f;
    }
  }

  float run_max[kHeads];
  float run_sum[kHeads];
  float acc[kHeads][kElemsPerLane];
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    run_max[h] = neg_inf;
    run_sum[h] = 0.0f;
#pragma unroll
    for (int j = 0; j < kElemsPerLane; ++j) acc[h][j] = 0.0f;
  }

  const uint32_t* table =
      reinterpret_cast<const uint32_t*>(a.block_table) + uint64_t{seq} * a.max_blocks_per_seq;
  const unsigned char* pool = reinterpret_cast<const unsigned char*>(a.kv_pool);
  const uint64_t row_bytes = uint64_t{a.head_dim} * kElemBytes;
  const uint64_t token_bytes = row_bytes * a.num_kv_heads;
  const uint64_t lane_offset =
      uint64_t{kv_head} * row_bytes + uint64_t(col) * kElemsPerLane * kElemBytes;

  // Block-table entries of the tokens of the first iteration; each iteration loads the next.
  uint32_t slot[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const uint64_t t = uint64_t{range.begin} + u * kRowGroups + row_group;
    slot[u] = t < range.end ? table[static_cast<uint32_t>(t) / a.block_tokens] : 0;
  }

  // Token indices are 64-bit where they may pass the end, 32-bit (cheaper division) below it.
  for (uint64_t base = range.begin; base < range.end; base += kTokensPerIteration) {
    Chunk<kDType> k[kUnroll];
    Chunk<kDType> v[kUnroll];
    bool valid[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint64_t t = base + u * kRowGroups + row_group;
      valid[u] = t < range.end;
      if (valid[u] && col_active) {
        const uint32_t row_in_block = static_cast<uint32_t>(t) % a.block_tokens;
        const unsigned char* row = pool + uint64_t{slot[u]} * a.block_stride +
                                   uint64_t{row_in_block} * token_bytes + lane_offset;
        LoadChunk(k[u], row + a.k_offset);
        LoadChunk(v[u], row + a.v_offset);
      } else {
        ZeroChunk(k[u]);
        ZeroChunk(v[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint64_t t = base + kTokensPerIteration + u * kRowGroups + row_group;
      slot[u] = t < range.end ? table[static_cast<uint32_t>(t) / a.block_tokens] : 0;
    }

    // Scores: each lane's partial dot products, summed over the row group's lanes.
    float score[kUnroll][kHeads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[kElemsPerLane];
      ChunkToFloat(k[u], kf);
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < kElemsPerLane; ++j) s = fmaf(q[h][j], kf[j], s);
        score[u][h] = s;
      }
    }
#pragma unroll
    for (int offset = kLanes / 2; offset > 0; offset /= 2) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int h = 0; h < kHeads; ++h) {
          score[u][h] += __shfl_xor_sync(kFullMask, score[u][h], offset);
        }
      }
    }

    // Online softmax: one rescale per head for the kUnroll tokens.
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      float new_max = run_max[h];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (valid[u]) new_max = fmaxf(new_max, score[u][h]);
      }
      const float alpha = ScaleFactor(run_max[h], new_max);
      run_max[h] = new_max;
      run_sum[h] *= alpha;
#pragma unroll
      for (int j = 0; j < kElemsPerLane; ++j) acc[h][j] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (!valid[u]) continue;  // the same for all lanes of a row group
      float vf[kElemsPerLane];
      ChunkToFloat(v[u], vf);
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        const float p = exp2f(score[u][h] - run_max[h]);
        run_sum[h] += p;
#pragma unroll
        for (int j = 0; j < kElemsPerLane; ++j) acc[h][j] = fmaf(p, vf[j], acc[h][j]);
      }
    }
  }

  // Merge the row groups of each warp (lanes `offset` apart hold the same columns).
#pragma unroll
  for (int offset = kLanes; offset < 32; offset *= 2) {
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      const float other_max = __shfl_xor_sync(kFullMask, run_max[h], offset);
      const float other_sum = __shfl_xor_sync(kFullMask, run_sum[h], offset);
      const float new_max = fmaxf(run_max[h], other_max);
      const float mine = ScaleFactor(run_max[h], new_max);
      const float theirs = ScaleFactor(other_max, new_max);
      run_sum[h] = run_sum[h] * mine + other_sum * theirs;
      run_max[h] = new_max;
#pragma unroll
      for (int j = 0; j < kElemsPerLane; ++j) {
        const float other = __shfl_xor_sync(kFullMask, acc[h][j], offset);
        acc[h][j] = acc[h][j] * mine + other * theirs;
      }
    }
  }

  // Then the warps, through shared memory: lanes [0, kLanes) hold each warp's state.
  if (lane < kLanes) {
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      if (lane == 0) {
        s_max[warp][h] = run_max[h];
        s_sum[warp][h] = run_sum[h];
      }
#pragma unroll
      for (int j = 0; j < kElemsPerLane; ++j) s_acc[warp][h][col * kElemsPerLane + j] = acc[h][j];
    }
  }
  __syncthreads();

  const bool direct = a.num_splits == 1;
  for (uint32_t i = threadIdx.x; i < kHeads * a.head_dim; i += kThreads) {
    const uint32_t h = i / a.head_dim;
    const uint32_t d = i % a.head_dim;
    if (tile_head + h >= group) break;  // i only grows, and so does h
    float m = neg_inf;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, s_max[w][h]);
    float value = 0.0f;
    float lse = neg_inf;
    if (m != neg_inf) {
      float sum = 0.0f;
      float o = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = ScaleFactor(s_max[w][h], m);
        sum += s_sum[w][h] * f;
        o += s_acc[w][h][d] * f;
      }
      value = o / sum;
      lse = (m + log2f(sum)) * kLn2;
    }
    const uint64_t row = uint64_t{seq} * a.num_q_heads + uint64_t{kv_head} * group + tile_head + h;
    if (direct) {
      reinterpret_cast<float*>(a.out)[row * a.head_dim + d] = value;
      if (d == 0) reinterpret_cast<float*>(a.lse)[row] = lse;
    } else {
      const uint64_t part = row * a.num_splits + split;
      reinterpret_cast<float*>(a.partial_out)[part * a.head_dim + d] = value;
      if (d == 0) reinterpret_cast<float*>(a.partial_lse)[part] = lse;
    }
  }
}

// Merges the splits' partial states of one (sequence, q head) row per CTA iteration.
__global__ void __launch_bounds__(kThreads)
    DecodeAttentionReduceKernel(const DecodeAttentionLaunchArgs a) {
  __shared__ float s_weight[kMaxSplits];
  __shared__ float s_max;
  __shared__ float s_sum;
  const uint64_t rows = uint64_t{a.num_seqs} * a.num_q_heads;
  const uint32_t splits = a.num_splits;
  const float neg_inf = NegativeInfinity();
  for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* part_lse = reinterpret_cast<const float*>(a.partial_lse) + row * splits;
    const float* part_out =
        reinterpret_cast<const float*>(a.partial_out) + row * splits * a.head_dim;
    if (threadIdx.x < 32) {
      float m = neg_inf;
      for (uint32_t z = threadIdx.x; z < splits; z += 32) m = fmaxf(m, part_lse[z]);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2)
        m = fmaxf(m, __shfl_xor_sync(kFullMask, m, offset));
      float sum = 0.0f;
      for (uint32_t z = threadIdx.x; z < splits; z += 32) {
        const float w = m == neg_inf ? 0.0f : expf(part_lse[z] - m);  // 0 for an empty split
        s_weight[z] = w;
        sum += w;
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(kFullMask, sum, offset);
      if (threadIdx.x == 0) {
        s_max = m;
        s_sum = sum;
      }
    }
    __syncthreads();
    const float m = s_max;
    const float inv_sum = m == neg_inf ? 0.0f : 1.0f / s_sum;
    for (uint32_t d = threadIdx.x; d < a.head_dim; d += kThreads) {
      float o = 0.0f;
      if (m != neg_inf) {
        for (uint32_t z = 0; z < splits; ++z) {
          const float w = s_weight[z];
          if (w != 0.0f) o = fmaf(w, part_out[uint64_t{z} * a.head_dim + d], o);
        }
      }
      reinterpret_cast<float*>(a.out)[row * a.head_dim + d] = o * inv_sum;
    }
    if (threadIdx.x == 0) {
      reinterpret_cast<float*>(a.lse)[row] = m == neg_inf ? neg_inf : m + logf(s_sum);
    }
    __syncthreads();  // s_weight, s_max and s_sum are reused for the next row
  }
}

__global__ void __launch_bounds__(kThreads)
    MergeAttentionKernel(uint32_t rows, uint32_t head_dim, float* out_acc, float* lse_acc,
                         const float* out_part, const float* lse_part) {
  for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const MergeWeights w = ComputeMergeWeights(lse_acc[row], lse_part[row]);
    for (uint32_t d = threadIdx.x; d < head_dim; d += kThreads) {
      const uint64_t i = row * head_dim + d;
      out_acc[i] = MergeValue(w, out_acc[i], out_part[i]);
    }
    __syncthreads();  // every thread has read lse_acc[row] before it is overwritten
    if (threadIdx.x == 0) lse_acc[row] = w.lse;
  }
}

template <int kDType, int kLanes, int kHeads>
cudaError_t LaunchSplit(cudaStream_t stream, const DecodeAttentionLaunchArgs& a) {
  const dim3 grid(a.num_seqs, a.num_kv_heads * a.head_tiles, a.num_splits);
  DecodeAttentionSplitKernel<kDType, kLanes, kHeads><<<grid, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <int kDType, int kLanes>
cudaError_t DispatchHeads(cudaStream_t stream, const DecodeAttentionLaunchArgs& a) {
  const uint32_t group = a.num_q_heads / a.num_kv_heads;
  if (group <= 1) return LaunchSplit<kDType, kLanes, 1>(stream, a);
  if (group <= 2) return LaunchSplit<kDType, kLanes, 2>(stream, a);
  if (group <= 4) return LaunchSplit<kDType, kLanes, 4>(stream, a);
  return LaunchSplit<kDType, kLanes, kMaxHeadsPerCta>(stream, a);
}

// Lanes per K/V row: head_dim / 8 rounded up to 8, 16 or 32 (head_dim 64, 128, 256 use all
// of them; other multiples of 8 leave the top lanes idle).
template <int kDType>
cudaError_t DispatchLanes(cudaStream_t stream, const DecodeAttentionLaunchArgs& a) {
  if (a.head_dim <= 64) return DispatchHeads<kDType, 8>(stream, a);
  if (a.head_dim <= 128) return DispatchHeads<kDType, 16>(stream, a);
  return DispatchHeads<kDType, 32>(stream, a);
}

}  // namespace

int LaunchDecodeAttentionCuda(void* cuda_stream, const DecodeAttentionLaunchArgs& args,
                              const char** failed_kernel) {
  const cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  *failed_kernel = "decode_attention_split";
  cudaError_t error = cudaErrorInvalidValue;
  switch (args.dtype) {
    case kDTypeFloat16:
      error = DispatchLanes<kDTypeFloat16>(stream, args);
      break;
    case kDTypeBFloat16:
      error = DispatchLanes<kDTypeBFloat16>(stream, args);
      break;
    case kDTypeFloat32:
      error = DispatchLanes<kDTypeFloat32>(stream, args);
      break;
    default:
      break;
  }
  if (error != cudaSuccess || args.num_splits <= 1) return static_cast<int>(error);
  *failed_kernel = "decode_attention_reduce";
  const uint64_t rows = uint64_t{args.num_seqs} * args.num_q_heads;
  const unsigned blocks = static_cast<unsigned>(rows < (1u << 20) ? rows : (1u << 20));
  DecodeAttentionReduceKernel<<<blocks, kThreads, 0, stream>>>(args);
  return static_cast<int>(cudaGetLastError());
}

int LaunchMergeAttentionCuda(void* cuda_stream, uint32_t rows, uint32_t head_dim, uint64_t out_acc,
                             uint64_t lse_acc, uint64_t out_part, uint64_t lse_part) {
  if (rows == 0) return cudaSuccess;
  const unsigned blocks = rows < (1u << 20) ? rows : (1u << 20);
  MergeAttentionKernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(cuda_stream)>>>(
      rows, head_dim, reinterpret_cast<float*>(out_acc), reinterpret_cast<float*>(lse_acc),
      reinterpret_cast<const float*>(out_part), reinterpret_cast<const float*>(lse_part));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kvtier::attention_internal
