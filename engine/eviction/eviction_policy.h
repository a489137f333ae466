// engine/eviction/eviction_policy.h — which slot of a full tier to give up next.
//
// A policy sees only slot ids and events on them (inserted, accessed, removed); it knows
// nothing of bytes or other tiers, and of keys only a hash (SetNextKey) for its history. The
// engine asks for a victim with a predicate that says whether a slot may be evicted now (not
// pinned, leased or in flight); the policy offers slots from most to least evictable until the
// predicate accepts one.
//
// Every policy (one file pair each in this folder: lru, fifo, clock, sieve, s3fifo, arc,
// tinylfu, lfu, and adaptive, which runs arc, lru, lfu and s3fifo as experts) keeps its queues as
// intrusive lists over the dense slot ids (arrays sized at construction), so an event costs
// O(1) and no allocation; the only maps are the ghost lists of S3-FIFO and ARC and the
// adaptive policy's shadow-cache map, reserved up front and bounded by their slots.
//
// Two things the interface does not say directly, resolved the same way by every policy:
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
//
// Not thread-safe: the engine calls a tier's policy under its placement lock.

#ifndef KVTIER_ENGINE_EVICTION_EVICTION_POLICY_H_
#define KVTIER_ENGINE_EVICTION_EVICTION_POLICY_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tiers/tier.h"

namespace kvtier {

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  virtual const char* name() const = 0;
  // REQUIRES: slot < num_slots and not currently tracked.
  virtual void OnInsert(SlotId slot) = 0;
  // As OnInsert, for a copy made in passing (a block read from disk on its way to the GPU
  // tier, which holds it now): the slot starts as the most evictable, so a stream of such
  // copies cycles through a few slots instead of pushing out what the tier holds for its
  // own sake. REQUIRES: as OnInsert.
  virtual void OnInsertCold(SlotId slot) { OnInsert(slot); }
  // The stable identity (a hash of the block key) of the block that the next OnInsert or
  // OnInsertCold inserts. Slot ids are reused for other blocks, so policies that remember
  // blocks beyond their stay in a slot (the ghosts of S3-FIFO and ARC, TinyLFU's frequency
  // sketch) key that history by this hash. The engine calls it before each insert; a policy
  // that was not told treats the slot id as the key. The default ignores it.
  virtual void SetNextKey(uint64_t /*key_hash*/) {}
  // The position in its prompt (0 = the first block) of the block the next OnInsert or
  // OnInsertCold inserts, when the caller knows it (the engine calls it before each insert,
  // with SetNextKey). Only the adaptive policy uses it, to score its experts by prefix hits (a
  // hit counts only while every shallower block of the request hit too); a policy not told
  // takes 0. The default ignores it.
  virtual void SetNextDepth(uint32_t /*depth*/) {}
  // REQUIRES: slot is tracked.
  virtual void OnAccess(SlotId slot) = 0;
  // REQUIRES: slot is tracked. Afterwards it is not.
  virtual void OnRemove(SlotId slot) = 0;
  // The most evictable tracked slot for which `evictable` returns true, or nullopt. Does not
  // remove it: the engine calls OnRemove once the eviction is done.
  virtual std::optional<SlotId> PickVictim(absl::FunctionRef<bool(SlotId)> evictable) = 0;
};

// Creates a policy by name for a tier of `num_slots` slots. InvalidArgument for unknown names
// (the message lists the known ones).
absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name,
                                                                   uint32_t num_slots);

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_EVICTION_POLICY_H_
