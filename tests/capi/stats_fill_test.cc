// The C API's stats structs (bindings/c/stats_fill.h) against the description of every
// statistic: each statistic with a C field lands in it with its value, only the statistics
// listed here have none, and no C field is left unfilled.

#include "bindings/c/stats_fill.h"

#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kvtier/c_api.h"
#include "kvtier/stats.h"
#include "tests/engine/stats_test_util.h"

namespace kvtier::capi {
namespace {

using ::kvtier::testing::CollectStats;
using ::kvtier::testing::Describe;
using ::kvtier::testing::DistinctStats;
using ::kvtier::testing::StatValue;

// Statistics the C structs do not carry, and why: C has no strings (the device is
// kvtier_engine_device_kind), and used_bytes is used_blocks * block_bytes, both there.
const std::set<std::pair<StatGroup, std::string>> kNotInC = {
    {StatGroup::kInfo, "device"},
    {StatGroup::kTier, "used_bytes"},
};

uint64_t Word(const void* base, size_t offset) {
  uint64_t v;
  std::memcpy(&v, static_cast<const char*>(base) + offset, sizeof(v));
  return v;
}

TEST(CStats, EveryStatisticButTheListedOnesHasACField) {
  for (const StatInfo& info : AllStats()) {
    const bool listed = kNotInC.count({info.group, std::string(info.name)}) > 0;
    EXPECT_NE(FindCStatField(info) != nullptr, listed)
        << StatGroupName(info.group) << " " << info.name
        << (listed
                ? ": listed as not in C but has a field"
                : ": no field in kvtier_stats / kvtier_namespace_stats (bindings/c/stats_fill.cc)");
  }
  // And every table entry names a statistic.
  for (const CStatField& f : CStatFields()) {
    bool found = false;
    for (const StatInfo& info : AllStats()) found |= info.group == f.group && info.name == f.name;
    EXPECT_TRUE(found) << f.name;
  }
}

TEST(CStats, EachStatisticLandsInItsField) {
  const EngineStats s = DistinctStats(/*num_namespaces=*/2);
  kvtier_stats c;
  FillStats(s, &c);
  EXPECT_EQ(c.struct_size, sizeof(kvtier_stats));
  EXPECT_EQ(c.namespaces, 2u);
  EXPECT_EQ(c.remote_nodes, 2u);
  std::vector<kvtier_namespace_stats> ns(2);
  for (size_t i = 0; i < ns.size(); ++i) FillNamespaceStats(s, i, &ns[i]);
  std::vector<kvtier_remote_node_stats> nodes(2);
  for (size_t i = 0; i < nodes.size(); ++i) FillRemoteNodeStats(s, i, &nodes[i]);

  for (const StatValue& v : CollectStats(s)) {
    SCOPED_TRACE(Describe(v));
    const CStatField* f = FindCStatField(*v.info);
    if (f == nullptr) continue;
    const size_t tier = static_cast<size_t>(v.labels.tier);
    switch (v.info->group) {
      case StatGroup::kInfo:
      case StatGroup::kEngine:
      case StatGroup::kPrefetch:
        EXPECT_EQ(Word(&c, f->offset), v.number);
        break;
      case StatGroup::kRemote:
        if (v.info->kind == StatKind::kHistogram) {
          kvtier_latency_stats l;
          std::memcpy(&l, reinterpret_cast<const char*>(&c) + f->offset, sizeof(l));
          EXPECT_EQ(l.count, v.histogram.count);
          EXPECT_EQ(l.buckets[kLatencyBuckets - 1], v.histogram.buckets[kLatencyBuckets - 1]);
        } else {
          EXPECT_EQ(Word(&c, f->offset), v.number);
        }
        break;
      case StatGroup::kRemoteNode:
        EXPECT_EQ(Word(&nodes[v.labels.node_index], f->offset), v.number);
        break;
      case StatGroup::kLatency: {
        kvtier_latency_stats l;
        std::memcpy(&l, reinterpret_cast<const char*>(&c) + f->offset, sizeof(l));
        EXPECT_EQ(l.count, v.histogram.count);
        EXPECT_EQ(l.sum_ns, v.histogram.sum_ns);
        for (int i = 0; i < kLatencyBuckets; ++i) EXPECT_EQ(l.buckets[i], v.histogram.buckets[i]);
        break;
      }
      case StatGroup::kTier:
        if (f->tier_array) {
          EXPECT_EQ(Word(&c, f->offset + tier * sizeof(uint64_t)), v.number);
        } else {
          EXPECT_EQ(Word(&c.tiers[tier], f->offset), v.number);
        }
        break;
      case StatGroup::kNamespace:
        EXPECT_EQ(Word(&ns[v.labels.ns_index], f->offset), v.number);
        break;
      case StatGroup::kNamespaceTier:
        EXPECT_EQ(Word(&ns[v.labels.ns_index], f->offset + tier * sizeof(uint64_t)), v.number);
        break;
    }
  }

  // Every figure of DistinctStats is non-zero, so a zero word is a C field nothing filled.
  static_assert(sizeof(kvtier_stats) % 8 == 0 && sizeof(kvtier_namespace_stats) % 8 == 0);
  for (size_t off = 0; off < sizeof(kvtier_stats); off += 8) {
    EXPECT_NE(Word(&c, off), 0u) << "kvtier_stats byte " << off << " is never filled";
  }
  for (size_t off = 0; off < sizeof(kvtier_namespace_stats); off += 8) {
    EXPECT_NE(Word(&ns[1], off), 0u) << "kvtier_namespace_stats byte " << off << " is never filled";
  }
  for (size_t off = offsetof(kvtier_remote_node_stats, master);
       off < sizeof(kvtier_remote_node_stats); off += 8) {
    EXPECT_NE(Word(&nodes[1], off), 0u)
        << "kvtier_remote_node_stats byte " << off << " is never filled";
  }
  // Each node struct is its own node's, with its address.
  EXPECT_STREQ(nodes[0].address, s.remote.nodes[0].address.c_str());
  EXPECT_STREQ(nodes[1].address, s.remote.nodes[1].address.c_str());
  EXPECT_EQ(nodes[1].ops, s.remote.nodes[1].ops);
  EXPECT_EQ(c.remote_read_bad_mac, s.remote.read_bad_mac);
  EXPECT_EQ(c.tiers[KVTIER_TIER_REMOTE].hits, s.tiers[TierKind::kRemote].hits);
  // Namespace structs hold their own namespace's figures.
  EXPECT_EQ(ns[0].stored_blocks, s.namespaces[0].stored_blocks);
  EXPECT_EQ(ns[1].quota_blocks[KVTIER_TIER_DISK], s.namespaces[1].quota_blocks[TierKind::kDisk]);
}

TEST(CStats, StructSizeIsAVersionOfTheStruct) {
  EXPECT_TRUE(
      CheckStructSize(sizeof(kvtier_stats), KVTIER_STATS_SIZE_MIN, "s", "kvtier_stats").ok());
  EXPECT_TRUE(
      CheckStructSize(KVTIER_STATS_SIZE_MIN, KVTIER_STATS_SIZE_MIN, "s", "kvtier_stats").ok());
  EXPECT_TRUE(
      CheckStructSize(KVTIER_STATS_MAX_SIZE, KVTIER_STATS_SIZE_MIN, "s", "kvtier_stats").ok());
  for (uint64_t bad : {uint64_t{0}, uint64_t{KVTIER_STATS_SIZE_MIN - 8},
                       uint64_t{KVTIER_STATS_SIZE_MIN + 1}, uint64_t{KVTIER_STATS_MAX_SIZE + 8}}) {
    const absl::Status st =
        CheckStructSize(bad, KVTIER_STATS_SIZE_MIN, "out_stats->struct_size", "kvtier_stats");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("out_stats->struct_size"), std::string::npos) << st;
    EXPECT_NE(st.message().find("sizeof(kvtier_stats)"), std::string::npos) << st;
    EXPECT_NE(st.message().find("version 4"), std::string::npos) << st;
  }
  // The smallest sizes accepted are the version-4 layouts (four tiers) up to the remote
  // figures, and the structs grew after them.
  EXPECT_EQ(KVTIER_STATS_SIZE_MIN,
            offsetof(kvtier_stats, load_latency) + sizeof(kvtier_latency_stats));
  EXPECT_EQ(KVTIER_NAMESPACE_STATS_SIZE_MIN, sizeof(kvtier_namespace_stats));
  EXPECT_EQ(KVTIER_REMOTE_NODE_STATS_SIZE_MIN, sizeof(kvtier_remote_node_stats));
  EXPECT_LT(KVTIER_STATS_SIZE_MIN, sizeof(kvtier_stats));
}

// Every size a caller built against C API version 3 (three tiers) could pass is refused: the
// structs it knew, rebuilt here with three tiers, are smaller than the version-4 minimums.
TEST(CStats, StructsOfVersion3AreRefused) {
  struct TierStatsV3 {
    uint64_t words[13];
  };
  struct StatsV3 {
    uint64_t struct_size;
    TierStatsV3 tiers[3];
    uint64_t figures[24];  // namespaces .. prefetch_budget_bytes
    kvtier_latency_stats latency[3];
  };
  struct NamespaceStatsV3 {
    uint64_t struct_size, blocks, blocks_per_tier[3], figures[4], hits[3], misses[3], stall[2],
        quota[3], quota_figures[3];
  };
  static_assert(sizeof(kvtier_tier_stats) == sizeof(TierStatsV3));
  EXPECT_LT(sizeof(StatsV3), KVTIER_STATS_SIZE_MIN);
  EXPECT_LT(sizeof(NamespaceStatsV3), KVTIER_NAMESPACE_STATS_SIZE_MIN);
  EXPECT_FALSE(CheckStructSize(sizeof(StatsV3), KVTIER_STATS_SIZE_MIN, "s", "kvtier_stats").ok());
  EXPECT_FALSE(CheckStructSize(sizeof(NamespaceStatsV3), KVTIER_NAMESPACE_STATS_SIZE_MIN, "s",
                               "kvtier_namespace_stats")
                   .ok());
}

TEST(CStats, CopyOutFillsThePrefixAndZeroesTheRest) {
  kvtier_stats full;
  FillStats(DistinctStats(), &full);
  struct {
    kvtier_stats s;
    uint64_t newer_fields[4];
  } bigger;
  std::memset(&bigger, 0xAB, sizeof(bigger));
  bigger.s.struct_size = sizeof(bigger);
  CopyOut(&full, sizeof(full), &bigger);
  EXPECT_EQ(bigger.s.struct_size, sizeof(kvtier_stats));
  EXPECT_EQ(std::memcmp(reinterpret_cast<const char*>(&bigger.s) + 8,
                        reinterpret_cast<const char*>(&full) + 8, sizeof(full) - 8),
            0);
  for (uint64_t w : bigger.newer_fields) EXPECT_EQ(w, 0u);

  kvtier_stats smaller;
  std::memset(&smaller, 0xAB, sizeof(smaller));
  smaller.struct_size = KVTIER_STATS_SIZE_MIN;
  CopyOut(&full, sizeof(full), &smaller);
  EXPECT_EQ(smaller.struct_size, KVTIER_STATS_SIZE_MIN);
  EXPECT_EQ(smaller.load_latency.count, full.load_latency.count);
  EXPECT_EQ(smaller.remote_enabled, 0xABABABABABABABABu);  // past the caller's struct: untouched
}

}  // namespace
}  // namespace kvtier::capi
