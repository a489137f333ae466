// workload/engine_policy_adapter.h — runs any of the engine's eviction policies
// (engine/eviction/eviction_policy.h, MakeEvictionPolicy) as a simulator CachePolicy
// (workload/simulator.h), so the eviction study measures the very code the engine ships
// rather than a re-implementation of each algorithm.
//
// The engine's policies see dense slot ids of a fixed-size tier; the simulator speaks block
// ids. The adapter plays the tier's part: it owns `capacity` slots with a free list, maps
// each tracked block id to its slot, and forwards each event the way the engine does
// (engine/placement.cc, Attach / Detach / EvictOne):
//   * Insert(id)  -> a free slot; SetNextKey(hash of id); OnInsert(slot);
//   * Access(id)  -> OnAccess(slot);
//   * Victim()    -> PickVictim(every slot evictable): the simulator has no pins or copies
//                    in flight, so nothing is ever busy;
//   * Remove(id)  -> OnRemove(slot); the slot returns to the free list.
// SetNextKey gets a mixed hash of the id, not the id itself: the engine passes a hash of the
// block key (well spread bits), and Mooncake's ids are small consecutive integers, so the
// frequency sketch and ghost maps see the same kind of key they see in the engine.
//
// Slots are handed out lowest first and a freed slot is reused next, which is what the
// engine's Tier::Allocate does in the simulator's setting (one slot freed per eviction); no
// policy's decisions depend on slot numbers, but keeping them alike makes a trace of slot
// events from the simulator comparable to one from the engine.
//
// Cost: O(1) expected per event plus the policy's own; one hash map of the tracked ids.
// Not thread-safe (neither are the policies).

#ifndef KVTIER_WORKLOAD_ENGINE_POLICY_ADAPTER_H_
#define KVTIER_WORKLOAD_ENGINE_POLICY_ADAPTER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workload/simulator.h"

namespace kvtier {
class EvictionPolicy;  // engine/eviction/eviction_policy.h
}  // namespace kvtier

namespace kvtier::workload {

// The engine's policy names, in MakeEvictionPolicy's order (the default is "arc").
const std::vector<std::string>& EnginePolicyNames();

class EnginePolicyAdapter final : public CachePolicy {
 public:
  // The engine policy `name` over `capacity` slots. InvalidArgument for an unknown name
  // (listing the known ones) or a capacity beyond 2^32 - 2 slots (the engine's SlotId range).
  // capacity 0 is allowed (Simulate never inserts then).
  // A name with the suffix "+prefix" (e.g. "lru+prefix") adds the engine's prefix-aware
  // refinement (EngineOptions::prefix_aware_eviction): among the policy's 8 most evictable
  // blocks, the deepest in its request goes first.
  static absl::StatusOr<std::unique_ptr<EnginePolicyAdapter>> Create(absl::string_view name,
                                                                     size_t capacity);
  ~EnginePolicyAdapter() override;

  const char* name() const override;
  void SetNextDepth(uint32_t depth) override { next_depth_ = depth; }
  // REQUIRES: id not tracked and fewer than capacity() blocks tracked (Simulate keeps both).
  // A violation is a bug in the caller: it aborts with a message rather than corrupt the
  // policy's lists.
  void Insert(uint64_t id) override;
  // Ignored for an untracked id (as LruCachePolicy does).
  void Access(uint64_t id) override;
  void Remove(uint64_t id) override;
  std::optional<uint64_t> Victim() override;

  size_t capacity() const { return block_of_slot_.size(); }
  size_t size() const { return slot_of_block_.size(); }

 private:
  EnginePolicyAdapter(std::unique_ptr<EvictionPolicy> policy, size_t capacity,
                      bool prefix_aware);

  std::unique_ptr<EvictionPolicy> policy_;
  std::vector<uint64_t> block_of_slot_;  // valid for slots in use
  std::vector<uint32_t> free_slots_;     // a stack; the back is handed out next
  absl::flat_hash_map<uint64_t, uint32_t> slot_of_block_;
  const bool prefix_aware_;
  std::string name_;
  uint32_t next_depth_ = 0;
  std::vector<uint32_t> depth_of_slot_;
};

}  // namespace kvtier::workload

#endif  // KVTIER_WORKLOAD_ENGINE_POLICY_ADAPTER_H_
