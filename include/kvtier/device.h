// kvtier/device.h — the accelerator kvtier moves KV bytes to and from.
//
// A Device owns device memory, pinned host memory, streams and events. Two implementations
// exist: CUDA (real GPU) and Emulated (device memory in a separate host arena, copy engines
// on worker threads with an optional bandwidth limit to model PCIe, kernels run as their CPU
// reference in stream order). The engine, tests, demo and benchmarks run unchanged on either.
//
// Semantics follow CUDA's:
//  * Work enqueued on one Stream runs in order; different streams run concurrently.
//  * Event::Record captures the work enqueued on the stream so far; Stream::Wait(event)
//    makes later work on that stream wait for it without blocking the host. An event that
//    was never recorded counts as complete.
//  * Enqueue calls return at once; errors in arguments are returned immediately, errors
//    during execution surface from Synchronize / Query of a later event.
//
// Device memory is named by DevicePtr, an opaque address that host code cannot dereference.
// On the emulated device its numeric value is not a host address at all, so a mix-up of
// host and device pointers fails loudly instead of corrupting memory. The exception is memory
// the caller registered (RegisterDeviceMemory): an inference engine's own KV pool, which on
// the emulated device is host memory the caller owns, named by its host address.
//
// Thread safety: Device, Stream and Event are safe to use from several threads.

#ifndef KVTIER_DEVICE_H_
#define KVTIER_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvtier {

// An address in device memory. Arithmetic is allowed; dereferencing is not.
class DevicePtr {
 public:
  constexpr DevicePtr() = default;
  // Wraps a raw device address, e.g. a CUDA pointer owned by an inference engine.
  static constexpr DevicePtr FromAddress(uint64_t address) { return DevicePtr(address); }

  constexpr uint64_t address() const { return address_; }
  constexpr bool is_null() const { return address_ == 0; }
  constexpr DevicePtr operator+(uint64_t offset) const { return DevicePtr(address_ + offset); }
  friend constexpr bool operator==(DevicePtr a, DevicePtr b) = default;

 private:
  constexpr explicit DevicePtr(uint64_t address) : address_(address) {}
  uint64_t address_ = 0;
};

enum class DeviceKind { kEmulated, kCuda };
// "emulated", "cuda"; "unknown" for a value outside the enum.
const char* DeviceKindName(DeviceKind kind);
// The inverse of DeviceKindName; InvalidArgument naming the accepted names otherwise.
absl::StatusOr<DeviceKind> ParseDeviceKind(absl::string_view name);

// Which device Device::Create picks.
enum class DeviceChoice {
  kAuto,      // CUDA if a working driver and device exist, else emulated (logged once).
  kCuda,      // CUDA or an error saying why not.
  kEmulated,  // always the emulated device.
};
// "auto", "cuda", "emulated"; "unknown" for a value outside the enum.
const char* DeviceChoiceName(DeviceChoice choice);
// The inverse of DeviceChoiceName; InvalidArgument naming the accepted names otherwise
// ("unknown device 'tpu' (expected auto, cuda or emulated)").
absl::StatusOr<DeviceChoice> ParseDeviceChoice(absl::string_view name);

struct DeviceOptions {
  DeviceChoice choice = DeviceChoice::kAuto;
  int cuda_ordinal = 0;
  // Emulated device only: bandwidth of each copy direction (host→device, device→host) in
  // GB/s (1e9 bytes/s); 0 means unthrottled. Streams share a direction's bandwidth, as
  // they share a PCIe link. Device→device copies are not throttled.
  double emulated_copy_gbps = 0.0;
  // Emulated device only: upper bound on device memory, in bytes (0 = no limit).
  size_t emulated_memory_limit = 0;

  absl::Status Validate() const;
};

// An event marks a point in a stream's work.
class Event {
 public:
  virtual ~Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // True when all work captured by the last Record has completed (or it was never recorded).
  virtual absl::StatusOr<bool> Query() = 0;
  // Blocks the calling host thread until the captured work completes. Returns the first
  // error raised by that work, if any.
  virtual absl::Status Synchronize() = 0;

 protected:
  Event() = default;
};

// One host↔device or device↔device copy inside a batch.
struct CopyOp {
  enum class Kind { kHostToDevice, kDeviceToHost, kDeviceToDevice };
  Kind kind;
  // Exactly one of each pair is used, according to kind.
  const void* src_host = nullptr;
  DevicePtr src_device;
  void* dst_host = nullptr;
  DevicePtr dst_device;
  size_t bytes = 0;
};
// "H2D", "D2H", "D2D"; "unknown" for a value outside the enum.
const char* CopyKindName(CopyOp::Kind kind);
// The inverse of CopyKindName; InvalidArgument naming the accepted names otherwise.
absl::StatusOr<CopyOp::Kind> ParseCopyKind(absl::string_view name);

// A kernel with a CPU reference. Kernels live in kernels/; the Device runs `cpu` on the
// emulated device (in stream order, with `resolve` mapping DevicePtr to host addresses) and
// `cuda` on a CUDA device (with the native cudaStream_t as `void*`).
struct KernelLaunch {
  // Maps a device range to host memory; fails with a null result for foreign ranges.
  using Resolver = absl::AnyInvocable<void*(DevicePtr, size_t) const>;
  const char* name = "";
  absl::AnyInvocable<absl::Status(const Resolver& resolve)> cpu;
  absl::AnyInvocable<absl::Status(void* cuda_stream)> cuda;
  // Bytes the kernel reads from / writes to pinned host memory across the bus (a zero-copy
  // kernel). The emulated device charges them to its host→device / device→host link, so an
  // emulated zero-copy transfer costs what a DMA copy of the same bytes costs.
  size_t host_bytes_read = 0;
  size_t host_bytes_written = 0;
};

// An ordered queue of device work.
class Stream {
 public:
  virtual ~Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Enqueue copies. REQUIRES: the ranges stay valid until the work completes; host ranges
  // should be pinned (AllocatePinned) for true asynchrony on CUDA.
  virtual absl::Status CopyToDevice(DevicePtr dst, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* dst, DevicePtr src, size_t bytes) = 0;
  virtual absl::Status CopyOnDevice(DevicePtr dst, DevicePtr src, size_t bytes) = 0;
  // Enqueues many copies at once (one call, one lock, one submission where the device
  // supports it). Validates every op before enqueueing any: all or nothing.
  virtual absl::Status CopyBatch(absl::Span<const CopyOp> ops) = 0;
  // Enqueues a kernel.
  virtual absl::Status Launch(KernelLaunch kernel) = 0;
  // Enqueues a host function, run once the work before it completes. It must not call
  // back into the Device (as with cudaLaunchHostFunc).
  virtual absl::Status AddCallback(absl::AnyInvocable<void()> fn) = 0;

  virtual absl::Status Record(Event& event) = 0;
  // Later work on this stream waits for `event`'s captured work; the host does not block.
  virtual absl::Status Wait(Event& event) = 0;
  // Blocks the host until all enqueued work completes; returns the first execution error.
  virtual absl::Status Synchronize() = 0;

  // The native handle (cudaStream_t) on CUDA; nullptr on the emulated device.
  virtual void* native_handle() const = 0;

 protected:
  Stream() = default;
};

class Device {
 public:
  // Picks and opens a device per `options` (see DeviceChoice).
  static absl::StatusOr<std::unique_ptr<Device>> Create(const DeviceOptions& options);

  virtual ~Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  virtual DeviceKind kind() const = 0;
  // Human-readable, e.g. "NVIDIA H100 80GB HBM3 (cuda:0)" or "emulated (copy 16.0 GB/s)".
  virtual std::string name() const = 0;

  // Device memory, 256-byte aligned. Free of a pointer that Allocate did not return is an
  // InvalidArgument error.
  virtual absl::StatusOr<DevicePtr> Allocate(size_t bytes) = 0;
  virtual absl::Status Free(DevicePtr ptr) = 0;
  // True if [ptr, ptr+bytes) lies inside one live allocation of this device, or inside one
  // range registered with RegisterDeviceMemory.
  virtual bool Contains(DevicePtr ptr, size_t bytes) const = 0;

  // Device memory this device did not allocate (an inference engine's KV pool: a torch
  // tensor's data_ptr(), cudaMalloc'd by its allocator) becomes this device's memory for
  // kvtier: Contains accepts ranges inside [base, base+bytes), and copies and kernels read
  // and write it in place. kvtier never frees it (Free refuses it).
  //   CUDA: the first and the last byte must be device (or managed) memory of this device's
  //   GPU, as cudaPointerGetAttributes reports it; host memory or another GPU's memory is
  //   InvalidArgument saying so.
  //   Emulated: its device memory is host memory, so registered "device memory" is host
  //   memory the caller owns, named by its own address:
  //   RegisterDeviceMemory(DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(p)), bytes).
  //   The device cannot check that such memory exists: the caller vouches for it.
  // InvalidArgument for a null base, zero bytes, a range that wraps around, or one that
  // overlaps an allocation or another registered range (pinned or registered host memory
  // too, on the emulated device); AlreadyExists when `base` is registered already.
  // REQUIRES: the memory stays valid until UnregisterDeviceMemory, and no work of this
  // device uses the range when it is unregistered (Engine::UnregisterDeviceMemory checks
  // the engine's own transfers).
  virtual absl::Status RegisterDeviceMemory(DevicePtr base, size_t bytes) = 0;
  // Forgets a registered range; `base` must be what was registered. NotFound otherwise.
  virtual absl::Status UnregisterDeviceMemory(DevicePtr base) = 0;

  // Page-locked host memory, 4096-byte aligned (usable for O_DIRECT and io_uring buffers).
  virtual absl::StatusOr<void*> AllocatePinned(size_t bytes) = 0;
  virtual absl::Status FreePinned(void* ptr) = 0;

  // Page-locks host memory this device did not allocate (cudaHostRegister), e.g. buffers
  // that io_uring also registers, so copies from and to it are true DMA and kernels may
  // read it directly. [ptr, ptr+bytes) must not overlap a registered or pinned range.
  // Unregister before freeing the memory.
  virtual absl::Status RegisterHostMemory(void* ptr, size_t bytes) = 0;
  virtual absl::Status UnregisterHostMemory(void* ptr) = 0;

  virtual absl::StatusOr<std::unique_ptr<Stream>> CreateStream() = 0;
  virtual absl::StatusOr<std::unique_ptr<Event>> CreateEvent() = 0;

  // Blocks until all work on all streams of this device completes.
  virtual absl::Status Synchronize() = 0;

 protected:
  Device() = default;
};

}  // namespace kvtier

#endif  // KVTIER_DEVICE_H_
