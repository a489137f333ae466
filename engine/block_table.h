// engine/block_table.h — key → where a block's copies are and what is happening to them.
//
// The table is sharded by key (64 shards, one Mutex each) so concurrent Match calls
// rarely contend. An entry's identity never depends on its location: moving a block between
// tiers rewrites `slot[tier]`, never the key.
//
// Locking: an entry is read or written only inside Find / Upsert / Mutate / ForEach, under its
// shard's lock. Placement (engine/placement.h) additionally holds its lock around every change
// of slots, pins or writing bits (so a victim check and the eviction that follows see the
// same state); Match reads under the shard lock alone. Order: placement lock → shard lock.

#ifndef KVTIER_ENGINE_BLOCK_TABLE_H_
#define KVTIER_ENGINE_BLOCK_TABLE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "kvtier/block_key.h"
#include "kvtier/device.h"
#include "kvtier/tier_kind.h"
#include "tiers/read_claim.h"
#include "tiers/tier.h"

namespace kvtier {

// A host copy being filled from disk (or the remote tier): device streams that read it first
// wait (a host callback) for `done`; `status` says whether the bytes arrived verified.
//
// A reader with a deadline may abandon the fill (Abandon): when the read has not claimed the
// slot yet, the reader zeroes it (never a previous occupant's bytes), fails the fill with its
// reason and lets its copies go; the read, whenever it settles, leaves the slot alone.
struct HostFill {
  Notification done;
  absl::Status status;  // written before done.Notify()
  Notification settled;  // the engine's bookkeeping of the read is done (OnHostFilled)

  // Abandonable fills only (the mover that started the read sets these): the slot and its
  // size, the gate its previous bytes are copied out behind (null: none), and what records
  // the abandonment (posts the bookkeeping; called at most once, by the abandoner).
  ReadClaim claim;
  void* slot = nullptr;
  size_t bytes = 0;
  std::shared_ptr<Notification> slot_free;
  absl::AnyInvocable<void() &&> on_abandon;
  // Notified once on_abandon's bookkeeping is done (Wait() returns after it).
  Notification abandon_settled;
  // The bookkeeping's (under the placement lock): the slot, taken from the block and kept out
  // of the pool until the read settles, and the transfers that may still copy out of it.
  SlotId held_slot = kNoSlot;
  std::vector<std::shared_ptr<Event>> held_readers;

  bool abandonable() const { return slot != nullptr; }
  // Gives up on a read that has not delivered by now: true when this call abandoned it (the
  // slot is zeroed, `status` is `why`, done is notified); false when the read had claimed the
  // slot (wait for done: a copy or a decode) or someone else abandoned it first (done is, or
  // is about to be, notified). REQUIRES: abandonable().
  bool Abandon(absl::Status why) {
    if (!claim.Abandon()) return false;
    // ReadClaim::Abandon is true for every caller once abandoned; only the first goes on (two
    // loads of one block may both give up on its fill): a second zeroing could land in the
    // slot after the read settled and the slot went to another block.
    if (abandoning_.exchange(true, std::memory_order_acq_rel)) return false;
    // The slot's previous bytes may still be on their way to disk: zero it only after.
    if (slot_free != nullptr) slot_free->WaitForNotification();
    std::memset(slot, 0, bytes);
    status = std::move(why);
    if (on_abandon) std::move(on_abandon)();
    absl::AnyInvocable<void() &&> held;
    {
      std::lock_guard<std::mutex> lock(order_mu_);
      abandon_recorded_ = true;
      held = std::move(held_settle_);
    }
    if (held) std::move(held)();
    done.Notify();
    return true;
  }

  // Runs `settle` (which posts the read's bookkeeping, OnHostFilled) now, or, for a read that
  // was abandoned while on_abandon has not run yet, right after on_abandon: the read may
  // settle in the window between claim.Abandon() and on_abandon (Abandon zeroes the slot in
  // between, and may wait for its copy-out), and its bookkeeping must not come first. Booked
  // first, it took the block for one whose host copy failed and erased it (disk record too),
  // freeing the slot while Abandon could still be zeroing it.
  void SettleAfterAbandonment(absl::AnyInvocable<void() &&> settle) {
    {
      std::lock_guard<std::mutex> lock(order_mu_);
      if (claim.abandoned() && !abandon_recorded_) {
        held_settle_ = std::move(settle);
        return;
      }
    }
    std::move(settle)();
  }

 private:
  std::atomic<bool> abandoning_{false};        // Abandon got past the claim (once)
  std::mutex order_mu_;                        // a leaf
  bool abandon_recorded_ = false;              // on_abandon has run (guarded by order_mu_)
  absl::AnyInvocable<void() &&> held_settle_;  // guarded by order_mu_
};

struct BlockEntry {
  uint32_t ns_id = 0;
  // The block's slot in each tier, or kNoSlot. A block may have copies in several tiers.
  // For the disk tier the "slot" is the disk record id.
  TierArray<SlotId> slot = TierArray<SlotId>::Filled(kNoSlot);
  // Bit t set: a copy into slot[t] is in flight; ready[t] completes when it lands.
  uint8_t writing = 0;
  TierArray<std::shared_ptr<Event>> ready;
  // Which transfer wrote slot[t]: its completion clears the writing bit only if the id still
  // matches (the slot may have been freed and rewritten since).
  TierArray<uint64_t> write_id;
  // Set while the host copy is being read in from disk (then ready[kHost] is null).
  std::shared_ptr<HostFill> host_fill;
  // Leases (and a transfer's keys while it is planned). A pinned block's copies are never
  // evicted.
  uint32_t pins = 0;
  // Transfers reading the block's copies: each until its event (recorded after its copies)
  // completes. A block with a reader whose copies have not run is never evicted; one whose
  // readers have all landed may be, before their completions run.
  struct Reader {
    std::shared_ptr<Event> done;
    uint64_t transfer;  // the reading transfer's id (Placement::OpenWrite)
  };
  std::vector<Reader> readers;
  // Erased while pinned or in flight: invisible to Match and Load; its slots are reclaimed
  // when the last pin goes and the last write lands.
  bool erased = false;
  // Bit t: the copy in tier t was brought there by a prefetch hint and no Load or
  // LoadToGpuTier has used it yet (it counts against the prefetch budget).
  uint8_t prefetched = 0;
  // The block's index in its prompt (0 = the first block), when stored; 0 for blocks
  // recovered from disk. Prefix-aware eviction evicts deeper blocks (chain tails) first.
  uint32_t depth = 0;
  // The remote tier was given this block (a write sent or acknowledged) or gave it (a read):
  // it is not written there again. Not cleared when the cluster loses it (nothing says so).
  bool remote = false;
  // When the block was first stored (Unix ms; for blocks recovered from disk, the record's
  // creation time): its namespace's time to live counts from here.
  int64_t stored_unix_ms = 0;

  static constexpr uint8_t Bit(TierKind t) { return static_cast<uint8_t>(1u << static_cast<int>(t)); }

  bool has(TierKind t) const { return slot[t] != kNoSlot; }
  bool is_writing(TierKind t) const { return (writing & Bit(t)) != 0; }
  void set_writing(TierKind t, bool on) {
    writing = on ? static_cast<uint8_t>(writing | Bit(t)) : static_cast<uint8_t>(writing & ~Bit(t));
  }
  bool is_prefetched(TierKind t) const { return (prefetched & Bit(t)) != 0; }
  void set_prefetched(TierKind t, bool on) {
    prefetched =
        on ? static_cast<uint8_t>(prefetched | Bit(t)) : static_cast<uint8_t>(prefetched & ~Bit(t));
  }
  bool has_any() const {
    for (SlotId s : slot) {
      if (s != kNoSlot) return true;
    }
    return false;
  }
  // The fastest tier holding a copy. REQUIRES: has_any().
  TierKind best_tier() const {
    for (TierKind t : kAllTiers) {
      if (has(t)) return t;
    }
    return TierKind::kHost;
  }
  bool busy() const { return pins != 0 || writing != 0 || !readers.empty(); }
};

class BlockTable {
 public:
  static constexpr int kShards = 64;

  // Runs fn(BlockEntry* or nullptr) under the key's shard lock and returns its result.
  template <typename F>
  auto Find(const BlockKey& key, F&& fn) {
    Shard& s = ShardFor(key);
    MutexLock lock(&s.mu);
    auto it = s.map.find(key);
    return fn(it == s.map.end() ? nullptr : &it->second);
  }

  // Runs fn(BlockEntry&, bool inserted) on the key's entry, inserting a default one first if
  // absent.
  template <typename F>
  auto Upsert(const BlockKey& key, F&& fn) {
    Shard& s = ShardFor(key);
    MutexLock lock(&s.mu);
    auto [it, inserted] = s.map.try_emplace(key);
    return fn(it->second, inserted);
  }

  // Runs fn(BlockEntry&) on the key's entry if present and erases the entry when fn returns
  // true. Returns whether the entry was present.
  template <typename F>
  bool Mutate(const BlockKey& key, F&& fn) {
    Shard& s = ShardFor(key);
    MutexLock lock(&s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end()) return false;
    if (fn(it->second)) s.map.erase(it);
    return true;
  }

  // Visits every entry, shard by shard, under each shard's lock.
  template <typename F>
  void ForEach(F&& fn) {
    for (Shard& s : shards_) {
      MutexLock lock(&s.mu);
      for (auto& [key, entry] : s.map) fn(key, entry);
    }
  }

 private:
  struct Shard {
    Mutex mu;
    absl::flat_hash_map<BlockKey, BlockEntry> map ABSL_GUARDED_BY(mu);
  };
  // Top 6 bits of a mix of both words, so structured keys spread as well as hashed ones.
  Shard& ShardFor(const BlockKey& key) {
    return shards_[(key.lo ^ (key.hi * 0x9e3779b97f4a7c15ULL)) >> 58];
  }

  std::array<Shard, kShards> shards_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_BLOCK_TABLE_H_
