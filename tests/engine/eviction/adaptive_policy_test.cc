// tests/engine/eviction/adaptive_policy_test.cc — the adaptive policy: duels decide regret,
// only the leader walks the engine's predicate, runs are reproducible, and the learner
// (ExpertLearner) moves weights and its learning rate as documented.

#include "engine/eviction/adaptive_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "engine/eviction/arc_policy.h"
#include "engine/eviction/expert_learner.h"
#include "engine/eviction/lfu_policy.h"
#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_internal::ExpertLearner;
using policy_test::All;
using policy_test::CountHits;
using policy_test::EvictOne;
using policy_test::Insert;

// Three slots where the experts disagree: slot 0 (key 100) was used 4 times but long ago,
// slot 2 (key 102) is hot, slot 1 (key 101) was just inserted once. ARC evicts slot 1 (T1's
// LRU, T1 larger than p = 0); LFU evicts slot 0 (idle 43 ticks over class 4's 16 beats slot
// 1's idle 1 over class 1's 1).
template <typename Policy>
void Disagree(Policy& policy) {
  Insert(policy, 0, 100);
  for (int i = 0; i < 3; ++i) policy.OnAccess(0);
  Insert(policy, 2, 102);
  for (int i = 0; i < 40; ++i) policy.OnAccess(2);
  Insert(policy, 1, 101);
}

TEST(AdaptivePolicy, TheExpertsDisagreeInTheFixture) {
  ArcPolicy arc(3);
  AgedLfuPolicy lfu(3);
  Disagree(arc);
  Disagree(lfu);
  EXPECT_EQ(arc.PeekVictim(), SlotId{1});
  EXPECT_EQ(lfu.PeekVictim(), SlotId{0});
  EXPECT_EQ(arc.PickVictim(All), SlotId{1});
  EXPECT_EQ(lfu.PickVictim(All), SlotId{0});
}

TEST(AdaptivePolicy, TheEvictedKeyComingBackFirstBlamesTheLeader) {
  AdaptivePolicy policy(3);
  Disagree(policy);
  EXPECT_EQ(policy.leader(), AdaptivePolicy::kArc);  // a tie goes to ARC
  EXPECT_EQ(EvictOne(policy), SlotId{1});            // ARC's choice; LFU wanted slot 0
  EXPECT_EQ(policy.duels_opened(), 1u);
  EXPECT_EQ(policy.duels_open(), 1u);
  Insert(policy, 1, 101);  // the evicted block is wanted again before slot 0
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kArc), 1u);
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kLfu), 0u);
  EXPECT_EQ(policy.duels_open(), 0u);
  EXPECT_LT(policy.learner().weight(AdaptivePolicy::kArc), 0.5);
  EXPECT_EQ(policy.leader(), AdaptivePolicy::kLfu);
  EXPECT_EQ(policy.PickVictim(All), SlotId{0});  // now LFU's order
}

TEST(AdaptivePolicy, TheFollowersChoiceUsedFirstBlamesTheFollower) {
  AdaptivePolicy policy(3);
  Disagree(policy);
  EXPECT_EQ(EvictOne(policy), SlotId{1});
  policy.OnAccess(0);  // LFU's choice is wanted before the evicted block
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kLfu), 1u);
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kArc), 0u);
  EXPECT_GT(policy.learner().weight(AdaptivePolicy::kArc), 0.5);
  EXPECT_EQ(policy.leader(), AdaptivePolicy::kArc);
  Insert(policy, 1, 101);  // decided already: no second verdict
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kArc), 0u);
}

TEST(AdaptivePolicy, ADuelWhoseOtherSideLeavesClosesWithoutAVerdict) {
  AdaptivePolicy policy(3);
  Disagree(policy);
  EXPECT_EQ(EvictOne(policy), SlotId{1});
  policy.OnRemove(0);  // b erased, not evicted
  EXPECT_EQ(policy.duels_open(), 0u);
  Insert(policy, 1, 101);
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kArc), 0u);
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kLfu), 0u);
  EXPECT_EQ(policy.learner().weight(AdaptivePolicy::kArc), 0.5);
}

TEST(AdaptivePolicy, AColdReturnClosesTheDuelWithoutAVerdict) {
  AdaptivePolicy policy(3);
  Disagree(policy);
  EXPECT_EQ(EvictOne(policy), SlotId{1});
  policy.SetNextKey(101);
  policy.OnInsertCold(1);
  EXPECT_EQ(policy.duels_open(), 0u);
  EXPECT_EQ(policy.duels_lost(AdaptivePolicy::kArc), 0u);
}

TEST(AdaptivePolicy, AgreementOpensNoDuelAndAPlainRemovalIsNotAnEviction) {
  AdaptivePolicy policy(4);
  for (SlotId s = 0; s < 4; ++s) Insert(policy, s, 100 + s);
  EXPECT_EQ(EvictOne(policy), SlotId{0});  // both experts: the oldest one-time block
  EXPECT_EQ(policy.duels_opened(), 0u);
  ASSERT_EQ(policy.PickVictim(All), SlotId{1});
  policy.OnRemove(2);  // not the pick: no duel, and slot 1 stays the pick
  EXPECT_EQ(policy.duels_opened(), 0u);
  EXPECT_EQ(policy.PickVictim(All), SlotId{1});
}

// Feeds the same events to the adaptive policy and to both experts alone; records the slots
// each PickVictim offers to the predicate.
TEST(AdaptivePolicy, OnlyTheLeaderWalksThePredicate) {
  AdaptivePolicy policy(3);
  ArcPolicy arc(3);
  AgedLfuPolicy lfu(3);
  Disagree(policy);
  Disagree(arc);
  Disagree(lfu);
  auto offered = [](EvictionPolicy& p) {
    std::vector<SlotId> seen;
    (void)p.PickVictim([&](SlotId s) {
      seen.push_back(s);
      return true;  // ARC stops at its first offer; LFU offers each class's oldest
    });
    return seen;
  };
  EXPECT_EQ(offered(policy), offered(arc));
  EXPECT_NE(offered(arc), offered(lfu));
  // Make LFU the leader: ARC's victim comes back first.
  EXPECT_EQ(EvictOne(policy), SlotId{1});
  Insert(policy, 1, 101);
  ASSERT_EQ(policy.leader(), AdaptivePolicy::kLfu);
  ASSERT_EQ(EvictOne(arc), SlotId{1});
  Insert(arc, 1, 101);
  ASSERT_EQ(lfu.PickVictim(All), SlotId{0});
  lfu.OnRemove(1);  // lfu sees what the adaptive policy's LFU expert saw
  Insert(lfu, 1, 101);
  EXPECT_EQ(offered(policy), offered(lfu));
}

// A random event stream (inserts with keys from a small universe, accesses, removals, picks
// with a random predicate, asked twice now and then): the victims and the learner's state.
struct RandomRunResult {
  std::vector<SlotId> victims;
  double weight = 0;
  double rate = 0;
  uint64_t duels = 0;
  uint64_t max_open = 0;
};

RandomRunResult RandomRun(uint32_t num_slots, uint64_t seed) {
  AdaptivePolicy policy(num_slots);
  std::mt19937_64 rng(seed);
  std::vector<bool> tracked(num_slots, false);
  std::vector<SlotId> tracked_list;
  RandomRunResult run;
  for (int op = 0; op < 20000; ++op) {
    const int kind = static_cast<int>(rng() % 100);
    if (kind < 40) {
      if (tracked_list.size() == num_slots) {
        const std::optional<SlotId> v = policy.PickVictim(All);
        if (!v.has_value()) break;
        if (rng() % 4 == 0) (void)policy.PickVictim(All);
        run.victims.push_back(*v);
        policy.OnRemove(*v);
        tracked[*v] = false;
        tracked_list.erase(std::find(tracked_list.begin(), tracked_list.end(), *v));
      }
      SlotId s;
      do {
        s = static_cast<SlotId>(rng() % num_slots);
      } while (tracked[s]);
      // Keys skewed toward small values: some come back often, most rarely.
      const uint64_t key = (rng() % 4 == 0) ? rng() % 8 : rng() % (8 * num_slots);
      Insert(policy, s, key);
      tracked[s] = true;
      tracked_list.push_back(s);
    } else if (kind < 95) {
      if (!tracked_list.empty()) policy.OnAccess(tracked_list[rng() % tracked_list.size()]);
    } else if (!tracked_list.empty()) {
      const SlotId s = tracked_list[rng() % tracked_list.size()];
      policy.OnRemove(s);
      tracked[s] = false;
      tracked_list.erase(std::find(tracked_list.begin(), tracked_list.end(), s));
    }
    run.max_open = std::max(run.max_open, policy.duels_open());
  }
  run.weight = policy.learner().weight(AdaptivePolicy::kArc);
  run.rate = policy.learner().learning_rate();
  run.duels = policy.duels_opened();
  return run;
}

TEST(AdaptivePolicy, TheSameEventsGiveTheSameVictimsAndWeights) {
  const RandomRunResult a = RandomRun(32, 7);
  const RandomRunResult b = RandomRun(32, 7);
  EXPECT_GT(a.duels, 100u);  // the stream does exercise the duels
  EXPECT_EQ(a.victims, b.victims);
  EXPECT_EQ(a.weight, b.weight);
  EXPECT_EQ(a.rate, b.rate);
}

TEST(AdaptivePolicy, OpenDuelsNeverExceedTheSlots) {
  for (uint32_t slots : {1u, 4u, 32u}) {
    const RandomRunResult r = RandomRun(slots, slots);
    EXPECT_LE(r.max_open, slots) << slots;
  }
}

// Phase A favours frequency: 4 hot keys, each back after a burst of more keys used exactly
// twice in a row than the cache holds. The pairs fill ARC's T2 (seen twice) and push the hot
// keys out of it; LFU ranks by count (the pairs' 2 against the hot keys' 3 or more) and keeps
// the hot keys. Phase B favours
// recency: a working set of 3/4 of the cache, replaced now and then, no key reused across
// working sets; LFU's old counts hold the stale set.
std::vector<uint64_t> ShiftingStream(uint32_t slots, std::vector<size_t>* phase_ends) {
  std::mt19937_64 rng(11);
  std::vector<uint64_t> keys;
  uint64_t fresh = 1u << 20;
  for (int round = 0; round < 300; ++round) {
    for (uint32_t pair = 0; pair < slots + slots / 4; ++pair) {
      keys.push_back(fresh);
      keys.push_back(fresh++);
    }
    for (uint64_t hot = 1; hot <= 4; ++hot) keys.push_back(hot);
  }
  phase_ends->push_back(keys.size());
  for (int set = 0; set < 100; ++set) {
    const uint64_t base = 1000000 + static_cast<uint64_t>(set) * slots;
    for (uint32_t i = 0; i < 4 * slots; ++i) {
      keys.push_back(rng() % 10 == 0 ? fresh++ : base + rng() % (slots * 3 / 4));
    }
  }
  phase_ends->push_back(keys.size());
  return keys;
}

TEST(AdaptivePolicy, DuelsPickTheExpertThatWinsEachPhase) {
  constexpr uint32_t kSlots = 16;
  std::vector<size_t> ends;
  const std::vector<uint64_t> keys = ShiftingStream(kSlots, &ends);
  // Hits per phase for each fixed expert and for the adaptive policy.
  auto phase_hits = [&](const char* name) {
    std::vector<int> hits;
    std::unique_ptr<EvictionPolicy> p = *MakeEvictionPolicy(name, kSlots);
    const int a =
        CountHits(*p, kSlots, std::vector<uint64_t>(keys.begin(), keys.begin() + ends[0]), 0);
    hits.push_back(a);
    std::unique_ptr<EvictionPolicy> q = *MakeEvictionPolicy(name, kSlots);
    hits.push_back(CountHits(*q, kSlots, keys, ends[0]));
    return hits;
  };
  const std::vector<int> arc = phase_hits("arc");
  const std::vector<int> lfu = phase_hits("lfu");
  // The stream has a real gap to find in each phase (phase A: the pairs hit under both).
  ASSERT_GT(lfu[0], arc[0] + 200) << lfu[0] << " vs " << arc[0];
  ASSERT_GT(arc[1], lfu[1] + 200) << arc[1] << " vs " << lfu[1];

  AdaptivePolicy policy(kSlots);
  const int a_hits =
      CountHits(policy, kSlots, std::vector<uint64_t>(keys.begin(), keys.begin() + ends[0]), 0);
  EXPECT_EQ(policy.leader(), AdaptivePolicy::kLfu);
  EXPECT_GE(a_hits, arc[0]);
  AdaptivePolicy whole(kSlots);
  const int b_hits = CountHits(whole, kSlots, keys, ends[0]);
  EXPECT_EQ(whole.leader(), AdaptivePolicy::kArc);
  EXPECT_GE(b_hits, lfu[1]);
}

// --- ExpertLearner --------------------------------------------------------------------------

TEST(ExpertLearner, RegretMovesTheWeightAndTheClampKeepsARecoveryBounded) {
  ExpertLearner learner(100);
  EXPECT_EQ(learner.leader(), 0);  // tie
  const double eta = learner.learning_rate();
  EXPECT_DOUBLE_EQ(eta, std::sqrt(2 * std::log(2.0) / 100));
  learner.Regret(0, 1.0);
  EXPECT_EQ(learner.leader(), 1);
  EXPECT_NEAR(learner.weight(0), std::exp(-eta) / (1 + std::exp(-eta)), 1e-12);
  EXPECT_DOUBLE_EQ(learner.weight(0) + learner.weight(1), 1.0);
  for (int i = 0; i < 10000; ++i) learner.Regret(0, 1.0);
  EXPECT_DOUBLE_EQ(learner.weight(0), ExpertLearner::kMinWeight);
  // From the clamp, expert 0 leads again after about ln(99) / eta regrets of expert 1.
  int regrets = 0;
  while (learner.leader() != 0) {
    learner.Regret(1, 1.0);
    ++regrets;
    ASSERT_LT(regrets, 1000);
  }
  EXPECT_NEAR(regrets, std::log(99.0) / eta, 2);
}

TEST(ExpertLearner, TheLearningRateFollowsTheHitRatioAndResetsAfterTenFlatWindows) {
  // A short window, so eta_0 (0.372) is large enough for its steps to survive the rounding
  // to 3 decimals.
  constexpr uint32_t kWindow = 10;
  ExpertLearner learner(kWindow);
  const double eta0 = learner.learning_rate();
  auto window = [&](uint32_t hits) {
    for (uint32_t i = 0; i < kWindow; ++i) learner.CountRequest(i < hits);
  };
  window(1);  // the hit ratio rose (from 0) as the rate rose (from 0): keep going up
  EXPECT_EQ(learner.windows(), 1u);
  EXPECT_GT(learner.learning_rate(), eta0);
  window(2);  // up again, same direction
  const double high = learner.learning_rate();
  EXPECT_GT(high, eta0);
  window(0);  // the hit ratio fell while the rate rose: turn back down
  EXPECT_LT(learner.learning_rate(), high);
  // Flat at zero: the rate holds for 9 windows (d_eta is nonzero once, which only changes
  // the sign test, not the rate) and returns to eta_0 at the 10th.
  for (int i = 0; i < 9; ++i) {
    window(0);
    EXPECT_NE(learner.learning_rate(), eta0) << i;
  }
  window(0);
  EXPECT_DOUBLE_EQ(learner.learning_rate(), eta0);
}

TEST(ExpertLearner, AFallWithoutDirectionTakesARandomStepOfAQuarter) {
  constexpr uint32_t kWindow = 1000;
  ExpertLearner learner(kWindow);
  auto window = [&](uint32_t hits) {
    for (uint32_t i = 0; i < kWindow; ++i) learner.CountRequest(i < hits);
  };
  window(500);
  window(500);  // flat: the rate holds, so the next window's d_eta is 0
  const double before = learner.learning_rate();
  window(400);  // fell, no direction to follow: x1.25 or x0.75
  const double ratio = learner.learning_rate() / before;
  EXPECT_TRUE(std::abs(ratio - 1.25) < 1e-9 || std::abs(ratio - 0.75) < 1e-9) << ratio;
}

}  // namespace
}  // namespace kvtier
