// examples/llm/attention.cc — parameter validation, the CPU references of decode attention and
// of the attention-state merge, and their KernelLaunch builders (see attention.h). The CUDA
// implementations live in attention.cu.
//
// The CPU reference cuts each sequence's context into the same splits as the GPU, computes a
// partial (out, lse) per (sequence, split) for all q heads with an online softmax in float,
// writes the partials to the workspace as the GPU does, and merges them with the same formula
// as the GPU's reduce kernel. Before computing anything it resolves every range it will
// touch, including each block's K and V, so a bad slot index is an error and not a stray
// read, and an error leaves the outputs untouched. Large launches spread the (sequence,
// split) items over threads: this is what runs attention on machines without a GPU.

#include "examples/llm/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "examples/llm/attention_internal.h"
#include "kernels/numeric.h"

#if defined(KVTIER_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace kvtier {
namespace {

using attention_internal::ComputeMergeWeights;
using attention_internal::kLn2;
using attention_internal::kLog2e;
using attention_internal::MergeValue;
using attention_internal::MergeWeights;
using attention_internal::NegativeInfinity;
using attention_internal::SplitTokenRange;
using attention_internal::TokenRange;

static_assert(kMaxDecodeAttentionSplits == attention_internal::kMaxSplits);
static_assert(static_cast<int>(DType::kFloat16) == attention_internal::kDTypeFloat16 &&
              static_cast<int>(DType::kBFloat16) == attention_internal::kDTypeBFloat16 &&
              static_cast<int>(DType::kFloat32) == attention_internal::kDTypeFloat32);

constexpr char kDecodeKernelName[] = "decode_attention";
constexpr char kMergeKernelName[] = "merge_attention";

// What ChooseNumSplits assumes where there is no GPU to ask: an H100 SXM's multiprocessors.
constexpr int kDefaultSmCount = 132;
// Grid limits of the CUDA kernels: y holds kv heads × head tiles, x the sequences.
constexpr uint64_t kMaxGridY = 65535;
constexpr uint64_t kMaxGridX = 0x7fffffff;
// Below this many (token, KV head) pairs a launch runs on the calling thread: starting
// threads would cost more than they save.
constexpr uint64_t kMinParallelWork = 1 << 15;
constexpr unsigned kMaxCpuThreads = 32;

absl::Status Invalid(const absl::FormatSpec<>& format) {
  return absl::InvalidArgumentError(absl::StrFormat(format));
}
template <typename... Args>
absl::Status Invalid(const absl::FormatSpec<Args...>& format, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrFormat(format, args...));
}

// a * b * c, or false on overflow.
bool Multiply(uint64_t a, uint64_t b, uint64_t c, uint64_t* product) {
  uint64_t ab = 0;
  return !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c, product);
}

// The GPU's multiprocessor count, read once per process; kDefaultSmCount without a GPU.
int MultiprocessorCount() {
  static const int count = [] {
#if defined(KVTIER_HAVE_CUDA)
    int device = 0;
    int sms = 0;
    if (cudaGetDevice(&device) == cudaSuccess &&
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess &&
        sms > 0) {
      return sms;
    }
    // Clear the failed query's error, so that no later cudaGetLastError reports it.
    (void)cudaGetLastError();
#endif
    return kDefaultSmCount;
  }();
  return count;
}

uint32_t ResolvedNumSplits(const DecodeAttentionParams& p) {
  if (p.num_splits != 0) return p.num_splits;
  return attention_internal::ChooseNumSplits(p.num_seqs, p.num_kv_heads,
                                             p.num_q_heads / p.num_kv_heads, p.max_blocks_per_seq,
                                             MultiprocessorCount(), kMaxDecodeAttentionSplits);
}

float ResolvedScale(const DecodeAttentionParams& p) {
  return p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(p.head_dim));
}

absl::Status CheckPointer(const char* field, DevicePtr ptr, uint64_t alignment) {
  if (ptr.is_null()) return Invalid("DecodeAttentionParams.%s is null", field);
  if (ptr.address() % alignment != 0) {
    return Invalid("DecodeAttentionParams.%s (0x%x) must be %d-byte aligned", field, ptr.address(),
                   alignment);
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------------ CPU reference

// fp16 → float for every bit pattern, built with numeric.h once per process: a table
// lookup is several times faster than the branchy scalar conversion and exact by construction.
const float* HalfToFloatTable() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t bits = 0; bits < 65536; ++bits) {
      t[bits] = numeric::HalfBitsToFloat(static_cast<uint16_t>(bits));
    }
    return t;
  }();
  return table.data();
}

// One row of `n` elements of type kDType to float, exactly (numeric.h).
template <DType kDType>
inline void RowToFloat(const unsigned char* src, uint32_t n, float* dst) {
  if constexpr (kDType == DType::kFloat32) {
    std::memcpy(dst, src, size_t{n} * sizeof(float));
  } else if constexpr (kDType == DType::kFloat16) {
    const float* table = HalfToFloatTable();
    for (uint32_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, src + 2 * size_t{i}, sizeof(bits));
      dst[i] = table[bits];
    }
  } else {
    for (uint32_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, src + 2 * size_t{i}, sizeof(bits));
      dst[i] = numeric::Bf16BitsToFloat(bits);
    }
  }
}

void RowToFloat(DType dtype, const unsigned char* src, uint32_t n, float* dst) {
  switch (dtype) {
    case DType::kFloat16:
      return RowToFloat<DType::kFloat16>(src, n, dst);
    case DType::kBFloat16:
      return RowToFloat<DType::kBFloat16>(src, n, dst);
    case DType::kFloat32:
      return RowToFloat<DType::kFloat32>(src, n, dst);
    case DType::kFp8E4m3:
    case DType::kFp8E5m2:
      return;  // refused by DecodeAttentionParams::Validate
  }
}

// Four floats in one SSE register (GCC/Clang vector extension, baseline x86-64 and ARM):
// RelWithDebInfo's -O2 does not vectorize these loops by itself.
using Float4 = float __attribute__((vector_size(16)));

inline Float4 Load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store4(float* p, Float4 v) { std::memcpy(p, &v, sizeof(v)); }

// Σ a[i]·b[i]. REQUIRES: n is a multiple of 8.
inline float Dot(const float* a, const float* b, uint32_t n) {
  Float4 s0 = {0, 0, 0, 0};
  Float4 s1 = {0, 0, 0, 0};
  for (uint32_t i = 0; i < n; i += 8) {
    s0 += Load4(a + i) * Load4(b + i);
    s1 += Load4(a + i + 4) * Load4(b + i + 4);
  }
  const Float4 s = s0 + s1;
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// y[i] += w·x[i]. REQUIRES: n is a multiple of 4.
inline void Axpy(float w, const float* x, float* y, uint32_t n) {
  const Float4 wv = {w, w, w, w};
  for (uint32_t i = 0; i < n; i += 4) Store4(y + i, Load4(y + i) + wv * Load4(x + i));
}

// y[i] = y[i]·a + x[i]. REQUIRES: n is a multiple of 4.
inline void ScaleAdd(float a, const float* x, float* y, uint32_t n) {
  const Float4 av = {a, a, a, a};
  for (uint32_t i = 0; i < n; i += 4) Store4(y + i, Load4(y + i) * av + Load4(x + i));
}

// Everything the CPU reference has resolved, shared read-only by its worker threads.
struct CpuPlan {
  const DecodeAttentionParams* p;
  uint32_t splits;
  uint32_t group;
  uint64_t row_bytes;               // one (token, kv head) row of K or V
  uint64_t token_bytes;             // one token of K or V: all kv heads
  std::vector<float> q;             // [num_seqs][num_q_heads][head_dim], × scale · log2(e)
  std::vector<uint32_t> context;    // per sequence
  std::vector<size_t> first_block;  // per sequence, index into k_blocks / v_blocks
  std::vector<const unsigned char*> k_blocks;  // host address of each block's K
  std::vector<const unsigned char*> v_blocks;
  float* out;
  float* lse;
  float* partial_out;  // workspace, when splits > 1
  float* partial_lse;
};

// Per-thread scratch, reused across items.
struct CpuScratch {
  std::vector<float> row;        // head_dim
  std::vector<float> scores;     // num_q_heads × block_tokens
  std::vector<float> acc;        // num_q_heads × head_dim
  std::vector<float> block_acc;  // num_q_heads × head_dim
  std::vector<float> run_max;    // num_q_heads
  std::vector<float> run_sum;
  std::vector<float> alpha;  // the current block's rescale of the totals
};

// Partial attention of split `split` of sequence `seq`, for all its q heads: an online
// softmax in base 2, one rescale per block of tokens. A block's K (then V) is read in address
// order, all KV heads of a token at once, and each row is converted once and used by every
// q head of its GQA group.
template <DType kDType>
void ComputeItem(const CpuPlan& plan, uint32_t seq, uint32_t split, CpuScratch& s) {
  const DecodeAttentionParams& p = *plan.p;
  const uint32_t dim = p.head_dim;
  const uint32_t heads = p.num_q_heads;
  const uint32_t group = plan.group;
  const uint32_t bt = p.block_tokens;
  const float neg_inf = NegativeInfinity();
  s.row.resize(dim);
  s.scores.resize(size_t{heads} * bt);
  s.acc.assign(size_t{heads} * dim, 0.0f);
  s.block_acc.resize(size_t{heads} * dim);
  s.run_max.assign(heads, neg_inf);
  s.run_sum.assign(heads, 0.0f);
  s.alpha.resize(heads);
  const uint64_t first_row = uint64_t{seq} * heads;
  const float* q = plan.q.data() + first_row * dim;

  const TokenRange range = SplitTokenRange(plan.context[seq], bt, plan.splits, split);
  for (uint64_t t0 = range.begin; t0 < range.end; t0 += bt) {
    const size_t block = plan.first_block[seq] + t0 / bt;
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(bt, range.end - t0));
    const unsigned char* k = plan.k_blocks[block];
    const unsigned char* v = plan.v_blocks[block];
    for (uint32_t i = 0; i < n; ++i) {
      for (uint32_t kv = 0; kv < p.num_kv_heads; ++kv) {
        RowToFloat<kDType>(k + i * plan.token_bytes + kv * plan.row_bytes, dim, s.row.data());
        for (uint32_t h = kv * group; h < (kv + 1) * group; ++h) {
          s.scores[size_t{h} * bt + i] = Dot(q + size_t{h} * dim, s.row.data(), dim);
        }
      }
    }
    for (uint32_t h = 0; h < heads; ++h) {
      float* score = &s.scores[size_t{h} * bt];
      const float new_max = std::max(s.run_max[h], *std::max_element(score, score + n));
      const float alpha = s.run_max[h] == neg_inf ? 0.0f : std::exp2(s.run_max[h] - new_max);
      s.run_max[h] = new_max;
      s.alpha[h] = alpha;
      float block_sum = 0.0f;
      for (uint32_t i = 0; i < n; ++i) {
        score[i] = std::exp2(score[i] - new_max);  // from here on: the token's weight
        block_sum += score[i];
      }
      s.run_sum[h] = s.run_sum[h] * alpha + block_sum;
    }
    // The block's weighted V is summed on its own and then added to the rescaled total:
    // rounding error then grows with the number of blocks, not of tokens.
    std::fill(s.block_acc.begin(), s.block_acc.end(), 0.0f);
    for (uint32_t i = 0; i < n; ++i) {
      for (uint32_t kv = 0; kv < p.num_kv_heads; ++kv) {
        RowToFloat<kDType>(v + i * plan.token_bytes + kv * plan.row_bytes, dim, s.row.data());
        for (uint32_t h = kv * group; h < (kv + 1) * group; ++h) {
          Axpy(s.scores[size_t{h} * bt + i], s.row.data(), &s.block_acc[size_t{h} * dim], dim);
        }
      }
    }
    for (uint32_t h = 0; h < heads; ++h) {
      ScaleAdd(s.alpha[h], &s.block_acc[size_t{h} * dim], &s.acc[size_t{h} * dim], dim);
    }
  }

  for (uint32_t h = 0; h < heads; ++h) {
    const uint64_t row = first_row + h;
    float* out;
    float* lse;
    if (plan.splits == 1) {
      out = plan.out + row * dim;
      lse = plan.lse + row;
    } else {
      const uint64_t part = row * plan.splits + split;
      out = plan.partial_out + part * dim;
      lse = plan.partial_lse + part;
    }
    const float* acc = &s.acc[size_t{h} * dim];
    if (s.run_max[h] == neg_inf) {  // no tokens in this split
      std::fill(out, out + dim, 0.0f);
      *lse = neg_inf;
      continue;
    }
    const float inv_sum = 1.0f / s.run_sum[h];
    for (uint32_t d = 0; d < dim; ++d) out[d] = acc[d] * inv_sum;
    *lse = (s.run_max[h] + std::log2(s.run_sum[h])) * kLn2;
  }
}

// Merges the splits of one row as the GPU's reduce kernel does: weights exp(lse − max),
// empty splits (lse = -inf) weigh exactly 0.
void ReduceRow(uint32_t splits, uint32_t dim, const float* part_out, const float* part_lse,
               float* weights, float* out, float* lse) {
  const float neg_inf = NegativeInfinity();
  float m = neg_inf;
  for (uint32_t z = 0; z < splits; ++z) m = std::max(m, part_lse[z]);
  if (m == neg_inf) {
    std::fill(out, out + dim, 0.0f);
    *lse = neg_inf;
    return;
  }
  float sum = 0.0f;
  for (uint32_t z = 0; z < splits; ++z) {
    weights[z] = std::exp(part_lse[z] - m);
    sum += weights[z];
  }
  std::fill(out, out + dim, 0.0f);
  for (uint32_t z = 0; z < splits; ++z) {
    if (weights[z] == 0.0f) continue;
    const float* o = part_out + size_t{z} * dim;
    for (uint32_t d = 0; d < dim; ++d) out[d] += weights[z] * o[d];
  }
  const float inv_sum = 1.0f / sum;
  for (uint32_t d = 0; d < dim; ++d) out[d] *= inv_sum;
  *lse = m + std::log(sum);
}

absl::Status RunDecodeAttentionCpu(const DecodeAttentionParams& p, uint32_t splits,
                                   const KernelLaunch::Resolver& resolve) {
  const uint64_t elem = DTypeSize(p.dtype);
  const uint64_t rows = uint64_t{p.num_seqs} * p.num_q_heads;
  auto resolve_range = [&resolve](const char* field, DevicePtr ptr, uint64_t bytes,
                                  void** host) -> absl::Status {
    *host = resolve(ptr, bytes);
    if (*host == nullptr) {
      return Invalid("%s: device range [0x%x, +%d bytes) is not inside one live allocation", field,
                     ptr.address(), bytes);
    }
    return absl::OkStatus();
  };
  void* q_host = nullptr;
  void* table_host = nullptr;
  void* context_host = nullptr;
  void* out_host = nullptr;
  void* lse_host = nullptr;
  void* workspace_host = nullptr;
  const uint64_t workspace_bytes = attention_internal::WorkspaceBytes(rows, splits, p.head_dim);
  for (absl::Status status :
       {resolve_range("q", p.q, rows * p.head_dim * elem, &q_host),
        resolve_range("block_table", p.block_table,
                      uint64_t{p.num_seqs} * p.max_blocks_per_seq * sizeof(uint32_t), &table_host),
        resolve_range("context_lens", p.context_lens, uint64_t{p.num_seqs} * sizeof(uint32_t),
                      &context_host),
        resolve_range("out", p.out, rows * p.head_dim * sizeof(float), &out_host),
        resolve_range("lse", p.lse, rows * sizeof(float), &lse_host),
        workspace_bytes == 0
            ? absl::OkStatus()
            : resolve_range("workspace", p.workspace, workspace_bytes, &workspace_host)}) {
    if (!status.ok()) return status;
  }

  CpuPlan plan;
  plan.p = &p;
  plan.splits = splits;
  plan.group = p.num_q_heads / p.num_kv_heads;
  plan.row_bytes = uint64_t{p.head_dim} * elem;
  plan.token_bytes = plan.row_bytes * p.num_kv_heads;
  plan.out = static_cast<float*>(out_host);
  plan.lse = static_cast<float*>(lse_host);
  if (workspace_host != nullptr) {
    plan.partial_out = static_cast<float*>(workspace_host);
    plan.partial_lse =
        reinterpret_cast<float*>(static_cast<unsigned char*>(workspace_host) +
                                 attention_internal::PartialOutBytes(rows, splits, p.head_dim));
  }

  // Context lengths and every block's K and V, checked before anything is written.
  const auto* contexts = static_cast<const uint32_t*>(context_host);
  const auto* table = static_cast<const uint32_t*>(table_host);
  const uint64_t part_bytes = plan.token_bytes * p.block_tokens;
  const uint64_t capacity = uint64_t{p.max_blocks_per_seq} * p.block_tokens;
  plan.context.assign(contexts, contexts + p.num_seqs);
  plan.first_block.resize(p.num_seqs);
  uint64_t total_tokens = 0;
  for (uint32_t seq = 0; seq < p.num_seqs; ++seq) {
    const uint32_t context = plan.context[seq];
    if (context > capacity) {
      return Invalid("context_lens[%d] = %d exceeds max_blocks_per_seq * block_tokens = %d * %d",
                     seq, context, p.max_blocks_per_seq, p.block_tokens);
    }
    total_tokens += context;
    plan.first_block[seq] = plan.k_blocks.size();
    const uint64_t blocks = (uint64_t{context} + p.block_tokens - 1) / p.block_tokens;
    for (uint64_t b = 0; b < blocks; ++b) {
      const uint32_t slot = table[uint64_t{seq} * p.max_blocks_per_seq + b];
      uint64_t slot_offset = 0;
      if (__builtin_mul_overflow(uint64_t{slot}, p.block_stride, &slot_offset) ||
          slot_offset > ~p.kv_pool.address() - p.block_stride) {
        return Invalid(
            "block_table[%d][%d] = slot %d: slot × block_stride is past the end of "
            "the address space",
            seq, b, slot);
      }
      const DevicePtr k = p.kv_pool + slot_offset + p.k_offset;
      const DevicePtr v = p.kv_pool + slot_offset + p.v_offset;
      const void* k_host = resolve(k, part_bytes);
      const void* v_host = resolve(v, part_bytes);
      if (k_host == nullptr || v_host == nullptr) {
        return Invalid(
            "block_table[%d][%d] = slot %d: its %s range [0x%x, +%d bytes) is not inside one "
            "live allocation (a slot outside the KV pool?)",
            seq, b, slot, k_host == nullptr ? "K" : "V", (k_host == nullptr ? k : v).address(),
            part_bytes);
      }
      plan.k_blocks.push_back(static_cast<const unsigned char*>(k_host));
      plan.v_blocks.push_back(static_cast<const unsigned char*>(v_host));
    }
  }

  // q, converted once and pre-scaled into base 2 (as the GPU does).
  const float scale_log2 = ResolvedScale(p) * kLog2e;
  plan.q.resize(rows * p.head_dim);
  const auto* q_bytes = static_cast<const unsigned char*>(q_host);
  for (uint64_t r = 0; r < rows; ++r) {
    float* q = plan.q.data() + r * p.head_dim;
    RowToFloat(p.dtype, q_bytes + r * plan.row_bytes, p.head_dim, q);
    for (uint32_t d = 0; d < p.head_dim; ++d) q[d] *= scale_log2;
  }

  // Work items: (sequence, split), split fastest.
  const uint64_t items = uint64_t{p.num_seqs} * splits;
  auto run_item = [&plan, &p, splits](uint64_t item, CpuScratch& scratch) {
    const uint32_t seq = static_cast<uint32_t>(item / splits);
    const uint32_t split = static_cast<uint32_t>(item % splits);
    switch (p.dtype) {
      case DType::kFloat16:
        return ComputeItem<DType::kFloat16>(plan, seq, split, scratch);
      case DType::kBFloat16:
        return ComputeItem<DType::kBFloat16>(plan, seq, split, scratch);
      case DType::kFloat32:
        return ComputeItem<DType::kFloat32>(plan, seq, split, scratch);
      case DType::kFp8E4m3:
      case DType::kFp8E5m2:
        return;  // refused by DecodeAttentionParams::Validate
    }
  };
  const uint64_t work = total_tokens * p.num_kv_heads;
  const unsigned threads =
      work < kMinParallelWork
          ? 1
          : static_cast<unsigned>(std::min<uint64_t>(
                {std::max(1u, std::thread::hardware_concurrency()), kMaxCpuThreads, items}));
  if (threads <= 1) {
    CpuScratch scratch;
    for (uint64_t item = 0; item < items; ++item) run_item(item, scratch);
  } else {
    std::atomic<uint64_t> next{0};
    auto worker = [&next, items, &run_item] {
      CpuScratch scratch;
      for (uint64_t item = next.fetch_add(1); item < items; item = next.fetch_add(1)) {
        run_item(item, scratch);
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& thread : pool) thread.join();
  }

  if (splits > 1) {
    std::vector<float> weights(splits);
    for (uint64_t r = 0; r < rows; ++r) {
      ReduceRow(splits, p.head_dim, plan.partial_out + r * splits * p.head_dim,
                plan.partial_lse + r * splits, weights.data(), plan.out + r * p.head_dim,
                plan.lse + r);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeAttentionParams::Validate() const {
  const size_t elem = DTypeSize(dtype);
  if (elem == 0 || !DTypeIsQuantizable(dtype)) {
    return Invalid("DecodeAttentionParams.dtype: %s (%d) is not fp16, bf16 or fp32 (the "
                   "attention kernels do not read fp8 caches)",
                   DTypeName(dtype), static_cast<int>(dtype));
  }
  if (num_seqs == 0 || num_seqs > kMaxGridX) {
    return Invalid("DecodeAttentionParams.num_seqs must be in [1, %d], got %d", kMaxGridX,
                   num_seqs);
  }
  if (num_kv_heads == 0 || num_kv_heads > kMaxGridY) {
    return Invalid("DecodeAttentionParams.num_kv_heads must be in [1, %d], got %d", kMaxGridY,
                   num_kv_heads);
  }
  if (num_q_heads == 0 || num_q_heads % num_kv_heads != 0) {
    return Invalid(
        "DecodeAttentionParams.num_q_heads (%d) must be a positive multiple of num_kv_heads "
        "(%d)",
        num_q_heads, num_kv_heads);
  }
  if (uint64_t{num_kv_heads} * attention_internal::HeadTiles(num_q_heads / num_kv_heads) >
      kMaxGridY) {
    return Invalid(
        "DecodeAttentionParams.num_q_heads (%d) is too many: num_kv_heads × "
        "ceil(group / %d) must be at most %d",
        num_q_heads, attention_internal::kMaxHeadsPerCta, kMaxGridY);
  }
  if (head_dim == 0 || head_dim % 8 != 0 || head_dim > 256) {
    return Invalid("DecodeAttentionParams.head_dim must be a multiple of 8 in [8, 256], got %d",
                   head_dim);
  }
  if (block_tokens == 0) return Invalid("DecodeAttentionParams.block_tokens must be positive");
  if (max_blocks_per_seq == 0) {
    return Invalid("DecodeAttentionParams.max_blocks_per_seq must be positive");
  }
  if (num_splits > kMaxDecodeAttentionSplits) {
    return Invalid("DecodeAttentionParams.num_splits must be at most %d (0 = choose), got %d",
                   kMaxDecodeAttentionSplits, num_splits);
  }
  if (!std::isfinite(scale)) {
    return Invalid("DecodeAttentionParams.scale must be finite (0 = 1/sqrt(head_dim)), got %g",
                   scale);
  }
  // The K and V of one slot: block_tokens × num_kv_heads × head_dim elements each.
  uint64_t part_bytes = 0;
  if (!Multiply(block_tokens, num_kv_heads, uint64_t{head_dim} * elem, &part_bytes) ||
      part_bytes > (uint64_t{1} << 40)) {
    return Invalid(
        "DecodeAttentionParams: a block's K (block_tokens × num_kv_heads × "
        "head_dim × element size) is too large");
  }
  if (k_offset > block_stride || block_stride - k_offset < part_bytes || v_offset > block_stride ||
      block_stride - v_offset < part_bytes) {
    return Invalid(
        "DecodeAttentionParams.block_stride (%d) must cover k_offset (%d) and v_offset (%d) "
        "plus the %d bytes of a block's K or V",
        block_stride, k_offset, v_offset, part_bytes);
  }
  if (block_stride % 16 != 0) {
    return Invalid("DecodeAttentionParams.block_stride (%d) must be a multiple of 16",
                   block_stride);
  }
  if (k_offset % 16 != 0) {
    return Invalid("DecodeAttentionParams.k_offset (%d) must be a multiple of 16", k_offset);
  }
  if (v_offset % 16 != 0) {
    return Invalid("DecodeAttentionParams.v_offset (%d) must be a multiple of 16", v_offset);
  }
  // Outputs and the workspace's partials must be addressable without overflow.
  uint64_t partial_floats = 0;
  if (!Multiply(uint64_t{num_seqs} * num_q_heads, head_dim, kMaxDecodeAttentionSplits,
                &partial_floats) ||
      partial_floats > (uint64_t{1} << 48)) {
    return Invalid("DecodeAttentionParams: num_seqs (%d) × num_q_heads (%d) is too large", num_seqs,
                   num_q_heads);
  }
  uint64_t table_entries = 0;
  if (!Multiply(num_seqs, max_blocks_per_seq, 1, &table_entries) ||
      table_entries > (uint64_t{1} << 40)) {
    return Invalid("DecodeAttentionParams.max_blocks_per_seq (%d) × num_seqs (%d) is too large",
                   max_blocks_per_seq, num_seqs);
  }
  for (absl::Status status :
       {CheckPointer("q", q, elem), CheckPointer("kv_pool", kv_pool, 16),
        CheckPointer("block_table", block_table, sizeof(uint32_t)),
        CheckPointer("context_lens", context_lens, sizeof(uint32_t)),
        CheckPointer("out", out, sizeof(float)), CheckPointer("lse", lse, sizeof(float))}) {
    if (!status.ok()) return status;
  }
  if (DecodeAttentionWorkspaceBytes(*this) > 0) {
    if (absl::Status status = CheckPointer("workspace", workspace, sizeof(float)); !status.ok()) {
      return Invalid("%s (DecodeAttentionWorkspaceBytes = %d)", status.message(),
                     DecodeAttentionWorkspaceBytes(*this));
    }
  }
  return absl::OkStatus();
}

size_t DecodeAttentionWorkspaceBytes(const DecodeAttentionParams& p) {
  if (p.num_kv_heads == 0 || p.num_q_heads % p.num_kv_heads != 0) return 0;  // invalid anyway
  const uint32_t splits = ResolvedNumSplits(p);
  return attention_internal::WorkspaceBytes(uint64_t{p.num_seqs} * p.num_q_heads, splits,
                                            p.head_dim);
}

KernelLaunch MakeDecodeAttentionKernel(const DecodeAttentionParams& p) {
  KernelLaunch launch;
  launch.name = kDecodeKernelName;
  if (absl::Status status = p.Validate(); !status.ok()) {
    launch.cpu = [status](const KernelLaunch::Resolver&) { return status; };
#if defined(KVTIER_HAVE_CUDA)
    launch.cuda = [status](void*) { return status; };
#endif
    return launch;
  }
  const uint32_t splits = ResolvedNumSplits(p);
  launch.cpu = [p, splits](const KernelLaunch::Resolver& resolve) {
    return RunDecodeAttentionCpu(p, splits, resolve);
  };
#if defined(KVTIER_HAVE_CUDA)
  attention_internal::DecodeAttentionLaunchArgs args;
  args.dtype = static_cast<int>(p.dtype);
  args.num_seqs = p.num_seqs;
  args.num_q_heads = p.num_q_heads;
  args.num_kv_heads = p.num_kv_heads;
  args.head_dim = p.head_dim;
  args.block_tokens = p.block_tokens;
  args.max_blocks_per_seq = p.max_blocks_per_seq;
  args.num_splits = splits;
  args.head_tiles = attention_internal::HeadTiles(p.num_q_heads / p.num_kv_heads);
  args.block_stride = p.block_stride;
  args.k_offset = p.k_offset;
  args.v_offset = p.v_offset;
  args.scale_log2 = ResolvedScale(p) * kLog2e;
  args.q = p.q.address();
  args.kv_pool = p.kv_pool.address();
  args.block_table = p.block_table.address();
  args.context_lens = p.context_lens.address();
  args.out = p.out.address();
  args.lse = p.lse.address();
  if (splits > 1) {
    const uint64_t rows = uint64_t{p.num_seqs} * p.num_q_heads;
    args.partial_out = p.workspace.address();
    args.partial_lse =
        p.workspace.address() + attention_internal::PartialOutBytes(rows, splits, p.head_dim);
  }
  launch.cuda = [args](void* cuda_stream) -> absl::Status {
    const char* failed_kernel = "";
    const int error =
        attention_internal::LaunchDecodeAttentionCuda(cuda_stream, args, &failed_kernel);
    if (error != 0) {
      return absl::InternalError(
          absl::StrFormat("%s kernel launch (%d seqs, %d splits): %s", failed_kernel, args.num_seqs,
                          args.num_splits, cudaGetErrorString(static_cast<cudaError_t>(error))));
    }
    return absl::OkStatus();
  };
#endif
  return launch;
}

// ------------------------------------------------------------------------------ merge

absl::Status MergeAttentionParams::Validate() const {
  if (rows == 0) return Invalid("MergeAttentionParams.rows must be positive");
  if (head_dim == 0) return Invalid("MergeAttentionParams.head_dim must be positive");
  const struct {
    const char* name;
    DevicePtr ptr;
  } pointers[] = {
      {"out_acc", out_acc}, {"lse_acc", lse_acc}, {"out_part", out_part}, {"lse_part", lse_part}};
  for (const auto& [name, ptr] : pointers) {
    if (ptr.is_null()) return Invalid("MergeAttentionParams.%s is null", name);
    if (ptr.address() % sizeof(float) != 0) {
      return Invalid("MergeAttentionParams.%s (0x%x) must be 4-byte aligned", name, ptr.address());
    }
  }
  return absl::OkStatus();
}

void MergeAttentionStatesHost(uint32_t rows, uint32_t head_dim, float* out_acc, float* lse_acc,
                              const float* out_part, const float* lse_part) {
  for (uint64_t r = 0; r < rows; ++r) {
    const MergeWeights w = ComputeMergeWeights(lse_acc[r], lse_part[r]);
    float* acc = out_acc + r * head_dim;
    const float* part = out_part + r * head_dim;
    for (uint32_t d = 0; d < head_dim; ++d) acc[d] = MergeValue(w, acc[d], part[d]);
    lse_acc[r] = w.lse;
  }
}

KernelLaunch MakeMergeAttentionKernel(const MergeAttentionParams& p) {
  KernelLaunch launch;
  launch.name = kMergeKernelName;
  if (absl::Status status = p.Validate(); !status.ok()) {
    launch.cpu = [status](const KernelLaunch::Resolver&) { return status; };
#if defined(KVTIER_HAVE_CUDA)
    launch.cuda = [status](void*) { return status; };
#endif
    return launch;
  }
  launch.cpu = [p](const KernelLaunch::Resolver& resolve) -> absl::Status {
    const uint64_t out_bytes = uint64_t{p.rows} * p.head_dim * sizeof(float);
    const uint64_t lse_bytes = uint64_t{p.rows} * sizeof(float);
    const struct {
      const char* name;
      DevicePtr ptr;
      uint64_t bytes;
    } ranges[] = {{"out_acc", p.out_acc, out_bytes},
                  {"lse_acc", p.lse_acc, lse_bytes},
                  {"out_part", p.out_part, out_bytes},
                  {"lse_part", p.lse_part, lse_bytes}};
    void* host[4];
    for (int i = 0; i < 4; ++i) {
      host[i] = resolve(ranges[i].ptr, ranges[i].bytes);
      if (host[i] == nullptr) {
        return Invalid("%s: device range [0x%x, +%d bytes) is not inside one live allocation",
                       ranges[i].name, ranges[i].ptr.address(), ranges[i].bytes);
      }
    }
    MergeAttentionStatesHost(p.rows, p.head_dim, static_cast<float*>(host[0]),
                             static_cast<float*>(host[1]), static_cast<const float*>(host[2]),
                             static_cast<const float*>(host[3]));
    return absl::OkStatus();
  };
#if defined(KVTIER_HAVE_CUDA)
  launch.cuda = [p](void* cuda_stream) -> absl::Status {
    const int error = attention_internal::LaunchMergeAttentionCuda(
        cuda_stream, p.rows, p.head_dim, p.out_acc.address(), p.lse_acc.address(),
        p.out_part.address(), p.lse_part.address());
    if (error != 0) {
      return absl::InternalError(
          absl::StrFormat("merge_attention kernel launch (%d rows): %s", p.rows,
                          cudaGetErrorString(static_cast<cudaError_t>(error))));
    }
    return absl::OkStatus();
  };
#endif
  return launch;
}

}  // namespace kvtier
