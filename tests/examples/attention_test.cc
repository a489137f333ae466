// tests/examples/attention_test.cc — decode attention's CPU reference (what the emulated
// device runs) against an independent double-precision model, the exact merge of attention
// states over chunks of a context, and parameter validation.
//
// The model is the textbook formula (all scores, their maximum, a full softmax, in double)
// over the same dtype-rounded inputs, with its own addressing of slots, layers and heads.
// Inputs are fresh random values every run (the seed is printed with every failure; set
// KVTIER_TEST_SEED to replay one), outputs are poisoned with NaN first so an element the
// kernel should have written and did not is caught.
//
// Tolerances (fp32 arithmetic on inputs that are exact in fp32, so the dtype does not
// matter): a score is a float dot product of head_dim terms, off by ~sqrt(head_dim) ulp of
// its magnitude; exp turns a score error δ into a relative weight error δ; the softmax sums
// and the V accumulation add rounding that grows with the number of blocks summed. Observed:
// ≲ 1e-6 relative out error (4096 tokens in one split: ~5e-7), lse error ≲ 1e-7 · |lse|.
// kOutTolerance bounds the per-row ‖out − ref‖₂ / ‖ref‖₂ at 1e-5; kLseTolerance bounds
// |lse − ref| / max(1, |ref|) at 2e-6 (lse ≈ log(tokens) + the largest score, whose own
// error scales with it).

#include "examples/llm/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/numeric.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"
#include "tests/device/test_util.h"

namespace kvtier {
namespace {

constexpr double kOutTolerance = 1e-5;
constexpr double kLseTolerance = 2e-6;
// A table entry past a sequence's blocks: the kernel must never read it (the CPU reference
// would report it as a slot outside the pool).
constexpr uint32_t kUnusedSlot = 0xfffffff0u;

uint64_t Seed() {
  static const uint64_t seed = [] {
    uint64_t value = 0;
    const char* env = std::getenv("KVTIER_TEST_SEED");
    if (env != nullptr && absl::SimpleAtoi(env, &value)) return value;
    std::random_device device;
    return (uint64_t{device()} << 32) | device();
  }();
  return seed;
}

std::string SeedNote() { return absl::StrFormat("KVTIER_TEST_SEED=%d", Seed()); }

// ---------------------------------------------------------------- inputs and the model

struct Shape {
  std::string name;
  DType dtype = DType::kFloat16;
  uint32_t num_q_heads = 8;
  uint32_t num_kv_heads = 2;
  uint32_t head_dim = 64;
  uint32_t block_tokens = 16;
  std::vector<uint32_t> contexts;
  uint32_t num_splits = 1;
  float scale = 0.0f;
  float q_amplitude = 1.0f;  // larger: more peaked softmax
};

// Host side of one problem: params (pointers left null), the bytes of q and of the pool.
// The pool holds slots of a two-layer block (kvtier's layout); the kernel reads layer 1.
struct Problem {
  DecodeAttentionParams p;
  uint32_t num_slots = 0;
  std::vector<uint8_t> q;
  std::vector<uint8_t> pool;
  std::vector<uint32_t> table;
  std::vector<uint32_t> contexts;
};

void AppendElement(DType dtype, float value, std::vector<uint8_t>& out) {
  uint8_t bytes[4];
  size_t n = 0;
  switch (dtype) {
    case DType::kFloat16: {
      const uint16_t bits = numeric::FloatToHalfBits(value);
      std::memcpy(bytes, &bits, 2);
      n = 2;
      break;
    }
    case DType::kBFloat16: {
      const uint16_t bits = numeric::FloatToBf16Bits(value);
      std::memcpy(bytes, &bits, 2);
      n = 2;
      break;
    }
    case DType::kFp8E4m3:  // one byte per element: never quantized, never here
    case DType::kFp8E5m2:
      std::abort();
    case DType::kFloat32:
      std::memcpy(bytes, &value, 4);
      n = 4;
      break;
  }
  out.insert(out.end(), bytes, bytes + n);
}

double ElementAt(DType dtype, const uint8_t* base, uint64_t index) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, base + 4 * index, 4);
    return f;
  }
  uint16_t bits;
  std::memcpy(&bits, base + 2 * index, 2);
  return dtype == DType::kFloat16 ? numeric::HalfBitsToFloat(bits) : numeric::Bf16BitsToFloat(bits);
}

// Random values in ±amplitude, never exactly zero as a whole (uniform over a wide range).
std::vector<uint8_t> RandomElements(DType dtype, uint64_t count, float amplitude,
                                    std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(-amplitude, amplitude);
  std::vector<uint8_t> out;
  out.reserve(count * DTypeSize(dtype));
  for (uint64_t i = 0; i < count; ++i) AppendElement(dtype, dist(rng), out);
  return out;
}

uint32_t BlocksFor(uint32_t context, uint32_t block_tokens) {
  return (context + block_tokens - 1) / block_tokens;
}

Problem MakeProblem(const Shape& shape, std::mt19937_64& rng) {
  Problem problem;
  DecodeAttentionParams& p = problem.p;
  const Geometry geometry{2, shape.num_kv_heads, shape.head_dim, shape.dtype, shape.block_tokens};
  p.dtype = shape.dtype;
  p.num_seqs = static_cast<uint32_t>(shape.contexts.size());
  p.num_q_heads = shape.num_q_heads;
  p.num_kv_heads = shape.num_kv_heads;
  p.head_dim = shape.head_dim;
  p.block_tokens = shape.block_tokens;
  p.block_stride = geometry.block_bytes();
  p.k_offset = geometry.Offset(1, KvPart::kKey);
  p.v_offset = geometry.Offset(1, KvPart::kValue);
  p.num_splits = shape.num_splits;
  p.scale = shape.scale;
  problem.contexts = shape.contexts;

  uint32_t max_blocks = 1;
  uint32_t total_blocks = 0;
  for (uint32_t context : shape.contexts) {
    max_blocks = std::max(max_blocks, BlocksFor(context, shape.block_tokens));
    total_blocks += BlocksFor(context, shape.block_tokens);
  }
  p.max_blocks_per_seq = max_blocks + 2;  // room the kernel must leave unread
  problem.num_slots = total_blocks + 3;   // and slots no sequence uses
  std::vector<uint32_t> slots(problem.num_slots);
  std::iota(slots.begin(), slots.end(), 0u);
  std::shuffle(slots.begin(), slots.end(), rng);
  problem.table.assign(uint64_t{p.num_seqs} * p.max_blocks_per_seq, kUnusedSlot);
  size_t next = 0;
  for (uint32_t seq = 0; seq < p.num_seqs; ++seq) {
    for (uint32_t b = 0; b < BlocksFor(shape.contexts[seq], shape.block_tokens); ++b) {
      problem.table[uint64_t{seq} * p.max_blocks_per_seq + b] = slots[next++];
    }
  }
  problem.q = RandomElements(shape.dtype, uint64_t{p.num_seqs} * p.num_q_heads * p.head_dim,
                             shape.q_amplitude, rng);
  problem.pool = RandomElements(
      shape.dtype, uint64_t{problem.num_slots} * p.block_stride / DTypeSize(shape.dtype), 1.0f,
      rng);
  return problem;
}

struct Reference {
  std::vector<double> out;  // [seq][q head][dim]
  std::vector<double> lse;  // [seq][q head]
};

// Full softmax in double, straight from the definition.
Reference ComputeReference(const Problem& problem) {
  const DecodeAttentionParams& p = problem.p;
  const uint32_t dim = p.head_dim;
  const uint32_t group = p.num_q_heads / p.num_kv_heads;
  const double scale = p.scale != 0.0f ? p.scale : 1.0 / std::sqrt(static_cast<double>(dim));
  const uint64_t elem = DTypeSize(p.dtype);
  Reference ref;
  ref.out.assign(uint64_t{p.num_seqs} * p.num_q_heads * dim, 0.0);
  ref.lse.assign(uint64_t{p.num_seqs} * p.num_q_heads, -INFINITY);
  for (uint32_t seq = 0; seq < p.num_seqs; ++seq) {
    const uint32_t context = problem.contexts[seq];
    if (context == 0) continue;
    // Element offsets of token t's K row for a KV head, V is at the same place + v - k.
    auto k_row = [&](uint32_t t, uint32_t kv_head) -> uint64_t {
      const uint32_t slot =
          problem.table[uint64_t{seq} * p.max_blocks_per_seq + t / p.block_tokens];
      const uint64_t byte =
          uint64_t{slot} * p.block_stride + p.k_offset +
          ((uint64_t{t % p.block_tokens} * p.num_kv_heads + kv_head) * dim) * elem;
      return byte / elem;
    };
    const uint64_t v_minus_k = (p.v_offset - p.k_offset) / elem;
    for (uint32_t h = 0; h < p.num_q_heads; ++h) {
      const uint32_t kv_head = h / group;
      const uint64_t q_row = (uint64_t{seq} * p.num_q_heads + h) * dim;
      std::vector<double> scores(context);
      for (uint32_t t = 0; t < context; ++t) {
        const uint64_t k = k_row(t, kv_head);
        double dot = 0;
        for (uint32_t d = 0; d < dim; ++d) {
          dot += ElementAt(p.dtype, problem.q.data(), q_row + d) *
                 ElementAt(p.dtype, problem.pool.data(), k + d);
        }
        scores[t] = scale * dot;
      }
      const double max = *std::max_element(scores.begin(), scores.end());
      double sum = 0;
      double* out = &ref.out[q_row];
      for (uint32_t t = 0; t < context; ++t) {
        const double w = std::exp(scores[t] - max);
        sum += w;
        const uint64_t v = k_row(t, kv_head) + v_minus_k;
        for (uint32_t d = 0; d < dim; ++d)
          out[d] += w * ElementAt(p.dtype, problem.pool.data(), v + d);
      }
      for (uint32_t d = 0; d < dim; ++d) out[d] /= sum;
      ref.lse[uint64_t{seq} * p.num_q_heads + h] = max + std::log(sum);
    }
  }
  return ref;
}

// -------------------------------------------------------------------- running a problem

struct Outputs {
  std::vector<float> out;
  std::vector<float> lse;
};

// Device memory freed on scope exit.
class DeviceBuffers {
 public:
  explicit DeviceBuffers(Device& device) : device_(device) {}
  ~DeviceBuffers() {
    for (DevicePtr ptr : ptrs_) (void)device_.Free(ptr);
  }
  absl::StatusOr<DevicePtr> Allocate(size_t bytes) {
    absl::StatusOr<DevicePtr> ptr = device_.Allocate(std::max<size_t>(bytes, 1));
    if (ptr.ok()) ptrs_.push_back(*ptr);
    return ptr;
  }

 private:
  Device& device_;
  std::vector<DevicePtr> ptrs_;
};

// Launch errors surface either from Launch (CUDA) or from the next Synchronize (emulated).
absl::Status LaunchAndWait(Stream& stream, KernelLaunch kernel) {
  absl::Status status = stream.Launch(std::move(kernel));
  absl::Status sync = stream.Synchronize();
  return status.ok() ? sync : status;
}

// Uploads the problem, poisons the outputs, runs the kernel, downloads the outputs.
// `edit` may change the params after the device pointers are filled in (for error cases).
template <typename Edit>
absl::Status RunProblem(Device& device, const Problem& problem, Outputs* outputs, Edit edit) {
  DeviceBuffers buffers(device);
  DecodeAttentionParams p = problem.p;
  const uint64_t rows = uint64_t{p.num_seqs} * p.num_q_heads;
  absl::StatusOr<std::unique_ptr<Stream>> stream = device.CreateStream();
  if (!stream.ok()) return stream.status();
  auto upload = [&](const void* data, size_t bytes, DevicePtr* ptr) -> absl::Status {
    absl::StatusOr<DevicePtr> allocated = buffers.Allocate(bytes);
    if (!allocated.ok()) return allocated.status();
    *ptr = *allocated;
    return (*stream)->CopyToDevice(*ptr, data, bytes);
  };
  outputs->out.assign(rows * p.head_dim, NAN);
  outputs->lse.assign(rows, NAN);
  std::vector<uint8_t> workspace_poison(DecodeAttentionWorkspaceBytes(p), 0xff);
  for (absl::Status status :
       {upload(problem.q.data(), problem.q.size(), &p.q),
        upload(problem.pool.data(), problem.pool.size(), &p.kv_pool),
        upload(problem.table.data(), problem.table.size() * 4, &p.block_table),
        upload(problem.contexts.data(), problem.contexts.size() * 4, &p.context_lens),
        upload(outputs->out.data(), outputs->out.size() * 4, &p.out),
        upload(outputs->lse.data(), outputs->lse.size() * 4, &p.lse)}) {
    if (!status.ok()) return status;
  }
  if (!workspace_poison.empty()) {
    if (absl::Status status =
            upload(workspace_poison.data(), workspace_poison.size(), &p.workspace);
        !status.ok()) {
      return status;
    }
  }
  edit(p);
  if (absl::Status status = LaunchAndWait(**stream, MakeDecodeAttentionKernel(p)); !status.ok()) {
    return status;
  }
  if (absl::Status status =
          (*stream)->CopyToHost(outputs->out.data(), p.out, outputs->out.size() * 4);
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          (*stream)->CopyToHost(outputs->lse.data(), p.lse, outputs->lse.size() * 4);
      !status.ok()) {
    return status;
  }
  return (*stream)->Synchronize();
}

absl::Status RunProblem(Device& device, const Problem& problem, Outputs* outputs) {
  return RunProblem(device, problem, outputs, [](DecodeAttentionParams&) {});
}

// Largest errors seen, reported after each test so the tolerances can be judged.
struct ErrorStats {
  double out = 0;
  double lse = 0;
};

// Compares every row; an unwritten element (still NaN) or an empty context with anything but
// (0, -inf) fails.
void ExpectMatches(const Problem& problem, const Outputs& got, const Reference& ref,
                   ErrorStats* stats, double out_tolerance = kOutTolerance,
                   double lse_tolerance = kLseTolerance) {
  const DecodeAttentionParams& p = problem.p;
  int failures = 0;
  for (uint32_t seq = 0; seq < p.num_seqs; ++seq) {
    for (uint32_t h = 0; h < p.num_q_heads; ++h) {
      const uint64_t row = uint64_t{seq} * p.num_q_heads + h;
      const float* out = &got.out[row * p.head_dim];
      const double* want = &ref.out[row * p.head_dim];
      double diff2 = 0;
      double ref2 = 0;
      bool written = true;
      bool zero = true;
      for (uint32_t d = 0; d < p.head_dim; ++d) {
        written = written && !std::isnan(out[d]);
        zero = zero && out[d] == 0.0f;
        diff2 += (out[d] - want[d]) * (out[d] - want[d]);
        ref2 += want[d] * want[d];
      }
      const std::string where =
          absl::StrFormat("seq %d (context %d) q head %d", seq, problem.contexts[seq], h);
      if (failures > 10) return;
      if (!written) {
        ++failures;
        ADD_FAILURE() << where << ": out not written (NaN poison left)";
        continue;
      }
      if (problem.contexts[seq] == 0) {
        if (!zero || !(std::isinf(got.lse[row]) && got.lse[row] < 0)) {
          ++failures;
          ADD_FAILURE() << where << ": empty context must give out 0 and lse -inf, got lse "
                        << got.lse[row];
        }
        continue;
      }
      const double rel = std::sqrt(diff2 / ref2);
      const double lse_err =
          std::abs(got.lse[row] - ref.lse[row]) / std::max(1.0, std::abs(ref.lse[row]));
      stats->out = std::max(stats->out, rel);
      stats->lse = std::max(stats->lse, lse_err);
      if (!(rel <= out_tolerance) || !(lse_err <= lse_tolerance)) {
        ++failures;
        ADD_FAILURE() << where << ": relative out error " << rel << " (tolerance " << out_tolerance
                      << "), lse " << got.lse[row] << " vs " << ref.lse[row] << " (relative error "
                      << lse_err << ", tolerance " << lse_tolerance << ")";
      }
    }
  }
}

class AttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DeviceOptions options;
    options.choice = DeviceChoice::kEmulated;
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
  }

  // Runs `shape` and checks it against the model.
  void Check(const Shape& shape) {
    SCOPED_TRACE(shape.name);
    Problem problem = MakeProblem(shape, rng_);
    Outputs got;
    KVTIER_ASSERT_OK(RunProblem(*device_, problem, &got));
    ErrorStats stats;
    ExpectMatches(problem, got, ComputeReference(problem), &stats);
    std::printf("  %-44s max relative out error %.2e, lse %.2e\n", shape.name.c_str(), stats.out,
                stats.lse);
  }

  std::unique_ptr<Device> device_;
  std::mt19937_64 rng_{Seed()};
  ::testing::ScopedTrace seed_trace_{__FILE__, __LINE__, SeedNote()};
};

// ------------------------------------------------------------------------------ results

TEST_F(AttentionTest, MultiHeadAttentionEveryDType) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    Check({.name = absl::StrFormat("MHA %s d64", DTypeName(dtype)),
           .dtype = dtype,
           .num_q_heads = 4,
           .num_kv_heads = 4,
           .head_dim = 64,
           .block_tokens = 16,
           .contexts = {37, 100, 16}});
  }
}

TEST_F(AttentionTest, GroupedQueryAttentionRatios4And8) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    Check({.name = absl::StrFormat("GQA 4 %s d128", DTypeName(dtype)),
           .dtype = dtype,
           .num_q_heads = 16,
           .num_kv_heads = 4,
           .head_dim = 128,
           .block_tokens = 16,
           .contexts = {257, 1, 64},
           .num_splits = 3});
    Check({.name = absl::StrFormat("GQA 8 %s d128", DTypeName(dtype)),
           .dtype = dtype,
           .num_q_heads = 16,
           .num_kv_heads = 2,
           .head_dim = 128,
           .block_tokens = 32,
           .contexts = {500, 33},
           .num_splits = 0});
  }
  Check({.name = "GQA 8 fp32 d64",
         .dtype = DType::kFloat32,
         .num_q_heads = 32,
         .num_kv_heads = 4,
         .head_dim = 64,
         .block_tokens = 16,
         .contexts = {190}});
}

TEST_F(AttentionTest, MultiQueryAttention) {
  Check({.name = "MQA 8 heads fp16 d128",
         .dtype = DType::kFloat16,
         .num_q_heads = 8,
         .num_kv_heads = 1,
         .head_dim = 128,
         .block_tokens = 16,
         .contexts = {77, 300}});
  // A group larger than the GPU kernel's head tile (8).
  Check({.name = "MQA 32 heads bf16 d64",
         .dtype = DType::kBFloat16,
         .num_q_heads = 32,
         .num_kv_heads = 1,
         .head_dim = 64,
         .block_tokens = 16,
         .contexts = {129},
         .num_splits = 2});
}

TEST_F(AttentionTest, ContextEdgesOneTokenZeroTokensPartialBlocks) {
  Check({.name = "contexts 0 1 15 16 17 fp16",
         .dtype = DType::kFloat16,
         .num_q_heads = 8,
         .num_kv_heads = 2,
         .head_dim = 64,
         .block_tokens = 16,
         .contexts = {0, 1, 15, 16, 17},
         .num_splits = 2});
  Check({.name = "all contexts empty, splits 4",
         .dtype = DType::kBFloat16,
         .num_q_heads = 4,
         .num_kv_heads = 2,
         .head_dim = 64,
         .block_tokens = 16,
         .contexts = {0, 0},
         .num_splits = 4});
  Check({.name = "block_tokens 1",
         .dtype = DType::kFloat16,
         .num_q_heads = 4,
         .num_kv_heads = 1,
         .head_dim = 64,
         .block_tokens = 1,
         .contexts = {1, 9, 40},
         .num_splits = 3});
  Check({.name = "block_tokens 7",
         .dtype = DType::kFloat32,
         .num_q_heads = 6,
         .num_kv_heads = 3,
         .head_dim = 64,
         .block_tokens = 7,
         .contexts = {50, 6}});
}

TEST_F(AttentionTest, SplitCountsOneThreeAutoAndMoreThanBlocks) {
  for (uint32_t splits : {1u, 3u, 0u, 7u, 256u}) {
    // 40 tokens = 3 blocks: 7 and 256 splits leave most splits empty.
    Check({.name = absl::StrFormat("splits %d, 3 blocks", splits),
           .dtype = DType::kFloat16,
           .num_q_heads = 8,
           .num_kv_heads = 2,
           .head_dim = 128,
           .block_tokens = 16,
           .contexts = {40, 3, 0},
           .num_splits = splits});
  }
}

TEST_F(AttentionTest, HeadDimsOtherThan64And128) {
  for (uint32_t dim : {8u, 96u, 136u, 256u}) {
    Check({.name = absl::StrFormat("head_dim %d", dim),
           .dtype = DType::kBFloat16,
           .num_q_heads = 4,
           .num_kv_heads = 2,
           .head_dim = dim,
           .block_tokens = 16,
           .contexts = {70, 5},
           .num_splits = 2});
  }
}

TEST_F(AttentionTest, PeakedSoftmaxAndExplicitScale) {
  // Scores of magnitude ~30: exp would overflow float without the running maximum.
  Check({.name = "peaked, q ×16",
         .dtype = DType::kFloat16,
         .num_q_heads = 8,
         .num_kv_heads = 2,
         .head_dim = 64,
         .block_tokens = 16,
         .contexts = {300, 31},
         .num_splits = 3,
         .q_amplitude = 16.0f});
  Check({.name = "scale 0.5",
         .dtype = DType::kFloat32,
         .num_q_heads = 4,
         .num_kv_heads = 4,
         .head_dim = 64,
         .block_tokens = 16,
         .contexts = {100},
         .scale = 0.5f});
}

TEST_F(AttentionTest, LongContextRunsOnSeveralThreads) {
  // 4096 tokens × 8 KV heads: enough work for the reference's worker threads.
  Check({.name = "4096 tokens, Llama-3-8B heads, auto splits",
         .dtype = DType::kFloat16,
         .num_q_heads = 32,
         .num_kv_heads = 8,
         .head_dim = 128,
         .block_tokens = 16,
         .contexts = {4096, 1000},
         .num_splits = 0});
  Check({.name = "4096 tokens, one split",
         .dtype = DType::kBFloat16,
         .num_q_heads = 8,
         .num_kv_heads = 8,
         .head_dim = 128,
         .block_tokens = 16,
         .contexts = {4096},
         .num_splits = 1});
}

// The property long-context serving relies on: attention over blocks [0, c) and over blocks
// [c, n) of a context, merged, is attention over the whole context.
TEST_F(AttentionTest, ChunksMergeToTheWhole) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    const Shape shape{.name = absl::StrFormat("chunks %s", DTypeName(dtype)),
                      .dtype = dtype,
                      .num_q_heads = 16,
                      .num_kv_heads = 4,
                      .head_dim = 128,
                      .block_tokens = 16,
                      .contexts = {1000, 40, 17, 0, 64},
                      .num_splits = 0};
    SCOPED_TRACE(shape.name);
    const Problem whole = MakeProblem(shape, rng_);
    const DecodeAttentionParams& p = whole.p;
    // Cut points in blocks: the middle, a chunk that is empty first, one empty second, ...
    const std::vector<uint32_t> cut = {29, 0, 2, 0, 3};
    Problem first = whole;
    Problem second = whole;
    std::fill(first.table.begin(), first.table.end(), kUnusedSlot);
    std::fill(second.table.begin(), second.table.end(), kUnusedSlot);
    for (uint32_t seq = 0; seq < p.num_seqs; ++seq) {
      const uint32_t blocks = BlocksFor(whole.contexts[seq], p.block_tokens);
      const uint32_t c = std::min(cut[seq], blocks);
      const uint64_t row = uint64_t{seq} * p.max_blocks_per_seq;
      for (uint32_t b = 0; b < blocks; ++b) {
        if (b < c) {
          first.table[row + b] = whole.table[row + b];
        } else {
          second.table[row + b - c] = whole.table[row + b];
        }
      }
      first.contexts[seq] = std::min(whole.contexts[seq], c * p.block_tokens);
      second.contexts[seq] = whole.contexts[seq] - first.contexts[seq];
    }
    Outputs got_whole, got_first, got_second;
    KVTIER_ASSERT_OK(RunProblem(*device_, whole, &got_whole));
    KVTIER_ASSERT_OK(RunProblem(*device_, first, &got_first));
    KVTIER_ASSERT_OK(RunProblem(*device_, second, &got_second));

    // Merge on the device: the kernel, not just the host function.
    const uint32_t rows = p.num_seqs * p.num_q_heads;
    DeviceBuffers buffers(*device_);
    KVTIER_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Stream> stream, device_->CreateStream());
    MergeAttentionParams merge{.rows = rows, .head_dim = p.head_dim};
    DevicePtr* targets[] = {&merge.out_acc, &merge.lse_acc, &merge.out_part, &merge.lse_part};
    const std::vector<float>* sources[] = {&got_first.out, &got_first.lse, &got_second.out,
                                           &got_second.lse};
    for (int i = 0; i < 4; ++i) {
      KVTIER_ASSERT_OK_AND_ASSIGN(*targets[i], buffers.Allocate(sources[i]->size() * 4));
      KVTIER_ASSERT_OK(
          stream->CopyToDevice(*targets[i], sources[i]->data(), sources[i]->size() * 4));
    }
    KVTIER_ASSERT_OK(LaunchAndWait(*stream, MakeMergeAttentionKernel(merge)));
    Outputs merged{std::vector<float>(got_first.out.size()), std::vector<float>(rows)};
    KVTIER_ASSERT_OK(stream->CopyToHost(merged.out.data(), merge.out_acc, merged.out.size() * 4));
    KVTIER_ASSERT_OK(stream->CopyToHost(merged.lse.data(), merge.lse_acc, merged.lse.size() * 4));
    KVTIER_ASSERT_OK(stream->Synchronize());

    // Merged vs whole (both float), and both vs the model.
    Reference as_reference;
    as_reference.out.assign(got_whole.out.begin(), got_whole.out.end());
    as_reference.lse.assign(got_whole.lse.begin(), got_whole.lse.end());
    ErrorStats vs_whole, vs_model, whole_vs_model;
    ExpectMatches(whole, merged, as_reference, &vs_whole);
    const Reference model = ComputeReference(whole);
    ExpectMatches(whole, merged, model, &vs_model);
    ExpectMatches(whole, got_whole, model, &whole_vs_model);
    std::printf("  %-44s merged vs whole: out %.2e lse %.2e; merged vs model: out %.2e\n",
                shape.name.c_str(), vs_whole.out, vs_whole.lse, vs_model.out);
  }
}

TEST(MergeAttentionStatesHost, MatchesTheFormulaAndIgnoresEmptyStates) {
  std::mt19937_64 rng(Seed());
  SCOPED_TRACE(SeedNote());
  constexpr uint32_t kDim = 16;
  const float neg_inf = -INFINITY;
  // (lse_acc, lse_part): ordinary, far apart (no overflow), each side empty, both empty.
  const std::vector<std::pair<float, float>> lses = {
      {1.5f, -0.25f},  {-3.0f, 7.0f},      {80.0f, -90.0f}, {neg_inf, 2.0f},
      {2.0f, neg_inf}, {neg_inf, neg_inf}, {0.0f, 0.0f}};
  const uint32_t rows = static_cast<uint32_t>(lses.size());
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> out_acc(rows * kDim), out_part(rows * kDim), lse_acc(rows), lse_part(rows);
  for (float& x : out_acc) x = dist(rng);
  for (float& x : out_part) x = dist(rng);
  for (uint32_t r = 0; r < rows; ++r) {
    lse_acc[r] = lses[r].first;
    lse_part[r] = lses[r].second;
    // An empty state's output is 0 by contract; NaN here checks that it is never even read.
    if (std::isinf(lse_acc[r])) std::fill_n(&out_acc[r * kDim], kDim, NAN);
    if (std::isinf(lse_part[r])) std::fill_n(&out_part[r * kDim], kDim, NAN);
  }
  const std::vector<float> acc_before = out_acc;
  MergeAttentionStatesHost(rows, kDim, out_acc.data(), lse_acc.data(), out_part.data(),
                           lse_part.data());
  for (uint32_t r = 0; r < rows; ++r) {
    SCOPED_TRACE(absl::StrFormat("lse_acc %g lse_part %g", lses[r].first, lses[r].second));
    const double a = lses[r].first;
    const double b = lses[r].second;
    if (std::isinf(a) && std::isinf(b)) {
      EXPECT_TRUE(std::isinf(lse_acc[r]) && lse_acc[r] < 0);
      continue;  // out_acc stays what it was (0 by contract)
    }
    const double m = std::max(a, b);
    const double lse = m + std::log(std::exp(a - m) + std::exp(b - m));
    EXPECT_NEAR(lse_acc[r], lse, 1e-6 * std::max(1.0, std::abs(lse)));
    for (uint32_t d = 0; d < kDim; ++d) {
      const double want = (std::isinf(a) ? 0.0 : acc_before[r * kDim + d] * std::exp(a - lse)) +
                          (std::isinf(b) ? 0.0 : out_part[r * kDim + d] * std::exp(b - lse));
      EXPECT_NEAR(out_acc[r * kDim + d], want, 1e-6) << "dim " << d;
    }
  }
}

// ------------------------------------------------------------------------------ errors

class AttentionErrorTest : public AttentionTest {
 protected:
  // A small valid problem whose params an error case edits.
  Problem Base() {
    return MakeProblem({.name = "base",
                        .dtype = DType::kFloat16,
                        .num_q_heads = 8,
                        .num_kv_heads = 2,
                        .head_dim = 64,
                        .block_tokens = 16,
                        .contexts = {40, 20},
                        .num_splits = 2},
                       rng_);
  }

  // Both Validate() and a launch report InvalidArgument mentioning `expected`.
  template <typename Edit>
  void ExpectInvalid(const std::string& what, const std::string& expected, Edit edit) {
    SCOPED_TRACE(what);
    Problem problem = Base();
    Outputs outputs;
    DecodeAttentionParams validated;
    const absl::Status status =
        RunProblem(*device_, problem, &outputs, [&](DecodeAttentionParams& p) {
          edit(p);
          validated = p;
        });
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), expected)) << status;
    const absl::Status direct = validated.Validate();
    EXPECT_EQ(direct.code(), absl::StatusCode::kInvalidArgument) << direct;
    EXPECT_TRUE(absl::StrContains(direct.message(), expected)) << direct;
  }

  // A launch (not Validate, which cannot see device memory) reports InvalidArgument
  // mentioning `expected`, and writes nothing.
  void ExpectLaunchInvalid(const std::string& what, const std::string& expected,
                           const Problem& problem) {
    SCOPED_TRACE(what);
    Outputs outputs;
    DecodeAttentionParams validated;
    const absl::Status status =
        RunProblem(*device_, problem, &outputs, [&](DecodeAttentionParams& p) { validated = p; });
    EXPECT_TRUE(validated.Validate().ok()) << validated.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), expected)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "decode_attention")) << status;
  }
};

TEST_F(AttentionErrorTest, BadParamsNameTheField) {
  ExpectInvalid("q heads not a multiple of kv heads", "num_q_heads",
                [](DecodeAttentionParams& p) { p.num_q_heads = 7; });
  ExpectInvalid("no kv heads", "num_kv_heads",
                [](DecodeAttentionParams& p) { p.num_kv_heads = 0; });
  ExpectInvalid("head_dim 0", "head_dim", [](DecodeAttentionParams& p) { p.head_dim = 0; });
  ExpectInvalid("head_dim 60", "head_dim", [](DecodeAttentionParams& p) { p.head_dim = 60; });
  ExpectInvalid("head_dim 264", "head_dim", [](DecodeAttentionParams& p) { p.head_dim = 264; });
  ExpectInvalid("dtype 9", "dtype",
                [](DecodeAttentionParams& p) { p.dtype = static_cast<DType>(9); });
  ExpectInvalid("no sequences", "num_seqs", [](DecodeAttentionParams& p) { p.num_seqs = 0; });
  ExpectInvalid("block_tokens 0", "block_tokens",
                [](DecodeAttentionParams& p) { p.block_tokens = 0; });
  ExpectInvalid("max_blocks_per_seq 0", "max_blocks_per_seq",
                [](DecodeAttentionParams& p) { p.max_blocks_per_seq = 0; });
  ExpectInvalid("too many splits", "num_splits",
                [](DecodeAttentionParams& p) { p.num_splits = 257; });
  ExpectInvalid("NaN scale", "scale", [](DecodeAttentionParams& p) { p.scale = NAN; });
  ExpectInvalid("null q", "q is null", [](DecodeAttentionParams& p) { p.q = DevicePtr(); });
  ExpectInvalid("null kv_pool", "kv_pool",
                [](DecodeAttentionParams& p) { p.kv_pool = DevicePtr(); });
  ExpectInvalid("null block_table", "block_table",
                [](DecodeAttentionParams& p) { p.block_table = DevicePtr(); });
  ExpectInvalid("null context_lens", "context_lens",
                [](DecodeAttentionParams& p) { p.context_lens = DevicePtr(); });
  ExpectInvalid("null out", "out is null", [](DecodeAttentionParams& p) { p.out = DevicePtr(); });
  ExpectInvalid("null lse", "lse is null", [](DecodeAttentionParams& p) { p.lse = DevicePtr(); });
  ExpectInvalid("null workspace with 2 splits", "workspace",
                [](DecodeAttentionParams& p) { p.workspace = DevicePtr(); });
  ExpectInvalid("block_stride below the V extent", "block_stride",
                [](DecodeAttentionParams& p) { p.block_stride = p.v_offset + 16; });
  ExpectInvalid("block_stride not a multiple of 16", "block_stride",
                [](DecodeAttentionParams& p) { p.block_stride += 8; });
  ExpectInvalid("kv_pool misaligned", "kv_pool",
                [](DecodeAttentionParams& p) { p.kv_pool = p.kv_pool + 8; });
  ExpectInvalid("k_offset misaligned", "k_offset",
                [](DecodeAttentionParams& p) { p.k_offset += 2; });
}

TEST_F(AttentionErrorTest, SlotOutsideThePoolIsAnErrorNotACrash) {
  Problem problem = Base();
  problem.table[1] = problem.num_slots;  // one past the last slot
  ExpectLaunchInvalid("slot = num_slots", "block_table[0][1]", problem);
  problem.table[1] = kUnusedSlot;
  ExpectLaunchInvalid("slot far outside", "block_table[0][1]", problem);
}

TEST_F(AttentionErrorTest, ContextLongerThanTheTableRowIsAnError) {
  Problem problem = Base();
  problem.contexts[1] = problem.p.max_blocks_per_seq * problem.p.block_tokens + 1;
  ExpectLaunchInvalid("context past the row", "context_lens[1]", problem);
}

TEST_F(AttentionErrorTest, WorkspaceTooSmallIsAnError) {
  Problem problem = Base();
  Outputs outputs;
  DeviceBuffers buffers(*device_);
  KVTIER_ASSERT_OK_AND_ASSIGN(DevicePtr small, buffers.Allocate(64));
  const absl::Status status = RunProblem(*device_, problem, &outputs,
                                         [&](DecodeAttentionParams& p) { p.workspace = small; });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "workspace")) << status;
}

TEST(MergeAttentionParams, BadParamsNameTheField) {
  MergeAttentionParams p{.rows = 4, .head_dim = 8};
  p.out_acc = DevicePtr::FromAddress(0x1000);
  p.lse_acc = DevicePtr::FromAddress(0x2000);
  p.out_part = DevicePtr::FromAddress(0x3000);
  p.lse_part = DevicePtr::FromAddress(0x4000);
  KVTIER_EXPECT_OK(p.Validate());
  auto expect = [](MergeAttentionParams bad, const std::string& field) {
    const absl::Status status = bad.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), field)) << status;
    KernelLaunch kernel = MakeMergeAttentionKernel(bad);
    const absl::Status launched = kernel.cpu([](DevicePtr, size_t) -> void* { return nullptr; });
    EXPECT_EQ(launched, status);
  };
  MergeAttentionParams bad = p;
  bad.rows = 0;
  expect(bad, "rows");
  bad = p;
  bad.head_dim = 0;
  expect(bad, "head_dim");
  bad = p;
  bad.lse_part = DevicePtr();
  expect(bad, "lse_part");
  bad = p;
  bad.out_acc = p.out_acc + 2;
  expect(bad, "out_acc");
}

TEST(DecodeAttentionKernel, HasACpuReferenceAndACudaPartOnlyWithCuda) {
  KernelLaunch kernel = MakeDecodeAttentionKernel(DecodeAttentionParams{});
  EXPECT_STREQ(kernel.name, "decode_attention");
  EXPECT_TRUE(static_cast<bool>(kernel.cpu));
#if defined(KVTIER_HAVE_CUDA)
  EXPECT_TRUE(static_cast<bool>(kernel.cuda));
#else
  EXPECT_FALSE(static_cast<bool>(kernel.cuda));
#endif
}

TEST(DecodeAttentionWorkspaceBytes, ZeroForOneSplitAndEnoughForPartials) {
  DecodeAttentionParams p;
  p.num_seqs = 3;
  p.num_q_heads = 8;
  p.num_kv_heads = 2;
  p.head_dim = 64;
  p.max_blocks_per_seq = 100;
  p.num_splits = 1;
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(p), 0u);
  p.num_splits = 5;
  // Partial out (3 × 8 rows × 5 splits × 64 floats) and partial lse (3 × 8 × 5 floats).
  EXPECT_GE(DecodeAttentionWorkspaceBytes(p), (3u * 8 * 5 * 64 + 3 * 8 * 5) * 4);
  p.num_splits = 0;  // automatic: at most one split per block, at most 256
  p.max_blocks_per_seq = 1;
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(p), 0u);
  p.max_blocks_per_seq = 100000;
  EXPECT_LE(DecodeAttentionWorkspaceBytes(p), (3u * 8 * 256 * 65) * 4 + 16);
}

}  // namespace
}  // namespace kvtier
