// engine/eviction/sieve_policy.h — SIEVE, a FIFO queue with a lazy hand.
//
// SIEVE (Zhang et al., "SIEVE is Simpler than LRU", NSDI'24): a FIFO queue with a visited bit
// per slot and a hand. New slots go to the head with the bit clear; a hit only sets the bit —
// nothing moves. To pick, the hand moves from where it stopped toward the head (wrapping to
// the tail), clearing set bits, and stops at the first slot with a clear bit; after that
// slot's removal the hand rests on its newer neighbour. Survivors keep their place, which is
// what lets a working set outlast a scan: the hand chases the newest, unvisited blocks.
//
// Skipped slots keep their place and their bit; the hand passes them (a busy block is in use,
// so it is treated like a visited one, without losing the bit). A sweep is bounded at two
// passes. OnInsertCold: just ahead of the hand with the bit clear (examined first).

#ifndef KVTIER_ENGINE_EVICTION_SIEVE_POLICY_H_
#define KVTIER_ENGINE_EVICTION_SIEVE_POLICY_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/slot_lists.h"

namespace kvtier {

class SievePolicy final : public EvictionPolicy {
 public:
  explicit SievePolicy(uint32_t num_slots) : lists_(num_slots, 1), visited_(num_slots, false) {}

  const char* name() const override { return "sieve"; }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  std::vector<SlotId> Order() const { return lists_.Order(0); }  // head (newest) first
  bool visited(SlotId slot) const { return visited_[slot]; }
  SlotId hand() const { return hand_; }  // kNoSlot: the next sweep starts at the tail

 private:
  policy_internal::SlotLists lists_;
  std::vector<bool> visited_;
  SlotId hand_ = kNoSlot;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_SIEVE_POLICY_H_
