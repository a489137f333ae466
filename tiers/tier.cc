#include "tiers/tier.h"

#include <cassert>

#include "absl/strings/str_format.h"

namespace kvtier {

Tier::Tier(size_t slot_bytes, uint32_t num_slots)
    : slot_bytes_(slot_bytes), num_slots_(num_slots), allocated_(num_slots, false) {
  free_.reserve(num_slots);
  for (uint32_t i = num_slots; i > 0; --i) free_.push_back(i - 1);  // slot 0 handed out first
}

std::optional<SlotId> Tier::Allocate() {
  if (free_.empty()) return std::nullopt;
  const SlotId slot = free_.back();
  free_.pop_back();
  allocated_[slot] = true;
  return slot;
}

void Tier::Release(SlotId slot) {
  assert(slot < num_slots_ && allocated_[slot]);
  allocated_[slot] = false;
  free_.push_back(slot);
}

absl::StatusOr<uint32_t> Tier::SlotsFor(const char* tier, size_t capacity_bytes,
                                        size_t slot_bytes) {
  if (slot_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s tier: slot size is 0", tier));
  }
  const size_t slots = capacity_bytes / slot_bytes;
  if (slots == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s tier: capacity %d bytes is smaller than one block (%d bytes)", tier,
                        capacity_bytes, slot_bytes));
  }
  if (slots >= kNoSlot) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s tier: %d slots exceeds the limit of %d", tier, slots, kNoSlot - 1));
  }
  return static_cast<uint32_t>(slots);
}

}  // namespace kvtier
