// tests/engine/eviction/eviction_policy_test.cc — what every policy promises (the PickVictim
// contract, a randomized consistency check, scan resistance where claimed) and MakeEvictionPolicy.

#include "engine/eviction/eviction_policy.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "tests/engine/eviction/policy_driver.h"

namespace kvtier {
namespace {

using policy_test::All;
using policy_test::CountHits;
using policy_test::Insert;
using policy_test::None;

const std::vector<std::string>& AllPolicyNames() {
  static const std::vector<std::string> names = {"lru", "fifo",    "clock", "sieve",   "s3fifo",
                                                 "arc", "tinylfu", "lfu",   "adaptive"};
  return names;
}

std::unique_ptr<EvictionPolicy> Make(const std::string& name, uint32_t num_slots) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy(name, num_slots);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? std::move(*policy) : nullptr;
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
  for (const char* name : {"s3fifo", "sieve", "arc", "tinylfu", "lfu", "adaptive"}) {
    EXPECT_EQ(WorkingSetHitsAfterScan(name), 10) << name;
  }
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

TEST(EvictionPolicyFactory, UnknownNameIsAnErrorListingKnownOnes) {
  EXPECT_TRUE(MakeEvictionPolicy("lru", 8).ok());
  absl::Status s = MakeEvictionPolicy("belady", 8).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("belady"), absl::string_view::npos);
  EXPECT_NE(s.message().find("lru"), absl::string_view::npos);
}

}  // namespace
}  // namespace kvtier
