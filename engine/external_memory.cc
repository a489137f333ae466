// engine/external_memory.cc — see external_memory.h.

#include "engine/external_memory.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace kvtier {

void ExternalMemory::Use::Release() {
  if (released_.exchange(true, std::memory_order_acq_rel)) return;
  MutexLock lock(&owner_->mu_);
  for (uint64_t base : bases_) {
    auto it = owner_->ranges_.find(base);
    if (it != owner_->ranges_.end() && it->second.transfers > 0) --it->second.transfers;
  }
}

absl::Status ExternalMemory::Register(DevicePtr base, size_t bytes) {
  MutexLock lock(&mu_);
  if (absl::Status s = device_.RegisterDeviceMemory(base, bytes); !s.ok()) return s;
  ranges_[base.address()] = Range{bytes, 0};
  return absl::OkStatus();
}

absl::Status ExternalMemory::Unregister(DevicePtr base) {
  MutexLock lock(&mu_);
  auto it = ranges_.find(base.address());
  if (it != ranges_.end() && it->second.transfers > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "UnregisterDeviceMemory: [0x%x, +%d bytes) is in use by %d Store/Load transfers in "
        "flight; wait for their handles first",
        base.address(), it->second.bytes, it->second.transfers));
  }
  if (absl::Status s = device_.UnregisterDeviceMemory(base); !s.ok()) return s;
  if (it != ranges_.end()) ranges_.erase(it);
  return absl::OkStatus();
}

std::shared_ptr<ExternalMemory::Use> ExternalMemory::Acquire(const KvBuffers& buffers) {
  std::vector<uint64_t> bases;
  MutexLock lock(&mu_);
  if (ranges_.empty()) return nullptr;
  // The registered range [p, p + bytes) lies in, if any.
  auto note = [&](DevicePtr p, size_t bytes) {
    mu_.AssertHeld();
    auto it = ranges_.upper_bound(p.address());
    if (it == ranges_.begin()) return;
    --it;
    const uint64_t offset = p.address() - it->first;
    if (offset >= it->second.bytes || bytes > it->second.bytes - offset) return;
    bases.push_back(it->first);
  };
  if (buffers.is_paged()) {
    const size_t layer_tensor_bytes =
        size_t{geometry_.parts()} * buffers.pool().num_pages * geometry_.part_bytes();
    for (DevicePtr layer : buffers.pool().layers) note(layer, layer_tensor_bytes);
  } else {
    for (DevicePtr block : buffers.blocks()) note(block, geometry_.block_bytes());
  }
  if (bases.empty()) return nullptr;
  std::sort(bases.begin(), bases.end());
  bases.erase(std::unique(bases.begin(), bases.end()), bases.end());
  for (uint64_t base : bases) ++ranges_[base].transfers;
  return std::make_shared<Use>(this, std::move(bases));
}

uint64_t ExternalMemory::transfers_using(DevicePtr base) const {
  MutexLock lock(&mu_);
  auto it = ranges_.find(base.address());
  return it == ranges_.end() ? 0 : it->second.transfers;
}

}  // namespace kvtier
