// examples/long_context_demo_options.h — the long-context demo's options, its flags (CLI11;
// --help lists them with their defaults) and the checks of their combinations. The driver,
// which says what the demo does: examples/long_context_demo.cc.

#ifndef KVTIER_EXAMPLES_LONG_CONTEXT_DEMO_OPTIONS_H_
#define KVTIER_EXAMPLES_LONG_CONTEXT_DEMO_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/flags.h"
#include "kvtier/engine.h"

namespace kvtier::demo {

// ------------------------------------------------------------------------------ options

struct Options {
  uint32_t context = 2048;  // prompt tokens
  uint32_t chunk = 256;     // prefill chunk, tokens
  uint32_t decode = 24;     // tokens decoded per prefetch mode
  uint32_t turn2 = 128;     // new tokens of the second turn
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
  std::string weights;            // safetensors file; empty = random weights from --seed
  size_t gpu_mib = 0;             // 0 = KV / 8
  size_t host_mib = 0;            // 0 = KV / 2
  size_t stream_blocks = 0;       // blocks per streamed attention chunk; 0 = GPU tier / 8
  double copy_gbps = 8.0;         // emulated PCIe
  std::string prefetch = "both";  // on, off, both (the default shows both columns)
  DeviceChoice device = DeviceChoice::kAuto;
  std::string dir;          // cache directory; empty = a temporary one, removed after
  double tolerance = 5e-3;  // max |logit difference| vs the all-resident reference
  bool check = true;
  bool json = false;
  bool per_step = false;              // one line of metrics per decode step
  bool sample_disk = false;           // sample the cache directory's block device during decode
  std::string preset;                 // empty, "gpu" or "llama3-8b"
  std::string matmul = "auto";        // auto (device on a GPU), cpu, device
  std::string weight_dtype = "fp16";  // device matmuls: fp16 or bf16
};

// --preset=llama3-8b: Llama 3 8B's shape (vocabulary cut to 32000 to save memory; Llama 3's
// is 128256) with random weights, its matmuls through cuBLAS.
constexpr char kLlamaPreset[] = "llama3-8b";

// The demo's flags (CLI11; --help lists them with their defaults).
inline void AddFlags(CLI::App& app, Options* o) {
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

inline absl::Status CheckOptions(const Options& o) {
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

}  // namespace kvtier::demo

#endif  // KVTIER_EXAMPLES_LONG_CONTEXT_DEMO_OPTIONS_H_
