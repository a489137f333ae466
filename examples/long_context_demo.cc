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
#include "examples/long_context_demo_session.h"
#include "io/block_device_sampler.h"
#include "kvtier/engine.h"

namespace kvtier::demo {
namespace {

// ------------------------------------------------------------------------------ options

struct Options {
  uint32_t context = 2048;     // prompt tokens
  uint32_t chunk = 256;        // prefill chunk, tokens
  uint32_t decode = 24;        // tokens decoded per prefetch mode
  uint32_t turn2 = 128;        // new tokens of the second turn
  // 64 tokens x 1 layer = 128 KiB blocks at the default shape. Each block is one disk record
  // and one read: at 16 tokens (vLLM's page size, 32 KiB) the per-read costs of the disk path
  // dominated on a 2-core VM (decode 36-52 tokens/s against 61-75 at 64, stall 0.37-0.45
  // against 0.25-0.36, docs/benchmarks.md), as storage caches such as LMCache also store
  // larger chunks than the attention kernel's page.
  uint32_t block_tokens = 64;
  uint32_t layers = 4;
  uint32_t d_model = 512;
  uint32_t heads = 8;
  uint32_t kv_heads = 8;
  uint32_t ffn = 1024;
  uint32_t vocab = 4096;
  uint64_t seed = 1;
  std::string weights;          // safetensors file; empty = random weights from --seed
  size_t gpu_mib = 0;           // 0 = KV / 8
  size_t host_mib = 0;          // 0 = KV / 2
  size_t stream_blocks = 0;     // blocks per streamed attention chunk; 0 = GPU tier / 8
  double copy_gbps = 8.0;       // emulated PCIe
  std::string prefetch = "both";  // on, off, both (the default shows both columns)
  DeviceChoice device = DeviceChoice::kAuto;
  std::string dir;          // cache directory; empty = a temporary one, removed after
  double tolerance = 5e-3;  // max |logit difference| vs the all-resident reference
  bool check = true;
  bool json = false;
  bool per_step = false;       // one line of metrics per decode step
  bool sample_disk = false;    // sample the cache directory's block device during decode
  std::string preset;          // empty, "gpu" or "llama3-8b"
  std::string matmul = "auto";        // auto (device on a GPU), cpu, device
  std::string weight_dtype = "fp16";  // device matmuls: fp16 or bf16
};

// --preset=llama3-8b: Llama 3 8B's shape (vocabulary cut to 32000 to save memory; Llama 3's
// is 128256) with random weights, its matmuls through cuBLAS.
constexpr char kLlamaPreset[] = "llama3-8b";

// The demo's flags (CLI11; --help lists them with their defaults).
void AddFlags(CLI::App& app, Options* o) {
  auto u32 = [&](const char* name, uint32_t* v, const char* help) {
    app.add_option(name, *v, help)->capture_default_str();
  };
  u32("--context", &o->context, "prompt tokens");
  u32("--chunk", &o->chunk, "prefill chunk in tokens, a multiple of --block-tokens");
  u32("--decode", &o->decode, "tokens decoded per prefetch mode");
  u32("--turn2", &o->turn2, "new tokens in the second turn");
  u32("--block-tokens", &o->block_tokens, "tokens per KV block");
  u32("--layers", &o->layers, "model shape: layers");
  u32("--d-model", &o->d_model, "model shape: model dimension");
  u32("--heads", &o->heads, "model shape: attention heads");
  u32("--kv-heads", &o->kv_heads, "model shape: KV heads");
  u32("--ffn", &o->ffn, "model shape: feed-forward dimension");
  u32("--vocab", &o->vocab, "model shape: vocabulary");
  flags::AddSeed(app, &o->seed)->description("weight seed (random weights)");
  app.add_option("--weights", o->weights, "FILE.safetensors: real weights instead of --seed's");
  app.add_option("--gpu-mib", o->gpu_mib, "GPU tier budget, MiB (default: KV / 8)");
  app.add_option("--host-mib", o->host_mib, "host tier, MiB (default: KV / 2)");
  app.add_option("--stream-blocks", o->stream_blocks,
                 "blocks per streamed attention chunk (default: GPU tier / 8)");
  flags::AddCopyGbps(app, &o->copy_gbps,
                     "emulated host<->device bandwidth in GB/s, 0 = unthrottled");
  app.add_option("--prefetch", o->prefetch, "look-ahead prefetch during decode")
      ->check(CLI::IsMember({"on", "off", "both"}))
      ->capture_default_str();
  flags::AddDevice(app, &o->device);
  flags::AddDir(app, &o->dir, "cache directory (default: a temporary one, removed at exit)");
  app.add_option("--tolerance", o->tolerance,
                 "max |logit difference| vs the all-resident reference")
      ->check(CLI::PositiveNumber.description("> 0"))
      ->capture_default_str();
  app.add_flag_callback(
      "--no-check", [o] { o->check = false; }, "skip the all-resident reference");
  // Runs while the command line is read, before the other flags are stored: a flag given
  // beside --preset wins, wherever it stands.
  app.add_option("--matmul", o->matmul,
                 "where the model's matmuls run: cpu (float32), device (fp16/bf16 weights: "
                 "cuBLAS on a GPU, its CPU reference on the emulated device), auto (device on "
                 "a GPU, else cpu)")
      ->check(CLI::IsMember({"auto", "cpu", "device"}))
      ->capture_default_str();
  app.add_option("--weight-dtype", o->weight_dtype, "weights of the device matmuls")
      ->check(CLI::IsMember({"fp16", "bf16"}))
      ->capture_default_str();
  app.add_option_function<std::string>(
         "--preset",
         [o](const std::string& preset) {
           o->preset = preset;
           o->device = DeviceChoice::kCuda;
           o->copy_gbps = 0;
           o->check = false;  // the double-precision reference is too slow at this length
           if (preset == "gpu") {
             o->context = 32768;
             o->chunk = 1024;
             o->decode = 64;
             return;
           }
           // llama3-8b: 32 x 128 KiB of fp16 KV per token, 1 GiB at 8192 tokens, 8x the GPU
           // tier (KV / 8) and 2x the host tier (KV / 2): decode streams host and disk.
           o->layers = 32;
           o->d_model = 4096;
           o->heads = 32;
           o->kv_heads = 8;
           o->ffn = 14336;
           o->vocab = 32000;
           o->context = 8192;
           o->chunk = 1024;
           o->decode = 32;
           o->matmul = "device";
         },
         "gpu: a long context streamed through a small GPU budget; llama3-8b: Llama 3 8B's "
         "shape (32 layers, 32 q / 8 KV heads of 128, d_model 4096, ffn 14336; vocabulary "
         "32000), random fp16 weights on the GPU, matmuls through cuBLAS. Both need a GPU; "
         "flags given beside a preset win")
      ->check(CLI::IsMember({"gpu", kLlamaPreset}))
      ->trigger_on_parse();
  app.add_flag("--per-step", o->per_step,
               "one line per decode step: time, stall, bytes per tier, prefetch hits");
  app.add_flag("--json", o->json, "one JSON object instead of tables");
  app.add_flag("--sample-disk", o->sample_disk,
               "sample the cache directory's block device during decode (reads in flight every "
               "200 us, Linux): the disk's busy time and queue depth, in the JSON");
}

absl::Status CheckOptions(const Options& o) {
  if (o.block_tokens == 0 || o.chunk == 0 || o.chunk % o.block_tokens != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--chunk=%u must be a positive multiple of --block-tokens=%u", o.chunk, o.block_tokens));
  }
  if (o.context < o.block_tokens) {
    return absl::InvalidArgumentError("--context must be at least one block of tokens");
  }
  if (o.copy_gbps < 0 || !(o.tolerance > 0)) {
    return absl::InvalidArgumentError("--copy-gbps must be >= 0 and --tolerance > 0");
  }
  // Its 7e9 parameters' matmuls would take hours per context on the CPU.
  if (o.preset == kLlamaPreset && (o.device == DeviceChoice::kEmulated || o.matmul == "cpu")) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--preset=%s runs its matmuls through cuBLAS on a CUDA device; with --device=%s "
        "--matmul=%s they would run on the CPU for hours (use the default shape, or "
        "--preset=gpu, here)",
        kLlamaPreset, DeviceChoiceName(o.device), o.matmul));
  }
  return absl::OkStatus();
}

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

int Run(const Options& o) {
  auto fail = [&](const absl::Status& s) {
    std::fprintf(stderr, "kvtier demo: %s\n", s.ToString().c_str());
    return 1;
  };
  llm::ModelConfig mc;
  mc.num_layers = o.layers;
  mc.d_model = o.d_model;
  mc.num_heads = o.heads;
  mc.num_kv_heads = o.kv_heads;
  mc.head_dim = o.heads == 0 ? 0 : o.d_model / o.heads;
  mc.ffn_dim = o.ffn;
  mc.vocab_size = o.vocab;
  if (absl::Status s = mc.Validate(); !s.ok()) return fail(s);

  EngineOptions eo;
  eo.geometry = Geometry{1, mc.num_kv_heads, mc.head_dim, DType::kFloat16, o.block_tokens};
  if (absl::Status s = eo.geometry.Validate(); !s.ok()) return fail(s);
  const size_t block = eo.geometry.block_bytes();
  const size_t total_tokens = size_t{o.context} + 2 * o.decode + o.turn2 + o.block_tokens;
  const size_t kv_bytes = size_t{o.context} * mc.num_layers * eo.geometry.token_bytes() * 2;
  // The device decoder draws other random weights, and rounds them: another model.
  const std::string numerics =
      o.matmul == "cpu" ? "" : absl::StrFormat(":matmul-%s-%s", o.matmul, o.weight_dtype);
  eo.model_fingerprint = (o.weights.empty() ? absl::StrFormat("demo-random-seed-%d", o.seed)
                                            : "demo-weights:" + o.weights) +
                         numerics;
  eo.key_hash = KeyHash::kXxh3;
  eo.device.choice = o.device;
  eo.device.emulated_copy_gbps = o.copy_gbps;
  eo.gpu_tier_bytes = o.gpu_mib != 0 ? o.gpu_mib << 20 : std::max(kv_bytes / 8, 16 * block);
  eo.host_tier_bytes = o.host_mib != 0 ? o.host_mib << 20 : std::max(kv_bytes / 2, 16 * block);
  eo.namespaces = {"turn1", "recompute"};
  const uint32_t gpu_blocks = static_cast<uint32_t>(eo.gpu_tier_bytes / block);
  const uint32_t stream_blocks =
      o.stream_blocks != 0 ? static_cast<uint32_t>(o.stream_blocks) : std::max(1u, gpu_blocks / 8);
  if (3 * stream_blocks + 1 > gpu_blocks / 2) {
    return fail(absl::InvalidArgumentError(absl::StrFormat(
        "--stream-blocks=%u: three chunks in flight must fit in half the GPU tier (%u blocks)",
        stream_blocks, gpu_blocks)));
  }
  eo.prefetch_budget_bytes = size_t{gpu_blocks / 2} * block;
  // A disk tier in a fresh directory; every evicted block is admitted (the context must
  // survive in full).
  std::string dir = o.dir;
  const bool temp_dir = dir.empty();
  if (temp_dir) {
    char tmpl[] = "/tmp/kvtier-demo-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return fail(absl::InternalError("mkdtemp failed"));
    dir = tmpl;
  }
  eo.disk.directory = dir + "/cache";
  eo.disk.region_bytes = 4 << 20;
  eo.disk.capacity_bytes =
      std::max<uint64_t>(4 * total_tokens * mc.num_layers * eo.geometry.token_bytes() * 2 + (64 << 20),
                         32ull << 20) / eo.disk.region_bytes * eo.disk.region_bytes;
  eo.disk.admit_min_seen = 1;
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

  int rc = 0;
  absl::StatusOr<std::unique_ptr<Engine>> opened = Engine::Open(eo);
  if (!opened.ok()) return fail(opened.status());
  Engine& engine = **opened;
  absl::StatusOr<std::unique_ptr<Stream>> compute_or = engine.device().CreateStream();
  if (!compute_or.ok()) return fail(compute_or.status());
  std::unique_ptr<Stream> compute = std::move(*compute_or);

  // The decoder: matmuls on the device (cuBLAS on a GPU, its CPU reference on the emulated
  // device) or on the CPU in float32. Declared after the engine: destroyed before its device.
  const absl::Time weights_start = absl::Now();
  const bool on_gpu = engine.device().kind() == DeviceKind::kCuda;
  bool device_matmul = o.matmul == "device" || (o.matmul == "auto" && on_gpu);
  std::unique_ptr<llm::CublasLibrary> cublas;
  if (device_matmul && on_gpu) {
    absl::StatusOr<std::unique_ptr<llm::CublasLibrary>> lib = llm::CublasLibrary::Load();
    if (lib.ok()) {
      cublas = std::move(*lib);
    } else if (o.preset == kLlamaPreset) {
      return fail(absl::FailedPreconditionError(absl::StrFormat(
          "--preset=%s needs cuBLAS for its matmuls (set LD_LIBRARY_PATH or KVTIER_CUBLAS to "
          "libcublas.so.13): %s",
          kLlamaPreset, lib.status().message())));
    } else {
      std::fprintf(stderr,
                   "kvtier demo: matmuls on the CPU in float32: cuBLAS is unavailable (%s)\n",
                   std::string(lib.status().message()).c_str());
      device_matmul = false;
    }
  }
  std::optional<llm::Model> cpu_model;
  std::unique_ptr<llm::Decoder> decoder;
  if (!o.weights.empty() || !device_matmul) {
    absl::StatusOr<llm::Model> m = o.weights.empty() ? llm::Model::Random(mc, o.seed)
                                                     : llm::Model::FromSafetensors(o.weights, mc);
    if (!m.ok()) return fail(m.status());
    cpu_model.emplace(*std::move(m));
  }
  if (device_matmul) {
    llm::DeviceDecoder::Options dopt;
    dopt.weight_dtype = o.weight_dtype == "bf16" ? DType::kBFloat16 : DType::kFloat16;
    dopt.cublas = cublas.get();
    absl::StatusOr<std::unique_ptr<llm::DeviceDecoder>> d =
        cpu_model.has_value() ? llm::DeviceDecoder::FromModel(*cpu_model, engine.device(), dopt)
                              : llm::DeviceDecoder::Random(mc, o.seed, engine.device(), dopt);
    if (!d.ok()) return fail(d.status());
    decoder = std::move(*d);
    cpu_model.reset();  // the device decoder keeps what it needs
  } else {
    decoder = std::make_unique<llm::CpuDecoder>(&*cpu_model);
  }
  const double weights_seconds = Seconds(weights_start);

  // The prompt: random token ids from the seed.
  std::mt19937 rng(static_cast<uint32_t>(o.seed * 7919 + 13));
  std::vector<int32_t> prompt(o.context);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % mc.vocab_size);

  if (!o.json) {
    std::printf("kvtier long-context demo\n");
    std::printf("  model    %s (%s)\n", mc.ToString().c_str(),
                o.weights.empty() ? "random weights" : o.weights.c_str());
    std::printf("  matmuls  %s (weights ready in %.1f s)\n", decoder->Describe().c_str(),
                weights_seconds);
    std::printf("  device   %s\n", engine.device().name().c_str());
    std::printf("  context  %u tokens, KV %.1f MiB (fp16) in blocks of %u tokens x 1 layer "
                "(%zu KiB)\n",
                o.context, kv_bytes / 1048576.0, o.block_tokens, block >> 10);
    std::printf("  tiers    GPU %.1f MiB (KV is %.1fx it), host %.1f MiB, disk %s\n",
                eo.gpu_tier_bytes / 1048576.0, static_cast<double>(kv_bytes) / eo.gpu_tier_bytes,
                eo.host_tier_bytes / 1048576.0, eo.disk.directory.c_str());
    std::printf("  stream   %u blocks per attention chunk, prefetch budget %.1f MiB\n\n",
                stream_blocks, engine.Stats().prefetch.budget_bytes / 1048576.0);  // in effect
  }

  const uint32_t max_step = std::max(o.chunk, o.turn2 + o.block_tokens);
  StreamingSession session(*decoder, engine, *compute, "turn1", stream_blocks);
  if (absl::Status s = session.Init(max_step); !s.ok()) return fail(s);

  // 1. Prefill.
  PhaseStats prefill;
  prefill.before = engine.Stats();
  absl::Time t0 = absl::Now();
  Progress bar(!o.json, "prefill", o.context);
  std::vector<float> logits;
  for (uint32_t p = 0; p < o.context; p += o.chunk) {
    const uint32_t n = std::min(o.chunk, o.context - p);
    absl::StatusOr<std::vector<float>> l =
        session.Forward(absl::MakeConstSpan(prompt).subspan(p, n), /*hint=*/true, &prefill);
    if (!l.ok()) return fail(l.status());
    logits = std::move(*l);
    bar.Update(p + n, absl::StrFormat("%u tokens", p + n));
  }
  prefill.seconds = Seconds(t0);
  prefill.after = engine.Stats();

  // 2. Decode, per prefetch mode.
  std::vector<DecodeRun> runs;
  std::vector<std::string> modes;
  if (o.prefetch == "on" || o.prefetch == "both") modes.push_back("prefetch");
  if (o.prefetch == "off" || o.prefetch == "both") modes.push_back("no-prefetch");
  for (const std::string& mode : modes) {
    DecodeRun run;
    run.mode = mode;
    run.stats.before = engine.Stats();
    std::optional<BlockDeviceSampler> sampler;
    if (o.sample_disk) sampler.emplace(eo.disk.directory);
    Progress dbar(!o.json, mode == "prefetch" ? "decode" : "decode/np", o.decode);
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
      if (!l.ok()) return fail(l.status());
      logits = std::move(*l);
      if (o.per_step && !o.json) {
        const EngineStats a = engine.Stats();
        std::printf("  %-11s step %3u  %6.1f ms  stall %6.1f ms  host->GPU %5.1f MiB  "
                    "disk->host %5.1f MiB  prefetch +%llu in time +%llu late +%llu unused\n",
                    mode.c_str(), i, 1e3 * Seconds(step_start),
                    1e3 * (run.stats.stall_seconds - stall_before),
                    (TierBytes(a, TierKind::kGpu, true) -
                     TierBytes(step_before, TierKind::kGpu, true)) / 1048576.0,
                    (TierBytes(a, TierKind::kDisk, false) -
                     TierBytes(step_before, TierKind::kDisk, false)) / 1048576.0,
                    static_cast<unsigned long long>(a.prefetch.in_time - step_before.prefetch.in_time),
                    static_cast<unsigned long long>(a.prefetch.late - step_before.prefetch.late),
                    static_cast<unsigned long long>(a.prefetch.unused - step_before.prefetch.unused));
      }
      dbar.Update(i + 1, absl::StrFormat("%.1f tok/s", (i + 1) / Seconds(start)));
    }
    run.stats.seconds = Seconds(start);
    run.stats.after = engine.Stats();
    if (sampler.has_value()) run.disk = sampler->Stop();
    runs.push_back(std::move(run));
  }
  if (absl::Status s = session.Drain(); !s.ok()) return fail(s);

  // 3. The all-resident reference, fed the same tokens.
  double max_diff = 0;
  int mismatches = 0, near_ties = 0;
  double check_seconds = 0;
  if (o.check) {
    const absl::Time start = absl::Now();
    llm::ReferenceSession ref(decoder.get());
    Progress rbar(!o.json, "reference", o.context);
    absl::StatusOr<std::vector<float>> rl;
    for (uint32_t p = 0; p < o.context; p += o.chunk) {
      const uint32_t n = std::min(o.chunk, o.context - p);
      rl = ref.Prefill(absl::MakeConstSpan(prompt).subspan(p, n));
      if (!rl.ok()) return fail(rl.status());
      rbar.Update(p + n);
    }
    for (const DecodeRun& run : runs) {
      for (size_t i = 0; i < run.tokens.size(); ++i) {
        const std::vector<float>& mine = run.logits[i];
        for (size_t v = 0; v < mine.size(); ++v) {
          max_diff = std::max(max_diff, static_cast<double>(std::fabs(mine[v] - (*rl)[v])));
        }
        const int32_t want = llm::Argmax(*rl);
        if (want != run.tokens[i]) {
          // A near-tie in the reference itself is not a failure of the tiers.
          std::vector<float> sorted = *rl;
          std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
          if (sorted[0] - sorted[1] <= o.tolerance) {
            ++near_ties;
          } else {
            ++mismatches;
          }
        }
        rl = ref.Step(run.tokens[i]);
        if (!rl.ok()) return fail(rl.status());
      }
    }
    check_seconds = Seconds(start);
  }
  const bool check_ok = !o.check || (mismatches == 0 && max_diff <= o.tolerance);

  // 4. Multi-turn reuse: turn 2 = everything so far + new tokens.
  std::vector<int32_t> turn2 = session.tokens();
  for (uint32_t i = 0; i < o.turn2; ++i) turn2.push_back(static_cast<int32_t>(rng() % mc.vocab_size));
  double ttft_reuse = 0, ttft_recompute = 0;
  size_t reused_tokens = 0;
  int32_t first_reuse = -1, first_recompute = -1;
  {
    PhaseStats st;
    const absl::Time start = absl::Now();
    // The cached prefix: the shortest match over all layers (each layer has its own chain).
    size_t matched = turn2.size();
    for (uint32_t l = 0; l < mc.num_layers; ++l) {
      absl::StatusOr<MatchResult> m =
          engine.Match("turn1", turn2, absl::StrFormat("layer=%u", l));
      if (!m.ok()) return fail(m.status());
      matched = std::min(matched, m->matched_tokens);
    }
    // Keep at least one token to run (its logits are the first token's).
    if (matched == turn2.size()) matched -= o.block_tokens;
    reused_tokens = matched;
    StreamingSession second(*decoder, engine, *compute, "turn1", stream_blocks);
    if (absl::Status s = second.Init(max_step); !s.ok()) return fail(s);
    second.ResumeAfter(absl::MakeConstSpan(turn2).first(matched));
    absl::StatusOr<std::vector<float>> l;
    for (size_t p = matched; p < turn2.size(); p += max_step) {
      const size_t n = std::min<size_t>(max_step, turn2.size() - p);
      l = second.Forward(absl::MakeConstSpan(turn2).subspan(p, n), true, &st);
      if (!l.ok()) return fail(l.status());
    }
    first_reuse = llm::Argmax(*l);
    ttft_reuse = Seconds(start);
    if (absl::Status s = second.Drain(); !s.ok()) return fail(s);
  }
  {
    PhaseStats st;
    const absl::Time start = absl::Now();
    StreamingSession cold(*decoder, engine, *compute, "recompute", stream_blocks);
    if (absl::Status s = cold.Init(max_step); !s.ok()) return fail(s);
    Progress cbar(!o.json, "recompute", turn2.size());
    absl::StatusOr<std::vector<float>> l;
    for (size_t p = 0; p < turn2.size(); p += o.chunk) {
      const size_t n = std::min<size_t>(o.chunk, turn2.size() - p);
      l = cold.Forward(absl::MakeConstSpan(turn2).subspan(p, n), true, &st);
      if (!l.ok()) return fail(l.status());
      cbar.Update(p + n);
    }
    first_recompute = llm::Argmax(*l);
    ttft_recompute = Seconds(start);
    if (absl::Status s = cold.Drain(); !s.ok()) return fail(s);
  }
  const bool turn_ok = first_reuse == first_recompute;

  // Summary.
  const EngineStats final_stats = engine.Stats();
  auto run_field = [&](const DecodeRun& r, const char* what) -> double {
    const double s = r.stats.seconds;
    if (std::string(what) == "tps") return r.stats.tokens / s;
    if (std::string(what) == "stall") return r.stats.stall_seconds / s;
    return 0;
  };
  const DecodeRun* with = nullptr;
  const DecodeRun* without = nullptr;
  for (const DecodeRun& r : runs) (r.mode == "prefetch" ? with : without) = &r;
  const DecodeRun& main_run = with != nullptr ? *with : *without;
  auto delta = [&](const DecodeRun& r, TierKind t, bool in) {
    return TierBytes(r.stats.after, t, in) - TierBytes(r.stats.before, t, in);
  };
  const PrefetchStats pf = final_stats.prefetch;

  if (o.json) {
    nlohmann::ordered_json f = nlohmann::ordered_json::object();
    auto num = [&](const std::string& k, double v) { f[k] = json::RoundedNumber(v); };
    auto str = [&](const std::string& k, const std::string& v) { f[k] = v; };
    str("device", DeviceKindName(engine.device().kind()));
    str("device_name", engine.device().name());
    str("matmul", decoder->Describe());
    num("weights_seconds", weights_seconds);
    num("context_tokens", o.context);
    num("kv_mib", kv_bytes / 1048576.0);
    num("gpu_tier_mib", eo.gpu_tier_bytes / 1048576.0);
    num("host_tier_mib", eo.host_tier_bytes / 1048576.0);
    num("kv_over_gpu", static_cast<double>(kv_bytes) / eo.gpu_tier_bytes);
    num("copy_gbps", o.copy_gbps);
    num("prefill_tokens_per_s", o.context / prefill.seconds);
    for (const DecodeRun& r : runs) {
      const std::string sfx = r.mode == "prefetch" ? "prefetch" : "no_prefetch";
      num("decode_tokens_per_s_" + sfx, run_field(r, "tps"));
      num("stall_fraction_" + sfx, run_field(r, "stall"));
      // The engine's own stall metric (EngineStats::stall_ns) over the same decode: it counts
      // only waits that found bytes in flight, so it should agree with the demo's clock.
      num("engine_stall_fraction_" + sfx,
          static_cast<double>(r.stats.after.stall_ns - r.stats.before.stall_ns) * 1e-9 /
              r.stats.seconds);
      num("gpu_bytes_in_" + sfx, static_cast<double>(delta(r, TierKind::kGpu, true)));
      num("host_bytes_out_" + sfx, static_cast<double>(delta(r, TierKind::kHost, false)));
      num("disk_bytes_out_" + sfx, static_cast<double>(delta(r, TierKind::kDisk, false)));
      num("h2d_gbps_" + sfx, delta(r, TierKind::kGpu, true) / r.stats.seconds / 1e9);
      num("decode_seconds_" + sfx, r.stats.seconds);
      // The disk during decode (BlockDeviceSampler): the engine's bytes read from its disk tier
      // over wall time and over the time the device had reads in flight (-1 where unknown), and the
      // engine's own busy-time read rate (a decaying average, TierStats).
      const double disk_bytes = static_cast<double>(delta(r, TierKind::kDisk, false));
      num("disk_read_gbps_wall_" + sfx, disk_bytes / r.stats.seconds / 1e9);
      const double busy = r.disk.busy_fraction >= 0 ? r.disk.busy_fraction * r.stats.seconds : -1;
      num("disk_busy_seconds_" + sfx, busy);
      num("disk_read_gbps_busy_" + sfx, busy > 0 ? disk_bytes / busy / 1e9 : -1);
      num("disk_reads_in_flight_" + sfx, r.disk.mean_in_flight);
      num("disk_samples_" + sfx, static_cast<double>(r.disk.samples));
      num("disk_device_read_bytes_" + sfx, static_cast<double>(r.disk.device_read_bytes));
      num("disk_engine_read_gbps_" + sfx,
          static_cast<double>(
              r.stats.after.tiers[static_cast<int>(TierKind::kDisk)].read_bytes_per_s) /
              1e9);
      num("disk_read_latency_ms_" + sfx,
          static_cast<double>(
              r.stats.after.tiers[static_cast<int>(TierKind::kDisk)].read_latency_ns) *
              1e-6);
    }
    num("block_bytes", static_cast<double>(block));
    num("disk_queue_depth", eo.disk.queue_depth);
    str("cache_dir", eo.disk.directory);
    num("ttft_reuse_s", ttft_reuse);
    num("ttft_recompute_s", ttft_recompute);
    num("reused_tokens", static_cast<double>(reused_tokens));
    num("prefetch_in_time", static_cast<double>(pf.in_time));
    num("prefetch_late", static_cast<double>(pf.late));
    num("prefetch_unused", static_cast<double>(pf.unused));
    num("max_logit_diff", max_diff);
    num("tolerance", o.tolerance);
    num("token_mismatches", mismatches);
    num("near_ties", near_ties);
    str("check", !o.check ? "skipped" : (check_ok ? "pass" : "FAIL"));
    str("turn2_first_token_match", turn_ok ? "yes" : "NO");
    std::printf("%s\n", json::Dump(f).c_str());
  } else {
    // One width for every column, wide enough for the widest cell ("123 MiB 12.34 GB/s").
    std::printf("\n%-22s %20s %20s\n", "", "prefetch", "no prefetch");
    auto col = [&](const DecodeRun* r, const std::string& what) -> std::string {
      if (r == nullptr) return "-";
      if (what == "tps") return absl::StrFormat("%.2f", run_field(*r, "tps"));
      if (what == "stall") return absl::StrFormat("%.1f%%", 100 * run_field(*r, "stall"));
      if (what == "h2d") {
        return absl::StrFormat("%.0f MiB %.2f GB/s", delta(*r, TierKind::kGpu, true) / 1048576.0,
                               delta(*r, TierKind::kGpu, true) / r->stats.seconds / 1e9);
      }
      if (what == "disk") {
        return absl::StrFormat("%.0f MiB", delta(*r, TierKind::kDisk, false) / 1048576.0);
      }
      return "";
    };
    std::printf("%-22s %20s %20s\n", "decode tokens/s", col(with, "tps").c_str(),
                col(without, "tps").c_str());
    std::printf("%-22s %20s %20s\n", "stall (waiting for KV)", col(with, "stall").c_str(),
                col(without, "stall").c_str());
    std::printf("%-22s %20s %20s\n", "host->GPU tier", col(with, "h2d").c_str(),
                col(without, "h2d").c_str());
    std::printf("%-22s %20s %20s\n", "read from disk", col(with, "disk").c_str(),
                col(without, "disk").c_str());
    std::printf("\n  link ceiling: %s\n",
                engine.device().kind() == DeviceKind::kEmulated && o.copy_gbps > 0
                    ? absl::StrFormat("%.1f GB/s (emulated PCIe throttle)", o.copy_gbps).c_str()
                    : "see bench/run gpu-copy (cudaMemcpyAsync of one pinned buffer)");
    std::printf("  prefill      %u tokens in %.1f s (%.0f tokens/s), %zu KV chunks streamed, "
                "stall %.1f%%\n",
                o.context, prefill.seconds, o.context / prefill.seconds, prefill.chunks,
                100 * prefill.stall_seconds / prefill.seconds);
    std::printf("  prefetch     %llu in time, %llu late, %llu unused, %llu skipped\n",
                static_cast<unsigned long long>(pf.in_time),
                static_cast<unsigned long long>(pf.late),
                static_cast<unsigned long long>(pf.unused),
                static_cast<unsigned long long>(pf.skipped));
    const auto& ts = final_stats.tiers;
    std::printf("  tiers        GPU %u/%zu blocks, host %zu/%zu, disk %zu blocks "
                "(%.0f MiB written, %.0f MiB read)\n",
                static_cast<unsigned>(ts[0].used_blocks), ts[0].capacity_blocks, ts[1].used_blocks,
                ts[1].capacity_blocks, ts[2].used_blocks, ts[2].bytes_in / 1048576.0,
                ts[2].bytes_out / 1048576.0);
    std::printf("  turn 2       TTFT %.2f s reusing %zu cached tokens vs %.2f s recomputing "
                "%zu (%.1fx); first tokens %s\n",
                ttft_reuse, reused_tokens, ttft_recompute, turn2.size(),
                ttft_recompute / ttft_reuse, turn_ok ? "agree" : "DIFFER");
    if (o.check) {
      std::printf("  check        vs all-resident reference: max |logit diff| %.2e (tolerance "
                  "%.0e), %d token mismatches, %d near-ties; %s (%.1f s)\n",
                  max_diff, o.tolerance, mismatches, near_ties, check_ok ? "PASS" : "FAIL",
                  check_seconds);
    }
    std::printf("  decoded      %s\n", absl::StrJoin(main_run.tokens, " ").c_str());
  }
  if (!check_ok) {
    std::fprintf(stderr,
                 "kvtier demo: FAILED: the tiered decode disagrees with the all-resident "
                 "reference (max |logit diff| %.3g > %.3g or %d token mismatches)\n",
                 max_diff, o.tolerance, mismatches);
    rc = 1;
  }
  if (!turn_ok) {
    std::fprintf(stderr,
                 "kvtier demo: FAILED: turn 2's first token with reuse (%d) differs from "
                 "recompute (%d)\n",
                 first_reuse, first_recompute);
    rc = 1;
  }
  compute.reset();
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
