// engine/eviction/slot_keys.h — which block (key hash) each slot holds.
//
// The key hash announced by SetNextKey, and each slot's key since its insert: what policies
// that remember blocks beyond their stay in a slot key that history by (eviction_policy.h,
// "Identity"). Not thread-safe.

#ifndef KVTIER_ENGINE_EVICTION_SLOT_KEYS_H_
#define KVTIER_ENGINE_EVICTION_SLOT_KEYS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "tiers/tier.h"

namespace kvtier {
namespace policy_internal {

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

}  // namespace policy_internal
}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_SLOT_KEYS_H_
