// tiers/staging_pool.h — the disk tier's staging buffers: the aligned memory records are
// encoded into and read through, lent one buffer at a time.
//
// A pool of `buffers` equal buffers of `buffer_bytes` (4096-aligned, one allocation: the disk
// tier registers it with the I/O engine, so I/O on them takes the fixed-buffer path; an
// IoMemory, in huge pages where the kernel has them: common/io_memory.h says why), and
// beyond it up to `overflow_buffers` plain aligned buffers, allocated when lent and freed when
// returned, for writes only: a burst of evictions is absorbed rather than dropped.
//
// Promises:
//   * A buffer is lent to one holder at a time. Ids [0, buffers) are pool buffers, ids from
//     `buffers` up overflow buffers; Buffer(id) is stable while the id is lent.
//   * Readers queue, writers wait. TakeOrQueue never waits: with no pool buffer free, its
//     callback is queued, and runs with a buffer on the thread that returns the next pool
//     buffer. Queued callbacks get returned pool buffers before anyone else, first come first
//     served. TakeForWrite waits (a bounded time) and takes every buffer it asks for, or none.
//   * The pool never calls out while it holds its lock.
//
// Thread-safe. Lock order: the pool's lock is a leaf (taken last, never held while calling
// anything). TakeOrQueue, Release and Buffer may be called under the caller's locks; Return
// may run a queued callback and TakeForWrite may wait, so they must not be.

#ifndef KVTIER_TIERS_STAGING_POOL_H_
#define KVTIER_TIERS_STAGING_POOL_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/io_memory.h"
#include "common/mutex.h"

namespace kvtier {

class StagingPool {
 public:
  struct Options {
    uint32_t buffers = 32;          // registered pool buffers, >= 1
    size_t buffer_bytes = 0;        // a positive multiple of 4096
    uint32_t overflow_buffers = 0;  // plain buffers lent to writes beyond the pool

    // InvalidArgument naming the field.
    absl::Status Validate() const;
  };

  // Allocates the pool (ResourceExhausted if the memory cannot be had).
  static absl::StatusOr<std::unique_ptr<StagingPool>> Create(const Options& options);
  // REQUIRES: every buffer has been returned and no callback is queued.
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // The pool's one allocation (for IoEngine::RegisterBuffers); overflow buffers lie outside.
  // Bytes of the pool in huge pages now (IoMemory::HugePageBytes).
  size_t HugePageBytes() const { return memory_.HugePageBytes(); }
  std::pair<void*, size_t> memory() const {
    return {memory_.data(), size_t{options_.buffers} * options_.buffer_bytes};
  }
  const Options& options() const { return options_; }

  // The memory of lent buffer `id`. REQUIRES: the caller holds `id`.
  char* Buffer(int id) ABSL_LOCKS_EXCLUDED(mu_);

  // Called with the id of the buffer lent to it.
  using Waiter = absl::AnyInvocable<void(int id)>;
  // A free pool buffer's id, and `waiter` is dropped; or -1, and `waiter` is queued: it runs
  // later, on the thread that calls Return, with a buffer. Never waits.
  int TakeOrQueue(Waiter waiter) ABSL_LOCKS_EXCLUDED(mu_);

  // Takes ids.size() buffers (pool buffers first, then overflow ones) into `ids`, waiting up
  // to `wait` for enough to be free. ResourceExhausted when they are not free in time; then
  // none is taken. REQUIRES: the caller holds no lock that a queued callback or the holder of
  // a buffer needs in order to return one.
  absl::Status TakeForWrite(absl::Span<int> ids, absl::Duration wait) ABSL_LOCKS_EXCLUDED(mu_);

  // Gives `id` back. A pool buffer goes to the first queued callback, which runs here, before
  // Return returns. REQUIRES: the caller holds no lock the queued callbacks take.
  void Return(int id) ABSL_LOCKS_EXCLUDED(mu_);
  // Gives `id` back without handing it to a queued callback: for a thread that must not run
  // callbacks (a caller's thread). A queued callback then waits for the next Return.
  void Release(int id) ABSL_LOCKS_EXCLUDED(mu_);

  struct Counts {
    uint32_t free = 0;             // pool buffers free
    uint32_t overflow_in_use = 0;  // overflow buffers lent
    uint32_t queued = 0;           // callbacks waiting for a pool buffer
  };
  Counts counts() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit StagingPool(const Options& options) : options_(options) {}
  bool IsOverflow(int id) const { return id >= static_cast<int>(options_.buffers); }
  // A pool buffer, else an overflow buffer, else -1.
  int TakeAnyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts `id` back on the free list, or frees it (overflow). Returns the memory to free
  // outside the lock, or nullptr.
  char* PutBackLocked(int id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  IoMemory memory_;  // buffers * buffer_bytes

  Mutex mu_;
  std::vector<int> free_ ABSL_GUARDED_BY(mu_);
  // Lent overflow buffers; index = id - buffers (nullptr: not lent).
  std::vector<char*> overflow_ ABSL_GUARDED_BY(mu_);
  std::vector<int> free_overflow_ids_ ABSL_GUARDED_BY(mu_);
  uint32_t overflow_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_STAGING_POOL_H_
