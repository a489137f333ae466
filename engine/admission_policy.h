// engine/admission_policy.h — whether a block may enter a lower tier (the disk).
//
// SSDs wear with every byte written, and most blocks of an LLM cache are never read again.
// Admission decides, for a block about to be written to the disk tier, whether it is worth it:
//
//   * frequency filter: the block must have been seen (stored or hit) at least `min_seen`
//     times. Counts live in a count-min sketch (4 rows, a few bytes per tracked block, no
//     per-key allocation) whose counters are halved every `aging_window` records, so old
//     popularity fades (TinyLFU's reset).
//   * write budget: admitted bytes are limited to `write_budget_mbps` (a token bucket holding
//     one second of budget); a block that would exceed it is rejected, not delayed.
//
// Rejections are counted per reason. Thread-safe (one internal lock).

#ifndef KVTIER_ENGINE_ADMISSION_POLICY_H_
#define KVTIER_ENGINE_ADMISSION_POLICY_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvtier/block_key.h"

namespace kvtier {

struct AdmissionOptions {
  uint32_t min_seen = 1;             // 1 = admit everything the budget allows; 1..15
  double write_budget_mbps = 0;      // MB/s (1e6 bytes); 0 = unlimited
  uint32_t sketch_width = 1 << 16;   // counters per row, a power of two in [64, 1<<24]
  uint32_t aging_window = 0;         // records between halvings; 0 = 10 x sketch_width

  absl::Status Validate() const;     // InvalidArgument naming the field
};

struct AdmissionStats {
  uint64_t admitted = 0;
  uint64_t rejected_frequency = 0;
  uint64_t rejected_budget = 0;
};

class AdmissionPolicy {
 public:
  static absl::StatusOr<std::unique_ptr<AdmissionPolicy>> Create(const AdmissionOptions& options);
  virtual ~AdmissionPolicy() = default;

  // The block was stored or hit: one more sighting.
  virtual void Record(const BlockKey& key) = 0;
  // Whether a block of `bytes` may be written now; an admitted block's bytes are charged to
  // the budget at once. `now` is passed in so tests control time.
  virtual bool Admit(const BlockKey& key, size_t bytes, absl::Time now) = 0;
  // Estimated sightings (never below the true count; capped at 15).
  virtual uint32_t Estimate(const BlockKey& key) const = 0;
  virtual AdmissionStats stats() const = 0;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_ADMISSION_POLICY_H_
