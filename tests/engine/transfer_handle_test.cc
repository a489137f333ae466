// tests/engine/transfer_handle_test.cc — TransferHandleImpl::Wait returns only once the
// engine's bookkeeping of every disk read the transfer waited for is done.

#include "engine/transfer_handle.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "engine/block_table.h"
#include "gtest/gtest.h"
#include "device/emulated_device.h"

namespace kvtier {
namespace {

// A handle whose copies are done and whose completion has run, waiting on `fills`.
std::unique_ptr<TransferHandleImpl> DoneHandle(Device& device,
                                               std::vector<std::shared_ptr<HostFill>> fills) {
  absl::StatusOr<std::unique_ptr<Stream>> stream = device.CreateStream();
  EXPECT_TRUE(stream.ok()) << stream.status();
  absl::StatusOr<std::unique_ptr<Event>> event = device.CreateEvent();
  EXPECT_TRUE(event.ok()) << event.status();
  EXPECT_TRUE((*stream)->Record(**event).ok());
  EXPECT_TRUE((*stream)->Synchronize().ok());
  auto finished = std::make_shared<Notification>();
  finished->Notify();
  TransferHandleImpl::Parts parts;
  parts.done = std::shared_ptr<Event>(std::move(*event));
  parts.finished = std::move(finished);
  parts.counts = TransferHandleImpl::Counts{1, 0, 0};
  parts.fills = std::move(fills);
  return std::make_unique<TransferHandleImpl>(std::move(parts));
}

TEST(TransferHandle, WaitReturnsOnlyOnceEveryHostFillIsSettled) {
  absl::StatusOr<std::unique_ptr<EmulatedDevice>> device = EmulatedDevice::Create({});
  ASSERT_TRUE(device.ok()) << device.status();
  for (bool failed : {false, true}) {
    auto fill = std::make_shared<HostFill>();
    if (failed) fill->status = absl::DataLossError("payload_checksum");
    fill->done.Notify();  // the read is over; its bookkeeping (settled) trails
    std::unique_ptr<TransferHandleImpl> h = DoneHandle(**device, {fill});
    std::atomic<bool> settled{false};
    std::thread bookkeeping([&] {
      absl::SleepFor(absl::Milliseconds(50));
      settled.store(true);
      fill->settled.Notify();
    });
    const absl::Status s = h->Wait();
    EXPECT_TRUE(settled.load()) << "Wait returned before the read's bookkeeping (failed "
                                << failed << ")";
    EXPECT_EQ(s.ok(), !failed) << s;
    bookkeeping.join();
  }
}

}  // namespace
}  // namespace kvtier
