// engine/eviction/adaptive_policy.cc — the adaptive policy (see adaptive_policy.h).

#include "engine/eviction/adaptive_policy.h"

#include <algorithm>

namespace kvtier {

AdaptivePolicy::AdaptivePolicy(uint32_t num_slots)
    : arc_(num_slots),
      lfu_(num_slots),
      learner_(num_slots),
      num_slots_(std::max<uint32_t>(num_slots, 1)),
      ring_(num_slots_),
      duel_of_b_(num_slots, kNoDuel) {
  by_key_.reserve(num_slots_);
}

void AdaptivePolicy::SetNextKey(uint64_t key_hash) {
  arc_.SetNextKey(key_hash);
  lfu_.SetNextKey(key_hash);
}

void AdaptivePolicy::OpenDuel(uint64_t a_key, SlotId b, int leader) {
  const uint32_t index = static_cast<uint32_t>(next_duel_ % ring_.size());
  if (ring_[index].open) CloseDuel(index, -1);  // the oldest expires (the tail of its chain)
  // A key is the `a` of at most one duel: it was inserted again (closing its duel) before it
  // could be evicted again, unless it came back cold or without a SetNextKey.
  if (auto it = by_key_.find(a_key); it != by_key_.end()) CloseDuel(it->second, -1);
  ring_[index] = Duel{next_duel_, a_key, duel_of_b_[b], b, static_cast<uint8_t>(leader), true};
  by_key_.emplace(a_key, index);
  duel_of_b_[b] = next_duel_;
  ++next_duel_;
  ++duels_opened_;
}

void AdaptivePolicy::CloseDuel(uint32_t index, int loser) {
  Duel& d = ring_[index];
  if (loser >= 0) {
    learner_.Regret(loser, 1.0);
    ++duels_lost_[loser];
  }
  by_key_.erase(d.a_key);
  d.open = false;
}

void AdaptivePolicy::CloseDuelsOf(SlotId slot, bool b_lost) {
  // The chain runs newest to oldest. Duels expire oldest first, so once a link names a
  // record that was reused, every older one was too.
  for (uint64_t seq = duel_of_b_[slot]; seq != kNoDuel;) {
    const uint32_t index = static_cast<uint32_t>(seq % ring_.size());
    Duel& d = ring_[index];
    if (d.seq != seq) break;
    seq = d.older;
    if (d.open) CloseDuel(index, b_lost ? 1 - d.leader : -1);
  }
  duel_of_b_[slot] = kNoDuel;
}

void AdaptivePolicy::OnInsert(SlotId slot) {
  arc_.OnInsert(slot);
  lfu_.OnInsert(slot);
  // The key of an evicted block is back: if it lost a duel, the expert that evicted it pays.
  if (!by_key_.empty()) {
    if (auto it = by_key_.find(arc_.KeyOf(slot)); it != by_key_.end()) {
      CloseDuel(it->second, ring_[it->second].leader);
    }
  }
  learner_.CountRequest(/*hit=*/false);
}

void AdaptivePolicy::OnInsertCold(SlotId slot) {
  arc_.OnInsertCold(slot);
  lfu_.OnInsertCold(slot);
  if (!by_key_.empty()) {
    if (auto it = by_key_.find(arc_.KeyOf(slot)); it != by_key_.end()) CloseDuel(it->second, -1);
  }
}

void AdaptivePolicy::OnAccess(SlotId slot) {
  // The block the follower would have evicted is wanted first: the follower pays.
  if (duel_of_b_[slot] != kNoDuel) CloseDuelsOf(slot, /*b_lost=*/true);
  arc_.OnAccess(slot);
  lfu_.OnAccess(slot);
  learner_.CountRequest(/*hit=*/true);
}

void AdaptivePolicy::OnRemove(SlotId slot) {
  // The slot was some duel's b: gone before either side was referenced.
  if (duel_of_b_[slot] != kNoDuel) CloseDuelsOf(slot, /*b_lost=*/false);
  if (slot == pending_victim_) {
    // An eviction the leader chose. The follower's own choice, before the slot goes.
    const int follower = 1 - pending_leader_;
    const std::optional<SlotId> b = follower == kArc ? arc_.PeekVictim() : lfu_.PeekVictim();
    if (b.has_value() && *b != slot) {
      OpenDuel(arc_.KeyOf(slot), *b, pending_leader_);
    }
    arc_.NoteVictim(slot);
    pending_victim_ = kNoSlot;
  } else {
    arc_.NoteVictim(kNoSlot);
  }
  arc_.OnRemove(slot);
  lfu_.OnRemove(slot);
}

std::optional<SlotId> AdaptivePolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  pending_leader_ = learner_.leader();
  const std::optional<SlotId> victim =
      pending_leader_ == kArc ? arc_.PickVictim(evictable) : lfu_.PickVictim(evictable);
  pending_victim_ = victim.value_or(kNoSlot);
  return victim;
}

}  // namespace kvtier
