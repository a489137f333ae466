// bench/loadplan_bench.cc — `bench/run loadplan`: time to first token of a request whose
// matched prefix sits half in the host tier and half on disk, under three disk conditions,
// for three policies: always load what matched, always recompute, and kvtier's plan
// (Engine::PlanLoad with the declared prefill rate, a deadline of 1.5x the plan's expected
// load time, late blocks recomputed).
//
// Prefill is synthetic (the bench measures kvtier, not a model): recomputing t tokens takes
// t / R seconds of sleep, spread over the layers so that layer l's share runs once layer l of
// the loaded blocks has landed (WaitLayerHost), as a layer-wise prefill would. The loads are
// real: the engine on the emulated device (its link throttled to --copy-gbps), the disk tier
// on this machine's disk through io_uring. Conditions: the disk as it is; every disk read
// held --slow-ms before it starts (slower than recomputing); and the disk stalling mid-load
// (reads after the first quarter held --stall-ms). Each condition runs --runs rounds of the
// three policies in rotated order; the figures are medians. figure = the worst, over the
// conditions, of the plan's TTFT over the better fixed policy's (target <= 1.05).

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "engine/testing_hooks.h"
#include "io/io_engine.h"
#include "kvtier/engine.h"

namespace kvtier::bench {
namespace {

struct Config {
  size_t prompt_tokens = 4096;
  double prefill_tokens_per_s = 20000;
  double copy_gbps = 8;
  int slow_ms = 100;
  int stall_ms = 3000;
  int runs = 5;
  bool verbose = false;
  std::string dir;
};

enum class Policy { kLoad, kRecompute, kPlan };
const char* PolicyName(Policy p) {
  switch (p) {
    case Policy::kLoad:
      return "load";
    case Policy::kRecompute:
      return "recompute";
    case Policy::kPlan:
      return "plan";
  }
  return "?";
}

enum class Condition { kFullSpeed, kSlowDisk, kStall };
const char* ConditionName(Condition c) {
  switch (c) {
    case Condition::kFullSpeed:
      return "full_speed";
    case Condition::kSlowDisk:
      return "slow_disk";
    case Condition::kStall:
      return "stall";
  }
  return "?";
}

void SleepFor(double seconds) {
  if (seconds > 0) absl::SleepFor(absl::Seconds(seconds));
}

class Bench {
 public:
  explicit Bench(const Config& c) : c_(c) {}

  absl::Status Open() {
    EngineOptions o;
    o.geometry = {/*num_layers=*/8, /*num_kv_heads=*/8, /*head_dim=*/64, DType::kFloat16,
                  /*block_tokens=*/16};  // 256 KiB blocks, 16 KiB per token
    o.model_fingerprint = "kvtier-bench-loadplan";
    o.device.choice = DeviceChoice::kEmulated;
    o.device.emulated_copy_gbps = c_.copy_gbps;
    blocks_ = c_.prompt_tokens / o.geometry.block_tokens;
    head_ = blocks_ / 2;
    // Room for the whole prompt (a Load of it must fit), plus other traffic's blocks.
    filler_blocks_ = blocks_ - head_ + 4;
    o.host_tier_bytes = (head_ + filler_blocks_) * o.geometry.block_bytes();
    o.disk.directory = c_.dir;
    o.disk.capacity_bytes = size_t{8} * blocks_ * o.geometry.block_bytes();
    o.disk.admit_min_seen = 1;
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    if (!e.ok()) return e.status();
    engine_ = std::move(*e);
    g_ = o.geometry;
    prompt_.resize(c_.prompt_tokens);
    for (size_t i = 0; i < prompt_.size(); ++i) prompt_[i] = static_cast<int32_t>(i * 7 + 3);
    filler_.resize(filler_blocks_ * g_.block_tokens);
    for (size_t i = 0; i < filler_.size(); ++i) filler_[i] = static_cast<int32_t>(i * 11 + 5);
    absl::StatusOr<DevicePtr> buf = engine_->device().Allocate(blocks_ * g_.block_bytes());
    if (!buf.ok()) return buf.status();
    buf_ = *buf;
    // Write the whole buffer once: a GPU's memory is resident from cudaMalloc, the emulated
    // device's is fresh host memory whose first writes fault page by page (~60 MiB here:
    // ~90 ms of faults in the first Load of every engine, which is not the link's time).
    {
      absl::StatusOr<std::unique_ptr<Stream>> stream = engine_->device().CreateStream();
      if (!stream.ok()) return stream.status();
      const std::vector<char> zeros(blocks_ * g_.block_bytes(), 0);
      if (absl::Status s = (*stream)->CopyToDevice(buf_, zeros.data(), zeros.size()); !s.ok()) {
        return s;
      }
      if (absl::Status s = (*stream)->Synchronize(); !s.ok()) return s;
    }
    if (absl::Status s = Reset(); !s.ok()) return s;
    absl::StatusOr<MatchResult> m = engine_->Match("default", prompt_);
    if (!m.ok()) return m.status();
    keys_ = m->keys;
    return absl::OkStatus();
  }

  // Stores blocks [first, end) of `tokens` (at most head_ per Store, each waited for).
  absl::Status StoreRange(absl::Span<const int32_t> tokens, size_t first, size_t end) {
    for (size_t b = first; b < end; b += head_) {
      const size_t n = std::min(head_, end - b);
      StoreRequest sr;
      sr.ns = "default";
      sr.tokens = tokens.first((b + n) * g_.block_tokens);
      sr.first_block = b;
      sr.buffers = Buffers(n);
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Store(sr);
      if (!h.ok()) return h.status();
      if (absl::Status s = (*h)->Wait(); !s.ok()) return s;
    }
    return engine_->Flush();
  }

  // The prompt's head in the host tier and its tail on disk, every read settled: erase it
  // and the other traffic, store the tail, then the other traffic, then the head, which
  // pushes the oldest blocks, the tail, down to disk.
  absl::Status Reset() {
    if (absl::Status s = engine_->Flush(); !s.ok()) return s;
    for (const std::vector<int32_t>* t : {&prompt_, &filler_}) {
      absl::StatusOr<MatchResult> m = engine_->Match("default", *t);
      if (!m.ok()) return m.status();
      if (!m->keys.empty()) {
        if (absl::StatusOr<size_t> n = engine_->Erase("default", m->keys); !n.ok()) {
          return n.status();
        }
      }
    }
    if (absl::Status s = engine_->Flush(); !s.ok()) return s;
    if (absl::Status s = StoreRange(prompt_, head_, blocks_); !s.ok()) return s;
    if (absl::Status s = StoreRange(filler_, 0, filler_blocks_); !s.ok()) return s;
    if (absl::Status s = StoreRange(prompt_, 0, head_); !s.ok()) return s;
    absl::StatusOr<MatchResult> m = engine_->Match("default", prompt_);
    if (!m.ok()) return m.status();
    size_t on_disk = 0, in_host = 0;
    for (size_t i = 0; i < m->tiers.size(); ++i) {
      on_disk += i >= head_ && m->tiers[i] == TierKind::kDisk;
      in_host += i < head_ && m->tiers[i] == TierKind::kHost;
    }
    if (m->keys.size() != blocks_ || on_disk != blocks_ - head_ || in_host != head_) {
      return absl::InternalError(absl::StrFormat(
          "reset: %d of %d blocks matched, head %d of %d in host, tail %d of %d on disk",
          m->keys.size(), blocks_, in_host, head_, on_disk, blocks_ - head_));
    }
    return absl::OkStatus();
  }

  // One request's TTFT under `policy`, in seconds.
  absl::StatusOr<double> Run(Policy policy, Condition condition, size_t* loaded_blocks) {
    const double start = Now();
    absl::StatusOr<MatchResult> m = engine_->Match("default", prompt_);
    if (!m.ok()) return m.status();
    const size_t n = c_.prompt_tokens;
    const size_t bt = g_.block_tokens;
    // Always compute at least the last token (its logits).
    size_t k = std::min(m->keys.size(), (n - 1) / bt);
    absl::Time deadline = absl::InfiniteFuture();
    if (policy == Policy::kRecompute) k = 0;
    if (policy == Policy::kPlan) {
      ComputeModel cm;
      cm.prefill_tokens_per_s = c_.prefill_tokens_per_s;
      absl::StatusOr<LoadPlan> plan = engine_->PlanLoad(*m, n, 0, cm);
      if (!plan.ok()) return plan.status();
      k = plan->load_blocks;
      const double expected = plan->expected_load_s + plan->expected_stage_s;
      deadline = absl::Now() + std::max(absl::Milliseconds(5), absl::Seconds(1.5 * expected));
    }
    *loaded_blocks = k;
    if (condition == Condition::kSlowDisk) {
      if (absl::Status s = InjectDiskFault(
              *engine_, {FaultSpec::Kind::kDelay, 0, 0, absl::Milliseconds(c_.slow_ms)});
          !s.ok()) {
        return s;
      }
    } else if (condition == Condition::kStall) {
      const uint64_t quarter = (blocks_ - head_) / 4;
      if (absl::Status s = InjectDiskFault(
              *engine_, {FaultSpec::Kind::kDelay, quarter, 0, absl::Milliseconds(c_.stall_ms)});
          !s.ok()) {
        return s;
      }
    }
    const double per_token = 1.0 / c_.prefill_tokens_per_s;
    size_t recompute = n - k * bt;
    if (k == 0) {
      SleepFor(recompute * per_token);
    } else {
      const EngineStats before = engine_->Stats();
      LoadRequest lr;
      lr.ns = "default";
      lr.keys.assign(m->keys.begin(), m->keys.begin() + k);
      lr.buffers = Buffers(k);
      lr.deadline = deadline;
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Load(lr);
      if (!h.ok()) return h.status();
      // Layer l of the recompute runs once layer l of the loaded blocks is in.
      for (uint32_t l = 0; l < g_.num_layers; ++l) {
        if (absl::Status s = (*h)->WaitLayerHost(l); !s.ok()) return s;
        SleepFor(recompute * per_token / g_.num_layers);
      }
      const double loaded_at = Now() - start;
      absl::StatusOr<std::vector<size_t>> failed = (*h)->FailedBlocks();
      if (!failed.ok()) return failed.status();
      if (c_.verbose) {
        const EngineStats after = engine_->Stats();
        const TierStats& d0 = before.tiers[TierKind::kDisk];
        const TierStats& d1 = after.tiers[TierKind::kDisk];
        std::fprintf(
            stderr,
            "%s %s: %zu blocks loaded, deadline at %.1f ms, last layer in at %.1f ms, "
            "%zu failed (first %zu); during the load: %llu blocks abandoned, disk "
            "%.1f MiB read, %.1f MiB written\n",
            ConditionName(condition), PolicyName(policy), k,
            absl::ToDoubleMilliseconds(deadline - absl::Now()) + (Now() - start) * 1e3,
            loaded_at * 1e3, failed->size(), failed->empty() ? 0 : failed->front(),
            static_cast<unsigned long long>(after.blocks_abandoned - before.blocks_abandoned),
            (d1.bytes_out - d0.bytes_out) / 1048576.0, (d1.bytes_in - d0.bytes_in) / 1048576.0);
      }
      // Blocks that missed the deadline, and every block after the first of them, are
      // recomputed too (attention needs the whole prefix).
      if (!failed->empty()) SleepFor((k - failed->front()) * bt * per_token);
    }
    const double ttft = Now() - start;
    if (condition != Condition::kFullSpeed) {
      if (absl::Status s = ClearDiskFaults(*engine_); !s.ok()) return s;
    }
    if (absl::Status s = Reset(); !s.ok()) return s;
    return ttft;
  }

  const EngineStats Stats() { return engine_->Stats(); }
  size_t blocks() const { return blocks_; }
  size_t head() const { return head_; }

  ~Bench() {
    if (engine_ != nullptr && !buf_.is_null()) (void)engine_->device().Free(buf_);
  }

 private:
  KvBuffers Buffers(size_t n) {
    std::vector<DevicePtr> ptrs(n);
    for (size_t i = 0; i < n; ++i) ptrs[i] = buf_ + i * g_.block_bytes();
    return KvBuffers::Blocks(ptrs);
  }

  Config c_;
  std::unique_ptr<Engine> engine_;
  Geometry g_;
  size_t blocks_ = 0;
  size_t head_ = 0;
  size_t filler_blocks_ = 0;
  std::vector<int32_t> prompt_;
  std::vector<int32_t> filler_;
  std::vector<BlockKey> keys_;
  DevicePtr buf_;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Main(int argc, char** argv) {
  Config c;
  CLI::App app(
      "bench loadplan: TTFT of a prefix half in the host tier and half on disk, under a disk at "
      "full speed, slowed and stalling; always-load vs always-recompute vs kvtier's plan",
      "bench/run loadplan");
  app.add_option("--prompt-tokens", c.prompt_tokens, "tokens of the request (16 per block)")
      ->check(flags::AtLeast<size_t>(64))
      ->capture_default_str();
  app.add_option("--prefill-tokens-per-s", c.prefill_tokens_per_s,
                 "the synthetic model's prefill rate (the compute the plan is told)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--slow-ms", c.slow_ms, "slow disk: every disk operation held this long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--stall-ms", c.stall_ms,
                 "stalling disk: operations after the first quarter held this long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  flags::AddRuns(app, &c.runs);
  app.add_flag("--verbose", c.verbose, "one line per load: its deadline, when it landed, failures");
  flags::AddCopyGbps(app, &c.copy_gbps, "the emulated link's GB/s (a PCIe model)");
  std::string dir_flag;
  app.add_option("--dir", dir_flag, "cache directory (default: a fresh one under /tmp)");
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  // Each condition gets an engine of its own (in a fresh directory), so what the engine
  // learned of the disk under one condition does not carry into the next. Under the stall,
  // every run gets a fresh engine: the stall must come as a surprise (the plan believes the
  // disk is as fast as its prior), or it measures only what the plan learned from the last one.
  std::vector<std::string> dirs;
  auto make = [&](std::unique_ptr<Bench>* out) -> bool {
    Config cc = c;
    if (dir_flag.empty()) {
      char tmpl[] = "/tmp/kvtier-bench-loadplan-XXXXXX";
      if (mkdtemp(tmpl) == nullptr) {
        std::perror("mkdtemp");
        return false;
      }
      dirs.push_back(tmpl);
      cc.dir = std::string(tmpl) + "/cache";
    } else {
      cc.dir = absl::StrFormat("%s/%d", dir_flag, dirs.size());
      dirs.push_back(cc.dir);
    }
    out->reset();
    *out = std::make_unique<Bench>(cc);
    if (absl::Status s = (*out)->Open(); !s.ok()) {
      std::fprintf(stderr, "bench loadplan: %s\n", s.ToString().c_str());
      return false;
    }
    return true;
  };
  std::unique_ptr<Bench> bench;
  if (!make(&bench)) return 1;
  std::printf(
      "loadplan: %zu-token prompt, %zu blocks of 256 KiB (%zu in host, %zu on disk), prefill "
      "%.0f tokens/s, link %.1f GB/s; median of %d rounds\n",
      c.prompt_tokens, bench->blocks(), bench->head(), bench->blocks() - bench->head(),
      c.prefill_tokens_per_s, c.copy_gbps, c.runs);
  std::printf("%-11s %12s %12s %12s %12s %10s %10s\n", "condition", "load ms", "recompute ms",
              "plan ms", "plan blocks", "plan/best", "plan/worst");
  JsonLine json;
  double worst = 0;
  std::string worst_at;
  const Policy order[3] = {Policy::kLoad, Policy::kRecompute, Policy::kPlan};
  for (Condition cond : {Condition::kFullSpeed, Condition::kSlowDisk, Condition::kStall}) {
    std::vector<double> t[3];
    std::vector<double> plan_blocks;
    if (cond != Condition::kFullSpeed && !make(&bench)) return 1;
    for (int round = 0; round < c.runs; ++round) {
      for (int j = 0; j < 3; ++j) {
        const Policy p = order[(round + j) % 3];  // rotated: ABC, BCA, CAB
        if (cond == Condition::kStall && (round > 0 || j > 0) && !make(&bench)) return 1;
        size_t loaded = 0;
        absl::StatusOr<double> ttft = bench->Run(p, cond, &loaded);
        if (!ttft.ok()) {
          std::fprintf(stderr, "bench loadplan: %s %s: %s\n", ConditionName(cond), PolicyName(p),
                       ttft.status().ToString().c_str());
          return 1;
        }
        t[static_cast<int>(p)].push_back(*ttft);
        if (p == Policy::kPlan) plan_blocks.push_back(static_cast<double>(loaded));
      }
    }
    const double load = Median(t[0]), recompute = Median(t[1]), plan = Median(t[2]);
    const double best = std::min(load, recompute), worse = std::max(load, recompute);
    std::printf("%-11s %12.1f %12.1f %12.1f %12.0f %10.3f %10.3f\n", ConditionName(cond),
                load * 1e3, recompute * 1e3, plan * 1e3, Median(plan_blocks), plan / best,
                plan / worse);
    const std::string tag = ConditionName(cond);
    json.Num("load_ms_" + tag, load * 1e3)
        .Num("recompute_ms_" + tag, recompute * 1e3)
        .Num("plan_ms_" + tag, plan * 1e3)
        .Num("plan_blocks_" + tag, Median(plan_blocks))
        .Num("plan_over_best_" + tag, plan / best)
        .Num("plan_over_worse_" + tag, plan / worse);
    if (plan / best > worst) {
      worst = plan / best;
      worst_at = tag;
    }
  }
  const EngineStats st = bench->Stats();
  const TierStats& disk = st.tiers[TierKind::kDisk];
  std::printf(
      "the last engine's disk tier as it measured it: %.2f GB/s, %.2f ms per read; %llu "
      "blocks abandoned at deadlines\n",
      disk.read_bytes_per_s / 1e9, disk.read_latency_ns / 1e6,
      static_cast<unsigned long long>(st.blocks_abandoned));
  JsonLine head;
  head.Str("bench", "loadplan")
      .Num("figure", worst)
      .Str("unit", "x")
      .Num("ceiling", 1)
      .Str("ceiling_source",
           "TTFT of the better of always-load and always-recompute, same run, same condition; "
           "the worst condition")
      .Num("ratio", worst)
      .Str("worst_condition", worst_at)
      .Num("target", 1.05)
      .Num("prompt_tokens", static_cast<double>(c.prompt_tokens))
      .Num("prefill_tokens_per_s", c.prefill_tokens_per_s)
      .Num("copy_gbps", c.copy_gbps)
      .Num("slow_ms", c.slow_ms)
      .Num("stall_ms", c.stall_ms)
      .Num("disk_read_bytes_per_s", static_cast<double>(disk.read_bytes_per_s))
      .Num("disk_read_latency_ns", static_cast<double>(disk.read_latency_ns))
      .Num("blocks_abandoned", static_cast<double>(st.blocks_abandoned));
  head.Merge(json).Print();
  bench.reset();
  for (const std::string& d : dirs) std::filesystem::remove_all(d);
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
