// device/cuda_device.cc — the CUDA Device, Stream and Event (see cuda_device.h).
//
// Host C++ over the CUDA runtime API only; kernels live in .cu files. Every runtime call is
// checked and its error turned into a Status naming the call and its key arguments; the
// thread's last-error slot is cleared afterwards so a later kernel launch check does not
// report a stale error.

#include "device/cuda_device.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "common/io_memory.h"
#include "common/log.h"
#include "common/mutex.h"

namespace kvtier {
namespace {

constexpr size_t kPinnedAlignment = 4096;
// Pinned buffers of this size or more (the host tier's arena) are IoMemory, registered.
constexpr size_t kHugePinnedBytes = size_t{2} << 20;

absl::StatusCode CodeFor(cudaError_t error) {
  switch (error) {
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidMemcpyDirection:
    case cudaErrorInvalidResourceHandle:
    case cudaErrorInvalidDevice:
      return absl::StatusCode::kInvalidArgument;
    case cudaErrorMemoryAllocation:
      return absl::StatusCode::kResourceExhausted;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorDevicesUnavailable:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

// OK for cudaSuccess; otherwise "<call>: <CUDA's message>" with a code that fits the error.
absl::Status CudaStatus(cudaError_t error, std::string_view call) {
  if (error == cudaSuccess) return absl::OkStatus();
  // Clears the thread's last error (a no-op for sticky errors, which stay on the context).
  (void)cudaGetLastError();
  return absl::Status(CodeFor(error),
                      absl::StrFormat("%s: %s", call, cudaGetErrorString(error)));
}

absl::Status SetDevice(int ordinal) {
  return CudaStatus(cudaSetDevice(ordinal), absl::StrFormat("cudaSetDevice(%d)", ordinal));
}

void* DeviceAddress(DevicePtr ptr) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(ptr.address()));
}

// Whether [address, address+bytes) lies inside one of `ranges` (start → size, disjoint).
bool InRange(const std::map<uint64_t, size_t>& ranges, uint64_t address, size_t bytes) {
  auto it = ranges.upper_bound(address);
  if (it == ranges.begin()) return false;
  --it;
  const uint64_t offset = address - it->first;
  return offset < it->second && bytes <= it->second - offset;
}

// The start of a range in `ranges` (disjoint) that overlaps [start, start+bytes), if any.
// REQUIRES: start + bytes does not wrap.
std::optional<uint64_t> FirstOverlap(const std::map<uint64_t, size_t>& ranges, uint64_t start,
                                     size_t bytes) {
  // Only the last range starting before the end can overlap: earlier ones end before it starts.
  auto it = ranges.lower_bound(start + bytes);
  if (it == ranges.begin()) return std::nullopt;
  --it;
  if (it->first + it->second > start) return it->first;
  return std::nullopt;
}

class CudaEvent final : public Event {
 public:
  CudaEvent(int ordinal, cudaEvent_t event) : ordinal_(ordinal), event_(event) {}
  ~CudaEvent() override {
    (void)cudaSetDevice(ordinal_);
    absl::Status status = CudaStatus(cudaEventDestroy(event_), "cudaEventDestroy");
    if (!status.ok()) KVTIER_LOG(kError, "%s", status.ToString());
  }

  absl::StatusOr<bool> Query() override {
    const cudaError_t error = cudaEventQuery(event_);
    if (error == cudaSuccess) return true;
    if (error == cudaErrorNotReady) return false;
    return CudaStatus(error, "cudaEventQuery");
  }

  absl::Status Synchronize() override {
    return CudaStatus(cudaEventSynchronize(event_), "cudaEventSynchronize");
  }

  cudaEvent_t handle() const { return event_; }

 private:
  const int ordinal_;
  const cudaEvent_t event_;
};

class CudaStream final : public Stream {
 public:
  CudaStream(int ordinal, cudaStream_t stream) : ordinal_(ordinal), stream_(stream) {}

  // Lets queued work finish first, as the emulated stream does.
  ~CudaStream() override {
    (void)cudaSetDevice(ordinal_);
    absl::Status status = CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    if (!status.ok()) KVTIER_LOG(kError, "destroying stream: %s", status.ToString());
    status = CudaStatus(cudaStreamDestroy(stream_), "cudaStreamDestroy");
    if (!status.ok()) KVTIER_LOG(kError, "%s", status.ToString());
  }

  absl::Status CopyToDevice(DevicePtr dst, const void* src, size_t bytes) override {
    return CopyBatch({CopyOp{.kind = CopyOp::Kind::kHostToDevice,
                             .src_host = src,
                             .dst_device = dst,
                             .bytes = bytes}});
  }

  absl::Status CopyToHost(void* dst, DevicePtr src, size_t bytes) override {
    return CopyBatch({CopyOp{.kind = CopyOp::Kind::kDeviceToHost,
                             .src_device = src,
                             .dst_host = dst,
                             .bytes = bytes}});
  }

  absl::Status CopyOnDevice(DevicePtr dst, DevicePtr src, size_t bytes) override {
    return CopyBatch({CopyOp{.kind = CopyOp::Kind::kDeviceToDevice,
                             .src_device = src,
                             .dst_device = dst,
                             .bytes = bytes}});
  }

  // Arguments are validated for every op before any is enqueued. Two or more copies go to
  // the driver as one cudaMemcpyBatchAsync (CUDA ≥ 12.8: one call instead of one per copy,
  // which is what makes many small per-layer copies affordable); a runtime without it, or
  // a driver that rejects the batch as unsupported, gets a loop of cudaMemcpyAsync. An op
  // that the runtime itself rejects midway in the loop leaves the ops before it enqueued.
  absl::Status CopyBatch(absl::Span<const CopyOp> ops) override {
    for (size_t i = 0; i < ops.size(); ++i) {
      if (absl::Status status = Validate(ops[i], i, ops.size() > 1); !status.ok()) return status;
    }
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
#if CUDART_VERSION >= 12080
    if (ops.size() >= 2 && batch_supported_.load(std::memory_order_relaxed)) {
      std::vector<void*> dsts;
      std::vector<const void*> srcs;
      std::vector<size_t> sizes;
      dsts.reserve(ops.size());
      srcs.reserve(ops.size());
      sizes.reserve(ops.size());
      for (const CopyOp& op : ops) {
        if (op.bytes == 0) continue;
        dsts.push_back(op.kind == CopyOp::Kind::kDeviceToHost ? op.dst_host
                                                              : DeviceAddress(op.dst_device));
        srcs.push_back(op.kind == CopyOp::Kind::kHostToDevice
                           ? op.src_host
                           : static_cast<const void*>(DeviceAddress(op.src_device)));
        sizes.push_back(op.bytes);
      }
      if (dsts.empty()) return absl::OkStatus();
      cudaMemcpyAttributes attributes = {};
      attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;  // sources live in stream order
      size_t attribute_index = 0;
#if CUDART_VERSION >= 13000
      const cudaError_t error =
          cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), dsts.size(), &attributes,
                               &attribute_index, 1, stream_);
#else
      size_t fail_index = 0;
      const cudaError_t error = cudaMemcpyBatchAsync(
          dsts.data(), const_cast<void**>(srcs.data()), sizes.data(), dsts.size(), &attributes,
          &attribute_index, 1, &fail_index, stream_);
#endif
      if (error == cudaSuccess) return absl::OkStatus();
      if (error != cudaErrorNotSupported && error != cudaErrorInvalidValue) {
        return CudaStatus(error, absl::StrFormat("cudaMemcpyBatchAsync(%d copies)", dsts.size()));
      }
      // Clear the error and fall back for good: this driver cannot batch.
      (void)cudaGetLastError();
      batch_supported_.store(false, std::memory_order_relaxed);
      KVTIER_LOG_ONCE(kWarning, "cudaMemcpyBatchAsync unavailable (%s); copying op by op",
                      cudaGetErrorString(error));
    }
#endif
    for (const CopyOp& op : ops) {
      if (op.bytes == 0) continue;
      cudaError_t error = cudaSuccess;
      switch (op.kind) {
        case CopyOp::Kind::kHostToDevice:
          error = cudaMemcpyAsync(DeviceAddress(op.dst_device), op.src_host, op.bytes,
                                  cudaMemcpyHostToDevice, stream_);
          break;
        case CopyOp::Kind::kDeviceToHost:
          error = cudaMemcpyAsync(op.dst_host, DeviceAddress(op.src_device), op.bytes,
                                  cudaMemcpyDeviceToHost, stream_);
          break;
        case CopyOp::Kind::kDeviceToDevice:
          error = cudaMemcpyAsync(DeviceAddress(op.dst_device), DeviceAddress(op.src_device),
                                  op.bytes, cudaMemcpyDeviceToDevice, stream_);
          break;
      }
      if (error != cudaSuccess) {
        return CudaStatus(error, absl::StrFormat("cudaMemcpyAsync(%s, %d bytes)",
                                                 CopyKindName(op.kind), op.bytes));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Launch(KernelLaunch kernel) override {
    const char* name = kernel.name != nullptr ? kernel.name : "";
    if (!kernel.cuda) {
      return absl::UnimplementedError(
          absl::StrFormat("Launch: kernel '%s' has no CUDA implementation", name));
    }
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    absl::Status status = kernel.cuda(stream_);
    if (status.ok()) return status;
    return absl::Status(status.code(), absl::StrFormat("kernel '%s': %s", name, status.message()));
  }

  absl::Status AddCallback(absl::AnyInvocable<void()> fn) override {
    if (!fn) return absl::InvalidArgumentError("AddCallback: empty function");
    auto* heap_fn = new absl::AnyInvocable<void()>(std::move(fn));
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) {
      delete heap_fn;
      return status;
    }
    absl::Status status =
        CudaStatus(cudaLaunchHostFunc(stream_, &RunHostFunction, heap_fn), "cudaLaunchHostFunc");
    if (!status.ok()) delete heap_fn;
    return status;
  }

  absl::Status Record(Event& event) override {
    auto* cuda_event = dynamic_cast<CudaEvent*>(&event);
    if (cuda_event == nullptr) {
      return absl::InvalidArgumentError("Record: the event was not created by a CUDA device");
    }
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    return CudaStatus(cudaEventRecord(cuda_event->handle(), stream_), "cudaEventRecord");
  }

  absl::Status Wait(Event& event) override {
    auto* cuda_event = dynamic_cast<CudaEvent*>(&event);
    if (cuda_event == nullptr) {
      return absl::InvalidArgumentError("Wait: the event was not created by a CUDA device");
    }
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    return CudaStatus(cudaStreamWaitEvent(stream_, cuda_event->handle(), 0),
                      "cudaStreamWaitEvent");
  }

  absl::Status Synchronize() override {
    return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void* native_handle() const override { return stream_; }

 private:
  // cudaLaunchHostFunc trampoline: runs and frees the heap-allocated function. (If the
  // context hits a sticky error the runtime may never call it, and the function leaks.)
  static void RunHostFunction(void* arg) {
    std::unique_ptr<absl::AnyInvocable<void()>> fn(static_cast<absl::AnyInvocable<void()>*>(arg));
    (*fn)();
  }

  static absl::Status Validate(const CopyOp& op, size_t index, bool batch) {
    if (op.bytes == 0) return absl::OkStatus();
    const std::string where =
        batch ? absl::StrFormat("CopyBatch op %d (%s)", index, CopyKindName(op.kind))
              : absl::StrFormat("copy (%s)", CopyKindName(op.kind));
    auto null = [&where](const char* what) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %s is null", where, what));
    };
    switch (op.kind) {
      case CopyOp::Kind::kHostToDevice:
        if (op.src_host == nullptr) return null("source host pointer");
        if (op.dst_device.is_null()) return null("destination device pointer");
        return absl::OkStatus();
      case CopyOp::Kind::kDeviceToHost:
        if (op.src_device.is_null()) return null("source device pointer");
        if (op.dst_host == nullptr) return null("destination host pointer");
        return absl::OkStatus();
      case CopyOp::Kind::kDeviceToDevice:
        if (op.src_device.is_null()) return null("source device pointer");
        if (op.dst_device.is_null()) return null("destination device pointer");
        return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: unknown copy kind %d", where, static_cast<int>(op.kind)));
  }

  const int ordinal_;
  const cudaStream_t stream_;
  // False once the driver has refused a batched copy.
  std::atomic<bool> batch_supported_{true};
};

class CudaDevice final : public Device {
 public:
  static absl::StatusOr<std::unique_ptr<Device>> Create(const DeviceOptions& options) {
    absl::StatusOr<int> count = CudaDeviceCount();
    if (!count.ok()) return count.status();
    if (*count == 0) {
      return absl::FailedPreconditionError("no CUDA device: cudaGetDeviceCount returned 0");
    }
    const int ordinal = options.cuda_ordinal;
    if (ordinal >= *count) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CUDA device ordinal %d does not exist (%d devices present)", ordinal, *count));
    }
    if (absl::Status status = SetDevice(ordinal); !status.ok()) return status;
    cudaDeviceProp properties;
    if (absl::Status status = CudaStatus(cudaGetDeviceProperties(&properties, ordinal),
                                         "cudaGetDeviceProperties");
        !status.ok()) {
      return status;
    }
    return std::unique_ptr<Device>(
        new CudaDevice(ordinal, absl::StrFormat("%s (cuda:%d)", properties.name, ordinal)));
  }

  // REQUIRES: every Stream and Event of this device has been destroyed.
  ~CudaDevice() override {
    (void)cudaSetDevice(ordinal_);
    MutexLock lock(&mu_);
    if (!allocations_.empty() || !pinned_.empty()) {
      KVTIER_LOG(kWarning, "%s destroyed with %d device allocations and %d pinned buffers live",
                 name_, allocations_.size(), pinned_.size());
    }
    for (const auto& [address, bytes] : allocations_) {
      (void)cudaFree(reinterpret_cast<void*>(static_cast<uintptr_t>(address)));
    }
    for (auto& [ptr, pinned] : pinned_) (void)ReleasePinned(ptr, pinned);
    pinned_.clear();
    for (const auto& [start, bytes] : registered_) {
      (void)cudaHostUnregister(reinterpret_cast<void*>(start));
    }
  }

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return name_; }

  absl::StatusOr<DevicePtr> Allocate(size_t bytes) override {
    if (bytes == 0) return absl::InvalidArgumentError("Allocate: zero bytes requested");
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    void* ptr = nullptr;
    if (absl::Status status =
            CudaStatus(cudaMalloc(&ptr, bytes), absl::StrFormat("cudaMalloc(%d bytes)", bytes));
        !status.ok()) {
      return status;
    }
    const auto address = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ptr));
    MutexLock lock(&mu_);
    allocations_.emplace(address, bytes);
    return DevicePtr::FromAddress(address);
  }

  absl::Status Free(DevicePtr ptr) override {
    if (ptr.is_null()) return absl::OkStatus();
    {
      MutexLock lock(&mu_);
      if (allocations_.erase(ptr.address()) == 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "Free: 0x%x is not the start of a live allocation of %s%s", ptr.address(), name_,
            device_registered_.contains(ptr.address())
                ? " (it is registered device memory, which kvtier never frees: "
                  "UnregisterDeviceMemory forgets it)"
                : ""));
      }
    }
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    return CudaStatus(cudaFree(DeviceAddress(ptr)),
                      absl::StrFormat("cudaFree(0x%x)", ptr.address()));
  }

  bool Contains(DevicePtr ptr, size_t bytes) const override {
    MutexLock lock(&mu_);
    return InRange(allocations_, ptr.address(), bytes) ||
           InRange(device_registered_, ptr.address(), bytes);
  }

  absl::Status RegisterDeviceMemory(DevicePtr base, size_t bytes) override {
    const uint64_t start = base.address();
    if (base.is_null()) return absl::InvalidArgumentError("RegisterDeviceMemory: null pointer");
    if (bytes == 0) return absl::InvalidArgumentError("RegisterDeviceMemory: zero bytes");
    if (bytes > UINT64_MAX - start) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterDeviceMemory: [0x%x, +%d bytes) wraps around the address space", start, bytes));
    }
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    // The first and the last byte: a range that starts in device memory but runs off its end
    // into host memory, unmapped memory or another GPU's memory is refused.
    for (const uint64_t address : {start, start + (bytes - 1)}) {
      cudaPointerAttributes attributes = {};
      if (absl::Status status = CudaStatus(
              cudaPointerGetAttributes(&attributes, DeviceAddress(DevicePtr::FromAddress(address))),
              absl::StrFormat("RegisterDeviceMemory: cudaPointerGetAttributes(0x%x)", address));
          !status.ok()) {
        return status;
      }
      const char* not_device = nullptr;
      switch (attributes.type) {
        case cudaMemoryTypeDevice:
        case cudaMemoryTypeManaged:
          break;
        case cudaMemoryTypeHost:
          not_device = "is host memory (page-locked); RegisterHostMemory is for host memory";
          break;
        default:  // cudaMemoryTypeUnregistered
          not_device = "is not CUDA memory (pageable host memory, or not mapped at all)";
          break;
      }
      if (not_device != nullptr) {
        return absl::InvalidArgumentError(
            absl::StrFormat("RegisterDeviceMemory: [0x%x, +%d bytes): byte 0x%x %s", start, bytes,
                            address, not_device));
      }
      if (attributes.device != ordinal_) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "RegisterDeviceMemory: [0x%x, +%d bytes): byte 0x%x belongs to device %d, not to %s",
            start, bytes, address, attributes.device, name_));
      }
    }
    MutexLock lock(&mu_);
    if (auto it = device_registered_.find(start); it != device_registered_.end()) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "RegisterDeviceMemory: 0x%x is registered already (as %d bytes)", start, it->second));
    }
    for (const std::map<uint64_t, size_t>* ranges : {&allocations_, &device_registered_}) {
      if (std::optional<uint64_t> other = FirstOverlap(*ranges, start, bytes)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "RegisterDeviceMemory: [0x%x, +%d bytes) overlaps %s at 0x%x", start, bytes,
            ranges == &allocations_ ? "an allocation of this device" : "registered device memory",
            *other));
      }
    }
    device_registered_.emplace(start, bytes);
    return absl::OkStatus();
  }

  absl::Status UnregisterDeviceMemory(DevicePtr base) override {
    MutexLock lock(&mu_);
    if (device_registered_.erase(base.address()) == 0) {
      return absl::NotFoundError(absl::StrFormat(
          "UnregisterDeviceMemory: 0x%x is not the start of device memory registered with %s%s",
          base.address(), name_,
          allocations_.contains(base.address()) ? " (it is an allocation: Free it)" : ""));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<void*> AllocatePinned(size_t bytes) override {
    if (bytes == 0) return absl::InvalidArgumentError("AllocatePinned: zero bytes requested");
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    const size_t rounded = (bytes + kPinnedAlignment - 1) / kPinnedAlignment * kPinnedAlignment;
    if (bytes >= kHugePinnedBytes) {
      // The host tier's arena: IoMemory (2 MiB-aligned, in huge pages where the kernel has
      // them) page-locked by registration, so a direct-I/O read into a host slot is a segment
      // or two at the device, not one per 4 KiB page (cudaHostAlloc's pages are the
      // driver's choice). The same memory as the emulated device's.
      // Where that fails (no memory to map, or the driver will not lock it), cudaHostAlloc
      // below, as before: slower direct I/O into the slots, nothing else lost.
      absl::StatusOr<IoMemory> mapping = IoMemory::Allocate(bytes);
      absl::Status status = mapping.status();
      if (status.ok()) {
        status = CudaStatus(cudaHostRegister(mapping->data(), rounded, cudaHostRegisterPortable),
                            absl::StrFormat("cudaHostRegister(%d bytes)", rounded));
      }
      if (status.ok()) {
        void* ptr = mapping->data();
        MutexLock lock(&mu_);
        pinned_.emplace(ptr, Pinned{true, *std::move(mapping)});
        return ptr;
      }
      KVTIER_LOG(kWarning,
                 "%s: pinned host memory of %d bytes in huge pages failed (%s); using "
                 "cudaHostAlloc",
                 name_, bytes, status.ToString());
    }
    void* ptr = nullptr;
    if (absl::Status status = CudaStatus(cudaHostAlloc(&ptr, rounded, cudaHostAllocPortable),
                                         absl::StrFormat("cudaHostAlloc(%d bytes)", rounded));
        !status.ok()) {
      return status;
    }
    bool registered = false;
    if (reinterpret_cast<uintptr_t>(ptr) % kPinnedAlignment != 0) {
      // The runtime promises page alignment only implicitly; O_DIRECT needs it, so fall back
      // to aligned host memory that is page-locked by registration.
      (void)cudaFreeHost(ptr);
      ptr = nullptr;
      if (posix_memalign(&ptr, kPinnedAlignment, rounded) != 0) {
        return absl::ResourceExhaustedError(
            absl::StrFormat("AllocatePinned: %d bytes of host memory are not available", bytes));
      }
      if (absl::Status status =
              CudaStatus(cudaHostRegister(ptr, rounded, cudaHostRegisterPortable),
                         absl::StrFormat("cudaHostRegister(%d bytes)", rounded));
          !status.ok()) {
        std::free(ptr);
        return status;
      }
      registered = true;
    }
    MutexLock lock(&mu_);
    pinned_.emplace(ptr, Pinned{registered, IoMemory()});
    return ptr;
  }

  absl::Status FreePinned(void* ptr) override {
    if (ptr == nullptr) return absl::OkStatus();
    Pinned pinned;
    {
      MutexLock lock(&mu_);
      auto it = pinned_.find(ptr);
      if (it == pinned_.end()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "FreePinned: %p was not returned by AllocatePinned of %s (or was freed)", ptr,
            name_));
      }
      pinned = std::move(it->second);
      pinned_.erase(it);
    }
    return ReleasePinned(ptr, pinned);
  }

  absl::Status RegisterHostMemory(void* ptr, size_t bytes) override {
    if (ptr == nullptr) return absl::InvalidArgumentError("RegisterHostMemory: null pointer");
    if (bytes == 0) return absl::InvalidArgumentError("RegisterHostMemory: zero bytes");
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    const auto start = reinterpret_cast<uintptr_t>(ptr);
    {
      MutexLock lock(&mu_);
      auto it = registered_.upper_bound(start);
      if (it != registered_.begin()) {
        auto prev = std::prev(it);
        if (prev->first + prev->second > start) it = prev;
      }
      if (it != registered_.end() && it->first < start + bytes) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "RegisterHostMemory: [%p, +%d bytes) overlaps registered host memory at 0x%x", ptr,
            bytes, it->first));
      }
    }
    // Default flags: on a unified-address system the range is portable and mapped, so
    // zero-copy kernels may read it at its host address.
    if (absl::Status status =
            CudaStatus(cudaHostRegister(ptr, bytes, cudaHostRegisterDefault),
                       absl::StrFormat("cudaHostRegister(%p, %d bytes)", ptr, bytes));
        !status.ok()) {
      return status;
    }
    MutexLock lock(&mu_);
    registered_.emplace(start, bytes);
    return absl::OkStatus();
  }

  absl::Status UnregisterHostMemory(void* ptr) override {
    {
      MutexLock lock(&mu_);
      if (registered_.erase(reinterpret_cast<uintptr_t>(ptr)) == 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "UnregisterHostMemory: %p is not the start of host memory registered with %s", ptr,
            name_));
      }
    }
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    return CudaStatus(cudaHostUnregister(ptr), absl::StrFormat("cudaHostUnregister(%p)", ptr));
  }

  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() override {
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    cudaStream_t stream = nullptr;
    if (absl::Status status =
            CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                       "cudaStreamCreateWithFlags(cudaStreamNonBlocking)");
        !status.ok()) {
      return status;
    }
    return std::unique_ptr<Stream>(new CudaStream(ordinal_, stream));
  }

  absl::StatusOr<std::unique_ptr<Event>> CreateEvent() override {
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    cudaEvent_t event = nullptr;
    if (absl::Status status = CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                                         "cudaEventCreateWithFlags(cudaEventDisableTiming)");
        !status.ok()) {
      return status;
    }
    return std::unique_ptr<Event>(new CudaEvent(ordinal_, event));
  }

  absl::Status Synchronize() override {
    if (absl::Status status = SetDevice(ordinal_); !status.ok()) return status;
    return CudaStatus(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }

 private:
  // A pinned buffer: registered host memory (posix_memalign, or `mapping` when it is one), or
  // else from cudaHostAlloc.
  struct Pinned {
    bool registered = false;
    IoMemory mapping;
  };

  // Unlocks and frees `ptr`; a mapping is unmapped when `pinned` goes.
  static absl::Status ReleasePinned(void* ptr, Pinned& pinned) {
    if (!pinned.registered) return CudaStatus(cudaFreeHost(ptr), "cudaFreeHost");
    absl::Status status = CudaStatus(cudaHostUnregister(ptr), "cudaHostUnregister");
    if (pinned.mapping.data() == nullptr) {
      std::free(ptr);
    } else {
      pinned.mapping = IoMemory();
    }
    return status;
  }

  CudaDevice(int ordinal, std::string name) : ordinal_(ordinal), name_(std::move(name)) {}

  const int ordinal_;
  const std::string name_;
  mutable Mutex mu_;
  // Device address → size, of this device's live allocations.
  std::map<uint64_t, size_t> allocations_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<void*, Pinned> pinned_ ABSL_GUARDED_BY(mu_);
  // Host memory registered by RegisterHostMemory: start → size.
  std::map<uintptr_t, size_t> registered_ ABSL_GUARDED_BY(mu_);
  // Device memory registered by RegisterDeviceMemory (not ours to free): start → size.
  std::map<uint64_t, size_t> device_registered_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  if (absl::Status status = CudaStatus(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
      !status.ok()) {
    return status;
  }
  return count;
}

absl::StatusOr<std::unique_ptr<Device>> NewCudaDevice(const DeviceOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  return CudaDevice::Create(options);
}

}  // namespace kvtier
