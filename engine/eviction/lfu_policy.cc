// engine/eviction/lfu_policy.cc — LFU with aging eviction (see lfu_policy.h).

#include "engine/eviction/lfu_policy.h"

#include <algorithm>
#include <cassert>

namespace kvtier {

// The sketch ages as TinyLFU's does (halved after 10 x num_slots counts) but is 16 times
// wider: a prefix cache sees many more distinct keys than it holds (most prompt tails are
// never seen again), and where TinyLFU's sketch only ranks a candidate against one victim,
// here the count places every block in a class, so a collision that lifts a one-time block
// — say the head of a chain, while its tail stays in class 1 — breaks prefixes. 16 counters
// per slot keep the increments of one aging period below one per counter (32 bytes a slot).
policy_internal::FrequencySketch AgedLfuPolicy::MakeSketch(uint32_t num_slots) {
  return policy_internal::FrequencySketch(
      static_cast<uint32_t>(std::min<uint64_t>(uint64_t{num_slots} * 16, uint64_t{1} << 30)),
      10 * static_cast<uint64_t>(std::max<uint32_t>(num_slots, 1)));
}

AgedLfuPolicy::AgedLfuPolicy(uint32_t num_slots)
    : lists_(num_slots, kClasses),
      keys_(num_slots),
      sketch_(MakeSketch(num_slots)),
      stamp_(num_slots, 0) {}

void AgedLfuPolicy::InsertAt(SlotId slot, uint64_t stamp) {
  assert(!lists_.Contains(slot));
  const uint64_t key = keys_.Take(slot);
  const uint32_t count = std::clamp<uint32_t>(sketch_.Estimate(key), 1, kClasses);
  clock_ = std::max(clock_, stamp);
  stamp_[slot] = stamp;
  lists_.PushFront(static_cast<int>(count) - 1, slot);
}

void AgedLfuPolicy::Touch(SlotId slot, uint64_t key) {
  const uint32_t count = std::clamp<uint32_t>(sketch_.IncrementAndEstimate(key), 1, kClasses);
  stamp_[slot] = ++clock_;
  lists_.PushFront(static_cast<int>(count) - 1, slot);
}

void AgedLfuPolicy::OnInsert(SlotId slot) {
  assert(!lists_.Contains(slot));
  Touch(slot, keys_.Take(slot));
}

void AgedLfuPolicy::OnInsertCold(SlotId slot) {
  assert(!lists_.Contains(slot));
  keys_.Take(slot);
  stamp_[slot] = 0;
  lists_.PushBack(0, slot);
}

void AgedLfuPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  lists_.Remove(slot);
  Touch(slot, keys_.Of(slot));
}

void AgedLfuPolicy::OnRemove(SlotId slot) { lists_.Remove(slot); }

std::optional<SlotId> AgedLfuPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  std::optional<SlotId> best;
  double best_score = -1;
  for (int list = 0; list < kClasses; ++list) {
    for (SlotId s = lists_.Back(list); s != kNoSlot; s = lists_.Newer(s)) {
      if (!evictable(s)) continue;
      // The class's oldest evictable slot; idle time in clock ticks, at least 1.
      const double idle = static_cast<double>(clock_ - stamp_[s] + 1);
      const double score = idle / static_cast<double>((list + 1) * (list + 1));
      if (score > best_score) {
        best_score = score;
        best = s;
      }
      break;
    }
  }
  return best;
}

}  // namespace kvtier
