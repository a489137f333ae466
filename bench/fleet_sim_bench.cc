// bench fleet-sim — what a fleet of N inference nodes would see with and without a shared
// remote KV pool, by metadata simulation (workload/fleet_simulator.h): the shared Mooncake
// trace spread over N nodes (round-robin or prefix-affinity routing), each node with its own
// host and disk tiers (GPU optional), with no pool and with pools of several sizes under both
// remote write policies. No bytes move; the byte-moving counterpart is `bench/run fleet`.
//
//   bench/run fleet-sim [--workload=mooncake|chat|rag|agent|scan] [--trace=PATH]
//                       [--nodes=1,3,8,64,256] [--routing=round-robin,prefix-affinity]
//                       [--pool=1/8,1/4,1/2] [--write-policies=write-through,on-evict]
//                       [--gpu=0] [--host=1/8] [--disk=1/4] [--node-sizing=split|fixed]
//                       [--disk-min-seen=2] [--remote-min-seen=1] [--affinity-blocks=1]
//                       [--seed=N] [--out-dir=DIR]
//
// Sizes are fractions of the trace's distinct blocks ("1/8" or "0.125"; 0 = no such tier).
// The pool's is of the whole trace. A node's, with --node-sizing=split (the default), is of
// its share: fraction x distinct / N blocks (at least 1), so the fleet's local capacity is the
// same at every N and only its split changes — each node's cache keeps the same ratio to the
// working set its share of the traffic brings. --node-sizing=fixed gives every node fraction
// x distinct blocks (a fleet of N machines of one size; at large N they then never evict).
//
// N = 1 is the reference: one node with the whole fleet's local capacity (split sizing).
//
// Output: one table row per (N, routing, pool, write policy) — prefix-hit ratio, its local
// and remote parts, the same fleet without the pool, blocks written to and read from the
// pool, and load imbalance (busiest node's requests / mean) — a JSON file of every row
// (fleet_sim.json under --out-dir), and the JSON line. figure = prefix-hit ratio at the
// largest N, round-robin, the middle pool size, write-through; ceiling = one unbounded cache
// over the whole trace (no fleet can beat it).

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "bench/workload_flags.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "workload/fleet_simulator.h"
#include "workload/generators.h"
#include "workload/trace.h"

namespace kvtier::bench {
namespace {

using workload::FleetOptions;
using workload::FleetResult;
using workload::RemoteWritePolicy;
using workload::Routing;

// --NAME=F,F,...: fractions as ParseFraction reads them (labels kept as written).
CLI::Option* AddFractions(CLI::App& app, const std::string& name, std::vector<std::string>* out,
                          const std::string& help) {
  return app.add_option(name, *out, help)
      ->delimiter(',')
      ->check(flags::Accepts(ParseFraction, "FRACTION"))
      ->capture_default_str();
}

size_t Blocks(double fraction, double distinct, size_t min) {
  if (fraction == 0) return 0;
  return std::max<size_t>(min, static_cast<size_t>(fraction * distinct));
}

const char* RoutingTag(Routing r) {
  switch (r) {
    case Routing::kRoundRobin:
      return "rr";
    case Routing::kPrefixAffinity:
      return "pa";
    case Routing::kRandom:
      return "rand";
  }
  return "?";
}

int Main(int argc, char** argv) {
  std::string trace_path =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  std::string workload_name = "mooncake";
  std::string out_dir = std::string(KVTIER_BINARY_DIR) + "/bench-out/fleet-sim";
  std::vector<size_t> node_counts = {1, 3, 8, 64, 256};
  std::vector<std::string> routings = {"round-robin", "prefix-affinity"};
  std::vector<std::string> pools = {"1/8", "1/4", "1/2"};
  std::vector<std::string> write_policies = {"write-through", "on-evict"};
  std::string gpu = "0", host = "1/8", disk = "1/4", sizing = "split";
  uint32_t disk_min_seen = 2, remote_min_seen = 1, affinity_blocks = 1;
  uint64_t seed = 1;
  CLI::App app(
      "bench fleet-sim: N nodes with and without a shared remote pool on a trace, by metadata "
      "simulation",
      "bench/run fleet-sim");
  AddWorkloadFlags(app, &workload_name, &trace_path);
  app.add_option("--nodes", node_counts, "fleet sizes, comma-separated")
      ->delimiter(',')
      ->check(flags::AtLeast<size_t>(1))
      ->capture_default_str();
  app.add_option("--routing", routings, "routing modes: round-robin, prefix-affinity, random")
      ->delimiter(',')
      ->check(flags::Accepts(workload::ParseRouting, "ROUTING"))
      ->capture_default_str();
  AddFractions(app, "--pool", &pools, "remote pool sizes, fractions of the distinct blocks");
  app.add_option("--write-policies", write_policies, "remote write policies")
      ->delimiter(',')
      ->check(flags::Accepts(workload::ParseRemoteWritePolicy, "POLICY"))
      ->capture_default_str();
  for (auto [name, value, what] :
       {std::tuple{"--gpu", &gpu, "GPU tier"}, std::tuple{"--host", &host, "host tier"},
        std::tuple{"--disk", &disk, "disk tier"}}) {
    app.add_option(name, *value,
                   absl::StrCat(what,
                                " per node, a fraction of the distinct blocks (see "
                                "--node-sizing); 0 = none"))
        ->check(flags::Accepts(ParseFraction, "FRACTION"))
        ->capture_default_str();
  }
  app.add_option("--node-sizing", sizing,
                 "split: a node's tiers are fractions of distinct/N (the fleet's local capacity "
                 "fixed); fixed: of distinct (every node that size)")
      ->check(CLI::IsMember({"split", "fixed"}))
      ->capture_default_str();
  app.add_option("--disk-min-seen", disk_min_seen, "disk admission: sightings before a write")
      ->check(CLI::Range(1, 15))
      ->capture_default_str();
  app.add_option("--remote-min-seen", remote_min_seen,
                 "remote admission: sightings on the writing node before a write")
      ->check(CLI::Range(1, 15))
      ->capture_default_str();
  app.add_option("--affinity-blocks", affinity_blocks,
                 "prefix-affinity: leading blocks hashed to pick the node")
      ->check(flags::AtLeast<uint32_t>(1))
      ->capture_default_str();
  flags::AddSeed(app, &seed);
  app.add_option("--out-dir", out_dir, "where fleet_sim.json goes")->capture_default_str();
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;

  std::string trace_label;
  absl::StatusOr<std::vector<workload::Request>> loaded =
      workload::LoadBenchWorkload(workload_name, trace_path, seed, &trace_label);
  if (!loaded.ok()) Die(loaded.status().ToString());
  const std::vector<workload::Request> trace = std::move(*loaded);
  const workload::TraceSummary summary = workload::Summarize(trace);
  if (summary.unique_blocks == 0) Die("the trace has no blocks");
  const double distinct = static_cast<double>(summary.unique_blocks);
  const double ceiling = summary.prefix_reuse_ratio;
  std::printf("trace: %s\n%s", trace_label.c_str(), workload::FormatSummary(summary).c_str());
  std::printf(
      "node tiers (%s sizing): gpu %s, host %s, disk %s of distinct%s; disk admission "
      "min_seen %u; remote: exact LRU, admission min_seen %u\n",
      sizing.c_str(), gpu.c_str(), host.c_str(), disk.c_str(), sizing == "split" ? " / N" : "",
      disk_min_seen, remote_min_seen);
  std::printf("\n%5s %-15s %6s %7s %-13s %7s %7s %7s %8s %7s %7s %9s %9s %6s\n", "nodes", "routing",
              "host/n", "pool", "write", "hit", "local", "remote", "no-pool", "gain", "ceiling",
              "written", "read", "imbal");

  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  JsonLine fields;
  double figure = -1, figure_without = 0;
  uint64_t refs_simulated = 0;
  const double start = Now();
  for (size_t n : node_counts) {
    const double share = sizing == "split" ? distinct / n : distinct;
    workload::NodeTiers tiers;
    tiers.gpu_blocks = Blocks(*ParseFraction(gpu), share, 1);
    tiers.host_blocks = Blocks(*ParseFraction(host), share, 1);
    tiers.disk_blocks = Blocks(*ParseFraction(disk), share, 1);
    tiers.disk_admit_min_seen = disk_min_seen;
    if (tiers.host_blocks == 0) Die("--host must be above 0: the engine needs a host tier");
    for (const std::string& routing_name : routings) {
      FleetOptions o;
      o.nodes = workload::UniformNodes(n, tiers);
      o.routing = *workload::ParseRouting(routing_name);
      o.affinity_blocks = affinity_blocks;
      o.seed = seed;
      absl::StatusOr<FleetResult> local = workload::SimulateFleet(trace, o);
      if (!local.ok()) Die(local.status().ToString());
      refs_simulated += local->block_refs;
      const std::string base = absl::StrCat("n", n, "_", RoutingTag(o.routing));
      fields.Num(base + "_nopool_hit", local->prefix_hit_ratio())
          .Num(base + "_imbalance", local->load_imbalance());
      auto row = [&](const FleetResult& r, const std::string& pool, const char* write) {
        std::printf(
            "%5zu %-15s %6zu %7s %-13s %7.4f %7.4f %7.4f %8.4f %+7.4f %7.4f %9lu %9lu "
            "%6.2f\n",
            n, routing_name.c_str(), tiers.host_blocks, pool.c_str(), write, r.prefix_hit_ratio(),
            r.local_prefix_hit_ratio(), r.remote_prefix_hit_ratio(), local->prefix_hit_ratio(),
            r.prefix_hit_ratio() - local->prefix_hit_ratio(), ceiling,
            static_cast<unsigned long>(r.remote_blocks_written),
            static_cast<unsigned long>(r.remote_blocks_read), r.load_imbalance());
        rows.push_back({{"nodes", n},
                        {"routing", routing_name},
                        {"gpu_blocks_per_node", tiers.gpu_blocks},
                        {"host_blocks_per_node", tiers.host_blocks},
                        {"disk_blocks_per_node", tiers.disk_blocks},
                        {"pool", pool},
                        {"pool_blocks", o.remote ? o.remote->capacity_blocks : 0},
                        {"write_policy", write},
                        {"prefix_hit", r.prefix_hit_ratio()},
                        {"prefix_hit_local", r.local_prefix_hit_ratio()},
                        {"prefix_hit_remote", r.remote_prefix_hit_ratio()},
                        {"prefix_hit_no_pool", local->prefix_hit_ratio()},
                        {"ceiling", ceiling},
                        {"remote_blocks_written", r.remote_blocks_written},
                        {"remote_blocks_read", r.remote_blocks_read},
                        {"remote_writes_rejected", r.remote_writes_rejected},
                        {"remote_writes_skipped", r.remote_writes_skipped},
                        {"remote_evictions", r.remote_evictions},
                        {"disk_blocks_written", r.disk_blocks_written},
                        {"load_imbalance", r.load_imbalance()}});
      };
      row(*local, "none", "-");
      for (size_t p = 0; p < pools.size(); ++p) {
        for (const std::string& write : write_policies) {
          workload::RemotePoolOptions pool;
          pool.capacity_blocks = Blocks(*ParseFraction(pools[p]), distinct, 1);
          pool.write_policy = *workload::ParseRemoteWritePolicy(write);
          pool.admit_min_seen = remote_min_seen;
          o.remote = pool;
          if (pool.capacity_blocks == 0) continue;  // --pool=0: no pool, the row above
          absl::StatusOr<FleetResult> r = workload::SimulateFleet(trace, o);
          if (!r.ok()) Die(r.status().ToString());
          refs_simulated += r->block_refs;
          row(*r, pools[p], write.c_str());
          const std::string tag =
              absl::StrCat(base, "_pool", p, "_",
                           pool.write_policy == RemoteWritePolicy::kWriteThrough ? "wt" : "oe");
          fields.Num(tag + "_hit", r->prefix_hit_ratio())
              .Num(tag + "_remote_hit", r->remote_prefix_hit_ratio())
              .Num(tag + "_written", static_cast<double>(r->remote_blocks_written))
              .Num(tag + "_read", static_cast<double>(r->remote_blocks_read));
          if (n == node_counts.back() && o.routing == Routing::kRoundRobin &&
              p == pools.size() / 2 && pool.write_policy == RemoteWritePolicy::kWriteThrough) {
            figure = r->prefix_hit_ratio();
            figure_without = local->prefix_hit_ratio();
          }
        }
      }
      o.remote.reset();
    }
  }
  const double seconds = Now() - start;
  std::printf(
      "\nceiling = one unbounded cache over the whole trace; gain = hit - no-pool; "
      "written, read = blocks moved to and from the pool; imbal = busiest node's "
      "requests / mean. %.1f s, %.1f M block refs/s simulated\n",
      seconds, refs_simulated / seconds / 1e6);

  std::filesystem::create_directories(out_dir);
  const std::filesystem::path json_path = std::filesystem::path(out_dir) / "fleet_sim.json";
  {
    nlohmann::ordered_json doc = {{"trace", trace_label},
                                  {"distinct_blocks", summary.unique_blocks},
                                  {"block_refs", summary.block_refs},
                                  {"node_sizing", sizing},
                                  {"gpu", gpu},
                                  {"host", host},
                                  {"disk", disk},
                                  {"disk_min_seen", disk_min_seen},
                                  {"remote_min_seen", remote_min_seen},
                                  {"ceiling", ceiling},
                                  {"rows", rows}};
    std::ofstream out(json_path);
    out << doc.dump(1) << "\n";
    if (!out) Die("writing " + json_path.string());
  }
  std::printf("json: %s\n", json_path.string().c_str());

  fields.Str("workload", workload_name)
      .Str("trace", trace_label)
      .Str("node_sizing", sizing)
      .Str("host", host)
      .Str("disk", disk)
      .Str("gpu", gpu)
      .Num("distinct_blocks", distinct)
      .Num("remote_min_seen", remote_min_seen)
      .Num("disk_min_seen", disk_min_seen)
      .Num("seconds", seconds)
      .Str("json", json_path.string());
  JsonLine()
      .Str("bench", "fleet-sim")
      .Num("figure", figure)
      .Str("unit", figure < 0 ? "no run matched the headline (round-robin, write-through)"
                              : absl::StrCat("prefix hit ratio, ", node_counts.back(),
                                             " nodes, round-robin, pool ", pools[pools.size() / 2],
                                             ", write-through"))
      .Num("figure_without_pool", figure_without)
      .Num("ceiling", ceiling)
      .Str("ceiling_source", "one unbounded cache over the whole trace")
      .Num("ratio", ceiling > 0 && figure >= 0 ? figure / ceiling : 0)
      .Merge(fields)
      .Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
