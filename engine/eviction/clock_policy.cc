// engine/eviction/clock_policy.cc — CLOCK eviction (see clock_policy.h).

#include "engine/eviction/clock_policy.h"

#include <cassert>

namespace kvtier {

ClockPolicy::ClockPolicy(uint32_t num_slots)
    : prev_(num_slots, kNoSlot),
      next_(num_slots, kNoSlot),
      referenced_(num_slots, false),
      tracked_(num_slots, false) {}

void ClockPolicy::LinkBefore(SlotId pos, SlotId slot) {
  if (pos == kNoSlot) {
    prev_[slot] = next_[slot] = slot;
    return;
  }
  const SlotId p = prev_[pos];
  prev_[slot] = p;
  next_[slot] = pos;
  next_[p] = slot;
  prev_[pos] = slot;
}

void ClockPolicy::Unlink(SlotId slot) {
  next_[prev_[slot]] = next_[slot];
  prev_[next_[slot]] = prev_[slot];
  prev_[slot] = next_[slot] = kNoSlot;
}

void ClockPolicy::OnInsert(SlotId slot) {
  assert(slot < tracked_.size() && !tracked_[slot]);
  tracked_[slot] = true;
  referenced_[slot] = false;
  // Just behind the hand: the last slot it will reach, as a newly loaded page.
  LinkBefore(hand_, slot);
  if (hand_ == kNoSlot) hand_ = slot;
  ++size_;
}

void ClockPolicy::OnInsertCold(SlotId slot) {
  OnInsert(slot);
  hand_ = slot;
}

void ClockPolicy::OnAccess(SlotId slot) {
  assert(slot < tracked_.size() && tracked_[slot]);
  referenced_[slot] = true;
}

void ClockPolicy::OnRemove(SlotId slot) {
  assert(slot < tracked_.size() && tracked_[slot]);
  tracked_[slot] = false;
  referenced_[slot] = false;
  if (--size_ == 0) {
    hand_ = kNoSlot;
  } else if (hand_ == slot) {
    hand_ = next_[slot];
  }
  Unlink(slot);
}

std::optional<SlotId> ClockPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  if (size_ == 0) return std::nullopt;
  // Every slot is examined at most twice: once to clear its bit, once more to decide.
  const uint64_t max_steps = 2 * static_cast<uint64_t>(size_) + 1;
  bool skipped = false;
  SlotId s = hand_;
  for (uint64_t step = 0; step < max_steps; ++step) {
    const SlotId next = next_[s];
    if (referenced_[s]) {
      referenced_[s] = false;
      // Second chance: the slot goes behind the hand. While the hand moves with us that is
      // just advancing it; once it rests on a skipped slot, relink the slot there.
      if (!skipped) {
        hand_ = next;
      } else {
        Unlink(s);
        LinkBefore(hand_, s);
      }
    } else if (evictable(s)) {
      if (!skipped) hand_ = s;
      return s;
    } else {
      skipped = true;  // the hand stays here: this slot remains the next candidate
    }
    s = next;
  }
  return std::nullopt;
}

std::vector<SlotId> ClockPolicy::Order() const {
  std::vector<SlotId> order;
  if (hand_ == kNoSlot) return order;
  SlotId s = hand_;
  do {
    order.push_back(s);
    s = next_[s];
  } while (s != hand_);
  return order;
}

}  // namespace kvtier
