// Notification (common/mutex.h): waits, deadlines, and OnNotified's continuations.

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/mutex.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(Notification, OnNotifiedBeforeNotifyRunsOnTheNotifyingThreadAfterTheWaitersWake) {
  Notification n;
  std::thread::id ran_on;
  int runs = 0;
  n.OnNotified([&] {
    ran_on = std::this_thread::get_id();
    ++runs;
  });
  n.OnNotified([&] { ++runs; });
  EXPECT_EQ(runs, 0);  // queued, not run
  std::thread notifier([&] { n.Notify(); });
  const std::thread::id notifier_id = notifier.get_id();
  notifier.join();
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(ran_on, notifier_id);
  EXPECT_TRUE(n.HasBeenNotified());
}

TEST(Notification, OnNotifiedAfterNotifyRunsAtOnceOnTheCaller) {
  Notification n;
  n.Notify();
  std::thread::id ran_on;
  n.OnNotified([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(Notification, AContinuationMayDestroyTheNotification) {
  // The notifier touches no member after it starts the continuations.
  auto n = std::make_unique<Notification>();
  Notification* raw = n.get();
  bool ran = false;
  raw->OnNotified([&] {
    n.reset();
    ran = true;
  });
  raw->Notify();
  EXPECT_TRUE(ran);
  EXPECT_EQ(n, nullptr);
}

TEST(Notification, RacingOnNotifiedAndNotifyRunEveryContinuationExactlyOnce) {
  for (int round = 0; round < 200; ++round) {
    Notification n;
    std::atomic<int> runs{0};
    constexpr int kContinuations = 8;
    std::vector<std::thread> adders;
    for (int i = 0; i < kContinuations; ++i) {
      adders.emplace_back([&] { n.OnNotified([&] { runs.fetch_add(1); }); });
    }
    std::thread notifier([&] { n.Notify(); });
    for (std::thread& t : adders) t.join();
    notifier.join();
    ASSERT_EQ(runs.load(), kContinuations) << "round " << round;
  }
}

TEST(Notification, WaitWithADeadlineGivesUpThenSeesALaterNotify) {
  Notification n;
  EXPECT_FALSE(n.WaitForNotificationWithDeadline(absl::Now() + absl::Milliseconds(5)));
  std::thread notifier([&] { n.Notify(); });
  EXPECT_TRUE(n.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(30)));
  notifier.join();
}

}  // namespace
}  // namespace kvtier
