// kernels/emulated_device.h — a Device made of host memory and worker threads.
//
// The emulated device stands in for a GPU on machines without one, with CUDA's semantics:
//  * Device memory is a set of host allocations, but a DevicePtr is a synthetic address
//    (from kAddressBase up, 256-byte aligned, with unmapped gaps between allocations), not a
//    host address: host code that dereferences one faults, and a host pointer passed as a
//    DevicePtr (or a DevicePtr passed as a host pointer) is rejected with InvalidArgument.
//    Resolve maps a device range to host memory for kernels and tests.
//  * Each Stream is a worker thread running its queue in order. Enqueue calls validate their
//    arguments and return at once. An error while running (a kernel that fails, memory freed
//    under a queued copy) is kept as the stream's pending error: it is returned by
//    Stream::Synchronize (which clears it), captured by every Event recorded after it, and
//    passed to streams that Wait on such an event. The stream keeps running.
//  * Events follow CUDA: Record captures the work enqueued so far, Wait makes later work
//    wait for it, an event never recorded is complete.
//  * With emulated_copy_gbps > 0, host→device and device→host copies each go through one
//    link per direction of that bandwidth, shared by all streams, as a PCIe link is.
//    Device→device copies and kernels run at memory speed.
//  * A kernel's host_bytes_read / host_bytes_written (zero-copy access to pinned host
//    memory) pass through the same links as copies do.
//  * emulated_memory_limit bounds the bytes allocated (ResourceExhausted beyond it).
//  * Free and FreePinned of a pointer this device did not hand out (or already freed) are
//    InvalidArgument; of null they are no-ops, as cudaFree and free are.
//
// Thread safety: all methods may be called from any thread.

#ifndef KVTIER_KERNELS_EMULATED_DEVICE_H_
#define KVTIER_KERNELS_EMULATED_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "absl/time/time.h"
#include "kvtier/device.h"

namespace kvtier {

class EmulatedStream;  // emulated_device.cc

class EmulatedDevice final : public Device {
 public:
  // First synthetic device address. On x86-64 and AArch64 this range is not a valid user
  // space address, so dereferencing a DevicePtr on the host faults instead of corrupting.
  static constexpr uint64_t kAddressBase = 0x7e00'0000'0000'0000ULL;
  // Allocations are this aligned, and separated by at least this many unmapped bytes.
  static constexpr uint64_t kAlignment = 256;
  static constexpr uint64_t kGuardBytes = 4096;
  static constexpr size_t kPinnedAlignment = 4096;

  // REQUIRES: options.Validate().ok(). Only the emulated_* options are used.
  static absl::StatusOr<std::unique_ptr<EmulatedDevice>> Create(const DeviceOptions& options);

  // REQUIRES: every Stream created by this device has been destroyed. Events may outlive
  // it. Device memory and pinned buffers still allocated are released.
  ~EmulatedDevice() override;

  DeviceKind kind() const override { return DeviceKind::kEmulated; }
  std::string name() const override;

  absl::StatusOr<DevicePtr> Allocate(size_t bytes) override;
  absl::Status Free(DevicePtr ptr) override;
  bool Contains(DevicePtr ptr, size_t bytes) const override;

  absl::StatusOr<void*> AllocatePinned(size_t bytes) override;
  absl::Status FreePinned(void* ptr) override;
  // Records the range (nothing to lock: emulated copies are plain memcpy); overlaps with a
  // registered or pinned range and unknown unregistrations are InvalidArgument, as on CUDA.
  absl::Status RegisterHostMemory(void* ptr, size_t bytes) override;
  absl::Status UnregisterHostMemory(void* ptr) override;

  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() override;
  absl::StatusOr<std::unique_ptr<Event>> CreateEvent() override;

  // Waits for the work enqueued on every stream so far; returns the first pending error of
  // any stream without clearing it (Stream::Synchronize does that).
  absl::Status Synchronize() override;

  // The host memory behind [ptr, ptr+bytes), or nullptr if that range is not inside one live
  // allocation. The result stays valid until that allocation is freed.
  void* Resolve(DevicePtr ptr, size_t bytes) const;

  // Bytes of device memory allocated now.
  size_t bytes_in_use() const;

  // True if `address` lies in the synthetic address range (live or not): such a value is a
  // DevicePtr and must never be used as a host pointer.
  static bool IsSyntheticAddress(uint64_t address) { return address >= kAddressBase; }

 private:
  friend class EmulatedStream;
  class Allocation;
  enum class Link { kHostToDevice = 0, kDeviceToHost = 1 };

  explicit EmulatedDevice(const DeviceOptions& options);

  // Like Resolve, but keeps the allocation's memory alive while the result is held, so a Free
  // racing a queued copy cannot pull memory out from under it. Null if not found.
  std::shared_ptr<Allocation> FindAllocation(DevicePtr ptr, size_t bytes) const;

  // Blocks the caller until `bytes` have passed through `link` at the configured bandwidth,
  // sharing the link with every other caller; returns at once when unthrottled. `copy` is
  // run (without locks held) after the reservation, before the wait.
  template <typename CopyFn>
  void ThrottledCopy(Link link, size_t bytes, CopyFn copy);

  void RegisterStream(EmulatedStream* stream);
  void UnregisterStream(EmulatedStream* stream);

  const double copy_gbps_;
  const size_t memory_limit_;

  mutable Mutex memory_mu_;
  // Synthetic base address → allocation. Ordered, to find the allocation below an address.
  std::map<uint64_t, std::shared_ptr<Allocation>> allocations_ ABSL_GUARDED_BY(memory_mu_);
  uint64_t next_address_ ABSL_GUARDED_BY(memory_mu_) = kAddressBase;
  size_t bytes_in_use_ ABSL_GUARDED_BY(memory_mu_) = 0;
  // Pinned host buffer → size.
  absl::flat_hash_map<void*, size_t> pinned_ ABSL_GUARDED_BY(memory_mu_);
  // Registered host range start → size.
  std::map<uintptr_t, size_t> registered_ ABSL_GUARDED_BY(memory_mu_);

  // Per link direction: the time until which it is busy with copies already admitted.
  Mutex link_mu_;
  absl::Time link_busy_until_[2] ABSL_GUARDED_BY(link_mu_);

  // Live streams, for Device::Synchronize. Held (shared) while draining them, so a stream
  // cannot finish destruction while the device waits on it.
  Mutex streams_mu_;
  absl::flat_hash_set<EmulatedStream*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace kvtier

#endif  // KVTIER_KERNELS_EMULATED_DEVICE_H_
