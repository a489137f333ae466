// tests/engine/eviction/ghost_list_test.cc — the bounded list of ghost keys.

#include "engine/eviction/ghost_list.h"

#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(GhostList, IsBoundedAndKeepsEachKeyOnce) {
  policy_internal::GhostList ghost(2);
  ghost.PushFront(1);
  ghost.PushFront(2);
  ghost.PushFront(1);  // moved to the front, not duplicated
  EXPECT_EQ(ghost.size(), 2u);
  ghost.PushFront(3);  // at capacity: the oldest (2) goes
  EXPECT_TRUE(ghost.Contains(1) && ghost.Contains(3));
  EXPECT_FALSE(ghost.Contains(2));
  EXPECT_TRUE(ghost.Remove(1));
  EXPECT_FALSE(ghost.Remove(1));
  ghost.PopBack();
  EXPECT_EQ(ghost.size(), 0u);
  ghost.PopBack();  // empty: nothing happens
}

}  // namespace
}  // namespace kvtier
