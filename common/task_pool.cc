// common/task_pool.cc — see task_pool.h.

#include "common/task_pool.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace kvtier {

absl::StatusOr<std::unique_ptr<TaskPool>> TaskPool::Create(uint32_t threads,
                                                           const std::string& what) {
  if (threads == 0 || threads > kMaxThreads) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s = %d: must be 1 to %d threads", what, threads, kMaxThreads));
  }
  return std::unique_ptr<TaskPool>(new TaskPool(threads));
}

uint32_t TaskPool::DefaultThreads(uint32_t cap) {
  const uint32_t hw = std::max(1u, std::thread::hardware_concurrency());
  return std::clamp(hw, 1u, std::max(1u, std::min(cap, kMaxThreads)));
}

TaskPool::TaskPool(uint32_t threads) {
  threads_.reserve(threads);
  for (uint32_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

TaskPool::~TaskPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void TaskPool::Post(absl::AnyInvocable<void() &&> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  ready_.notify_one();
}

void TaskPool::Loop() {
  for (;;) {
    absl::AnyInvocable<void() &&> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [this] { return !tasks_.empty() || stopping_; });
      // Stopping: the queue is still run dry (a task may post another), then the thread ends.
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    std::move(task)();
  }
}

}  // namespace kvtier
