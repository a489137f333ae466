// tiers/gpu_tier.h — the GPU tier: block slots in one device-memory region.
//
// Allocated once at construction (one Device::Allocate), freed at destruction. A slot is a
// page of the managed pool: a caller holding a lease reads it through its DevicePtr.

#ifndef KVTIER_TIERS_GPU_TIER_H_
#define KVTIER_TIERS_GPU_TIER_H_

#include <memory>

#include "tiers/tier.h"

namespace kvtier {

class GpuTier final : public Tier {
 public:
  // InvalidArgument when capacity holds no whole slot; the device's error when allocation
  // fails. REQUIRES: `device` outlives the tier.
  static absl::StatusOr<std::unique_ptr<GpuTier>> Create(Device& device, size_t slot_bytes,
                                                         size_t capacity_bytes);
  ~GpuTier() override;

  TierKind kind() const override { return TierKind::kGpu; }
  SlotAddress Address(SlotId slot) const override {
    return SlotAddress{base_ + uint64_t{slot} * slot_bytes(), nullptr};
  }

 private:
  GpuTier(Device& device, DevicePtr base, size_t slot_bytes, uint32_t num_slots)
      : Tier(slot_bytes, num_slots), device_(device), base_(base) {}

  Device& device_;
  DevicePtr base_;
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_GPU_TIER_H_
