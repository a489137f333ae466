// engine/engine_counters.h — what the engine counts, engine-wide: per tier (lookups, bytes,
// evictions, demotions, promotions), per call (Match, Store, Load), stall time and latency.
//
// Every counter is a relaxed atomic, counted on the hot paths without a lock; Fill copies them
// into an EngineStats snapshot. Gauges that live with the state they measure (slots in use,
// leases held, namespaces' blocks, the disk tier's own figures, prefetch) are filled by the
// parts that own that state.
//
// Thread-safe; no locks.

#ifndef KVTIER_ENGINE_ENGINE_COUNTERS_H_
#define KVTIER_ENGINE_ENGINE_COUNTERS_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "engine/metrics.h"
#include "engine/namespace_registry.h"
#include "engine/transfer_handle.h"
#include "kvtier/engine.h"
#include "kvtier/tier_kind.h"

namespace kvtier {

struct TierCounters {
  std::atomic<uint64_t> hits{0}, misses{0}, bytes_in{0}, bytes_out{0}, evictions{0},
      demotions{0}, promotions{0};
};

class EngineCounters {
 public:
  // `present`: which tiers the engine has (lookups count only in those).
  explicit EngineCounters(TierArray<bool> present) : present_(present) {}
  EngineCounters(const EngineCounters&) = delete;
  EngineCounters& operator=(const EngineCounters&) = delete;

  // Lookup counts (TierStats::hits / misses), engine-wide and for namespace `ns`: found[t]
  // blocks were read from tier t as the highest tier holding them, so each is a miss in
  // every existing tier above t; `not_cached` blocks are misses in every existing tier.
  void CountLookups(NamespaceCounters& ns, const TierArray<uint64_t>& found, uint64_t not_cached);
  // Counts `bytes` copied from tier `from` into tier `to`.
  void CountMove(TierKind from, TierKind to, uint64_t bytes) {
    tier(from).bytes_out.fetch_add(bytes, std::memory_order_relaxed);
    tier(to).bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  }

  TierCounters& tier(TierKind t) { return tiers_[t]; }
  const TierCounters& tier(TierKind t) const { return tiers_[t]; }
  const std::shared_ptr<StallMeter>& stall() const { return stall_; }

  // Copies every counter into `out` (tiers' counters, call counts, stall, latencies).
  void Fill(EngineStats* out) const;

  // Call counts, counted by the engine's calls.
  std::atomic<uint64_t> match_calls{0}, matched_blocks{0}, missed_blocks{0}, stored_blocks{0},
      deduplicated_blocks{0}, rejected_blocks{0}, loaded_blocks{0}, leases_expired{0},
      disk_busy_rejections{0};
  LatencyHistogram match_latency, store_latency, load_latency;

 private:
  const TierArray<bool> present_;
  TierArray<TierCounters> tiers_;
  const std::shared_ptr<StallMeter> stall_ = std::make_shared<StallMeter>();
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_ENGINE_COUNTERS_H_
