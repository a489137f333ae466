// tiers/tier.h — a place where block bytes live: a fixed pool of equal-size slots.
//
// A Tier owns one contiguous region (device memory for the GPU tier, pinned host memory for
// the host tier) cut into `num_slots` slots of `slot_bytes` each, and a free list. It knows
// nothing of keys, policies or copies: the engine decides what goes where and serialises
// every call (Tier is not thread-safe by itself).

#ifndef KVTIER_TIERS_TIER_H_
#define KVTIER_TIERS_TIER_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/device.h"
#include "kvtier/tier_kind.h"

namespace kvtier {

using SlotId = uint32_t;
inline constexpr SlotId kNoSlot = std::numeric_limits<SlotId>::max();

// Where a slot's bytes are: exactly one of `device` / `host` is set.
struct SlotAddress {
  DevicePtr device;
  void* host = nullptr;
};

class Tier {
 public:
  virtual ~Tier() = default;
  Tier(const Tier&) = delete;
  Tier& operator=(const Tier&) = delete;

  virtual TierKind kind() const = 0;
  virtual SlotAddress Address(SlotId slot) const = 0;

  size_t slot_bytes() const { return slot_bytes_; }
  uint32_t num_slots() const { return num_slots_; }
  uint32_t free_slots() const { return free_count_; }
  uint32_t used_slots() const { return num_slots_ - free_slots(); }

  // Takes the lowest-numbered free slot, or nullopt when all are in use. Lowest-first keeps
  // the slots of a batch adjacent, so their copies coalesce into one.
  std::optional<SlotId> Allocate();
  // Returns a slot to the free list. REQUIRES: slot was allocated and not yet released.
  void Release(SlotId slot);

 protected:
  Tier(size_t slot_bytes, uint32_t num_slots);

  // Slots per capacity, or InvalidArgument naming the tier when not even one fits.
  static absl::StatusOr<uint32_t> SlotsFor(const char* tier, size_t capacity_bytes,
                                           size_t slot_bytes);

 private:
  size_t slot_bytes_;
  uint32_t num_slots_;
  std::vector<uint64_t> free_bits_;  // bit set = slot free
  uint32_t free_count_;
  uint32_t first_word_ = 0;  // no free slot lives in a word below this one
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_TIER_H_
