// tests/engine/eviction/s3fifo_policy_test.cc — S3-FIFO: small, main and ghost queues.

#include "engine/eviction/s3fifo_policy.h"

#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::EvictOne;
using policy_test::Insert;

TEST(S3FifoPolicy, EvictsOneHitWondersFromSmallAndPromotesGhostHitsToMain) {
  S3FifoPolicy s3(10);  // small: 1 slot's share, main: 9
  ASSERT_EQ(s3.small_capacity(), 1u);
  for (SlotId s = 0; s < 10; ++s) Insert(s3, s, 100 + s);
  for (SlotId s = 0; s < 9; ++s) s3.OnAccess(s);  // all but slot 9 are reused
  // S's tail end holds the reused ones: they move to main; the one-hit wonder goes.
  EXPECT_EQ(EvictOne(s3), SlotId{9});
  for (SlotId s = 0; s < 9; ++s) {
    EXPECT_TRUE(s3.InMain(s)) << s;
    EXPECT_EQ(s3.frequency(s), 0) << s;  // access bits cleared on the move
  }
  EXPECT_TRUE(s3.InGhost(109));
  // The same block comes back soon: its key is in the ghost, so it goes straight to main.
  Insert(s3, 9, 109);
  EXPECT_TRUE(s3.InMain(9));
  EXPECT_FALSE(s3.InGhost(109));
  // A new block goes to small.
  s3.OnRemove(0);
  Insert(s3, 0, 200);
  EXPECT_TRUE(s3.InSmall(0));
}

TEST(S3FifoPolicy, MainReinsertsHitObjectsWithOneLessAndForgetsItsVictims) {
  S3FifoPolicy s3(10);
  for (SlotId s = 0; s < 4; ++s) Insert(s3, s, 100 + s);
  for (SlotId s = 0; s < 3; ++s) s3.OnAccess(s);
  EXPECT_EQ(EvictOne(s3), SlotId{3});  // 0, 1, 2 move to main on the way
  for (int i = 0; i < 5; ++i) s3.OnAccess(0);
  EXPECT_EQ(s3.frequency(0), 3);  // two bits: capped at 3
  s3.OnAccess(1);
  // Small is empty, so main's tail end: 0 (counter 3) and 1 (counter 1) go back to the head
  // with one less; 2 (never hit in main) goes.
  EXPECT_EQ(EvictOne(s3), SlotId{2});
  EXPECT_EQ(s3.frequency(0), 2);
  EXPECT_EQ(s3.frequency(1), 0);
  EXPECT_EQ(EvictOne(s3), SlotId{1});
  EXPECT_EQ(EvictOne(s3), SlotId{0});
  // Only small's evictions become ghosts.
  EXPECT_TRUE(s3.InGhost(103));
  EXPECT_FALSE(s3.InGhost(100));
  EXPECT_FALSE(s3.InGhost(102));
}

TEST(S3FifoPolicy, PlainRemovalIsNotAnEviction) {
  S3FifoPolicy s3(10);
  Insert(s3, 0, 100);
  s3.OnRemove(0);  // the block was dropped, not evicted: no history
  EXPECT_FALSE(s3.InGhost(100));
  Insert(s3, 0, 100);
  EXPECT_TRUE(s3.InSmall(0));
}

}  // namespace
}  // namespace kvtier
