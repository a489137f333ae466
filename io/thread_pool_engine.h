// io/thread_pool_engine.h — the fallback backend of IoEngine: worker threads doing pread /
// pwrite, for where io_uring cannot be set up (or Options::force_fallback).
//
// Same contract as the io_uring backend: Submit never blocks on I/O, short transfers are
// continued (a read that reaches end of file completes with what it got), injected faults
// behave identically, and callbacks run serialized on one completion thread. Registered
// buffers are accepted and validated but change nothing here.
//
// Threads: `fallback_threads` workers take requests from work_ (work_mu_), run each to its
// end, and queue the result on done_ (done_mu_); the completion thread takes all queued
// results at once and runs their callbacks with no lock held.

#ifndef KVTIER_IO_THREAD_POOL_ENGINE_H_
#define KVTIER_IO_THREAD_POOL_ENGINE_H_

#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "io/io_engine_base.h"

namespace kvtier::io_internal {

class ThreadPoolEngine final : public IoEngineBase {
 public:
  // `why`: why io_uring is not used ("" when forced), for backend().
  ThreadPoolEngine(const Options& options, std::string why);
  ~ThreadPoolEngine() override;

  std::string backend() const override;
  bool uses_io_uring() const override { return false; }

 private:
  bool RegisterFileSlot(int /*index*/, int /*fd*/) override { return false; }
  void UnregisterFileSlot(int /*index*/, bool /*fixed*/) override {}
  absl::Status RegisterBufferChunks(absl::Span<const iovec> /*chunks*/) override {
    return absl::OkStatus();
  }
  void Enqueue(std::vector<std::unique_ptr<IoRequest>> batch) override;

  void WorkerLoop();
  void CompletionLoop();

  const std::string why_;

  Mutex work_mu_;
  std::deque<std::unique_ptr<IoRequest>> work_ ABSL_GUARDED_BY(work_mu_);
  bool stop_workers_ ABSL_GUARDED_BY(work_mu_) = false;

  using Result = std::pair<std::unique_ptr<IoRequest>, absl::StatusOr<size_t>>;
  Mutex done_mu_;
  std::vector<Result> done_ ABSL_GUARDED_BY(done_mu_);
  bool stop_completion_ ABSL_GUARDED_BY(done_mu_) = false;

  std::vector<std::thread> workers_;
  std::thread completion_thread_;
};

}  // namespace kvtier::io_internal

#endif  // KVTIER_IO_THREAD_POOL_ENGINE_H_
