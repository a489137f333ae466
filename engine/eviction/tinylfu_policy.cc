// engine/eviction/tinylfu_policy.cc — W-TinyLFU eviction (see tinylfu_policy.h).

#include "engine/eviction/tinylfu_policy.h"

#include <algorithm>
#include <cassert>

namespace kvtier {

TinyLfuPolicy::TinyLfuPolicy(uint32_t num_slots)
    : window_capacity_(std::max<uint32_t>(1, num_slots / 100)),
      main_capacity_(num_slots > window_capacity_ ? num_slots - window_capacity_ : 0),
      protected_capacity_(static_cast<uint32_t>(uint64_t{main_capacity_} * 8 / 10)),
      lists_(num_slots, 3),
      keys_(num_slots),
      sketch_(num_slots) {}

void TinyLfuPolicy::Insert(SlotId slot, bool cold) {
  sketch_.Increment(keys_.Take(slot));
  if (cold) {
    lists_.PushBack(kWindow, slot);
  } else {
    lists_.PushFront(kWindow, slot);
  }
  Rebalance();
}

void TinyLfuPolicy::OnInsert(SlotId slot) { Insert(slot, /*cold=*/false); }

void TinyLfuPolicy::OnInsertCold(SlotId slot) { Insert(slot, /*cold=*/true); }

void TinyLfuPolicy::Rebalance() {
  while (lists_.size(kWindow) > window_capacity_ && main_size() < main_capacity_) {
    const SlotId s = lists_.Back(kWindow);
    lists_.Remove(s);
    lists_.PushFront(kProbation, s);
  }
}

void TinyLfuPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  sketch_.Increment(keys_.Of(slot));
  switch (lists_.ListOf(slot)) {
    case kWindow:
      lists_.MoveToFront(kWindow, slot);
      break;
    case kProbation:
      // Reused in probation: protect it; protected's LRU drops back to probation.
      lists_.Remove(slot);
      lists_.PushFront(kProtected, slot);
      if (lists_.size(kProtected) > protected_capacity_) {
        const SlotId demoted = lists_.Back(kProtected);
        lists_.Remove(demoted);
        lists_.PushFront(kProbation, demoted);
      }
      break;
    default:
      lists_.MoveToFront(kProtected, slot);
      break;
  }
}

void TinyLfuPolicy::OnRemove(SlotId slot) {
  if (slot == pending_victim_) {
    // The candidate that won the duel takes the victim's place in main.
    if (pending_admit_ != kNoSlot && pending_admit_ != slot &&
        lists_.ListOf(pending_admit_) == kWindow) {
      lists_.Remove(pending_admit_);
      lists_.PushFront(kProbation, pending_admit_);
    }
    pending_victim_ = pending_admit_ = kNoSlot;
  } else if (slot == pending_admit_) {
    pending_admit_ = kNoSlot;
  }
  lists_.Remove(slot);
}

std::optional<SlotId> TinyLfuPolicy::MainVictim(absl::FunctionRef<bool(SlotId)> evictable) const {
  for (int list : {kProbation, kProtected}) {
    for (SlotId s = lists_.Back(list); s != kNoSlot; s = lists_.Newer(s)) {
      if (evictable(s)) return s;
    }
  }
  return std::nullopt;
}

std::optional<SlotId> TinyLfuPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  pending_victim_ = pending_admit_ = kNoSlot;
  const SlotId candidate = lists_.Back(kWindow);
  // The insert to come will push the window's LRU slot out; with main full, it must win a
  // place there or go.
  const bool duel = candidate != kNoSlot && lists_.size(kWindow) >= window_capacity_ &&
                    main_size() > 0 && main_size() >= main_capacity_;
  if (duel) {
    const std::optional<SlotId> victim = MainVictim(evictable);
    const bool candidate_evictable = evictable(candidate);
    if (victim.has_value() && (!candidate_evictable || sketch_.Estimate(keys_.Of(candidate)) >
                                                           sketch_.Estimate(keys_.Of(*victim)))) {
      pending_victim_ = *victim;
      pending_admit_ = candidate;
      return victim;
    }
    if (candidate_evictable) {
      pending_victim_ = candidate;
      return candidate;
    }
  } else if (std::optional<SlotId> victim = MainVictim(evictable)) {
    pending_victim_ = *victim;
    return victim;
  }
  // Main has nothing evictable (or is empty): the window, from its LRU end.
  for (SlotId s = lists_.Back(kWindow); s != kNoSlot; s = lists_.Newer(s)) {
    if (evictable(s)) {
      pending_victim_ = s;
      return s;
    }
  }
  return std::nullopt;
}

}  // namespace kvtier
