// tests/io/io_test_util.h — small helpers shared by the io/ tests.
//
// Status assertions (this Abseil predates absl/status/status_matchers.h), a temporary
// directory removed with everything in it, an aligned buffer that frees itself, random bytes,
// and an op whose callback stores its result where the test can read it after Drain.

#ifndef KVTIER_TESTS_IO_IO_TEST_UTIL_H_
#define KVTIER_TESTS_IO_IO_TEST_UTIL_H_

#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "io/io_engine.h"

#define KVTIER_IO_CONCAT_INNER(a, b) a##b
#define KVTIER_IO_CONCAT(a, b) KVTIER_IO_CONCAT_INNER(a, b)

#define KVTIER_ASSERT_OK(expr)                              \
  do {                                                      \
    const absl::Status kvtier_io_status = (expr);           \
    ASSERT_TRUE(kvtier_io_status.ok()) << kvtier_io_status; \
  } while (0)

#define KVTIER_EXPECT_OK(expr)                              \
  do {                                                      \
    const absl::Status kvtier_io_status = (expr);           \
    EXPECT_TRUE(kvtier_io_status.ok()) << kvtier_io_status; \
  } while (0)

// KVTIER_ASSERT_OK_AND_ASSIGN(auto x, StatusOrExpression);
#define KVTIER_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  KVTIER_ASSERT_OK_AND_ASSIGN_IMPL(KVTIER_IO_CONCAT(kvtier_io_or_, __LINE__), lhs, expr)
#define KVTIER_ASSERT_OK_AND_ASSIGN_IMPL(var, lhs, expr) \
  auto var = (expr);                                     \
  ASSERT_TRUE(var.ok()) << var.status();                 \
  lhs = *std::move(var)

namespace kvtier::io_test {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base ? base : "/tmp") + "/kvtier_io_test.XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// `bytes` of 4096-aligned memory.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t bytes) : size_(bytes) {
    absl::StatusOr<void*> p = AllocateAligned(bytes);
    if (p.ok()) {
      data_ = static_cast<std::byte*>(*p);
      std::memset(data_, 0, bytes);
    }
  }
  ~AlignedBuffer() { FreeAligned(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  void Fill(uint8_t value) { std::memset(data_, value, size_); }
  void FillRandom(uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < size_; i += 8) {
      const uint64_t v = rng();
      std::memcpy(data_ + i, &v, std::min<size_t>(8, size_ - i));
    }
  }

 private:
  std::byte* data_ = nullptr;
  size_t size_;
};

// An op whose callback stores its result in *out (read it after Drain).
inline IoOp MakeOp(IoOp::Kind kind, int file, uint64_t offset, void* buffer, size_t length,
                   std::optional<absl::StatusOr<size_t>>* out) {
  IoOp op;
  op.kind = kind;
  op.file = file;
  op.offset = offset;
  op.buffer = buffer;
  op.length = length;
  op.done = [out](absl::StatusOr<size_t> result) { *out = std::move(result); };
  return op;
}

inline bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

}  // namespace kvtier::io_test

#endif  // KVTIER_TESTS_IO_IO_TEST_UTIL_H_
