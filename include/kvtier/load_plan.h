// kvtier/load_plan.h — load a matched prefix, recompute it, or split it: whichever is fastest.
//
// A matched block is worth loading only if moving its bytes costs less time than running the
// model over its tokens again. A slow disk (or remote) tier can make a cache hit slower than a
// plain prefill by an order of magnitude, so every Load should be planned. PlanLoad weighs both
// with a small time model (docs/integration.md, "Load plans"; the derivation is in
// docs/research/issue-21-load-plans.md §2):
//
//   A plan loads the first k matched blocks and recomputes every token after them.
//   λ(k)  staging: disk and remote blocks are read whole into host slots before any copy to
//         the caller starts; the staged tiers read in parallel, each one's queue first.
//   ℓ(k)  the first layer's copy latency (plus bytes already queued on the link).
//   H(k)  the copies to the caller: D2D for GPU-tier blocks, H2D for the rest, layer by layer.
//   C(k)  the recompute: fixed cost per forward step + tokens / rate + quadratic attention.
//         Only its first step (C1) overlaps the copies, layer by layer; later chunked-prefill
//         steps (C_rest) run after.
//   T(k)  = λ + ℓ + max(H, C1) + min(H, C1) / L + C_rest        (layerwise; L layers)
//   T(k)  = λ + ℓ + H + C                                         (not layerwise)
//   T(0)  = C(0)                                                  (recompute everything)
//
// The planner evaluates T(k) for every usable k and keeps the fastest, preferring to load
// more among near-ties and refusing to load unless it beats recomputing by a margin, since the
// rates are estimates. It is a pure function: no clock, no lock, no I/O.

#ifndef KVTIER_LOAD_PLAN_H_
#define KVTIER_LOAD_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <limits>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/geometry.h"
#include "kvtier/tier_kind.h"

namespace kvtier {

// How fast one stage moves bytes. Every field must be finite and >= 0. bytes_per_s = 0 means
// the stage cannot be used now (a remote tier that is down): the first block that needs it is
// treated as a gap in the match.
struct StageRate {
  double bytes_per_s = 0;
  double latency_s = 0;     // before the first byte of a batch arrives
  double queued_bytes = 0;  // already waiting on this stage (other loads), served first
};

struct LoadCostModel {
  // Staging a block into a host slot, for the tiers that need it: kDisk and kRemote. The
  // kGpu and kHost entries are not used (still validated).
  TierArray<StageRate> stage;
  // Host slot -> caller memory: host-tier blocks and staged disk / remote blocks.
  StageRate h2d;
  // Managed GPU tier -> caller memory.
  StageRate d2d;
};

// What recomputing costs, as the caller's inference engine runs a prefill. The compute of
// tokens [s, e) of the prompt in one forward step is
//   fixed_s + (e - s) / prefill_tokens_per_s + attention_s_per_token2 * (e^2 - s^2) / 2.
struct ComputeModel {
  double prefill_tokens_per_s = 0;    // required: finite, > 0
  double attention_s_per_token2 = 0;  // >= 0; 0 = linear in the tokens
  double fixed_s = 0;                 // >= 0; per forward step
  size_t max_step_tokens = 0;         // chunked-prefill budget per step; 0 = one step
};

struct LoadPlanInput {
  size_t prompt_tokens = 0;  // N: the whole prompt
  size_t local_tokens = 0;   // a: what the caller already holds; a multiple of block_tokens, < N
  // The tier of each matched block after the first local_tokens / block_tokens: the tail of
  // MatchResult::tiers. local_tokens + tiers.size() * block_tokens must be <= prompt_tokens.
  absl::Span<const TierKind> tiers;
  // Blocks of `tiers` that can be loaded now, up to the first gap (a block lost or expired
  // since Match). Blocks past a gap are worthless: attention needs the whole prefix.
  size_t usable_blocks = std::numeric_limits<size_t>::max();
  Geometry geometry;      // must pass Validate(); block_tokens, num_layers, block_bytes()
  bool layerwise = true;  // LoadRequest::layerwise: compute overlaps the copies layer by layer
  // Tokens always recomputed at the end of the prompt (>= 1: the logits need one). A block
  // whose tokens all fall in them is not loaded.
  size_t min_recompute_tokens = 1;
  // Load (k > 0) only if T(k) <= (1 - hysteresis) * T(0): the rates are estimates, and a plan
  // that barely beats recomputing is not worth a misestimate. In [0, 1).
  double hysteresis = 0.02;
  // Among the k whose T(k) is within tie_tolerance * T(0) of the fastest, the largest wins:
  // loading saves the GPU the FLOPs. A fraction of T(0), not of the minimum, so that a faster
  // tier never loads less and faster compute never loads more. In [0, 1).
  double tie_tolerance = 1e-3;
};

struct LoadPlan {
  enum class Reason : uint8_t {
    kNothingToLoad,  // no usable block (empty match, a gap first, or no token left to load)
    kRecomputeAll,   // loading would not beat recomputing by the hysteresis margin
    kLoadAll,        // every usable block
    kSplit,          // a prefix of the usable blocks, the rest recomputed
  };

  size_t load_blocks = 0;  // k: blocks to Load, the first k of `tiers`
  // Tokens the caller counts as loaded: k * block_tokens, less the tail that falls in the
  // min_recompute_tokens (a full hit loads its last block but recomputes its last token).
  size_t load_tokens = 0;
  size_t recompute_tokens = 0;    // N - a - load_tokens; >= min_recompute_tokens
  size_t usable_blocks = 0;       // K: the largest k considered (after gaps and zero rates)
  TierArray<size_t> tier_blocks;  // the first k blocks by tier

  double expected_stage_s = 0;    // λ(k): disk / remote reads into host slots
  double expected_load_s = 0;     // λ(k) + ℓ(k) + H(k): until the last layer has landed
  double expected_compute_s = 0;  // C(k), all steps
  double expected_total_s = 0;    // T(k)
  double recompute_all_s = 0;     // T(0)
  double load_all_s = 0;          // T(K); T(0) when K = 0
  Reason reason = Reason::kNothingToLoad;
};

// "nothing_to_load", "recompute_all", "load_all", "split"; "invalid" outside the enum.
const char* LoadPlanReasonName(LoadPlan::Reason reason);

// The fastest way to bring the prompt's KV into the caller's memory under the model above.
// O(usable blocks). InvalidArgument naming the field and value for a bad input: a geometry
// that fails Validate(), local_tokens not a multiple of block_tokens or not below
// prompt_tokens, more tiers than the prompt has blocks, a tier outside the enum,
// min_recompute_tokens = 0, a rate that is negative, NaN or infinite, prefill_tokens_per_s
// <= 0, hysteresis or tie_tolerance outside [0, 1).
absl::StatusOr<LoadPlan> PlanLoad(const LoadPlanInput& input, const LoadCostModel& cost,
                                  const ComputeModel& compute);

}  // namespace kvtier

#endif  // KVTIER_LOAD_PLAN_H_
