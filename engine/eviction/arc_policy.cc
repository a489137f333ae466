// engine/eviction/arc_policy.cc — ARC eviction (see arc_policy.h).

#include "engine/eviction/arc_policy.h"

#include <algorithm>
#include <cassert>

namespace kvtier {

ArcPolicy::ArcPolicy(uint32_t num_slots)
    : capacity_(num_slots),
      lists_(num_slots, 2),
      keys_(num_slots),
      // With the cache full |B1| + |B2| <= c, so c entries each suffice; a ghost list at
      // capacity drops its LRU entry, which the directory rules would drop next anyway.
      b1_(std::max<uint32_t>(num_slots, 1)),
      b2_(std::max<uint32_t>(num_slots, 1)) {}

void ArcPolicy::TrimDirectory() {
  const uint64_t t1 = lists_.size(kT1);
  const uint64_t l1 = t1 + b1_.size();
  const uint64_t total = l1 + lists_.size(kT2) + b2_.size();
  if (l1 >= capacity_) {
    // Case IV.A: L1 is full. |T1| < c here (the new slot was free), so B1 has an entry.
    b1_.PopBack();
  } else if (total >= 2 * static_cast<uint64_t>(capacity_)) {
    b2_.PopBack();  // case IV.B: the directory is full
  }
}

void ArcPolicy::OnInsert(SlotId slot) {
  const uint64_t key = keys_.Take(slot);
  if (b1_.Contains(key)) {
    // Case II: T1 evicted this too early; favour recency.
    const uint32_t delta = std::max<uint32_t>(1, b2_.size() / b1_.size());
    p_ = std::min(capacity_, p_ + delta);
    b1_.Remove(key);
    lists_.PushFront(kT2, slot);
    return;
  }
  if (b2_.Contains(key)) {
    // Case III: T2 evicted this too early; favour frequency.
    const uint32_t delta = std::max<uint32_t>(1, b1_.size() / b2_.size());
    p_ = p_ > delta ? p_ - delta : 0;
    b2_.Remove(key);
    lists_.PushFront(kT2, slot);
    return;
  }
  TrimDirectory();  // case IV: a new key
  lists_.PushFront(kT1, slot);
}

void ArcPolicy::OnInsertCold(SlotId slot) {
  const uint64_t key = keys_.Take(slot);
  // Keep every key on one list only, so the directory bounds hold.
  if (!b1_.Remove(key) && !b2_.Remove(key)) TrimDirectory();
  lists_.PushBack(kT1, slot);
}

void ArcPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  lists_.MoveToFront(kT2, slot);  // case I: a hit in T1 or T2
}

void ArcPolicy::OnRemove(SlotId slot) {
  if (slot == pending_victim_) {
    (lists_.ListOf(slot) == kT1 ? b1_ : b2_).PushFront(keys_.Of(slot));
    pending_victim_ = kNoSlot;
  }
  lists_.Remove(slot);
}

std::optional<SlotId> ArcPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  // REPLACE(x, p). x is the block about to be inserted, known only if SetNextKey came first.
  const uint32_t t1 = lists_.size(kT1);
  const std::optional<uint64_t> next = keys_.Pending();
  const bool next_in_b2 = next.has_value() && b2_.Contains(*next);
  const bool t1_first = t1 > 0 && (t1 > p_ || (t1 == p_ && next_in_b2) || lists_.size(kT2) == 0);
  const int order[2] = {t1_first ? kT1 : kT2, t1_first ? kT2 : kT1};
  for (int list : order) {
    for (SlotId s = lists_.Back(list); s != kNoSlot; s = lists_.Newer(s)) {
      if (evictable(s)) {
        pending_victim_ = s;
        return s;
      }
    }
  }
  pending_victim_ = kNoSlot;
  return std::nullopt;
}

}  // namespace kvtier
