// tests/engine/eviction/slot_lists_test.cc — the intrusive lists of slot ids every policy keeps,
// and the per-slot key hashes.

#include "engine/eviction/slot_lists.h"

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/eviction/slot_keys.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using policy_internal::SlotKeys;
using policy_internal::SlotLists;

TEST(SlotLists, KeepsEachListInOrderAndEachSlotOnOneList) {
  SlotLists lists(/*num_slots=*/8, /*num_lists=*/2);
  lists.PushFront(0, 1);
  lists.PushFront(0, 2);
  lists.PushBack(0, 3);
  lists.PushFront(1, 4);
  EXPECT_EQ(lists.Order(0), (std::vector<SlotId>{2, 1, 3}));
  EXPECT_EQ(lists.Order(1), (std::vector<SlotId>{4}));
  EXPECT_EQ(lists.size(0), 3u);
  EXPECT_EQ(lists.Front(0), SlotId{2});
  EXPECT_EQ(lists.Back(0), SlotId{3});
  EXPECT_EQ(lists.Newer(1), SlotId{2});
  EXPECT_EQ(lists.Older(1), SlotId{3});
  EXPECT_EQ(lists.ListOf(4), 1);
  EXPECT_FALSE(lists.Contains(0));
  EXPECT_EQ(lists.ListOf(0), SlotLists::kNoList);

  lists.InsertOlderThan(2, 5);  // between 2 and 1
  EXPECT_EQ(lists.Order(0), (std::vector<SlotId>{2, 5, 1, 3}));
  lists.InsertOlderThan(3, 6);  // behind the back: the new back
  EXPECT_EQ(lists.Back(0), SlotId{6});

  lists.MoveToFront(1, 1);  // from list 0 to the front of list 1
  EXPECT_EQ(lists.Order(0), (std::vector<SlotId>{2, 5, 3, 6}));
  EXPECT_EQ(lists.Order(1), (std::vector<SlotId>{1, 4}));
  EXPECT_EQ(lists.size(1), 2u);
  lists.MoveToFront(1, 1);  // already there: nothing changes
  EXPECT_EQ(lists.Order(1), (std::vector<SlotId>{1, 4}));

  for (SlotId s : {2, 6, 5, 3}) lists.Remove(s);
  EXPECT_EQ(lists.size(0), 0u);
  EXPECT_EQ(lists.Front(0), kNoSlot);
  EXPECT_EQ(lists.Back(0), kNoSlot);
  EXPECT_FALSE(lists.Contains(2));
  lists.PushBack(0, 2);  // a removed slot can be linked again
  EXPECT_EQ(lists.Order(0), (std::vector<SlotId>{2}));
}

TEST(SlotKeys, RemembersTheAnnouncedKeyPerSlotAndFallsBackToTheSlotId) {
  SlotKeys keys(4);
  EXPECT_EQ(keys.Pending(), std::nullopt);
  keys.SetNext(0xabcdef);
  EXPECT_EQ(keys.Pending(), std::optional<uint64_t>(0xabcdef));
  EXPECT_EQ(keys.Take(2), 0xabcdefu);
  EXPECT_EQ(keys.Pending(), std::nullopt);  // an announcement serves one insert
  EXPECT_EQ(keys.Take(3), 3u);              // none: the slot id stands in
  EXPECT_EQ(keys.Of(2), 0xabcdefu);
  EXPECT_EQ(keys.Of(3), 3u);
}

}  // namespace
}  // namespace kvtier
