// bench attention — decode attention (flash-decoding over a paged block table) on the Device,
// for contexts of 4K, 16K, 64K, 256K and 1M tokens, against a device-to-device copy.
//
//   bench/run attention [--device=auto|emulated|cuda] [--max-tokens=N] [--seqs=N]
//                       [--block-tokens=N] [--runs=N] [--splits=N]
//
// One layer of a Llama-3-8B-like model: 32 q heads, 8 KV heads, head_dim 128, fp16, 16-token
// blocks whose slots are scattered over the pool in shuffled order; --seqs sequences of the
// same length (batch 1 by default), one query token each, automatic split count.
//
// Decode attention is bound by reading K and V once, so throughput counts KV bytes READ per
// second: context × kv_heads × head_dim × 2 (K and V) × 2 bytes × seqs. figure = that at the
// largest context measured of at least 64K tokens (else the largest measured); ceiling = a
// device-to-device copy (Stream::CopyOnDevice) in the same run, also counted as bytes READ
// per second (a copy also writes as many, so the ceiling is a copy's read rate, not the
// memory's total traffic). Each time is the median of --runs samples after a warm-up; a
// sample is launch(es) + Synchronize, on CUDA enough back-to-back launches to last ~20 ms so
// launch overhead does not dominate small contexts. The emulated device (CPU reference)
// stops at 64K tokens unless --max-tokens says otherwise: it is slow and holds the pool in
// host memory.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "examples/llm/attention.h"
#include "kernels/numeric.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier::bench {
namespace {

constexpr uint32_t kQHeads = 32;
constexpr uint32_t kKvHeads = 8;
constexpr uint32_t kHeadDim = 128;
constexpr DType kDType = DType::kFloat16;
constexpr uint64_t kEmulatedDefaultMaxTokens = 64 * 1024;
constexpr double kMinSampleSeconds = 0.02;

struct Args {
  DeviceChoice device = DeviceChoice::kAuto;
  uint64_t max_tokens = 0;  // 0: by device
  uint32_t seqs = 1;
  uint32_t block_tokens = 16;
  uint32_t splits = 0;
  int runs = 5;
};

struct SizeResult {
  uint64_t tokens = 0;
  uint64_t kv_bytes = 0;
  double seconds = 0;
  uint32_t splits = 0;
};

void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) Die(absl::StrFormat("%s: %s", what, status.ToString()));
}

DevicePtr AllocateOrDie(Device& device, size_t bytes, const char* what) {
  absl::StatusOr<DevicePtr> ptr = device.Allocate(std::max<size_t>(bytes, 1));
  Check(ptr.status(), what);
  return *ptr;
}

std::string TokensTag(uint64_t tokens) {
  return tokens >= (1 << 20) ? absl::StrFormat("%dm", tokens >> 20)
                             : absl::StrFormat("%dk", tokens >> 10);
}

// Median seconds of one enqueue(): warm-up, then --runs samples of `iterations` back-to-back
// enqueues each (iterations grows on a fast device until a sample lasts kMinSampleSeconds).
template <typename Enqueue>
double TimePerCall(Stream& stream, int runs, bool batch, Enqueue&& enqueue) {
  enqueue();
  Check(stream.Synchronize(), "warm-up");
  int iterations = 1;
  if (batch) {
    for (;;) {
      const double start = Now();
      for (int i = 0; i < iterations; ++i) enqueue();
      Check(stream.Synchronize(), "calibration");
      const double elapsed = Now() - start;
      if (elapsed >= kMinSampleSeconds || iterations >= (1 << 14)) break;
      iterations *= 2;
    }
  }
  return MedianSeconds(runs,
                       [&] {
                         for (int i = 0; i < iterations; ++i) enqueue();
                         Check(stream.Synchronize(), "timed run");
                       }) /
         iterations;
}

SizeResult RunSize(Device& device, Stream& stream, const Args& args, uint64_t tokens,
                   const std::vector<uint8_t>& fill, bool cuda) {
  const Geometry g{1, kKvHeads, kHeadDim, kDType, args.block_tokens};
  const uint64_t blocks_per_seq = (tokens + args.block_tokens - 1) / args.block_tokens;
  const uint64_t slots = blocks_per_seq * args.seqs;
  const uint64_t pool_bytes = slots * g.block_bytes();

  DecodeAttentionParams p;
  p.dtype = kDType;
  p.num_seqs = args.seqs;
  p.num_q_heads = kQHeads;
  p.num_kv_heads = kKvHeads;
  p.head_dim = kHeadDim;
  p.block_tokens = args.block_tokens;
  p.block_stride = g.block_bytes();
  p.k_offset = g.Offset(0, KvPart::kKey);
  p.v_offset = g.Offset(0, KvPart::kValue);
  p.max_blocks_per_seq = static_cast<uint32_t>(blocks_per_seq);
  p.num_splits = args.splits;

  const uint64_t q_elems = uint64_t{args.seqs} * kQHeads * kHeadDim;
  p.kv_pool = AllocateOrDie(device, pool_bytes, "Allocate KV pool");
  p.q = AllocateOrDie(device, q_elems * 2, "Allocate q");
  p.block_table = AllocateOrDie(device, slots * 4, "Allocate block table");
  p.context_lens = AllocateOrDie(device, uint64_t{args.seqs} * 4, "Allocate context lengths");
  p.out = AllocateOrDie(device, q_elems * 4, "Allocate out");
  p.lse = AllocateOrDie(device, uint64_t{args.seqs} * kQHeads * 4, "Allocate lse");
  const size_t workspace_bytes = DecodeAttentionWorkspaceBytes(p);
  if (workspace_bytes > 0)
    p.workspace = AllocateOrDie(device, workspace_bytes, "Allocate workspace");

  // The pool: random fp16 values, one host chunk repeated. Slots dealt out shuffled.
  for (uint64_t offset = 0; offset < pool_bytes; offset += fill.size()) {
    Check(stream.CopyToDevice(p.kv_pool + offset, fill.data(),
                              std::min<uint64_t>(fill.size(), pool_bytes - offset)),
          "CopyToDevice pool");
  }
  std::vector<uint32_t> table(slots);
  std::iota(table.begin(), table.end(), 0u);
  std::shuffle(table.begin(), table.end(), std::mt19937_64(tokens));
  const std::vector<uint32_t> contexts(args.seqs, static_cast<uint32_t>(tokens));
  std::vector<uint8_t> q(fill.begin(), fill.begin() + q_elems * 2);
  Check(stream.CopyToDevice(p.block_table, table.data(), table.size() * 4), "CopyToDevice table");
  Check(stream.CopyToDevice(p.context_lens, contexts.data(), contexts.size() * 4),
        "CopyToDevice contexts");
  Check(stream.CopyToDevice(p.q, q.data(), q.size()), "CopyToDevice q");
  Check(stream.Synchronize(), "uploading inputs");
  Check(p.Validate(), "params");

  SizeResult r;
  r.tokens = tokens;
  r.kv_bytes = tokens * args.seqs * kKvHeads * kHeadDim * 2 * DTypeSize(kDType);
  r.splits = args.splits;
  if (r.splits == 0) {
    // What the automatic choice picked: the workspace holds (head_dim + 1) floats per split.
    const uint64_t rows = uint64_t{args.seqs} * kQHeads;
    r.splits = workspace_bytes == 0
                   ? 1
                   : static_cast<uint32_t>(workspace_bytes / (rows * (kHeadDim + 1) * 4));
  }
  r.seconds = TimePerCall(stream, args.runs, cuda, [&] {
    Check(stream.Launch(MakeDecodeAttentionKernel(p)), "Launch decode attention");
  });
  // A sanity check that the run produced numbers (softmax outputs are finite).
  std::vector<float> out(q_elems);
  Check(stream.CopyToHost(out.data(), p.out, out.size() * 4), "CopyToHost out");
  Check(stream.Synchronize(), "reading out back");
  for (float x : out) {
    if (!std::isfinite(x)) Die("decode attention produced a non-finite output");
  }
  for (DevicePtr ptr : {p.kv_pool, p.q, p.block_table, p.context_lens, p.out, p.lse}) {
    Check(device.Free(ptr), "Free");
  }
  if (!p.workspace.is_null()) Check(device.Free(p.workspace), "Free workspace");
  return r;
}

int Main(int argc, char** argv) {
  Args args;
  CLI::App app(
      "bench attention: decode attention over a paged block table, 4K..1M tokens, vs a "
      "device-to-device copy",
      "bench/run attention");
  flags::AddDevice(app, &args.device);
  app.add_option("--max-tokens", args.max_tokens, "largest context measured (default: by device)")
      ->check(flags::AtLeast<uint64_t>(4096));
  app.add_option("--seqs", args.seqs, "sequences of the same length, one query token each")
      ->check(flags::AtLeast<uint32_t>(1))
      ->capture_default_str();
  app.add_option("--block-tokens", args.block_tokens, "tokens per block of the paged pool")
      ->check(flags::AtLeast<uint32_t>(1))
      ->capture_default_str();
  app.add_option("--splits", args.splits, "splits of the context per sequence (0 = automatic)")
      ->check(CLI::Range(0u, static_cast<unsigned>(kMaxDecodeAttentionSplits)))
      ->capture_default_str();
  flags::AddRuns(app, &args.runs);
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;

  DeviceOptions options;
  options.choice = args.device;
  absl::StatusOr<std::unique_ptr<Device>> opened = Device::Create(options);
  Check(opened.status(), "opening the device");
  Device& device = **opened;
  const bool cuda = device.kind() == DeviceKind::kCuda;
  absl::StatusOr<std::unique_ptr<Stream>> stream_or = device.CreateStream();
  Check(stream_or.status(), "CreateStream");
  Stream& stream = **stream_or;

  std::string cap_note;
  if (args.max_tokens == 0) {
    args.max_tokens = cuda ? (uint64_t{1} << 20) : kEmulatedDefaultMaxTokens;
    if (!cuda) {
      cap_note =
          "emulated device: contexts capped at 64K tokens by default (the CPU reference "
          "is slow and the pool lives in host memory); --max-tokens=N to go further";
    }
  }
  std::vector<uint64_t> sizes;
  for (uint64_t tokens = 4096; tokens <= args.max_tokens && tokens <= (uint64_t{1} << 20);
       tokens *= 4) {
    sizes.push_back(tokens);
  }

  // Random fp16 values in ±1 (a realistic range for K and V), 16 MiB of them.
  std::vector<uint8_t> fill(size_t{16} << 20);
  {
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (size_t i = 0; i + 1 < fill.size(); i += 2) {
      const uint16_t bits = numeric::FloatToHalfBits(dist(rng));
      std::memcpy(&fill[i], &bits, 2);
    }
  }

  std::printf(
      "decode attention on %s: %u q heads, %u KV heads, head_dim %u, %s, %u-token "
      "blocks (shuffled slots), %u sequence(s), median of %d runs\n",
      device.name().c_str(), kQHeads, kKvHeads, kHeadDim, DTypeName(kDType), args.block_tokens,
      args.seqs, args.runs);
  if (!cap_note.empty()) std::printf("%s\n", cap_note.c_str());

  std::vector<SizeResult> results;
  for (uint64_t tokens : sizes)
    results.push_back(RunSize(device, stream, args, tokens, fill, cuda));

  // The ceiling: a device-to-device copy of as many bytes as the largest KV read (at least
  // 64 MiB, at most 1 GiB), counted as bytes read per second.
  const uint64_t largest = results.back().kv_bytes;
  const uint64_t copy_bytes = std::clamp<uint64_t>(largest, uint64_t{64} << 20, uint64_t{1} << 30);
  const DevicePtr src = AllocateOrDie(device, copy_bytes, "Allocate copy source");
  const DevicePtr dst = AllocateOrDie(device, copy_bytes, "Allocate copy destination");
  for (uint64_t offset = 0; offset < copy_bytes; offset += fill.size()) {
    Check(stream.CopyToDevice(src + offset, fill.data(),
                              std::min<uint64_t>(fill.size(), copy_bytes - offset)),
          "CopyToDevice copy source");
  }
  Check(stream.Synchronize(), "filling the copy source");
  const double copy_seconds = TimePerCall(stream, args.runs, cuda, [&] {
    Check(stream.CopyOnDevice(dst, src, copy_bytes), "CopyOnDevice");
  });
  Check(device.Free(src), "Free");
  Check(device.Free(dst), "Free");
  const double ceiling = static_cast<double>(copy_bytes) / copy_seconds / 1e9;

  std::printf("ceiling: device-to-device copy of %.0f MiB, %.2f GB/s read (+ as much written)\n",
              copy_bytes / 1048576.0, ceiling);
  std::printf("%10s %12s %8s %12s %14s %8s\n", "tokens", "KV MiB", "splits", "ms", "KV read GB/s",
              "ratio");
  JsonLine per_size;
  const SizeResult* figure_result = &results.back();
  for (const SizeResult& r : results) {
    const double gbps = static_cast<double>(r.kv_bytes) / r.seconds / 1e9;
    std::printf("%10s %12.1f %8u %12.3f %14.2f %8.3f\n", TokensTag(r.tokens).c_str(),
                r.kv_bytes / 1048576.0, r.splits, r.seconds * 1e3, gbps, gbps / ceiling);
    per_size.Num("gbps_" + TokensTag(r.tokens), gbps)
        .Num("ms_" + TokensTag(r.tokens), r.seconds * 1e3);
  }
  for (const SizeResult& r : results) {
    if (r.tokens >= 64 * 1024) figure_result = &r;  // the largest at least 64K
  }
  const double figure = static_cast<double>(figure_result->kv_bytes) / figure_result->seconds / 1e9;

  JsonLine json;
  json.Str("bench", "attention")
      .Num("figure", figure)
      .Str("unit", "GB/s")
      .Str("figure_source",
           absl::StrFormat("KV bytes read per second at %s tokens x %u seq(s), fp16, 32 q / 8 kv "
                           "heads, head_dim 128, auto splits",
                           TokensTag(figure_result->tokens), args.seqs))
      .Num("ceiling", ceiling)
      .Str("ceiling_source",
           absl::StrFormat("Stream::CopyOnDevice of %d MiB in the same run, bytes READ per second "
                           "(the copy writes as many again)",
                           copy_bytes >> 20))
      .Num("ratio", figure / ceiling)
      .Str("device", DeviceKindName(device.kind()))
      .Str("device_name", device.name())
      .Num("figure_tokens", static_cast<double>(figure_result->tokens))
      .Num("max_tokens", static_cast<double>(args.max_tokens))
      .Num("seqs", args.seqs)
      .Num("block_tokens", args.block_tokens)
      .Num("runs", args.runs);
  if (!cap_note.empty()) json.Str("note", cap_note);
  json.Merge(per_size);
  json.Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
