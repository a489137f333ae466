// examples/long_context_demo.cc — a Llama-style model decoding over a context whose KV cache
// is many times larger than its GPU budget, with the KV living in kvtier's three tiers.
//
//   kvtier_long_context_demo [--context=N] [--decode=N] [--turn2=N] [--prefetch=on|off|both]
//                            [--gpu-mib=N] [--host-mib=N] [--copy-gbps=G] [--json]
//                            [--matmul=auto|cpu|device] [--preset=gpu|llama3-8b] ...
//                            (--help lists every flag)
//
// What happens:
//  1. Prefill. The prompt runs through the model in chunks. Each layer's new K/V (rounded to
//     fp16) is stored in kvtier as blocks of that layer (keys carry "layer=<l>" as extra key
//     material); attention for the chunk runs over the whole context so far: the chunk's own
//     blocks from device memory, every older block streamed through kvtier's managed GPU tier
//     (LoadToGpuTier) chunk by chunk, the partial results merged exactly by log-sum-exp.
//     The KV grows to many times the GPU tier and beyond the host tier, so blocks spill
//     host → disk.
//  2. Decode, greedily, the same way one token at a time. With prefetch on, each step first
//     hints the engine with every block the step will read, in the order it will read them
//     (layer 0's chunks, then layer 1's, ...): the prefetcher moves them disk → host → GPU
//     within its budget while attention runs on what already arrived. Stall = host time spent
//     waiting for a chunk's bytes.
//  3. Check. A reference session with every K/V resident in host memory (examples/llm)
//     decodes the same prompt, fed the same tokens: its greedy choice must equal the demo's
//     at every step (unless its own top two logits are within the tolerance, reported as a
//     near-tie), and the logits must agree within --tolerance. The demo exits 1 if not.
//  4. Multi-turn reuse. A second turn (the first turn's prompt and answer plus new tokens)
//     matches the first turn's blocks in kvtier and prefills only what is new; the same turn
//     in a fresh namespace recomputes everything. Both first tokens must agree; their
//     time-to-first-token is the reuse figure.
//
// The model's matmuls run on the CPU in float32 (llm::Model) or on the device with fp16/bf16
// weights (llm::DeviceDecoder: cuBLAS on a GPU, its CPU reference on the emulated device);
// --matmul=auto picks the device on a GPU. The all-resident reference of step 3 uses the same
// decoder, so the check compares tiers against all-resident, not two numerics.
//
// Output: progress bars on a terminal, then a summary table; --json prints one JSON object
// instead (bench/run demo uses it). Why one kvtier block per layer: decoding one token needs
// every layer's KV in turn, one layer at a time; blocks holding all layers would have to come
// to the GPU once per layer. With per-layer blocks each byte crosses each link once per step.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "common/json.h"
#include "examples/llm/attention.h"
#include "examples/llm/cublas_library.h"
#include "examples/llm/decoder.h"
#include "examples/llm/device_decoder.h"
#include "examples/llm/model.h"
#include "examples/long_context_demo_options.h"
#include "examples/long_context_demo_session.h"
#include "io/block_device_sampler.h"
#include "kvtier/engine.h"

namespace kvtier::demo {
namespace {

// ------------------------------------------------------------------------------ the demo

// The block device under the cache directory during a decode run (--sample-disk,
// io/block_device_sampler.h). The disk's bytes/s during decode are measured over its busy
// time: a decode step computes as well as reads, so over wall time the figure says how much of
// the step the demo spends reading, over busy time whether its reads keep the disk as busy as
// fio does.

struct DecodeRun {
  std::string mode;  // "prefetch" or "no-prefetch"
  PhaseStats stats;
  BlockDeviceSampler::Figures disk;  // --sample-disk
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // logits that chose each token
};

uint64_t TierBytes(const EngineStats& s, TierKind t, bool in) {
  const TierStats& ts = s.tiers[static_cast<int>(t)];
  return in ? ts.bytes_in : ts.bytes_out;
}

// What the demo sizes from its options: the model, the engine (tiers, prefetch budget, the
// disk tier in `dir`) and the streamed attention's chunk.
struct Plan {
  llm::ModelConfig model;
  EngineOptions engine;
  size_t block = 0;     // bytes per kvtier block (one layer, block_tokens tokens)
  size_t kv_bytes = 0;  // the prompt's KV, all layers, K and V
  uint32_t stream_blocks = 0;
  uint32_t max_step = 0;  // the most tokens one Forward runs
};

absl::StatusOr<Plan> MakePlan(const Options& o, const std::string& dir) {
  Plan plan;
  llm::ModelConfig& mc = plan.model;
  mc.num_layers = o.layers;
  mc.d_model = o.d_model;
  mc.num_heads = o.heads;
  mc.num_kv_heads = o.kv_heads;
  mc.head_dim = o.heads == 0 ? 0 : o.d_model / o.heads;
  mc.ffn_dim = o.ffn;
  mc.vocab_size = o.vocab;
  if (absl::Status s = mc.Validate(); !s.ok()) return s;

  EngineOptions& eo = plan.engine;
  eo.geometry = Geometry{1, mc.num_kv_heads, mc.head_dim, DType::kFloat16, o.block_tokens};
  if (absl::Status s = eo.geometry.Validate(); !s.ok()) return s;
  const size_t block = eo.geometry.block_bytes();
  plan.block = block;
  const size_t total_tokens = size_t{o.context} + 2 * o.decode + o.turn2 + o.block_tokens;
  plan.kv_bytes = size_t{o.context} * mc.num_layers * eo.geometry.token_bytes() * 2;
  // The device decoder draws other random weights, and rounds them: another model.
  const std::string numerics =
      o.matmul == "cpu" ? "" : absl::StrFormat(":matmul-%s-%s", o.matmul, o.weight_dtype);
  eo.model_fingerprint = (o.weights.empty() ? absl::StrFormat("demo-random-seed-%d", o.seed)
                                            : "demo-weights:" + o.weights) +
                         numerics;
  eo.key_hash = KeyHash::kXxh3;
  eo.device.choice = o.device;
  eo.device.emulated_copy_gbps = o.copy_gbps;
  eo.gpu_tier_bytes = o.gpu_mib != 0 ? o.gpu_mib << 20 : std::max(plan.kv_bytes / 8, 16 * block);
  eo.host_tier_bytes = o.host_mib != 0 ? o.host_mib << 20 : std::max(plan.kv_bytes / 2, 16 * block);
  eo.namespaces = {"turn1", "recompute"};
  const uint32_t gpu_blocks = static_cast<uint32_t>(eo.gpu_tier_bytes / block);
  plan.stream_blocks =
      o.stream_blocks != 0 ? static_cast<uint32_t>(o.stream_blocks) : std::max(1u, gpu_blocks / 8);
  if (3 * plan.stream_blocks + 1 > gpu_blocks / 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--stream-blocks=%u: three chunks in flight must fit in half the GPU tier (%u blocks)",
        plan.stream_blocks, gpu_blocks));
  }
  eo.prefetch_budget_bytes = size_t{gpu_blocks / 2} * block;
  // A disk tier in `dir`; every evicted block is admitted (the context must survive in full).
  eo.disk.directory = dir + "/cache";
  eo.disk.region_bytes = 4 << 20;
  eo.disk.capacity_bytes =
      std::max<uint64_t>(4 * total_tokens * mc.num_layers * eo.geometry.token_bytes() * 2 + (64 << 20),
                         32ull << 20) / eo.disk.region_bytes * eo.disk.region_bytes;
  eo.disk.admit_min_seen = 1;
  plan.max_step = std::max(o.chunk, o.turn2 + o.block_tokens);
  return plan;
}

// The decoder: matmuls on the device (cuBLAS on a GPU, its CPU reference on the emulated
// device) or on the CPU in float32. Members in destruction order: the decoder goes before the
// weights and the cuBLAS library it points into (each behind a pointer, so a move keeps them
// where the decoder points). Held after the engine: destroyed before its device.
struct LoadedDecoder {
  std::unique_ptr<llm::CublasLibrary> cublas;
  std::unique_ptr<llm::Model> cpu_model;
  std::unique_ptr<llm::Decoder> decoder;
  double seconds = 0;  // to have the weights ready
};

absl::StatusOr<LoadedDecoder> LoadDecoder(const Options& o, const llm::ModelConfig& mc,
                                          Engine& engine) {
  LoadedDecoder d;
  const absl::Time start = absl::Now();
  const bool on_gpu = engine.device().kind() == DeviceKind::kCuda;
  bool device_matmul = o.matmul == "device" || (o.matmul == "auto" && on_gpu);
  if (device_matmul && on_gpu) {
    absl::StatusOr<std::unique_ptr<llm::CublasLibrary>> lib = llm::CublasLibrary::Load();
    if (lib.ok()) {
      d.cublas = std::move(*lib);
    } else if (o.preset == kLlamaPreset) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "--preset=%s needs cuBLAS for its matmuls (set LD_LIBRARY_PATH or KVTIER_CUBLAS to "
          "libcublas.so.13): %s",
          kLlamaPreset, lib.status().message()));
    } else {
      std::fprintf(stderr,
                   "kvtier demo: matmuls on the CPU in float32: cuBLAS is unavailable (%s)\n",
                   std::string(lib.status().message()).c_str());
      device_matmul = false;
    }
  }
  if (!o.weights.empty() || !device_matmul) {
    absl::StatusOr<llm::Model> m = o.weights.empty() ? llm::Model::Random(mc, o.seed)
                                                     : llm::Model::FromSafetensors(o.weights, mc);
    if (!m.ok()) return m.status();
    d.cpu_model = std::make_unique<llm::Model>(*std::move(m));
  }
  if (device_matmul) {
    llm::DeviceDecoder::Options dopt;
    dopt.weight_dtype = o.weight_dtype == "bf16" ? DType::kBFloat16 : DType::kFloat16;
    dopt.cublas = d.cublas.get();
    absl::StatusOr<std::unique_ptr<llm::DeviceDecoder>> dd =
        d.cpu_model != nullptr ? llm::DeviceDecoder::FromModel(*d.cpu_model, engine.device(), dopt)
                               : llm::DeviceDecoder::Random(mc, o.seed, engine.device(), dopt);
    if (!dd.ok()) return dd.status();
    d.decoder = std::move(*dd);
    d.cpu_model.reset();  // the device decoder keeps what it needs
  } else {
    d.decoder = std::make_unique<llm::CpuDecoder>(d.cpu_model.get());
  }
  d.seconds = Seconds(start);
  return d;
}

void PrintHeader(const Options& o, const Plan& plan, Engine& engine, const LoadedDecoder& d) {
  const llm::ModelConfig& mc = plan.model;
  const EngineOptions& eo = plan.engine;
  std::printf("kvtier long-context demo\n");
  std::printf("  model    %s (%s)\n", mc.ToString().c_str(),
              o.weights.empty() ? "random weights" : o.weights.c_str());
  std::printf("  matmuls  %s (weights ready in %.1f s)\n", d.decoder->Describe().c_str(),
              d.seconds);
  std::printf("  device   %s\n", engine.device().name().c_str());
  std::printf(
      "  context  %u tokens, KV %.1f MiB (fp16) in blocks of %u tokens x 1 layer "
      "(%zu KiB)\n",
      o.context, plan.kv_bytes / 1048576.0, o.block_tokens, plan.block >> 10);
  std::printf("  tiers    GPU %.1f MiB (KV is %.1fx it), host %.1f MiB, disk %s\n",
              eo.gpu_tier_bytes / 1048576.0, static_cast<double>(plan.kv_bytes) / eo.gpu_tier_bytes,
              eo.host_tier_bytes / 1048576.0, eo.disk.directory.c_str());
  std::printf("  stream   %u blocks per attention chunk, prefetch budget %.1f MiB\n\n",
              plan.stream_blocks, engine.Stats().prefetch.budget_bytes / 1048576.0);  // in effect
}

// 1. Prefill: the prompt in chunks of --chunk tokens. Returns the last token's logits.
absl::StatusOr<std::vector<float>> Prefill(const Options& o, absl::Span<const int32_t> prompt,
                                           Engine& engine, StreamingSession& session,
                                           PhaseStats* st) {
  st->before = engine.Stats();
  const absl::Time start = absl::Now();
  Progress bar(!o.json, "prefill", prompt.size());
  std::vector<float> logits;
  for (size_t p = 0; p < prompt.size(); p += o.chunk) {
    const size_t n = std::min<size_t>(o.chunk, prompt.size() - p);
    absl::StatusOr<std::vector<float>> l = session.Forward(prompt.subspan(p, n), /*hint=*/true, st);
    if (!l.ok()) return l.status();
    logits = std::move(*l);
    bar.Update(p + n, absl::StrFormat("%zu tokens", p + n));
  }
  st->seconds = Seconds(start);
  st->after = engine.Stats();
  return logits;
}

// --per-step: one decode step's line of metrics.
void PrintStep(const std::string& mode, uint32_t step, double seconds, double stall_seconds,
               const EngineStats& b, const EngineStats& a) {
  std::printf(
      "  %-11s step %3u  %6.1f ms  stall %6.1f ms  host->GPU %5.1f MiB  "
      "disk->host %5.1f MiB  prefetch +%llu in time +%llu late +%llu unused\n",
      mode.c_str(), step, 1e3 * seconds, 1e3 * stall_seconds,
      (TierBytes(a, TierKind::kGpu, true) - TierBytes(b, TierKind::kGpu, true)) / 1048576.0,
      (TierBytes(a, TierKind::kDisk, false) - TierBytes(b, TierKind::kDisk, false)) / 1048576.0,
      static_cast<unsigned long long>(a.prefetch.in_time - b.prefetch.in_time),
      static_cast<unsigned long long>(a.prefetch.late - b.prefetch.late),
      static_cast<unsigned long long>(a.prefetch.unused - b.prefetch.unused));
}

// 2. Decode, greedily from `logits`, --decode tokens per prefetch mode (--prefetch), each mode
// continuing the same session.
absl::StatusOr<std::vector<DecodeRun>> Decode(const Options& o, const std::string& cache_dir,
                                              Engine& engine, StreamingSession& session,
                                              std::vector<float> logits) {
  std::vector<DecodeRun> runs;
  std::vector<std::string> modes;
  if (o.prefetch == "on" || o.prefetch == "both") modes.push_back("prefetch");
  if (o.prefetch == "off" || o.prefetch == "both") modes.push_back("no-prefetch");
  for (const std::string& mode : modes) {
    DecodeRun run;
    run.mode = mode;
    run.stats.before = engine.Stats();
    std::optional<BlockDeviceSampler> sampler;
    if (o.sample_disk) sampler.emplace(cache_dir);
    Progress bar(!o.json, mode == "prefetch" ? "decode" : "decode/np", o.decode);
    const absl::Time start = absl::Now();
    for (uint32_t i = 0; i < o.decode; ++i) {
      const int32_t next = llm::Argmax(logits);
      run.tokens.push_back(next);
      run.logits.push_back(logits);
      const int32_t token[1] = {next};
      const EngineStats step_before = o.per_step ? engine.Stats() : EngineStats{};
      const double stall_before = run.stats.stall_seconds;
      const absl::Time step_start = absl::Now();
      absl::StatusOr<std::vector<float>> l = session.Forward(token, mode == "prefetch", &run.stats);
      if (!l.ok()) return l.status();
      logits = std::move(*l);
      if (o.per_step && !o.json) {
        PrintStep(mode, i, Seconds(step_start), run.stats.stall_seconds - stall_before, step_before,
                  engine.Stats());
      }
      bar.Update(i + 1, absl::StrFormat("%.1f tok/s", (i + 1) / Seconds(start)));
    }
    run.stats.seconds = Seconds(start);
    run.stats.after = engine.Stats();
    if (sampler.has_value()) run.disk = sampler->Stop();
    runs.push_back(std::move(run));
  }
  return runs;
}

// 3. The all-resident reference, fed the same tokens.
struct Check {
  bool ran = false;
  double max_diff = 0;
  int mismatches = 0;
  int near_ties = 0;  // mismatches where the reference's own top two are within the tolerance
  double seconds = 0;
  bool ok(double tolerance) const { return !ran || (mismatches == 0 && max_diff <= tolerance); }
};

absl::StatusOr<Check> CheckAgainstReference(const Options& o, const llm::Decoder& decoder,
                                            absl::Span<const int32_t> prompt,
                                            const std::vector<DecodeRun>& runs) {
  Check c;
  if (!o.check) return c;
  c.ran = true;
  const absl::Time start = absl::Now();
  llm::ReferenceSession ref(&decoder);
  Progress bar(!o.json, "reference", prompt.size());
  absl::StatusOr<std::vector<float>> rl;
  for (size_t p = 0; p < prompt.size(); p += o.chunk) {
    const size_t n = std::min<size_t>(o.chunk, prompt.size() - p);
    rl = ref.Prefill(prompt.subspan(p, n));
    if (!rl.ok()) return rl.status();
    bar.Update(p + n);
  }
  for (const DecodeRun& run : runs) {
    for (size_t i = 0; i < run.tokens.size(); ++i) {
      const std::vector<float>& mine = run.logits[i];
      for (size_t v = 0; v < mine.size(); ++v) {
        c.max_diff = std::max(c.max_diff, static_cast<double>(std::fabs(mine[v] - (*rl)[v])));
      }
      if (llm::Argmax(*rl) != run.tokens[i]) {
        // A near-tie in the reference itself is not a failure of the tiers.
        std::vector<float> sorted = *rl;
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
        if (sorted[0] - sorted[1] <= o.tolerance) {
          ++c.near_ties;
        } else {
          ++c.mismatches;
        }
      }
      rl = ref.Step(run.tokens[i]);
      if (!rl.ok()) return rl.status();
    }
  }
  c.seconds = Seconds(start);
  return c;
}

// 4. Multi-turn reuse: turn 2 (everything so far and new tokens) reusing turn 1's cached
// blocks, against the same turn recomputed in a namespace of its own.
struct TurnTwo {
  size_t tokens = 0;
  size_t reused_tokens = 0;
  double ttft_reuse = 0;
  double ttft_recompute = 0;
  int32_t first_reuse = -1;
  int32_t first_recompute = -1;
  bool ok() const { return first_reuse == first_recompute; }
};

absl::StatusOr<TurnTwo> RunTurnTwo(const Options& o, const Plan& plan, const llm::Decoder& decoder,
                                   Engine& engine, Stream& compute,
                                   const std::vector<int32_t>& turn2) {
  TurnTwo t;
  t.tokens = turn2.size();
  {
    PhaseStats st;
    const absl::Time start = absl::Now();
    // The cached prefix: the shortest match over all layers (each layer has its own chain).
    size_t matched = turn2.size();
    for (uint32_t l = 0; l < plan.model.num_layers; ++l) {
      absl::StatusOr<MatchResult> m = engine.Match("turn1", turn2, absl::StrFormat("layer=%u", l));
      if (!m.ok()) return m.status();
      matched = std::min(matched, m->matched_tokens);
    }
    // Keep at least one token to run (its logits are the first token's).
    if (matched == turn2.size()) matched -= o.block_tokens;
    t.reused_tokens = matched;
    StreamingSession second(decoder, engine, compute, "turn1", plan.stream_blocks);
    if (absl::Status s = second.Init(plan.max_step); !s.ok()) return s;
    second.ResumeAfter(absl::MakeConstSpan(turn2).first(matched));
    absl::StatusOr<std::vector<float>> l;
    for (size_t p = matched; p < turn2.size(); p += plan.max_step) {
      const size_t n = std::min<size_t>(plan.max_step, turn2.size() - p);
      l = second.Forward(absl::MakeConstSpan(turn2).subspan(p, n), true, &st);
      if (!l.ok()) return l.status();
    }
    t.first_reuse = llm::Argmax(*l);
    t.ttft_reuse = Seconds(start);
    if (absl::Status s = second.Drain(); !s.ok()) return s;
  }
  {
    PhaseStats st;
    const absl::Time start = absl::Now();
    StreamingSession cold(decoder, engine, compute, "recompute", plan.stream_blocks);
    if (absl::Status s = cold.Init(plan.max_step); !s.ok()) return s;
    Progress bar(!o.json, "recompute", turn2.size());
    absl::StatusOr<std::vector<float>> l;
    for (size_t p = 0; p < turn2.size(); p += o.chunk) {
      const size_t n = std::min<size_t>(o.chunk, turn2.size() - p);
      l = cold.Forward(absl::MakeConstSpan(turn2).subspan(p, n), true, &st);
      if (!l.ok()) return l.status();
      bar.Update(p + n);
    }
    t.first_recompute = llm::Argmax(*l);
    t.ttft_recompute = Seconds(start);
    if (absl::Status s = cold.Drain(); !s.ok()) return s;
  }
  return t;
}

// Everything the summary reports.
struct Results {
  double weights_seconds = 0;
  PhaseStats prefill;
  std::vector<DecodeRun> runs;
  Check check;
  TurnTwo turn;
  EngineStats final_stats;
};

double TokensPerSecond(const DecodeRun& r) { return r.stats.tokens / r.stats.seconds; }
double StallFraction(const DecodeRun& r) { return r.stats.stall_seconds / r.stats.seconds; }
uint64_t Delta(const DecodeRun& r, TierKind t, bool in) {
  return TierBytes(r.stats.after, t, in) - TierBytes(r.stats.before, t, in);
}

void PrintJson(const Options& o, const Plan& plan, Engine& engine, const llm::Decoder& decoder,
               const Results& r) {
  const EngineOptions& eo = plan.engine;
  const PrefetchStats& pf = r.final_stats.prefetch;
  nlohmann::ordered_json f = nlohmann::ordered_json::object();
  auto num = [&](const std::string& k, double v) { f[k] = json::RoundedNumber(v); };
  auto str = [&](const std::string& k, const std::string& v) { f[k] = v; };
  str("device", DeviceKindName(engine.device().kind()));
  str("device_name", engine.device().name());
  str("matmul", decoder.Describe());
  num("weights_seconds", r.weights_seconds);
  num("context_tokens", o.context);
  num("kv_mib", plan.kv_bytes / 1048576.0);
  num("gpu_tier_mib", eo.gpu_tier_bytes / 1048576.0);
  num("host_tier_mib", eo.host_tier_bytes / 1048576.0);
  num("kv_over_gpu", static_cast<double>(plan.kv_bytes) / eo.gpu_tier_bytes);
  num("copy_gbps", o.copy_gbps);
  num("prefill_tokens_per_s", o.context / r.prefill.seconds);
  for (const DecodeRun& run : r.runs) {
    const std::string sfx = run.mode == "prefetch" ? "prefetch" : "no_prefetch";
    const double seconds = run.stats.seconds;
    num("decode_tokens_per_s_" + sfx, TokensPerSecond(run));
    num("stall_fraction_" + sfx, StallFraction(run));
    // The engine's own stall metric (EngineStats::stall_ns) over the same decode: it counts
    // only waits that found bytes in flight, so it should agree with the demo's clock.
    num("engine_stall_fraction_" + sfx,
        static_cast<double>(run.stats.after.stall_ns - run.stats.before.stall_ns) * 1e-9 / seconds);
    num("gpu_bytes_in_" + sfx, static_cast<double>(Delta(run, TierKind::kGpu, true)));
    num("host_bytes_out_" + sfx, static_cast<double>(Delta(run, TierKind::kHost, false)));
    num("disk_bytes_out_" + sfx, static_cast<double>(Delta(run, TierKind::kDisk, false)));
    num("h2d_gbps_" + sfx, Delta(run, TierKind::kGpu, true) / seconds / 1e9);
    num("decode_seconds_" + sfx, seconds);
    // The disk during decode (BlockDeviceSampler): the engine's bytes read from its disk tier
    // over wall time and over the time the device had reads in flight (-1 where unknown), and
    // the engine's own busy-time read rate (a decaying average, TierStats).
    const double disk_bytes = static_cast<double>(Delta(run, TierKind::kDisk, false));
    num("disk_read_gbps_wall_" + sfx, disk_bytes / seconds / 1e9);
    const double busy = run.disk.busy_fraction >= 0 ? run.disk.busy_fraction * seconds : -1;
    num("disk_busy_seconds_" + sfx, busy);
    num("disk_read_gbps_busy_" + sfx, busy > 0 ? disk_bytes / busy / 1e9 : -1);
    num("disk_reads_in_flight_" + sfx, run.disk.mean_in_flight);
    num("disk_samples_" + sfx, static_cast<double>(run.disk.samples));
    num("disk_device_read_bytes_" + sfx, static_cast<double>(run.disk.device_read_bytes));
    const TierStats& disk = run.stats.after.tiers[static_cast<int>(TierKind::kDisk)];
    num("disk_engine_read_gbps_" + sfx, static_cast<double>(disk.read_bytes_per_s) / 1e9);
    num("disk_read_latency_ms_" + sfx, static_cast<double>(disk.read_latency_ns) * 1e-6);
  }
  num("block_bytes", static_cast<double>(plan.block));
  num("disk_queue_depth", eo.disk.queue_depth);
  str("cache_dir", eo.disk.directory);
  num("ttft_reuse_s", r.turn.ttft_reuse);
  num("ttft_recompute_s", r.turn.ttft_recompute);
  num("reused_tokens", static_cast<double>(r.turn.reused_tokens));
  num("prefetch_in_time", static_cast<double>(pf.in_time));
  num("prefetch_late", static_cast<double>(pf.late));
  num("prefetch_unused", static_cast<double>(pf.unused));
  num("max_logit_diff", r.check.max_diff);
  num("tolerance", o.tolerance);
  num("token_mismatches", r.check.mismatches);
  num("near_ties", r.check.near_ties);
  str("check", !r.check.ran ? "skipped" : (r.check.ok(o.tolerance) ? "pass" : "FAIL"));
  str("turn2_first_token_match", r.turn.ok() ? "yes" : "NO");
  std::printf("%s\n", json::Dump(f).c_str());
}

void PrintTable(const Options& o, Engine& engine, const Results& r) {
  const DecodeRun* with = nullptr;
  const DecodeRun* without = nullptr;
  for (const DecodeRun& run : r.runs) (run.mode == "prefetch" ? with : without) = &run;
  const DecodeRun& main_run = with != nullptr ? *with : *without;
  // One width for every column, wide enough for the widest cell ("123 MiB 12.34 GB/s").
  std::printf("\n%-22s %20s %20s\n", "", "prefetch", "no prefetch");
  using Cell = std::function<std::string(const DecodeRun&)>;
  auto row = [&](const char* label, const Cell& cell) {
    std::printf("%-22s %20s %20s\n", label, with != nullptr ? cell(*with).c_str() : "-",
                without != nullptr ? cell(*without).c_str() : "-");
  };
  row("decode tokens/s",
      [](const DecodeRun& d) { return absl::StrFormat("%.2f", TokensPerSecond(d)); });
  row("stall (waiting for KV)",
      [](const DecodeRun& d) { return absl::StrFormat("%.1f%%", 100 * StallFraction(d)); });
  row("host->GPU tier", [](const DecodeRun& d) {
    return absl::StrFormat("%.0f MiB %.2f GB/s", Delta(d, TierKind::kGpu, true) / 1048576.0,
                           Delta(d, TierKind::kGpu, true) / d.stats.seconds / 1e9);
  });
  row("read from disk", [](const DecodeRun& d) {
    return absl::StrFormat("%.0f MiB", Delta(d, TierKind::kDisk, false) / 1048576.0);
  });
  std::printf("\n  link ceiling: %s\n",
              engine.device().kind() == DeviceKind::kEmulated && o.copy_gbps > 0
                  ? absl::StrFormat("%.1f GB/s (emulated PCIe throttle)", o.copy_gbps).c_str()
                  : "see bench/run gpu-copy (cudaMemcpyAsync of one pinned buffer)");
  std::printf(
      "  prefill      %u tokens in %.1f s (%.0f tokens/s), %zu KV chunks streamed, "
      "stall %.1f%%\n",
      o.context, r.prefill.seconds, o.context / r.prefill.seconds, r.prefill.chunks,
      100 * r.prefill.stall_seconds / r.prefill.seconds);
  const PrefetchStats& pf = r.final_stats.prefetch;
  std::printf("  prefetch     %llu in time, %llu late, %llu unused, %llu skipped\n",
              static_cast<unsigned long long>(pf.in_time), static_cast<unsigned long long>(pf.late),
              static_cast<unsigned long long>(pf.unused),
              static_cast<unsigned long long>(pf.skipped));
  const auto& ts = r.final_stats.tiers;
  std::printf(
      "  tiers        GPU %u/%zu blocks, host %zu/%zu, disk %zu blocks "
      "(%.0f MiB written, %.0f MiB read)\n",
      static_cast<unsigned>(ts[0].used_blocks), ts[0].capacity_blocks, ts[1].used_blocks,
      ts[1].capacity_blocks, ts[2].used_blocks, ts[2].bytes_in / 1048576.0,
      ts[2].bytes_out / 1048576.0);
  std::printf(
      "  turn 2       TTFT %.2f s reusing %zu cached tokens vs %.2f s recomputing "
      "%zu (%.1fx); first tokens %s\n",
      r.turn.ttft_reuse, r.turn.reused_tokens, r.turn.ttft_recompute, r.turn.tokens,
      r.turn.ttft_recompute / r.turn.ttft_reuse, r.turn.ok() ? "agree" : "DIFFER");
  if (r.check.ran) {
    std::printf(
        "  check        vs all-resident reference: max |logit diff| %.2e (tolerance "
        "%.0e), %d token mismatches, %d near-ties; %s (%.1f s)\n",
        r.check.max_diff, o.tolerance, r.check.mismatches, r.check.near_ties,
        r.check.ok(o.tolerance) ? "PASS" : "FAIL", r.check.seconds);
  }
  std::printf("  decoded      %s\n", absl::StrJoin(main_run.tokens, " ").c_str());
}

// The demo's four phases (the file's head comment) and the summary. Exit code: 0, or 1 where
// a phase failed or a check disagreed.
int Run(const Options& o) {
  auto fail = [&](const absl::Status& s) {
    std::fprintf(stderr, "kvtier demo: %s\n", s.ToString().c_str());
    return 1;
  };
  // The cache directory: --dir, or a fresh temporary one removed at the end.
  std::string dir = o.dir;
  const bool temp_dir = dir.empty();
  if (temp_dir) {
    char tmpl[] = "/tmp/kvtier-demo-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return fail(absl::InternalError("mkdtemp failed"));
    dir = tmpl;
  }
  struct Cleanup {
    std::string dir;
    bool remove;
    ~Cleanup() {
      if (remove) {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
    }
  } cleanup{dir, temp_dir};
  absl::StatusOr<Plan> plan_or = MakePlan(o, dir);
  if (!plan_or.ok()) return fail(plan_or.status());
  const Plan& plan = *plan_or;

  absl::StatusOr<std::unique_ptr<Engine>> opened = Engine::Open(plan.engine);
  if (!opened.ok()) return fail(opened.status());
  Engine& engine = **opened;
  absl::StatusOr<std::unique_ptr<Stream>> compute = engine.device().CreateStream();
  if (!compute.ok()) return fail(compute.status());
  absl::StatusOr<LoadedDecoder> loaded = LoadDecoder(o, plan.model, engine);
  if (!loaded.ok()) return fail(loaded.status());
  const llm::Decoder& decoder = *loaded->decoder;

  // The prompt: random token ids from the seed.
  std::mt19937 rng(static_cast<uint32_t>(o.seed * 7919 + 13));
  std::vector<int32_t> prompt(o.context);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % plan.model.vocab_size);
  if (!o.json) PrintHeader(o, plan, engine, *loaded);

  Results r;
  r.weights_seconds = loaded->seconds;
  StreamingSession session(decoder, engine, **compute, "turn1", plan.stream_blocks);
  if (absl::Status s = session.Init(plan.max_step); !s.ok()) return fail(s);
  absl::StatusOr<std::vector<float>> logits = Prefill(o, prompt, engine, session, &r.prefill);
  if (!logits.ok()) return fail(logits.status());
  absl::StatusOr<std::vector<DecodeRun>> runs =
      Decode(o, plan.engine.disk.directory, engine, session, *std::move(logits));
  if (!runs.ok()) return fail(runs.status());
  r.runs = *std::move(runs);
  if (absl::Status s = session.Drain(); !s.ok()) return fail(s);
  absl::StatusOr<Check> check = CheckAgainstReference(o, decoder, prompt, r.runs);
  if (!check.ok()) return fail(check.status());
  r.check = *check;

  std::vector<int32_t> turn2 = session.tokens();
  for (uint32_t i = 0; i < o.turn2; ++i) {
    turn2.push_back(static_cast<int32_t>(rng() % plan.model.vocab_size));
  }
  absl::StatusOr<TurnTwo> turn = RunTurnTwo(o, plan, decoder, engine, **compute, turn2);
  if (!turn.ok()) return fail(turn.status());
  r.turn = *turn;
  r.final_stats = engine.Stats();

  if (o.json) {
    PrintJson(o, plan, engine, decoder, r);
  } else {
    PrintTable(o, engine, r);
  }
  int rc = 0;
  if (!r.check.ok(o.tolerance)) {
    std::fprintf(stderr,
                 "kvtier demo: FAILED: the tiered decode disagrees with the all-resident "
                 "reference (max |logit diff| %.3g > %.3g or %d token mismatches)\n",
                 r.check.max_diff, o.tolerance, r.check.mismatches);
    rc = 1;
  }
  if (!r.turn.ok()) {
    std::fprintf(stderr,
                 "kvtier demo: FAILED: turn 2's first token with reuse (%d) differs from "
                 "recompute (%d)\n",
                 r.turn.first_reuse, r.turn.first_recompute);
    rc = 1;
  }
  return rc;
}

}  // namespace
}  // namespace kvtier::demo

int main(int argc, char** argv) {
  kvtier::demo::Options o;
  CLI::App app(
      "A Llama-style model decoding over a context whose KV cache is many times its GPU budget, "
      "the KV living in kvtier's GPU, host and disk tiers",
      "kvtier_long_context_demo");
  kvtier::demo::AddFlags(app, &o);
  if (std::optional<int> exit_code = kvtier::flags::Parse(app, argc, argv)) return *exit_code;
  if (absl::Status s = kvtier::demo::CheckOptions(o); !s.ok()) {
    std::fprintf(stderr, "kvtier demo: %s\n", s.ToString().c_str());
    return 2;
  }
  return kvtier::demo::Run(o);
}
