#include "tiers/gpu_tier.h"

#include "common/log.h"

namespace kvtier {

absl::StatusOr<std::unique_ptr<GpuTier>> GpuTier::Create(Device& device, size_t slot_bytes,
                                                         size_t capacity_bytes) {
  absl::StatusOr<uint32_t> slots = SlotsFor("GPU", capacity_bytes, slot_bytes);
  if (!slots.ok()) return slots.status();
  absl::StatusOr<DevicePtr> base = device.Allocate(size_t{*slots} * slot_bytes);
  if (!base.ok()) {
    return absl::Status(base.status().code(),
                        "GPU tier: allocating device memory: " + base.status().ToString());
  }
  return std::unique_ptr<GpuTier>(new GpuTier(device, *base, slot_bytes, *slots));
}

GpuTier::~GpuTier() {
  if (absl::Status s = device_.Free(base_); !s.ok()) {
    KVTIER_LOG(kError, "GPU tier: freeing device memory: %s", s.ToString());
  }
}

}  // namespace kvtier
