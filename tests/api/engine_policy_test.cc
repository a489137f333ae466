// tests/api/engine_policy_test.cc — every eviction policy driving the real engine: blocks
// stored through small GPU and host tiers and a disk tier under eviction pressure always
// load back byte for byte, the tiers' bookkeeping stays consistent, and the policies'
// contract with the engine (pick, then remove; inserts keyed by block identity) holds under
// concurrent clients.

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "tests/api/engine_test_util.h"

namespace kvtier {
namespace {

using testing::BlockContent;
using testing::Prompt;
using testing::ReadDevice;
using testing::StoreBlocks;

class EnginePolicyTest : public ::testing::TestWithParam<std::string> {
 protected:
  void RunEvictionUnderPressure(bool kv_aware);
};

TEST_P(EnginePolicyTest, EvictionUnderPressureNeverLosesOrMixesBytes) {
  // Plain, and with the prefix- and cost-aware refinements (which ask the policy for a
  // chosen slot among its most evictable ones).
  for (bool kv_aware : {false, true}) {
    SCOPED_TRACE(kv_aware ? "prefix- and cost-aware" : "plain");
    RunEvictionUnderPressure(kv_aware);
    if (HasFatalFailure()) return;
  }
}

void EnginePolicyTest::RunEvictionUnderPressure(bool kv_aware) {
  EngineOptions o = testing::SmallOptions(/*gpu=*/4, /*host=*/6);
  o.gpu_eviction = GetParam();
  o.host_eviction = GetParam();
  o.prefix_aware_eviction = kv_aware;
  o.cost_aware_eviction = kv_aware;
  const std::string dir =
      ::testing::TempDir() + "kvtier-policy-" + GetParam() + (kv_aware ? "-kv" : "");
  std::filesystem::remove_all(dir);
  o.disk.directory = dir;
  o.disk.region_bytes = 64 << 10;
  o.disk.capacity_bytes = 4 << 20;
  o.disk.admit_min_seen = 1;
  absl::StatusOr<std::unique_ptr<Engine>> opened = Engine::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Engine& e = **opened;
  const size_t bytes = o.geometry.block_bytes();
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> prompts;
  for (int p = 0; p < 6; ++p) prompts.push_back(Prompt(3, 100 + p));
  for (const auto& p : prompts) StoreBlocks(e, "default", p);
  // Repeated, skewed reuse: prompts 0 and 1 are hot, the rest cold.
  for (int round = 0; round < 40; ++round) {
    const size_t p = rng() % 4 == 0 ? 2 + rng() % 4 : rng() % 2;
    absl::StatusOr<MatchResult> m = e.Match("default", prompts[p]);
    ASSERT_TRUE(m.ok());
    ASSERT_EQ(m->keys.size(), 3u) << "prompt " << p << " lost blocks";
    if (round % 3 == 0) {
      absl::StatusOr<std::unique_ptr<TransferHandle>> h =
          e.LoadToGpuTier("default", m->keys, false);
      ASSERT_TRUE(h.ok()) << h.status();
      ASSERT_TRUE((*h)->Wait().ok());
      for (size_t i = 0; i < 3; ++i) {
        ASSERT_EQ(ReadDevice(e.device(), (*h)->slots()[i], bytes),
                  BlockContent(m->keys[i], bytes));
      }
      ASSERT_TRUE((*h)->Release().ok());
    } else {
      testing::DeviceBlocks dst(e.device(), 3, bytes);
      LoadRequest r;
      r.ns = "default";
      r.keys = m->keys;
      r.buffers = KvBuffers::Blocks(dst.ptrs());
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = e.Load(r);
      ASSERT_TRUE(h.ok()) << h.status();
      ASSERT_TRUE((*h)->Wait().ok());
      for (size_t i = 0; i < 3; ++i) {
        ASSERT_EQ(ReadDevice(e.device(), dst[i], bytes), BlockContent(m->keys[i], bytes));
      }
    }
  }
  ASSERT_TRUE(e.Flush().ok());
  const EngineStats st = e.Stats();
  for (int t = 0; t < 2; ++t) {
    size_t per_ns = 0;
    for (const NamespaceStats& ns : st.namespaces) per_ns += ns.blocks_per_tier[t];
    EXPECT_EQ(st.tiers[t].used_blocks, per_ns);
    EXPECT_EQ(st.tiers[t].pinned_blocks, 0u);
  }
  EXPECT_GT(st.tiers[1].evictions + st.tiers[1].demotions, 0u);
  opened->reset();
  std::filesystem::remove_all(dir);
}

TEST_P(EnginePolicyTest, ConcurrentClientsKeepThePolicyConsistent) {
  EngineOptions o = testing::SmallOptions(/*gpu=*/3, /*host=*/5);
  o.gpu_eviction = GetParam();
  o.host_eviction = GetParam();
  absl::StatusOr<std::unique_ptr<Engine>> opened = Engine::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Engine& e = **opened;
  const size_t bytes = o.geometry.block_bytes();
  std::atomic<int> wrong{0};
  auto client = [&](int id) {
    std::mt19937 rng(id);
    for (int i = 0; i < 60; ++i) {
      const std::vector<int32_t> prompt = Prompt(2, static_cast<int32_t>(rng() % 6));
      if (rng() % 2 == 0) {
        StoreBlocks(e, "default", prompt);
        continue;
      }
      absl::StatusOr<MatchResult> m = e.Match("default", prompt);
      if (!m.ok() || m->keys.empty()) continue;
      testing::DeviceBlocks dst(e.device(), m->keys.size(), bytes);
      LoadRequest r;
      r.ns = "default";
      r.keys = m->keys;
      r.buffers = KvBuffers::Blocks(dst.ptrs());
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = e.Load(r);
      if (!h.ok()) continue;  // evicted between Match and Load: a miss, not an error
      if (!(*h)->Wait().ok()) ++wrong;
      for (size_t k = 0; k < m->keys.size(); ++k) {
        if (ReadDevice(e.device(), dst[k], bytes) != BlockContent(m->keys[k], bytes)) ++wrong;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back(client, t);
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}


// Prefix-aware eviction keeps a prompt's head: under pressure the tail goes first, so the
// prompt still matches a prefix. Plain LRU evicts the oldest block, the head, and the
// whole prompt stops matching.
TEST(EngineKvAwareEviction, PrefixAwareEvictsTailsBeforeHeads) {
  for (bool prefix_aware : {false, true}) {
    EngineOptions o = testing::SmallOptions(/*gpu=*/0, /*host=*/4);
    o.prefix_aware_eviction = prefix_aware;
    absl::StatusOr<std::unique_ptr<Engine>> opened = Engine::Open(o);
    ASSERT_TRUE(opened.ok()) << opened.status();
    Engine& e = **opened;
    const std::vector<int32_t> a = Prompt(4, 1);
    StoreBlocks(e, "default", a);  // fills the host tier: blocks a0..a3, a0 oldest
    StoreBlocks(e, "default", Prompt(1, 2));  // one more block: one of a's must go
    absl::StatusOr<MatchResult> m = e.Match("default", a);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->keys.size(), prefix_aware ? 3u : 0u) << "prefix_aware=" << prefix_aware;
  }
}

// Cost-aware eviction drops a host copy that the disk also holds before one that would have
// to be written to disk first.
TEST(EngineKvAwareEviction, CostAwarePrefersCopiesALowerTierStillHolds) {
  for (bool cost_aware : {false, true}) {
    EngineOptions o = testing::SmallOptions(/*gpu=*/0, /*host=*/2);
    o.cost_aware_eviction = cost_aware;
    const std::string dir =
        ::testing::TempDir() + "kvtier-cost-aware-" + (cost_aware ? "on" : "off");
    std::filesystem::remove_all(dir);
    o.disk.directory = dir;
    o.disk.region_bytes = 64 << 10;
    o.disk.capacity_bytes = 4 << 20;
    o.disk.admit_min_seen = 1;
    absl::StatusOr<std::unique_ptr<Engine>> opened = Engine::Open(o);
    ASSERT_TRUE(opened.ok()) << opened.status();
    Engine& e = **opened;
    const size_t bytes = o.geometry.block_bytes();
    // x goes to disk (evicted by y, z), then comes back to the host: host {z, x}, where x
    // also has a disk copy and z does not; z is the older of the two.
    const std::vector<int32_t> x = Prompt(1, 10), y = Prompt(1, 11), z = Prompt(1, 12);
    const std::vector<BlockKey> xk = StoreBlocks(e, "default", x);
    StoreBlocks(e, "default", y);
    StoreBlocks(e, "default", z);
    ASSERT_TRUE(e.Flush().ok());
    {
      testing::DeviceBlocks dst(e.device(), 1, bytes);
      LoadRequest r;
      r.ns = "default";
      r.keys = xk;
      r.buffers = KvBuffers::Blocks(dst.ptrs());
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = e.Load(r);
      ASSERT_TRUE(h.ok()) << h.status();
      ASSERT_TRUE((*h)->Wait().ok());
    }
    ASSERT_TRUE(e.Flush().ok());
    const uint64_t written_before = e.Stats().tiers[2].bytes_in;
    StoreBlocks(e, "default", Prompt(1, 13));  // host full: z or x's host copy must go
    ASSERT_TRUE(e.Flush().ok());
    const uint64_t written = e.Stats().tiers[2].bytes_in - written_before;
    // Cost-aware drops x's host copy (its disk copy remains): nothing written. LRU evicts z,
    // the older, which must be written to disk.
    EXPECT_EQ(written == 0, cost_aware) << "bytes written to disk: " << written;
    absl::StatusOr<MatchResult> mz = e.Match("default", z);
    ASSERT_TRUE(mz.ok());
    ASSERT_EQ(mz->tiers.size(), 1u);
    EXPECT_EQ(mz->tiers[0], cost_aware ? TierKind::kHost : TierKind::kDisk);
    opened->reset();
    std::filesystem::remove_all(dir);
  }
}

TEST(EngineKvAwareEviction, AZeroWindowIsRejected) {
  EngineOptions o = testing::SmallOptions(0, 2);
  o.eviction_window = 0;
  EXPECT_EQ(Engine::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Policies, EnginePolicyTest,
                         ::testing::Values("lru", "fifo", "clock", "sieve", "s3fifo", "arc",
                                           "tinylfu", "lfu", "adaptive"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvtier
