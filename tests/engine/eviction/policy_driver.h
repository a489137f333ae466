// tests/engine/eviction/policy_driver.h — drives an EvictionPolicy the way the engine does
// (announce the key, insert; evict what PickVictim picks), for the policy tests.

#ifndef KVTIER_TESTS_ENGINE_EVICTION_POLICY_DRIVER_H_
#define KVTIER_TESTS_ENGINE_EVICTION_POLICY_DRIVER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/eviction/eviction_policy.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace policy_test {

inline bool All(SlotId) { return true; }
inline bool None(SlotId) { return false; }

// Inserts `slot` as the block with key `key` (what the engine does: announce, then insert).
inline void Insert(EvictionPolicy& policy, SlotId slot, uint64_t key) {
  policy.SetNextKey(key);
  policy.OnInsert(slot);
}

// Evicts what the policy picks among all slots; returns it.
inline SlotId EvictOne(EvictionPolicy& policy) {
  std::optional<SlotId> victim = policy.PickVictim(All);
  EXPECT_TRUE(victim.has_value());
  if (!victim) return kNoSlot;
  policy.OnRemove(*victim);
  return *victim;
}

// Drives `policy` as a cache of `num_slots` slots over a sequence of keys, the way the engine
// does (a hit is an access; a miss evicts the policy's pick when full, then inserts), and
// counts the hits among the requests from index `count_from` on.
inline int CountHits(EvictionPolicy& policy, uint32_t num_slots, const std::vector<uint64_t>& keys,
                     size_t count_from) {
  absl::flat_hash_map<uint64_t, SlotId> slot_of;
  std::vector<uint64_t> key_of(num_slots, 0);
  std::vector<SlotId> free_slots;
  for (SlotId s = num_slots; s > 0; --s) free_slots.push_back(s - 1);
  int hits = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint64_t key = keys[i];
    if (auto it = slot_of.find(key); it != slot_of.end()) {
      policy.OnAccess(it->second);
      if (i >= count_from) ++hits;
      continue;
    }
    if (free_slots.empty()) {
      const SlotId victim = EvictOne(policy);
      if (victim == kNoSlot) return -1;
      slot_of.erase(key_of[victim]);
      free_slots.push_back(victim);
    }
    const SlotId slot = free_slots.back();
    free_slots.pop_back();
    Insert(policy, slot, key);
    slot_of[key] = slot;
    key_of[slot] = key;
  }
  return hits;
}

}  // namespace policy_test
}  // namespace kvtier

#endif  // KVTIER_TESTS_ENGINE_EVICTION_POLICY_DRIVER_H_
