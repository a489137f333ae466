// examples/llm/attention_internal.h — what attention.cc and attention.cu share.
//
// Plain C++17 that both the host compiler and nvcc accept (no Abseil): the launch arguments
// the CUDA launcher takes, the workspace layout, how a sequence's context is cut into
// splits, the merge of two attention states (compiled for host and device, so the CPU
// reference and the CUDA kernels merge the same way), and the CUDA launchers' declarations.

#ifndef KVTIER_EXAMPLES_LLM_ATTENTION_INTERNAL_H_
#define KVTIER_EXAMPLES_LLM_ATTENTION_INTERNAL_H_

#include <math.h>

#include <cstddef>
#include <cstdint>

#include "kernels/numeric.h"

namespace kvtier::attention_internal {

// Scores are kept in base 2 (exp2 is one instruction on the GPU): q is pre-multiplied by
// scale · log2(e), and a base-2 log-sum-exp becomes a natural one by multiplying by ln 2.
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// DType's values (kvtier/geometry.h), which the .cu file cannot include.
constexpr int kDTypeFloat16 = 1;
constexpr int kDTypeBFloat16 = 2;
constexpr int kDTypeFloat32 = 3;

// The CUDA kernel holds the q vectors and accumulators of at most this many q heads of a
// GQA group in registers; a larger group is cut into tiles of this many heads, one CTA per
// tile (each tile then reads the KV head again, mostly from L2).
constexpr uint32_t kMaxHeadsPerCta = 8;

// The most splits of a sequence (kMaxDecodeAttentionSplits in attention.h): the reduce
// kernel keeps one weight per split in shared memory.
constexpr uint32_t kMaxSplits = 256;

KVTIER_HOST_DEVICE inline uint32_t HeadTiles(uint32_t group_size) {
  return (group_size + kMaxHeadsPerCta - 1) / kMaxHeadsPerCta;
}

KVTIER_HOST_DEVICE inline float NegativeInfinity() { return numeric::BitsToFloat(0xff800000u); }

// The token range [begin, end) of split `split` of `num_splits` over a context of `context`
// tokens: the context's blocks are dealt out in equal runs of whole blocks, so a split never
// shares a block with another; trailing splits may be empty.
struct TokenRange {
  uint32_t begin;
  uint32_t end;
};
KVTIER_HOST_DEVICE inline TokenRange SplitTokenRange(uint32_t context, uint32_t block_tokens,
                                                     uint32_t num_splits, uint32_t split) {
  const uint64_t blocks = (uint64_t{context} + block_tokens - 1) / block_tokens;
  const uint64_t per_split = (blocks + num_splits - 1) / num_splits;
  const uint64_t first = split * per_split < blocks ? split * per_split : blocks;
  const uint64_t last = first + per_split < blocks ? first + per_split : blocks;
  const uint64_t begin = first * block_tokens;
  const uint64_t end = last * block_tokens < context ? last * block_tokens : context;
  return TokenRange{static_cast<uint32_t>(begin), static_cast<uint32_t>(end)};
}

// The automatic split count: enough CTAs (num_seqs × kv heads × head tiles × splits) to
// give every multiprocessor about kCtasPerSm of them (one full wave of resident CTAs), at
// most one split per block of a full row of the block table, at most `max_splits`.
constexpr uint32_t kCtasPerSm = 4;
inline uint32_t ChooseNumSplits(uint32_t num_seqs, uint32_t num_kv_heads, uint32_t group_size,
                                uint32_t max_blocks_per_seq, int sm_count, uint32_t max_splits) {
  const uint64_t ctas = uint64_t{num_seqs} * num_kv_heads * HeadTiles(group_size);
  const uint64_t target = uint64_t{kCtasPerSm} * static_cast<uint64_t>(sm_count > 0 ? sm_count : 1);
  uint64_t splits = (target + ctas - 1) / ctas;
  if (splits > max_blocks_per_seq) splits = max_blocks_per_seq;
  if (splits > max_splits) splits = max_splits;
  return splits < 1 ? 1u : static_cast<uint32_t>(splits);
}

// Workspace layout when num_splits > 1: partial outputs, float [rows][num_splits][head_dim]
// (rows = num_seqs × num_q_heads), then partial log-sum-exps, float [rows][num_splits], at a
// 16-byte aligned offset.
inline uint64_t PartialOutBytes(uint64_t rows, uint32_t num_splits, uint32_t head_dim) {
  return (rows * num_splits * head_dim * sizeof(float) + 15) / 16 * 16;
}
inline uint64_t WorkspaceBytes(uint64_t rows, uint32_t num_splits, uint32_t head_dim) {
  if (num_splits <= 1) return 0;
  return PartialOutBytes(rows, num_splits, head_dim) + rows * num_splits * sizeof(float);
}

// How two attention states over disjoint parts of a context combine: the merged state's
// output is acc · w.acc + part · w.part, its log-sum-exp w.lse. An lse of -inf (no tokens)
// has weight exactly 0 and the other state is taken unchanged.
struct MergeWeights {
  float acc;
  float part;
  float lse;
};
KVTIER_HOST_DEVICE inline MergeWeights ComputeMergeWeights(float lse_acc, float lse_part) {
  const float neg_inf = NegativeInfinity();
  if (lse_part == neg_inf) return MergeWeights{1.0f, 0.0f, lse_acc};
  if (lse_acc == neg_inf) return MergeWeights{0.0f, 1.0f, lse_part};
  // exp of the smaller minus the larger is in (0, 1]: nothing overflows, and log1p keeps
  // the sum's log exact to float rounding even when one state dominates.
  const bool acc_larger = lse_acc >= lse_part;
  const float hi = acc_larger ? lse_acc : lse_part;
  const float e = expf((acc_larger ? lse_part : lse_acc) - hi);
  const float w_hi = 1.0f / (1.0f + e);
  const float w_lo = e * w_hi;
  return acc_larger ? MergeWeights{w_hi, w_lo, hi + log1pf(e)}
                    : MergeWeights{w_lo, w_hi, hi + log1pf(e)};
}
// One merged output element. A weight of exactly 0 skips its operand, so an empty state's
// output (whatever it holds) cannot turn the result into NaN.
KVTIER_HOST_DEVICE inline float MergeValue(const MergeWeights& w, float acc, float part) {
  if (w.part == 0.0f) return acc;
  if (w.acc == 0.0f) return part;
  return acc * w.acc + part * w.part;
}

// What the CUDA launcher needs: the validated params with every pointer as an address and
// the split count resolved.
struct DecodeAttentionLaunchArgs {
  int dtype = kDTypeFloat16;
  uint32_t num_seqs = 0;
  uint32_t num_q_heads = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t block_tokens = 0;
  uint32_t max_blocks_per_seq = 0;
  uint32_t num_splits = 1;  // >= 1
  uint32_t head_tiles = 1;  // HeadTiles(num_q_heads / num_kv_heads)
  uint64_t block_stride = 0;
  uint64_t k_offset = 0;
  uint64_t v_offset = 0;
  float scale_log2 = 0.0f;  // softmax scale × log2(e)
  uint64_t q = 0;
  uint64_t kv_pool = 0;
  uint64_t block_table = 0;
  uint64_t context_lens = 0;
  uint64_t out = 0;
  uint64_t lse = 0;
  uint64_t partial_out = 0;  // workspace; used when num_splits > 1
  uint64_t partial_lse = 0;
};

#if defined(KVTIER_HAVE_CUDA)
// Enqueues decode attention on `cuda_stream` (a cudaStream_t): the split kernel, then (with
// more than one split) the reduce kernel. Returns the first cudaError_t (0 = success) and
// sets *failed_kernel to the name of the kernel whose launch failed.
int LaunchDecodeAttentionCuda(void* cuda_stream, const DecodeAttentionLaunchArgs& args,
                              const char** failed_kernel);

// Enqueues the merge of (out_part, lse_part) into (out_acc, lse_acc), float32 arrays of
// rows × head_dim and rows. Returns the launch's cudaError_t.
int LaunchMergeAttentionCuda(void* cuda_stream, uint32_t rows, uint32_t head_dim, uint64_t out_acc,
                             uint64_t lse_acc, uint64_t out_part, uint64_t lse_part);
#endif

}  // namespace kvtier::attention_internal

#endif  // KVTIER_EXAMPLES_LLM_ATTENTION_INTERNAL_H_
