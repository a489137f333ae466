// common/mutex.h — kvtier's mutex, scoped lock and notification.
//
// Why not absl::Mutex: Debian ships Abseil compiled without ThreadSanitizer, so absl::Mutex
// (a futex-based lock whose TSan annotations only exist in a TSan build of Abseil) is
// invisible to TSan and every lock it guards reads as a data race. These wrap std::mutex and
// std::condition_variable (pthreads, which TSan intercepts) and keep Abseil's
// thread-safety annotations, so clang's -Wthread-safety still checks GUARDED_BY and
// EXCLUSIVE_LOCKS_REQUIRED.
//
// Mutex::Await(cond) keeps absl's semantics: it blocks until cond() holds, re-checking it
// whenever another thread unlocks the mutex. No explicit signalling is needed.

#ifndef KVTIER_COMMON_MUTEX_H_
#define KVTIER_COMMON_MUTEX_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvtier {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    // Wake waiters before unlocking: once the mutex is released, a waiter may return and
    // destroy the object that holds it, so nothing of it may be touched after unlock().
    if (waiters_ > 0) cv_.notify_all();
    mu_.unlock();
  }
  // Tells the thread-safety analysis the lock is held (for lambdas run under it).
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

  // Blocks until cond() is true. REQUIRES: the mutex is held; it is released while waiting.
  template <typename Cond>
  void Await(const Cond& cond) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    if (cond()) return;
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    ++waiters_;
    cv_.wait(lock, cond);
    --waiters_;
    lock.release();  // still held, by the caller's scope
  }

  // As Await, but gives up after `timeout`; returns whether cond() holds.
  template <typename Cond>
  bool AwaitWithTimeout(const Cond& cond, absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    if (cond()) return true;
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    ++waiters_;
    const bool ok = cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), cond);
    --waiters_;
    lock.release();
    return ok;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiters_ = 0;  // guarded by mu_
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A one-shot event: Notify once, wait many.
class Notification {
 public:
  // Wakes the waiters, then runs what OnNotified queued, on this thread, holding no lock.
  void Notify() {
    std::vector<absl::AnyInvocable<void() &&>> then;
    {
      MutexLock lock(&mu_);
      notified_.store(true, std::memory_order_release);
      then.swap(then_);
    }
    // No member is touched from here on: a waiter may destroy the Notification now.
    for (absl::AnyInvocable<void() &&>& fn : then) std::move(fn)();
  }
  // Runs `fn` once the Notification is notified: at once on this thread if it already is,
  // else on the notifying thread right after Notify (so `fn` must not wait for anything the
  // notifier's caller holds). A continuation instead of a thread blocked in a wait.
  void OnNotified(absl::AnyInvocable<void() &&> fn) {
    {
      MutexLock lock(&mu_);
      if (!notified_.load(std::memory_order_relaxed)) {
        then_.push_back(std::move(fn));
        return;
      }
    }
    std::move(fn)();
  }
  bool HasBeenNotified() const { return notified_.load(std::memory_order_acquire); }
  // Always through the lock (no lock-free fast path): returning only after the notifier has
  // released the mutex is what makes it safe to destroy the Notification right after.
  void WaitForNotification() {
    MutexLock lock(&mu_);
    mu_.Await([this] { return notified_.load(std::memory_order_relaxed); });
  }
  // As WaitForNotification, but gives up at `deadline`; returns whether it was notified.
  bool WaitForNotificationWithDeadline(absl::Time deadline) {
    MutexLock lock(&mu_);
    auto notified = [this] { return notified_.load(std::memory_order_relaxed); };
    if (deadline == absl::InfiniteFuture()) {
      mu_.Await(notified);
      return true;
    }
    return mu_.AwaitWithTimeout(notified, std::max(deadline - absl::Now(), absl::ZeroDuration()));
  }

 private:
  Mutex mu_;
  std::atomic<bool> notified_{false};
  std::vector<absl::AnyInvocable<void() &&>> then_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_MUTEX_H_
