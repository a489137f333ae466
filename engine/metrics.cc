#include "engine/metrics.h"

#include <algorithm>
#include <bit>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier {

uint64_t LatencyBucketUpperNs(int i) {
  return i >= kLatencyBuckets - 1 ? UINT64_MAX : (uint64_t{1} << i) * 1000;
}

void LatencyHistogram::Record(std::chrono::nanoseconds elapsed) {
  const uint64_t ns = elapsed.count() > 0 ? static_cast<uint64_t>(elapsed.count()) : 0;
  // Bucket i holds [2^(i-1), 2^i) microseconds: the bit width of the whole microseconds.
  const int i = std::min<int>(std::bit_width(ns / 1000), kLatencyBuckets - 1);
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

LatencyStats LatencyHistogram::Snapshot() const {
  LatencyStats s;
  s.count = count_.load(std::memory_order_relaxed);
  s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  for (int i = 0; i < kLatencyBuckets; ++i) s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  return s;
}

namespace {

// Prometheus label values and JSON strings escape the same three characters we may meet in
// a namespace name (backslash, quote, newline); other control bytes are dropped from JSON.
std::string Escape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else if (static_cast<unsigned char>(c) >= 0x20) {
      out.push_back(c);
    }
  }
  return out;
}

const char* kTierNames[kNumTiers] = {"gpu", "host", "disk"};

class Prom {
 public:
  void Family(absl::string_view name, absl::string_view type, absl::string_view help) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void Sample(absl::string_view name, absl::string_view labels, double v) {
    absl::StrAppend(&out_, name, labels.empty() ? "" : "{", labels, labels.empty() ? "" : "}", " ",
                    absl::StrFormat("%.17g", v), "\n");
  }
  std::string out_;
};

struct TierField {
  const char* name;
  const char* type;
  const char* help;
  uint64_t (*get)(const TierStats&, size_t block_bytes);
};
const TierField kTierFields[] = {
    {"kvtier_tier_capacity_blocks", "gauge", "Blocks the tier can hold.",
     [](const TierStats& t, size_t) -> uint64_t { return t.capacity_blocks; }},
    {"kvtier_tier_used_blocks", "gauge", "Blocks the tier holds now.",
     [](const TierStats& t, size_t) -> uint64_t { return t.used_blocks; }},
    {"kvtier_tier_used_bytes", "gauge", "Raw block bytes the tier holds now.",
     [](const TierStats& t, size_t b) -> uint64_t { return t.used_blocks * b; }},
    {"kvtier_tier_pinned_blocks", "gauge", "Blocks pinned by copies in flight or leases.",
     [](const TierStats& t, size_t) -> uint64_t { return t.pinned_blocks; }},
    {"kvtier_tier_hits_total", "counter",
     "Blocks loads read from this tier as the highest tier holding them.",
     [](const TierStats& t, size_t) -> uint64_t { return t.hits; }},
    {"kvtier_tier_misses_total", "counter",
     "Blocks looked up that this tier did not hold (read from a lower tier, or not cached).",
     [](const TierStats& t, size_t) -> uint64_t { return t.misses; }},
    {"kvtier_tier_bytes_in_total", "counter", "Bytes written into this tier.",
     [](const TierStats& t, size_t) -> uint64_t { return t.bytes_in; }},
    {"kvtier_tier_bytes_out_total", "counter", "Bytes read out of this tier.",
     [](const TierStats& t, size_t) -> uint64_t { return t.bytes_out; }},
    {"kvtier_tier_evictions_total", "counter", "Copies dropped to make room.",
     [](const TierStats& t, size_t) -> uint64_t { return t.evictions; }},
    {"kvtier_tier_demotions_total", "counter", "Copies moved down to make room.",
     [](const TierStats& t, size_t) -> uint64_t { return t.demotions; }},
    {"kvtier_tier_promotions_total", "counter", "Copies brought up into this tier.",
     [](const TierStats& t, size_t) -> uint64_t { return t.promotions; }},
    {"kvtier_tier_admissions_rejected_total", "counter",
     "Blocks the admission policy or a busy disk refused.",
     [](const TierStats& t, size_t) -> uint64_t { return t.admissions_rejected; }},
    {"kvtier_tier_checksum_failures_total", "counter", "Reads that failed verification.",
     [](const TierStats& t, size_t) -> uint64_t { return t.checksum_failures; }},
    {"kvtier_tier_write_failures_total", "counter", "Writes that failed.",
     [](const TierStats& t, size_t) -> uint64_t { return t.write_failures; }},
};

struct Scalar {
  const char* name;
  const char* type;
  const char* help;
  uint64_t value;
};

std::vector<Scalar> EngineScalars(const EngineStats& s) {
  const PrefetchStats& p = s.prefetch;
  return {
      {"kvtier_match_calls_total", "counter", "Match calls.", s.match_calls},
      {"kvtier_matched_blocks_total", "counter", "Blocks Match found (hits).", s.matched_blocks},
      {"kvtier_missed_blocks_total", "counter", "Full query blocks past the matched prefix.",
       s.missed_blocks},
      {"kvtier_stored_blocks_total", "counter", "Blocks newly stored.", s.stored_blocks},
      {"kvtier_deduplicated_blocks_total", "counter", "Stored blocks already present.",
       s.deduplicated_blocks},
      {"kvtier_rejected_blocks_total", "counter", "Blocks not stored: every slot pinned.",
       s.rejected_blocks},
      {"kvtier_loaded_blocks_total", "counter", "Blocks loaded.", s.loaded_blocks},
      {"kvtier_leases_held", "gauge", "Leases on GPU slots held now.", s.leases_held},
      {"kvtier_leases_expired_total", "counter", "Leases that expired.", s.leases_expired},
      {"kvtier_stalled_waits_total", "counter",
       "Waits on loads (host or stream) that found the bytes still in flight.", s.stalled_waits},
      {"kvtier_prefetch_hinted_total", "counter", "Keys queued by Hint.", p.hinted},
      {"kvtier_prefetch_issued_total", "counter", "Promotions started for hints.", p.issued},
      {"kvtier_prefetch_present_total", "counter", "Hinted blocks already in the top tier.",
       p.present},
      {"kvtier_prefetch_skipped_total", "counter", "Hinted blocks skipped.", p.skipped},
      {"kvtier_prefetch_cancelled_total", "counter", "Hinted blocks cancelled.", p.cancelled},
      {"kvtier_prefetch_useful_total", "counter", "Prefetched blocks used in time.", p.in_time},
      {"kvtier_prefetch_late_total", "counter", "Prefetched blocks used while still landing.",
       p.late},
      {"kvtier_prefetch_unused_total", "counter", "Prefetched blocks evicted unused.", p.unused},
      {"kvtier_prefetch_queued", "gauge", "Hinted keys waiting now.", p.queued},
      {"kvtier_prefetch_outstanding_bytes", "gauge", "Hinted bytes in flight or unused now.",
       p.outstanding_bytes},
      {"kvtier_prefetch_budget_bytes", "gauge", "Prefetch budget.", p.budget_bytes},
  };
}

struct Latency {
  const char* name;
  const LatencyStats* stats;
};

}  // namespace

std::string FormatPrometheus(const EngineStats& s, size_t block_bytes) {
  Prom p;
  for (const TierField& f : kTierFields) {
    p.Family(f.name, f.type, f.help);
    for (int t = 0; t < kNumTiers; ++t) {
      p.Sample(f.name, absl::StrCat("tier=\"", kTierNames[t], "\""),
               static_cast<double>(f.get(s.tiers[t], block_bytes)));
    }
  }
  p.Family("kvtier_namespace_blocks", "gauge", "Blocks of the namespace per tier.");
  for (const NamespaceStats& n : s.namespaces) {
    for (int t = 0; t < kNumTiers; ++t) {
      p.Sample("kvtier_namespace_blocks",
               absl::StrCat("namespace=\"", Escape(n.name), "\",tier=\"", kTierNames[t], "\""),
               static_cast<double>(n.blocks_per_tier[t]));
    }
  }
  const struct {
    const char* name;
    const char* help;
    uint64_t NamespaceStats::*field;
  } ns_counters[] = {
      {"kvtier_namespace_matched_blocks_total", "Blocks Match found.",
       &NamespaceStats::matched_blocks},
      {"kvtier_namespace_missed_blocks_total", "Full query blocks past the matched prefix.",
       &NamespaceStats::missed_blocks},
      {"kvtier_namespace_stored_blocks_total", "Blocks newly stored.",
       &NamespaceStats::stored_blocks},
      {"kvtier_namespace_loaded_blocks_total", "Blocks loaded.", &NamespaceStats::loaded_blocks},
      {"kvtier_namespace_quota_evictions_total",
       "Own blocks evicted to keep the namespace within a tier quota.",
       &NamespaceStats::quota_evictions},
      {"kvtier_namespace_quota_rejections_total",
       "Blocks refused a tier because the namespace was at its quota.",
       &NamespaceStats::quota_rejections},
      {"kvtier_namespace_expired_blocks_total", "Blocks removed when their time to live passed.",
       &NamespaceStats::expired_blocks},
  };
  for (const auto& c : ns_counters) {
    p.Family(c.name, "counter", c.help);
    for (const NamespaceStats& n : s.namespaces) {
      p.Sample(c.name, absl::StrCat("namespace=\"", Escape(n.name), "\""),
               static_cast<double>(n.*c.field));
    }
  }
  const struct {
    const char* name;
    const char* help;
    uint64_t (NamespaceStats::*field)[kNumTiers];
  } ns_tier_counters[] = {
      {"kvtier_namespace_hits_total", "Blocks of the namespace loaded from this tier.",
       &NamespaceStats::hits_per_tier},
      {"kvtier_namespace_misses_total", "Blocks of the namespace this tier did not hold.",
       &NamespaceStats::misses_per_tier},
  };
  for (const auto& c : ns_tier_counters) {
    p.Family(c.name, "counter", c.help);
    for (const NamespaceStats& n : s.namespaces) {
      for (int t = 0; t < kNumTiers; ++t) {
        p.Sample(c.name,
                 absl::StrCat("namespace=\"", Escape(n.name), "\",tier=\"", kTierNames[t], "\""),
                 static_cast<double>((n.*c.field)[t]));
      }
    }
  }
  p.Family("kvtier_namespace_stall_seconds_total", "counter",
           "Time readers of the namespace's loads waited for bytes in flight.");
  for (const NamespaceStats& n : s.namespaces) {
    p.Sample("kvtier_namespace_stall_seconds_total",
             absl::StrCat("namespace=\"", Escape(n.name), "\""),
             static_cast<double>(n.stall_ns) * 1e-9);
  }
  p.Family("kvtier_stall_seconds_total", "counter",
           "Time readers of loads waited for bytes in flight (host blocked or stream waiting).");
  p.Sample("kvtier_stall_seconds_total", "", static_cast<double>(s.stall_ns) * 1e-9);
  for (const Scalar& v : EngineScalars(s)) {
    p.Family(v.name, v.type, v.help);
    p.Sample(v.name, "", static_cast<double>(v.value));
  }
  for (const Latency& l : {Latency{"kvtier_match_latency_seconds", &s.match_latency},
                           Latency{"kvtier_store_latency_seconds", &s.store_latency},
                           Latency{"kvtier_load_latency_seconds", &s.load_latency}}) {
    p.Family(l.name, "histogram", "Time inside the call (copies are asynchronous).");
    uint64_t cumulative = 0;
    for (int i = 0; i < kLatencyBuckets; ++i) {
      cumulative += l.stats->buckets[i];
      const std::string le = i == kLatencyBuckets - 1
                                 ? std::string("+Inf")
                                 : absl::StrFormat("%g", LatencyBucketUpperNs(i) * 1e-9);
      p.Sample(absl::StrCat(l.name, "_bucket"), absl::StrCat("le=\"", le, "\""),
               static_cast<double>(cumulative));
    }
    p.Sample(absl::StrCat(l.name, "_sum"), "", static_cast<double>(l.stats->sum_ns) * 1e-9);
    p.Sample(absl::StrCat(l.name, "_count"), "", static_cast<double>(l.stats->count));
  }
  return p.out_;
}

std::string FormatStatsJson(const EngineStats& s, size_t block_bytes) {
  std::string o = absl::StrFormat("{\"device\":\"%s\",\"block_bytes\":%d,\"tiers\":[",
                                  Escape(s.device), block_bytes);
  for (int t = 0; t < kNumTiers; ++t) {
    const TierStats& ts = s.tiers[t];
    absl::StrAppendFormat(
        &o,
        "%s{\"tier\":\"%s\",\"capacity_blocks\":%d,\"used_blocks\":%d,\"used_bytes\":%d,"
        "\"pinned_blocks\":%d,\"hits\":%d,\"misses\":%d,\"bytes_in\":%d,\"bytes_out\":%d,\"evictions\":%d,"
        "\"demotions\":%d,\"promotions\":%d,\"admissions_rejected\":%d,"
        "\"checksum_failures\":%d,\"write_failures\":%d}",
        t == 0 ? "" : ",", kTierNames[t], ts.capacity_blocks, ts.used_blocks,
        ts.used_blocks * block_bytes, ts.pinned_blocks, ts.hits, ts.misses, ts.bytes_in, ts.bytes_out,
        ts.evictions, ts.demotions, ts.promotions, ts.admissions_rejected, ts.checksum_failures,
        ts.write_failures);
  }
  o += "],\"namespaces\":[";
  for (size_t i = 0; i < s.namespaces.size(); ++i) {
    const NamespaceStats& n = s.namespaces[i];
    absl::StrAppendFormat(
        &o,
        "%s{\"name\":\"%s\",\"blocks\":%d,\"blocks_per_tier\":{\"gpu\":%d,\"host\":%d,"
        "\"disk\":%d},\"matched_blocks\":%d,\"missed_blocks\":%d,\"stored_blocks\":%d,"
        "\"loaded_blocks\":%d,\"hits_per_tier\":{\"gpu\":%d,\"host\":%d,\"disk\":%d},"
        "\"misses_per_tier\":{\"gpu\":%d,\"host\":%d,\"disk\":%d},\"stall_ns\":%d,"
        "\"stalled_waits\":%d,\"quota_evictions\":%d,\"quota_rejections\":%d,"
        "\"expired_blocks\":%d}",
        i == 0 ? "" : ",", Escape(n.name), n.blocks, n.blocks_per_tier[0], n.blocks_per_tier[1],
        n.blocks_per_tier[2], n.matched_blocks, n.missed_blocks, n.stored_blocks,
        n.loaded_blocks, n.hits_per_tier[0], n.hits_per_tier[1], n.hits_per_tier[2],
        n.misses_per_tier[0], n.misses_per_tier[1], n.misses_per_tier[2], n.stall_ns,
        n.stalled_waits, n.quota_evictions, n.quota_rejections, n.expired_blocks);
  }
  o += "],\"engine\":{";
  bool first = true;
  for (const Scalar& v : EngineScalars(s)) {
    // "kvtier_match_calls_total" -> "match_calls"
    std::string key = v.name + 7;
    if (key.size() > 6 && key.compare(key.size() - 6, 6, "_total") == 0) key.resize(key.size() - 6);
    absl::StrAppendFormat(&o, "%s\"%s\":%d", first ? "" : ",", key, v.value);
    first = false;
  }
  absl::StrAppendFormat(&o, ",\"stall_ns\":%d", s.stall_ns);
  o += "},\"latency\":{";
  first = true;
  for (const auto& [name, l] : {std::pair{"match", &s.match_latency},
                                std::pair{"store", &s.store_latency},
                                std::pair{"load", &s.load_latency}}) {
    absl::StrAppendFormat(&o, "%s\"%s\":{\"count\":%d,\"sum_ns\":%d,\"buckets_le_us\":[",
                          first ? "" : ",", name, l->count, l->sum_ns);
    for (int i = 0; i < kLatencyBuckets; ++i) {
      absl::StrAppendFormat(&o, "%s%d", i == 0 ? "" : ",", l->buckets[i]);
    }
    o += "]}";
    first = false;
  }
  o += "}}";
  return o;
}

}  // namespace kvtier
