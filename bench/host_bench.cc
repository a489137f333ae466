// bench host — store (device → host tier) and load (host tier → device) throughput through
// the engine, for block sizes 64 KiB … 8 MiB, against single-thread memcpy in the same run.
//
//   bench/run host [--total-mib=N] [--runs=N] [--copy-gbps=G] [--shapes]
//
// figure = load GB/s at 2 MiB blocks (whole-block copies); ceiling = memcpy GB/s over the same
// number of bytes. With --copy-gbps > 0 the emulated link is throttled (a PCIe model) and the
// ceiling is that limit instead.
//
// --shapes: instead of the size sweep, each model shape of bench_util.h's ModelShapePairs (an
// MLA latent, fp8 K/V, a tensor-parallel shard) and the fp16 K/V geometry of the same block
// bytes, in three alternating rounds (medians); figure = the worst (shape load ratio to memcpy)
// / (fp16 load ratio to memcpy) over the pairs, which is 1 when the storage path does not
// care. A control pair (fp16 against itself) runs first: its relative is the bench's own noise
// on the machine (control_relative in the JSON).

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/flags.h"
#include "kvtier/engine.h"

namespace kvtier::bench {
namespace {

struct Result {
  double store_gbps, load_gbps, load_layerwise_gbps, memcpy_gbps;
};

// 16 layers x 8 KV heads x 128 dim x fp16: 64 KiB per token of block.
Geometry SizeGeometry(size_t block_kib) {
  return Geometry{16, 8, 128, DType::kFloat16, static_cast<uint32_t>(block_kib / 64)};
}

Result RunSize(const Geometry& geometry, size_t total_bytes, int runs, double copy_gbps,
               std::string* device_name) {
  EngineOptions o;
  o.geometry = geometry;
  o.model_fingerprint = "bench-host";
  o.key_hash = KeyHash::kXxh3;
  o.device.choice = DeviceChoice::kEmulated;
  o.device.emulated_copy_gbps = copy_gbps;
  const size_t block = o.geometry.block_bytes();
  const size_t n = std::max<size_t>(total_bytes / block, 4);
  o.host_tier_bytes = n * block;
  auto opened = Engine::Open(o);
  if (!opened.ok()) Die(opened.status().ToString());
  Engine& e = **opened;
  *device_name = e.device().name();

  auto base = e.device().Allocate(n * block);
  if (!base.ok()) Die(base.status().ToString());
  {
    std::vector<char> fill(n * block, 7);
    auto s = e.device().CreateStream();
    if (!s.ok() || !(*s)->CopyToDevice(*base, fill.data(), fill.size()).ok() ||
        !(*s)->Synchronize().ok()) {
      Die("filling caller buffers");
    }
  }
  std::vector<DevicePtr> bufs;
  for (size_t i = 0; i < n; ++i) bufs.push_back(*base + i * block);
  std::vector<int32_t> tokens(n * o.geometry.block_tokens);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i);

  auto store = [&] {
    StoreRequest r;
    r.ns = "default";
    r.tokens = tokens;
    r.buffers = KvBuffers::Blocks(bufs);
    auto h = e.Store(r);
    if (!h.ok() || !(*h)->Wait().ok() || (*h)->blocks_moved() != n) Die("store");
  };
  // Store timing: erase between runs (not timed) so every run really copies.
  std::vector<double> st;
  for (int i = 0; i < runs; ++i) {
    if (!e.EraseNamespace("default").ok()) Die("erase");
    const double s = Now();
    store();
    st.push_back(Now() - s);
  }
  std::sort(st.begin(), st.end());
  auto m = e.Match("default", tokens);
  if (!m.ok() || m->keys.size() != n) Die("match after store");
  auto load = [&](bool layerwise) {
    LoadRequest r;
    r.ns = "default";
    r.keys = m->keys;
    r.buffers = KvBuffers::Blocks(bufs);
    r.layerwise = layerwise;
    auto h = e.Load(r);
    if (!h.ok() || !(*h)->Wait().ok()) Die("load");
  };
  load(false);  // warm
  // The ceiling is measured interleaved with the loads, over the same number of bytes, so
  // both see the same machine state.
  std::vector<char> a(n * block, 1), b(n * block, 2);
  std::memcpy(b.data(), a.data(), a.size());
  // Two ways to copy the same bytes on one thread: one memcpy of the whole buffer (glibc
  // takes its non-temporal path) and one memcpy per block. The ceiling is the faster.
  std::vector<double> lt, mt_whole, mt_blocks;
  for (int i = 0; i < runs; ++i) {
    double s = Now();
    load(false);
    lt.push_back(Now() - s);
    s = Now();
    std::memcpy(b.data(), a.data(), a.size());
    asm volatile("" : : "r"(b.data()) : "memory");
    mt_whole.push_back(Now() - s);
    s = Now();
    for (size_t k = 0; k < n; ++k) std::memcpy(b.data() + k * block, a.data() + k * block, block);
    asm volatile("" : : "r"(b.data()) : "memory");
    mt_blocks.push_back(Now() - s);
  }
  std::sort(lt.begin(), lt.end());
  std::sort(mt_whole.begin(), mt_whole.end());
  std::sort(mt_blocks.begin(), mt_blocks.end());
  const double mt = std::min(mt_whole[runs / 2], mt_blocks[runs / 2]);
  const double lwt = MedianSeconds(runs, [&] { load(true); });
  (void)e.device().Free(*base);
  const double bytes = static_cast<double>(n * block);
  return Result{bytes / st[st.size() / 2] / 1e9, bytes / lt[lt.size() / 2] / 1e9,
                bytes / lwt / 1e9, bytes / mt / 1e9};
}

// --shapes: each pair's shape and fp16 baseline, interleaved.
int Shapes(size_t total, int runs, double copy_gbps) {
  // Three rounds of (fp16, shape), alternating, so drift on the machine hits both sides;
  // each side's figures are the median over the rounds.
  constexpr int kRounds = 3;
  std::printf(
      "host tier store/load by model shape vs fp16 K/V blocks of the same bytes, "
      "%zu MiB per run, median of %d runs, %d alternating rounds\n",
      total >> 20, runs, kRounds);
  std::printf("%-24s %12s %12s %12s %12s %8s %10s\n", "shape", "block bytes", "store GB/s",
              "load GB/s", "memcpy GB/s", "ratio", "vs fp16");
  JsonLine json;
  std::string device;
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const std::vector<ShapePair> pairs = ShapePairsWithControl();
  ShapeRelatives relatives;
  for (size_t pair_index = 0; pair_index < pairs.size(); ++pair_index) {
    const ShapePair& p = pairs[pair_index];
    std::vector<double> store[2], load[2], memcpy_gbps[2], ratio[2];
    for (int round = 0; round < kRounds; ++round) {
      for (int side = 0; side < 2; ++side) {
        const Result r = RunSize(side == 0 ? p.baseline : p.shape, total, runs, copy_gbps, &device);
        const double c = copy_gbps > 0 ? std::min(copy_gbps, r.memcpy_gbps) : r.memcpy_gbps;
        store[side].push_back(r.store_gbps);
        load[side].push_back(r.load_gbps);
        memcpy_gbps[side].push_back(r.memcpy_gbps);
        ratio[side].push_back(r.load_gbps / c);
      }
    }
    const double rel = median(ratio[1]) / median(ratio[0]);
    for (int side = 0; side < 2; ++side) {
      const Geometry& g = side == 0 ? p.baseline : p.shape;
      const std::string label = side == 0 ? std::string("  fp16 K/V, same bytes") : p.name;
      std::printf("%-24s %12zu %12.2f %12.2f %12.2f %8.2f %10s\n", label.c_str(), g.block_bytes(),
                  median(store[side]), median(load[side]), median(memcpy_gbps[side]),
                  median(ratio[side]), side == 0 ? "" : absl::StrFormat("%.3f", rel).c_str());
      const std::string tag = std::string(p.name) + (side == 0 ? "_fp16" : "");
      json.Num("load_gbps_" + tag, median(load[side]))
          .Num("store_gbps_" + tag, median(store[side]))
          .Num("memcpy_gbps_" + tag, median(memcpy_gbps[side]))
          .Num("load_ratio_" + tag, median(ratio[side]));
    }
    json.Num(std::string("relative_") + p.name, rel)
        .Str(std::string("geometry_") + p.name, p.shape.ToString());
    relatives.Add(pair_index, rel);
  }
  JsonLine head;
  head.Str("bench", "host")
      .Str("mode", "shapes")
      .Num("figure", relatives.worst)
      .Str("unit", "x")
      .Num("ceiling", 1)
      .Str("ceiling_source",
           "each shape's load/memcpy ratio over the ratio of fp16 K/V blocks "
           "of the same bytes, same run; the worst pair")
      .Num("ratio", relatives.worst)
      .Num("control_relative", relatives.control)
      .Str("device", device)
      .Num("total_mib", static_cast<double>(total >> 20));
  head.Merge(json).Print();
  return 0;
}

int Main(int argc, char** argv) {
  size_t total_mib = 256;
  int runs = 7;
  double copy_gbps = 0;
  CLI::App app(
      "bench host: store (device -> host tier) and load (host tier -> device) through the "
      "engine, 64 KiB..8 MiB blocks, vs memcpy in the same run",
      "bench/run host");
  app.add_option("--total-mib", total_mib, "MiB moved per run at every block size")
      ->check(flags::AtLeast<size_t>(8))
      ->capture_default_str();
  flags::AddRuns(app, &runs);
  flags::AddCopyGbps(app, &copy_gbps,
                     "throttle the emulated link to G GB/s (a PCIe model; the ceiling becomes "
                     "that limit); 0 = unthrottled");
  bool shapes = false;
  app.add_flag("--shapes", shapes,
               "model shapes (MLA, fp8, a TP shard) against fp16 K/V blocks of the same bytes, "
               "instead of the size sweep");
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  const size_t total = total_mib << 20;
  if (shapes) return Shapes(total, runs, copy_gbps);
  std::printf("host tier store/load, %zu MiB per run, median of %d runs\n", total_mib, runs);
  std::printf("%10s %12s %12s %16s %12s %8s\n", "block", "store GB/s", "load GB/s",
              "layerwise GB/s", "memcpy GB/s", "ratio");
  JsonLine json;
  std::string device;
  double figure = 0, ceiling = 0, memcpy_gbps = 0;
  std::vector<std::pair<std::string, double>> fields;
  for (size_t kib = 64; kib <= 8192; kib *= 2) {
    const Result r = RunSize(SizeGeometry(kib), total, runs, copy_gbps, &device);
    const std::string tag = kib < 1024 ? absl::StrFormat("%dk", kib) : absl::StrFormat("%dm", kib / 1024);
    const double c = copy_gbps > 0 ? std::min(copy_gbps, r.memcpy_gbps) : r.memcpy_gbps;
    std::printf("%9s  %12.2f %12.2f %16.2f %12.2f %8.2f\n", (tag + "iB").c_str(), r.store_gbps,
                r.load_gbps, r.load_layerwise_gbps, r.memcpy_gbps, r.load_gbps / c);
    fields.push_back({"memcpy_gbps_" + tag, r.memcpy_gbps});
    fields.push_back({"load_gbps_" + tag, r.load_gbps});
    fields.push_back({"store_gbps_" + tag, r.store_gbps});
    fields.push_back({"load_layerwise_gbps_" + tag, r.load_layerwise_gbps});
    if (kib == 2048) {
      figure = r.load_gbps;
      ceiling = c;
      memcpy_gbps = r.memcpy_gbps;
    }
  }
  json.Str("bench", "host").Num("figure", figure).Str("unit", "GB/s").Num("ceiling", ceiling)
      .Str("ceiling_source", copy_gbps > 0 ? "emulated link limit (min with memcpy), same run"
                                           : "best of single-thread memcpy whole or block by "
                                             "block, same bytes, interleaved with the loads")
      .Num("ratio", figure / ceiling).Str("device", device).Num("memcpy_gbps", memcpy_gbps)
      .Num("total_mib", static_cast<double>(total_mib));
  for (const auto& [k, v] : fields) json.Num(k, v);
  json.Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
