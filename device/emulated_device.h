// device/emulated_device.h — a Device made of host memory and worker threads.
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
//  * RegisterDeviceMemory makes host memory the caller owns (an inference engine's KV pool
//    standing in for its GPU memory) device memory of this device at its own host address.
//    This is the one case where a DevicePtr's value is a host address.
//  * Free and FreePinned of a pointer this device did not hand out (or already freed) are
//    InvalidArgument; of null they are no-ops, as cudaFree and free are.
//  * Fault injection (for tests): InjectFault makes chosen future calls fail as the CUDA
//    device fails when the runtime returns an error (DeviceFault says which calls and how).
//
// Thread safety: all methods may be called from any thread.

#ifndef KVTIER_DEVICE_EMULATED_DEVICE_H_
#define KVTIER_DEVICE_EMULATED_DEVICE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/io_memory.h"
#include "common/mutex.h"
#include "kvtier/device.h"

namespace kvtier {

class EmulatedStream;  // emulated_device.cc

// A CUDA error on a chosen call, for tests: the call returns the Status that CudaDevice
// (device/cuda_device.cc) returns when the runtime reports that error (the CUDA call's name
// and arguments, CUDA's message, the same code) with " (injected fault)" appended, and does
// nothing else: no memory is allocated, no work is enqueued (a CopyBatch enqueues none of its
// ops). What each kind fails, and with what:
//   kAllocate:       Allocate: "cudaMalloc(N bytes): out of memory", ResourceExhausted.
//   kAllocatePinned: AllocatePinned: "cudaHostAlloc(N bytes): out of memory" (N rounded up
//                    to 4096), ResourceExhausted.
//   kCopy:           CopyToDevice, CopyToHost, CopyOnDevice, CopyBatch:
//                    "cudaMemcpyAsync(H2D, N bytes): unspecified launch failure" (a batch of
//                    several copies: "cudaMemcpyBatchAsync(K copies): ..."), Internal.
//   kLaunch:         Launch: "kernel 'NAME': kernel launch: unspecified launch failure",
//                    Internal.
//   kEventRecord:    Stream::Record: "cudaEventRecord: unspecified launch failure", Internal.
//   kCallback:       Stream::AddCallback: "cudaLaunchHostFunc: unspecified launch failure",
//                    Internal.
// Errors raised while work runs (CUDA's sticky errors, which leave the context unusable) are
// not modelled: a stream whose work failed is a device the engine cannot keep using anyway.
// Each fault counts the calls of its kind (on every stream of the device) from the moment it
// is injected and hits calls skip + 1 .. skip + count (count 0: until ClearFaults); when two
// hit the same call the one injected first applies.
struct DeviceFault {
  enum class Kind : uint8_t {
    kAllocate,
    kAllocatePinned,
    kCopy,
    kLaunch,
    kEventRecord,
    kCallback,
  };
  Kind kind = Kind::kCopy;
  uint64_t skip = 0;
  uint64_t count = 1;
};
const char* DeviceFaultKindName(DeviceFault::Kind kind);

class EmulatedDevice final : public Device {
 public:
  // First synthetic device address. On x86-64 and AArch64 this range is not a valid user
  // space address, so dereferencing a DevicePtr on the host faults instead of corrupting.
  static constexpr uint64_t kAddressBase = 0x7e00'0000'0000'0000ULL;
  // Allocations are this aligned, and separated by at least this many unmapped bytes.
  static constexpr uint64_t kAlignment = 256;
  static constexpr uint64_t kGuardBytes = 4096;
  static constexpr size_t kPinnedAlignment = 4096;
  // Pinned buffers of this size or more (the host tier's arena) are IoMemory: 2 MiB-aligned,
  // in huge pages where the kernel has them, so a direct-I/O read into a host slot is a
  // segment or two at the device, not one per 4 KiB page. Smaller ones are posix_memalign.
  static constexpr size_t kHugePinnedBytes = size_t{2} << 20;

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

  // The caller's host memory at address `base` becomes device memory of this device at the
  // same address (an "external allocation": Resolve maps it to itself, copies and kernels
  // read and write the caller's bytes in place). It does not count toward bytes_in_use or
  // emulated_memory_limit, and Free refuses it. `base` must not be a synthetic address, and
  // the range must not overlap an allocation, a registered device range, pinned memory or
  // registered host memory. Unregistering makes copies queued on the range that have not
  // started fail when they run, as for freed memory (copies already running are not waited
  // for: unregister only once the work using the range is done).
  absl::Status RegisterDeviceMemory(DevicePtr base, size_t bytes) override;
  absl::Status UnregisterDeviceMemory(DevicePtr base) override;

  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() override;
  absl::StatusOr<std::unique_ptr<Event>> CreateEvent() override;

  // Waits for the work enqueued on every stream so far; returns the first pending error of
  // any stream without clearing it (Stream::Synchronize does that).
  absl::Status Synchronize() override;

  // The host memory behind [ptr, ptr+bytes), or nullptr if that range is not inside one live
  // allocation (or registered range). The result stays valid until that allocation is freed.
  void* Resolve(DevicePtr ptr, size_t bytes) const;

  // Bytes of device memory allocated now (registered memory not included).
  size_t bytes_in_use() const;

  // Arms `fault` (see DeviceFault); ClearFaults disarms every fault.
  void InjectFault(const DeviceFault& fault);
  void ClearFaults();
  // Arms `fault` in the next device EmulatedDevice::Create makes in this process, for tests
  // whose device is created by the code under test (Engine::Open creates its own), so that
  // the very first calls can fail. Faults armed this way are handed to one device only.
  static void InjectFaultIntoNextDevice(const DeviceFault& fault);

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
  // An allocation or registered range overlapping [start, start+bytes), or null.
  std::shared_ptr<Allocation> FirstOverlapLocked(uint64_t start, size_t bytes) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(memory_mu_);

  // Blocks the caller until `bytes` have passed through `link` at the configured bandwidth,
  // sharing the link with every other caller; returns at once when unthrottled. `copy` is
  // run (without locks held) after the reservation, before the wait.
  template <typename CopyFn>
  void ThrottledCopy(Link link, size_t bytes, CopyFn copy);

  void RegisterStream(EmulatedStream* stream);
  void UnregisterStream(EmulatedStream* stream);

  // The injected error for this call of `kind` (counting it), or OK. `call` names the CUDA
  // call as CudaDevice names it.
  absl::Status ClaimFault(DeviceFault::Kind kind, const std::string& call);
  struct ActiveFault {
    DeviceFault fault;
    uint64_t seen = 0;  // calls of its kind since it was injected
  };

  const double copy_gbps_;
  const size_t memory_limit_;

  mutable Mutex memory_mu_;
  // Base address → allocation (synthetic addresses) or registered device memory (host
  // addresses, Allocation::external()). Ordered, to find the allocation below an address.
  std::map<uint64_t, std::shared_ptr<Allocation>> allocations_ ABSL_GUARDED_BY(memory_mu_);
  uint64_t next_address_ ABSL_GUARDED_BY(memory_mu_) = kAddressBase;
  size_t bytes_in_use_ ABSL_GUARDED_BY(memory_mu_) = 0;
  // Pinned host buffer → size.
  // A pinned buffer: its size, and its mapping when it is one (IoMemory, for buffers of
  // kHugePinnedBytes or more) rather than posix_memalign memory.
  struct Pinned {
    size_t bytes = 0;
    IoMemory mapping;
  };
  absl::flat_hash_map<void*, Pinned> pinned_ ABSL_GUARDED_BY(memory_mu_);
  // Registered host range start → size.
  std::map<uintptr_t, size_t> registered_ ABSL_GUARDED_BY(memory_mu_);

  // Per link direction: the time until which it is busy with copies already admitted.
  Mutex link_mu_;
  absl::Time link_busy_until_[2] ABSL_GUARDED_BY(link_mu_);

  Mutex fault_mu_;  // a leaf
  std::vector<ActiveFault> faults_ ABSL_GUARDED_BY(fault_mu_);
  // Lets calls that have no fault to claim skip fault_mu_.
  std::atomic<bool> faults_armed_{false};

  // CUDA's context lock, as far as callers can see it: Free holds it while it synchronizes
  // the device (cudaFree does both), and every stream call passes through it. So code that
  // makes a stream callback wait for a lock that another thread holds around a device call
  // deadlocks here as it does on a GPU (engine/completion_queue.h has the case).
  Mutex api_mu_;

  // Live streams, for Device::Synchronize. Held (shared) while draining them, so a stream
  // cannot finish destruction while the device waits on it.
  Mutex streams_mu_;
  absl::flat_hash_set<EmulatedStream*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace kvtier

#endif  // KVTIER_DEVICE_EMULATED_DEVICE_H_
