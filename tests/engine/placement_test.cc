// Placement, driven directly (no Engine): slots are handed out free first and then by the
// policy, never from a pinned, leased or still-landing copy; a GPU-only copy is demoted with its
// bytes; a namespace at its quota evicts its own blocks; a host copy the tier below takes
// leaves a gate for the slot's next writer; leases expire; an erased busy block goes at its
// last unpin.

#include "engine/placement.h"

#include <cstring>
#include <memory>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/engine/parts_rig.h"

namespace kvtier {
namespace {

constexpr TierKind kGpu = TierKind::kGpu;
constexpr TierKind kHost = TierKind::kHost;
constexpr TierKind kDisk = TierKind::kDisk;

class PlacementTest : public ::testing::Test, public testing::PartsRig {
 protected:
  void TearDown() override { Close(); }
};

TEST_F(PlacementTest, FreeSlotsFirstThenThePolicysVictim) {
  Make(0, 2);
  ASSERT_TRUE(Put({1, 1}, kHost));
  ASSERT_TRUE(Put({2, 2}, kHost));
  {
    MutexLock lock(&placement->mu());
    table.Find({1, 1}, [&](BlockEntry* e) {
      placement->mu().AssertHeld();
      placement->Touch(kHost, e->slot[kHost]);  // {2,2} is now the least recently used
    });
  }
  ASSERT_TRUE(Put({3, 3}, kHost));
  EXPECT_TRUE(Cached({1, 1}));
  EXPECT_FALSE(Cached({2, 2})) << "the least recently used copy, with nothing below, is dropped";
  EXPECT_EQ(counters->tier(kHost).evictions.load(), 1u);
  EngineStats st;
  st.namespaces.resize(2);
  placement->FillStats(&st);
  EXPECT_EQ(st.tiers[1].used_blocks, 2u);
  EXPECT_EQ(st.namespaces[0].blocks, 2u);
  EXPECT_EQ(st.namespaces[0].blocks_per_tier[1], 2u);
}

TEST_F(PlacementTest, PinnedCopiesAndCopiesStillLandingAreNeverEvicted) {
  Make(0, 2);
  ASSERT_TRUE(Put({1, 1}, kHost));
  ASSERT_TRUE(Put({2, 2}, kHost));
  absl::StatusOr<std::unique_ptr<Event>> created = device->CreateEvent();
  ASSERT_TRUE(created.ok());
  std::shared_ptr<Event> landing(std::move(*created));
  Notification hold;
  uint64_t write_id;
  {
    MutexLock lock(&placement->mu());
    ASSERT_TRUE(placement->PinAll(0, "a", {BlockKey{1, 1}}, "Test").ok());
    // {2,2} is being written by a transfer whose event is not recorded yet.
    write_id = placement->OpenWrite();
    table.Find({2, 2}, [&](BlockEntry* e) {
      placement->mu().AssertHeld();
      placement->StartWrite(*e, kHost, write_id, landing);
    });
  }
  EXPECT_FALSE(Put({3, 3}, kHost)) << "an unrecorded event is not a landed copy";
  {
    MutexLock lock(&placement->mu());
    // The transfer records its event behind a copy that is held.
    ASSERT_TRUE(offload->AddCallback([&hold] { hold.WaitForNotification(); }).ok());
    ASSERT_TRUE(offload->Record(*landing).ok());
    placement->CloseWrite(write_id);
  }
  EXPECT_FALSE(Put({3, 3}, kHost)) << "a copy in flight was evicted";
  hold.Notify();
  ASSERT_TRUE(landing->Synchronize().ok());
  // Landed, and no completion has run: the copy counts as landed all the same.
  ASSERT_TRUE(Put({3, 3}, kHost));
  EXPECT_FALSE(Cached({2, 2}));
  EXPECT_TRUE(Cached({1, 1})) << "a pinned copy was evicted";
}

TEST_F(PlacementTest, ABlockReadByATransferIsFreeOnceItsCopiesHaveRunNotOnceItsCompletionHas) {
  Make(0, 1);
  ASSERT_TRUE(Put({1, 1}, kHost));
  absl::StatusOr<std::unique_ptr<Event>> created = device->CreateEvent();
  ASSERT_TRUE(created.ok());
  std::shared_ptr<Event> done(std::move(*created));
  Notification hold;
  uint64_t transfer;
  {
    MutexLock lock(&placement->mu());
    transfer = placement->OpenWrite();
    ASSERT_TRUE(placement->PinAll(0, "a", {BlockKey{1, 1}}, "Test", &done, transfer).ok());
  }
  EXPECT_FALSE(Put({2, 2}, kHost)) << "a reader whose event is not recorded yet was evicted";
  {
    MutexLock lock(&placement->mu());
    ASSERT_TRUE(offload->AddCallback([&hold] { hold.WaitForNotification(); }).ok());
    ASSERT_TRUE(offload->Record(*done).ok());
    placement->CloseWrite(transfer);
  }
  EXPECT_FALSE(Put({2, 2}, kHost)) << "a reader still copying was evicted";
  hold.Notify();
  ASSERT_TRUE(done->Synchronize().ok());
  // The copies have run; the transfer's completion (OnReadsDone) has not: the block may go.
  ASSERT_TRUE(Put({2, 2}, kHost));
  EXPECT_FALSE(Cached({1, 1}));
  placement->OnReadsDone({BlockKey{1, 1}}, transfer);  // a late completion finds nothing
}

TEST_F(PlacementTest, AGpuOnlyCopyIsDemotedToHostWithItsBytes) {
  Make(1, 2);
  const BlockKey a{1, 1};
  ASSERT_TRUE(Put(a, kGpu));
  std::vector<char> bytes(block);
  for (size_t i = 0; i < block; ++i) bytes[i] = static_cast<char>(i * 13);
  ASSERT_TRUE(offload->CopyToDevice(gpu->Address(0).device, bytes.data(), block).ok());
  SlotReuse reuse;
  {
    MutexLock lock(&placement->mu());
    std::optional<SlotId> slot = placement->AcquireSlot(kGpu, 0, 0, &reuse);
    ASSERT_TRUE(slot.has_value());
  }
  EXPECT_NE(reuse.event, nullptr) << "the slot's next writer must wait for the demotion's copy";
  ASSERT_TRUE(offload->Synchronize().ok());
  ASSERT_TRUE(Has(a, kHost));
  EXPECT_FALSE(Has(a, kGpu));
  const SlotId host_slot = table.Find(a, [](BlockEntry* e) { return e->slot[kHost]; });
  EXPECT_EQ(std::memcmp(host->Address(host_slot).host, bytes.data(), block), 0);
  EXPECT_EQ(counters->tier(kGpu).demotions.load(), 1u);
  completions.Drain();  // the demotion's completion settles the host copy
  EXPECT_FALSE(table.Find(a, [](BlockEntry* e) { return e->is_writing(kHost); }));
}

TEST_F(PlacementTest, ANamespaceAtItsQuotaEvictsOnlyItsOwnBlocks) {
  Make(0, 4);
  {
    MutexLock lock(&placement->mu());
    NamespaceLimits l;
    l.host_bytes = 2 * block;
    placement->ApplyLimits(1, l);
  }
  ASSERT_TRUE(Put({1, 1}, kHost, 0));
  ASSERT_TRUE(Put({2, 2}, kHost, 1));
  ASSERT_TRUE(Put({3, 3}, kHost, 1));
  ASSERT_TRUE(Put({4, 4}, kHost, 1));  // at quota: evicts {2,2}, never {1,1}
  EXPECT_TRUE(Cached({1, 1}));
  EXPECT_FALSE(Cached({2, 2}));
  EXPECT_EQ(namespaces.Get(1).counters.quota_evictions.load(), 1u);
  {
    MutexLock lock(&placement->mu());
    EXPECT_TRUE(placement->AtQuota(1, kHost));
    EXPECT_FALSE(placement->AtQuota(0, kHost));
  }
}

TEST_F(PlacementTest, AHostCopyTakenByTheTierBelowGatesTheSlotsNextWriter) {
  Make(0, 1);
  testing::FakeLowerTier lower(*placement);
  placement->set_lower_tier(&lower);
  ASSERT_TRUE(Put({1, 1}, kHost));
  SlotReuse reuse;
  std::optional<SlotId> slot;
  {
    MutexLock lock(&placement->mu());
    slot = placement->AcquireSlot(kHost, 0, 0, &reuse);
  }
  ASSERT_TRUE(slot.has_value());
  ASSERT_EQ(lower.taken, std::vector<BlockKey>{(BlockKey{1, 1})});
  EXPECT_EQ(lower.from_slots[0], *slot);
  EXPECT_EQ(reuse.gate, lower.gate);
  EXPECT_TRUE(reuse.pending());
  EXPECT_TRUE(Has({1, 1}, kDisk));
  EXPECT_FALSE(Has({1, 1}, kHost));
  // A slot handed back unused keeps its gate for whoever takes it next.
  {
    MutexLock lock(&placement->mu());
    placement->ReturnSlot(kHost, *slot, std::move(reuse));
    SlotReuse again;
    ASSERT_TRUE(placement->AcquireSlot(kHost, 0, 0, &again).has_value());
    EXPECT_EQ(again.gate, lower.gate);
  }
  lower.gate->Notify();
  // Erasing the block drops its copy below too.
  {
    MutexLock lock(&placement->mu());
    EXPECT_EQ(placement->Erase(0, {BlockKey{1, 1}}), 1u);
  }
  EXPECT_EQ(lower.erased, std::vector<BlockKey>{(BlockKey{1, 1})});
}

TEST_F(PlacementTest, AnExpiredLeaseNoLongerHoldsItsSlots) {
  Make(1, 2);
  ASSERT_TRUE(Put({1, 1}, kGpu));
  {
    MutexLock lock(&placement->mu());
    ASSERT_TRUE(placement->PinAll(0, "a", {BlockKey{1, 1}}, "Test").ok());
    placement->AddLease({BlockKey{1, 1}}, absl::Milliseconds(1));
  }
  absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(Put({2, 2}, kGpu)) << "the expired lease still held the GPU tier";
  EXPECT_EQ(counters->leases_expired.load(), 1u);
  EXPECT_TRUE(Has({1, 1}, kHost)) << "the leased block was demoted, not lost";
}

TEST_F(PlacementTest, AnErasedBusyBlockIsInvisibleAndGoesAtItsLastUnpin) {
  Make(0, 2);
  ASSERT_TRUE(Put({1, 1}, kHost));
  MutexLock lock(&placement->mu());
  ASSERT_TRUE(placement->PinAll(0, "a", {BlockKey{1, 1}}, "Test").ok());
  EXPECT_EQ(placement->Erase(0, {BlockKey{1, 1}}), 1u);
  EXPECT_EQ(placement->Erase(0, {BlockKey{1, 1}}), 0u) << "erased already";
  EXPECT_EQ(placement->PinAll(0, "a", {BlockKey{1, 1}}, "Test").code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(table.Find({1, 1}, [](BlockEntry* e) { return e != nullptr; }));
  placement->Unpin({BlockKey{1, 1}});
  EXPECT_FALSE(table.Find({1, 1}, [](BlockEntry* e) { return e != nullptr; }));
  EXPECT_EQ(host->used_slots(), 0u);
}

}  // namespace
}  // namespace kvtier
