// common/io_memory.h — memory for the buffers direct I/O goes through, in huge pages where the
// kernel has them.

#ifndef KVTIER_COMMON_IO_MEMORY_H_
#define KVTIER_COMMON_IO_MEMORY_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

// The kernel's transparent huge page setting: which word of "always madvise never" its sysfs
// file brackets. IoMemory gets 2 MiB pages under kAlways and kMadvise (it advises them); under
// kNever, and on a kernel without the file (kNone: built without them), it takes reserved ones
// (hugetlb) when enough are free, else it is in 4 KiB pages.
enum class HugePageSetting { kAlways, kMadvise, kNever, kNone, kUnknown };
inline constexpr char kHugePageSettingPath[] = "/sys/kernel/mm/transparent_hugepage/enabled";
// kUnknown where no word (or another one) is bracketed.
HugePageSetting ParseHugePageSetting(absl::string_view contents);
// The setting in `path` (a file as sysfs's); kNone where it does not exist, kUnknown where it
// cannot be read or parsed.
HugePageSetting ReadHugePageSetting(const std::string& path = kHugePageSettingPath);
// "always", "madvise", "never", "none" (no such file), "unknown".
const char* HugePageSettingName(HugePageSetting setting);

// Memory for buffers that direct I/O goes through (the disk tier's staging pool): a mapping of
// its own, aligned to 2 MiB, advised MADV_HUGEPAGE, and zeroed (so faulted in, in 2 MiB pages
// where the kernel has them) before it is returned.
//
// Why: a direct-I/O buffer in 4 KiB pages is, to the device, one segment per physically
// discontiguous page: a 260 KiB record is up to 65 segments, and a device with a bounded number
// of descriptors (virtio's queue; an NVMe PRP list is a page of its own) takes fewer such
// requests at once. On the dev VM the block layer had 8-10 of the disk tier's 28 queued reads in
// flight with 4 KiB pages, 19-21 with huge pages (docs/benchmarks.md, "disk"); with
// transparent huge pages "never", 3 of 32, and reads at 0.3 of fio. So where they are off the
// memory comes from the 2 MiB pages an administrator reserved (vm.nr_hugepages) if enough are
// free; else it is in 4 KiB pages (a warning, once, names the fix): it works alike, slower.
class IoMemory {
 public:
  // ResourceExhausted naming the size if the mapping fails; InvalidArgument for 0 bytes.
  static absl::StatusOr<IoMemory> Allocate(size_t bytes);
  // As the kernel's transparent huge page setting were `setting` (for tests; Allocate reads
  // it): under kNever and kNone the memory comes from the reserved 2 MiB pages
  // (vm.nr_hugepages) when enough are free, else in 4 KiB pages with a warning, once, naming
  // the fix.
  static absl::StatusOr<IoMemory> Allocate(size_t bytes, HugePageSetting setting);
  IoMemory() = default;
  IoMemory(IoMemory&& other) noexcept;
  IoMemory& operator=(IoMemory&& other) noexcept;
  IoMemory(const IoMemory&) = delete;
  IoMemory& operator=(const IoMemory&) = delete;
  ~IoMemory();

  void* data() const { return data_; }
  size_t size() const { return size_; }  // as asked; the mapping is rounded up to 2 MiB
  // Bytes of this memory in huge pages now (AnonHugePages, or the hugetlb pages, of its mapping
  // in /proc/self/smaps), at most size(); 0 where that file cannot be read.
  size_t HugePageBytes() const;
  // Whether it is in reserved huge pages (hugetlb) rather than transparent ones.
  bool hugetlb() const { return hugetlb_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
  bool hugetlb_ = false;
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_IO_MEMORY_H_
