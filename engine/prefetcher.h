// engine/prefetcher.h — look-ahead hints (Engine::Hint), the budget that bounds them, and the
// background thread that serves them.
//
// Hints queue block keys in the order they will be needed; the thread takes them in batches
// of one namespace and has them promoted toward the top tier (the engine's Promote hook),
// while the bytes of hinted blocks in flight or landed and not yet used stay within the
// budget. The ledger (Charge / Settle) is kept by placement as hinted blocks land, are used
// (in time or late) or are evicted unused; settling returns their bytes to the budget and
// wakes the thread when a quarter of the budget is free again. The same thread runs the
// sweep of expired blocks when any namespace has a time to live.
//
// Promises: hints are served in the order given, across calls; CancelHint drops what has not
// started; the budget is never exceeded by hinted blocks.
//
// The budget (set by EngineImpl::MakeParts): EngineOptions::prefetch_budget_bytes, or half the
// top tier's slots; and where the engine has a disk or remote tier, at most half the host
// tier's slots. A hinted block read from below holds a host slot while the read and the copy
// up are in flight (with a GPU tier), or is the hinted copy itself (without one), and hints
// never evict hinted blocks not yet used (Placement::set_protect_prefetched). So the host
// room hints may take is bounded as the top tier's is: half the tier stays for the blocks
// in use, demotions and the loads' own reads, and a look-ahead window larger than the host
// tier cannot evict its own blocks before they are used, nor fail for want of a host slot
// (a skip, which drops the key) — it waits for room instead, as it does for the top tier.
//
// Thread-safe. Locking: mu_ is a leaf lock; the thread releases it before calling the hooks
// (which take the placement lock). Ledger calls come under the placement lock and take mu_
// only to wake the thread.

#ifndef KVTIER_ENGINE_PREFETCHER_H_
#define KVTIER_ENGINE_PREFETCHER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "kvtier/block_key.h"
#include "kvtier/engine.h"

namespace kvtier {

class Prefetcher {
 public:
  struct Hooks {
    // Promotes a batch of hinted keys of namespace ns_id toward the top tier. An error
    // counts the whole batch as skipped.
    absl::AnyInvocable<absl::Status(uint32_t ns_id, absl::Span<const BlockKey> keys)> promote;
    // Removes blocks whose time to live has passed.
    absl::AnyInvocable<void()> sweep;
  };
  enum class Use { kInTime, kLate, kUnused };

  // Starts the thread. `budget_bytes` > 0.
  Prefetcher(size_t block_bytes, size_t budget_bytes, Hooks hooks);
  // Stops the thread (as Stop).
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Stops the thread after the batch it is serving; idempotent. The hooks are not called
  // afterwards.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Queues `keys` of namespace ns_id; returns the hint's id (for Cancel).
  uint64_t Hint(uint32_t ns_id, absl::Span<const BlockKey> keys) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops the hint's keys not yet taken; returns how many. NotFound for an id never issued.
  absl::StatusOr<size_t> Cancel(uint64_t hint_id) ABSL_LOCKS_EXCLUDED(mu_);
  // How often the thread sweeps expired blocks (InfiniteDuration: never).
  void SetSweepInterval(absl::Duration interval) ABSL_LOCKS_EXCLUDED(mu_);

  // Ledger. A hinted block is now in flight to the top tier: its bytes count against the
  // budget until Settle.
  void Charge();
  // A hinted block was used in time or late, or evicted unused: counted, and its bytes go
  // back to the budget.
  void Settle(Use use) ABSL_LOCKS_EXCLUDED(mu_);
  // What one promotion of hinted keys did.
  void CountPromotion(size_t issued, size_t present, size_t skipped);

  void Fill(PrefetchStats* out) const ABSL_LOCKS_EXCLUDED(mu_);
  size_t budget_bytes() const { return budget_; }

 private:
  struct Item {
    uint64_t hint_id;
    uint32_t ns_id;
    BlockKey key;
  };
  void Loop();
  size_t Room() const;

  const size_t block_;
  const size_t budget_;
  // Room worth waking for: a quarter of the budget (at least one block).
  const size_t wake_room_;
  Hooks hooks_;

  mutable Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t next_hint_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration sweep_interval_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();

  // Bytes of hinted blocks in flight or unused in the top tier. Only the thread adds to it
  // (through the promote hook), so room it sees stays room.
  std::atomic<size_t> outstanding_{0};
  std::atomic<uint64_t> hinted_{0}, issued_{0}, present_{0}, skipped_{0}, cancelled_{0},
      in_time_{0}, late_{0}, unused_{0};
  std::thread thread_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_PREFETCHER_H_
