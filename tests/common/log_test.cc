// tests/common/log_test.cc — common/log.h: the once / every-N-seconds limiters log the first
// time a call site is reached (without arithmetic on the "never logged" sentinel: UBSan checks
// that in the sanitizer build) and stay quiet after.

#include "common/log.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

void WarnRepeatedly(int i) { KVTIER_LOG_EVERY_N_SEC(kWarning, 3600, "repeated warning %d", i); }
void WarnOnce(int i) { KVTIER_LOG_ONCE(kWarning, "once warning %d", i); }

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(LogTest, EveryNSecondsLogsTheFirstCallAndNotTheNextOnes) {
  SetLogLevel(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 5; ++i) WarnRepeatedly(i);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(Count(err, "repeated warning"), 1u) << err;
  EXPECT_TRUE(absl::StrContains(err, "repeated warning 0")) << err;
}

TEST(LogTest, OnceLogsOnlyTheFirstCall) {
  SetLogLevel(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) WarnOnce(i);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(Count(err, "once warning"), 1u) << err;
  EXPECT_TRUE(absl::StrContains(err, "once warning 0")) << err;
}

TEST(LogTest, BelowTheThresholdNothingIsWritten) {
  SetLogLevel(LogLevel::kError);
  ::testing::internal::CaptureStderr();
  KVTIER_LOG(kWarning, "hidden %d", 1);
  const std::string err = ::testing::internal::GetCapturedStderr();
  SetLogLevel(LogLevel::kInfo);
  EXPECT_FALSE(absl::StrContains(err, "hidden")) << err;
}

}  // namespace
}  // namespace kvtier
