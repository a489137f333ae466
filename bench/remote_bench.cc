// bench remote — store and load throughput through the engine's remote tier (a Redis Cluster
// on loopback that this program starts), at 128 KiB, 1 MiB and 2 MiB blocks, against two
// ceilings measured in the same run: loopback TCP (socket to socket, the same bytes in
// value-sized writes over as many connections as the engine's client opens) and
// redis-benchmark's own GET and SET of values of the same size on the same cluster.
//
//   bench/run remote [--total-mib=N] [--runs=N] [--replicas=R] [--sizes-kib=128,1024,2048]
//
// Store: engine A stores N blocks (the copy into its host tier) and the time runs until
// Flush() returns, i.e. until every write-through SET was acknowledged; with --replicas > 0 each
// master also streams every value to its replica (asynchronous replication: the ack does not
// wait for it, but the master's CPU and the loopback carry it), which is the cost stated.
// Load: engine B, whose own tiers are empty, Matches the prompt (the cluster answers) and Loads
// every block into device buffers (on the emulated device, a host memcpy): GET straight into a
// host slot, checksum verified, then copied to the caller's buffer.
// Fetch: engine C, as empty and with no GPU tier, Matches and Prefetches every block: GET into a
// host slot and verify, the remote tier's own path without the host → device leg (DMA on a GPU,
// a CPU memcpy competing with Redis for the cores on the emulated device).
// figure = fetch GB/s at 1 MiB; ceiling = loopback TCP GB/s at 1 MiB. Every byte B and C
// received is compared with what A stored (untimed).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "kvtier/engine.h"
#include "remote/testing/local_cluster.h"

namespace kvtier::bench {
namespace {

using remote::testing::LocalCluster;

// Loopback TCP: `conns` sender threads each write `bytes / conns` in `chunk`-sized send()s to
// a receiver thread per connection that recv()s into a chunk-sized buffer. GB/s (1e9 B/s).
double LoopbackTcpGbps(size_t bytes, size_t chunk, int conns) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, conns) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die("loopback listener");
  }
  std::vector<int> senders, receivers;
  for (int i = 0; i < conns; ++i) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("connect");
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    senders.push_back(s);
    receivers.push_back(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  }
  close(listener);
  const size_t per = bytes / conns / chunk * chunk;
  std::vector<std::thread> threads;
  const double start = Now();
  for (int i = 0; i < conns; ++i) {
    threads.emplace_back([&, i] {
      std::vector<char> buf(chunk, 'x');
      for (size_t sent = 0; sent < per;) {
        const ssize_t n = send(senders[i], buf.data(), std::min(chunk, per - sent), 0);
        if (n <= 0) Die("send");
        sent += static_cast<size_t>(n);
      }
    });
    threads.emplace_back([&, i] {
      std::vector<char> buf(chunk);
      for (size_t got = 0; got < per;) {
        const ssize_t n = recv(receivers[i], buf.data(), buf.size(), 0);
        if (n <= 0) Die("recv");
        got += static_cast<size_t>(n);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double secs = Now() - start;
  for (int fd : senders) close(fd);
  for (int fd : receivers) close(fd);
  return static_cast<double>(per) * conns / secs / 1e9;
}

// redis-benchmark's GET and SET of `size`-byte values against the cluster (its --cluster mode,
// `clients` connections, pipeline depth `pipeline`): GB/s of values, {get, set}.
std::pair<double, double> RedisBenchmarkGbps(const LocalCluster& cluster, size_t size,
                                            size_t requests, int clients, int pipeline) {
  const std::string seed = cluster.seeds()[0];
  const size_t colon = seed.rfind(':');
  absl::StatusOr<std::string> out = remote::testing::RunProgram(
      {"redis-benchmark", "-h", seed.substr(0, colon), "-p", seed.substr(colon + 1), "--cluster",
       "-t", "set,get", "-d", std::to_string(size), "-n", std::to_string(requests), "-c",
       std::to_string(clients), "-P", std::to_string(pipeline), "--csv", "-q"},
      absl::Minutes(5));
  if (!out.ok()) Die(absl::StrCat("redis-benchmark: ", out.status().ToString()));
  double get = 0, set = 0;
  for (absl::string_view line : absl::StrSplit(*out, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ',');
    if (f.size() < 2) continue;
    auto unq = [](std::string s) {
      s.erase(std::remove(s.begin(), s.end(), '"'), s.end());
      return s;
    };
    double rps = 0;
    if (!absl::SimpleAtod(unq(f[1]), &rps)) continue;
    if (unq(f[0]) == "GET") get = rps * size / 1e9;
    if (unq(f[0]) == "SET") set = rps * size / 1e9;
  }
  if (get == 0 || set == 0) Die(absl::StrCat("could not read redis-benchmark's output:\n", *out));
  return {get, set};
}

struct SizeResult {
  double store_gbps = 0, load_gbps = 0, fetch_gbps = 0, tcp_gbps = 0, rb_get_gbps = 0, rb_set_gbps = 0;
  uint64_t wrong = 0;
};

// Whole-cluster FLUSHALL between runs, so every run stores and loads afresh. ASYNC: a
// synchronous FLUSHALL also makes jemalloc return the freed pages to the kernel, and the next
// run would then pay a page fault and a zeroed page for every value, which a cache at steady
// state (evicting as it writes) does not.
void FlushCluster(LocalCluster& cluster) {
  absl::StatusOr<std::vector<remote::testing::LocalNode>> nodes = cluster.Nodes();
  if (!nodes.ok()) Die(nodes.status().ToString());
  for (const auto& n : *nodes) {
    if (n.master && n.alive) (void)cluster.Cli(n.address, {"FLUSHALL", "ASYNC"});
  }
}

struct ClientShape {
  uint32_t connections_per_node = RemoteOptions{}.connections_per_node;
  uint32_t io_threads = RemoteOptions{}.io_threads;
};

SizeResult RunSize(LocalCluster& cluster, size_t block, size_t total, int runs,
                   const ClientShape& shape) {
  EngineOptions o;
  // 8 KV heads x 128 dim x fp16 x 16 tokens = 64 KiB per layer of a block.
  o.geometry = Geometry{static_cast<uint32_t>(block / (64 << 10)), 8, 128, DType::kFloat16, 16};
  o.model_fingerprint = "bench-remote";
  o.key_hash = KeyHash::kXxh3;
  o.device.choice = DeviceChoice::kEmulated;
  const size_t n = total / block;
  o.host_tier_bytes = n * block;
  o.remote.seeds = cluster.seeds();
  o.remote.max_inflight_bytes = 2 * n * block;  // every write of a run (and its header) may be in flight
  o.remote.op_timeout = absl::Seconds(30);
  o.remote.connections_per_node = shape.connections_per_node;
  o.remote.io_threads = shape.io_threads;
  std::vector<int32_t> tokens(n * 16);
  SizeResult r;
  std::vector<double> st, lt, ft;
  // One pair of engines and buffers for all runs; run 0 warms them up (first-touch page faults
  // of the host tiers and buffers) and is not counted.
  auto a = Engine::Open(o);
  auto b = Engine::Open(o);
  auto c = Engine::Open(o);
  if (!a.ok() || !b.ok() || !c.ok()) {
    Die(absl::StrCat("open: ", a.status().ToString(), b.status().ToString(),
                     c.status().ToString()));
  }
  auto base = (*a)->device().Allocate(n * block);
  auto dst = (*b)->device().Allocate(n * block);
  auto dst_c = (*c)->device().Allocate(n * block);
  if (!base.ok() || !dst.ok() || !dst_c.ok()) Die("allocating buffers");
  std::vector<DevicePtr> src;
  for (size_t i = 0; i < n; ++i) src.push_back(*base + i * block);
  std::vector<char> want(n * block), got(n * block);
  for (int run = 0; run <= runs; ++run) {
    FlushCluster(cluster);
    for (Engine* e : {a->get(), b->get(), c->get()}) {
      if (!e->EraseNamespace("default").ok()) Die("erase");
      if (!e->Flush().ok()) Die("flush");
    }
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i + run * 7919);
    for (size_t i = 0; i < want.size(); ++i) want[i] = static_cast<char>(i * 131 + run);
    // Each engine has its own device: A's buffers through A's, B's through B's.
    auto s = (*a)->device().CreateStream();
    auto sb = (*b)->device().CreateStream();
    std::fill(got.begin(), got.end(), 0);
    if (!s.ok() || !sb.ok() || !(*s)->CopyToDevice(*base, want.data(), want.size()).ok() ||
        !(*sb)->CopyToDevice(*dst, got.data(), got.size()).ok() || !(*s)->Synchronize().ok() ||
        !(*sb)->Synchronize().ok()) {
      Die("fill");
    }
    const uint64_t writes_before = (*a)->Stats().remote.writes;
    double t0 = Now();
    StoreRequest sr;
    sr.ns = "default";
    sr.tokens = tokens;
    sr.buffers = KvBuffers::Blocks(src);
    auto h = (*a)->Store(sr);
    if (!h.ok() || !(*h)->Wait().ok()) Die("store");
    if (!(*a)->Flush().ok()) Die("flush");
    if (run > 0) st.push_back(Now() - t0);
    const RemoteStats as = (*a)->Stats().remote;
    if (as.writes - writes_before != n) {
      Die(absl::StrFormat("%d of %d writes acknowledged (%d failed, %d dropped)",
                          as.writes - writes_before, n, as.writes_failed, as.writes_dropped));
    }
    // Load: Match and Load in chunks of 32 blocks, as a connector would per request.
    t0 = Now();
    auto m = (*b)->Match("default", tokens);
    if (!m.ok() || m->keys.size() != n) Die("match");
    std::vector<std::unique_ptr<TransferHandle>> handles;
    for (size_t i = 0; i < n; i += 32) {
      const size_t k = std::min<size_t>(32, n - i);
      LoadRequest lr;
      lr.ns = "default";
      lr.keys.assign(m->keys.begin() + i, m->keys.begin() + i + k);
      std::vector<DevicePtr> d;
      for (size_t j = 0; j < k; ++j) d.push_back(*dst + (i + j) * block);
      lr.buffers = KvBuffers::Blocks(d);
      auto lh = (*b)->Load(lr);
      if (!lh.ok()) Die(lh.status().ToString());
      handles.push_back(std::move(*lh));
    }
    for (auto& lh : handles) {
      if (absl::Status ws = lh->Wait(); !ws.ok()) Die(ws.ToString());
    }
    if (run > 0) lt.push_back(Now() - t0);
    // Fetch: engine C, as empty, Matches and Prefetches every block into its host tier (it has
    // no GPU tier): the remote tier's own path, GET into a host slot and verify, without the
    // host → device copy, which a GPU does by DMA and the emulated device by memcpy.
    const uint64_t c_hits_before = (*c)->Stats().remote.read_hits;
    t0 = Now();
    auto mc = (*c)->Match("default", tokens);
    if (!mc.ok() || mc->keys.size() != n) Die("match (fetch)");
    auto fh = (*c)->Prefetch("default", mc->keys);
    if (!fh.ok()) Die(fh.status().ToString());
    if (absl::Status ws = (*fh)->Wait(); !ws.ok()) Die(ws.ToString());
    if (const uint64_t hits = (*c)->Stats().remote.read_hits - c_hits_before; hits != n) {
      Die(absl::StrFormat("prefetch read %d of %d blocks from the remote tier", hits, n));
    }
    if (run > 0) ft.push_back(Now() - t0);
    // Every byte checked (not timed).
    auto s2 = (*b)->device().CreateStream();
    if (!s2.ok() || !(*s2)->CopyToHost(got.data(), *dst, got.size()).ok() ||
        !(*s2)->Synchronize().ok()) {
      Die("read back");
    }
    for (size_t i = 0; i < n; ++i) {
      r.wrong += std::memcmp(want.data() + i * block, got.data() + i * block, block) != 0;
    }
    // And C's: its host tier now serves the load, every byte checked again.
    {
      LoadRequest lr;
      lr.ns = "default";
      lr.keys = mc->keys;
      std::vector<DevicePtr> d;
      for (size_t j = 0; j < n; ++j) d.push_back(*dst_c + j * block);
      lr.buffers = KvBuffers::Blocks(d);
      auto lh = (*c)->Load(lr);
      if (!lh.ok() || !(*lh)->Wait().ok()) Die("load from C's host tier");
      auto s3 = (*c)->device().CreateStream();
      if (!s3.ok() || !(*s3)->CopyToHost(got.data(), *dst_c, got.size()).ok() ||
          !(*s3)->Synchronize().ok()) {
        Die("read back (C)");
      }
      for (size_t i = 0; i < n; ++i) {
        r.wrong += std::memcmp(want.data() + i * block, got.data() + i * block, block) != 0;
      }
    }
  }
  (void)(*a)->device().Free(*base);
  (void)(*b)->device().Free(*dst);
  (void)(*c)->device().Free(*dst_c);
  std::sort(st.begin(), st.end());
  std::sort(lt.begin(), lt.end());
  std::sort(ft.begin(), ft.end());
  r.fetch_gbps = static_cast<double>(n * block) / ft[ft.size() / 2] / 1e9;
  r.store_gbps = static_cast<double>(n * block) / st[st.size() / 2] / 1e9;
  r.load_gbps = static_cast<double>(n * block) / lt[lt.size() / 2] / 1e9;
  // The ceilings, right after, on the same cluster and machine state. Connections: the engine's
  // client opens connections_per_node to each of the masters.
  const int conns =
      static_cast<int>(shape.connections_per_node) * static_cast<int>(cluster.seeds().size());
  std::vector<double> tcp;
  for (int i = 0; i < runs; ++i) tcp.push_back(LoopbackTcpGbps(n * block, block, conns));
  std::sort(tcp.begin(), tcp.end());
  r.tcp_gbps = tcp[tcp.size() / 2];
  FlushCluster(cluster);
  // redis-benchmark at its best of two pipeline depths (4 and 16) with the engine's connection
  // count: the ceiling it reports must not be one its own shape held down.
  for (int pipeline : {4, 16}) {
    const auto [get, set] =
        RedisBenchmarkGbps(cluster, block, std::max<size_t>(16 * n, 2048), conns, pipeline);
    r.rb_get_gbps = std::max(r.rb_get_gbps, get);
    r.rb_set_gbps = std::max(r.rb_set_gbps, set);
    FlushCluster(cluster);
  }
  FlushCluster(cluster);
  return r;
}

int Main(int argc, char** argv) {
  size_t total_mib = 128;
  int runs = 3;
  int replicas = 1;
  std::vector<size_t> sizes_kib = {128, 1024, 2048};
  CLI::App app(
      "bench remote: store and load through the engine's remote tier on a local Redis Cluster, "
      "vs loopback TCP and redis-benchmark in the same run",
      "bench/run remote");
  app.add_option("--total-mib", total_mib, "MiB stored and loaded per run at every block size")
      ->check(flags::AtLeast<size_t>(8))
      ->capture_default_str();
  flags::AddRuns(app, &runs);
  app.add_option("--replicas", replicas, "replicas per master of the cluster started")
      ->check(CLI::Range(0, 2))
      ->capture_default_str();
  app.add_option("--sizes-kib", sizes_kib, "block sizes in KiB (multiples of 64)")
      ->delimiter(',')
      ->capture_default_str();
  ClientShape shape;
  app.add_option("--connections-per-node", shape.connections_per_node,
                 "the engine's remote.connections_per_node")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  app.add_option("--io-threads", shape.io_threads, "the engine's remote.io_threads")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  remote::testing::LocalClusterOptions co;
  co.replicas_per_master = replicas;
  absl::StatusOr<std::unique_ptr<LocalCluster>> cluster = LocalCluster::Start(co);
  if (!cluster.ok()) Die(cluster.status().ToString());
  std::printf("remote tier store/load through the engine, %zu MiB per run, median of %d runs; "
              "cluster: 3 masters, %d replica(s) each, on this machine's loopback\n",
              total_mib, runs, replicas);
  std::printf("%8s %11s %11s %11s %13s %12s %12s %10s %11s %10s\n", "block", "store GB/s",
              "fetch GB/s", "load GB/s", "loopback GB/s", "rb GET GB/s", "rb SET GB/s",
              "fetch/tcp", "fetch/rbGET", "load/tcp");
  JsonLine json;
  double figure = 0, ceiling = 0;
  uint64_t wrong = 0;
  std::vector<std::pair<std::string, double>> fields;
  for (size_t kib : sizes_kib) {
    if (kib % 64 != 0 || kib == 0) Die("--sizes-kib: sizes must be multiples of 64");
    const SizeResult r = RunSize(**cluster, kib << 10, total_mib << 20, runs, shape);
    wrong += r.wrong;
    const std::string tag = kib < 1024 ? absl::StrFormat("%dk", kib) : absl::StrFormat("%dm", kib / 1024);
    std::printf("%7sB %11.2f %11.2f %11.2f %13.2f %12.2f %12.2f %10.2f %11.2f %10.2f\n",
                (tag + "i").c_str(), r.store_gbps, r.fetch_gbps, r.load_gbps, r.tcp_gbps,
                r.rb_get_gbps, r.rb_set_gbps, r.fetch_gbps / r.tcp_gbps,
                r.fetch_gbps / r.rb_get_gbps, r.load_gbps / r.tcp_gbps);
    fields.push_back({"store_gbps_" + tag, r.store_gbps});
    fields.push_back({"load_gbps_" + tag, r.load_gbps});
    fields.push_back({"fetch_gbps_" + tag, r.fetch_gbps});
    fields.push_back({"loopback_tcp_gbps_" + tag, r.tcp_gbps});
    fields.push_back({"redis_benchmark_get_gbps_" + tag, r.rb_get_gbps});
    fields.push_back({"redis_benchmark_set_gbps_" + tag, r.rb_set_gbps});
    if (kib == 1024) {
      figure = r.fetch_gbps;
      ceiling = r.tcp_gbps;
    }
  }
  json.Str("bench", "remote").Num("figure", figure).Str("unit", "GB/s").Num("ceiling", ceiling)
      .Str("ceiling_source",
           "loopback TCP socket to socket, same bytes, value-sized sends, as many connections as "
           "the client opens, same run")
      .Num("ratio", ceiling > 0 ? figure / ceiling : 0)
      .Num("replicas", replicas)
      .Num("total_mib", static_cast<double>(total_mib))
      .Num("wrong_blocks", static_cast<double>(wrong));
  for (const auto& [k, v] : fields) json.Num(k, v);
  json.Print();
  return wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
