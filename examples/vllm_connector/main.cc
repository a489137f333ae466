// kvtier_vllm_connector_example — kvtier behind a vLLM-style KV connector.
//
// A toy inference engine (toy_engine.h) with its own paged KV pool in vLLM's layout (memory it
// owns, which the connector registers with kvtier, as vLLM's torch tensors would be) runs chat
// requests that share a system prompt, calling KvtierConnector exactly where vLLM calls its
// KV connector, and prints what happened at each step: what its own prefix cache held, what
// kvtier matched, which blocks were loaded into which pages and saved from which, the
// per-layer waits, preemption, and a second engine instance reusing the first one's KV.
//
// Every step reads back the KV in the pages and compares it byte for byte with what the toy
// model computes; the example exits 1 on any difference, or if a request did not hit the
// cache where it must.
//
//   kvtier_vllm_connector_example [--layout=nhd|hnd] [--device=auto|cuda|emulated]
//                                 [--copy-gbps=N] [--quiet]
//                                 [--kv-cache-dtype=auto|fp8_e4m3|fp8_e5m2] [--mla]
//                                 [--tp-size=N --tp-rank=R]
//
// The model shapes vLLM serves: --kv-cache-dtype as vLLM's (one byte per element), --mla a
// DeepSeek-like latent model (one 96-wide latent per token and layer, 64 + 32 rope: the pool
// is [pages, block_size, 96] per layer), --tp-size / --tp-rank this process as one rank of a
// tensor-parallel deployment (its pool holds the rank's KV heads; its keys are the rank's).

#include <cstdio>  // stderr
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/flags.h"
#include "kvtier/engine.h"
#include "toy_engine.h"

namespace {

using kvtier_vllm::ConnectorStats;
using kvtier_vllm::Request;
using kvtier_vllm::RequestReport;
using kvtier_vllm::ToyEngine;

struct Args {
  kvtier::PageLayout layout = kvtier::PageLayout::kNhd;
  kvtier::DeviceChoice device = kvtier::DeviceChoice::kAuto;
  double copy_gbps = 16.0;
  bool quiet = false;
  std::string kv_cache_dtype = "auto";
  bool mla = false;
  uint32_t tp_size = 1;
  uint32_t tp_rank = 0;
};

// Reads the flags (common/flags.h, on CLI11): nullopt to go on, else the exit code (0 after
// --help, 2 for a bad argument).
std::optional<int> ParseArgs(int argc, char** argv, Args* a) {
  CLI::App app(
      "kvtier behind a vLLM-style KV connector: a toy inference engine with its own "
      "paged KV pool, every step checked byte for byte",
      "kvtier_vllm_connector_example");
  kvtier::flags::AddParsed(app, "--layout", &a->layout, kvtier::ParsePageLayout,
                           kvtier::PageLayoutName, "nhd|hnd", "the paged pool's layout");
  kvtier::flags::AddDevice(app, &a->device);
  kvtier::flags::AddCopyGbps(app, &a->copy_gbps,
                             "emulated host<->device bandwidth in GB/s, 0 = unthrottled");
  app.add_flag("--quiet", a->quiet, "print only what went wrong and the summary");
  app.add_option("--kv-cache-dtype", a->kv_cache_dtype,
                 "as vLLM's: auto (the model's fp16) or an fp8 KV cache, fp8_e4m3 / fp8_e5m2")
      ->check(CLI::IsMember({"auto", "fp8_e4m3", "fp8_e5m2"}))
      ->capture_default_str();
  app.add_flag("--mla", a->mla,
               "a DeepSeek-like MLA model: one latent (64 + 32 rope) per token and layer, no K/V");
  app.add_option("--tp-size", a->tp_size, "tensor-parallel ranks of the deployment")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--tp-rank", a->tp_rank, "this process's rank, below --tp-size")
      ->check(CLI::Range(0, 63))
      ->capture_default_str();
  return kvtier::flags::Parse(app, argc, argv);
}

std::vector<int32_t> Tokens(int32_t seed, size_t n) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = (seed * 7919 + static_cast<int32_t>(i) * 31) % 32000;
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

int failures = 0;

void Expect(bool ok, const std::string& what) {
  if (!ok) {
    absl::FPrintF(stderr, "FAILED: %s\n", what.c_str());
    ++failures;
  }
}

#define CHECK_OK(expr)                                                          \
  do {                                                                          \
    const absl::Status _s = (expr);                                             \
    if (!_s.ok()) {                                                             \
      absl::FPrintF(stderr, "FAILED: %s: %s\n", #expr, _s.ToString().c_str()); \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

void Submit(ToyEngine& e, const std::string& id, std::vector<int32_t> prompt, size_t max_tokens) {
  Request r;
  r.request_id = id;
  r.prompt_token_ids = std::move(prompt);
  CHECK_OK(e.AddRequest(std::move(r), max_tokens));
}

const RequestReport& Report(ToyEngine& e, const std::string& id) {
  const RequestReport* r = e.report(id);
  if (r == nullptr) {
    absl::FPrintF(stderr, "FAILED: no report for %s\n", id.c_str());
    std::exit(1);
  }
  return *r;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (std::optional<int> exit_code = ParseArgs(argc, argv, &args)) return *exit_code;

  kvtier::EngineOptions o;
  // The whole model's KV cache; a tensor-parallel rank holds its slice of it.
  kvtier::Geometry model{/*num_layers=*/4, /*num_kv_heads=*/2, /*head_dim=*/64,
                         kvtier::DType::kFloat16, /*block_tokens=*/16};
  if (args.mla) {
    model = {4, 1, 96, kvtier::DType::kBFloat16, 16};
    model.kind = kvtier::KvKind::kLatent;
    model.rope_dim = 32;
  }
  if (args.kv_cache_dtype != "auto") model.dtype = *kvtier::ParseDType(args.kv_cache_dtype);
  absl::StatusOr<kvtier::Geometry> rank_geometry =
      model.ForTensorParallelRank(args.tp_rank, args.tp_size);
  CHECK_OK(rank_geometry.status());
  o.geometry = *rank_geometry;
  o.tensor_parallel = {args.tp_rank, args.tp_size, /*store_rank=*/0};
  // The fp8 scales would be part of the model's identity (docs/integration.md).
  o.model_fingerprint = "toy-model@vllm-connector-example";
  o.device.choice = args.device;
  o.device.emulated_copy_gbps = args.copy_gbps;
  o.gpu_tier_bytes = 0;  // connector mode: the inference engine owns all GPU KV memory
  o.host_tier_bytes = 64 * o.geometry.block_bytes();
  absl::StatusOr<std::unique_ptr<kvtier::Engine>> opened = kvtier::Engine::Open(o);
  CHECK_OK(opened.status());
  std::unique_ptr<kvtier::Engine> engine = std::move(*opened);

  absl::PrintF("kvtier vLLM-style connector example\n");
  absl::PrintF("device: %s\n", engine->device().name().c_str());
  if (args.mla) {
    absl::PrintF("model: %s; MLA pool, per layer [pages, %d, %d] (latent %d + rope %d)\n",
                 o.geometry.ToString().c_str(), o.geometry.block_tokens, o.geometry.head_dim,
                 o.geometry.latent_dim(), o.geometry.rope_dim);
  } else {
    absl::PrintF("model: %s; pool layout %s, per layer [2, pages, %d, %d, %d]%s\n",
                 o.geometry.ToString().c_str(), kvtier::PageLayoutName(args.layout),
                 args.layout == kvtier::PageLayout::kNhd ? o.geometry.block_tokens
                                                         : o.geometry.num_kv_heads,
                 args.layout == kvtier::PageLayout::kNhd ? o.geometry.num_kv_heads
                                                         : o.geometry.block_tokens,
                 o.geometry.head_dim,
                 args.layout == kvtier::PageLayout::kNhd ? " (NHD)" : " (HND)");
  }
  if (args.tp_size > 1) {
    absl::PrintF("tensor parallel: rank %d of %d; %s\n", args.tp_rank, args.tp_size,
                 args.mla ? "the latent is every rank's (shared keys)"
                          : absl::StrFormat("this rank holds KV heads [%d, %d) of %d",
                                            o.geometry.kv_head_begin,
                                            o.geometry.kv_head_begin + o.geometry.num_kv_heads,
                                            o.geometry.total_kv_heads)
                                .c_str());
  }
  absl::PrintF("pool: %s, registered with kvtier by the connector (RegisterDeviceMemory)\n",
               engine->device().kind() == kvtier::DeviceKind::kEmulated
                   ? "the toy engine's own host memory (the emulated device's \"GPU\")"
                   : "memory of the GPU (from kvtier's device: this example has no CUDA of "
                     "its own)");

  auto log = [&](const std::string& line) {
    if (!args.quiet) absl::PrintF("%s\n", line.c_str());
  };
  kvtier_vllm::ToyEngineOptions to;
  to.layout = args.layout;
  to.num_pages = 12;
  to.max_tokens_per_step = 64;
  to.log = [&](const std::string& line) { log("  [engine A] " + line); };
  absl::StatusOr<std::unique_ptr<ToyEngine>> created = ToyEngine::Create(engine.get(), to);
  CHECK_OK(created.status());
  ToyEngine& a = **created;

  const std::vector<int32_t> system = Tokens(1, 64);  // 4 blocks shared by every chat
  const std::vector<int32_t> chat1 = Concat(system, Tokens(2, 40));

  log("\n== 1. chat-1: nothing cached; chunked prefill saves each block once it is full");
  Submit(a, "chat-1", chat1, 4);
  CHECK_OK(a.RunToCompletion());
  Expect(Report(a, "chat-1").external_tokens == 0, "chat-1 should find nothing in kvtier");

  log("\n== 2. chat-2 shares the system prompt, whose pages are still in the pool");
  Submit(a, "chat-2", Concat(system, Tokens(3, 24)), 2);
  CHECK_OK(a.RunToCompletion());
  Expect(Report(a, "chat-2").local_hit_tokens == 64,
         "chat-2 should find the system prompt in the engine's own prefix cache");

  log("\n== 3. a long unrelated request takes every free page (the pool forgets chat-1)");
  Submit(a, "long", Tokens(4, 160), 1);
  CHECK_OK(a.RunToCompletion());

  log("\n== 4. chat-1 again: its pages were reused, kvtier still has its 6 full blocks");
  Submit(a, "chat-1b", chat1, 2);
  CHECK_OK(a.RunToCompletion());
  Expect(Report(a, "chat-1b").external_tokens == 96,
         absl::StrFormat("chat-1b should load 96 tokens from kvtier, loaded %d",
                         Report(a, "chat-1b").external_tokens));

  log("\n== 5. preemption: chat-3 is preempted after its first step and resumes from kvtier");
  Submit(a, "chat-3", Concat(system, Tokens(5, 100)), 2);
  CHECK_OK(a.Step().status());
  CHECK_OK(a.Preempt("chat-3"));
  CHECK_OK(a.RunToCompletion());
  Expect(Report(a, "chat-3").preemptions == 1, "chat-3 should have been preempted once");
  // Its first step saved blocks 4..7; on resume the pool still has the system prompt's pages.
  Expect(Report(a, "chat-3").local_hit_tokens + Report(a, "chat-3").external_tokens == 128,
         absl::StrFormat("chat-3 should resume with 128 tokens cached, had %d in the pool + %d "
                         "in kvtier",
                         Report(a, "chat-3").local_hit_tokens,
                         Report(a, "chat-3").external_tokens));

  log("\n== 6. a second engine instance (its own pool) on the same kvtier: a full-prompt hit "
      "still computes the last token");
  kvtier_vllm::ToyEngineOptions tb = to;
  tb.log = [&](const std::string& line) { log("  [engine B] " + line); };
  absl::StatusOr<std::unique_ptr<ToyEngine>> created_b = ToyEngine::Create(engine.get(), tb);
  CHECK_OK(created_b.status());
  ToyEngine& b = **created_b;
  const std::vector<int32_t> aligned = Concat(system, Tokens(2, 32));  // chat-1's first 96
  Submit(b, "replica", aligned, 2);
  CHECK_OK(b.RunToCompletion());
  Expect(Report(b, "replica").external_tokens == 95,
         absl::StrFormat("replica should take 95 of its 96 tokens from kvtier, took %d",
                         Report(b, "replica").external_tokens));

  absl::PrintF("\n%-9s %7s %11s %12s %9s %8s %s\n", "request", "prompt", "pool hit", "kvtier hit",
              "computed", "output", "notes");
  for (auto [e, id] : std::vector<std::pair<ToyEngine*, std::string>>{
           {&a, "chat-1"}, {&a, "chat-2"}, {&a, "long"}, {&a, "chat-1b"}, {&a, "chat-3"},
           {&b, "replica"}}) {
    const RequestReport& r = Report(*e, id);
    std::string notes;
    if (r.preemptions > 0) notes += absl::StrFormat("preempted %dx ", r.preemptions);
    if (r.load_error_blocks > 0) notes += absl::StrFormat("%d load errors ", r.load_error_blocks);
    if (r.delayed_free) notes += "free delayed ";
    absl::PrintF("%-9s %7d %11d %12d %9d %8d %s\n", id.c_str(), r.prompt_tokens,
                r.local_hit_tokens, r.external_tokens, r.computed_tokens, r.output.size(),
                notes.c_str());
  }
  for (auto [name, e] : std::vector<std::pair<const char*, ToyEngine*>>{{"A", &a}, {"B", &b}}) {
    const ConnectorStats s = e->connector().stats();
    absl::PrintF("connector %s: %d external tokens; %d loads (%d blocks, %d per-layer stream "
                "waits, %d load errors); %d stores (%d blocks new, %d already cached)\n",
                name, s.external_tokens, s.loads_started, s.blocks_loaded, s.layer_waits,
                s.load_error_blocks, s.stores_started, s.blocks_saved, s.blocks_deduplicated);
  }
  const kvtier::EngineStats st = engine->Stats();
  absl::PrintF("kvtier: %d blocks stored, %d deduplicated, %d loaded; host tier %d/%d blocks\n",
              st.stored_blocks, st.deduplicated_blocks, st.loaded_blocks,
              st.tiers[static_cast<int>(kvtier::TierKind::kHost)].used_blocks,
              st.tiers[static_cast<int>(kvtier::TierKind::kHost)].capacity_blocks);
  if (failures > 0) {
    absl::PrintF("FAILED: %d expectation(s)\n", failures);
    return 1;
  }
  absl::PrintF("OK: every loaded page matched the model's KV byte for byte\n");
  return 0;
}
