// tests/engine/eviction_policies_test.cc — the classic eviction policies (FIFO, CLOCK, SIEVE,
// S3-FIFO, ARC, W-TinyLFU, LFU with aging): textbook behaviour on tiny hand-made sequences, scan resistance
// on a small simulated cache, the PickVictim contract, and a randomized consistency check of
// every policy, LRU included.

#include "engine/eviction_policies.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/eviction_policy.h"
#include "engine/lru_policy.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

const std::vector<std::string>& AllPolicyNames() {
  static const std::vector<std::string> names = {"lru", "fifo",   "clock",  "sieve",
                                                  "s3fifo", "arc", "tinylfu", "lfu"};
  return names;
}

std::unique_ptr<EvictionPolicy> Make(const std::string& name, uint32_t num_slots) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy(name, num_slots);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? std::move(*policy) : nullptr;
}

bool All(SlotId) { return true; }
bool None(SlotId) { return false; }

// Inserts `slot` as the block with key `key` (what the engine does: announce, then insert).
void Insert(EvictionPolicy& policy, SlotId slot, uint64_t key) {
  policy.SetNextKey(key);
  policy.OnInsert(slot);
}

// Evicts what the policy picks among all slots; returns it.
SlotId EvictOne(EvictionPolicy& policy) {
  std::optional<SlotId> victim = policy.PickVictim(All);
  EXPECT_TRUE(victim.has_value());
  if (!victim) return kNoSlot;
  policy.OnRemove(*victim);
  return *victim;
}

// Drives `policy` as a cache of `num_slots` slots over a sequence of keys, the way the engine
// does (a hit is an access; a miss evicts the policy's pick when full, then inserts), and
// counts the hits among the requests from index `count_from` on.
int CountHits(EvictionPolicy& policy, uint32_t num_slots, const std::vector<uint64_t>& keys,
              size_t count_from) {
  absl::flat_hash_map<uint64_t, SlotId> slot_of;
  std::vector<uint64_t> key_of(num_slots, 0);
  std::vector<SlotId> free_slots;
  for (SlotId s = num_slots; s > 0; --s) free_slots.push_back(s - 1);
  int hits = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint64_t key = keys[i];
    if (auto it = slot_of.find(key); it != slot_of.end()) {
      policy.OnAccess(it->second);
      if (i >= count_from) ++hits;
      continue;
    }
    if (free_slots.empty()) {
      const SlotId victim = EvictOne(policy);
      if (victim == kNoSlot) return -1;
      slot_of.erase(key_of[victim]);
      free_slots.push_back(victim);
    }
    const SlotId slot = free_slots.back();
    free_slots.pop_back();
    Insert(policy, slot, key);
    slot_of[key] = slot;
    key_of[slot] = key;
  }
  return hits;
}

// --- FIFO ---------------------------------------------------------------------------------

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

// --- CLOCK --------------------------------------------------------------------------------

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

// --- SIEVE --------------------------------------------------------------------------------

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
  sieve.OnInsert(4);                    // new objects at the head
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

// --- S3-FIFO ------------------------------------------------------------------------------

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

// --- ARC ----------------------------------------------------------------------------------

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

// --- W-TinyLFU ----------------------------------------------------------------------------

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

// --- LFU with aging ------------------------------------------------------------------------

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

// --- Scan resistance ----------------------------------------------------------------------

// A working set of 10 blocks reused 5 times, a scan of 60 never-reused blocks through a
// 20-slot cache, then the working set once more: how many of those 10 still hit.
int WorkingSetHitsAfterScan(const std::string& name) {
  constexpr uint32_t kSlots = 20;
  std::vector<uint64_t> keys;
  for (int round = 0; round < 5; ++round) {
    for (uint64_t k = 1; k <= 10; ++k) keys.push_back(k);
  }
  for (uint64_t k = 1000; k < 1060; ++k) keys.push_back(k);
  const size_t count_from = keys.size();
  for (uint64_t k = 1; k <= 10; ++k) keys.push_back(k);
  std::unique_ptr<EvictionPolicy> policy = Make(name, kSlots);
  return policy ? CountHits(*policy, kSlots, keys, count_from) : -1;
}

TEST(ScanResistance, ScanFlushesTheWorkingSetFromLruAndFifo) {
  EXPECT_EQ(WorkingSetHitsAfterScan("lru"), 0);
  EXPECT_EQ(WorkingSetHitsAfterScan("fifo"), 0);
}

TEST(ScanResistance, ScanDoesNotFlushTheWorkingSetFromScanResistantPolicies) {
  for (const char* name : {"s3fifo", "sieve", "arc", "tinylfu", "lfu"}) {
    EXPECT_EQ(WorkingSetHitsAfterScan(name), 10) << name;
  }
}

// --- Building blocks -----------------------------------------------------------------------

TEST(FrequencySketch, CountsSaturateAtFifteenAndAgeByHalving) {
  policy_internal::FrequencySketch sketch(100);  // halves after 1000 increments
  for (int i = 0; i < 20; ++i) sketch.Increment(7);
  EXPECT_EQ(sketch.Estimate(7), 15u);  // 4-bit counters
  EXPECT_EQ(sketch.Estimate(8), 0u);
  for (uint64_t k = 1000; k < 1000 + 979; ++k) sketch.Increment(k);  // the 999th increment
  EXPECT_EQ(sketch.Estimate(7), 15u);
  sketch.Increment(9);  // the 1000th: every counter halves
  EXPECT_EQ(sketch.Estimate(7), 7u);
}

TEST(FrequencySketch, TakesItsWidthAndAgingPeriodApart) {
  policy_internal::FrequencySketch sketch(/*width=*/4096, /*sample_size=*/3);
  sketch.Increment(1);
  sketch.Increment(1);
  EXPECT_EQ(sketch.Estimate(1), 2u);
  sketch.Increment(2);  // the third increment: every counter halves
  EXPECT_EQ(sketch.Estimate(1), 1u);
  EXPECT_EQ(sketch.Estimate(2), 0u);
  // 2,000 keys seen once each: in 4,096 counters a row, a key is overcounted only when it
  // collides in all four rows (about 2%); in 256 counters a row, nearly always.
  auto overcounted = [](uint32_t width) {
    policy_internal::FrequencySketch s(width, /*sample_size=*/1'000'000);
    for (uint64_t k = 0; k < 2000; ++k) s.Increment(k);
    int n = 0;
    for (uint64_t k = 0; k < 2000; ++k) n += s.Estimate(k) > 1 ? 1 : 0;
    return n;
  };
  EXPECT_LT(overcounted(4096), 100);
  EXPECT_GT(overcounted(256), 1900);
}

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

// --- The PickVictim contract, for every policy ----------------------------------------------

class EveryPolicy : public testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Names, EveryPolicy, testing::ValuesIn(AllPolicyNames()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST_P(EveryPolicy, PickVictimRespectsThePredicate) {
  std::unique_ptr<EvictionPolicy> policy = Make(GetParam(), 8);
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->PickVictim(All), std::nullopt);  // empty
  for (SlotId s = 0; s < 6; ++s) Insert(*policy, s, 100 + s);
  policy->OnAccess(1);
  policy->OnAccess(4);
  EXPECT_EQ(policy->PickVictim(None), std::nullopt);
  for (SlotId only = 0; only < 6; ++only) {
    EXPECT_EQ(policy->PickVictim([only](SlotId s) { return s == only; }), only) << only;
  }
  EXPECT_EQ(policy->PickVictim([](SlotId s) { return s >= 6; }), std::nullopt);  // untracked
  EXPECT_EQ(policy->PickVictim(None), std::nullopt);
  std::optional<SlotId> victim = policy->PickVictim(All);  // still usable
  ASSERT_TRUE(victim.has_value());
  EXPECT_LT(*victim, 6u);
}

TEST_P(EveryPolicy, RemovedSlotCanBeInsertedAgain) {
  std::unique_ptr<EvictionPolicy> policy = Make(GetParam(), 4);
  ASSERT_NE(policy, nullptr);
  for (SlotId s = 0; s < 4; ++s) Insert(*policy, s, 100 + s);
  policy->OnRemove(2);
  EXPECT_EQ(policy->PickVictim([](SlotId s) { return s == 2; }), std::nullopt);
  Insert(*policy, 2, 200);
  EXPECT_EQ(policy->PickVictim([](SlotId s) { return s == 2; }), SlotId{2});
  policy->OnAccess(2);
  for (SlotId s = 0; s < 4; ++s) policy->OnRemove(s);
  EXPECT_EQ(policy->PickVictim(All), std::nullopt);
  policy->OnInsertCold(3);
  EXPECT_EQ(policy->PickVictim(All), SlotId{3});
  policy->OnRemove(3);
  Insert(*policy, 3, 103);  // its key may be a ghost now: whatever list, it is tracked
  EXPECT_EQ(policy->PickVictim(All), SlotId{3});
}

TEST_P(EveryPolicy, RandomizedOperationsKeepThePolicyConsistent) {
  for (uint32_t num_slots : {1u, 2u, 7u, 64u}) {
    SCOPED_TRACE(num_slots);
    std::unique_ptr<EvictionPolicy> policy = Make(GetParam(), num_slots);
    ASSERT_NE(policy, nullptr);
    std::mt19937_64 rng(num_slots * 7919 + 1);
    std::vector<bool> tracked(num_slots, false);
    std::vector<SlotId> tracked_list;  // for random choice
    auto untrack = [&](SlotId s) {
      tracked[s] = false;
      tracked_list.erase(std::find(tracked_list.begin(), tracked_list.end(), s));
    };
    auto random_tracked = [&] { return tracked_list[rng() % tracked_list.size()]; };
    for (int op = 0; op < 20000; ++op) {
      const int kind = static_cast<int>(rng() % 100);
      if (kind < 30) {  // insert into a free slot, usually announcing a key from a small set
        if (tracked_list.size() == num_slots) continue;
        SlotId s;
        do {
          s = static_cast<SlotId>(rng() % num_slots);
        } while (tracked[s]);
        if (rng() % 8 != 0) policy->SetNextKey(rng() % (3 * num_slots + 3));
        if (rng() % 6 == 0) {
          policy->OnInsertCold(s);
        } else {
          policy->OnInsert(s);
        }
        tracked[s] = true;
        tracked_list.push_back(s);
      } else if (kind < 60) {
        if (!tracked_list.empty()) policy->OnAccess(random_tracked());
      } else if (kind < 70) {
        if (!tracked_list.empty()) {
          const SlotId s = random_tracked();
          policy->OnRemove(s);
          untrack(s);
        }
      } else {  // pick, with a random predicate or all, and usually evict what is picked
        const uint64_t salt = rng();
        const bool all = rng() % 2 == 0;
        auto evictable = [&](SlotId s) {
          return all || ((s * 0x9e3779b97f4a7c15ULL) ^ salt) % 3 != 0;
        };
        const bool any = std::any_of(tracked_list.begin(), tracked_list.end(), evictable);
        std::optional<SlotId> victim = policy->PickVictim(evictable);
        if (rng() % 4 == 0) victim = policy->PickVictim(evictable);  // asked twice
        ASSERT_EQ(victim.has_value(), any) << "op " << op;
        if (!victim) continue;
        ASSERT_LT(*victim, num_slots);
        ASSERT_TRUE(tracked[*victim]) << "op " << op << ": untracked slot " << *victim;
        ASSERT_TRUE(evictable(*victim)) << "op " << op;
        if (rng() % 4 != 0) {
          policy->OnRemove(*victim);
          untrack(*victim);
        }
      }
    }
    // Drain: with everything evictable, every tracked slot comes out exactly once.
    while (!tracked_list.empty()) {
      std::optional<SlotId> victim = policy->PickVictim(All);
      ASSERT_TRUE(victim.has_value());
      ASSERT_TRUE(tracked[*victim]);
      policy->OnRemove(*victim);
      untrack(*victim);
    }
    EXPECT_EQ(policy->PickVictim(All), std::nullopt);
  }
}

TEST(EvictionPolicyFactory, EveryNameConstructsAndReportsItsName) {
  for (const std::string& name : AllPolicyNames()) {
    std::unique_ptr<EvictionPolicy> policy = Make(name, 16);
    ASSERT_NE(policy, nullptr) << name;
    EXPECT_EQ(std::string(policy->name()), name);
  }
  absl::Status s = MakeEvictionPolicy("belady", 16).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& name : AllPolicyNames()) {
    EXPECT_NE(s.message().find(name), absl::string_view::npos) << name;
  }
}

}  // namespace
}  // namespace kvtier
