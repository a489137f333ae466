// tests/engine/eviction/adaptive_policy_test.cc — the adaptive policy: its shadow caches count
// what each expert alone would hit (prefix hits, played root first), sampling bounds their
// size, only the leader walks the engine's predicate, and the leader follows the expert whose
// shadow hits most.

#include "engine/eviction/adaptive_policy.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "engine/eviction/lru_policy.h"
#include "engine/eviction/shadow_experts.h"
#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_internal::ShadowExperts;
using policy_test::CountHits;
using policy_test::EvictOne;
using policy_test::Insert;

constexpr const char* kLruArc[] = {"lru", "arc"};

// A stream over 40 keys, skewed, long enough to evict a lot from 16 slots.
std::vector<uint64_t> Stream(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> keys;
  for (int i = 0; i < 5000; ++i) {
    keys.push_back(rng() % 4 == 0 ? rng() % 40 : rng() % 10);
  }
  return keys;
}

TEST(ShadowExperts, AtFullRateEachShadowHitsWhatItsPolicyAloneHits) {
  const std::vector<uint64_t> keys = Stream(7);
  ShadowExperts shadows(kLruArc, /*num_slots=*/16, /*max_shadow_slots=*/16);
  EXPECT_EQ(shadows.sample_rate(), 1.0);
  uint64_t played = 0;
  for (uint64_t k : keys) played += shadows.Reference(k, /*depth=*/0);
  played += shadows.Reference(~0ULL, 0);  // plays the last one; ~0 itself is held
  EXPECT_EQ(played, keys.size());
  for (int e = 0; e < 2; ++e) {
    std::unique_ptr<EvictionPolicy> alone = *MakeEvictionPolicy(kLruArc[e], 16);
    const int hits = CountHits(*alone, 16, keys, 0);
    EXPECT_EQ(shadows.hits(e), static_cast<uint64_t>(hits)) << kLruArc[e];
    // Every reference at depth 0 is a request of its own: a hit is a prefix hit.
    EXPECT_EQ(shadows.prefix_hits(e), shadows.hits(e));
  }
}

TEST(ShadowExperts, APrefixHitNeedsEveryShallowerBlockPlayedRootFirst) {
  const char* lru[] = {"lru"};
  ShadowExperts shadows(lru, 8, 8);
  // Request A stores keys 10, 11, 12 at depths 0..2; nothing is played until B starts.
  EXPECT_EQ(shadows.Reference(10, 0), 0u);
  EXPECT_EQ(shadows.Reference(11, 1), 0u);
  EXPECT_EQ(shadows.Reference(12, 2), 0u);
  // Request B: root 10 again, then depth 2 (key 12, known) before depth 1 (key 40, new), as a
  // real cache's hits-then-inserts order can give them.
  EXPECT_EQ(shadows.Reference(10, 0), 3u);  // plays A: three misses
  EXPECT_EQ(shadows.hits(0), 0u);
  shadows.Reference(12, 2);
  shadows.Reference(40, 1);
  EXPECT_EQ(shadows.Reference(99, 0), 3u);  // plays B in depth order: 10, 40, 12
  EXPECT_EQ(shadows.references(), 6u);
  EXPECT_EQ(shadows.hits(0), 2u);         // 10 and 12
  EXPECT_EQ(shadows.prefix_hits(0), 1u);  // 12 sits behind the miss at depth 1
  EXPECT_TRUE(shadows.Holds(0, 40));
}

TEST(ShadowExperts, ATierLargerThanTheShadowIsSampled) {
  ShadowExperts shadows(kLruArc, /*num_slots=*/4096, /*max_shadow_slots=*/256);
  EXPECT_EQ(shadows.shadow_slots(), 256u);
  EXPECT_DOUBLE_EQ(shadows.sample_rate(), 1.0 / 16);
  for (uint64_t k = 0; k < 64000; ++k) shadows.Reference(k * 0x9e3779b97f4a7c15ULL, 0);
  // About 1/16 of the distinct keys are in the sample.
  EXPECT_NEAR(static_cast<double>(shadows.references()) / 64000, 1.0 / 16, 0.01);
  EXPECT_EQ(shadows.hits(0), 0u);
}

// A request's root need not be in the sample: its sampled blocks still score prefix hits
// (before the fix, an unsampled shared root left every expert at 0 prefix hits, so the leader
// never changed).
TEST(ShadowExperts, PrefixHitsCountWhenTheRootIsNotSampled) {
  ShadowExperts shadows(kLruArc, /*num_slots=*/4096, /*max_shadow_slots=*/256);
  uint64_t root = 1, deep = 2;
  while (shadows.Sampled(root)) ++root;
  while (!shadows.Sampled(deep)) ++deep;
  for (int r = 0; r < 3; ++r) {
    shadows.Reference(root, 0);
    shadows.Reference(deep, 1);
  }
  shadows.Reference(root, 0);  // plays the third request
  EXPECT_EQ(shadows.references(), 3u);
  for (int e = 0; e < 2; ++e) {
    EXPECT_EQ(shadows.hits(e), 2u);
    EXPECT_EQ(shadows.prefix_hits(e), 2u) << kLruArc[e];
  }
}

TEST(AdaptivePolicy, OnlyTheLeaderWalksThePredicate) {
  AdaptivePolicy::Tuning t;
  t.first = 1;  // lru
  AdaptivePolicy policy(8, t);
  LruPolicy lru(8);
  for (SlotId s = 0; s < 8; ++s) {
    Insert(policy, s, 100 + s);
    Insert(lru, s, 100 + s);
  }
  for (SlotId s : {3u, 1u, 0u}) {
    policy.OnAccess(s);
    lru.OnAccess(s);
  }
  std::vector<SlotId> seen_adaptive, seen_lru;
  auto v1 = policy.PickVictim([&](SlotId s) {
    seen_adaptive.push_back(s);
    return s == 0;
  });
  auto v2 = lru.PickVictim([&](SlotId s) {
    seen_lru.push_back(s);
    return s == 0;
  });
  EXPECT_EQ(v1, v2);
  EXPECT_EQ(seen_adaptive, seen_lru);
  EXPECT_EQ(policy.leader(), 1);
}

// A loop over 20 keys in 16 slots: LRU misses every time, the others keep most of the loop.
TEST(AdaptivePolicy, TheLeaderFollowsTheShadowThatHitsMost) {
  AdaptivePolicy::Tuning t;
  t.first = 1;  // start on lru, the worst expert here
  AdaptivePolicy policy(16, t);
  std::vector<uint64_t> keys;
  for (int i = 0; i < 4000; ++i) keys.push_back(1000 + i % 20);
  const int hits = CountHits(policy, 16, keys, 2000);
  EXPECT_NE(policy.leader(), 1);
  EXPECT_GE(policy.switches(), 1u);
  EXPECT_GT(policy.epochs(), 100u);
  LruPolicy lru(16);
  EXPECT_EQ(CountHits(lru, 16, keys, 2000), 0);
  EXPECT_GE(hits, 900);  // of 2000 counted (the leader, arc here, keeps half the loop)
}

// Only the leader is live: a switch rebuilds the new one from the wrapper's per-slot records.
// It must then track exactly the slots the cache holds (each offered once when drained), and
// keep working as a cache.
TEST(AdaptivePolicy, ASwitchRebuildsTheNewLeaderOverEveryTrackedSlot) {
  AdaptivePolicy::Tuning t;
  t.first = 1;  // lru, the worst on a loop: the policy switches away from it
  AdaptivePolicy policy(16, t);
  std::vector<uint64_t> keys;
  for (int i = 0; i < 4000; ++i) keys.push_back(1000 + i % 20);
  CountHits(policy, 16, keys, 0);
  ASSERT_GE(policy.switches(), 1u);
  ASSERT_NE(policy.leader(), 1);
  policy.OnRemove(5);  // a plain removal: the slot is no longer offered
  std::vector<bool> seen(16, false);
  for (int i = 0; i < 15; ++i) {
    const SlotId v = EvictOne(policy);
    ASSERT_NE(v, kNoSlot);
    EXPECT_NE(v, 5u);
    EXPECT_FALSE(seen[v]) << v;
    seen[v] = true;
  }
  EXPECT_FALSE(policy.PickVictim([](SlotId) { return true; }).has_value());
}

TEST(AdaptivePolicy, TheSameEventsGiveTheSameVictims) {
  const std::vector<uint64_t> keys = Stream(11);
  AdaptivePolicy a(16), b(16);
  EXPECT_EQ(CountHits(a, 16, keys, 0), CountHits(b, 16, keys, 0));
  EXPECT_EQ(a.leader(), b.leader());
  EXPECT_EQ(a.switches(), b.switches());
}

TEST(AdaptivePolicy, ColdInsertsAreNotReferences) {
  AdaptivePolicy policy(8);
  for (SlotId s = 0; s < 4; ++s) {
    policy.SetNextKey(500 + s);
    policy.OnInsertCold(s);
  }
  Insert(policy, 4, 600);  // a reference, held until the next request starts
  Insert(policy, 5, 601);  // depth 0 (no SetNextDepth): plays 600
  EXPECT_EQ(policy.shadows().references(), 1u);
  policy.OnAccess(0);  // a cold block used: a reference (plays 601)
  policy.OnAccess(4);  // plays key 500's access
  EXPECT_EQ(policy.shadows().references(), 3u);
  EXPECT_EQ(policy.shadows().hits(0), 0u);
}

}  // namespace
}  // namespace kvtier
