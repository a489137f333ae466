// tests/common/task_pool_test.cc — TaskPool: every task runs once, on the pool's threads, in
// order with one thread, concurrently with several; the destructor runs what is queued;
// bad thread counts are refused by name.

#include "common/task_pool.h"

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(TaskPoolTest, RefusesBadThreadCountsNamingTheField) {
  for (uint32_t bad : {0u, TaskPool::kMaxThreads + 1}) {
    absl::StatusOr<std::unique_ptr<TaskPool>> pool = TaskPool::Create(bad, "codec_threads");
    ASSERT_FALSE(pool.ok());
    EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(pool.status().message().find("codec_threads = " + std::to_string(bad)),
              std::string::npos)
        << pool.status();
  }
}

TEST(TaskPoolTest, OneThreadRunsTasksInOrderOffTheCaller) {
  std::vector<int> order;
  std::set<std::thread::id> ran_on;
  {
    auto pool = TaskPool::Create(1, "t");
    ASSERT_TRUE(pool.ok());
    for (int i = 0; i < 1000; ++i) {
      (*pool)->Post([&, i] {
        order.push_back(i);  // one thread: no race
        ran_on.insert(std::this_thread::get_id());
      });
    }
  }  // the destructor runs every queued task
  ASSERT_EQ(order.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(order[i], i);
  ASSERT_EQ(ran_on.size(), 1u);
  EXPECT_EQ(ran_on.count(std::this_thread::get_id()), 0u);
}

TEST(TaskPoolTest, SeveralThreadsRunTasksConcurrentlyAndTasksMayPostTasks) {
  auto pool = TaskPool::Create(3, "t");
  ASSERT_TRUE(pool.ok());
  // Three tasks that each wait for all three to have started: only concurrent threads finish.
  std::atomic<int> started{0};
  std::atomic<int> finished{0};
  for (int i = 0; i < 3; ++i) {
    (*pool)->Post([&] {
      ++started;
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (started.load() < 3 && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
      }
      if (started.load() == 3) ++finished;
    });
  }
  std::atomic<int> chained{0};
  absl::Notification last;
  (*pool)->Post([&] {
    ++chained;
    (*pool)->Post([&] {
      ++chained;
      last.Notify();
    });
  });
  ASSERT_TRUE(last.WaitForNotificationWithTimeout(absl::Seconds(20)));
  pool->reset();
  EXPECT_EQ(finished.load(), 3);
  EXPECT_EQ(chained.load(), 2);
}

}  // namespace
}  // namespace kvtier
