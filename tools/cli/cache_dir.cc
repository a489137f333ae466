#include "tools/cli/cache_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier::cli {
namespace {

// The CLI reports a failing index as a target it cannot use (exit 3), whatever RocksDB said.
absl::Status IndexError(const absl::Status& s) {
  return s.ok() ? s : absl::UnavailableError(s.message());
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string NotACache(const std::string& dir, absl::string_view why) {
  return absl::StrFormat(
      "'%s' is not a kvtier cache directory: %s. Pass the directory given to the engine as "
      "DiskOptions::directory (it holds data.kvt and index/)",
      dir, why);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CacheDir>> CacheDir::Open(const std::string& dir, Mode mode) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrFormat(
        "cache directory '%s' does not exist (%s); check the path", dir, std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(NotACache(dir, "not a directory"));
  const struct stat dir_st = st;
  const std::string index = absl::StrCat(dir, "/", kIndexDirName);
  const std::string data = absl::StrCat(dir, "/", kDataFileName);
  for (const std::string* path : {&index, &data}) {
    struct stat lst;
    if (::lstat(path->c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "'%s' is a symbolic link: kvtier neither reads nor writes a cache through a link (the "
          "engine refuses it too); remove the link",
          *path));
    }
  }
  if (!IsDirectory(index)) return absl::FailedPreconditionError(NotACache(dir, "it has no index/"));
  struct stat index_st;
  ::stat(index.c_str(), &index_st);
  if (::access(absl::StrCat(index, "/CURRENT").c_str(), F_OK) != 0) {
    return absl::FailedPreconditionError(
        NotACache(dir, "index/ is not a RocksDB database (no CURRENT file)"));
  }

  std::unique_ptr<CacheDir> c(new CacheDir());
  c->dir_ = dir;
  c->mode_ = mode;
  absl::StatusOr<std::unique_ptr<DiskIndex>> opened = DiskIndex::Open(
      dir, mode == Mode::kReadOnly ? DiskIndex::Mode::kReadOnly : DiskIndex::Mode::kReadWrite);
  if (!opened.ok()) {
    if (DiskIndex::IsInUse(opened.status())) {
      return absl::UnavailableError(absl::StrFormat(
          "%s: an engine holds its index; stop that process first, or use a read-only command "
          "(inspect, verify without --repair)",
          opened.status().message()));
    }
    return absl::FailedPreconditionError(NotACache(
        dir, absl::StrCat("its index cannot be opened (", opened.status().message(), ")")));
  }
  c->index_ = std::move(*opened);
  if (absl::Status s = c->LoadMeta(); !s.ok()) return s;

  c->fd_ = ::open(data.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (c->fd_ < 0) {
    return absl::FailedPreconditionError(
        NotACache(dir, absl::StrCat("cannot open data.kvt: ", std::strerror(errno))));
  }
  if (::fstat(c->fd_, &st) != 0) {
    return absl::UnavailableError(absl::StrFormat("stat %s: %s", data, std::strerror(errno)));
  }
  c->data_file_bytes_ = static_cast<uint64_t>(st.st_size);
  c->LoadAccess(dir_st, index_st, st);
  return c;
}

void CacheDir::LoadAccess(const struct stat& dir_st, const struct stat& index_st,
                          const struct stat& data_st) {
  CacheAccess& a = access_;
  a.directory_mode = ModeText(dir_st.st_mode);
  a.index_mode = ModeText(index_st.st_mode);
  a.data_mode = ModeText(data_st.st_mode);
  const std::string index = absl::StrCat(dir_, "/", kIndexDirName);
  const std::string data = absl::StrCat(dir_, "/", kDataFileName);
  const struct {
    const std::string* path;
    const struct stat* st;
    bool is_dir;
  } files[] = {{&dir_, &dir_st, true}, {&index, &index_st, true}, {&data, &data_st, false}};
  for (const auto& f : files) {
    // A group-readable mode the engine accepts with group_access is noted, not a problem; for
    // anything worse the fix offered is the private one.
    if (CheckPrivate(*f.path, *f.st, f.is_dir, /*allow_group=*/true).ok()) {
      if ((f.st->st_mode & S_IRWXG) != 0) a.group_readable = true;
    } else {
      a.problems.emplace_back(CheckPrivate(*f.path, *f.st, f.is_dir, false).message());
    }
  }
  a.superblock = ReadSuperblock(fd_, data_file_bytes_, meta_.region_bytes, meta_.regions);
  if (absl::StatusOr<std::string> id = index_->GetMeta(kDirectoryIdMeta); id.ok()) {
    a.index_directory_id = *id;
  }
  if (a.superblock.ok()) {
    const Superblock& sb = *a.superblock;
    if (sb.region_bytes != meta_.region_bytes || sb.regions != meta_.regions) {
      a.mismatch = absl::StrFormat(
          "data.kvt's superblock lays out %d regions of %d bytes, the index %d of %d", sb.regions,
          sb.region_bytes, meta_.regions, meta_.region_bytes);
    } else if (!a.index_directory_id.empty() && sb.directory_id != a.index_directory_id) {
      a.mismatch = absl::StrFormat(
          "data.kvt belongs to another cache directory (superblock id %s, index id %s)",
          sb.directory_id, a.index_directory_id);
    }
  } else if (absl::IsNotFound(a.superblock.status())) {
    if (!a.index_directory_id.empty()) {
      a.mismatch = absl::StrFormat(
          "data.kvt has no superblock but the index has directory id %s: not this directory's "
          "data file",
          a.index_directory_id);
    }
  } else {
    a.mismatch = std::string(a.superblock.status().message());
  }
}

CacheDir::~CacheDir() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status CacheDir::LoadMeta() {
  auto get = [this](const char* name, std::string* value) -> absl::Status {
    absl::StatusOr<std::string> v = index_->GetMeta(name);
    if (absl::IsNotFound(v.status())) {
      return absl::FailedPreconditionError(NotACache(
          dir_, absl::StrCat("its index has no '", name,
                             "' metadata (an engine never finished opening it)")));
    }
    if (!v.ok()) return IndexError(v.status());
    *value = std::move(*v);
    return absl::OkStatus();
  };
  if (absl::Status s = get("format", &meta_.format); !s.ok()) return s;
  if (meta_.format != absl::StrCat(kRecordFormatVersion) &&
      meta_.format != absl::StrCat(kRecordFormatVersionExtended)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cache directory '%s' has record format version '%s'; this kvtier reads versions %d "
        "and %d only (use the kvtier release that wrote it)",
        dir_, meta_.format, kRecordFormatVersion, kRecordFormatVersionExtended));
  }
  if (absl::Status s = get("geometry", &meta_.geometry_text); !s.ok()) return s;
  if (absl::StatusOr<Geometry> g = ParseGeometryMeta(meta_.geometry_text,
                                                     &meta_.geometry_fingerprint);
      g.ok()) {
    meta_.geometry = *g;
  } else if (!absl::SimpleHexAtoi(meta_.geometry_text.substr(0, 16),
                                  &meta_.geometry_fingerprint)) {
    return absl::FailedPreconditionError(NotACache(dir_, g.status().message()));
  }
  if (absl::Status s = get("layout", &meta_.layout_text); !s.ok()) return s;
  if (!ParseLayoutMeta(meta_.layout_text, &meta_.region_bytes, &meta_.regions).ok()) {
    return absl::FailedPreconditionError(
        NotACache(dir_, absl::StrCat("malformed layout metadata '", meta_.layout_text, "'")));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> CacheDir::RegionGenerations(size_t* out_of_range) {
  absl::StatusOr<std::vector<uint64_t>> g = index_->RegionGenerations(meta_.regions, out_of_range);
  if (!g.ok()) return IndexError(g.status());
  return g;
}

absl::Status CacheDir::ForEachBlock(absl::FunctionRef<void(const BlockEntry&)> fn) {
  return IndexError(index_->ForEachBlock(fn));
}

absl::Status CacheDir::CheckPlacement(const IndexEntry& e,
                                      const std::vector<uint64_t>& generations) const {
  return ::kvtier::CheckPlacement(e, meta_.region_bytes, generations);
}

absl::Status CacheDir::ReadRecord(const IndexEntry& e, std::string* out) const {
  out->resize(e.record_bytes);
  size_t done = 0;
  while (done < out->size()) {
    const ssize_t n = ::pread(fd_, out->data() + done, out->size() - done,
                              static_cast<off_t>(e.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::UnavailableError(absl::StrFormat("reading data.kvt at %d: %s", e.offset + done,
                                                    std::strerror(errno)));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrFormat(
          "data.kvt ends at %d, inside the record [%d, %d)", e.offset + done, e.offset,
          e.offset + e.record_bytes));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status CacheDir::DeleteKeys(const std::vector<std::string>& index_keys) {
  if (mode_ != Mode::kReadWrite) {
    return absl::FailedPreconditionError("internal: DeleteKeys on a read-only cache directory");
  }
  return IndexError(index_->DeleteKeys(index_keys));
}

}  // namespace kvtier::cli
