#include "tools/cli/cache_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace kvtier::cli {
namespace {

// Names fixed by docs/disk-format.md ("Cache directory and index").
constexpr char kDataFile[] = "data.kvt";
constexpr char kIndexDir[] = "index";

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("index: ", what, ": ", s.ToString()));
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

absl::StatusOr<Geometry> ParseGeometryMeta(const std::string& text, uint64_t* fingerprint) {
  // "<16 hex> layers=%u kv_heads=%u head_dim=%u dtype=%s block_tokens=%u (%u B/block)"
  const auto bad = [&text] {
    return absl::InvalidArgumentError(absl::StrFormat("malformed geometry metadata '%s'", text));
  };
  std::vector<std::string> words = absl::StrSplit(text, ' ', absl::SkipEmpty());
  if (words.size() < 6 || words[0].size() != 16) return bad();
  uint64_t fp = 0;
  if (!absl::SimpleHexAtoi(words[0], &fp)) return bad();
  Geometry g;
  bool seen[5] = {};
  for (size_t i = 1; i < words.size(); ++i) {
    const size_t eq = words[i].find('=');
    if (eq == std::string::npos) continue;  // the "(N B/block)" tail
    const std::string name = words[i].substr(0, eq), value = words[i].substr(eq + 1);
    uint32_t* field = name == "layers"         ? &g.num_layers
                      : name == "kv_heads"     ? &g.num_kv_heads
                      : name == "head_dim"     ? &g.head_dim
                      : name == "block_tokens" ? &g.block_tokens
                                               : nullptr;
    if (field != nullptr) {
      if (!absl::SimpleAtoi(value, field)) return bad();
      seen[name == "layers" ? 0 : name == "kv_heads" ? 1 : name == "head_dim" ? 2 : 3] = true;
    } else if (name == "dtype") {
      absl::StatusOr<DType> d = ParseDType(value);
      if (!d.ok()) return bad();
      g.dtype = *d;
      seen[4] = true;
    }
  }
  for (bool s : seen) {
    if (!s) return bad();
  }
  if (!g.Validate().ok()) return bad();
  if (g.Fingerprint() != fp) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "geometry metadata '%s': fingerprint does not match the fields", text));
  }
  *fingerprint = fp;
  return g;
}

absl::StatusOr<std::unique_ptr<CacheDir>> CacheDir::Open(const std::string& dir, Mode mode) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrFormat(
        "cache directory '%s' does not exist (%s); check the path", dir, std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(NotACache(dir, "not a directory"));
  const std::string index = absl::StrCat(dir, "/", kIndexDir);
  if (!IsDirectory(index)) return absl::FailedPreconditionError(NotACache(dir, "it has no index/"));
  if (::access(absl::StrCat(index, "/CURRENT").c_str(), F_OK) != 0) {
    return absl::FailedPreconditionError(
        NotACache(dir, "index/ is not a RocksDB database (no CURRENT file)"));
  }

  std::unique_ptr<CacheDir> c(new CacheDir());
  c->dir_ = dir;
  c->mode_ = mode;
  rocksdb::Options options;
  options.create_if_missing = false;
  options.keep_log_file_num = 2;
  rocksdb::DB* db = nullptr;
  rocksdb::Status rs = mode == Mode::kReadOnly ? rocksdb::DB::OpenForReadOnly(options, index, &db)
                                               : rocksdb::DB::Open(options, index, &db);
  if (!rs.ok()) {
    // RocksDB reports a held LOCK file as an IOError mentioning the lock.
    if (rs.IsIOError() && rs.ToString().find("lock") != std::string::npos) {
      return absl::UnavailableError(absl::StrFormat(
          "cache directory '%s' is in use by another process (an engine holds its index); "
          "stop that process first, or use a read-only command (inspect, verify without "
          "--repair). RocksDB said: %s",
          dir, rs.ToString()));
    }
    return absl::FailedPreconditionError(
        NotACache(dir, absl::StrCat("its index cannot be opened (", rs.ToString(), ")")));
  }
  c->db_.reset(db);
  if (absl::Status s = c->LoadMeta(); !s.ok()) return s;

  const std::string data = absl::StrCat(dir, "/", kDataFile);
  c->fd_ = ::open(data.c_str(), O_RDONLY | O_CLOEXEC);
  if (c->fd_ < 0) {
    return absl::FailedPreconditionError(
        NotACache(dir, absl::StrCat("cannot open data.kvt: ", std::strerror(errno))));
  }
  if (::fstat(c->fd_, &st) != 0) {
    return absl::UnavailableError(absl::StrFormat("stat %s: %s", data, std::strerror(errno)));
  }
  c->data_file_bytes_ = static_cast<uint64_t>(st.st_size);
  return c;
}

CacheDir::~CacheDir() {
  if (fd_ >= 0) ::close(fd_);
  if (db_ != nullptr) (void)db_->Close();
}

absl::Status CacheDir::LoadMeta() {
  auto get = [this](const char* name, std::string* value) -> absl::Status {
    rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), MetaIndexKey(name), value);
    if (rs.IsNotFound()) {
      return absl::FailedPreconditionError(NotACache(
          dir_, absl::StrCat("its index has no '", name,
                             "' metadata (an engine never finished opening it)")));
    }
    return FromRocks(rs, absl::StrCat("reading metadata '", name, "'"));
  };
  if (absl::Status s = get("format", &meta_.format); !s.ok()) return s;
  if (meta_.format != absl::StrCat(kRecordFormatVersion)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cache directory '%s' has record format version '%s'; this kvtier reads version %d "
        "only (use the kvtier release that wrote it)",
        dir_, meta_.format, kRecordFormatVersion));
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
  if (std::sscanf(meta_.layout_text.c_str(), "region_bytes=%" SCNu64 " regions=%" SCNu64,
                  &meta_.region_bytes, &meta_.regions) != 2 ||
      meta_.region_bytes == 0 || meta_.region_bytes % kRecordAlignment != 0) {
    return absl::FailedPreconditionError(
        NotACache(dir_, absl::StrCat("malformed layout metadata '", meta_.layout_text, "'")));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> CacheDir::RegionGenerations(size_t* out_of_range) {
  std::vector<uint64_t> gens(meta_.regions, 0);
  *out_of_range = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("r"); it->Valid() && it->key().starts_with("r"); it->Next()) {
    const rocksdb::Slice k = it->key();
    if (k.size() != 5) {
      ++*out_of_range;
      continue;
    }
    uint32_t region = 0;
    for (int i = 1; i < 5; ++i) region = (region << 8) | static_cast<uint8_t>(k[i]);
    absl::StatusOr<uint64_t> gen = DecodeU64(it->value().ToString());
    if (region >= gens.size() || !gen.ok()) {
      ++*out_of_range;
      continue;
    }
    gens[region] = *gen;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scanning region generations");
  return gens;
}

absl::Status CacheDir::ForEachBlock(absl::FunctionRef<void(const BlockEntry&)> fn) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("b"); it->Valid() && it->key().starts_with("b"); it->Next()) {
    BlockEntry b;
    b.index_key = it->key().ToString();
    b.key = ParseBlockIndexKey(b.index_key);
    b.entry = DecodeIndexEntry(it->value().ToString());
    fn(b);
  }
  return FromRocks(it->status(), "scanning block entries");
}

absl::Status CacheDir::CheckPlacement(const IndexEntry& e,
                                      const std::vector<uint64_t>& generations) const {
  // The same rules as DiskTier::Recover: an entry failing them is dropped at open.
  if (e.region >= generations.size()) {
    return absl::OutOfRangeError(absl::StrFormat("region %u is outside the layout (%d regions)",
                                                 e.region, generations.size()));
  }
  const uint64_t start = uint64_t{e.region} * meta_.region_bytes;
  if (e.offset < start || e.offset + e.record_bytes > start + meta_.region_bytes) {
    return absl::OutOfRangeError(absl::StrFormat(
        "record [%d, %d) is not inside region %u", e.offset, e.offset + e.record_bytes, e.region));
  }
  if (e.generation == 0 || e.generation != generations[e.region]) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "orphan: written in generation %d of region %u, which is now at generation %d "
        "(the region was reclaimed)",
        e.generation, e.region, generations[e.region]));
  }
  return absl::OkStatus();
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
  rocksdb::WriteBatch batch;
  for (const std::string& k : index_keys) batch.Delete(k);
  rocksdb::WriteOptions wo;
  wo.sync = true;  // a repair the user was told about must survive a crash right after
  return FromRocks(db_->Write(wo, &batch), "deleting entries");
}

}  // namespace kvtier::cli
