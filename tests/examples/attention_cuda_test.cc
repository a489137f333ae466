// tests/examples/attention_cuda_test.cc — the CUDA decode-attention and merge kernels against
// the CPU reference (run on an emulated device) and an independent double-precision model.
// Skips, saying why, on machines without a usable GPU.
//
// Cases: every dtype, MHA / GQA 4 / GQA 8 / MQA (a group larger than the kernel's head tile),
// head_dim 64, 128, 256 and a generic 96, contexts from 0 and 1 token to 64K, explicit split
// counts (including more splits than blocks) and the automatic choice, several sequences of
// different lengths over shuffled slots, table entries past a sequence's blocks that must not
// be read. Inputs are fresh random values every run (KVTIER_TEST_SEED replays one), outputs
// are poisoned with NaN first.
//
// Tolerances: the GPU and the CPU both compute in float from exact inputs, in different
// orders (and the GPU's exp2f/log2f are within 2 ulp), so each is within ~1e-6 relative of the
// exact result (attention_test.cc measures the CPU side); the comparison allows 2e-5 relative
// per row for out and 4e-6 · max(1, |lse|) for lse: far below any indexing or merging bug,
// which shows as O(1) errors.

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
#include "examples/llm/attention.h"
#include "device/cuda_device.h"
#include "kernels/numeric.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"
#include "tests/device/test_util.h"

namespace kvtier {
namespace {

constexpr double kOutTolerance = 2e-5;
constexpr double kLseTolerance = 4e-6;
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

struct Shape {
  std::string name;
  DType dtype = DType::kFloat16;
  uint32_t num_q_heads = 8;
  uint32_t num_kv_heads = 2;
  uint32_t head_dim = 128;
  uint32_t block_tokens = 16;
  std::vector<uint32_t> contexts;
  uint32_t num_splits = 0;
  bool model = true;  // also compare with the double model (slow beyond ~100K token-heads)
};

struct Problem {
  DecodeAttentionParams p;
  uint32_t num_slots = 0;
  std::vector<uint8_t> q;
  std::vector<uint8_t> pool;
  std::vector<uint32_t> table;
  std::vector<uint32_t> contexts;
};

struct Outputs {
  std::vector<float> out;
  std::vector<float> lse;
};

uint32_t BlocksFor(uint32_t context, uint32_t block_tokens) {
  return (context + block_tokens - 1) / block_tokens;
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

std::vector<uint8_t> RandomElements(DType dtype, uint64_t count, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<uint8_t> out(count * DTypeSize(dtype));
  for (uint64_t i = 0; i < count; ++i) {
    const float x = dist(rng);
    if (dtype == DType::kFloat32) {
      std::memcpy(&out[4 * i], &x, 4);
    } else {
      const uint16_t bits =
          dtype == DType::kFloat16 ? numeric::FloatToHalfBits(x) : numeric::FloatToBf16Bits(x);
      std::memcpy(&out[2 * i], &bits, 2);
    }
  }
  return out;
}

// Slots of a two-layer kvtier block, layer 1 read; slots shuffled; unused table entries are
// kUnusedSlot.
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
  problem.contexts = shape.contexts;
  uint32_t max_blocks = 1;
  uint32_t total_blocks = 0;
  for (uint32_t context : shape.contexts) {
    max_blocks = std::max(max_blocks, BlocksFor(context, shape.block_tokens));
    total_blocks += BlocksFor(context, shape.block_tokens);
  }
  p.max_blocks_per_seq = max_blocks + 2;
  problem.num_slots = total_blocks + 3;
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
  problem.q = RandomElements(shape.dtype, uint64_t{p.num_seqs} * p.num_q_heads * p.head_dim, rng);
  problem.pool = RandomElements(
      shape.dtype, uint64_t{problem.num_slots} * p.block_stride / DTypeSize(shape.dtype), rng);
  return problem;
}

// The textbook formula in double: all scores, their maximum, a full softmax.
Outputs Model(const Problem& problem, std::vector<double>* out_double) {
  const DecodeAttentionParams& p = problem.p;
  const uint32_t dim = p.head_dim;
  const uint32_t group = p.num_q_heads / p.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const uint64_t elem = DTypeSize(p.dtype);
  out_double->assign(uint64_t{p.num_seqs} * p.num_q_heads * dim, 0.0);
  Outputs lse_only;
  lse_only.lse.assign(uint64_t{p.num_seqs} * p.num_q_heads, -INFINITY);
  for (uint32_t seq = 0; seq < p.num_seqs; ++seq) {
    const uint32_t context = problem.contexts[seq];
    if (context == 0) continue;
    auto k_row = [&](uint32_t t, uint32_t kv_head) -> uint64_t {
      const uint32_t slot =
          problem.table[uint64_t{seq} * p.max_blocks_per_seq + t / p.block_tokens];
      return (uint64_t{slot} * p.block_stride + p.k_offset +
              ((uint64_t{t % p.block_tokens} * p.num_kv_heads + kv_head) * dim) * elem) /
             elem;
    };
    const uint64_t v_minus_k = (p.v_offset - p.k_offset) / elem;
    for (uint32_t h = 0; h < p.num_q_heads; ++h) {
      const uint64_t q_row = (uint64_t{seq} * p.num_q_heads + h) * dim;
      std::vector<double> q(dim);
      for (uint32_t d = 0; d < dim; ++d) q[d] = ElementAt(p.dtype, problem.q.data(), q_row + d);
      std::vector<double> scores(context);
      for (uint32_t t = 0; t < context; ++t) {
        const uint64_t k = k_row(t, h / group);
        double dot = 0;
        for (uint32_t d = 0; d < dim; ++d)
          dot += q[d] * ElementAt(p.dtype, problem.pool.data(), k + d);
        scores[t] = scale * dot;
      }
      const double max = *std::max_element(scores.begin(), scores.end());
      double sum = 0;
      double* out = &(*out_double)[q_row];
      for (uint32_t t = 0; t < context; ++t) {
        const double w = std::exp(scores[t] - max);
        sum += w;
        const uint64_t v = k_row(t, h / group) + v_minus_k;
        for (uint32_t d = 0; d < dim; ++d)
          out[d] += w * ElementAt(p.dtype, problem.pool.data(), v + d);
      }
      for (uint32_t d = 0; d < dim; ++d) out[d] /= sum;
      lse_only.lse[uint64_t{seq} * p.num_q_heads + h] = static_cast<float>(max + std::log(sum));
    }
  }
  return lse_only;
}

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

absl::Status LaunchAndWait(Stream& stream, KernelLaunch kernel) {
  absl::Status status = stream.Launch(std::move(kernel));
  absl::Status sync = stream.Synchronize();
  return status.ok() ? sync : status;
}

// Uploads, poisons the outputs (and the workspace), runs `launches` times (a rerun must give
// the same result: the workspace is scratch), downloads.
absl::Status RunProblem(Device& device, const Problem& problem, Outputs* outputs,
                        int launches = 1) {
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
  const std::vector<uint8_t> workspace_poison(DecodeAttentionWorkspaceBytes(p), 0xff);
  for (absl::Status status :
       {upload(problem.q.data(), problem.q.size(), &p.q),
        upload(problem.pool.data(), problem.pool.size(), &p.kv_pool),
        upload(problem.table.data(), problem.table.size() * 4, &p.block_table),
        upload(problem.contexts.data(), problem.contexts.size() * 4, &p.context_lens),
        upload(outputs->out.data(), outputs->out.size() * 4, &p.out),
        upload(outputs->lse.data(), outputs->lse.size() * 4, &p.lse),
        workspace_poison.empty()
            ? absl::OkStatus()
            : upload(workspace_poison.data(), workspace_poison.size(), &p.workspace)}) {
    if (!status.ok()) return status;
  }
  for (int i = 0; i < launches; ++i) {
    if (absl::Status status = LaunchAndWait(**stream, MakeDecodeAttentionKernel(p)); !status.ok()) {
      return status;
    }
  }
  for (absl::Status status :
       {(*stream)->CopyToHost(outputs->out.data(), p.out, outputs->out.size() * 4),
        (*stream)->CopyToHost(outputs->lse.data(), p.lse, outputs->lse.size() * 4)}) {
    if (!status.ok()) return status;
  }
  return (*stream)->Synchronize();
}

// Row-by-row comparison of `got` with `want` (out as doubles when given, else floats).
void ExpectClose(const Problem& problem, const char* what, const Outputs& got,
                 const std::vector<double>& want_out, const std::vector<float>& want_lse) {
  const DecodeAttentionParams& p = problem.p;
  int failures = 0;
  double worst_out = 0;
  double worst_lse = 0;
  for (uint32_t seq = 0; seq < p.num_seqs && failures <= 10; ++seq) {
    for (uint32_t h = 0; h < p.num_q_heads; ++h) {
      const uint64_t row = uint64_t{seq} * p.num_q_heads + h;
      const std::string where =
          absl::StrFormat("%s: seq %d (context %d) q head %d", what, seq, problem.contexts[seq], h);
      double diff2 = 0;
      double ref2 = 0;
      bool written = true;
      bool zero = true;
      for (uint32_t d = 0; d < p.head_dim; ++d) {
        const float x = got.out[row * p.head_dim + d];
        const double y = want_out[row * p.head_dim + d];
        written = written && !std::isnan(x);
        zero = zero && x == 0.0f;
        diff2 += (x - y) * (x - y);
        ref2 += y * y;
      }
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
      const double lse_err = std::abs(static_cast<double>(got.lse[row]) - want_lse[row]) /
                             std::max(1.0, std::abs(static_cast<double>(want_lse[row])));
      worst_out = std::max(worst_out, rel);
      worst_lse = std::max(worst_lse, lse_err);
      if (!(rel <= kOutTolerance) || !(lse_err <= kLseTolerance)) {
        ++failures;
        ADD_FAILURE() << where << ": relative out error " << rel << ", lse " << got.lse[row]
                      << " vs " << want_lse[row] << " (relative error " << lse_err << ")";
      }
    }
  }
  std::printf("    %-10s max relative out error %.2e, lse %.2e\n", what, worst_out, worst_lse);
}

class AttentionCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> count = CudaDeviceCount();
    if (!count.ok() || *count == 0) {
      GTEST_SKIP() << "no CUDA device on this machine ("
                   << (count.ok() ? std::string("0 devices") : count.status().ToString())
                   << "); the CPU reference is tested by kernels_attention_test";
    }
    DeviceOptions options;
    options.choice = DeviceChoice::kCuda;
    absl::StatusOr<std::unique_ptr<Device>> cuda = Device::Create(options);
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    cuda_ = std::move(*cuda);
    options.choice = DeviceChoice::kEmulated;
    absl::StatusOr<std::unique_ptr<Device>> emulated = Device::Create(options);
    ASSERT_TRUE(emulated.ok()) << emulated.status();
    emulated_ = std::move(*emulated);
  }

  void Check(const Shape& shape) {
    SCOPED_TRACE(shape.name);
    std::printf("  %s\n", shape.name.c_str());
    const Problem problem = MakeProblem(shape, rng_);
    Outputs gpu, cpu;
    KVTIER_ASSERT_OK(RunProblem(*cuda_, problem, &gpu, /*launches=*/2));
    KVTIER_ASSERT_OK(RunProblem(*emulated_, problem, &cpu));
    ExpectClose(problem, "vs CPU", gpu, std::vector<double>(cpu.out.begin(), cpu.out.end()),
                cpu.lse);
    if (shape.model) {
      std::vector<double> model_out;
      const Outputs model = Model(problem, &model_out);
      ExpectClose(problem, "vs model", gpu, model_out, model.lse);
    }
  }

  std::unique_ptr<Device> cuda_;
  std::unique_ptr<Device> emulated_;
  std::mt19937_64 rng_{Seed()};
  ::testing::ScopedTrace seed_trace_{__FILE__, __LINE__,
                                     absl::StrFormat("KVTIER_TEST_SEED=%d", Seed())};
};

TEST_F(AttentionCudaTest, EveryDTypeAndGroupSize) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (uint32_t kv_heads : {8u, 2u, 1u}) {  // GQA ratios 1, 4, 8
      Check({.name = absl::StrFormat("%s, 8 q heads / %d kv heads", DTypeName(dtype), kv_heads),
             .dtype = dtype,
             .num_q_heads = 8,
             .num_kv_heads = kv_heads,
             .head_dim = 128,
             .contexts = {1, 77, 300, 0, 16}});
    }
  }
  Check({.name = "MQA, 32 q heads (4 head tiles)",
         .dtype = DType::kBFloat16,
         .num_q_heads = 32,
         .num_kv_heads = 1,
         .head_dim = 64,
         .contexts = {129, 1}});
  Check({.name = "group of 3 (padded head tile)",
         .dtype = DType::kFloat16,
         .num_q_heads = 12,
         .num_kv_heads = 4,
         .head_dim = 64,
         .contexts = {50, 200}});
}

TEST_F(AttentionCudaTest, HeadDims) {
  for (uint32_t dim : {8u, 64u, 96u, 128u, 136u, 256u}) {
    Check({.name = absl::StrFormat("head_dim %d", dim),
           .dtype = DType::kFloat16,
           .num_q_heads = 8,
           .num_kv_heads = 2,
           .head_dim = dim,
           .contexts = {33, 500}});
  }
  Check({.name = "head_dim 256 fp32",
         .dtype = DType::kFloat32,
         .num_q_heads = 16,
         .num_kv_heads = 2,
         .head_dim = 256,
         .contexts = {260}});
}

TEST_F(AttentionCudaTest, SplitCounts) {
  for (uint32_t splits : {1u, 3u, 0u, 7u, 64u, 256u}) {
    Check({.name = absl::StrFormat("splits %d", splits),
           .dtype = DType::kFloat16,
           .num_q_heads = 16,
           .num_kv_heads = 4,
           .head_dim = 128,
           .block_tokens = 16,
           .contexts = {40, 1000, 1, 0},
           .num_splits = splits});
  }
  Check({.name = "block_tokens 1",
         .dtype = DType::kBFloat16,
         .num_q_heads = 8,
         .num_kv_heads = 2,
         .head_dim = 128,
         .block_tokens = 1,
         .contexts = {1, 70},
         .num_splits = 5});
  Check({.name = "block_tokens 7",
         .dtype = DType::kFloat16,
         .num_q_heads = 8,
         .num_kv_heads = 2,
         .head_dim = 128,
         .block_tokens = 7,
         .contexts = {100, 6}});
}

TEST_F(AttentionCudaTest, ManySequencesAndLongContexts) {
  std::vector<uint32_t> contexts(48);
  std::uniform_int_distribution<uint32_t> length(0, 3000);
  for (uint32_t& c : contexts) c = length(rng_);
  Check({.name = "48 sequences of 0..3000 tokens",
         .dtype = DType::kFloat16,
         .num_q_heads = 32,
         .num_kv_heads = 8,
         .head_dim = 128,
         .contexts = contexts,
         .model = false});
  Check({.name = "64K tokens, Llama-3-8B heads, auto splits",
         .dtype = DType::kFloat16,
         .num_q_heads = 32,
         .num_kv_heads = 8,
         .head_dim = 128,
         .contexts = {65536, 3},
         .model = false});
  Check({.name = "64K + 1 tokens, bf16, one split",
         .dtype = DType::kBFloat16,
         .num_q_heads = 8,
         .num_kv_heads = 2,
         .head_dim = 128,
         .contexts = {65537},
         .num_splits = 1});
  Check({.name = "100K tokens, fp16, 256 splits",
         .dtype = DType::kFloat16,
         .num_q_heads = 4,
         .num_kv_heads = 1,
         .head_dim = 128,
         .contexts = {100000},
         .num_splits = 256});
}

TEST_F(AttentionCudaTest, MergeMatchesTheHostMerge) {
  constexpr uint32_t kRows = 300;
  constexpr uint32_t kDim = 136;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::uniform_real_distribution<float> lse_dist(-20.0f, 20.0f);
  std::vector<float> out_acc(kRows * kDim), out_part(kRows * kDim), lse_acc(kRows), lse_part(kRows);
  for (float& x : out_acc) x = dist(rng_);
  for (float& x : out_part) x = dist(rng_);
  for (uint32_t r = 0; r < kRows; ++r) {
    lse_acc[r] = r % 7 == 0 ? -INFINITY : lse_dist(rng_);
    lse_part[r] = r % 5 == 0 ? -INFINITY : lse_dist(rng_);
    if (std::isinf(lse_acc[r])) std::fill_n(&out_acc[r * kDim], kDim, 0.0f);
    if (std::isinf(lse_part[r])) std::fill_n(&out_part[r * kDim], kDim, 0.0f);
  }
  std::vector<float> want_out = out_acc, want_lse = lse_acc;
  MergeAttentionStatesHost(kRows, kDim, want_out.data(), want_lse.data(), out_part.data(),
                           lse_part.data());

  DeviceBuffers buffers(*cuda_);
  KVTIER_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Stream> stream, cuda_->CreateStream());
  MergeAttentionParams merge{.rows = kRows, .head_dim = kDim};
  DevicePtr* targets[] = {&merge.out_acc, &merge.lse_acc, &merge.out_part, &merge.lse_part};
  const std::vector<float>* sources[] = {&out_acc, &lse_acc, &out_part, &lse_part};
  for (int i = 0; i < 4; ++i) {
    KVTIER_ASSERT_OK_AND_ASSIGN(*targets[i], buffers.Allocate(sources[i]->size() * 4));
    KVTIER_ASSERT_OK(stream->CopyToDevice(*targets[i], sources[i]->data(), sources[i]->size() * 4));
  }
  KVTIER_ASSERT_OK(LaunchAndWait(*stream, MakeMergeAttentionKernel(merge)));
  std::vector<float> got_out(kRows * kDim), got_lse(kRows);
  KVTIER_ASSERT_OK(stream->CopyToHost(got_out.data(), merge.out_acc, got_out.size() * 4));
  KVTIER_ASSERT_OK(stream->CopyToHost(got_lse.data(), merge.lse_acc, got_lse.size() * 4));
  KVTIER_ASSERT_OK(stream->Synchronize());
  for (uint32_t r = 0; r < kRows; ++r) {
    if (std::isinf(want_lse[r])) {
      EXPECT_TRUE(std::isinf(got_lse[r]) && got_lse[r] < 0) << "row " << r;
    } else {
      EXPECT_NEAR(got_lse[r], want_lse[r], 1e-6 * std::max(1.0f, std::abs(want_lse[r])))
          << "row " << r;
    }
    for (uint32_t d = 0; d < kDim; ++d) {
      ASSERT_NEAR(got_out[r * kDim + d], want_out[r * kDim + d], 1e-6)
          << "row " << r << " dim " << d;
    }
  }
}

TEST_F(AttentionCudaTest, InvalidParamsFailAtLaunch) {
  KVTIER_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Stream> stream, cuda_->CreateStream());
  DecodeAttentionParams p;  // all zero: num_seqs is the first field checked after dtype
  p.dtype = static_cast<DType>(9);
  absl::Status status = stream->Launch(MakeDecodeAttentionKernel(p));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "dtype")) << status;
  p.dtype = DType::kFloat16;
  status = stream->Launch(MakeDecodeAttentionKernel(p));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "num_seqs")) << status;
  status = stream->Launch(MakeMergeAttentionKernel(MergeAttentionParams{}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  KVTIER_EXPECT_OK(stream->Synchronize());
}

}  // namespace
}  // namespace kvtier
