#include "tools/cli/disk_commands.h"

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tiers/disk_record.h"
#include "tools/cli/cache_dir.h"

namespace kvtier::cli {
namespace {

uint64_t U64(const Json& j, absl::string_view path) {
  const Json* v = j.Path(path);
  return v != nullptr && v->is_number() ? static_cast<uint64_t>(v->number()) : 0;
}
std::string Str(const Json& j, absl::string_view path) {
  const Json* v = j.Path(path);
  return v != nullptr && v->is_string() ? v->str() : std::string();
}

std::string HumanBytes(double b) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f B", b) : absl::StrFormat("%.1f %s", b, kUnits[u]);
}

Json GeometryJson(const CacheMeta& m) {
  Json g = Json::Object();
  g.Set("text", m.geometry_text);
  g.Set("fingerprint", absl::StrFormat("%016x", m.geometry_fingerprint));
  if (m.geometry.has_value()) {
    g.Set("layers", uint64_t{m.geometry->num_layers});
    g.Set("kv_heads", uint64_t{m.geometry->num_kv_heads});
    g.Set("head_dim", uint64_t{m.geometry->head_dim});
    g.Set("dtype", DTypeName(m.geometry->dtype));
    g.Set("block_tokens", uint64_t{m.geometry->block_tokens});
    g.Set("block_bytes", uint64_t{m.geometry->block_bytes()});
  }
  return g;
}

// Age buckets (upper bounds) of the histogram, in milliseconds.
struct AgeBucket {
  const char* label;
  int64_t below_ms;
};
constexpr AgeBucket kAgeBuckets[] = {
    {"<1m", 60'000},         {"<10m", 600'000},        {"<1h", 3'600'000},
    {"<6h", 21'600'000},     {"<1d", 86'400'000},      {"<7d", 604'800'000},
    {">=7d", INT64_MAX},
};

}  // namespace

// ------------------------------------------------------------------------------- inspect

absl::StatusOr<Json> InspectCache(const std::string& dir) {
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

  Json r = Json::Object();
  r.Set("directory", dir);
  r.Set("format_version", m.format);
  r.Set("geometry", GeometryJson(m));
  Json layout = Json::Object();
  layout.Set("region_bytes", m.region_bytes);
  layout.Set("regions", m.regions);
  layout.Set("capacity_bytes", m.region_bytes * m.regions);
  layout.Set("data_file_bytes", c.data_file_bytes());
  r.Set("layout", std::move(layout));

  r.Set("blocks", blocks);
  r.Set("stored_bytes", stored);
  r.Set("record_bytes", record);
  r.Set("raw_bytes", raw_known ? Json::Number(static_cast<double>(blocks * block_bytes)) : Json());
  r.Set("compression_ratio",
        raw_known && stored > 0
            ? Json::Number(static_cast<double>(blocks * block_bytes) / static_cast<double>(stored))
            : Json());
  Json codecs = Json::Object();
  for (int i = 0; i < kNumCodecs; ++i) {
    codecs.Set(CodecName(static_cast<Codec>(i)), codec_blocks[i]);
  }
  r.Set("codecs", std::move(codecs));

  Json nss = Json::Array();
  for (const auto& [name, t] : by_ns) {
    Json n = Json::Object();
    n.Set("name", name);
    n.Set("blocks", t.blocks);
    n.Set("raw_bytes", raw_known ? Json::Number(static_cast<double>(t.blocks * block_bytes)) : Json());
    n.Set("stored_bytes", t.stored);
    n.Set("record_bytes", t.record);
    nss.Push(std::move(n));
  }
  r.Set("namespaces", std::move(nss));

  uint64_t regions_in_use = 0;
  for (uint64_t live : region_live) regions_in_use += live > 0;
  Json space = Json::Object();
  space.Set("capacity_bytes", m.region_bytes * m.regions);
  space.Set("live_bytes", record);
  space.Set("regions_in_use", regions_in_use);
  space.Set("free_regions", m.regions - regions_in_use);
  space.Set("free_bytes", (m.regions - regions_in_use) * m.region_bytes);
  // A region holding any live record is reclaimed only whole, so its other bytes (records
  // erased or dropped, the unused tail) come back only when the region is reclaimed.
  space.Set("reclaimable_bytes", regions_in_use * m.region_bytes - record);
  r.Set("space", std::move(space));

  Json age = Json::Object();
  if (created.empty()) {
    age.Set("available", false);
    age.Set("note", blocks == 0 ? "no blocks" : "the index entries carry no creation times");
  } else {
    const int64_t now = absl::ToUnixMillis(absl::Now());
    const auto [lo, hi] = std::minmax_element(created.begin(), created.end());
    age.Set("available", true);
    age.Set("oldest_unix_ms", *lo);
    age.Set("newest_unix_ms", *hi);
    age.Set("unknown", no_time);
    Json buckets = Json::Array();
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
      buckets.Push(Json::Object().Set("age", kAgeBuckets[i].label).Set("blocks", counts[i]));
    }
    age.Set("buckets", std::move(buckets));
  }
  r.Set("age", std::move(age));
  r.Set("invalid_entries", invalid);
  r.Set("invalid_region_entries", uint64_t{bad_region_keys});
  return r;
}

std::string FormatInspect(const Json& r) {
  std::string out;
  absl::StrAppendFormat(&out, "cache directory  %s\n", Str(r, "directory"));
  absl::StrAppendFormat(&out, "format version   %s\n", Str(r, "format_version"));
  absl::StrAppendFormat(&out, "geometry         %s\n", Str(r, "geometry/text"));
  absl::StrAppendFormat(&out, "layout           %d regions of %s (%s), data.kvt %s\n",
                        U64(r, "layout/regions"), HumanBytes(U64(r, "layout/region_bytes")),
                        HumanBytes(U64(r, "layout/capacity_bytes")),
                        HumanBytes(U64(r, "layout/data_file_bytes")));
  const Json* ratio = r.Find("compression_ratio");
  absl::StrAppendFormat(
      &out, "blocks           %d, stored %s (payload %s), compression %s\n", U64(r, "blocks"),
      HumanBytes(U64(r, "record_bytes")), HumanBytes(U64(r, "stored_bytes")),
      ratio != nullptr && ratio->is_number() ? absl::StrFormat("%.2fx raw/stored", ratio->number())
                                             : std::string("unknown (geometry unreadable)"));
  absl::StrAppendFormat(&out,
                        "codecs           none %d, zstd %d, zstd-shuffle %d, fp8 %d, int8 %d\n",
                        U64(r, "codecs/none"), U64(r, "codecs/zstd"),
                        U64(r, "codecs/zstd-shuffle"), U64(r, "codecs/fp8"),
                        U64(r, "codecs/int8"));

  out += "\nnamespace                          blocks          raw      on disk\n";
  for (const Json& n : r.Find("namespaces")->items()) {
    const Json* raw = n.Find("raw_bytes");
    absl::StrAppendFormat(&out, "  %-30s %8d %12s %12s\n", Str(n, "name"), U64(n, "blocks"),
                          raw != nullptr && raw->is_number() ? HumanBytes(raw->number()) : "?",
                          HumanBytes(U64(n, "record_bytes")));
  }
  if (r.Find("namespaces")->items().empty()) out += "  (none)\n";

  absl::StrAppendFormat(&out,
                        "\nspace            live %s in %d regions; reclaimable %s (dead bytes in "
                        "those regions); %d free regions (%s)\n",
                        HumanBytes(U64(r, "space/live_bytes")), U64(r, "space/regions_in_use"),
                        HumanBytes(U64(r, "space/reclaimable_bytes")),
                        U64(r, "space/free_regions"), HumanBytes(U64(r, "space/free_bytes")));
  const Json* age = r.Find("age");
  if (age != nullptr && age->Find("available") != nullptr && age->Find("available")->bool_value()) {
    out += "age              ";
    for (const Json& b : age->Find("buckets")->items()) {
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
  Json problems = Json::Array();
  Json dir_problems = Json::Array();
  if (c.data_file_bytes() < m.regions * m.region_bytes) {
    dir_problems.Push(Json::String(absl::StrFormat(
        "data.kvt is %d bytes but the layout needs %d (records past its end are reported as "
        "truncated)",
        c.data_file_bytes(), m.regions * m.region_bytes)));
  }
  if (bad_region_keys > 0) {
    // Harmless to reads (the engine ignores them) but not written by kvtier: worth a look.
    dir_problems.Push(Json::String(absl::StrFormat(
        "%d region generation entries are malformed or outside the layout", bad_region_keys)));
  }

  std::vector<std::string> to_delete;
  uint64_t checked = 0, good = 0;
  std::string record;
  std::vector<char> raw;
  absl::Status scan = c.ForEachBlock([&](const BlockEntry& b) {
    ++checked;
    Json p = Json::Object();
    std::string kind;
    absl::Status why;
    if (!b.key.ok()) {
      kind = "malformed_key";
      why = b.key.status();
      p.Set("index_key", absl::BytesToHexString(b.index_key));
    } else {
      p.Set("block", b.key->ToHex());
      if (!b.entry.ok()) {
        kind = "malformed_entry";
        why = b.entry.status();
      } else {
        const IndexEntry& e = *b.entry;
        p.Set("namespace", e.ns);
        p.Set("region", uint64_t{e.region});
        p.Set("offset", e.offset);
        p.Set("record_bytes", uint64_t{e.record_bytes});
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
    p.Set("problem", kind);
    p.Set("detail", std::string(why.message()));
    problems.Push(std::move(p));
    to_delete.push_back(b.index_key);
  });
  if (!scan.ok()) return scan;

  result.problems = problems.items().size() + dir_problems.items().size();
  Json r = Json::Object();
  r.Set("directory", dir);
  r.Set("checked", checked);
  r.Set("ok", good);
  r.Set("problem_count", uint64_t{result.problems});
  r.Set("problems", std::move(problems));
  r.Set("directory_problems", std::move(dir_problems));
  r.Set("repair", repair);
  if (repair) {
    if (!to_delete.empty()) {
      if (absl::Status s = c.DeleteKeys(to_delete); !s.ok()) return s;
    }
    r.Set("dropped_entries", uint64_t{to_delete.size()});
  }
  result.report = std::move(r);
  return result;
}

std::string FormatVerify(const Json& r) {
  std::string out;
  absl::StrAppendFormat(&out, "%s: %d index entries checked, %d ok, %d problems\n",
                        Str(r, "directory"), U64(r, "checked"), U64(r, "ok"),
                        U64(r, "problem_count"));
  for (const Json& p : r.Find("problems")->items()) {
    if (p.Find("block") != nullptr) {
      absl::StrAppendFormat(&out, "  %s block %s", Str(p, "problem"), Str(p, "block"));
    } else {
      absl::StrAppendFormat(&out, "  %s index key %s", Str(p, "problem"), Str(p, "index_key"));
    }
    if (p.Find("namespace") != nullptr) {
      absl::StrAppendFormat(&out, " (namespace '%s', region %d, offset %d)", Str(p, "namespace"),
                            U64(p, "region"), U64(p, "offset"));
    }
    absl::StrAppendFormat(&out, ": %s\n", Str(p, "detail"));
  }
  for (const Json& p : r.Find("directory_problems")->items()) {
    absl::StrAppendFormat(&out, "  directory: %s\n", p.str());
  }
  const Json* repair = r.Find("repair");
  if (repair != nullptr && repair->bool_value()) {
    absl::StrAppendFormat(&out, "repair: dropped %d index entries (the blocks become misses)\n",
                          U64(r, "dropped_entries"));
  } else if (!r.Find("problems")->items().empty()) {
    out += "run `kvtier verify --repair DIR` (with no engine on the directory) to drop them\n";
  }
  return out;
}

// --------------------------------------------------------------------------------- erase

absl::StatusOr<Json> EraseNamespaceFromCache(const std::string& dir, const std::string& ns) {
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
  Json r = Json::Object();
  r.Set("directory", dir);
  r.Set("namespace", ns);
  r.Set("erased_blocks", uint64_t{to_delete.size()});
  r.Set("erased_record_bytes", bytes);
  Json rest = Json::Object();
  for (const auto& [name, n] : others) rest.Set(name, n);
  r.Set("remaining_namespaces", std::move(rest));
  return r;
}

std::string FormatErase(const Json& r) {
  std::string out = absl::StrFormat(
      "%s: erased %d blocks (%s) of namespace '%s'; their space is reused when their regions "
      "are reclaimed\n",
      Str(r, "directory"), U64(r, "erased_blocks"), HumanBytes(U64(r, "erased_record_bytes")),
      Str(r, "namespace"));
  if (U64(r, "erased_blocks") == 0) {
    std::vector<std::string> names;
    for (const auto& [name, v] : r.Find("remaining_namespaces")->members()) names.push_back(name);
    absl::StrAppendFormat(&out, "note: no blocks of '%s' were found; namespaces present: %s\n",
                          Str(r, "namespace"), names.empty() ? "(none)" : absl::StrJoin(names, ", "));
  }
  return out;
}

}  // namespace kvtier::cli
