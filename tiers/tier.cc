#include "tiers/tier.h"

#include <bit>
#include <cassert>
#include <cstdlib>

#include "absl/strings/str_format.h"
#include "common/log.h"

namespace kvtier {

Tier::Tier(size_t slot_bytes, uint32_t num_slots)
    : slot_bytes_(slot_bytes),
      num_slots_(num_slots),
      free_bits_((num_slots + 63) / 64, ~uint64_t{0}),
      free_count_(num_slots) {
  if (num_slots % 64 != 0) free_bits_.back() = (uint64_t{1} << (num_slots % 64)) - 1;
}

std::optional<SlotId> Tier::Allocate() {
  for (uint32_t w = first_word_; w < free_bits_.size(); ++w) {
    if (free_bits_[w] == 0) continue;
    first_word_ = w;
    const int bit = std::countr_zero(free_bits_[w]);
    free_bits_[w] &= free_bits_[w] - 1;  // clear the lowest set bit
    --free_count_;
    return w * 64 + static_cast<SlotId>(bit);
  }
  first_word_ = static_cast<uint32_t>(free_bits_.size());
  return std::nullopt;
}

void Tier::Release(SlotId slot) {
  const uint32_t w = slot / 64;
  const uint64_t bit = uint64_t{1} << (slot % 64);
  // Checked in every build: two owners of one slot would hand one block's bytes to another.
  if (slot >= num_slots_ || (free_bits_[w] & bit) != 0) {
    KVTIER_LOG(kError, "tier: slot %u released twice or out of range (%u slots): aborting",
               slot, num_slots_);
    std::abort();
  }
  free_bits_[w] |= bit;
  ++free_count_;
  if (w < first_word_) first_word_ = w;
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
