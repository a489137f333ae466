// engine/eviction/s3fifo_policy.h — S3-FIFO, a small, a main and a ghost FIFO queue.
//
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

#ifndef KVTIER_ENGINE_EVICTION_S3FIFO_POLICY_H_
#define KVTIER_ENGINE_EVICTION_S3FIFO_POLICY_H_

#include <cstdint>
#include <optional>

#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/ghost_list.h"
#include "engine/eviction/slot_keys.h"
#include "engine/eviction/slot_lists.h"

namespace kvtier {

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

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_S3FIFO_POLICY_H_
