// bench/replay.cc — see replay.h.

#include "bench/replay.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "bench/bench_util.h"

namespace kvtier::bench {

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::vector<int32_t> TokensOf(const workload::Request& r) {
  std::vector<int32_t> t(r.blocks.size() * kBlockTokens);
  for (size_t b = 0; b < r.blocks.size(); ++b) {
    const uint64_t base = Mix64(r.blocks[b]);
    for (uint32_t j = 0; j < kBlockTokens; ++j) {
      t[b * kBlockTokens + j] = static_cast<int32_t>(Mix64(base + j));
    }
  }
  return t;
}

// The test's SplitMix(state): Mix64 of the state, then the state advances by the same step.
void BlockContent(const BlockKey& key, absl::Span<uint8_t> out) {
  uint64_t state = key.hi ^ (key.lo * 3);
  for (size_t i = 0; i < out.size(); i += 8) {
    const uint64_t z = Mix64(state);
    state += 0x9e3779b97f4a7c15ULL;
    std::memcpy(out.data() + i, &z, std::min<size_t>(8, out.size() - i));
  }
}

double RssMib() {
  std::ifstream in("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1048576.0;
}

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

namespace {
std::string* temp_dir = nullptr;
void RemoveTempDir() {
  if (temp_dir != nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(*temp_dir, ec);
  }
}
}  // namespace

const std::string& TempDirRemovedAtExit(absl::string_view prefix) {
  if (temp_dir == nullptr) {
    temp_dir = new std::string(
        (std::filesystem::temp_directory_path() / absl::StrCat(prefix, getpid())).string());
    std::atexit(RemoveTempDir);
  }
  return *temp_dir;
}

ReplayTrace PrepareTrace(std::vector<workload::Request> requests, const KeyHasher& hasher) {
  ReplayTrace p;
  p.requests = std::move(requests);
  absl::flat_hash_set<uint64_t> unique;
  for (const workload::Request& r : p.requests) {
    p.tokens.push_back(TokensOf(r));
    p.keys.push_back(hasher.Keys(p.tokens.back(), kBlockTokens, ""));
    p.block_refs += r.blocks.size();
    p.max_request_blocks = std::max(p.max_request_blocks, r.blocks.size());
    unique.insert(r.blocks.begin(), r.blocks.end());
  }
  p.unique_blocks = unique.size();
  return p;
}

void ReplayCounts::Add(const ReplayCounts& o) {
  requests += o.requests;
  blocks += o.blocks;
  completed_requests += o.completed_requests;
  completed_blocks += o.completed_blocks;
  matched += o.matched;
  loaded += o.loaded;
  load_races += o.load_races;
  load_misses += o.load_misses;
  gpu_loads += o.gpu_loads;
  gpu_fallbacks += o.gpu_fallbacks;
  failed_loads += o.failed_loads;
  wrong_byte_loads += o.wrong_byte_loads;
  failed_stores += o.failed_stores;
  failed_other += o.failed_other;
  erased += o.erased;
  calls += o.calls;
}

namespace {
constexpr std::memory_order kRelaxed = std::memory_order_relaxed;
void Bump(std::atomic<uint64_t>& n, uint64_t by = 1) { n.fetch_add(by, kRelaxed); }
}  // namespace

ReplayClient::ReplayClient(Engine& engine, const ReplayTrace& trace, ReplayCounts& counts,
                           const ReplayOptions& options)
    : e_(engine),
      trace_(trace),
      c_(counts),
      options_(options),
      bytes_(engine.options().geometry.block_bytes()),
      gpu_lease_max_(options.gpu_slots / (2 * static_cast<size_t>(options.clients))),
      expected_(kChunk * bytes_),
      actual_(kChunk * bytes_) {}

ReplayClient::~ReplayClient() {
  for (DevicePtr p : bufs_) (void)e_.device().Free(p);
}

absl::Status ReplayClient::Init() {
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

void ReplayClient::Run(size_t first, size_t step, const std::atomic<bool>* stop) {
  auto stopped = [stop] { return stop != nullptr && stop->load(kRelaxed); };
  size_t local = 0;
  do {
    for (size_t r = first; r < trace_.keys.size() && !stopped(); r += step) Serve(r, local++);
  } while (stop != nullptr && !stopped());
}

// Says what the first few failures were, on stderr (the counters say how many).
void ReplayClient::Report(const char* what, const absl::Status& status) {
  static std::atomic<int> reported{0};
  if (options_.report_failures_as != nullptr && reported.fetch_add(1, kRelaxed) < 5) {
    std::fprintf(stderr, "%s: %s failed: %s\n", options_.report_failures_as, what,
                 status.ToString().c_str());
  }
}

// Fills expected_'s first n blocks with the content of keys[0, n).
void ReplayClient::MakeContent(absl::Span<const BlockKey> keys) {
  for (size_t i = 0; i < keys.size(); ++i) {
    BlockContent(keys[i], absl::MakeSpan(expected_).subspan(i * bytes_, bytes_));
  }
}

// Compares the blocks at src[i] with keys[i]'s content (at most kChunk of them, copied back
// with one synchronization: a sync per block would measure the stream's hand-offs, not the
// engine). Counts the wrong blocks; returns the number of leading good ones.
size_t ReplayClient::Verify(absl::Span<const DevicePtr> src, absl::Span<const BlockKey> keys,
                            bool zeros_are_misses) {
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
    const uint8_t* got = actual_.data() + i * bytes_;
    if (copied && std::memcmp(expected_.data() + i * bytes_, got, bytes_) == 0) {
      good += prefix;
    } else if (copied && zeros_are_misses &&
               std::all_of(got, got + bytes_, [](uint8_t b) { return b == 0; })) {
      prefix = false;
    } else {
      Bump(c_.wrong_byte_loads);
      prefix = false;
    }
  }
  return good;
}

// Loads keys[0, hit) through leased GPU slots. Returns false when the caller should use Load
// instead (the GPU tier could not take them, or a block went away); `*loaded` is the verified
// prefix otherwise.
bool ReplayClient::LoadThroughGpuTier(const std::vector<BlockKey>& keys, size_t hit,
                                      size_t* loaded) {
  Bump(c_.calls);
  const double start = Now();
  absl::StatusOr<std::unique_ptr<TransferHandle>> h =
      e_.LoadToGpuTier(kNs, absl::MakeConstSpan(keys).subspan(0, hit), /*layerwise=*/false);
  if (!h.ok()) {
    if (h.status().code() == absl::StatusCode::kResourceExhausted ||
        h.status().code() == absl::StatusCode::kNotFound) {
      Bump(c_.gpu_fallbacks);
      return false;
    }
    Report("LoadToGpuTier", h.status());
    Bump(c_.failed_loads);
    *loaded = 0;
    return true;
  }
  Bump(c_.gpu_loads);
  size_t good = 0;
  if (absl::Status w = (*h)->Wait();
      w.code() == absl::StatusCode::kNotFound && options_.wait_not_found_is_race) {
    Bump(c_.load_races);  // as in LoadIntoBuffers
  } else if (!w.ok()) {
    Report("LoadToGpuTier's Wait", w);
    Bump(c_.failed_loads);
  } else {
    if (options_.record_latency) load_us_.push_back((Now() - start) * 1e6);
    absl::Span<const DevicePtr> slots = (*h)->slots();
    if (slots.size() != hit) {
      Report("LoadToGpuTier's Wait", absl::InternalError("wrong number of slots"));
      Bump(c_.failed_loads);
    } else {
      for (size_t first = 0; first < hit; first += kChunk) {
        const size_t n = std::min(kChunk, hit - first);
        good += Verify(slots.subspan(first, n), absl::MakeConstSpan(keys).subspan(first, n));
      }
    }
    Bump(c_.calls);  // the Release
  }
  (void)(*h)->Release();
  *loaded = good == hit ? hit : 0;
  return true;
}

// Loads keys[0, hit) into the client's buffers, a chunk per call; returns the verified prefix
// (shorter than hit after a race or an error).
size_t ReplayClient::LoadIntoBuffers(const std::vector<BlockKey>& keys, size_t hit) {
  double seconds = 0;
  size_t done = 0;
  for (size_t first = 0; first < hit; first += kChunk) {
    const size_t n = std::min(kChunk, hit - first);
    LoadRequest req;
    req.ns = kNs;
    req.keys.assign(keys.begin() + first, keys.begin() + first + n);
    req.buffers = KvBuffers::Blocks({bufs_.begin(), bufs_.begin() + n});
    req.layerwise = false;
    Bump(c_.calls);
    const double start = Now();
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = e_.Load(req);
    if (!h.ok()) {
      if (h.status().code() == absl::StatusCode::kNotFound) {
        Bump(c_.load_races);
      } else {
        Report("Load", h.status());
        Bump(c_.failed_loads);
      }
      break;
    }
    if (absl::Status w = (*h)->Wait(); !w.ok()) {
      if (options_.load_errors_are_misses) {
        Bump(c_.load_misses);
        done = first + Verify(absl::MakeConstSpan(bufs_).subspan(0, n), req.keys,
                              /*zeros_are_misses=*/true);
      } else if (w.code() == absl::StatusCode::kNotFound && options_.wait_not_found_is_race) {
        // The disk tier reclaimed the block's region between Load and the read: a miss (the
        // destination is not the block's), the same race as above.
        Bump(c_.load_races);
      } else {
        Report("Load's Wait", w);
        Bump(c_.failed_loads);
      }
      break;
    }
    seconds += Now() - start;
    const size_t good = Verify(absl::MakeConstSpan(bufs_).subspan(0, n), req.keys);
    done = first + good;
    if (good < n) break;
  }
  // A race at once loaded nothing.
  if (options_.record_latency && done > 0) load_us_.push_back(seconds * 1e6);
  return done;
}

void ReplayClient::Serve(size_t r, size_t local) {
  const std::vector<int32_t>& tokens = trace_.tokens[r];
  const std::vector<BlockKey>& keys = trace_.keys[r];
  Bump(c_.requests);
  Bump(c_.blocks, keys.size());

  Bump(c_.calls);
  const double start = Now();
  absl::StatusOr<MatchResult> m = e_.Match(kNs, tokens);
  if (options_.record_latency) match_us_.push_back((Now() - start) * 1e6);
  if (!m.ok()) {
    Report("Match", m.status());
    Bump(c_.failed_other);
    return;
  }
  const size_t hit = m->keys.size();
  Bump(c_.matched, hit);
  // Match's keys are the engine's own chain over the same tokens: they must be ours.
  if (!std::equal(m->keys.begin(), m->keys.end(), keys.begin())) {
    Report("Match", absl::InternalError("Match returned other keys"));
    Bump(c_.failed_other);
    return;
  }

  size_t loaded = 0;
  if (hit > 0) {
    const bool via_gpu = options_.gpu_slots > 0 && options_.gpu_every > 0 &&
                         local % options_.gpu_every == 0 && hit <= gpu_lease_max_;
    if (!via_gpu || !LoadThroughGpuTier(keys, hit, &loaded)) {
      loaded = LoadIntoBuffers(keys, hit);
    }
  }
  Bump(c_.loaded, loaded);

  // Store the rest, as the inference engine would after computing it.
  for (size_t first = loaded; first < keys.size(); first += kChunk) {
    const size_t n = std::min(kChunk, keys.size() - first);
    MakeContent(absl::MakeConstSpan(keys).subspan(first, n));
    bool copied = true;
    for (size_t i = 0; i < n && copied; ++i) {
      copied = stream_->CopyToDevice(bufs_[i], expected_.data() + i * bytes_, bytes_).ok();
    }
    if (!stream_->Synchronize().ok() || !copied) {
      Bump(c_.failed_stores);
      return;
    }
    StoreRequest req;
    req.ns = kNs;
    req.tokens = absl::MakeConstSpan(tokens).subspan(0, (first + n) * kBlockTokens);
    req.first_block = first;
    req.buffers = KvBuffers::Blocks({bufs_.begin(), bufs_.begin() + n});
    Bump(c_.calls);
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = e_.Store(req);
    if (absl::Status st = h.ok() ? (*h)->Wait() : h.status(); !st.ok()) {
      Report("Store", st);
      Bump(c_.failed_stores);
      return;
    }
  }
  Bump(c_.completed_blocks, keys.size());
  Bump(c_.completed_requests);

  if (options_.erase_every > 0 && local % options_.erase_every == options_.erase_every - 1 &&
      !keys.empty()) {
    Bump(c_.calls);
    absl::StatusOr<size_t> n = e_.Erase(kNs, absl::MakeConstSpan(keys).subspan(keys.size() - 1));
    if (n.ok()) {
      Bump(c_.erased, *n);
    } else {
      Bump(c_.failed_other);
    }
  }
}

EngineOptions ReplayEngineOptions(absl::string_view model_fingerprint, size_t gpu_blocks,
                                  size_t host_blocks, size_t disk_blocks, const std::string& dir) {
  EngineOptions o;
  o.geometry = ReplayGeometry();
  o.model_fingerprint = std::string(model_fingerprint);
  o.key_hash = KeyHash::kXxh3;
  o.device.choice = DeviceChoice::kEmulated;
  o.device.emulated_copy_gbps = 0;  // unthrottled: the engine's own cost, not a PCIe model
  o.gpu_tier_bytes = gpu_blocks * o.geometry.block_bytes();
  o.host_tier_bytes = host_blocks * o.geometry.block_bytes();
  if (disk_blocks > 0) {
    o.disk.directory = dir + "/cache";
    o.disk.region_bytes = 4ull << 20;
    // Records carry a header and are 4 KiB aligned: budget a block plus 4 KiB each.
    o.disk.capacity_bytes = std::max<uint64_t>(2, disk_blocks * (o.geometry.block_bytes() + 4096) /
                                                      o.disk.region_bytes) *
                            o.disk.region_bytes;
    o.disk.staging_buffers = 128;
  }
  return o;
}

}  // namespace kvtier::bench
