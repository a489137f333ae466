// The one description of every statistic (include/kvtier/stats.h): a table of entries, each
// naming a field once (the macros below stringify the field they read, so a statistic's name
// is its field's name) with its kind, unit, Prometheus metric and help, and VisitStats, which
// walks a snapshot along that table.
//
// A field added to a stats struct needs its line here; tests/engine/stats_schema_test.cc
// counts each struct's fields and fails until it has one.

#include "kvtier/stats.h"

#include <array>

namespace kvtier {
namespace {

// Where an entry reads its values; exactly one member is set, as the entry's group and kind
// say (kInfo/kEngine/kPrefetch: `number` or `label`; kLatency: `latency`; kTier: `tier`;
// kNamespace: `ns`; kNamespaceTier: `ns_tier`; kRemote: `number`, or `latency` for
// histograms; kRemoteNode: `node`).
struct Source {
  uint64_t (*number)(const EngineStats&) = nullptr;
  const std::string& (*label)(const EngineStats&) = nullptr;
  const LatencyStats& (*latency)(const EngineStats&) = nullptr;
  uint64_t (*tier)(const EngineStats&, const TierStats&) = nullptr;
  uint64_t (*ns)(const NamespaceStats&) = nullptr;
  uint64_t (*ns_tier)(const NamespaceStats&, TierKind) = nullptr;
  uint64_t (*node)(const RemoteNodeStats&) = nullptr;
};

struct Entry {
  StatInfo info;
  Source source;
};

#define KVTIER_STAT_INFO(field, group, kind, unit, metric, help) \
  StatInfo { #field, StatGroup::group, StatKind::kind, StatUnit::unit, metric, help }

// EngineStats::field, or EngineStats::prefetch.field (group kPrefetch).
#define KVTIER_ENGINE_STAT(field, kind, unit, metric, help)              \
  Entry {                                                                \
    KVTIER_STAT_INFO(field, kEngine, kind, unit, metric, help), {        \
      .number = [](const EngineStats& s) -> uint64_t { return s.field; } \
    }                                                                    \
  }
#define KVTIER_PREFETCH_STAT(field, kind, unit, metric, help)                     \
  Entry {                                                                         \
    KVTIER_STAT_INFO(field, kPrefetch, kind, unit, metric, help), {               \
      .number = [](const EngineStats& s) -> uint64_t { return s.prefetch.field; } \
    }                                                                             \
  }
#define KVTIER_LATENCY_STAT(field, metric, help)                                     \
  Entry {                                                                            \
    KVTIER_STAT_INFO(field, kLatency, kHistogram, kNanoseconds, metric, help), {     \
      .latency = [](const EngineStats& s) -> const LatencyStats& { return s.field; } \
    }                                                                                \
  }
#define KVTIER_TIER_STAT(field, kind, unit, metric, help)                                \
  Entry {                                                                                \
    KVTIER_STAT_INFO(field, kTier, kind, unit, metric, help), {                          \
      .tier = [](const EngineStats&, const TierStats& t) -> uint64_t { return t.field; } \
    }                                                                                    \
  }
#define KVTIER_NAMESPACE_STAT(field, kind, unit, metric, help)          \
  Entry {                                                               \
    KVTIER_STAT_INFO(field, kNamespace, kind, unit, metric, help), {    \
      .ns = [](const NamespaceStats& n) -> uint64_t { return n.field; } \
    }                                                                   \
  }
#define KVTIER_NAMESPACE_TIER_STAT(field, kind, unit, metric, help)                         \
  Entry {                                                                                   \
    KVTIER_STAT_INFO(field, kNamespaceTier, kind, unit, metric, help), {                    \
      .ns_tier = [](const NamespaceStats& n, TierKind t) -> uint64_t { return n.field[t]; } \
    }                                                                                       \
  }

#define KVTIER_REMOTE_STAT(field, kind, unit, metric, help)                     \
  Entry {                                                                       \
    KVTIER_STAT_INFO(field, kRemote, kind, unit, metric, help), {               \
      .number = [](const EngineStats& s) -> uint64_t { return s.remote.field; } \
    }                                                                           \
  }
#define KVTIER_REMOTE_LATENCY_STAT(field, metric, help)                                     \
  Entry {                                                                                   \
    KVTIER_STAT_INFO(field, kRemote, kHistogram, kNanoseconds, metric, help), {             \
      .latency = [](const EngineStats& s) -> const LatencyStats& { return s.remote.field; } \
    }                                                                                       \
  }
#define KVTIER_REMOTE_NODE_STAT(field, kind, unit, metric, help)            \
  Entry {                                                                   \
    KVTIER_STAT_INFO(field, kRemoteNode, kind, unit, metric, help), {       \
      .node = [](const RemoteNodeStats& n) -> uint64_t { return n.field; }  \
    }                                                                       \
  }

// Outputs list statistics in this order: what the engine is, tiers, namespaces, engine-wide
// figures, prefetch, latency. Metric names and help texts are those the metrics endpoint has
// always served; Prometheus HELP lines show them.
const Entry kEntries[] = {
    // ------------------------------------------------------------------------------ info
    {KVTIER_STAT_INFO(device, kInfo, kLabel, kNone, "kvtier_engine_info",
                      "The device the engine moves bytes with (label device)."),
     {.label = [](const EngineStats& s) -> const std::string& { return s.device; }}},
    {KVTIER_STAT_INFO(block_bytes, kInfo, kGauge, kBytes, "kvtier_block_bytes",
                      "Bytes of one block: every layer's K and V of block_tokens tokens."),
     {.number = [](const EngineStats& s) -> uint64_t { return s.block_bytes; }}},

    // ----------------------------------------------------------------------------- tiers
    KVTIER_TIER_STAT(capacity_blocks, kGauge, kBlocks, "kvtier_tier_capacity_blocks",
                     "Blocks the tier can hold."),
    KVTIER_TIER_STAT(used_blocks, kGauge, kBlocks, "kvtier_tier_used_blocks",
                     "Blocks the tier holds now."),
    {StatInfo{"used_bytes", StatGroup::kTier, StatKind::kGauge, StatUnit::kBytes,
              "kvtier_tier_used_bytes", "Raw block bytes the tier holds now.", /*derived=*/true},
     {.tier = [](const EngineStats& s, const TierStats& t) -> uint64_t {
       return t.used_blocks * s.block_bytes;
     }}},
    KVTIER_TIER_STAT(pinned_blocks, kGauge, kBlocks, "kvtier_tier_pinned_blocks",
                     "Blocks pinned by copies in flight or leases."),
    KVTIER_TIER_STAT(hits, kCounter, kBlocks, "kvtier_tier_hits_total",
                     "Blocks loads read from this tier as the highest tier holding them."),
    KVTIER_TIER_STAT(
        misses, kCounter, kBlocks, "kvtier_tier_misses_total",
        "Blocks looked up that this tier did not hold (read from a lower tier, or not cached)."),
    KVTIER_TIER_STAT(bytes_in, kCounter, kBytes, "kvtier_tier_bytes_in_total",
                     "Bytes written into this tier."),
    KVTIER_TIER_STAT(bytes_out, kCounter, kBytes, "kvtier_tier_bytes_out_total",
                     "Bytes read out of this tier."),
    KVTIER_TIER_STAT(evictions, kCounter, kBlocks, "kvtier_tier_evictions_total",
                     "Copies dropped to make room."),
    KVTIER_TIER_STAT(demotions, kCounter, kBlocks, "kvtier_tier_demotions_total",
                     "Copies moved down to make room."),
    KVTIER_TIER_STAT(promotions, kCounter, kBlocks, "kvtier_tier_promotions_total",
                     "Copies brought up into this tier."),
    KVTIER_TIER_STAT(admissions_rejected, kCounter, kBlocks,
                     "kvtier_tier_admissions_rejected_total",
                     "Blocks the admission policy or a busy disk refused."),
    KVTIER_TIER_STAT(checksum_failures, kCounter, kBlocks, "kvtier_tier_checksum_failures_total",
                     "Reads that failed verification."),
    KVTIER_TIER_STAT(read_bytes_per_s, kGauge, kBytesPerSecond, "kvtier_tier_read_bytes_per_second",
                     "Measured read throughput out of the tier (busy time only; decaying)."),
    KVTIER_TIER_STAT(read_latency_ns, kGauge, kNanoseconds, "kvtier_tier_read_latency_seconds",
                     "Measured latency of one read out of the tier (decaying average)."),
    KVTIER_TIER_STAT(read_samples, kCounter, kCalls, "kvtier_tier_read_samples_total",
                     "Measurement windows that updated the tier's read rate and latency."),
    KVTIER_TIER_STAT(write_failures, kCounter, kBlocks, "kvtier_tier_write_failures_total",
                     "Writes that failed."),

    // ------------------------------------------------------------------------ namespaces
    KVTIER_NAMESPACE_STAT(blocks, kGauge, kBlocks, "kvtier_namespace_cached_blocks",
                          "Blocks of the namespace cached in any tier (each block once)."),
    KVTIER_NAMESPACE_TIER_STAT(blocks_per_tier, kGauge, kBlocks, "kvtier_namespace_blocks",
                               "Blocks of the namespace per tier."),
    KVTIER_NAMESPACE_STAT(matched_blocks, kCounter, kBlocks,
                          "kvtier_namespace_matched_blocks_total", "Blocks Match found."),
    KVTIER_NAMESPACE_STAT(missed_blocks, kCounter, kBlocks, "kvtier_namespace_missed_blocks_total",
                          "Full query blocks past the matched prefix."),
    KVTIER_NAMESPACE_STAT(stored_blocks, kCounter, kBlocks, "kvtier_namespace_stored_blocks_total",
                          "Blocks newly stored."),
    KVTIER_NAMESPACE_STAT(loaded_blocks, kCounter, kBlocks, "kvtier_namespace_loaded_blocks_total",
                          "Blocks loaded."),
    KVTIER_NAMESPACE_TIER_STAT(hits_per_tier, kCounter, kBlocks, "kvtier_namespace_hits_total",
                               "Blocks of the namespace loaded from this tier."),
    KVTIER_NAMESPACE_TIER_STAT(misses_per_tier, kCounter, kBlocks, "kvtier_namespace_misses_total",
                               "Blocks of the namespace this tier did not hold."),
    KVTIER_NAMESPACE_STAT(stall_ns, kCounter, kNanoseconds, "kvtier_namespace_stall_seconds_total",
                          "Time readers of the namespace's loads waited for bytes in flight."),
    KVTIER_NAMESPACE_STAT(stalled_waits, kCounter, kWaits, "kvtier_namespace_stalled_waits_total",
                          "Waits on the namespace's loads that found the bytes still in flight."),
    KVTIER_NAMESPACE_TIER_STAT(quota_blocks, kGauge, kBlocks, "kvtier_namespace_quota_blocks",
                               "The namespace's quota in this tier, in blocks (0 = none)."),
    KVTIER_NAMESPACE_STAT(quota_evictions, kCounter, kBlocks,
                          "kvtier_namespace_quota_evictions_total",
                          "Own blocks evicted to keep the namespace within a tier quota."),
    KVTIER_NAMESPACE_STAT(quota_rejections, kCounter, kBlocks,
                          "kvtier_namespace_quota_rejections_total",
                          "Blocks refused a tier because the namespace was at its quota."),
    KVTIER_NAMESPACE_STAT(expired_blocks, kCounter, kBlocks,
                          "kvtier_namespace_expired_blocks_total",
                          "Blocks removed when their time to live passed."),

    // ---------------------------------------------------------------------------- engine
    KVTIER_ENGINE_STAT(match_calls, kCounter, kCalls, "kvtier_match_calls_total", "Match calls."),
    KVTIER_ENGINE_STAT(matched_blocks, kCounter, kBlocks, "kvtier_matched_blocks_total",
                       "Blocks Match found (hits)."),
    KVTIER_ENGINE_STAT(missed_blocks, kCounter, kBlocks, "kvtier_missed_blocks_total",
                       "Full query blocks past the matched prefix."),
    KVTIER_ENGINE_STAT(stored_blocks, kCounter, kBlocks, "kvtier_stored_blocks_total",
                       "Blocks newly stored."),
    KVTIER_ENGINE_STAT(deduplicated_blocks, kCounter, kBlocks, "kvtier_deduplicated_blocks_total",
                       "Stored blocks already present."),
    KVTIER_ENGINE_STAT(rejected_blocks, kCounter, kBlocks, "kvtier_rejected_blocks_total",
                       "Blocks not stored: every slot pinned."),
    KVTIER_ENGINE_STAT(loaded_blocks, kCounter, kBlocks, "kvtier_loaded_blocks_total",
                       "Blocks loaded."),
    KVTIER_ENGINE_STAT(leases_held, kGauge, kLeases, "kvtier_leases_held",
                       "Leases on GPU slots held now."),
    KVTIER_ENGINE_STAT(leases_expired, kCounter, kLeases, "kvtier_leases_expired_total",
                       "Leases that expired."),
    KVTIER_ENGINE_STAT(blocks_abandoned, kCounter, kBlocks, "kvtier_blocks_abandoned_total",
                       "Blocks whose disk read a Load abandoned at its deadline."),
    KVTIER_ENGINE_STAT(
        stall_ns, kCounter, kNanoseconds, "kvtier_stall_seconds_total",
        "Time readers of loads waited for bytes in flight (host blocked or stream waiting)."),
    KVTIER_ENGINE_STAT(stalled_waits, kCounter, kWaits, "kvtier_stalled_waits_total",
                       "Waits on loads (host or stream) that found the bytes still in flight."),

    // -------------------------------------------------------------------------- prefetch
    KVTIER_PREFETCH_STAT(hinted, kCounter, kKeys, "kvtier_prefetch_hinted_total",
                         "Keys queued by Hint."),
    KVTIER_PREFETCH_STAT(issued, kCounter, kBlocks, "kvtier_prefetch_issued_total",
                         "Promotions started for hints."),
    KVTIER_PREFETCH_STAT(present, kCounter, kBlocks, "kvtier_prefetch_present_total",
                         "Hinted blocks already in the top tier."),
    KVTIER_PREFETCH_STAT(skipped, kCounter, kKeys, "kvtier_prefetch_skipped_total",
                         "Hinted blocks skipped."),
    KVTIER_PREFETCH_STAT(cancelled, kCounter, kKeys, "kvtier_prefetch_cancelled_total",
                         "Hinted blocks cancelled."),
    KVTIER_PREFETCH_STAT(in_time, kCounter, kBlocks, "kvtier_prefetch_useful_total",
                         "Prefetched blocks used in time."),
    KVTIER_PREFETCH_STAT(late, kCounter, kBlocks, "kvtier_prefetch_late_total",
                         "Prefetched blocks used while still landing."),
    KVTIER_PREFETCH_STAT(unused, kCounter, kBlocks, "kvtier_prefetch_unused_total",
                         "Prefetched blocks evicted unused."),
    KVTIER_PREFETCH_STAT(queued, kGauge, kKeys, "kvtier_prefetch_queued",
                         "Hinted keys waiting now."),
    KVTIER_PREFETCH_STAT(outstanding_bytes, kGauge, kBytes, "kvtier_prefetch_outstanding_bytes",
                         "Hinted bytes in flight or unused now."),
    KVTIER_PREFETCH_STAT(budget_bytes, kGauge, kBytes, "kvtier_prefetch_budget_bytes",
                         "Prefetch budget."),

    // --------------------------------------------------------------------------- latency
    KVTIER_LATENCY_STAT(match_latency, "kvtier_match_latency_seconds",
                        "Time inside Match (no I/O)."),
    KVTIER_LATENCY_STAT(store_latency, "kvtier_store_latency_seconds",
                        "Time inside Store (copies are asynchronous)."),
    KVTIER_LATENCY_STAT(load_latency, "kvtier_load_latency_seconds",
                        "Time inside Load (copies are asynchronous)."),

    // ---------------------------------------------------------------------------- remote
    KVTIER_REMOTE_STAT(enabled, kGauge, kNone, "kvtier_remote_enabled",
                       "1 when the engine has a remote tier (Redis Cluster)."),
    KVTIER_REMOTE_STAT(lookups, kCounter, kKeys, "kvtier_remote_lookups_total",
                       "Keys Match asked the remote tier about."),
    KVTIER_REMOTE_STAT(lookup_hits, kCounter, kKeys, "kvtier_remote_lookup_hits_total",
                       "Keys the remote tier held (within the prefix Match reported)."),
    KVTIER_REMOTE_STAT(lookup_errors, kCounter, kKeys, "kvtier_remote_lookup_errors_total",
                       "Keys whose remote answer was an error or late (counted as misses)."),
    KVTIER_REMOTE_STAT(reads, kCounter, kBlocks, "kvtier_remote_reads_total",
                       "Values read from the remote tier."),
    KVTIER_REMOTE_STAT(read_hits, kCounter, kBlocks, "kvtier_remote_read_hits_total",
                       "Values read, verified and used."),
    KVTIER_REMOTE_STAT(read_misses, kCounter, kBlocks, "kvtier_remote_read_misses_total",
                       "Values gone when read (evicted, expired, lost in a failover)."),
    KVTIER_REMOTE_STAT(read_errors, kCounter, kBlocks, "kvtier_remote_read_errors_total",
                       "Reads that failed (timeout, node down, refused)."),
    KVTIER_REMOTE_STAT(read_corrupt, kCounter, kBlocks, "kvtier_remote_read_corrupt_total",
                       "Values that failed their checks (checksum, truncation)."),
    KVTIER_REMOTE_STAT(read_wrong_block, kCounter, kBlocks, "kvtier_remote_read_wrong_block_total",
                       "Valid values of another key, namespace or model under the key read."),
    KVTIER_REMOTE_STAT(read_bad_mac, kCounter, kBlocks, "kvtier_remote_read_bad_mac_total",
                       "Values whose HMAC did not verify (or that lacked one)."),
    KVTIER_REMOTE_STAT(writes, kCounter, kBlocks, "kvtier_remote_writes_total",
                       "Values written to the remote tier (acknowledged)."),
    KVTIER_REMOTE_STAT(writes_failed, kCounter, kBlocks, "kvtier_remote_writes_failed_total",
                       "Writes that failed (the block is not in the remote tier)."),
    KVTIER_REMOTE_STAT(writes_dropped, kCounter, kBlocks, "kvtier_remote_writes_dropped_total",
                       "Writes not sent: the in-flight cap was reached."),
    KVTIER_REMOTE_STAT(writes_rejected, kCounter, kBlocks, "kvtier_remote_writes_rejected_total",
                       "Writes refused by admission (seen-count filter, write budget)."),
    KVTIER_REMOTE_STAT(writes_skipped_replica, kCounter, kBlocks,
                       "kvtier_remote_writes_skipped_replica_total",
                       "Writes left to another tensor-parallel rank holding the same bytes."),
    KVTIER_REMOTE_STAT(bytes_written, kCounter, kBytes, "kvtier_remote_bytes_written_total",
                       "Value bytes written (headers included)."),
    KVTIER_REMOTE_STAT(bytes_read, kCounter, kBytes, "kvtier_remote_bytes_read_total",
                       "Value bytes read (headers included)."),
    KVTIER_REMOTE_STAT(erased_keys, kCounter, kKeys, "kvtier_remote_erased_keys_total",
                       "Keys deleted by Erase and EraseNamespace."),
    KVTIER_REMOTE_STAT(slot_map_refreshes, kCounter, kCalls,
                       "kvtier_remote_slot_map_refreshes_total",
                       "Times the client read the cluster's slot map."),
    KVTIER_REMOTE_STAT(errors_connect, kCounter, kCalls, "kvtier_remote_errors_connect_total",
                       "Operations failed by a connection, TLS or AUTH error."),
    KVTIER_REMOTE_STAT(errors_timeout, kCounter, kCalls, "kvtier_remote_errors_timeout_total",
                       "Operations failed by their deadline."),
    KVTIER_REMOTE_STAT(errors_cluster_down, kCounter, kCalls,
                       "kvtier_remote_errors_cluster_down_total",
                       "Operations failed by CLUSTERDOWN, TRYAGAIN or LOADING."),
    KVTIER_REMOTE_STAT(errors_no_perm, kCounter, kCalls, "kvtier_remote_errors_no_perm_total",
                       "Operations refused by the server's ACL."),
    KVTIER_REMOTE_STAT(errors_breaker_open, kCounter, kCalls,
                       "kvtier_remote_errors_breaker_open_total",
                       "Operations failed at once: their node's circuit breaker was open."),
    KVTIER_REMOTE_STAT(errors_protocol, kCounter, kCalls, "kvtier_remote_errors_protocol_total",
                       "Operations failed by a malformed or unexpected reply."),
    KVTIER_REMOTE_STAT(redirects, kCounter, kCalls, "kvtier_remote_redirects_total",
                       "MOVED and ASK replies followed."),
    KVTIER_REMOTE_LATENCY_STAT(get_latency, "kvtier_remote_get_latency_seconds",
                               "One remote GET, sent to received."),
    KVTIER_REMOTE_LATENCY_STAT(set_latency, "kvtier_remote_set_latency_seconds",
                               "One remote SET, sent to acknowledged."),
    KVTIER_REMOTE_NODE_STAT(master, kGauge, kNone, "kvtier_remote_node_master",
                            "1 when the node serves hash slots."),
    KVTIER_REMOTE_NODE_STAT(connected, kGauge, kNone, "kvtier_remote_node_connected",
                            "1 when at least one connection to the node is up."),
    KVTIER_REMOTE_NODE_STAT(
        breaker_open, kGauge, kNone, "kvtier_remote_node_breaker_open",
        "1 when the node's circuit breaker is open (its operations fail fast)."),
    KVTIER_REMOTE_NODE_STAT(slots, kGauge, kNone, "kvtier_remote_node_slots",
                            "Hash slots the node serves."),
    KVTIER_REMOTE_NODE_STAT(ops, kCounter, kCalls, "kvtier_remote_node_ops_total",
                            "Operations sent to the node."),
    KVTIER_REMOTE_NODE_STAT(errors, kCounter, kCalls, "kvtier_remote_node_errors_total",
                            "Operations on the node that failed."),
};

#undef KVTIER_REMOTE_NODE_STAT
#undef KVTIER_REMOTE_LATENCY_STAT
#undef KVTIER_REMOTE_STAT
#undef KVTIER_NAMESPACE_TIER_STAT
#undef KVTIER_NAMESPACE_STAT
#undef KVTIER_TIER_STAT
#undef KVTIER_LATENCY_STAT
#undef KVTIER_PREFETCH_STAT
#undef KVTIER_ENGINE_STAT
#undef KVTIER_STAT_INFO

constexpr size_t kNumStats = sizeof(kEntries) / sizeof(kEntries[0]);

const std::array<StatInfo, kNumStats>& Infos() {
  static const std::array<StatInfo, kNumStats> infos = [] {
    std::array<StatInfo, kNumStats> out{};
    for (size_t i = 0; i < kNumStats; ++i) out[i] = kEntries[i].info;
    return out;
  }();
  return infos;
}

}  // namespace

const char* StatKindName(StatKind kind) {
  switch (kind) {
    case StatKind::kCounter:
      return "counter";
    case StatKind::kGauge:
      return "gauge";
    case StatKind::kHistogram:
      return "histogram";
    case StatKind::kLabel:
      return "label";
  }
  return "invalid";
}

const char* StatUnitName(StatUnit unit) {
  switch (unit) {
    case StatUnit::kNone:
      return "none";
    case StatUnit::kBlocks:
      return "blocks";
    case StatUnit::kBytes:
      return "bytes";
    case StatUnit::kNanoseconds:
      return "nanoseconds";
    case StatUnit::kCalls:
      return "calls";
    case StatUnit::kKeys:
      return "keys";
    case StatUnit::kLeases:
      return "leases";
    case StatUnit::kWaits:
      return "waits";
    case StatUnit::kBytesPerSecond:
      return "bytes_per_second";
  }
  return "invalid";
}

const char* StatGroupName(StatGroup group) {
  switch (group) {
    case StatGroup::kInfo:
      return "info";
    case StatGroup::kEngine:
      return "engine";
    case StatGroup::kPrefetch:
      return "prefetch";
    case StatGroup::kLatency:
      return "latency";
    case StatGroup::kTier:
      return "tier";
    case StatGroup::kNamespace:
      return "namespace";
    case StatGroup::kNamespaceTier:
      return "namespace_tier";
    case StatGroup::kRemote:
      return "remote";
    case StatGroup::kRemoteNode:
      return "remote_node";
  }
  return "invalid";
}

absl::Span<const StatInfo> AllStats() { return Infos(); }

void VisitStats(const EngineStats& stats, StatsVisitor& visitor) {
  const std::array<StatInfo, kNumStats>& infos = Infos();
  for (size_t i = 0; i < kNumStats; ++i) {
    const StatInfo& info = infos[i];
    const Source& src = kEntries[i].source;
    visitor.BeginStat(info);
    switch (info.group) {
      case StatGroup::kInfo:
      case StatGroup::kEngine:
      case StatGroup::kPrefetch:
        if (info.kind == StatKind::kLabel) {
          visitor.Label(info, src.label(stats));
        } else {
          visitor.Number(info, StatLabels{}, src.number(stats));
        }
        break;
      case StatGroup::kLatency:
        visitor.Histogram(info, StatLabels{}, src.latency(stats));
        break;
      case StatGroup::kTier:
        for (TierKind t : kAllTiers) {
          visitor.Number(info, StatLabels{.tier = t}, src.tier(stats, stats.tiers[t]));
        }
        break;
      case StatGroup::kNamespace:
        for (size_t n = 0; n < stats.namespaces.size(); ++n) {
          const NamespaceStats& ns = stats.namespaces[n];
          visitor.Number(info, StatLabels{.ns_index = n, .ns = ns.name}, src.ns(ns));
        }
        break;
      case StatGroup::kNamespaceTier:
        for (size_t n = 0; n < stats.namespaces.size(); ++n) {
          const NamespaceStats& ns = stats.namespaces[n];
          for (TierKind t : kAllTiers) {
            visitor.Number(info, StatLabels{.tier = t, .ns_index = n, .ns = ns.name},
                           src.ns_tier(ns, t));
          }
        }
        break;
      case StatGroup::kRemote:
        if (info.kind == StatKind::kHistogram) {
          visitor.Histogram(info, StatLabels{}, src.latency(stats));
        } else {
          visitor.Number(info, StatLabels{}, src.number(stats));
        }
        break;
      case StatGroup::kRemoteNode:
        for (size_t n = 0; n < stats.remote.nodes.size(); ++n) {
          const RemoteNodeStats& node = stats.remote.nodes[n];
          visitor.Number(info, StatLabels{.node_index = n, .node = node.address},
                         src.node(node));
        }
        break;
    }
  }
}

}  // namespace kvtier
