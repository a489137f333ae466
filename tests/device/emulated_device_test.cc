// tests/device/emulated_device_test.cc — what the emulated device promises beyond the Device
// contract: synthetic addresses that cannot be mistaken for host memory, a memory limit, a
// bandwidth-limited link per direction shared by all streams, execution errors that are
// reported without stopping the stream, injected CUDA errors (DeviceFault), and host memory
// the caller owns registered as device memory (RegisterDeviceMemory).

#include "device/emulated_device.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/copy_kernels.h"
#include "kvtier/device.h"
#include "tests/common/smaps_util.h"
#include "tests/device/test_util.h"

namespace kvtier {
namespace {

using testing_util::Gate;
using testing_util::RandomBytes;

std::unique_ptr<EmulatedDevice> NewDevice(double gbps = 0.0, size_t memory_limit = 0) {
  DeviceOptions options;
  options.choice = DeviceChoice::kEmulated;
  options.emulated_copy_gbps = gbps;
  options.emulated_memory_limit = memory_limit;
  absl::StatusOr<std::unique_ptr<EmulatedDevice>> device = EmulatedDevice::Create(options);
  EXPECT_TRUE(device.ok()) << device.status();
  if (!device.ok()) std::abort();
  return std::move(*device);
}

std::unique_ptr<Stream> NewStream(Device& device) {
  absl::StatusOr<std::unique_ptr<Stream>> stream = device.CreateStream();
  EXPECT_TRUE(stream.ok()) << stream.status();
  if (!stream.ok()) std::abort();
  return std::move(*stream);
}

std::unique_ptr<Event> NewEvent(Device& device) {
  absl::StatusOr<std::unique_ptr<Event>> event = device.CreateEvent();
  EXPECT_TRUE(event.ok()) << event.status();
  if (!event.ok()) std::abort();
  return std::move(*event);
}

// Sanitizers make 16 MiB memcpys slow enough to exceed the throttle's windows, so the
// "this was fast" halves of the timing tests only hold in plain builds.
#if defined(ABSL_HAVE_THREAD_SANITIZER) || defined(ABSL_HAVE_ADDRESS_SANITIZER) || \
    defined(ABSL_HAVE_MEMORY_SANITIZER)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// A kernel whose CPU reference fails when it runs.
KernelLaunch FailingKernel() {
  KernelLaunch kernel;
  kernel.name = "always_fails";
  kernel.cpu = [](const KernelLaunch::Resolver&) { return absl::DataLossError("boom"); };
  return kernel;
}

TEST(EmulatedDevice, NameSaysEmulatedAndTheLinkSpeed) {
  EXPECT_EQ(NewDevice()->kind(), DeviceKind::kEmulated);
  EXPECT_EQ(NewDevice()->name(), "emulated (copy unthrottled)");
  EXPECT_EQ(NewDevice(16.0)->name(), "emulated (copy 16.0 GB/s)");
  EXPECT_TRUE(absl::StrContains(NewDevice(16.0, size_t{1} << 30)->name(), "1.0 GiB limit"));
  EXPECT_EQ(NewStream(*NewDevice())->native_handle(), nullptr);
}

TEST(EmulatedDevice, DevicePointersAreSyntheticAddressesThatResolveToHostMemory) {
  auto device = NewDevice();
  absl::StatusOr<DevicePtr> a = device->Allocate(1000);
  absl::StatusOr<DevicePtr> b = device->Allocate(1000);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GE(a->address(), EmulatedDevice::kAddressBase);
  EXPECT_TRUE(EmulatedDevice::IsSyntheticAddress(b->address()));
  // Allocations never touch: running off the end of one does not land in the next.
  EXPECT_GE(b->address(), a->address() + 1000 + EmulatedDevice::kGuardBytes);
  EXPECT_FALSE(device->Contains(*a + 1000, 1));

  void* host = device->Resolve(*a, 1000);
  ASSERT_NE(host, nullptr);
  EXPECT_NE(reinterpret_cast<uint64_t>(host), a->address());
  EXPECT_EQ(device->Resolve(*a + 10, 990), static_cast<char*>(host) + 10);
  EXPECT_EQ(device->Resolve(*a + 10, 991), nullptr);
  EXPECT_EQ(device->Resolve(DevicePtr::FromAddress(reinterpret_cast<uint64_t>(host)), 1), nullptr);

  // Bytes written through the stream are the bytes Resolve shows.
  const std::vector<uint8_t> source = RandomBytes(1000, 1);
  auto stream = NewStream(*device);
  KVTIER_ASSERT_OK(stream->CopyToDevice(*a, source.data(), 1000));
  KVTIER_ASSERT_OK(stream->Synchronize());
  EXPECT_EQ(std::memcmp(host, source.data(), 1000), 0);
  stream.reset();
  KVTIER_EXPECT_OK(device->Free(*a));
  KVTIER_EXPECT_OK(device->Free(*b));
  EXPECT_EQ(device->Resolve(*a, 1), nullptr);
}

TEST(EmulatedDevice, HostAndDevicePointerMixUpsAreRejectedByName) {
  auto device = NewDevice();
  absl::StatusOr<DevicePtr> d = device->Allocate(4096);
  ASSERT_TRUE(d.ok());
  std::vector<uint8_t> host(4096);
  auto stream = NewStream(*device);

  // A host pointer passed as a DevicePtr.
  const DevicePtr fake = DevicePtr::FromAddress(reinterpret_cast<uint64_t>(host.data()));
  absl::Status status = stream->CopyToDevice(fake, host.data(), 16);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), absl::StrFormat("0x%x", fake.address())))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "host pointer used as a DevicePtr")) << status;

  // A DevicePtr passed as a host pointer.
  void* as_host = reinterpret_cast<void*>(d->address());
  status = stream->CopyToHost(as_host, *d, 16);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "emulated device address")) << status;

  // A range that runs past the end of its allocation names the address and size.
  status = stream->CopyToHost(host.data(), *d + 4000, 200);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                absl::StrFormat("[0x%x, +200 bytes)", d->address() + 4000)))
      << status;

  // Freed memory is no longer a valid target.
  KVTIER_ASSERT_OK(device->Free(*d));
  EXPECT_EQ(stream->CopyToDevice(*d, host.data(), 16).code(), absl::StatusCode::kInvalidArgument);
  // Null is a no-op for both frees.
  KVTIER_EXPECT_OK(device->Free(DevicePtr()));
  KVTIER_EXPECT_OK(device->FreePinned(nullptr));
}

TEST(EmulatedDevice, MemoryLimitIsEnforced) {
  constexpr size_t kLimit = size_t{1} << 20;
  auto device = NewDevice(0.0, kLimit);
  absl::StatusOr<DevicePtr> a = device->Allocate(768 * 1024);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(device->bytes_in_use(), 768u * 1024);
  absl::StatusOr<DevicePtr> b = device->Allocate(512 * 1024);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(b.status().message(), "requested 524288 bytes")) << b.status();
  EXPECT_TRUE(absl::StrContains(b.status().message(), "786432 of 1048576")) << b.status();
  KVTIER_ASSERT_OK(device->Free(*a));
  EXPECT_EQ(device->bytes_in_use(), 0u);
  b = device->Allocate(kLimit);
  ASSERT_TRUE(b.ok()) << b.status();
  KVTIER_EXPECT_OK(device->Free(*b));
  EXPECT_EQ(device->Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
}

// The throttle tests measure wall time; their bounds leave room for a loaded machine, and
// buffers are touched before the clock starts so page faults do not pass for throttling.
absl::Duration TimeCopies(Device& device, int streams, CopyOp::Kind kind, size_t bytes_each) {
  std::vector<std::unique_ptr<Stream>> all;
  std::vector<DevicePtr> device_buffers;
  std::vector<std::vector<uint8_t>> host_buffers;
  for (int i = 0; i < streams; ++i) {
    all.push_back(NewStream(device));
    absl::StatusOr<DevicePtr> d = device.Allocate(bytes_each);
    EXPECT_TRUE(d.ok());
    device_buffers.push_back(*d);
    host_buffers.emplace_back(bytes_each, 1);
    EXPECT_TRUE(all[i]->Launch(MakeFillKernel(*d, bytes_each, i)).ok());
    EXPECT_TRUE(all[i]->Synchronize().ok());
  }
  const absl::Time start = absl::Now();
  for (int i = 0; i < streams; ++i) {
    const CopyOp op = {.kind = kind,
                       .src_host = host_buffers[i].data(),
                       .src_device = device_buffers[i],
                       .dst_host = host_buffers[i].data(),
                       .dst_device = device_buffers[i],
                       .bytes = bytes_each};
    EXPECT_TRUE(all[i]->CopyBatch({op}).ok());
  }
  for (auto& stream : all) EXPECT_TRUE(stream->Synchronize().ok());
  const absl::Duration elapsed = absl::Now() - start;
  all.clear();
  for (DevicePtr d : device_buffers) EXPECT_TRUE(device.Free(d).ok());
  return elapsed;
}

TEST(EmulatedDevice, ThrottleLimitsBandwidthPerDirection) {
  auto device = NewDevice(/*gbps=*/1.0);
  constexpr size_t k64MiB = size_t{64} << 20;  // 67 ms at 1 GB/s
  const absl::Duration h2d = TimeCopies(*device, 1, CopyOp::Kind::kHostToDevice, k64MiB);
  EXPECT_GE(h2d, absl::Milliseconds(60)) << h2d;
  const absl::Duration d2h = TimeCopies(*device, 1, CopyOp::Kind::kDeviceToHost, k64MiB);
  EXPECT_GE(d2h, absl::Milliseconds(60)) << d2h;
}

// Many small copies get the configured bandwidth, not one sleep's worth of overhead each:
// 4096 copies of 4 KiB at 1 GB/s take 17 ms; ~60 us of sleep per copy would take 250 ms.
TEST(EmulatedDevice, ManySmallCopiesReachTheThrottledBandwidth) {
  auto device = NewDevice(/*gbps=*/1.0);
  constexpr size_t kCopies = 4096, kBytes = 4096;
  std::vector<uint8_t> host(kCopies * kBytes, 3);
  absl::StatusOr<DevicePtr> d = device->Allocate(kCopies * kBytes);
  ASSERT_TRUE(d.ok());
  auto stream = NewStream(*device);
  std::vector<CopyOp> ops;
  for (size_t i = 0; i < kCopies; ++i) {
    ops.push_back({.kind = CopyOp::Kind::kHostToDevice,
                   .src_host = host.data() + i * kBytes,
                   .dst_device = *d + i * kBytes,
                   .bytes = kBytes});
  }
  KVTIER_ASSERT_OK(stream->CopyBatch(ops));  // warm-up: page faults
  KVTIER_ASSERT_OK(stream->Synchronize());
  const absl::Time start = absl::Now();
  KVTIER_ASSERT_OK(stream->CopyBatch(ops));
  KVTIER_ASSERT_OK(stream->Synchronize());
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_GE(elapsed, absl::Milliseconds(15)) << elapsed;
  if (!kSanitized) {
    EXPECT_LT(elapsed, absl::Milliseconds(120)) << elapsed;
  }
  stream.reset();
  KVTIER_EXPECT_OK(device->Free(*d));
}

TEST(EmulatedDevice, StreamsShareTheLinkInsteadOfMultiplyingIt) {
  auto device = NewDevice(/*gbps=*/0.1);
  constexpr size_t k4MiB = size_t{4} << 20;  // 42 ms each, 84 ms for both on one link
  const absl::Duration both = TimeCopies(*device, 2, CopyOp::Kind::kHostToDevice, k4MiB);
  EXPECT_GE(both, absl::Milliseconds(78)) << both;
}

TEST(EmulatedDevice, DirectionsAreIndependentLinks) {
  // 210 ms each way; 420 ms if the two directions shared one link. The memcpys take a few
  // ms, so even a loaded machine leaves the difference plain.
  auto device = NewDevice(/*gbps=*/0.02);
  constexpr size_t k4MiB = size_t{4} << 20;
  std::vector<uint8_t> up(k4MiB, 1), down(k4MiB);
  absl::StatusOr<DevicePtr> a = device->Allocate(k4MiB);
  absl::StatusOr<DevicePtr> b = device->Allocate(k4MiB);
  ASSERT_TRUE(a.ok() && b.ok());
  auto s1 = NewStream(*device);
  auto s2 = NewStream(*device);
  const absl::Time start = absl::Now();
  KVTIER_ASSERT_OK(s1->CopyToDevice(*a, up.data(), k4MiB));
  KVTIER_ASSERT_OK(s2->CopyToHost(down.data(), *b, k4MiB));
  KVTIER_ASSERT_OK(s1->Synchronize());
  KVTIER_ASSERT_OK(s2->Synchronize());
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_GE(elapsed, absl::Milliseconds(200)) << elapsed;
  if (!kSanitized) {
    EXPECT_LT(elapsed, absl::Milliseconds(360)) << elapsed << ": the directions were serialised";
  }
  s1.reset();
  s2.reset();
  KVTIER_EXPECT_OK(device->Free(*a));
  KVTIER_EXPECT_OK(device->Free(*b));
}

TEST(EmulatedDevice, DeviceToDeviceCopiesAreNotThrottled) {
  auto device = NewDevice(/*gbps=*/0.01);
  constexpr size_t k16MiB = size_t{16} << 20;  // 1.7 s if it went through the link
  absl::StatusOr<DevicePtr> a = device->Allocate(k16MiB);
  absl::StatusOr<DevicePtr> b = device->Allocate(k16MiB);
  ASSERT_TRUE(a.ok() && b.ok());
  auto stream = NewStream(*device);
  const absl::Time start = absl::Now();
  KVTIER_ASSERT_OK(stream->CopyOnDevice(*b, *a, k16MiB));
  KVTIER_ASSERT_OK(stream->Synchronize());
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_LT(elapsed, absl::Milliseconds(1000)) << elapsed;
  stream.reset();
  KVTIER_EXPECT_OK(device->Free(*a));
  KVTIER_EXPECT_OK(device->Free(*b));
}

TEST(EmulatedDevice, KernelErrorsSurfaceLaterAndDoNotStopTheStream) {
  auto device = NewDevice();
  auto stream = NewStream(*device);
  auto before = NewEvent(*device);
  auto after = NewEvent(*device);
  absl::StatusOr<DevicePtr> d = device->Allocate(4096);
  ASSERT_TRUE(d.ok());

  KVTIER_ASSERT_OK(stream->Record(*before));
  KVTIER_ASSERT_OK(stream->Launch(FailingKernel()));  // Enqueue succeeds.
  KVTIER_ASSERT_OK(stream->Record(*after));
  // The stream keeps running after the failure.
  std::vector<uint8_t> source = RandomBytes(4096, 9), back(4096);
  KVTIER_ASSERT_OK(stream->CopyToDevice(*d, source.data(), 4096));
  KVTIER_ASSERT_OK(stream->CopyToHost(back.data(), *d, 4096));

  KVTIER_EXPECT_OK(before->Synchronize());
  absl::Status status = after->Synchronize();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "always_fails")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "boom")) << status;

  // Device::Synchronize reports the error without consuming it ...
  EXPECT_EQ(device->Synchronize().code(), absl::StatusCode::kDataLoss);
  // ... Stream::Synchronize reports it once.
  EXPECT_EQ(stream->Synchronize().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(back, source);
  KVTIER_EXPECT_OK(stream->Synchronize());
  KVTIER_EXPECT_OK(device->Synchronize());
  KVTIER_ASSERT_OK(stream->Record(*after));
  KVTIER_EXPECT_OK(after->Synchronize());
  stream.reset();
  KVTIER_EXPECT_OK(device->Free(*d));
}

TEST(EmulatedDevice, AnErrorPassesToStreamsThatWaitOnIt) {
  auto device = NewDevice();
  auto a = NewStream(*device);
  auto b = NewStream(*device);
  auto event = NewEvent(*device);
  KVTIER_ASSERT_OK(a->Launch(FailingKernel()));
  KVTIER_ASSERT_OK(a->Record(*event));
  KVTIER_ASSERT_OK(b->Wait(*event));
  EXPECT_EQ(b->Synchronize().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(a->Synchronize().code(), absl::StatusCode::kDataLoss);
  // Waiting on an event that already completed with an error still passes it on.
  KVTIER_ASSERT_OK(b->Wait(*event));
  EXPECT_EQ(b->Synchronize().code(), absl::StatusCode::kDataLoss);
}

TEST(EmulatedDevice, FillKernelOnAForeignRangeFailsWhenItRuns) {
  auto device = NewDevice();
  auto stream = NewStream(*device);
  KVTIER_ASSERT_OK(stream->Launch(MakeFillKernel(DevicePtr::FromAddress(0x1000), 64, 1)));
  absl::Status status = stream->Synchronize();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "fill_pattern")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "0x1000")) << status;
  KernelLaunch cuda_only;
  cuda_only.name = "gpu_only";
  cuda_only.cuda = [](void*) { return absl::OkStatus(); };
  status = stream->Launch(std::move(cuda_only));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "gpu_only")) << status;
}

// As cudaFree: Free first waits for all queued work of the device, and other threads' stream
// calls wait meanwhile (engine/completion_queue.h has the deadlock this lets tests see).
TEST(EmulatedDevice, FreeWaitsForQueuedWorkAndHoldsOffOtherCallsAsCudaFreeDoes) {
  auto device = NewDevice();
  auto stream = NewStream(*device);
  auto other = NewStream(*device);
  absl::StatusOr<DevicePtr> d = device->Allocate(4096);
  ASSERT_TRUE(d.ok());
  std::vector<uint8_t> host(4096, 7);
  Gate gate;
  KVTIER_ASSERT_OK(gate.Block(*stream));
  KVTIER_ASSERT_OK(stream->CopyToDevice(*d, host.data(), 4096));
  std::atomic<bool> freed{false}, enqueued{false};
  std::thread freer([&] {
    EXPECT_TRUE(device->Free(*d).ok());
    freed = true;
  });
  absl::SleepFor(absl::Milliseconds(50));  // the freer is waiting for the gated copy
  std::thread caller([&] {
    EXPECT_TRUE(other->AddCallback([] {}).ok());
    enqueued = true;
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(freed.load()) << "Free returned under a queued copy";
  EXPECT_FALSE(enqueued.load()) << "a stream call went through while Free synchronized";
  gate.Open();
  freer.join();
  caller.join();
  EXPECT_TRUE(freed.load());
  KVTIER_EXPECT_OK(stream->Synchronize());  // the copy ran into live memory
  KVTIER_EXPECT_OK(other->Synchronize());
}

TEST(EmulatedDevice, RegisteredHostMemoryIsDeviceMemoryAtItsOwnAddress) {
  auto device = NewDevice(0.0, /*memory_limit=*/1 << 20);
  // An inference engine's "GPU" pool: host memory it owns, larger than the device's limit.
  std::vector<uint8_t> pool(size_t{2} << 20, 0);
  const DevicePtr base = DevicePtr::FromAddress(reinterpret_cast<uint64_t>(pool.data()));
  EXPECT_FALSE(device->Contains(base, 16));
  auto stream = NewStream(*device);
  absl::Status status = stream->CopyToDevice(base, pool.data() + 64, 16);
  EXPECT_TRUE(absl::StrContains(status.message(), "RegisterDeviceMemory")) << status;

  KVTIER_ASSERT_OK(device->RegisterDeviceMemory(base, pool.size()));
  EXPECT_TRUE(device->Contains(base, pool.size()));
  EXPECT_TRUE(device->Contains(base + 100, pool.size() - 100));
  EXPECT_FALSE(device->Contains(base + 100, pool.size()));
  EXPECT_EQ(device->Resolve(base + 100, 10), pool.data() + 100);  // in place
  EXPECT_EQ(device->bytes_in_use(), 0u);  // the caller's memory, not the device's

  // Copies in, out and within, and kernels, use the caller's bytes in place.
  const std::vector<uint8_t> source = RandomBytes(5000, 3);
  std::vector<uint8_t> back(5000);
  absl::StatusOr<DevicePtr> own = device->Allocate(5000);
  ASSERT_TRUE(own.ok());
  KVTIER_ASSERT_OK(stream->CopyToDevice(base + 1000, source.data(), 5000));
  KVTIER_ASSERT_OK(stream->CopyOnDevice(*own, base + 1000, 5000));
  KVTIER_ASSERT_OK(stream->CopyOnDevice(base + 100000, *own, 5000));
  KVTIER_ASSERT_OK(stream->CopyToHost(back.data(), base + 100000, 5000));
  KVTIER_ASSERT_OK(stream->Launch(MakeFillKernel(base + 200000, 4096, 9)));
  KVTIER_ASSERT_OK(stream->Synchronize());
  EXPECT_EQ(std::memcmp(pool.data() + 1000, source.data(), 5000), 0);
  EXPECT_EQ(std::memcmp(pool.data() + 100000, source.data(), 5000), 0);
  EXPECT_EQ(back, source);
  EXPECT_TRUE(std::any_of(pool.begin() + 200000, pool.begin() + 204096,
                          [](uint8_t b) { return b != 0; }));

  // kvtier never frees it; it cannot be registered twice or partly again.
  status = device->Free(base);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(device->RegisterDeviceMemory(base, 16).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(device->RegisterDeviceMemory(base + 16, 16).code(),
            absl::StatusCode::kInvalidArgument);
  // Nor may host memory APIs claim it.
  EXPECT_EQ(device->RegisterHostMemory(pool.data() + 64, 64).code(),
            absl::StatusCode::kInvalidArgument);

  KVTIER_ASSERT_OK(device->UnregisterDeviceMemory(base));
  EXPECT_FALSE(device->Contains(base, 16));
  EXPECT_EQ(device->Resolve(base, 16), nullptr);
  EXPECT_EQ(stream->CopyToDevice(base, source.data(), 16).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device->UnregisterDeviceMemory(base).code(), absl::StatusCode::kNotFound);
  KVTIER_EXPECT_OK(device->Free(*own));
}

TEST(EmulatedDevice, DeviceMemoryRegistrationRefusesWhatIsNotTheCallersHostMemory) {
  auto device = NewDevice();
  std::vector<uint8_t> pool(4096);
  const DevicePtr base = DevicePtr::FromAddress(reinterpret_cast<uint64_t>(pool.data()));
  EXPECT_EQ(device->RegisterDeviceMemory(DevicePtr(), 16).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device->RegisterDeviceMemory(base, 0).code(), absl::StatusCode::kInvalidArgument);
  // The device's own memory needs no registration.
  absl::StatusOr<DevicePtr> own = device->Allocate(4096);
  ASSERT_TRUE(own.ok());
  absl::Status status = device->RegisterDeviceMemory(*own, 4096);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "needs no registration")) << status;
  status = device->UnregisterDeviceMemory(*own);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "Free it")) << status;
  // A range that would run into the synthetic addresses.
  status = device->RegisterDeviceMemory(
      DevicePtr::FromAddress(EmulatedDevice::kAddressBase - 8), 16);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  // Pinned and registered host memory are host memory.
  absl::StatusOr<void*> pinned = device->AllocatePinned(8192);
  ASSERT_TRUE(pinned.ok());
  status = device->RegisterDeviceMemory(
      DevicePtr::FromAddress(reinterpret_cast<uint64_t>(*pinned) + 4096), 16);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "pinned host memory")) << status;
  KVTIER_ASSERT_OK(device->RegisterHostMemory(pool.data(), pool.size()));
  status = device->RegisterDeviceMemory(base + 8, 16);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "RegisterHostMemory")) << status;
  KVTIER_EXPECT_OK(device->UnregisterHostMemory(pool.data()));
  KVTIER_EXPECT_OK(device->FreePinned(*pinned));
  KVTIER_EXPECT_OK(device->Free(*own));
}

// The host tier's arena (kHugePinnedBytes or more) is IoMemory: 2 MiB-aligned, zeroed and
// advised huge pages, so a direct-I/O read into a host slot is a segment or two at the device;
// smaller buffers stay page-aligned posix_memalign memory. Both are freed once, by FreePinned.
TEST(EmulatedDevice, LargePinnedBuffersAreHugePageAlignedAndAdvised) {
  auto device = NewDevice();
  constexpr size_t kLarge = EmulatedDevice::kHugePinnedBytes + 4096;
  absl::StatusOr<void*> large = device->AllocatePinned(kLarge);
  KVTIER_ASSERT_OK(large.status());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*large) % EmulatedDevice::kHugePinnedBytes, 0u);
  const auto* bytes = static_cast<const unsigned char*>(*large);
  EXPECT_TRUE(std::all_of(bytes, bytes + kLarge, [](unsigned char b) { return b == 0; }));
  if (testing_util::KernelHasTransparentHugePages()) {
    // Advised into transparent huge pages ("hg"), or in reserved ones ("ht": IoMemory takes
    // those where transparent ones are "never").
    const std::string flags = testing_util::VmFlagsOf(*large);
    EXPECT_TRUE(absl::StrContains(flags, " hg") || absl::StrContains(flags, " ht")) << flags;
  }
  absl::StatusOr<void*> small = device->AllocatePinned(8192);
  KVTIER_ASSERT_OK(small.status());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*small) % EmulatedDevice::kPinnedAlignment, 0u);
  std::memset(*small, 0x5a, 8192);
  // Copies to and from both work as for any pinned memory.
  absl::StatusOr<DevicePtr> d = device->Allocate(8192);
  KVTIER_ASSERT_OK(d.status());
  auto stream = NewStream(*device);
  KVTIER_ASSERT_OK(stream->CopyToDevice(*d, *small, 8192));
  KVTIER_ASSERT_OK(stream->CopyToHost(static_cast<char*>(*large) + 4096, *d, 8192));
  KVTIER_ASSERT_OK(stream->Synchronize());
  EXPECT_EQ(std::memcmp(static_cast<char*>(*large) + 4096, *small, 8192), 0);
  // Registering host memory over the mapping is refused as over any pinned buffer.
  absl::Status status = device->RegisterHostMemory(static_cast<char*>(*large) + 8192, 4096);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "pinned memory")) << status;
  KVTIER_EXPECT_OK(device->FreePinned(*large));
  KVTIER_EXPECT_OK(device->FreePinned(*small));
  status = device->FreePinned(*large);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  KVTIER_EXPECT_OK(device->Free(*d));
}

TEST(EmulatedDevice, MemoryUnregisteredUnderAQueuedCopyIsAnErrorNotAWrite) {
  auto device = NewDevice();
  auto stream = NewStream(*device);
  std::vector<uint8_t> pool(4096, 0);
  const DevicePtr base = DevicePtr::FromAddress(reinterpret_cast<uint64_t>(pool.data()));
  KVTIER_ASSERT_OK(device->RegisterDeviceMemory(base, pool.size()));
  std::vector<uint8_t> host(4096, 7);
  Gate gate;
  KVTIER_ASSERT_OK(gate.Block(*stream));
  KVTIER_ASSERT_OK(stream->CopyToDevice(base, host.data(), 4096));
  KVTIER_ASSERT_OK(device->UnregisterDeviceMemory(base));
  gate.Open();
  absl::Status status = stream->Synchronize();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "unregistered")) << status;
  EXPECT_EQ(pool, std::vector<uint8_t>(4096, 0));
}

TEST(EmulatedDevice, EventsMayBeDestroyedWithCapturesInFlight) {
  auto device = NewDevice();
  auto a = NewStream(*device);
  auto b = NewStream(*device);
  Gate gate;
  KVTIER_ASSERT_OK(gate.Block(*a));
  {
    auto event = NewEvent(*device);
    KVTIER_ASSERT_OK(a->Record(*event));
    KVTIER_ASSERT_OK(b->Wait(*event));
  }
  gate.Open();
  KVTIER_EXPECT_OK(a->Synchronize());
  KVTIER_EXPECT_OK(b->Synchronize());
}

TEST(EmulatedDevice, EventsFromAnotherKindOfDeviceAreRejected) {
  class ForeignEvent final : public Event {
   public:
    absl::StatusOr<bool> Query() override { return true; }
    absl::Status Synchronize() override { return absl::OkStatus(); }
  };
  auto device = NewDevice();
  auto stream = NewStream(*device);
  ForeignEvent foreign;
  EXPECT_EQ(stream->Record(foreign).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stream->Wait(foreign).code(), absl::StatusCode::kInvalidArgument);
}

TEST(EmulatedDevice, DestroyedWithMemoryStillAllocatedReleasesIt) {
  auto device = NewDevice();
  ASSERT_TRUE(device->Allocate(1 << 20).ok());
  ASSERT_TRUE(device->AllocatePinned(1 << 20).ok());
  device.reset();  // LeakSanitizer checks that nothing is left behind.
}

TEST(EmulatedDevice, ConcurrentAllocateFreeAndCopies) {
  auto device = NewDevice();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto stream = NewStream(*device);
      for (int i = 0; i < 50; ++i) {
        const size_t bytes = 1000 + 97 * i + t;
        absl::StatusOr<DevicePtr> d = device->Allocate(bytes);
        absl::StatusOr<void*> pinned = device->AllocatePinned(bytes);
        if (!d.ok() || !pinned.ok()) {
          failures.fetch_add(1);
          continue;
        }
        auto* p = static_cast<uint8_t*>(*pinned);
        std::memset(p, t + i, bytes);
        std::vector<uint8_t> back(bytes);
        bool ok = stream->CopyToDevice(*d, p, bytes).ok() &&
                  stream->CopyToHost(back.data(), *d, bytes).ok() && stream->Synchronize().ok();
        ok &= std::memcmp(back.data(), p, bytes) == 0;
        ok &= device->Contains(*d, bytes);
        ok &= device->Free(*d).ok() && device->FreePinned(p).ok();
        if (!ok) failures.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(device->bytes_in_use(), 0u);
}

TEST(EmulatedDeviceFaults, EachKindFailsItsCallAsCudaWouldAndNothingElse) {
  std::unique_ptr<EmulatedDevice> device = NewDevice();
  std::unique_ptr<Stream> stream = NewStream(*device);
  std::unique_ptr<Event> event = NewEvent(*device);
  absl::StatusOr<DevicePtr> buffer = device->Allocate(8192);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  std::vector<uint8_t> host = RandomBytes(8192, 3);
  const std::vector<uint8_t> zeros(8192, 0);
  ASSERT_TRUE(stream->CopyToDevice(*buffer, zeros.data(), zeros.size()).ok());

  device->InjectFault({DeviceFault::Kind::kAllocate, 0, 1});
  absl::StatusOr<DevicePtr> failed = device->Allocate(4096);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(failed.status().message(), "cudaMalloc(4096 bytes): out of memory (injected fault)");
  EXPECT_EQ(device->bytes_in_use(), 8192u);

  device->InjectFault({DeviceFault::Kind::kAllocatePinned, 0, 1});
  absl::StatusOr<void*> pinned = device->AllocatePinned(100);
  EXPECT_EQ(pinned.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pinned.status().message(),
            "cudaHostAlloc(4096 bytes): out of memory (injected fault)");

  device->InjectFault({DeviceFault::Kind::kCopy, 0, 1});
  absl::Status s = stream->CopyToDevice(*buffer, host.data(), host.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            "cudaMemcpyAsync(H2D, 8192 bytes): unspecified launch failure (injected fault)");
  device->InjectFault({DeviceFault::Kind::kCopy, 0, 1});
  const CopyOp ops[2] = {
      {.kind = CopyOp::Kind::kHostToDevice, .src_host = host.data(), .dst_device = *buffer,
       .bytes = 4096},
      {.kind = CopyOp::Kind::kHostToDevice, .src_host = host.data() + 4096,
       .dst_device = *buffer + 4096, .bytes = 4096}};
  s = stream->CopyBatch(ops);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(s.message(), "cudaMemcpyBatchAsync(2 copies)")) << s;
  // Neither failed call enqueued anything: the buffer still holds zeros, the stream no error.
  std::vector<uint8_t> unchanged(8192, 0xEE);
  ASSERT_TRUE(stream->CopyToHost(unchanged.data(), *buffer, unchanged.size()).ok());
  EXPECT_TRUE(stream->Synchronize().ok());
  EXPECT_EQ(unchanged, zeros);

  device->InjectFault({DeviceFault::Kind::kLaunch, 0, 1});
  KernelLaunch kernel;
  kernel.name = "probe";
  kernel.cpu = [](const KernelLaunch::Resolver&) { return absl::OkStatus(); };
  s = stream->Launch(std::move(kernel));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            "kernel 'probe': kernel launch: unspecified launch failure (injected fault)");

  device->InjectFault({DeviceFault::Kind::kEventRecord, 0, 1});
  s = stream->Record(*event);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "cudaEventRecord: unspecified launch failure (injected fault)");
  absl::StatusOr<bool> complete = event->Query();
  ASSERT_TRUE(complete.ok());
  EXPECT_TRUE(*complete) << "a failed Record captured nothing";

  device->InjectFault({DeviceFault::Kind::kCallback, 0, 1});
  bool ran = false;
  s = stream->AddCallback([&ran] { ran = true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "cudaLaunchHostFunc: unspecified launch failure (injected fault)");
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_FALSE(ran) << "a failed AddCallback enqueued its function";

  // Every fault was one-shot: the same calls now work, and bytes arrive intact.
  ASSERT_TRUE(stream->CopyToDevice(*buffer, host.data(), host.size()).ok());
  std::vector<uint8_t> back(host.size(), 0);
  ASSERT_TRUE(stream->CopyToHost(back.data(), *buffer, back.size()).ok());
  ASSERT_TRUE(stream->Record(*event).ok());
  ASSERT_TRUE(event->Synchronize().ok());
  EXPECT_EQ(back, host);
  absl::StatusOr<void*> pinned_ok = device->AllocatePinned(100);
  ASSERT_TRUE(pinned_ok.ok()) << pinned_ok.status();
  EXPECT_TRUE(device->FreePinned(*pinned_ok).ok());
  EXPECT_TRUE(device->Free(*buffer).ok());
}

TEST(EmulatedDeviceFaults, SkipAndCountPickAWindowOfCallsOfThatKindOnly) {
  std::unique_ptr<EmulatedDevice> device = NewDevice();
  device->InjectFault({DeviceFault::Kind::kAllocate, /*skip=*/1, /*count=*/2});
  std::vector<bool> ok;
  std::vector<DevicePtr> live;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<void*> pinned = device->AllocatePinned(4096);  // another kind: not counted
    ASSERT_TRUE(pinned.ok());
    ASSERT_TRUE(device->FreePinned(*pinned).ok());
    absl::StatusOr<DevicePtr> p = device->Allocate(256);
    ok.push_back(p.ok());
    if (p.ok()) live.push_back(*p);
  }
  EXPECT_EQ(ok, (std::vector<bool>{true, false, false, true, true}));
  device->InjectFault({DeviceFault::Kind::kAllocate, 0, 0});  // until cleared
  EXPECT_FALSE(device->Allocate(256).ok());
  EXPECT_FALSE(device->Allocate(256).ok());
  device->ClearFaults();
  absl::StatusOr<DevicePtr> p = device->Allocate(256);
  ASSERT_TRUE(p.ok());
  live.push_back(*p);
  for (DevicePtr q : live) EXPECT_TRUE(device->Free(q).ok());
}

TEST(EmulatedDeviceFaults, FaultsForTheNextDeviceGoToOneDeviceOnly) {
  EmulatedDevice::InjectFaultIntoNextDevice({DeviceFault::Kind::kAllocatePinned, 0, 1});
  std::unique_ptr<EmulatedDevice> first = NewDevice();
  std::unique_ptr<EmulatedDevice> second = NewDevice();
  EXPECT_EQ(first->AllocatePinned(4096).status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<void*> p = second->AllocatePinned(4096);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(second->FreePinned(*p).ok());
}

}  // namespace
}  // namespace kvtier
