// device/emulated_device.cc — the emulated Device: host-memory "device", worker-thread
// streams, CUDA-style events and a shared, bandwidth-limited link per copy direction.
//
// Streams are worker threads draining a queue of ops (run a closure, record an event, wait
// for an event). Events keep their state in a shared EventState so a Record or Wait queued
// on a stream stays valid even if the Event object is destroyed first, as in CUDA.
//
// Locks: EmulatedDevice::streams_mu_ → EmulatedStream::mu_ is the only nesting (Device::
// Synchronize drains streams while holding streams_mu_ shared). memory_mu_, link_mu_ and
// EventState::mu are leaves, and so is fault_mu_. No lock is held while a copy, kernel or
// callback runs.

#include "device/emulated_device.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"

namespace kvtier {

// One range of device memory: `size` bytes of host memory named by the address `base`.
// Either an allocation (host memory the device owns, at a synthetic address) or a range
// registered by RegisterDeviceMemory (host memory the caller owns, at its own address, which
// the device never frees).
class EmulatedDevice::Allocation {
 public:
  // An allocation of `host`, which the device owns.
  Allocation(uint64_t base, size_t size, std::byte* host)
      : base_(base), size_(size), host_(host), external_(false) {}
  // Registered memory: the caller's host memory at `base` itself.
  Allocation(uint64_t base, size_t size)
      : base_(base),
        size_(size),
        host_(reinterpret_cast<std::byte*>(static_cast<uintptr_t>(base))),
        external_(true) {}
  ~Allocation() {
    if (!external_) ::operator delete(host_, std::align_val_t(kAlignment));
  }
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;

  uint64_t base() const { return base_; }
  size_t size() const { return size_; }
  bool external() const { return external_; }
  // Host memory for the device address `address`, which must lie inside this allocation.
  std::byte* HostFor(uint64_t address) const { return host_ + (address - base_); }

 private:
  const uint64_t base_;
  const size_t size_;
  std::byte* const host_;
  const bool external_;
};

namespace {

uint64_t RoundUp(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

// Device addresses are limited to this many bytes above kAddressBase (a petabyte of
// address space per device lifetime; addresses are never reused).
constexpr uint64_t kAddressSpace = uint64_t{1} << 50;

// The shared state of one Event. Record numbers each capture; a capture is complete once
// the record op queued for it has run.
struct EventState {
  Mutex mu;
  // Number of the latest Record call; 0 = never recorded.
  uint64_t last_record_seq ABSL_GUARDED_BY(mu) = 0;
  // Captures recorded but not yet reached by their stream.
  absl::flat_hash_set<uint64_t> pending ABSL_GUARDED_BY(mu);
  // The stream's pending error when the highest-numbered completed capture ran.
  uint64_t status_seq ABSL_GUARDED_BY(mu) = 0;
  absl::Status status ABSL_GUARDED_BY(mu);

  // Blocks until capture `seq` has completed; returns the error it captured.
  absl::Status WaitFor(uint64_t seq) {
    MutexLock lock(&mu);
    auto done = [this, seq]() {
      mu.AssertHeld();
      return !pending.contains(seq);
    };
    mu.Await(done);
    return status_seq >= seq ? status : absl::OkStatus();
  }

  void Complete(uint64_t seq, absl::Status captured) {
    MutexLock lock(&mu);
    pending.erase(seq);
    if (seq >= status_seq) {
      status_seq = seq;
      status = std::move(captured);
    }
  }
};

class EmulatedEvent final : public Event {
 public:
  EmulatedEvent() : state_(std::make_shared<EventState>()) {}

  absl::StatusOr<bool> Query() override {
    MutexLock lock(&state_->mu);
    return !state_->pending.contains(state_->last_record_seq);
  }

  absl::Status Synchronize() override {
    uint64_t target;
    {
      MutexLock lock(&state_->mu);
      target = state_->last_record_seq;
    }
    if (target == 0) return absl::OkStatus();
    return state_->WaitFor(target);
  }

  const std::shared_ptr<EventState>& state() const { return state_; }

 private:
  std::shared_ptr<EventState> state_;
};

}  // namespace

template <typename CopyFn>
void EmulatedDevice::ThrottledCopy(Link link, size_t bytes, CopyFn copy) {
  if (copy_gbps_ <= 0 || bytes == 0) {  // nothing to wait for (not even a busy link)
    copy();
    return;
  }
  // Reserve this copy's slot on the link: it starts when the link frees up (or now) and
  // lasts bytes / bandwidth. Reservations are granted in arrival order, so streams sharing
  // a direction share its bandwidth instead of each getting all of it.
  absl::Time end;
  {
    MutexLock lock(&link_mu_);
    absl::Time& busy_until = link_busy_until_[static_cast<int>(link)];
    const absl::Time start = std::max(absl::Now(), busy_until);
    end = start + absl::Seconds(static_cast<double>(bytes) / (copy_gbps_ * 1e9));
    busy_until = end;
  }
  copy();
  // Sleep off the debt only once it is worth a sleep: a sleep costs ~50-100 us however short
  // it asks to be, which would cap many small copies far below the configured bandwidth.
  // The link's busy_until keeps the debt, so later copies start later and the average
  // bandwidth stays exact; a single copy may finish up to kMinSleep early.
  constexpr absl::Duration kMinSleep = absl::Microseconds(500);
  const absl::Duration left = end - absl::Now();
  if (left > kMinSleep) absl::SleepFor(left);
}

// A Stream: one worker thread running queued ops in order.
class EmulatedStream final : public Stream {
 public:
  explicit EmulatedStream(EmulatedDevice* device) : device_(device) {
    worker_ = std::thread([this] { WorkerLoop(); });
    device_->RegisterStream(this);
  }

  // Runs everything already queued, then stops the worker.
  ~EmulatedStream() override {
    device_->UnregisterStream(this);
    {
      MutexLock lock(&mu_);
      stopping_ = true;
    }
    worker_.join();
  }

  absl::Status CopyToDevice(DevicePtr dst, const void* src, size_t bytes) override {
    return EnqueueCopies("CopyToDevice", false, {CopyOp{.kind = CopyOp::Kind::kHostToDevice,
                                                 .src_host = src,
                                                 .dst_device = dst,
                                                 .bytes = bytes}});
  }

  absl::Status CopyToHost(void* dst, DevicePtr src, size_t bytes) override {
    return EnqueueCopies("CopyToHost", false, {CopyOp{.kind = CopyOp::Kind::kDeviceToHost,
                                               .src_device = src,
                                               .dst_host = dst,
                                               .bytes = bytes}});
  }

  absl::Status CopyOnDevice(DevicePtr dst, DevicePtr src, size_t bytes) override {
    return EnqueueCopies("CopyOnDevice", false, {CopyOp{.kind = CopyOp::Kind::kDeviceToDevice,
                                                 .src_device = src,
                                                 .dst_device = dst,
                                                 .bytes = bytes}});
  }

  absl::Status CopyBatch(absl::Span<const CopyOp> ops) override {
    return EnqueueCopies("CopyBatch", true, std::vector<CopyOp>(ops.begin(), ops.end()));
  }

  absl::Status Launch(KernelLaunch kernel) override {
    std::string name = kernel.name != nullptr ? kernel.name : "";
    if (!kernel.cpu) {
      return absl::UnimplementedError(
          absl::StrFormat("Launch: kernel '%s' has no CPU reference to run on the emulated device",
                          name));
    }
    if (absl::Status s = device_->ClaimFault(DeviceFault::Kind::kLaunch,
                                             absl::StrFormat("kernel '%s': kernel launch", name));
        !s.ok()) {
      return s;
    }
    EmulatedDevice* device = device_;
    Enqueue(Op{.run = [device, name = std::move(name), cpu = std::move(kernel.cpu),
                       host_read = kernel.host_bytes_read,
                       host_written = kernel.host_bytes_written]() mutable -> absl::Status {
      const KernelLaunch::Resolver resolve = [device](DevicePtr ptr, size_t bytes) -> void* {
        return device->Resolve(ptr, bytes);
      };
      absl::Status status;
      // Zero-copy host traffic occupies the links as copies do.
      device->ThrottledCopy(EmulatedDevice::Link::kHostToDevice, host_read, [&] {
        device->ThrottledCopy(EmulatedDevice::Link::kDeviceToHost, host_written,
                              [&] { status = cpu(resolve); });
      });
      if (status.ok()) return status;
      return absl::Status(status.code(),
                          absl::StrFormat("kernel '%s': %s", name, status.message()));
    }});
    return absl::OkStatus();
  }

  absl::Status AddCallback(absl::AnyInvocable<void()> fn) override {
    if (!fn) return absl::InvalidArgumentError("AddCallback: empty function");
    if (absl::Status s = device_->ClaimFault(DeviceFault::Kind::kCallback, "cudaLaunchHostFunc");
        !s.ok()) {
      return s;
    }
    Enqueue(Op{.run = [fn = std::move(fn)]() mutable {
      fn();
      return absl::OkStatus();
    }});
    return absl::OkStatus();
  }

  absl::Status Record(Event& event) override {
    auto* emulated = dynamic_cast<EmulatedEvent*>(&event);
    if (emulated == nullptr) {
      return absl::InvalidArgumentError("Record: the event was not created by an emulated device");
    }
    if (absl::Status s = device_->ClaimFault(DeviceFault::Kind::kEventRecord, "cudaEventRecord");
        !s.ok()) {
      return s;
    }
    const std::shared_ptr<EventState>& state = emulated->state();
    uint64_t seq;
    {
      MutexLock lock(&state->mu);
      seq = ++state->last_record_seq;
      state->pending.insert(seq);
    }
    Enqueue(Op{.kind = Op::Kind::kRecord, .event = state, .seq = seq});
    return absl::OkStatus();
  }

  absl::Status Wait(Event& event) override {
    auto* emulated = dynamic_cast<EmulatedEvent*>(&event);
    if (emulated == nullptr) {
      return absl::InvalidArgumentError("Wait: the event was not created by an emulated device");
    }
    const std::shared_ptr<EventState>& state = emulated->state();
    uint64_t seq;
    {
      MutexLock lock(&state->mu);
      seq = state->last_record_seq;
      // Already complete (or never recorded): nothing to wait for.
      if (!state->pending.contains(seq)) {
        if (seq == 0 || state->status.ok()) return absl::OkStatus();
      }
    }
    Enqueue(Op{.kind = Op::Kind::kWait, .event = state, .seq = seq});
    return absl::OkStatus();
  }

  absl::Status Synchronize() override {
    MutexLock lock(&mu_);
    AwaitCompletedLocked(enqueued_);
    absl::Status status = std::move(pending_error_);
    pending_error_ = absl::OkStatus();
    return status;
  }

  void* native_handle() const override { return nullptr; }

  // Waits for the work enqueued so far; returns the pending error without clearing it.
  absl::Status Drain() {
    MutexLock lock(&mu_);
    AwaitCompletedLocked(enqueued_);
    return pending_error_;
  }

 private:
  struct Op {
    enum class Kind { kRun, kRecord, kWait };
    Kind kind = Kind::kRun;
    absl::AnyInvocable<absl::Status()> run;  // kRun
    std::shared_ptr<EventState> event;       // kRecord, kWait
    uint64_t seq = 0;                        // kRecord, kWait
  };

  void Enqueue(Op op) {
    { MutexLock api(&device_->api_mu_); }  // waits while a Free synchronizes the device
    MutexLock lock(&mu_);
    queue_.push_back(std::move(op));
    ++enqueued_;
  }

  void AwaitCompletedLocked(uint64_t target) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto done = [this, target]() {
      mu_.AssertHeld();
      return completed_ >= target;
    };
    mu_.Await(done);
  }

  // Validates every op (all or nothing), then queues them as one unit of work.
  absl::Status EnqueueCopies(const char* what, bool batch, std::vector<CopyOp> ops) {
    for (size_t i = 0; i < ops.size(); ++i) {
      const std::string where =
          batch ? absl::StrFormat("%s op %d (%s)", what, i, CopyKindName(ops[i].kind))
                : std::string(what);
      if (absl::Status status = ValidateCopy(where, ops[i]); !status.ok()) return status;
    }
    std::erase_if(ops, [](const CopyOp& op) { return op.bytes == 0; });
    if (ops.empty()) return absl::OkStatus();
    const std::string call =
        ops.size() == 1 ? absl::StrFormat("cudaMemcpyAsync(%s, %d bytes)",
                                          CopyKindName(ops[0].kind), ops[0].bytes)
                        : absl::StrFormat("cudaMemcpyBatchAsync(%d copies)", ops.size());
    if (absl::Status s = device_->ClaimFault(DeviceFault::Kind::kCopy, call); !s.ok()) return s;
    EmulatedDevice* device = device_;
    Enqueue(Op{.run = [device, ops = std::move(ops)]() {
      absl::Status first_error;
      for (const CopyOp& op : ops) {
        absl::Status status = RunCopy(*device, op);
        if (!status.ok() && first_error.ok()) first_error = std::move(status);
      }
      return first_error;
    }});
    return absl::OkStatus();
  }

  absl::Status ValidateCopy(const std::string& where, const CopyOp& op) const {
    if (op.bytes == 0) return absl::OkStatus();
    switch (op.kind) {
      case CopyOp::Kind::kHostToDevice:
        if (absl::Status s = ValidateHost(where, "source", op.src_host); !s.ok()) return s;
        return ValidateDevice(where, "destination", op.dst_device, op.bytes);
      case CopyOp::Kind::kDeviceToHost:
        if (absl::Status s = ValidateDevice(where, "source", op.src_device, op.bytes); !s.ok()) {
          return s;
        }
        return ValidateHost(where, "destination", op.dst_host);
      case CopyOp::Kind::kDeviceToDevice:
        if (absl::Status s = ValidateDevice(where, "source", op.src_device, op.bytes); !s.ok()) {
          return s;
        }
        return ValidateDevice(where, "destination", op.dst_device, op.bytes);
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: unknown copy kind %d", where, static_cast<int>(op.kind)));
  }

  static absl::Status ValidateHost(const std::string& where, const char* role, const void* ptr) {
    if (ptr == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %s host pointer is null", where, role));
    }
    const auto address = reinterpret_cast<uintptr_t>(ptr);
    if (EmulatedDevice::IsSyntheticAddress(address)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %s host pointer 0x%x is an emulated device address (a DevicePtr used as a host "
          "pointer?)",
          where, role, address));
    }
    return absl::OkStatus();
  }

  absl::Status ValidateDevice(const std::string& where, const char* role, DevicePtr ptr,
                              size_t bytes) const {
    if (ptr.is_null()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s device pointer is null", where, role));
    }
    if (device_->Contains(ptr, bytes)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %s device range [0x%x, +%d bytes) is not inside one live allocation or registered "
        "range of this emulated device%s",
        where, role, ptr.address(), bytes,
        EmulatedDevice::IsSyntheticAddress(ptr.address())
            ? ""
            : " (not an emulated device address: a host pointer used as a DevicePtr? Host "
              "memory that stands in for device memory must be registered with "
              "RegisterDeviceMemory)"));
  }

  // Runs one validated copy. The allocations are looked up again because they may have
  // been freed since the copy was queued; holding them keeps their memory alive meanwhile.
  static absl::Status RunCopy(EmulatedDevice& device, const CopyOp& op) {
    using Link = EmulatedDevice::Link;
    auto freed = [&op](const char* role, DevicePtr ptr) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s copy of %d bytes: %s device range at 0x%x was freed before the copy ran (or "
          "unregistered: registered device memory)",
          CopyKindName(op.kind), op.bytes, role, ptr.address()));
    };
    switch (op.kind) {
      case CopyOp::Kind::kHostToDevice: {
        auto dst = device.FindAllocation(op.dst_device, op.bytes);
        if (dst == nullptr) return freed("destination", op.dst_device);
        device.ThrottledCopy(Link::kHostToDevice, op.bytes, [&] {
          std::memcpy(dst->HostFor(op.dst_device.address()), op.src_host, op.bytes);
        });
        return absl::OkStatus();
      }
      case CopyOp::Kind::kDeviceToHost: {
        auto src = device.FindAllocation(op.src_device, op.bytes);
        if (src == nullptr) return freed("source", op.src_device);
        device.ThrottledCopy(Link::kDeviceToHost, op.bytes, [&] {
          std::memcpy(op.dst_host, src->HostFor(op.src_device.address()), op.bytes);
        });
        return absl::OkStatus();
      }
      case CopyOp::Kind::kDeviceToDevice: {
        auto src = device.FindAllocation(op.src_device, op.bytes);
        if (src == nullptr) return freed("source", op.src_device);
        auto dst = device.FindAllocation(op.dst_device, op.bytes);
        if (dst == nullptr) return freed("destination", op.dst_device);
        // memmove: both ranges may lie in the same allocation.
        std::memmove(dst->HostFor(op.dst_device.address()), src->HostFor(op.src_device.address()),
                     op.bytes);
        return absl::OkStatus();
      }
    }
    return absl::InternalError("unknown copy kind");
  }

  void WorkerLoop() {
    for (;;) {
      Op op;
      {
        MutexLock lock(&mu_);
        auto ready = [this]() {
          mu_.AssertHeld();
          return !queue_.empty() || stopping_;
        };
        mu_.Await(ready);
        if (queue_.empty()) return;  // Stopping, and everything queued has run.
        op = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::Status status;
      switch (op.kind) {
        case Op::Kind::kRun:
          status = op.run();
          break;
        case Op::Kind::kWait:
          // An error captured by the awaited event becomes this stream's error too: work
          // after the wait depended on work that failed.
          status = op.event->WaitFor(op.seq);
          break;
        case Op::Kind::kRecord: {
          absl::Status captured;
          {
            MutexLock lock(&mu_);
            captured = pending_error_;
          }
          op.event->Complete(op.seq, std::move(captured));
          break;
        }
      }
      MutexLock lock(&mu_);
      if (!status.ok() && pending_error_.ok()) pending_error_ = std::move(status);
      ++completed_;
    }
  }

  EmulatedDevice* const device_;
  Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  // First execution error not yet returned by Synchronize.
  absl::Status pending_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

namespace {

// Faults armed by InjectFaultIntoNextDevice, for the next device Create makes.
Mutex next_device_faults_mu;
std::vector<DeviceFault> next_device_faults ABSL_GUARDED_BY(next_device_faults_mu);

}  // namespace

const char* DeviceFaultKindName(DeviceFault::Kind kind) {
  switch (kind) {
    case DeviceFault::Kind::kAllocate:
      return "allocate";
    case DeviceFault::Kind::kAllocatePinned:
      return "allocate-pinned";
    case DeviceFault::Kind::kCopy:
      return "copy";
    case DeviceFault::Kind::kLaunch:
      return "launch";
    case DeviceFault::Kind::kEventRecord:
      return "event-record";
    case DeviceFault::Kind::kCallback:
      return "callback";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<EmulatedDevice>> EmulatedDevice::Create(
    const DeviceOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  std::unique_ptr<EmulatedDevice> device(new EmulatedDevice(options));
  std::vector<DeviceFault> faults;
  {
    MutexLock lock(&next_device_faults_mu);
    faults.swap(next_device_faults);
  }
  for (const DeviceFault& fault : faults) device->InjectFault(fault);
  return device;
}

void EmulatedDevice::InjectFaultIntoNextDevice(const DeviceFault& fault) {
  MutexLock lock(&next_device_faults_mu);
  next_device_faults.push_back(fault);
}

void EmulatedDevice::InjectFault(const DeviceFault& fault) {
  MutexLock lock(&fault_mu_);
  faults_.push_back(ActiveFault{fault, 0});
  faults_armed_.store(true, std::memory_order_release);
}

void EmulatedDevice::ClearFaults() {
  MutexLock lock(&fault_mu_);
  faults_.clear();
  faults_armed_.store(false, std::memory_order_release);
}

absl::Status EmulatedDevice::ClaimFault(DeviceFault::Kind kind, const std::string& call) {
  if (!faults_armed_.load(std::memory_order_acquire)) return absl::OkStatus();
  MutexLock lock(&fault_mu_);
  bool hit = false;
  for (ActiveFault& a : faults_) {
    if (a.fault.kind != kind) continue;
    const uint64_t n = a.seen++;  // this call is call n + 1 of its kind
    hit = hit || (n >= a.fault.skip && (a.fault.count == 0 || n - a.fault.skip < a.fault.count));
  }
  std::erase_if(faults_, [](const ActiveFault& a) {
    return a.fault.count != 0 && a.seen >= a.fault.skip && a.seen - a.fault.skip >= a.fault.count;
  });
  faults_armed_.store(!faults_.empty(), std::memory_order_release);
  if (!hit) return absl::OkStatus();
  // The codes cuda_device.cc's CodeFor gives cudaErrorMemoryAllocation (allocations) and
  // cudaErrorLaunchFailure (everything else), with CUDA's messages for them.
  const bool allocation =
      kind == DeviceFault::Kind::kAllocate || kind == DeviceFault::Kind::kAllocatePinned;
  return absl::Status(
      allocation ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kInternal,
      absl::StrFormat("%s: %s (injected fault)", call,
                      allocation ? "out of memory" : "unspecified launch failure"));
}

EmulatedDevice::EmulatedDevice(const DeviceOptions& options)
    : copy_gbps_(options.emulated_copy_gbps), memory_limit_(options.emulated_memory_limit) {}

EmulatedDevice::~EmulatedDevice() {
  {
    MutexLock lock(&streams_mu_);
    if (!streams_.empty()) {
      KVTIER_LOG(kError, "emulated device destroyed with %d live streams (a caller bug)",
                 streams_.size());
    }
  }
  MutexLock lock(&memory_mu_);
  for (auto& [ptr, pinned] : pinned_) {
    if (pinned.mapping.data() == nullptr) std::free(ptr);
  }
  pinned_.clear();  // unmaps the mappings
  allocations_.clear();
}

std::string EmulatedDevice::name() const {
  std::string copy = copy_gbps_ > 0 ? (copy_gbps_ >= 0.1 ? absl::StrFormat("copy %.1f GB/s", copy_gbps_)
                                                            : absl::StrFormat("copy %.2g GB/s", copy_gbps_))
                                    : std::string("copy unthrottled");
  if (memory_limit_ > 0) {
    return absl::StrFormat("emulated (%s, %.1f GiB limit)", copy,
                           static_cast<double>(memory_limit_) / (1 << 30));
  }
  return absl::StrFormat("emulated (%s)", copy);
}

absl::StatusOr<DevicePtr> EmulatedDevice::Allocate(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("Allocate: zero bytes requested");
  if (absl::Status s = ClaimFault(DeviceFault::Kind::kAllocate,
                                  absl::StrFormat("cudaMalloc(%d bytes)", bytes));
      !s.ok()) {
    return s;
  }
  MutexLock lock(&memory_mu_);
  if (memory_limit_ > 0 && bytes > memory_limit_ - bytes_in_use_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "emulated device memory exhausted: requested %d bytes with %d of %d bytes in use", bytes,
        bytes_in_use_, memory_limit_));
  }
  const uint64_t base = next_address_;
  if (bytes > kAddressBase + kAddressSpace - base) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("emulated device address space exhausted: requested %d bytes", bytes));
  }
  auto* host = static_cast<std::byte*>(
      ::operator new(bytes, std::align_val_t(kAlignment), std::nothrow));
  if (host == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "Allocate: host memory for %d bytes of emulated device memory is not available", bytes));
  }
  allocations_.emplace(base, std::make_shared<Allocation>(base, bytes, host));
  next_address_ = RoundUp(base + bytes + kGuardBytes, kAlignment);
  bytes_in_use_ += bytes;
  return DevicePtr::FromAddress(base);
}

absl::Status EmulatedDevice::Free(DevicePtr ptr) {
  if (ptr.is_null()) return absl::OkStatus();
  // As cudaFree: synchronize the device first, holding the API lock meanwhile. Errors stay
  // pending on their streams (Drain does not clear them).
  MutexLock api(&api_mu_);
  (void)Synchronize();
  MutexLock lock(&memory_mu_);
  auto it = allocations_.find(ptr.address());
  if (it == allocations_.end()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Free: 0x%x is not the start of a live allocation of this emulated device%s",
        ptr.address(), IsSyntheticAddress(ptr.address()) ? " (already freed?)" : ""));
  }
  if (it->second->external()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Free: 0x%x is registered device memory, not an allocation: kvtier never frees memory "
        "it did not allocate (UnregisterDeviceMemory forgets it)",
        ptr.address()));
  }
  bytes_in_use_ -= it->second->size();
  // Queued copies may still hold the allocation; its memory goes when the last one is done.
  allocations_.erase(it);
  return absl::OkStatus();
}

std::shared_ptr<EmulatedDevice::Allocation> EmulatedDevice::FindAllocation(DevicePtr ptr,
                                                                           size_t bytes) const {
  const uint64_t address = ptr.address();
  MutexLock lock(&memory_mu_);
  auto it = allocations_.upper_bound(address);
  if (it == allocations_.begin()) return nullptr;
  --it;
  const Allocation& allocation = *it->second;
  const uint64_t offset = address - allocation.base();
  if (offset >= allocation.size() || bytes > allocation.size() - offset) return nullptr;
  return it->second;
}

bool EmulatedDevice::Contains(DevicePtr ptr, size_t bytes) const {
  return FindAllocation(ptr, bytes) != nullptr;
}

void* EmulatedDevice::Resolve(DevicePtr ptr, size_t bytes) const {
  std::shared_ptr<Allocation> allocation = FindAllocation(ptr, bytes);
  return allocation == nullptr ? nullptr : allocation->HostFor(ptr.address());
}

size_t EmulatedDevice::bytes_in_use() const {
  MutexLock lock(&memory_mu_);
  return bytes_in_use_;
}

absl::StatusOr<void*> EmulatedDevice::AllocatePinned(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("AllocatePinned: zero bytes requested");
  if (absl::Status s =
          ClaimFault(DeviceFault::Kind::kAllocatePinned,
                     absl::StrFormat("cudaHostAlloc(%d bytes)", RoundUp(bytes, kPinnedAlignment)));
      !s.ok()) {
    return s;
  }
  Pinned pinned{bytes, IoMemory()};
  void* ptr = nullptr;
  if (bytes >= kHugePinnedBytes) {
    absl::StatusOr<IoMemory> mapping = IoMemory::Allocate(bytes);
    if (!mapping.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("AllocatePinned: %d bytes of host memory are not available: %s", bytes,
                          mapping.status().message()));
    }
    pinned.mapping = *std::move(mapping);
    ptr = pinned.mapping.data();
  } else if (posix_memalign(&ptr, kPinnedAlignment, RoundUp(bytes, kPinnedAlignment)) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("AllocatePinned: %d bytes of host memory are not available", bytes));
  }
  MutexLock lock(&memory_mu_);
  pinned_.emplace(ptr, std::move(pinned));
  return ptr;
}

absl::Status EmulatedDevice::FreePinned(void* ptr) {
  if (ptr == nullptr) return absl::OkStatus();
  Pinned pinned;
  {
    MutexLock lock(&memory_mu_);
    auto it = pinned_.find(ptr);
    if (it == pinned_.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "FreePinned: %p was not returned by AllocatePinned of this device (or was freed)", ptr));
    }
    pinned = std::move(it->second);
    pinned_.erase(it);
  }
  if (pinned.mapping.data() == nullptr) std::free(ptr);
  return absl::OkStatus();  // a mapping goes with `pinned`
}

absl::Status EmulatedDevice::RegisterHostMemory(void* ptr, size_t bytes) {
  if (ptr == nullptr) return absl::InvalidArgumentError("RegisterHostMemory: null pointer");
  if (bytes == 0) return absl::InvalidArgumentError("RegisterHostMemory: zero bytes");
  const auto start = reinterpret_cast<uintptr_t>(ptr);
  MutexLock lock(&memory_mu_);
  auto overlaps = [&](uintptr_t other, size_t other_bytes) {
    return start < other + other_bytes && other < start + bytes;
  };
  for (const auto& [other, other_bytes] : registered_) {
    if (overlaps(other, other_bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterHostMemory: [%p, +%d bytes) overlaps registered host memory at 0x%x", ptr,
          bytes, other));
    }
  }
  for (const auto& [other, pinned] : pinned_) {
    if (overlaps(reinterpret_cast<uintptr_t>(other), pinned.bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterHostMemory: [%p, +%d bytes) overlaps pinned memory at %p", ptr, bytes,
          other));
    }
  }
  if (std::shared_ptr<Allocation> device = FirstOverlapLocked(start, bytes); device != nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RegisterHostMemory: [%p, +%d bytes) overlaps registered device memory at 0x%x", ptr,
        bytes, device->base()));
  }
  registered_.emplace(start, bytes);
  return absl::OkStatus();
}

absl::Status EmulatedDevice::UnregisterHostMemory(void* ptr) {
  MutexLock lock(&memory_mu_);
  if (registered_.erase(reinterpret_cast<uintptr_t>(ptr)) == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "UnregisterHostMemory: %p is not the start of host memory registered with this device",
        ptr));
  }
  return absl::OkStatus();
}

std::shared_ptr<EmulatedDevice::Allocation> EmulatedDevice::FirstOverlapLocked(
    uint64_t start, size_t bytes) const {
  // The last range starting below the end of [start, start+bytes) is the only candidate:
  // ranges do not overlap each other, so any earlier one ends before it starts.
  auto it = allocations_.lower_bound(start + bytes);
  if (it == allocations_.begin()) return nullptr;
  --it;
  const Allocation& a = *it->second;
  return a.base() + a.size() > start ? it->second : nullptr;
}

absl::Status EmulatedDevice::RegisterDeviceMemory(DevicePtr base, size_t bytes) {
  const uint64_t start = base.address();
  if (base.is_null()) return absl::InvalidArgumentError("RegisterDeviceMemory: null pointer");
  if (bytes == 0) return absl::InvalidArgumentError("RegisterDeviceMemory: zero bytes");
  if (IsSyntheticAddress(start)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RegisterDeviceMemory: 0x%x is an address of this emulated device's own memory "
        "(what Allocate returns needs no registration); register host memory you own, by its "
        "host address",
        start));
  }
  if (bytes > kAddressBase - start) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RegisterDeviceMemory: [0x%x, +%d bytes) runs past the end of host address space", start,
        bytes));
  }
  MutexLock lock(&memory_mu_);
  if (auto it = allocations_.find(start); it != allocations_.end() && it->second->external()) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "RegisterDeviceMemory: 0x%x is registered already (as %d bytes)", start,
        it->second->size()));
  }
  if (std::shared_ptr<Allocation> other = FirstOverlapLocked(start, bytes); other != nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RegisterDeviceMemory: [0x%x, +%d bytes) overlaps registered device memory "
        "[0x%x, +%d bytes)",
        start, bytes, other->base(), other->size()));
  }
  auto overlaps = [&](uintptr_t other, size_t other_bytes) {
    return start < other + other_bytes && other < start + bytes;
  };
  for (const auto& [other, pinned] : pinned_) {
    if (overlaps(reinterpret_cast<uintptr_t>(other), pinned.bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterDeviceMemory: [0x%x, +%d bytes) overlaps pinned host memory of this device "
          "at %p (host memory, not device memory)",
          start, bytes, other));
    }
  }
  for (const auto& [other, other_bytes] : registered_) {
    if (overlaps(other, other_bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterDeviceMemory: [0x%x, +%d bytes) overlaps host memory registered with "
          "RegisterHostMemory at 0x%x (host memory, not device memory)",
          start, bytes, other));
    }
  }
  allocations_.emplace(start, std::make_shared<Allocation>(start, bytes));
  return absl::OkStatus();
}

absl::Status EmulatedDevice::UnregisterDeviceMemory(DevicePtr base) {
  MutexLock lock(&memory_mu_);
  auto it = allocations_.find(base.address());
  if (it == allocations_.end() || !it->second->external()) {
    return absl::NotFoundError(absl::StrFormat(
        "UnregisterDeviceMemory: 0x%x is not the start of device memory registered with this "
        "emulated device%s",
        base.address(),
        it != allocations_.end() ? " (it is an allocation of the device: Free it)" : ""));
  }
  // Copies queued on it that have not started fail when they run, as for freed memory.
  allocations_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Stream>> EmulatedDevice::CreateStream() {
  return std::unique_ptr<Stream>(new EmulatedStream(this));
}

absl::StatusOr<std::unique_ptr<Event>> EmulatedDevice::CreateEvent() {
  return std::unique_ptr<Event>(new EmulatedEvent());
}

absl::Status EmulatedDevice::Synchronize() {
  MutexLock lock(&streams_mu_);
  absl::Status first_error;
  for (EmulatedStream* stream : streams_) {
    absl::Status status = stream->Drain();
    if (!status.ok() && first_error.ok()) first_error = std::move(status);
  }
  return first_error;
}

void EmulatedDevice::RegisterStream(EmulatedStream* stream) {
  MutexLock lock(&streams_mu_);
  streams_.insert(stream);
}

void EmulatedDevice::UnregisterStream(EmulatedStream* stream) {
  MutexLock lock(&streams_mu_);
  streams_.erase(stream);
}

}  // namespace kvtier
