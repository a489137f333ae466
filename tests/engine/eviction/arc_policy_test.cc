// tests/engine/eviction/arc_policy_test.cc — ARC: the adaptive target p, ghosts, scans.

#include "engine/eviction/arc_policy.h"

#include <cstdint>

#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::EvictOne;
using policy_test::Insert;

TEST(ArcPolicy, GhostHitsInB1GrowPAndInB2ShrinkIt) {
  ArcPolicy arc(4);
  for (SlotId s = 0; s < 4; ++s) Insert(arc, s, 100 + s);
  arc.OnAccess(0);
  arc.OnAccess(1);  // T2 = {1, 0}, T1 = {3, 2}
  EXPECT_TRUE(arc.InT2(0) && arc.InT2(1) && arc.InT1(2) && arc.InT1(3));
  EXPECT_EQ(arc.p(), 0u);
  // |T1| > p: T1's LRU goes, to B1.
  EXPECT_EQ(EvictOne(arc), SlotId{2});
  EXPECT_TRUE(arc.InB1(102));
  // It comes back: T1 was too small, p grows; the block is now in T2.
  Insert(arc, 2, 102);
  EXPECT_EQ(arc.p(), 1u);
  EXPECT_TRUE(arc.InT2(2));
  EXPECT_FALSE(arc.InB1(102));
  // |T1| == p: T2's LRU (slot 0) goes, to B2.
  EXPECT_EQ(EvictOne(arc), SlotId{0});
  EXPECT_TRUE(arc.InB2(100));
  // It comes back: T2 was too small, p shrinks.
  Insert(arc, 0, 100);
  EXPECT_EQ(arc.p(), 0u);
  EXPECT_TRUE(arc.InT2(0));
}

TEST(ArcPolicy, ScanOnlyChurnsT1) {
  ArcPolicy arc(4);
  for (SlotId s = 0; s < 2; ++s) {
    Insert(arc, s, 100 + s);
    arc.OnAccess(s);  // the working set, in T2
  }
  SlotId free_slot = 2;
  Insert(arc, 3, 1000);
  for (uint64_t key = 1001; key < 1050; ++key) {
    Insert(arc, free_slot, key);
    free_slot = EvictOne(arc);
    EXPECT_TRUE(free_slot == 2 || free_slot == 3) << "evicted " << free_slot;
  }
  EXPECT_TRUE(arc.InT2(0) && arc.InT2(1));
  EXPECT_EQ(arc.p(), 0u);
}

}  // namespace
}  // namespace kvtier
