// Helpers for the tests that check every statistic reaches every output: a snapshot in which
// every figure is non-zero and no two are equal, and the values VisitStats reports for it.

#ifndef KVTIER_TESTS_ENGINE_STATS_TEST_UTIL_H_
#define KVTIER_TESTS_ENGINE_STATS_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtier/stats.h"

namespace kvtier::testing {

// Every field of the snapshot gets the next value of `next`: a counter from 1000 on, so no
// figure is zero and none equals another (or a tier index, or a count of namespaces).
// Structs whose fields are all 8-byte integers are filled word by word, so a field added to
// them is filled without this function knowing it; the others are filled by name, and a
// field added to them and to the schema but not here stays 0, which the tests catch.
template <typename Pod>
void FillWords(Pod& pod, uint64_t& next) {
  static_assert(std::is_trivially_copyable_v<Pod> && sizeof(Pod) % sizeof(uint64_t) == 0);
  uint64_t words[sizeof(Pod) / sizeof(uint64_t)];
  for (uint64_t& w : words) w = next++;
  std::memcpy(&pod, words, sizeof(pod));
}

inline EngineStats DistinctStats(size_t num_namespaces = 2, size_t num_nodes = 2) {
  uint64_t next = 1000;
  EngineStats s;
  s.device = "emulated (test)";
  s.block_bytes = next++;
  FillWords(s.prefetch, next);
  for (TierStats& t : s.tiers) FillWords(t, next);
  for (size_t i = 0; i < num_namespaces; ++i) {
    NamespaceStats n;
    n.name = "tenant-" + std::to_string(i);
    n.blocks = next++;
    for (size_t& v : n.blocks_per_tier) v = next++;
    n.matched_blocks = next++;
    n.missed_blocks = next++;
    n.stored_blocks = next++;
    n.loaded_blocks = next++;
    for (uint64_t& v : n.hits_per_tier) v = next++;
    for (uint64_t& v : n.misses_per_tier) v = next++;
    n.stall_ns = next++;
    n.stalled_waits = next++;
    for (size_t& v : n.quota_blocks) v = next++;
    n.quota_evictions = next++;
    n.quota_rejections = next++;
    n.expired_blocks = next++;
    s.namespaces.push_back(n);
  }
  s.match_calls = next++;
  s.matched_blocks = next++;
  s.stored_blocks = next++;
  s.deduplicated_blocks = next++;
  s.rejected_blocks = next++;
  s.loaded_blocks = next++;
  s.leases_held = next++;
  s.leases_expired = next++;
  s.blocks_abandoned = next++;
  s.missed_blocks = next++;
  s.stall_ns = next++;
  s.stalled_waits = next++;
  for (LatencyStats* l : {&s.match_latency, &s.store_latency, &s.load_latency}) FillWords(*l, next);
  RemoteStats& r = s.remote;
  for (uint64_t* v : {&r.enabled,
                      &r.lookups,
                      &r.lookup_hits,
                      &r.lookup_errors,
                      &r.reads,
                      &r.read_hits,
                      &r.read_misses,
                      &r.read_errors,
                      &r.read_corrupt,
                      &r.read_wrong_block,
                      &r.read_bad_mac,
                      &r.writes,
                      &r.writes_failed,
                      &r.writes_dropped,
                      &r.writes_rejected,
                      &r.writes_skipped_replica,
                      &r.bytes_written,
                      &r.bytes_read,
                      &r.erased_keys,
                      &r.slot_map_refreshes,
                      &r.errors_connect,
                      &r.errors_timeout,
                      &r.errors_cluster_down,
                      &r.errors_no_perm,
                      &r.errors_breaker_open,
                      &r.errors_protocol,
                      &r.redirects}) {
    *v = next++;
  }
  for (LatencyStats* l : {&r.get_latency, &r.set_latency}) {
    l->count = next++;
    l->sum_ns = next++;
    for (uint64_t& b : l->buckets) b = next++;
  }
  for (size_t i = 0; i < num_nodes; ++i) {
    RemoteNodeStats n;
    n.address = "127.0.0.1:" + std::to_string(7000 + i);
    for (uint64_t* v : {&n.master, &n.connected, &n.breaker_open, &n.slots, &n.ops, &n.errors}) {
      *v = next++;
    }
    r.nodes.push_back(n);
  }
  return s;
}

// One value VisitStats reported.
struct StatValue {
  const StatInfo* info;
  StatLabels labels;
  uint64_t number = 0;     // kCounter, kGauge
  LatencyStats histogram;  // kHistogram
  std::string label;       // kLabel
};

inline std::vector<StatValue> CollectStats(const EngineStats& stats) {
  class Collector : public StatsVisitor {
   public:
    void Number(const StatInfo& info, const StatLabels& labels, uint64_t value) override {
      out.push_back(StatValue{.info = &info, .labels = labels, .number = value});
    }
    void Histogram(const StatInfo& info, const StatLabels& labels,
                   const LatencyStats& value) override {
      out.push_back(StatValue{.info = &info, .labels = labels, .histogram = value});
    }
    void Label(const StatInfo& info, absl::string_view value) override {
      out.push_back(StatValue{.info = &info, .label = std::string(value)});
    }
    std::vector<StatValue> out;
  } c;
  VisitStats(stats, c);
  return std::move(c.out);
}

// "hits{tier=host}", "blocks_per_tier{namespace=tenant-0,tier=gpu}": for failure messages.
inline std::string Describe(const StatValue& v) {
  std::string out(v.info->name);
  if (HasNodeLabel(v.info->group)) return out + "{node=" + std::string(v.labels.node) + "}";
  if (HasNamespaceLabel(v.info->group) || HasTierLabel(v.info->group)) {
    out += "{";
    if (HasNamespaceLabel(v.info->group)) out += "namespace=" + std::string(v.labels.ns);
    if (HasNamespaceLabel(v.info->group) && HasTierLabel(v.info->group)) out += ",";
    if (HasTierLabel(v.info->group)) out += std::string("tier=") + TierKindName(v.labels.tier);
    out += "}";
  }
  return out;
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTS_ENGINE_STATS_TEST_UTIL_H_
