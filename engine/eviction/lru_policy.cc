// engine/eviction/lru_policy.cc — least-recently-used eviction (see lru_policy.h).

#include "engine/eviction/lru_policy.h"

#include <cassert>

namespace kvtier {

LruPolicy::LruPolicy(uint32_t num_slots)
    : prev_(num_slots, kNoSlot), next_(num_slots, kNoSlot), tracked_(num_slots, false) {}

void LruPolicy::Unlink(SlotId slot) {
  const SlotId p = prev_[slot];
  const SlotId n = next_[slot];
  if (p != kNoSlot)
    next_[p] = n;
  else
    head_ = n;
  if (n != kNoSlot)
    prev_[n] = p;
  else
    tail_ = p;
  prev_[slot] = next_[slot] = kNoSlot;
}

void LruPolicy::PushFront(SlotId slot) {
  prev_[slot] = kNoSlot;
  next_[slot] = head_;
  if (head_ != kNoSlot) prev_[head_] = slot;
  head_ = slot;
  if (tail_ == kNoSlot) tail_ = slot;
}

void LruPolicy::PushBack(SlotId slot) {
  next_[slot] = kNoSlot;
  prev_[slot] = tail_;
  if (tail_ != kNoSlot) next_[tail_] = slot;
  tail_ = slot;
  if (head_ == kNoSlot) head_ = slot;
}

void LruPolicy::OnInsertCold(SlotId slot) {
  assert(slot < tracked_.size() && !tracked_[slot]);
  tracked_[slot] = true;
  PushBack(slot);
}

void LruPolicy::OnInsert(SlotId slot) {
  assert(slot < tracked_.size() && !tracked_[slot]);
  tracked_[slot] = true;
  PushFront(slot);
}

void LruPolicy::OnAccess(SlotId slot) {
  assert(slot < tracked_.size() && tracked_[slot]);
  if (head_ == slot) return;
  Unlink(slot);
  PushFront(slot);
}

void LruPolicy::OnRemove(SlotId slot) {
  assert(slot < tracked_.size() && tracked_[slot]);
  tracked_[slot] = false;
  Unlink(slot);
}

std::optional<SlotId> LruPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  for (SlotId s = tail_; s != kNoSlot; s = prev_[s]) {
    if (evictable(s)) return s;
  }
  return std::nullopt;
}

std::vector<SlotId> LruPolicy::Order() const {
  std::vector<SlotId> order;
  for (SlotId s = head_; s != kNoSlot; s = next_[s]) order.push_back(s);
  return order;
}

}  // namespace kvtier
