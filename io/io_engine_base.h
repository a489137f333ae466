// io/io_engine_base.h — what both IoEngine backends share: the file table, the registered
// buffer regions, validation of a batch (all or nothing), fault assignment, in-flight
// accounting and Drain, and the rule that turns the result of one transfer into "done" or
// "resubmit the rest".
//
// A backend receives validated IoRequests through Enqueue and must hand each one back exactly
// once to Finish, on its single completion thread, which runs the op's callback and then
// counts the op as complete. Between the two it moves the request along with AdvanceRequest.
//
// Slow-I/O faults (FaultSpec::kDelay): Submit hands a delayed request to a timer thread of
// this class (started by the first one) instead of to the backend; the timer thread enqueues
// it when its time comes. It counts as in flight meanwhile, so Drain waits for it.
//
// Locks: mu_ (this class) is a leaf with respect to the backends' locks: the base never calls
// into a backend while holding it except for the registration hooks (RegisterFileSlot,
// UnregisterFileSlot, RegisterBufferChunks), which must not take mu_ or run callbacks. No lock
// is held while a callback runs.

#ifndef KVTIER_IO_IO_ENGINE_BASE_H_
#define KVTIER_IO_IO_ENGINE_BASE_H_

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "io/fault_injector.h"
#include "io/io_engine.h"

namespace kvtier::io_internal {

// One transfer never asks the kernel for more than this (io_uring's length is 32 bits and
// Linux caps a read or write at 2 GiB - 4 KiB); longer ops continue as "short" transfers.
inline constexpr size_t kMaxTransfer = size_t{1} << 30;

// io_uring refuses a registered buffer larger than 1 GiB, so regions are registered in chunks
// of at most this size; an op that straddles two chunks uses a plain read or write.
inline constexpr size_t kMaxFixedBufferBytes = size_t{1} << 30;
inline constexpr size_t kMaxFixedBuffers = 16384;  // the kernel's IORING_MAX_REG_BUFFERS

// A transfer that fails with EINTR, EAGAIN or ECANCELED is retried this many times. (io_uring
// cancels queued worker requests of a thread that exits, so ops submitted by a short-lived
// thread can come back ECANCELED; the retry is submitted from the engine's own thread.)
inline constexpr uint32_t kMaxRetries = 1000;

// An op on its way through the engine.
struct IoRequest {
  IoOp::Kind kind = IoOp::Kind::kRead;
  int file = -1;            // the caller's file index
  int fd = -1;              // its descriptor
  bool fixed_file = false;  // io_uring: `file` is also the fixed-file slot
  int buf_index = -1;       // io_uring: registered buffer holding [buffer, buffer + length)
  uint64_t offset = 0;
  std::byte* buffer = nullptr;
  size_t length = 0;  // in all (a scatter read's head and tail together)
  // A scatter read (IoOp::tail): its first head_length bytes go to `buffer`, the rest to
  // `tail`. Null tail: one buffer of `length`.
  std::byte* tail = nullptr;
  size_t head_length = 0;
  iovec iov[2] = {};      // the kernel's view of the remainder of a scatter read (NextIov)
  size_t done_bytes = 0;  // transferred so far
  uint32_t retries = 0;
  InjectedFault fault = InjectedFault::kNone;
  absl::AnyInvocable<void(absl::StatusOr<size_t>)> done;

  // The next transfer: what is not done yet, at most kMaxTransfer bytes.
  uint64_t next_offset() const { return offset + done_bytes; }
  std::byte* next_buffer() const { return buffer + done_bytes; }
  size_t next_length() const { return std::min(length - done_bytes, kMaxTransfer); }
  // A scatter read: fills iov with what is not done yet; returns how many entries (1 or 2).
  int NextIov() {
    int n = 0;
    if (done_bytes < head_length) {
      iov[n++] = iovec{buffer + done_bytes, head_length - done_bytes};
      iov[n++] = iovec{tail, length - head_length};
    } else {
      iov[n++] = iovec{tail + (done_bytes - head_length), length - done_bytes};
    }
    return n;
  }
};

const char* KindName(IoOp::Kind kind);

// How many bytes the backend must really transfer for an op hit by an injected fault before
// AdvanceRequest decides its result: the written part of a short write, otherwise 0 (no I/O).
size_t InjectedTransferLength(const IoRequest& r);

// Applies the result of one transfer of r's remainder (bytes moved, or -errno) to `r`.
// Returns the op's final result, or nullopt when the rest must be resubmitted. A read that
// returns 0, or whose total is not a multiple of 4096 (O_DIRECT reading the last, partial page
// of a file), has hit end of file and completes with the bytes it got. An op with an injected
// fault always completes here, with the result FaultSpec documents.
std::optional<absl::StatusOr<size_t>> AdvanceRequest(IoRequest& r, int64_t res);

// "read of file 2 at offset 8192, length 4096: Input/output error", with the errno's code.
absl::Status IoErrorStatus(const IoRequest& r, int error, bool injected);

class IoEngineBase : public IoEngine {
 public:
  explicit IoEngineBase(const Options& options) : options_(options) {}

  absl::StatusOr<int> RegisterFile(int fd) final;
  absl::Status UnregisterFile(int file) final;
  absl::Status RegisterBuffers(absl::Span<const std::pair<void*, size_t>> regions) final;
  absl::Status Submit(absl::Span<IoOp> ops) final;
  void Drain() final;
  void InjectFault(const FaultSpec& fault) final;
  void ClearFaults() final;
  void Plug() final;
  void Unplug() final;
  ~IoEngineBase() override;

 protected:
  // Hooks for the backend. Called with mu_ held; must not call back into this class.
  // Makes `fd` usable as file `index`; returns whether ops on it may use the fixed slot.
  virtual bool RegisterFileSlot(int index, int fd) = 0;
  virtual void UnregisterFileSlot(int index, bool fixed) = 0;
  // Registers the chunks as fixed buffers 0..n-1; an error means "use plain I/O on them".
  virtual absl::Status RegisterBufferChunks(absl::Span<const iovec> chunks) = 0;
  // Takes ownership of a validated batch; every request must come back through Finish.
  virtual void Enqueue(std::vector<std::unique_ptr<IoRequest>> batch) = 0;

  // Runs r's callback with `result` and then counts r as complete. Completion thread only.
  void Finish(std::unique_ptr<IoRequest> r, absl::StatusOr<size_t> result);

  // The backend names its completion thread once, before the engine is handed out.
  void SetCompletionThread(std::thread::id id) { completion_thread_ = id; }
  bool OnCompletionThread() const { return std::this_thread::get_id() == completion_thread_; }
  // Backends' destructors call this first: Drain, or abort with a clear message when the
  // engine is being destroyed from one of its own callbacks (which could never finish).
  void DrainForDestruction();

  // Number of caller regions given to RegisterBuffers that are used for fixed I/O.
  size_t fixed_buffer_regions() const ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;

 private:
  struct DelayedRequest {
    absl::Time due;
    std::unique_ptr<IoRequest> request;
  };
  struct FileSlot {
    int fd = -1;  // -1: free
    bool fixed = false;
    uint64_t in_flight = 0;
  };
  struct Chunk {
    uintptr_t begin = 0;
    uintptr_t end = 0;
    int index = 0;
  };

  absl::Status ValidateLocked(const IoOp& op, size_t i, size_t n) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The registered buffer that holds all of [p, p + length), or -1.
  int FindBufferLocked(const void* p, size_t length) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Holds requests hit by kDelay until they are due (starting the timer thread if needed).
  void HoldDelayed(std::vector<DelayedRequest> delayed) ABSL_LOCKS_EXCLUDED(delay_mu_);
  void DelayLoop();
  void StopDelayThread() ABSL_LOCKS_EXCLUDED(delay_mu_);

  std::thread::id completion_thread_;

  mutable Mutex mu_;
  std::vector<FileSlot> files_ ABSL_GUARDED_BY(mu_);
  std::vector<Chunk> chunks_ ABSL_GUARDED_BY(mu_);  // sorted by address, disjoint
  size_t fixed_regions_ ABSL_GUARDED_BY(mu_) = 0;
  bool buffers_registered_ ABSL_GUARDED_BY(mu_) = false;
  bool submitted_ ABSL_GUARDED_BY(mu_) = false;
  FaultInjector faults_ ABSL_GUARDED_BY(mu_);
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;

  // Requests held by kDelay faults; delay_mu_ is a leaf (Enqueue runs without it).
  Mutex delay_mu_;
  std::vector<DelayedRequest> delayed_ ABSL_GUARDED_BY(delay_mu_);
  bool stop_delays_ ABSL_GUARDED_BY(delay_mu_) = false;
  std::thread delay_thread_ ABSL_GUARDED_BY(delay_mu_);
};

}  // namespace kvtier::io_internal

#endif  // KVTIER_IO_IO_ENGINE_BASE_H_
