// tests/engine/eviction/lfu_policy_test.cc — LFU with aging: classes, idle time, cold copies.

#include "engine/eviction/lfu_policy.h"

#include <cstdint>

#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::All;
using policy_test::EvictOne;
using policy_test::Insert;

// Inserts one-time blocks into slots 1..3 in turn (evicting the policy's pick first when all
// four slots are full) until slot 0 is picked; returns how many were inserted.
int OneTimeInsertsUntilSlotZeroGoes(AgedLfuPolicy& lfu) {
  uint64_t key = 1000;
  for (int n = 1; n <= 1000; ++n) {
    const SlotId victim = EvictOne(lfu);
    if (victim == 0) return n;
    Insert(lfu, victim, key++);
  }
  return -1;
}

TEST(AgedLfuPolicy, KeepsABlockSeenCTimesCSquaredTimesLongerIdle) {
  // Slot 0 seen `count` times, then one-time blocks stream through the other three slots:
  // each class-1 block is evicted at an idle time of 3 ticks, so slot 0 goes once its own idle
  // time passes 3 * count^2 — about 3, 12 and 27 one-time inserts for counts 1, 2, 3.
  for (int count = 1; count <= 3; ++count) {
    AgedLfuPolicy lfu(4);
    Insert(lfu, 0, 7);
    for (int i = 1; i < count; ++i) lfu.OnAccess(0);
    EXPECT_EQ(lfu.frequency_class(0), count);
    for (SlotId s = 1; s < 4; ++s) Insert(lfu, s, 100 + s);
    const int survived = OneTimeInsertsUntilSlotZeroGoes(lfu);
    EXPECT_GE(survived, 3 * count * count - 2) << count;
    EXPECT_LE(survived, 3 * count * count + 2) << count;
  }
  // LRU would give the count-3 block no more time than a one-time block.
}

TEST(AgedLfuPolicy, ClassesStopAtFourAndCountsOutliveTheSlot) {
  AgedLfuPolicy lfu(8);
  Insert(lfu, 0, 42);
  for (int i = 0; i < 10; ++i) lfu.OnAccess(0);
  EXPECT_EQ(lfu.frequency_class(0), AgedLfuPolicy::kClasses);
  EXPECT_EQ(lfu.EstimatedFrequency(42), 11u);
  lfu.OnRemove(0);
  EXPECT_EQ(lfu.frequency_class(0), 0);
  // The same key comes back in another slot: its count continues (12 > 4: the top class);
  // a new key starts in class 1.
  Insert(lfu, 5, 42);
  Insert(lfu, 6, 43);
  EXPECT_EQ(lfu.frequency_class(5), AgedLfuPolicy::kClasses);
  EXPECT_EQ(lfu.frequency_class(6), 1);
  EXPECT_EQ(EvictOne(lfu), SlotId{6});
}

TEST(AgedLfuPolicy, ColdCopyGoesFirstAndIsNotCounted) {
  AgedLfuPolicy lfu(4);
  for (SlotId s = 0; s < 3; ++s) Insert(lfu, s, 100 + s);
  lfu.SetNextKey(900);
  lfu.OnInsertCold(3);
  EXPECT_EQ(lfu.EstimatedFrequency(900), 0u);
  EXPECT_EQ(lfu.frequency_class(3), 1);
  EXPECT_EQ(EvictOne(lfu), SlotId{3});  // newest by insert order, but cold
  EXPECT_EQ(EvictOne(lfu), SlotId{0});  // then plain LRU order within class 1
}

TEST(AgedLfuPolicy, SkippedSlotKeepsItsPlaceAndEachClassOffersItsOldestEvictable) {
  AgedLfuPolicy lfu(6);
  for (SlotId s = 0; s < 4; ++s) Insert(lfu, s, 100 + s);  // class 1, oldest first
  Insert(lfu, 4, 104);
  lfu.OnAccess(4);  // class 2
  EXPECT_EQ(lfu.PickVictim([](SlotId s) { return s != 0; }), SlotId{1});
  EXPECT_EQ(lfu.PickVictim([](SlotId s) { return s >= 4; }), SlotId{4});
  EXPECT_EQ(lfu.PickVictim(All), SlotId{0});  // slot 0 was only skipped
}

}  // namespace
}  // namespace kvtier
