// Tenants: namespaces kept apart, per-namespace quotas per tier, and time to live.

#include <thread>

#include "engine/metrics.h"
#include "engine_test_util.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"

namespace kvtier {
namespace {

using ::kvtier::testing::BlockContent;
using ::kvtier::testing::DeviceBlocks;
using ::kvtier::testing::Poison;
using ::kvtier::testing::Prompt;
using ::kvtier::testing::ReadDevice;
using ::kvtier::testing::SmallOptions;

class TenantTest : public ::testing::Test {
 protected:
  void Open(size_t gpu_blocks, size_t host_blocks, std::map<std::string, NamespaceLimits> limits) {
    EngineOptions o = SmallOptions(gpu_blocks, host_blocks);
    o.namespace_limits = std::move(limits);
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    bytes_ = engine_->options().geometry.block_bytes();
  }
  std::vector<BlockKey> Store(absl::string_view ns, const std::vector<int32_t>& tokens) {
    return testing::StoreBlocks(*engine_, ns, tokens);
  }
  // Loads `keys` and compares every byte; returns the Load's status.
  absl::Status LoadExactly(absl::string_view ns, const std::vector<BlockKey>& keys) {
    DeviceBlocks dst(engine_->device(), keys.size(), bytes_);
    Poison(engine_->device(), dst.ptrs(), bytes_);
    LoadRequest r;
    r.ns = ns;
    r.keys = keys;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Load(r);
    if (!h.ok()) return h.status();
    if (absl::Status s = (*h)->Wait(); !s.ok()) return s;
    for (size_t i = 0; i < keys.size(); ++i) {
      EXPECT_EQ(ReadDevice(engine_->device(), dst[i], bytes_), BlockContent(keys[i], bytes_))
          << "block " << i;
    }
    return absl::OkStatus();
  }
  size_t Matched(absl::string_view ns, const std::vector<int32_t>& tokens) {
    absl::StatusOr<MatchResult> m = engine_->Match(ns, tokens);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? m->keys.size() : 0;
  }
  NamespaceStats Ns(int i) { return engine_->Stats().namespaces[i]; }

  std::unique_ptr<Engine> engine_;
  size_t bytes_ = 0;
};

TEST_F(TenantTest, IdenticalTokensInTwoNamespacesShareNothing) {
  Open(0, 16, {});
  const std::vector<int32_t> prompt = Prompt(3, 1);
  const std::vector<BlockKey> a = Store("default", prompt);
  EXPECT_EQ(Matched("tenant-b", prompt), 0u);  // the same tokens are not the other's blocks
  const std::vector<BlockKey> b = Store("tenant-b", prompt);
  for (const BlockKey& k : a) EXPECT_EQ(std::count(b.begin(), b.end(), k), 0);
  EXPECT_EQ(engine_->Stats().tiers[1].used_blocks, 6u);  // no sharing, no deduplication
  // One tenant's keys do not load in the other, and erasing one leaves the other whole.
  EXPECT_EQ(LoadExactly("tenant-b", a).code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(*engine_->EraseNamespace("default"), 3u);
  EXPECT_EQ(Matched("default", prompt), 0u);
  EXPECT_EQ(Matched("tenant-b", prompt), 3u);
  EXPECT_TRUE(LoadExactly("tenant-b", b).ok());
  // Counts are per namespace, and the metrics name namespaces, never blocks or tokens.
  const EngineStats st = engine_->Stats();
  EXPECT_EQ(st.namespaces[0].stored_blocks, 3u);
  EXPECT_EQ(st.namespaces[0].loaded_blocks, 0u);
  EXPECT_EQ(st.namespaces[1].loaded_blocks, 3u);
  const std::string prom = FormatPrometheus(st, bytes_);
  const std::string json = FormatStatsJson(st, bytes_);
  for (const BlockKey& k : b) {
    EXPECT_EQ(prom.find(k.ToHex()), std::string::npos);
    EXPECT_EQ(json.find(k.ToHex()), std::string::npos);
  }
}

TEST_F(TenantTest, AHostQuotaEvictsOnlyTheNamespacesOwnBlocks) {
  NamespaceLimits b;
  b.host_bytes = 4 * 8192;  // 4 blocks
  Open(0, 16, {{"tenant-b", b}});
  const std::vector<BlockKey> mine = Store("default", Prompt(8, 2));
  std::vector<std::vector<BlockKey>> theirs;
  for (int i = 0; i < 5; ++i) theirs.push_back(Store("tenant-b", Prompt(2, 10 + i)));
  NamespaceStats ns = Ns(1);
  EXPECT_EQ(ns.quota_blocks[1], 4u);
  EXPECT_EQ(ns.blocks_per_tier[1], 4u);
  EXPECT_EQ(ns.quota_evictions, 6u);
  EXPECT_EQ(ns.quota_rejections, 0u);
  // The tier had room for all 18 blocks: the other namespace lost nothing.
  EXPECT_EQ(Ns(0).blocks_per_tier[1], 8u);
  EXPECT_TRUE(LoadExactly("default", mine).ok());
  // tenant-b keeps its most recent blocks (LRU among its own).
  EXPECT_TRUE(LoadExactly("tenant-b", theirs[3]).ok());
  EXPECT_TRUE(LoadExactly("tenant-b", theirs[4]).ok());
  EXPECT_EQ(Matched("tenant-b", Prompt(2, 10)), 0u);
}

TEST_F(TenantTest, BlocksBeyondTheQuotaInOneStoreAreRefused) {
  NamespaceLimits b;
  b.host_bytes = 4 * 8192;
  Open(0, 16, {{"tenant-b", b}});
  // The store's own blocks are in flight, so they cannot make room for each other.
  const std::vector<int32_t> prompt = Prompt(6, 3);
  const std::vector<BlockKey> keys = testing::KeysOf(*engine_, "tenant-b", prompt);
  DeviceBlocks src(engine_->device(), 6, bytes_);
  testing::FillBlocks(engine_->device(), src.ptrs(), keys, bytes_);
  StoreRequest r;
  r.ns = "tenant-b";
  r.tokens = prompt;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto h = engine_->Store(r);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  EXPECT_EQ((*h)->blocks_moved(), 4u);
  EXPECT_EQ((*h)->blocks_rejected(), 2u);
  EXPECT_EQ(Ns(1).quota_rejections, 2u);
  EXPECT_EQ(Matched("tenant-b", prompt), 4u);
  EXPECT_TRUE(LoadExactly("tenant-b", {keys.begin(), keys.begin() + 4}).ok());
}

TEST_F(TenantTest, AGpuQuotaBoundsWhatANamespaceHoldsInTheGpuTier) {
  NamespaceLimits b;
  b.gpu_bytes = 2 * 8192;
  Open(6, 16, {{"tenant-b", b}});
  const std::vector<BlockKey> mine = Store("default", Prompt(3, 4));
  const std::vector<BlockKey> theirs = Store("tenant-b", Prompt(4, 5));
  auto lease = engine_->LoadToGpuTier("default", mine, true, absl::ZeroDuration());
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE((*lease)->Release().ok());
  // Three GPU slots at once for a namespace allowed two: refused, nothing half done.
  absl::StatusOr<std::unique_ptr<TransferHandle>> three =
      engine_->LoadToGpuTier("tenant-b", {theirs[0], theirs[1], theirs[2]}, true,
                             absl::ZeroDuration());
  EXPECT_EQ(three.status().code(), absl::StatusCode::kResourceExhausted) << three.status();
  EXPECT_NE(three.status().message().find("GPU quota of 2 blocks"), absl::string_view::npos)
      << three.status();
  EXPECT_EQ(Ns(1).blocks_per_tier[0], 0u);
  for (size_t first : {size_t{0}, size_t{2}}) {
    auto two = engine_->LoadToGpuTier("tenant-b", {theirs[first], theirs[first + 1]}, true,
                                      absl::ZeroDuration());
    ASSERT_TRUE(two.ok()) << two.status();
    ASSERT_TRUE((*two)->Wait().ok());
    ASSERT_TRUE((*two)->Release().ok());
  }
  const EngineStats st = engine_->Stats();
  EXPECT_EQ(st.namespaces[1].blocks_per_tier[0], 2u);
  EXPECT_EQ(st.namespaces[0].blocks_per_tier[0], 3u);  // free slots were there: untouched
  EXPECT_GE(st.namespaces[1].quota_evictions, 2u);
  EXPECT_TRUE(LoadExactly("tenant-b", theirs).ok());
  EXPECT_TRUE(LoadExactly("default", mine).ok());
}

TEST_F(TenantTest, LimitsAreCheckedAndNameWhatIsWrong) {
  Open(0, 8, {});
  NamespaceLimits tiny;
  tiny.host_bytes = 100;
  absl::Status s = engine_->SetNamespaceLimits("default", tiny);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("host_bytes"), absl::string_view::npos) << s;
  NamespaceLimits zero_ttl;
  zero_ttl.ttl = absl::ZeroDuration();
  s = engine_->SetNamespaceLimits("default", zero_ttl);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("ttl"), absl::string_view::npos) << s;
  EXPECT_EQ(engine_->SetNamespaceLimits("nobody", NamespaceLimits{}).code(),
            absl::StatusCode::kNotFound);
  EngineOptions o = SmallOptions(0, 8);
  o.namespace_limits["bad name"] = NamespaceLimits{};
  EXPECT_EQ(Engine::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.namespace_limits.clear();
  o.namespace_limits["tenant-b"].disk_bytes = 1;
  absl::Status open = Engine::Open(o).status();
  EXPECT_EQ(open.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(open.message().find("tenant-b"), absl::string_view::npos) << open;
  EXPECT_NE(open.message().find("disk_bytes"), absl::string_view::npos) << open;
  // A rejected change left the namespace as it was: no quota, blocks stored freely.
  Store("default", Prompt(5, 6));
  EXPECT_EQ(Ns(0).blocks_per_tier[1], 5u);
}

TEST_F(TenantTest, BlocksOlderThanTheTimeToLiveAreGoneFromEveryView) {
  NamespaceLimits b;
  b.ttl = absl::Milliseconds(150);
  Open(0, 16, {{"tenant-b", b}});
  const std::vector<int32_t> prompt = Prompt(3, 7);
  const std::vector<BlockKey> mine = Store("default", prompt);
  const std::vector<BlockKey> theirs = Store("tenant-b", prompt);
  EXPECT_EQ(Matched("tenant-b", prompt), 3u);
  absl::SleepFor(absl::Milliseconds(200));
  // Expired: invisible at once, whether or not the sweep has run yet.
  EXPECT_EQ(Matched("tenant-b", prompt), 0u);
  EXPECT_EQ(LoadExactly("tenant-b", theirs).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Matched("default", prompt), 3u);  // no TTL there
  // The sweep (every ttl / 4) frees their slots.
  for (int i = 0; i < 200 && Ns(1).blocks > 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  NamespaceStats ns = Ns(1);
  EXPECT_EQ(ns.blocks, 0u);
  EXPECT_EQ(ns.expired_blocks, 3u);
  EXPECT_EQ(engine_->Stats().tiers[1].used_blocks, 3u);
  EXPECT_TRUE(LoadExactly("default", mine).ok());
  // Stored again, the blocks live again, for a fresh TTL.
  Store("tenant-b", prompt);
  EXPECT_EQ(Matched("tenant-b", prompt), 3u);
  // Turning the TTL off keeps them.
  ASSERT_TRUE(engine_->SetNamespaceLimits("tenant-b", NamespaceLimits{}).ok());
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(Matched("tenant-b", prompt), 3u);
  EXPECT_TRUE(LoadExactly("tenant-b", theirs).ok());
}

TEST_F(TenantTest, ShorteningTheTimeToLiveAppliesToBlocksAlreadyStored) {
  Open(0, 16, {});
  const std::vector<int32_t> prompt = Prompt(2, 8);
  Store("tenant-b", prompt);
  absl::SleepFor(absl::Milliseconds(60));
  NamespaceLimits b;
  b.ttl = absl::Milliseconds(50);
  ASSERT_TRUE(engine_->SetNamespaceLimits("tenant-b", b).ok());
  EXPECT_EQ(Matched("tenant-b", prompt), 0u);
  for (int i = 0; i < 200 && Ns(1).blocks > 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(Ns(1).expired_blocks, 2u);
}

}  // namespace
}  // namespace kvtier
