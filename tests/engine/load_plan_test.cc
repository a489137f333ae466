// tests/engine/load_plan_test.cc — PlanLoad, as a specification.
//
// Every edge case of docs/research/issue-21-load-plans.md §3 has its own test; the closed form
// of §2.3 is the oracle for one tier in its three regimes; a seeded brute force compares the
// planner with an independent event simulator of the staging and layer pipeline (the f_l
// recurrence of §2.2), minimised over every k under the same hysteresis and tie rules; faster
// tiers never load less and faster compute never loads more; bad inputs are refused naming
// the field.

#include "kvtier/load_plan.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::testing::HasSubstr;
using Reason = LoadPlan::Reason;

constexpr double kGB = 1e9;

// 2 parts x kv_heads x head_dim x 2 bytes per token and layer (fp16).
Geometry MakeGeometry(uint32_t layers, uint32_t block_tokens, uint32_t kv_heads = 8,
                      uint32_t head_dim = 128) {
  Geometry g;
  g.num_layers = layers;
  g.num_kv_heads = kv_heads;
  g.head_dim = head_dim;
  g.dtype = DType::kFloat16;
  g.block_tokens = block_tokens;
  return g;
}

StageRate Rate(double bytes_per_s, double latency_s = 0, double queued_bytes = 0) {
  return StageRate{bytes_per_s, latency_s, queued_bytes};
}

// A PCIe 5 host link, a local NVMe, a remote tier behind 100 GbE.
LoadCostModel TypicalCost() {
  LoadCostModel c;
  c.h2d = Rate(50 * kGB, 10e-6);
  c.d2d = Rate(1000 * kGB, 5e-6);
  c.stage[TierKind::kDisk] = Rate(3 * kGB, 100e-6);
  c.stage[TierKind::kRemote] = Rate(10 * kGB, 500e-6);
  return c;
}

ComputeModel Compute(double tokens_per_s) {
  ComputeModel m;
  m.prefill_tokens_per_s = tokens_per_s;
  return m;
}

// `v` followed by `n` blocks in tier `t`.
std::vector<TierKind> Blocks(TierKind t, size_t n, std::vector<TierKind> v = {}) {
  v.insert(v.end(), n, t);
  return v;
}

// Runs of blocks, in order: Tiers({{kHost, 4}, {kDisk, 8}}).
std::vector<TierKind> Tiers(std::initializer_list<std::pair<TierKind, size_t>> runs) {
  std::vector<TierKind> v;
  for (const auto& [t, n] : runs) v = Blocks(t, n, std::move(v));
  return v;
}

LoadPlan MustPlan(const LoadPlanInput& in, const LoadCostModel& cost, const ComputeModel& m) {
  absl::StatusOr<LoadPlan> p = PlanLoad(in, cost, m);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : LoadPlan{};
}

void ExpectRefused(const LoadPlanInput& in, const LoadCostModel& cost, const ComputeModel& m,
                   const std::string& names) {
  absl::StatusOr<LoadPlan> p = PlanLoad(in, cost, m);
  ASSERT_FALSE(p.ok()) << "accepted; expected a refusal naming " << names;
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_THAT(std::string(p.status().message()), HasSubstr(names));
}

void ExpectNear(double actual, double expected, const char* what) {
  EXPECT_NEAR(actual, expected, 1e-12 + 1e-9 * std::abs(expected)) << what;
}

// ---------------------------------------------------------------------------------------------
// An independent model of what a planned Load and prefill do, event by event: each staged tier
// serves its queue then its blocks one after another; the gated stream starts once every
// staged block is in a host slot and copies layer 0 of every block, then layer 1, ...; compute
// of layer l of the first forward step starts when both layer l has landed and layer l - 1 is
// computed (f_l = max(f_{l-1}, landed_l) + c); later steps follow one after another.

struct Scenario {
  size_t n = 0, a = 0, min_recompute = 1, usable = std::numeric_limits<size_t>::max();
  std::vector<TierKind> tiers;
  Geometry g;
  bool layerwise = true;
  double hysteresis = 0.02, tie = 1e-3;
  LoadCostModel cost;
  ComputeModel compute;

  LoadPlanInput Input() const {
    LoadPlanInput in;
    in.prompt_tokens = n;
    in.local_tokens = a;
    in.tiers = tiers;
    in.usable_blocks = usable;
    in.geometry = g;
    in.layerwise = layerwise;
    in.min_recompute_tokens = min_recompute;
    in.hysteresis = hysteresis;
    in.tie_tolerance = tie;
    return in;
  }
};

// Blocks worth considering: before the usable limit, on a stage that runs, and holding at least
// one token before the last min_recompute tokens.
size_t SimUsable(const Scenario& s) {
  size_t k = 0;
  while (k < s.tiers.size() && k < s.usable) {
    const TierKind t = s.tiers[k];
    const bool link_ok =
        t == TierKind::kGpu ? s.cost.d2d.bytes_per_s > 0 : s.cost.h2d.bytes_per_s > 0;
    const bool stage_ok =
        (t != TierKind::kDisk && t != TierKind::kRemote) || s.cost.stage[t].bytes_per_s > 0;
    const bool has_token = s.a + k * s.g.block_tokens + s.min_recompute < s.n;
    if (!link_ok || !stage_ok || !has_token) break;
    ++k;
  }
  return k;
}

// Cost of one forward step over prompt positions [s, e).
double StepCost(const ComputeModel& m, double s, double e) {
  return m.fixed_s + (e - s) / m.prefill_tokens_per_s +
         m.attention_s_per_token2 * (e * e - s * s) / 2;
}

double Simulate(const Scenario& s, size_t k) {
  const double bytes = static_cast<double>(s.g.block_bytes());
  const uint32_t layers = s.g.num_layers;
  // Staging.
  double staged = 0;
  for (TierKind t : {TierKind::kDisk, TierKind::kRemote}) {
    const StageRate& r = s.cost.stage[t];
    double clock = -1;
    for (size_t j = 0; j < k; ++j) {
      if (s.tiers[j] != t) continue;
      if (clock < 0) clock = r.latency_s + r.queued_bytes / r.bytes_per_s;
      clock += bytes / r.bytes_per_s;
    }
    staged = std::max(staged, clock);
  }
  // Copies, layer by layer on one stream; each link's latency and queue before its first byte.
  double start = staged;
  bool any_d2d = false, any_h2d = false;
  for (size_t j = 0; j < k; ++j) (s.tiers[j] == TierKind::kGpu ? any_d2d : any_h2d) = true;
  double delay = 0;
  if (any_d2d)
    delay =
        std::max(delay, s.cost.d2d.latency_s + s.cost.d2d.queued_bytes / s.cost.d2d.bytes_per_s);
  if (any_h2d)
    delay =
        std::max(delay, s.cost.h2d.latency_s + s.cost.h2d.queued_bytes / s.cost.h2d.bytes_per_s);
  start += delay;
  std::vector<double> landed(layers, 0.0);
  double clock = start;
  for (uint32_t l = 0; l < layers; ++l) {
    for (size_t j = 0; j < k; ++j) {
      const StageRate& link = s.tiers[j] == TierKind::kGpu ? s.cost.d2d : s.cost.h2d;
      clock += bytes / layers / link.bytes_per_s;
    }
    landed[l] = k > 0 ? clock : 0;
  }
  if (!s.layerwise) std::fill(landed.begin(), landed.end(), k > 0 ? clock : 0);
  // Compute.
  const size_t loadable = s.n - s.a > s.min_recompute ? s.n - s.a - s.min_recompute : 0;
  const size_t loaded = std::min(k * s.g.block_tokens, loadable);
  size_t pos = s.a + loaded;
  const size_t step = s.compute.max_step_tokens == 0 ? s.n : s.compute.max_step_tokens;
  const size_t first_end = std::min(s.n, pos + step);
  const double per_layer = StepCost(s.compute, pos, first_end) / layers;
  double f = 0;
  for (uint32_t l = 0; l < layers; ++l) f = std::max(f, landed[l]) + per_layer;
  for (pos = first_end; pos < s.n; pos = std::min(s.n, pos + step)) {
    f += StepCost(s.compute, pos, std::min(s.n, pos + step));
  }
  return f;
}

// The rule of kvtier/load_plan.h applied to the simulated times: k > 0 only when it beats
// recomputing by the hysteresis; among those within tie * T(0) of the fastest, the largest.
size_t SimChoice(const std::vector<double>& t, double hysteresis, double tie) {
  if (t.size() <= 1) return 0;
  const double best = *std::min_element(t.begin() + 1, t.end());
  const double must_beat = (1 - hysteresis) * t[0];
  if (best > must_beat) return 0;
  const double limit = std::min(best + tie * t[0], must_beat);
  for (size_t k = t.size() - 1; k >= 1; --k) {
    if (t[k] <= limit) return k;
  }
  return 0;
}

// Whether choosing `k` obeys that rule when every comparison may be off by `slack` (the
// planner and the simulator round differently, so a case on a boundary may go either way).
bool Acceptable(const std::vector<double>& t, size_t k, double hysteresis, double tie,
                double slack) {
  if (t.size() <= 1) return k == 0;
  const double best = *std::min_element(t.begin() + 1, t.end());
  const double must_beat = (1 - hysteresis) * t[0];
  if (k == 0) return best > must_beat - slack;
  const double limit = std::min(best + tie * t[0], must_beat);
  if (t[k] > limit + slack) return false;
  for (size_t j = k + 1; j < t.size(); ++j) {
    if (t[j] <= limit - slack) return false;  // a larger k qualifies beyond doubt
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The edge cases of §3, one test each.

TEST(PlanLoad, EmptyMatchHasNothingToLoad) {
  LoadPlanInput in;
  in.prompt_tokens = 1000;
  in.geometry = MakeGeometry(32, 16);
  const LoadPlan p = MustPlan(in, TypicalCost(), Compute(10000));
  EXPECT_EQ(p.reason, Reason::kNothingToLoad);
  EXPECT_EQ(p.load_blocks, 0u);
  EXPECT_EQ(p.load_tokens, 0u);
  EXPECT_EQ(p.recompute_tokens, 1000u);
  EXPECT_EQ(p.usable_blocks, 0u);
  ExpectNear(p.expected_total_s, 0.1, "1000 tokens at 10k/s");
  EXPECT_EQ(p.recompute_all_s, p.expected_total_s);
  EXPECT_EQ(p.load_all_s, p.expected_total_s);
  EXPECT_EQ(p.expected_load_s, 0);
}

TEST(PlanLoad, LocalTokensCoveringTheMatchLeaveNothingToLoad) {
  // Match found 4 blocks; the caller already holds all 4 (and 2 more), so the tiers after its
  // local tokens are empty. The recompute covers only positions [96, 200), attention included.
  LoadPlanInput in;
  in.prompt_tokens = 200;
  in.local_tokens = 96;
  in.geometry = MakeGeometry(32, 16);
  ComputeModel m = Compute(1000);
  m.attention_s_per_token2 = 1e-6;
  const LoadPlan p = MustPlan(in, TypicalCost(), m);
  EXPECT_EQ(p.reason, Reason::kNothingToLoad);
  EXPECT_EQ(p.recompute_tokens, 104u);
  ExpectNear(p.expected_compute_s, 104 / 1000.0 + 1e-6 * (200.0 * 200 - 96.0 * 96) / 2,
             "recompute of [96, 200)");
}

TEST(PlanLoad, FullHitLoadsEveryBlockAndRecomputesOneToken) {
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.tiers = Blocks(TierKind::kHost, 8);
  s.n = 8 * 16;
  s.cost = TypicalCost();
  s.compute = Compute(5000);
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.reason, Reason::kLoadAll);
  EXPECT_EQ(p.load_blocks, 8u);
  EXPECT_EQ(p.load_tokens, 127u);
  EXPECT_EQ(p.recompute_tokens, 1u);
  ExpectNear(p.expected_compute_s, 1 / 5000.0, "one token");
}

TEST(PlanLoad, PartialLastBlockIsAlwaysComputed) {
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.tiers = Blocks(TierKind::kHost, 8);
  s.n = 8 * 16 + 5;
  s.cost = TypicalCost();
  s.compute = Compute(5000);
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.reason, Reason::kLoadAll);
  EXPECT_EQ(p.load_tokens, 128u);
  EXPECT_EQ(p.recompute_tokens, 5u);
  // With min_recompute_tokens = 16, the last block's tokens are all in the recomputed tail:
  // it is worth nothing, so it is not loaded.
  s.n = 8 * 16;
  s.min_recompute = 16;
  const LoadPlan q = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(q.usable_blocks, 7u);
  EXPECT_EQ(q.load_blocks, 7u);
  EXPECT_EQ(q.recompute_tokens, 16u);
}

TEST(PlanLoad, NeverPlansPastTheFirstGap) {
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.tiers = Blocks(TierKind::kHost, 10);
  s.n = 10 * 16 + 1;
  s.usable = 6;
  s.cost = TypicalCost();
  s.compute = Compute(5000);
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.usable_blocks, 6u);
  EXPECT_EQ(p.load_blocks, 6u);
  EXPECT_EQ(p.reason, Reason::kLoadAll);  // all of the usable part
  EXPECT_EQ(p.recompute_tokens, 4u * 16 + 1);
  s.usable = 0;
  EXPECT_EQ(MustPlan(s.Input(), s.cost, s.compute).reason, Reason::kNothingToLoad);
}

TEST(PlanLoad, NonPositiveOrNanPrefillRateIsRefused) {
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.tiers = Blocks(TierKind::kHost, 4);
  s.n = 100;
  s.cost = TypicalCost();
  for (double r : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    ExpectRefused(s.Input(), s.cost, Compute(r), "prefill_tokens_per_s");
  }
}

TEST(PlanLoad, ATierAtRateZeroIsAGap) {
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.tiers = Tiers({{TierKind::kHost, 4}, {TierKind::kRemote, 4}, {TierKind::kHost, 4}});
  s.n = 12 * 16 + 1;
  s.cost = TypicalCost();
  s.cost.stage[TierKind::kRemote] = Rate(0);  // the remote tier is down
  s.compute = Compute(5000);
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.usable_blocks, 4u);
  EXPECT_EQ(p.load_blocks, 4u);
  // No host link: nothing but GPU-tier blocks can reach the caller.
  s.cost = TypicalCost();
  s.cost.h2d = Rate(0);
  EXPECT_EQ(MustPlan(s.Input(), s.cost, s.compute).reason, Reason::kNothingToLoad);
}

TEST(PlanLoad, OneLayerHasNoOverlap) {
  // L = 1: the copy of the only layer must land before any compute, so T = H + C.
  Scenario s;
  s.g = MakeGeometry(1, 16, 8, 128);  // 4096 B/token
  s.tiers = Blocks(TierKind::kHost, 64);
  s.n = 64 * 16 + 100;
  s.cost.h2d = Rate(4096 * 1e5);  // 10 us/token
  s.compute = Compute(20000);     // 50 us/token
  s.hysteresis = 0;
  s.tie = 0;
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.reason, Reason::kLoadAll);
  ExpectNear(p.expected_total_s, 1024 * 10e-6 + 100 * 50e-6, "H + C");
  ExpectNear(p.expected_total_s, p.expected_load_s + p.expected_compute_s, "no overlap");
}

TEST(PlanLoad, NotLayerwiseAddsCopyAndCompute) {
  Scenario s;
  s.g = MakeGeometry(32, 16, 1, 64);  // 8192 B/token
  s.tiers = Blocks(TierKind::kHost, 64);
  s.n = 64 * 16 + 100;
  s.cost.h2d = Rate(8192 * 1e5);  // 10 us/token
  s.compute = Compute(20000);
  s.hysteresis = 0;
  s.tie = 0;
  const double h = 1024 * 10e-6, c = 100 * 50e-6;
  ExpectNear(MustPlan(s.Input(), s.cost, s.compute).load_all_s,
             std::max(h, c) + std::min(h, c) / 32, "layerwise: max + min / L");
  s.layerwise = false;
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  ExpectNear(p.load_all_s, h + c, "whole blocks: H + C");
}

TEST(PlanLoad, ChunkedPrefillOverlapsOnlyTheFirstStep) {
  Scenario s;
  s.g = MakeGeometry(8, 16, 1, 64);  // 2048 B/token
  s.tiers = Blocks(TierKind::kHost, 4);
  s.n = 4 * 16 + 300;
  s.cost.h2d = Rate(2048 * 1e4, 1e-3);  // 100 us/token after 1 ms
  s.compute.prefill_tokens_per_s = 1e4;
  s.compute.fixed_s = 2e-3;
  s.compute.max_step_tokens = 128;  // 300 tokens: steps of 128, 128, 44
  s.hysteresis = 0;
  s.tie = 0;
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  const double h = 64 * 100e-6;
  const double c1 = 2e-3 + 128e-4;
  const double rest = 2 * 2e-3 + 172e-4;
  ExpectNear(p.load_all_s, 1e-3 + std::max(h, c1) + std::min(h, c1) / 8 + rest, "T(K)");
  ExpectNear(p.recompute_all_s, 3 * 2e-3 + 364e-4, "three steps of 128 + 128 + 108");
  EXPECT_EQ(p.reason, Reason::kLoadAll);
  EXPECT_NEAR(Simulate(s, 4), p.load_all_s, 1e-12);
}

TEST(PlanLoad, AllBlocksInTheGpuTierUseOnlyD2d) {
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.tiers = Blocks(TierKind::kGpu, 16);
  s.n = 16 * 16 + 1;
  s.cost = TypicalCost();
  s.cost.h2d = Rate(0);  // unused by GPU-tier blocks
  s.compute = Compute(5000);
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.reason, Reason::kLoadAll);
  EXPECT_EQ(p.tier_blocks[TierKind::kGpu], 16u);
  EXPECT_EQ(p.expected_stage_s, 0);
  const double bytes = 16.0 * s.g.block_bytes();
  ExpectNear(p.expected_load_s, 5e-6 + bytes / (1000 * kGB), "d2d latency + bytes");
}

TEST(PlanLoad, AMillionTokenPromptKeepsItsPrecision) {
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.n = size_t{1} << 20;
  s.a = 4096;
  s.tiers = Blocks(TierKind::kHost, (s.n - s.a) / 16 - 1);
  s.cost.h2d = Rate(50 * kGB);
  s.compute = Compute(20000);
  s.compute.attention_s_per_token2 = 1e-9;
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.usable_blocks, s.tiers.size());
  EXPECT_EQ(p.load_tokens + p.recompute_tokens, s.n - s.a);
  EXPECT_TRUE(std::isfinite(p.expected_total_s));
  // Attention over a million tokens makes recomputing the tail cost hours; loading all is it.
  EXPECT_EQ(p.reason, Reason::kLoadAll);
  const double n = static_cast<double>(s.n), a = static_cast<double>(s.a);
  ExpectNear(p.recompute_all_s, (n - a) / 20000 + 1e-9 * (n * n - a * a) / 2, "T(0)");
  EXPECT_NEAR(Simulate(s, p.load_blocks), p.expected_total_s, 1e-9 * p.expected_total_s);
}

TEST(PlanLoad, HostThenDiskCutsAtTheBoundary) {
  // 32 host blocks, then 32 disk blocks from a disk much slower than compute: load the host
  // run exactly, recompute the disk run.
  Scenario s;
  s.g = MakeGeometry(32, 16);  // 131,072 B/token, as Llama-3-8B
  s.tiers = Tiers({{TierKind::kHost, 32}, {TierKind::kDisk, 32}});
  s.n = 64 * 16 + 10;
  s.cost = TypicalCost();
  s.cost.stage[TierKind::kDisk] = Rate(0.5 * kGB, 200e-6);  // 262 us/token
  s.compute = Compute(20000);                               // 50 us/token
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.reason, Reason::kSplit);
  EXPECT_EQ(p.load_blocks, 32u);
  EXPECT_EQ(p.tier_blocks[TierKind::kHost], 32u);
  EXPECT_EQ(p.tier_blocks[TierKind::kDisk], 0u);
  EXPECT_EQ(p.expected_stage_s, 0);
  EXPECT_LT(p.expected_total_s, p.recompute_all_s);
  EXPECT_LT(p.expected_total_s, p.load_all_s);
}

TEST(PlanLoad, HysteresisTieLoads) {
  // Dyadic numbers so that T(K) == (1 - m) * T(0) holds exactly in doubles: 1024 tokens at
  // 1024 tokens/s, so T(0) = 1; L = 1; loading costs a quarter of computing per token.
  Scenario s;
  s.g = MakeGeometry(1, 1, 1, 64);  // 256 B/token, one token per block
  s.tiers = Blocks(TierKind::kHost, 1023);
  s.n = 1024;
  s.cost.h2d = Rate(256 * 4096);  // 2^-12 s/token
  s.compute = Compute(1024);
  s.tie = 0;
  s.hysteresis = 3069.0 / 4096;  // 1 - m = 1027 / 4096 = T(K)
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  ASSERT_EQ(p.recompute_all_s, 1.0);
  ASSERT_EQ(p.load_all_s, 1027.0 / 4096);
  EXPECT_EQ(p.reason, Reason::kLoadAll);
  EXPECT_EQ(p.load_blocks, 1023u);
  s.hysteresis = 3070.0 / 4096;  // T(K) now misses the margin by 2^-12
  const LoadPlan q = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(q.reason, Reason::kRecomputeAll);
  EXPECT_EQ(q.load_blocks, 0u);
  EXPECT_EQ(q.recompute_tokens, 1024u);
  EXPECT_EQ(q.expected_total_s, 1.0);
}

TEST(PlanLoad, TiesLoadTheMost) {
  // Loading a token costs exactly what computing it does (L = 1): every k ties.
  Scenario s;
  s.g = MakeGeometry(1, 4, 1, 64);  // 256 B/token
  s.tiers = Blocks(TierKind::kHost, 255);
  s.n = 1024;
  s.cost.h2d = Rate(256 * 1024);
  s.compute = Compute(1024);
  s.hysteresis = 0;
  s.tie = 0;
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.load_all_s, p.recompute_all_s);
  EXPECT_EQ(p.load_blocks, 255u);
  // Host blocks at half the cost of computing, then disk blocks that cost 2^-20 s/token more
  // than computing: loading them all is 127 * 4 * 2^-20 = 0.48 ms slower than stopping at
  // the boundary. Within 1 ms (tie_tolerance 1e-3 of T(0) = 1 s), the plan still loads them.
  s.tiers = Tiers({{TierKind::kHost, 128}, {TierKind::kDisk, 127}});
  s.cost.h2d = Rate(256 * 2048);  // u = 2^-11 s/token
  s.cost.stage[TierKind::kDisk] = Rate(256 / (std::ldexp(1, -11) + std::ldexp(1, -20)));
  s.tie = 1e-3;
  const LoadPlan q = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(q.load_blocks, 255u);
  EXPECT_NEAR(q.expected_total_s - 0.75, 508 * std::ldexp(1, -20), 1e-12);
  s.tie = 0;
  const LoadPlan exact = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(exact.load_blocks, 128u);
  EXPECT_EQ(exact.reason, Reason::kSplit);
  EXPECT_NEAR(exact.expected_total_s, 0.75, 1e-12);
}

// ---------------------------------------------------------------------------------------------
// The closed form of §2.3: one tier, linear compute, one step, no latency. With u the link's
// and d the stage's seconds per token, r = 1 / R and L layers:
//   d + u / L >= r  -> load nothing;  d + u <= r / L -> load all;
//   otherwise balance H = C at x* = r (P + S) / (u + r), rounded to a block.

TEST(PlanLoad, ClosedFormOracleForOneTier) {
  int regime_count[3] = {0, 0, 0};
  for (TierKind tier : {TierKind::kHost, TierKind::kDisk}) {
    for (double disk_gbps : {3.0, 0.3, 0.06}) {
      if (tier == TierKind::kHost && disk_gbps != 3.0) continue;
      for (double tokens_per_s : {5e3, 22e3, 100e3}) {
        for (uint32_t layers : {1u, 32u, 80u}) {
          Scenario s;
          s.g = MakeGeometry(layers, 16);
          const size_t blocks = 64, tail = 7;
          s.tiers = Blocks(tier, blocks);
          s.n = blocks * 16 + tail;
          s.cost.h2d = Rate(50 * kGB);
          s.cost.stage[TierKind::kDisk] = Rate(disk_gbps * kGB);
          s.compute = Compute(tokens_per_s);
          s.hysteresis = 0;
          s.tie = 0;
          const double beta = static_cast<double>(s.g.bytes_per_token());
          const double u = beta / (50 * kGB);
          const double d = tier == TierKind::kDisk ? beta / (disk_gbps * kGB) : 0;
          const double r = 1 / tokens_per_s, L = layers;
          const double P = blocks * 16.0, S = tail;
          auto closed = [&](double x) {
            const double h = u * x, c = r * (P + S - x);
            return d * x + std::max(h, c) + std::min(h, c) / L;
          };
          size_t expected;
          int regime;
          if (d + u / L >= r) {
            expected = 0;
            regime = 0;
          } else if (d + u <= r / L) {
            expected = blocks;
            regime = 1;
          } else {
            regime = 2;
            const double x = std::clamp(r * (P + S) / (u + r), 0.0, P);
            const size_t lo = static_cast<size_t>(std::floor(x / 16));
            const size_t hi = std::min(blocks, static_cast<size_t>(std::ceil(x / 16)));
            expected = closed(16.0 * hi) <= closed(16.0 * lo) ? hi : lo;
          }
          ++regime_count[regime];
          const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
          SCOPED_TRACE(absl::StrCat(tier == TierKind::kHost ? "host " : "disk ", disk_gbps,
                                    " GB/s, R=", tokens_per_s, ", L=", layers, ", regime ",
                                    regime));
          EXPECT_EQ(p.load_blocks, expected);
          ExpectNear(p.expected_total_s, closed(16.0 * expected), "closed-form T");
          EXPECT_EQ(p.load_tokens, 16 * expected);
        }
      }
    }
  }
  EXPECT_GT(regime_count[0], 0) << "no case loads nothing";
  EXPECT_GT(regime_count[1], 0) << "no case loads all";
  EXPECT_GT(regime_count[2], 0) << "no case balances";
}

// ---------------------------------------------------------------------------------------------
// Brute force against the event simulator.

double LogUniform(std::mt19937_64& rng, double lo, double hi) {
  return std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(rng));
}

StageRate RandomRate(std::mt19937_64& rng, double zero_p) {
  std::uniform_real_distribution<double> u01(0, 1);
  StageRate r;
  r.bytes_per_s = u01(rng) < zero_p ? 0 : LogUniform(rng, 5e7, 2e11);
  r.latency_s = u01(rng) < 0.3 ? 0 : LogUniform(rng, 1e-6, 1e-2);
  r.queued_bytes = u01(rng) < 0.6 ? 0 : LogUniform(rng, 1e3, 1e9);
  return r;
}

Scenario RandomScenario(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u01(0, 1);
  auto pick = [&](size_t lo, size_t hi) {
    return std::uniform_int_distribution<size_t>(lo, hi)(rng);
  };
  Scenario s;
  const uint32_t layer_choices[] = {1, 2, 7, 32, 80};
  const uint32_t block_choices[] = {1, 4, 16, 64};
  s.g = MakeGeometry(layer_choices[pick(0, 4)], block_choices[pick(0, 3)],
                     static_cast<uint32_t>(pick(1, 8)), pick(0, 1) ? 128 : 64);
  const size_t bt = s.g.block_tokens;
  s.a = bt * pick(0, 3);
  const size_t blocks = pick(0, 32);
  while (s.tiers.size() < blocks) {
    const size_t run = std::min(blocks - s.tiers.size(), pick(1, 12));
    s.tiers = Blocks(static_cast<TierKind>(pick(0, 3)), run, std::move(s.tiers));
  }
  s.n = s.a + blocks * bt + pick(0, 2 * bt);
  if (s.n == s.a) s.n = s.a + 1;
  if (u01(rng) < 0.3) s.usable = pick(0, blocks);
  if (u01(rng) < 0.3) s.min_recompute = pick(1, 2 * bt);
  s.layerwise = u01(rng) < 0.8;
  s.hysteresis = u01(rng) < 0.3 ? 0 : u01(rng) < 0.5 ? 0.02 : 0.3 * u01(rng);
  s.tie = u01(rng) < 0.3 ? 0 : u01(rng) < 0.5 ? 1e-3 : 0.05 * u01(rng);
  for (size_t t = 0; t < static_cast<size_t>(kNumTiers); ++t)
    s.cost.stage[t] = RandomRate(rng, 0.1);
  s.cost.h2d = RandomRate(rng, 0.05);
  s.cost.d2d = RandomRate(rng, 0.05);
  s.compute.prefill_tokens_per_s = LogUniform(rng, 1e2, 1e6);
  if (u01(rng) < 0.5) s.compute.attention_s_per_token2 = LogUniform(rng, 1e-12, 1e-6);
  if (u01(rng) < 0.5) s.compute.fixed_s = LogUniform(rng, 1e-5, 1e-1);
  if (u01(rng) < 0.4) s.compute.max_step_tokens = pick(1, s.n);
  return s;
}

TEST(PlanLoad, MatchesAnEventSimulatorOverEveryPrefix) {
  std::mt19937_64 rng(20240521);
  int by_reason[4] = {0, 0, 0, 0};
  int near_ties = 0;
  constexpr int kCases = 2000;
  for (int i = 0; i < kCases; ++i) {
    const Scenario s = RandomScenario(rng);
    SCOPED_TRACE(absl::StrCat("case ", i, ": N=", s.n, " a=", s.a, " blocks=", s.tiers.size(),
                              " L=", s.g.num_layers, " B=", s.g.block_tokens));
    const absl::StatusOr<LoadPlan> plan = PlanLoad(s.Input(), s.cost, s.compute);
    ASSERT_TRUE(plan.ok()) << plan.status();
    const size_t usable = SimUsable(s);
    ASSERT_EQ(plan->usable_blocks, usable);
    std::vector<double> t(usable + 1);
    for (size_t k = 0; k <= usable; ++k) t[k] = Simulate(s, k);
    const double slack = 1e-9 * t[0];
    const size_t k = plan->load_blocks;
    ASSERT_LE(k, usable);
    EXPECT_NEAR(plan->recompute_all_s, t[0], slack);
    EXPECT_NEAR(plan->load_all_s, t[usable], 1e-9 * t[usable]);
    EXPECT_NEAR(plan->expected_total_s, t[k], 1e-9 * t[k]);
    EXPECT_TRUE(Acceptable(t, k, s.hysteresis, s.tie, slack))
        << "plan k=" << k << " simulator k=" << SimChoice(t, s.hysteresis, s.tie);
    near_ties += k != SimChoice(t, s.hysteresis, s.tie);
    // The rest of the plan agrees with its k.
    const size_t loadable = s.n - s.a > s.min_recompute ? s.n - s.a - s.min_recompute : 0;
    EXPECT_EQ(plan->load_tokens, std::min(k * s.g.block_tokens, loadable));
    EXPECT_EQ(plan->load_tokens + plan->recompute_tokens, s.n - s.a);
    TierArray<size_t> counts;
    for (size_t j = 0; j < k; ++j) ++counts[s.tiers[j]];
    EXPECT_EQ(plan->tier_blocks, counts);
    EXPECT_LE(plan->expected_load_s, plan->expected_total_s * (1 + 1e-12));
    if (k > 0) {
      EXPECT_LE(plan->expected_total_s, (1 - s.hysteresis) * t[0] * (1 + 1e-12));
    }
    ++by_reason[static_cast<int>(plan->reason)];
    if (HasFailure()) break;
  }
  // The random cases reach every outcome, decisively, not by rounding.
  for (int r = 0; r < 4; ++r) {
    EXPECT_GT(by_reason[r], kCases / 50) << LoadPlanReasonName(static_cast<Reason>(r));
  }
  EXPECT_LT(near_ties, kCases / 100);
}

// ---------------------------------------------------------------------------------------------
// Monotonicity: a faster staged tier never loads less; faster compute never loads more.

TEST(PlanLoad, FasterDiskNeverLoadsLess) {
  std::mt19937_64 rng(7);
  int changed = 0;
  for (int i = 0; i < 200; ++i) {
    Scenario s = RandomScenario(rng);
    // One staged tier: a host or GPU head, then disk.
    for (TierKind& t : s.tiers) {
      if (t == TierKind::kRemote) t = TierKind::kDisk;
    }
    s.cost.stage[TierKind::kDisk].bytes_per_s = 1;
    s.cost.h2d.bytes_per_s = std::max(s.cost.h2d.bytes_per_s, 1e9);
    s.cost.d2d.bytes_per_s = std::max(s.cost.d2d.bytes_per_s, 1e9);
    size_t previous = 0;
    for (double w = 1e7; w < 1e12; w *= 1.4) {
      s.cost.stage[TierKind::kDisk].bytes_per_s = w;
      const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
      ASSERT_GE(p.load_blocks, previous) << "case " << i << " at " << w << " B/s";
      changed += p.load_blocks != previous;
      previous = p.load_blocks;
    }
  }
  EXPECT_GT(changed, 50);  // the sweeps do cross decisions
}

TEST(PlanLoad, TieWindowIsAFractionOfRecomputeAll) {
  // Disk blocks worth loading, then GPU-tier blocks that cost a hair more than computing
  // (L = 1, one token per block, R = 1 token/s). The best cut is after the disk run, T(4);
  // loading the GPU run too costs 0.11 s more, within tie_tolerance * T(0) = 0.13 s, so the
  // plan loads all 12. A faster disk lowers T(4) and T(12) alike: the choice must not change.
  // (A window relative to the minimum, 1% of T(4), would shrink from 0.12 s to 0.102 s and
  // drop the GPU run: a faster disk would load less.)
  Scenario s;
  s.g = MakeGeometry(1, 1, 1, 64);  // 256 B/token
  s.tiers = Tiers({{TierKind::kDisk, 4}, {TierKind::kGpu, 8}});
  s.n = 13;
  s.cost.h2d = Rate(256 / 0.25);
  s.cost.d2d = Rate(256 / 1.01375);
  s.compute = Compute(1);
  s.tie = 0.01;
  for (double disk_s_per_token : {0.5, 0.05}) {
    s.cost.stage[TierKind::kDisk] = Rate(256 / disk_s_per_token);
    const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
    EXPECT_EQ(p.load_blocks, 12u) << disk_s_per_token << " s/token from disk";
    EXPECT_NEAR(p.expected_total_s, 4 * (disk_s_per_token + 0.25) + 8 * 1.01375 + 1, 1e-12);
  }
}

TEST(PlanLoad, FasterComputeNeverLoadsMore) {
  std::mt19937_64 rng(11);
  int changed = 0;
  for (int i = 0; i < 200; ++i) {
    Scenario s = RandomScenario(rng);
    // One forward step: with chunking, a step's fixed cost can make fewer tokens relatively
    // dearer (ceil(rho / M) is not proportional to rho), which the property does not survive.
    s.compute.max_step_tokens = 0;
    size_t previous = std::numeric_limits<size_t>::max();
    for (double r = 10; r < 1e8; r *= 1.4) {
      s.compute.prefill_tokens_per_s = r;
      const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
      ASSERT_LE(p.load_blocks, previous) << "case " << i << " at " << r << " tokens/s";
      changed += previous != std::numeric_limits<size_t>::max() && p.load_blocks != previous;
      previous = p.load_blocks;
    }
  }
  EXPECT_GT(changed, 50);
}

// ---------------------------------------------------------------------------------------------
// Named examples.

TEST(PlanLoad, GpuHitHostHitThenDiskSlowerThanCompute) {
  Scenario s;
  s.g = MakeGeometry(32, 16);  // Llama-3-8B: 131,072 B/token
  s.tiers = Tiers({{TierKind::kGpu, 16}, {TierKind::kHost, 32}, {TierKind::kDisk, 64}});
  s.n = 112 * 16 + 20;
  s.cost = TypicalCost();
  // The Dynamo report: ~2 ms/token from disk against ~45 us/token of prefill.
  s.cost.stage[TierKind::kDisk] = Rate(0.06 * kGB, 1e-3);
  s.compute = Compute(22000);
  const LoadPlan p = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(p.reason, Reason::kSplit);
  EXPECT_EQ(p.load_blocks, 48u);
  EXPECT_EQ(p.tier_blocks[TierKind::kGpu], 16u);
  EXPECT_EQ(p.tier_blocks[TierKind::kHost], 32u);
  EXPECT_EQ(p.tier_blocks[TierKind::kDisk], 0u);
  EXPECT_EQ(p.recompute_tokens, 64u * 16 + 20);
  // Loading it all would be more than ten times slower than this plan.
  EXPECT_GT(p.load_all_s, 10 * p.expected_total_s);
  EXPECT_LT(p.expected_total_s, p.recompute_all_s);
}

TEST(PlanLoad, RemoteCheaperThanDisk) {
  // A busy disk (1 GB queued ahead at 1 GB/s) against a quiet remote tier at 12 GB/s.
  Scenario s;
  s.g = MakeGeometry(32, 16);
  s.n = 64 * 16 + 3;
  s.cost = TypicalCost();
  s.cost.stage[TierKind::kDisk] = Rate(1 * kGB, 100e-6, 1e9);
  s.cost.stage[TierKind::kRemote] = Rate(12 * kGB, 300e-6);
  s.compute = Compute(10000);
  s.tiers = Blocks(TierKind::kDisk, 64);
  EXPECT_EQ(MustPlan(s.Input(), s.cost, s.compute).reason, Reason::kRecomputeAll);
  s.tiers = Blocks(TierKind::kRemote, 64);
  const LoadPlan remote = MustPlan(s.Input(), s.cost, s.compute);
  // Reads are not overlapped with compute, so the last few blocks are cheaper to recompute
  // (H = C at ~62.5 of 64 blocks), but nearly all of the prefix comes from the remote tier.
  EXPECT_EQ(remote.reason, Reason::kSplit);
  EXPECT_GE(remote.load_blocks, 60u);
  EXPECT_GT(remote.expected_stage_s, 0);
  EXPECT_LT(remote.expected_total_s, remote.recompute_all_s / 2);
  // Remote first, then the same prefix's tail on disk: take the remote part only.
  s.tiers = Tiers({{TierKind::kRemote, 40}, {TierKind::kDisk, 24}});
  const LoadPlan mixed = MustPlan(s.Input(), s.cost, s.compute);
  EXPECT_EQ(mixed.reason, Reason::kSplit);
  EXPECT_EQ(mixed.load_blocks, 40u);
  EXPECT_EQ(mixed.tier_blocks[TierKind::kRemote], 40u);
}

// ---------------------------------------------------------------------------------------------
// Bad inputs, each refused naming the field.

TEST(PlanLoad, BadInputsAreRefusedNamingTheField) {
  Scenario ok;
  ok.g = MakeGeometry(32, 16);
  ok.tiers = Blocks(TierKind::kHost, 4);
  ok.n = 100;
  ok.cost = TypicalCost();
  ok.compute = Compute(1000);
  ASSERT_TRUE(PlanLoad(ok.Input(), ok.cost, ok.compute).ok());

  Scenario s = ok;
  s.g.block_tokens = 0;
  ExpectRefused(s.Input(), s.cost, s.compute, "block_tokens");
  s = ok;
  s.a = 8;
  ExpectRefused(s.Input(), s.cost, s.compute, "local_tokens = 8");
  s = ok;
  s.a = 112;
  s.tiers.clear();
  ExpectRefused(s.Input(), s.cost, s.compute, "prompt_tokens = 100");
  s = ok;
  s.n = 0;
  s.tiers.clear();
  ExpectRefused(s.Input(), s.cost, s.compute, "local_tokens = 0");
  s = ok;
  s.tiers = Blocks(TierKind::kHost, 7);  // 100 tokens hold 6 blocks of 16
  ExpectRefused(s.Input(), s.cost, s.compute, "tiers has 7 blocks");
  s = ok;
  s.tiers[2] = static_cast<TierKind>(9);
  ExpectRefused(s.Input(), s.cost, s.compute, "tiers[2] = 9");
  s = ok;
  s.min_recompute = 0;
  ExpectRefused(s.Input(), s.cost, s.compute, "min_recompute_tokens");
  for (double bad : {-0.1, 1.0, std::nan("")}) {
    s = ok;
    s.hysteresis = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "hysteresis");
    s = ok;
    s.tie = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "tie_tolerance");
  }
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {-1.0, std::nan(""), inf}) {
    s = ok;
    s.cost.stage[TierKind::kDisk].bytes_per_s = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "stage[disk].bytes_per_s");
    s = ok;
    s.cost.stage[TierKind::kRemote].latency_s = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "stage[remote].latency_s");
    s = ok;
    s.cost.stage[TierKind::kGpu].queued_bytes = bad;  // unused, but a caller's bug all the same
    ExpectRefused(s.Input(), s.cost, s.compute, "stage[gpu].queued_bytes");
    s = ok;
    s.cost.h2d.bytes_per_s = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "h2d.bytes_per_s");
    s = ok;
    s.cost.d2d.latency_s = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "d2d.latency_s");
    s = ok;
    s.compute.attention_s_per_token2 = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "attention_s_per_token2");
    s = ok;
    s.compute.fixed_s = bad;
    ExpectRefused(s.Input(), s.cost, s.compute, "fixed_s");
  }
  s = ok;
  s.compute.prefill_tokens_per_s = 1e-320;  // finite, but 1 / R is not
  ExpectRefused(s.Input(), s.cost, s.compute, "infinite time");
}

TEST(PlanLoad, ReasonNames) {
  EXPECT_STREQ(LoadPlanReasonName(Reason::kNothingToLoad), "nothing_to_load");
  EXPECT_STREQ(LoadPlanReasonName(Reason::kRecomputeAll), "recompute_all");
  EXPECT_STREQ(LoadPlanReasonName(Reason::kLoadAll), "load_all");
  EXPECT_STREQ(LoadPlanReasonName(Reason::kSplit), "split");
  EXPECT_STREQ(LoadPlanReasonName(static_cast<Reason>(9)), "invalid");
}

}  // namespace
}  // namespace kvtier
