// engine/prefetcher.cc — see prefetcher.h.

#include "engine/prefetcher.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/log.h"

namespace kvtier {

Prefetcher::Prefetcher(size_t block_bytes, size_t budget_bytes, Hooks hooks)
    : block_(block_bytes),
      budget_(budget_bytes),
      wake_room_(std::max(block_bytes, budget_bytes / 4)),
      hooks_(std::move(hooks)) {
  thread_ = std::thread([this] { Loop(); });
}

Prefetcher::~Prefetcher() { Stop(); }

void Prefetcher::Stop() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t Prefetcher::Hint(uint32_t ns_id, absl::Span<const BlockKey> keys) {
  MutexLock lock(&mu_);
  const uint64_t id = next_hint_id_++;
  for (const BlockKey& key : keys) queue_.push_back(Item{id, ns_id, key});
  hinted_.fetch_add(keys.size(), std::memory_order_relaxed);
  return id;
}

absl::StatusOr<size_t> Prefetcher::Cancel(uint64_t hint_id) {
  MutexLock lock(&mu_);
  if (hint_id == 0 || hint_id >= next_hint_id_) {
    return absl::NotFoundError(absl::StrFormat("CancelHint: hint %d was never issued", hint_id));
  }
  const size_t before = queue_.size();
  std::erase_if(queue_, [hint_id](const Item& h) { return h.hint_id == hint_id; });
  const size_t dropped = before - queue_.size();
  cancelled_.fetch_add(dropped, std::memory_order_relaxed);
  return dropped;
}

void Prefetcher::SetSweepInterval(absl::Duration interval) {
  MutexLock lock(&mu_);  // unlocking wakes the thread, whose wait re-reads the interval
  sweep_interval_ = interval;
}

size_t Prefetcher::Room() const {
  return budget_ - std::min(budget_, outstanding_.load(std::memory_order_relaxed));
}

void Prefetcher::Charge() { outstanding_.fetch_add(block_, std::memory_order_relaxed); }

void Prefetcher::Settle(Use use) {
  switch (use) {
    case Use::kInTime:
      in_time_.fetch_add(1, std::memory_order_relaxed);
      break;
    case Use::kLate:
      late_.fetch_add(1, std::memory_order_relaxed);
      break;
    case Use::kUnused:
      unused_.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  const size_t before = outstanding_.fetch_sub(block_, std::memory_order_relaxed);
  // Wake the thread only when the room crosses a quarter of the budget, so it starts a batch
  // worth a lock hold instead of waking once per block: a wake-up is a futex call and, in a
  // VM, an inter-processor interrupt.
  const size_t room_before = budget_ - std::min(budget_, before);
  const size_t room_after = budget_ - std::min(budget_, before - block_);
  if (room_before < wake_room_ && room_after >= wake_room_) {
    MutexLock wake(&mu_);  // unlocking re-evaluates the thread's wait
  }
}

void Prefetcher::CountPromotion(size_t issued, size_t present, size_t skipped) {
  issued_.fetch_add(issued, std::memory_order_relaxed);
  present_.fetch_add(present, std::memory_order_relaxed);
  skipped_.fetch_add(skipped, std::memory_order_relaxed);
}

void Prefetcher::Fill(PrefetchStats* p) const {
  p->hinted = hinted_.load(std::memory_order_relaxed);
  p->issued = issued_.load(std::memory_order_relaxed);
  p->present = present_.load(std::memory_order_relaxed);
  p->skipped = skipped_.load(std::memory_order_relaxed);
  p->cancelled = cancelled_.load(std::memory_order_relaxed);
  p->in_time = in_time_.load(std::memory_order_relaxed);
  p->late = late_.load(std::memory_order_relaxed);
  p->unused = unused_.load(std::memory_order_relaxed);
  p->outstanding_bytes = outstanding_.load(std::memory_order_relaxed);
  p->budget_bytes = budget_;
  MutexLock lock(&mu_);
  p->queued = queue_.size();
}

void Prefetcher::Loop() {
  // Keys per batch: one placement-lock hold and one copy batch each.
  constexpr size_t kMaxBatch = 64;
  absl::Time next_sweep = absl::Now();
  for (;;) {
    uint32_t ns_id = 0;
    std::vector<BlockKey> batch;
    bool sweep = false;
    {
      MutexLock lock(&mu_);
      // Room for a batch: a quarter of the budget (as Settle wakes us), or whatever the queue
      // still holds if that is less.
      auto hints_ready = [&] {
        mu_.AssertHeld();
        return !queue_.empty() && Room() >= std::min(wake_room_, queue_.size() * block_);
      };
      // The sweep interval may change (SetSweepInterval) while the thread waits.
      const absl::Duration interval = sweep_interval_;
      auto wake = [&] {
        mu_.AssertHeld();
        return stop_ || hints_ready() || sweep_interval_ != interval;
      };
      if (interval == absl::InfiniteDuration()) {
        mu_.Await(wake);
      } else {
        (void)mu_.AwaitWithTimeout(wake, std::max(absl::ZeroDuration(), next_sweep - absl::Now()));
        if (absl::Now() >= next_sweep) {
          next_sweep = absl::Now() + interval;
          sweep = true;
        }
      }
      if (stop_) return;
      if (hints_ready()) {
        ns_id = queue_.front().ns_id;
        const size_t n = std::min(kMaxBatch, Room() / block_);
        while (batch.size() < n && !queue_.empty() && queue_.front().ns_id == ns_id) {
          batch.push_back(queue_.front().key);
          queue_.pop_front();
        }
      }
    }
    if (sweep) hooks_.sweep();
    if (batch.empty()) continue;
    if (absl::Status s = hooks_.promote(ns_id, batch); !s.ok()) {
      KVTIER_LOG_ONCE(kWarning, "prefetcher: %s", s.ToString());
      skipped_.fetch_add(batch.size(), std::memory_order_relaxed);
    }
  }
}

}  // namespace kvtier
