// kvtier/stats.h — the engine's statistics, and one description of every one of them.
//
// EngineStats is what Engine::Stats() returns: a snapshot of counters (monotonic since Open),
// gauges (the state now) and latency histograms, per engine, per tier and per namespace.
//
// Every statistic in these structs is described once, by AllStats(): its name, kind (counter,
// gauge, histogram, label), unit, labels (tier, namespace), help text and Prometheus metric
// name. Every output walks that description instead of naming fields itself: the metrics
// endpoint's Prometheus text and /stats JSON (engine/metrics.h), the Python `stats()` dict,
// the C API's stats structs and the `kvtier stats` / `kvtier top` commands. So a statistic
// added here (a field, plus its line in AllStats' table in engine/stats.cc) reaches every
// output at once, and tests/engine/stats_schema_test.cc fails while a field is not described.
//
// Promises:
//   * AllStats() lists every field of TierStats, NamespaceStats, PrefetchStats and
//     EngineStats that holds a figure (not `name`, not the nesting members `tiers`,
//     `namespaces`, `prefetch`, `remote`, `nodes`), plus every field of RemoteStats and
//     RemoteNodeStats that holds a figure (not `address`), plus derived figures marked `derived` (used_bytes). Names are
//     unique within a group, and metric names are unique.
//   * VisitStats visits the statistics in AllStats() order, each once per label set: per
//     tier (kGpu, kHost, kDisk, kRemote) for tier groups, per namespace in
//     EngineStats::namespaces order for namespace groups (tiers inner), per node in
//     EngineStats::remote.nodes order for node groups. It allocates nothing and takes no lock.
//
// Statistics are read-only snapshots; nothing here is thread-hostile (AllStats is a constant
// table; VisitStats reads only the snapshot it is given).

#ifndef KVTIER_STATS_H_
#define KVTIER_STATS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvtier/tier_kind.h"

namespace kvtier {

struct TierStats {
  size_t capacity_blocks = 0;
  size_t used_blocks = 0;
  size_t pinned_blocks = 0;
  // Lookups: every block a Load or LoadToGpuTier reads is a hit in the highest tier that
  // held it when the call was made and a miss in each tier above; every full block a Match
  // could not find is a miss in every tier. Prefetches are not lookups (PrefetchStats).
  // hit ratio of a tier = hits / (hits + misses).
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t bytes_in = 0;             // bytes written into this tier
  uint64_t bytes_out = 0;            // bytes read out of this tier
  uint64_t evictions = 0;            // copies dropped to make room
  uint64_t demotions = 0;            // copies moved down to make room
  uint64_t promotions = 0;           // copies brought up into this tier
  uint64_t admissions_rejected = 0;  // disk: blocks the admission policy (or a busy disk) refused
  uint64_t checksum_failures = 0;    // disk: reads that failed verification (became misses)
  uint64_t write_failures = 0;       // disk: writes that failed (EIO, ENOSPC, ...)
  // Reads out of this tier as the engine measures them (decaying averages; Engine::PlanLoad
  // plans with them): disk and remote, into a host slot; host and GPU, into the caller's
  // memory. Throughput counts only time with a read in flight. Until the first samples they
  // are the engine's priors.
  uint64_t read_bytes_per_s = 0;
  uint64_t read_latency_ns = 0;
  uint64_t read_samples = 0;  // measurement windows that updated them
};

struct NamespaceStats {
  std::string name;
  size_t blocks = 0;
  TierArray<size_t> blocks_per_tier;
  uint64_t matched_blocks = 0;  // blocks Match found (hits)
  uint64_t missed_blocks = 0;   // full blocks of Match queries past the matched prefix
  uint64_t stored_blocks = 0;
  uint64_t loaded_blocks = 0;         // by Load and LoadToGpuTier
  TierArray<uint64_t> hits_per_tier;  // lookups, as in TierStats
  TierArray<uint64_t> misses_per_tier;
  uint64_t stall_ns = 0;  // as EngineStats::stall_ns, for this namespace's loads
  uint64_t stalled_waits = 0;
  // Quotas (NamespaceLimits) in blocks per tier, 0 = none; what enforcing them did.
  TierArray<size_t> quota_blocks;
  uint64_t quota_evictions = 0;   // own blocks evicted to stay within a quota
  uint64_t quota_rejections = 0;  // blocks refused a tier because of a quota
  uint64_t expired_blocks = 0;    // removed because their time to live passed
};

// Latency of one kind of call, as time spent inside the call: Store and Load return once
// their copies are enqueued, so transfer time is not included. Bucket i < kLatencyBuckets - 1
// counts calls that took less than 2^i microseconds (and not less than 2^(i-1)); the last
// bucket counts the rest.
inline constexpr int kLatencyBuckets = 24;
struct LatencyStats {
  uint64_t count = 0;
  uint64_t sum_ns = 0;
  uint64_t buckets[kLatencyBuckets] = {};
};

// What look-ahead hints (Engine::Hint) achieved. A hinted block is "issued" when the
// prefetcher starts moving it to the top tier; then it is used "in time" (its copy had landed
// when a Load or LoadToGpuTier touched it), used "late" (still landing: the reader's stream
// waited on it), or "unused" (evicted or erased before any use).
struct PrefetchStats {
  uint64_t hinted = 0;     // keys queued by Hint
  uint64_t issued = 0;     // promotions started for hints
  uint64_t present = 0;    // already in the top tier when their turn came
  uint64_t skipped = 0;    // not cached, or no slot without evicting pinned data
  uint64_t cancelled = 0;  // dropped by CancelHint before their turn
  uint64_t in_time = 0;
  uint64_t late = 0;
  uint64_t unused = 0;
  uint64_t queued = 0;             // keys waiting for their turn now
  uint64_t outstanding_bytes = 0;  // in flight or landed and not yet used, now
  uint64_t budget_bytes = 0;       // in effect (EngineOptions::prefetch_budget_bytes)
};

// One node of the remote tier's cluster, as the client sees it.
struct RemoteNodeStats {
  std::string address;  // host:port
  uint64_t master = 0;        // 1 = serves hash slots
  uint64_t connected = 0;     // 1 = at least one connection is up
  uint64_t breaker_open = 0;  // 1 = its circuit breaker fails its operations at once
  uint64_t slots = 0;
  uint64_t ops = 0;
  uint64_t errors = 0;
};

// The remote tier (EngineOptions::remote). Its lookups, bytes and hit ratio are also in
// EngineStats::tiers[kRemote]; these are the figures only it has. All zero when it is off.
struct RemoteStats {
  uint64_t enabled = 0;          // 1 when the engine has a remote tier
  uint64_t lookups = 0;          // keys Match asked the cluster about
  uint64_t lookup_hits = 0;      // of which the cluster held (the prefix Match reported)
  uint64_t lookup_errors = 0;    // keys whose answer was an error or late (counted as misses)
  uint64_t reads = 0;            // values read (Load, promotions)
  uint64_t read_hits = 0;        // verified and used
  uint64_t read_misses = 0;      // gone (nil): evicted, expired or lost in a failover
  uint64_t read_errors = 0;      // the read failed (timeout, node down, ...)
  uint64_t read_corrupt = 0;     // values that failed their checks (bad checksum, truncated)
  uint64_t read_wrong_block = 0;  // valid values of another key, namespace or model
  uint64_t read_bad_mac = 0;     // values whose HMAC did not verify
  uint64_t writes = 0;           // values written (acknowledged)
  uint64_t writes_failed = 0;
  uint64_t writes_dropped = 0;   // not sent: the in-flight cap was reached
  uint64_t writes_rejected = 0;  // refused by admission (seen-count filter, write budget)
  // Not written: another tensor-parallel rank holding the same bytes writes them
  // (TensorParallelOptions::store_rank).
  uint64_t writes_skipped_replica = 0;
  uint64_t bytes_written = 0;    // value bytes, headers included
  uint64_t bytes_read = 0;
  uint64_t erased_keys = 0;      // deleted by Erase / EraseNamespace
  uint64_t slot_map_refreshes = 0;
  uint64_t errors_connect = 0;   // client errors by kind
  uint64_t errors_timeout = 0;
  uint64_t errors_cluster_down = 0;  // CLUSTERDOWN, TRYAGAIN, LOADING
  uint64_t errors_no_perm = 0;
  uint64_t errors_breaker_open = 0;
  uint64_t errors_protocol = 0;
  uint64_t redirects = 0;        // MOVED and ASK replies followed
  LatencyStats get_latency;      // one GET, sent to verified
  LatencyStats set_latency;
  std::vector<RemoteNodeStats> nodes;
};

struct EngineStats {
  std::string device;
  // Bytes of one block (Geometry::block_bytes()); 0 where the snapshot's producer did not
  // say (the tier figures in bytes derived from it are 0 then).
  uint64_t block_bytes = 0;
  PrefetchStats prefetch;
  TierArray<TierStats> tiers;
  std::vector<NamespaceStats> namespaces;
  uint64_t match_calls = 0;
  uint64_t matched_blocks = 0;
  uint64_t stored_blocks = 0;
  uint64_t deduplicated_blocks = 0;
  uint64_t rejected_blocks = 0;
  uint64_t loaded_blocks = 0;
  uint64_t leases_held = 0;
  uint64_t leases_expired = 0;
  // Blocks whose disk read a Load abandoned at its deadline (LoadRequest::deadline).
  uint64_t blocks_abandoned = 0;
  uint64_t missed_blocks = 0;  // full blocks of Match queries past the matched prefix
  // Stall: time a load's reader waited for its bytes. A host wait (TransferHandle::Wait,
  // WaitLayerHost) that finds the copies still in flight adds the time the host blocked; a
  // stream wait (WaitLayer) that finds them in flight adds the time the reader's stream sat
  // at the wait, measured by host callbacks on that stream around it. Waits that find the
  // bytes landed add nothing and cost nothing extra.
  uint64_t stall_ns = 0;
  uint64_t stalled_waits = 0;  // waits that found their bytes still in flight
  LatencyStats match_latency;
  LatencyStats store_latency;
  LatencyStats load_latency;
  RemoteStats remote;
};

// ------------------------------------------------------------------------------- the schema

enum class StatKind : uint8_t {
  kCounter,    // only grows (since Open); rates are its deltas
  kGauge,      // a level now; may go up and down
  kHistogram,  // a LatencyStats: count, sum and log2 buckets
  kLabel,      // a string describing the engine (the device)
};

enum class StatUnit : uint8_t {
  kNone,  // labels
  kBlocks,
  kBytes,
  kNanoseconds,  // exported to Prometheus as seconds
  kCalls,
  kKeys,
  kLeases,
  kWaits,
  kBytesPerSecond,
};

// Where a statistic lives, which says its labels and which struct holds it.
enum class StatGroup : uint8_t {
  kInfo,           // EngineStats: what the engine is (device, block size)
  kEngine,         // EngineStats: engine-wide figures
  kPrefetch,       // EngineStats::prefetch
  kLatency,        // EngineStats: the latency histograms
  kTier,           // EngineStats::tiers[tier]; label: tier
  kNamespace,      // EngineStats::namespaces[i]; label: namespace
  kNamespaceTier,  // a TierArray of EngineStats::namespaces[i]; labels: namespace, tier
  kRemote,         // EngineStats::remote
  kRemoteNode,     // EngineStats::remote.nodes[i]; label: node
};

struct StatInfo {
  // The field's name in its struct. It is also the statistic's key in the Python dict and the
  // /stats JSON (engine/metrics.h says where each group nests), and its C API field.
  absl::string_view name;
  StatGroup group;
  StatKind kind;
  StatUnit unit;
  // The Prometheus metric family: kvtier_..., counters ending in _total, nanoseconds
  // exported as _seconds.
  absl::string_view metric;
  absl::string_view help;
  // Computed from other fields of the snapshot rather than held in one (used_bytes =
  // used_blocks * block_bytes).
  bool derived = false;
};

// "counter", "gauge", "histogram", "label".
const char* StatKindName(StatKind kind);
// "none", "blocks", "bytes", "nanoseconds", "calls", "keys", "leases", "waits".
const char* StatUnitName(StatUnit unit);
// "info", "engine", "prefetch", "latency", "tier", "namespace", "namespace_tier", "remote",
// "remote_node".
const char* StatGroupName(StatGroup group);
inline bool HasTierLabel(StatGroup g) {
  return g == StatGroup::kTier || g == StatGroup::kNamespaceTier;
}
inline bool HasNamespaceLabel(StatGroup g) {
  return g == StatGroup::kNamespace || g == StatGroup::kNamespaceTier;
}
inline bool HasNodeLabel(StatGroup g) { return g == StatGroup::kRemoteNode; }

// Every statistic, in the order outputs list them.
absl::Span<const StatInfo> AllStats();

// The labels of one value: `tier` where HasTierLabel(info.group), the namespace (its index in
// EngineStats::namespaces and its name) where HasNamespaceLabel(info.group).
struct StatLabels {
  TierKind tier = TierKind::kGpu;
  size_t ns_index = 0;
  absl::string_view ns;
  size_t node_index = 0;  // where HasNodeLabel(info.group): EngineStats::remote.nodes index
  absl::string_view node;
};

// Receives the values of a snapshot, statistic by statistic (CacheLib's CounterVisitor, with
// the description of each value beside it).
class StatsVisitor {
 public:
  virtual ~StatsVisitor() = default;
  // Once per statistic, before its values; also for a namespace statistic when there are no
  // namespaces (an exposition format may still declare it).
  virtual void BeginStat(const StatInfo& info) { (void)info; }
  // kCounter and kGauge.
  virtual void Number(const StatInfo& info, const StatLabels& labels, uint64_t value) = 0;
  virtual void Histogram(const StatInfo& info, const StatLabels& labels,
                         const LatencyStats& value) = 0;
  virtual void Label(const StatInfo& info, absl::string_view value) = 0;
};

// Walks `stats` with `visitor`: every statistic of AllStats(), in order, once per label set.
void VisitStats(const EngineStats& stats, StatsVisitor& visitor);

}  // namespace kvtier

#endif  // KVTIER_STATS_H_
