// io/thread_pool_engine.cc — the pread / pwrite fallback backend (see thread_pool_engine.h).

#include "io/thread_pool_engine.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"

namespace kvtier::io_internal {
namespace {

// One pread / pwrite: bytes moved, or -errno.
int64_t Transfer(IoOp::Kind kind, int fd, std::byte* buffer, size_t length, uint64_t offset) {
  const ssize_t n = kind == IoOp::Kind::kRead
                        ? pread(fd, buffer, length, static_cast<off_t>(offset))
                        : pwrite(fd, buffer, length, static_cast<off_t>(offset));
  return n < 0 ? -errno : n;
}

// Runs `r` to its end on the calling thread.
absl::StatusOr<size_t> Execute(IoRequest& r) {
  if (r.fault != InjectedFault::kNone) {
    const size_t length = InjectedTransferLength(r);
    int64_t res = 0;
    if (length > 0) {
      do {
        res = Transfer(r.kind, r.fd, r.buffer, length, r.offset);
      } while (res == -EINTR);
    }
    return *AdvanceRequest(r, res);
  }
  while (true) {
    int64_t res;
    if (r.tail != nullptr) {
      const int n = r.NextIov();
      const ssize_t got = preadv(r.fd, r.iov, n, static_cast<off_t>(r.next_offset()));
      res = got < 0 ? -errno : got;
    } else {
      res = Transfer(r.kind, r.fd, r.next_buffer(), r.next_length(), r.next_offset());
    }
    if (std::optional<absl::StatusOr<size_t>> result = AdvanceRequest(r, res)) {
      return *std::move(result);
    }
  }
}

}  // namespace

ThreadPoolEngine::ThreadPoolEngine(const Options& options, std::string why)
    : IoEngineBase(options), why_(std::move(why)) {
  completion_thread_ = std::thread([this] { CompletionLoop(); });
  SetCompletionThread(completion_thread_.get_id());
  for (uint32_t i = 0; i < options_.fallback_threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPoolEngine::~ThreadPoolEngine() {
  DrainForDestruction();
  {
    MutexLock lock(&work_mu_);
    stop_workers_ = true;
  }
  for (std::thread& t : workers_) t.join();
  {
    MutexLock lock(&done_mu_);
    stop_completion_ = true;
  }
  completion_thread_.join();
}

std::string ThreadPoolEngine::backend() const {
  if (why_.empty()) return absl::StrFormat("thread pool (%d)", options_.fallback_threads);
  return absl::StrFormat("thread pool (%d; io_uring unavailable: %s)", options_.fallback_threads,
                         why_);
}

void ThreadPoolEngine::Enqueue(std::vector<std::unique_ptr<IoRequest>> batch) {
  MutexLock lock(&work_mu_);
  for (std::unique_ptr<IoRequest>& r : batch) work_.push_back(std::move(r));
}

void ThreadPoolEngine::WorkerLoop() {
  while (true) {
    std::unique_ptr<IoRequest> r;
    {
      MutexLock lock(&work_mu_);
      work_mu_.Await([this] {
        work_mu_.AssertHeld();
        return stop_workers_ || !work_.empty();
      });
      if (work_.empty()) return;  // stopping, and nothing left
      r = std::move(work_.front());
      work_.pop_front();
    }
    absl::StatusOr<size_t> result = Execute(*r);
    MutexLock lock(&done_mu_);
    done_.emplace_back(std::move(r), std::move(result));
  }
}

void ThreadPoolEngine::CompletionLoop() {
  std::vector<Result> batch;
  while (true) {
    {
      MutexLock lock(&done_mu_);
      done_mu_.Await([this] {
        done_mu_.AssertHeld();
        return stop_completion_ || !done_.empty();
      });
      if (done_.empty()) return;
      batch.swap(done_);
    }
    for (Result& result : batch) Finish(std::move(result.first), std::move(result.second));
    batch.clear();
  }
}

}  // namespace kvtier::io_internal
