// workload/fleet_simulator.h — the metadata simulator's fleet mode: a trace (workload/trace.h)
// spread over N inference nodes, each with its own GPU / host / disk tiers, and an optional
// remote pool shared by all of them (the remote tier of issue 18, on Redis Cluster). It
// answers what prefix-hit ratio a fleet of a given shape would see, and how much of it the
// shared pool buys, without bytes, sockets or time. Every cache here is a PolicyCache
// (workload/simulator.h) under an engine eviction policy (EnginePolicyAdapter), so nodes
// evict with the code the engine ships.
//
// Routing: request r goes to one node, by
//   * round-robin:      node r mod N;
//   * prefix-affinity:  a hash of the request's first `affinity_blocks` block ids (and the
//                       seed), mod N, so requests that share that prefix land on one node;
//   * random:           a hash of (seed, r), mod N.
//
// A node (tiers of size 0 are absent; the host tier must exist, as in the engine). Tiers are
// ordered GPU, host, disk; the top tier is the first present one. Per request, in order:
//   1. lookup, against the state when the request arrives: each block is local (held by a
//      tier of this node; served by the highest such tier), else remote (held by the pool),
//      else missing. The prefix hit is the run of leading blocks that are local or remote;
//      the first missing block ends it, and every block after it is recomputed.
//   2. sightings: each block reference counts one sighting of that block on this node (the
//      engine's admission records a block on every Store and Load). Counts are exact, per
//      node (no count-min sketch, no aging): a node cannot see another node's sightings.
//   3. apply, in prompt order: a prefix block served locally is touched in its tier and, if
//      the top tier lacks it, copied there; a prefix block served remotely is touched in the
//      pool (a read) and inserted in the top tier. Past the prefix, a block the top tier
//      holds is touched; any other is recomputed and inserted in the top tier (a lower
//      copy, if any, stays where it is, untouched). Inserts evict the policy's victims.
//   Inclusion follows the engine's placement rule: a tier's victim that still has a copy
//   in another tier of the node is just dropped; the block's only copy moves down to the
//   next tier (into the disk only if the node's disk admission admits it: at least
//   disk_admit_min_seen sightings); a block whose last copy is dropped leaves the node.
//
// The remote pool: one cache of `capacity_blocks` under exact LRU (Redis's allkeys-lru is
// an approximation of it: it samples maxmemory-samples keys, 5 by default, and evicts the
// least recent of those, which tracks exact LRU closely at sample size 5 and above). Reads
// touch. Writes, per write policy:
//   * write-through: every block a node inserts in its top tier that it did not read from
//     the pool (computed, or recomputed) is written at once;
//   * on-evict: a block is written when it leaves its node (its last local copy dropped).
// A write is admitted only if the writing node has seen the block at least
// remote.admit_min_seen times; a write of a block the pool already holds is not sent
// (counted as skipped, recency unchanged) — an idealization: a real client knows it only for
// blocks its Match looked up remotely. Writes land before the next request starts (the
// simulator has no time), which flatters write-through.
//
// Consequence: one node with a host tier only and a pool under on-evict equals one node
// without a pool whose disk tier (under "lru", disk admission = the pool's) has the pool's
// size: the same hits, with the pool's reads and writes as that disk's hits and admissions.
// The tests hold it. (With a GPU tier they differ: a GPU victim whose only other copy is on
// disk is dropped, one whose only other copy is in the pool is demoted to host.)
//
// Ceiling: no fleet beats one unbounded cache over the whole trace (its prefix-hit ratio is
// TraceSummary::prefix_reuse_ratio): every block a fleet serves was referenced before.
//
// Cost: O(block refs) expected time, times the policies' own cost; memory O(sum of tier
// sizes + distinct blocks per node). Deterministic: the same inputs and seed give the same
// result. Not thread-safe; SimulateFleet may run concurrently on separate inputs.

#ifndef KVTIER_WORKLOAD_FLEET_SIMULATOR_H_
#define KVTIER_WORKLOAD_FLEET_SIMULATOR_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workload/trace.h"

namespace kvtier::workload {

enum class Routing { kRoundRobin, kPrefixAffinity, kRandom };
enum class RemoteWritePolicy { kWriteThrough, kOnEvict };

// "round-robin", "prefix-affinity", "random"; InvalidArgument naming the accepted values.
absl::StatusOr<Routing> ParseRouting(absl::string_view name);
const char* RoutingName(Routing routing);
// "write-through", "on-evict"; InvalidArgument naming the accepted values.
absl::StatusOr<RemoteWritePolicy> ParseRemoteWritePolicy(absl::string_view name);
const char* RemoteWritePolicyName(RemoteWritePolicy policy);

// One node's tiers, in blocks. 0 = the tier is absent (GPU: connector mode; disk: none);
// host_blocks must be at least 1. Policies are engine eviction policy names
// (EnginePolicyNames, "+prefix" allowed). The engine's disk reclaims whole regions oldest
// first, so "fifo" stands in for it.
struct NodeTiers {
  size_t gpu_blocks = 0;
  size_t host_blocks = 0;
  size_t disk_blocks = 0;
  std::string gpu_eviction = "arc";
  std::string host_eviction = "arc";
  std::string disk_eviction = "fifo";
  uint32_t disk_admit_min_seen = 2;  // 1..15, as EngineOptions::disk.admit_min_seen
};

struct RemotePoolOptions {
  size_t capacity_blocks = 0;  // at least 1
  RemoteWritePolicy write_policy = RemoteWritePolicy::kWriteThrough;
  uint32_t admit_min_seen = 1;  // 1..15: sightings on the writing node before a write
};

struct FleetOptions {
  std::vector<NodeTiers> nodes;  // one per node; at least one
  Routing routing = Routing::kRoundRobin;
  uint32_t affinity_blocks = 1;             // prefix-affinity: leading blocks hashed; at least 1
  uint64_t seed = 1;                        // prefix-affinity and random routing
  std::optional<RemotePoolOptions> remote;  // nullopt: node-local tiers only

  // InvalidArgument naming the field ("nodes", "nodes[3].host_blocks",
  // "nodes[0].gpu_eviction", "affinity_blocks", "remote.capacity_blocks", ...).
  absl::Status Validate() const;
};

// `n` nodes with the same tiers.
std::vector<NodeTiers> UniformNodes(size_t n, const NodeTiers& tiers);

// Where a prefix-hit block was served from.
enum class ServedFrom { kGpu = 0, kHost = 1, kDisk = 2, kRemote = 3 };

struct FleetResult {
  uint64_t requests = 0;
  uint64_t block_refs = 0;
  uint64_t prefix_hit_blocks = 0;            // all leading hits, local and remote
  std::array<uint64_t, 4> prefix_hits_by{};  // indexed by ServedFrom; sums to the above
  uint64_t disk_blocks_written = 0;          // admitted into some node's disk tier
  uint64_t disk_admissions_rejected = 0;
  uint64_t remote_blocks_written = 0;   // writes sent to the pool
  uint64_t remote_blocks_read = 0;      // = prefix_hits_by[kRemote]
  uint64_t remote_writes_rejected = 0;  // by remote admission (min_seen)
  uint64_t remote_writes_skipped = 0;   // the pool held the block already
  uint64_t remote_evictions = 0;
  std::vector<uint64_t> node_requests;    // per node
  std::vector<uint64_t> node_block_refs;  // per node

  uint64_t local_prefix_hit_blocks() const {
    return prefix_hits_by[0] + prefix_hits_by[1] + prefix_hits_by[2];
  }
  double prefix_hit_ratio() const { return Ratio(prefix_hit_blocks); }
  double local_prefix_hit_ratio() const { return Ratio(local_prefix_hit_blocks()); }
  double remote_prefix_hit_ratio() const { return Ratio(prefix_hits_by[3]); }
  // Busiest node's requests over the mean (1 = perfectly even); 0 with no requests.
  double load_imbalance() const;

 private:
  double Ratio(uint64_t blocks) const {
    return block_refs ? static_cast<double>(blocks) / block_refs : 0;
  }
};

// The node (0..nodes-1) request number `index` of a trace goes to under options.routing
// (options.affinity_blocks and options.seed as they apply): the simulator's routing, for a
// byte-moving fleet (bench fleet) to route the same way. REQUIRES: nodes >= 1.
size_t RouteRequest(const Request& request, uint64_t index, size_t nodes,
                    const FleetOptions& options);

// Replays `requests` over the fleet `options` describes. InvalidArgument from Validate.
absl::StatusOr<FleetResult> SimulateFleet(const std::vector<Request>& requests,
                                          const FleetOptions& options);

}  // namespace kvtier::workload

#endif  // KVTIER_WORKLOAD_FLEET_SIMULATOR_H_
