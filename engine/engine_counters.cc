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
  out->stall_ns = stall_->ns.load(std::memory_order_relaxed);
  out->stalled_waits = stall_->waits.load(std::memory_order_relaxed);
  out->match_latency = match_latency.Snapshot();
  out->store_latency = store_latency.Snapshot();
  out->load_latency = load_latency.Snapshot();
}

}  // namespace kvtier
