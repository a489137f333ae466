// engine/completion_queue.h — a thread that runs the engine's transfer completions, in the
// order they were posted.
//
// Why completions do not run in the stream callback itself: on CUDA a host function runs on
// a driver thread, and a completion takes the engine's placement lock. A thread holding that
// lock while it enqueues a copy can block inside the driver behind a third thread's cudaFree
// (which synchronizes the device and so waits for the host function): the host function
// would wait for the lock, the lock holder for the driver, the driver for the host function.
// Invariant: a stream callback only posts here, taking a lock that is never held around a
// device call, and every completion that takes an engine lock runs on this queue's thread.

#ifndef KVTIER_ENGINE_COMPLETION_QUEUE_H_
#define KVTIER_ENGINE_COMPLETION_QUEUE_H_

#include <cstdint>
#include <deque>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "common/mutex.h"

namespace kvtier {

class CompletionQueue {
 public:
  CompletionQueue();
  // Runs everything already posted, then stops the thread.
  ~CompletionQueue();
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  // Queues `fn` to run on the queue's thread after everything posted before it. Never
  // blocks on anything but the queue's own short lock: safe from a CUDA host function.
  void Post(absl::AnyInvocable<void() &&> fn);

  // Returns once everything posted before the call has run. REQUIRES: not called from a
  // completion (it would wait for itself) nor under a lock that a completion takes.
  void Drain();

  // Completions posted and run so far (for tests and stats).
  uint64_t posted() const;
  uint64_t completed() const;

 private:
  void Loop();

  mutable Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t posted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_COMPLETION_QUEUE_H_
