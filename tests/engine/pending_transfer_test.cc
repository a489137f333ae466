// PendingTransfer: a transfer's completion runs after its copies and before its handle's Wait
// returns; a step that fails (a copy, the event, or attaching the completion) makes every
// later step a no-op, Settle waits for what was enqueued, and the completion never runs.

#include "engine/pending_transfer.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "device/emulated_device.h"
#include "engine/placement.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

class PendingTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DeviceOptions o;
    o.emulated_copy_gbps = 0.5;  // slow enough to see a copy in flight
    absl::StatusOr<std::unique_ptr<EmulatedDevice>> d = EmulatedDevice::Create(o);
    ASSERT_TRUE(d.ok()) << d.status();
    device_ = std::move(*d);
    absl::StatusOr<std::unique_ptr<Stream>> s = device_->CreateStream();
    ASSERT_TRUE(s.ok());
    stream_ = std::move(*s);
    absl::StatusOr<void*> host = device_->AllocatePinned(2 * g_.block_bytes());
    ASSERT_TRUE(host.ok());
    host_ = static_cast<char*>(*host);
    for (size_t i = 0; i < 2 * g_.block_bytes(); ++i) host_[i] = static_cast<char>(i % 251);
    absl::StatusOr<DevicePtr> dst = device_->Allocate(2 * g_.block_bytes());
    ASSERT_TRUE(dst.ok());
    dst_ = *dst;
  }
  void TearDown() override {
    completions_.Drain();
    stream_.reset();
    EXPECT_TRUE(device_->Free(dst_).ok());
    EXPECT_TRUE(device_->FreePinned(host_).ok());
  }
  std::vector<BlockCopy> Copies() {
    std::vector<BlockCopy> c;
    for (size_t i = 0; i < 2; ++i) {
      c.push_back({Endpoint::Slot({DevicePtr(), host_ + i * g_.block_bytes()}),
                   Endpoint::Slot({dst_ + i * g_.block_bytes(), nullptr})});
    }
    return c;
  }
  PendingTransfer Begin(uint32_t layer_events = 0) {
    absl::StatusOr<PendingTransfer> t =
        PendingTransfer::Create(*device_, completions_, "Load", layer_events);
    EXPECT_TRUE(t.ok()) << t.status();
    t->set_stream(stream_.get());
    return std::move(*t);
  }

  // 64 KiB blocks: 2 layers x 8 kv heads x 64 dim x fp16 x 32 tokens.
  const Geometry g_{2, 8, 64, DType::kFloat16, 32};
  std::unique_ptr<EmulatedDevice> device_;
  std::unique_ptr<Stream> stream_;
  CompletionQueue completions_;
  char* host_ = nullptr;
  DevicePtr dst_;
};

TEST_F(PendingTransferTest, TheCompletionRunsAfterTheCopiesAndBeforeWaitReturns) {
  const CopyPlanner planner(g_, *device_, 512 << 10);
  PendingTransfer t = Begin(g_.num_layers);
  std::atomic<bool> completed{false};
  ASSERT_TRUE(t.Enqueue(planner, Copies(), /*layerwise=*/true).ok());
  ASSERT_TRUE(t.Finish([&] { completed = true; }).ok());
  TransferHandleImpl::Parts parts;
  parts.counts.moved = 2;
  std::unique_ptr<TransferHandleImpl> h = t.TakeHandle(std::move(parts));
  ASSERT_TRUE(h->WaitLayerHost(1).ok());
  ASSERT_TRUE(h->Wait().ok());
  EXPECT_TRUE(completed.load()) << "Wait returned before the completion ran";
  EXPECT_EQ(h->blocks_moved(), 2u);
  std::vector<char> back(2 * g_.block_bytes());
  ASSERT_TRUE(stream_->CopyToHost(back.data(), dst_, back.size()).ok());
  ASSERT_TRUE(stream_->Synchronize().ok());
  EXPECT_EQ(std::memcmp(back.data(), host_, back.size()), 0);
}

TEST_F(PendingTransferTest, AFailedAttachOfTheCompletionFailsTheTransferCleanly) {
  const CopyPlanner planner(g_, *device_, 512 << 10);
  PendingTransfer t = Begin();
  ASSERT_TRUE(t.Enqueue(planner, Copies(), /*layerwise=*/false).ok());
  device_->InjectFault({DeviceFault::Kind::kCallback, 0, 1});
  bool completed = false;
  const absl::Status s = t.Finish([&] { completed = true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "Load: ")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "attaching its completion")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "cudaLaunchHostFunc")) << s;
  EXPECT_FALSE(t.ok());
  EXPECT_EQ(t.status(), s);
  // The copies were enqueued: Settle waits for them, so the buffers are no longer in use.
  t.Settle();
  absl::StatusOr<bool> idle = t.done()->Query();
  ASSERT_TRUE(idle.ok());
  EXPECT_TRUE(*idle);
  completions_.Drain();
  EXPECT_FALSE(completed) << "the completion of a failed transfer ran";
}

TEST_F(PendingTransferTest, AfterAFailedStepEveryLaterStepIsANoOpAndTheFirstErrorStays) {
  const CopyPlanner planner(g_, *device_, 512 << 10);
  PendingTransfer t = Begin();
  device_->InjectFault({DeviceFault::Kind::kCopy, 0, 1});
  const absl::Status first = t.Enqueue(planner, Copies(), /*layerwise=*/false);
  EXPECT_EQ(first.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(first.message(), "Load: enqueueing copies: ")) << first;
  device_->InjectFault({DeviceFault::Kind::kEventRecord, 0, 1});
  bool completed = false;
  EXPECT_EQ(t.Finish([&] { completed = true; }), first);
  // The event-record fault is still armed: Finish never reached the device.
  absl::StatusOr<std::unique_ptr<Event>> e = device_->CreateEvent();
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(stream_->Record(**e).ok()) << "Finish recorded its event after a failed step";
  t.Settle();
  completions_.Drain();
  EXPECT_FALSE(completed);
}

TEST_F(PendingTransferTest, NothingEnqueuedIsReadyAtOnceAndDropsTheCompletion) {
  PendingTransfer t = Begin(g_.num_layers);
  bool completed = false;
  ASSERT_TRUE(t.Finish([&] { completed = true; }).ok());
  EXPECT_FALSE(t.enqueued());
  std::unique_ptr<TransferHandleImpl> h = t.TakeHandle({});
  EXPECT_TRUE(h->IsReady());
  EXPECT_TRUE(h->Wait().ok());
  EXPECT_TRUE(h->WaitLayerHost(0).ok()) << "a load with nothing to copy has every layer ready";
  EXPECT_FALSE(completed);
}

TEST_F(PendingTransferTest, WaitAfterOrdersTheCopiesAfterTheCallersStream) {
  const CopyPlanner planner(g_, *device_, 512 << 10);
  absl::StatusOr<std::unique_ptr<Stream>> caller = device_->CreateStream();
  ASSERT_TRUE(caller.ok());
  Notification gate;
  // The caller's "compute" is still running: a callback that holds its stream.
  ASSERT_TRUE((*caller)->AddCallback([&gate] { gate.WaitForNotification(); }).ok());
  PendingTransfer t = Begin();
  ASSERT_TRUE(t.WaitAfter(caller->get()).ok());
  ASSERT_TRUE(t.Enqueue(planner, Copies(), false).ok());
  ASSERT_TRUE(t.Finish([] {}).ok());
  std::unique_ptr<TransferHandleImpl> h = t.TakeHandle({});
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(h->IsReady()) << "the copies did not wait for the caller's stream";
  gate.Notify();
  EXPECT_TRUE(h->Wait().ok());
  ASSERT_TRUE((*caller)->Synchronize().ok());
}

TEST_F(PendingTransferTest, AFillsFailureIsTheTransfersAndAReuseGateHoldsTheStream) {
  const CopyPlanner planner(g_, *device_, 512 << 10);
  PendingTransfer t = Begin();
  auto fill = std::make_shared<HostFill>();
  SlotReuse reuse;
  reuse.gate = std::make_shared<Notification>();
  ASSERT_TRUE(t.WaitForReuse(reuse).ok());
  ASSERT_TRUE(t.WaitForFill(fill).ok());
  ASSERT_TRUE(t.Enqueue(planner, Copies(), false).ok());
  ASSERT_TRUE(t.Finish([] {}).ok());
  std::unique_ptr<TransferHandleImpl> h = t.TakeHandle({});
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(h->IsReady());
  reuse.gate->Notify();
  fill->status = absl::DataLossError("payload checksum");
  fill->done.Notify();
  fill->settled.Notify();
  EXPECT_EQ(h->Wait().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kvtier
