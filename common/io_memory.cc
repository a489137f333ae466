// common/io_memory.cc — IoMemory: a 2 MiB-aligned anonymous mapping advised MADV_HUGEPAGE, and
// how much of it the kernel backs with huge pages (/proc/self/smaps).

#include "common/io_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/log.h"

namespace kvtier {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
// 2 MiB pages from the hugetlb pool (linux/mman.h's MAP_HUGE_2MB: log2 of the size, shifted).
constexpr int kMapHuge2MiB = 21 << MAP_HUGE_SHIFT;
}  // namespace

absl::StatusOr<IoMemory> IoMemory::Allocate(size_t bytes) {
  return Allocate(bytes, ReadHugePageSetting());
}

absl::StatusOr<IoMemory> IoMemory::Allocate(size_t bytes, HugePageSetting setting) {
  if (bytes == 0) return absl::InvalidArgumentError("IoMemory::Allocate: 0 bytes");
  if (bytes > (size_t{1} << 46)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IoMemory::Allocate: %d bytes is too many", bytes));
  }
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  IoMemory m;
  m.size_ = bytes;
  m.mapped_ = rounded;
  if (setting == HugePageSetting::kNever || setting == HugePageSetting::kNone) {
    // No transparent huge pages: 2 MiB pages from the pool an administrator reserved
    // (vm.nr_hugepages), if it has enough free. The kernel checks that at mmap (the pages are
    // reserved then), so this fails at once rather than at a later fault; a hugetlb mapping
    // is aligned to its page size.
    void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | kMapHuge2MiB, -1, 0);
    if (p != MAP_FAILED) {
      m.data_ = p;
      m.hugetlb_ = true;
      std::memset(m.data_, 0, rounded);
      KVTIER_LOG_ONCE(kInfo,
                      "io memory: transparent huge pages are '%s' here: direct-I/O buffers take "
                      "reserved 2 MiB pages (vm.nr_hugepages) while the pool has room",
                      HugePageSettingName(setting));
      return m;
    }
    KVTIER_LOG_ONCE(kWarning,
                    "io memory: transparent huge pages are '%s' here and the kernel has no %d "
                    "MiB of reserved 2 MiB pages free (vm.nr_hugepages): direct-I/O buffers are "
                    "in 4 KiB pages, of which a device takes few requests at once (disk reads "
                    "at 0.3 of fio on the dev VM). Fix: `echo madvise > "
                    "/sys/kernel/mm/transparent_hugepage/enabled`, or reserve huge pages",
                    HugePageSettingName(setting), rounded >> 20);
  }
  // Over-map by one huge page and trim both ends so the mapping starts on a 2 MiB boundary.
  const size_t over = rounded + kHugePage;
  void* p = mmap(nullptr, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "IoMemory::Allocate: mmap of %d bytes failed: %s", over, std::strerror(errno)));
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(p, aligned - start);
  if (const uintptr_t tail = start + over - (aligned + rounded); tail > 0) {
    munmap(reinterpret_cast<void*>(aligned + rounded), tail);
  }
  m.data_ = reinterpret_cast<void*>(aligned);
  // Advice only: EINVAL where the kernel has no transparent huge pages; the memory works alike.
  (void)madvise(m.data_, rounded, MADV_HUGEPAGE);
  std::memset(m.data_, 0, rounded);
  return m;
}

IoMemory::IoMemory(IoMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)),
      hugetlb_(std::exchange(other.hugetlb_, false)) {}

IoMemory& IoMemory::operator=(IoMemory&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, mapped_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
    hugetlb_ = std::exchange(other.hugetlb_, false);
  }
  return *this;
}

IoMemory::~IoMemory() {
  if (data_ != nullptr) munmap(data_, mapped_);
}

size_t IoMemory::HugePageBytes() const {
  if (data_ == nullptr) return 0;
  FILE* f = std::fopen("/proc/self/smaps", "re");
  if (f == nullptr) return 0;
  const uintptr_t at = reinterpret_cast<uintptr_t>(data_);
  bool in_ours = false;
  size_t huge_kib = 0;
  char line[512];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    unsigned long long begin = 0, end = 0;
    char dash = 0;
    // A mapping's first line: "begin-end perms offset dev inode [path]" (hex addresses).
    if (std::sscanf(line, "%llx%c%llx", &begin, &dash, &end) == 3 && dash == '-') {
      if (in_ours) break;
      in_ours = begin <= at && at < end;
      continue;
    }
    // Transparent huge pages count as AnonHugePages, reserved ones (hugetlb) as *_Hugetlb.
    unsigned long long kib = 0;
    if (in_ours && (std::sscanf(line, "AnonHugePages: %llu kB", &kib) == 1 ||
                    std::sscanf(line, "Private_Hugetlb: %llu kB", &kib) == 1 ||
                    std::sscanf(line, "Shared_Hugetlb: %llu kB", &kib) == 1)) {
      huge_kib += static_cast<size_t>(kib);
    }
  }
  std::fclose(f);
  // The kernel may have merged this mapping with a neighbour advised alike: at most ours.
  return std::min(huge_kib << 10, size_);
}

HugePageSetting ParseHugePageSetting(absl::string_view contents) {
  const size_t open = contents.find('[');
  const size_t close = contents.find(']', open);
  if (open == absl::string_view::npos || close == absl::string_view::npos) {
    return HugePageSetting::kUnknown;
  }
  const absl::string_view word = contents.substr(open + 1, close - open - 1);
  if (word == "always") return HugePageSetting::kAlways;
  if (word == "madvise") return HugePageSetting::kMadvise;
  if (word == "never") return HugePageSetting::kNever;
  return HugePageSetting::kUnknown;
}

HugePageSetting ReadHugePageSetting(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? HugePageSetting::kNone : HugePageSetting::kUnknown;
  char buf[256];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return HugePageSetting::kUnknown;
  return ParseHugePageSetting(absl::string_view(buf, static_cast<size_t>(n)));
}

const char* HugePageSettingName(HugePageSetting setting) {
  switch (setting) {
    case HugePageSetting::kAlways:
      return "always";
    case HugePageSetting::kMadvise:
      return "madvise";
    case HugePageSetting::kNever:
      return "never";
    case HugePageSetting::kNone:
      return "none";
    case HugePageSetting::kUnknown:
      break;
  }
  return "unknown";
}

}  // namespace kvtier
