// engine/eviction/fifo_policy.h — first in, first out.
//
// FIFO: evicts in insertion order; accesses change nothing. The baseline every scan-resistant
// policy is measured against (Belady et al., CACM 1969, showed its anomaly). Skipped slots
// keep their place. OnInsertCold: at the oldest end.

#ifndef KVTIER_ENGINE_EVICTION_FIFO_POLICY_H_
#define KVTIER_ENGINE_EVICTION_FIFO_POLICY_H_

#include <optional>
#include <vector>

#include "engine/eviction/eviction_policy.h"
#include "engine/eviction/slot_lists.h"

namespace kvtier {

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

}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_FIFO_POLICY_H_
