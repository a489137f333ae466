// engine/eviction/fifo_policy.cc — FIFO eviction (see fifo_policy.h).

#include "engine/eviction/fifo_policy.h"

#include <cassert>

namespace kvtier {

void FifoPolicy::OnInsert(SlotId slot) { lists_.PushFront(0, slot); }

void FifoPolicy::OnInsertCold(SlotId slot) { lists_.PushBack(0, slot); }

void FifoPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  (void)slot;
}

void FifoPolicy::OnRemove(SlotId slot) { lists_.Remove(slot); }

std::optional<SlotId> FifoPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  for (SlotId s = lists_.Back(0); s != kNoSlot; s = lists_.Newer(s)) {
    if (evictable(s)) return s;
  }
  return std::nullopt;
}

}  // namespace kvtier
