// tests/engine/eviction/sieve_policy_test.cc — SIEVE: the hand, visited bits, cold copies.

#include "engine/eviction/sieve_policy.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::All;
using policy_test::EvictOne;

TEST(SievePolicy, KeepsVisitedObjectsInPlaceAndEvictsTheUnvisited) {
  SievePolicy sieve(5);
  for (SlotId s : {0, 1, 2, 3}) sieve.OnInsert(s);
  sieve.OnAccess(0);
  sieve.OnAccess(2);
  // From the tail: 0 was visited (bit cleared, stays), 1 was not: it goes.
  EXPECT_EQ(EvictOne(sieve), SlotId{1});
  EXPECT_EQ(sieve.Order(), (std::vector<SlotId>{3, 2, 0}));  // 0 still at the tail
  EXPECT_FALSE(sieve.visited(0));
  EXPECT_EQ(sieve.hand(), SlotId{2});  // the hand rests on the victim's newer neighbour
  sieve.OnInsert(4);                   // new objects at the head
  EXPECT_EQ(sieve.Order(), (std::vector<SlotId>{4, 3, 2, 0}));
  // The hand goes on toward the head: 2 (visited) survives, 3 goes — not the older 0.
  EXPECT_EQ(EvictOne(sieve), SlotId{3});
  EXPECT_EQ(sieve.Order(), (std::vector<SlotId>{4, 2, 0}));
  // Then 4 (at the head); then the hand wraps to the tail, where 0 now goes.
  EXPECT_EQ(EvictOne(sieve), SlotId{4});
  EXPECT_EQ(EvictOne(sieve), SlotId{0});
}

TEST(SievePolicy, ColdCopyIsExaminedFirst) {
  SievePolicy sieve(5);
  for (SlotId s : {0, 1, 2}) sieve.OnInsert(s);
  sieve.OnAccess(0);
  EXPECT_EQ(EvictOne(sieve), SlotId{1});  // the hand now rests on 2
  sieve.OnInsertCold(3);
  EXPECT_EQ(sieve.PickVictim(All), SlotId{3});
  sieve.OnRemove(3);
  EXPECT_EQ(sieve.hand(), SlotId{2});  // the sweep resumes where it was
}

}  // namespace
}  // namespace kvtier
