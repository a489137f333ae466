// engine/eviction/slot_lists.h — the queues of every policy: intrusive lists of slot ids.
//
// Several doubly linked lists over slot ids sharing one pair of link arrays; a slot is on at
// most one of them. "Front" is the newest / most recently used end, "back" the oldest. Arrays
// are sized at construction, so no operation allocates (but Order, for tests) and each is
// O(1). REQUIRES: a slot pushed or inserted is on no list; a slot removed is on one (checked
// by assert). Not thread-safe.

#ifndef KVTIER_ENGINE_EVICTION_SLOT_LISTS_H_
#define KVTIER_ENGINE_EVICTION_SLOT_LISTS_H_

#include <cstdint>
#include <vector>

#include "tiers/tier.h"

namespace kvtier {
namespace policy_internal {

class SlotLists {
 public:
  static constexpr uint8_t kNoList = 0xff;

  SlotLists(uint32_t num_slots, int num_lists);

  uint8_t ListOf(SlotId slot) const { return list_[slot]; }
  bool Contains(SlotId slot) const { return list_[slot] != kNoList; }
  uint32_t size(int list) const { return size_[list]; }
  SlotId Front(int list) const { return front_[list]; }
  SlotId Back(int list) const { return back_[list]; }
  SlotId Newer(SlotId slot) const { return newer_[slot]; }  // toward the front
  SlotId Older(SlotId slot) const { return older_[slot]; }  // toward the back

  void PushFront(int list, SlotId slot);
  void PushBack(int list, SlotId slot);
  // Links `slot` right behind `pos` (on the older side), on pos's list.
  void InsertOlderThan(SlotId pos, SlotId slot);
  void Remove(SlotId slot);
  void MoveToFront(int list, SlotId slot);

  std::vector<SlotId> Order(int list) const;  // front to back

 private:
  std::vector<SlotId> newer_;
  std::vector<SlotId> older_;
  std::vector<uint8_t> list_;
  std::vector<SlotId> front_;
  std::vector<SlotId> back_;
  std::vector<uint32_t> size_;
};

}  // namespace policy_internal
}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_SLOT_LISTS_H_
