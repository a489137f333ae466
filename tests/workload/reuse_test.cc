// tests/workload/reuse_test.cc — MeasureReuse (workload/reuse.h): classes and conditional
// reuse chances on a hand-made trace, bad arguments, and on the shared Mooncake trace the
// property the eviction study rests on (docs/benchmarks.md, "Gap target").

#include "workload/reuse.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "workload/trace.h"

namespace kvtier::workload {
namespace {

Request Of(std::vector<uint64_t> blocks) {
  Request r;
  r.blocks = std::move(blocks);
  return r;
}

TEST(MeasureReuse, ClassesAndConditionalChancesOnAHandMadeTrace) {
  // r0 and r1 start prompts; r2 repeats r0's blocks and adds 4; r3 repeats an id within
  // itself; r4 repeats r0's blocks once more.
  const std::vector<Request> trace = {Of({1, 2}), Of({3}), Of({1, 2, 4}), Of({5, 5}),
                                      Of({1, 2})};
  absl::StatusOr<ReuseTable> t = MeasureReuse(trace, /*horizon_requests=*/1, {0, 1, 2});
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->rows.size(), 8u);
  const ReuseRow& fresh = t->rows[0];  // 1, 2 (next use 2 requests later), 3, 5 (never)
  EXPECT_EQ(fresh.name, "new, short prompt");
  EXPECT_EQ(fresh.references, 4u);
  EXPECT_EQ(fresh.reused, 2u);
  EXPECT_EQ(fresh.idle, (std::vector<uint64_t>{4, 4, 2}));
  EXPECT_EQ(fresh.reuse_within_horizon, (std::vector<double>{0.0, 0.5, 0.0}));
  EXPECT_EQ(t->rows[1].references, 0u);  // medium and long prompts: none here
  EXPECT_EQ(t->rows[2].references, 0u);
  const ReuseRow& branch = t->rows[3];  // block 4, after the known prefix 1, 2
  EXPECT_EQ(branch.name, "new, after a known prefix");
  EXPECT_EQ(branch.references, 1u);
  EXPECT_EQ(branch.reused, 0u);
  EXPECT_EQ(branch.reuse_within_horizon, (std::vector<double>{0.0, 0.0, 0.0}));
  const ReuseRow& second = t->rows[4];  // 1, 2 in r2, next used in r4
  EXPECT_EQ(second.name, "seen 2");
  EXPECT_EQ(second.references, 2u);
  EXPECT_EQ(second.reuse_within_horizon, (std::vector<double>{0.0, 1.0, 0.0}));
  EXPECT_EQ(second.idle, (std::vector<uint64_t>{2, 2, 0}));
  EXPECT_EQ(t->rows[5].references, 2u);  // 1, 2 in r4, never again
  EXPECT_EQ(t->rows[5].reused, 0u);
}

TEST(MeasureReuse, PromptLengthPicksTheClassOfANewPrompt) {
  std::vector<uint64_t> medium(8), longer(48);
  for (size_t i = 0; i < medium.size(); ++i) medium[i] = 100 + i;
  for (size_t i = 0; i < longer.size(); ++i) longer[i] = 1000 + i;
  absl::StatusOr<ReuseTable> t = MeasureReuse({Of(medium), Of(longer)}, 10, {0});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->rows[1].references, 8u);
  EXPECT_EQ(t->rows[2].references, 48u);
}

TEST(MeasureReuse, BadArgumentsAreRefusedByName) {
  const std::vector<Request> trace = {Of({1})};
  absl::Status s = MeasureReuse(trace, 0, {0}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("horizon"), std::string::npos) << s;
  s = MeasureReuse(trace, 5, {}).status();
  EXPECT_NE(s.message().find("no idle points"), std::string::npos) << s;
  s = MeasureReuse(trace, 5, {10, 10}).status();
  EXPECT_NE(s.message().find("increase strictly (10 after 10)"), std::string::npos) << s;
}

// The study's claim, held to the shared trace: for blocks seen once in a long prompt (the
// ones whose return is worth the most), the chance of a reuse within the next 300 requests
// is about the same however long they have been idle, and below 0.25 — so neither idle time
// nor this class lets a policy keep the blocks that come back and drop the rest.
TEST(MeasureReuse, OnTheSharedTraceIdleTimeSaysLittle) {
  const std::string path =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << "shared trace not found at " << path
                 << " (it lives beside the checkout, in ../shared/traces)";
  }
  absl::StatusOr<std::vector<Request>> trace = ReadMooncakeTrace(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  absl::StatusOr<ReuseTable> t = MeasureReuse(*trace, 300, {0, 100, 200, 300, 500});
  ASSERT_TRUE(t.ok()) << t.status();
  const ReuseRow& long_new = t->rows[2];
  ASSERT_GT(long_new.references, 10000u);
  for (double p : long_new.reuse_within_horizon) {
    EXPECT_GT(p, 0.12);
    EXPECT_LT(p, 0.25);
  }
  // Blocks seen before are better bets, which is what frequency-aware policies use.
  EXPECT_GT(t->rows[5].reuse_within_horizon[0], long_new.reuse_within_horizon[0]);
}

}  // namespace
}  // namespace kvtier::workload
