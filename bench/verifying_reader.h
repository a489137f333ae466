// bench/verifying_reader.h — the disk bench's second ceiling: the least a reader that checks
// every byte it reads must do (fio, the first ceiling, never touches its data).

#ifndef KVTIER_BENCH_VERIFYING_READER_H_
#define KVTIER_BENCH_VERIFYING_READER_H_

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/bench_util.h"
#include "common/io_memory.h"
#include "common/xxhash.h"

namespace kvtier::bench {

// The verifying reader: the least a reader that checks every byte it reads must do, as a
// second ceiling beside fio (which never touches its data). io_uring, O_DIRECT, the file
// registered, 2 x qd buffers in one registered IoMemory (huge pages), `qd` random reads of
// `bs` in flight over the first `size_mib` MiB of `file`, each hashed (XXH3, as the disk
// tier's records) when it completes.
//  * one thread (split = false): it submits, reaps and hashes; each completion is replaced by a
//    new read first, then hashed. fio's shape, plus the hash.
//  * two threads (split = true): the calling thread submits a read whenever a buffer is free;
//    a reaper thread waits for completions, hashes them and hands the buffers back. The shape
//    of any reader that serves other threads' requests (the disk tier: callers submit, its
//    completion thread reaps), so the cost of the hand-offs alone shows against the first.
struct VerifyingReaderResult {
  double gbps = -1;            // -1 when the ring cannot be set up or a read fails
  double cpu_us_per_read = 0;  // this process's CPU time (user + kernel) over the reads
};
inline VerifyingReaderResult VerifyingReader(const std::string& file, size_t size_mib, size_t bs,
                                             int qd, double seconds, bool split = false) {
  VerifyingReaderResult result;
  const int fd = ::open(file.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return result;
  const size_t blocks = (size_mib << 20) / bs;
  absl::StatusOr<IoMemory> mem = IoMemory::Allocate(2 * static_cast<size_t>(qd) * bs);
  io_uring ring;
  if (blocks == 0 || !mem.ok() ||
      io_uring_queue_init(static_cast<unsigned>(2 * qd), &ring, 0) < 0) {
    ::close(fd);
    return result;
  }
  const iovec region{mem->data(), 2 * static_cast<size_t>(qd) * bs};
  if (io_uring_register_buffers(&ring, &region, 1) == 0 &&
      io_uring_register_files(&ring, &fd, 1) == 0) {
    char* const base = static_cast<char*>(mem->data());
    std::mt19937_64 rng(11);
    // Only the submitting thread touches the submission queue, only the reaping thread the
    // completion queue (liburing allows one of each at once).
    auto submit = [&](int buffer) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_read_fixed(sqe, 0, base + buffer * bs, static_cast<unsigned>(bs),
                               (rng() % blocks) * bs, 0);
      sqe->flags |= IOSQE_FIXED_FILE;
      io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(buffer));
      io_uring_submit(&ring);
    };
    constexpr uint64_t kStop = ~uint64_t{0};
    std::atomic<uint64_t> reads{0};
    std::atomic<bool> failed{false};
    std::atomic<uint64_t> sink{0};  // the hashes are used
    // Reaps one completion; returns its buffer, or -1 for the stop token or an error.
    auto reap = [&]() -> int {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&ring, &cqe) != 0) {
        failed = true;
        return -1;
      }
      const uint64_t data = io_uring_cqe_get_data64(cqe);
      const bool ok = cqe->res == static_cast<int>(bs);
      io_uring_cqe_seen(&ring, cqe);
      if (data == kStop) return -1;
      if (!ok) failed = true;
      return static_cast<int>(data);
    };
    auto hash = [&](int buffer) {
      sink.fetch_xor(XXH3_64bits(base + buffer * bs, bs), std::memory_order_relaxed);
      reads.fetch_add(1, std::memory_order_relaxed);
    };
    double start = 0, elapsed = 0, cpu = 0;
    if (!split) {
      std::vector<int> spare;
      for (int i = qd; i < 2 * qd; ++i) spare.push_back(i);
      start = Now();
      const double cpu_start = ProcessCpuSeconds();
      for (int i = 0; i < qd; ++i) submit(i);
      while (Now() - start < seconds && !failed) {
        const int done = reap();
        if (done < 0) break;
        submit(spare.back());
        spare.pop_back();
        hash(done);
        spare.push_back(done);
      }
      elapsed = Now() - start;
      cpu = ProcessCpuSeconds() - cpu_start;
      for (int left = qd; left > 0 && reap() >= 0; --left) {
      }
    } else {
      std::mutex mu;
      std::condition_variable freed;
      std::vector<int> free_buffers;  // guarded by mu
      std::thread reaper([&] {
        for (int done; (done = reap()) >= 0;) {
          hash(done);
          {
            std::lock_guard<std::mutex> lock(mu);
            free_buffers.push_back(done);
          }
          freed.notify_one();
        }
        std::lock_guard<std::mutex> lock(mu);
        // Stopped, or failed: whatever the submitter waits for is over.
        free_buffers.assign(static_cast<size_t>(qd), -1);
        freed.notify_one();
      });
      start = Now();
      const double cpu_start = ProcessCpuSeconds();
      for (int i = 0; i < qd; ++i) submit(i);
      while (Now() - start < seconds && !failed) {
        int buffer;
        {
          std::unique_lock<std::mutex> lock(mu);
          freed.wait(lock, [&] { return !free_buffers.empty(); });
          buffer = free_buffers.back();
          free_buffers.pop_back();
        }
        if (buffer < 0) break;
        submit(buffer);
      }
      elapsed = Now() - start;
      cpu = ProcessCpuSeconds() - cpu_start;
      // Let the reads in flight land (every buffer back, or the reaper gone), then stop it.
      {
        std::unique_lock<std::mutex> lock(mu);
        freed.wait(lock, [&] { return free_buffers.size() >= static_cast<size_t>(qd); });
      }
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, kStop);
      io_uring_submit(&ring);
      reaper.join();
    }
    const uint64_t n = reads.load();
    if (!failed && n > 0) {
      result.gbps = static_cast<double>(n) * static_cast<double>(bs) / elapsed / 1e9;
      result.cpu_us_per_read = cpu / static_cast<double>(n) * 1e6;
    }
  }
  io_uring_queue_exit(&ring);
  ::close(fd);
  return result;
}

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_VERIFYING_READER_H_
