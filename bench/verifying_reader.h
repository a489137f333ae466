// bench/verifying_reader.h — the disk bench's second ceiling: the least a reader that checks
// every byte it reads must do (fio, the first ceiling, never touches its data).

#ifndef KVTIER_BENCH_VERIFYING_READER_H_
#define KVTIER_BENCH_VERIFYING_READER_H_

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/bench_util.h"
#include "common/io_memory.h"
#include "common/xxhash.h"

namespace kvtier::bench {

// The verifying reader: the least a reader that checks every byte it reads must do, as a
// second ceiling beside fio (which never touches its data). One thread, io_uring, O_DIRECT,
// the file registered, 2 x qd buffers in one registered IoMemory (huge pages), `qd` random
// reads of `bs` in flight over the first `size_mib` MiB of `file`; each completion is
// replaced by a new read first, then its buffer is hashed (XXH3, as the disk tier's records).
struct VerifyingReaderResult {
  double gbps = -1;            // -1 when the ring cannot be set up or a read fails
  double cpu_us_per_read = 0;  // this process's CPU time (user + kernel) over the reads
};
inline VerifyingReaderResult VerifyingReader(const std::string& file, size_t size_mib, size_t bs,
                                             int qd, double seconds) {
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
    std::vector<int> spare;
    auto submit = [&](int buffer) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_read_fixed(sqe, 0, base + buffer * bs, static_cast<unsigned>(bs),
                               (rng() % blocks) * bs, 0);
      sqe->flags |= IOSQE_FIXED_FILE;
      io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(buffer));
    };
    for (int i = 0; i < qd; ++i) submit(i);
    for (int i = qd; i < 2 * qd; ++i) spare.push_back(i);
    io_uring_submit(&ring);
    uint64_t reads = 0;
    volatile uint64_t sink = 0;  // the hashes are used
    bool failed = false;
    const double start = Now();
    const double cpu_start = ProcessCpuSeconds();
    while (Now() - start < seconds) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&ring, &cqe) != 0) {
        failed = true;
        break;
      }
      const int done = static_cast<int>(io_uring_cqe_get_data64(cqe));
      failed = failed || cqe->res != static_cast<int>(bs);
      io_uring_cqe_seen(&ring, cqe);
      submit(spare.back());
      spare.pop_back();
      io_uring_submit(&ring);
      sink = sink ^ XXH3_64bits(base + done * bs, bs);
      spare.push_back(done);
      ++reads;
    }
    const double elapsed = Now() - start;
    const double cpu = ProcessCpuSeconds() - cpu_start;
    // Let the reads still in flight land before the buffers go.
    for (int left = qd; left > 0; --left) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&ring, &cqe) != 0) break;
      io_uring_cqe_seen(&ring, cqe);
    }
    if (!failed && reads > 0) {
      result.gbps = reads * static_cast<double>(bs) / elapsed / 1e9;
      result.cpu_us_per_read = cpu / static_cast<double>(reads) * 1e6;
    }
  }
  io_uring_queue_exit(&ring);
  ::close(fd);
  return result;
}

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_VERIFYING_READER_H_
