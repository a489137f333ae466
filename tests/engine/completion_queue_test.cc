// CompletionQueue: completions run in posting order on one thread of their own, Drain waits
// for what was posted before it, Post never waits for a running completion, and closing the
// queue runs what is left.

#include "engine/completion_queue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(CompletionQueue, RunsInPostingOrderOnOneThreadThatIsNotThePoster) {
  std::vector<int> order;
  std::thread::id ran_on;
  std::atomic<int> other_threads{0};
  {
    CompletionQueue q;
    for (int i = 0; i < 1000; ++i) {
      q.Post([&, i] {
        if (i == 0) ran_on = std::this_thread::get_id();
        if (std::this_thread::get_id() != ran_on) ++other_threads;
        order.push_back(i);
      });
    }
    q.Drain();
    EXPECT_EQ(q.completed(), 1000u);
  }
  ASSERT_EQ(order.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(order[i], i);
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_EQ(other_threads.load(), 0);
}

TEST(CompletionQueue, PostDoesNotWaitForARunningCompletionAndDrainDoes) {
  CompletionQueue q;
  Notification release;
  std::atomic<bool> second_ran{false};
  q.Post([&] { release.WaitForNotification(); });  // blocks the queue's thread
  const absl::Time start = absl::Now();
  q.Post([&] { second_ran = true; });  // must not wait for the blocked completion
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    q.Drain();
    drained = true;
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(drained.load()) << "Drain returned before the completions posted earlier ran";
  EXPECT_FALSE(second_ran.load());
  release.Notify();
  drainer.join();
  EXPECT_TRUE(second_ran.load());
}

TEST(CompletionQueue, ClosingRunsWhatWasPosted) {
  std::atomic<int> ran{0};
  {
    CompletionQueue q;
    Notification release;
    q.Post([&] { release.WaitForNotification(); });
    for (int i = 0; i < 10; ++i) q.Post([&] { ++ran; });
    release.Notify();
  }  // the destructor runs the ten, then joins
  EXPECT_EQ(ran.load(), 10);
}

}  // namespace
}  // namespace kvtier
