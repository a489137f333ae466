// engine/eviction/lfu_policy.h — LFU with aging: frequency classes traded against idle time.
//
// LFU with aging ("lfu"): frequency classes, recency within a class, and an exchange rate
// between the two. Every insert and access counts toward the block's key in a frequency
// sketch (count-min, 4-bit counters, halved every 10 x num_slots counts as TinyLFU's, but 16
// counters per slot wide), so counts outlive a block's stay and age with time. A slot lives
// in class c = min(count, kClasses) as of its last insert or access, on that class's LRU
// list, stamped with a logical clock that every insert and access advances. The victim is
// the slot whose idle time divided by c^2 is largest: a block seen c times may stay idle c^2
// times as long as a one-time block before it goes. No admission duel: every block enters,
// so a prompt's chain is never broken in the middle by a refused block (what sinks W-TinyLFU
// on prefix caches, where a chain's blocks arrive together), and scans churn class 1 only.
//
// The constants are measured, not derived (bench eviction on the shared Mooncake trace,
// docs/benchmarks.md): c^2 beat c^0.5, c, c^1.5 and c^3, and 4 classes beat 8. There, families
// of requests come back sooner the more often they have come (median gap 559 requests after
// the first, 166 after the fourth), so the idle time a block earns grows faster than its count.
//
// Skipped slots keep their place: each class offers its oldest evictable slot. Ties go to
// the lower class. OnInsertCold: class 1 with the oldest possible stamp (examined first),
// without counting toward the key.

#ifndef KVTIER_ENGINE_EVICTION_LFU_POLICY_H_
#define KVTIER_ENGINE_EVICTION_LFU_POLICY_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/frequency_sketch.h"
#include "engine/eviction/slot_keys.h"
#include "engine/eviction/slot_lists.h"

namespace kvtier {

class AgedLfuPolicy final : public EvictionPolicy {
 public:
  static constexpr int kClasses = 4;

  explicit AgedLfuPolicy(uint32_t num_slots);

  const char* name() const override { return "lfu"; }
  void SetNextKey(uint64_t key_hash) override { keys_.SetNext(key_hash); }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests: the slot's class (1..kClasses; 0 if untracked) and its key's count.
  int frequency_class(SlotId slot) const {
    return lists_.Contains(slot) ? lists_.ListOf(slot) + 1 : 0;
  }
  uint32_t EstimatedFrequency(uint64_t key_hash) const { return sketch_.Estimate(key_hash); }
  // The key counts (the frequency sketch with its aging state), and a sketch made as this
  // policy makes its own for `num_slots` slots. The adaptive policy counts references into
  // such a sketch while another expert leads and swaps it in when `lfu` takes over, so the
  // new leader has exactly the counts it would have had (and hands them back when it stops).
  static policy_internal::FrequencySketch MakeSketch(uint32_t num_slots);
  policy_internal::FrequencySketch& frequencies() { return sketch_; }
  // As OnInsert, but the slot is filed as last referenced at logical time `stamp` (the clock
  // moves up to it; calls in increasing stamp order) and its key is not counted again: for
  // rebuilding a cache's state with its real idle times, keys counted by AdoptFrequencies.
  void InsertAt(SlotId slot, uint64_t stamp);

 private:
  // Counts the key and files the slot under its class, newest, stamped now.
  void Touch(SlotId slot, uint64_t key);

  policy_internal::SlotLists lists_;  // list c - 1 holds class c, front the newest
  policy_internal::SlotKeys keys_;
  policy_internal::FrequencySketch sketch_;
  std::vector<uint64_t> stamp_;  // the clock at the slot's last insert or access
  uint64_t clock_ = 0;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_LFU_POLICY_H_
