// io/block_device_sampler.h — how busy the block device under a path is, sampled (Linux).
//
// A thread reads /sys/dev/block/MAJ:MIN/inflight every 200 us, and /proc/diskstats' bytes read
// around the run. Busy = at least one read in flight at the block layer; busy time = the busy
// fraction of the samples x the run's wall time; and the mean number of reads in flight while
// busy: the queue depth the device is actually given. (/proc/diskstats' io_ticks would be
// simpler, but it counts at jiffy granularity and missed ~90% of the dev VM's sub-millisecond
// reads.) A diagnostic for benchmarks and the demo (bench/run disk shows it for kvtier's reads
// and fio's; the long-context demo's --sample-disk): where the path's device cannot be found
// (not a block device, no sysfs), every figure is -1.

#ifndef KVTIER_IO_BLOCK_DEVICE_SAMPLER_H_
#define KVTIER_IO_BLOCK_DEVICE_SAMPLER_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"

namespace kvtier {

class BlockDeviceSampler {
 public:
  struct Figures {
    double busy_fraction = -1;   // of the samples; -1 = unknown
    double mean_in_flight = -1;  // reads in flight, over the busy samples
    uint64_t samples = 0;
    int64_t device_read_bytes = -1;
    // CPU time the sampling thread itself used (a wake-up every 200 us: measurements of the
    // process's CPU take it out).
    double cpu_seconds = 0;
  };

  explicit BlockDeviceSampler(const std::string& dir) {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return;
    major_ = major(st.st_dev);
    minor_ = minor(st.st_dev);
    fd_ = ::open(absl::StrFormat("/sys/dev/block/%u:%u/inflight", major_, minor_).c_str(),
                 O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return;
    read_bytes_before_ = DeviceReadBytes();
    thread_ = std::thread([this] { Loop(); });
  }
  BlockDeviceSampler(const BlockDeviceSampler&) = delete;
  BlockDeviceSampler& operator=(const BlockDeviceSampler&) = delete;
  ~BlockDeviceSampler() { (void)Stop(); }

  Figures Stop() {
    if (thread_.joinable()) {
      stop_.store(true);
      thread_.join();
      if (samples_ > 0) {
        figures_.samples = samples_;
        figures_.busy_fraction = static_cast<double>(busy_) / samples_;
        figures_.mean_in_flight = busy_ > 0 ? static_cast<double>(in_flight_) / busy_ : 0;
      }
      figures_.cpu_seconds = cpu_seconds_;
      const int64_t after = DeviceReadBytes();
      if (after >= 0 && read_bytes_before_ >= 0) {
        figures_.device_read_bytes = after - read_bytes_before_;
      }
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return figures_;
  }

 private:
  void Loop() {
    char buf[64];
    while (!stop_.load(std::memory_order_relaxed)) {
      const ssize_t n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
      if (n > 0) {
        buf[n] = '\0';
        unsigned long long reads = 0, writes = 0;
        if (std::sscanf(buf, "%llu %llu", &reads, &writes) == 2) {
          ++samples_;
          if (reads > 0) {
            ++busy_;
            in_flight_ += reads;
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    timespec cpu{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0) {
      cpu_seconds_ = static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) / 1e9;
    }
  }
  // Bytes the device has read since boot (/proc/diskstats), or -1.
  int64_t DeviceReadBytes() const {
    FILE* f = std::fopen("/proc/diskstats", "r");
    if (f == nullptr) return -1;
    int64_t bytes = -1;
    char line[512];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      unsigned maj = 0, min = 0;
      char name[64];
      unsigned long long reads, merged, sectors;
      if (std::sscanf(line, "%u %u %63s %llu %llu %llu", &maj, &min, name, &reads, &merged,
                      &sectors) == 6 &&
          maj == major_ && min == minor_) {
        bytes = static_cast<int64_t>(sectors * 512);
        break;
      }
    }
    std::fclose(f);
    return bytes;
  }

  unsigned major_ = 0, minor_ = 0;
  int fd_ = -1;
  int64_t read_bytes_before_ = -1;
  std::atomic<bool> stop_{false};
  uint64_t samples_ = 0, busy_ = 0, in_flight_ = 0;  // the thread's, read after join
  double cpu_seconds_ = 0;                           // likewise
  Figures figures_;
  std::thread thread_;
};

}  // namespace kvtier

#endif  // KVTIER_IO_BLOCK_DEVICE_SAMPLER_H_
