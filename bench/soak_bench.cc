// bench soak — the stress workload through the real engine for a fixed time, with a working set
// twice what the tiers hold, so eviction and disk traffic never stop: does throughput hold,
// does resident memory plateau, does every loaded byte stay right?
//
//   bench/run soak [--minutes=N] [--interval=S] [--threads=N] [--gpu-blocks=N]
//                  [--host-blocks=N] [--disk-blocks=N] [--gpu-every=N] [--seed=N]
//
// Workload: a RAG trace from workload::GenerateRag, replayed in a loop until the time is up
// (client t takes requests t, t + N, ... of each pass): documents of 8 blocks chosen uniformly
// (alpha 0, so no small hot set fits the cache), a 2-block shared instruction before each and a
// 1-block question after it. It has as many documents and queries as make its distinct blocks
// twice the host and disk tiers together (the GPU tier holds copies of host blocks). Requests
// are served as bench stress serves them (bench/replay.h's ReplayClient): Match, load the matched
// prefix (every --gpu-every'th request through LoadToGpuTier, the rest through Load into the
// client's device buffers), compare every loaded byte with the content derived from the key,
// Store the rest. A Load that finds a matched block gone (evicted by another client after the
// Match, or its disk region reclaimed before the read: NotFound from Load or from Wait) is a
// race, a miss, not an error; the rest of the prompt is stored. Any other error is a failure.
//
// Every --interval seconds it prints one line: block ops/s in that interval (an op is one
// block of a request looked up and then loaded or stored, as in bench stress), resident
// memory (RSS, from /proc/self/statm), and the error counts so far.
//
// Verdict. Plateau: RSS at the end is within 5% of RSS at the middle of the run (the second
// half grows by less than 5%), so whatever the engine allocates it stops allocating once the
// tiers are full and have turned over. RSS is a sawtooth here (the disk index's RocksDB
// memtable, which grows with every record written and dropped until it is flushed at its
// default 64 MiB write buffer: about two minutes), so the peaks of both halves and the
// number of drops are printed too: a run shorter than two or three teeth can pass or fail on phase
// alone (docs/benchmarks.md, "soak"). The figure is block ops/s over the whole run; the ceiling is
// the first interval's rate (a ratio well below 1 means throughput decayed). It exits 1 on
// any wrong byte, failed load, failed store or other error, and 1 when RSS did not plateau,
// always after the JSON line.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "bench/bench_util.h"
#include "bench/replay.h"
#include "common/flags.h"
#include "kvtier/engine.h"
#include "workload/generators.h"

namespace kvtier::bench {
namespace {

using workload::Request;

constexpr uint32_t kDocumentBlocks = 8;
constexpr uint32_t kInstructionBlocks = 2;
constexpr double kPlateauGrowth = 0.05;

struct Sample {
  double t = 0;  // seconds since the start
  double ops_per_s = 0;
  double rss_mib = 0;
};

int Main(int argc, char** argv) {
  double minutes = 10, interval_s = 10;
  int threads = 2;
  size_t gpu_blocks = 64, host_blocks = 512, disk_blocks = 1536, gpu_every = 4;
  uint64_t seed = 1;
  CLI::App app(
      "bench soak: the stress workload for a fixed time at twice the tiers' capacity: ops/s "
      "and RSS over time, plateau, every byte verified",
      "bench/run soak");
  app.add_option("--minutes", minutes, "how long the workload runs")
      ->check(CLI::PositiveNumber.description("> 0"))
      ->capture_default_str();
  app.add_option("--interval", interval_s, "seconds between samples of ops/s and RSS")
      ->check(flags::AtLeast(0.1))
      ->capture_default_str();
  app.add_option("--threads", threads, "concurrent clients")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  flags::AddBlocks(app, "--gpu-blocks", &gpu_blocks, 0, "GPU tier capacity, blocks");
  flags::AddBlocks(app, "--host-blocks", &host_blocks, 128, "host tier capacity, blocks");
  flags::AddBlocks(app, "--disk-blocks", &disk_blocks, 256, "disk tier capacity, blocks");
  app.add_option("--gpu-every", gpu_every,
                 "every N-th request loads through LoadToGpuTier (0 = never)")
      ->capture_default_str();
  flags::AddSeed(app, &seed);
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;

  // The working set: twice the host and disk tiers' blocks, split between documents (with
  // their shared instruction) and one distinct question per query.
  const size_t capacity = host_blocks + disk_blocks;
  const size_t target = 2 * capacity;
  workload::RagParams rag;
  rag.seed = seed;
  rag.alpha = 0;
  rag.min_document_blocks = rag.max_document_blocks = kDocumentBlocks;
  rag.instruction_blocks = kInstructionBlocks;
  rag.num_documents = static_cast<uint32_t>(target / 2 / kDocumentBlocks);
  rag.num_queries = static_cast<uint32_t>(target - rag.num_documents * kDocumentBlocks -
                                          kInstructionBlocks);
  absl::StatusOr<std::vector<Request>> requests = workload::GenerateRag(rag);
  if (!requests.ok()) Die(requests.status().ToString());
  const Geometry geometry = ReplayGeometry();
  const KeyHasher hasher(KeyHash::kXxh3, kNs, "bench-soak", geometry.Fingerprint());
  const ReplayTrace trace = PrepareTrace(std::move(*requests), hasher);

  const std::string& temp_dir = TempDirRemovedAtExit("kvtier-bench-soak-");
  std::filesystem::remove_all(temp_dir);
  std::filesystem::create_directories(temp_dir);

  EngineOptions o =
      ReplayEngineOptions("bench-soak", gpu_blocks, host_blocks, disk_blocks, temp_dir);
  o.disk.admit_min_seen = 1;  // every host victim goes down: disk traffic never stops
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Open(o);
  if (!engine.ok()) Die(engine.status().ToString());
  const EngineStats opened = (*engine)->Stats();
  const size_t gpu_slots = opened.tiers[static_cast<int>(TierKind::kGpu)].capacity_blocks;
  const size_t host_slots = opened.tiers[static_cast<int>(TierKind::kHost)].capacity_blocks;

  std::printf("soak: %.3g min, %d clients, %s blocks of %zu KiB\n", minutes, threads,
              absl::StrFormat("GPU %zu / host %zu / disk ~%zu", gpu_slots, host_slots,
                              disk_blocks)
                  .c_str(),
              geometry.block_bytes() / 1024);
  std::printf("workload: RAG, %zu requests per pass, %zu distinct blocks (%.2fx host + disk), "
              "uniform documents\n",
              trace.keys.size(), trace.unique_blocks,
              static_cast<double>(trace.unique_blocks) / capacity);
  std::fflush(stdout);

  ReplayOptions ro;
  ro.clients = threads;
  ro.gpu_slots = gpu_slots;
  ro.gpu_every = gpu_every;
  ro.report_failures_as = "soak";
  ReplayCounts counters;  // shared by the clients, read by the sampler
  std::vector<std::unique_ptr<ReplayClient>> clients;
  for (int t = 0; t < threads; ++t) {
    clients.push_back(std::make_unique<ReplayClient>(**engine, trace, counters, ro));
    if (absl::Status s = clients.back()->Init(); !s.ok()) Die(s.ToString());
  }

  std::atomic<bool> stop{false};
  const double rss_start = RssMib();
  const double start = Now();
  const double end = start + minutes * 60;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] { clients[t]->Run(t, threads, &stop); });
  }
  std::vector<Sample> samples;
  uint64_t last_blocks = 0;
  double last_t = start;
  while (true) {
    const double now_target = std::min(end, last_t + interval_s);
    while (Now() < now_target) {
      std::this_thread::sleep_for(std::chrono::milliseconds(
          std::max<int64_t>(1, static_cast<int64_t>((now_target - Now()) * 1000))));
    }
    const double now = Now();
    const uint64_t blocks = counters.completed_blocks.load();
    Sample s{now - start, (blocks - last_blocks) / (now - last_t), RssMib()};
    samples.push_back(s);
    const EngineStats st = (*engine)->Stats();
    const TierStats& disk = st.tiers[static_cast<int>(TierKind::kDisk)];
    std::printf("  t=%6.1f s  %9.0f block ops/s  RSS %7.1f MiB  disk in %.0f MiB out %.0f MiB"
                "  wrong-byte %lu  failed %lu\n",
                s.t, s.ops_per_s, s.rss_mib, disk.bytes_in / 1048576.0,
                disk.bytes_out / 1048576.0,
                static_cast<unsigned long>(counters.wrong_byte_loads.load()),
                static_cast<unsigned long>(counters.failures() -
                                           counters.wrong_byte_loads.load()));
    std::fflush(stdout);
    last_blocks = blocks;
    last_t = now;
    if (now >= end) break;
  }
  stop = true;
  for (std::thread& t : workers) t.join();
  const absl::Status flushed = (*engine)->Flush();
  const double seconds = Now() - start;
  const EngineStats st = (*engine)->Stats();
  clients.clear();
  engine->reset();

  // The plateau: RSS at the end against RSS at the sample nearest the middle of the run.
  const double rss_end = samples.back().rss_mib;
  const double mid_t = samples.back().t / 2;
  const Sample* mid = &samples.front();
  for (const Sample& s : samples) {
    if (std::abs(s.t - mid_t) < std::abs(mid->t - mid_t)) mid = &s;
  }
  const double growth_last_half = mid->rss_mib > 0 ? (rss_end - mid->rss_mib) / mid->rss_mib : 0;
  const bool plateau = samples.size() >= 2 && growth_last_half < kPlateauGrowth;
  // Not part of the verdict, for the reader: the highest RSS of each half, and how often RSS
  // fell by more than 10% between samples (memory given back: the disk index's memtable
  // flushing, for one), which makes the end-vs-middle comparison depend on phase.
  double peak_first = 0, peak_last = 0;
  int drops = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    double& peak = samples[i].t <= mid->t ? peak_first : peak_last;
    peak = std::max(peak, samples[i].rss_mib);
    if (i > 0 && samples[i].rss_mib < 0.9 * samples[i - 1].rss_mib) ++drops;
  }
  const double ops = counters.completed_blocks.load() / seconds;
  const double first_rate = samples.front().ops_per_s;
  double min_rate = first_rate, max_rate = first_rate;
  for (const Sample& s : samples) {
    min_rate = std::min(min_rate, s.ops_per_s);
    max_rate = std::max(max_rate, s.ops_per_s);
  }
  const TierStats& disk = st.tiers[static_cast<int>(TierKind::kDisk)];
  uint64_t evictions = 0, demotions = 0;
  for (const TierStats& t : st.tiers) {
    evictions += t.evictions;
    demotions += t.demotions;
  }
  const uint64_t failed_ops = counters.failed_loads + counters.failed_stores +
                              counters.failed_other + (flushed.ok() ? 0 : 1);
  const uint64_t wrong = counters.wrong_byte_loads;
  const double refs = static_cast<double>(counters.completed_blocks.load());
  std::printf("over %.1f s: %.0f block ops/s (intervals %.0f..%.0f), prefix hit %.3f, "
              "%lu load races; disk written %.0f MiB, read %.0f MiB; %lu evictions, "
              "%lu demotions\n",
              seconds, ops, min_rate, max_rate, refs > 0 ? counters.loaded / refs : 0,
              static_cast<unsigned long>(counters.load_races.load()), disk.bytes_in / 1048576.0,
              disk.bytes_out / 1048576.0, static_cast<unsigned long>(evictions),
              static_cast<unsigned long>(demotions));
  std::printf("RSS %.1f MiB at start (engine open), %.1f at mid-run, %.1f at the end: last half "
              "%+.2f%% (%s: plateau means < %.0f%%); peak %.1f MiB in the first half, %.1f in "
              "the last; %d drops of > 10%%\n",
              rss_start, mid->rss_mib, rss_end, 100 * growth_last_half,
              plateau ? "plateau" : "STILL GROWING", 100 * kPlateauGrowth, peak_first, peak_last,
              drops);
  std::printf("wrong-byte loads %lu, failed ops %lu (loads %lu, stores %lu, other %lu)%s\n",
              static_cast<unsigned long>(wrong), static_cast<unsigned long>(failed_ops),
              static_cast<unsigned long>(counters.failed_loads.load()),
              static_cast<unsigned long>(counters.failed_stores.load()),
              static_cast<unsigned long>(counters.failed_other.load()),
              flushed.ok() ? "" : absl::StrCat("; final Flush: ", flushed.ToString()).c_str());

  std::vector<double> sample_t, sample_ops, sample_rss;
  for (const Sample& s : samples) {
    sample_t.push_back(s.t);
    sample_ops.push_back(s.ops_per_s);
    sample_rss.push_back(s.rss_mib);
  }
  JsonLine()
      .Str("bench", "soak").Num("figure", ops)
      .Str("unit", absl::StrCat("block ops/s through the engine over the run, ", threads,
                                threads == 1 ? " client" : " clients", ", every byte verified"))
      .Num("ceiling", first_rate)
      .Str("ceiling_source", "the first interval's rate in the same run (ratio < 1: decay)")
      .Num("ratio", first_rate > 0 ? ops / first_rate : 0)
      .Num("minutes", minutes).Num("seconds", seconds).Num("interval_s", interval_s)
      .Num("threads", threads)
      .Num("gpu_blocks", static_cast<double>(gpu_slots))
      .Num("host_blocks", static_cast<double>(host_slots))
      .Num("disk_blocks", static_cast<double>(disk_blocks))
      .Num("working_set_blocks", static_cast<double>(trace.unique_blocks))
      .Num("working_set_over_capacity", static_cast<double>(trace.unique_blocks) / capacity)
      .Num("requests", static_cast<double>(counters.completed_requests.load()))
      .Num("block_ops", refs)
      .Num("min_interval_ops_per_s", min_rate).Num("max_interval_ops_per_s", max_rate)
      .Num("prefix_hit_token_ratio", refs > 0 ? counters.loaded / refs : 0)
      .Num("load_races", static_cast<double>(counters.load_races.load()))
      .Num("gpu_tier_loads", static_cast<double>(counters.gpu_loads.load()))
      .Num("disk_written_mib", disk.bytes_in / 1048576.0)
      .Num("disk_read_mib", disk.bytes_out / 1048576.0)
      .Num("disk_write_failures", static_cast<double>(disk.write_failures))
      .Num("disk_checksum_failures", static_cast<double>(disk.checksum_failures))
      .Num("evictions", static_cast<double>(evictions))
      .Num("demotions", static_cast<double>(demotions))
      .Num("rss_start_mib", rss_start).Num("rss_mid_mib", mid->rss_mib)
      .Num("rss_end_mib", rss_end)
      .Num("rss_growth_last_half", growth_last_half)
      .Num("plateau_threshold", kPlateauGrowth).Num("plateau", plateau ? 1 : 0)
      .Num("rss_peak_first_half_mib", peak_first).Num("rss_peak_last_half_mib", peak_last)
      .Num("rss_drops", drops)
      .Num("wrong_byte_loads", static_cast<double>(wrong))
      .Num("failed_ops", static_cast<double>(failed_ops))
      .Num("failed_loads", static_cast<double>(counters.failed_loads.load()))
      .Num("failed_stores", static_cast<double>(counters.failed_stores.load()))
      .Num("other_errors", static_cast<double>(counters.failed_other.load()))
      .Nums("samples_t_s", sample_t)
      .Nums("samples_ops_per_s", sample_ops)
      .Nums("samples_rss_mib", sample_rss)
      .Print();
  return wrong == 0 && failed_ops == 0 && plateau ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
