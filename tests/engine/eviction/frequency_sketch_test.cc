// tests/engine/eviction/frequency_sketch_test.cc — the count-min sketch: saturation, aging, width.

#include "engine/eviction/frequency_sketch.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace kvtier {
namespace {

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

}  // namespace
}  // namespace kvtier
