// The description of every statistic (kvtier/stats.h): it covers every field of the stats
// structs, its names are consistent, VisitStats reads each statistic from its own field, and
// the metrics endpoint's two formats (engine/metrics.h) show every statistic with its value.
// (The C API structs: tests/capi/stats_fill_test.cc; the CLI: tests/tools/; Python:
// bindings/python/tests/test_stats.py.)

#include <cstddef>
#include <iterator>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/metrics.h"
#include "gtest/gtest.h"
#include "kvtier/stats.h"
#include "nlohmann/json.hpp"
#include "tests/engine/stats_test_util.h"

namespace kvtier {
namespace {

using ::kvtier::testing::CollectStats;
using ::kvtier::testing::Describe;
using ::kvtier::testing::DistinctStats;
using ::kvtier::testing::StatValue;

// The number of members of aggregate T: the most initializers `T{...}` accepts, each
// convertible to anything. (A C array member counts one per element, by brace elision.)
struct AnyField {
  template <typename T>
  operator T() const;  // NOLINT: implicit by design; never defined, only used unevaluated
};
template <typename T, typename... Fields>
constexpr size_t FieldCount() {
  if constexpr (requires { T{Fields{}..., AnyField{}}; }) {
    return FieldCount<T, Fields..., AnyField>();
  } else {
    return sizeof...(Fields);
  }
}

// Statistics in AllStats() that are fields (not derived) of the groups given.
size_t DescribedFields(std::initializer_list<StatGroup> groups) {
  size_t n = 0;
  for (const StatInfo& info : AllStats()) {
    if (info.derived) continue;
    for (StatGroup g : groups) n += info.group == g ? 1 : 0;
  }
  return n;
}

// A field added to a stats struct must be described in engine/stats.cc's table (and, for the
// structs filled by name, set in tests/engine/stats_test_util.h's DistinctStats).
TEST(StatsSchema, DescribesEveryFieldOfEveryStatsStruct) {
  EXPECT_EQ(DescribedFields({StatGroup::kTier}), FieldCount<TierStats>())
      << "a field of TierStats has no line in engine/stats.cc (or a line names no field)";
  EXPECT_EQ(DescribedFields({StatGroup::kPrefetch}), FieldCount<PrefetchStats>())
      << "a field of PrefetchStats has no line in engine/stats.cc";
  // NamespaceStats::name is the namespace label, not a statistic.
  EXPECT_EQ(DescribedFields({StatGroup::kNamespace, StatGroup::kNamespaceTier}) + 1,
            FieldCount<NamespaceStats>())
      << "a field of NamespaceStats has no line in engine/stats.cc";
  // EngineStats::prefetch, tiers, namespaces and remote hold the groups above and below.
  EXPECT_EQ(DescribedFields({StatGroup::kInfo, StatGroup::kEngine, StatGroup::kLatency}) + 4,
            FieldCount<EngineStats>())
      << "a field of EngineStats has no line in engine/stats.cc";
  // RemoteStats::nodes holds the node group; RemoteNodeStats::address is the node label.
  EXPECT_EQ(DescribedFields({StatGroup::kRemote}) + 1, FieldCount<RemoteStats>())
      << "a field of RemoteStats has no line in engine/stats.cc";
  EXPECT_EQ(DescribedFields({StatGroup::kRemoteNode}) + 1, FieldCount<RemoteNodeStats>())
      << "a field of RemoteNodeStats has no line in engine/stats.cc";
  // A histogram is visited as a whole LatencyStats: a field added to it must be written by
  // every StatsVisitor::Histogram (engine/metrics.cc, the Python module, the C API).
  EXPECT_EQ(FieldCount<LatencyStats>(), 2u + kLatencyBuckets)
      << "LatencyStats changed: update every StatsVisitor::Histogram";
}

TEST(StatsSchema, NamesAreUniqueAndMetricsFollowPrometheusConventions) {
  std::set<std::pair<StatGroup, std::string>> names;
  std::set<std::string> metrics;
  for (const StatInfo& info : AllStats()) {
    const std::string metric(info.metric);
    SCOPED_TRACE(metric);
    EXPECT_TRUE(names.insert({info.group, std::string(info.name)}).second) << info.name;
    EXPECT_TRUE(metrics.insert(metric).second);
    EXPECT_TRUE(absl::StartsWith(metric, "kvtier_"));
    for (char c : metric) EXPECT_TRUE(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_');
    EXPECT_FALSE(info.help.empty());
    EXPECT_EQ(info.kind == StatKind::kCounter, absl::EndsWith(metric, "_total"));
    EXPECT_EQ(info.unit == StatUnit::kNanoseconds, absl::StrContains(metric, "_seconds"));
    // Histograms: the calls' latencies, and the remote tier's GET and SET.
    if (info.kind == StatKind::kHistogram) {
      EXPECT_TRUE(info.group == StatGroup::kLatency || info.group == StatGroup::kRemote);
    }
    if (info.group == StatGroup::kLatency) {
      EXPECT_EQ(info.kind, StatKind::kHistogram);
    }
    // Labels have no unit; unit-less numbers are the remote tier's flags (0 / 1) and counts.
    if (info.kind == StatKind::kLabel) {
      EXPECT_EQ(info.unit, StatUnit::kNone);
    } else if (info.unit == StatUnit::kNone) {
      EXPECT_TRUE(info.group == StatGroup::kRemote || info.group == StatGroup::kRemoteNode);
      EXPECT_EQ(info.kind, StatKind::kGauge);
    }
    if (info.kind == StatKind::kLabel) {
      EXPECT_EQ(info.group, StatGroup::kInfo);
    }
    EXPECT_STRNE(StatKindName(info.kind), "invalid");
    EXPECT_STRNE(StatUnitName(info.unit), "invalid");
    EXPECT_STRNE(StatGroupName(info.group), "invalid");
  }
}

TEST(StatsSchema, VisitsEveryStatisticOncePerLabelSetFromItsOwnField) {
  const EngineStats s = DistinctStats(/*num_namespaces=*/2, /*num_nodes=*/3);
  const std::vector<StatValue> values = CollectStats(s);

  // Per statistic: one value, one per tier, one per namespace, one per (namespace, tier) or
  // one per remote node, in AllStats() order with tiers inner.
  size_t expected = 0;
  for (const StatInfo& info : AllStats()) {
    expected += (HasNamespaceLabel(info.group) ? 2 : 1) *
                (HasTierLabel(info.group) ? kNumTiers : 1) * (HasNodeLabel(info.group) ? 3 : 1);
  }
  ASSERT_EQ(values.size(), expected);
  size_t i = 0;
  for (const StatInfo& info : AllStats()) {
    const size_t spaces = HasNamespaceLabel(info.group) ? 2 : HasNodeLabel(info.group) ? 3 : 1;
    const size_t tiers = HasTierLabel(info.group) ? kNumTiers : 1;
    for (size_t n = 0; n < spaces; ++n) {
      for (size_t t = 0; t < tiers; ++t, ++i) {
        SCOPED_TRACE(Describe(values[i]));
        EXPECT_EQ(values[i].info, &info);
        if (HasTierLabel(info.group)) {
          EXPECT_EQ(values[i].labels.tier, kAllTiers[t]);
        }
        if (HasNamespaceLabel(info.group)) {
          EXPECT_EQ(values[i].labels.ns_index, n);
          EXPECT_EQ(values[i].labels.ns, s.namespaces[n].name);
        }
        if (HasNodeLabel(info.group)) {
          EXPECT_EQ(values[i].labels.node_index, n);
          EXPECT_EQ(values[i].labels.node, s.remote.nodes[n].address);
        }
      }
    }
  }

  // Every figure of DistinctStats is different and non-zero: a value that is zero was not
  // read from any field (or DistinctStats does not set the field); two equal values were read
  // from the same field.
  std::set<uint64_t> seen;
  for (const StatValue& v : values) {
    SCOPED_TRACE(Describe(v));
    if (v.info->kind == StatKind::kLabel) {
      EXPECT_EQ(v.label, s.device);
    } else if (v.info->kind == StatKind::kHistogram) {
      EXPECT_NE(v.histogram.count, 0u);
      EXPECT_TRUE(seen.insert(v.histogram.count).second);
      EXPECT_TRUE(seen.insert(v.histogram.sum_ns).second);
    } else if (v.info->derived) {
      EXPECT_EQ(v.number, s.tiers[v.labels.tier].used_blocks * s.block_bytes);  // used_bytes
    } else {
      EXPECT_NE(v.number, 0u);
      EXPECT_TRUE(seen.insert(v.number).second) << v.number;
    }
  }
  // Spot checks that names are the fields they read.
  for (const StatValue& v : values) {
    if (v.info->name == "checksum_failures") {
      EXPECT_EQ(v.number, s.tiers[v.labels.tier].checksum_failures);
    }
    if (v.info->name == "in_time") {
      EXPECT_EQ(v.number, s.prefetch.in_time);
    }
    if (v.info->name == "quota_blocks") {
      EXPECT_EQ(v.number, s.namespaces[v.labels.ns_index].quota_blocks[v.labels.tier]);
    }
    if (v.info->name == "load_latency") {
      EXPECT_EQ(v.histogram.count, s.load_latency.count);
    }
    if (v.info->group == StatGroup::kRemote && v.info->name == "read_bad_mac") {
      EXPECT_EQ(v.number, s.remote.read_bad_mac);
    }
    if (v.info->name == "set_latency") {
      EXPECT_EQ(v.histogram.count, s.remote.set_latency.count);
    }
    if (v.info->group == StatGroup::kRemoteNode && v.info->name == "ops") {
      EXPECT_EQ(v.number, s.remote.nodes[v.labels.node_index].ops);
    }
  }
}

TEST(StatsSchema, NoNamespacesStillDeclaresTheNamespaceStatistics) {
  class Begins : public StatsVisitor {
   public:
    void BeginStat(const StatInfo&) override { ++begun; }
    void Number(const StatInfo& info, const StatLabels&, uint64_t) override {
      EXPECT_FALSE(HasNamespaceLabel(info.group)) << info.name;
    }
    void Histogram(const StatInfo&, const StatLabels&, const LatencyStats&) override {}
    void Label(const StatInfo&, absl::string_view) override {}
    size_t begun = 0;
  } v;
  VisitStats(EngineStats{}, v);
  EXPECT_EQ(v.begun, AllStats().size());
}

// The sample line for `metric` with exactly `labels`, or "" if there is none.
std::string PromSample(const std::string& text, const std::string& metric,
                       const std::string& labels) {
  const std::string head = labels.empty() ? metric + " " : metric + "{" + labels + "} ";
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, head)) return std::string(line.substr(head.size()));
  }
  return "";
}

std::string PromLabels(const StatValue& v) {
  std::string out;
  if (HasNamespaceLabel(v.info->group)) out = absl::StrCat("namespace=\"", v.labels.ns, "\"");
  if (HasTierLabel(v.info->group)) {
    absl::StrAppend(&out, out.empty() ? "" : ",", "tier=\"", TierKindName(v.labels.tier), "\"");
  }
  if (HasNodeLabel(v.info->group)) out = absl::StrCat("node=\"", v.labels.node, "\"");
  return out;
}

TEST(StatsSchema, PrometheusTextShowsEveryStatisticWithItsValue) {
  const EngineStats s = DistinctStats();
  const std::string text = FormatPrometheus(s, s.block_bytes);
  for (const StatInfo& info : AllStats()) {
    const std::string metric(info.metric);
    const char* type = info.kind == StatKind::kCounter     ? "counter"
                       : info.kind == StatKind::kHistogram ? "histogram"
                                                           : "gauge";
    EXPECT_TRUE(absl::StrContains(text, absl::StrCat("# TYPE ", metric, " ", type, "\n")))
        << metric;
    EXPECT_TRUE(absl::StrContains(text, absl::StrCat("# HELP ", metric, " ", info.help, "\n")))
        << metric;
  }
  for (const StatValue& v : CollectStats(s)) {
    SCOPED_TRACE(Describe(v));
    const std::string metric(v.info->metric);
    switch (v.info->kind) {
      case StatKind::kLabel:
        EXPECT_EQ(PromSample(text, metric, absl::StrCat(v.info->name, "=\"", v.label, "\"")), "1");
        break;
      case StatKind::kHistogram:
        EXPECT_EQ(PromSample(text, metric + "_count", ""), absl::StrCat(v.histogram.count));
        EXPECT_EQ(PromSample(text, metric + "_bucket", "le=\"+Inf\""),
                  absl::StrCat(std::accumulate(std::begin(v.histogram.buckets),
                                               std::end(v.histogram.buckets), uint64_t{0})));
        EXPECT_NE(PromSample(text, metric + "_sum", ""), "");
        break;
      case StatKind::kCounter:
      case StatKind::kGauge: {
        const std::string sample = PromSample(text, metric, PromLabels(v));
        if (v.info->unit == StatUnit::kNanoseconds) {
          double seconds = 0;
          ASSERT_TRUE(absl::SimpleAtod(sample, &seconds)) << sample;
          EXPECT_DOUBLE_EQ(seconds, static_cast<double>(v.number) * 1e-9);
        } else {
          EXPECT_EQ(sample, absl::StrCat(v.number));
        }
        break;
      }
    }
  }
}

TEST(StatsSchema, StatsJsonShowsEveryStatisticWhereStatsJsonPointerSays) {
  const EngineStats s = DistinctStats();
  const nlohmann::json j = nlohmann::json::parse(FormatStatsJson(s, s.block_bytes));
  for (const StatValue& v : CollectStats(s)) {
    SCOPED_TRACE(Describe(v));
    const std::string pointer = StatsJsonPointer(*v.info, v.labels);
    ASSERT_TRUE(j.contains(nlohmann::json::json_pointer(pointer))) << pointer;
    const nlohmann::json& got = j.at(nlohmann::json::json_pointer(pointer));
    switch (v.info->kind) {
      case StatKind::kLabel:
        EXPECT_EQ(got, v.label);
        break;
      case StatKind::kHistogram:
        EXPECT_EQ(got.at("count"), v.histogram.count);
        EXPECT_EQ(got.at("sum_ns"), v.histogram.sum_ns);
        EXPECT_EQ(
            got.at("buckets_le_us").get<std::vector<uint64_t>>(),
            std::vector<uint64_t>(std::begin(v.histogram.buckets), std::end(v.histogram.buckets)));
        break;
      case StatKind::kCounter:
      case StatKind::kGauge:
        EXPECT_EQ(got, v.number);
        break;
    }
  }
  // The labels of each array element.
  EXPECT_EQ(j.at("/tiers/2/tier"_json_pointer), "disk");
  EXPECT_EQ(j.at("/tiers/3/tier"_json_pointer), "remote");
  EXPECT_EQ(j.at("/remote/nodes/1/address"_json_pointer), s.remote.nodes[1].address);
  EXPECT_EQ(j.at("/namespaces/1/name"_json_pointer), "tenant-1");
}

// The keys the /stats JSON has always had stay where they were (tools, docs and the CLI
// tests read them).
TEST(StatsSchema, StatsJsonKeepsItsKeys) {
  const EngineStats s = DistinctStats(1);
  const nlohmann::json j = nlohmann::json::parse(FormatStatsJson(s, 8192));
  for (const char* p :
       {"/device", "/block_bytes", "/tiers/1/used_bytes", "/tiers/0/misses",
        "/namespaces/0/blocks_per_tier/host", "/namespaces/0/stall_ns", "/engine/match_calls",
        "/engine/stall_ns", "/engine/stalled_waits", "/engine/prefetch_useful",
        "/engine/prefetch_outstanding_bytes", "/latency/load/buckets_le_us"}) {
    EXPECT_TRUE(j.contains(nlohmann::json::json_pointer(p))) << p;
  }
  EXPECT_EQ(j.at("/block_bytes"_json_pointer), 8192);
  EXPECT_EQ(j.at("/tiers/1/used_bytes"_json_pointer), s.tiers[TierKind::kHost].used_blocks * 8192);
}

TEST(StatsSchema, NamesSurviveEscapingInBothFormats) {
  EngineStats s;
  s.device = "dev \"quoted\" \\ and\nnewline";
  const std::string prom = FormatPrometheus(s, 1);
  EXPECT_TRUE(absl::StrContains(
      prom, "kvtier_engine_info{device=\"dev \\\"quoted\\\" \\\\ and\\nnewline\"} 1\n"))
      << prom;
  const nlohmann::json j = nlohmann::json::parse(FormatStatsJson(s, 1));
  EXPECT_EQ(j.at("device"), s.device);
  EXPECT_EQ(j.at("namespaces"), nlohmann::json::array());
}

}  // namespace
}  // namespace kvtier
