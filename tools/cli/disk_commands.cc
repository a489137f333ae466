#include "tools/cli/disk_commands.h"

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "tiers/disk_record.h"
#include "tools/cli/cache_dir.h"
#include "tools/cli/text_format.h"

namespace kvtier::cli {
namespace {

using nlohmann::ordered_json;

// Readers of a report by its '/'-separated path ("layout/regions"): 0, "" or an empty range
// when the value is missing or of another type.
const ordered_json* At(const ordered_json& j, absl::string_view path) {
  return json::Find(j, absl::StrCat("/", path));
}
uint64_t U64(const ordered_json& j, absl::string_view path) {
  const ordered_json* v = At(j, path);
  return v != nullptr && v->is_number() ? v->get<uint64_t>() : 0;
}
std::string Str(const ordered_json& j, absl::string_view path) {
  const ordered_json* v = At(j, path);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}
const ordered_json& Items(const ordered_json& j, absl::string_view path) {
  static const ordered_json* const kEmpty = new ordered_json(ordered_json::array());
  const ordered_json* v = At(j, path);
  return v != nullptr && v->is_structured() ? *v : *kEmpty;
}

ordered_json GeometryJson(const CacheMeta& m) {
  ordered_json g = ordered_json::object();
  g["text"] = m.geometry_text;
  g["fingerprint"] = absl::StrFormat("%016x", m.geometry_fingerprint);
  if (m.geometry.has_value()) {
    g["layers"] = uint64_t{m.geometry->num_layers};
    g["kv_heads"] = uint64_t{m.geometry->num_kv_heads};
    g["head_dim"] = uint64_t{m.geometry->head_dim};
    g["dtype"] = DTypeName(m.geometry->dtype);
    g["block_tokens"] = uint64_t{m.geometry->block_tokens};
    g["kind"] = KvKindName(m.geometry->kind);
    if (m.geometry->kind == KvKind::kLatent) g["rope_dim"] = uint64_t{m.geometry->rope_dim};
    if (m.geometry->sharded()) {
      g["kv_head_begin"] = uint64_t{m.geometry->kv_head_begin};
      g["total_kv_heads"] = uint64_t{m.geometry->total_kv_heads};
    }
    g["bytes_per_token"] = uint64_t{m.geometry->bytes_per_token()};
    g["block_bytes"] = uint64_t{m.geometry->block_bytes()};
  }
  return g;
}

// Age buckets (upper bounds) of the histogram, in milliseconds.
struct AgeBucket {
  const char* label;
  int64_t below_ms;
};
constexpr AgeBucket kAgeBuckets[] = {
    {"<1m", 60'000},     {"<10m", 600'000},    {"<1h", 3'600'000},  {"<6h", 21'600'000},
    {"<1d", 86'400'000}, {"<7d", 604'800'000}, {">=7d", INT64_MAX},
};

}  // namespace

// ------------------------------------------------------------------------------- inspect

namespace {

ordered_json AccessJson(const CacheAccess& a) {
  ordered_json j = ordered_json::object();
  j["directory_mode"] = a.directory_mode;
  j["index_mode"] = a.index_mode;
  j["data_mode"] = a.data_mode;
  j["private"] = a.problems.empty() && !a.group_readable;
  j["group_readable"] = a.group_readable;
  j["problems"] = a.problems;
  return j;
}

ordered_json SuperblockJson(const CacheAccess& a) {
  ordered_json j = ordered_json::object();
  if (a.superblock.ok()) {
    j["state"] = "ok";
    j["directory_id"] = a.superblock->directory_id;
    j["version"] = uint64_t{a.superblock->version};
    j["region_bytes"] = a.superblock->region_bytes;
    j["regions"] = a.superblock->regions;
  } else if (absl::IsNotFound(a.superblock.status())) {
    j["state"] = "absent";
    j["note"] = "a directory of the format before superblocks: the engine adds one at its next open";
  } else {
    j["state"] = "bad";
    j["detail"] = std::string(a.superblock.status().message());
  }
  j["index_directory_id"] = a.index_directory_id;
  j["matches_index"] = a.mismatch.empty();
  if (!a.mismatch.empty()) j["mismatch"] = a.mismatch;
  return j;
}

}  // namespace

absl::StatusOr<ordered_json> InspectCache(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<CacheDir>> opened = CacheDir::Open(dir, CacheDir::Mode::kReadOnly);
  if (!opened.ok()) return opened.status();
  CacheDir& c = **opened;
  const CacheMeta& m = c.meta();
  size_t bad_region_keys = 0;
  absl::StatusOr<std::vector<uint64_t>> gens = c.RegionGenerations(&bad_region_keys);
  if (!gens.ok()) return gens.status();

  struct NsTotals {
    uint64_t blocks = 0, stored = 0, record = 0;
  };
  std::map<std::string, NsTotals> by_ns;  // sorted by name for stable output
  std::vector<uint64_t> region_live(m.regions, 0);
  uint64_t codec_blocks[kNumCodecs] = {};
  uint64_t invalid = 0, stored = 0, record = 0, blocks = 0, no_time = 0;
  std::vector<uint64_t> created;
  absl::Status scan = c.ForEachBlock([&](const BlockEntry& b) {
    // Count only what the engine would recover; the rest is verify's business.
    if (!b.key.ok() || !b.entry.ok() || !c.CheckPlacement(*b.entry, *gens).ok()) {
      ++invalid;
      return;
    }
    const IndexEntry& e = *b.entry;
    NsTotals& t = by_ns[e.ns];
    ++t.blocks;
    t.stored += e.stored_bytes;
    t.record += e.record_bytes;
    ++blocks;
    stored += e.stored_bytes;
    record += e.record_bytes;
    region_live[e.region] += e.record_bytes;
    ++codec_blocks[static_cast<int>(e.codec)];
    if (e.created_unix_ms == 0) {
      ++no_time;
    } else {
      created.push_back(e.created_unix_ms);
    }
  });
  if (!scan.ok()) return scan;

  // Every block of a directory has the geometry's size: the raw total needs no record reads.
  const bool raw_known = m.geometry.has_value();
  const uint64_t block_bytes = raw_known ? m.geometry->block_bytes() : 0;

  ordered_json r = ordered_json::object();
  r["directory"] = dir;
  r["format_version"] = m.format;
  r["geometry"] = GeometryJson(m);
  ordered_json layout = ordered_json::object();
  layout["region_bytes"] = m.region_bytes;
  layout["regions"] = m.regions;
  layout["capacity_bytes"] = m.region_bytes * m.regions;
  layout["data_file_bytes"] = c.data_file_bytes();
  r["layout"] = std::move(layout);
  r["access"] = AccessJson(c.access());
  r["superblock"] = SuperblockJson(c.access());

  r["blocks"] = blocks;
  r["stored_bytes"] = stored;
  r["record_bytes"] = record;
  r["raw_bytes"] = raw_known ? ordered_json(blocks * block_bytes) : ordered_json();
  r["compression_ratio"] =
      raw_known && stored > 0
          ? ordered_json(static_cast<double>(blocks * block_bytes) / static_cast<double>(stored))
          : ordered_json();
  ordered_json codecs = ordered_json::object();
  for (int i = 0; i < kNumCodecs; ++i) {
    codecs[CodecName(static_cast<Codec>(i))] = codec_blocks[i];
  }
  r["codecs"] = std::move(codecs);

  ordered_json nss = ordered_json::array();
  for (const auto& [name, t] : by_ns) {
    ordered_json n = ordered_json::object();
    n["name"] = name;
    n["blocks"] = t.blocks;
    n["raw_bytes"] = raw_known ? ordered_json(t.blocks * block_bytes) : ordered_json();
    n["stored_bytes"] = t.stored;
    n["record_bytes"] = t.record;
    nss.push_back(std::move(n));
  }
  r["namespaces"] = std::move(nss);

  uint64_t regions_in_use = 0;
  for (uint64_t live : region_live) regions_in_use += live > 0;
  ordered_json space = ordered_json::object();
  space["capacity_bytes"] = m.region_bytes * m.regions;
  space["live_bytes"] = record;
  space["regions_in_use"] = regions_in_use;
  space["free_regions"] = m.regions - regions_in_use;
  space["free_bytes"] = (m.regions - regions_in_use) * m.region_bytes;
  // A region holding any live record is reclaimed only whole, so its other bytes (records
  // erased or dropped, the unused tail) come back only when the region is reclaimed.
  space["reclaimable_bytes"] = regions_in_use * m.region_bytes - record;
  r["space"] = std::move(space);

  ordered_json age = ordered_json::object();
  if (created.empty()) {
    age["available"] = false;
    age["note"] = blocks == 0 ? "no blocks" : "the index entries carry no creation times";
  } else {
    const int64_t now = absl::ToUnixMillis(absl::Now());
    const auto [lo, hi] = std::minmax_element(created.begin(), created.end());
    age["available"] = true;
    age["oldest_unix_ms"] = *lo;
    age["newest_unix_ms"] = *hi;
    age["unknown"] = no_time;
    ordered_json buckets = ordered_json::array();
    uint64_t counts[std::size(kAgeBuckets)] = {};
    for (uint64_t t : created) {
      const int64_t a = std::max<int64_t>(0, now - static_cast<int64_t>(t));
      for (size_t i = 0; i < std::size(kAgeBuckets); ++i) {
        if (a < kAgeBuckets[i].below_ms) {
          ++counts[i];
          break;
        }
      }
    }
    for (size_t i = 0; i < std::size(kAgeBuckets); ++i) {
      buckets.push_back({{"age", kAgeBuckets[i].label}, {"blocks", counts[i]}});
    }
    age["buckets"] = std::move(buckets);
  }
  r["age"] = std::move(age);
  r["invalid_entries"] = invalid;
  r["invalid_region_entries"] = uint64_t{bad_region_keys};
  return r;
}

std::string FormatInspect(const ordered_json& r) {
  std::string out;
  absl::StrAppendFormat(&out, "cache directory  %s\n", Str(r, "directory"));
  absl::StrAppendFormat(&out, "format version   %s\n", Str(r, "format_version"));
  absl::StrAppendFormat(&out, "geometry         %s\n", Str(r, "geometry/text"));
  absl::StrAppendFormat(&out, "layout           %d regions of %s (%s), data.kvt %s\n",
                        U64(r, "layout/regions"), HumanBytes(U64(r, "layout/region_bytes")),
                        HumanBytes(U64(r, "layout/capacity_bytes")),
                        HumanBytes(U64(r, "layout/data_file_bytes")));
  absl::StrAppendFormat(&out, "access           directory %s, index/ %s, data.kvt %s%s\n",
                        Str(r, "access/directory_mode"), Str(r, "access/index_mode"),
                        Str(r, "access/data_mode"),
                        Items(r, "access/problems").empty() ? ""
                                                            : "  (NOT PRIVATE: see below)");
  if (Str(r, "superblock/state") == "ok") {
    absl::StrAppendFormat(&out, "superblock       id %s%s\n", Str(r, "superblock/directory_id"),
                          Str(r, "superblock/mismatch").empty() ? ", matches the index"
                                                               : "");
  } else if (Str(r, "superblock/state") == "absent") {
    absl::StrAppendFormat(&out, "superblock       none (%s)\n", Str(r, "superblock/note"));
  } else {
    absl::StrAppendFormat(&out, "superblock       BAD: %s\n", Str(r, "superblock/detail"));
  }
  if (!Str(r, "superblock/mismatch").empty()) {
    absl::StrAppendFormat(&out, "                 MISMATCH: %s; the engine refuses this directory "
                          "(`kvtier reset DIR --yes` starts it over)\n",
                          Str(r, "superblock/mismatch"));
  }
  for (const ordered_json& p : Items(r, "access/problems")) {
    absl::StrAppendFormat(&out, "                 %s\n", p.is_string() ? p.get<std::string>() : "");
  }
  const ordered_json* ratio = At(r, "compression_ratio");
  absl::StrAppendFormat(&out, "blocks           %d, stored %s (payload %s), compression %s\n",
                        U64(r, "blocks"), HumanBytes(U64(r, "record_bytes")),
                        HumanBytes(U64(r, "stored_bytes")),
                        ratio != nullptr && ratio->is_number()
                            ? absl::StrFormat("%.2fx raw/stored", ratio->get<double>())
                        : U64(r, "blocks") == 0 ? std::string("n/a (no blocks)")
                                                : std::string("unknown (geometry unreadable)"));
  absl::StrAppendFormat(&out,
                        "codecs           none %d, zstd %d, zstd-shuffle %d, fp8 %d, int8 %d\n",
                        U64(r, "codecs/none"), U64(r, "codecs/zstd"), U64(r, "codecs/zstd-shuffle"),
                        U64(r, "codecs/fp8"), U64(r, "codecs/int8"));

  out += "\nnamespace                          blocks          raw      on disk\n";
  for (const ordered_json& n : Items(r, "namespaces")) {
    const ordered_json* raw = At(n, "raw_bytes");
    absl::StrAppendFormat(&out, "  %-30s %8d %12s %12s\n", Str(n, "name"), U64(n, "blocks"),
                          raw != nullptr && raw->is_number() ? HumanBytes(raw->get<double>()) : "?",
                          HumanBytes(U64(n, "record_bytes")));
  }
  if (Items(r, "namespaces").empty()) out += "  (none)\n";

  absl::StrAppendFormat(&out,
                        "\nspace            live %s in %d regions; reclaimable %s (dead bytes in "
                        "those regions); %d free regions (%s)\n",
                        HumanBytes(U64(r, "space/live_bytes")), U64(r, "space/regions_in_use"),
                        HumanBytes(U64(r, "space/reclaimable_bytes")), U64(r, "space/free_regions"),
                        HumanBytes(U64(r, "space/free_bytes")));
  const ordered_json* available = At(r, "age/available");
  if (available != nullptr && available->is_boolean() && available->get<bool>()) {
    out += "age              ";
    for (const ordered_json& b : Items(r, "age/buckets")) {
      absl::StrAppendFormat(&out, "%s: %d  ", Str(b, "age"), U64(b, "blocks"));
    }
    out += "\n";
  } else {
    absl::StrAppendFormat(&out, "age              not available: %s\n", Str(r, "age/note"));
  }
  if (U64(r, "invalid_entries") > 0) {
    absl::StrAppendFormat(&out,
                          "\n%d index entries point outside their region or at a reclaimed "
                          "generation (not counted above); run `kvtier verify`\n",
                          U64(r, "invalid_entries"));
  }
  return out;
}

// -------------------------------------------------------------------------------- verify

namespace {

// Checks one record against its index entry: header (ParseRecordHeader), identity, payload
// (DecodeRecordPayload). OK or DataLoss naming what disagrees.
absl::Status CheckRecord(const CacheDir& c, const BlockKey& key, const IndexEntry& e,
                         std::string* record, std::vector<char>* raw) {
  if (absl::Status s = c.ReadRecord(e, record); !s.ok()) return s;
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(record->data(), record->size());
  if (!h.ok()) return h.status();
  std::vector<std::string> diffs;
  auto differ = [&diffs](absl::string_view field, const auto& index, const auto& header) {
    if (!(index == header)) {
      diffs.push_back(absl::StrCat(field, " (index ", index, ", header ", header, ")"));
    }
  };
  differ("key", key.ToHex(), h->key.ToHex());
  differ("namespace", e.ns, h->ns);
  differ("geometry fingerprint", c.meta().geometry_fingerprint, h->geometry_fingerprint);
  differ("region", e.region, h->region);
  differ("generation", e.generation, h->generation);
  differ("codec", std::string(CodecName(e.codec)), std::string(CodecName(h->codec)));
  differ("stored_bytes", e.stored_bytes, h->stored_bytes);
  differ("payload_checksum", e.payload_checksum, h->payload_checksum);
  differ("created_unix_ms", e.created_unix_ms, h->created_unix_ms);
  if (c.meta().geometry.has_value()) {
    differ("raw_bytes", uint64_t{c.meta().geometry->block_bytes()}, uint64_t{h->raw_bytes});
  }
  if (!diffs.empty()) {
    return absl::DataLossError(
        absl::StrCat("record header disagrees with the index: ", absl::StrJoin(diffs, ", ")));
  }
  raw->resize(h->raw_bytes);
  return DecodeRecordPayload(*h, record->data() + kRecordHeaderBytes,
                             record->size() - kRecordHeaderBytes, raw->data(), raw->size());
}

}  // namespace

absl::StatusOr<VerifyResult> VerifyCache(const std::string& dir, bool repair) {
  absl::StatusOr<std::unique_ptr<CacheDir>> opened =
      CacheDir::Open(dir, repair ? CacheDir::Mode::kReadWrite : CacheDir::Mode::kReadOnly);
  if (!opened.ok()) return opened.status();
  CacheDir& c = **opened;
  const CacheMeta& m = c.meta();
  size_t bad_region_keys = 0;
  absl::StatusOr<std::vector<uint64_t>> gens = c.RegionGenerations(&bad_region_keys);
  if (!gens.ok()) return gens.status();

  VerifyResult result;
  ordered_json problems = ordered_json::array();
  ordered_json dir_problems = ordered_json::array();
  if (c.data_file_bytes() < m.regions * m.region_bytes) {
    dir_problems.push_back((absl::StrFormat(
        "data.kvt is %d bytes but the layout needs %d (records past its end are reported as "
        "truncated)",
        c.data_file_bytes(), m.regions * m.region_bytes)));
  }
  for (const std::string& p : c.access().problems) dir_problems.push_back(p);
  if (!c.access().mismatch.empty()) {
    dir_problems.push_back(absl::StrCat(c.access().mismatch,
                                        "; the engine refuses this directory (`kvtier reset DIR "
                                        "--yes` starts it over)"));
  }
  if (bad_region_keys > 0) {
    // Harmless to reads (the engine ignores them) but not written by kvtier: worth a look.
    dir_problems.push_back((absl::StrFormat(
        "%d region generation entries are malformed or outside the layout", bad_region_keys)));
  }

  std::vector<std::string> to_delete;
  uint64_t checked = 0, good = 0;
  std::string record;
  std::vector<char> raw;
  absl::Status scan = c.ForEachBlock([&](const BlockEntry& b) {
    ++checked;
    ordered_json p = ordered_json::object();
    std::string kind;
    absl::Status why;
    if (!b.key.ok()) {
      kind = "malformed_key";
      why = b.key.status();
      p["index_key"] = absl::BytesToHexString(b.index_key);
    } else {
      p["block"] = b.key->ToHex();
      if (!b.entry.ok()) {
        kind = "malformed_entry";
        why = b.entry.status();
      } else {
        const IndexEntry& e = *b.entry;
        p["namespace"] = e.ns;
        p["region"] = uint64_t{e.region};
        p["offset"] = e.offset;
        p["record_bytes"] = uint64_t{e.record_bytes};
        why = c.CheckPlacement(e, *gens);
        if (!why.ok()) {
          kind = why.code() == absl::StatusCode::kFailedPrecondition ? "orphan" : "out_of_range";
        } else {
          why = CheckRecord(c, *b.key, e, &record, &raw);
          if (!why.ok()) kind = "corrupt";
        }
      }
    }
    if (why.ok()) {
      ++good;
      return;
    }
    p["problem"] = kind;
    p["detail"] = std::string(why.message());
    problems.push_back(std::move(p));
    to_delete.push_back(b.index_key);
  });
  if (!scan.ok()) return scan;

  result.problems = problems.size() + dir_problems.size();
  ordered_json r = ordered_json::object();
  r["directory"] = dir;
  r["checked"] = checked;
  r["ok"] = good;
  r["problem_count"] = uint64_t{result.problems};
  r["problems"] = std::move(problems);
  r["directory_problems"] = std::move(dir_problems);
  r["repair"] = repair;
  if (repair) {
    if (!to_delete.empty()) {
      if (absl::Status s = c.DeleteKeys(to_delete); !s.ok()) return s;
    }
    r["dropped_entries"] = uint64_t{to_delete.size()};
  }
  result.report = std::move(r);
  return result;
}

std::string FormatVerify(const ordered_json& r) {
  std::string out;
  absl::StrAppendFormat(&out, "%s: %d index entries checked, %d ok, %d problems\n",
                        Str(r, "directory"), U64(r, "checked"), U64(r, "ok"),
                        U64(r, "problem_count"));
  for (const ordered_json& p : Items(r, "problems")) {
    if (p.contains("block")) {
      absl::StrAppendFormat(&out, "  %s block %s", Str(p, "problem"), Str(p, "block"));
    } else {
      absl::StrAppendFormat(&out, "  %s index key %s", Str(p, "problem"), Str(p, "index_key"));
    }
    if (p.contains("namespace")) {
      absl::StrAppendFormat(&out, " (namespace '%s', region %d, offset %d)", Str(p, "namespace"),
                            U64(p, "region"), U64(p, "offset"));
    }
    absl::StrAppendFormat(&out, ": %s\n", Str(p, "detail"));
  }
  for (const ordered_json& p : Items(r, "directory_problems")) {
    absl::StrAppendFormat(&out, "  directory: %s\n", p.is_string() ? p.get<std::string>() : "");
  }
  const ordered_json* repair = At(r, "repair");
  if (repair != nullptr && repair->is_boolean() && repair->get<bool>()) {
    absl::StrAppendFormat(&out, "repair: dropped %d index entries (the blocks become misses)\n",
                          U64(r, "dropped_entries"));
  } else if (!Items(r, "problems").empty()) {
    out += "run `kvtier verify --repair DIR` (with no engine on the directory) to drop them\n";
  }
  return out;
}

// --------------------------------------------------------------------------------- erase

absl::StatusOr<ordered_json> EraseNamespaceFromCache(const std::string& dir,
                                                     const std::string& ns) {
  absl::StatusOr<std::unique_ptr<CacheDir>> opened =
      CacheDir::Open(dir, CacheDir::Mode::kReadWrite);
  if (!opened.ok()) return opened.status();
  CacheDir& c = **opened;
  std::vector<std::string> to_delete;
  uint64_t bytes = 0;
  std::map<std::string, uint64_t> others;
  absl::Status scan = c.ForEachBlock([&](const BlockEntry& b) {
    if (!b.entry.ok()) return;  // unreadable entries are verify --repair's to drop
    if (b.entry->ns == ns) {
      to_delete.push_back(b.index_key);
      bytes += b.entry->record_bytes;
    } else {
      ++others[b.entry->ns];
    }
  });
  if (!scan.ok()) return scan;
  if (!to_delete.empty()) {
    if (absl::Status s = c.DeleteKeys(to_delete); !s.ok()) return s;
  }
  ordered_json r = ordered_json::object();
  r["directory"] = dir;
  r["namespace"] = ns;
  r["erased_blocks"] = uint64_t{to_delete.size()};
  r["erased_record_bytes"] = bytes;
  ordered_json rest = ordered_json::object();
  for (const auto& [name, n] : others) rest[name] = n;
  r["remaining_namespaces"] = std::move(rest);
  return r;
}

std::string FormatErase(const ordered_json& r) {
  std::string out = absl::StrFormat(
      "%s: erased %d blocks (%s) of namespace '%s'; their space is reused when their regions "
      "are reclaimed\n",
      Str(r, "directory"), U64(r, "erased_blocks"), HumanBytes(U64(r, "erased_record_bytes")),
      Str(r, "namespace"));
  if (U64(r, "erased_blocks") == 0) {
    std::vector<std::string> names;
    for (const auto& [name, v] : Items(r, "remaining_namespaces").items()) names.push_back(name);
    absl::StrAppendFormat(&out, "note: no blocks of '%s' were found; namespaces present: %s\n",
                          Str(r, "namespace"),
                          names.empty() ? "(none)" : absl::StrJoin(names, ", "));
  }
  return out;
}

}  // namespace kvtier::cli

// --------------------------------------------------------------------------------- reset

namespace kvtier::cli {

absl::StatusOr<ordered_json> ResetCache(const std::string& dir, bool yes) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrFormat("cache directory '%s' does not exist (%s)", dir,
                                               std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrFormat("'%s' is not a directory", dir));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "'%s' is owned by uid %d, not by you (uid %d): reset only starts over your own cache",
        dir, st.st_uid, ::geteuid()));
  }
  // Only kvtier's two names are removed; anything else in the directory stays and is named.
  std::vector<std::string> ours, others;
  {
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
    if (d == nullptr) {
      return absl::UnavailableError(
          absl::StrFormat("opendir '%s': %s", dir, std::strerror(errno)));
    }
    while (const dirent* e = ::readdir(d.get())) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      (name == kDataFileName || name == kIndexDirName ? ours : others).push_back(name);
    }
  }
  std::sort(ours.begin(), ours.end());
  std::sort(others.begin(), others.end());
  if (!others.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "'%s' holds files that are not kvtier's ('%s'): reset removes only data.kvt and index/, "
        "and a cache is only made in an empty directory; move them away first",
        dir, absl::StrJoin(others, "', '")));
  }
  const std::string index = absl::StrCat(dir, "/", kIndexDirName);
  struct stat ist;
  if (::lstat(index.c_str(), &ist) == 0 && S_ISDIR(ist.st_mode)) {
    // Never pull the files from under a live engine: its RocksDB lock says whether one holds it.
    absl::StatusOr<std::unique_ptr<DiskIndex>> held =
        DiskIndex::Open(dir, DiskIndex::Mode::kReadWrite);
    if (!held.ok() && DiskIndex::IsInUse(held.status())) {
      return absl::UnavailableError(absl::StrFormat(
          "%s: stop the engine that holds it first", held.status().message()));
    }
  }
  ordered_json r = ordered_json::object();
  r["directory"] = dir;
  r["removed"] = ours;
  r["dry_run"] = !yes;
  if (!yes) return r;
  for (const std::string& name : ours) {
    const std::string path = absl::StrCat(dir, "/", name);
    struct stat lst;
    if (::lstat(path.c_str(), &lst) != 0) continue;
    if (S_ISDIR(lst.st_mode)) {
      // Depth first, links removed as links (FTW_PHYS): nothing outside the directory is touched.
      const int rc = ::nftw(
          path.c_str(),
          [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
          FTW_DEPTH | FTW_PHYS);
      if (rc != 0) {
        return absl::InternalError(
            absl::StrFormat("removing '%s': %s", path, std::strerror(errno)));
      }
    } else if (::unlink(path.c_str()) != 0) {
      return absl::InternalError(absl::StrFormat("removing '%s': %s", path, std::strerror(errno)));
    }
  }
  return r;
}

std::string FormatReset(const ordered_json& r) {
  std::string names;
  for (const ordered_json& n : Items(r, "removed")) {
    absl::StrAppend(&names, names.empty() ? "" : ", ", n.is_string() ? n.get<std::string>() : "");
  }
  const ordered_json* dry = At(r, "dry_run");
  if (dry != nullptr && dry->is_boolean() && dry->get<bool>()) {
    return absl::StrFormat(
        "%s: would remove %s (every cached block); nothing done. Run again with --yes\n",
        Str(r, "directory"), names.empty() ? "nothing" : names);
  }
  return absl::StrFormat("%s: removed %s; the next engine open starts a new cache there\n",
                         Str(r, "directory"), names.empty() ? "nothing" : names);
}

}  // namespace kvtier::cli
