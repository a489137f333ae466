// io/uring_engine.h — the io_uring backend of IoEngine.
//
// One ring. At most `queue_depth` requests are in the kernel at a time (the completion queue
// is twice that, so it never overflows); the rest wait in a backlog that the completion thread
// feeds into the ring as completions free room, so Submit never blocks on a full ring and
// never drops an op, and Submit from a callback cannot deadlock. A batch that fits is one
// io_uring_submit. Files go into a sparse fixed-file table of kFixedFileSlots slots (plain fds
// beyond it, or if the kernel lacks it); buffers inside registered regions use READ_FIXED /
// WRITE_FIXED.
//
// Threads: submitters (any thread, sq_mu_) fill SQEs and call io_uring_submit; the completion
// thread alone reaps CQEs, takes sq_mu_ once per reaped batch (which also orders the
// submitter's writes to each request before the completion thread reads them), resubmits
// remainders, refills the ring from the backlog, and then, with no lock held, runs callbacks.

#ifndef KVTIER_IO_URING_ENGINE_H_
#define KVTIER_IO_URING_ENGINE_H_

#include <liburing.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "io/io_engine_base.h"

namespace kvtier::io_internal {

inline constexpr unsigned kFixedFileSlots = 64;

class UringEngine final : public IoEngineBase {
 public:
  // An error (saying why) when io_uring cannot be used here; the caller falls back.
  static absl::StatusOr<std::unique_ptr<UringEngine>> Create(const Options& options);
  ~UringEngine() override;

  std::string backend() const override;
  bool uses_io_uring() const override { return true; }

 private:
  explicit UringEngine(const Options& options) : IoEngineBase(options) {}
  absl::Status Init();

  bool RegisterFileSlot(int index, int fd) override;
  void UnregisterFileSlot(int index, bool fixed) override;
  absl::Status RegisterBufferChunks(absl::Span<const iovec> chunks) override;
  void Enqueue(std::vector<std::unique_ptr<IoRequest>> batch) override;

  void CompletionLoop();
  // Moves backlog requests into SQEs while the ring has room, then submits them.
  void FillRingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sq_mu_);
  void PrepLocked(io_uring_sqe* sqe, IoRequest* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(sq_mu_);
  // io_uring_submit until the kernel has taken every queued SQE.
  void SubmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sq_mu_);
  io_uring_sqe* GetSqeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sq_mu_);

  // The SQ half is used under sq_mu_; the CQ half by the completion thread only.
  io_uring ring_{};
  bool ring_ready_ = false;
  bool fixed_files_ = false;  // the sparse fixed-file table was registered

  Mutex sq_mu_;
  std::deque<IoRequest*> backlog_ ABSL_GUARDED_BY(sq_mu_);
  uint32_t in_ring_ ABSL_GUARDED_BY(sq_mu_) = 0;  // SQEs whose CQE is not reaped yet

  std::thread completion_thread_;
};

}  // namespace kvtier::io_internal

#endif  // KVTIER_IO_URING_ENGINE_H_
