#include "common/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace kvtier {

absl::Status CheckSecretFile(const std::string& path, absl::string_view what) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int error = errno;
    return absl::ErrnoToStatus(
        error, absl::StrFormat("%s '%s': %s", what, path, std::strerror(error)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s '%s' is not a regular file", what, path));
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s '%s' is owned by uid %d, neither this process's user (uid %d) nor root", what, path,
        st.st_uid, ::geteuid()));
  }
  if ((st.st_mode & (S_IRWXO | S_IWGRP)) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s '%s' has mode %04o: %s; a secret must not be. Fix it with `chmod 600 '%s'`", what,
        path, st.st_mode & 07777,
        (st.st_mode & S_IRWXO) != 0 ? "other users can read or write it"
                                    : "its group can write it",
        path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what) {
  if (absl::Status s = CheckSecretFile(path, what); !s.ok()) return s;
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int error = errno;
    return absl::ErrnoToStatus(error,
                               absl::StrFormat("%s '%s': %s", what, path, std::strerror(error)));
  }
  std::string s;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      return absl::ErrnoToStatus(error, absl::StrFormat("%s '%s': read", what, path));
    }
    if (n == 0) break;
    s.append(buf, static_cast<size_t>(n));
    if (s.size() > (1 << 20)) {
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrFormat("%s '%s' is over 1 MiB: not a password", what, path));
    }
  }
  ::close(fd);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) return absl::InvalidArgumentError(absl::StrFormat("%s '%s' is empty", what, path));
  return s;
}

}  // namespace kvtier
