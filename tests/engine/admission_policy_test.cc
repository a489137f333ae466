// tests/engine/admission_policy_test.cc — disk admission, as a specification.
//
// The frequency filter admits a block from its min_seen-th sighting on, does not let distinct
// keys inflate each other (beyond the sketch's small error), and forgets with age; the write
// budget admits one second of bytes at once and then what time refills; rejections are
// counted per reason; bad options are refused naming the field; concurrent callers are safe.

#include "engine/admission_policy.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

constexpr size_t kMB = 1000 * 1000;

std::unique_ptr<AdmissionPolicy> MustCreate(const AdmissionOptions& options) {
  absl::StatusOr<std::unique_ptr<AdmissionPolicy>> p = AdmissionPolicy::Create(options);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

BlockKey RandomKey(std::mt19937_64& rng) { return BlockKey{rng(), rng()}; }

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(AdmissionPolicy, MinSeenThreeAdmitsOnlyOnTheThirdSighting) {
  AdmissionOptions o;
  o.min_seen = 3;
  auto policy = MustCreate(o);
  const BlockKey key{1, 2};
  EXPECT_FALSE(policy->Admit(key, 4096, kT0));  // never seen
  policy->Record(key);
  EXPECT_FALSE(policy->Admit(key, 4096, kT0));
  policy->Record(key);
  EXPECT_FALSE(policy->Admit(key, 4096, kT0));
  policy->Record(key);
  EXPECT_TRUE(policy->Admit(key, 4096, kT0));
  EXPECT_TRUE(policy->Admit(key, 4096, kT0));  // admitting is not forgetting
}

TEST(AdmissionPolicy, MinSeenOneAdmitsUnseenBlocks) {
  auto policy = MustCreate(AdmissionOptions{});
  EXPECT_TRUE(policy->Admit(BlockKey{3, 4}, 2 << 20, kT0));
  EXPECT_EQ(policy->stats().admitted, 1u);
}

TEST(AdmissionPolicy, EstimateCountsSightingsAndSaturatesAtFifteen) {
  auto policy = MustCreate(AdmissionOptions{});
  const BlockKey key{5, 6};
  EXPECT_EQ(policy->Estimate(key), 0u);
  for (uint32_t i = 1; i <= 20; ++i) {
    policy->Record(key);
    EXPECT_EQ(policy->Estimate(key), std::min(i, 15u));
  }
}

TEST(AdmissionPolicy, DistinctKeysDoNotInflateEachOther) {
  AdmissionOptions o;
  o.sketch_width = 1 << 16;
  auto policy = MustCreate(o);
  std::mt19937_64 rng(7);
  std::vector<BlockKey> seen(5000);
  for (BlockKey& k : seen) {
    k = RandomKey(rng);
    policy->Record(k);
  }
  int overcounted = 0;
  for (const BlockKey& k : seen) {
    const uint32_t e = policy->Estimate(k);
    ASSERT_GE(e, 1u);  // never below the true count
    if (e > 1) ++overcounted;
  }
  int phantom = 0;
  for (int i = 0; i < 5000; ++i) {
    if (policy->Estimate(RandomKey(rng)) > 0) ++phantom;
  }
  // 5000 keys in 65536 counters per row: a row collides with probability ~7.6%, all four
  // rows ~3e-5. Allow generous slack; a broken hash would be far above it.
  EXPECT_LE(overcounted, 10);
  EXPECT_LE(phantom, 10);
}

TEST(AdmissionPolicy, KeysDifferingInOneWordStillHashApart) {
  // Keys need not be uniform for the sketch to work: counting {0, i} must not pile up.
  AdmissionOptions o;
  o.sketch_width = 1 << 12;
  auto policy = MustCreate(o);
  for (uint64_t i = 0; i < 200; ++i) policy->Record(BlockKey{0, i});
  int overcounted = 0;
  for (uint64_t i = 0; i < 200; ++i) overcounted += policy->Estimate(BlockKey{0, i}) > 1;
  EXPECT_LE(overcounted, 2);
}

TEST(AdmissionPolicy, AgingHalvesCounts) {
  AdmissionOptions o;
  o.aging_window = 10;  // every 10th Record halves every counter
  o.min_seen = 4;
  auto policy = MustCreate(o);
  const BlockKey key{7, 8};
  for (int i = 0; i < 9; ++i) policy->Record(key);
  EXPECT_EQ(policy->Estimate(key), 9u);
  policy->Record(key);  // the 10th: 10 halved
  EXPECT_EQ(policy->Estimate(key), 5u);
  EXPECT_TRUE(policy->Admit(key, 1, kT0));
  // Other traffic ages the key out: 10 more records halve it again, twice.
  const BlockKey other{9, 10};
  for (int i = 0; i < 20; ++i) policy->Record(other);
  EXPECT_EQ(policy->Estimate(key), 1u);  // 5 -> 2 -> 1
  EXPECT_FALSE(policy->Admit(key, 1, kT0));
  EXPECT_EQ(policy->stats().rejected_frequency, 1u);
}

TEST(AdmissionPolicy, WriteBudgetAdmitsOneSecondOfBytesThenWhatTimeRefills) {
  AdmissionOptions o;
  o.write_budget_mbps = 10;
  auto policy = MustCreate(o);
  std::mt19937_64 rng(11);
  auto admitted_at = [&](absl::Time now, int tries) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += policy->Admit(RandomKey(rng), kMB, now);
    return n;
  };
  EXPECT_EQ(admitted_at(kT0, 20), 10);  // the bucket starts full: one second = 10 MB
  EXPECT_EQ(admitted_at(kT0, 5), 0);    // same instant: nothing more
  EXPECT_EQ(admitted_at(kT0 + absl::Milliseconds(150), 5), 1);  // 1.5 MB refilled
  // Idle for a minute: the bucket holds one second, not sixty.
  EXPECT_EQ(admitted_at(kT0 + absl::Seconds(60), 100), 10);
  const AdmissionStats s = policy->stats();
  EXPECT_EQ(s.admitted, 21u);
  EXPECT_EQ(s.rejected_budget, 10u + 5u + 4u + 90u);
  EXPECT_EQ(s.rejected_frequency, 0u);
}

TEST(AdmissionPolicy, TimeRunningBackwardsRefillsNothing) {
  AdmissionOptions o;
  o.write_budget_mbps = 1;
  auto policy = MustCreate(o);
  EXPECT_TRUE(policy->Admit(BlockKey{1, 1}, kMB, kT0));
  EXPECT_FALSE(policy->Admit(BlockKey{1, 1}, kMB, kT0 - absl::Hours(1)));
  EXPECT_FALSE(policy->Admit(BlockKey{1, 1}, kMB, kT0 + absl::Milliseconds(500)));
  EXPECT_TRUE(policy->Admit(BlockKey{1, 1}, kMB, kT0 + absl::Seconds(1)));
}

TEST(AdmissionPolicy, BlockLargerThanTheBucketIsAdmittedWhenTheBucketIsFull) {
  AdmissionOptions o;
  o.write_budget_mbps = 10;
  auto policy = MustCreate(o);
  const BlockKey key{2, 2};
  EXPECT_TRUE(policy->Admit(key, 25 * kMB, kT0));  // full bucket: admitted, 15 MB in debt
  EXPECT_FALSE(policy->Admit(key, kMB, kT0 + absl::Seconds(1)));         // -5 MB
  EXPECT_TRUE(policy->Admit(key, kMB, kT0 + absl::Milliseconds(1600)));  // +1 MB
  EXPECT_FALSE(policy->Admit(key, 25 * kMB, kT0 + absl::Seconds(2)));    // not full yet
  EXPECT_TRUE(policy->Admit(key, 25 * kMB, kT0 + absl::Seconds(10)));    // full again
}

TEST(AdmissionPolicy, ZeroBudgetIsUnlimited) {
  AdmissionOptions o;
  o.write_budget_mbps = 0;
  auto policy = MustCreate(o);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(policy->Admit(BlockKey{0, static_cast<uint64_t>(i)}, size_t{1} << 30, kT0));
  }
  EXPECT_EQ(policy->stats().admitted, 1000u);
}

TEST(AdmissionPolicy, FrequencyRejectionSpendsNoBudget) {
  AdmissionOptions o;
  o.min_seen = 2;
  o.write_budget_mbps = 1;
  auto policy = MustCreate(o);
  const BlockKey rare{1, 0};
  const BlockKey popular{2, 0};
  policy->Record(popular);
  policy->Record(popular);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(policy->Admit(rare, kMB, kT0));
  EXPECT_TRUE(policy->Admit(popular, kMB, kT0));  // the whole 1 MB is still there
  EXPECT_FALSE(policy->Admit(popular, kMB, kT0));
}

TEST(AdmissionPolicy, StatsCountEachReason) {
  AdmissionOptions o;
  o.min_seen = 2;
  o.write_budget_mbps = 2;
  auto policy = MustCreate(o);
  const BlockKey hot{1, 1};
  policy->Record(hot);
  policy->Record(hot);
  EXPECT_FALSE(policy->Admit(BlockKey{9, 9}, kMB, kT0));  // frequency
  EXPECT_FALSE(policy->Admit(BlockKey{8, 8}, kMB, kT0));  // frequency
  EXPECT_TRUE(policy->Admit(hot, kMB, kT0));
  EXPECT_TRUE(policy->Admit(hot, kMB, kT0));
  EXPECT_FALSE(policy->Admit(hot, kMB, kT0));  // budget
  const AdmissionStats s = policy->stats();
  EXPECT_EQ(s.admitted, 2u);
  EXPECT_EQ(s.rejected_frequency, 2u);
  EXPECT_EQ(s.rejected_budget, 1u);
}

// Expects Validate and Create to refuse `o` with InvalidArgument naming `field`.
void ExpectInvalid(const AdmissionOptions& o, absl::string_view field) {
  const absl::Status s = o.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_NE(s.message().find(field), absl::string_view::npos) << s;
  EXPECT_EQ(AdmissionPolicy::Create(o).status(), s);
}

TEST(AdmissionOptions, ValidateNamesEachBadField) {
  EXPECT_TRUE(AdmissionOptions{}.Validate().ok());
  AdmissionOptions o;
  o.min_seen = 0;
  ExpectInvalid(o, "min_seen");
  o.min_seen = 16;
  ExpectInvalid(o, "min_seen");
  o = AdmissionOptions{};
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    o.write_budget_mbps = bad;
    ExpectInvalid(o, "write_budget_mbps");
  }
  o = AdmissionOptions{};
  for (uint32_t bad : {0u, 32u, 63u, 100u, 3u << 10, 1u << 25}) {
    o.sketch_width = bad;
    ExpectInvalid(o, "sketch_width");
  }
  o = AdmissionOptions{};
  o.min_seen = 3;
  o.aging_window = 3;  // every count would be halved before it reaches 3
  ExpectInvalid(o, "aging_window");

  AdmissionOptions edges;
  edges.min_seen = 15;
  edges.sketch_width = 64;
  edges.write_budget_mbps = 0.5;
  EXPECT_TRUE(edges.Validate().ok());
  edges.sketch_width = 1 << 24;
  EXPECT_TRUE(edges.Validate().ok());
}

TEST(AdmissionPolicy, ConcurrentRecordAndAdmitAreSafe) {
  AdmissionOptions o;
  o.min_seen = 2;
  o.write_budget_mbps = 10;
  o.sketch_width = 1 << 10;
  o.aging_window = 1 << 30;  // no aging during the test
  auto policy = MustCreate(o);
  const BlockKey shared{42, 42};
  constexpr int kThreads = 8;
  constexpr int kOps = 2000;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      policy->Record(shared);
      for (int i = 0; i < kOps; ++i) {
        const BlockKey k{rng() % 64, 1};
        policy->Record(k);
        // Every thread at the same instant: the budget allows exactly 10 x 1 MB in all.
        admitted += policy->Admit(i % 2 == 0 ? shared : k, kMB, kT0);
        (void)policy->Estimate(k);
        (void)policy->stats();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const AdmissionStats s = policy->stats();
  EXPECT_EQ(s.admitted + s.rejected_frequency + s.rejected_budget,
            static_cast<uint64_t>(kThreads) * kOps);
  EXPECT_EQ(s.admitted, static_cast<uint64_t>(admitted.load()));
  EXPECT_EQ(s.admitted, 10u);
  EXPECT_EQ(policy->Estimate(shared), static_cast<uint32_t>(kThreads));
}

}  // namespace
}  // namespace kvtier
