// engine/eviction/tinylfu_policy.h — W-TinyLFU: a window before a main SLRU that admits by
// frequency.
//
// W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission
// Policy", ACM TOS 2017; the layout of Caffeine): a window LRU of 1% of the slots in front of
// a main SLRU (20% probation, 80% protected), and a frequency sketch (count-min, 4-bit
// counters, halved every 10 × num_slots increments) fed by every insert and access. New slots
// enter the window; the window's LRU slot is the candidate for main, and it is admitted only
// if its estimated frequency beats that of main's victim (probation's LRU end, protected's
// if probation is empty) — otherwise the candidate itself is evicted. A probation hit moves
// the slot to protected; protected's overflow drops back to probation's MRU end.
//
// Because the engine picks a victim before it inserts, the duel happens in PickVictim when
// the window is at its size and main is full (the insert to come will push the candidate
// out): if the main victim loses, the candidate moves to probation when the victim is
// removed. Before the cache is full, window overflow goes to probation without a duel. No
// doorkeeper and no random admission jitter (Caffeine's guard against hash flooding).
// Skipped slots keep their place; a busy candidate that would lose is admitted anyway (it
// cannot be evicted now). OnInsertCold: at the window's LRU end, so it is the next candidate.

#ifndef KVTIER_ENGINE_EVICTION_TINYLFU_POLICY_H_
#define KVTIER_ENGINE_EVICTION_TINYLFU_POLICY_H_

#include <cstdint>
#include <optional>

#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/frequency_sketch.h"
#include "engine/eviction/slot_keys.h"
#include "engine/eviction/slot_lists.h"

namespace kvtier {

class TinyLfuPolicy final : public EvictionPolicy {
 public:
  explicit TinyLfuPolicy(uint32_t num_slots);

  const char* name() const override { return "tinylfu"; }
  void SetNextKey(uint64_t key_hash) override { keys_.SetNext(key_hash); }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests.
  bool InWindow(SlotId slot) const { return lists_.ListOf(slot) == kWindow; }
  bool InProbation(SlotId slot) const { return lists_.ListOf(slot) == kProbation; }
  bool InProtected(SlotId slot) const { return lists_.ListOf(slot) == kProtected; }
  uint32_t EstimatedFrequency(uint64_t key_hash) const { return sketch_.Estimate(key_hash); }

 private:
  static constexpr int kWindow = 0;
  static constexpr int kProbation = 1;
  static constexpr int kProtected = 2;

  uint32_t main_size() const { return lists_.size(kProbation) + lists_.size(kProtected); }
  void Insert(SlotId slot, bool cold);
  // Moves window overflow to probation while main has room.
  void Rebalance();
  // Main's first evictable slot in eviction order.
  std::optional<SlotId> MainVictim(absl::FunctionRef<bool(SlotId)> evictable) const;

  uint32_t window_capacity_;
  uint32_t main_capacity_;
  uint32_t protected_capacity_;
  policy_internal::SlotLists lists_;
  policy_internal::SlotKeys keys_;
  policy_internal::FrequencySketch sketch_;
  SlotId pending_victim_ = kNoSlot;  // the last PickVictim result, until removed
  SlotId pending_admit_ = kNoSlot;   // the candidate that beat it
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_TINYLFU_POLICY_H_
