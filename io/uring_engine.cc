// io/uring_engine.cc — the io_uring backend: ring setup and probing, fixed files and buffers,
// batched submission with a backlog, and the completion thread (see uring_engine.h).

#include "io/uring_engine.h"

#include <liburing.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/log.h"

namespace kvtier::io_internal {
namespace {

// user_data of the NOP that tells the completion thread to exit (requests are never null).
constexpr uint64_t kStopToken = 0;
// CQEs reaped per wake-up of the completion thread.
constexpr unsigned kReapBatch = 64;

}  // namespace

absl::StatusOr<std::unique_ptr<UringEngine>> UringEngine::Create(const Options& options) {
  std::unique_ptr<UringEngine> engine(new UringEngine(options));
  if (absl::Status s = engine->Init(); !s.ok()) return s;
  return engine;
}

absl::Status UringEngine::Init() {
  io_uring_params params;
  std::memset(&params, 0, sizeof(params));
  // CQ of 2 × queue_depth (the kernel default); in_ring_ never exceeds queue_depth.
  if (int ret = io_uring_queue_init_params(options_.queue_depth, &ring_, &params); ret < 0) {
    return absl::ErrnoToStatus(-ret, "io_uring_queue_init");
  }
  ring_ready_ = true;
  if (!(params.features & IORING_FEAT_NODROP)) {
    return absl::UnavailableError("io_uring lacks IORING_FEAT_NODROP (kernel older than 5.5)");
  }
  io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
  if (probe == nullptr) {
    return absl::UnavailableError("io_uring cannot be probed for opcodes (kernel older than 5.6)");
  }
  std::string missing;
  for (auto [op, name] : {std::pair{IORING_OP_NOP, "NOP"},
                          {IORING_OP_READ, "READ"},
                          {IORING_OP_READV, "READV"},
                          {IORING_OP_WRITE, "WRITE"},
                          {IORING_OP_READ_FIXED, "READ_FIXED"},
                          {IORING_OP_WRITE_FIXED, "WRITE_FIXED"}}) {
    if (!io_uring_opcode_supported(probe, op)) {
      missing += std::string(missing.empty() ? "" : ", ") + name;
    }
  }
  io_uring_free_probe(probe);
  if (!missing.empty()) {
    return absl::UnavailableError("io_uring lacks opcodes: " + missing);
  }
  if (int ret = io_uring_register_files_sparse(&ring_, kFixedFileSlots); ret == 0) {
    fixed_files_ = true;
  } else {
    KVTIER_LOG_ONCE(kInfo, "io: io_uring fixed files unavailable (%s); using plain fds",
                    std::strerror(-ret));
  }
  completion_thread_ = std::thread([this] { CompletionLoop(); });
  SetCompletionThread(completion_thread_.get_id());
  return absl::OkStatus();
}

UringEngine::~UringEngine() {
  if (!ring_ready_) return;
  if (completion_thread_.joinable()) {
    DrainForDestruction();
    {
      MutexLock lock(&sq_mu_);
      io_uring_sqe* sqe = GetSqeLocked();
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, kStopToken);
      ++in_ring_;
      SubmitLocked();
    }
    completion_thread_.join();
  }
  io_uring_queue_exit(&ring_);
}

std::string UringEngine::backend() const {
  return absl::StrFormat("io_uring (queue depth %d, %s, %d fixed buffer regions)",
                         options_.queue_depth, fixed_files_ ? "fixed files" : "plain fds",
                         fixed_buffer_regions());
}

bool UringEngine::RegisterFileSlot(int index, int fd) {
  if (!fixed_files_ || index >= static_cast<int>(kFixedFileSlots)) return false;
  if (int ret = io_uring_register_files_update(&ring_, index, &fd, 1); ret != 1) {
    KVTIER_LOG_ONCE(kWarning, "io: io_uring_register_files_update failed (%s); file %d uses its fd",
                    std::strerror(ret < 0 ? -ret : EINVAL), index);
    return false;
  }
  return true;
}

void UringEngine::UnregisterFileSlot(int index, bool fixed) {
  if (!fixed) return;
  int none = -1;
  if (int ret = io_uring_register_files_update(&ring_, index, &none, 1); ret != 1) {
    KVTIER_LOG(kWarning, "io: clearing fixed-file slot %d failed: %s", index,
               std::strerror(ret < 0 ? -ret : EINVAL));
  }
}

absl::Status UringEngine::RegisterBufferChunks(absl::Span<const iovec> chunks) {
  const int ret = io_uring_register_buffers(&ring_, chunks.data(), chunks.size());
  if (ret == 0) return absl::OkStatus();
  if (ret == -ENOMEM) {
    return absl::ErrnoToStatus(-ret,
                               "io_uring_register_buffers (pinned pages count against "
                               "RLIMIT_MEMLOCK without CAP_IPC_LOCK)");
  }
  return absl::ErrnoToStatus(-ret, "io_uring_register_buffers");
}

void UringEngine::Enqueue(std::vector<std::unique_ptr<IoRequest>> batch) {
  MutexLock lock(&sq_mu_);
  for (std::unique_ptr<IoRequest>& r : batch) backlog_.push_back(r.release());
  FillRingLocked();
}

io_uring_sqe* UringEngine::GetSqeLocked() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    // The SQ is full of queued entries: hand them to the kernel, which frees the SQ at once.
    SubmitLocked();
    sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) std::this_thread::yield();
  }
  return sqe;
}

void UringEngine::PrepLocked(io_uring_sqe* sqe, IoRequest* r) {
  const int fd = r->fixed_file ? r->file : r->fd;
  const bool read = r->kind == IoOp::Kind::kRead;
  uint64_t offset = r->next_offset();
  std::byte* buffer = r->next_buffer();
  size_t length = r->next_length();
  if (r->fault != InjectedFault::kNone) {
    length = InjectedTransferLength(*r);  // only a short write transfers anything
    offset = r->offset;
    buffer = r->buffer;
  }
  if (length == 0) {
    io_uring_prep_nop(sqe);
  } else if (r->tail != nullptr) {
    const int n = r->NextIov();
    io_uring_prep_readv(sqe, fd, r->iov, static_cast<unsigned>(n), offset);
  } else if (r->buf_index >= 0) {
    if (read) {
      io_uring_prep_read_fixed(sqe, fd, buffer, length, offset, r->buf_index);
    } else {
      io_uring_prep_write_fixed(sqe, fd, buffer, length, offset, r->buf_index);
    }
  } else if (read) {
    io_uring_prep_read(sqe, fd, buffer, length, offset);
  } else {
    io_uring_prep_write(sqe, fd, buffer, length, offset);
  }
  if (length != 0 && r->fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data(sqe, r);
}

void UringEngine::FillRingLocked() {
  while (!backlog_.empty() && in_ring_ < options_.queue_depth) {
    IoRequest* r = backlog_.front();
    backlog_.pop_front();
    PrepLocked(GetSqeLocked(), r);
    ++in_ring_;
  }
  SubmitLocked();
}

void UringEngine::SubmitLocked() {
  int stalls = 0;
  while (io_uring_sq_ready(&ring_) > 0) {
    const int ret = io_uring_submit(&ring_);
    if (ret > 0 || ret == -EINTR) continue;
    if (ret == -EAGAIN || ret == -EBUSY || ret == 0) {
      // The kernel is short of memory for requests, or has completions to flush first. They
      // are reaped without sq_mu_, so waiting here makes progress.
      if (++stalls % 1000 == 0) {
        KVTIER_LOG(kWarning, "io: io_uring_submit keeps returning %s; retrying",
                   ret == 0 ? "0" : std::strerror(-ret));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      continue;
    }
    // Nothing else is expected of a healthy ring; the SQEs stay queued and go with the next
    // submit.
    KVTIER_LOG(kError, "io: io_uring_submit failed: %s", std::strerror(-ret));
    return;
  }
}

void UringEngine::CompletionLoop() {
  struct Reaped {
    uint64_t user_data;
    int32_t res;
  };
  std::vector<Reaped> reaped;
  std::vector<std::pair<std::unique_ptr<IoRequest>, absl::StatusOr<size_t>>> finished;
  reaped.reserve(kReapBatch);
  bool stop = false;
  while (!stop) {
    io_uring_cqe* cqe = nullptr;
    if (int ret = io_uring_wait_cqe(&ring_, &cqe); ret < 0) {
      if (ret != -EINTR && ret != -EAGAIN) {
        KVTIER_LOG(kError, "io: io_uring_wait_cqe failed: %s", std::strerror(-ret));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      continue;
    }
    io_uring_cqe* cqes[kReapBatch];
    const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, kReapBatch);
    reaped.clear();
    for (unsigned i = 0; i < n; ++i) reaped.push_back(Reaped{cqes[i]->user_data, cqes[i]->res});
    io_uring_cq_advance(&ring_, n);
    {
      MutexLock lock(&sq_mu_);
      in_ring_ -= n;
      for (const Reaped& c : reaped) {
        if (c.user_data == kStopToken) {
          stop = true;
          continue;
        }
        std::unique_ptr<IoRequest> r(reinterpret_cast<IoRequest*>(c.user_data));
        std::optional<absl::StatusOr<size_t>> result = AdvanceRequest(*r, c.res);
        if (result.has_value()) {
          finished.emplace_back(std::move(r), *std::move(result));
        } else {
          backlog_.push_front(r.release());  // the remainder goes ahead of new work
        }
      }
      FillRingLocked();
    }
    // Ops the callbacks submit go to the kernel together, after the last of them.
    Plug();
    for (auto& [r, result] : finished) Finish(std::move(r), std::move(result));
    Unplug();
    finished.clear();
  }
}

}  // namespace kvtier::io_internal
