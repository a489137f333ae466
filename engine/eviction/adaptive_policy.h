// engine/eviction/adaptive_policy.h — follows whichever expert policy would have the most
// prefix hits on the keys the tier sees, judged by shadow caches.
//
// "adaptive": four of the engine's own policies are the experts: arc (expert 0, followed at
// first), lru, lfu (LFU with aging) and s3fifo.
//  * Only the leader runs live over the real slots (it sees every event and picks victims,
//    walking the engine's `evictable` predicate). The wrapper keeps a 24-byte record per slot
//    (key, depth, last-reference clock, uses since insert) and, while another expert leads,
//    counts every reference into a sketch made as lfu makes its own. At a switch the new
//    leader is built fresh from those records, tracked slots oldest first: lfu takes the
//    sketch (so its counts are exactly its own, had it led all along) and each slot's real
//    last-reference time; arc, lru and s3fifo get an insert plus up to 3 accesses per slot
//    (no ghosts: those refill within about one tier's worth of misses).
//  * A shadow cache per expert (shadow_experts.h): the expert alone, metadata only, over a
//    hash-sampled subset of the keys at a fixed rate (shadow_fraction of the tier, at least
//    min_shadow_slots, at most max_shadow_slots slots; the whole tier if smaller), scoring
//    the prefix hits it would have had (a hit counts while every shallower sampled block of
//    its request hit too, from the depths SetNextDepth gives). At least 512 slots, so a tier
//    of up to 512 slots is shadowed exactly and its decisions do not depend on key hashes.
// Every epoch (epoch_factor x a shadow's slot count of sampled references) each expert's
// prefix hits of the epoch are added to its score (decayed by `decay` per epoch; 0, the
// default, keeps the whole history); the expert with the best score becomes the leader when it
// leads the current one by more than `margin` of the (decayed) sampled references.
//
// Why not regret (LeCaR, CACHEUS, and this policy's first version, docs/benchmarks.md,
// "adaptive"): regret on ghost hits or duels judged block references, while the objective is
// prefix hits. Why one live expert: four live experts cost 4-5x ARC per event (the second
// version); the price is a cold start of the new leader's ghosts at a switch.
//
// Events: OnInsert and OnAccess are references (fed to the shadows); OnInsertCold is not (a
// copy in passing). Busy slots, OnInsertCold: as the leader's policy documents.
//
// Cost per event: the leader's own, a 24-byte record update, one hash multiply (is the key
// sampled?) and, while the leader is not lfu, one sketch increment; per sampled reference (a
// fraction of about 1/16), one map probe and one event in each of the four shadows (direct
// calls); at a switch, O(slots log slots) to rebuild. Memory per real slot: the live leader's
// (ARC ~95-135 B, LFU ~57, S3-FIFO ~50-60, LRU ~9) plus 24 B of records plus lfu's 32 B
// sketch; the shadows add about 1/16 of all four experts' per-slot memory plus their map
// (at least 512 slots each, at most 16,384: ~10-15 MB beyond 262,144 slots). Not
// thread-safe.

#ifndef KVTIER_ENGINE_EVICTION_ADAPTIVE_POLICY_H_
#define KVTIER_ENGINE_EVICTION_ADAPTIVE_POLICY_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/frequency_sketch.h"
#include "engine/eviction/shadow_experts.h"

namespace kvtier {

class AdaptivePolicy final : public EvictionPolicy {
 public:
  static constexpr int kNumExperts = 4;
  static constexpr std::array<const char*, kNumExperts> kExperts = {"arc", "lru", "lfu",
                                                                    "s3fifo"};
  static constexpr int kLfu = 2;

  struct Tuning {
    // Shadow size: shadow_fraction of the tier's slots, at least min_shadow_slots and at most
    // max_shadow_slots (never more than the tier); keys are sampled at shadow size / slots.
    double shadow_fraction = 0.0625;
    uint32_t min_shadow_slots = 512;
    uint32_t max_shadow_slots = 16384;
    double decay = 0;           // of the scores, per epoch (0: the whole history)
    double margin = 0.002;      // prefix-hit-ratio lead a challenger needs
    double epoch_factor = 1.0;  // epoch length in sampled references, x shadow size
    int first = 0;              // the expert followed before any epoch ends
  };

  // The default Tuning (what MakeEvictionPolicy("adaptive") builds); the second constructor is
  // for tests and experiments.
  explicit AdaptivePolicy(uint32_t num_slots);
  AdaptivePolicy(uint32_t num_slots, const Tuning& tuning);

  const char* name() const override { return "adaptive"; }
  void SetNextKey(uint64_t key_hash) override;
  void SetNextDepth(uint32_t depth) override { next_depth_ = depth; }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests and the eviction bench.
  int leader() const { return leader_; }
  const char* leader_name() const { return kExperts[leader_]; }
  uint64_t switches() const { return switches_; }
  uint64_t epochs() const { return epochs_; }
  const policy_internal::ShadowExperts& shadows() const { return shadows_; }

 private:
  void Played(uint32_t references);
  // Makes expert `e` the live policy: a fresh instance fed the tracked slots oldest first.
  void Rebuild(int e);
  // Calls f with the live policy as its concrete (final) type, so the calls are direct.
  template <typename F>
  decltype(auto) Live(F&& f);

  struct Slot {
    uint64_t key = 0;
    uint64_t stamp = 0;  // the clock at its last reference; 1: inserted cold; 0: untracked
    uint32_t depth = 0;  // SetNextDepth's value at its insert
    uint32_t uses = 0;   // references since its insert
  };

  Tuning tuning_;
  uint32_t num_slots_;
  std::vector<Slot> slots_;
  uint64_t next_key_ = 0;
  bool has_next_key_ = false;
  uint64_t clock_ = 2;
  uint32_t next_depth_ = 0;
  std::unique_ptr<EvictionPolicy> live_;  // expert leader_
  int leader_ = 0;
  uint64_t switches_ = 0;
  // The key counts `lfu` keeps, counted here while another expert leads (lfu_policy.h).
  policy_internal::FrequencySketch counts_;

  policy_internal::ShadowExperts shadows_;
  uint64_t epoch_ = 0;     // sampled references per epoch
  uint64_t in_epoch_ = 0;  // played in this epoch
  uint64_t epochs_ = 0;
  std::array<uint64_t, kNumExperts> hits_before_{};  // shadow prefix hits at the epoch's start
  std::array<double, kNumExperts> score_{};
  double decayed_refs_ = 0;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_ADAPTIVE_POLICY_H_
