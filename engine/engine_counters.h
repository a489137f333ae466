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

#include "common/mutex.h"
#include "engine/metrics.h"
#include "engine/namespace_registry.h"
#include "engine/rate_estimator.h"
#include "engine/transfer_handle.h"
#include "kvtier/engine.h"
#include "kvtier/load_plan.h"
#include "kvtier/tier_kind.h"

namespace kvtier {

struct TierCounters {
  std::atomic<uint64_t> hits{0}, misses{0}, bytes_in{0}, bytes_out{0}, evictions{0},
      demotions{0}, promotions{0};
};

// Each tier's read rate as the engine measures it from its own transfers (RateEstimator:
// busy-time throughput and per-op latency, decaying averages): the disk and remote tiers'
// reads into host slots, and the copies out of the host and GPU tiers into the caller's
// memory. They start at a prior (kDefaultPriors) so that a tier that has not been read yet
// is planned with a plausible figure rather than none. Thread-safe.
class TierRates {
 public:
  struct Prior {
    double bytes_per_s;
    double latency_s;
  };
  // GPU → caller (device-to-device), host → caller (PCIe, or memcpy on the emulated device),
  // disk → host (NVMe through the page-aligned read path), remote → host (a LAN GET).
  static constexpr TierArray<Prior> kDefaultPriors = {
      {{Prior{200e9, 10e-6}, Prior{10e9, 20e-6}, Prior{1e9, 200e-6}, Prior{1e9, 500e-6}}}};
  // `priors`: 0 fields keep kDefaultPriors.
  explicit TierRates(const TierArray<Prior>& priors = {});

  // A read of tier t started / ended with `bytes` delivered after `latency`.
  void Started(TierKind t);
  void Finished(TierKind t, uint64_t bytes, absl::Duration latency);
  // The rate now, with the bytes of reads in flight (`block_bytes` each) as its queue.
  StageRate Rate(TierKind t, uint64_t block_bytes) const;
  // TierStats::read_bytes_per_s, read_latency_ns and read_samples.
  void Fill(EngineStats* out) const;

 private:
  mutable Mutex mu_;
  std::vector<RateEstimator> estimators_ ABSL_GUARDED_BY(mu_);  // by tier
};

class EngineCounters {
 public:
  // `present`: which tiers the engine has (lookups count only in those).
  explicit EngineCounters(TierArray<bool> present, const TierArray<TierRates::Prior>& priors = {})
      : present_(present), rates_(priors) {}
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
  TierRates& rates() { return rates_; }
  const TierRates& rates() const { return rates_; }

  // Copies every counter into `out` (tiers' counters, call counts, stall, latencies).
  void Fill(EngineStats* out) const;

  // Call counts, counted by the engine's calls.
  std::atomic<uint64_t> match_calls{0}, matched_blocks{0}, missed_blocks{0}, stored_blocks{0},
      deduplicated_blocks{0}, rejected_blocks{0}, loaded_blocks{0}, leases_expired{0},
      disk_busy_rejections{0}, blocks_abandoned{0};
  LatencyHistogram match_latency, store_latency, load_latency;

 private:
  const TierArray<bool> present_;
  TierArray<TierCounters> tiers_;
  TierRates rates_;
  const std::shared_ptr<StallMeter> stall_ = std::make_shared<StallMeter>();
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_ENGINE_COUNTERS_H_
