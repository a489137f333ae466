// workload/simulator.h — a metadata-only KV-cache simulator for the eviction study: replays
// a trace (workload/trace.h) against a cache of `capacity_blocks` block ids under an
// eviction policy, or under offline optima, and counts hits. No bytes, tiers or time.
//
// Model, per request, in trace order:
//   1. lookup: every block is looked up against the cache as it stood when the request
//      arrived; a present block is a hit (and the policy sees Access), an absent one a miss;
//   2. insert: the missing blocks are inserted in prompt order, each evicting the policy's
//      victim while the cache is full. A victim may be a block of the same request (a
//      request longer than the cache cannot keep all of itself).
// This is how a serving engine uses a prefix cache: match, then store what it computed.
// An id repeated within one request is looked up (and counted) each time and inserted once.
//
// Metrics (a block is kTokensPerBlock tokens; partial last blocks are counted as whole, so
// the token ratios below equal the block ratios):
//   * block hit ratio  = hits / block references;
//   * prefix hit ratio = sum over requests of the leading blocks present before the
//     request's first miss, / block references. A block after the first miss is useless to
//     a prefix cache even if present (its KV depends on the missing block's), so this is the
//     share of prompt tokens whose prefill is saved.
//
// Offline references:
//   * SimulateBelady: Belady's MIN at block level — on each eviction, evict the resident
//     block whose next reference (the next request that contains it) is farthest away,
//     never-again first. Insertion is forced (demand paging), which is the textbook setting
//     (7 0 1 2 0 3 0 4 2 3 0 3 2 1 2 0 1 7 0 1 with 3 frames: 9 misses). It maximizes the
//     block hit ratio; it is not built for the prefix metric.
//   * SimulateBeladyPrefix: MIN for the prefix metric. A block's priority is the next
//     request that contains the block *with the same prefix before it* (its next use as a
//     prefix hit, via a hash of the whole prefix path); ties go to the deeper block, so a
//     block is never evicted before its descendants; and a missing block is not inserted
//     (bypass) when its next use is farther than every resident block's. For prefix-chained
//     traces (Mooncake's hash_ids, the generators) the cache then stays prefix-closed — a
//     present block's parent is present — so every block hit is a prefix hit, and by MIN's
//     exchange argument we expect it to be optimal for the prefix hit ratio among policies
//     that may bypass. That argument is a sketch, not a proof: treat the result as a
//     reference ceiling, checked by tests to be >= LRU and >= SimulateBelady on the prefix
//     metric, not as a proven bound. On traces that are not prefix-chained it is a heuristic.
//
// Cost: Simulate O(refs) plus the policy's; the MIN variants O(refs log capacity) time and
// O(refs) memory (next-use indices precomputed backward).

#ifndef KVTIER_WORKLOAD_SIMULATOR_H_
#define KVTIER_WORKLOAD_SIMULATOR_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "workload/trace.h"

namespace kvtier::workload {

struct SimResult {
  uint64_t requests = 0;
  uint64_t block_refs = 0;
  uint64_t block_hits = 0;
  uint64_t prefix_hit_blocks = 0;  // leading hits before each request's first miss
  uint64_t insertions = 0;
  uint64_t evictions = 0;
  uint64_t bypassed = 0;  // missing blocks not inserted (BeladyPrefix, capacity 0)

  double block_hit_ratio() const {
    return block_refs ? static_cast<double>(block_hits) / block_refs : 0;
  }
  double prefix_hit_ratio() const {
    return block_refs ? static_cast<double>(prefix_hit_blocks) / block_refs : 0;
  }
};

// What the simulator asks of an eviction policy: events on block ids, and a victim. Shaped
// like the engine's EvictionPolicy (engine/eviction/eviction_policy.h) with block ids for
// slots, so an adapter can drive the engine's policies here. The simulator keeps the set of
// present blocks and honours each method's REQUIRES; a policy need not check them.
class CachePolicy {
 public:
  virtual ~CachePolicy() = default;

  virtual const char* name() const = 0;
  // The position in its request (0 = the request's first block) of the block the next
  // Insert inserts. Prefix-aware policies evict deeper blocks (chain tails) first; others
  // ignore it.
  virtual void SetNextDepth(uint32_t /*depth*/) {}
  // A block entered the cache. REQUIRES: id not tracked.
  virtual void Insert(uint64_t id) = 0;
  // A tracked block was hit. REQUIRES: id tracked.
  virtual void Access(uint64_t id) = 0;
  // A tracked block left the cache (after Victim chose it). REQUIRES: id tracked.
  virtual void Remove(uint64_t id) = 0;
  // The tracked block to evict next, or nullopt when none is tracked. Does not remove it.
  virtual std::optional<uint64_t> Victim() = 0;
};

// Least recently used: hash map into a recency list; O(1) per event.
class LruCachePolicy final : public CachePolicy {
 public:
  const char* name() const override { return "lru"; }
  void Insert(uint64_t id) override;
  void Access(uint64_t id) override;
  void Remove(uint64_t id) override;
  std::optional<uint64_t> Victim() override;

  size_t size() const { return where_.size(); }

 private:
  std::list<uint64_t> order_;  // front = most recent
  absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> where_;
};

// One cache of `capacity` block ids under a CachePolicy: the resident set and the eviction
// loop of Simulate, as a part that a larger model (workload/fleet_simulator.h's nodes and
// remote pool) drives event by event. The policy is borrowed and must outlive the cache.
// Not thread-safe.
class PolicyCache {
 public:
  // REQUIRES: `policy` tracks nothing yet (Simulate checks it and fails; this does not).
  PolicyCache(size_t capacity, CachePolicy& policy) : capacity_(capacity), policy_(&policy) {}

  size_t capacity() const { return capacity_; }
  size_t size() const { return resident_.size(); }
  bool Contains(uint64_t id) const { return resident_.contains(id); }
  const CachePolicy& policy() const { return *policy_; }

  // A hit: the policy sees Access. No-op for an absent id.
  void Touch(uint64_t id);
  // Inserts an absent id (depth: its position in its request, for SetNextDepth), first
  // evicting the policy's victims while the cache is full; appends each victim to *evicted
  // (which may then hold the id's own request's blocks). REQUIRES: capacity() > 0 and id not
  // present. FailedPrecondition if the policy offers no victim when the cache is full;
  // Internal if it offers a block that is not present.
  absl::Status Insert(uint64_t id, uint32_t depth, std::vector<uint64_t>* evicted);

 private:
  size_t capacity_;
  CachePolicy* policy_;
  absl::flat_hash_set<uint64_t> resident_;
};

// Replays `requests` under `policy`, which must track nothing yet. capacity_blocks 0 = no
// cache (every block misses, nothing is inserted). FailedPrecondition if the policy starts
// non-empty (it offers a victim before any insert) or offers no victim when the cache is
// full; Internal if it offers a block that is not present. `prefix_hits_per_request`, when
// given, gets each request's prefix-hit blocks in trace order (for hit ratio over time).
absl::StatusOr<SimResult> Simulate(const std::vector<Request>& requests, size_t capacity_blocks,
                                   CachePolicy& policy,
                                   std::vector<uint32_t>* prefix_hits_per_request = nullptr);

// The offline references described above. They cannot fail.
SimResult SimulateBelady(const std::vector<Request>& requests, size_t capacity_blocks);
SimResult SimulateBeladyPrefix(const std::vector<Request>& requests, size_t capacity_blocks);

// An upper bound on what an *admission filter* in front of LRU can achieve: LRU eviction,
// but a missing block is inserted only if it will be used again as a prefix (same prefix
// path, as SimulateBeladyPrefix keys it) within `horizon_requests` requests — a filter that
// knows the future. UINT64_MAX: admit every block that is ever used again. Not a policy:
// a yardstick for how much of the gap between LRU and MIN admission could close at all.
SimResult SimulateLruOracleAdmission(const std::vector<Request>& requests,
                                     size_t capacity_blocks, uint64_t horizon_requests);

}  // namespace kvtier::workload

#endif  // KVTIER_WORKLOAD_SIMULATOR_H_
