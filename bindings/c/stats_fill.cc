#include "stats_fill.h"  // bindings/c/stats_fill.h

#include <cstring>
#include <type_traits>

#include "absl/strings/str_format.h"

namespace kvtier::capi {
namespace {

static_assert(KVTIER_NUM_TIERS == kNumTiers);
static_assert(KVTIER_LATENCY_BUCKETS == kLatencyBuckets);
static_assert(std::is_trivially_copyable_v<kvtier_stats> &&
              std::is_trivially_copyable_v<kvtier_namespace_stats>);

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
};

void Put(void* base, size_t offset, uint64_t value) {
  std::memcpy(static_cast<char*>(base) + offset, &value, sizeof(value));
}

// Writes the statistics of one C struct: kvtier_stats (`ns_index` unset) or the
// kvtier_namespace_stats of namespace `ns_index`.
class CStatsWriter : public StatsVisitor {
 public:
  CStatsWriter(void* out, bool namespace_struct, size_t ns_index)
      : out_(out), namespace_struct_(namespace_struct), ns_index_(ns_index) {}

  void Number(const StatInfo& info, const StatLabels& labels, uint64_t value) override {
    if (HasNamespaceLabel(info.group) != namespace_struct_) return;
    if (namespace_struct_ && labels.ns_index != ns_index_) return;
    const CStatField* f = FindCStatField(info);
    if (f == nullptr) return;
    const size_t tier = static_cast<size_t>(labels.tier);
    switch (info.group) {
      case StatGroup::kTier:
        Put(out_, offsetof(kvtier_stats, tiers) + tier * sizeof(kvtier_tier_stats) + f->offset,
            value);
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
    if (namespace_struct_) return;
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
  const bool namespace_struct_;
  const size_t ns_index_;
};

}  // namespace

absl::Span<const CStatField> CStatFields() { return kFields; }

const CStatField* FindCStatField(const StatInfo& info) {
  for (const CStatField& f : kFields) {
    if (f.group == info.group && f.name == info.name) return &f;
  }
  return nullptr;
}

void FillStats(const EngineStats& stats, kvtier_stats* out) {
  std::memset(out, 0, sizeof(*out));
  CStatsWriter w(out, /*namespace_struct=*/false, 0);
  VisitStats(stats, w);
  out->struct_size = sizeof(*out);
  out->namespaces = stats.namespaces.size();
}

void FillNamespaceStats(const EngineStats& stats, size_t ns_index, kvtier_namespace_stats* out) {
  std::memset(out, 0, sizeof(*out));
  CStatsWriter w(out, /*namespace_struct=*/true, ns_index);
  VisitStats(stats, w);
  out->struct_size = sizeof(*out);
}

absl::Status CheckStructSize(uint64_t struct_size, size_t v1_size, absl::string_view what,
                             absl::string_view struct_name) {
  if (struct_size < v1_size || struct_size > KVTIER_STATS_MAX_SIZE || struct_size % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s = %d is not the size of any version of %s (a multiple of 8 from %d to %d); set it "
        "to sizeof(%s)",
        what, struct_size, struct_name, v1_size, KVTIER_STATS_MAX_SIZE, struct_name));
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
