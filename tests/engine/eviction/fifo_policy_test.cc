// tests/engine/eviction/fifo_policy_test.cc — FIFO: insertion order, whatever is accessed.

#include "engine/eviction/fifo_policy.h"

#include <cstdint>
#include <vector>

#include "engine/eviction/lru_policy.h"
#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::All;
using policy_test::CountHits;

TEST(FifoPolicy, EvictsInInsertionOrderWhateverIsAccessed) {
  FifoPolicy fifo(4);
  for (SlotId s : {0, 1, 2}) fifo.OnInsert(s);
  fifo.OnAccess(0);
  EXPECT_EQ(fifo.Order(), (std::vector<SlotId>{2, 1, 0}));
  EXPECT_EQ(fifo.PickVictim(All), SlotId{0});
  fifo.OnInsertCold(3);  // a copy in passing goes first
  EXPECT_EQ(fifo.PickVictim(All), SlotId{3});
}

TEST(FifoVersusLru, DifferOnASequenceWithAReaccess) {
  // A B A C A on two slots: LRU keeps A (re-accessed) and evicts B for C; FIFO evicts A.
  const std::vector<uint64_t> keys = {10, 11, 10, 12, 10};
  LruPolicy lru(2);
  FifoPolicy fifo(2);
  EXPECT_EQ(CountHits(lru, 2, keys, 4), 1);
  EXPECT_EQ(CountHits(fifo, 2, keys, 4), 0);
}

}  // namespace
}  // namespace kvtier
