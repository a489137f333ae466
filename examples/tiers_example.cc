// kvtier_tiers_example — stores and loads KV blocks through the GPU and host tiers, the way an
// inference engine would across a few chat turns, and prints what happened at each step.
//
// Every block's bytes are derived from its key, and every load is checked byte for byte: the
// example exits non-zero if anything comes back wrong. It runs on a GPU when one works and on
// the emulated device otherwise.
//
//   kvtier_tiers_example [--device=auto|cuda|emulated] [--copy-gbps=N] [--hash=sha256|xxh3]

#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "kvtier/engine.h"

namespace {

using namespace kvtier;  // NOLINT: a small example program

struct Args {
  DeviceChoice device = DeviceChoice::kAuto;
  double copy_gbps = 16.0;  // emulated PCIe-like link
  KeyHash hash = KeyHash::kSha256;
};

// The flags, on CLI11 (header-only), with the public API's names for devices and key hashes.
// Returns the exit code when the program should stop: 0 after --help, 2 for a bad argument.
std::optional<int> ParseArgs(int argc, char** argv, Args* a) {
  CLI::App app("Stores and loads KV blocks through the GPU and host tiers over a few chat turns",
               "kvtier_tiers_example");
  // A value check by one of kvtier's Parse functions, with its message on failure.
  auto accepted_by = [](auto parse, const char* names) {
    return CLI::Validator(
        [parse](std::string& v) -> std::string {
          auto parsed = parse(v);
          return parsed.ok() ? std::string() : std::string(parsed.status().message());
        },
        names);
  };
  app.add_option_function<std::string>(
         "--device", [a](const std::string& v) { a->device = *ParseDeviceChoice(v); },
         "the device (auto: CUDA when a GPU works)")
      ->check(accepted_by(ParseDeviceChoice, "auto|cuda|emulated"))
      ->default_str(DeviceChoiceName(a->device));
  app.add_option("--copy-gbps", a->copy_gbps,
                 "emulated host<->device bandwidth in GB/s, 0 = unthrottled")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option_function<std::string>(
         "--hash", [a](const std::string& v) { a->hash = *ParseKeyHash(v); }, "block key hash")
      ->check(accepted_by(ParseKeyHash, "sha256|xxh3"))
      ->default_str(KeyHashName(a->hash));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return std::nullopt;
}

std::vector<uint8_t> Content(const BlockKey& key, size_t bytes) {
  std::vector<uint8_t> out(bytes);
  uint64_t x = key.hi ^ (key.lo * 3);
  for (size_t i = 0; i < bytes; i += 8) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, std::min<size_t>(8, bytes - i));
  }
  return out;
}

std::vector<int32_t> Tokens(int32_t seed, size_t n) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = seed * 7919 + static_cast<int32_t>(i % 30000);
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

#define CHECK_OK(expr)                                                                        \
  do {                                                                                        \
    const absl::Status _s = (expr);                                                           \
    if (!_s.ok()) {                                                                           \
      std::fprintf(stderr, "FAILED: %s: %s\n", #expr, _s.ToString().c_str());                \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

class Example {
 public:
  explicit Example(std::unique_ptr<Engine> engine)
      : engine_(std::move(engine)), g_(engine_->options().geometry) {
    auto s = dev().CreateStream();
    CHECK_OK(s.status());
    stream_ = std::move(*s);
    // The "inference engine's" own KV pages: 16 blocks of device memory.
    for (int i = 0; i < 16; ++i) {
      auto p = dev().Allocate(g_.block_bytes());
      CHECK_OK(p.status());
      pages_.push_back(*p);
    }
  }
  ~Example() {
    if (engine_ != nullptr) Close();
  }

  Device& dev() { return engine_->device(); }
  void Flush() { CHECK_OK(engine_->Flush()); }
  // Frees the caller's pages and closes the engine (before its directory is removed).
  void Close() {
    for (DevicePtr p : pages_) (void)dev().Free(p);
    pages_.clear();
    stream_.reset();
    engine_.reset();
  }

  // One request: match the prompt, load the cached prefix, "compute" and store the rest.
  void Request(const char* name, absl::string_view ns, const std::vector<int32_t>& prompt) {
    const size_t n = prompt.size() / g_.block_tokens;
    auto m = engine_->Match(ns, prompt);
    CHECK_OK(m.status());
    const size_t hit = m->keys.size();
    size_t gpu = 0;
    for (TierKind t : m->tiers) gpu += t == TierKind::kGpu;
    size_t disk = 0;
    for (TierKind t : m->tiers) disk += t == TierKind::kDisk;
    std::printf("%-26s %3zu blocks, %3zu cached (%zu GPU, %zu host, %zu disk)", name, n, hit, gpu,
                hit - gpu - disk, disk);
    if (hit > 0) {
      LoadRequest r;
      r.ns = ns;
      r.keys = m->keys;
      r.buffers = KvBuffers::Blocks({pages_.begin(), pages_.begin() + hit});
      auto h = engine_->Load(r);
      CHECK_OK(h.status());
      // Attention on layer l waits for layer l only: a stream wait, the host runs on.
      for (uint32_t l = 0; l < g_.num_layers; ++l) CHECK_OK((*h)->WaitLayer(l, *stream_));
      CHECK_OK((*h)->Wait());
      for (size_t i = 0; i < hit; ++i) Verify(pages_[i], m->keys[i]);
    }
    // Prefill the rest: write each new block's KV into a page, then store it.
    if (hit < n) {
      KeyHasher hasher(engine_->options().key_hash, ns, engine_->options().model_fingerprint,
                       g_.Fingerprint());
      const std::vector<BlockKey> keys = hasher.Keys(prompt, g_.block_tokens, "");
      std::vector<DevicePtr> bufs;
      for (size_t i = hit; i < n; ++i) {
        const std::vector<uint8_t> c = Content(keys[i], g_.block_bytes());
        DevicePtr page = pages_[i % pages_.size()];
        CHECK_OK(stream_->CopyToDevice(page, c.data(), c.size()));
        CHECK_OK(stream_->Synchronize());
        bufs.push_back(page);
        if (bufs.size() == pages_.size() || i + 1 == n) {
          StoreRequest r;
          r.ns = ns;
          r.tokens = absl::MakeSpan(prompt).subspan(0, (i + 1) * g_.block_tokens);
          r.first_block = i + 1 - bufs.size();
          r.buffers = KvBuffers::Blocks(bufs);
          auto h = engine_->Store(r);
          CHECK_OK(h.status());
          CHECK_OK((*h)->Wait());  // pages are reused right away
          stored_ += (*h)->blocks_moved();
          bufs.clear();
        }
      }
    }
    std::printf(", %3zu computed and stored\n", n - hit);
  }

  void LeaseAndPrefetch(absl::string_view ns, const std::vector<int32_t>& prompt) {
    auto m = engine_->Match(ns, prompt);
    CHECK_OK(m.status());
    auto lease = engine_->LoadToGpuTier(ns, m->keys);
    CHECK_OK(lease.status());
    CHECK_OK((*lease)->Wait());
    for (size_t i = 0; i < m->keys.size(); ++i) Verify((*lease)->slots()[i], m->keys[i]);
    std::printf("%-26s %3zu blocks leased in managed GPU slots (%zu promoted), bytes verified\n",
                "lease system prompt", m->keys.size(), (*lease)->blocks_moved());
    CHECK_OK((*lease)->Release());
  }

  void Verify(DevicePtr where, const BlockKey& key) {
    std::vector<uint8_t> got(g_.block_bytes());
    CHECK_OK(stream_->CopyToHost(got.data(), where, got.size()));
    CHECK_OK(stream_->Synchronize());
    if (got != Content(key, g_.block_bytes())) {
      std::fprintf(stderr, "FAILED: block %s came back with wrong bytes\n", key.ToHex().c_str());
      std::exit(1);
    }
    ++verified_;
  }

  void PrintSummary() {
    const EngineStats st = engine_->Stats();
    std::printf("\n%-6s %9s %6s %6s %7s %9s %9s %9s %10s\n", "tier", "capacity", "used", "hits",
                "evicted", "demoted", "promoted", "MiB in", "MiB out");
    for (int t = 0; t < kNumTiers; ++t) {
      const TierStats& ts = st.tiers[t];
      std::printf("%-6s %9zu %6zu %6llu %7llu %9llu %9llu %9.1f %10.1f\n",
                  TierKindName(static_cast<TierKind>(t)), ts.capacity_blocks, ts.used_blocks,
                  static_cast<unsigned long long>(ts.hits),
                  static_cast<unsigned long long>(ts.evictions),
                  static_cast<unsigned long long>(ts.demotions),
                  static_cast<unsigned long long>(ts.promotions), ts.bytes_in / 1048576.0,
                  ts.bytes_out / 1048576.0);
    }
    std::printf("\n%-10s %7s %6s %6s %6s\n", "namespace", "blocks", "gpu", "host", "disk");
    for (const NamespaceStats& ns : st.namespaces) {
      std::printf("%-10s %7zu %6zu %6zu %6zu\n", ns.name.c_str(), ns.blocks,
                  ns.blocks_per_tier[0], ns.blocks_per_tier[1], ns.blocks_per_tier[2]);
    }
    std::printf("\nstored %llu blocks (%llu deduplicated), loaded %llu, %zu loads verified byte "
                "for byte\n",
                static_cast<unsigned long long>(st.stored_blocks),
                static_cast<unsigned long long>(st.deduplicated_blocks),
                static_cast<unsigned long long>(st.loaded_blocks), verified_);
  }

 private:
  std::unique_ptr<Engine> engine_;
  Geometry g_;
  std::unique_ptr<Stream> stream_;
  std::vector<DevicePtr> pages_;
  size_t stored_ = 0;
  size_t verified_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // interleave cleanly with log lines
  Args args;
  if (std::optional<int> exit_code = ParseArgs(argc, argv, &args)) return *exit_code;
  EngineOptions o;
  // A small Llama-style model: 8 layers, 4 KV heads of 64, fp16, 16-token blocks (128 KiB).
  o.geometry = Geometry{8, 4, 64, DType::kFloat16, 16};
  o.model_fingerprint = "kvtier-example-llama@1";
  o.key_hash = args.hash;
  o.device.choice = args.device;
  o.device.emulated_copy_gbps = args.copy_gbps;
  o.gpu_tier_bytes = 8 * o.geometry.block_bytes();
  o.host_tier_bytes = 24 * o.geometry.block_bytes();
  o.namespaces = {"alice", "bob"};
  // A disk tier in a fresh temporary directory (removed at the end): blocks the host tier
  // evicts go there once they have been seen twice (the default admission policy).
  char dir_template[] = "/tmp/kvtier-example-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string dir = dir_template;
  o.disk.directory = dir + "/cache";
  o.disk.region_bytes = 1 << 20;
  o.disk.capacity_bytes = 64ull << 20;
  auto engine = Engine::Open(o);
  if (!engine.ok()) {
    std::fprintf(stderr, "cannot open engine: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  std::printf("kvtier example on %s\n%s\nGPU tier 8 blocks, host tier 24 blocks, disk tier %llu "
              "MiB in %s, keys %s\n\n",
              (*engine)->device().name().c_str(), o.geometry.ToString().c_str(),
              static_cast<unsigned long long>(o.disk.capacity_bytes >> 20), dir.c_str(),
              KeyHashName(o.key_hash));
  const auto start = std::chrono::steady_clock::now();
  Example ex(std::move(*engine));
  const std::vector<int32_t> system = Tokens(1, 4 * 16);  // a shared 64-token system prompt
  ex.Request("alice turn 1", "alice", Concat(system, Tokens(2, 4 * 16)));
  ex.Request("alice turn 2 (same prefix)", "alice",
             Concat(Concat(system, Tokens(2, 4 * 16)), Tokens(3, 2 * 16)));
  ex.Request("bob, same system prompt", "bob", Concat(system, Tokens(4, 2 * 16)));
  ex.LeaseAndPrefetch("alice", system);
  ex.Request("alice long document", "alice", Concat(system, Tokens(5, 16 * 16)));
  ex.Request("alice turn 1 again", "alice", Concat(system, Tokens(2, 4 * 16)));
  ex.Request("bob, his turn again", "bob", Concat(system, Tokens(4, 2 * 16)));
  ex.Flush();
  ex.PrintSummary();
  std::printf("done in %.2f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  ex.Close();
  std::filesystem::remove_all(dir);
  return 0;
}
