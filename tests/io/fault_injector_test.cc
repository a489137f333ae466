// tests/io/fault_injector_test.cc — which ops an injected fault hits: by position among the
// ops it matches, counted from injection, never at random.

#include "io/fault_injector.h"

#include <vector>

#include "gtest/gtest.h"

namespace kvtier::io_internal {
namespace {

constexpr IoOp::Kind kRead = IoOp::Kind::kRead;
constexpr IoOp::Kind kWrite = IoOp::Kind::kWrite;
constexpr InjectedFault kNone = InjectedFault::kNone;

std::vector<InjectedFault> ClaimAll(FaultInjector& f, const std::vector<IoOp::Kind>& kinds) {
  std::vector<InjectedFault> out;
  for (IoOp::Kind k : kinds) out.push_back(f.Claim(k));
  return out;
}

TEST(FaultInjector, SkipAndCountSelectAWindowOfMatchingOps) {
  FaultInjector f;
  f.Add(FaultSpec{FaultSpec::Kind::kEio, /*skip=*/2, /*count=*/2});
  const InjectedFault e = InjectedFault::kEio;
  EXPECT_EQ(ClaimAll(f, {kRead, kWrite, kRead, kWrite, kRead, kRead}),
            (std::vector<InjectedFault>{kNone, kNone, e, e, kNone, kNone}));
}

TEST(FaultInjector, KindsMatchOnlyTheirOps) {
  FaultInjector f;
  f.Add(FaultSpec{FaultSpec::Kind::kShortWrite, 1, 1});  // second write
  f.Add(FaultSpec{FaultSpec::Kind::kShortRead, 0, 1});   // first read
  f.Add(FaultSpec{FaultSpec::Kind::kEnospc, 2, 1});      // third write
  EXPECT_EQ(ClaimAll(f, {kWrite, kWrite, kRead, kWrite, kRead}),
            (std::vector<InjectedFault>{kNone, InjectedFault::kShortWrite,
                                        InjectedFault::kShortRead, InjectedFault::kEnospc, kNone}));
}

TEST(FaultInjector, CountZeroLastsUntilClear) {
  FaultInjector f;
  f.Add(FaultSpec{FaultSpec::Kind::kEnospc, 1, 0});
  EXPECT_EQ(ClaimAll(f, {kWrite, kWrite, kRead, kWrite, kWrite}),
            (std::vector<InjectedFault>{kNone, InjectedFault::kEnospc, kNone,
                                        InjectedFault::kEnospc, InjectedFault::kEnospc}));
  f.Clear();
  EXPECT_EQ(f.Claim(kWrite), kNone);
}

TEST(FaultInjector, FirstInjectedWinsAndTheOtherStillCounts) {
  FaultInjector f;
  f.Add(FaultSpec{FaultSpec::Kind::kEio, 0, 1});
  f.Add(FaultSpec{FaultSpec::Kind::kEnospc, 0, 2});
  EXPECT_EQ(ClaimAll(f, {kWrite, kWrite, kWrite}),
            (std::vector<InjectedFault>{InjectedFault::kEio, InjectedFault::kEnospc, kNone}));
}

TEST(FaultInjector, DelayMatchesEveryOpAndSaysHowLong) {
  FaultInjector f;
  f.Add(FaultSpec{FaultSpec::Kind::kDelay, 1, 2, absl::Milliseconds(250)});
  absl::Duration delay = absl::ZeroDuration();
  EXPECT_EQ(f.Claim(kRead, &delay), kNone);
  EXPECT_EQ(delay, absl::ZeroDuration());
  EXPECT_EQ(f.Claim(kWrite, &delay), InjectedFault::kDelay);
  EXPECT_EQ(delay, absl::Milliseconds(250));
  delay = absl::ZeroDuration();
  EXPECT_EQ(f.Claim(kRead, &delay), InjectedFault::kDelay);
  EXPECT_EQ(delay, absl::Milliseconds(250));
  EXPECT_EQ(f.Claim(kRead), kNone);  // the window has passed
}

}  // namespace
}  // namespace kvtier::io_internal
