// tests/engine/eviction/lru_policy_test.cc — LRU: recency order, cold inserts, busy slots.

#include "engine/eviction/lru_policy.h"

#include <optional>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(LruPolicy, EvictsLeastRecentlyUsedFirst) {
  LruPolicy lru(4);
  for (SlotId s : {0, 1, 2, 3}) lru.OnInsert(s);
  lru.OnAccess(0);  // 0 is now the most recent; 1 the least
  EXPECT_EQ(lru.Order(), (std::vector<SlotId>{0, 3, 2, 1}));
  EXPECT_EQ(lru.PickVictim([](SlotId) { return true; }), SlotId{1});
}

TEST(LruPolicy, ColdInsertsAreEvictedFirstAndWarmUpWhenAccessed) {
  LruPolicy lru(5);
  for (SlotId s : {0, 1, 2}) lru.OnInsert(s);
  lru.OnInsertCold(3);
  EXPECT_EQ(lru.Order(), (std::vector<SlotId>{2, 1, 0, 3}));
  EXPECT_EQ(lru.PickVictim([](SlotId) { return true; }), SlotId{3});
  // A stream of cold copies cycles through the cold end; the warm slots keep their order.
  lru.OnRemove(3);
  lru.OnInsertCold(4);
  EXPECT_EQ(lru.PickVictim([](SlotId) { return true; }), SlotId{4});
  lru.OnAccess(4);  // used for its own sake: now the most recent
  EXPECT_EQ(lru.Order(), (std::vector<SlotId>{4, 2, 1, 0}));
  LruPolicy empty(2);
  empty.OnInsertCold(1);
  EXPECT_EQ(empty.Order(), (std::vector<SlotId>{1}));
}

TEST(LruPolicy, SkipsSlotsTheEngineSaysAreBusy) {
  LruPolicy lru(3);
  for (SlotId s : {0, 1, 2}) lru.OnInsert(s);
  // 0 is least recent but pinned: the next one is chosen.
  EXPECT_EQ(lru.PickVictim([](SlotId s) { return s != 0; }), SlotId{1});
  EXPECT_EQ(lru.PickVictim([](SlotId) { return false; }), std::nullopt);
}

TEST(LruPolicy, RemoveUnlinksAndSlotCanReturn) {
  LruPolicy lru(3);
  for (SlotId s : {0, 1, 2}) lru.OnInsert(s);
  lru.OnRemove(1);
  EXPECT_EQ(lru.Order(), (std::vector<SlotId>{2, 0}));
  lru.OnRemove(0);
  lru.OnRemove(2);
  EXPECT_TRUE(lru.Order().empty());
  EXPECT_EQ(lru.PickVictim([](SlotId) { return true; }), std::nullopt);
  lru.OnInsert(1);
  EXPECT_EQ(lru.PickVictim([](SlotId) { return true; }), SlotId{1});
}

TEST(LruPolicy, ScanOfNewBlocksEvictsOldOnesInOrder) {
  // The textbook LRU weakness, pinned so a future change of default is a decision.
  LruPolicy lru(2);
  lru.OnInsert(0);
  lru.OnInsert(1);
  lru.OnAccess(0);
  EXPECT_EQ(lru.PickVictim([](SlotId) { return true; }), SlotId{1});
}

}  // namespace
}  // namespace kvtier
