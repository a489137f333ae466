#include "engine/completion_queue.h"

#include <utility>

namespace kvtier {

CompletionQueue::CompletionQueue() : thread_([this] { Loop(); }) {}

CompletionQueue::~CompletionQueue() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void CompletionQueue::Post(absl::AnyInvocable<void() &&> fn) {
  MutexLock lock(&mu_);
  queue_.push_back(std::move(fn));
  ++posted_;
}

void CompletionQueue::Drain() {
  MutexLock lock(&mu_);
  const uint64_t target = posted_;
  mu_.Await([&] {
    mu_.AssertHeld();
    return completed_ >= target;
  });
}

uint64_t CompletionQueue::posted() const {
  MutexLock lock(&mu_);
  return posted_;
}

uint64_t CompletionQueue::completed() const {
  MutexLock lock(&mu_);
  return completed_;
}

void CompletionQueue::Loop() {
  for (;;) {
    absl::AnyInvocable<void() &&> fn;
    {
      MutexLock lock(&mu_);
      mu_.Await([&] {
        mu_.AssertHeld();
        return stop_ || !queue_.empty();
      });
      if (queue_.empty()) return;  // stop_ and nothing left
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    std::move(fn)();
    MutexLock lock(&mu_);
    ++completed_;
  }
}

}  // namespace kvtier
