// engine/eviction/clock_policy.h — CLOCK, second chance on a circle.
//
// CLOCK (Corbató, "A paging experiment with the Multics system", 1968): the tracked slots sit
// on a circle in insertion order with a hand on the oldest; an access sets the slot's
// reference bit. To pick, the hand sweeps: a set bit is cleared and the slot passed (its
// second chance: it is now examined last), a clear bit on an evictable slot is the victim.
// New slots are linked just behind the hand (examined last) with the bit clear; the hand
// stays on the victim, and once it is removed the next insert takes its place on the circle —
// the replacement frame of the textbook.
//
// Skipped slots: the hand stops at the first busy slot with a clear bit, which therefore
// stays the next to be examined; slots whose bit is cleared beyond it are moved behind the
// hand, exactly where passing them would have put them. A sweep is bounded at two turns.
// OnInsertCold: under the hand with the bit clear (examined first).

#ifndef KVTIER_ENGINE_EVICTION_CLOCK_POLICY_H_
#define KVTIER_ENGINE_EVICTION_CLOCK_POLICY_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/eviction/eviction_policy.h"

namespace kvtier {

class ClockPolicy final : public EvictionPolicy {
 public:
  explicit ClockPolicy(uint32_t num_slots);

  const char* name() const override { return "clock"; }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // Tracked slots in the order the hand will examine them (for tests).
  std::vector<SlotId> Order() const;
  bool referenced(SlotId slot) const { return referenced_[slot]; }

 private:
  void Unlink(SlotId slot);
  void LinkBefore(SlotId pos, SlotId slot);  // pos == kNoSlot: the circle is empty

  std::vector<SlotId> prev_;
  std::vector<SlotId> next_;  // the direction the hand moves
  std::vector<bool> referenced_;
  std::vector<bool> tracked_;
  SlotId hand_ = kNoSlot;
  uint32_t size_ = 0;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_CLOCK_POLICY_H_
