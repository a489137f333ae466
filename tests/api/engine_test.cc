// Engine API: store, match, load, leases, eviction and erase, checked byte for byte.

#include "kvtier/engine.h"

#include <thread>

#include "engine_test_util.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::kvtier::testing::BlockContent;
using ::kvtier::testing::DeviceBlocks;
using ::kvtier::testing::FillBlocks;
using ::kvtier::testing::KeysOf;
using ::kvtier::testing::Poison;
using ::kvtier::testing::Prompt;
using ::kvtier::testing::ReadDevice;
using ::kvtier::testing::SmallOptions;

class EngineTest : public ::testing::Test {
 protected:
  void Open(size_t gpu_blocks, size_t host_blocks,
            void (*tweak)(EngineOptions&) = nullptr) {
    EngineOptions o = SmallOptions(gpu_blocks, host_blocks);
    if (tweak) tweak(o);
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    bytes_ = engine_->options().geometry.block_bytes();
  }
  Device& dev() { return engine_->device(); }

  // Stores all blocks of `tokens` (content derived from keys) and waits.
  std::vector<BlockKey> StoreAll(const std::vector<int32_t>& tokens,
                                 absl::string_view ns = "default") {
    return testing::StoreBlocks(*engine_, ns, tokens);
  }

  // Loads `keys` into fresh buffers and checks every byte.
  void ExpectLoadsExactly(const std::vector<BlockKey>& keys, absl::string_view ns = "default",
                          bool layerwise = true) {
    DeviceBlocks dst(dev(), keys.size(), bytes_);
    Poison(dev(), dst.ptrs(), bytes_);
    LoadRequest r;
    r.ns = ns;
    r.keys = keys;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    r.layerwise = layerwise;
    auto h = engine_->Load(r);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
    for (size_t i = 0; i < keys.size(); ++i) {
      EXPECT_EQ(ReadDevice(dev(), dst[i], bytes_), BlockContent(keys[i], bytes_)) << "block " << i;
    }
  }

  std::unique_ptr<Engine> engine_;
  size_t bytes_ = 0;
};

TEST_F(EngineTest, StoreMatchLoadRoundTripIsByteExact) {
  Open(0, 16);
  const std::vector<int32_t> prompt = Prompt(6, 1);
  const std::vector<BlockKey> keys = StoreAll(prompt);
  absl::StatusOr<MatchResult> m = engine_->Match("default", prompt);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->matched_tokens, prompt.size());
  EXPECT_EQ(m->keys, keys);
  for (TierKind t : m->tiers) EXPECT_EQ(t, TierKind::kHost);
  ExpectLoadsExactly(keys, "default", /*layerwise=*/true);
  ExpectLoadsExactly(keys, "default", /*layerwise=*/false);
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.stored_blocks, 6u);
  EXPECT_EQ(st.tiers[1].used_blocks, 6u);
  EXPECT_EQ(st.tiers[1].hits, 12u);
  EXPECT_EQ(st.namespaces[0].blocks, 6u);
}

TEST_F(EngineTest, MatchReturnsTheLongestCachedPrefixOnly) {
  Open(0, 16);
  const std::vector<int32_t> prompt = Prompt(4, 2);
  StoreAll(prompt);
  std::vector<int32_t> other = prompt;
  other[2 * 16 + 3] = -7;  // diverges inside block 2
  other.push_back(1);      // and has a trailing partial block
  auto m = engine_->Match("default", other);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->matched_tokens, 32u);
  EXPECT_EQ(m->keys.size(), 2u);
  auto none = engine_->Match("default", Prompt(4, 3));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->matched_tokens, 0u);
  // Extra key material separates blocks with equal tokens.
  auto salted = engine_->Match("default", prompt, "lora:1");
  ASSERT_TRUE(salted.ok());
  EXPECT_EQ(salted->matched_tokens, 0u);
}

TEST_F(EngineTest, StoringTwiceDeduplicates) {
  Open(0, 16);
  const std::vector<int32_t> prompt = Prompt(3, 4);
  StoreAll(prompt);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  DeviceBlocks src(dev(), 3, bytes_);
  Poison(dev(), src.ptrs(), bytes_);  // if it were copied again, the loads below would fail
  StoreRequest r;
  r.ns = "default";
  r.tokens = prompt;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto h = engine_->Store(r);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ((*h)->blocks_present(), 3u);
  EXPECT_EQ((*h)->blocks_moved(), 0u);
  EXPECT_TRUE((*h)->IsReady());
  ExpectLoadsExactly(keys);
  EXPECT_EQ(engine_->Stats().deduplicated_blocks, 3u);
}

TEST_F(EngineTest, StoreOfLaterBlocksChainsFromTheWholePrompt) {
  Open(0, 16);
  const std::vector<int32_t> prompt = Prompt(4, 5);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  DeviceBlocks src(dev(), 2, bytes_);
  FillBlocks(dev(), src.ptrs(), {keys[2], keys[3]}, bytes_);
  StoreRequest r;
  r.ns = "default";
  r.tokens = prompt;
  r.first_block = 2;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto h = engine_->Store(r);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  // Blocks 2..3 alone are no prefix...
  EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 0u);
  // ...until 0..1 arrive.
  StoreAll(std::vector<int32_t>(prompt.begin(), prompt.begin() + 32));
  EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 64u);
  ExpectLoadsExactly(keys);
}

TEST_F(EngineTest, HostTierEvictsLeastRecentlyUsed) {
  Open(0, 4);
  const std::vector<int32_t> a = Prompt(4, 10);
  const std::vector<BlockKey> ka = StoreAll(a);
  ExpectLoadsExactly({ka[0]});  // touch A0: LRU order is now A1, A2, A3, A0
  StoreAll(Prompt(2, 11));      // needs two slots: A1 and A2 go
  auto m = engine_->Match("default", a);
  EXPECT_EQ(m->matched_tokens, 16u);  // A0 survives; A1 is gone so the prefix stops
  ExpectLoadsExactly({ka[0], ka[3]});
  LoadRequest r;
  r.ns = "default";
  r.keys = {ka[1]};
  DeviceBlocks dst(dev(), 1, bytes_);
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  EXPECT_EQ(engine_->Load(r).status().code(), absl::StatusCode::kNotFound);
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.tiers[1].evictions, 2u);
  EXPECT_EQ(st.tiers[1].used_blocks, 4u);
}

TEST_F(EngineTest, GpuOnlyCopiesAreDemotedToHostNotLost) {
  Open(2, 4);
  const std::vector<BlockKey> ka = StoreAll(Prompt(2, 20));
  {
    auto lease = engine_->LoadToGpuTier("default", ka);
    ASSERT_TRUE(lease.ok()) << lease.status();
    ASSERT_TRUE((*lease)->Wait().ok());
    ASSERT_TRUE((*lease)->Release().ok());
  }
  // Four new blocks push A's host copies out: A now lives only on the GPU.
  const std::vector<BlockKey> kb = StoreAll(Prompt(4, 21));
  auto m = engine_->Match("default", Prompt(2, 20));
  ASSERT_EQ(m->matched_tokens, 32u);
  EXPECT_EQ(m->tiers[0], TierKind::kGpu);
  EXPECT_EQ(engine_->Stats().namespaces[0].blocks_per_tier[1], 4u);
  // Leasing B0, B1 needs both GPU slots: A0, A1 must be demoted (copied back to host),
  // taking the host slots of B2, B3 (the least recently used unpinned host copies).
  auto lease = engine_->LoadToGpuTier("default", {kb[0], kb[1]});
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE((*lease)->Wait().ok());
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(ReadDevice(dev(), (*lease)->slots()[i], bytes_), BlockContent(kb[i], bytes_));
  }
  ASSERT_TRUE((*lease)->Release().ok());
  m = engine_->Match("default", Prompt(2, 20));
  ASSERT_EQ(m->matched_tokens, 32u);
  EXPECT_EQ(m->tiers[0], TierKind::kHost);
  ExpectLoadsExactly(ka);  // the demoted bytes are the original bytes
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.tiers[0].demotions, 2u);
  EXPECT_EQ(st.tiers[1].evictions, 4u);  // A0, A1 host copies, then B2, B3
  EXPECT_EQ(engine_->Match("default", Prompt(4, 21))->matched_tokens, 32u);
}

// A GPU-only copy whose demotion finds no host slot (every host block pinned by a load in
// flight) is not evicted: dropping it would lose the block. The call that needed the GPU
// slot is refused instead, and the block stays whole.
TEST_F(EngineTest, AGpuOnlyCopyThatCannotBeDemotedIsKeptNotDropped) {
  Open(2, 4, [](EngineOptions& o) {
    testing::UseEmulatedDevice(o);  // the throttle keeps the host blocks' load in flight
    o.device.emulated_copy_gbps = 0.0002;  // 200 KB/s: 4 blocks of 8 KiB take ~160 ms
  });
  const std::vector<BlockKey> ka = StoreAll(Prompt(2, 22));
  {
    auto lease = engine_->LoadToGpuTier("default", ka);
    ASSERT_TRUE(lease.ok()) << lease.status();
    ASSERT_TRUE((*lease)->Wait().ok());
    ASSERT_TRUE((*lease)->Release().ok());
  }
  const std::vector<BlockKey> kb = StoreAll(Prompt(4, 23));  // A now lives only on the GPU
  ASSERT_EQ(engine_->Match("default", Prompt(2, 22))->tiers,
            std::vector<TierKind>(2, TierKind::kGpu));
  // A load of all four host blocks pins every host slot while it runs.
  DeviceBlocks dst(dev(), kb.size(), bytes_);
  LoadRequest r;
  r.ns = "default";
  r.keys = kb;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  auto pinning = engine_->Load(r);
  ASSERT_TRUE(pinning.ok()) << pinning.status();
  ASSERT_FALSE((*pinning)->IsReady());
  // B0 to the GPU tier needs a GPU slot; both hold only copies that cannot be demoted now.
  auto refused = engine_->LoadToGpuTier("default", {kb[0]});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  ASSERT_TRUE((*pinning)->Wait().ok());
  // A is whole: both blocks match and load byte for byte.
  EXPECT_EQ(engine_->Match("default", Prompt(2, 22))->matched_tokens, 32u);
  ExpectLoadsExactly(ka);
  EXPECT_EQ(engine_->Stats().tiers[0].evictions, 0u) << "a GPU-only copy was dropped";
}

TEST_F(EngineTest, LeasedSlotsHoldTheBytesAndAreNeverEvicted) {
  Open(2, 8);
  const std::vector<BlockKey> keys = StoreAll(Prompt(3, 30));
  auto lease = engine_->LoadToGpuTier("default", {keys[0], keys[1]}, /*layerwise=*/true);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE((*lease)->WaitLayerHost(3).ok());
  ASSERT_TRUE((*lease)->Wait().ok());
  ASSERT_EQ((*lease)->slots().size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(ReadDevice(dev(), (*lease)->slots()[i], bytes_), BlockContent(keys[i], bytes_));
  }
  EXPECT_EQ(engine_->Stats().leases_held, 1u);
  auto blocked = engine_->LoadToGpuTier("default", {keys[2]});
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kResourceExhausted) << blocked.status();
  auto skipped = engine_->Prefetch("default", {keys[2]});
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ((*skipped)->blocks_rejected(), 1u);
  // Still intact after the failed attempts.
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(ReadDevice(dev(), (*lease)->slots()[i], bytes_), BlockContent(keys[i], bytes_));
  }
  ASSERT_TRUE((*lease)->Release().ok());
  ASSERT_TRUE((*lease)->Release().ok());  // idempotent
  auto next = engine_->LoadToGpuTier("default", {keys[2]});
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE((*next)->Wait().ok());
  EXPECT_EQ(ReadDevice(dev(), (*next)->slots()[0], bytes_), BlockContent(keys[2], bytes_));
  EXPECT_EQ((*next)->blocks_moved(), 1u);
}

TEST_F(EngineTest, ForgottenLeaseExpiresAndItsSlotsReturn) {
  Open(1, 4, [](EngineOptions& o) { o.lease_timeout = absl::Milliseconds(400); });
  const std::vector<BlockKey> keys = StoreAll(Prompt(2, 31));
  auto forgotten = engine_->LoadToGpuTier("default", {keys[0]});
  ASSERT_TRUE(forgotten.ok());
  ASSERT_TRUE((*forgotten)->Wait().ok());
  EXPECT_EQ(engine_->LoadToGpuTier("default", {keys[1]}).status().code(),
            absl::StatusCode::kResourceExhausted);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto later = engine_->LoadToGpuTier("default", {keys[1]});
  ASSERT_TRUE(later.ok()) << later.status();
  ASSERT_TRUE((*later)->Wait().ok());
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.leases_expired, 1u);
  EXPECT_EQ(st.leases_held, 1u);
  EXPECT_TRUE((*forgotten)->Release().ok());  // releasing an expired lease is harmless
}

TEST_F(EngineTest, PrefetchPromotesToGpuAndLoadsThenComeFromThere) {
  Open(4, 8);
  const std::vector<int32_t> prompt = Prompt(3, 40);
  const std::vector<BlockKey> keys = StoreAll(prompt);
  auto p = engine_->Prefetch("default", keys);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->blocks_moved(), 3u);
  // A load issued before the prefetch lands must still see the bytes (it waits on the
  // prefetch's event on the device).
  ExpectLoadsExactly(keys);
  ASSERT_TRUE((*p)->Wait().ok());
  auto m = engine_->Match("default", prompt);
  for (TierKind t : m->tiers) EXPECT_EQ(t, TierKind::kGpu);
  auto again = engine_->Prefetch("default", keys);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->blocks_present(), 3u);
  EXPECT_GE(engine_->Stats().tiers[0].hits, 3u);
}

TEST_F(EngineTest, EraseRemovesBlocksFromEveryTier) {
  Open(4, 8);
  const std::vector<int32_t> prompt = Prompt(3, 50);
  const std::vector<BlockKey> keys = StoreAll(prompt);
  auto p = engine_->Prefetch("default", {keys[0]});
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->Wait().ok());
  auto n = engine_->Erase("default", {keys[0], keys[2]});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 0u);
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.tiers[0].used_blocks, 0u);
  EXPECT_EQ(st.tiers[1].used_blocks, 1u);
  EXPECT_EQ(*engine_->Erase("default", {keys[0]}), 0u);  // already gone
  ExpectLoadsExactly({keys[1]});
}

TEST_F(EngineTest, ErasingALeasedBlockHidesItAtOnceAndFreesItOnRelease) {
  Open(2, 4);
  const std::vector<int32_t> prompt = Prompt(1, 51);
  const std::vector<BlockKey> keys = StoreAll(prompt);
  auto lease = engine_->LoadToGpuTier("default", keys);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE((*lease)->Wait().ok());
  EXPECT_EQ(*engine_->Erase("default", keys), 1u);
  EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 0u);
  // The lease holder can still read its slot until it releases.
  EXPECT_EQ(ReadDevice(dev(), (*lease)->slots()[0], bytes_), BlockContent(keys[0], bytes_));
  EXPECT_EQ(engine_->Stats().tiers[0].used_blocks, 1u);
  ASSERT_TRUE((*lease)->Release().ok());
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.tiers[0].used_blocks, 0u);
  EXPECT_EQ(st.tiers[1].used_blocks, 0u);
  EXPECT_EQ(st.namespaces[0].blocks, 0u);
}

TEST_F(EngineTest, NamespacesNeverShareBlocksMatchesOrCounts) {
  Open(2, 16);
  const std::vector<int32_t> prompt = Prompt(2, 60);
  const std::vector<BlockKey> ka = StoreAll(prompt, "default");
  EXPECT_EQ(engine_->Match("tenant-b", prompt)->matched_tokens, 0u);
  // Another tenant presenting the first tenant's keys gets nothing.
  DeviceBlocks dst(dev(), 2, bytes_);
  LoadRequest r;
  r.ns = "tenant-b";
  r.keys = ka;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  EXPECT_EQ(engine_->Load(r).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->LoadToGpuTier("tenant-b", ka).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*engine_->Erase("tenant-b", ka), 0u);
  auto pf = engine_->Prefetch("tenant-b", ka);
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ((*pf)->blocks_moved(), 0u);
  // The same tokens in tenant-b are different blocks.
  const std::vector<BlockKey> kb = StoreAll(prompt, "tenant-b");
  EXPECT_NE(ka[0], kb[0]);
  EngineStats st = engine_->Stats();
  ASSERT_EQ(st.namespaces.size(), 2u);
  EXPECT_EQ(st.namespaces[0].blocks, 2u);
  EXPECT_EQ(st.namespaces[1].blocks, 2u);
  // Erasing one namespace leaves the other whole.
  EXPECT_EQ(*engine_->EraseNamespace("tenant-b"), 2u);
  EXPECT_EQ(engine_->Match("tenant-b", prompt)->matched_tokens, 0u);
  EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 32u);
  ExpectLoadsExactly(ka);
  EXPECT_EQ(engine_->Stats().namespaces[1].blocks, 0u);
}

TEST_F(EngineTest, CreateNamespace) {
  Open(0, 4);
  EXPECT_TRUE(engine_->CreateNamespace("team-x").ok());
  EXPECT_EQ(engine_->CreateNamespace("team-x").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(engine_->CreateNamespace("bad name").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->CreateNamespace("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->ListNamespaces(),
            (std::vector<std::string>{"default", "tenant-b", "team-x"}));
  StoreAll(Prompt(1, 61), "team-x");
  EXPECT_EQ(engine_->Match("team-x", Prompt(1, 61))->matched_tokens, 16u);
}

TEST_F(EngineTest, StoreWaitsForTheProducerStreamWithoutBlockingTheHost) {
  Open(0, 8, [](EngineOptions& o) { o.device.emulated_copy_gbps = 0.05; });  // 50 MB/s
  const std::vector<int32_t> prompt = Prompt(2, 70);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  DeviceBlocks src(dev(), 2, bytes_);
  Poison(dev(), src.ptrs(), bytes_);
  // The "compute" stream writes the real KV slowly (throttled H2D) after Store is called.
  auto compute = dev().CreateStream();
  ASSERT_TRUE(compute.ok());
  std::vector<std::vector<uint8_t>> content = {BlockContent(keys[0], bytes_),
                                               BlockContent(keys[1], bytes_)};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE((*compute)->CopyToDevice(src[i], content[i].data(), bytes_).ok());
  }
  StoreRequest r;
  r.ns = "default";
  r.tokens = prompt;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  r.after = compute->get();
  auto h = engine_->Store(r);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  ExpectLoadsExactly(keys);  // the stored bytes are the producer's, not the poison
}

TEST_F(EngineTest, WaitLayerOrdersTheCallersStreamAfterThatLayer) {
  Open(0, 8, [](EngineOptions& o) { o.device.emulated_copy_gbps = 0.02; });  // 20 MB/s
  const std::vector<int32_t> prompt = Prompt(4, 71);
  const std::vector<BlockKey> keys = StoreAll(prompt);
  const Geometry g = engine_->options().geometry;
  DeviceBlocks dst(dev(), 4, bytes_);
  Poison(dev(), dst.ptrs(), bytes_);
  LoadRequest r;
  r.ns = "default";
  r.keys = keys;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  auto h = engine_->Load(r);
  ASSERT_TRUE(h.ok());
  // The "attention" stream reads layer 2 right after waiting for it; the host never waits.
  auto attention = dev().CreateStream();
  ASSERT_TRUE(attention.ok());
  ASSERT_TRUE((*h)->WaitLayer(2, **attention).ok());
  std::vector<uint8_t> seen(g.layer_bytes() * 4);
  for (int b = 0; b < 4; ++b) {
    ASSERT_TRUE((*attention)
                    ->CopyToHost(seen.data() + b * g.layer_bytes(),
                                 dst[b] + g.Offset(2, KvPart::kKey), g.layer_bytes())
                    .ok());
  }
  ASSERT_TRUE((*attention)->Synchronize().ok());
  for (int b = 0; b < 4; ++b) {
    const std::vector<uint8_t> c = BlockContent(keys[b], bytes_);
    EXPECT_TRUE(std::equal(c.begin() + g.Offset(2, KvPart::kKey),
                           c.begin() + g.Offset(2, KvPart::kKey) + g.layer_bytes(),
                           seen.begin() + b * g.layer_bytes()))
        << "block " << b;
  }
  EXPECT_TRUE((*h)->Wait().ok());
}

TEST_F(EngineTest, LookupsCountAHitInTheHighestTierHoldingABlockAndAMissInEachAbove) {
  Open(4, 8);
  const std::vector<int32_t> prompt = Prompt(3, 80);
  const std::vector<BlockKey> keys = StoreAll(prompt);  // stored into the host tier
  // Two blocks promoted host -> GPU: misses in the GPU tier, hits in the host tier.
  auto lease = engine_->LoadToGpuTier("default", {keys[0], keys[1]}, true, absl::ZeroDuration());
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE((*lease)->Wait().ok());
  ASSERT_TRUE((*lease)->Release().ok());
  // All three loaded: two now served by the GPU tier, one by the host tier.
  ExpectLoadsExactly(keys);
  // Three full blocks nobody stored: a miss in every tier.
  ASSERT_EQ(engine_->Match("default", Prompt(3, 81))->matched_tokens, 0u);
  const EngineStats st = engine_->Stats();
  EXPECT_EQ(st.tiers[0].hits, 2u);
  EXPECT_EQ(st.tiers[0].misses, 2u + 1u + 3u);
  EXPECT_EQ(st.tiers[1].hits, 2u + 1u);
  EXPECT_EQ(st.tiers[1].misses, 3u);
  EXPECT_EQ(st.tiers[2].hits + st.tiers[2].misses, 0u);  // no disk tier
  const NamespaceStats& ns = st.namespaces[0];
  EXPECT_EQ(ns.hits_per_tier[0], 2u);
  EXPECT_EQ(ns.misses_per_tier[0], 6u);
  EXPECT_EQ(ns.hits_per_tier[1], 3u);
  EXPECT_EQ(ns.misses_per_tier[1], 3u);
  EXPECT_EQ(ns.loaded_blocks, 2u + 3u);
  // Nothing of the other namespace's counts moved.
  EXPECT_EQ(st.namespaces[1].hits_per_tier[0] + st.namespaces[1].misses_per_tier[0] +
                st.namespaces[1].hits_per_tier[1] + st.namespaces[1].misses_per_tier[1],
            0u);
}

TEST_F(EngineTest, StallTimeCountsOnlyWaitsThatFindTheBytesInFlight) {
  // 5 MB/s: loading 4 blocks of 8 KiB takes about 6.5 ms.
  Open(0, 8, [](EngineOptions& o) {
    testing::UseEmulatedDevice(o);  // a real GPU finishes before the first wait looks
    o.device.emulated_copy_gbps = 0.005;
  });
  const std::vector<BlockKey> keys = StoreAll(Prompt(4, 82));
  DeviceBlocks dst(dev(), 4, bytes_);
  LoadRequest r;
  r.ns = "default";
  r.keys = keys;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  EngineStats before = engine_->Stats();

  // A host wait right away blocks until the bytes land: all of it is stall.
  auto h = engine_->Load(r);
  ASSERT_TRUE(h.ok()) << h.status();
  const absl::Time start = absl::Now();
  ASSERT_TRUE((*h)->Wait().ok());
  const uint64_t blocked_ns = absl::ToInt64Nanoseconds(absl::Now() - start);
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.stalled_waits - before.stalled_waits, 1u);
  EXPECT_GT(st.stall_ns - before.stall_ns, 2'000'000u);  // well past 0: ~6.5 ms of copies
  EXPECT_LE(st.stall_ns - before.stall_ns, blocked_ns);
  EXPECT_EQ(st.namespaces[0].stall_ns, st.stall_ns);
  EXPECT_EQ(st.namespaces[1].stall_ns, 0u);

  // Waiting again on landed bytes, host or stream, is no stall.
  auto attention = dev().CreateStream();
  ASSERT_TRUE(attention.ok());
  ASSERT_TRUE((*h)->Wait().ok());
  ASSERT_TRUE((*h)->WaitLayer(3, **attention).ok());
  ASSERT_TRUE((*attention)->Synchronize().ok());
  before = st;
  st = engine_->Stats();
  EXPECT_EQ(st.stalled_waits, before.stalled_waits);
  EXPECT_EQ(st.stall_ns, before.stall_ns);

  // A stream wait on the last layer of a fresh load: the stream sits there, the host does not.
  auto h2 = engine_->Load(r);
  ASSERT_TRUE(h2.ok()) << h2.status();
  ASSERT_TRUE((*h2)->WaitLayer(3, **attention).ok());
  ASSERT_TRUE((*attention)->Synchronize().ok());
  st = engine_->Stats();
  EXPECT_EQ(st.stalled_waits - before.stalled_waits, 1u);
  EXPECT_GT(st.stall_ns, before.stall_ns);
  EXPECT_EQ(st.namespaces[0].stalled_waits, st.stalled_waits);
  ASSERT_TRUE((*h2)->Wait().ok());
}

}  // namespace
}  // namespace kvtier
