// The remote tier through the C API (include/kvtier/c_api.h), against a real local Redis
// Cluster (remote/testing/local_cluster.h; skipped, saying so, without redis-server): two
// engines opened with kvtier_options_set_remote_seeds share blocks, and the remote figures
// reach kvtier_stats and kvtier_remote_node_stats_get. Written in C++ only for gtest and the
// cluster harness: every engine call goes through the C functions, as an FFI caller's would.

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kvtier/c_api.h"
#include "remote/testing/local_cluster.h"

namespace {

#define ASSERT_C_OK(call) ASSERT_EQ((call), KVTIER_OK) << #call << ": " << kvtier_last_error()

constexpr uint32_t kBlockTokens = 4;
constexpr size_t kBlockBytes = 512;  // 2 layers x (K,V) x 4 tokens x 2 heads x 8 dims x fp16

// An engine on the emulated device with the cluster as its remote tier.
kvtier_engine* OpenRemote(const std::string& seeds, const char* ns) {
  kvtier_options* o = nullptr;
  kvtier_engine* e = nullptr;
  EXPECT_EQ(kvtier_options_create(&o), KVTIER_OK);
  EXPECT_EQ(kvtier_options_set_geometry(o, 2, 2, 8, KVTIER_DTYPE_FLOAT16, kBlockTokens), KVTIER_OK);
  EXPECT_EQ(kvtier_options_set_model_fingerprint(o, "c-api-remote-test@1"), KVTIER_OK);
  EXPECT_EQ(kvtier_options_set_device(o, KVTIER_DEVICE_EMULATED, 0, 0.0), KVTIER_OK);
  EXPECT_EQ(kvtier_options_set_tier_bytes(o, 0, 32 * kBlockBytes), KVTIER_OK);
  EXPECT_EQ(kvtier_options_set_namespaces(o, &ns, 1), KVTIER_OK);
  EXPECT_EQ(kvtier_options_set_remote_seeds(o, seeds.c_str()), KVTIER_OK) << kvtier_last_error();
  // Generous: the machine may be busy.
  EXPECT_EQ(kvtier_options_set_remote_timeouts_ms(o, 1000, 2000, 500), KVTIER_OK);
  EXPECT_EQ(kvtier_options_set_remote_write_policy(o, "write-through"), KVTIER_OK);
  EXPECT_EQ(kvtier_engine_open(o, &e), KVTIER_OK) << kvtier_last_error();
  kvtier_options_destroy(o);
  return e;
}

TEST(CApiRemote, ABlockStoredByOneEngineIsARemoteHitForAnother) {
  absl::StatusOr<kvtier::remote::testing::LocalCluster*> cluster =
      kvtier::remote::testing::LocalCluster::Shared();
  if (absl::IsFailedPrecondition(cluster.status())) GTEST_SKIP() << cluster.status();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string seeds = absl::StrJoin((*cluster)->seeds(), ",");
  // A namespace of its own, so blocks left in the shared cluster by other runs cannot match.
  const std::string ns = "capi-" + std::to_string(static_cast<uint64_t>(getpid())) + "-" +
                         std::to_string(absl::ToUnixNanos(absl::Now()));

  kvtier_engine* a = OpenRemote(seeds, ns.c_str());
  kvtier_engine* b = OpenRemote(seeds, ns.c_str());
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);

  constexpr size_t kBlocks = 3;
  std::vector<int32_t> tokens(kBlocks * kBlockTokens);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(7000 + i);
  std::vector<uint8_t> data(kBlocks * kBlockBytes);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 13 + (i >> 9));
  size_t stored = 0;
  ASSERT_C_OK(kvtier_store_host(a, ns.c_str(), tokens.data(), tokens.size(), nullptr, 0, 0, kBlocks,
                                data.data(), data.size(), &stored));
  ASSERT_EQ(stored, kBlocks);
  ASSERT_C_OK(kvtier_flush(a));  // write-through: the SETs have landed

  // B has never seen the prompt: every block is in the remote tier only.
  size_t matched_tokens = 0, matched_blocks = 0;
  kvtier_block_key keys[kBlocks];
  kvtier_tier tiers[kBlocks];
  ASSERT_C_OK(kvtier_match(b, ns.c_str(), tokens.data(), tokens.size(), nullptr, 0, &matched_tokens,
                           &matched_blocks, keys, kBlocks, tiers));
  ASSERT_EQ(matched_blocks, kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) EXPECT_EQ(tiers[i], KVTIER_TIER_REMOTE) << i;
  std::vector<uint8_t> back(data.size(), 0xEE);
  ASSERT_C_OK(kvtier_load_host(b, ns.c_str(), keys, kBlocks, back.data(), back.size()));
  EXPECT_EQ(back, data);  // byte-exact
  ASSERT_C_OK(kvtier_flush(b));

  // Now B holds them itself.
  ASSERT_C_OK(kvtier_match(b, ns.c_str(), tokens.data(), tokens.size(), nullptr, 0, &matched_tokens,
                           &matched_blocks, keys, kBlocks, tiers));
  for (size_t i = 0; i < kBlocks; ++i) EXPECT_EQ(tiers[i], KVTIER_TIER_HOST) << i;

  kvtier_stats sa{}, sb{};
  sa.struct_size = sizeof(sa);
  sb.struct_size = sizeof(sb);
  ASSERT_C_OK(kvtier_engine_stats(a, &sa));
  ASSERT_C_OK(kvtier_engine_stats(b, &sb));
  EXPECT_EQ(sa.remote_enabled, 1u);
  EXPECT_EQ(sa.remote_writes, kBlocks);
  EXPECT_GE(sa.remote_bytes_written, kBlocks * kBlockBytes);
  EXPECT_EQ(sa.remote_set_latency.count, kBlocks);
  EXPECT_EQ(sb.remote_enabled, 1u);
  EXPECT_GE(sb.remote_lookup_hits, kBlocks);
  EXPECT_EQ(sb.remote_read_hits, kBlocks);
  EXPECT_EQ(sb.remote_read_corrupt + sb.remote_read_wrong_block + sb.remote_read_bad_mac, 0u);
  EXPECT_EQ(sb.tiers[KVTIER_TIER_REMOTE].hits, kBlocks);
  EXPECT_GE(sb.tiers[KVTIER_TIER_REMOTE].bytes_out, kBlocks * kBlockBytes);

  // The nodes B's client knows: the masters serve all 16384 slots between them.
  ASSERT_GE(sb.remote_nodes, 3u);
  uint64_t slots = 0, masters = 0;
  for (size_t i = 0; i < sb.remote_nodes; ++i) {
    kvtier_remote_node_stats node{};
    node.struct_size = sizeof(node);
    ASSERT_C_OK(kvtier_remote_node_stats_get(b, i, &node));
    EXPECT_EQ(node.struct_size, sizeof(node));
    EXPECT_EQ(std::strncmp(node.address, "127.0.0.1:", 10), 0) << node.address;
    slots += node.slots;
    masters += node.master;
  }
  EXPECT_EQ(slots, 16384u);
  EXPECT_GE(masters, 3u);
  kvtier_remote_node_stats past{};
  past.struct_size = sizeof(past);
  EXPECT_EQ(kvtier_remote_node_stats_get(b, sb.remote_nodes + 5, &past), KVTIER_OUT_OF_RANGE);
  EXPECT_NE(std::strstr(kvtier_last_error(), "remote node"), nullptr) << kvtier_last_error();

  size_t erased = 0;
  ASSERT_C_OK(kvtier_erase_namespace(a, ns.c_str(), &erased));
  ASSERT_C_OK(kvtier_engine_close(a));
  ASSERT_C_OK(kvtier_engine_close(b));
}

}  // namespace
