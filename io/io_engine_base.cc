// io/io_engine_base.cc — the backend-independent half of IoEngine: registration, validation,
// fault assignment, completion accounting and the short-transfer rules (see io_engine_base.h).

#include "io/io_engine_base.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"

namespace kvtier::io_internal {
namespace {

bool Aligned(uint64_t v) { return v % kIoAlignment == 0; }

// The ops a thread holds under IoEngine::Plug, for one engine at a time.
struct PlugState {
  IoEngineBase* engine = nullptr;
  int depth = 0;
  std::vector<std::unique_ptr<IoRequest>> held;
};
thread_local PlugState plug_state;

absl::Status ShortWriteStatus(const IoRequest& r, size_t written, bool injected) {
  return absl::DataLossError(absl::StrFormat(
      "short write to file %d at offset %d, length %d: wrote %d of %d bytes%s", r.file, r.offset,
      r.length, written, r.length, injected ? " (injected fault)" : ""));
}

}  // namespace

const char* KindName(IoOp::Kind kind) {
  switch (kind) {
    case IoOp::Kind::kRead:
      return "read";
    case IoOp::Kind::kWrite:
      return "write";
  }
  return "invalid op";
}

absl::Status IoErrorStatus(const IoRequest& r, int error, bool injected) {
  std::string what = absl::StrFormat("%s of file %d at offset %d, length %d", KindName(r.kind),
                                     r.file, r.offset, r.length);
  if (r.done_bytes > 0) absl::StrAppendFormat(&what, " (after %d bytes)", r.done_bytes);
  if (injected) what += " (injected fault)";
  return absl::ErrnoToStatus(error, what);
}

size_t InjectedTransferLength(const IoRequest& r) {
  if (r.fault != InjectedFault::kShortWrite) return 0;
  return r.length / 2 / kIoAlignment * kIoAlignment;
}

std::optional<absl::StatusOr<size_t>> AdvanceRequest(IoRequest& r, int64_t res) {
  switch (r.fault) {
    case InjectedFault::kNone:
    case InjectedFault::kDelay:  // Submit clears it: a delayed op runs as any other
      break;
    case InjectedFault::kEio:
      return IoErrorStatus(r, EIO, /*injected=*/true);
    case InjectedFault::kEnospc:
      return IoErrorStatus(r, ENOSPC, /*injected=*/true);
    case InjectedFault::kShortRead:
      return r.length / 2;
    case InjectedFault::kShortWrite:
      if (res < 0) return IoErrorStatus(r, static_cast<int>(-res), /*injected=*/false);
      return ShortWriteStatus(r, static_cast<size_t>(res), /*injected=*/true);
  }
  if (res < 0) {
    const int error = static_cast<int>(-res);
    if ((error == EINTR || error == EAGAIN || error == ECANCELED) && ++r.retries <= kMaxRetries) {
      return std::nullopt;
    }
    return IoErrorStatus(r, error, /*injected=*/false);
  }
  if (res == 0) {
    if (r.kind == IoOp::Kind::kRead) return r.done_bytes;  // end of file
    return ShortWriteStatus(r, r.done_bytes, /*injected=*/false);
  }
  r.done_bytes += static_cast<size_t>(res);
  if (r.done_bytes >= r.length) return r.length;
  // O_DIRECT only returns a count that is not page-aligned at end of file; asking for the rest
  // would be a misaligned read (EINVAL), so this is where the file ends.
  if (r.kind == IoOp::Kind::kRead && !Aligned(r.done_bytes)) return r.done_bytes;
  return std::nullopt;
}

absl::StatusOr<int> IoEngineBase::RegisterFile(int fd) {
  if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RegisterFile: fd %d is not an open file descriptor", fd));
  }
  MutexLock lock(&mu_);
  size_t index = 0;
  while (index < files_.size() && files_[index].fd >= 0) ++index;
  if (index == files_.size()) files_.emplace_back();
  FileSlot& slot = files_[index];
  slot.fd = fd;
  slot.fixed = RegisterFileSlot(static_cast<int>(index), fd);
  slot.in_flight = 0;
  return static_cast<int>(index);
}

absl::Status IoEngineBase::UnregisterFile(int file) {
  MutexLock lock(&mu_);
  if (file < 0 || static_cast<size_t>(file) >= files_.size() || files_[file].fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("UnregisterFile: file %d is not registered", file));
  }
  FileSlot& slot = files_[file];
  if (slot.in_flight > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "UnregisterFile: file %d has %d ops in flight (counted until their callbacks return)", file,
        slot.in_flight));
  }
  UnregisterFileSlot(file, slot.fixed);
  slot = FileSlot{};
  return absl::OkStatus();
}

absl::Status IoEngineBase::RegisterBuffers(absl::Span<const std::pair<void*, size_t>> regions) {
  MutexLock lock(&mu_);
  if (buffers_registered_) {
    return absl::FailedPreconditionError(
        "RegisterBuffers: already called; it may be called once, with all regions");
  }
  if (submitted_) {
    return absl::FailedPreconditionError("RegisterBuffers: must be called before the first Submit");
  }
  if (regions.empty()) return absl::InvalidArgumentError("RegisterBuffers: no regions given");
  struct Region {
    uintptr_t begin, end;
    size_t i;
  };
  std::vector<Region> sorted;
  for (size_t i = 0; i < regions.size(); ++i) {
    const auto [p, length] = regions[i];
    const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
    std::string why;
    if (p == nullptr) {
      why = "address is null";
    } else if (!Aligned(begin)) {
      why = "address is not 4096-aligned";
    } else if (length == 0 || !Aligned(length)) {
      why = "length is not a positive multiple of 4096";
    } else if (begin + length < begin) {
      why = "it wraps around the address space";
    }
    if (!why.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("RegisterBuffers: region %d (%p, %d bytes): %s", i, p, length, why));
    }
    sorted.push_back(Region{begin, begin + length, i});
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const Region& a, const Region& b) { return a.begin < b.begin; });
  for (size_t k = 1; k < sorted.size(); ++k) {
    if (sorted[k].begin < sorted[k - 1].end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterBuffers: regions %d and %d overlap", sorted[k - 1].i, sorted[k].i));
    }
  }
  std::vector<iovec> iovecs;
  std::vector<Chunk> chunks;
  for (const Region& r : sorted) {
    for (uintptr_t b = r.begin; b < r.end; b += kMaxFixedBufferBytes) {
      const uintptr_t e = std::min<uintptr_t>(r.end, b + kMaxFixedBufferBytes);
      chunks.push_back(Chunk{b, e, static_cast<int>(chunks.size())});
      iovecs.push_back(iovec{reinterpret_cast<void*>(b), e - b});
    }
  }
  if (chunks.size() > kMaxFixedBuffers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RegisterBuffers: %d regions (split into %d chunks of at most 1 GiB) "
                        "exceed the limit of %d fixed buffers",
                        regions.size(), chunks.size(), kMaxFixedBuffers));
  }
  buffers_registered_ = true;
  if (absl::Status s = RegisterBufferChunks(iovecs); !s.ok()) {
    // Fixed buffers only save the per-op page pinning; everything works without them.
    KVTIER_LOG(kWarning, "io: fixed buffers unavailable (%s); ops use plain reads and writes",
               s.message());
    return absl::OkStatus();
  }
  chunks_ = std::move(chunks);
  fixed_regions_ = regions.size();
  return absl::OkStatus();
}

int IoEngineBase::FindBufferLocked(const void* p, size_t length) const {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  auto it = std::upper_bound(chunks_.begin(), chunks_.end(), begin,
                             [](uintptr_t b, const Chunk& c) { return b < c.begin; });
  if (it == chunks_.begin()) return -1;
  --it;
  if (begin + length > it->end) return -1;
  return it->index;
}

size_t IoEngineBase::fixed_buffer_regions() const {
  MutexLock lock(&mu_);
  return fixed_regions_;
}

absl::Status IoEngineBase::ValidateLocked(const IoOp& op, size_t i, size_t n) const {
  std::string why;
  const uintptr_t buffer = reinterpret_cast<uintptr_t>(op.buffer);
  if (op.kind != IoOp::Kind::kRead && op.kind != IoOp::Kind::kWrite) {
    why = absl::StrFormat("kind %d is neither read nor write", static_cast<int>(op.kind));
  } else if (op.file < 0 || static_cast<size_t>(op.file) >= files_.size() ||
             files_[op.file].fd < 0) {
    why = absl::StrFormat("file %d is not registered", op.file);
  } else if (op.length == 0) {
    why = "length is 0";
  } else if (!Aligned(op.offset)) {
    why = absl::StrFormat("offset %d is not a multiple of 4096", op.offset);
  } else if (!Aligned(op.length)) {
    why = absl::StrFormat("length %d is not a multiple of 4096", op.length);
  } else if (op.buffer == nullptr) {
    why = "buffer is null";
  } else if (!Aligned(buffer)) {
    why = absl::StrFormat("buffer %p is not 4096-aligned", op.buffer);
  } else if (op.offset + op.length < op.offset || buffer + op.length < buffer ||
             op.offset + op.length > static_cast<uint64_t>(INT64_MAX)) {
    why = "offset or buffer + length overflows";
  } else if (!op.done) {
    why = "done callback is not set";
  } else if (op.tail != nullptr || op.tail_length != 0) {
    const uintptr_t tail = reinterpret_cast<uintptr_t>(op.tail);
    if (op.kind != IoOp::Kind::kRead) {
      why = "a tail buffer is for scatter reads only";
    } else if (op.tail == nullptr) {
      why = absl::StrFormat("tail_length %d without a tail buffer", op.tail_length);
    } else if (!Aligned(tail)) {
      why = absl::StrFormat("tail %p is not 4096-aligned", op.tail);
    } else if (op.tail_length == 0 || !Aligned(op.tail_length)) {
      why = absl::StrFormat("tail_length %d is not a positive multiple of 4096", op.tail_length);
    } else if (op.length + op.tail_length > kMaxTransfer || tail + op.tail_length < tail) {
      why = absl::StrFormat("a scatter read of %d + %d bytes exceeds %d", op.length, op.tail_length,
                            kMaxTransfer);
    }
  }
  if (why.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("Submit: op %d of %d (%s, file %d, offset %d, length %d): %s; nothing "
                      "was submitted",
                      i, n, KindName(op.kind), op.file, op.offset, op.length, why));
}

absl::Status IoEngineBase::Submit(absl::Span<IoOp> ops) {
  if (ops.empty()) return absl::OkStatus();
  std::vector<std::unique_ptr<IoRequest>> batch;
  std::vector<DelayedRequest> delayed;
  batch.reserve(ops.size());
  {
    MutexLock lock(&mu_);
    for (size_t i = 0; i < ops.size(); ++i) {
      if (absl::Status s = ValidateLocked(ops[i], i, ops.size()); !s.ok()) return s;
    }
    for (IoOp& op : ops) {
      auto r = std::make_unique<IoRequest>();
      FileSlot& slot = files_[op.file];
      r->kind = op.kind;
      r->file = op.file;
      r->fd = slot.fd;
      r->fixed_file = slot.fixed;
      r->buf_index = op.tail != nullptr ? -1 : FindBufferLocked(op.buffer, op.length);
      r->offset = op.offset;
      r->buffer = static_cast<std::byte*>(op.buffer);
      r->length = op.length + op.tail_length;
      r->tail = static_cast<std::byte*>(op.tail);
      r->head_length = op.length;
      absl::Duration delay;
      r->fault = faults_.Claim(op.kind, &delay);
      r->done = std::move(op.done);
      ++slot.in_flight;
      if (r->fault == InjectedFault::kDelay) {
        r->fault = InjectedFault::kNone;  // late, not wrong: it runs as any other op
        delayed.push_back(DelayedRequest{absl::Now() + delay, std::move(r)});
      } else {
        batch.push_back(std::move(r));
      }
    }
    in_flight_ += ops.size();
    submitted_ = true;
  }
  if (!batch.empty()) {
    if (plug_state.engine == this) {
      for (std::unique_ptr<IoRequest>& r : batch) plug_state.held.push_back(std::move(r));
    } else {
      Enqueue(std::move(batch));
    }
  }
  if (!delayed.empty()) HoldDelayed(std::move(delayed));
  return absl::OkStatus();
}

void IoEngineBase::Plug() {
  if (plug_state.engine == nullptr) {
    plug_state.engine = this;
    plug_state.depth = 1;
  } else if (plug_state.engine == this) {
    ++plug_state.depth;
  }
}

void IoEngineBase::Unplug() {
  if (plug_state.engine != this || --plug_state.depth > 0) return;
  plug_state.engine = nullptr;
  std::vector<std::unique_ptr<IoRequest>> held = std::move(plug_state.held);
  plug_state.held.clear();
  if (!held.empty()) Enqueue(std::move(held));
}

void IoEngineBase::HoldDelayed(std::vector<DelayedRequest> delayed) {
  MutexLock lock(&delay_mu_);
  for (DelayedRequest& d : delayed) delayed_.push_back(std::move(d));
  if (!delay_thread_.joinable()) delay_thread_ = std::thread([this] { DelayLoop(); });
}

void IoEngineBase::DelayLoop() {
  while (true) {
    std::vector<std::unique_ptr<IoRequest>> due;
    {
      MutexLock lock(&delay_mu_);
      if (delayed_.empty()) {
        delay_mu_.Await([this] {
          delay_mu_.AssertHeld();
          return stop_delays_ || !delayed_.empty();
        });
      }
      if (delayed_.empty()) return;  // stopping, and nothing is held
      absl::Time first = absl::InfiniteFuture();
      for (const DelayedRequest& d : delayed_) first = std::min(first, d.due);
      const absl::Time now = absl::Now();
      if (first > now) {
        // Wakes early when a request arrives (it may be due sooner) or at `first`.
        const size_t held = delayed_.size();
        delay_mu_.AwaitWithTimeout(
            [this, held] {
              delay_mu_.AssertHeld();
              return delayed_.size() != held;
            },
            first - now);
        continue;
      }
      for (auto it = delayed_.begin(); it != delayed_.end();) {
        if (it->due <= now) {
          due.push_back(std::move(it->request));
          it = delayed_.erase(it);
        } else {
          ++it;
        }
      }
    }
    Enqueue(std::move(due));
  }
}

void IoEngineBase::StopDelayThread() {
  std::thread thread;
  {
    MutexLock lock(&delay_mu_);
    stop_delays_ = true;
    thread = std::move(delay_thread_);
  }
  if (thread.joinable()) thread.join();
}

IoEngineBase::~IoEngineBase() { StopDelayThread(); }

void IoEngineBase::Finish(std::unique_ptr<IoRequest> r, absl::StatusOr<size_t> result) {
  const int file = r->file;
  absl::AnyInvocable<void(absl::StatusOr<size_t>)> done = std::move(r->done);
  r.reset();
  done(std::move(result));
  done = nullptr;  // whatever the callback captured is gone before Drain can return
  MutexLock lock(&mu_);
  --files_[file].in_flight;
  --in_flight_;
}

void IoEngineBase::DrainForDestruction() {
  if (OnCompletionThread()) {
    KVTIER_LOG(kError, "io: IoEngine destroyed from its own completion callback; aborting");
    std::abort();
  }
  Drain();  // also waits for requests held by kDelay faults
  StopDelayThread();
}

void IoEngineBase::Drain() {
  if (OnCompletionThread()) {
    KVTIER_LOG_ONCE(kError,
                    "io: Drain called from a completion callback, where it would wait for "
                    "itself; returning without waiting");
    return;
  }
  MutexLock lock(&mu_);
  mu_.Await([this] {
    mu_.AssertHeld();
    return in_flight_ == 0;
  });
}

void IoEngineBase::InjectFault(const FaultSpec& fault) {
  MutexLock lock(&mu_);
  faults_.Add(fault);
}

void IoEngineBase::ClearFaults() {
  MutexLock lock(&mu_);
  faults_.Clear();
}

}  // namespace kvtier::io_internal
