// bench restart — how long Engine::Open takes on a cache directory holding N blocks, and how
// many it recovers.
//
//   bench/run restart [--blocks=100000] [--dir=PATH] [--runs=3]
//
// The directory is filled through the disk tier (small 4 KiB blocks, so 100,000 fit in under
// 1 GiB), then reopened `runs` times. The ceiling is the least any recovery must do: open the
// same RocksDB index and iterate every entry, timed in the same run. ratio = scan / reopen.

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "bench/bench_util.h"
#include "common/flags.h"
#include "engine/options.h"
#include "kvtier/engine.h"
#include "rocksdb/db.h"
#include "tiers/disk_tier.h"

namespace kvtier::bench {
namespace {

int Main(int argc, char** argv) {
  size_t blocks = 100000;
  std::string dir = "/tmp/kvtier-bench-restart";
  int runs = 3;
  CLI::App app("bench restart: reopen a cache directory of N blocks, vs a bare scan of its index",
               "bench/run restart");
  app.add_option("--blocks", blocks, "blocks in the directory")
      ->check(flags::AtLeast<size_t>(1))
      ->capture_default_str();
  flags::AddDir(app, &dir, "the cache directory (emptied first)");
  flags::AddRuns(app, &runs);
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  const Geometry g{1, 1, 64, DType::kFloat16, 16};  // 4 KiB blocks, 8 KiB records
  const uint64_t region = 64ull << 20;
  const uint64_t per_region = region / RecordSize(g.block_bytes());
  const uint64_t regions = (blocks + per_region - 1) / per_region + 2;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  DiskOptions disk;
  disk.directory = dir + "/cache";
  disk.region_bytes = region;
  disk.capacity_bytes = regions * region;
  disk.staging_buffers = 64;

  // Fill.
  double start = Now();
  {
    absl::StatusOr<DiskTierOptions> o = MakeDiskTierOptions(disk, g);
    if (!o.ok()) Die(o.status().ToString());
    auto tier = DiskTier::Open(*o, g, [](const BlockKey&, const std::string&, RecordId) {}, nullptr);
    if (!tier.ok()) Die(tier.status().ToString());
    std::vector<char> block(g.block_bytes(), 'k');
    for (size_t i = 0; i < blocks; ++i) {
      absl::StatusOr<RecordId> id =
          (*tier)->Write(BlockKey{i + 1, 0x5eed}, "default", block.data(), [](absl::Status s) {
            if (!s.ok()) Die(s.ToString());
          });
      if (!id.ok()) {  // staging busy: let writes land, then retry
        (*tier)->Drain();
        --i;
      }
    }
    (*tier)->Drain();
  }
  const double fill_s = Now() - start;

  // Ceiling: a bare scan of the index.
  std::vector<double> scans, opens;
  size_t recovered = 0;
  for (int r = 0; r < runs; ++r) {
    start = Now();
    {
      rocksdb::DB* db = nullptr;
      rocksdb::Options ro;
      if (!rocksdb::DB::OpenForReadOnly(ro, disk.directory + "/index", &db).ok()) Die("scan open");
      std::unique_ptr<rocksdb::DB> owned(db);
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
      size_t n = 0;
      for (it->SeekToFirst(); it->Valid(); it->Next()) n += it->value().size() > 0;
      if (n < blocks) Die("index holds fewer entries than blocks written");
    }
    scans.push_back(Now() - start);

    EngineOptions eo;
    eo.geometry = g;
    eo.model_fingerprint = "bench-restart";
    eo.device.choice = DeviceChoice::kEmulated;
    eo.host_tier_bytes = 64 * g.block_bytes();
    eo.disk = disk;
    start = Now();
    auto engine = Engine::Open(eo);
    if (!engine.ok()) Die(engine.status().ToString());
    opens.push_back(Now() - start);
    recovered = (*engine)->Stats().tiers[static_cast<int>(TierKind::kDisk)].used_blocks;
  }
  std::sort(scans.begin(), scans.end());
  std::sort(opens.begin(), opens.end());
  const double open_s = opens[opens.size() / 2];
  const double scan_s = scans[scans.size() / 2];
  std::printf("filled %zu blocks in %.2f s; reopen (median of %d): %.3f s, %zu blocks recovered; "
              "bare index scan %.3f s\n",
              blocks, fill_s, runs, open_s, recovered, scan_s);
  JsonLine()
      .Str("bench", "restart").Num("figure", open_s).Str("unit", "s").Num("ceiling", scan_s)
      .Str("ceiling_source", "RocksDB read-only open + full iteration of the same index, same run")
      .Num("ratio", scan_s / open_s).Num("blocks", static_cast<double>(blocks))
      .Num("recovered", static_cast<double>(recovered))
      .Num("recovered_per_s", recovered / open_s).Print();
  std::filesystem::remove_all(dir);
  return recovered == blocks ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
