// bench stress — a workload through the real engine from concurrent clients, every byte
// checked: how many block operations per second the engine sustains while moving real bytes
// through its GPU, host and disk tiers, next to the metadata-only simulator making the same
// kind of decisions (the upper bound for them).
//
//   bench/run stress [--sim] [--threads=N] [--workload=mooncake|chat|rag|agent|scan]
//                    [--trace=PATH] [--requests=N] [--gpu-blocks=N] [--host-blocks=N]
//                    [--disk-blocks=N] [--no-disk] [--erase-every=N] [--gpu-every=N]
//                    [--check-sessions=N] [--seed=N]
//
// Trace to engine: block i of a request gets block_tokens token ids derived from its
// hash_ids[i] (a hash of id and position in the block), so prefix-chained hash ids become
// prefix-chained kvtier keys (the engine chains keys itself). A block's bytes are derived
// from its key (as tests/api/engine_test_util.h's BlockContent does), so any mix-up of
// blocks, tiers or offsets shows as a byte mismatch.
//
// Byte mode (the default). One engine on the emulated device, unthrottled: small geometry
// (2 layers x 2 KV heads x 64 dim x fp16 x 16 tokens = 16 KiB blocks), a GPU tier, a host
// tier, a disk tier in a temporary directory removed at exit. --threads clients take the
// requests round-robin (client t gets requests t, t+N, ...); per request:
//   1. Match the prompt;
//   2. load the matched prefix: every --gpu-every'th request through LoadToGpuTier (leased
//      GPU slots, read back and released), the others through Load into the client's own
//      device buffers; either way every byte is compared with the key's content. A Load that
//      finds a block gone (another client's Store evicted it after our Match) is a race, not
//      an error: the rest of the prompt is stored, as a serving engine would recompute it;
//   3. Store the blocks past the loaded prefix (content derived from each key);
//   4. every --erase-every'th request, Erase its last block.
// Failed loads (an error other than that race, or a failed Wait) and loads with a wrong byte
// must be 0: the bench exits 1 otherwise (after its JSON line).
//
// "Ops" are block operations in both modes: one block of a request looked up and then
// loaded or stored (byte mode), or looked up and then hit or inserted (simulator). That
// makes the simulator's rate a like-for-like ceiling for the engine's.
//
// --sim: metadata only. The engine's default host-tier policy in workload::Simulate (through
// EnginePolicyAdapter) at the host tier's capacity, single-threaded (the policies are not
// thread-safe; the engine runs them under one lock). Its ceiling is the same replay with no
// policy at all (an unbounded hash set: lookups and inserts only).
//
// Both modes also run a consistency check on a small generated chat trace (--check-sessions
// sessions; 0 skips it): the engine with a host tier only (no GPU tier, no disk, one client,
// no erases) against a metadata replay of exactly the engine's request handling (see
// EngineModelReplay), which must agree on prefix hits, insertions and evictions — a
// disagreement fails the bench like a wrong byte — and against workload::Simulate, whose
// request model differs slightly (reported, with the reason). The engine's tiers cannot be
// compared with one simulated cache directly: the GPU tier holds copies of host blocks
// (inclusive) and the disk tier takes host evictions, so hits there are not a policy's.

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "bench/bench_util.h"
#include "kvtier/engine.h"
#include "workload/engine_policy_adapter.h"
#include "workload/generators.h"
#include "workload/simulator.h"
#include "workload/trace.h"

namespace kvtier::bench {
namespace {

using workload::Request;

constexpr uint32_t kBlockTokens = 16;
constexpr size_t kChunk = 32;  // blocks per Load / Store call
constexpr char kNs[] = "default";

Geometry BenchGeometry() { return Geometry{2, 2, 64, DType::kFloat16, kBlockTokens}; }

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Token ids of a request: block i's tokens depend on hash_ids[i] only, so equal ids give
// equal blocks of tokens, and (ids being prefix-chained) equal keys exactly where the trace
// shares a prefix.
std::vector<int32_t> TokensOf(const Request& r) {
  std::vector<int32_t> t(r.blocks.size() * kBlockTokens);
  for (size_t b = 0; b < r.blocks.size(); ++b) {
    const uint64_t base = Mix64(r.blocks[b]);
    for (uint32_t j = 0; j < kBlockTokens; ++j) {
      t[b * kBlockTokens + j] = static_cast<int32_t>(Mix64(base + j));
    }
  }
  return t;
}

// The bytes a block with this key holds (tests/api/engine_test_util.h's BlockContent).
void BlockContent(const BlockKey& key, absl::Span<uint8_t> out) {
  uint64_t state = key.hi ^ (key.lo * 3);
  for (size_t i = 0; i < out.size(); i += 8) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, std::min<size_t>(8, out.size() - i));
  }
}

// ------------------------------------------------------------------------------ workload


// A trace prepared for the engine: tokens and keys of every request, computed once so the
// clients' timed work is the engine's.
struct Prepared {
  std::vector<Request> requests;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<BlockKey>> keys;
  uint64_t block_refs = 0;
  uint64_t unique_blocks = 0;
  size_t max_request_blocks = 0;
};

Prepared Prepare(std::vector<Request> requests, const KeyHasher& hasher) {
  Prepared p;
  p.requests = std::move(requests);
  absl::flat_hash_set<uint64_t> unique;
  for (const Request& r : p.requests) {
    p.tokens.push_back(TokensOf(r));
    p.keys.push_back(hasher.Keys(p.tokens.back(), kBlockTokens, ""));
    p.block_refs += r.blocks.size();
    p.max_request_blocks = std::max(p.max_request_blocks, r.blocks.size());
    unique.insert(r.blocks.begin(), r.blocks.end());
  }
  p.unique_blocks = unique.size();
  return p;
}

// ------------------------------------------------------------------------------ byte mode

struct EngineConfig {
  int threads = 2;
  size_t gpu_blocks = 0;  // 0: no GPU tier
  size_t host_blocks = 0;
  size_t disk_blocks = 0;  // 0: no disk tier
  size_t erase_every = 0;  // 0: never
  size_t gpu_every = 0;    // 0: never through LoadToGpuTier
  std::string dir;         // for the disk tier
};

// What one client counted.
struct ClientCounts {
  uint64_t requests = 0;
  uint64_t blocks = 0;          // block references processed
  uint64_t matched = 0;         // Match's prefix, in blocks
  uint64_t loaded = 0;          // of it, loaded and verified (the prefix hit)
  uint64_t load_races = 0;      // Loads that found a matched block gone (evicted meanwhile)
  uint64_t gpu_loads = 0;       // requests loaded through LoadToGpuTier
  uint64_t gpu_fallbacks = 0;   // ... that fell back to Load (GPU tier busy)
  uint64_t failed_loads = 0;
  uint64_t wrong_byte_loads = 0;  // blocks with at least one wrong byte
  uint64_t failed_stores = 0;
  uint64_t failed_other = 0;      // Match or Erase errors
  uint64_t erased = 0;
  uint64_t calls = 0;             // engine calls
  std::vector<double> match_us;
  std::vector<double> load_us;    // the whole prefix: Load call(s) + Wait, not the check

  void Add(const ClientCounts& o) {
    requests += o.requests;
    blocks += o.blocks;
    matched += o.matched;
    loaded += o.loaded;
    load_races += o.load_races;
    gpu_loads += o.gpu_loads;
    gpu_fallbacks += o.gpu_fallbacks;
    failed_loads += o.failed_loads;
    wrong_byte_loads += o.wrong_byte_loads;
    failed_stores += o.failed_stores;
    failed_other += o.failed_other;
    erased += o.erased;
    calls += o.calls;
    match_us.insert(match_us.end(), o.match_us.begin(), o.match_us.end());
    load_us.insert(load_us.end(), o.load_us.begin(), o.load_us.end());
  }
};

struct EngineRun {
  ClientCounts counts;
  EngineStats stats;
  double seconds = 0;
  size_t gpu_slots = 0;
  size_t host_slots = 0;
};

class Client {
 public:
  Client(Engine& engine, const Prepared& trace, const EngineConfig& config, size_t gpu_slots)
      : e_(engine),
        trace_(trace),
        config_(config),
        bytes_(engine.options().geometry.block_bytes()),
        // Leases of several clients must fit the GPU tier together.
        gpu_lease_max_(gpu_slots / (2 * static_cast<size_t>(config.threads))),
        expected_(kChunk * bytes_),
        actual_(kChunk * bytes_) {}

  absl::Status Init() {
    absl::StatusOr<std::unique_ptr<Stream>> s = e_.device().CreateStream();
    if (!s.ok()) return s.status();
    stream_ = std::move(*s);
    for (size_t i = 0; i < kChunk; ++i) {
      absl::StatusOr<DevicePtr> p = e_.device().Allocate(bytes_);
      if (!p.ok()) return p.status();
      bufs_.push_back(*p);
    }
    return absl::OkStatus();
  }
  ~Client() {
    for (DevicePtr p : bufs_) (void)e_.device().Free(p);
  }

  void Run(size_t first, size_t step) {
    size_t local = 0;
    for (size_t r = first; r < trace_.requests.size(); r += step, ++local) Serve(r, local);
  }

  ClientCounts& counts() { return c_; }

 private:
  // Fills expected_'s first n blocks with the content of keys[0, n).
  void MakeContent(absl::Span<const BlockKey> keys) {
    for (size_t i = 0; i < keys.size(); ++i) {
      BlockContent(keys[i], absl::MakeSpan(expected_).subspan(i * bytes_, bytes_));
    }
  }

  // Compares the blocks at src[i] with keys[i]'s content (at most kChunk of them, copied back
  // with one synchronization: a sync per block would measure the stream's hand-offs, not the
  // engine). Counts the wrong blocks; returns the number of leading good ones.
  size_t Verify(absl::Span<const DevicePtr> src, absl::Span<const BlockKey> keys) {
    const size_t n = keys.size();
    MakeContent(keys);
    std::fill(actual_.begin(), actual_.begin() + n * bytes_, 0xEE);
    bool copied = true;
    for (size_t i = 0; i < n && copied; ++i) {
      copied = stream_->CopyToHost(actual_.data() + i * bytes_, src[i], bytes_).ok();
    }
    copied = stream_->Synchronize().ok() && copied;
    size_t good = 0;
    bool prefix = true;
    for (size_t i = 0; i < n; ++i) {
      if (copied &&
          std::memcmp(expected_.data() + i * bytes_, actual_.data() + i * bytes_, bytes_) == 0) {
        good += prefix;
      } else {
        ++c_.wrong_byte_loads;
        prefix = false;
      }
    }
    return good;
  }

  // Loads keys[0, hit) through leased GPU slots. Returns false when the caller should use
  // Load instead (the GPU tier could not take them, or a block went away); `*loaded` is the
  // verified prefix otherwise.
  bool LoadThroughGpuTier(const std::vector<BlockKey>& keys, size_t hit, size_t* loaded) {
    ++c_.calls;
    const double start = Now();
    absl::StatusOr<std::unique_ptr<TransferHandle>> h =
        e_.LoadToGpuTier(kNs, absl::MakeConstSpan(keys).subspan(0, hit), /*layerwise=*/false);
    if (!h.ok()) {
      if (h.status().code() != absl::StatusCode::kResourceExhausted &&
          h.status().code() != absl::StatusCode::kNotFound) {
        ++c_.failed_loads;
        *loaded = 0;
        return true;
      }
      ++c_.gpu_fallbacks;
      return false;
    }
    ++c_.gpu_loads;
    if (!(*h)->Wait().ok()) {
      ++c_.failed_loads;
      (void)(*h)->Release();
      *loaded = 0;
      return true;
    }
    c_.load_us.push_back((Now() - start) * 1e6);
    absl::Span<const DevicePtr> slots = (*h)->slots();
    size_t good = 0;
    if (slots.size() != hit) {
      ++c_.failed_loads;
    } else {
      for (size_t first = 0; first < hit; first += kChunk) {
        const size_t n = std::min(kChunk, hit - first);
        good += Verify(slots.subspan(first, n), absl::MakeConstSpan(keys).subspan(first, n));
      }
    }
    ++c_.calls;
    (void)(*h)->Release();
    *loaded = good == hit ? hit : 0;
    return true;
  }

  // Loads keys[0, hit) into the client's buffers, a chunk per call; returns the verified
  // prefix (shorter than hit after a race or an error).
  size_t LoadIntoBuffers(const std::vector<BlockKey>& keys, size_t hit) {
    double seconds = 0;
    size_t done = 0;
    for (size_t first = 0; first < hit; first += kChunk) {
      const size_t n = std::min(kChunk, hit - first);
      LoadRequest req;
      req.ns = kNs;
      req.keys.assign(keys.begin() + first, keys.begin() + first + n);
      req.buffers = KvBuffers::Blocks({bufs_.begin(), bufs_.begin() + n});
      req.layerwise = false;
      ++c_.calls;
      const double start = Now();
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = e_.Load(req);
      if (!h.ok()) {
        if (h.status().code() == absl::StatusCode::kNotFound) {
          ++c_.load_races;
        } else {
          ++c_.failed_loads;
        }
        break;
      }
      if (!(*h)->Wait().ok()) {
        ++c_.failed_loads;
        break;
      }
      seconds += Now() - start;
      const size_t good = Verify(absl::MakeConstSpan(bufs_).subspan(0, n), req.keys);
      done = first + good;
      if (good < n) break;
    }
    if (done > 0) c_.load_us.push_back(seconds * 1e6);  // a race at once loaded nothing
    return done;
  }

  void Serve(size_t r, size_t local) {
    const std::vector<int32_t>& tokens = trace_.tokens[r];
    const std::vector<BlockKey>& keys = trace_.keys[r];
    ++c_.requests;
    c_.blocks += keys.size();

    ++c_.calls;
    const double start = Now();
    absl::StatusOr<MatchResult> m = e_.Match(kNs, tokens);
    c_.match_us.push_back((Now() - start) * 1e6);
    if (!m.ok()) {
      ++c_.failed_other;
      return;
    }
    size_t hit = m->keys.size();
    c_.matched += hit;
    // Match's keys are the engine's own chain over the same tokens: they must be ours.
    if (!std::equal(m->keys.begin(), m->keys.end(), keys.begin())) {
      ++c_.failed_other;
      return;
    }

    size_t loaded = 0;
    if (hit > 0) {
      const bool via_gpu = config_.gpu_blocks > 0 && config_.gpu_every > 0 &&
                           local % config_.gpu_every == 0 && hit <= gpu_lease_max_;
      if (!via_gpu || !LoadThroughGpuTier(keys, hit, &loaded)) {
        loaded = LoadIntoBuffers(keys, hit);
      }
    }
    c_.loaded += loaded;

    // Store the rest, as the inference engine would after computing it.
    for (size_t first = loaded; first < keys.size(); first += kChunk) {
      const size_t n = std::min(kChunk, keys.size() - first);
      MakeContent(absl::MakeConstSpan(keys).subspan(first, n));
      bool copied = true;
      for (size_t i = 0; i < n && copied; ++i) {
        copied = stream_->CopyToDevice(bufs_[i], expected_.data() + i * bytes_, bytes_).ok();
      }
      if (!stream_->Synchronize().ok() || !copied) {
        ++c_.failed_stores;
        return;
      }
      StoreRequest req;
      req.ns = kNs;
      req.tokens = absl::MakeConstSpan(tokens).subspan(0, (first + n) * kBlockTokens);
      req.first_block = first;
      req.buffers = KvBuffers::Blocks({bufs_.begin(), bufs_.begin() + n});
      ++c_.calls;
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = e_.Store(req);
      if (!h.ok() || !(*h)->Wait().ok()) {
        ++c_.failed_stores;
        return;
      }
    }

    if (config_.erase_every > 0 && local % config_.erase_every == config_.erase_every - 1 &&
        !keys.empty()) {
      ++c_.calls;
      absl::StatusOr<size_t> n = e_.Erase(kNs, absl::MakeConstSpan(keys).subspan(keys.size() - 1));
      if (n.ok()) {
        c_.erased += *n;
      } else {
        ++c_.failed_other;
      }
    }
  }

  Engine& e_;
  const Prepared& trace_;
  const EngineConfig& config_;
  const size_t bytes_;
  const size_t gpu_lease_max_;
  std::unique_ptr<Stream> stream_;
  std::vector<DevicePtr> bufs_;
  std::vector<uint8_t> expected_;  // kChunk blocks: content to store or to compare with
  std::vector<uint8_t> actual_;    // kChunk blocks read back
  ClientCounts c_;
};

EngineOptions BenchOptions(const EngineConfig& config) {
  EngineOptions o;
  o.geometry = BenchGeometry();
  o.model_fingerprint = "bench-stress";
  o.key_hash = KeyHash::kXxh3;
  o.device.choice = DeviceChoice::kEmulated;
  o.device.emulated_copy_gbps = 0;  // unthrottled: the engine's own cost, not a PCIe model
  o.gpu_tier_bytes = config.gpu_blocks * o.geometry.block_bytes();
  o.host_tier_bytes = config.host_blocks * o.geometry.block_bytes();
  if (config.disk_blocks > 0) {
    o.disk.directory = config.dir + "/cache";
    o.disk.region_bytes = 4ull << 20;
    // Records carry a header and are 4 KiB aligned: budget a block plus 4 KiB each.
    o.disk.capacity_bytes =
        std::max<uint64_t>(2, config.disk_blocks * (o.geometry.block_bytes() + 4096) /
                                  o.disk.region_bytes) *
        o.disk.region_bytes;
    o.disk.staging_buffers = 128;
  }
  return o;
}

absl::StatusOr<EngineRun> RunEngine(const Prepared& trace, const EngineConfig& config) {
  if (config.disk_blocks > 0) {
    std::filesystem::remove_all(config.dir);
    std::filesystem::create_directories(config.dir);
  }
  absl::StatusOr<std::unique_ptr<Engine>> opened = Engine::Open(BenchOptions(config));
  if (!opened.ok()) return opened.status();
  Engine& e = **opened;
  EngineRun run;
  {
    const EngineStats st = e.Stats();
    run.gpu_slots = st.tiers[static_cast<int>(TierKind::kGpu)].capacity_blocks;
    run.host_slots = st.tiers[static_cast<int>(TierKind::kHost)].capacity_blocks;
  }
  std::vector<std::unique_ptr<Client>> clients;
  for (int t = 0; t < config.threads; ++t) {
    clients.push_back(std::make_unique<Client>(e, trace, config, run.gpu_slots));
    if (absl::Status s = clients.back()->Init(); !s.ok()) return s;
  }
  const double start = Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < config.threads; ++t) {
    threads.emplace_back([&, t] { clients[t]->Run(t, config.threads); });
  }
  for (std::thread& t : threads) t.join();
  // Background demotions to disk are part of the work the replay caused.
  if (absl::Status s = e.Flush(); !s.ok()) return s;
  run.seconds = Now() - start;
  for (const auto& c : clients) run.counts.Add(c->counts());
  run.stats = e.Stats();
  clients.clear();
  opened->reset();
  if (config.disk_blocks > 0) std::filesystem::remove_all(config.dir);
  return run;
}

// ------------------------------------------------------------------------------ metadata

// The engine's request handling, replayed on metadata with the same policy code: Match is
// the longest prefix of present blocks; Load accesses those, in order; Store inserts each
// later block that is absent when its turn comes (a present one is skipped untouched, as
// the engine deduplicates it), evicting the policy's victim while the tier is full. This is
// what the engine does with one client, a host tier only and every copy waited for (nothing
// pinned or in flight when a victim is picked), so the two must agree exactly.
struct ModelResult {
  uint64_t prefix_hits = 0;
  uint64_t insertions = 0;
  uint64_t evictions = 0;
};

absl::StatusOr<ModelResult> EngineModelReplay(const std::vector<Request>& requests,
                                              size_t capacity, const std::string& policy) {
  absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
      workload::EnginePolicyAdapter::Create(policy, capacity);
  if (!a.ok()) return a.status();
  absl::flat_hash_set<uint64_t> resident;
  ModelResult res;
  for (const Request& r : requests) {
    size_t p = 0;
    while (p < r.blocks.size() && resident.contains(r.blocks[p])) ++p;
    for (size_t i = 0; i < p; ++i) (*a)->Access(r.blocks[i]);
    res.prefix_hits += p;
    for (size_t i = p; i < r.blocks.size(); ++i) {
      if (resident.contains(r.blocks[i])) continue;
      while (resident.size() >= capacity) {
        std::optional<uint64_t> v = (*a)->Victim();
        if (!v.has_value()) return absl::InternalError("policy offered no victim");
        resident.erase(*v);
        (*a)->Remove(*v);
        ++res.evictions;
      }
      resident.insert(r.blocks[i]);
      (*a)->Insert(r.blocks[i]);
      ++res.insertions;
    }
  }
  return res;
}

struct SimRun {
  workload::SimResult result;
  double ops_per_s = 0;       // block references per second, best of the repetitions
  double bare_ops_per_s = 0;  // the same replay without a policy
};

// workload::Simulate with the adapter, repeated for at least `min_seconds` (a pass over the
// Mooncake trace takes milliseconds); the best pass counts, as for any micro-benchmark.
absl::StatusOr<SimRun> RunSim(const std::vector<Request>& requests, size_t capacity,
                              const std::string& policy, double min_seconds) {
  SimRun run;
  uint64_t refs = 0;
  for (const Request& r : requests) refs += r.blocks.size();
  double best = 1e30;
  for (double total = 0; total < min_seconds;) {
    absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
        workload::EnginePolicyAdapter::Create(policy, capacity);
    if (!a.ok()) return a.status();
    const double start = Now();
    absl::StatusOr<workload::SimResult> r = workload::Simulate(requests, capacity, **a);
    const double s = Now() - start;
    if (!r.ok()) return r.status();
    run.result = *r;
    best = std::min(best, s);
    total += s;
  }
  run.ops_per_s = refs / best;
  // The ceiling of a metadata replay: the same lookups and inserts into a hash set, with no
  // policy and no eviction.
  best = 1e30;
  for (double total = 0; total < min_seconds;) {
    const double start = Now();
    absl::flat_hash_set<uint64_t> present;
    uint64_t hits = 0;
    for (const Request& r : requests) {
      for (uint64_t id : r.blocks) hits += present.contains(id);
      present.insert(r.blocks.begin(), r.blocks.end());
    }
    const double s = Now() - start;
    asm volatile("" : : "r"(hits) : "memory");
    best = std::min(best, s);
    total += s;
  }
  run.bare_ops_per_s = refs / best;
  return run;
}

// ------------------------------------------------------------------------------ reporting

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

// Peak resident set size (VmHWM), in MiB; 0 if /proc is unavailable.
double PeakRssMib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view s(line);
    if (absl::ConsumePrefix(&s, "VmHWM:")) {
      s = absl::StripAsciiWhitespace(s);
      absl::ConsumeSuffix(&s, "kB");
      uint64_t kb = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(s), &kb)) return kb / 1024.0;
    }
  }
  return 0;
}

// The temporary directory of the disk tier, removed at any exit.
std::string* temp_dir = nullptr;
void RemoveTempDir() {
  if (temp_dir != nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(*temp_dir, ec);
  }
}

int Main(int argc, char** argv) {
  std::string trace_path =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  std::string workload_name = "mooncake";
  bool sim = false, no_disk = false;
  size_t requests_limit = 0, gpu_blocks = 0, host_blocks = 0, disk_blocks = 0;
  size_t check_sessions = 200;
  int threads = 2;
  size_t erase_every = 64, gpu_every = 4;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    absl::string_view s(argv[i]);
    bool ok = true;
    if (s == "--sim") {
      sim = true;
    } else if (s == "--no-disk") {
      no_disk = true;
    } else if (absl::ConsumePrefix(&s, "--trace=")) {
      trace_path = std::string(s);
    } else if (absl::ConsumePrefix(&s, "--workload=")) {
      workload_name = std::string(s);
      ok = workload_name == "mooncake" || workload::GenerateBenchWorkload(workload_name, 1).ok();
    } else if (absl::ConsumePrefix(&s, "--threads=")) {
      ok = absl::SimpleAtoi(s, &threads) && threads >= 1 && threads <= 256;
    } else if (absl::ConsumePrefix(&s, "--requests=")) {
      ok = absl::SimpleAtoi(s, &requests_limit) && requests_limit > 0;
    } else if (absl::ConsumePrefix(&s, "--gpu-blocks=")) {
      ok = absl::SimpleAtoi(s, &gpu_blocks);
    } else if (absl::ConsumePrefix(&s, "--host-blocks=")) {
      ok = absl::SimpleAtoi(s, &host_blocks) && host_blocks > 0;
    } else if (absl::ConsumePrefix(&s, "--disk-blocks=")) {
      ok = absl::SimpleAtoi(s, &disk_blocks) && disk_blocks > 0;
    } else if (absl::ConsumePrefix(&s, "--erase-every=")) {
      ok = absl::SimpleAtoi(s, &erase_every);
    } else if (absl::ConsumePrefix(&s, "--gpu-every=")) {
      ok = absl::SimpleAtoi(s, &gpu_every);
    } else if (absl::ConsumePrefix(&s, "--check-sessions=")) {
      ok = absl::SimpleAtoi(s, &check_sessions);
    } else if (absl::ConsumePrefix(&s, "--seed=")) {
      ok = absl::SimpleAtoi(s, &seed);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "bad argument '%s'\nusage: bench/run stress [--sim] [--threads=N] "
                   "[--workload=mooncake|chat|rag|agent|scan] [--trace=PATH] [--requests=N] "
                   "[--gpu-blocks=N] [--host-blocks=N] [--disk-blocks=N] [--no-disk] "
                   "[--erase-every=N] [--gpu-every=N] [--check-sessions=N] [--seed=N]\n",
                   argv[i]);
      return 2;
    }
  }

  // The workload; a missing Mooncake trace falls back to a generated chat trace.
  std::string trace_label;
  absl::StatusOr<std::vector<Request>> loaded =
      workload::LoadBenchWorkload(workload_name, trace_path, seed, &trace_label);
  if (!loaded.ok()) Die(loaded.status().ToString());
  if (workload_name == "mooncake" && !std::filesystem::exists(trace_path)) workload_name = "chat";
  std::vector<Request> requests = std::move(*loaded);
  if (requests_limit > 0 && requests.size() > requests_limit) requests.resize(requests_limit);

  const Geometry geometry = BenchGeometry();
  const EngineOptions defaults;
  const KeyHasher hasher(KeyHash::kXxh3, kNs, "bench-stress", geometry.Fingerprint());
  const Prepared trace = Prepare(std::move(requests), hasher);
  // Tier sizes, as shares of the footprint: the host tier is the cache proper (1/16 of it),
  // the GPU tier a quarter of that, the disk four times it. The host tier must also hold
  // every client's largest request pinned at once, with room to spare.
  const size_t min_host = 2 * static_cast<size_t>(threads) * trace.max_request_blocks + 64;
  if (host_blocks == 0) host_blocks = std::max<size_t>(trace.unique_blocks / 16, min_host);
  if (gpu_blocks == 0) gpu_blocks = std::max<size_t>(host_blocks / 4, 64);
  if (disk_blocks == 0) disk_blocks = 4 * host_blocks;
  if (no_disk) disk_blocks = 0;
  std::printf("trace: %s\n  %zu requests, %lu block refs, %lu distinct blocks, longest %zu\n",
              trace_label.c_str(), trace.requests.size(),
              static_cast<unsigned long>(trace.block_refs),
              static_cast<unsigned long>(trace.unique_blocks), trace.max_request_blocks);

  temp_dir = new std::string(
      (std::filesystem::temp_directory_path() / absl::StrCat("kvtier-bench-stress-", getpid()))
          .string());
  std::atexit(RemoveTempDir);

  // The simulator at the host tier's capacity: --sim's figure, byte mode's ceiling.
  const std::string policy = defaults.host_eviction;
  absl::StatusOr<SimRun> simrun = RunSim(trace.requests, host_blocks, policy, 0.5);
  if (!simrun.ok()) Die(simrun.status().ToString());
  std::printf("sim (%s, %zu blocks): %.2f M block ops/s (no policy: %.2f M), prefix hit %.4f, "
              "block hit %.4f\n",
              policy.c_str(), host_blocks, simrun->ops_per_s / 1e6, simrun->bare_ops_per_s / 1e6,
              simrun->result.prefix_hit_ratio(), simrun->result.block_hit_ratio());

  // Consistency: one client, host tier only, against the metadata replays.
  // The check runs on a small generated chat trace, whatever the workload: its prefixes are
  // reused within a few requests, so a small trace exercises hits and evictions alike (the
  // Mooncake trace's reuse comes late: its first 600 requests hit 1.4% at 1/8 of their
  // footprint).
  JsonLine check;
  bool check_equal = true;
  if (check_sessions > 0) {
    workload::ChatParams chat;
    chat.seed = seed;
    chat.num_sessions = static_cast<uint32_t>(check_sessions);
    absl::StatusOr<std::vector<Request>> chat_trace = workload::GenerateChat(chat);
    if (!chat_trace.ok()) Die(chat_trace.status().ToString());
    const Prepared small = Prepare(std::move(*chat_trace), hasher);
    const size_t check_n = small.requests.size();
    // Small enough to evict, larger than any request (a request longer than the tier would
    // have to evict its own blocks still being written, which the engine cannot).
    const size_t cap =
        std::max<size_t>(small.unique_blocks / 8, small.max_request_blocks + kChunk);
    EngineConfig cc;
    cc.threads = 1;
    cc.host_blocks = cap;
    absl::StatusOr<EngineRun> er = RunEngine(small, cc);
    if (!er.ok()) Die("check run: " + er.status().ToString());
    absl::StatusOr<ModelResult> model = EngineModelReplay(small.requests, cap, policy);
    if (!model.ok()) Die(model.status().ToString());
    absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
        workload::EnginePolicyAdapter::Create(policy, cap);
    if (!a.ok()) Die(a.status().ToString());
    absl::StatusOr<workload::SimResult> simulated = workload::Simulate(small.requests, cap, **a);
    if (!simulated.ok()) Die(simulated.status().ToString());
    const TierStats& host = er->stats.tiers[static_cast<int>(TierKind::kHost)];
    const double refs = static_cast<double>(small.block_refs);
    const double engine_ratio = er->counts.loaded / refs;
    const double model_ratio = model->prefix_hits / refs;
    const double simulate_ratio = simulated->prefix_hit_ratio();
    check_equal = er->counts.loaded == model->prefix_hits &&
                  er->stats.stored_blocks == model->insertions &&
                  host.evictions == model->evictions;
    const bool simulate_same_hits = simulated->prefix_hit_blocks == er->counts.loaded;
    const bool simulate_equal = simulate_same_hits &&
                                simulated->insertions == er->stats.stored_blocks &&
                                simulated->evictions == host.evictions;
    std::printf("check (generated chat, %zu requests, host tier %zu blocks, 1 client): prefix "
                "hit engine %.6f, engine-model replay %.6f (%s), workload::Simulate %.6f (%s); "
                "insertions %lu / %lu / %lu, evictions %lu / %lu / %lu\n",
                check_n, cap, engine_ratio, model_ratio, check_equal ? "equal" : "DIFFERENT",
                simulate_ratio, simulate_equal ? "equal" : "different",
                static_cast<unsigned long>(er->stats.stored_blocks),
                static_cast<unsigned long>(model->insertions),
                static_cast<unsigned long>(simulated->insertions),
                static_cast<unsigned long>(host.evictions),
                static_cast<unsigned long>(model->evictions),
                static_cast<unsigned long>(simulated->evictions));
    check.Str("check_trace", absl::StrCat("generated chat, ", check_sessions, " sessions"))
        .Num("check_requests", static_cast<double>(check_n))
        .Num("check_capacity_blocks", static_cast<double>(cap))
        .Num("check_prefix_hit_engine", engine_ratio)
        .Num("check_prefix_hit_engine_model", model_ratio)
        .Num("check_prefix_hit_simulate", simulate_ratio)
        .Num("check_engine_equals_model", check_equal ? 1 : 0)
        .Num("check_simulate_same_prefix_hits", simulate_same_hits ? 1 : 0)
        .Num("check_engine_equals_simulate", simulate_equal ? 1 : 0)
        .Num("check_simulate_minus_engine", simulate_ratio - engine_ratio)
        .Str("check_note",
             absl::StrCat(
                 "host tier only (GPU tier 0, no disk), 1 client, every copy waited for: the "
                 "engine is compared in prefix hits, insertions and evictions with a metadata "
                 "replay of its own request handling over the same policy code (must be equal) "
                 "and with workload::Simulate (",
                 simulate_equal ? "equal here"
                 : simulate_same_hits
                     ? absl::StrCat("same prefix hits here; insertions differ by ",
                                    static_cast<int64_t>(er->stats.stored_blocks) -
                                        static_cast<int64_t>(simulated->insertions))
                     : "different here",
                 "), whose request model differs from the engine's in two corner cases: it "
                 "also accesses blocks present after a request's first miss (the engine's "
                 "Match stops at the first miss and Store skips present blocks untouched), "
                 "and it takes presence before the request's inserts (the engine re-stores a "
                 "block that an earlier insert of the same request evicted). The full engine "
                 "is not one cache: its GPU tier holds copies of host blocks and its disk "
                 "tier takes host evictions"));
    if (er->counts.failed_loads + er->counts.wrong_byte_loads + er->counts.failed_stores +
            er->counts.failed_other > 0) {
      check_equal = false;
    }
  }

  if (sim) {
    JsonLine()
        .Str("bench", "stress").Num("figure", simrun->ops_per_s)
        .Str("unit", "simulated block ops/s (metadata only, 1 thread)")
        .Num("ceiling", simrun->bare_ops_per_s)
        .Str("ceiling_source", "the same replay with no policy: hash-set lookups and inserts only")
        .Num("ratio", simrun->ops_per_s / simrun->bare_ops_per_s)
        .Str("mode", "sim").Str("policy", policy).Str("trace", trace_label)
        .Num("capacity_blocks", static_cast<double>(host_blocks))
        .Num("sim_prefix_hit", simrun->result.prefix_hit_ratio())
        .Num("sim_block_hit", simrun->result.block_hit_ratio())
        .Num("target_ops_per_s", 1e6)
        .Num("peak_rss_mib", PeakRssMib()).Merge(check).Print();
    return check_equal ? 0 : 1;
  }

  // Byte mode: every tier, concurrent clients.
  EngineConfig config;
  config.threads = threads;
  config.gpu_blocks = gpu_blocks;
  config.host_blocks = host_blocks;
  config.disk_blocks = disk_blocks;
  config.erase_every = erase_every;
  config.gpu_every = gpu_every;
  config.dir = *temp_dir;
  absl::StatusOr<EngineRun> run = RunEngine(trace, config);
  if (!run.ok()) Die(run.status().ToString());
  const ClientCounts& c = run->counts;
  const EngineStats& st = run->stats;
  const double ops = c.blocks / run->seconds;
  const double refs = static_cast<double>(c.blocks);
  uint64_t bytes_moved = 0, evictions = 0, demotions = 0;
  for (const TierStats& t : st.tiers) {
    bytes_moved += t.bytes_in + t.bytes_out;
    evictions += t.evictions;
    demotions += t.demotions;
  }
  const TierStats& disk = st.tiers[static_cast<int>(TierKind::kDisk)];
  const uint64_t failures = c.failed_loads + c.wrong_byte_loads;
  const uint64_t other_failures = c.failed_stores + c.failed_other;
  std::printf("engine: %d clients, GPU %zu / host %zu / disk %s blocks of %zu KiB\n", threads,
              run->gpu_slots, run->host_slots,
              disk_blocks > 0 ? absl::StrCat("~", disk_blocks).c_str() : "no",
              geometry.block_bytes() / 1024);
  std::printf("  %.0f block ops/s (%.0f requests/s, %.0f engine calls/s) over %.2f s\n", ops,
              c.requests / run->seconds, c.calls / run->seconds, run->seconds);
  std::printf("  prefix hit %.4f (matched %.4f; %lu load races), hits by tier: GPU %.4f host "
              "%.4f disk %.4f\n",
              c.loaded / refs, c.matched / refs, static_cast<unsigned long>(c.load_races),
              st.tiers[0].hits / refs, st.tiers[1].hits / refs, st.tiers[2].hits / refs);
  std::printf("  Match p50 %.1f us p99 %.1f us; Load p50 %.1f us p99 %.1f us\n",
              Percentile(c.match_us, 0.5), Percentile(c.match_us, 0.99),
              Percentile(c.load_us, 0.5), Percentile(c.load_us, 0.99));
  std::printf("  %.1f MiB moved, %lu evictions, %lu demotions, %lu disk admissions rejected, "
              "%lu erased, peak RSS %.0f MiB\n",
              bytes_moved / 1048576.0, static_cast<unsigned long>(evictions),
              static_cast<unsigned long>(demotions),
              static_cast<unsigned long>(disk.admissions_rejected),
              static_cast<unsigned long>(c.erased), PeakRssMib());
  std::printf("  failed loads %lu, wrong-byte blocks %lu, failed stores %lu, other errors %lu\n",
              static_cast<unsigned long>(c.failed_loads),
              static_cast<unsigned long>(c.wrong_byte_loads),
              static_cast<unsigned long>(c.failed_stores),
              static_cast<unsigned long>(c.failed_other));

  JsonLine()
      .Str("bench", "stress").Num("figure", ops)
      .Str("unit", absl::StrCat("block ops/s through the engine, ", threads,
                                threads == 1 ? " client" : " clients", ", every byte verified"))
      .Num("ceiling", simrun->ops_per_s)
      .Str("ceiling_source", absl::StrCat("metadata-only simulator (", policy,
                                          ", host-tier capacity, 1 thread) in the same run"))
      .Num("ratio", ops / simrun->ops_per_s)
      .Str("mode", "bytes").Str("policy", policy).Str("trace", trace_label)
      .Num("threads", threads)
      .Num("requests", static_cast<double>(c.requests))
      .Num("block_refs", refs)
      .Num("seconds", run->seconds)
      .Num("requests_per_s", c.requests / run->seconds)
      .Num("calls_per_s", c.calls / run->seconds)
      .Num("gpu_blocks", static_cast<double>(run->gpu_slots))
      .Num("host_blocks", static_cast<double>(run->host_slots))
      .Num("disk_blocks", static_cast<double>(disk_blocks))
      .Num("failed_loads", static_cast<double>(c.failed_loads))
      .Num("wrong_byte_loads", static_cast<double>(c.wrong_byte_loads))
      .Num("failed_stores", static_cast<double>(c.failed_stores))
      .Num("other_errors", static_cast<double>(c.failed_other))
      .Num("load_races", static_cast<double>(c.load_races))
      .Num("gpu_tier_loads", static_cast<double>(c.gpu_loads))
      .Num("gpu_tier_fallbacks", static_cast<double>(c.gpu_fallbacks))
      .Num("prefix_hit_token_ratio", c.loaded / refs)
      .Num("matched_token_ratio", c.matched / refs)
      .Num("hit_ratio_gpu", st.tiers[0].hits / refs)
      .Num("hit_ratio_host", st.tiers[1].hits / refs)
      .Num("hit_ratio_disk", st.tiers[2].hits / refs)
      .Num("sim_prefix_hit", simrun->result.prefix_hit_ratio())
      .Num("sim_block_hit", simrun->result.block_hit_ratio())
      .Num("sim_ops_per_s", simrun->ops_per_s)
      .Num("match_p50_us", Percentile(c.match_us, 0.5))
      .Num("match_p99_us", Percentile(c.match_us, 0.99))
      .Num("load_p50_us", Percentile(c.load_us, 0.5))
      .Num("load_p99_us", Percentile(c.load_us, 0.99))
      .Num("bytes_moved_mib", bytes_moved / 1048576.0)
      .Num("disk_written_mib", disk.bytes_in / 1048576.0)
      .Num("evictions", static_cast<double>(evictions))
      .Num("demotions", static_cast<double>(demotions))
      .Num("admissions_rejected", static_cast<double>(disk.admissions_rejected))
      .Num("store_rejected_blocks", static_cast<double>(st.rejected_blocks))
      .Num("erased_blocks", static_cast<double>(c.erased))
      .Num("peak_rss_mib", PeakRssMib())
      .Merge(check).Print();
  return failures == 0 && other_failures == 0 && check_equal ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
