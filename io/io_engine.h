// io/io_engine.h — asynchronous direct I/O on files: io_uring, or a thread pool fallback.
//
// An IoEngine reads and writes byte ranges of registered files into caller buffers, with
// O_DIRECT alignment rules (offsets, lengths and buffer addresses multiples of 4096). Work is
// submitted in batches and completed on one completion thread, which runs each op's callback.
//
// Backends:
//   * io_uring (liburing): one ring of `queue_depth` entries; registered files (fixed files)
//     and registered buffers (READ_FIXED / WRITE_FIXED) when the buffer lies inside a region
//     given to RegisterBuffers; batched submission (one io_uring_submit per Submit call, or
//     per IoPlug; ops submitted by completion callbacks go in together after the last of
//     them) and batched completion reaping; scatter reads (IoOp::tail) as READV.
//   * thread pool: where io_uring cannot be set up (old kernel, seccomp, or
//     Options::force_fallback), `fallback_threads` threads doing pread / pwrite. Chosen once
//     at Create and said once in the log. Behaviour is otherwise identical.
//
// Short reads and writes are completed by resubmitting the remainder; a read that hits end of
// file completes with the bytes it got (the caller checks the count). Errors are reported to
// the op's callback as a Status naming the file, offset, length and errno.
//
// Fault injection (for tests): InjectFault makes a chosen future op fail with EIO, ENOSPC,
// or complete short, without touching the disk (except a short write, which writes part of its
// range first), or run correctly but late (slow I/O); see FaultSpec.
//
// Thread safety: every method may be called from any thread, including from completion
// callbacks (Submit from a callback is allowed). Callbacks must not block for long: they run on
// the single completion thread.

#ifndef KVTIER_IO_IO_ENGINE_H_
#define KVTIER_IO_IO_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace kvtier {

inline constexpr size_t kIoAlignment = 4096;

struct IoOp {
  enum class Kind : uint8_t { kRead, kWrite };
  Kind kind = Kind::kRead;
  int file = -1;  // an index returned by RegisterFile
  uint64_t offset = 0;
  void* buffer = nullptr;
  size_t length = 0;
  // A scatter read (reads only): with `tail` set, the op reads length + tail_length bytes at
  // `offset`, the first `length` into `buffer` and the rest into `tail` (4096-aligned, a
  // positive multiple of 4096), in one readv. The disk tier reads a record's header into a
  // staging buffer and its payload straight into the block's destination this way. Scatter
  // reads never use registered buffers, and are at most 1 GiB in all.
  void* tail = nullptr;
  size_t tail_length = 0;
  // Called once on the completion thread: OK with the number of bytes transferred (equal to
  // `length` for writes; possibly less for a read past end of file), or the error.
  absl::AnyInvocable<void(absl::StatusOr<size_t>)> done;
};

// What each kind does to the op it hits (which still completes on the completion thread):
//   kEio:        no I/O; done gets the error a real EIO gives: code ErrnoToStatusCode(EIO),
//                message naming the op, "injected fault" and "Input/output error".
//   kEnospc:     no I/O; done gets an ENOSPC error (kResourceExhausted), named likewise.
//   kShortRead:  no I/O (the buffer is left as it was); done gets OK with length / 2 bytes,
//                as if the file ended there. Like a real end of file, it is not resubmitted.
//   kShortWrite: a torn write: the first (length / 2) rounded down to a multiple of 4096 bytes
//                (none for a 4096-byte op) are really written, then done gets kDataLoss
//                "short write ... wrote N of M bytes (injected fault)". A real write that
//                stops making progress completes with the same code.
//   kDelay:      slow I/O: the op is held for `delay` after Submit, then runs as usual and
//                completes with its real result. Only that op waits: ops submitted after it
//                pass it, as they would pass a request stuck in a slow device's queue.
// Each active fault counts the ops that match it independently, in Submit order, from the
// moment it is injected; if two pick the same op, the one injected first applies.
struct FaultSpec {
  enum class Kind : uint8_t { kEio, kEnospc, kShortRead, kShortWrite, kDelay };
  Kind kind = Kind::kEio;
  // Hits the (skip + 1)-th op submitted after InjectFault that matches the kind (reads for
  // kShortRead, writes for kShortWrite and kEnospc, any op for kEio and kDelay).
  uint64_t skip = 0;
  // How many consecutive matching ops it hits (0 = until ClearFaults).
  uint64_t count = 1;
  // kDelay only: how long each op it hits is held before it starts.
  absl::Duration delay = absl::ZeroDuration();
};

class IoEngine {
 public:
  struct Options {
    uint32_t queue_depth = 64;      // 1..4096
    bool force_fallback = false;    // use the thread pool even if io_uring works
    uint32_t fallback_threads = 4;  // 1..64
    absl::Status Validate() const;
  };

  static absl::StatusOr<std::unique_ptr<IoEngine>> Create(const Options& options);
  // Waits for every submitted op to complete (callbacks run), then tears down.
  // REQUIRES: not destroyed from a completion callback (it aborts, saying so).
  virtual ~IoEngine() = default;
  IoEngine(const IoEngine&) = delete;
  IoEngine& operator=(const IoEngine&) = delete;

  // "io_uring (queue depth 64, fixed files, 3 fixed buffer regions)" or "thread pool (4)".
  virtual std::string backend() const = 0;
  virtual bool uses_io_uring() const = 0;

  // Registers an open file descriptor (the caller keeps ownership and closes it after
  // UnregisterFile or engine destruction). Returns its index for IoOp::file.
  virtual absl::StatusOr<int> RegisterFile(int fd) = 0;
  // REQUIRES: no op on this file is in flight.
  virtual absl::Status UnregisterFile(int file) = 0;

  // Registers a memory region (4096-aligned address and length) for fixed-buffer I/O. Ops
  // whose buffer lies inside a registered region use READ_FIXED / WRITE_FIXED. Optional: ops
  // on unregistered (but aligned) buffers still work. May be called once per engine with all
  // regions (disjoint), before the first Submit. If the kernel refuses to pin them (e.g.
  // RLIMIT_MEMLOCK without CAP_IPC_LOCK) it logs a warning and returns OK: ops use plain I/O.
  virtual absl::Status RegisterBuffers(absl::Span<const std::pair<void*, size_t>> regions) = 0;

  // Validates every op (file registered, alignment, non-empty, callback set) and then submits
  // all of them: all or nothing. InvalidArgument names the first bad op and why. On success
  // each op's `done` has been moved out; on error the ops are untouched.
  virtual absl::Status Submit(absl::Span<IoOp> ops) = 0;

  // Blocks until every op submitted so far has completed and its callback has returned.
  // REQUIRES: not called from a completion callback (it would wait for itself forever); there
  // it logs an error and returns at once.
  virtual void Drain() = 0;

  virtual void InjectFault(const FaultSpec& fault) = 0;
  virtual void ClearFaults() = 0;

  // Held ops (IoPlug): Submit on a thread that has plugged this engine validates and queues
  // the ops but hands them to the kernel only at Unplug, together (one io_uring_submit for a
  // loop of single-op Submits). Plugs nest; the outermost Unplug submits. A thread plugs one
  // engine at a time: plugging a second one while the first is plugged is a no-op for it.
  virtual void Plug() = 0;
  virtual void Unplug() = 0;

 protected:
  IoEngine() = default;  // for the backends (the deleted copy left no default constructor)
};

// Scoped IoEngine::Plug / Unplug, as the block layer's blk_plug: every op this thread submits
// to `engine` while the plug lives goes to the kernel when it ends.
// REQUIRES: the thread does not wait, under the plug, for an op it submitted under it, even
// indirectly: it takes no lock and makes no device call that could wait on such an op (a
// device call can block behind a Free that synchronizes the device, waiting on a stream gated
// on a read held in the plug). The engine plugs only its I/O completion loop for that reason.
class IoPlug {
 public:
  explicit IoPlug(IoEngine& engine) : engine_(engine) { engine_.Plug(); }
  ~IoPlug() { engine_.Unplug(); }
  IoPlug(const IoPlug&) = delete;
  IoPlug& operator=(const IoPlug&) = delete;

 private:
  IoEngine& engine_;
};

// Opens (creating if needed) `path` for O_DIRECT read/write and makes it `size` bytes long with
// fallocate (blocks really reserved, so later writes cannot hit ENOSPC). Returns the fd.
// InvalidArgument if size is not a multiple of 4096; the errno as a Status naming the path
// otherwise (EINVAL from O_DIRECT on a file system that lacks it says so).
absl::StatusOr<int> OpenPreallocated(const std::string& path, uint64_t size);

// Page-aligned (4096) host memory, freed with FreeAligned. For staging buffers in tests and
// tools; the engine uses the Device's pinned memory.
absl::StatusOr<void*> AllocateAligned(size_t bytes);
void FreeAligned(void* p);

}  // namespace kvtier

#endif  // KVTIER_IO_IO_ENGINE_H_
