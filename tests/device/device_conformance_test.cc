// tests/device/device_conformance_test.cc — the contract of include/kvtier/device.h, checked
// against one Device implementation.
//
// Built twice: kernels_emulated_conformance_test (the emulated device, with a throttled copy
// link so that copies are slow enough for ordering bugs to show) and, where CUDA is built,
// kernels_cuda_conformance_test (KVTIER_TEST_CUDA_DEVICE; skips, saying why, when this
// machine has no usable GPU). States such as "the stream has not got there yet" are made
// deterministic with a Gate callback that holds a stream until the test opens it.

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/copy_kernels.h"
#include "kvtier/device.h"
#include "tests/device/test_util.h"

#if defined(KVTIER_TEST_CUDA_DEVICE)
#include "device/cuda_device.h"
#endif

namespace kvtier {
namespace {

using testing_util::Gate;
using testing_util::RandomBytes;

// Emulated link bandwidth: 64 MiB takes about 34 ms per direction.
constexpr double kEmulatedGbps = 2.0;
constexpr size_t kSlowCopyBytes = size_t{64} << 20;

class DeviceConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    DeviceOptions options;
#if defined(KVTIER_TEST_CUDA_DEVICE)
    absl::StatusOr<int> count = CudaDeviceCount();
    if (!count.ok() || *count == 0) {
      GTEST_SKIP() << "no CUDA device on this machine ("
                   << (count.ok() ? std::string("0 devices") : count.status().ToString())
                   << "); the CUDA device is tested where a GPU is present";
    }
    options.choice = DeviceChoice::kCuda;
#else
    options.choice = DeviceChoice::kEmulated;
    options.emulated_copy_gbps = kEmulatedGbps;
#endif
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
  }

  void TearDown() override {
    streams_.clear();
    events_.clear();
    if (device_ == nullptr) return;
    for (DevicePtr ptr : allocations_) KVTIER_EXPECT_OK(device_->Free(ptr));
    for (void* ptr : pinned_) KVTIER_EXPECT_OK(device_->FreePinned(ptr));
    device_.reset();
  }

  // Device memory freed at TearDown; null (and a test failure) if allocation fails.
  DevicePtr Allocate(size_t bytes) {
    absl::StatusOr<DevicePtr> ptr = device_->Allocate(bytes);
    EXPECT_TRUE(ptr.ok()) << ptr.status();
    if (!ptr.ok()) return DevicePtr();
    allocations_.push_back(*ptr);
    return *ptr;
  }
  // Pinned host memory freed at TearDown.
  uint8_t* AllocatePinned(size_t bytes) {
    absl::StatusOr<void*> ptr = device_->AllocatePinned(bytes);
    EXPECT_TRUE(ptr.ok()) << ptr.status();
    if (!ptr.ok()) return nullptr;
    pinned_.push_back(*ptr);
    return static_cast<uint8_t*>(*ptr);
  }
  // Streams and events live until TearDown (before the device goes).
  Stream& NewStream() {
    absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
    EXPECT_TRUE(stream.ok()) << stream.status();
    if (!stream.ok()) std::abort();
    streams_.push_back(std::move(*stream));
    return *streams_.back();
  }
  Event& NewEvent() {
    absl::StatusOr<std::unique_ptr<Event>> event = device_->CreateEvent();
    EXPECT_TRUE(event.ok()) << event.status();
    if (!event.ok()) std::abort();
    events_.push_back(std::move(*event));
    return *events_.back();
  }

  std::unique_ptr<Device> device_;

 private:
  std::vector<DevicePtr> allocations_;
  std::vector<void*> pinned_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<std::unique_ptr<Event>> events_;
};

// One suite name per device, so that CTest's names (Suite.Test) stay unique.
#if defined(KVTIER_TEST_CUDA_DEVICE)
#define KVTIER_CONFORMANCE_SUITE CudaDeviceConformance
#else
#define KVTIER_CONFORMANCE_SUITE EmulatedDeviceConformance
#endif
using KVTIER_CONFORMANCE_SUITE = DeviceConformance;

TEST_F(KVTIER_CONFORMANCE_SUITE, RoundTripsAreByteExact) {
  Stream& stream = NewStream();
  for (size_t bytes : {size_t{1}, size_t{7}, size_t{4096}, (size_t{1} << 20) + 13}) {
    SCOPED_TRACE(absl::StrFormat("%d bytes", bytes));
    const std::vector<uint8_t> source = RandomBytes(bytes, bytes);
    // Odd offsets inside the allocations: copies need not be aligned.
    DevicePtr a = Allocate(bytes + 64);
    DevicePtr b = Allocate(bytes + 64);
    std::vector<uint8_t> back(bytes, 0);
    KVTIER_ASSERT_OK(stream.CopyToDevice(a + 3, source.data(), bytes));
    KVTIER_ASSERT_OK(stream.CopyOnDevice(b + 17, a + 3, bytes));
    KVTIER_ASSERT_OK(stream.CopyToHost(back.data(), b + 17, bytes));
    KVTIER_ASSERT_OK(stream.Synchronize());
    EXPECT_EQ(back, source);
  }
}

TEST_F(KVTIER_CONFORMANCE_SUITE, PinnedRoundTripIsByteExact) {
  constexpr size_t kBytes = (size_t{4} << 20) + 1;
  const std::vector<uint8_t> source = RandomBytes(kBytes, 42);
  uint8_t* in = AllocatePinned(kBytes);
  uint8_t* out = AllocatePinned(kBytes);
  ASSERT_NE(in, nullptr);
  ASSERT_NE(out, nullptr);
  std::memcpy(in, source.data(), kBytes);
  DevicePtr d = Allocate(kBytes);
  Stream& stream = NewStream();
  KVTIER_ASSERT_OK(stream.CopyToDevice(d, in, kBytes));
  KVTIER_ASSERT_OK(stream.CopyToHost(out, d, kBytes));
  KVTIER_ASSERT_OK(stream.Synchronize());
  EXPECT_EQ(std::memcmp(out, source.data(), kBytes), 0);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, RegisteredHostMemoryRoundTripsAndBadRegistrationsAreErrors) {
  constexpr size_t kBytes = size_t{2} << 20;
  const std::vector<uint8_t> source = RandomBytes(kBytes, 43);
  void* raw = nullptr;
  ASSERT_EQ(posix_memalign(&raw, 4096, 2 * kBytes), 0);
  std::unique_ptr<void, decltype(&std::free)> owner(raw, &std::free);
  auto* in = static_cast<uint8_t*>(raw);
  uint8_t* out = in + kBytes;
  std::memcpy(in, source.data(), kBytes);
  std::memset(out, 0x5a, kBytes);
  KVTIER_ASSERT_OK(device_->RegisterHostMemory(raw, 2 * kBytes));
  // Overlapping registrations and unknown starts are refused, naming the range.
  absl::Status overlap = device_->RegisterHostMemory(in + 4096, 4096);
  EXPECT_EQ(overlap.code(), absl::StatusCode::kInvalidArgument) << overlap;
  EXPECT_EQ(device_->RegisterHostMemory(nullptr, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device_->RegisterHostMemory(raw, 0).code(), absl::StatusCode::kInvalidArgument);
  absl::Status unknown = device_->UnregisterHostMemory(in + 4096);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.message(), "UnregisterHostMemory")) << unknown;

  DevicePtr d = Allocate(kBytes);
  Stream& stream = NewStream();
  KVTIER_ASSERT_OK(stream.CopyToDevice(d, in, kBytes));
  KVTIER_ASSERT_OK(stream.CopyToHost(out, d, kBytes));
  KVTIER_ASSERT_OK(stream.Synchronize());
  EXPECT_EQ(std::memcmp(out, source.data(), kBytes), 0);
  KVTIER_ASSERT_OK(device_->UnregisterHostMemory(raw));
  EXPECT_EQ(device_->UnregisterHostMemory(raw).code(), absl::StatusCode::kInvalidArgument);
}

// What both devices refuse to register as device memory. (What each accepts differs: CUDA
// device memory allocated outside kvtier, the emulated device host memory the caller owns;
// cuda_device_test.cc and emulated_device_test.cc test those.)
TEST_F(KVTIER_CONFORMANCE_SUITE, DeviceMemoryRegistrationRefusesBadRanges) {
  DevicePtr own = Allocate(1 << 20);
  EXPECT_EQ(device_->RegisterDeviceMemory(DevicePtr(), 4096).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device_->RegisterDeviceMemory(own, 0).code(), absl::StatusCode::kInvalidArgument);
  // Memory the device allocated is its own already.
  absl::Status status = device_->RegisterDeviceMemory(own + 4096, 4096);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "RegisterDeviceMemory")) << status;
  // Pinned host memory is host memory.
  absl::StatusOr<void*> pinned = device_->AllocatePinned(8192);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  status = device_->RegisterDeviceMemory(
      DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(*pinned)), 8192);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "host memory")) << status;
  KVTIER_EXPECT_OK(device_->FreePinned(*pinned));
  // Unknown starts, and allocations, are not registrations.
  status = device_->UnregisterDeviceMemory(own);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "UnregisterDeviceMemory")) << status;
  EXPECT_EQ(device_->UnregisterDeviceMemory(DevicePtr::FromAddress(0x1000)).code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(device_->Contains(own, 1 << 20));
}

TEST_F(KVTIER_CONFORMANCE_SUITE, CopyBatchRoundTripIsByteExact) {
  constexpr size_t kChunks = 16;
  constexpr size_t kChunk = 64 * 1024 + 3;
  const std::vector<uint8_t> source = RandomBytes(kChunks * kChunk, 7);
  std::vector<uint8_t> back(source.size(), 0);
  DevicePtr a = Allocate(source.size());
  DevicePtr b = Allocate(source.size());
  std::vector<CopyOp> up, across, down;
  for (size_t i = 0; i < kChunks; ++i) {
    // Scatter chunk i to slot (kChunks - 1 - i) and back again: order inside a batch counts.
    const size_t slot = kChunks - 1 - i;
    up.push_back({.kind = CopyOp::Kind::kHostToDevice,
                  .src_host = source.data() + i * kChunk,
                  .dst_device = a + slot * kChunk,
                  .bytes = kChunk});
    across.push_back({.kind = CopyOp::Kind::kDeviceToDevice,
                      .src_device = a + slot * kChunk,
                      .dst_device = b + slot * kChunk,
                      .bytes = kChunk});
    down.push_back({.kind = CopyOp::Kind::kDeviceToHost,
                    .src_device = b + slot * kChunk,
                    .dst_host = back.data() + i * kChunk,
                    .bytes = kChunk});
  }
  Stream& stream = NewStream();
  KVTIER_ASSERT_OK(stream.CopyBatch(up));
  KVTIER_ASSERT_OK(stream.CopyBatch(across));
  KVTIER_ASSERT_OK(stream.CopyBatch(down));
  KVTIER_ASSERT_OK(stream.Synchronize());
  EXPECT_EQ(back, source);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, CopyBatchIsAllOrNothing) {
  constexpr size_t kBytes = 4096;
  DevicePtr d = Allocate(kBytes);
  Stream& stream = NewStream();
  KVTIER_ASSERT_OK(stream.Launch(MakeFillKernel(d, kBytes, /*seed=*/1)));
  KVTIER_ASSERT_OK(stream.Synchronize());

  const std::vector<uint8_t> source = RandomBytes(kBytes, 3);
  std::vector<uint8_t> sink(kBytes);
  const CopyOp ops[] = {
      {.kind = CopyOp::Kind::kHostToDevice,
       .src_host = source.data(),
       .dst_device = d,
       .bytes = kBytes},
      {.kind = CopyOp::Kind::kDeviceToHost, .src_device = d, .dst_host = nullptr, .bytes = 16},
  };
  absl::Status status = stream.CopyBatch(ops);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "op 1")) << status;
  KVTIER_ASSERT_OK(stream.Synchronize());

  // The valid first op must not have run.
  std::vector<uint8_t> back(kBytes);
  KVTIER_ASSERT_OK(stream.CopyToHost(back.data(), d, kBytes));
  KVTIER_ASSERT_OK(stream.Synchronize());
  EXPECT_EQ(FindPatternMismatch(back.data(), kBytes, 1), kBytes);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, NullPointersAreRejectedAndZeroByteCopiesAreNoOps) {
  DevicePtr d = Allocate(256);
  uint8_t host[256] = {};
  Stream& stream = NewStream();
  EXPECT_EQ(stream.CopyToDevice(d, nullptr, 16).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stream.CopyToDevice(DevicePtr(), host, 16).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stream.CopyToHost(nullptr, d, 16).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stream.CopyOnDevice(DevicePtr(), d, 16).code(), absl::StatusCode::kInvalidArgument);
  KVTIER_EXPECT_OK(stream.CopyToDevice(DevicePtr(), nullptr, 0));
  KVTIER_EXPECT_OK(stream.CopyToHost(nullptr, DevicePtr(), 0));
  KVTIER_EXPECT_OK(stream.CopyOnDevice(DevicePtr(), DevicePtr(), 0));
  KVTIER_EXPECT_OK(stream.CopyBatch({}));
  KVTIER_EXPECT_OK(stream.Synchronize());
}

TEST_F(KVTIER_CONFORMANCE_SUITE, StreamRunsInOrderSoACallbackSeesCompletedCopies) {
  const std::vector<uint8_t> source = RandomBytes(kSlowCopyBytes, 11);
  std::vector<uint8_t> back(kSlowCopyBytes, 0);
  DevicePtr d = Allocate(kSlowCopyBytes);
  Stream& stream = NewStream();
  Mutex mu;
  bool ran = false;
  bool saw_data = false;
  KVTIER_ASSERT_OK(stream.CopyToDevice(d, source.data(), kSlowCopyBytes));
  KVTIER_ASSERT_OK(stream.CopyToHost(back.data(), d, kSlowCopyBytes));
  KVTIER_ASSERT_OK(stream.AddCallback([&] {
    const bool equal = back == source;
    MutexLock lock(&mu);
    ran = true;
    saw_data = equal;
  }));
  KVTIER_ASSERT_OK(stream.Synchronize());
  MutexLock lock(&mu);
  EXPECT_TRUE(ran);
  EXPECT_TRUE(saw_data);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, EventOrdersWorkAcrossStreams) {
  const std::vector<uint8_t> source = RandomBytes(kSlowCopyBytes, 5);
  std::vector<uint8_t> back(kSlowCopyBytes, 0);
  DevicePtr x = Allocate(kSlowCopyBytes);
  DevicePtr y = Allocate(kSlowCopyBytes);
  Stream& a = NewStream();
  Stream& b = NewStream();
  Event& written = NewEvent();
  // x starts as something else, so B copying it too early shows.
  KVTIER_ASSERT_OK(a.Launch(MakeFillKernel(x, kSlowCopyBytes, 99)));
  KVTIER_ASSERT_OK(a.Synchronize());

  KVTIER_ASSERT_OK(a.CopyToDevice(x, source.data(), kSlowCopyBytes));  // slow
  KVTIER_ASSERT_OK(a.Record(written));
  KVTIER_ASSERT_OK(b.Wait(written));
  KVTIER_ASSERT_OK(b.CopyOnDevice(y, x, kSlowCopyBytes));
  KVTIER_ASSERT_OK(b.CopyToHost(back.data(), y, kSlowCopyBytes));
  KVTIER_ASSERT_OK(b.Synchronize());  // Only B: the wait alone must order it after A's copy.
  EXPECT_TRUE(back == source) << "stream B ran before the event it waited on";
  KVTIER_ASSERT_OK(a.Synchronize());
}

TEST_F(KVTIER_CONFORMANCE_SUITE, StreamWaitHoldsLaterWorkUntilTheEventCompletes) {
  Stream& a = NewStream();
  Stream& b = NewStream();
  Event& a_done = NewEvent();
  Event& b_done = NewEvent();
  Gate gate;
  KVTIER_ASSERT_OK(gate.Block(a));
  KVTIER_ASSERT_OK(a.Record(a_done));
  KVTIER_ASSERT_OK(b.Wait(a_done));  // Returns at once: the host does not block.
  KVTIER_ASSERT_OK(b.Record(b_done));
  // Re-recording a_done now does not change what B waits for (the capture at Wait time).
  KVTIER_ASSERT_OK(NewStream().Record(a_done));

  absl::SleepFor(absl::Milliseconds(20));
  absl::StatusOr<bool> done = b_done.Query();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_FALSE(*done) << "stream B passed its Wait before stream A reached the event";

  gate.Open();
  KVTIER_ASSERT_OK(b_done.Synchronize());
  done = b_done.Query();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, QueryIsFalseUntilTheCapturedWorkCompletes) {
  Stream& stream = NewStream();
  Event& event = NewEvent();
  Gate gate;
  KVTIER_ASSERT_OK(gate.Block(stream));
  KVTIER_ASSERT_OK(stream.Record(event));
  absl::StatusOr<bool> done = event.Query();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_FALSE(*done);
  gate.Open();
  KVTIER_ASSERT_OK(event.Synchronize());
  done = event.Query();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  // Work enqueued after the Record is not part of it.
  Gate second;
  KVTIER_ASSERT_OK(second.Block(stream));
  done = event.Query();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  KVTIER_EXPECT_OK(event.Synchronize());
  second.Open();
  KVTIER_ASSERT_OK(stream.Synchronize());
}

TEST_F(KVTIER_CONFORMANCE_SUITE, NeverRecordedEventIsComplete) {
  Event& event = NewEvent();
  absl::StatusOr<bool> done = event.Query();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  KVTIER_EXPECT_OK(event.Synchronize());
  Stream& stream = NewStream();
  KVTIER_EXPECT_OK(stream.Wait(event));
  KVTIER_EXPECT_OK(stream.Synchronize());
}

TEST_F(KVTIER_CONFORMANCE_SUITE, DestroyingAStreamRunsItsQueuedWork) {
  std::atomic<bool> ran{false};
  const std::vector<uint8_t> source(kSlowCopyBytes / 4, 1);
  DevicePtr d = Allocate(source.size());
  {
    absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    KVTIER_ASSERT_OK((*stream)->CopyToDevice(d, source.data(), source.size()));
    KVTIER_ASSERT_OK((*stream)->AddCallback([&ran] { ran = true; }));
  }
  EXPECT_TRUE(ran);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, DeviceSynchronizeWaitsForEveryStream) {
  constexpr int kStreams = 3;
  std::atomic<int> ran{0};
  std::vector<std::vector<uint8_t>> sources;
  for (int i = 0; i < kStreams; ++i) {
    Stream& stream = NewStream();
    sources.push_back(RandomBytes(kSlowCopyBytes / 8, i));
    KVTIER_ASSERT_OK(
        stream.CopyToDevice(Allocate(sources.back().size()), sources.back().data(),
                            sources.back().size()));
    KVTIER_ASSERT_OK(stream.AddCallback([&ran] { ran.fetch_add(1); }));
  }
  KVTIER_ASSERT_OK(device_->Synchronize());
  EXPECT_EQ(ran.load(), kStreams);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, AllocationsAreAlignedAndContainsKnowsTheirBounds) {
  for (size_t bytes : {size_t{1}, size_t{1000}, size_t{1} << 20}) {
    DevicePtr d = Allocate(bytes);
    EXPECT_EQ(d.address() % 256, 0u);
    EXPECT_TRUE(device_->Contains(d, bytes));
    EXPECT_TRUE(device_->Contains(d + (bytes - 1), 1));
    EXPECT_FALSE(device_->Contains(d, bytes + 1));
    EXPECT_FALSE(device_->Contains(d + bytes, 1));
    uint8_t* pinned = AllocatePinned(bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(pinned) % 4096, 0u);
  }
  absl::StatusOr<DevicePtr> gone = device_->Allocate(4096);
  ASSERT_TRUE(gone.ok()) << gone.status();
  KVTIER_ASSERT_OK(device_->Free(*gone));
  EXPECT_FALSE(device_->Contains(*gone, 1));
}

TEST_F(KVTIER_CONFORMANCE_SUITE, FreeingTwiceOrFreeingForeignPointersIsAnErrorNamingThePointer) {
  absl::StatusOr<DevicePtr> d = device_->Allocate(4096);
  ASSERT_TRUE(d.ok()) << d.status();
  const DevicePtr inside = *d + 256;
  absl::Status status = device_->Free(inside);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), absl::StrFormat("0x%x", inside.address())))
      << status;
  KVTIER_ASSERT_OK(device_->Free(*d));
  status = device_->Free(*d);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), absl::StrFormat("0x%x", d->address())))
      << status;

  int not_pinned = 0;
  status = device_->FreePinned(&not_pinned);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  absl::StatusOr<void*> pinned = device_->AllocatePinned(100);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  KVTIER_ASSERT_OK(device_->FreePinned(*pinned));
  EXPECT_EQ(device_->FreePinned(*pinned).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KVTIER_CONFORMANCE_SUITE, FillKernelMatchesItsCpuReference) {
  constexpr size_t kBytes = (size_t{1} << 20) + 5;
  DevicePtr d = Allocate(kBytes + 3);
  Stream& stream = NewStream();
  // At an unaligned address, with a partial last word.
  KVTIER_ASSERT_OK(stream.Launch(MakeFillKernel(d + 3, kBytes, 0x1234)));
  std::vector<uint8_t> back(kBytes);
  KVTIER_ASSERT_OK(stream.CopyToHost(back.data(), d + 3, kBytes));
  KVTIER_ASSERT_OK(stream.Synchronize());
  std::vector<uint8_t> expected(kBytes);
  FillPatternCpu(expected.data(), kBytes, 0x1234);
  EXPECT_EQ(back, expected);
  EXPECT_EQ(FindPatternMismatch(back.data(), kBytes, 0x1234), kBytes);
  EXPECT_LT(FindPatternMismatch(back.data(), kBytes, 0x1235), size_t{8});
}

TEST_F(KVTIER_CONFORMANCE_SUITE, KernelWithoutAnImplementationHereIsUnimplemented) {
  Stream& stream = NewStream();
  KernelLaunch kernel;
  kernel.name = "no_such_kernel";
  absl::Status status = stream.Launch(std::move(kernel));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "no_such_kernel")) << status;
  EXPECT_EQ(stream.AddCallback(nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// Several host threads, each with its own stream, copying and signalling each other through
// events at once. Run under ThreadSanitizer, this is the data-race check of the device.
TEST_F(KVTIER_CONFORMANCE_SUITE, ManyThreadsWithTheirOwnStreams) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 12;
  constexpr size_t kBytes = 256 * 1024 + 9;
  std::vector<Event*> events;
  std::vector<Stream*> streams;
  std::vector<DevicePtr> a, b;
  for (int t = 0; t < kThreads; ++t) {
    events.push_back(&NewEvent());
    streams.push_back(&NewStream());
    a.push_back(Allocate(kBytes));
    b.push_back(Allocate(kBytes));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Stream& stream = *streams[t];
      std::vector<uint8_t> back(kBytes);
      for (int round = 0; round < kRounds; ++round) {
        const std::vector<uint8_t> source = RandomBytes(kBytes, t * 1000 + round);
        bool ok = stream.CopyToDevice(a[t], source.data(), kBytes).ok();
        // Wait on a neighbour's latest capture: cross-thread Record / Wait / Query.
        ok &= stream.Wait(*events[(t + 1) % kThreads]).ok();
        ok &= stream.CopyOnDevice(b[t], a[t], kBytes).ok();
        ok &= stream.CopyToHost(back.data(), b[t], kBytes).ok();
        ok &= stream.Record(*events[t]).ok();
        ok &= events[(t + 2) % kThreads]->Query().ok();
        ok &= events[t]->Synchronize().ok();
        ok &= back == source;
        if (round % 4 == 0) ok &= device_->Synchronize().ok();
        if (!ok) failures.fetch_add(1);
      }
      if (!stream.Synchronize().ok()) failures.fetch_add(1);
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace kvtier
