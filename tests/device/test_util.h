// tests/device/test_util.h — small helpers shared by the kernels/ tests.
//
// Status assertions (this Abseil predates absl/status/status_matchers.h), random host data,
// and a Gate: a stream callback that holds the stream until the test opens it, which makes
// "work is still pending" states deterministic on any device.

#ifndef KVTIER_TESTS_DEVICE_TEST_UTIL_H_
#define KVTIER_TESTS_DEVICE_TEST_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "common/mutex.h"
#include "gtest/gtest.h"
#include "kvtier/device.h"

#define KVTIER_TEST_CONCAT_INNER(a, b) a##b
#define KVTIER_TEST_CONCAT(a, b) KVTIER_TEST_CONCAT_INNER(a, b)

#define KVTIER_ASSERT_OK(expr)                                  \
  do {                                                          \
    const absl::Status kvtier_test_status = (expr);             \
    ASSERT_TRUE(kvtier_test_status.ok()) << kvtier_test_status; \
  } while (0)

#define KVTIER_EXPECT_OK(expr)                                  \
  do {                                                          \
    const absl::Status kvtier_test_status = (expr);             \
    EXPECT_TRUE(kvtier_test_status.ok()) << kvtier_test_status; \
  } while (0)

// KVTIER_ASSERT_OK_AND_ASSIGN(auto x, StatusOrExpression);
#define KVTIER_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  KVTIER_ASSERT_OK_AND_ASSIGN_IMPL(KVTIER_TEST_CONCAT(kvtier_test_or_, __LINE__), lhs, expr)
#define KVTIER_ASSERT_OK_AND_ASSIGN_IMPL(var, lhs, expr) \
  auto var = (expr);                                     \
  ASSERT_TRUE(var.ok()) << var.status();                 \
  lhs = std::move(*var)

namespace kvtier::testing_util {

inline std::vector<uint8_t> RandomBytes(size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> data(bytes);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const uint64_t word = rng();
    for (int b = 0; b < 8; ++b) data[i + b] = static_cast<uint8_t>(word >> (8 * b));
  }
  for (; i < bytes; ++i) data[i] = static_cast<uint8_t>(rng());
  return data;
}

// Holds a stream at the point where Block() was called until Open().
class Gate {
 public:
  absl::Status Block(Stream& stream) {
    return stream.AddCallback([this] { open_.WaitForNotification(); });
  }
  void Open() {
    if (!open_.HasBeenNotified()) open_.Notify();
  }
  ~Gate() { Open(); }

 private:
  Notification open_;
};

}  // namespace kvtier::testing_util

#endif  // KVTIER_TESTS_DEVICE_TEST_UTIL_H_
