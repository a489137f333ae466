// tests/io/files_test.cc — OpenPreallocated (blocks really reserved, exact size, clear errors)
// and AllocateAligned.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "io/io_engine.h"
#include "tests/io/io_test_util.h"

namespace kvtier {
namespace {

using io_test::Contains;
using io_test::TempDir;

constexpr uint64_t kMiB = 1024 * 1024;

TEST(OpenPreallocated, ReservesBlocksAndSetsTheSize) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  absl::StatusOr<int> fd = OpenPreallocated(dir.File("cache"), 8 * kMiB);
  if (!fd.ok() && fd.status().code() == absl::StatusCode::kInvalidArgument) {
    GTEST_SKIP() << dir.path() << " does not support O_DIRECT: " << fd.status();
  }
  ASSERT_TRUE(fd.ok()) << fd.status();
  struct stat st;
  ASSERT_EQ(fstat(*fd, &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 8 * kMiB);
  // Blocks are allocated, not a sparse hole (st_blocks counts 512-byte units).
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 8 * kMiB);
  EXPECT_NE(fcntl(*fd, F_GETFL) & O_DIRECT, 0);
  EXPECT_NE(fcntl(*fd, F_GETFD) & FD_CLOEXEC, 0);
  close(*fd);

  // Reopening at a smaller size makes the file exactly that size.
  KVTIER_ASSERT_OK_AND_ASSIGN(int again, OpenPreallocated(dir.File("cache"), 4 * kMiB));
  ASSERT_EQ(fstat(again, &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 4 * kMiB);
  close(again);
}

TEST(OpenPreallocated, SizeMustBeAPositiveMultipleOf4096) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  for (uint64_t size : {uint64_t{0}, uint64_t{4095}, uint64_t{4096 + 1}, 3 * kMiB + 512}) {
    absl::StatusOr<int> fd = OpenPreallocated(dir.File("bad"), size);
    EXPECT_EQ(fd.status().code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_TRUE(Contains(fd.status().message(), std::to_string(size))) << fd.status();
  }
  // Nothing was created.
  EXPECT_NE(access(dir.File("bad").c_str(), F_OK), 0);
}

TEST(OpenPreallocated, MissingDirectoryIsAnErrorNamingThePath) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.File("no/such/dir/cache");
  absl::StatusOr<int> fd = OpenPreallocated(path, 4096);
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kNotFound) << fd.status();
  EXPECT_TRUE(Contains(fd.status().message(), path)) << fd.status();
  EXPECT_TRUE(Contains(fd.status().message(), "No such file or directory")) << fd.status();
}

TEST(AllocateAligned, ReturnsPageAlignedMemory) {
  for (size_t bytes : {size_t{1}, size_t{4096}, size_t{10000}, size_t{2 * kMiB}}) {
    KVTIER_ASSERT_OK_AND_ASSIGN(void* p, AllocateAligned(bytes));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kIoAlignment, 0u);
    static_cast<char*>(p)[bytes - 1] = 1;  // writable to the end
    FreeAligned(p);
  }
  EXPECT_EQ(AllocateAligned(0).status().code(), absl::StatusCode::kInvalidArgument);
  FreeAligned(nullptr);  // like free(nullptr)
}

}  // namespace
}  // namespace kvtier
