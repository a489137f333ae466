#include "tiers/staging_pool.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "io/io_engine.h"

namespace kvtier {

absl::Status StagingPool::Options::Validate() const {
  if (buffers == 0) {
    return absl::InvalidArgumentError("staging pool: buffers = 0; at least one is needed");
  }
  if (buffer_bytes == 0 || buffer_bytes % kIoAlignment != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("staging pool: buffer_bytes = %d must be a positive multiple of %d",
                        buffer_bytes, kIoAlignment));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StagingPool>> StagingPool::Create(const Options& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<StagingPool> pool(new StagingPool(options));
  absl::StatusOr<IoMemory> memory =
      IoMemory::Allocate(size_t{options.buffers} * options.buffer_bytes);
  if (!memory.ok()) return memory.status();
  pool->memory_ = *std::move(memory);
  MutexLock lock(&pool->mu_);
  for (uint32_t i = 0; i < options.buffers; ++i) pool->free_.push_back(static_cast<int>(i));
  return pool;
}

StagingPool::~StagingPool() {
  MutexLock lock(&mu_);
  for (char* p : overflow_) {
    if (p != nullptr) FreeAligned(p);
  }
}

char* StagingPool::Buffer(int id) {
  if (!IsOverflow(id)) {
    return static_cast<char*>(memory_.data()) + size_t(id) * options_.buffer_bytes;
  }
  MutexLock lock(&mu_);
  return overflow_[id - options_.buffers];
}

int StagingPool::TakeAnyLocked() {
  if (!free_.empty()) {
    const int id = free_.back();
    free_.pop_back();
    return id;
  }
  if (overflow_in_use_ >= options_.overflow_buffers) return -1;
  absl::StatusOr<void*> p = AllocateAligned(options_.buffer_bytes);
  if (!p.ok()) return -1;
  int id;
  if (!free_overflow_ids_.empty()) {
    id = free_overflow_ids_.back();
    free_overflow_ids_.pop_back();
    overflow_[id - options_.buffers] = static_cast<char*>(*p);
  } else {
    id = static_cast<int>(options_.buffers + overflow_.size());
    overflow_.push_back(static_cast<char*>(*p));
  }
  ++overflow_in_use_;
  return id;
}

char* StagingPool::PutBackLocked(int id) {
  if (!IsOverflow(id)) {
    free_.push_back(id);
    return nullptr;
  }
  char* p = overflow_[id - options_.buffers];
  overflow_[id - options_.buffers] = nullptr;
  free_overflow_ids_.push_back(id);
  --overflow_in_use_;
  return p;
}

int StagingPool::TakeOrQueue(Waiter waiter) {
  MutexLock lock(&mu_);
  if (free_.empty()) {
    waiters_.push_back(std::move(waiter));
    return -1;
  }
  const int id = free_.back();
  free_.pop_back();
  return id;
}

absl::Status StagingPool::TakeForWrite(absl::Span<int> ids, absl::Duration wait) {
  MutexLock lock(&mu_);
  // Back-pressure: when every buffer is busy, wait (a bounded time) for holders to return
  // some rather than refuse at once, which makes the caller drop the block. Returned pool
  // buffers go to queued readers first; a writer sees them only once no reader waits.
  mu_.AwaitWithTimeout(
      [&] {
        mu_.AssertHeld();
        return free_.size() + (options_.overflow_buffers - overflow_in_use_) >= ids.size();
      },
      wait);
  size_t taken = 0;
  for (; taken < ids.size(); ++taken) {
    ids[taken] = TakeAnyLocked();
    if (ids[taken] < 0) break;
  }
  if (taken == ids.size()) return absl::OkStatus();
  std::vector<char*> to_free;
  for (size_t i = 0; i < taken; ++i) {
    if (char* p = PutBackLocked(ids[i]); p != nullptr) to_free.push_back(p);
    ids[i] = -1;
  }
  for (char* p : to_free) FreeAligned(p);
  return absl::ResourceExhaustedError(
      absl::StrFormat("disk tier: all %u staging buffers and %u overflow buffers are busy",
                      options_.buffers, options_.overflow_buffers));
}

void StagingPool::Return(int id) {
  Waiter next;
  char* to_free = nullptr;
  {
    MutexLock lock(&mu_);
    if (IsOverflow(id) || waiters_.empty()) {
      to_free = PutBackLocked(id);
    } else {
      next = std::move(waiters_.front());
      waiters_.pop_front();
    }
  }
  if (next) {
    next(id);
  } else if (to_free != nullptr) {
    FreeAligned(to_free);
  }
}

void StagingPool::Release(int id) {
  char* p;
  {
    MutexLock lock(&mu_);
    p = PutBackLocked(id);
  }
  if (p != nullptr) FreeAligned(p);
}

StagingPool::Counts StagingPool::counts() {
  MutexLock lock(&mu_);
  return Counts{static_cast<uint32_t>(free_.size()), overflow_in_use_,
                static_cast<uint32_t>(waiters_.size())};
}

}  // namespace kvtier
