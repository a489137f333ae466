// engine/eviction/adaptive_policy.h — follows whichever of ARC and LFU-with-aging is evicting
// better on the workload it sees, learned online from the regret of its own evictions.
//
// "adaptive": two of the engine's own policies act as experts over the same resident slots:
// ARC (arc_policy.h, expert 0, recency with an adaptive split) and LFU with aging
// (lfu_policy.h, expert 1, frequency classes). Both see every insert, access and removal; only
// the leader (the expert with the larger weight, ties to ARC) picks victims, so the engine's
// `evictable` predicate, which may be stateful (the prefix-aware window), is walked along the
// leader's order only. The weights come from an ExpertLearner (expert_learner.h: LeCaR's
// multiplicative weights, CACHEUS's adaptive learning rate).
//
// Regret, by duels. At each eviction the leader chose slot a; the other expert's own first
// choice b (its PeekVictim, taken before the removal) stays resident. If a != b, a duel opens
// between a's key and b, and the first of the two to be referenced decides it (Belady's
// pairwise rule: of two blocks, evict the one used later):
//   * a comes back first (its key is inserted again): the leader's choice cost a miss the
//     other expert would have avoided, so the leader takes the regret;
//   * b is accessed first: the other expert's choice would have cost a miss, so it does.
// Each verdict is one unit of regret, undiscounted as in CACHEUS: LeCaR's discount,
// 0.005^(age / num_slots), was measured to starve the learner on prefix caches, where a block
// comes back many cache lifetimes after its eviction (bench eviction, docs/benchmarks.md,
// "adaptive"); the clamp on the weights already bounds how long old verdicts count. Both experts
// are judged on the same decisions, so the deterministic leader cannot lock in on weak evidence,
// which is why LeCaR and CACHEUS draw the evicting expert at random and this policy does not.
//
// Duel bookkeeping: at most num_slots open duels, a ring in opening order (a full ring expires
// its oldest duel unresolved), a map from a's key to its duel, and per slot the duel in which
// it is b (a slot is b of at most one duel; a second eviction with the same b opens none). A
// duel closes unresolved when b leaves the cache, or when a's key comes back as a cold insert
// (a copy in passing, which ARC too leaves out of its adaptation).
//
// Events: OnInsert and OnAccess are counted as the learner's misses and hits; OnInsertCold
// is not counted. Every leader eviction is an eviction for ARC as well (its key
// goes to B1 or B2), whichever expert chose it, so ARC's ghosts describe the real cache.
// Busy slots: as the leader's policy documents. OnInsertCold: as both experts do (examined
// first by each).
//
// Cost: O(1) per event (both experts' updates, one hash probe per insert, an O(1) peek at the
// follower per eviction; a verdict on b closes its chain of duels, each closed once), plus
// the leader's own victim walk. Memory per slot, estimated from the structures: ARC ~95-135
// bytes (lists, key, two ghost lists of num_slots keys with their maps), LFU ~57 (lists, key,
// stamp, the frequency sketch: 32), duels ~60-75 (a 32-byte ring record, the
// key map's 16-byte entries over its load factor, an 8-byte chain head per slot): about
// 210-270 bytes a slot, next to blocks of 16 KiB and more.

#ifndef KVTIER_ENGINE_EVICTION_ADAPTIVE_POLICY_H_
#define KVTIER_ENGINE_EVICTION_ADAPTIVE_POLICY_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/eviction/arc_policy.h"
#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/expert_learner.h"
#include "engine/eviction/lfu_policy.h"

namespace kvtier {

class AdaptivePolicy final : public EvictionPolicy {
 public:
  static constexpr int kArc = 0;
  static constexpr int kLfu = 1;

  explicit AdaptivePolicy(uint32_t num_slots);

  const char* name() const override { return "adaptive"; }
  void SetNextKey(uint64_t key_hash) override;
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // The expert that picks victims now (kArc or kLfu), the learner's state, and duel counts:
  // for tests and the eviction bench's timeline.
  int leader() const { return learner_.leader(); }
  const policy_internal::ExpertLearner& learner() const { return learner_; }
  uint64_t duels_opened() const { return duels_opened_; }
  uint64_t duels_open() const { return by_key_.size(); }
  // Duels each expert lost (its choice was referenced first).
  uint64_t duels_lost(int expert) const { return duels_lost_[expert]; }

 private:
  struct Duel {
    uint64_t seq = UINT64_MAX;  // opening number; ring_[seq % size] holds it until expiry
    uint64_t a_key = 0;
    uint64_t older = UINT64_MAX;  // seq of the previous duel with the same b
    SlotId b = kNoSlot;
    uint8_t leader = 0;  // the expert that evicted a
    bool open = false;
  };
  static constexpr uint64_t kNoDuel = UINT64_MAX;

  void OpenDuel(uint64_t a_key, SlotId b, int leader);
  // Closes duel `index`; `loser` (kArc, kLfu) takes the regret, or nobody when -1.
  void CloseDuel(uint32_t index, int loser);
  // Closes every open duel whose b is `slot`, newest first; `b_lost`: b was referenced first
  // (the expert that chose it pays), else nobody.
  void CloseDuelsOf(SlotId slot, bool b_lost);

  ArcPolicy arc_;
  AgedLfuPolicy lfu_;
  policy_internal::ExpertLearner learner_;
  uint32_t num_slots_;
  SlotId pending_victim_ = kNoSlot;
  int pending_leader_ = kArc;

  std::vector<Duel> ring_;  // num_slots records, in opening order
  uint64_t next_duel_ = 0;  // opened so far; the next goes to ring_[next_duel_ % size]
  absl::flat_hash_map<uint64_t, uint32_t> by_key_;  // a's key -> ring index, open duels only
  std::vector<uint64_t> duel_of_b_;                 // per slot: seq of the newest duel it is b of
  uint64_t duels_opened_ = 0;
  uint64_t duels_lost_[2] = {0, 0};
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_ADAPTIVE_POLICY_H_
