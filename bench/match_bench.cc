// bench match — Match over a fully cached long prompt: matched blocks per second on one core,
// for SHA-256 and XXH3 keys. The ceiling is computing the same chain of keys alone (no table
// look-ups), in the same run: Match cannot be faster than hashing.
//
//   bench/run match [--tokens=N] [--block-tokens=N] [--seconds=S]

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/flags.h"
#include "kvtier/engine.h"

namespace kvtier::bench {
namespace {

struct Rates {
  double match_bps;  // blocks per second
  double hash_bps;
};

Rates Run(KeyHash hash, size_t tokens_n, uint32_t block_tokens, double seconds) {
  EngineOptions o;
  o.geometry = Geometry{1, 1, 16, DType::kFloat16, block_tokens};  // tiny blocks: metadata only
  o.model_fingerprint = "bench-match";
  o.key_hash = hash;
  o.device.choice = DeviceChoice::kEmulated;
  const size_t n = tokens_n / block_tokens;
  o.host_tier_bytes = n * o.geometry.block_bytes();
  auto opened = Engine::Open(o);
  if (!opened.ok()) Die(opened.status().ToString());
  Engine& e = **opened;
  std::vector<int32_t> tokens(n * block_tokens);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 2654435761u) % 128000);
  auto buf = e.device().Allocate(o.geometry.block_bytes());
  if (!buf.ok()) Die(buf.status().ToString());
  StoreRequest r;
  r.ns = "default";
  r.tokens = tokens;
  r.buffers = KvBuffers::Blocks(std::vector<DevicePtr>(n, *buf));
  auto h = e.Store(r);
  if (!h.ok() || !(*h)->Wait().ok() || (*h)->blocks_moved() != n) Die("store");

  size_t iters = 0;
  const double start = Now();
  while (Now() - start < seconds) {
    auto m = e.Match("default", tokens);
    if (!m.ok() || m->keys.size() != n) Die("match did not find every block");
    ++iters;
  }
  const double match_bps = iters * n / (Now() - start);

  KeyHasher hasher(hash, "default", o.model_fingerprint, o.geometry.Fingerprint());
  size_t hiters = 0;
  uint64_t sink = 0;
  const double hstart = Now();
  while (Now() - hstart < seconds) {
    const std::vector<BlockKey> keys = hasher.Keys(tokens, block_tokens, "");
    sink ^= keys.back().lo;
    ++hiters;
  }
  const double hash_bps = hiters * n / (Now() - hstart);
  if (sink == 42) std::printf(" ");
  (void)e.device().Free(*buf);
  return Rates{match_bps, hash_bps};
}

int Main(int argc, char** argv) {
  size_t tokens = 128 * 1024;
  uint32_t block_tokens = 16;
  double seconds = 1.0;
  CLI::App app(
      "bench match: Match over a fully cached long prompt, SHA-256 and XXH3 keys, vs hashing "
      "alone",
      "bench/run match");
  app.add_option("--tokens", tokens, "prompt tokens (at least one block)")->capture_default_str();
  app.add_option("--block-tokens", block_tokens, "tokens per block")
      ->check(flags::AtLeast<uint32_t>(1))
      ->capture_default_str();
  app.add_option("--seconds", seconds, "seconds each measurement runs")
      ->check(CLI::PositiveNumber.description("> 0"))
      ->capture_default_str();
  app.final_callback([&] {
    if (tokens < block_tokens) {
      throw CLI::ValidationError("--tokens", "must be at least --block-tokens");
    }
  });
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  std::printf("Match over a fully cached %zu-token prompt, %u tokens per block, 1 thread\n", tokens,
              block_tokens);
  const Rates x = Run(KeyHash::kXxh3, tokens, block_tokens, seconds);
  const Rates s = Run(KeyHash::kSha256, tokens, block_tokens, seconds);
  std::printf("%-8s %14s %16s %7s\n", "hash", "match Mblk/s", "hash-only Mblk/s", "ratio");
  std::printf("%-8s %14.2f %16.2f %7.2f\n", "xxh3", x.match_bps / 1e6, x.hash_bps / 1e6,
              x.match_bps / x.hash_bps);
  std::printf("%-8s %14.2f %16.2f %7.2f\n", "sha256", s.match_bps / 1e6, s.hash_bps / 1e6,
              s.match_bps / s.hash_bps);
  JsonLine()
      .Str("bench", "match").Num("figure", x.match_bps / 1e6).Str("unit", "M blocks/s/core")
      .Num("ceiling", x.hash_bps / 1e6)
      .Str("ceiling_source", "XXH3 key chaining alone over the same prompt, same run")
      .Num("ratio", x.match_bps / x.hash_bps).Num("xxh3_match_mbps", x.match_bps / 1e6)
      .Num("sha256_match_mbps", s.match_bps / 1e6).Num("sha256_hash_mbps", s.hash_bps / 1e6)
      .Num("tokens", static_cast<double>(tokens)).Num("block_tokens", block_tokens)
      .Str("target", "xxh3 >= 5 M blocks/s").Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
