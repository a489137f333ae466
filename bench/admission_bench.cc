// bench admission — which disk admission policy to ship: replays a real trace through the
// engine (host tier in front of a disk tier) and compares, per policy, the prefix hit ratio
// with the bytes written to the SSD.
//
//   bench/run admission [--trace=PATH] [--host-blocks=N] [--disk-blocks=N] [--requests=N]
//
// The trace is Mooncake's (JSONL with `hash_ids`, one id per 512-token block, chained on the
// prefix). Each trace block becomes one engine block whose tokens derive from its id, so two
// requests share engine keys exactly where they share trace ids. Per request: Match, Load
// what matched (a hit; from disk where needed), Store the rest, then Flush (standing in for
// the request's compute, so demotions land before the next request). Policies: admit_min_seen
// 1, 2 and 3. figure = the chosen default's prefix hit ratio; ceiling = the hit ratio of an
// unbounded cache on the same requests (every repeated block hits).

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "kvtier/engine.h"
#include "workload/trace.h"

namespace kvtier::bench {
namespace {

// The "hash_ids" of the trace's first `limit` requests, read by workload/trace.h's reader (a
// malformed line is named by its number).
std::vector<std::vector<int64_t>> ReadTrace(const std::string& path, size_t limit) {
  absl::StatusOr<std::vector<workload::Request>> requests = workload::ReadMooncakeTrace(path);
  if (!requests.ok()) Die(absl::StrCat(requests.status().message(), " (pass --trace=PATH)"));
  std::vector<std::vector<int64_t>> out;
  for (const workload::Request& r : *requests) {
    if (out.size() == limit) break;
    out.emplace_back(r.blocks.begin(), r.blocks.end());
  }
  return out;
}

struct Result {
  double hit_ratio = 0;        // matched blocks / requested blocks
  double disk_hit_share = 0;   // of the hits, the share that came from disk
  double disk_written_mib = 0;
  uint64_t rejected = 0;
  double seconds = 0;
};

Result Replay(const std::vector<std::vector<int64_t>>& trace, uint32_t min_seen,
              size_t host_blocks, size_t disk_blocks, const std::string& dir) {
  EngineOptions o;
  o.geometry = Geometry{2, 2, 64, DType::kFloat16, 16};  // 16 KiB blocks
  o.model_fingerprint = "bench-admission";
  o.key_hash = KeyHash::kXxh3;
  o.device.choice = DeviceChoice::kEmulated;
  o.host_tier_bytes = host_blocks * o.geometry.block_bytes();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  o.disk.directory = dir + "/cache";
  o.disk.region_bytes = 4ull << 20;
  o.disk.capacity_bytes =
      std::max<uint64_t>(2, disk_blocks * (o.geometry.block_bytes() + 4096) / o.disk.region_bytes) *
      o.disk.region_bytes;
  o.disk.admit_min_seen = min_seen;
  o.disk.staging_buffers = 128;
  auto opened = Engine::Open(o);
  if (!opened.ok()) Die(opened.status().ToString());
  Engine& e = **opened;
  const size_t bytes = o.geometry.block_bytes();
  constexpr size_t kChunk = 32;  // blocks per Store / Load call
  std::vector<DevicePtr> bufs;
  for (size_t i = 0; i < kChunk; ++i) bufs.push_back(*e.device().Allocate(bytes));

  uint64_t requested = 0, matched = 0, from_disk_before = 0;
  const double start = Now();
  for (const std::vector<int64_t>& ids : trace) {
    std::vector<int32_t> tokens(ids.size() * 16);
    for (size_t b = 0; b < ids.size(); ++b) {
      for (int j = 0; j < 16; ++j) tokens[b * 16 + j] = static_cast<int32_t>(ids[b] * 16 + j);
    }
    requested += ids.size();
    auto m = e.Match("default", tokens);
    if (!m.ok()) Die(m.status().ToString());
    size_t hit = m->keys.size();
    for (size_t first = 0; first < hit; first += kChunk) {
      const size_t n = std::min(kChunk, hit - first);
      LoadRequest r;
      r.ns = "default";
      r.keys.assign(m->keys.begin() + first, m->keys.begin() + first + n);
      r.buffers = KvBuffers::Blocks({bufs.begin(), bufs.begin() + n});
      r.layerwise = false;
      auto h = e.Load(r);
      if (!h.ok() || !(*h)->Wait().ok()) {
        hit = first;  // evicted between Match and Load: the rest is recomputed
        break;
      }
    }
    matched += hit;
    for (size_t first = hit; first < ids.size(); first += kChunk) {
      const size_t n = std::min(kChunk, ids.size() - first);
      StoreRequest r;
      r.ns = "default";
      r.tokens = absl::MakeSpan(tokens).subspan(0, (first + n) * 16);
      r.first_block = first;
      r.buffers = KvBuffers::Blocks({bufs.begin(), bufs.begin() + n});
      auto h = e.Store(r);
      if (!h.ok() || !(*h)->Wait().ok()) Die("store");
    }
    // Stands in for the request's compute: demotions to disk land before the next request,
    // so what reaches the disk is decided by the admission policy, not by the replay's speed.
    if (!e.Flush().ok()) Die("flush");
  }
  if (!e.Flush().ok()) Die("flush");
  Result res;
  res.seconds = Now() - start;
  const EngineStats st = e.Stats();
  const TierStats& disk = st.tiers[static_cast<int>(TierKind::kDisk)];
  from_disk_before = disk.hits;
  res.hit_ratio = static_cast<double>(matched) / requested;
  res.disk_hit_share = matched ? static_cast<double>(from_disk_before) / matched : 0;
  res.disk_written_mib = disk.bytes_in / 1048576.0;
  res.rejected = disk.admissions_rejected;
  for (DevicePtr p : bufs) (void)e.device().Free(p);
  opened->reset();
  std::filesystem::remove_all(dir);
  return res;
}

int Main(int argc, char** argv) {
  std::string trace_path = "../shared/traces/mooncake_synthetic_trace.jsonl";
  size_t host_blocks = 1500, disk_blocks = 10000, requests = 1000000;
  CLI::App app(
      "bench admission: the disk admission policies (admit_min_seen 1, 2, 3) on a replayed "
      "trace, prefix hit ratio against SSD bytes written",
      "bench/run admission");
  flags::AddTrace(app, &trace_path);
  flags::AddBlocks(app, "--host-blocks", &host_blocks, 64, "host tier capacity, blocks");
  flags::AddBlocks(app, "--disk-blocks", &disk_blocks, 64, "disk tier capacity, blocks");
  app.add_option("--requests", requests, "replay at most N requests of the trace")
      ->check(flags::AtLeast<size_t>(1))
      ->capture_default_str();
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  const auto trace = ReadTrace(trace_path, requests);
  // Ceiling: an unbounded cache hits every block it has seen before.
  uint64_t total = 0, repeat = 0;
  {
    absl::flat_hash_set<int64_t> seen;
    for (const auto& ids : trace) {
      total += ids.size();
      // Prefix semantics: a block hits only if every block before it hit too.
      size_t prefix = 0;
      while (prefix < ids.size() && seen.contains(ids[prefix])) ++prefix;
      repeat += prefix;
      for (int64_t id : ids) seen.insert(id);
    }
  }
  const double ceiling = static_cast<double>(repeat) / total;
  std::printf("trace %s: %zu requests, %lu blocks; host tier %zu blocks, disk tier ~%zu blocks\n",
              trace_path.c_str(), trace.size(), static_cast<unsigned long>(total), host_blocks,
              disk_blocks);
  std::printf("%10s %10s %16s %16s %10s %8s\n", "min_seen", "hit ratio", "hits from disk",
              "disk MiB written", "rejected", "seconds");
  JsonLine fields;
  double figure = 0;
  for (uint32_t min_seen : {1u, 2u, 3u}) {
    const Result r = Replay(trace, min_seen, host_blocks, disk_blocks, "/tmp/kvtier-bench-admission");
    std::printf("%10u %10.4f %16.3f %16.1f %10lu %8.1f\n", min_seen, r.hit_ratio, r.disk_hit_share,
                r.disk_written_mib, static_cast<unsigned long>(r.rejected), r.seconds);
    const std::string tag = absl::StrCat("min_seen_", min_seen);
    fields.Num(tag + "_hit_ratio", r.hit_ratio).Num(tag + "_disk_mib_written", r.disk_written_mib)
        .Num(tag + "_disk_hit_share", r.disk_hit_share);
    if (min_seen == 1) figure = r.hit_ratio;
  }
  JsonLine()
      .Str("bench", "admission").Num("figure", figure).Str("unit", "prefix hit ratio (min_seen 1)")
      .Num("ceiling", ceiling).Str("ceiling_source", "unbounded cache on the same requests")
      .Num("ratio", figure / ceiling).Merge(fields).Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
