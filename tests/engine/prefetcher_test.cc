// Prefetcher: hints are served in the order given, a namespace per batch, never beyond the
// budget; settling a hinted block frees its budget and wakes the thread; Cancel drops what has
// not started; the sweep runs at its interval.

#include "engine/prefetcher.h"

#include <atomic>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

constexpr size_t kBlock = 1024;

// Records the batches the thread asks for; charges each key to the budget, as placement does
// for a hinted block on its way up.
struct Recorder {
  Mutex mu;
  std::vector<std::pair<uint32_t, std::vector<BlockKey>>> batches ABSL_GUARDED_BY(mu);
  Prefetcher* prefetcher = nullptr;

  Prefetcher::Hooks Hooks(std::atomic<int>* sweeps) {
    return Prefetcher::Hooks{[this](uint32_t ns, absl::Span<const BlockKey> keys) {
                               for (size_t i = 0; i < keys.size(); ++i) prefetcher->Charge();
                               MutexLock lock(&mu);
                               batches.emplace_back(ns, std::vector<BlockKey>(keys.begin(),
                                                                              keys.end()));
                               return absl::OkStatus();
                             },
                             [sweeps] { ++*sweeps; }};
  }
  size_t keys_served() {
    MutexLock lock(&mu);
    size_t n = 0;
    for (const auto& b : batches) n += b.second.size();
    return n;
  }
  bool WaitForKeys(size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (keys_served() < n) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }
};

std::vector<BlockKey> Keys(uint64_t first, size_t n) {
  std::vector<BlockKey> keys;
  for (size_t i = 0; i < n; ++i) keys.push_back(BlockKey{first + i, 0});
  return keys;
}

TEST(Prefetcher, ServesHintsInOrderOneNamespacePerBatchWithinTheBudget) {
  Recorder rec;
  std::atomic<int> sweeps{0};
  Prefetcher p(kBlock, /*budget_bytes=*/4 * kBlock, rec.Hooks(&sweeps));
  rec.prefetcher = &p;
  p.Hint(/*ns_id=*/0, Keys(0, 3));
  p.Hint(/*ns_id=*/1, Keys(100, 3));
  ASSERT_TRUE(rec.WaitForKeys(4));
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(rec.keys_served(), 4u) << "hinted blocks went beyond the budget";
  PrefetchStats st;
  p.Fill(&st);
  EXPECT_EQ(st.outstanding_bytes, 4 * kBlock);
  EXPECT_EQ(st.queued, 2u);
  // Two blocks used: their budget comes back and the rest is served.
  p.Settle(Prefetcher::Use::kInTime);
  p.Settle(Prefetcher::Use::kLate);
  ASSERT_TRUE(rec.WaitForKeys(6));
  MutexLock lock(&rec.mu);
  std::vector<BlockKey> order;
  for (const auto& [ns, keys] : rec.batches) {
    for (const BlockKey& k : keys) {
      EXPECT_EQ(ns, k.hi >= 100 ? 1u : 0u) << "a batch mixed namespaces";
      order.push_back(k);
    }
  }
  std::vector<BlockKey> want = Keys(0, 3);
  for (const BlockKey& k : Keys(100, 3)) want.push_back(k);
  EXPECT_EQ(order, want);
  p.Fill(&st);
  EXPECT_EQ(st.hinted, 6u);
  EXPECT_EQ(st.in_time, 1u);
  EXPECT_EQ(st.late, 1u);
  EXPECT_EQ(st.budget_bytes, 4 * kBlock);
}

TEST(Prefetcher, CancelDropsWhatHasNotStarted) {
  Recorder rec;
  std::atomic<int> sweeps{0};
  Prefetcher p(kBlock, /*budget_bytes=*/2 * kBlock, rec.Hooks(&sweeps));
  rec.prefetcher = &p;
  const uint64_t first = p.Hint(0, Keys(0, 2));
  ASSERT_TRUE(rec.WaitForKeys(2));  // the budget is full now
  const uint64_t second = p.Hint(0, Keys(10, 5));
  absl::StatusOr<size_t> dropped = p.Cancel(second);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(*dropped, 5u);
  absl::StatusOr<size_t> none = p.Cancel(first);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u) << "keys already served cannot be cancelled";
  EXPECT_EQ(p.Cancel(0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(p.Cancel(99).status().code(), absl::StatusCode::kNotFound);
  p.Settle(Prefetcher::Use::kUnused);
  p.Settle(Prefetcher::Use::kUnused);
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(rec.keys_served(), 2u);
  PrefetchStats st;
  p.Fill(&st);
  EXPECT_EQ(st.cancelled, 5u);
  EXPECT_EQ(st.unused, 2u);
  EXPECT_EQ(st.outstanding_bytes, 0u);
}

TEST(Prefetcher, SweepsAtItsIntervalAndNotWithout) {
  Recorder rec;
  std::atomic<int> sweeps{0};
  Prefetcher p(kBlock, kBlock, rec.Hooks(&sweeps));
  rec.prefetcher = &p;
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(sweeps.load(), 0) << "no namespace has a time to live";
  p.SetSweepInterval(absl::Milliseconds(10));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (sweeps.load() < 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_GE(sweeps.load(), 3);
  p.SetSweepInterval(absl::InfiniteDuration());
  absl::SleepFor(absl::Milliseconds(20));
  const int after = sweeps.load();
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(sweeps.load(), after);
  p.Stop();
  p.Stop();  // idempotent
}

}  // namespace
}  // namespace kvtier
