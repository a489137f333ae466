// engine/eviction/arc_policy.h — ARC, the adaptive replacement cache.
//
// ARC (Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST'03):
// resident lists T1 (seen once recently) and T2 (seen at least twice), both LRU, and ghost
// lists B1 / B2 of the keys evicted from each; a target p for T1's size adapts: a re-insert
// of a key in B1 means T1 was too small (p grows by max(1, |B2|/|B1|)), one in B2 that T2 was
// (p shrinks by max(1, |B1|/|B2|)). Hits move a slot to T2's MRU end. REPLACE evicts T1's LRU
// when |T1| > p (or |T1| == p and the announced next key is in B2), else T2's LRU. A scan
// only churns T1. Directory sizes follow the paper: |T1| + |B1| <= c and all four <= 2c.
//
// Because the engine picks a victim before it inserts, the paper's request steps are split:
// REPLACE runs in PickVictim, the adaptation of p and the ghost bookkeeping in OnInsert.
// Skipped slots keep their place; if the chosen list has nothing evictable the other is
// tried. OnInsertCold: at T1's LRU end; a ghost entry of its key is dropped without adapting
// p (a copy in passing says nothing about the lists' sizes).

#ifndef KVTIER_ENGINE_EVICTION_ARC_POLICY_H_
#define KVTIER_ENGINE_EVICTION_ARC_POLICY_H_

#include <cstdint>
#include <optional>

#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/ghost_list.h"
#include "engine/eviction/slot_keys.h"
#include "engine/eviction/slot_lists.h"

namespace kvtier {

class ArcPolicy final : public EvictionPolicy {
 public:
  explicit ArcPolicy(uint32_t num_slots);

  const char* name() const override { return "arc"; }
  void SetNextKey(uint64_t key_hash) override { keys_.SetNext(key_hash); }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests.
  uint32_t p() const { return p_; }
  bool InT1(SlotId slot) const { return lists_.ListOf(slot) == kT1; }
  bool InT2(SlotId slot) const { return lists_.ListOf(slot) == kT2; }
  bool InB1(uint64_t key_hash) const { return b1_.Contains(key_hash); }
  bool InB2(uint64_t key_hash) const { return b2_.Contains(key_hash); }

 private:
  static constexpr int kT1 = 0;
  static constexpr int kT2 = 1;

  // Makes room in the directory for a key that is in neither ghost (the paper's case IV).
  void TrimDirectory();

  uint32_t capacity_;
  uint32_t p_ = 0;
  policy_internal::SlotLists lists_;
  policy_internal::SlotKeys keys_;
  policy_internal::GhostList b1_;
  policy_internal::GhostList b2_;
  SlotId pending_victim_ = kNoSlot;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_ARC_POLICY_H_
