// tests/api/engine_prefetch_test.cc — the prefetch pipeline: look-ahead hints served in the
// background within a budget, cancelled hints, prefetch under memory pressure (leased blocks
// are never evicted for a hint), in-time / late / unused accounting, and the layer-wise
// ordering promise: a reader ordered after layer l's event sees all of layer l's bytes.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "tests/api/engine_test_util.h"

namespace kvtier {
namespace {

using testing::BlockContent;
using testing::Prompt;
using testing::ReadDevice;
using testing::StoreBlocks;

// Polls `cond` until it holds or 10 s pass.
bool WaitFor(const std::function<bool()>& cond) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!cond()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

class PrefetchTest : public ::testing::Test {
 protected:
  void Open(size_t gpu_blocks, size_t host_blocks, size_t budget_blocks,
            double copy_gbps = 0) {
    EngineOptions o = testing::SmallOptions(gpu_blocks, host_blocks);
    o.prefetch_budget_bytes = budget_blocks * o.geometry.block_bytes();
    o.device.emulated_copy_gbps = copy_gbps;
    // A throttled link is what these tests catch transfers in flight with (and their check
    // kernels have a CPU body only): on the emulated device even under KVTIER_TEST_DEVICE.
    if (copy_gbps > 0) testing::UseEmulatedDevice(o);
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    bytes_ = engine_->options().geometry.block_bytes();
  }
  size_t InGpu(const std::vector<int32_t>& prompt, const std::vector<BlockKey>& keys) {
    absl::StatusOr<MatchResult> m = engine_->Match("default", prompt);
    EXPECT_TRUE(m.ok());
    size_t n = 0;
    for (size_t i = 0; i < m->tiers.size() && i < keys.size(); ++i) {
      n += m->tiers[i] == TierKind::kGpu;
    }
    return n;
  }
  PrefetchStats P() { return engine_->Stats().prefetch; }

  std::unique_ptr<Engine> engine_;
  size_t bytes_ = 0;
};

TEST_F(PrefetchTest, HintsPromoteInTheBackgroundAndAreUsedInTime) {
  Open(8, 16, 8);
  const std::vector<int32_t> prompt = Prompt(4, 1);
  const std::vector<BlockKey> keys = StoreBlocks(*engine_, "default", prompt);
  ASSERT_EQ(InGpu(prompt, keys), 0u);
  absl::StatusOr<uint64_t> hint = engine_->Hint("default", keys);
  ASSERT_TRUE(hint.ok()) << hint.status();
  ASSERT_TRUE(WaitFor([&] { return P().issued == 4; }));
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(InGpu(prompt, keys), 4u);
  EXPECT_EQ(P().outstanding_bytes, 4 * bytes_);

  absl::StatusOr<std::unique_ptr<TransferHandle>> h =
      engine_->LoadToGpuTier("default", keys, /*layerwise=*/false);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  EXPECT_EQ((*h)->blocks_present(), 4u);  // nothing left to move
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(ReadDevice(engine_->device(), (*h)->slots()[i], bytes_),
              BlockContent(keys[i], bytes_));
  }
  ASSERT_TRUE((*h)->Release().ok());
  const PrefetchStats p = P();
  EXPECT_EQ(p.hinted, 4u);
  EXPECT_EQ(p.in_time, 4u);
  EXPECT_EQ(p.late, 0u);
  EXPECT_EQ(p.unused, 0u);
  EXPECT_EQ(p.outstanding_bytes, 0u);
}

TEST_F(PrefetchTest, TheBudgetBoundsWhatHintsHoldAndUseFreesIt) {
  Open(8, 16, /*budget_blocks=*/2);
  const std::vector<int32_t> prompt = Prompt(6, 2);
  const std::vector<BlockKey> keys = StoreBlocks(*engine_, "default", prompt);
  ASSERT_TRUE(engine_->Hint("default", keys).ok());
  ASSERT_TRUE(WaitFor([&] { return P().issued == 2; }));
  ASSERT_TRUE(engine_->Flush().ok());
  absl::SleepFor(absl::Milliseconds(20));  // give a wrong prefetcher the chance to overrun
  EXPECT_EQ(P().issued, 2u);
  EXPECT_EQ(P().queued, 4u);
  EXPECT_EQ(InGpu(prompt, keys), 2u);
  // Using the first two (in hint order) returns their budget: the next two follow.
  for (size_t i = 0; i < 3; ++i) {
    const std::vector<BlockKey> pair = {keys[2 * i], keys[2 * i + 1]};
    ASSERT_TRUE(WaitFor([&] { return P().issued == 2 * (i + 1); })) << i;
    testing::DeviceBlocks dst(engine_->device(), 2, bytes_);
    LoadRequest r;
    r.ns = "default";
    r.keys = pair;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Load(r);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
    EXPECT_EQ(ReadDevice(engine_->device(), dst[1], bytes_), BlockContent(pair[1], bytes_));
    EXPECT_LE(P().outstanding_bytes, 2 * bytes_);
  }
  EXPECT_TRUE(WaitFor([&] { return P().queued == 0; }));
  const PrefetchStats p = P();
  EXPECT_EQ(p.issued, 6u);
  EXPECT_EQ(p.in_time + p.late, 6u);
}

TEST_F(PrefetchTest, CancelDropsWhatHasNotStarted) {
  Open(8, 16, /*budget_blocks=*/1);
  const std::vector<int32_t> prompt = Prompt(4, 3);
  const std::vector<BlockKey> keys = StoreBlocks(*engine_, "default", prompt);
  absl::StatusOr<uint64_t> hint = engine_->Hint("default", keys);
  ASSERT_TRUE(hint.ok());
  ASSERT_TRUE(WaitFor([&] { return P().issued == 1; }));
  absl::StatusOr<size_t> dropped = engine_->CancelHint(*hint);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(*dropped, 3u);
  EXPECT_EQ(P().cancelled, 3u);
  EXPECT_EQ(P().queued, 0u);
  // Cancelling again drops nothing; an id never issued is NotFound.
  EXPECT_EQ(*engine_->CancelHint(*hint), 0u);
  EXPECT_EQ(engine_->CancelHint(*hint + 100).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->CancelHint(0).status().code(), absl::StatusCode::kNotFound);
  // The one that had started lands; erased unused, it counts as unused.
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(InGpu(prompt, keys), 1u);
  ASSERT_TRUE(engine_->Erase("default", keys).ok());
  EXPECT_EQ(P().unused, 1u);
  EXPECT_EQ(P().outstanding_bytes, 0u);
}

TEST_F(PrefetchTest, HintsNeverEvictLeasedBlocksOrEachOthersUnusedBlocks) {
  Open(/*gpu=*/4, 16, /*budget_blocks=*/4);
  const std::vector<int32_t> prompt = Prompt(3, 4);
  const std::vector<BlockKey> leased = StoreBlocks(*engine_, "default", prompt);
  absl::StatusOr<std::unique_ptr<TransferHandle>> lease =
      engine_->LoadToGpuTier("default", leased, false);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE((*lease)->Wait().ok());
  const std::vector<int32_t> other = Prompt(3, 5);
  const std::vector<BlockKey> hinted = StoreBlocks(*engine_, "default", other);
  ASSERT_TRUE(engine_->Hint("default", hinted).ok());
  // One free slot: the first hinted block takes it; the other two find no slot they may
  // take (three leased, one holding an unused hinted block) and are skipped.
  ASSERT_TRUE(WaitFor([&] { return P().issued + P().skipped == 3; }));
  EXPECT_EQ(P().issued, 1u);
  EXPECT_EQ(P().skipped, 2u);
  for (size_t i = 0; i < leased.size(); ++i) {
    EXPECT_EQ(ReadDevice(engine_->device(), (*lease)->slots()[i], bytes_),
              BlockContent(leased[i], bytes_))
        << "leased block " << i;
  }
  EXPECT_EQ(InGpu(prompt, leased), 3u);
  ASSERT_TRUE((*lease)->Release().ok());
}

TEST_F(PrefetchTest, ALoadThatCatchesAPrefetchInFlightCountsItLateAndWaitsForIt) {
  // 8 KiB blocks over a 0.0002 GB/s link: 40 ms per promotion.
  Open(8, 16, 8, /*copy_gbps=*/0.0002);
  const std::vector<int32_t> prompt = Prompt(1, 6);
  const std::vector<BlockKey> keys = StoreBlocks(*engine_, "default", prompt);
  ASSERT_TRUE(engine_->Hint("default", keys).ok());
  ASSERT_TRUE(WaitFor([&] { return P().issued == 1; }));
  absl::StatusOr<std::unique_ptr<TransferHandle>> h =
      engine_->LoadToGpuTier("default", keys, false);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(P().late, 1u);
  ASSERT_TRUE((*h)->Wait().ok());
  // The lease's handle waited for the prefetch's copy: the bytes are there.
  EXPECT_EQ(ReadDevice(engine_->device(), (*h)->slots()[0], bytes_),
            BlockContent(keys[0], bytes_));
  ASSERT_TRUE((*h)->Release().ok());
}

// Every GPU slot holds a prefetch still in flight: a LoadToGpuTier then waits for those
// copies to land and takes a slot, rather than answer ResourceExhausted (the long-context
// demo met this under load). Slots held by a lease are not waited for: that answer comes at
// once.
TEST_F(PrefetchTest, ALoadThatFindsEveryGpuSlotInFlightWaitsForACopyToLand) {
  // 8 KiB blocks over a 0.0002 GB/s link: 40 ms per copy.
  Open(/*gpu=*/4, 16, /*budget_blocks=*/4, /*copy_gbps=*/0.0002);
  const std::vector<BlockKey> ahead = StoreBlocks(*engine_, "default", Prompt(4, 11));
  const std::vector<BlockKey> now = StoreBlocks(*engine_, "default", Prompt(1, 12));
  absl::StatusOr<std::unique_ptr<TransferHandle>> prefetch = engine_->Prefetch("default", ahead);
  ASSERT_TRUE(prefetch.ok()) << prefetch.status();
  ASSERT_FALSE((*prefetch)->IsReady()) << "the copies landed before the load: nothing tested";
  absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->LoadToGpuTier("default", now, false);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  EXPECT_EQ(ReadDevice(engine_->device(), (*h)->slots()[0], bytes_), BlockContent(now[0], bytes_));
  ASSERT_TRUE((*prefetch)->Wait().ok());

  // Lease ahead[1..3] too (one of them may come back in place of ahead[0]): every slot is
  // leased, and a load of ahead[0], which is not in the tier, is refused at once.
  absl::StatusOr<std::unique_ptr<TransferHandle>> more =
      engine_->LoadToGpuTier("default", absl::MakeConstSpan(ahead).subspan(1, 3), false);
  ASSERT_TRUE(more.ok()) << more.status();
  ASSERT_TRUE((*more)->Wait().ok());
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<TransferHandle>> refused =
      engine_->LoadToGpuTier("default", absl::MakeConstSpan(ahead).first(1), false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "waited for slots that leases hold";
  ASSERT_TRUE((*more)->Release().ok());
  ASSERT_TRUE((*h)->Release().ok());
}

TEST_F(PrefetchTest, HintsNeedATierToPromoteIntoAndAKnownNamespace) {
  Open(0, 4, 2);
  const std::vector<BlockKey> keys = StoreBlocks(*engine_, "default", Prompt(1, 7));
  EXPECT_EQ(engine_->Hint("default", keys).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->Hint("no-such-namespace", keys).status().code(),
            absl::StatusCode::kNotFound);
}

// A reader ordered after layer l's event on its own stream (as an attention kernel would
// be) always sees all of layer l's bytes, over a slow link where an early read would not.
TEST_F(PrefetchTest, AReaderAfterWaitLayerSeesEveryByteOfThatLayer) {
  Open(0, 16, 0, /*copy_gbps=*/0.02);
  const Geometry g = engine_->options().geometry;
  const std::vector<int32_t> prompt = Prompt(4, 8);
  const std::vector<BlockKey> keys = StoreBlocks(*engine_, "default", prompt);
  testing::DeviceBlocks dst(engine_->device(), keys.size(), bytes_);
  testing::Poison(engine_->device(), dst.ptrs(), bytes_);
  LoadRequest r;
  r.ns = "default";
  r.keys = keys;
  r.layerwise = true;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  absl::StatusOr<std::unique_ptr<Stream>> compute = engine_->device().CreateStream();
  ASSERT_TRUE(compute.ok());
  absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Load(r);
  ASSERT_TRUE(h.ok()) << h.status();
  auto mismatches = std::make_shared<std::atomic<int>>(0);
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    ASSERT_TRUE((*h)->WaitLayer(l, **compute).ok());
    KernelLaunch check;
    check.name = "check_layer";
    std::vector<std::vector<uint8_t>> want;
    for (const BlockKey& k : keys) {
      const std::vector<uint8_t> content = BlockContent(k, bytes_);
      want.emplace_back(content.begin() + g.Offset(l, KvPart::kKey),
                        content.begin() + g.Offset(l, KvPart::kKey) + g.layer_bytes());
    }
    check.cpu = [&, l, want = std::move(want), mismatches](const KernelLaunch::Resolver& resolve) {
      for (size_t b = 0; b < want.size(); ++b) {
        const void* p = resolve(dst[b] + g.Offset(l, KvPart::kKey), g.layer_bytes());
        if (p == nullptr || std::memcmp(p, want[b].data(), want[b].size()) != 0) ++*mismatches;
      }
      return absl::OkStatus();
    };
    ASSERT_TRUE((*compute)->Launch(std::move(check)).ok());
  }
  ASSERT_TRUE((*compute)->Synchronize().ok());
  ASSERT_TRUE((*h)->Wait().ok());
  EXPECT_EQ(mismatches->load(), 0);
}

}  // namespace
}  // namespace kvtier
