// tests/engine/rate_estimator_test.cc — RateEstimator, as a specification.
//
// Time is synthetic: every timestamp is passed in. The estimator starts at its prior, follows a
// step change at the rate of exp(-busy time / tau) (so within 5% after 3 tau), keeps its value
// through idle time and then returns toward the prior, measures throughput over busy time (not
// bytes / latency of overlapping ops), leaves throughput alone for low-depth windows, and
// refuses bad options and calls without changing anything.

#include "engine/rate_estimator.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);
constexpr double kGB = 1e9;

RateEstimatorOptions Options(double prior_bytes_per_s, double prior_latency_s = 1e-3) {
  RateEstimatorOptions o;
  o.prior_bytes_per_s = prior_bytes_per_s;
  o.prior_latency_s = prior_latency_s;
  return o;
}

RateEstimator MustCreate(const RateEstimatorOptions& o) {
  absl::StatusOr<RateEstimator> e = RateEstimator::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *e : *RateEstimator::Create(Options(1));
}

// Back-to-back ops of `bytes` at `bytes_per_s`, one at a time, for `busy` from `*now`.
void RunSequential(RateEstimator& e, absl::Time* now, absl::Duration busy, double bytes_per_s,
                   uint64_t bytes) {
  const absl::Duration op = absl::Seconds(static_cast<double>(bytes) / bytes_per_s);
  const absl::Time end = *now + busy;
  while (*now < end) {
    ASSERT_TRUE(e.OpStarted(*now).ok());
    *now += op;
    ASSERT_TRUE(e.OpFinished(*now, bytes, op).ok());
  }
}

double RelErr(double actual, double expected) { return std::abs(actual - expected) / expected; }

TEST(RateEstimator, StartsAtThePrior) {
  RateEstimator e = MustCreate(Options(2 * kGB, 250e-6));
  EXPECT_EQ(e.bytes_per_s(kT0), 2 * kGB);
  EXPECT_EQ(e.latency_s(kT0), 250e-6);
  EXPECT_EQ(e.samples(), 0u);
  EXPECT_EQ(e.in_flight(), 0);
  // No sample ever: nothing to decay from.
  EXPECT_EQ(e.bytes_per_s(kT0 + absl::Hours(5)), 2 * kGB);
}

TEST(RateEstimator, StepChangeConvergesWithinFivePercentAfterThreeTau) {
  RateEstimator e = MustCreate(Options(1 * kGB));
  const double tau_s = absl::ToDoubleSeconds(e.options().tau);
  absl::Time now = kT0;
  // 8 MiB reads at 3 GB/s: 2.8 ms each, one window each (the tier drains between them).
  RunSequential(e, &now, e.options().tau, 3 * kGB, 8 << 20);
  const double busy1 = absl::ToDoubleSeconds(now - kT0);
  // After one tau the prior still weighs 1/e: not yet within 5%.
  EXPECT_GT(RelErr(e.bytes_per_s(now), 3 * kGB), 0.05);
  EXPECT_NEAR(e.bytes_per_s(now), 3 * kGB - 2 * kGB * std::exp(-busy1 / tau_s), 1e-6 * kGB);
  RunSequential(e, &now, 2 * e.options().tau, 3 * kGB, 8 << 20);
  const double busy3 = absl::ToDoubleSeconds(now - kT0);
  ASSERT_GE(busy3, 3 * tau_s);
  EXPECT_LT(RelErr(e.bytes_per_s(now), 3 * kGB), 0.05);
  // The law itself: the prior's weight is exp(-busy / tau), however the time was cut.
  EXPECT_NEAR(e.bytes_per_s(now), 3 * kGB - 2 * kGB * std::exp(-busy3 / tau_s), 1e-6 * kGB);
  const double op_s = 8.0 * (1 << 20) / (3 * kGB);
  EXPECT_NEAR(e.latency_s(now), op_s + (1e-3 - op_s) * std::exp(-busy3 / tau_s), 1e-9);
  EXPECT_GT(e.samples(), 1000u);

  // And back down: 3 tau at 2 GB/s.
  const absl::Time down = now;
  const double before = e.bytes_per_s(now);
  RunSequential(e, &now, 3 * e.options().tau, 2 * kGB, 8 << 20);
  const double busy = absl::ToDoubleSeconds(now - down);
  EXPECT_LT(RelErr(e.bytes_per_s(now), 2 * kGB), 0.05);
  EXPECT_NEAR(e.bytes_per_s(now), 2 * kGB + (before - 2 * kGB) * std::exp(-busy / tau_s),
              1e-6 * kGB);
}

TEST(RateEstimator, IdleHoldsThenDecaysTowardThePrior) {
  RateEstimatorOptions o = Options(1 * kGB, 1e-3);
  o.tau = absl::Seconds(10);
  o.idle_before_decay = absl::Seconds(60);
  RateEstimator e = MustCreate(o);
  absl::Time now = kT0;
  RunSequential(e, &now, absl::Seconds(100), 4 * kGB, 16 << 20);
  const double measured = e.bytes_per_s(now);
  const double measured_latency = e.latency_s(now);
  ASSERT_LT(RelErr(measured, 4 * kGB), 1e-3);
  const absl::Time idle = now;
  // Idle up to 60 s: held exactly.
  EXPECT_EQ(e.bytes_per_s(idle + absl::Seconds(30)), measured);
  EXPECT_EQ(e.bytes_per_s(idle + absl::Seconds(60)), measured);
  EXPECT_EQ(e.latency_s(idle + absl::Seconds(60)), measured_latency);
  // Then toward the prior with tau in wall time.
  const double one_tau = 1 * kGB + (measured - 1 * kGB) * std::exp(-1.0);
  EXPECT_NEAR(e.bytes_per_s(idle + absl::Seconds(70)), one_tau, 1e-6 * kGB);
  EXPECT_NEAR(e.latency_s(idle + absl::Seconds(70)),
              1e-3 + (measured_latency - 1e-3) * std::exp(-1.0), 1e-12);
  EXPECT_LT(RelErr(e.bytes_per_s(idle + absl::Seconds(60 + 200)), 1 * kGB), 1e-6);

  // New activity starts from where the decay got to, not from the old measurement.
  now = idle + absl::Seconds(70);
  ASSERT_TRUE(e.OpStarted(now).ok());
  EXPECT_NEAR(e.bytes_per_s(now + absl::Hours(1)), one_tau, 1e-6 * kGB)
      << "no decay while an op is in flight";
  now += absl::Milliseconds(5);
  ASSERT_TRUE(e.OpFinished(now, 20'000'000, absl::Milliseconds(5)).ok());  // 4 GB/s
  const double alpha = -std::expm1(-0.005 / 10);
  EXPECT_NEAR(e.bytes_per_s(now), one_tau + alpha * (4 * kGB - one_tau), 1e-6 * kGB);
}

TEST(RateEstimator, OverlappingOpsGiveBusyTimeThroughput) {
  RateEstimatorOptions o = Options(1 * kGB, 1e-3);
  o.sample_bytes = uint64_t{1} << 40;  // windows close when the tier drains
  o.sample_busy = absl::Hours(1);
  RateEstimator e = MustCreate(o);
  absl::Time now = kT0;
  // Four 10 MB reads at once, each taking 10 ms: each one's bytes / latency says 1 GB/s, the
  // tier delivered 4 GB/s. Then two staggered: [0, 10 ms) and [5, 15 ms): 20 MB in 15 ms busy.
  for (int round = 0; round < 6000; ++round) {
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(e.OpStarted(now).ok());
    now += absl::Milliseconds(10);
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(e.OpFinished(now, 10'000'000, absl::Milliseconds(10)).ok());
    }
    now += absl::Milliseconds(3);  // idle gaps are not busy time
  }
  EXPECT_LT(RelErr(e.bytes_per_s(now), 4 * kGB), 0.01);
  EXPECT_LT(RelErr(e.latency_s(now), 10e-3), 0.01);
  EXPECT_NEAR(e.usual_depth(), 4, 1e-9);

  RateEstimator f = MustCreate(o);
  now = kT0;
  for (int round = 0; round < 4000; ++round) {
    ASSERT_TRUE(f.OpStarted(now).ok());
    ASSERT_TRUE(f.OpStarted(now + absl::Milliseconds(5)).ok());
    ASSERT_TRUE(
        f.OpFinished(now + absl::Milliseconds(10), 10'000'000, absl::Milliseconds(10)).ok());
    ASSERT_TRUE(
        f.OpFinished(now + absl::Milliseconds(15), 10'000'000, absl::Milliseconds(10)).ok());
    now += absl::Milliseconds(50);
  }
  EXPECT_LT(RelErr(f.bytes_per_s(now), 20e6 / 15e-3), 0.01);
  EXPECT_NEAR(f.usual_depth(), 20.0 / 15, 1e-9);  // 2 ops for 5 of the 15 ms
}

TEST(RateEstimator, LowDepthWindowsLeaveThroughputAlone) {
  RateEstimatorOptions o = Options(1 * kGB, 1e-3);
  o.sample_bytes = uint64_t{1} << 40;
  o.sample_busy = absl::Hours(1);
  RateEstimator e = MustCreate(o);
  absl::Time now = kT0;
  // Depth 8 at 4 GB/s.
  for (int round = 0; round < 3000; ++round) {
    for (int i = 0; i < 8; ++i) ASSERT_TRUE(e.OpStarted(now).ok());
    now += absl::Milliseconds(20);
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(e.OpFinished(now, 10'000'000, absl::Milliseconds(20)).ok());
    }
  }
  const double throughput = e.bytes_per_s(now);
  const uint64_t moved = e.throughput_samples();
  const double latency = e.latency_s(now);
  ASSERT_LT(RelErr(throughput, 4 * kGB), 0.01);
  // A lone read at depth 1 shows latency (5 ms), not capacity (0.5 GB/s).
  ASSERT_TRUE(e.OpStarted(now).ok());
  now += absl::Milliseconds(5);
  ASSERT_TRUE(e.OpFinished(now, 2'500'000, absl::Milliseconds(5)).ok());
  EXPECT_EQ(e.bytes_per_s(now), throughput);
  EXPECT_EQ(e.throughput_samples(), moved);
  EXPECT_EQ(e.samples(), 3001u);
  EXPECT_LT(e.latency_s(now), latency);
  // Depth 4 is half of 8: it counts.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(e.OpStarted(now).ok());
  now += absl::Milliseconds(20);
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(e.OpFinished(now, 10'000'000, absl::Milliseconds(20)).ok());
  EXPECT_EQ(e.throughput_samples(), moved + 1);
  EXPECT_LT(e.bytes_per_s(now), throughput);
  // With the filter off, every window moves throughput.
  o.min_relative_depth = 0;
  RateEstimator f = MustCreate(o);
  now = kT0;
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(f.OpStarted(now).ok());
  now += absl::Milliseconds(20);
  for (int i = 0; i < 8; ++i)
    ASSERT_TRUE(f.OpFinished(now, 10'000'000, absl::Milliseconds(20)).ok());
  ASSERT_TRUE(f.OpStarted(now).ok());
  now += absl::Milliseconds(5);
  ASSERT_TRUE(f.OpFinished(now, 2'500'000, absl::Milliseconds(5)).ok());
  EXPECT_EQ(f.throughput_samples(), 2u);
}

TEST(RateEstimator, LongBusyPeriodsAreCutIntoWindows) {
  // A tier that never drains still reports: windows close at sample_busy or sample_bytes.
  RateEstimatorOptions o = Options(1 * kGB, 1e-3);
  o.sample_busy = absl::Milliseconds(2);
  o.sample_bytes = uint64_t{1} << 40;
  RateEstimator e = MustCreate(o);
  absl::Time now = kT0;
  ASSERT_TRUE(e.OpStarted(now).ok());
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(e.OpStarted(now).ok());
    now += absl::Milliseconds(1);
    ASSERT_TRUE(e.OpFinished(now, 2'000'000, absl::Milliseconds(2)).ok());  // 2 GB/s
  }
  EXPECT_EQ(e.in_flight(), 1);
  EXPECT_EQ(e.samples(), 500u);
  EXPECT_NEAR(e.bytes_per_s(now), 2 * kGB - 1 * kGB * std::exp(-1.0 / 10), 1e-6 * kGB);
}

TEST(RateEstimator, InstantOpsCarryNoWeight) {
  RateEstimator e = MustCreate(Options(1 * kGB));
  ASSERT_TRUE(e.OpStarted(kT0).ok());
  ASSERT_TRUE(e.OpFinished(kT0, 1'000'000, absl::ZeroDuration()).ok());
  EXPECT_EQ(e.bytes_per_s(kT0), 1 * kGB);
  EXPECT_TRUE(std::isfinite(e.latency_s(kT0)));
  EXPECT_EQ(e.samples(), 0u);
  // Its bytes join the next window that has busy time.
  ASSERT_TRUE(e.OpStarted(kT0).ok());
  ASSERT_TRUE(e.OpFinished(kT0 + absl::Milliseconds(1), 1'000'000, absl::Milliseconds(1)).ok());
  const double alpha = -std::expm1(-0.001 / 10);
  EXPECT_NEAR(e.bytes_per_s(kT0), 1 * kGB + alpha * (2 * kGB - 1 * kGB), 1e-3);
  EXPECT_EQ(e.samples(), 1u);
}

TEST(RateEstimator, BadOptionsAreRefusedNamingTheField) {
  auto refused = [](const RateEstimatorOptions& o, const std::string& name) {
    absl::StatusOr<RateEstimator> e = RateEstimator::Create(o);
    ASSERT_FALSE(e.ok()) << name;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(e.status().message()), HasSubstr(name));
  };
  for (double bad : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    refused(Options(bad), "prior_bytes_per_s");
  }
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()})
    refused(Options(1, bad), "prior_latency_s");
  RateEstimatorOptions o = Options(1);
  o.tau = absl::ZeroDuration();
  refused(o, "tau");
  o.tau = absl::InfiniteDuration();
  refused(o, "tau");
  o = Options(1);
  o.idle_before_decay = absl::Seconds(-1);
  refused(o, "idle_before_decay");
  o = Options(1);
  o.sample_busy = -absl::Milliseconds(1);
  refused(o, "sample_busy");
  o = Options(1);
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    o.min_relative_depth = bad;
    refused(o, "min_relative_depth");
  }
  o = Options(1);
  o.idle_before_decay = absl::InfiniteDuration();  // never decay: allowed
  EXPECT_TRUE(RateEstimator::Create(o).ok());
}

TEST(RateEstimator, BadCallsAreRefusedAndChangeNothing) {
  RateEstimator e = MustCreate(Options(1 * kGB));
  EXPECT_EQ(e.OpFinished(kT0, 100, absl::Milliseconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(e.OpStarted(kT0 + absl::Seconds(1)).ok());
  EXPECT_EQ(e.OpStarted(kT0).code(), absl::StatusCode::kInvalidArgument);  // time went back
  EXPECT_EQ(e.OpFinished(kT0, 100, absl::Milliseconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.OpFinished(kT0 + absl::Seconds(2), 100, -absl::Milliseconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.OpFinished(kT0 + absl::Seconds(2), 100, absl::InfiniteDuration()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.OpStarted(absl::InfiniteFuture()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.in_flight(), 1);
  EXPECT_EQ(e.samples(), 0u);
  // The one op still in flight completes normally: 3 GB over the 1 s since it started.
  ASSERT_TRUE(e.OpFinished(kT0 + absl::Seconds(2), 3'000'000'000, absl::Seconds(1)).ok());
  EXPECT_EQ(e.samples(), 1u);
  EXPECT_NEAR(e.bytes_per_s(kT0 + absl::Seconds(2)), 1 * kGB - std::expm1(-0.1) * 2 * kGB, 1e-3);
}

}  // namespace
}  // namespace kvtier
