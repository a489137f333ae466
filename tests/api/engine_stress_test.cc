// Several threads store, match, load, lease, prefetch and erase against small tiers at once,
// so eviction, demotion and erasure race with in-flight copies. Every byte that a successful
// load returns must be the block's own; the only acceptable failures are "evicted meanwhile"
// (NotFound) and "every slot busy" (ResourceExhausted). Runs under ThreadSanitizer in CI.

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "engine_test_util.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::kvtier::testing::BlockContent;
using ::kvtier::testing::DeviceBlocks;
using ::kvtier::testing::FillBlocks;
using ::kvtier::testing::KeysOf;
using ::kvtier::testing::Prompt;
using ::kvtier::testing::ReadDevice;
using ::kvtier::testing::SmallOptions;

bool Acceptable(const absl::Status& s) {
  return s.ok() || s.code() == absl::StatusCode::kNotFound ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

void RunStress(EngineOptions o) {
  auto opened = Engine::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Engine& engine = **opened;
  const size_t bytes = o.geometry.block_bytes();
  constexpr int kPrompts = 8;
  constexpr int kBlocks = 4;
  constexpr int kThreads = 4;
  constexpr int kIterations = 250;
  const char* spaces[] = {"default", "tenant-b"};

  std::atomic<int> wrong_bytes{0};
  std::atomic<int> unexpected{0};
  std::atomic<int> loads_verified{0};
  auto client = [&](int id) {
    std::mt19937 rng(1234 + id);
    DeviceBlocks buf(engine.device(), kBlocks, bytes);
    for (int it = 0; it < kIterations; ++it) {
      const char* ns = spaces[rng() % 2];
      const std::vector<int32_t> prompt = Prompt(kBlocks, static_cast<int32_t>(rng() % kPrompts));
      const int op = static_cast<int>(rng() % 10);
      if (op < 3) {  // store
        const std::vector<BlockKey> keys = KeysOf(engine, ns, prompt);
        FillBlocks(engine.device(), buf.ptrs(), keys, bytes);
        StoreRequest r;
        r.ns = ns;
        r.tokens = prompt;
        r.buffers = KvBuffers::Blocks(buf.ptrs());
        auto h = engine.Store(r);
        if (!h.ok() || !(*h)->Wait().ok()) ++unexpected;
      } else if (op < 7) {  // match + load, into caller buffers
        auto m = engine.Match(ns, prompt);
        if (!m.ok()) {
          ++unexpected;
          continue;
        }
        if (m->keys.empty()) continue;
        LoadRequest r;
        r.ns = ns;
        r.keys = m->keys;
        r.layerwise = (it % 2) == 0;
        r.buffers = KvBuffers::Blocks(
            std::vector<DevicePtr>(buf.ptrs().begin(), buf.ptrs().begin() + m->keys.size()));
        auto h = engine.Load(r);
        if (!Acceptable(h.status())) ++unexpected;
        if (!h.ok()) continue;
        if (!(*h)->Wait().ok()) ++unexpected;
        for (size_t i = 0; i < m->keys.size(); ++i) {
          if (ReadDevice(engine.device(), buf[i], bytes) != BlockContent(m->keys[i], bytes)) {
            ++wrong_bytes;
          }
        }
        ++loads_verified;
      } else if (op < 8) {  // lease GPU slots
        auto m = engine.Match(ns, prompt);
        if (!m.ok() || m->keys.empty()) continue;
        std::vector<BlockKey> keys(m->keys.begin(),
                                   m->keys.begin() + std::min<size_t>(2, m->keys.size()));
        auto h = engine.LoadToGpuTier(ns, keys);
        if (!Acceptable(h.status())) ++unexpected;
        if (!h.ok()) continue;
        if (!(*h)->Wait().ok()) ++unexpected;
        for (size_t i = 0; i < keys.size(); ++i) {
          if (ReadDevice(engine.device(), (*h)->slots()[i], bytes) !=
              BlockContent(keys[i], bytes)) {
            ++wrong_bytes;
          }
        }
        if (!(*h)->Release().ok()) ++unexpected;
        ++loads_verified;
      } else if (op < 9) {  // prefetch
        auto h = engine.Prefetch(ns, KeysOf(engine, ns, prompt));
        if (!h.ok() || !(*h)->Wait().ok()) ++unexpected;
      } else {  // erase one block
        const std::vector<BlockKey> keys = KeysOf(engine, ns, prompt);
        if (!engine.Erase(ns, {keys[rng() % keys.size()]}).ok()) ++unexpected;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back(client, i);
  for (auto& t : threads) t.join();

  EXPECT_EQ(wrong_bytes.load(), 0);
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(loads_verified.load(), 50);
  // Bookkeeping is consistent once everything settled (background writes of evicted
  // blocks to disk included: without the Flush one may still hold its writing bit).
  ASSERT_TRUE(engine.Flush().ok());
  EngineStats st = engine.Stats();
  for (int t = 0; t < kNumTiers; ++t) {
    size_t per_ns = 0;
    for (const NamespaceStats& ns : st.namespaces) per_ns += ns.blocks_per_tier[t];
    EXPECT_EQ(st.tiers[t].used_blocks, per_ns) << TierKindName(static_cast<TierKind>(t));
    EXPECT_EQ(st.tiers[t].pinned_blocks, 0u);
  }
  EXPECT_EQ(st.leases_held, 0u);
  EXPECT_GT(st.tiers[1].evictions + st.tiers[1].demotions, 0u);
}

TEST(EngineStress, ConcurrentClientsNeverSeeWrongBytes) {
  EngineOptions o = SmallOptions(/*gpu_blocks=*/6, /*host_blocks=*/20);
  o.device.emulated_copy_gbps = 2.0;  // slow enough that copies overlap with other calls
  RunStress(o);
}

// The same with a small disk tier behind the host tier: evictions become disk writes, loads
// become disk reads gated into host slots, and disk regions are reclaimed under the clients.
TEST(EngineStress, ConcurrentClientsWithADiskTierNeverSeeWrongBytes) {
  char tmpl[] = "/tmp/kvtier-stress-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  EngineOptions o = SmallOptions(/*gpu_blocks=*/4, /*host_blocks=*/10);
  o.device.emulated_copy_gbps = 2.0;
  o.disk.directory = std::string(tmpl) + "/cache";
  o.disk.region_bytes = 64 * 1024;
  o.disk.capacity_bytes = 6 * o.disk.region_bytes;  // 18 records: regions get reclaimed
  o.disk.admit_min_seen = 1;
  RunStress(o);
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace kvtier
