// engine/eviction/slot_lists.cc — intrusive lists of slot ids (see slot_lists.h).

#include "engine/eviction/slot_lists.h"

#include <cassert>

namespace kvtier {
namespace policy_internal {

SlotLists::SlotLists(uint32_t num_slots, int num_lists)
    : newer_(num_slots, kNoSlot),
      older_(num_slots, kNoSlot),
      list_(num_slots, kNoList),
      front_(num_lists, kNoSlot),
      back_(num_lists, kNoSlot),
      size_(num_lists, 0) {}

void SlotLists::PushFront(int list, SlotId slot) {
  assert(slot < list_.size() && list_[slot] == kNoList);
  list_[slot] = static_cast<uint8_t>(list);
  newer_[slot] = kNoSlot;
  older_[slot] = front_[list];
  if (front_[list] != kNoSlot)
    newer_[front_[list]] = slot;
  else
    back_[list] = slot;
  front_[list] = slot;
  ++size_[list];
}

void SlotLists::PushBack(int list, SlotId slot) {
  assert(slot < list_.size() && list_[slot] == kNoList);
  list_[slot] = static_cast<uint8_t>(list);
  older_[slot] = kNoSlot;
  newer_[slot] = back_[list];
  if (back_[list] != kNoSlot)
    older_[back_[list]] = slot;
  else
    front_[list] = slot;
  back_[list] = slot;
  ++size_[list];
}

void SlotLists::InsertOlderThan(SlotId pos, SlotId slot) {
  assert(list_[pos] != kNoList && list_[slot] == kNoList);
  const int list = list_[pos];
  const SlotId after = older_[pos];
  list_[slot] = static_cast<uint8_t>(list);
  newer_[slot] = pos;
  older_[slot] = after;
  older_[pos] = slot;
  if (after != kNoSlot)
    newer_[after] = slot;
  else
    back_[list] = slot;
  ++size_[list];
}

void SlotLists::Remove(SlotId slot) {
  assert(slot < list_.size() && list_[slot] != kNoList);
  const int list = list_[slot];
  const SlotId n = newer_[slot];
  const SlotId o = older_[slot];
  if (n != kNoSlot)
    older_[n] = o;
  else
    front_[list] = o;
  if (o != kNoSlot)
    newer_[o] = n;
  else
    back_[list] = n;
  newer_[slot] = older_[slot] = kNoSlot;
  list_[slot] = kNoList;
  --size_[list];
}

void SlotLists::MoveToFront(int list, SlotId slot) {
  if (list_[slot] == list && front_[list] == slot) return;
  Remove(slot);
  PushFront(list, slot);
}

std::vector<SlotId> SlotLists::Order(int list) const {
  std::vector<SlotId> order;
  for (SlotId s = front_[list]; s != kNoSlot; s = older_[s]) order.push_back(s);
  return order;
}

}  // namespace policy_internal
}  // namespace kvtier
