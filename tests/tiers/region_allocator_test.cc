// RegionAllocator on its own: records appended to the active region, free regions used
// before any is reclaimed, reclaim of the oldest region with no I/O in flight through the
// caller's callback, generations that only grow, and recovered regions never rewritten in
// place.

#include "tiers/region_allocator.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier {
namespace {

constexpr uint64_t kRegionBytes = 1000;

// Records every reclaim it is asked for; fails when told to.
struct Reclaims {
  // Mutable: absl::FunctionRef calls its target as const.
  mutable std::vector<std::pair<uint32_t, uint64_t>> calls;
  absl::Status result;

  absl::Status operator()(uint32_t region, uint64_t generation) const {
    calls.push_back({region, generation});
    return result;
  }
};

TEST(RegionAllocator, RecordsGoEndToEndInTheActiveRegionThenIntoAFreshOne) {
  RegionAllocator a(kRegionBytes, 3);
  Reclaims r;
  EXPECT_EQ(a.active_region(), -1);
  std::vector<RegionLocation> at;
  for (int i = 0; i < 4; ++i) {
    auto loc = a.Allocate(300, r);
    ASSERT_TRUE(loc.has_value()) << i;
    at.push_back(*loc);
  }
  EXPECT_EQ(at[0].region, 0u);
  EXPECT_EQ(at[0].offset, 0u);
  EXPECT_EQ(at[1].offset, 300u);
  EXPECT_EQ(at[2].offset, 600u);
  EXPECT_EQ(at[0].generation, at[2].generation);
  // 900 + 300 > 1000: the fourth record opens region 1, at its start, with a newer generation.
  EXPECT_EQ(at[3].region, 1u);
  EXPECT_EQ(at[3].offset, kRegionBytes);
  EXPECT_GT(at[3].generation, at[0].generation);
  // A region is "reclaimed" (its generation recorded) even when it was free.
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0], (std::pair<uint32_t, uint64_t>{0, at[0].generation}));
  EXPECT_EQ(r.calls[1], (std::pair<uint32_t, uint64_t>{1, at[3].generation}));
  EXPECT_EQ(a.live_records(0), 3u);
  EXPECT_EQ(a.used_bytes(0), 900u);
  EXPECT_EQ(a.free_regions(), 1u);
}

TEST(RegionAllocator, ReclaimsTheOldestRegionWithNoIoInFlight) {
  RegionAllocator a(kRegionBytes, 3);
  Reclaims r;
  for (uint32_t i = 0; i < 3; ++i) {
    auto loc = a.Allocate(kRegionBytes, r);  // one record fills a region
    ASSERT_TRUE(loc.has_value());
    EXPECT_EQ(loc->region, i);
  }
  // Region 0 (oldest) still has its write in flight; 1 and 2 landed.
  a.WriteLanded(1);
  a.WriteLanded(2);
  auto next = a.Allocate(kRegionBytes, r);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->region, 1u) << "a region with a write in flight is not reclaimed";
  // Region 0's write lands but a read of it starts: region 2 is the oldest without I/O.
  a.WriteLanded(0);
  a.ReadStarted(0);
  a.WriteLanded(1);
  auto after = a.Allocate(kRegionBytes, r);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->region, 2u) << "nor one with a read in flight";
  a.ReadLanded(0);
  a.WriteLanded(2);
  auto last = a.Allocate(kRegionBytes, r);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->region, 0u);
  EXPECT_GT(last->generation, after->generation);
  EXPECT_EQ(a.live_records(0), 1u) << "a reclaimed region's old records are gone";
}

TEST(RegionAllocator, NothingIsPlacedWhenEveryOtherRegionHasIoInFlight) {
  RegionAllocator a(kRegionBytes, 2);
  Reclaims r;
  ASSERT_TRUE(a.Allocate(kRegionBytes, r).has_value());
  ASSERT_TRUE(a.Allocate(kRegionBytes, r).has_value());
  const size_t calls = r.calls.size();
  EXPECT_FALSE(a.Allocate(kRegionBytes, r).has_value());
  EXPECT_EQ(r.calls.size(), calls) << "no reclaim may be attempted";
  a.WriteLanded(0);
  EXPECT_TRUE(a.Allocate(kRegionBytes, r).has_value());
}

TEST(RegionAllocator, AFailedReclaimLeavesTheRegionUnusedAndGenerationsStillGrow) {
  RegionAllocator a(kRegionBytes, 2);
  Reclaims r;
  auto first = a.Allocate(kRegionBytes, r);
  ASSERT_TRUE(first.has_value());
  r.result = absl::UnavailableError("index write failed");
  EXPECT_FALSE(a.Allocate(kRegionBytes, r).has_value());
  EXPECT_EQ(a.active_region(), 0);
  EXPECT_TRUE(a.is_free(1));
  EXPECT_EQ(a.generation(1), 0u);
  r.result = absl::OkStatus();
  auto second = a.Allocate(kRegionBytes, r);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->region, 1u);
  // The generation the failed reclaim was given is never handed out again.
  EXPECT_GT(second->generation, r.calls[1].second);
}

TEST(RegionAllocator, AnIdleRegionIsFreeAgainButNeverTheActiveOne) {
  RegionAllocator a(kRegionBytes, 3);
  Reclaims r;
  auto x = a.Allocate(600, r);
  auto y = a.Allocate(600, r);  // region 1 becomes active
  ASSERT_TRUE(x && y);
  a.WriteLanded(0);
  EXPECT_FALSE(a.is_free(0)) << "it still holds a live record";
  a.RecordDropped(0);
  EXPECT_TRUE(a.is_free(0));
  a.WriteLanded(1);
  a.RecordDropped(1);
  EXPECT_FALSE(a.is_free(1)) << "the active region is never free";
  // The free region is used before any reclaim of a region with data.
  auto z = a.Allocate(600, r);
  ASSERT_TRUE(z.has_value());
  EXPECT_EQ(z->region, 0u);
}

TEST(RegionAllocator, RecoveredRegionsAreNeverWrittenInPlaceAndGenerationsContinue) {
  RegionAllocator a(kRegionBytes, 3);
  a.RestoreGeneration(0, 7);
  a.RestoreRecord(0, 500);
  a.RestoreRecord(0, 300);
  a.RestoreGeneration(1, 3);  // reclaimed once, no record survived
  EXPECT_FALSE(a.is_free(0));
  EXPECT_EQ(a.used_bytes(0), 500u);
  EXPECT_EQ(a.live_records(0), 2u);
  EXPECT_TRUE(a.is_free(1));
  Reclaims r;
  auto at = a.Allocate(100, r);
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->region, 1u) << "region 0 had room, but the tail of a recovered region is not "
                               "rewritten in place";
  EXPECT_EQ(at->generation, 8u);
}

}  // namespace
}  // namespace kvtier
