// examples/llm/attention.h — decode attention over a paged KV block table (flash-decoding), and
// the exact merge of partial attention states.
//
// Each sequence of a batch has one query token; its keys and values sit in KV blocks
// ("slots") of a pool, listed in order by the sequence's row of a block table. The kernel
// returns, per (sequence, q head), the attention output and the log-sum-exp of the scaled
// scores. With the log-sum-exp, attention over a context cut into chunks (computed by
// separate calls over separate parts of the block table, e.g. one over blocks on the GPU
// and one over blocks just loaded from a lower tier) merges into attention over the whole
// exactly, up to float rounding: MakeMergeAttentionKernel.
//
// Both kernels are KernelLaunch builders (see kvtier/device.h): `cpu` is the reference the
// emulated device runs, `cuda` the GPU implementation (empty without CUDA). The CUDA kernel
// splits each sequence's context into `num_splits` parts, computes a partial (out, lse) per
// part in parallel into the workspace, then merges them (flash-decoding); the CPU reference
// computes and merges the same parts.
//
// Accuracy: inputs are converted exactly to float (fp16 and bf16 embed in binary32), all
// arithmetic is float, softmax is computed online with the running maximum subtracted, so
// nothing overflows whatever the scores' magnitude.

#ifndef KVTIER_EXAMPLES_LLM_ATTENTION_H_
#define KVTIER_EXAMPLES_LLM_ATTENTION_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier {

// Decode attention for a batch of sequences, one query token each, over KV blocks in a pool
// of slots. Slot s starts at kv_pool + s * block_stride; this layer's K of a slot is at
// + k_offset, laid out [block_tokens][num_kv_heads][head_dim], V at + v_offset likewise
// (kvtier's block layout [layer][K,V][token][kv_head][head_dim] gives k_offset =
// Geometry::Offset(layer, kKey), v_offset = Offset(layer, kValue), block_stride = block_bytes).
//
// Token t of sequence i is row t % block_tokens of slot block_table[i][t / block_tokens].
// Only the first ceil(context_lens[i] / block_tokens) entries of a row are read.
//
// Alignment (the CUDA kernel reads K/V rows with 16-byte loads): kv_pool, block_stride,
// k_offset and v_offset are multiples of 16; q, block_table, context_lens, out, lse and
// workspace are aligned to their element size. Device::Allocate returns 256-byte aligned
// memory and Geometry's offsets satisfy this whenever head_dim is a multiple of 8.
//
// What only the CPU reference can check (it resolves every range it reads; the GPU would
// fault or read garbage): a slot index whose K/V range is not inside one live allocation,
// and a context length above max_blocks_per_seq * block_tokens (the GPU clamps it).
struct DecodeAttentionParams {
  DType dtype = DType::kFloat16;  // of q and the KV: kFloat16 or kBFloat16 (kFloat32 also accepted)
  uint32_t num_seqs = 0;
  uint32_t num_q_heads = 0;
  uint32_t num_kv_heads = 0;  // divides num_q_heads (GQA; equal = MHA, 1 = MQA)
  uint32_t head_dim = 0;      // multiple of 8, at most 256
  uint32_t block_tokens = 0;
  uint64_t block_stride = 0;
  uint64_t k_offset = 0;
  uint64_t v_offset = 0;
  uint32_t max_blocks_per_seq = 0;  // row length of block_table
  uint32_t num_splits = 0;          // splits of the sequence (flash-decoding); 0 = choose
  float scale = 0.0f;               // softmax scale; 0 means 1/sqrt(head_dim)
  DevicePtr q;                      // [num_seqs][num_q_heads][head_dim], dtype
  DevicePtr kv_pool;
  DevicePtr block_table;   // [num_seqs][max_blocks_per_seq] uint32 slot indices
  DevicePtr context_lens;  // [num_seqs] uint32 tokens of context (0 allowed: out 0, lse -inf)
  DevicePtr out;           // [num_seqs][num_q_heads][head_dim] float32: softmax(scale·q·Kᵀ)·V
  DevicePtr lse;           // [num_seqs][num_q_heads] float32: log Σ exp(scale·q·k) (natural log)
  DevicePtr workspace;  // DecodeAttentionWorkspaceBytes(*this) bytes of device memory (null if 0)

  absl::Status Validate() const;  // InvalidArgument naming the bad field
};

// The most splits a sequence is cut into (explicitly or by the automatic choice).
inline constexpr uint32_t kMaxDecodeAttentionSplits = 256;

// Bytes of device workspace the kernel needs for `p` (0 when it runs one split: partial
// results then go straight to out/lse). With num_splits = 0 the split count is chosen from
// the GPU's multiprocessor count (read once per process; 132, an H100's, where there is no
// GPU), so the same process gets the same answer for the same params.
size_t DecodeAttentionWorkspaceBytes(const DecodeAttentionParams& p);

// Validates at once (an invalid `p` makes both `cpu` and `cuda` return the InvalidArgument
// error, which Stream::Launch or the next Synchronize surfaces), runs the CPU reference on
// the emulated device and the CUDA kernel on a GPU.
KernelLaunch MakeDecodeAttentionKernel(const DecodeAttentionParams& p);

// Merges a partial attention state into an accumulator, exactly:
//   lse = log(exp(lse_acc) + exp(lse_part));
//   out_acc = out_acc·exp(lse_acc−lse) + out_part·exp(lse_part−lse).
// An lse of -inf (empty context) contributes nothing. rows = num_seqs * num_q_heads.
struct MergeAttentionParams {
  uint32_t rows = 0;
  uint32_t head_dim = 0;
  DevicePtr out_acc, lse_acc;    // float32 [rows][head_dim], [rows]; updated in place
  DevicePtr out_part, lse_part;  // float32

  absl::Status Validate() const;  // InvalidArgument naming the bad field
};
KernelLaunch MakeMergeAttentionKernel(const MergeAttentionParams& p);

// The same merge over host arrays (what the CPU reference of the merge kernel calls).
void MergeAttentionStatesHost(uint32_t rows, uint32_t head_dim, float* out_acc, float* lse_acc,
                              const float* out_part, const float* lse_part);

}  // namespace kvtier

#endif  // KVTIER_EXAMPLES_LLM_ATTENTION_H_
