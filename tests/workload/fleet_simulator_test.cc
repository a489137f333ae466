// tests/workload/fleet_simulator_test.cc — the simulator's fleet mode: hand traces whose hits
// are worked out below for each routing mode and remote write policy, node tiers (demotion,
// disk admission), one node with a pool against one node with one more tier, the unbounded
// ceiling, determinism, and bad options named by field.

#include "workload/fleet_simulator.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workload/generators.h"
#include "workload/trace.h"

namespace kvtier::workload {
namespace {

using ::testing::HasSubstr;

constexpr int kGpu = static_cast<int>(ServedFrom::kGpu);
constexpr int kHost = static_cast<int>(ServedFrom::kHost);
constexpr int kDisk = static_cast<int>(ServedFrom::kDisk);
constexpr int kRemote = static_cast<int>(ServedFrom::kRemote);

std::vector<Request> Trace(const std::vector<std::vector<uint64_t>>& prompts) {
  std::vector<Request> out;
  for (const auto& p : prompts) {
    Request r;
    r.blocks = p;
    out.push_back(r);
  }
  return out;
}

NodeTiers Host(size_t blocks, const std::string& policy = "lru") {
  NodeTiers t;
  t.host_blocks = blocks;
  t.host_eviction = policy;
  return t;
}

FleetOptions MakeFleet(size_t nodes, const NodeTiers& tiers, Routing routing) {
  FleetOptions o;
  o.nodes = UniformNodes(nodes, tiers);
  o.routing = routing;
  return o;
}

RemotePoolOptions Pool(size_t blocks, RemoteWritePolicy policy, uint32_t min_seen = 1) {
  RemotePoolOptions p;
  p.capacity_blocks = blocks;
  p.write_policy = policy;
  p.admit_min_seen = min_seen;
  return p;
}

FleetResult RunFleet(const std::vector<Request>& trace, const FleetOptions& o) {
  absl::StatusOr<FleetResult> r = SimulateFleet(trace, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : FleetResult{};
}

std::vector<Request> ChatTrace(uint64_t seed) {
  ChatParams p;
  p.seed = seed;
  p.num_sessions = 48;
  absl::StatusOr<std::vector<Request>> t = GenerateChat(p);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::vector<Request>{};
}

// ---------------------------------------------------------------------------------------
// The same prompt twice on 2 nodes.

TEST(FleetSimulator, RoundRobinSamePromptTwiceIsARemoteHitWithThePoolAndAMissWithout) {
  const std::vector<Request> trace = Trace({{1, 2, 3}, {1, 2, 3}});
  FleetOptions o = MakeFleet(2, Host(10), Routing::kRoundRobin);
  // Without the pool: node 0 misses, node 1 misses.
  FleetResult local = RunFleet(trace, o);
  EXPECT_EQ(local.block_refs, 6u);
  EXPECT_EQ(local.prefix_hit_blocks, 0u);
  EXPECT_EQ(local.node_requests, (std::vector<uint64_t>{1, 1}));
  // Write-through: node 0 writes 1, 2, 3 on store; node 1 reads all three.
  o.remote = Pool(10, RemoteWritePolicy::kWriteThrough);
  FleetResult wt = RunFleet(trace, o);
  EXPECT_EQ(wt.prefix_hit_blocks, 3u);
  EXPECT_EQ(wt.prefix_hits_by[kRemote], 3u);
  EXPECT_EQ(wt.local_prefix_hit_blocks(), 0u);
  EXPECT_EQ(wt.remote_blocks_written, 3u);
  EXPECT_EQ(wt.remote_blocks_read, 3u);
  EXPECT_DOUBLE_EQ(wt.prefix_hit_ratio(), 0.5);
  EXPECT_DOUBLE_EQ(wt.remote_prefix_hit_ratio(), 0.5);
  // On-evict: node 0 never evicts, so the pool stays empty: a miss.
  o.remote = Pool(10, RemoteWritePolicy::kOnEvict);
  FleetResult oe = RunFleet(trace, o);
  EXPECT_EQ(oe.prefix_hit_blocks, 0u);
  EXPECT_EQ(oe.remote_blocks_written, 0u);
}

TEST(FleetSimulator, PrefixAffinitySendsTheSamePromptToOneNodeForALocalHit) {
  const std::vector<Request> trace = Trace({{1, 2, 3}, {1, 2, 3}});
  for (bool pool : {false, true}) {
    FleetOptions o = MakeFleet(2, Host(10), Routing::kPrefixAffinity);
    if (pool) o.remote = Pool(10, RemoteWritePolicy::kWriteThrough);
    FleetResult r = RunFleet(trace, o);
    EXPECT_EQ(r.prefix_hit_blocks, 3u) << "pool " << pool;
    EXPECT_EQ(r.prefix_hits_by[kHost], 3u);
    EXPECT_EQ(r.prefix_hits_by[kRemote], 0u);
    EXPECT_EQ(r.remote_blocks_read, 0u);
    EXPECT_DOUBLE_EQ(r.load_imbalance(), 2.0);  // both requests on one of two nodes
  }
}

TEST(FleetSimulator, PrefixAffinityHashesOnlyTheFirstKBlocks) {
  // Same first block, different tails: with k = 1 they meet on one node (a 1-block local
  // hit); with k = 2 they are routed by different keys. Over 64 such pairs, k = 2 must split
  // some pair (each split is a 1/2 chance per pair), k = 1 none.
  std::vector<std::vector<uint64_t>> prompts;
  for (uint64_t p = 0; p < 64; ++p) {
    prompts.push_back({100 * p, 100 * p + 1});
    prompts.push_back({100 * p, 100 * p + 2});
  }
  const std::vector<Request> trace = Trace(prompts);
  FleetOptions o = MakeFleet(2, Host(1000), Routing::kPrefixAffinity);
  EXPECT_EQ(RunFleet(trace, o).prefix_hit_blocks, 64u);
  o.affinity_blocks = 2;
  EXPECT_LT(RunFleet(trace, o).prefix_hit_blocks, 64u);
}

// Worked by hand, 2 nodes, host tiers of 3 blocks (LRU), round-robin:
//   r0 {1,2,3} -> node 0;  r1 {4,5,6} -> node 1;  r2 {7,8,9} -> node 0 (evicts 1,2,3);
//   r3 {1,2,3} -> node 1 (evicts 4,5,6).
TEST(FleetSimulator, WritePoliciesByHand) {
  const std::vector<Request> trace = Trace({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}, {1, 2, 3}});
  FleetOptions o = MakeFleet(2, Host(3), Routing::kRoundRobin);
  EXPECT_EQ(RunFleet(trace, o).prefix_hit_blocks, 0u);
  // Write-through: every computed block is written (9); r3 reads 1, 2, 3.
  o.remote = Pool(10, RemoteWritePolicy::kWriteThrough);
  FleetResult wt = RunFleet(trace, o);
  EXPECT_EQ(wt.remote_blocks_written, 9u);
  EXPECT_EQ(wt.prefix_hits_by[kRemote], 3u);
  EXPECT_EQ(wt.remote_evictions, 0u);
  // On-evict: r2 pushes 1, 2, 3 out of node 0 (written), r3 reads them and pushes 4, 5, 6
  // out of node 1 (written): 6 written, 3 read.
  o.remote = Pool(10, RemoteWritePolicy::kOnEvict);
  FleetResult oe = RunFleet(trace, o);
  EXPECT_EQ(oe.remote_blocks_written, 6u);
  EXPECT_EQ(oe.remote_blocks_read, 3u);
  EXPECT_EQ(oe.prefix_hit_blocks, 3u);
  // A pool of 2 blocks under LRU keeps the last two written of 1, 2, 3 (2 and 3): r3's
  // first block misses, so its prefix is empty.
  o.remote = Pool(2, RemoteWritePolicy::kOnEvict);
  FleetResult small = RunFleet(trace, o);
  EXPECT_EQ(small.prefix_hit_blocks, 0u);
  EXPECT_GE(small.remote_evictions, 1u);
}

TEST(FleetSimulator, RemoteAdmissionCountsSightingsPerNode) {
  // Each node sees the prompt once: with min_seen 2 no node may write it, so the second
  // request misses; with min_seen 1 it is a remote hit.
  const std::vector<Request> trace = Trace({{1, 2, 3}, {1, 2, 3}});
  FleetOptions o = MakeFleet(2, Host(10), Routing::kRoundRobin);
  o.remote = Pool(10, RemoteWritePolicy::kWriteThrough, /*min_seen=*/2);
  FleetResult r = RunFleet(trace, o);
  EXPECT_EQ(r.prefix_hit_blocks, 0u);
  EXPECT_EQ(r.remote_blocks_written, 0u);
  EXPECT_EQ(r.remote_writes_rejected, 6u);
  // A node that saw the prompt twice writes it. 3 nodes of 3 blocks (LRU), round-robin,
  // on-evict, min_seen 2:
  //   r0, r1, r2 {1,2,3} -> nodes 0, 1, 2: misses;  r3 {1,2,3} -> node 0: 3 local hits;
  //   r4, r5 {9} -> nodes 1, 2: each evicts 1, seen once there: 2 writes rejected;
  //   r6 {4,5,6} -> node 0: evicts 1, 2, 3, seen twice there: 3 written;
  //   r7 {1,2,3} -> node 1 (holds 2, 3, 9): 1 from the pool, 2 and 3 local. Inserting 1
  //     evicts 2, re-inserting 2 evicts 3 and 3 evicts 9: the pool holds 2 and 3 (2 writes
  //     skipped), 9 was seen once on node 1 (a third rejection).
  const std::vector<Request> trace2 =
      Trace({{1, 2, 3}, {1, 2, 3}, {1, 2, 3}, {1, 2, 3}, {9}, {9}, {4, 5, 6}, {1, 2, 3}});
  FleetOptions o2 = MakeFleet(3, Host(3), Routing::kRoundRobin);
  o2.remote = Pool(10, RemoteWritePolicy::kOnEvict, /*min_seen=*/2);
  FleetResult r2 = RunFleet(trace2, o2);
  EXPECT_EQ(r2.prefix_hits_by[kHost], 3u + 2u);
  EXPECT_EQ(r2.prefix_hits_by[kRemote], 1u);
  EXPECT_EQ(r2.remote_blocks_written, 3u);
  EXPECT_EQ(r2.remote_writes_rejected, 3u);
  EXPECT_EQ(r2.remote_writes_skipped, 2u);
}

// ---------------------------------------------------------------------------------------
// Node tiers.

TEST(FleetSimulator, GpuVictimsAreDemotedToHostAndHostVictimsToAdmittedDisk) {
  NodeTiers t;
  t.gpu_blocks = 2;
  t.gpu_eviction = "lru";
  t.host_blocks = 2;
  t.host_eviction = "lru";
  // {1,2} then {3,4}: the GPU demotes 1, 2 to host; {1,2} again: host hits.
  FleetResult r = RunFleet(Trace({{1, 2}, {3, 4}, {1, 2}}), MakeFleet(1, t, Routing::kRoundRobin));
  EXPECT_EQ(r.prefix_hits_by[kHost], 2u);
  EXPECT_EQ(r.prefix_hits_by[kGpu], 0u);
  // Host only (2 blocks) and a disk of 10 admitting at 2 sightings: 1, 2 were seen once
  // when evicted, so they are refused and the third request misses (and pushes out 3, 4,
  // seen once: refused too); at 1 sighting they are admitted and it hits on disk. A fourth
  // request then hits in the host tier, where the disk hit copied them.
  NodeTiers d = Host(2);
  d.disk_blocks = 10;
  d.disk_admit_min_seen = 2;
  const std::vector<Request> trace = Trace({{1, 2}, {3, 4}, {1, 2}, {1, 2}});
  FleetResult refused = RunFleet(trace, MakeFleet(1, d, Routing::kRoundRobin));
  EXPECT_EQ(refused.disk_admissions_rejected, 4u);
  EXPECT_EQ(refused.prefix_hits_by[kDisk], 0u);
  EXPECT_EQ(refused.prefix_hits_by[kHost], 2u);  // the fourth request
  d.disk_admit_min_seen = 1;
  FleetResult admitted = RunFleet(trace, MakeFleet(1, d, Routing::kRoundRobin));
  EXPECT_EQ(admitted.disk_blocks_written, 2u + 2u);  // 1, 2; then 3, 4 pushed out by r2
  EXPECT_EQ(admitted.prefix_hits_by[kDisk], 2u);
  EXPECT_EQ(admitted.prefix_hits_by[kHost], 2u);
}

TEST(FleetSimulator, OneNodeWithAPoolEqualsOneNodeWithOneMoreTier) {
  for (uint64_t seed : {1, 2, 3}) {
    const std::vector<Request> trace = ChatTrace(seed);
    for (uint32_t min_seen : {1u, 2u}) {
      for (size_t extra : {16u, 64u, 256u}) {
        FleetOptions with_pool = MakeFleet(1, Host(24, "arc"), Routing::kRoundRobin);
        with_pool.remote = Pool(extra, RemoteWritePolicy::kOnEvict, min_seen);
        NodeTiers deeper = Host(24, "arc");
        deeper.disk_blocks = extra;
        deeper.disk_eviction = "lru";
        deeper.disk_admit_min_seen = min_seen;
        const FleetResult a = RunFleet(trace, with_pool);
        const FleetResult b = RunFleet(trace, MakeFleet(1, deeper, Routing::kRoundRobin));
        SCOPED_TRACE(testing::Message()
                     << "seed " << seed << " min_seen " << min_seen << " extra " << extra);
        ASSERT_GT(a.prefix_hits_by[kRemote], 0u);
        EXPECT_EQ(a.prefix_hit_blocks, b.prefix_hit_blocks);
        EXPECT_EQ(a.prefix_hits_by[kHost], b.prefix_hits_by[kHost]);
        EXPECT_EQ(a.prefix_hits_by[kRemote], b.prefix_hits_by[kDisk]);
        EXPECT_EQ(a.remote_blocks_written, b.disk_blocks_written);
        EXPECT_EQ(a.remote_writes_rejected, b.disk_admissions_rejected);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// The ceiling, and what reaches it.

std::vector<FleetOptions> ManyFleets() {
  std::vector<FleetOptions> out;
  NodeTiers tiers;
  tiers.gpu_blocks = 8;
  tiers.host_blocks = 16;
  tiers.disk_blocks = 32;
  tiers.disk_admit_min_seen = 1;
  for (size_t nodes : {1u, 3u, 8u}) {
    for (Routing routing : {Routing::kRoundRobin, Routing::kPrefixAffinity, Routing::kRandom}) {
      FleetOptions o = MakeFleet(nodes, tiers, routing);
      out.push_back(o);
      for (RemoteWritePolicy w : {RemoteWritePolicy::kWriteThrough, RemoteWritePolicy::kOnEvict}) {
        for (size_t pool : {32u, 100000u}) {
          o.remote = Pool(pool, w);
          out.push_back(o);
        }
      }
    }
  }
  return out;
}

TEST(FleetSimulator, NoFleetBeatsOneUnboundedCache) {
  std::vector<std::vector<Request>> traces = {ChatTrace(5)};
  RagParams rag;
  absl::StatusOr<std::vector<Request>> r = GenerateRag(rag);
  ASSERT_TRUE(r.ok()) << r.status();
  traces.push_back(*r);
  for (const std::vector<Request>& trace : traces) {
    const double ceiling = Summarize(trace).prefix_reuse_ratio;
    ASSERT_GT(ceiling, 0);
    for (const FleetOptions& o : ManyFleets()) {
      const FleetResult f = RunFleet(trace, o);
      EXPECT_LE(f.prefix_hit_ratio(), ceiling + 1e-12)
          << o.nodes.size() << " nodes " << RoutingName(o.routing) << " pool "
          << (o.remote ? o.remote->capacity_blocks : 0);
      EXPECT_EQ(
          f.prefix_hits_by[0] + f.prefix_hits_by[1] + f.prefix_hits_by[2] + f.prefix_hits_by[3],
          f.prefix_hit_blocks);
    }
    // One node that never evicts is that unbounded cache; so is any fleet behind a
    // write-through pool that never evicts.
    const FleetResult single =
        RunFleet(trace, MakeFleet(1, Host(Summarize(trace).unique_blocks), Routing::kRoundRobin));
    EXPECT_DOUBLE_EQ(single.prefix_hit_ratio(), ceiling);
    FleetOptions shared = MakeFleet(8, Host(4), Routing::kRoundRobin);
    shared.remote = Pool(Summarize(trace).unique_blocks, RemoteWritePolicy::kWriteThrough);
    EXPECT_DOUBLE_EQ(RunFleet(trace, shared).prefix_hit_ratio(), ceiling);
  }
}

TEST(FleetSimulator, ThePoolHelpsARoundRobinFleetOnTheSharedTrace) {
  const std::string path =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no shared trace at " << path;
  absl::StatusOr<std::vector<Request>> trace = ReadMooncakeTrace(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  FleetOptions o = MakeFleet(8, Host(2000), Routing::kRoundRobin);
  const FleetResult local = RunFleet(*trace, o);
  o.remote = Pool(20000, RemoteWritePolicy::kWriteThrough);
  const FleetResult pooled = RunFleet(*trace, o);
  EXPECT_GT(pooled.prefix_hit_ratio(), local.prefix_hit_ratio() + 0.05);
  EXPECT_LE(pooled.prefix_hit_ratio(), Summarize(*trace).prefix_reuse_ratio);
  EXPECT_LT(local.load_imbalance(), 1.01);
}

// ---------------------------------------------------------------------------------------
// Determinism and routing.

TEST(FleetSimulator, DeterministicForAFixedSeed) {
  const std::vector<Request> trace = ChatTrace(9);
  FleetOptions o = ManyFleets().back();
  o.routing = Routing::kRandom;
  o.seed = 42;
  const FleetResult a = RunFleet(trace, o);
  const FleetResult b = RunFleet(trace, o);
  EXPECT_EQ(a.prefix_hit_blocks, b.prefix_hit_blocks);
  EXPECT_EQ(a.prefix_hits_by, b.prefix_hits_by);
  EXPECT_EQ(a.remote_blocks_written, b.remote_blocks_written);
  EXPECT_EQ(a.node_requests, b.node_requests);
  o.seed = 43;
  EXPECT_NE(RunFleet(trace, o).node_requests, a.node_requests);
}

TEST(FleetSimulator, RoutingSpreadsRequests) {
  std::vector<std::vector<uint64_t>> prompts;
  for (uint64_t i = 0; i < 3000; ++i) prompts.push_back({i});
  const std::vector<Request> trace = Trace(prompts);
  EXPECT_DOUBLE_EQ(RunFleet(trace, MakeFleet(3, Host(1), Routing::kRoundRobin)).load_imbalance(),
                   1.0);
  for (Routing routing : {Routing::kRandom, Routing::kPrefixAffinity}) {
    const FleetResult r = RunFleet(trace, MakeFleet(3, Host(1), routing));
    for (uint64_t n : r.node_requests) {
      EXPECT_GT(n, 850u) << RoutingName(routing);  // 1000 expected; 5 sigma is ~130
    }
    EXPECT_LT(r.load_imbalance(), 1.15);
  }
}

// ---------------------------------------------------------------------------------------
// Bad input.

TEST(FleetSimulator, BadOptionsNameTheField) {
  const std::vector<Request> trace = Trace({{1}});
  auto error = [&](const FleetOptions& o) {
    absl::StatusOr<FleetResult> r = SimulateFleet(trace, o);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  };
  FleetOptions o;
  EXPECT_THAT(error(o), HasSubstr("nodes"));
  o = MakeFleet(3, Host(4), Routing::kRoundRobin);
  o.nodes[2].host_blocks = 0;
  EXPECT_THAT(error(o), HasSubstr("nodes[2].host_blocks"));
  o = MakeFleet(2, Host(4), Routing::kRoundRobin);
  o.nodes[1].gpu_blocks = 4;
  o.nodes[1].gpu_eviction = "nope";
  EXPECT_THAT(error(o), HasSubstr("nodes[1].gpu_eviction"));
  o = MakeFleet(2, Host(4), Routing::kRoundRobin);
  o.nodes[0].disk_admit_min_seen = 0;
  EXPECT_THAT(error(o), HasSubstr("nodes[0].disk_admit_min_seen"));
  o = MakeFleet(2, Host(4), Routing::kPrefixAffinity);
  o.affinity_blocks = 0;
  EXPECT_THAT(error(o), HasSubstr("affinity_blocks"));
  o = MakeFleet(2, Host(4), Routing::kRoundRobin);
  o.remote = Pool(0, RemoteWritePolicy::kOnEvict);
  EXPECT_THAT(error(o), HasSubstr("remote.capacity_blocks"));
  o.remote = Pool(4, RemoteWritePolicy::kOnEvict, 16);
  EXPECT_THAT(error(o), HasSubstr("remote.admit_min_seen"));
  o = MakeFleet(2, Host(4), static_cast<Routing>(7));
  EXPECT_THAT(error(o), HasSubstr("routing"));

  absl::StatusOr<Routing> routing = ParseRouting("least-loaded");
  ASSERT_FALSE(routing.ok());
  EXPECT_THAT(routing.status().message(), HasSubstr("routing"));
  EXPECT_THAT(routing.status().message(), HasSubstr("prefix-affinity"));
  for (Routing r : {Routing::kRoundRobin, Routing::kPrefixAffinity, Routing::kRandom}) {
    EXPECT_EQ(*ParseRouting(RoutingName(r)), r);
  }
  absl::StatusOr<RemoteWritePolicy> w = ParseRemoteWritePolicy("write-back");
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("remote.write_policy"));
  for (RemoteWritePolicy p : {RemoteWritePolicy::kWriteThrough, RemoteWritePolicy::kOnEvict}) {
    EXPECT_EQ(*ParseRemoteWritePolicy(RemoteWritePolicyName(p)), p);
  }
}

}  // namespace
}  // namespace kvtier::workload
