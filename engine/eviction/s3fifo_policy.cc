// engine/eviction/s3fifo_policy.cc — S3-FIFO eviction (see s3fifo_policy.h).

#include "engine/eviction/s3fifo_policy.h"

#include <algorithm>
#include <cassert>

namespace kvtier {

S3FifoPolicy::S3FifoPolicy(uint32_t num_slots)
    : small_capacity_(std::max<uint32_t>(1, (num_slots + 9) / 10)),
      lists_(num_slots, 2),
      freq_(num_slots, 0),
      keys_(num_slots),
      // G holds as many entries as M holds objects.
      ghost_(std::max<uint32_t>(1, num_slots > small_capacity_ ? num_slots - small_capacity_ : 1)) {
}

void S3FifoPolicy::OnInsert(SlotId slot) {
  const uint64_t key = keys_.Take(slot);
  freq_[slot] = 0;
  // A key still in G was evicted from S before its reuse came: it belongs in M.
  lists_.PushFront(ghost_.Remove(key) ? kMain : kSmall, slot);
}

void S3FifoPolicy::OnInsertCold(SlotId slot) {
  keys_.Take(slot);
  freq_[slot] = 0;
  lists_.PushBack(kSmall, slot);
}

void S3FifoPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  if (freq_[slot] < kMaxFrequency) ++freq_[slot];
}

void S3FifoPolicy::OnRemove(SlotId slot) {
  if (slot == pending_victim_) {
    // An eviction from S remembers the key; one from M does not (the paper's G only records
    // S's evictions, the objects that had no chance to prove themselves).
    if (lists_.ListOf(slot) == kSmall) ghost_.PushFront(keys_.Of(slot));
    pending_victim_ = kNoSlot;
  }
  freq_[slot] = 0;
  lists_.Remove(slot);
}

std::optional<SlotId> S3FifoPolicy::EvictFromSmall(absl::FunctionRef<bool(SlotId)> evictable) {
  SlotId s = lists_.Back(kSmall);
  while (s != kNoSlot) {
    const SlotId newer = lists_.Newer(s);
    if (freq_[s] >= kMoveToMainThreshold) {
      // Reused while in S: promote to M, access bits cleared. Busy or not, it leaves S.
      lists_.Remove(s);
      freq_[s] = 0;
      lists_.PushFront(kMain, s);
    } else if (evictable(s)) {
      return s;
    }  // else busy: it stays at S's tail end, still the first to go
    s = newer;
  }
  return std::nullopt;
}

std::optional<SlotId> S3FifoPolicy::EvictFromMain(absl::FunctionRef<bool(SlotId)> evictable) {
  // Terminates: a step either passes a slot for good or lowers a counter, and counters only
  // go down here (at most 3 reinsertions per slot).
  SlotId s = lists_.Back(kMain);
  while (s != kNoSlot) {
    SlotId newer = lists_.Newer(s);
    if (freq_[s] > 0) {
      --freq_[s];
      lists_.MoveToFront(kMain, s);
      if (newer == kNoSlot) newer = s;  // it was the front: look at it again
    } else if (evictable(s)) {
      return s;
    }
    s = newer;
  }
  return std::nullopt;
}

std::optional<SlotId> S3FifoPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  // Stable across repeated calls: the promotions of the first call change the queue sizes,
  // which could otherwise send a second call to the other queue.
  if (pending_victim_ != kNoSlot && lists_.Contains(pending_victim_) &&
      freq_[pending_victim_] == 0 && evictable(pending_victim_)) {
    return pending_victim_;
  }
  pending_victim_ = kNoSlot;
  const uint32_t small = lists_.size(kSmall);
  const bool small_first = small > 0 && (small >= small_capacity_ || lists_.size(kMain) == 0);
  std::optional<SlotId> victim;
  if (small_first) {
    victim = EvictFromSmall(evictable);
    if (!victim) victim = EvictFromMain(evictable);
  } else {
    victim = EvictFromMain(evictable);
    if (!victim) victim = EvictFromSmall(evictable);
    // EvictFromSmall may have promoted evictable slots (hit ones) into M: look once more.
    if (!victim) victim = EvictFromMain(evictable);
  }
  if (victim) pending_victim_ = *victim;
  return victim;
}

}  // namespace kvtier
