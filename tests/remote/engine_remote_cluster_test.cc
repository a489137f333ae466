// The remote tier when the cluster misbehaves: a master killed mid-run (failover), a cluster
// full under allkeys-lru, ACL users confined to their namespace, TLS. Each test starts its own
// cluster (LocalCluster), since it changes it.

#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "tests/remote/remote_engine_test_util.h"

namespace kvtier::testing {
namespace {

using remote::testing::LocalCluster;
using remote::testing::LocalClusterOptions;

#define START_CLUSTER_OR_SKIP(var, options)                                          \
  absl::StatusOr<std::unique_ptr<LocalCluster>> var##_or = LocalCluster::Start(options); \
  if (!var##_or.ok() && absl::IsFailedPrecondition(var##_or.status())) {             \
    GTEST_SKIP() << var##_or.status();                                               \
  }                                                                                  \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status();                                   \
  LocalCluster& var = **var##_or

TEST(EngineRemoteClusterTest, AKilledMasterCostsMissesOnItsShardOnlyUntilFailover) {
  LocalClusterOptions co;
  co.cluster_node_timeout_ms = 2000;
  START_CLUSTER_OR_SKIP(cluster, co);
  EngineOptions o = RemoteOptionsFor(cluster, {"fleet"}, /*host_blocks=*/8);
  o.remote.op_timeout = absl::Milliseconds(800);
  o.remote.match_timeout = absl::Milliseconds(300);
  auto a = Engine::Open(o);
  auto b = Engine::Open(o);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();

  std::atomic<bool> stop{false};
  std::atomic<size_t> wrong{0}, right{0}, zero{0}, rounds{0};
  std::atomic<int64_t> slowest_ms{0};
  std::atomic<size_t> hits_after_failover{0};
  std::atomic<bool> failed_over{false};
  auto timed = [&](auto&& fn) {
    const absl::Time t0 = absl::Now();
    fn();
    const int64_t ms = absl::ToInt64Milliseconds(absl::Now() - t0);
    int64_t prev = slowest_ms.load();
    while (ms > prev && !slowest_ms.compare_exchange_weak(prev, ms)) {
    }
  };
  std::thread loop([&] {
    for (int32_t seed = 100; !stop.load(); ++seed) {
      const std::vector<int32_t> tokens = Prompt(3, seed);
      timed([&] { StoreBlocks(**a, "fleet", tokens); });
      timed([&] { (void)(*a)->Flush(); });
      absl::StatusOr<MatchResult> m;
      timed([&] { m = (*b)->Match("fleet", tokens); });
      ASSERT_TRUE(m.ok());
      if (!m->keys.empty()) {
        LoadOutcome out;
        timed([&] { out = LoadAndCheck(**b, "fleet", m->keys); });
        wrong += out.wrong;
        right += out.right;
        zero += out.zero;
        if (failed_over.load()) hits_after_failover += out.right;
      }
      ++rounds;
    }
  });
  absl::SleepFor(absl::Milliseconds(800));
  const std::string victim = cluster.seeds()[1];
  absl::StatusOr<std::string> replica = cluster.ReplicaOf(victim);
  ASSERT_TRUE(replica.ok()) << replica.status();
  ASSERT_TRUE(cluster.KillNode(victim).ok());
  absl::StatusOr<std::string> promoted =
      cluster.WaitForFailover(victim, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  EXPECT_EQ(*promoted, *replica);
  failed_over = true;
  // The client learns the new map (MOVED / refresh) and hits resume.
  const absl::Time until = absl::Now() + absl::Seconds(20);
  while (hits_after_failover.load() < 30 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  stop = true;
  loop.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GE(hits_after_failover.load(), 30u) << "rounds " << rounds << " zero " << zero;
  // No call waited much past the operation deadline (Store, Flush, Match, Load + Wait).
  EXPECT_LT(slowest_ms.load(), 2 * 800 + 1000) << "slowest call " << slowest_ms << " ms";
  EXPECT_GT(right.load(), 0u);
}

TEST(EngineRemoteClusterTest, AFullClusterUnderAllKeysLruGivesMissesNeverWrongBytes) {
  LocalClusterOptions co;
  co.replicas_per_master = 0;
  co.maxmemory_bytes = 4 << 20;  // per master: a few hundred 8 KiB blocks
  START_CLUSTER_OR_SKIP(cluster, co);
  EngineOptions o = RemoteOptionsFor(cluster, {"lru"}, /*host_blocks=*/8);
  auto a = Engine::Open(o);
  auto b = Engine::Open(o);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t seed = 0; seed < 800; ++seed) {
    prompts.push_back(Prompt(4, 1000 + seed));
    StoreBlocks(**a, "lru", prompts.back());
    if (seed % 50 == 0) {
      ASSERT_TRUE((*a)->Flush().ok());
    }
  }
  ASSERT_TRUE((*a)->Flush().ok());
  {
    // Every SET was acknowledged: a full cluster under allkeys-lru evicts, it does not refuse
    // (no OOM errors). On a loaded machine a few may time out; those are counted, not lost.
    const EngineStats es = (*a)->Stats();
    const RemoteStats& s = es.remote;
    EXPECT_EQ(s.writes + s.writes_failed + s.writes_dropped, 3200u)
        << "rejected " << es.rejected_blocks << " dedup " << es.deduplicated_blocks
        << " host evictions " << es.tiers[static_cast<size_t>(TierKind::kHost)].evictions << " adm rejected "
        << s.writes_rejected;
    // Write-through holds at most a quarter of the 8 host slots pinned while SETs are in
    // flight, so no Store is turned away for want of a slot.
    EXPECT_EQ(es.rejected_blocks, 0u);
    EXPECT_LE(s.writes_failed, s.errors_timeout + s.errors_connect)
        << "a SET failed for another reason than load";
    EXPECT_GE(s.writes, 3200u * 9 / 10) << s.writes_failed << " failed, " << s.writes_dropped
                                        << " dropped";
  }
  size_t matched = 0, right = 0, wrong = 0;
  for (const auto& tokens : prompts) {
    absl::StatusOr<MatchResult> m = (*b)->Match("lru", tokens);
    ASSERT_TRUE(m.ok());
    matched += m->keys.size();
    if (m->keys.empty()) continue;
    const LoadOutcome out = LoadAndCheck(**b, "lru", m->keys);
    right += out.right;
    wrong += out.wrong;
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_GT(right, 0u);
  EXPECT_LT(matched, 3200u);  // ... and yet many are gone: the cluster evicted them
}

TEST(EngineRemoteClusterTest, WritesStuckOnAPausedClusterDoNotFillTheHostTierWithPins) {
  LocalClusterOptions co;
  co.replicas_per_master = 0;
  START_CLUSTER_OR_SKIP(cluster, co);
  EngineOptions o = RemoteOptionsFor(cluster, {"slow"}, /*host_blocks=*/8);
  o.remote.op_timeout = absl::Seconds(6);
  auto a = Engine::Open(o);
  auto b = Engine::Open(o);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  // Every master holds write commands for 1.5 s: the write-through SETs wait that long.
  for (const std::string& master : cluster.seeds()) {
    ASSERT_TRUE(cluster.Cli(master, {"CLIENT", "PAUSE", "1500", "WRITE"}).ok());
  }
  constexpr int kPrompts = 24;  // three times the host tier
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t seed = 0; seed < kPrompts; ++seed) {
    prompts.push_back(Prompt(1, 5000 + seed));
    StoreBlocks(**a, "slow", prompts.back());
  }
  const EngineStats during = (*a)->Stats();
  // Only a quarter of the host slots wait pinned for their SET; the other blocks were copied
  // out, so the host tier kept taking new blocks while the cluster was stuck.
  EXPECT_EQ(during.rejected_blocks, 0u);
  EXPECT_EQ(during.stored_blocks, static_cast<uint64_t>(kPrompts));
  EXPECT_LE(during.tiers[TierKind::kHost].pinned_blocks, 2u);
  ASSERT_TRUE((*a)->Flush().ok());
  EXPECT_EQ((*a)->Stats().remote.writes, static_cast<uint64_t>(kPrompts));
  for (const auto& tokens : prompts) {
    absl::StatusOr<MatchResult> m = (*b)->Match("slow", tokens);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->keys.size(), 1u);
    const LoadOutcome out = LoadAndCheck(**b, "slow", m->keys);
    EXPECT_TRUE(out.status.ok()) << out.status;
    EXPECT_EQ(out.right, 1u);
  }
}

TEST(EngineRemoteClusterTest, AnAclUserConfinedToItsNamespaceGetsErrorsNotData) {
  LocalClusterOptions co;
  co.replicas_per_master = 0;
  co.acl_lines = {
      // docs/operations.md's line, exactly: the commands the engine sends and nothing else.
      "user tenant1 on >pw-tenant1-0123456789 resetkeys ~kvtier:1:tenant1:* resetchannels "
      "-@all +get +set +exists +del +scan +asking +cluster|slots"};
  START_CLUSTER_OR_SKIP(cluster, co);
  EngineOptions o = RemoteOptionsFor(cluster, {"tenant1", "tenant2"});
  o.remote.user = "tenant1";
  o.remote.password = "pw-tenant1-0123456789";
  auto e = Engine::Open(o);
  ASSERT_TRUE(e.ok()) << e.status();
  // Its own namespace works.
  const std::vector<int32_t> tokens = Prompt(2, 20);
  StoreBlocks(**e, "tenant1", tokens);
  ASSERT_TRUE((*e)->Flush().ok());
  EXPECT_EQ((*e)->Stats().remote.writes, 2u);
  EngineOptions reader = o;
  auto r = Engine::Open(reader);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ((*r)->Match("tenant1", tokens)->keys.size(), 2u);
  EXPECT_EQ(LoadAndCheck(**r, "tenant1", (*r)->Match("tenant1", tokens)->keys).right, 2u);
  // Another namespace's keys are refused: writes fail (counted), lookups are misses.
  StoreBlocks(**e, "tenant2", tokens);
  ASSERT_TRUE((*e)->Flush().ok());
  EXPECT_EQ((*r)->Match("tenant2", tokens)->keys.size(), 0u);
  const RemoteStats st = (*e)->Stats().remote;
  EXPECT_EQ(st.writes, 2u);
  EXPECT_EQ(st.writes_failed, 2u);
  EXPECT_GE(st.errors_no_perm, 2u);
  EXPECT_GT((*r)->Stats().remote.lookup_errors, 0u);
  // A wrong password is a clear error at Open.
  o.remote.password = "not-the-password";
  absl::StatusOr<std::unique_ptr<Engine>> bad = Engine::Open(o);
  EXPECT_TRUE(absl::IsPermissionDenied(bad.status())) << bad.status();
}

TEST(EngineRemoteClusterTest, TlsCarriesTheBlocksAndPlainTcpIsRefused) {
  LocalClusterOptions co;
  co.replicas_per_master = 0;
  co.tls = true;
  START_CLUSTER_OR_SKIP(cluster, co);
  EngineOptions o = RemoteOptionsFor(cluster, {"tls"});
  ASSERT_TRUE(o.remote.tls);
  auto a = Engine::Open(o);
  auto b = Engine::Open(o);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  const std::vector<int32_t> tokens = Prompt(3, 30);
  StoreBlocks(**a, "tls", tokens);
  ASSERT_TRUE((*a)->Flush().ok());
  absl::StatusOr<MatchResult> m = (*b)->Match("tls", tokens);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->keys.size(), 3u);
  EXPECT_EQ(LoadAndCheck(**b, "tls", m->keys).right, 3u);
  // A client certificate whose key others can read is refused (as ssh refuses such a key);
  // the same key made private works.
  {
    EngineOptions c = o;
    const std::string key = cluster.dir() + "/client-copy.key";
    std::filesystem::copy_file(cluster.client_key_file(), key,
                               std::filesystem::copy_options::overwrite_existing);
    ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
    c.remote.tls_cert_file = cluster.client_cert_file();
    c.remote.tls_key_file = key;
    absl::StatusOr<std::unique_ptr<Engine>> loose = Engine::Open(c);
    ASSERT_FALSE(loose.ok());
    EXPECT_NE(loose.status().message().find("chmod 600"), absl::string_view::npos)
        << loose.status();
    EXPECT_NE(loose.status().message().find("tls.key_file"), absl::string_view::npos);
    ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
    absl::StatusOr<std::unique_ptr<Engine>> tight = Engine::Open(c);
    EXPECT_TRUE(tight.ok()) << tight.status();
  }
  // Without TLS against the TLS ports: a clear error, not a hang.
  o.remote.tls = false;
  o.remote.tls_ca_file.clear();
  o.remote.connect_timeout = absl::Milliseconds(500);
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<Engine>> plain = Engine::Open(o);
  EXPECT_FALSE(plain.ok());
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
}

}  // namespace
}  // namespace kvtier::testing
