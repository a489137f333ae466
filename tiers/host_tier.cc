#include "tiers/host_tier.h"

#include "common/log.h"

namespace kvtier {

absl::StatusOr<std::unique_ptr<HostTier>> HostTier::Create(Device& device, size_t slot_bytes,
                                                           size_t capacity_bytes) {
  absl::StatusOr<uint32_t> slots = SlotsFor("host", capacity_bytes, slot_bytes);
  if (!slots.ok()) return slots.status();
  absl::StatusOr<void*> base = device.AllocatePinned(size_t{*slots} * slot_bytes);
  if (!base.ok()) {
    return absl::Status(base.status().code(),
                        "host tier: allocating pinned memory: " + base.status().ToString());
  }
  return std::unique_ptr<HostTier>(
      new HostTier(device, static_cast<char*>(*base), slot_bytes, *slots));
}

HostTier::~HostTier() {
  if (absl::Status s = device_.FreePinned(base_); !s.ok()) {
    KVTIER_LOG(kError, "host tier: freeing pinned memory: %s", s.ToString());
  }
}

}  // namespace kvtier
