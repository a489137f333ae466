// tiers/host_tier.h — the host tier: block slots in one pinned host-memory region.
//
// Pinned (page-locked) so host↔device copies are true DMA and, later, so io_uring can use
// the same slots as registered buffers. Slots are 4096-byte aligned when slot_bytes is a
// multiple of 4096.

#ifndef KVTIER_TIERS_HOST_TIER_H_
#define KVTIER_TIERS_HOST_TIER_H_

#include <memory>

#include "tiers/tier.h"

namespace kvtier {

class HostTier final : public Tier {
 public:
  // REQUIRES: `device` outlives the tier (it owns the pinned allocation).
  static absl::StatusOr<std::unique_ptr<HostTier>> Create(Device& device, size_t slot_bytes,
                                                          size_t capacity_bytes);
  ~HostTier() override;

  TierKind kind() const override { return TierKind::kHost; }
  SlotAddress Address(SlotId slot) const override {
    return SlotAddress{DevicePtr(), base_ + size_t{slot} * slot_bytes()};
  }

 private:
  HostTier(Device& device, char* base, size_t slot_bytes, uint32_t num_slots)
      : Tier(slot_bytes, num_slots), device_(device), base_(base) {}

  Device& device_;
  char* base_;
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_HOST_TIER_H_
