// engine/load_plan.cc — PlanLoad: scan every prefix length, keep the fastest (kvtier/load_plan.h).
//
// T(k) is piecewise in k (linear within a run of one tier, the compute concave), so its
// minimum may sit at 0, K, a run boundary or a balance point inside a run. Scanning all K + 1
// values with running counts is exact and O(K), with no convexity argument to get wrong; the
// closed form of docs/research/issue-21-load-plans.md §2.3 is the tests' oracle instead.

#include "kvtier/load_plan.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier {
namespace {

absl::Status CheckRate(const StageRate& r, const char* name) {
  auto bad = [](double v) { return !std::isfinite(v) || v < 0; };
  if (bad(r.bytes_per_s)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: %s.bytes_per_s = %g, must be finite and >= 0 (0 = unusable now)",
                        name, r.bytes_per_s));
  }
  if (bad(r.latency_s)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: %s.latency_s = %g, must be finite and >= 0", name, r.latency_s));
  }
  if (bad(r.queued_bytes)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PlanLoad: %s.queued_bytes = %g, must be finite and >= 0", name, r.queued_bytes));
  }
  return absl::OkStatus();
}

absl::Status CheckFraction(double v, const char* name) {
  if (!(v >= 0 && v < 1)) {  // also refuses NaN
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: %s = %g, must be in [0, 1)", name, v));
  }
  return absl::OkStatus();
}

absl::Status Validate(const LoadPlanInput& in, const LoadCostModel& cost,
                      const ComputeModel& compute) {
  if (absl::Status s = in.geometry.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("PlanLoad: ", s.message()));
  }
  const size_t bt = in.geometry.block_tokens;
  if (in.local_tokens % bt != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PlanLoad: local_tokens = %d is not a multiple of block_tokens = %d", in.local_tokens, bt));
  }
  if (in.local_tokens >= in.prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PlanLoad: local_tokens = %d must be less than prompt_tokens = %d (the last token is "
        "always computed, for its logits)",
        in.local_tokens, in.prompt_tokens));
  }
  // Match only ever matches whole blocks of the prompt.
  if (in.tiers.size() > (in.prompt_tokens - in.local_tokens) / bt) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PlanLoad: tiers has %d blocks, but the %d prompt tokens after local_tokens = %d hold "
        "only %d whole blocks of %d tokens",
        in.tiers.size(), in.prompt_tokens - in.local_tokens, in.local_tokens,
        (in.prompt_tokens - in.local_tokens) / bt, bt));
  }
  for (size_t i = 0; i < in.tiers.size(); ++i) {
    if (static_cast<size_t>(in.tiers[i]) >= static_cast<size_t>(kNumTiers)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PlanLoad: tiers[%d] = %d is not a TierKind", i, static_cast<int>(in.tiers[i])));
    }
  }
  if (in.min_recompute_tokens == 0) {
    return absl::InvalidArgumentError(
        "PlanLoad: min_recompute_tokens = 0, must be >= 1 (the logits need one token)");
  }
  if (absl::Status s = CheckFraction(in.hysteresis, "hysteresis"); !s.ok()) return s;
  if (absl::Status s = CheckFraction(in.tie_tolerance, "tie_tolerance"); !s.ok()) return s;
  static constexpr const char* kStageNames[kNumTiers] = {"stage[gpu]", "stage[host]", "stage[disk]",
                                                         "stage[remote]"};
  for (size_t t = 0; t < static_cast<size_t>(kNumTiers); ++t) {
    if (absl::Status s = CheckRate(cost.stage[t], kStageNames[t]); !s.ok()) return s;
  }
  if (absl::Status s = CheckRate(cost.h2d, "h2d"); !s.ok()) return s;
  if (absl::Status s = CheckRate(cost.d2d, "d2d"); !s.ok()) return s;
  if (!std::isfinite(compute.prefill_tokens_per_s) || !(compute.prefill_tokens_per_s > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: compute.prefill_tokens_per_s = %g, must be finite and > 0",
                        compute.prefill_tokens_per_s));
  }
  if (!std::isfinite(compute.attention_s_per_token2) || compute.attention_s_per_token2 < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: compute.attention_s_per_token2 = %g, must be finite and >= 0",
                        compute.attention_s_per_token2));
  }
  if (!std::isfinite(compute.fixed_s) || compute.fixed_s < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PlanLoad: compute.fixed_s = %g, must be finite and >= 0", compute.fixed_s));
  }
  return absl::OkStatus();
}

// Whether a block in `tier` can be moved now: its stage (staged tiers) and its link run.
bool Reachable(TierKind tier, const LoadCostModel& cost) {
  switch (tier) {
    case TierKind::kGpu:
      return cost.d2d.bytes_per_s > 0;
    case TierKind::kHost:
      return cost.h2d.bytes_per_s > 0;
    case TierKind::kDisk:
    case TierKind::kRemote:
      return cost.stage[tier].bytes_per_s > 0 && cost.h2d.bytes_per_s > 0;
  }
  return false;
}

struct Compute {
  double first_step_s = 0;  // C1: the step that overlaps the copies
  double rest_s = 0;        // C_rest: later chunked-prefill steps
};

// The recompute of the prompt's last `rho` tokens, positions [N - rho, N).
Compute RecomputeCost(size_t n, size_t rho, const ComputeModel& m) {
  const size_t first = m.max_step_tokens == 0 ? rho : std::min(rho, m.max_step_tokens);
  const size_t steps =
      m.max_step_tokens == 0 ? 1 : (rho + m.max_step_tokens - 1) / m.max_step_tokens;
  // (e^2 - s^2) / 2 as (e - s)(e + s) / 2: no cancellation between two ~N^2 terms.
  auto attention = [&](size_t s, size_t e) {
    return m.attention_s_per_token2 * static_cast<double>(e - s) * static_cast<double>(e + s) / 2;
  };
  const size_t begin = n - rho;
  Compute c;
  c.first_step_s = m.fixed_s + static_cast<double>(first) / m.prefill_tokens_per_s +
                   attention(begin, begin + first);
  // Each step is its own forward, so each pays the fixed overhead.
  c.rest_s = static_cast<double>(steps - 1) * m.fixed_s +
             static_cast<double>(rho - first) / m.prefill_tokens_per_s +
             attention(begin + first, n);
  return c;
}

struct Eval {
  double stage_s = 0, load_s = 0, compute_s = 0, total_s = 0;
  size_t load_tokens = 0;
};

}  // namespace

const char* LoadPlanReasonName(LoadPlan::Reason reason) {
  switch (reason) {
    case LoadPlan::Reason::kNothingToLoad:
      return "nothing_to_load";
    case LoadPlan::Reason::kRecomputeAll:
      return "recompute_all";
    case LoadPlan::Reason::kLoadAll:
      return "load_all";
    case LoadPlan::Reason::kSplit:
      return "split";
  }
  return "invalid";
}

absl::StatusOr<LoadPlan> PlanLoad(const LoadPlanInput& in, const LoadCostModel& cost,
                                  const ComputeModel& compute) {
  if (absl::Status s = Validate(in, cost, compute); !s.ok()) return s;
  const size_t n = in.prompt_tokens;
  const size_t bt = in.geometry.block_tokens;
  const size_t after_local = n - in.local_tokens;
  // Tokens that may be loaded at all; a block entirely past them is not worth moving.
  const size_t loadable_tokens =
      after_local > in.min_recompute_tokens ? after_local - in.min_recompute_tokens : 0;
  size_t k_max = std::min({in.tiers.size(), in.usable_blocks, (loadable_tokens + bt - 1) / bt});
  for (size_t j = 0; j < k_max; ++j) {
    if (!Reachable(in.tiers[j], cost)) {
      k_max = j;  // a stage that cannot run now is a gap, like a block lost since Match
      break;
    }
  }

  const double block_bytes = static_cast<double>(in.geometry.block_bytes());
  const double layers = in.layerwise ? static_cast<double>(in.geometry.num_layers) : 1.0;
  auto startup = [](const StageRate& r) { return r.latency_s + r.queued_bytes / r.bytes_per_s; };

  TierArray<size_t> count;
  auto evaluate = [&](size_t k) {
    Eval e;
    e.load_tokens = std::min(k * bt, loadable_tokens);
    if (k > 0) {
      // The staged tiers read in parallel; the gated copy waits for the slowest.
      for (TierKind t : {TierKind::kDisk, TierKind::kRemote}) {
        if (count[t] == 0) continue;
        const StageRate& r = cost.stage[t];
        e.stage_s = std::max(
            e.stage_s, startup(r) + static_cast<double>(count[t]) * block_bytes / r.bytes_per_s);
      }
    }
    const size_t via_d2d = count[TierKind::kGpu];
    const size_t via_h2d = k - via_d2d;
    // Latency and queued bytes delay the first layer; only the bytes spread over the layers.
    double link_start = 0, copy_s = 0;
    if (via_d2d > 0) {
      link_start = std::max(link_start, startup(cost.d2d));
      copy_s += static_cast<double>(via_d2d) * block_bytes / cost.d2d.bytes_per_s;
    }
    if (via_h2d > 0) {
      link_start = std::max(link_start, startup(cost.h2d));
      copy_s += static_cast<double>(via_h2d) * block_bytes / cost.h2d.bytes_per_s;
    }
    const Compute c = RecomputeCost(n, after_local - e.load_tokens, compute);
    e.load_s = e.stage_s + link_start + copy_s;
    e.compute_s = c.first_step_s + c.rest_s;
    // Layer l lands at start + (l+1)·H/L and its compute ends at
    // f_l = max(f_{l-1}, landed_l) + C1/L; unrolled, that is max(H, C1) + min(H, C1)/L.
    e.total_s = e.stage_s + link_start + std::max(copy_s, c.first_step_s) +
                std::min(copy_s, c.first_step_s) / layers + c.rest_s;
    return e;
  };

  std::vector<double> total(k_max + 1);
  total[0] = evaluate(0).total_s;
  if (!std::isfinite(total[0])) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: the compute model gives recomputing %d tokens an infinite time "
                        "(prefill_tokens_per_s = %g)",
                        after_local, compute.prefill_tokens_per_s));
  }
  double best_loading = std::numeric_limits<double>::infinity();
  for (size_t k = 1; k <= k_max; ++k) {
    ++count[in.tiers[k - 1]];
    total[k] = evaluate(k).total_s;
    best_loading = std::min(best_loading, total[k]);
  }

  size_t chosen = 0;
  const double t0 = total[0];
  const double must_beat = (1 - in.hysteresis) * t0;
  if (k_max > 0 && best_loading <= must_beat) {
    const double limit = std::min(best_loading + in.tie_tolerance * t0, must_beat);
    for (size_t k = k_max; k >= 1; --k) {
      if (total[k] <= limit) {
        chosen = k;
        break;
      }
    }
  }

  LoadPlan plan;
  plan.usable_blocks = k_max;
  plan.load_blocks = chosen;
  for (size_t j = 0; j < chosen; ++j) ++plan.tier_blocks[in.tiers[j]];
  count = plan.tier_blocks;
  const Eval e = evaluate(chosen);
  plan.load_tokens = e.load_tokens;
  plan.recompute_tokens = after_local - e.load_tokens;
  plan.expected_stage_s = e.stage_s;
  plan.expected_load_s = e.load_s;
  plan.expected_compute_s = e.compute_s;
  plan.expected_total_s = e.total_s;
  plan.recompute_all_s = t0;
  plan.load_all_s = total[k_max];
  if (k_max == 0) {
    plan.reason = LoadPlan::Reason::kNothingToLoad;
  } else if (chosen == 0) {
    plan.reason = LoadPlan::Reason::kRecomputeAll;
  } else if (chosen == k_max) {
    plan.reason = LoadPlan::Reason::kLoadAll;
  } else {
    plan.reason = LoadPlan::Reason::kSplit;
  }
  return plan;
}

}  // namespace kvtier
