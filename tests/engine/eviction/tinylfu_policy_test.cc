// tests/engine/eviction/tinylfu_policy_test.cc — W-TinyLFU: the admission duel, cold copies.

#include "engine/eviction/tinylfu_policy.h"

#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::EvictOne;
using policy_test::Insert;

TEST(TinyLfuPolicy, RefusesAColdCandidateOverAFrequentMainVictim) {
  TinyLfuPolicy lfu(4);  // window 1, main 3 (protected 2)
  for (SlotId s = 0; s < 4; ++s) Insert(lfu, s, 100 + s);
  EXPECT_TRUE(lfu.InWindow(3));
  for (int round = 0; round < 4; ++round) {
    for (SlotId s = 0; s < 3; ++s) lfu.OnAccess(s);
  }
  // The window's candidate (slot 3, seen once) loses against main's victim (seen 5 times):
  // the candidate itself is evicted, main is untouched.
  EXPECT_EQ(EvictOne(lfu), SlotId{3});
  for (SlotId s = 0; s < 3; ++s) EXPECT_FALSE(lfu.InWindow(s)) << s;
  // A candidate more popular than main's victim is admitted instead.
  Insert(lfu, 3, 103);  // its second appearance
  for (int i = 0; i < 8; ++i) lfu.OnAccess(3);
  EXPECT_GT(lfu.EstimatedFrequency(103), lfu.EstimatedFrequency(100));
  const SlotId victim = EvictOne(lfu);
  EXPECT_NE(victim, SlotId{3});
  EXPECT_TRUE(lfu.InProbation(3));  // it took the victim's place in main
}

TEST(TinyLfuPolicy, ColdCopyIsTheNextCandidate) {
  TinyLfuPolicy lfu(200);  // window 2, main 198
  for (SlotId s = 0; s < 200; ++s) {
    Insert(lfu, s, 1000 + s);
    lfu.OnAccess(s);
  }
  EXPECT_TRUE(lfu.InWindow(198) && lfu.InWindow(199));
  lfu.OnRemove(199);
  lfu.SetNextKey(5000);
  lfu.OnInsertCold(199);  // behind 198 in the window, where a plain insert would be ahead
  EXPECT_EQ(EvictOne(lfu), SlotId{199});
  Insert(lfu, 199, 5001);
  EXPECT_EQ(EvictOne(lfu), SlotId{198});  // a plain insert: the older window slot is next
}

}  // namespace
}  // namespace kvtier
