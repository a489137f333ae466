// `kvtier remote inspect`, run as a real process against real local Redis Clusters
// (remote/testing/local_cluster.h; skipped, saying so, without redis-server): the slot map and
// nodes as CLUSTER NODES has them, per-node keys and memory, kvtier's blocks per namespace
// found by SCAN, the warnings docs/operations.md's advice implies (and none where it is
// followed), and clear errors with the documented exit codes for bad or unreachable seeds.

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "remote/testing/local_cluster.h"
#include "tests/api/engine_test_util.h"
#include "tests/tools/cli_run.h"
#include "tools/cli/exit_codes.h"

namespace kvtier {
namespace {

using ::kvtier::remote::testing::LocalCluster;
using ::kvtier::remote::testing::LocalClusterOptions;
using ::kvtier::testing::ParseJson;
using ::kvtier::testing::Quote;
using ::kvtier::testing::RunCli;
using ::kvtier::testing::RunResult;
using nlohmann::ordered_json;

#define CLUSTER_OR_SKIP(var, expr)                                       \
  absl::StatusOr<LocalCluster*> var##_or = (expr);                       \
  if (!var##_or.ok() && absl::IsFailedPrecondition(var##_or.status())) { \
    GTEST_SKIP() << var##_or.status();                                   \
  }                                                                      \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status();                       \
  LocalCluster* var = *var##_or

std::string Seeds(const LocalCluster& c) { return absl::StrJoin(c.seeds(), ","); }

// Stores `blocks` blocks in namespace `ns` of an engine on `cluster` and waits until they are
// in the cluster.
void StoreRemote(const LocalCluster& cluster, const std::string& ns, size_t blocks) {
  EngineOptions o = testing::SmallOptions(0, 32);
  o.namespaces = {ns};
  o.remote.seeds = cluster.seeds();
  o.remote.match_timeout = absl::Milliseconds(500);
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
  ASSERT_TRUE(e.ok()) << e.status();
  testing::StoreBlocks(**e, ns, testing::Prompt(blocks, 41));
  ASSERT_TRUE((*e)->Flush().ok());
  ASSERT_EQ((*e)->Stats().remote.writes, blocks);
}

TEST(KvtierRemoteInspect, ReportsNodesSlotsKeysAndKvtierBlocksWithWarnings) {
  CLUSTER_OR_SKIP(cluster, LocalCluster::Shared());  // 3 masters + 3 replicas, no maxmemory
  const std::string ns = absl::StrCat("inspect:", getpid());  // ':' in a namespace name
  StoreRemote(*cluster, ns, 5);

  const RunResult r = RunCli(absl::StrCat("remote inspect --json --seeds=", Seeds(*cluster)));
  ASSERT_EQ(r.exit_code, cli::kExitOk) << r.err;
  const ordered_json j = ParseJson(r.out);
  EXPECT_EQ(j["cluster"]["state"], "ok");
  EXPECT_EQ(j["cluster"]["slots_assigned"], 16384);
  absl::StatusOr<std::vector<remote::testing::LocalNode>> nodes = cluster->Nodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  ASSERT_EQ(j["nodes"].size(), nodes->size());
  uint64_t slots = 0, keys = 0;
  for (const ordered_json& n : j["nodes"]) {
    SCOPED_TRACE(n.dump());
    bool found = false;
    for (const remote::testing::LocalNode& want : *nodes) {
      if (want.address != n["address"]) continue;
      found = true;
      EXPECT_EQ(n["role"], want.master ? "master" : "replica");
      if (!want.master) {
        EXPECT_EQ(n["master"], want.master_address);
      }
    }
    EXPECT_TRUE(found);
    EXPECT_FALSE(n.contains("error"));
    EXPECT_GT(n["used_memory"].get<uint64_t>(), 0u);
    EXPECT_EQ(n["maxmemory"], 0);
    if (n["role"] == "master") {
      slots += n["slot_count"].get<uint64_t>();
      keys += n["keys"].get<uint64_t>();
    }
  }
  EXPECT_EQ(slots, 16384u);
  EXPECT_GE(keys, 5u);  // other tests' blocks may be there too
  bool listed = false;
  for (const ordered_json& s : j["namespaces"]) {
    if (s["namespace"] != ns) continue;
    listed = true;
    EXPECT_EQ(s["blocks"], 5);
    EXPECT_EQ(s["model_id"].get<std::string>().size(), 16u);
    // A block of SmallOptions is 8 KiB; the value adds a header.
    EXPECT_GT(s["value_bytes_sampled"].get<uint64_t>(), 8192u);
    EXPECT_EQ(s["bytes_estimated"], 5 * s["value_bytes_sampled"].get<uint64_t>());
  }
  EXPECT_TRUE(listed) << j.dump(2);
  // No maxmemory on the shared cluster: one warning per master, naming it.
  size_t maxmemory_warnings = 0;
  for (const ordered_json& w : j["warnings"]) {
    maxmemory_warnings += absl::StrContains(w.get<std::string>(), "maxmemory 0") ? 1 : 0;
  }
  EXPECT_EQ(maxmemory_warnings, 3u) << j["warnings"].dump();

  // The same for people.
  const RunResult human = RunCli(absl::StrCat("remote inspect --seeds=", Seeds(*cluster)));
  ASSERT_EQ(human.exit_code, cli::kExitOk) << human.err;
  EXPECT_TRUE(absl::StrContains(human.out, "cluster: state ok")) << human.out;
  EXPECT_TRUE(absl::StrContains(human.out, ns)) << human.out;
  EXPECT_TRUE(absl::StrContains(human.out, "warning: ")) << human.out;
  EXPECT_TRUE(absl::StrContains(human.out, "0 (unbounded)")) << human.out;
  EXPECT_TRUE(absl::StrContains(human.out, "replica of 127.0.0.1:")) << human.out;
}

TEST(KvtierRemoteInspect, ACacheConfiguredAsAdvisedHasNoWarnings) {
  LocalClusterOptions o;
  o.replicas_per_master = 0;
  o.maxmemory_bytes = size_t{64} << 20;  // with allkeys-lru
  absl::StatusOr<std::unique_ptr<LocalCluster>> started = LocalCluster::Start(o);
  CLUSTER_OR_SKIP(cluster, started.ok() ? absl::StatusOr<LocalCluster*>(started->get())
                                        : absl::StatusOr<LocalCluster*>(started.status()));
  const RunResult r = RunCli(absl::StrCat("remote inspect --json --seeds=", Seeds(*cluster)));
  ASSERT_EQ(r.exit_code, cli::kExitOk) << r.err;
  const ordered_json j = ParseJson(r.out);
  EXPECT_TRUE(j["warnings"].empty()) << j["warnings"].dump();
  EXPECT_TRUE(j["namespaces"].empty());
  ASSERT_EQ(j["nodes"].size(), 3u);
  for (const ordered_json& n : j["nodes"]) {
    EXPECT_EQ(n["maxmemory_policy"], "allkeys-lru");
    EXPECT_EQ(n["maxmemory"], 64 << 20);
  }
  const RunResult human = RunCli(absl::StrCat("remote inspect --seeds=", Seeds(*cluster)));
  EXPECT_TRUE(absl::StrContains(human.out, "no kvtier blocks")) << human.out;
  EXPECT_FALSE(absl::StrContains(human.out, "warning")) << human.out;
}

TEST(KvtierRemoteInspect, BadOrUnreachableSeedsAreClearErrors) {
  RunResult r = RunCli("remote inspect --seeds=not-a-seed");
  EXPECT_EQ(r.exit_code, cli::kExitUsage);
  EXPECT_TRUE(absl::StrContains(r.err, "'not-a-seed' is not host:port")) << r.err;
  r = RunCli("remote inspect --seeds=127.0.0.1:7000,,127.0.0.1:7001");
  EXPECT_EQ(r.exit_code, cli::kExitUsage);
  EXPECT_TRUE(absl::StrContains(r.err, "entry 2 is empty")) << r.err;
  r = RunCli("remote inspect --seeds=127.0.0.1:99999");
  EXPECT_EQ(r.exit_code, cli::kExitUsage) << r.err;
  r = RunCli("remote inspect");  // --seeds is required
  EXPECT_EQ(r.exit_code, cli::kExitUsage);
  // Port 1 on loopback refuses connections: nothing answers.
  r = RunCli("remote inspect --timeout=1 --seeds=127.0.0.1:1");
  EXPECT_EQ(r.exit_code, cli::kExitCannotOpen);
  EXPECT_TRUE(absl::StrContains(r.err, "127.0.0.1:1")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  r = RunCli("remote inspect --seeds=127.0.0.1:1 --password-file=/nonexistent/pw");
  EXPECT_EQ(r.exit_code, cli::kExitCannotOpen);
  EXPECT_TRUE(absl::StrContains(r.err, "/nonexistent/pw")) << r.err;
  r = RunCli("remote inspect --seeds=127.0.0.1:1 --tls");  // TLS without a CA
  EXPECT_EQ(r.exit_code, cli::kExitUsage);
  EXPECT_TRUE(absl::StrContains(r.err, "ca")) << r.err;
}

TEST(KvtierRemoteInspect, AWrongPasswordIsRefused) {
  CLUSTER_OR_SKIP(cluster, LocalCluster::Shared());
  // The shared cluster's default user has no password: AUTH with one fails.
  const std::string pw = absl::StrCat(::testing::TempDir(), "/kvtier-pw-", getpid());
  std::ofstream(pw) << "not-the-password\n";
  const RunResult r = RunCli(absl::StrCat(
      "remote inspect --user=nobody --password-file=", Quote(pw), " --seeds=", Seeds(*cluster)));
  std::remove(pw.c_str());
  EXPECT_NE(r.exit_code, cli::kExitOk);
  EXPECT_FALSE(r.err.empty());
}

}  // namespace
}  // namespace kvtier
