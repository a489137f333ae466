// engine/eviction_policies.h — the classic eviction policies besides LRU: FIFO, CLOCK, SIEVE,
// S3-FIFO, ARC, W-TinyLFU, and LFU with aging.
//
// Every policy keeps its queues as intrusive lists over the dense slot ids (arrays sized at
// construction), so an event costs O(1) and no allocation; the only maps are the ghost lists
// of S3-FIFO and ARC, reserved up front and bounded by num_slots entries.
//
// Two things the engine's interface does not say directly, resolved the same way everywhere:
//  * Identity. Slots are reused for other blocks, so history that outlives a slot (ghosts,
//    TinyLFU's frequency sketch) is keyed by the hash SetNextKey gives before each insert,
//    remembered per slot; without it the slot id stands in for the key.
//  * Eviction versus removal. The engine calls PickVictim, then OnRemove on the slot it
//    evicts, but it also calls OnRemove when a block goes away for other reasons. A policy
//    with ghosts therefore treats an OnRemove of the slot its last PickVictim returned as an
//    eviction (the block's key becomes a ghost) and any other OnRemove as a plain removal.
//
// Busy slots: PickVictim offers only slots `evictable` accepts. What happens to a slot it
// skips is documented per policy; in short, a skipped slot keeps its place (it stays the most
// evictable), while the bookkeeping the algorithm does anyway on the way (clearing reference
// bits, S3-FIFO's promotions) still happens. Every sweep is bounded, so a call where nothing
// is evictable returns nullopt and leaves the policy usable.

#ifndef KVTIER_ENGINE_EVICTION_POLICIES_H_
#define KVTIER_ENGINE_EVICTION_POLICIES_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/eviction_policy.h"

namespace kvtier {
namespace policy_internal {

// Several doubly linked lists over slot ids sharing one pair of link arrays; a slot is on at
// most one of them. "Front" is the newest / most recently used end, "back" the oldest.
class SlotLists {
 public:
  static constexpr uint8_t kNoList = 0xff;

  SlotLists(uint32_t num_slots, int num_lists);

  uint8_t ListOf(SlotId slot) const { return list_[slot]; }
  bool Contains(SlotId slot) const { return list_[slot] != kNoList; }
  uint32_t size(int list) const { return size_[list]; }
  SlotId Front(int list) const { return front_[list]; }
  SlotId Back(int list) const { return back_[list]; }
  SlotId Newer(SlotId slot) const { return newer_[slot]; }  // toward the front
  SlotId Older(SlotId slot) const { return older_[slot]; }  // toward the back

  void PushFront(int list, SlotId slot);
  void PushBack(int list, SlotId slot);
  // Links `slot` right behind `pos` (on the older side), on pos's list.
  void InsertOlderThan(SlotId pos, SlotId slot);
  void Remove(SlotId slot);
  void MoveToFront(int list, SlotId slot);

  std::vector<SlotId> Order(int list) const;  // front to back

 private:
  std::vector<SlotId> newer_;
  std::vector<SlotId> older_;
  std::vector<uint8_t> list_;
  std::vector<SlotId> front_;
  std::vector<SlotId> back_;
  std::vector<uint32_t> size_;
};

// A bounded list of key hashes (a ghost: the identity of blocks no longer cached), front the
// newest. Adding at capacity drops the oldest; adding a key already present moves it to the
// front. Nodes come from a pool sized at construction.
class GhostList {
 public:
  explicit GhostList(uint32_t capacity);

  bool Contains(uint64_t key) const { return index_.contains(key); }
  bool Remove(uint64_t key);  // false when absent
  void PushFront(uint64_t key);
  void PopBack();
  uint32_t size() const { return static_cast<uint32_t>(index_.size()); }

 private:
  void Unlink(uint32_t node);

  static constexpr uint32_t kNil = UINT32_MAX;
  uint32_t capacity_;
  std::vector<uint64_t> key_;
  std::vector<uint32_t> newer_;
  std::vector<uint32_t> older_;
  std::vector<uint32_t> free_;
  uint32_t front_ = kNil;
  uint32_t back_ = kNil;
  absl::flat_hash_map<uint64_t, uint32_t> index_;
};

// The key hash announced by SetNextKey, and each slot's key since its insert.
class SlotKeys {
 public:
  explicit SlotKeys(uint32_t num_slots) : keys_(num_slots, 0) {}

  void SetNext(uint64_t key_hash) {
    next_ = key_hash;
    has_next_ = true;
  }
  // The key announced for the insert now happening (the slot id if none was), remembered.
  uint64_t Take(SlotId slot) {
    keys_[slot] = has_next_ ? next_ : slot;
    has_next_ = false;
    return keys_[slot];
  }
  uint64_t Of(SlotId slot) const { return keys_[slot]; }
  std::optional<uint64_t> Pending() const {
    return has_next_ ? std::optional<uint64_t>(next_) : std::nullopt;
  }

 private:
  std::vector<uint64_t> keys_;
  uint64_t next_ = 0;
  bool has_next_ = false;
};

// Count-min sketch of 4-bit counters, 4 rows, with TinyLFU's aging: after 10 × num_slots
// increments every counter is halved, so the estimate follows recent popularity.
class FrequencySketch {
 public:
  explicit FrequencySketch(uint32_t num_slots);
  // A sketch of at least `width` counters per row (rounded up to a power of two, >= 64) that
  // halves after `sample_size` increments (>= 1).
  FrequencySketch(uint32_t width, uint64_t sample_size);

  void Increment(uint64_t key);
  uint32_t Estimate(uint64_t key) const;

 private:
  static constexpr int kDepth = 4;
  // Word and bit shift of `key`'s counter in `row`.
  void Locate(uint64_t key, int row, size_t* word, int* shift) const;
  void Halve();

  uint32_t width_;  // counters per row, a power of two >= 64
  std::vector<uint64_t> table_;  // kDepth rows of width_ counters, 16 per word
  uint64_t additions_ = 0;
  uint64_t sample_size_;
};

}  // namespace policy_internal

// FIFO: evicts in insertion order; accesses change nothing. The baseline every scan-resistant
// policy is measured against (Belady et al., CACM 1969, showed its anomaly). Skipped slots
// keep their place. OnInsertCold: at the oldest end.
class FifoPolicy final : public EvictionPolicy {
 public:
  explicit FifoPolicy(uint32_t num_slots) : lists_(num_slots, 1) {}

  const char* name() const override { return "fifo"; }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  std::vector<SlotId> Order() const { return lists_.Order(0); }  // newest first (for tests)

 private:
  policy_internal::SlotLists lists_;
};

// CLOCK (Corbató, "A paging experiment with the Multics system", 1968): the tracked slots sit
// on a circle in insertion order with a hand on the oldest; an access sets the slot's
// reference bit. To pick, the hand sweeps: a set bit is cleared and the slot passed (its
// second chance: it is now examined last), a clear bit on an evictable slot is the victim.
// New slots are linked just behind the hand (examined last) with the bit clear; the hand
// stays on the victim, and once it is removed the next insert takes its place on the circle —
// the replacement frame of the textbook.
//
// Skipped slots: the hand stops at the first busy slot with a clear bit, which therefore
// stays the next to be examined; slots whose bit is cleared beyond it are moved behind the
// hand, exactly where passing them would have put them. A sweep is bounded at two turns.
// OnInsertCold: under the hand with the bit clear (examined first).
class ClockPolicy final : public EvictionPolicy {
 public:
  explicit ClockPolicy(uint32_t num_slots);

  const char* name() const override { return "clock"; }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // Tracked slots in the order the hand will examine them (for tests).
  std::vector<SlotId> Order() const;
  bool referenced(SlotId slot) const { return referenced_[slot]; }

 private:
  void Unlink(SlotId slot);
  void LinkBefore(SlotId pos, SlotId slot);  // pos == kNoSlot: the circle is empty

  std::vector<SlotId> prev_;
  std::vector<SlotId> next_;  // the direction the hand moves
  std::vector<bool> referenced_;
  std::vector<bool> tracked_;
  SlotId hand_ = kNoSlot;
  uint32_t size_ = 0;
};

// SIEVE (Zhang et al., "SIEVE is Simpler than LRU", NSDI'24): a FIFO queue with a visited bit
// per slot and a hand. New slots go to the head with the bit clear; a hit only sets the bit —
// nothing moves. To pick, the hand moves from where it stopped toward the head (wrapping to
// the tail), clearing set bits, and stops at the first slot with a clear bit; after that
// slot's removal the hand rests on its newer neighbour. Survivors keep their place, which is
// what lets a working set outlast a scan: the hand chases the newest, unvisited blocks.
//
// Skipped slots keep their place and their bit; the hand passes them (a busy block is in use,
// so it is treated like a visited one, without losing the bit). A sweep is bounded at two
// passes. OnInsertCold: just ahead of the hand with the bit clear (examined first).
class SievePolicy final : public EvictionPolicy {
 public:
  explicit SievePolicy(uint32_t num_slots) : lists_(num_slots, 1), visited_(num_slots, false) {}

  const char* name() const override { return "sieve"; }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  std::vector<SlotId> Order() const { return lists_.Order(0); }  // head (newest) first
  bool visited(SlotId slot) const { return visited_[slot]; }
  SlotId hand() const { return hand_; }  // kNoSlot: the next sweep starts at the tail

 private:
  policy_internal::SlotLists lists_;
  std::vector<bool> visited_;
  SlotId hand_ = kNoSlot;
};

// S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP'23): a small
// FIFO S (10% of the slots), a main FIFO M (90%) and a ghost FIFO G of the keys last evicted
// from S (as many as M holds). Each slot has a 2-bit counter (0..3) that hits increment.
// Inserts go to S, or to M when the key is in G (it was evicted from S too early). To pick:
// from S while S holds its 10% share, else from M. S's tail moves to M (counter reset) if it
// was hit since insertion, else it is the victim and its key joins G — one-hit wonders leave
// quickly. M's tail with a non-zero counter is reinserted at M's head with the counter
// decremented (lazy promotion), else it is the victim.
//
// Threshold: an object moves from S to M after one hit, as in the paper's text and its
// original simulator code (libCacheSim's later default waits for two).
// Skipped slots: a busy slot with a zero counter keeps its place at its queue's tail end;
// the moves the algorithm makes on the way (S→M promotions, M reinsertions) still happen.
// If the chosen queue has nothing evictable the other one is tried. A repeated PickVictim
// before OnRemove returns the same victim while it is still evictable and unhit.
// OnInsertCold: at S's tail with the counter at zero, not consulting G.
class S3FifoPolicy final : public EvictionPolicy {
 public:
  explicit S3FifoPolicy(uint32_t num_slots);

  const char* name() const override { return "s3fifo"; }
  void SetNextKey(uint64_t key_hash) override { keys_.SetNext(key_hash); }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests.
  bool InSmall(SlotId slot) const { return lists_.ListOf(slot) == kSmall; }
  bool InMain(SlotId slot) const { return lists_.ListOf(slot) == kMain; }
  bool InGhost(uint64_t key_hash) const { return ghost_.Contains(key_hash); }
  int frequency(SlotId slot) const { return freq_[slot]; }
  uint32_t small_capacity() const { return small_capacity_; }

 private:
  static constexpr int kSmall = 0;
  static constexpr int kMain = 1;
  static constexpr uint8_t kMaxFrequency = 3;
  static constexpr uint8_t kMoveToMainThreshold = 1;

  std::optional<SlotId> EvictFromSmall(absl::FunctionRef<bool(SlotId)> evictable);
  std::optional<SlotId> EvictFromMain(absl::FunctionRef<bool(SlotId)> evictable);

  uint32_t small_capacity_;
  policy_internal::SlotLists lists_;
  std::vector<uint8_t> freq_;
  policy_internal::SlotKeys keys_;
  policy_internal::GhostList ghost_;
  SlotId pending_victim_ = kNoSlot;  // the last PickVictim result, until removed
};

// ARC (Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST'03):
// resident lists T1 (seen once recently) and T2 (seen at least twice), both LRU, and ghost
// lists B1 / B2 of the keys evicted from each; a target p for T1's size adapts: a re-insert
// of a key in B1 means T1 was too small (p grows by max(1, |B2|/|B1|)), one in B2 that T2 was
// (p shrinks by max(1, |B1|/|B2|)). Hits move a slot to T2's MRU end. REPLACE evicts T1's LRU
// when |T1| > p (or |T1| == p and the announced next key is in B2), else T2's LRU. A scan
// only churns T1. Directory sizes follow the paper: |T1| + |B1| <= c and all four <= 2c.
//
// Because the engine picks a victim before it inserts, the paper's request steps are split:
// REPLACE runs in PickVictim, the adaptation of p and the ghost bookkeeping in OnInsert.
// Skipped slots keep their place; if the chosen list has nothing evictable the other is
// tried. OnInsertCold: at T1's LRU end; a ghost entry of its key is dropped without adapting
// p (a copy in passing says nothing about the lists' sizes).
class ArcPolicy final : public EvictionPolicy {
 public:
  explicit ArcPolicy(uint32_t num_slots);

  const char* name() const override { return "arc"; }
  void SetNextKey(uint64_t key_hash) override { keys_.SetNext(key_hash); }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests.
  uint32_t p() const { return p_; }
  bool InT1(SlotId slot) const { return lists_.ListOf(slot) == kT1; }
  bool InT2(SlotId slot) const { return lists_.ListOf(slot) == kT2; }
  bool InB1(uint64_t key_hash) const { return b1_.Contains(key_hash); }
  bool InB2(uint64_t key_hash) const { return b2_.Contains(key_hash); }

 private:
  static constexpr int kT1 = 0;
  static constexpr int kT2 = 1;

  // Makes room in the directory for a key that is in neither ghost (the paper's case IV).
  void TrimDirectory();

  uint32_t capacity_;
  uint32_t p_ = 0;
  policy_internal::SlotLists lists_;
  policy_internal::SlotKeys keys_;
  policy_internal::GhostList b1_;
  policy_internal::GhostList b2_;
  SlotId pending_victim_ = kNoSlot;
};

// W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission
// Policy", ACM TOS 2017; the layout of Caffeine): a window LRU of 1% of the slots in front of
// a main SLRU (20% probation, 80% protected), and a frequency sketch (count-min, 4-bit
// counters, halved every 10 × num_slots increments) fed by every insert and access. New slots
// enter the window; the window's LRU slot is the candidate for main, and it is admitted only
// if its estimated frequency beats that of main's victim (probation's LRU end, protected's
// if probation is empty) — otherwise the candidate itself is evicted. A probation hit moves
// the slot to protected; protected's overflow drops back to probation's MRU end.
//
// Because the engine picks a victim before it inserts, the duel happens in PickVictim when
// the window is at its size and main is full (the insert to come will push the candidate
// out): if the main victim loses, the candidate moves to probation when the victim is
// removed. Before the cache is full, window overflow goes to probation without a duel. No
// doorkeeper and no random admission jitter (Caffeine's guard against hash flooding).
// Skipped slots keep their place; a busy candidate that would lose is admitted anyway (it
// cannot be evicted now). OnInsertCold: at the window's LRU end, so it is the next candidate.
class TinyLfuPolicy final : public EvictionPolicy {
 public:
  explicit TinyLfuPolicy(uint32_t num_slots);

  const char* name() const override { return "tinylfu"; }
  void SetNextKey(uint64_t key_hash) override { keys_.SetNext(key_hash); }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests.
  bool InWindow(SlotId slot) const { return lists_.ListOf(slot) == kWindow; }
  bool InProbation(SlotId slot) const { return lists_.ListOf(slot) == kProbation; }
  bool InProtected(SlotId slot) const { return lists_.ListOf(slot) == kProtected; }
  uint32_t EstimatedFrequency(uint64_t key_hash) const { return sketch_.Estimate(key_hash); }

 private:
  static constexpr int kWindow = 0;
  static constexpr int kProbation = 1;
  static constexpr int kProtected = 2;

  uint32_t main_size() const { return lists_.size(kProbation) + lists_.size(kProtected); }
  void Insert(SlotId slot, bool cold);
  // Moves window overflow to probation while main has room.
  void Rebalance();
  // Main's first evictable slot in eviction order.
  std::optional<SlotId> MainVictim(absl::FunctionRef<bool(SlotId)> evictable) const;

  uint32_t window_capacity_;
  uint32_t main_capacity_;
  uint32_t protected_capacity_;
  policy_internal::SlotLists lists_;
  policy_internal::SlotKeys keys_;
  policy_internal::FrequencySketch sketch_;
  SlotId pending_victim_ = kNoSlot;  // the last PickVictim result, until removed
  SlotId pending_admit_ = kNoSlot;   // the candidate that beat it
};

// LFU with aging ("lfu"): frequency classes, recency within a class, and an exchange rate
// between the two. Every insert and access counts toward the block's key in a frequency
// sketch (count-min, 4-bit counters, halved every 10 x num_slots counts as TinyLFU's, but 16
// counters per slot wide), so counts outlive a block's stay and age with time. A slot lives
// in class c = min(count, kClasses) as of its last insert or access, on that class's LRU
// list, stamped with a logical clock that every insert and access advances. The victim is
// the slot whose idle time divided by c^2 is largest: a block seen c times may stay idle c^2
// times as long as a one-time block before it goes. No admission duel: every block enters,
// so a prompt's chain is never broken in the middle by a refused block (what sinks W-TinyLFU
// on prefix caches, where a chain's blocks arrive together), and scans churn class 1 only.
//
// The constants are measured, not derived (bench eviction on the shared Mooncake trace,
// docs/benchmarks.md): c^2 beat c^0.5, c, c^1.5 and c^3, and 4 classes beat 8. There, families
// of requests come back sooner the more often they have come (median gap 559 requests after
// the first, 166 after the fourth), so the idle time a block earns grows faster than its count.
//
// Skipped slots keep their place: each class offers its oldest evictable slot. Ties go to
// the lower class. OnInsertCold: class 1 with the oldest possible stamp (examined first),
// without counting toward the key.
class AgedLfuPolicy final : public EvictionPolicy {
 public:
  static constexpr int kClasses = 4;

  explicit AgedLfuPolicy(uint32_t num_slots);

  const char* name() const override { return "lfu"; }
  void SetNextKey(uint64_t key_hash) override { keys_.SetNext(key_hash); }
  void OnInsert(SlotId slot) override;
  void OnInsertCold(SlotId slot) override;
  void OnAccess(SlotId slot) override;
  void OnRemove(SlotId slot) override;
  std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) override;

  // For tests: the slot's class (1..kClasses; 0 if untracked) and its key's count.
  int frequency_class(SlotId slot) const {
    return lists_.Contains(slot) ? lists_.ListOf(slot) + 1 : 0;
  }
  uint32_t EstimatedFrequency(uint64_t key_hash) const { return sketch_.Estimate(key_hash); }

 private:
  // Counts the key and files the slot under its class, newest, stamped now.
  void Touch(SlotId slot, uint64_t key);

  policy_internal::SlotLists lists_;  // list c - 1 holds class c, front the newest
  policy_internal::SlotKeys keys_;
  policy_internal::FrequencySketch sketch_;
  std::vector<uint64_t> stamp_;  // the clock at the slot's last insert or access
  uint64_t clock_ = 0;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_POLICIES_H_
