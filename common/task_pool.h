// common/task_pool.h — a fixed set of worker threads running posted tasks, first in first out.
//
// For CPU work that must leave the thread that found it: the disk tier verifies and decodes
// records, and encodes them, here rather than on the I/O completion thread (one core would
// cap every read at the speed of one checksum and one copy).
//
// Promises: every task posted runs exactly once, on one of the pool's threads, in the order
// posted when there is one thread (and started in that order otherwise). The destructor runs
// every task still queued, then joins the threads. Tasks may post more tasks.
//
// Thread-safe. The pool's lock is a leaf: it is never held while a task runs. It is a plain
// std::mutex with a condition variable signalled once per task (kvtier::Mutex wakes every
// waiter at every unlock: idle workers would all wake for each task).

#ifndef KVTIER_COMMON_TASK_POOL_H_
#define KVTIER_COMMON_TASK_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"

namespace kvtier {

class TaskPool {
 public:
  // At most this many threads.
  static constexpr uint32_t kMaxThreads = 64;

  // `threads` workers (1..kMaxThreads; InvalidArgument naming `what` otherwise).
  static absl::StatusOr<std::unique_ptr<TaskPool>> Create(uint32_t threads,
                                                          const std::string& what);
  // Runs every queued task, then joins. REQUIRES: not called from one of the pool's tasks.
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  void Post(absl::AnyInvocable<void() &&> task);
  uint32_t threads() const { return static_cast<uint32_t>(threads_.size()); }

  // min(hardware threads, cap), at least 1.
  static uint32_t DefaultThreads(uint32_t cap);

 private:
  explicit TaskPool(uint32_t threads);
  void Loop();

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_;  // guarded by mu_
  bool stopping_ = false;                            // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_TASK_POOL_H_
