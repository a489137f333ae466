// engine/eviction/sieve_policy.cc — SIEVE eviction (see sieve_policy.h).

#include "engine/eviction/sieve_policy.h"

#include <cassert>

namespace kvtier {

void SievePolicy::OnInsert(SlotId slot) {
  visited_[slot] = false;
  lists_.PushFront(0, slot);
}

void SievePolicy::OnInsertCold(SlotId slot) {
  visited_[slot] = false;
  // The hand examines its own slot first, then moves toward the head: put the copy just
  // behind it and move the hand onto it, so the sweep resumes where it was after it.
  if (hand_ == kNoSlot) {
    lists_.PushBack(0, slot);
  } else {
    lists_.InsertOlderThan(hand_, slot);
  }
  hand_ = slot;
}

void SievePolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  visited_[slot] = true;
}

void SievePolicy::OnRemove(SlotId slot) {
  // The hand rests on the evicted object's newer neighbour (kNoSlot: wrap to the tail).
  if (hand_ == slot) hand_ = lists_.Newer(slot);
  visited_[slot] = false;
  lists_.Remove(slot);
}

std::optional<SlotId> SievePolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  const uint32_t size = lists_.size(0);
  if (size == 0) return std::nullopt;
  const uint64_t max_steps = 2 * static_cast<uint64_t>(size) + 1;
  SlotId s = hand_ != kNoSlot ? hand_ : lists_.Back(0);
  for (uint64_t step = 0; step < max_steps; ++step) {
    if (visited_[s]) {
      visited_[s] = false;
    } else if (evictable(s)) {
      // The hand stops here; a repeated call before the removal finds the same slot.
      hand_ = s;
      return s;
    }
    s = lists_.Newer(s);
    if (s == kNoSlot) s = lists_.Back(0);
  }
  return std::nullopt;
}

}  // namespace kvtier
