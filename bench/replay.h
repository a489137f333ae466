// bench/replay.h — what bench stress and bench soak share: a workload trace turned into the
// engine's tokens and keys, the bytes every block holds, and the client that replays requests
// through the real engine (Match, Load or LoadToGpuTier, a byte-for-byte check, Store, Erase),
// counting what it did. Each bench keeps its own workload, tier sizes and reporting.

#ifndef KVTIER_BENCH_REPLAY_H_
#define KVTIER_BENCH_REPLAY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvtier/engine.h"
#include "workload/trace.h"

namespace kvtier::bench {

constexpr uint32_t kBlockTokens = 16;
constexpr size_t kChunk = 32;  // blocks per Load / Store call
constexpr char kNs[] = "default";

// 2 layers x 2 KV heads x 64 dim x fp16 x 16 tokens = 16 KiB blocks.
inline Geometry ReplayGeometry() { return Geometry{2, 2, 64, DType::kFloat16, kBlockTokens}; }

uint64_t Mix64(uint64_t x);

// Token ids of a request: block i's tokens depend on its block id (hash_ids[i]) only, so
// equal ids give equal blocks of tokens, and (ids being prefix-chained) equal keys exactly
// where the trace shares a prefix.
std::vector<int32_t> TokensOf(const workload::Request& r);

// The bytes a block with this key holds (tests/api/engine_test_util.h's BlockContent).
void BlockContent(const BlockKey& key, absl::Span<uint8_t> out);

// Resident set size now (statm), and its peak (VmHWM), in MiB; 0 if /proc is unavailable.
double RssMib();
double PeakRssMib();

// A directory under the system's temporary one, named `prefix` and the pid, removed (with
// what is in it) at exit. Not created here.
const std::string& TempDirRemovedAtExit(absl::string_view prefix);

// A trace prepared for the engine: tokens and keys of every request, computed once so the
// clients' timed work is the engine's.
struct ReplayTrace {
  std::vector<workload::Request> requests;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<BlockKey>> keys;
  uint64_t block_refs = 0;
  uint64_t unique_blocks = 0;
  size_t max_request_blocks = 0;
};

ReplayTrace PrepareTrace(std::vector<workload::Request> requests, const KeyHasher& hasher);

// What clients counted. Atomic, so that one set may be shared by clients and read while they
// run (bench soak's sampler), or each client may have its own (bench stress; see Add).
struct ReplayCounts {
  std::atomic<uint64_t> requests{0};            // requests taken on
  std::atomic<uint64_t> blocks{0};              // their block references
  std::atomic<uint64_t> completed_requests{0};  // requests served without an error
  std::atomic<uint64_t> completed_blocks{0};    // their block references
  std::atomic<uint64_t> matched{0};             // Match's prefix, in blocks
  std::atomic<uint64_t> loaded{0};              // of it, loaded and verified (the prefix hit)
  std::atomic<uint64_t> load_races{0};          // Loads that found a matched block gone meanwhile
  std::atomic<uint64_t> load_misses{0};         // failed Waits taken as misses (see ReplayOptions)
  std::atomic<uint64_t> gpu_loads{0};           // requests loaded through LoadToGpuTier
  std::atomic<uint64_t> gpu_fallbacks{0};       // ... that fell back to Load (GPU tier busy)
  std::atomic<uint64_t> failed_loads{0};
  std::atomic<uint64_t> wrong_byte_loads{0};  // blocks with at least one wrong byte
  std::atomic<uint64_t> failed_stores{0};
  std::atomic<uint64_t> failed_other{0};  // Match or Erase errors
  std::atomic<uint64_t> erased{0};
  std::atomic<uint64_t> calls{0};  // engine calls

  ReplayCounts() = default;
  ReplayCounts(const ReplayCounts& o) { Add(o); }
  ReplayCounts& operator=(const ReplayCounts&) = delete;
  void Add(const ReplayCounts& o);
  uint64_t failures() const {
    return failed_loads + wrong_byte_loads + failed_stores + failed_other;
  }
};

// How a client serves its requests; what the two benches do differently.
struct ReplayOptions {
  int clients = 1;              // GPU leases of all clients must fit the GPU tier together
  size_t gpu_slots = 0;         // the GPU tier's capacity in blocks
  size_t gpu_every = 0;         // every Nth request through LoadToGpuTier; 0: never
  size_t erase_every = 0;       // every Nth request, Erase its last block; 0: never
  bool record_latency = false;  // Match and load times into match_us() and load_us()
  // A Wait that says NotFound (the disk tier reclaimed a block's region between the call and
  // the read) is a load race, not a failed load: the engine said so instead of serving
  // other bytes, which is what it promises.
  bool wait_not_found_is_race = true;
  // Any failed Wait is a miss (counted in load_misses), not a failed load: a remote tier's
  // reads fail by design when a value is gone, damaged or its node is down. The chunk is
  // still checked: each of its blocks must hold the key's bytes or zeros (the engine's
  // promise for a failed read); anything else counts in wrong_byte_loads.
  bool load_errors_are_misses = false;
  // Names the first few failures on stderr after this prefix; null: silent.
  const char* report_failures_as = nullptr;
};

// One client: its own stream and kChunk device buffers. Per request:
//   1. Match the prompt (its keys must be the trace's);
//   2. load the matched prefix, every gpu_every'th request through LoadToGpuTier (leased GPU
//      slots, read back and released), the others through Load into the client's buffers;
//      every byte is compared with the key's content. A Load that finds a block gone is a
//      race, not an error: the rest of the prompt is stored;
//   3. Store the blocks past the loaded prefix (content derived from each key);
//   4. every erase_every'th request, Erase its last block.
class ReplayClient {
 public:
  ReplayClient(Engine& engine, const ReplayTrace& trace, ReplayCounts& counts,
               const ReplayOptions& options);
  ~ReplayClient();
  ReplayClient(const ReplayClient&) = delete;
  ReplayClient& operator=(const ReplayClient&) = delete;

  absl::Status Init();

  // Serves requests first, first + step, ... of the trace: once, or, given `stop`, pass after
  // pass until it is set.
  void Run(size_t first, size_t step, const std::atomic<bool>* stop = nullptr);
  // Serves request r of the trace once (a fleet's node serves the requests routed to it).
  void ServeOne(size_t r) { Serve(r, served_++); }

  const std::vector<double>& match_us() const { return match_us_; }
  // The whole prefix: Load call(s) + Wait, not the check.
  const std::vector<double>& load_us() const { return load_us_; }

 private:
  void Report(const char* what, const absl::Status& status);
  void MakeContent(absl::Span<const BlockKey> keys);
  // The leading blocks of `keys` whose bytes in `src` are the key's; the others count as
  // wrong, except all-zero blocks when zeros_are_misses.
  size_t Verify(absl::Span<const DevicePtr> src, absl::Span<const BlockKey> keys,
                bool zeros_are_misses = false);
  bool LoadThroughGpuTier(const std::vector<BlockKey>& keys, size_t hit, size_t* loaded);
  size_t LoadIntoBuffers(const std::vector<BlockKey>& keys, size_t hit);
  void Serve(size_t r, size_t local);

  Engine& e_;
  const ReplayTrace& trace_;
  ReplayCounts& c_;
  const ReplayOptions options_;
  const size_t bytes_;
  const size_t gpu_lease_max_;
  std::unique_ptr<Stream> stream_;
  std::vector<DevicePtr> bufs_;
  std::vector<uint8_t> expected_;  // kChunk blocks: content to store or to compare with
  std::vector<uint8_t> actual_;    // kChunk blocks read back
  std::vector<double> match_us_;
  std::vector<double> load_us_;
  size_t served_ = 0;  // ServeOne calls
};

// The engine options both benches start from: the replay geometry and XXH3 keys under
// `model_fingerprint`, the emulated device, the tiers sized in blocks; a disk tier (in
// dir/cache) when disk_blocks > 0.
EngineOptions ReplayEngineOptions(absl::string_view model_fingerprint, size_t gpu_blocks,
                                  size_t host_blocks, size_t disk_blocks, const std::string& dir);

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_REPLAY_H_
