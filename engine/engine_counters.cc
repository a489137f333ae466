// engine/engine_counters.cc — see engine_counters.h.

#include "engine/engine_counters.h"

namespace kvtier {

void EngineCounters::CountLookups(NamespaceCounters& ns, const TierArray<uint64_t>& found,
                                  uint64_t not_cached) {
  uint64_t below = not_cached;  // blocks found below tier t, or nowhere
  for (int i = kNumTiers - 1; i >= 0; --i) {
    const TierKind t = kAllTiers[i];
    if (!present_[t]) {
      below += found[t];
      continue;
    }
    if (found[t] > 0) {
      tiers_[t].hits.fetch_add(found[t], std::memory_order_relaxed);
      ns.hits[t].fetch_add(found[t], std::memory_order_relaxed);
    }
    if (below > 0) {
      tiers_[t].misses.fetch_add(below, std::memory_order_relaxed);
      ns.misses[t].fetch_add(below, std::memory_order_relaxed);
    }
    below += found[t];
  }
}

TierRates::TierRates(const TierArray<Prior>& priors) {
  MutexLock lock(&mu_);
  for (TierKind t : kAllTiers) {
    RateEstimatorOptions o;
    o.prior_bytes_per_s =
        priors[t].bytes_per_s > 0 ? priors[t].bytes_per_s : kDefaultPriors[t].bytes_per_s;
    o.prior_latency_s = priors[t].latency_s > 0 ? priors[t].latency_s : kDefaultPriors[t].latency_s;
    // One second of busy time moves the figures most of the way: a tier that turns slow
    // under load is seen within a load or two (bench/run loadplan), and deadlines cover the
    // loads planned before that.
    o.tau = absl::Seconds(1);
    absl::StatusOr<RateEstimator> e = RateEstimator::Create(o);
    // The priors are constants: a refusal is a bug here, not an input error.
    if (!e.ok()) std::abort();
    estimators_.push_back(std::move(*e));
  }
}

void TierRates::Started(TierKind t) {
  MutexLock lock(&mu_);
  (void)estimators_[static_cast<size_t>(t)].OpStarted(absl::Now());
}

void TierRates::Finished(TierKind t, uint64_t bytes, absl::Duration latency) {
  MutexLock lock(&mu_);
  // The clock is read under the lock, so the estimator sees times in order.
  (void)estimators_[static_cast<size_t>(t)].OpFinished(absl::Now(), bytes,
                                                       std::max(latency, absl::ZeroDuration()));
}

StageRate TierRates::Rate(TierKind t, uint64_t block_bytes) const {
  MutexLock lock(&mu_);
  const RateEstimator& e = estimators_[static_cast<size_t>(t)];
  const absl::Time now = absl::Now();
  StageRate r;
  r.bytes_per_s = e.bytes_per_s(now);
  r.latency_s = e.latency_s(now);
  r.queued_bytes =
      static_cast<double>(std::max<int64_t>(e.in_flight(), 0)) * static_cast<double>(block_bytes);
  return r;
}

void TierRates::Fill(EngineStats* out) const {
  MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (TierKind t : kAllTiers) {
    const RateEstimator& e = estimators_[static_cast<size_t>(t)];
    TierStats& ts = out->tiers[t];
    ts.read_bytes_per_s = static_cast<uint64_t>(e.bytes_per_s(now));
    ts.read_latency_ns = static_cast<uint64_t>(e.latency_s(now) * 1e9);
    ts.read_samples = e.samples();
  }
}

void EngineCounters::Fill(EngineStats* out) const {
  for (TierKind t : kAllTiers) {
    TierStats& ts = out->tiers[t];
    const TierCounters& c = tiers_[t];
    ts.hits = c.hits.load(std::memory_order_relaxed);
    ts.misses = c.misses.load(std::memory_order_relaxed);
    ts.bytes_in = c.bytes_in.load(std::memory_order_relaxed);
    ts.bytes_out = c.bytes_out.load(std::memory_order_relaxed);
    ts.evictions = c.evictions.load(std::memory_order_relaxed);
    ts.demotions = c.demotions.load(std::memory_order_relaxed);
    ts.promotions = c.promotions.load(std::memory_order_relaxed);
  }
  out->match_calls = match_calls.load(std::memory_order_relaxed);
  out->matched_blocks = matched_blocks.load(std::memory_order_relaxed);
  out->missed_blocks = missed_blocks.load(std::memory_order_relaxed);
  out->stored_blocks = stored_blocks.load(std::memory_order_relaxed);
  out->deduplicated_blocks = deduplicated_blocks.load(std::memory_order_relaxed);
  out->rejected_blocks = rejected_blocks.load(std::memory_order_relaxed);
  out->loaded_blocks = loaded_blocks.load(std::memory_order_relaxed);
  out->leases_expired = leases_expired.load(std::memory_order_relaxed);
  out->blocks_abandoned = blocks_abandoned.load(std::memory_order_relaxed);
  rates_.Fill(out);
  out->stall_ns = stall_->ns.load(std::memory_order_relaxed);
  out->stalled_waits = stall_->waits.load(std::memory_order_relaxed);
  out->match_latency = match_latency.Snapshot();
  out->store_latency = store_latency.Snapshot();
  out->load_latency = load_latency.Snapshot();
}

}  // namespace kvtier
