// `kvtier stats` and `kvtier top` (tools/cli/http_commands.h) show a row for every statistic
// the schema describes (kvtier/stats.h), with its value, read from the /stats JSON the
// engine's metrics endpoint serves (engine/metrics.h).

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/json.h"
#include "engine/metrics.h"
#include "gtest/gtest.h"
#include "kvtier/stats.h"
#include "tests/engine/stats_test_util.h"
#include "tools/cli/http_commands.h"

namespace kvtier::cli {
namespace {

using ::kvtier::testing::CollectStats;
using ::kvtier::testing::Describe;
using ::kvtier::testing::DistinctStats;
using ::kvtier::testing::StatValue;

nlohmann::ordered_json StatsJson(const EngineStats& s) {
  absl::StatusOr<nlohmann::ordered_json> j = json::Parse(FormatStatsJson(s, s.block_bytes));
  EXPECT_TRUE(j.ok()) << j.status();
  return j.ok() ? *j : nlohmann::ordered_json();
}

// The cells of a row, label first.
std::vector<std::string> Cells(absl::string_view row) {
  std::vector<std::string> out;
  for (absl::string_view c : absl::StrSplit(row, "  ", absl::SkipWhitespace())) {
    out.emplace_back(absl::StripAsciiWhitespace(c));
  }
  return out;
}

// The line of the table titled `table` (its header's first cell) whose row label is `label`,
// or "". Tables are separated by blank lines.
std::string Row(const std::string& text, absl::string_view table, const std::string& label) {
  for (absl::string_view block : absl::StrSplit(text, "\n\n")) {
    const std::vector<absl::string_view> lines = absl::StrSplit(block, '\n');
    if (lines.empty() || Cells(lines[0]).empty() || Cells(lines[0])[0] != table) continue;
    for (absl::string_view line : lines) {
      if (absl::StartsWith(line, label + "  ") || line == label) return std::string(line);
    }
  }
  return "";
}

// The title of the table a statistic is in.
absl::string_view Table(const StatInfo& info, bool top) {
  switch (info.group) {
    case StatGroup::kInfo:
      return "engine";
    case StatGroup::kTier:
      return "tier";
    case StatGroup::kNamespace:
    case StatGroup::kNamespaceTier:
      return "namespace";
    case StatGroup::kEngine:
      return "engine-wide";
    case StatGroup::kPrefetch:
      return "prefetch";
    case StatGroup::kLatency:
      return top ? "latency (interval)" : "latency (time in the call)";
    case StatGroup::kRemote:
      if (info.kind != StatKind::kHistogram) return "remote";
      return top ? "remote latency (interval)" : "remote latency";
    case StatGroup::kRemoteNode:
      return "remote node";
  }
  return "";
}

// The row label of a value: the statistic's name, and its tier for a namespace's per-tier
// figure (tiers and namespaces are columns).
std::string RowLabel(const StatValue& v) {
  if (v.info->group == StatGroup::kNamespaceTier) {
    return absl::StrCat(v.info->name, " ", TierKindName(v.labels.tier));
  }
  return std::string(v.info->name);
}

// The column of a value in its table: 1 + its tier, namespace or node index.
size_t Column(const StatValue& v) {
  if (HasNamespaceLabel(v.info->group)) return 1 + v.labels.ns_index;
  if (HasNodeLabel(v.info->group)) return 1 + v.labels.node_index;
  if (HasTierLabel(v.info->group)) return 1 + static_cast<size_t>(v.labels.tier);
  return 1;
}

TEST(KvtierStatsOutput, StatsShowsEveryStatisticWithItsValue) {
  const EngineStats s = DistinctStats(/*num_namespaces=*/2);
  const std::string text = FormatStats(StatsJson(s));
  for (const StatValue& v : CollectStats(s)) {
    SCOPED_TRACE(Describe(v));
    const std::string row = Row(text, Table(*v.info, /*top=*/false), RowLabel(v));
    ASSERT_NE(row, "") << text;
    const std::vector<std::string> cells = Cells(row);
    switch (v.info->kind) {
      case StatKind::kLabel:
        EXPECT_EQ(row.substr(row.size() - v.label.size()), v.label);
        break;
      case StatKind::kHistogram:
        ASSERT_GE(cells.size(), 2u) << row;
        EXPECT_EQ(cells[1], absl::StrCat(v.histogram.count)) << row;
        break;
      case StatKind::kCounter:
      case StatKind::kGauge:
        ASSERT_GT(cells.size(), Column(v)) << row;
        if (v.info->unit == StatUnit::kBytes || v.info->unit == StatUnit::kNanoseconds ||
            v.info->unit == StatUnit::kBytesPerSecond) {
          EXPECT_FALSE(cells[Column(v)].empty()) << row;  // "1.0 KiB", "0.000 s"
        } else {
          EXPECT_EQ(cells[Column(v)], absl::StrCat(v.number)) << row;
        }
        break;
    }
  }
  // The columns are the tiers and the namespaces, by name.
  EXPECT_TRUE(absl::StrContains(text, "tenant-1")) << text;
  EXPECT_EQ(Cells(Row(text, "tier", "tier")),
            (std::vector<std::string>{"tier", "gpu", "host", "disk", "remote"}));
  // The remote tier's nodes are the columns of their table, by address.
  EXPECT_EQ(Cells(Row(text, "remote node", "remote node")),
            (std::vector<std::string>{"remote node", s.remote.nodes[0].address,
                                      s.remote.nodes[1].address}));
}

TEST(KvtierStatsOutput, AnEngineWithoutARemoteTierSaysSoInsteadOfZeros) {
  EngineStats s = DistinctStats(/*num_namespaces=*/1, /*num_nodes=*/0);
  s.remote = RemoteStats{};
  for (const std::string& text :
       {FormatStats(StatsJson(s)), FormatTopFrame(StatsJson(s), StatsJson(s), 1.0, "URL")}) {
    EXPECT_TRUE(absl::StrContains(text, "remote tier: off")) << text;
    EXPECT_EQ(Row(text, "remote", "lookups"), "") << text;
    // Its column in the tier table stays.
    EXPECT_EQ(Cells(Row(text, "tier", "tier")).back(), "remote") << text;
  }
}

TEST(KvtierStatsOutput, TopShowsEveryStatisticCountersAsRates) {
  EngineStats before = DistinctStats(/*num_namespaces=*/2);
  EngineStats after = before;
  after.tiers[TierKind::kHost].hits += 50;  // 25/s over 2 s
  after.namespaces[1].stored_blocks += 10;  // 5/s
  after.prefetch.queued += 3;               // a gauge: shown as it is now
  const std::string text = FormatTopFrame(StatsJson(before), StatsJson(after), 2.0, "URL");
  for (const StatValue& v : CollectStats(after)) {
    SCOPED_TRACE(Describe(v));
    ASSERT_NE(Row(text, Table(*v.info, /*top=*/true), RowLabel(v)), "") << text;
  }
  EXPECT_EQ(Cells(Row(text, "tier", "hits"))[2], "25.0/s") << text;
  EXPECT_EQ(Cells(Row(text, "tier", "hits"))[1], "0.0/s") << text;
  EXPECT_EQ(Cells(Row(text, "namespace", "stored_blocks"))[2], "5.0/s") << text;
  EXPECT_EQ(Cells(Row(text, "prefetch", "queued"))[1], absl::StrCat(after.prefetch.queued)) << text;
  EXPECT_TRUE(absl::StrContains(text, "hit ratio")) << text;
  // A node found by address in the earlier snapshot although the list was reordered.
  EngineStats later = after;
  std::swap(later.remote.nodes[0], later.remote.nodes[1]);
  later.remote.nodes[0].ops += 20;  // node 1 of `before`: 10/s
  const std::string reordered = FormatTopFrame(StatsJson(before), StatsJson(later), 2.0, "URL");
  const std::vector<std::string> ops = Cells(Row(reordered, "remote node", "ops"));
  ASSERT_EQ(ops.size(), 3u) << reordered;
  EXPECT_EQ(ops[1], "10.0/s") << reordered;
  EXPECT_EQ(ops[2], "0.0/s") << reordered;
}

// An engine that predates a statistic: its row shows "-" instead of failing.
TEST(KvtierStatsOutput, AStatisticTheEngineDoesNotServeShowsAsADash) {
  nlohmann::ordered_json j = StatsJson(DistinctStats(1));
  j["tiers"][1].erase("checksum_failures");
  const std::vector<std::string> cells = Cells(Row(FormatStats(j), "tier", "checksum_failures"));
  ASSERT_EQ(cells.size(), 5u);
  EXPECT_EQ(cells[2], "-");
  EXPECT_NE(cells[1], "-");
}

}  // namespace
}  // namespace kvtier::cli
