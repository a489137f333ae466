// tests/common/smaps_util.h — what /proc/self/smaps says of a mapping, for tests of memory that
// is advised huge pages (common/io_memory.h and the pinned memory built on it).

#ifndef KVTIER_TESTS_COMMON_SMAPS_UTIL_H_
#define KVTIER_TESTS_COMMON_SMAPS_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

namespace kvtier::testing_util {

// The VmFlags line of the mapping holding `p` in /proc/self/smaps ("" if not found).
inline std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  bool ours = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long long begin = 0, end = 0;
    char dash = 0;
    if (std::sscanf(line.c_str(), "%llx%c%llx", &begin, &dash, &end) == 3 && dash == '-') {
      ours = begin <= at && at < end;
      continue;
    }
    if (ours && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

// Whether this kernel has transparent huge pages at all (their sysfs directory exists).
inline bool KernelHasTransparentHugePages() {
  return std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good();
}

}  // namespace kvtier::testing_util

#endif  // KVTIER_TESTS_COMMON_SMAPS_UTIL_H_
