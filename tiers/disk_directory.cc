#include "tiers/disk_directory.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/base/internal/endian.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "io/io_engine.h"
#include "tiers/disk_index.h"
#include "xxhash.h"

namespace kvtier {
namespace {

// Superblock layout (little-endian), zero padded to 4096 bytes:
//   [0, 8)     magic "KVTIERSB"
//   [8, 12)    u32 version
//   [12, 16)   u32 record format
//   [16, 48)   directory id, 32 hex digits
//   [48, 56)   u64 region_bytes
//   [56, 64)   u64 regions
//   [4088, 4096) u64 XXH3-64 of [0, 4088)
constexpr size_t kOffVersion = 8;
constexpr size_t kOffRecordFormat = 12;
constexpr size_t kOffId = 16;
constexpr size_t kIdChars = 32;
constexpr size_t kOffRegionBytes = 48;
constexpr size_t kOffRegions = 56;
constexpr size_t kOffChecksum = kSuperblockBytes - 8;

std::string ChmodFix(const std::string& path, bool is_dir, bool allow_group) {
  const char* mode = is_dir ? (allow_group ? "750" : "700") : (allow_group ? "640" : "600");
  return absl::StrFormat("chmod %s '%s'", mode, path);
}

struct AlignedBuffer {
  void* p = nullptr;
  ~AlignedBuffer() {
    if (p != nullptr) FreeAligned(p);
  }
};

absl::Status PreadAll(int fd, char* buf, size_t n, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      return absl::ErrnoToStatus(errno, absl::StrFormat("reading %s at %d", path, offset + done));
    }
    if (r == 0) {
      return absl::DataLossError(
          absl::StrFormat("%s ends at %d, inside its superblock", path, offset + done));
    }
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

absl::Status PwriteAll(int fd, const char* buf, size_t n, uint64_t offset,
                       const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pwrite(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      return absl::ErrnoToStatus(errno, absl::StrFormat("writing %s at %d", path, offset + done));
    }
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

// Writes `sb` at its offset of `fd` (opened O_DIRECT) and syncs the file.
absl::Status WriteSuperblockAt(int fd, const Superblock& sb, const std::string& path) {
  absl::StatusOr<void*> mem = AllocateAligned(kSuperblockBytes);
  if (!mem.ok()) return mem.status();
  AlignedBuffer buf{*mem};
  if (absl::Status s = EncodeSuperblock(sb, static_cast<char*>(buf.p)); !s.ok()) return s;
  if (absl::Status s = PwriteAll(fd, static_cast<const char*>(buf.p), kSuperblockBytes,
                                 SuperblockOffset(sb.region_bytes, sb.regions), path);
      !s.ok()) {
    return s;
  }
  if (::fsync(fd) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("fsync ", path));
  return absl::OkStatus();
}

// Grows `fd` to `size` bytes (fallocate where the file system has it, else ftruncate).
absl::Status SizeFile(int fd, uint64_t size, const std::string& path) {
  int ret;
  do {
    ret = ::fallocate(fd, 0, 0, static_cast<off_t>(size));
  } while (ret < 0 && errno == EINTR);
  if (ret < 0 && errno != EOPNOTSUPP) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("fallocate %s to %d bytes", path, size));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("fstat ", path));
  if (static_cast<uint64_t>(st.st_size) != size &&
      ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("ftruncate %s to %d bytes", path, size));
  }
  return absl::OkStatus();
}


absl::StatusOr<int> OpenDirect(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_RDWR | O_DIRECT | O_CLOEXEC | O_NOFOLLOW, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd >= 0) return fd;
  const int error = errno;
  if (error == ELOOP) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' is a symbolic link; kvtier never writes through a link (remove it)",
        path));
  }
  if (error == EINVAL) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk tier: open %s with O_DIRECT failed (EINVAL): the file system does not support "
        "direct I/O",
        path));
  }
  return absl::ErrnoToStatus(error, absl::StrFormat("disk tier: open %s", path));
}

}  // namespace

absl::Status EncodeSuperblock(const Superblock& sb, char* out) {
  if (!IsDirectoryId(sb.directory_id)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "superblock: directory id '%s' is not 32 lowercase hex digits", sb.directory_id));
  }
  std::memset(out, 0, kSuperblockBytes);
  std::memcpy(out, kSuperblockMagic, 8);
  absl::little_endian::Store32(out + kOffVersion, sb.version);
  absl::little_endian::Store32(out + kOffRecordFormat, sb.record_format);
  std::memcpy(out + kOffId, sb.directory_id.data(), kIdChars);
  absl::little_endian::Store64(out + kOffRegionBytes, sb.region_bytes);
  absl::little_endian::Store64(out + kOffRegions, sb.regions);
  absl::little_endian::Store64(out + kOffChecksum, XXH3_64bits(out, kOffChecksum));
  return absl::OkStatus();
}

absl::StatusOr<Superblock> DecodeSuperblock(absl::string_view bytes) {
  if (bytes.size() != kSuperblockBytes) {
    return absl::DataLossError(
        absl::StrFormat("superblock: %d bytes, expected %d", bytes.size(), kSuperblockBytes));
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kSuperblockMagic, 8) != 0) {
    return absl::DataLossError("superblock: no 'KVTIERSB' magic (not a kvtier data file)");
  }
  if (absl::little_endian::Load64(p + kOffChecksum) != XXH3_64bits(p, kOffChecksum)) {
    return absl::DataLossError("superblock: checksum mismatch (damaged)");
  }
  Superblock sb;
  sb.version = absl::little_endian::Load32(p + kOffVersion);
  if (sb.version != kSuperblockVersion) {
    return absl::DataLossError(absl::StrFormat(
        "superblock: version %d; this kvtier reads version %d", sb.version, kSuperblockVersion));
  }
  sb.record_format = absl::little_endian::Load32(p + kOffRecordFormat);
  sb.directory_id.assign(p + kOffId, kIdChars);
  if (!IsDirectoryId(sb.directory_id)) {
    return absl::DataLossError("superblock: the directory id is not 32 lowercase hex digits");
  }
  sb.region_bytes = absl::little_endian::Load64(p + kOffRegionBytes);
  sb.regions = absl::little_endian::Load64(p + kOffRegions);
  return sb;
}

absl::StatusOr<std::string> NewDirectoryId() {
  unsigned char raw[16];
  size_t got = 0;
  while (got < sizeof(raw)) {
    const ssize_t n = ::getrandom(raw + got, sizeof(raw) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "getrandom for a cache directory id");
    got += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(raw), sizeof(raw)));
}

std::string ResetAdvice(const std::string& dir) {
  return absl::StrFormat(
      "run `kvtier reset '%s' --yes` to start the directory over (its cached blocks are lost), "
      "or point the engine at another directory",
      dir);
}

bool IsDirectoryId(absl::string_view id) {
  if (id.size() != kIdChars) return false;
  for (char c : id) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) || absl::ascii_isupper(c)) {
      return false;
    }
  }
  return true;
}

std::string ModeText(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

absl::Status CheckPrivate(const std::string& path, const struct stat& st, bool is_dir,
                          bool allow_group) {
  if (st.st_uid != ::geteuid()) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "disk tier: '%s' is owned by uid %d, not by this process's user (uid %d); a cache "
        "directory and its files must be the engine user's own",
        path, st.st_uid, ::geteuid()));
  }
  const mode_t others = st.st_mode & S_IRWXO;
  const mode_t group = st.st_mode & S_IRWXG;
  const bool group_bad = allow_group ? (group & S_IWGRP) != 0 : group != 0;
  if (others != 0 || group_bad) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' has mode %s: %s may %s it, and it holds every tenant's KV blocks; "
        "fix it with `%s`%s",
        path, ModeText(st.st_mode), others != 0 ? "other users" : "its group",
        (others & (S_IWOTH)) != 0 || (group & S_IWGRP) != 0 ? "write" : "read",
        ChmodFix(path, is_dir, allow_group),
        allow_group ? "" : " (or allow group access on purpose: DiskOptions::group_access)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DirectoryState> PrepareCacheDirectory(const std::string& dir, bool allow_group) {
  const mode_t dir_mode = allow_group ? 0750 : 0700;
  bool created = false;
  if (::mkdir(dir.c_str(), dir_mode) == 0) {
    created = true;
    // mkdir's mode is filtered by the umask (which could only narrow it); set it exactly.
    if (::chmod(dir.c_str(), dir_mode) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrFormat("disk tier: chmod '%s'", dir));
    }
  } else if (errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: cannot create cache directory '%s': %s", dir, std::strerror(errno)));
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("disk tier: stat '%s': %s", dir, std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("disk tier: '%s' is not a directory", dir));
  }
  if (absl::Status s = CheckPrivate(dir, st, /*is_dir=*/true, allow_group); !s.ok()) return s;
  if (created) return DirectoryState::kEmpty;

  const std::string data = absl::StrCat(dir, "/", kDataFileName);
  const std::string index = absl::StrCat(dir, "/", kIndexDirName);
  const std::string creating = absl::StrCat(dir, "/", kDataFileCreatingName);
  // A data file whose creation was cut short (it is renamed to data.kvt only when complete):
  // removed (a link as a link).
  if (::unlink(creating.c_str()) == 0) {
    KVTIER_LOG(kWarning, "disk tier: %s: removed %s, left by a creation cut short", dir,
               kDataFileCreatingName);
  }
  bool has_data = false, has_index = false;
  struct stat index_st {};
  if (::lstat(data.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "disk tier: '%s' is a symbolic link; kvtier never writes through a link (its target "
          "was not touched). Remove the link",
          data));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("disk tier: '%s' is not a regular file", data));
    }
    has_data = true;
  }
  if (::lstat(index.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "disk tier: '%s' is a symbolic link; kvtier never writes through a link (its target "
          "was not touched). Remove the link",
          index));
    }
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("disk tier: '%s' is not a directory", index));
    }
    has_index = true;
    index_st = st;
  }
  if (has_data && has_index) {
    // (An index without its data file is a creation cut short, possibly before its mode was
    // set: the opener sets it.)
    if (absl::Status s = CheckPrivate(index, index_st, /*is_dir=*/true, allow_group); !s.ok()) {
      return s;
    }
    return DirectoryState::kCache;
  }
  if (has_data) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' has a data.kvt but no index/: it is not adopted (a file kvtier did not "
        "make, or a cache whose index was deleted); %s",
        dir, ResetAdvice(dir)));
  }
  // The index without its data file: a creation cut short (the index names no block; the
  // opener makes the data file) or data lost (it names blocks; the opener refuses).
  if (has_index) return DirectoryState::kIndexOnly;
  // Neither: only an empty directory becomes a cache.
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
  if (d == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("disk tier: opendir '%s'", dir));
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d.get())) {
    const absl::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (names.size() < 3) names.emplace_back(name);
  }
  if (!names.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' is not empty and is not a kvtier cache (it holds '%s'...); kvtier only "
        "creates a cache in an empty or missing directory, so it never writes among other "
        "files. Use a new directory",
        dir, absl::StrJoin(names, "', '")));
  }
  return DirectoryState::kEmpty;
}

absl::Status RestrictIndexDirectory(const std::string& dir, bool allow_group) {
  const std::string index = absl::StrCat(dir, "/", kIndexDirName);
  // Made here with its mode before RocksDB fills it (RocksDB would create it by the umask).
  if (::mkdir(index.c_str(), allow_group ? 0750 : 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("disk tier: mkdir '%s'", index));
  }
  if (::chmod(index.c_str(), allow_group ? 0750 : 0700) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("disk tier: chmod '%s'", index));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> CreateDataFile(const std::string& dir, const Superblock& sb,
                                   bool allow_group) {
  const std::string path = absl::StrCat(dir, "/", kDataFileName);
  const std::string creating = absl::StrCat(dir, "/", kDataFileCreatingName);
  const mode_t mode = allow_group ? 0640 : 0600;
  // Made complete under another name, then renamed: data.kvt never exists without its
  // superblock, whenever the process dies.
  absl::StatusOr<int> fd = OpenDirect(creating, O_CREAT | O_EXCL, mode);
  if (!fd.ok()) return fd.status();
  auto fail = [&](absl::Status s) {
    ::close(*fd);
    ::unlink(creating.c_str());
    return s;
  };
  if (::fchmod(*fd, mode) != 0) return fail(absl::ErrnoToStatus(errno, "fchmod " + creating));
  const uint64_t layout = SuperblockOffset(sb.region_bytes, sb.regions);
  if (absl::Status s = SizeFile(*fd, layout + kSuperblockBytes, creating); !s.ok()) return fail(s);
  if (absl::Status s = WriteSuperblockAt(*fd, sb, creating); !s.ok()) return fail(s);
  // RENAME_NOREPLACE: a data.kvt that appeared meanwhile is never replaced.
  if (::renameat2(AT_FDCWD, creating.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
    return fail(absl::ErrnoToStatus(
        errno, absl::StrFormat("disk tier: rename %s to %s", creating, path)));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return *fd;
}

absl::StatusOr<Superblock> ReadSuperblock(int fd, uint64_t file_bytes, uint64_t region_bytes,
                                          uint64_t regions) {
  const uint64_t layout = SuperblockOffset(region_bytes, regions);
  if (file_bytes == layout) {
    return absl::NotFoundError(absl::StrFormat(
        "data.kvt is exactly its layout's %d bytes: a directory of the format before "
        "superblocks",
        layout));
  }
  if (file_bytes < layout + kSuperblockBytes) {
    return absl::DataLossError(absl::StrFormat(
        "data.kvt is %d bytes, shorter than its layout's %d (+ %d of superblock): it was "
        "truncated, and records past its end are gone",
        file_bytes, layout, kSuperblockBytes));
  }
  absl::StatusOr<void*> mem = AllocateAligned(kSuperblockBytes);
  if (!mem.ok()) return mem.status();
  AlignedBuffer buf{*mem};
  if (absl::Status s =
          PreadAll(fd, static_cast<char*>(buf.p), kSuperblockBytes, layout, "data.kvt");
      !s.ok()) {
    return s;
  }
  return DecodeSuperblock(absl::string_view(static_cast<const char*>(buf.p), kSuperblockBytes));
}

absl::StatusOr<int> OpenDataFile(const std::string& dir, const Superblock& want,
                                 const std::string& index_id, bool allow_group,
                                 std::string* id_out) {
  const std::string path = absl::StrCat(dir, "/", kDataFileName);
  absl::StatusOr<int> fd = OpenDirect(path, 0, 0);
  if (!fd.ok()) return fd.status();
  auto fail = [&](absl::Status s) {
    ::close(*fd);
    return s;
  };
  struct stat st;
  if (::fstat(*fd, &st) != 0) return fail(absl::ErrnoToStatus(errno, "fstat " + path));
  if (!S_ISREG(st.st_mode)) {
    return fail(absl::FailedPreconditionError(
        absl::StrFormat("disk tier: '%s' is not a regular file", path)));
  }
  if (absl::Status s = CheckPrivate(path, st, /*is_dir=*/false, allow_group); !s.ok()) {
    return fail(s);
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  absl::StatusOr<Superblock> sb = ReadSuperblock(*fd, file_bytes, want.region_bytes, want.regions);
  if (index_id.empty() && absl::IsNotFound(sb.status())) {
    // The format before superblocks: the index's metadata (checked by the caller) proves the
    // directory is kvtier's. It gets its superblock and id now.
    absl::StatusOr<std::string> id = NewDirectoryId();
    if (!id.ok()) return fail(id.status());
    Superblock fresh = want;
    fresh.directory_id = *id;
    if (absl::Status s = SizeFile(*fd, file_bytes + kSuperblockBytes, path); !s.ok()) {
      return fail(s);
    }
    if (absl::Status s = WriteSuperblockAt(*fd, fresh, path); !s.ok()) return fail(s);
    KVTIER_LOG(kInfo, "disk tier: %s: a directory of the format before superblocks; gave it one "
               "(id %s)", dir, *id);
    *id_out = *id;
    return *fd;
  }
  if (absl::IsNotFound(sb.status())) {
    return fail(absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' has no superblock but its index has directory id %s: it is not this "
        "directory's data file; %s",
        path, index_id, ResetAdvice(dir))));
  }
  if (!sb.ok()) {
    const bool truncated = absl::IsDataLoss(sb.status()) && file_bytes < want.region_bytes *
                                                                             want.regions +
                                                                         kSuperblockBytes;
    return fail(absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' does not belong with this directory's index: %s. %s%s", path,
        sb.status().message(),
        truncated ? "" : "It may be a file kvtier did not write, or of another directory; ",
        ResetAdvice(dir))));
  }
  if (sb->region_bytes != want.region_bytes || sb->regions != want.regions) {
    return fail(absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' is laid out as %d regions of %d bytes but its index says %d of %d; "
        "%s",
        path, sb->regions, sb->region_bytes, want.regions, want.region_bytes, ResetAdvice(dir))));
  }
  if (!index_id.empty() && sb->directory_id != index_id) {
    return fail(absl::FailedPreconditionError(absl::StrFormat(
        "disk tier: '%s' belongs to another cache directory (its superblock's id is %s, the "
        "index's %s): it is not adopted; %s",
        path, sb->directory_id, index_id, ResetAdvice(dir))));
  }
  *id_out = sb->directory_id;
  return *fd;
}

}  // namespace kvtier
