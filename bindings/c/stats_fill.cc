#include "stats_fill.h"  // bindings/c/stats_fill.h

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>

#include "absl/strings/str_format.h"

namespace kvtier::capi {
namespace {

static_assert(KVTIER_NUM_TIERS == kNumTiers);
static_assert(KVTIER_LATENCY_BUCKETS == kLatencyBuckets);
static_assert(std::is_trivially_copyable_v<kvtier_stats> &&
              std::is_trivially_copyable_v<kvtier_namespace_stats> &&
              std::is_trivially_copyable_v<kvtier_remote_node_stats>);
static_assert(sizeof(kvtier_stats) % 8 == 0 && sizeof(kvtier_namespace_stats) % 8 == 0 &&
              sizeof(kvtier_remote_node_stats) % 8 == 0);

constexpr CStatField kFields[] = {
    {StatGroup::kInfo, "block_bytes", offsetof(kvtier_stats, block_bytes)},

    {StatGroup::kTier, "capacity_blocks", offsetof(kvtier_tier_stats, capacity_blocks)},
    {StatGroup::kTier, "used_blocks", offsetof(kvtier_tier_stats, used_blocks)},
    {StatGroup::kTier, "pinned_blocks", offsetof(kvtier_tier_stats, pinned_blocks)},
    {StatGroup::kTier, "hits", offsetof(kvtier_tier_stats, hits)},
    {StatGroup::kTier, "misses", offsetof(kvtier_tier_stats, misses)},
    {StatGroup::kTier, "bytes_in", offsetof(kvtier_tier_stats, bytes_in)},
    {StatGroup::kTier, "bytes_out", offsetof(kvtier_tier_stats, bytes_out)},
    {StatGroup::kTier, "evictions", offsetof(kvtier_tier_stats, evictions)},
    {StatGroup::kTier, "demotions", offsetof(kvtier_tier_stats, demotions)},
    {StatGroup::kTier, "promotions", offsetof(kvtier_tier_stats, promotions)},
    {StatGroup::kTier, "admissions_rejected", offsetof(kvtier_tier_stats, admissions_rejected)},
    {StatGroup::kTier, "checksum_failures", offsetof(kvtier_tier_stats, checksum_failures)},
    {StatGroup::kTier, "write_failures", offsetof(kvtier_tier_stats, write_failures)},
    {StatGroup::kTier, "read_bytes_per_s", offsetof(kvtier_stats, tier_read_bytes_per_s), true},
    {StatGroup::kTier, "read_latency_ns", offsetof(kvtier_stats, tier_read_latency_ns), true},
    {StatGroup::kTier, "read_samples", offsetof(kvtier_stats, tier_read_samples), true},

    {StatGroup::kNamespace, "blocks", offsetof(kvtier_namespace_stats, blocks)},
    {StatGroup::kNamespaceTier, "blocks_per_tier",
     offsetof(kvtier_namespace_stats, blocks_per_tier)},
    {StatGroup::kNamespace, "matched_blocks", offsetof(kvtier_namespace_stats, matched_blocks)},
    {StatGroup::kNamespace, "missed_blocks", offsetof(kvtier_namespace_stats, missed_blocks)},
    {StatGroup::kNamespace, "stored_blocks", offsetof(kvtier_namespace_stats, stored_blocks)},
    {StatGroup::kNamespace, "loaded_blocks", offsetof(kvtier_namespace_stats, loaded_blocks)},
    {StatGroup::kNamespaceTier, "hits_per_tier", offsetof(kvtier_namespace_stats, hits_per_tier)},
    {StatGroup::kNamespaceTier, "misses_per_tier",
     offsetof(kvtier_namespace_stats, misses_per_tier)},
    {StatGroup::kNamespace, "stall_ns", offsetof(kvtier_namespace_stats, stall_ns)},
    {StatGroup::kNamespace, "stalled_waits", offsetof(kvtier_namespace_stats, stalled_waits)},
    {StatGroup::kNamespaceTier, "quota_blocks", offsetof(kvtier_namespace_stats, quota_blocks)},
    {StatGroup::kNamespace, "quota_evictions", offsetof(kvtier_namespace_stats, quota_evictions)},
    {StatGroup::kNamespace, "quota_rejections", offsetof(kvtier_namespace_stats, quota_rejections)},
    {StatGroup::kNamespace, "expired_blocks", offsetof(kvtier_namespace_stats, expired_blocks)},

    {StatGroup::kEngine, "match_calls", offsetof(kvtier_stats, match_calls)},
    {StatGroup::kEngine, "matched_blocks", offsetof(kvtier_stats, matched_blocks)},
    {StatGroup::kEngine, "missed_blocks", offsetof(kvtier_stats, missed_blocks)},
    {StatGroup::kEngine, "stored_blocks", offsetof(kvtier_stats, stored_blocks)},
    {StatGroup::kEngine, "deduplicated_blocks", offsetof(kvtier_stats, deduplicated_blocks)},
    {StatGroup::kEngine, "rejected_blocks", offsetof(kvtier_stats, rejected_blocks)},
    {StatGroup::kEngine, "loaded_blocks", offsetof(kvtier_stats, loaded_blocks)},
    {StatGroup::kEngine, "leases_held", offsetof(kvtier_stats, leases_held)},
    {StatGroup::kEngine, "leases_expired", offsetof(kvtier_stats, leases_expired)},
    {StatGroup::kEngine, "blocks_abandoned", offsetof(kvtier_stats, blocks_abandoned)},
    {StatGroup::kEngine, "stall_ns", offsetof(kvtier_stats, stall_ns)},
    {StatGroup::kEngine, "stalled_waits", offsetof(kvtier_stats, stalled_waits)},

    {StatGroup::kPrefetch, "hinted", offsetof(kvtier_stats, prefetch_hinted)},
    {StatGroup::kPrefetch, "issued", offsetof(kvtier_stats, prefetch_issued)},
    {StatGroup::kPrefetch, "present", offsetof(kvtier_stats, prefetch_present)},
    {StatGroup::kPrefetch, "skipped", offsetof(kvtier_stats, prefetch_skipped)},
    {StatGroup::kPrefetch, "cancelled", offsetof(kvtier_stats, prefetch_cancelled)},
    {StatGroup::kPrefetch, "in_time", offsetof(kvtier_stats, prefetch_in_time)},
    {StatGroup::kPrefetch, "late", offsetof(kvtier_stats, prefetch_late)},
    {StatGroup::kPrefetch, "unused", offsetof(kvtier_stats, prefetch_unused)},
    {StatGroup::kPrefetch, "queued", offsetof(kvtier_stats, prefetch_queued)},
    {StatGroup::kPrefetch, "outstanding_bytes", offsetof(kvtier_stats, prefetch_outstanding_bytes)},
    {StatGroup::kPrefetch, "budget_bytes", offsetof(kvtier_stats, prefetch_budget_bytes)},

    {StatGroup::kLatency, "match_latency", offsetof(kvtier_stats, match_latency)},
    {StatGroup::kLatency, "store_latency", offsetof(kvtier_stats, store_latency)},
    {StatGroup::kLatency, "load_latency", offsetof(kvtier_stats, load_latency)},

#define KVTIER_C_REMOTE(field) \
  { StatGroup::kRemote, #field, offsetof(kvtier_stats, remote_##field) }
    KVTIER_C_REMOTE(enabled),
    KVTIER_C_REMOTE(lookups),
    KVTIER_C_REMOTE(lookup_hits),
    KVTIER_C_REMOTE(lookup_errors),
    KVTIER_C_REMOTE(reads),
    KVTIER_C_REMOTE(read_hits),
    KVTIER_C_REMOTE(read_misses),
    KVTIER_C_REMOTE(read_errors),
    KVTIER_C_REMOTE(read_corrupt),
    KVTIER_C_REMOTE(read_wrong_block),
    KVTIER_C_REMOTE(read_bad_mac),
    KVTIER_C_REMOTE(writes),
    KVTIER_C_REMOTE(writes_failed),
    KVTIER_C_REMOTE(writes_dropped),
    KVTIER_C_REMOTE(writes_rejected),
    KVTIER_C_REMOTE(writes_skipped_replica),
    KVTIER_C_REMOTE(bytes_written),
    KVTIER_C_REMOTE(bytes_read),
    KVTIER_C_REMOTE(erased_keys),
    KVTIER_C_REMOTE(slot_map_refreshes),
    KVTIER_C_REMOTE(errors_connect),
    KVTIER_C_REMOTE(errors_timeout),
    KVTIER_C_REMOTE(errors_cluster_down),
    KVTIER_C_REMOTE(errors_no_perm),
    KVTIER_C_REMOTE(errors_breaker_open),
    KVTIER_C_REMOTE(errors_protocol),
    KVTIER_C_REMOTE(redirects),
    KVTIER_C_REMOTE(get_latency),
    KVTIER_C_REMOTE(set_latency),
#undef KVTIER_C_REMOTE

    {StatGroup::kRemoteNode, "master", offsetof(kvtier_remote_node_stats, master)},
    {StatGroup::kRemoteNode, "connected", offsetof(kvtier_remote_node_stats, connected)},
    {StatGroup::kRemoteNode, "breaker_open", offsetof(kvtier_remote_node_stats, breaker_open)},
    {StatGroup::kRemoteNode, "slots", offsetof(kvtier_remote_node_stats, slots)},
    {StatGroup::kRemoteNode, "ops", offsetof(kvtier_remote_node_stats, ops)},
    {StatGroup::kRemoteNode, "errors", offsetof(kvtier_remote_node_stats, errors)},
};

void Put(void* base, size_t offset, uint64_t value) {
  std::memcpy(static_cast<char*>(base) + offset, &value, sizeof(value));
}

// Writes the statistics of one C struct: kvtier_stats, or the kvtier_namespace_stats of
// namespace `index`, or the kvtier_remote_node_stats of remote node `index`.
class CStatsWriter : public StatsVisitor {
 public:
  CStatsWriter(void* out, CStruct target, size_t index)
      : out_(out), target_(target), index_(index) {}

  void Number(const StatInfo& info, const StatLabels& labels, uint64_t value) override {
    if (CStructOf(info.group) != target_) return;
    if (target_ == CStruct::kNamespace && labels.ns_index != index_) return;
    if (target_ == CStruct::kRemoteNode && labels.node_index != index_) return;
    const CStatField* f = FindCStatField(info);
    if (f == nullptr) return;
    const size_t tier = static_cast<size_t>(labels.tier);
    switch (info.group) {
      case StatGroup::kTier:
        if (f->tier_array) {
          Put(out_, f->offset + tier * sizeof(uint64_t), value);
        } else {
          Put(out_, offsetof(kvtier_stats, tiers) + tier * sizeof(kvtier_tier_stats) + f->offset,
              value);
        }
        break;
      case StatGroup::kNamespaceTier:
        Put(out_, f->offset + tier * sizeof(uint64_t), value);
        break;
      default:
        Put(out_, f->offset, value);
        break;
    }
  }
  void Histogram(const StatInfo& info, const StatLabels&, const LatencyStats& l) override {
    if (CStructOf(info.group) != target_) return;
    const CStatField* f = FindCStatField(info);
    if (f == nullptr) return;
    kvtier_latency_stats c;
    c.count = l.count;
    c.sum_ns = l.sum_ns;
    for (int i = 0; i < kLatencyBuckets; ++i) c.buckets[i] = l.buckets[i];
    std::memcpy(static_cast<char*>(out_) + f->offset, &c, sizeof(c));
  }
  void Label(const StatInfo&, absl::string_view) override {}  // no strings in the C structs

 private:
  void* const out_;
  const CStruct target_;
  const size_t index_;
};

}  // namespace

CStruct CStructOf(StatGroup group) {
  switch (group) {
    case StatGroup::kNamespace:
    case StatGroup::kNamespaceTier:
      return CStruct::kNamespace;
    case StatGroup::kRemoteNode:
      return CStruct::kRemoteNode;
    case StatGroup::kInfo:
    case StatGroup::kEngine:
    case StatGroup::kPrefetch:
    case StatGroup::kLatency:
    case StatGroup::kTier:
    case StatGroup::kRemote:
      break;
  }
  return CStruct::kStats;
}

absl::Span<const CStatField> CStatFields() { return kFields; }

const CStatField* FindCStatField(const StatInfo& info) {
  for (const CStatField& f : kFields) {
    if (f.group == info.group && f.name == info.name) return &f;
  }
  return nullptr;
}

void FillStats(const EngineStats& stats, kvtier_stats* out) {
  std::memset(out, 0, sizeof(*out));
  CStatsWriter w(out, CStruct::kStats, 0);
  VisitStats(stats, w);
  out->struct_size = sizeof(*out);
  out->namespaces = stats.namespaces.size();
  out->remote_nodes = stats.remote.nodes.size();
}

void FillNamespaceStats(const EngineStats& stats, size_t ns_index, kvtier_namespace_stats* out) {
  std::memset(out, 0, sizeof(*out));
  CStatsWriter w(out, CStruct::kNamespace, ns_index);
  VisitStats(stats, w);
  out->struct_size = sizeof(*out);
}

void FillRemoteNodeStats(const EngineStats& stats, size_t node_index,
                         kvtier_remote_node_stats* out) {
  std::memset(out, 0, sizeof(*out));
  CStatsWriter w(out, CStruct::kRemoteNode, node_index);
  VisitStats(stats, w);
  out->struct_size = sizeof(*out);
  // The node's label: truncated to fit, always NUL-terminated (the memset above).
  const std::string& address = stats.remote.nodes[node_index].address;
  std::memcpy(out->address, address.data(), std::min(address.size(), sizeof(out->address) - 1));
}

absl::Status CheckStructSize(uint64_t struct_size, size_t min_size, absl::string_view what,
                             absl::string_view struct_name) {
  if (struct_size < min_size || struct_size > KVTIER_STATS_MAX_SIZE || struct_size % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s = %d is not the size of any version of %s (a multiple of 8 from %d to %d); set it "
        "to sizeof(%s). A program built against a kvtier/c_api.h before C API version 4 (three "
        "tiers) must be rebuilt",
        what, struct_size, struct_name, min_size, KVTIER_STATS_MAX_SIZE, struct_name));
  }
  return absl::OkStatus();
}

void CopyOut(const void* full, size_t full_size, void* out) {
  uint64_t want;
  std::memcpy(&want, out, sizeof(want));
  const uint64_t n = want < full_size ? want : full_size;
  std::memcpy(out, full, n);
  std::memset(static_cast<char*>(out) + n, 0, want - n);
  std::memcpy(out, &n, sizeof(n));
}

}  // namespace kvtier::capi
