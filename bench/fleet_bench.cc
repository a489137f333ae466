// bench fleet — N engine processes (inference nodes) replaying the shared Mooncake trace, each
// with small tiers of its own, with and without the shared remote tier on a Redis Cluster that
// this program starts on loopback (3 masters, 1 replica each). Every loaded byte is verified.
//
//   bench/run fleet [--nodes=3] [--routing=round-robin,prefix-affinity] [--host=1/8]
//                   [--disk=1/4] [--requests=N] [--kill-at=0.5] [--affinity-blocks=1]
//                   [--workload=mooncake|chat|...] [--trace=PATH] [--seed=N]
//
// The coordinator (this process) routes request r of the trace to a node exactly as the fleet
// simulator does (workload::RouteRequest) and waits for that node to serve it (Match, Load of
// the matched prefix with every byte compared, Store of the rest: bench/replay.h's client)
// before sending the next, so the fleet replays the trace in its order, as the simulator does.
// Nodes are separate processes (this binary with --worker), each with its own engine, host tier
// and disk tier; their tiers are fractions of the trace's distinct blocks / N (the simulator's
// split sizing). The remote pool is unbounded (no maxmemory): the run measures sharing, not the
// pool's eviction, which bench fleet-sim and the allkeys-lru test cover.
//
// Per routing mode: the fleet without a remote tier (node-local only), the fleet with it, and
// (round-robin) the fleet with it while a master is SIGKILLed once `--kill-at` of the requests
// are served (its replica takes over; reads of its shard fail as misses meanwhile, and no byte
// may be wrong). Beside each: the fleet simulator's answer for the same fleet (write-through,
// pool = every distinct block), and the unbounded single cache's ratio (the ceiling).
// figure = prefix-hit ratio with the remote tier, round-robin; ceiling = the unbounded cache's.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <atomic>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "bench/replay.h"
#include "bench/workload_flags.h"
#include "common/flags.h"
#include "kvtier/engine.h"
#include "nlohmann/json.hpp"
#include "remote/testing/local_cluster.h"
#include "workload/fleet_simulator.h"
#include "workload/generators.h"
#include "workload/trace.h"

namespace kvtier::bench {
namespace {

using remote::testing::LocalCluster;
using workload::Request;

constexpr uint32_t kFinish = 0xffffffffu;
constexpr char kModel[] = "bench-fleet";

struct Flags {
  size_t nodes = 3;
  std::vector<std::string> routings = {"round-robin", "prefix-affinity"};
  std::string host = "1/8", disk = "1/4";
  size_t requests = 0;
  double kill_at = 0.5;
  uint32_t affinity_blocks = 1;
  std::string workload = "mooncake";
  std::string trace =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  uint64_t seed = 1;
  // Worker mode (set by the coordinator).
  bool worker = false;
  size_t host_blocks = 0, disk_blocks = 0;
  std::string seeds;  // comma-separated; empty = no remote tier
};

std::vector<Request> LoadRequests(const Flags& f, std::string* label) {
  absl::StatusOr<std::vector<Request>> loaded =
      workload::LoadBenchWorkload(f.workload, f.trace, f.seed, label);
  if (!loaded.ok()) Die(loaded.status().ToString());
  if (f.requests > 0 && loaded->size() > f.requests) loaded->resize(f.requests);
  return std::move(*loaded);
}

bool ReadAll(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = read(fd, c, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// ----------------------------------------------------------------------------- a node

// Serves the request numbers read from stdin (one uint32 each; a byte back on stdout when
// served) until kFinish, then writes one JSON line of what it counted and exits.
int Worker(const Flags& f) {
  std::string label;
  const Geometry geometry = ReplayGeometry();
  const KeyHasher hasher(KeyHash::kXxh3, kNs, kModel, geometry.Fingerprint());
  const ReplayTrace trace = PrepareTrace(LoadRequests(f, &label), hasher);
  const std::string& dir = TempDirRemovedAtExit("kvtier-bench-fleet-node-");
  std::filesystem::create_directories(dir);
  EngineOptions o = ReplayEngineOptions(kModel, 0, f.host_blocks, f.disk_blocks, dir);
  if (!f.seeds.empty()) {
    o.remote.seeds = absl::StrSplit(f.seeds, ',');
    o.remote.op_timeout = absl::Seconds(2);
    o.remote.match_timeout = absl::Milliseconds(200);
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Open(o);
  if (!engine.ok()) Die(absl::StrCat("node: open: ", engine.status().ToString()));
  ReplayCounts counts;
  ReplayOptions ro;
  ro.load_errors_are_misses = !f.seeds.empty();
  ro.report_failures_as = "fleet node";
  auto client = std::make_unique<ReplayClient>(**engine, trace, counts, ro);
  if (absl::Status s = client->Init(); !s.ok()) Die(s.ToString());
  uint32_t r = 0;
  while (ReadAll(0, &r, sizeof(r)) && r != kFinish) {
    if (r >= trace.requests.size()) Die("node: request number out of range");
    const uint64_t loaded_before = counts.loaded.load();
    client->ServeOne(r);
    // The blocks of this request served from the cache (its verified prefix).
    const uint32_t ack = static_cast<uint32_t>(counts.loaded.load() - loaded_before);
    if (!WriteAll(1, &ack, sizeof(ack))) Die("node: coordinator gone");
  }
  client.reset();  // its stream before the engine's device
  (void)(*engine)->Flush();
  const EngineStats st = (*engine)->Stats();
  nlohmann::json j;
  j["requests"] = counts.requests.load();
  j["blocks"] = counts.blocks.load();
  j["matched"] = counts.matched.load();
  j["loaded"] = counts.loaded.load();
  j["load_races"] = counts.load_races.load();
  j["load_misses"] = counts.load_misses.load();
  j["failures"] = counts.failures();
  j["wrong_byte_loads"] = counts.wrong_byte_loads.load();
  for (size_t t = 0; t < kNumTiers; ++t) {
    const std::string name = TierKindName(static_cast<TierKind>(t));
    j["hits_" + name] = st.tiers[t].hits;
    j["bytes_in_" + name] = st.tiers[t].bytes_in;
    j["bytes_out_" + name] = st.tiers[t].bytes_out;
    j["evictions_" + name] = st.tiers[t].evictions;
    j["admissions_rejected_" + name] = st.tiers[t].admissions_rejected;
  }
  j["remote_bytes_read"] = st.remote.bytes_read;
  j["remote_bytes_written"] = st.remote.bytes_written;
  j["remote_read_hits"] = st.remote.read_hits;
  j["remote_lookups"] = st.remote.lookups;
  j["remote_lookup_errors"] = st.remote.lookup_errors;
  j["remote_errors_breaker_open"] = st.remote.errors_breaker_open;
  j["remote_errors_connect"] = st.remote.errors_connect;
  j["remote_errors_timeout"] = st.remote.errors_timeout;
  j["remote_errors_cluster_down"] = st.remote.errors_cluster_down;
  j["remote_slot_map_refreshes"] = st.remote.slot_map_refreshes;
  j["remote_read_misses"] = st.remote.read_misses;
  j["remote_read_errors"] = st.remote.read_errors;
  j["remote_read_corrupt"] = st.remote.read_corrupt + st.remote.read_wrong_block;
  j["remote_writes"] = st.remote.writes;
  j["remote_writes_failed"] = st.remote.writes_failed + st.remote.writes_dropped;
  const std::string line = j.dump() + "\n";
  engine->reset();
  return WriteAll(1, line.data(), line.size()) ? 0 : 1;
}

// ----------------------------------------------------------------------------- the fleet

struct Node {
  pid_t pid = -1;
  int to = -1;    // its stdin
  int from = -1;  // its stdout
};

Node StartNode(const Flags& f, size_t host_blocks, size_t disk_blocks, const std::string& seeds) {
  std::vector<std::string> args = {"/proc/self/exe", "--worker",
                                   "--host-blocks=" + std::to_string(host_blocks),
                                   "--disk-blocks=" + std::to_string(disk_blocks),
                                   "--workload=" + f.workload, "--trace=" + f.trace,
                                   "--seed=" + std::to_string(f.seed),
                                   "--requests=" + std::to_string(f.requests)};
  if (!seeds.empty()) args.push_back("--seeds=" + seeds);
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) Die("pipe");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  return Node{pid, in[1], out[0]};
}

struct FleetRun {
  nlohmann::json totals = nlohmann::json::object();  // summed over nodes
  double seconds = 0;
  std::vector<uint32_t> loaded;  // per request: the blocks served from the cache
  std::string killed;            // the master killed, if any
  size_t killed_at = 0;          // the request at which it was killed
  size_t failed_over_at = 0;     // the request being served when its replica had taken over
  double failover_seconds = 0;
  double hit_ratio() const {
    const double blocks = totals.value("blocks", 0.0);
    return blocks > 0 ? totals.value("loaded", 0.0) / blocks : 0;
  }
};

FleetRun RunFleet(const Flags& f, const std::vector<Request>& requests,
                  const workload::FleetOptions& routing, size_t host_blocks, size_t disk_blocks,
                  LocalCluster* cluster, bool kill) {
  const std::string seeds = cluster ? absl::StrJoin(cluster->seeds(), ",") : "";
  std::vector<Node> nodes;
  for (size_t i = 0; i < f.nodes; ++i) nodes.push_back(StartNode(f, host_blocks, disk_blocks, seeds));
  FleetRun run;
  const size_t kill_index =
      kill ? static_cast<size_t>(f.kill_at * static_cast<double>(requests.size())) : SIZE_MAX;
  const double t0 = Now();
  std::atomic<size_t> at{0};
  std::atomic<bool> failed_over{false};
  std::thread watcher;
  for (size_t r = 0; r < requests.size(); ++r) {
    at.store(r);
    if (r == kill_index) {
      absl::StatusOr<std::vector<remote::testing::LocalNode>> all = cluster->Nodes();
      if (!all.ok()) Die(all.status().ToString());
      for (const auto& n : *all) {
        if (n.master && n.alive) {
          if (absl::Status s = cluster->KillNode(n.address); !s.ok()) Die(s.ToString());
          run.killed = n.address;
          run.killed_at = r;
          break;
        }
      }
      // From here on the cluster is only the watcher's: it notes when the replica took over.
      watcher = std::thread([&, killed = run.killed, since = Now()] {
        absl::StatusOr<std::string> promoted =
            cluster->WaitForFailover(killed, absl::Now() + absl::Seconds(60));
        if (!promoted.ok()) Die(promoted.status().ToString());
        run.failover_seconds = Now() - since;
        run.failed_over_at = at.load();
        failed_over.store(true);
      });
    }
    const Node& n = nodes[workload::RouteRequest(requests[r], r, f.nodes, routing)];
    const uint32_t index = static_cast<uint32_t>(r);
    uint32_t loaded = 0;
    if (!WriteAll(n.to, &index, sizeof(index)) || !ReadAll(n.from, &loaded, sizeof(loaded))) {
      Die(absl::StrFormat("node %d died serving request %d", n.pid, r));
    }
    run.loaded.push_back(loaded);
  }
  run.seconds = Now() - t0;
  if (watcher.joinable()) watcher.join();
  if (!run.killed.empty() && run.failed_over_at == 0) run.failed_over_at = requests.size();
  for (Node& n : nodes) {
    const uint32_t finish = kFinish;
    if (!WriteAll(n.to, &finish, sizeof(finish))) Die("node gone at the end");
    close(n.to);
    std::string line;
    char c;
    while (ReadAll(n.from, &c, 1) && c != '\n') line.push_back(c);
    close(n.from);
    int status = 0;
    waitpid(n.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("a node failed at the end");
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) Die("a node's report is not JSON: " + line);
    for (const auto& [k, v] : j.items()) {
      run.totals[k] = run.totals.value(k, 0.0) + v.get<double>();
    }
  }
  if (getenv("KVTIER_FLEET_DEBUG")) std::fprintf(stderr, "totals: %s\n", run.totals.dump().c_str());
  return run;
}

double Mib(const nlohmann::json& t, const std::string& k) { return t.value(k, 0.0) / (1 << 20); }

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app("bench fleet: N engine processes replaying a trace, with and without a shared "
               "remote tier on a local Redis Cluster",
               "bench/run fleet");
  app.add_option("--nodes", f.nodes, "engine processes")->check(CLI::Range(1, 16))
      ->capture_default_str();
  app.add_option("--routing", f.routings, "routing modes (round-robin, prefix-affinity, random)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--host", f.host, "a node's host tier, a fraction of distinct blocks / N")
      ->capture_default_str();
  app.add_option("--disk", f.disk, "a node's disk tier, a fraction of distinct blocks / N (0: none)")
      ->capture_default_str();
  app.add_option("--requests", f.requests, "the first N requests of the trace (0: all)")
      ->capture_default_str();
  app.add_option("--kill-at", f.kill_at,
                 "the share of requests served before a master is killed (round-robin run)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--affinity-blocks", f.affinity_blocks, "prefix-affinity: leading blocks hashed")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  AddWorkloadFlags(app, &f.workload, &f.trace);
  flags::AddSeed(app, &f.seed);
  app.add_flag("--worker", f.worker)->group("");  // internal: run as one node
  app.add_option("--host-blocks", f.host_blocks)->group("");
  app.add_option("--disk-blocks", f.disk_blocks)->group("");
  app.add_option("--seeds", f.seeds)->group("");
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  if (f.worker) return Worker(f);

  std::vector<workload::FleetOptions> modes;
  for (const std::string& name : f.routings) {
    absl::StatusOr<workload::Routing> routing = workload::ParseRouting(name);
    if (!routing.ok()) Die(absl::StrCat("--routing: ", routing.status().message()));
    workload::FleetOptions o;
    o.routing = *routing;
    o.affinity_blocks = f.affinity_blocks;
    o.seed = f.seed;
    modes.push_back(o);
  }
  absl::StatusOr<double> host_share = ParseFraction(f.host);
  absl::StatusOr<double> disk_share = ParseFraction(f.disk);
  if (!host_share.ok()) Die(absl::StrCat("--host: ", host_share.status().message()));
  if (!disk_share.ok()) Die(absl::StrCat("--disk: ", disk_share.status().message()));

  std::string label;
  const std::vector<Request> requests = LoadRequests(f, &label);
  const workload::TraceSummary summary = workload::Summarize(requests);
  const double per_node = static_cast<double>(summary.unique_blocks) / static_cast<double>(f.nodes);
  // A node's host tier must hold its largest request pinned while it is stored.
  const size_t host_blocks = std::max<size_t>(static_cast<size_t>(*host_share * per_node),
                                              summary.max_request_blocks + kChunk);
  const size_t disk_blocks = static_cast<size_t>(*disk_share * per_node);
  std::printf("trace: %s\n  %lu requests, %lu block refs, %lu distinct blocks; unbounded cache "
              "prefix-hit ratio %.4f (the ceiling)\n",
              label.c_str(), static_cast<unsigned long>(summary.requests),
              static_cast<unsigned long>(summary.block_refs),
              static_cast<unsigned long>(summary.unique_blocks), summary.prefix_reuse_ratio);
  std::printf("fleet: %zu engine processes, each host %zu + disk %zu blocks of %zu KiB; remote: "
              "Redis Cluster, 3 masters + 1 replica each, unbounded, write-through\n",
              f.nodes, host_blocks, disk_blocks, ReplayGeometry().block_bytes() >> 10);

  remote::testing::LocalClusterOptions co;
  co.replicas_per_master = 1;
  std::printf("\n%-16s %-22s %8s %8s %8s %8s %9s %9s %9s %6s %7s\n", "routing", "fleet", "hit",
              "sim", "local", "remote", "host MiB", "disk MiB", "rmt MiB r/w", "wrong", "secs");
  JsonLine json;
  double figure = 0;
  uint64_t wrong = 0, failures = 0;
  std::vector<std::pair<std::string, double>> fields;
  for (const workload::FleetOptions& mode : modes) {
    const std::string rname = workload::RoutingName(mode.routing);
    struct Case {
      const char* name;
      bool remote, kill;
    };
    std::vector<Case> cases = {{"node-local", false, false}, {"remote", true, false}};
    if (mode.routing == workload::Routing::kRoundRobin && f.kill_at > 0) {
      cases.push_back({"remote, master killed", true, true});
    }
    std::vector<uint32_t> unkilled;  // per-request hits of the last run without a kill
    for (const Case& c : cases) {
      std::unique_ptr<LocalCluster> cluster;
      if (c.remote) {
        absl::StatusOr<std::unique_ptr<LocalCluster>> started = LocalCluster::Start(co);
        if (!started.ok()) Die(started.status().ToString());
        cluster = std::move(*started);
      }
      const FleetRun run = RunFleet(f, requests, mode, host_blocks, disk_blocks, cluster.get(), c.kill);
      // The simulator's answer for the same fleet.
      workload::FleetOptions sim = mode;
      workload::NodeTiers tiers;
      tiers.host_blocks = host_blocks;
      tiers.disk_blocks = disk_blocks;
      tiers.host_eviction = EngineOptions{}.host_eviction;
      tiers.disk_admit_min_seen = EngineOptions{}.disk.admit_min_seen;
      sim.nodes = workload::UniformNodes(f.nodes, tiers);
      if (c.remote) {
        workload::RemotePoolOptions pool;
        pool.capacity_blocks = summary.unique_blocks;
        sim.remote = pool;
      }
      absl::StatusOr<workload::FleetResult> simulated = workload::SimulateFleet(requests, sim);
      if (!simulated.ok()) Die(simulated.status().ToString());
      const nlohmann::json& t = run.totals;
      const double blocks = t.value("blocks", 0.0);
      const double remote_hits = t.value("hits_remote", 0.0);
      const double hit = run.hit_ratio();
      const uint64_t w = static_cast<uint64_t>(t.value("wrong_byte_loads", 0.0));
      wrong += w;
      failures += static_cast<uint64_t>(t.value("failures", 0.0)) - w;
      std::printf("%-16s %-22s %8.4f %8.4f %8.4f %8.4f %9.1f %9.1f %5.0f/%-5.0f %6lu %7.1f\n",
                  rname.c_str(), c.name, hit, simulated->prefix_hit_ratio(),
                  blocks > 0 ? hit - remote_hits / blocks : 0, blocks > 0 ? remote_hits / blocks : 0,
                  Mib(t, "bytes_in_host"), Mib(t, "bytes_in_disk"), Mib(t, "remote_bytes_read"),
                  Mib(t, "remote_bytes_written"), static_cast<unsigned long>(w), run.seconds);
      if (!c.kill) unkilled = run.loaded;
      if (c.kill) {
        // Hit ratios of the same requests in this run and in the one without the kill: before
        // it, while the shard had no master, and after its replica took over.
        auto ratio = [&](const std::vector<uint32_t>& loaded, size_t from, size_t to) {
          double hit = 0, all = 0;
          for (size_t r = from; r < to && r < loaded.size(); ++r) {
            hit += loaded[r];
            all += static_cast<double>(requests[r].blocks.size());
          }
          return all > 0 ? hit / all : 0;
        };
        const size_t k = run.killed_at, fo = run.failed_over_at, end = requests.size();
        std::printf("%-16s   killed master %s at request %zu; its replica served after %.1f s "
                    "(request %zu). Hit ratio, this run / without the kill: before %.4f / %.4f, "
                    "failing over %.4f / %.4f, after %.4f / %.4f. %.0f lookups and %.0f writes "
                    "failed (breaker open %.0f times), %.0f loads missed in part, %lu wrong "
                    "blocks\n",
                    "", run.killed.c_str(), k, run.failover_seconds, fo, ratio(run.loaded, 0, k),
                    ratio(unkilled, 0, k), ratio(run.loaded, k, fo), ratio(unkilled, k, fo),
                    ratio(run.loaded, fo, end), ratio(unkilled, fo, end),
                    t.value("remote_lookup_errors", 0.0), t.value("remote_writes_failed", 0.0),
                    t.value("remote_errors_breaker_open", 0.0), t.value("load_misses", 0.0),
                    static_cast<unsigned long>(w));
        fields.push_back({"failover_seconds", run.failover_seconds});
        fields.push_back({"hit_after_failover_killed", ratio(run.loaded, fo, end)});
        fields.push_back({"hit_after_failover_unkilled", ratio(unkilled, fo, end)});
        fields.push_back({"hit_during_failover_killed", ratio(run.loaded, k, fo)});
        fields.push_back({"hit_during_failover_unkilled", ratio(unkilled, k, fo)});
      }
      std::string tag = rname + (c.remote ? (c.kill ? "_remote_killed" : "_remote") : "_local");
      for (char& ch : tag) ch = ch == '-' ? '_' : ch;
      fields.push_back({"hit_" + tag, hit});
      fields.push_back({"sim_hit_" + tag, simulated->prefix_hit_ratio()});
      fields.push_back({"remote_hit_" + tag, blocks > 0 ? remote_hits / blocks : 0});
      fields.push_back({"remote_read_mib_" + tag, Mib(t, "remote_bytes_read")});
      fields.push_back({"remote_written_mib_" + tag, Mib(t, "remote_bytes_written")});
      fields.push_back({"host_in_mib_" + tag, Mib(t, "bytes_in_host")});
      fields.push_back({"disk_in_mib_" + tag, Mib(t, "bytes_in_disk")});
      fields.push_back({"wrong_blocks_" + tag, static_cast<double>(w)});
      if (mode.routing == workload::Routing::kRoundRobin && c.remote && !c.kill) figure = hit;
    }
  }
  json.Str("bench", "fleet").Num("figure", figure).Str("unit", "prefix-hit ratio")
      .Num("ceiling", summary.prefix_reuse_ratio)
      .Str("ceiling_source", "one unbounded cache over the whole trace (no fleet can beat it)")
      .Num("ratio", summary.prefix_reuse_ratio > 0 ? figure / summary.prefix_reuse_ratio : 0)
      .Num("nodes", static_cast<double>(f.nodes))
      .Num("host_blocks", static_cast<double>(host_blocks))
      .Num("disk_blocks", static_cast<double>(disk_blocks))
      .Num("wrong_blocks", static_cast<double>(wrong))
      .Num("other_failures", static_cast<double>(failures));
  for (const auto& [k, v] : fields) json.Num(k, v);
  json.Print();
  return wrong == 0 && failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
