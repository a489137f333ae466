// engine/external_memory.h — device memory an inference engine registered with the engine
// (Engine::RegisterDeviceMemory): its own paged KV pool, which Store and Load may then use as
// their buffers.
//
// Promises:
//   * A range cannot be unregistered while a Store or Load whose buffers lie in it is in
//     flight: each such transfer holds a Use of the ranges its buffers touch from before its
//     buffers are validated until its completion releases it (or the transfer fails), and
//     Unregister refuses a range in use with FailedPrecondition naming the count.
//   * Registration forwards to Device::RegisterDeviceMemory, which checks the range.
//
// Thread-safe. Locking: mu_ is a leaf lock except that the device's own registration lock is
// taken under it; it is never held with the placement lock.

#ifndef KVTIER_ENGINE_EXTERNAL_MEMORY_H_
#define KVTIER_ENGINE_EXTERNAL_MEMORY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"
#include "kvtier/geometry.h"

namespace kvtier {

class ExternalMemory {
 public:
  // One transfer's hold on the registered ranges its buffers lie in. Released by its
  // completion (before the transfer's handle reports it finished, so Unregister succeeds
  // once Wait() has returned) or on destruction; Release is idempotent.
  class Use {
   public:
    Use(ExternalMemory* owner, std::vector<uint64_t> bases)
        : owner_(owner), bases_(std::move(bases)) {}
    ~Use() { Release(); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    void Release();

   private:
    ExternalMemory* const owner_;
    const std::vector<uint64_t> bases_;
    std::atomic<bool> released_{false};
  };

  ExternalMemory(Device& device, const Geometry& geometry)
      : device_(device), geometry_(geometry) {}
  ExternalMemory(const ExternalMemory&) = delete;
  ExternalMemory& operator=(const ExternalMemory&) = delete;

  absl::Status Register(DevicePtr base, size_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // FailedPrecondition while a Use holds the range; otherwise as
  // Device::UnregisterDeviceMemory (NotFound for a base never registered).
  absl::Status Unregister(DevicePtr base) ABSL_LOCKS_EXCLUDED(mu_);

  // Counts one more transfer against every registered range `buffers` lie in (whole blocks,
  // or the layer tensors of a paged pool); null when they lie in none. Call it before the
  // buffers are validated, so a range cannot be unregistered between the check and the
  // copies. REQUIRES: the Use is destroyed before this object.
  std::shared_ptr<Use> Acquire(const KvBuffers& buffers) ABSL_LOCKS_EXCLUDED(mu_);

  // Transfers currently holding the range registered at `base` (0 if none or unknown).
  uint64_t transfers_using(DevicePtr base) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Range {
    size_t bytes = 0;
    uint64_t transfers = 0;
  };

  Device& device_;
  const Geometry geometry_;
  mutable Mutex mu_;
  std::map<uint64_t, Range> ranges_ ABSL_GUARDED_BY(mu_);  // by base address
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EXTERNAL_MEMORY_H_
