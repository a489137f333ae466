// io/io_engine.cc — IoEngine::Create (io_uring where it works, else the thread pool), option
// validation, preallocated O_DIRECT files and aligned host buffers.
//
// The backend is chosen once per engine and said once per process in the log: io_uring, the
// thread pool because Options::force_fallback asked for it, or the thread pool because io_uring
// could not be set up (with the reason, e.g. EPERM from a seccomp filter or
// kernel.io_uring_disabled, ENOSYS on an old kernel).

#include "io/io_engine.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "io/thread_pool_engine.h"
#include "io/uring_engine.h"

namespace kvtier {

absl::Status IoEngine::Options::Validate() const {
  if (queue_depth < 1 || queue_depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IoEngine::Options: queue_depth = %d is outside 1..4096", queue_depth));
  }
  if (fallback_threads < 1 || fallback_threads > 64) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IoEngine::Options: fallback_threads = %d is outside 1..64", fallback_threads));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<IoEngine>> IoEngine::Create(const Options& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (options.force_fallback) {
    KVTIER_LOG_ONCE(kInfo, "io: using a thread pool of %d for I/O (force_fallback)",
                    options.fallback_threads);
    return std::make_unique<io_internal::ThreadPoolEngine>(options, "");
  }
  absl::StatusOr<std::unique_ptr<io_internal::UringEngine>> uring =
      io_internal::UringEngine::Create(options);
  if (uring.ok()) {
    KVTIER_LOG_ONCE(kInfo, "io: using %s", (*uring)->backend());
    return std::unique_ptr<IoEngine>(*std::move(uring));
  }
  const std::string why(uring.status().message());
  KVTIER_LOG_ONCE(kWarning, "io: io_uring unavailable (%s); using a thread pool of %d for I/O", why,
                  options.fallback_threads);
  return std::make_unique<io_internal::ThreadPoolEngine>(options, why);
}

absl::StatusOr<int> OpenPreallocated(const std::string& path, uint64_t size) {
  if (size == 0 || size % kIoAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "OpenPreallocated(%s): size %d is not a positive multiple of 4096", path, size));
  }
  if (size > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("OpenPreallocated(%s): size %d is too large", path, size));
  }
  int fd;
  do {
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int error = errno;
    if (error == EINVAL) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "OpenPreallocated(%s): open with O_DIRECT failed (EINVAL): the file system does "
          "not support direct I/O",
          path));
    }
    return absl::ErrnoToStatus(error, absl::StrFormat("OpenPreallocated(%s): open", path));
  }
  auto fail = [&](const char* call) {
    const int error = errno;
    close(fd);
    return absl::ErrnoToStatus(
        error, absl::StrFormat("OpenPreallocated(%s): %s to %d bytes", path, call, size));
  };
  int ret;
  do {
    ret = fallocate(fd, 0, 0, static_cast<off_t>(size));
  } while (ret < 0 && errno == EINTR);
  if (ret < 0) {
    if (errno != EOPNOTSUPP) return fail("fallocate");
    KVTIER_LOG_ONCE(kWarning,
                    "io: fallocate is not supported on %s's file system; sizing with ftruncate, "
                    "so blocks are not reserved and writes may later hit ENOSPC",
                    path);
  }
  // fallocate never shrinks; the file is made exactly `size` bytes either way.
  struct stat st;
  if (fstat(fd, &st) < 0) return fail("fstat");
  if (static_cast<uint64_t>(st.st_size) != size && ftruncate(fd, static_cast<off_t>(size)) < 0) {
    return fail("ftruncate");
  }
  return fd;
}

absl::StatusOr<void*> AllocateAligned(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("AllocateAligned: 0 bytes");
  const size_t rounded = (bytes + kIoAlignment - 1) / kIoAlignment * kIoAlignment;
  if (rounded < bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("AllocateAligned: %d bytes is too many", bytes));
  }
  void* p = nullptr;
  if (int error = posix_memalign(&p, kIoAlignment, rounded); error != 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "AllocateAligned: posix_memalign of %d bytes failed: %s", rounded, std::strerror(error)));
  }
  return p;
}

void FreeAligned(void* p) { std::free(p); }

}  // namespace kvtier
