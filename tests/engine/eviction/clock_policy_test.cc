// tests/engine/eviction/clock_policy_test.cc — CLOCK: second chances, skipped slots, cold copies.

#include "engine/eviction/clock_policy.h"

#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::All;
using policy_test::EvictOne;

TEST(ClockPolicy, GivesAReferencedSlotASecondChance) {
  ClockPolicy clock(4);
  for (SlotId s : {0, 1, 2}) clock.OnInsert(s);
  clock.OnAccess(0);
  // The hand is on 0 (the oldest): its bit is cleared and it is passed; 1 goes.
  EXPECT_EQ(clock.PickVictim(All), SlotId{1});
  EXPECT_FALSE(clock.referenced(0));
  EXPECT_EQ(clock.PickVictim(All), SlotId{1});  // picking again changes nothing
  clock.OnRemove(1);
  clock.OnInsert(3);  // takes the freed place, behind the hand
  EXPECT_EQ(clock.Order(), (std::vector<SlotId>{2, 0, 3}));
  EXPECT_EQ(EvictOne(clock), SlotId{2});
  EXPECT_EQ(EvictOne(clock), SlotId{0});  // its second chance is spent
  EXPECT_EQ(EvictOne(clock), SlotId{3});
  EXPECT_EQ(clock.PickVictim(All), std::nullopt);
}

TEST(ClockPolicy, SkippedSlotKeepsItsPlaceAndColdCopiesGoFirst) {
  ClockPolicy clock(5);
  for (SlotId s : {0, 1, 2}) clock.OnInsert(s);
  clock.OnAccess(1);
  // 0 is busy: the hand stays on it; 1 gets its second chance behind the hand; 2 goes.
  EXPECT_EQ(clock.PickVictim([](SlotId s) { return s != 0; }), SlotId{2});
  EXPECT_EQ(clock.Order(), (std::vector<SlotId>{0, 2, 1}));
  clock.OnRemove(2);
  EXPECT_EQ(clock.Order(), (std::vector<SlotId>{0, 1}));
  clock.OnInsertCold(3);
  EXPECT_EQ(clock.Order(), (std::vector<SlotId>{3, 0, 1}));
  EXPECT_EQ(clock.PickVictim(All), SlotId{3});
}

}  // namespace
}  // namespace kvtier
