// fuzz/fuzz_disk_recover.cc — reopening a damaged cache directory (tiers/disk_tier.h).
//
// DiskTier::Open recovers every block the RocksDB index names, and the index and data file
// may be torn, stale or hostile. Each input starts from a copy of a small, genuine cache
// directory (six blocks written by the tier itself, made once per process) and applies a
// fuzzer-written list of edits before reopening it:
//   * index values put under block keys: the real entries with fields changed (offset —
//     including values near 2^64 —, region, generation, sizes, codec, namespace) or raw bytes;
//   * region generations changed, raw, or deleted; keys deleted; malformed keys added;
//   * bytes of the data file overwritten (anywhere, or inside its superblock), the file cut
//     short or grown, the directory id in the index's metadata changed or deleted.
// The properties checked:
//   * Open succeeds or returns an error; it never crashes or reads outside a buffer;
//   * Open succeeds only if the data file's superblock decodes and belongs with the index
//     (its id is the index's, its layout the directory's): a damaged or foreign one is refused;
//   * every block it recovers reads back as exactly the bytes written under that key, or
//     fails with DataLoss — never other bytes (a recovered entry pointing outside its region
//     or the file must not be recovered at all, or must read as DataLoss);
//   * the tier stays usable: blocks written after recovery read back exactly unless the tier
//     reported them evicted.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_support.h"
#include "kvtier/geometry.h"
#include "rocksdb/db.h"
#include "tiers/disk_directory.h"
#include "tiers/disk_index.h"
#include "tiers/disk_record.h"
#include "tiers/disk_tier.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using fuzz::Input;

constexpr int kTemplateBlocks = 6;
constexpr int kRegions = 4;
constexpr int kNewBlocks = 10;  // written after recovery: more than a region holds

Geometry TestGeometry() { return Geometry{1, 1, 64, DType::kFloat16, 16}; }  // 4 KiB blocks

std::vector<char> Content(const BlockKey& key, size_t n) {
  std::vector<char> v(n);
  uint64_t x = key.hi * 0x9E3779B97F4A7C15ULL ^ key.lo;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = static_cast<char>(x);
  }
  return v;
}

DiskTierOptions Options(const fs::path& dir) {
  DiskTierOptions o;
  o.directory = dir.string();
  o.region_bytes = 64 * 1024;
  o.capacity_bytes = kRegions * o.region_bytes;
  o.force_fallback_io = true;  // no io_uring setup per input
  o.staging_buffers = 4;
  return o;
}

struct Template {
  fs::path root;  // a temporary directory of this process
  fs::path cache;
  std::vector<BlockKey> keys;
  std::map<BlockKey, IndexEntry> entries;
  std::map<uint32_t, uint64_t> generations;
};

Template* g_template = nullptr;

void RemoveTemplate() {
  if (g_template != nullptr) {
    std::error_code ec;
    fs::remove_all(g_template->root, ec);
  }
}

// Writes six blocks with the tier itself, closes it, and reads back what its index holds.
void MakeTemplate() {
  auto* t = new Template;
  char tmpl[] = "/tmp/kvtier-fuzz-recover-XXXXXX";
  KVTIER_FUZZ_CHECK(mkdtemp(tmpl) != nullptr, "mkdtemp");
  t->root = tmpl;
  t->cache = t->root / "template";
  {
    auto tier = DiskTier::Open(Options(t->cache), TestGeometry(), [](auto&&...) {}, nullptr);
    KVTIER_FUZZ_CHECK(tier.ok(), "template open: " + tier.status().ToString());
    for (int i = 0; i < kTemplateBlocks; ++i) {
      const BlockKey key{1, static_cast<uint64_t>(i)};
      const std::vector<char> c = Content(key, (*tier)->block_bytes());
      absl::Status status;
      auto id = (*tier)->Write(key, "default", c.data(), [&](absl::Status s) { status = s; });
      KVTIER_FUZZ_CHECK(id.ok(), "template write");
      (*tier)->Drain();
      KVTIER_FUZZ_CHECK(status.ok(), "template write: " + status.ToString());
      t->keys.push_back(key);
    }
  }
  rocksdb::DB* db = nullptr;
  KVTIER_FUZZ_CHECK(rocksdb::DB::Open(rocksdb::Options(), (t->cache / "index").string(), &db).ok(),
                    "template index");
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string k = it->key().ToString();
    const std::string v = it->value().ToString();
    if (k[0] == 'b') {
      t->entries[*ParseBlockIndexKey(k)] = *DecodeIndexEntry(v);
    } else if (k[0] == 'r' && k.size() == 5) {
      const uint32_t region = uint32_t{static_cast<uint8_t>(k[4])};
      t->generations[region] = *DecodeU64(v);
    }
  }
  it.reset();
  delete db;
  KVTIER_FUZZ_CHECK(t->entries.size() == kTemplateBlocks, "template index entries");
  g_template = t;
  std::atexit(RemoveTemplate);
}

// A BlockKey: one of the template's, or another.
BlockKey AnyKey(Input& in) {
  const uint8_t pick = in.U8();
  if (pick % 4 != 0) return g_template->keys[pick % g_template->keys.size()];
  return BlockKey{in.U8(), in.U8()};
}

// An index value: a real entry with some fields changed, or raw bytes.
std::string EntryValue(Input& in) {
  const uint8_t how = in.U8();
  if (how % 8 == 0) return std::string(in.Bytes(in.U8() % 80));
  IndexEntry e = g_template->entries.begin()->second;
  auto it = g_template->entries.find(g_template->keys[in.U8() % g_template->keys.size()]);
  if (it != g_template->entries.end()) e = it->second;
  const uint8_t fields = in.U8();
  if (fields & 1) {
    switch (in.U8() % 4) {
      case 0: e.offset = in.U64(); break;
      case 1: e.offset = ~uint64_t{0} - in.U16() * uint64_t{4096} + 1 - 4096; break;  // near 2^64
      case 2: e.offset = uint64_t{in.U32() % 128} * 4096; break;
      case 3: e.offset += static_cast<int16_t>(in.U16()) * int64_t{4096}; break;
    }
  }
  if (fields & 2) e.region = in.Bool() ? in.U32() : in.U8() % (kRegions + 2);
  if (fields & 4) e.generation = in.Bool() ? in.U64() : e.generation + in.U8() % 3 - 1;
  if (fields & 8) {
    e.stored_bytes = in.Bool() ? in.U32() : in.U16();
    e.record_bytes = in.Bool() ? static_cast<uint32_t>(RecordSize(e.stored_bytes)) : in.U32();
  }
  if (fields & 16) e.codec = static_cast<Codec>(in.U8() % 3);
  if (fields & 32) e.ns = in.Bool() ? "other" : std::string(in.Bytes(in.U8() % 130));
  return EncodeIndexEntry(e);
}

void EditIndex(Input& in, rocksdb::DB* db) {
  const int edits = in.U8() % 12;
  for (int i = 0; i < edits && !in.empty(); ++i) {
    rocksdb::Status s;
    switch (in.U8() % 6) {
      case 0: {
        // Key first, then value: the input is read in a fixed order (not argument order).
        const std::string key = BlockIndexKey(AnyKey(in));
        s = db->Put(rocksdb::WriteOptions(), key, EntryValue(in));
        break;
      }
      case 1: {
        const uint32_t region = in.U8() % (kRegions + 2);
        std::string value;
        if (in.U8() % 4 == 0) {
          value = std::string(in.Bytes(in.U8() % 12));
        } else {
          const uint64_t base = g_template->generations.count(region) != 0
                                    ? g_template->generations[region]
                                    : 0;
          value = EncodeU64(in.Bool() ? in.U64() : base + in.U8() % 3 - 1);
        }
        s = db->Put(rocksdb::WriteOptions(), RegionIndexKey(region), value);
        break;
      }
      case 2:
        s = db->Delete(rocksdb::WriteOptions(), in.Bool() ? BlockIndexKey(AnyKey(in))
                                                          : RegionIndexKey(in.U8() % kRegions));
        break;
      case 3: {
        // A malformed key among the block or region keys.
        std::string key(1, in.Bool() ? 'b' : 'r');
        key += std::string(in.Bytes(in.U8() % 24));
        s = db->Put(rocksdb::WriteOptions(), key, std::string(in.Bytes(in.U8() % 64)));
        break;
      }
      case 4: {
        const std::string key = BlockIndexKey(AnyKey(in));
        s = db->Put(rocksdb::WriteOptions(), key, std::string(in.Bytes(in.U8() % 80)));
        break;
      }
      case 5: {
        // The directory id: deleted (a directory of the format before superblocks), or changed.
        const std::string key = MetaIndexKey(kDirectoryIdMeta);
        s = in.Bool() ? db->Delete(rocksdb::WriteOptions(), key)
                      : db->Put(rocksdb::WriteOptions(), key, std::string(in.Bytes(in.U8() % 40)));
        break;
      }
    }
    KVTIER_FUZZ_CHECK(s.ok(), "editing the index: " + s.ToString());
  }
}

void EditData(Input& in, const fs::path& file) {
  const int patches = in.U8() % 4;
  if (patches == 0) return;
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  KVTIER_FUZZ_CHECK(f.good(), "opening the data file");
  const uint64_t size = fs::file_size(file);
  const uint64_t layout = uint64_t{kRegions} * Options(file.parent_path()).region_bytes;
  for (int i = 0; i < patches && !in.empty(); ++i) {
    const uint8_t where = in.U8();
    if (where % 8 == 7) {
      f.close();
      fs::resize_file(file, in.Bool() ? layout + in.U16() % (2 * kSuperblockBytes)
                                      : uint64_t{in.U32()} % (layout + kSuperblockBytes));
      return;
    }
    const uint64_t at = where % 4 == 0 ? layout + in.U16() % kSuperblockBytes
                        : size == 0    ? 0
                                       : in.U32() % size;
    const std::string bytes(in.Bytes(in.U8() % 64));
    f.seekp(static_cast<std::streamoff>(at));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
}

void Run(Input& in) {
  const fs::path work = g_template->root / "work";
  std::map<BlockKey, IndexEntry> index;
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::copy(g_template->cache, work, fs::copy_options::recursive, ec);
  KVTIER_FUZZ_CHECK(!ec, "copying the template: " + ec.message());

  {
    rocksdb::DB* db = nullptr;
    const rocksdb::Status s = rocksdb::DB::Open(rocksdb::Options(), (work / "index").string(), &db);
    KVTIER_FUZZ_CHECK(s.ok(), "opening the index copy: " + s.ToString());
    EditIndex(in, db);
    // The index as the tier will find it: what each block key's value decodes to.
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek("b"); it->Valid() && it->key().starts_with("b"); it->Next()) {
      absl::StatusOr<BlockKey> key = ParseBlockIndexKey(it->key().ToString());
      absl::StatusOr<IndexEntry> e = DecodeIndexEntry(it->value().ToString());
      if (key.ok() && e.ok()) index[*key] = *e;
    }
    it.reset();
    delete db;
  }
  EditData(in, work / "data.kvt");

  std::map<BlockKey, std::pair<std::string, RecordId>> recovered;
  std::set<RecordId> dropped;
  auto tier = DiskTier::Open(
      Options(work), TestGeometry(),
      [&](const BlockKey& k, const std::string& ns, RecordId id) { recovered[k] = {ns, id}; },
      [&](std::vector<std::pair<BlockKey, RecordId>> d) {
        for (const auto& p : d) dropped.insert(p.second);
      });
  if (!tier.ok()) {
    KVTIER_FUZZ_CHECK(!tier.status().message().empty(), "Open failed without a message");
    return;
  }
  {
    // It opened: its superblock must be whole and belong with its index.
    std::ifstream f(work / "data.kvt", std::ios::binary);
    const uint64_t layout = uint64_t{kRegions} * Options(work).region_bytes;
    std::string sb_bytes(kSuperblockBytes, '\0');
    f.seekg(static_cast<std::streamoff>(layout));
    f.read(sb_bytes.data(), static_cast<std::streamsize>(sb_bytes.size()));
    KVTIER_FUZZ_CHECK(f.good(), "opened a data file without room for its superblock");
    absl::StatusOr<Superblock> sb = DecodeSuperblock(sb_bytes);
    KVTIER_FUZZ_CHECK(sb.ok(), "opened with a bad superblock: " + sb.status().ToString());
    KVTIER_FUZZ_CHECK(sb->regions == kRegions && sb->region_bytes == Options(work).region_bytes,
                      "opened with a superblock of another layout");
    rocksdb::DB* db = nullptr;
    rocksdb::Options ro;
    KVTIER_FUZZ_CHECK(rocksdb::DB::OpenForReadOnly(ro, (work / "index").string(), &db).ok(),
                      "reading the index back");
    std::string id;
    const rocksdb::Status got = db->Get(rocksdb::ReadOptions(), MetaIndexKey(kDirectoryIdMeta), &id);
    delete db;
    KVTIER_FUZZ_CHECK(got.ok() && id == sb->directory_id,
                      "opened with a superblock whose id is not the index's: index " + got.ToString() + " '" + id + "' superblock " + sb->directory_id);
  }
  const size_t block = (*tier)->block_bytes();
  std::vector<char> out(block);
  // Only entries that name a record inside its region are recovered.
  const uint64_t region_bytes = Options(work).region_bytes;
  for (const auto& [key, where] : recovered) {
    auto e = index.find(key);
    KVTIER_FUZZ_CHECK(e != index.end(), "recovered a key the index does not decode: " + key.ToHex());
    const IndexEntry& entry = e->second;
    const uint64_t begin = uint64_t{entry.region} * region_bytes;
    KVTIER_FUZZ_CHECK(entry.region < kRegions && entry.offset >= begin &&
                          entry.offset - begin <= region_bytes &&
                          entry.record_bytes <= region_bytes - (entry.offset - begin),
                      absl::StrCat("recovered an entry outside its region: region ", entry.region,
                                   " offset ", entry.offset, " record_bytes ",
                                   entry.record_bytes));
  }
  for (const auto& [key, where] : recovered) {
    absl::Status done;
    const absl::Status s =
        (*tier)->Read(where.second, key, where.first, out.data(), [&](absl::Status st) {
          done = st;
        });
    (*tier)->Drain();
    const absl::Status result = s.ok() ? done : s;
    if (result.ok()) {
      KVTIER_FUZZ_CHECK(out == Content(key, block),
                        "a recovered block read back as other bytes: " + key.ToHex());
    } else {
      KVTIER_FUZZ_CHECK(result.code() == absl::StatusCode::kDataLoss ||
                            result.code() == absl::StatusCode::kNotFound ||
                            result.code() == absl::StatusCode::kInvalidArgument,
                        "reading a recovered block: " + result.ToString());
    }
  }

  // The tier must stay usable: write more than a region's worth and read it all back.
  std::vector<std::pair<BlockKey, RecordId>> written;
  for (int i = 0; i < kNewBlocks; ++i) {
    const BlockKey key{2, static_cast<uint64_t>(i)};
    const std::vector<char> c = Content(key, block);
    absl::Status done;
    auto id = (*tier)->Write(key, "default", c.data(), [&](absl::Status st) { done = st; });
    (*tier)->Drain();
    if (id.ok() && done.ok()) written.emplace_back(key, *id);
  }
  for (const auto& [key, id] : written) {
    if (dropped.count(id) != 0) continue;
    absl::Status done;
    const absl::Status s =
        (*tier)->Read(id, key, "default", out.data(), [&](absl::Status st) { done = st; });
    (*tier)->Drain();
    if (!s.ok() && dropped.count(id) != 0) continue;  // evicted while reading the others
    KVTIER_FUZZ_CHECK(s.ok() && done.ok(),
                      "a block written after recovery does not read back: " +
                          (s.ok() ? done : s).ToString());
    KVTIER_FUZZ_CHECK(out == Content(key, block), "a block written after recovery changed");
  }
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("KVTIER_LOG_LEVEL", "error", /*overwrite=*/0);
  kvtier::MakeTemplate();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::fuzz::Input in(data, size);
  kvtier::Run(in);
  return 0;
}
