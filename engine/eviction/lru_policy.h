// engine/eviction/lru_policy.h — least-recently-used eviction.
//
// An intrusive doubly linked list over slot ids (two arrays, no allocation after
// construction): OnInsert and OnAccess move a slot to the head, PickVictim walks from the
// tail, skipping slots the engine says are busy. O(1) per event, O(busy slots) per pick.

#ifndef KVTIER_ENGINE_EVICTION_LRU_POLICY_H_
#define KVTIER_ENGINE_EVICTION_LRU_POLICY_H_

#include <vector>

#include "engine/eviction/eviction_policy.h"

namespace kvtier {

class LruPolicy final : public EvictionPolicy {
 public:
  explicit LruPolicy(uint32_t num_slots);

  const char* name() const override { return "lru"; }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;  // at the least recently used end
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // Tracked slots from most to least recently used (for tests).
  std::vector<SlotId> Order() const;

 private:
  void Unlink(SlotId slot);
  void PushFront(SlotId slot);
  void PushBack(SlotId slot);

  std::vector<SlotId> prev_;
  std::vector<SlotId> next_;
  std::vector<bool> tracked_;
  SlotId head_ = kNoSlot;  // most recent
  SlotId tail_ = kNoSlot;  // least recent
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_LRU_POLICY_H_
