// kvtier_remote_peer — one engine process of the remote tier's two-process test
// (engine_remote_test.cc, TwoProcessesShareBlocksThroughTheCluster): opens an engine on the
// emulated device with the given seeds and does one thing, printing one line of results.
//
//   kvtier_remote_peer SEEDS NS store SEED BLOCKS     stores a prompt, waits for the writes
//   kvtier_remote_peer SEEDS NS load SEED BLOCKS      Match + Load + check bytes + Match again
//   kvtier_remote_peer SEEDS NS erase-ns              EraseNamespace
//
// SEEDS is comma-separated host:port. Exit status 0 when the engine calls succeeded.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "tests/remote/remote_engine_test_util.h"

namespace kvtier::testing {
namespace {

int Run(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s SEEDS NS store|load SEED BLOCKS | SEEDS NS erase-ns\n", argv[0]);
    return 2;
  }
  EngineOptions o = SmallOptions(0, 64);
  o.device.choice = DeviceChoice::kEmulated;
  o.namespaces = {argv[2]};
  o.remote.seeds = absl::StrSplit(argv[1], ',');
  const std::string ns = argv[2];
  const std::string op = argv[3];
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
  if (!e.ok()) {
    std::printf("error=%s\n", e.status().ToString().c_str());
    return 1;
  }
  if (op == "erase-ns") {
    absl::StatusOr<size_t> n = (*e)->EraseNamespace(ns);
    std::printf("erased=%s\n", n.ok() ? "ok" : n.status().ToString().c_str());
    return n.ok() ? 0 : 1;
  }
  int seed = 0, blocks = 0;
  if (argc < 6 || !absl::SimpleAtoi(argv[4], &seed) || !absl::SimpleAtoi(argv[5], &blocks)) {
    std::fprintf(stderr, "SEED and BLOCKS must be integers\n");
    return 2;
  }
  const std::vector<int32_t> tokens = Prompt(static_cast<size_t>(blocks), seed);
  if (op == "store") {
    StoreBlocks(**e, ns, tokens);
    const absl::Status s = (*e)->Flush();
    std::printf("stored=%d writes=%llu\n", blocks,
                static_cast<unsigned long long>((*e)->Stats().remote.writes));
    return s.ok() ? 0 : 1;
  }
  if (op != "load") return 2;
  absl::StatusOr<MatchResult> m = (*e)->Match(ns, tokens);
  if (!m.ok()) return 1;
  size_t remote = 0;
  for (TierKind t : m->tiers) remote += t == TierKind::kRemote;
  LoadOutcome out;
  if (!m->keys.empty()) out = LoadAndCheck(**e, ns, m->keys);
  (void)(*e)->Flush();
  absl::StatusOr<MatchResult> again = (*e)->Match(ns, tokens);
  size_t host_after = 0;
  for (TierKind t : again->tiers) host_after += t == TierKind::kHost;
  std::printf("matched=%zu remote=%zu right=%zu wrong=%zu zero=%zu host_after=%zu status=%s\n",
              m->keys.size(), remote, out.right, out.wrong, out.zero, host_after,
              out.status.ok() ? "OK" : out.status.ToString().c_str());
  return 0;
}

}  // namespace
}  // namespace kvtier::testing

int main(int argc, char** argv) { return kvtier::testing::Run(argc, argv); }
