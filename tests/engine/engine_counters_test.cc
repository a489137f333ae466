// EngineCounters: lookups count as hits in the tier a block was read from and as misses in
// every tier above it that the engine has; Fill copies every counter.

#include "engine/engine_counters.h"

#include "gtest/gtest.h"

namespace kvtier {
namespace {

constexpr TierKind kGpu = TierKind::kGpu;
constexpr TierKind kHost = TierKind::kHost;
constexpr TierKind kDisk = TierKind::kDisk;

TEST(EngineCounters, ABlockFoundInATierIsAHitThereAndAMissInEveryTierAbove) {
  EngineCounters c(TierArray<bool>{{true, true, true}});
  NamespaceCounters ns;
  // 3 blocks from the GPU, 2 from host, 1 from disk, 4 nowhere.
  c.CountLookups(ns, TierArray<uint64_t>{{3, 2, 1}}, 4);
  EXPECT_EQ(c.tier(kGpu).hits.load(), 3u);
  EXPECT_EQ(c.tier(kGpu).misses.load(), 2u + 1 + 4);
  EXPECT_EQ(c.tier(kHost).hits.load(), 2u);
  EXPECT_EQ(c.tier(kHost).misses.load(), 1u + 4);
  EXPECT_EQ(c.tier(kDisk).hits.load(), 1u);
  EXPECT_EQ(c.tier(kDisk).misses.load(), 4u);
  for (TierKind t : kAllTiers) {
    EXPECT_EQ(ns.hits[t].load(), c.tier(t).hits.load()) << TierKindName(t);
    EXPECT_EQ(ns.misses[t].load(), c.tier(t).misses.load()) << TierKindName(t);
  }
}

TEST(EngineCounters, TiersTheEngineDoesNotHaveCountNothing) {
  EngineCounters c(TierArray<bool>{{false, true, false}});  // host only
  NamespaceCounters ns;
  c.CountLookups(ns, TierArray<uint64_t>{{0, 5, 0}}, 2);
  EXPECT_EQ(c.tier(kGpu).hits.load() + c.tier(kGpu).misses.load(), 0u);
  EXPECT_EQ(c.tier(kDisk).hits.load() + c.tier(kDisk).misses.load(), 0u);
  EXPECT_EQ(c.tier(kHost).hits.load(), 5u);
  EXPECT_EQ(c.tier(kHost).misses.load(), 2u);
}

TEST(EngineCounters, FillCopiesEveryCounter) {
  EngineCounters c(TierArray<bool>{{true, true, true}});
  uint64_t v = 1;
  for (TierKind t : kAllTiers) {
    TierCounters& tc = c.tier(t);
    for (std::atomic<uint64_t>* a : {&tc.hits, &tc.misses, &tc.bytes_in, &tc.bytes_out,
                                     &tc.evictions, &tc.demotions, &tc.promotions}) {
      a->store(v++);
    }
  }
  c.match_calls = 101;
  c.matched_blocks = 102;
  c.missed_blocks = 103;
  c.stored_blocks = 104;
  c.deduplicated_blocks = 105;
  c.rejected_blocks = 106;
  c.loaded_blocks = 107;
  c.leases_expired = 108;
  c.stall()->Add(1000);
  c.match_latency.Record(std::chrono::microseconds(3));
  EngineStats st;
  c.Fill(&st);
  v = 1;
  for (TierKind t : kAllTiers) {
    const TierStats& ts = st.tiers[static_cast<size_t>(t)];
    for (uint64_t got : {ts.hits, ts.misses, ts.bytes_in, ts.bytes_out, ts.evictions,
                         ts.demotions, ts.promotions}) {
      EXPECT_EQ(got, v++) << TierKindName(t);
    }
  }
  EXPECT_EQ(st.match_calls, 101u);
  EXPECT_EQ(st.matched_blocks, 102u);
  EXPECT_EQ(st.missed_blocks, 103u);
  EXPECT_EQ(st.stored_blocks, 104u);
  EXPECT_EQ(st.deduplicated_blocks, 105u);
  EXPECT_EQ(st.rejected_blocks, 106u);
  EXPECT_EQ(st.loaded_blocks, 107u);
  EXPECT_EQ(st.leases_expired, 108u);
  EXPECT_EQ(st.stall_ns, 1000u);
  EXPECT_EQ(st.stalled_waits, 1u);
  EXPECT_EQ(st.match_latency.count, 1u);
  EXPECT_EQ(st.store_latency.count, 0u);
}

}  // namespace
}  // namespace kvtier
