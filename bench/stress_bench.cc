// bench stress — a workload through the real engine from concurrent clients, every byte
// checked: how many block operations per second the engine sustains while moving real bytes
// through its GPU, host and disk tiers, next to the metadata-only simulator making the same
// kind of decisions (the upper bound for them).
//
//   bench/run stress [--sim] [--threads=N] [--workload=mooncake|chat|rag|agent|scan]
//                    [--trace=PATH] [--requests=N] [--gpu-blocks=N] [--host-blocks=N]
//                    [--disk-blocks=N] [--no-disk] [--erase-every=N] [--gpu-every=N]
//                    [--check-sessions=N] [--seed=N] [--policy=NAME]
//
// --policy sets the eviction policy of the GPU and host tiers (default: the engine's, arc),
// for the byte run, the simulator and the consistency check alike.
//
// Trace to engine: block i of a request gets block_tokens token ids derived from its
// hash_ids[i] (a hash of id and position in the block), so prefix-chained hash ids become
// prefix-chained kvtier keys (the engine chains keys itself). A block's bytes are derived
// from its key (as tests/api/engine_test_util.h's BlockContent does), so any mix-up of
// blocks, tiers or offsets shows as a byte mismatch.
//
// Byte mode (the default). One engine on the emulated device, unthrottled: small geometry
// (2 layers x 2 KV heads x 64 dim x fp16 x 16 tokens = 16 KiB blocks), a GPU tier, a host
// tier, a disk tier in a temporary directory removed at exit. --threads clients
// (bench/replay.h's ReplayClient) take the requests round-robin (client t gets requests t,
// t+N, ...); per request:
//   1. Match the prompt;
//   2. load the matched prefix: every --gpu-every'th request through LoadToGpuTier (leased
//      GPU slots, read back and released), the others through Load into the client's own
//      device buffers; either way every byte is compared with the key's content. A Load that
//      finds a block gone (another client's Store evicted it after our Match) is a race, not
//      an error: the rest of the prompt is stored, as a serving engine would recompute it;
//   3. Store the blocks past the loaded prefix (content derived from each key);
//   4. every --erase-every'th request, Erase its last block.
// Failed loads (an error other than that race, or a failed Wait) and loads with a wrong byte
// must be 0: the bench exits 1 otherwise (after its JSON line).
//
// "Ops" are block operations in both modes: one block of a request looked up and then
// loaded or stored (byte mode), or looked up and then hit or inserted (simulator). That
// makes the simulator's rate a like-for-like ceiling for the engine's.
//
// --sim: metadata only. The engine's default host-tier policy in workload::Simulate (through
// EnginePolicyAdapter) at the host tier's capacity, single-threaded (the policies are not
// thread-safe; the engine runs them under one lock). Its ceiling is the same replay with no
// policy at all (an unbounded hash set: lookups and inserts only).
//
// Both modes also run a consistency check on a small generated chat trace (--check-sessions
// sessions; 0 skips it): the engine with a host tier only (no GPU tier, no disk, one client,
// no erases) against a metadata replay of exactly the engine's request handling (see
// EngineModelReplay), which must agree on prefix hits, insertions and evictions — a
// disagreement fails the bench like a wrong byte — and against workload::Simulate, whose
// request model differs slightly (reported, with the reason). The engine's tiers cannot be
// compared with one simulated cache directly: the GPU tier holds copies of host blocks
// (inclusive) and the disk tier takes host evictions, so hits there are not a policy's.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "bench/bench_util.h"
#include "bench/replay.h"
#include "bench/workload_flags.h"
#include "common/flags.h"
#include "kvtier/engine.h"
#include "workload/engine_policy_adapter.h"
#include "workload/generators.h"
#include "workload/simulator.h"
#include "workload/trace.h"

namespace kvtier::bench {
namespace {

using workload::Request;

// ------------------------------------------------------------------------------ byte mode

struct EngineConfig {
  int threads = 2;
  size_t gpu_blocks = 0;  // 0: no GPU tier
  size_t host_blocks = 0;
  size_t disk_blocks = 0;  // 0: no disk tier
  size_t erase_every = 0;  // 0: never
  size_t gpu_every = 0;    // 0: never through LoadToGpuTier
  std::string dir;         // for the disk tier
  std::string policy;      // eviction policy of the GPU and host tiers
};

struct EngineRun {
  ReplayCounts counts;
  std::vector<double> match_us;  // of every client
  std::vector<double> load_us;
  EngineStats stats;
  double seconds = 0;
  size_t gpu_slots = 0;
  size_t host_slots = 0;
};

absl::StatusOr<EngineRun> RunEngine(const ReplayTrace& trace, const EngineConfig& config) {
  if (config.disk_blocks > 0) {
    std::filesystem::remove_all(config.dir);
    std::filesystem::create_directories(config.dir);
  }
  absl::StatusOr<std::unique_ptr<Engine>> opened =
      Engine::Open([&] {
        EngineOptions o = ReplayEngineOptions("bench-stress", config.gpu_blocks,
                                              config.host_blocks, config.disk_blocks, config.dir);
        o.gpu_eviction = o.host_eviction = config.policy;
        return o;
      }());
  if (!opened.ok()) return opened.status();
  Engine& e = **opened;
  EngineRun run;
  {
    const EngineStats st = e.Stats();
    run.gpu_slots = st.tiers[static_cast<int>(TierKind::kGpu)].capacity_blocks;
    run.host_slots = st.tiers[static_cast<int>(TierKind::kHost)].capacity_blocks;
  }
  ReplayOptions ro;
  ro.clients = config.threads;
  ro.gpu_slots = run.gpu_slots;
  ro.gpu_every = config.gpu_blocks > 0 ? config.gpu_every : 0;
  ro.erase_every = config.erase_every;
  ro.record_latency = true;
  // Each client counts on its own (no shared counters between the timed clients).
  std::vector<ReplayCounts> counts(config.threads);
  std::vector<std::unique_ptr<ReplayClient>> clients;
  for (int t = 0; t < config.threads; ++t) {
    clients.push_back(std::make_unique<ReplayClient>(e, trace, counts[t], ro));
    if (absl::Status s = clients.back()->Init(); !s.ok()) return s;
  }
  const double start = Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < config.threads; ++t) {
    threads.emplace_back([&, t] { clients[t]->Run(t, config.threads); });
  }
  for (std::thread& t : threads) t.join();
  // Background demotions to disk are part of the work the replay caused.
  if (absl::Status s = e.Flush(); !s.ok()) return s;
  run.seconds = Now() - start;
  for (size_t t = 0; t < clients.size(); ++t) {
    run.counts.Add(counts[t]);
    const ReplayClient& c = *clients[t];
    run.match_us.insert(run.match_us.end(), c.match_us().begin(), c.match_us().end());
    run.load_us.insert(run.load_us.end(), c.load_us().begin(), c.load_us().end());
  }
  run.stats = e.Stats();
  clients.clear();
  opened->reset();
  if (config.disk_blocks > 0) std::filesystem::remove_all(config.dir);
  return run;
}

// ------------------------------------------------------------------------------ metadata

// The engine's request handling, replayed on metadata with the same policy code: Match is
// the longest prefix of present blocks; Load accesses those, in order; Store inserts each
// later block that is absent when its turn comes (a present one is skipped untouched, as
// the engine deduplicates it), evicting the policy's victim while the tier is full. This is
// what the engine does with one client, a host tier only and every copy waited for (nothing
// pinned or in flight when a victim is picked), so the two must agree exactly.
struct ModelResult {
  uint64_t prefix_hits = 0;
  uint64_t insertions = 0;
  uint64_t evictions = 0;
};

absl::StatusOr<ModelResult> EngineModelReplay(const std::vector<Request>& requests,
                                              size_t capacity, const std::string& policy) {
  absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
      workload::EnginePolicyAdapter::Create(policy, capacity);
  if (!a.ok()) return a.status();
  absl::flat_hash_set<uint64_t> resident;
  ModelResult res;
  for (const Request& r : requests) {
    size_t p = 0;
    while (p < r.blocks.size() && resident.contains(r.blocks[p])) ++p;
    for (size_t i = 0; i < p; ++i) (*a)->Access(r.blocks[i]);
    res.prefix_hits += p;
    for (size_t i = p; i < r.blocks.size(); ++i) {
      if (resident.contains(r.blocks[i])) continue;
      while (resident.size() >= capacity) {
        std::optional<uint64_t> v = (*a)->Victim();
        if (!v.has_value()) return absl::InternalError("policy offered no victim");
        resident.erase(*v);
        (*a)->Remove(*v);
        ++res.evictions;
      }
      resident.insert(r.blocks[i]);
      (*a)->SetNextDepth(static_cast<uint32_t>(i));  // as the engine's placement does
      (*a)->Insert(r.blocks[i]);
      ++res.insertions;
    }
  }
  return res;
}

struct SimRun {
  workload::SimResult result;
  double ops_per_s = 0;       // block references per second, best of the repetitions
  double bare_ops_per_s = 0;  // the same replay without a policy
};

// workload::Simulate with the adapter, repeated for at least `min_seconds` (a pass over the
// Mooncake trace takes milliseconds); the best pass counts, as for any micro-benchmark.
absl::StatusOr<SimRun> RunSim(const std::vector<Request>& requests, size_t capacity,
                              const std::string& policy, double min_seconds) {
  SimRun run;
  uint64_t refs = 0;
  for (const Request& r : requests) refs += r.blocks.size();
  double best = 1e30;
  for (double total = 0; total < min_seconds;) {
    absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
        workload::EnginePolicyAdapter::Create(policy, capacity);
    if (!a.ok()) return a.status();
    const double start = Now();
    absl::StatusOr<workload::SimResult> r = workload::Simulate(requests, capacity, **a);
    const double s = Now() - start;
    if (!r.ok()) return r.status();
    run.result = *r;
    best = std::min(best, s);
    total += s;
  }
  run.ops_per_s = refs / best;
  // The ceiling of a metadata replay: the same lookups and inserts into a hash set, with no
  // policy and no eviction.
  best = 1e30;
  for (double total = 0; total < min_seconds;) {
    const double start = Now();
    absl::flat_hash_set<uint64_t> present;
    uint64_t hits = 0;
    for (const Request& r : requests) {
      for (uint64_t id : r.blocks) hits += present.contains(id);
      present.insert(r.blocks.begin(), r.blocks.end());
    }
    const double s = Now() - start;
    asm volatile("" : : "r"(hits) : "memory");
    best = std::min(best, s);
    total += s;
  }
  run.bare_ops_per_s = refs / best;
  return run;
}

// ------------------------------------------------------------------------------ reporting

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

// The temporary directory of the disk tier, removed at any exit.

int Main(int argc, char** argv) {
  std::string trace_path =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  std::string workload_name = "mooncake";
  bool sim = false, no_disk = false;
  size_t requests_limit = 0, gpu_blocks = 0, host_blocks = 0, disk_blocks = 0;
  std::string policy;  // --policy; empty: the engine default
  size_t check_sessions = 200;
  int threads = 2;
  size_t erase_every = 64, gpu_every = 4;
  uint64_t seed = 1;
  CLI::App app(
      "bench stress: replay a workload through the real engine with concurrent clients, every "
      "byte checked; --sim for the metadata-only simulator's ops/s",
      "bench/run stress");
  app.add_flag("--sim", sim, "the metadata-only simulator instead of the engine");
  app.add_option("--threads", threads, "concurrent clients")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  AddWorkloadFlags(app, &workload_name, &trace_path);
  app.add_option("--requests", requests_limit, "replay at most N requests (default: all)")
      ->check(flags::AtLeast<size_t>(1));
  flags::AddBlocks(app, "--gpu-blocks", &gpu_blocks, 0,
                   "GPU tier capacity, blocks (0 = no GPU tier)");
  flags::AddBlocks(app, "--host-blocks", &host_blocks, 1,
                   "host tier capacity, blocks (default: by the trace)")
      ->default_str("");
  flags::AddBlocks(app, "--disk-blocks", &disk_blocks, 1,
                   "disk tier capacity, blocks (default: by the trace)")
      ->default_str("");
  app.add_flag("--no-disk", no_disk, "no disk tier");
  app.add_option("--erase-every", erase_every, "every N-th request erases a session (0 = never)")
      ->capture_default_str();
  app.add_option("--gpu-every", gpu_every,
                 "every N-th request loads through LoadToGpuTier (0 = never)")
      ->capture_default_str();
  app.add_option("--check-sessions", check_sessions,
                 "sessions whose blocks the consistency check follows")
      ->capture_default_str();
  flags::AddSeed(app, &seed);
  app.add_option("--policy", policy,
                 "eviction policy of the GPU and host tiers (default: the engine's)")
      ->check(EnginePolicyName());
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;

  // The workload; a missing Mooncake trace falls back to a generated chat trace.
  std::string trace_label;
  absl::StatusOr<std::vector<Request>> loaded =
      workload::LoadBenchWorkload(workload_name, trace_path, seed, &trace_label);
  if (!loaded.ok()) Die(loaded.status().ToString());
  if (workload_name == "mooncake" && !std::filesystem::exists(trace_path)) workload_name = "chat";
  std::vector<Request> requests = std::move(*loaded);
  if (requests_limit > 0 && requests.size() > requests_limit) requests.resize(requests_limit);

  const Geometry geometry = ReplayGeometry();
  const EngineOptions defaults;
  const KeyHasher hasher(KeyHash::kXxh3, kNs, "bench-stress", geometry.Fingerprint());
  const ReplayTrace trace = PrepareTrace(std::move(requests), hasher);
  // Tier sizes, as shares of the footprint: the host tier is the cache proper (1/16 of it),
  // the GPU tier a quarter of that, the disk four times it. The host tier must also hold
  // every client's largest request pinned at once, with room to spare.
  const size_t min_host = 2 * static_cast<size_t>(threads) * trace.max_request_blocks + 64;
  if (host_blocks == 0) host_blocks = std::max<size_t>(trace.unique_blocks / 16, min_host);
  if (gpu_blocks == 0) gpu_blocks = std::max<size_t>(host_blocks / 4, 64);
  if (disk_blocks == 0) disk_blocks = 4 * host_blocks;
  if (no_disk) disk_blocks = 0;
  std::printf("trace: %s\n  %zu requests, %lu block refs, %lu distinct blocks, longest %zu\n",
              trace_label.c_str(), trace.requests.size(),
              static_cast<unsigned long>(trace.block_refs),
              static_cast<unsigned long>(trace.unique_blocks), trace.max_request_blocks);

  // The disk tier's temporary directory, removed at any exit.
  const std::string& temp_dir = TempDirRemovedAtExit("kvtier-bench-stress-");

  // The simulator at the host tier's capacity: --sim's figure, byte mode's ceiling.
  if (policy.empty()) policy = defaults.host_eviction;
  absl::StatusOr<SimRun> simrun = RunSim(trace.requests, host_blocks, policy, 0.5);
  if (!simrun.ok()) Die(simrun.status().ToString());
  std::printf("sim (%s, %zu blocks): %.2f M block ops/s (no policy: %.2f M), prefix hit %.4f, "
              "block hit %.4f\n",
              policy.c_str(), host_blocks, simrun->ops_per_s / 1e6, simrun->bare_ops_per_s / 1e6,
              simrun->result.prefix_hit_ratio(), simrun->result.block_hit_ratio());

  // Consistency: one client, host tier only, against the metadata replays.
  // The check runs on a small generated chat trace, whatever the workload: its prefixes are
  // reused within a few requests, so a small trace exercises hits and evictions alike (the
  // Mooncake trace's reuse comes late: its first 600 requests hit 1.4% at 1/8 of their
  // footprint).
  JsonLine check;
  bool check_equal = true;
  if (check_sessions > 0) {
    workload::ChatParams chat;
    chat.seed = seed;
    chat.num_sessions = static_cast<uint32_t>(check_sessions);
    absl::StatusOr<std::vector<Request>> chat_trace = workload::GenerateChat(chat);
    if (!chat_trace.ok()) Die(chat_trace.status().ToString());
    const ReplayTrace small = PrepareTrace(std::move(*chat_trace), hasher);
    const size_t check_n = small.requests.size();
    // Small enough to evict, larger than any request (a request longer than the tier would
    // have to evict its own blocks still being written, which the engine cannot).
    const size_t cap =
        std::max<size_t>(small.unique_blocks / 8, small.max_request_blocks + kChunk);
    EngineConfig cc;
    cc.policy = policy;
    cc.threads = 1;
    cc.host_blocks = cap;
    absl::StatusOr<EngineRun> er = RunEngine(small, cc);
    if (!er.ok()) Die("check run: " + er.status().ToString());
    absl::StatusOr<ModelResult> model = EngineModelReplay(small.requests, cap, policy);
    if (!model.ok()) Die(model.status().ToString());
    absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
        workload::EnginePolicyAdapter::Create(policy, cap);
    if (!a.ok()) Die(a.status().ToString());
    absl::StatusOr<workload::SimResult> simulated = workload::Simulate(small.requests, cap, **a);
    if (!simulated.ok()) Die(simulated.status().ToString());
    const TierStats& host = er->stats.tiers[static_cast<int>(TierKind::kHost)];
    const double refs = static_cast<double>(small.block_refs);
    const double engine_ratio = er->counts.loaded / refs;
    const double model_ratio = model->prefix_hits / refs;
    const double simulate_ratio = simulated->prefix_hit_ratio();
    check_equal = er->counts.loaded == model->prefix_hits &&
                  er->stats.stored_blocks == model->insertions &&
                  host.evictions == model->evictions;
    const bool simulate_same_hits = simulated->prefix_hit_blocks == er->counts.loaded;
    const bool simulate_equal = simulate_same_hits &&
                                simulated->insertions == er->stats.stored_blocks &&
                                simulated->evictions == host.evictions;
    std::printf("check (generated chat, %zu requests, host tier %zu blocks, 1 client): prefix "
                "hit engine %.6f, engine-model replay %.6f (%s), workload::Simulate %.6f (%s); "
                "insertions %lu / %lu / %lu, evictions %lu / %lu / %lu\n",
                check_n, cap, engine_ratio, model_ratio, check_equal ? "equal" : "DIFFERENT",
                simulate_ratio, simulate_equal ? "equal" : "different",
                static_cast<unsigned long>(er->stats.stored_blocks),
                static_cast<unsigned long>(model->insertions),
                static_cast<unsigned long>(simulated->insertions),
                static_cast<unsigned long>(host.evictions),
                static_cast<unsigned long>(model->evictions),
                static_cast<unsigned long>(simulated->evictions));
    check.Str("check_trace", absl::StrCat("generated chat, ", check_sessions, " sessions"))
        .Num("check_requests", static_cast<double>(check_n))
        .Num("check_capacity_blocks", static_cast<double>(cap))
        .Num("check_prefix_hit_engine", engine_ratio)
        .Num("check_prefix_hit_engine_model", model_ratio)
        .Num("check_prefix_hit_simulate", simulate_ratio)
        .Num("check_engine_equals_model", check_equal ? 1 : 0)
        .Num("check_simulate_same_prefix_hits", simulate_same_hits ? 1 : 0)
        .Num("check_engine_equals_simulate", simulate_equal ? 1 : 0)
        .Num("check_simulate_minus_engine", simulate_ratio - engine_ratio)
        .Str("check_note",
             absl::StrCat(
                 "host tier only (GPU tier 0, no disk), 1 client, every copy waited for: the "
                 "engine is compared in prefix hits, insertions and evictions with a metadata "
                 "replay of its own request handling over the same policy code (must be equal) "
                 "and with workload::Simulate (",
                 simulate_equal ? "equal here"
                 : simulate_same_hits
                     ? absl::StrCat("same prefix hits here; insertions differ by ",
                                    static_cast<int64_t>(er->stats.stored_blocks) -
                                        static_cast<int64_t>(simulated->insertions))
                     : "different here",
                 "), whose request model differs from the engine's in two corner cases: it "
                 "also accesses blocks present after a request's first miss (the engine's "
                 "Match stops at the first miss and Store skips present blocks untouched), "
                 "and it takes presence before the request's inserts (the engine re-stores a "
                 "block that an earlier insert of the same request evicted). The full engine "
                 "is not one cache: its GPU tier holds copies of host blocks and its disk "
                 "tier takes host evictions"));
    if (er->counts.failed_loads + er->counts.wrong_byte_loads + er->counts.failed_stores +
            er->counts.failed_other > 0) {
      check_equal = false;
    }
  }

  if (sim) {
    JsonLine()
        .Str("bench", "stress").Num("figure", simrun->ops_per_s)
        .Str("unit", "simulated block ops/s (metadata only, 1 thread)")
        .Num("ceiling", simrun->bare_ops_per_s)
        .Str("ceiling_source", "the same replay with no policy: hash-set lookups and inserts only")
        .Num("ratio", simrun->ops_per_s / simrun->bare_ops_per_s)
        .Str("mode", "sim").Str("policy", policy).Str("trace", trace_label)
        .Num("capacity_blocks", static_cast<double>(host_blocks))
        .Num("sim_prefix_hit", simrun->result.prefix_hit_ratio())
        .Num("sim_block_hit", simrun->result.block_hit_ratio())
        .Num("target_ops_per_s", 1e6)
        .Num("peak_rss_mib", PeakRssMib()).Merge(check).Print();
    return check_equal ? 0 : 1;
  }

  // Byte mode: every tier, concurrent clients.
  EngineConfig config;
  config.policy = policy;
  config.threads = threads;
  config.gpu_blocks = gpu_blocks;
  config.host_blocks = host_blocks;
  config.disk_blocks = disk_blocks;
  config.erase_every = erase_every;
  config.gpu_every = gpu_every;
  config.dir = temp_dir;
  absl::StatusOr<EngineRun> run = RunEngine(trace, config);
  if (!run.ok()) Die(run.status().ToString());
  const ReplayCounts& c = run->counts;
  const EngineStats& st = run->stats;
  const double ops = c.blocks / run->seconds;
  const double refs = static_cast<double>(c.blocks);
  uint64_t bytes_moved = 0, evictions = 0, demotions = 0;
  for (const TierStats& t : st.tiers) {
    bytes_moved += t.bytes_in + t.bytes_out;
    evictions += t.evictions;
    demotions += t.demotions;
  }
  const TierStats& disk = st.tiers[static_cast<int>(TierKind::kDisk)];
  const uint64_t failures = c.failed_loads + c.wrong_byte_loads;
  const uint64_t other_failures = c.failed_stores + c.failed_other;
  std::printf("engine: %d clients, GPU %zu / host %zu / disk %s blocks of %zu KiB\n", threads,
              run->gpu_slots, run->host_slots,
              disk_blocks > 0 ? absl::StrCat("~", disk_blocks).c_str() : "no",
              geometry.block_bytes() / 1024);
  std::printf("  %.0f block ops/s (%.0f requests/s, %.0f engine calls/s) over %.2f s\n", ops,
              c.requests / run->seconds, c.calls / run->seconds, run->seconds);
  std::printf("  prefix hit %.4f (matched %.4f; %lu load races), hits by tier: GPU %.4f host "
              "%.4f disk %.4f\n",
              c.loaded / refs, c.matched / refs, static_cast<unsigned long>(c.load_races),
              st.tiers[0].hits / refs, st.tiers[1].hits / refs, st.tiers[2].hits / refs);
  std::printf("  Match p50 %.1f us p99 %.1f us; Load p50 %.1f us p99 %.1f us\n",
              Percentile(run->match_us, 0.5), Percentile(run->match_us, 0.99),
              Percentile(run->load_us, 0.5), Percentile(run->load_us, 0.99));
  std::printf("  %.1f MiB moved, %lu evictions, %lu demotions, %lu disk admissions rejected, "
              "%lu erased, peak RSS %.0f MiB\n",
              bytes_moved / 1048576.0, static_cast<unsigned long>(evictions),
              static_cast<unsigned long>(demotions),
              static_cast<unsigned long>(disk.admissions_rejected),
              static_cast<unsigned long>(c.erased), PeakRssMib());
  std::printf("  failed loads %lu, wrong-byte blocks %lu, failed stores %lu, other errors %lu\n",
              static_cast<unsigned long>(c.failed_loads),
              static_cast<unsigned long>(c.wrong_byte_loads),
              static_cast<unsigned long>(c.failed_stores),
              static_cast<unsigned long>(c.failed_other));

  JsonLine()
      .Str("bench", "stress").Num("figure", ops)
      .Str("unit", absl::StrCat("block ops/s through the engine, ", threads,
                                threads == 1 ? " client" : " clients", ", every byte verified"))
      .Num("ceiling", simrun->ops_per_s)
      .Str("ceiling_source", absl::StrCat("metadata-only simulator (", policy,
                                          ", host-tier capacity, 1 thread) in the same run"))
      .Num("ratio", ops / simrun->ops_per_s)
      .Str("mode", "bytes").Str("policy", policy).Str("trace", trace_label)
      .Num("threads", threads)
      .Num("requests", static_cast<double>(c.requests))
      .Num("block_refs", refs)
      .Num("seconds", run->seconds)
      .Num("requests_per_s", c.requests / run->seconds)
      .Num("calls_per_s", c.calls / run->seconds)
      .Num("gpu_blocks", static_cast<double>(run->gpu_slots))
      .Num("host_blocks", static_cast<double>(run->host_slots))
      .Num("disk_blocks", static_cast<double>(disk_blocks))
      .Num("failed_loads", static_cast<double>(c.failed_loads))
      .Num("wrong_byte_loads", static_cast<double>(c.wrong_byte_loads))
      .Num("failed_stores", static_cast<double>(c.failed_stores))
      .Num("other_errors", static_cast<double>(c.failed_other))
      .Num("load_races", static_cast<double>(c.load_races))
      .Num("gpu_tier_loads", static_cast<double>(c.gpu_loads))
      .Num("gpu_tier_fallbacks", static_cast<double>(c.gpu_fallbacks))
      .Num("prefix_hit_token_ratio", c.loaded / refs)
      .Num("matched_token_ratio", c.matched / refs)
      .Num("hit_ratio_gpu", st.tiers[0].hits / refs)
      .Num("hit_ratio_host", st.tiers[1].hits / refs)
      .Num("hit_ratio_disk", st.tiers[2].hits / refs)
      .Num("sim_prefix_hit", simrun->result.prefix_hit_ratio())
      .Num("sim_block_hit", simrun->result.block_hit_ratio())
      .Num("sim_ops_per_s", simrun->ops_per_s)
      .Num("match_p50_us", Percentile(run->match_us, 0.5))
      .Num("match_p99_us", Percentile(run->match_us, 0.99))
      .Num("load_p50_us", Percentile(run->load_us, 0.5))
      .Num("load_p99_us", Percentile(run->load_us, 0.99))
      .Num("bytes_moved_mib", bytes_moved / 1048576.0)
      .Num("disk_written_mib", disk.bytes_in / 1048576.0)
      .Num("evictions", static_cast<double>(evictions))
      .Num("demotions", static_cast<double>(demotions))
      .Num("admissions_rejected", static_cast<double>(disk.admissions_rejected))
      .Num("store_rejected_blocks", static_cast<double>(st.rejected_blocks))
      .Num("erased_blocks", static_cast<double>(c.erased))
      .Num("peak_rss_mib", PeakRssMib())
      .Merge(check).Print();
  return failures == 0 && other_failures == 0 && check_equal ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
