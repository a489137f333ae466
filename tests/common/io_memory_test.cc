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
  // carries the advice: "hg" (VM_HUGEPAGE) in its VmFlags, or, where they are "never" and
  // reserved pages were free, it is a hugetlb mapping ("ht"). Whether 2 MiB pages back an
  // advised mapping depends on free memory, so that is not asserted.
  if (KernelHasTransparentHugePages()) {
    EXPECT_TRUE(Contains(VmFlagsOf(m->data()), m->hugetlb() ? " ht" : " hg"))
        << VmFlagsOf(m->data());
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

// Reserved 2 MiB pages (hugetlb) free for this process now: HugePages_Free less those already
// promised (HugePages_Rsvd), where the default huge page is 2 MiB; 0 otherwise.
size_t FreeReservedHugePageBytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  unsigned long long free_pages = 0, reserved = 0, page_kib = 0, v = 0;
  while (std::getline(in, line)) {
    if (std::sscanf(line.c_str(), "HugePages_Free: %llu", &v) == 1) free_pages = v;
    if (std::sscanf(line.c_str(), "HugePages_Rsvd: %llu", &v) == 1) reserved = v;
    if (std::sscanf(line.c_str(), "Hugepagesize: %llu kB", &v) == 1) page_kib = v;
  }
  if (page_kib != 2048 || free_pages < reserved) return 0;
  return static_cast<size_t>(free_pages - reserved) * 2 * kMiB;
}

// Where transparent huge pages are off ("never") or absent, the memory comes from the reserved
// pool when it has room (all of it in 2 MiB pages, as smaps counts them), else it is the same
// memory in 4 KiB pages; under "madvise" it never touches the pool. Either way: 2 MiB-aligned,
// zeroed, writable, and moved with its kind. (With vm.nr_hugepages = 0, as on CI, only the
// fallback runs: `echo 8 > /proc/sys/vm/nr_hugepages` runs the other.)
TEST(IoMemory, TakesReservedHugePagesWhereTransparentOnesAreOff) {
  for (HugePageSetting setting : {HugePageSetting::kNever, HugePageSetting::kNone}) {
    SCOPED_TRACE(HugePageSettingName(setting));
    const bool room = FreeReservedHugePageBytes() >= 4 * kMiB;
    absl::StatusOr<IoMemory> m = IoMemory::Allocate(3 * kMiB + 4096, setting);
    KVTIER_ASSERT_OK(m.status());
    EXPECT_EQ(m->hugetlb(), room);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m->data()) % (2 * kMiB), 0u);
    auto* bytes = static_cast<unsigned char*>(m->data());
    EXPECT_TRUE(std::all_of(bytes, bytes + m->size(), [](unsigned char b) { return b == 0; }));
    bytes[m->size() - 1] = 7;
    if (room) {
      EXPECT_EQ(m->HugePageBytes(), m->size());
    }
    const bool hugetlb = m->hugetlb();
    IoMemory moved = *std::move(m);
    EXPECT_EQ(moved.hugetlb(), hugetlb);
    EXPECT_EQ(static_cast<unsigned char*>(moved.data())[moved.size() - 1], 7);
  }
  absl::StatusOr<IoMemory> advised = IoMemory::Allocate(3 * kMiB, HugePageSetting::kMadvise);
  KVTIER_ASSERT_OK(advised.status());
  EXPECT_FALSE(advised->hugetlb());
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
