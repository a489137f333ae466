// IoMemory (common/io_memory.h): aligned, zeroed, advised huge pages, moved not copied, and bad
// sizes refused naming why. (Its use as a registered region: io_engine_test.cc.)

#include "common/io_memory.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/common/smaps_util.h"
#include "tests/io/io_test_util.h"

namespace kvtier {
namespace {

using io_test::Contains;
using testing_util::KernelHasTransparentHugePages;
using testing_util::VmFlagsOf;

constexpr size_t kMiB = size_t{1} << 20;

TEST(IoMemory, IsAlignedZeroedAndAdvisedHugePages) {
  absl::StatusOr<IoMemory> m = IoMemory::Allocate(3 * kMiB + 4096);
  KVTIER_ASSERT_OK(m.status());
  EXPECT_EQ(m->size(), 3 * kMiB + 4096);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m->data()) % (2 * kMiB), 0u);
  const auto* bytes = static_cast<const unsigned char*>(m->data());
  EXPECT_TRUE(std::all_of(bytes, bytes + m->size(), [](unsigned char b) { return b == 0; }));
  // Counted in whole 2 MiB pages, clipped to size().
  const size_t huge = m->HugePageBytes();
  EXPECT_TRUE(huge == m->size() || huge % (2 * kMiB) == 0) << huge;
  EXPECT_LE(huge, m->size());
  // Where the kernel has transparent huge pages (the sysfs directory exists), the mapping
  // carries the advice: "hg" (VM_HUGEPAGE) in its VmFlags. Whether 2 MiB pages back it depends
  // on the mode ("never" refuses them) and on free memory, so that is not asserted.
  if (KernelHasTransparentHugePages()) {
    EXPECT_TRUE(Contains(VmFlagsOf(m->data()), " hg")) << VmFlagsOf(m->data());
  }
}

TEST(IoMemory, MovesOwnershipAndRefusesZeroBytes) {
  absl::StatusOr<IoMemory> m = IoMemory::Allocate(4096);
  KVTIER_ASSERT_OK(m.status());
  void* const p = m->data();
  IoMemory moved = *std::move(m);
  EXPECT_EQ(moved.data(), p);
  EXPECT_EQ(moved.size(), 4096u);
  IoMemory other;
  EXPECT_EQ(other.data(), nullptr);
  EXPECT_EQ(other.HugePageBytes(), 0u);
  other = std::move(moved);
  EXPECT_EQ(other.data(), p);
  EXPECT_EQ(moved.data(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state
  static_cast<char*>(other.data())[4095] = 1;  // still mapped
  absl::StatusOr<IoMemory> none = IoMemory::Allocate(0);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(none.status().message(), "0 bytes")) << none.status();
  absl::StatusOr<IoMemory> huge = IoMemory::Allocate(size_t{1} << 60);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(huge.status().message(), "too many")) << huge.status();
}

// The bracketed word of sysfs's "always madvise never" is the setting in force; anything else
// (no brackets, another word, an empty file) is unknown; a missing file is a kernel without
// transparent huge pages.
TEST(HugePageSetting, IsTheBracketedWord) {
  EXPECT_EQ(ParseHugePageSetting("[always] madvise never\n"), HugePageSetting::kAlways);
  EXPECT_EQ(ParseHugePageSetting("always [madvise] never\n"), HugePageSetting::kMadvise);
  EXPECT_EQ(ParseHugePageSetting("always madvise [never]"), HugePageSetting::kNever);
  EXPECT_EQ(ParseHugePageSetting("always madvise never\n"), HugePageSetting::kUnknown);
  EXPECT_EQ(ParseHugePageSetting("always [sometimes] never"), HugePageSetting::kUnknown);
  EXPECT_EQ(ParseHugePageSetting("[always madvise never"), HugePageSetting::kUnknown);
  EXPECT_EQ(ParseHugePageSetting(""), HugePageSetting::kUnknown);
  EXPECT_STREQ(HugePageSettingName(HugePageSetting::kMadvise), "madvise");
  EXPECT_STREQ(HugePageSettingName(HugePageSetting::kNone), "none");

  char dir[] = "/tmp/kvtier-thp-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string file = std::string(dir) + "/enabled";
  EXPECT_EQ(ReadHugePageSetting(file), HugePageSetting::kNone);  // no such file
  std::ofstream(file) << "always madvise [never]\n";
  EXPECT_EQ(ReadHugePageSetting(file), HugePageSetting::kNever);
  EXPECT_EQ(ReadHugePageSetting(dir), HugePageSetting::kUnknown);  // a directory
  std::remove(file.c_str());
  rmdir(dir);
  // This machine's, as the disk tier reads it: the file exists where the sysfs directory does.
  EXPECT_EQ(ReadHugePageSetting() != HugePageSetting::kNone, KernelHasTransparentHugePages());
}

}  // namespace
}  // namespace kvtier
