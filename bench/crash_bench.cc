// bench crash — a writer killed at random points never leaves wrong bytes behind.
//
//   bench/run crash [--rounds=50] [--dir=PATH] [--seed=N]
//
// Each round re-executes this program as a child that opens the engine on a cache directory
// (host tier of 8 blocks, so most blocks live on disk) and runs a mixed store / load / erase
// loop without end; the parent SIGKILLs it after a random 10–300 ms, reopens the directory,
// loads every block that Match still finds and compares it byte for byte with the content
// derived from its key, then stores a fresh block to show the engine still takes writes.
// figure = rounds that ended with zero wrong bytes; ceiling = rounds run.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "kvtier/engine.h"

namespace kvtier::bench {
namespace {

constexpr int kPrompts = 120;
constexpr uint32_t kBlocksPerPrompt = 2;

EngineOptions Options(const std::string& dir) {
  EngineOptions o;
  o.geometry = Geometry{4, 2, 16, DType::kFloat16, 16};  // 8 KiB blocks
  o.model_fingerprint = "bench-crash";
  o.device.choice = DeviceChoice::kEmulated;
  o.host_tier_bytes = 8 * o.geometry.block_bytes();
  o.disk.directory = dir;
  o.disk.region_bytes = 256 * 1024;
  o.disk.capacity_bytes = 16 * o.disk.region_bytes;  // ~200 blocks: regions get reclaimed
  o.disk.admit_min_seen = 1;  // every eviction goes to disk: the most to get wrong
  return o;
}

std::vector<int32_t> Prompt(int p) {
  std::vector<int32_t> t(kBlocksPerPrompt * 16);
  for (size_t i = 0; i < t.size(); ++i) t[i] = p * 7919 + static_cast<int32_t>(i);
  return t;
}

std::vector<uint8_t> Content(const BlockKey& key, size_t n) {
  std::vector<uint8_t> out(n);
  std::mt19937_64 rng(key.hi ^ (key.lo * 3));
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t w = rng();
    std::memcpy(out.data() + i, &w, std::min<size_t>(8, n - i));
  }
  return out;
}

struct Buffers {
  Buffers(Engine& e, size_t n) : engine(e) {
    for (size_t i = 0; i < n; ++i) ptrs.push_back(*e.device().Allocate(e.options().geometry.block_bytes()));
    auto s = e.device().CreateStream();
    if (!s.ok()) Die(s.status().ToString());
    stream = std::move(*s);
  }
  ~Buffers() {
    stream.reset();
    for (DevicePtr p : ptrs) (void)engine.device().Free(p);
  }
  Engine& engine;
  std::vector<DevicePtr> ptrs;
  std::unique_ptr<Stream> stream;
};

void StorePrompt(Engine& e, Buffers& b, int p) {
  const size_t bytes = e.options().geometry.block_bytes();
  KeyHasher h(e.options().key_hash, "default", e.options().model_fingerprint,
              e.options().geometry.Fingerprint());
  const std::vector<int32_t> tokens = Prompt(p);
  const std::vector<BlockKey> keys = h.Keys(tokens, 16, "");
  // The copies are asynchronous: their sources must live until the stream is synchronized.
  std::vector<std::vector<uint8_t>> contents;
  for (size_t i = 0; i < keys.size(); ++i) {
    contents.push_back(Content(keys[i], bytes));
    if (!b.stream->CopyToDevice(b.ptrs[i], contents.back().data(), bytes).ok()) Die("fill");
  }
  if (!b.stream->Synchronize().ok()) Die("fill sync");
  StoreRequest r;
  r.ns = "default";
  r.tokens = tokens;
  r.buffers = KvBuffers::Blocks({b.ptrs.begin(), b.ptrs.begin() + keys.size()});
  auto handle = e.Store(r);
  if (handle.ok()) (void)(*handle)->Wait();
}

// Loads what Match finds of prompt p; returns wrong blocks (bytes differ on a successful load).
int VerifyPrompt(Engine& e, Buffers& b, int p, int* loaded, int* lost) {
  const size_t bytes = e.options().geometry.block_bytes();
  auto m = e.Match("default", Prompt(p));
  if (!m.ok()) Die(m.status().ToString());
  if (m->keys.empty()) return 0;
  LoadRequest r;
  r.ns = "default";
  r.keys = m->keys;
  r.buffers = KvBuffers::Blocks({b.ptrs.begin(), b.ptrs.begin() + m->keys.size()});
  auto h = e.Load(r);
  if (!h.ok()) {
    ++*lost;  // evicted or dropped between Match and Load: a miss, not wrong data
    return 0;
  }
  if (!(*h)->Wait().ok()) {
    ++*lost;  // failed verification: reported, destination zeroed
    return 0;
  }
  int wrong = 0;
  std::vector<uint8_t> got(bytes);
  for (size_t i = 0; i < m->keys.size(); ++i) {
    if (!b.stream->CopyToHost(got.data(), b.ptrs[i], bytes).ok() || !b.stream->Synchronize().ok()) {
      Die("read back");
    }
    if (got != Content(m->keys[i], bytes)) {
      ++wrong;
      const bool zero = std::all_of(got.begin(), got.end(), [](uint8_t c) { return c == 0; });
      std::fprintf(stderr,
                   "wrong bytes: prompt %d block %zu key %s matched in tier %s; got %s (first "
                   "bytes %02x%02x%02x%02x)\n",
                   p, i, m->keys[i].ToHex().c_str(), TierKindName(m->tiers[i]),
                   zero ? "zeros" : "other bytes", got[0], got[1], got[2], got[3]);
      // Whose bytes were they? Another block's is the worst case: say so.
      KeyHasher hh(e.options().key_hash, "default", e.options().model_fingerprint,
                   e.options().geometry.Fingerprint());
      for (int q = 0; q < kPrompts; ++q) {
        const std::vector<BlockKey> ks = hh.Keys(Prompt(q), 16, "");
        for (size_t j = 0; j < ks.size(); ++j) {
          if (Content(ks[j], bytes) == got) {
            std::fprintf(stderr, "  they are the bytes of prompt %d block %zu\n", q, j);
          }
        }
      }
    }
    ++*loaded;
  }
  return wrong;
}

[[noreturn]] void Child(const std::string& dir, uint64_t seed) {
  auto e = Engine::Open(Options(dir));
  if (!e.ok()) {
    std::fprintf(stderr, "crash child: %s\n", e.status().ToString().c_str());
    _exit(3);
  }
  Buffers b(**e, kBlocksPerPrompt);
  std::mt19937_64 rng(seed);
  int loaded = 0, lost = 0;
  for (;;) {
    const int p = static_cast<int>(rng() % kPrompts);
    switch (rng() % 4) {
      case 0:
      case 1:
        StorePrompt(**e, b, p);
        break;
      case 2:
        if (VerifyPrompt(**e, b, p, &loaded, &lost) != 0) _exit(4);  // the child checks too
        break;
      default: {
        KeyHasher h((*e)->options().key_hash, "default", (*e)->options().model_fingerprint,
                    (*e)->options().geometry.Fingerprint());
        (void)(*e)->Erase("default", h.Keys(Prompt(p), 16, ""));
      }
    }
  }
}

int Main(int argc, char** argv) {
  int rounds = 50;
  std::string dir = "/tmp/kvtier-bench-crash";
  uint64_t seed = 1;
  CLI::App app(
      "bench crash: SIGKILL a writer at random points, reopen, verify every block byte for "
      "byte",
      "bench/run crash");
  app.add_option("--rounds", rounds, "writers killed")
      ->check(flags::AtLeast(1))
      ->capture_default_str();
  flags::AddDir(app, &dir, "the cache directory (emptied first)");
  flags::AddSeed(app, &seed);
  // The child this program re-executes: --child=DIR,SEED runs the writer until killed.
  std::string child;
  app.add_option("--child", child)->group("");
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  if (!child.empty()) {
    const size_t comma = child.find(',');
    uint64_t child_seed = 0;
    if (comma == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(child).substr(comma + 1), &child_seed)) {
      return 2;
    }
    Child(child.substr(0, comma), child_seed);
  }
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string cache = dir + "/cache";
  std::mt19937_64 rng(seed);
  int clean_rounds = 0;
  long total_loaded = 0, total_lost = 0, total_wrong = 0;
  const double start = Now();
  for (int round = 0; round < rounds; ++round) {
    const std::string child_arg = absl::StrCat("--child=", cache, ",", rng());
    const pid_t pid = fork();
    if (pid < 0) Die("fork");
    if (pid == 0) {
      execl("/proc/self/exe", "kvtier_bench_crash", child_arg.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10 + rng() % 290));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFSIGNALED(status)) {
      Die(absl::StrFormat("round %d: the child exited by itself with status %d (4 = it saw wrong "
                          "bytes, 3 = it could not open the directory)",
                          round, WEXITSTATUS(status)));
    }
    auto e = Engine::Open(Options(cache));
    if (!e.ok()) Die(absl::StrFormat("round %d: reopen failed: %s", round, e.status().ToString()));
    Buffers b(**e, kBlocksPerPrompt);
    int loaded = 0, lost = 0, wrong = 0;
    for (int p = 0; p < kPrompts; ++p) wrong += VerifyPrompt(**e, b, p, &loaded, &lost);
    StorePrompt(**e, b, static_cast<int>(rng() % kPrompts));
    if (!(*e)->Flush().ok()) Die("flush after the fresh store");
    clean_rounds += wrong == 0;
    total_loaded += loaded;
    total_lost += lost;
    total_wrong += wrong;
    if (round % 10 == 9 || round + 1 == rounds) {
      std::printf("round %3d: %d blocks verified after the kill, %d prompts missed, %d wrong\n",
                  round + 1, loaded, lost, wrong);
    }
  }
  std::printf("%d rounds in %.1f s: %ld blocks verified, %ld loads missed, %ld wrong blocks\n",
              rounds, Now() - start, total_loaded, total_lost, total_wrong);
  std::filesystem::remove_all(dir);
  JsonLine()
      .Str("bench", "crash").Num("figure", clean_rounds).Str("unit", "rounds with zero wrong bytes")
      .Num("ceiling", rounds).Str("ceiling_source", "rounds run").Num("ratio", double(clean_rounds) / rounds)
      .Num("blocks_verified", static_cast<double>(total_loaded))
      .Num("loads_missed", static_cast<double>(total_lost))
      .Num("wrong_blocks", static_cast<double>(total_wrong)).Print();
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
