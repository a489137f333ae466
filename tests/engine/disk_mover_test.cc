// DiskMover, driven with a Placement and a real disk tier (no Engine): a host copy handed down
// is attached to its record at once and its bytes copied out later, off the caller's thread;
// a slow disk never makes the hand-down wait; a read into a slot whose old bytes are still on
// their way out goes through a bounce buffer and lands after them, and is never held behind
// another slot's copy-out; a reopened directory brings every block back.

#include "engine/disk_mover.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/pending_transfer.h"
#include "gtest/gtest.h"
#include "io/io_engine.h"
#include "tests/engine/parts_rig.h"

namespace kvtier {
namespace {

constexpr TierKind kHost = TierKind::kHost;
constexpr TierKind kDisk = TierKind::kDisk;

class DiskMoverTest : public ::testing::Test, public testing::PartsRig {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-disk-mover-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    CloseMover();
    Close();
    std::filesystem::remove_all(dir_);
  }
  void OpenMover() {
    DiskOptions o;
    o.directory = dir_ + "/cache";
    o.region_bytes = 64 * 1024;
    o.capacity_bytes = 8 * o.region_bytes;
    o.admit_min_seen = 1;
    o.staging_buffers = 2;
    absl::StatusOr<std::unique_ptr<DiskMover>> m = DiskMover::Open(
        o, geometry, /*secure_erase=*/false, *placement, table, namespaces, completions,
        *counters, [this](const std::string& ns) -> absl::StatusOr<uint32_t> {
          absl::StatusOr<const Namespace*> n = namespaces.Find(ns);
          if (n.ok()) return (*n)->id;
          return absl::NotFoundError(ns);
        });
    ASSERT_TRUE(m.ok()) << m.status();
    mover_ = std::move(*m);
    placement->set_lower_tier(mover_.get());
  }
  void CloseMover() {
    if (mover_ == nullptr) return;
    mover_->Drain();
    completions.Drain();
    placement->set_lower_tier(nullptr);
    mover_.reset();
    completions.Drain();
  }
  // Evicts one host copy (the least recently used) by asking for a host slot; the slot and
  // what its writer must wait for.
  std::pair<SlotId, SlotReuse> TakeHostSlot() {
    MutexLock lock(&placement->mu());
    SlotReuse reuse;
    std::optional<SlotId> slot = placement->AcquireSlot(kHost, 0, 0, &reuse);
    EXPECT_TRUE(slot.has_value());
    return {slot.value_or(kNoSlot), std::move(reuse)};
  }
  // Reads `key` back into a host slot and returns its bytes once the read is verified.
  std::vector<char> ReadBack(const BlockKey& key) {
    std::shared_ptr<HostFill> fill;
    SlotId slot = kNoSlot;
    {
      MutexLock lock(&placement->mu());
      absl::Status s = mover_->EnsureHostCopy(key, /*passing=*/false);
      EXPECT_TRUE(s.ok()) << s;
      table.Find(key, [&](BlockEntry* e) {
        fill = e->host_fill;
        slot = e->slot[kHost];
      });
    }
    if (fill == nullptr) return {};
    fill->done.WaitForNotification();
    EXPECT_TRUE(fill->status.ok()) << fill->status;
    fill->settled.WaitForNotification();
    const char* p = static_cast<const char*>(host->Address(slot).host);
    return std::vector<char>(p, p + block);
  }

  // Holds every disk operation for `delay` before it starts.
  bool InjectHold(absl::Duration delay) {
    mover_->tier().io().InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 0, delay});
    return true;
  }

  std::string dir_;
  std::unique_ptr<DiskMover> mover_;
};

TEST_F(DiskMoverTest, AHostCopyGoesDownAtOnceAndItsBytesFollowOffTheCallersThread) {
  Make(0, 1);
  OpenMover();
  const BlockKey a{1, 1};
  ASSERT_TRUE(Put(a, kHost, 0, /*fill=*/0x5a));
  auto [slot, reuse] = TakeHostSlot();  // evicts a: its only copy goes to disk
  EXPECT_TRUE(Has(a, kDisk));
  EXPECT_FALSE(Has(a, kHost));
  ASSERT_NE(reuse.gate, nullptr) << "the slot's next writer must wait for the copy-out";
  reuse.gate->WaitForNotification();
  mover_->Drain();
  completions.Drain();
  EXPECT_FALSE(table.Find(a, [](BlockEntry* e) { return e->is_writing(kDisk); }));
  {
    MutexLock lock(&placement->mu());
    placement->ReturnSlot(kHost, slot, std::move(reuse));
  }
  EXPECT_EQ(ReadBack(a), std::vector<char>(block, 0x5a));
  TierStats disk;
  mover_->FillStats(&disk);
  EXPECT_EQ(disk.used_blocks, 1u);
  EXPECT_EQ(counters->tier(kDisk).demotions.load(), 1u);
}

TEST_F(DiskMoverTest, ASlowDiskNeverMakesTheHandDownWait) {
  Make(0, 4);
  OpenMover();
  ASSERT_TRUE(InjectHold(absl::Milliseconds(500)));
  absl::Duration slowest;
  // Every Put past the fourth evicts a host copy to the held disk; past the staging pool
  // (2 buffers and 8 lent ones) the copy-outs wait for a buffer on the mover's thread.
  for (uint64_t i = 0; i < 16; ++i) {
    const absl::Time start = absl::Now();
    ASSERT_TRUE(Put(BlockKey{i + 1, 7}, kHost));
    slowest = std::max(slowest, absl::Now() - start);
  }
  EXPECT_LT(slowest, absl::Milliseconds(100)) << "an eviction waited for the disk";
  mover_->tier().io().ClearFaults();
  mover_->Drain();
  completions.Drain();
  for (uint64_t i = 0; i < 12; ++i) EXPECT_TRUE(Has(BlockKey{i + 1, 7}, kDisk)) << i;
}

TEST_F(DiskMoverTest, AReadIntoASlotStillBeingCopiedOutLandsAfterTheCopyOut) {
  Make(0, 1);
  OpenMover();
  const BlockKey a{1, 1}, b{2, 2};
  ASSERT_TRUE(Put(a, kHost, 0, /*fill=*/0x11));
  {
    auto [slot, reuse] = TakeHostSlot();  // a goes to disk
    reuse.gate->WaitForNotification();
    MutexLock lock(&placement->mu());
    placement->ReturnSlot(kHost, slot, std::move(reuse));
  }
  mover_->Drain();
  completions.Drain();
  const std::optional<SlotId> slot = Put(b, kHost, 0, /*fill=*/0x22);
  ASSERT_TRUE(slot.has_value());
  // b's copy-out is in the hands of a tier whose gate the test opens.
  testing::FakeLowerTier held(*placement);
  placement->set_lower_tier(&held);
  std::shared_ptr<HostFill> fill;
  {
    MutexLock lock(&placement->mu());
    ASSERT_TRUE(mover_->EnsureHostCopy(a, /*passing=*/false).ok());  // evicts b into `held`
    fill = table.Find(a, [](BlockEntry* e) { return e->host_fill; });
  }
  placement->set_lower_tier(mover_.get());
  ASSERT_EQ(held.taken, std::vector<BlockKey>{b});
  ASSERT_NE(fill, nullptr);
  absl::SleepFor(absl::Milliseconds(100));  // a's disk read has long landed, in the bounce buffer
  const char* bytes = static_cast<const char*>(host->Address(*slot).host);
  EXPECT_EQ(std::vector<char>(bytes, bytes + block), std::vector<char>(block, 0x22))
      << "a's read overwrote b's bytes before they were copied out";
  EXPECT_FALSE(fill->done.HasBeenNotified());
  held.gate->Notify();
  fill->done.WaitForNotification();
  ASSERT_TRUE(fill->status.ok()) << fill->status;
  EXPECT_EQ(std::vector<char>(bytes, bytes + block), std::vector<char>(block, 0x11));
  fill->settled.WaitForNotification();
}

TEST_F(DiskMoverTest, AReadWhoseSlotIsFreeIsNotHeldBehindAnotherReadsCopyOut) {
  Make(0, 2);
  OpenMover();
  const BlockKey a{1, 1}, b1{2, 2}, c{3, 3}, b2{4, 4};
  ASSERT_TRUE(Put(a, kHost, 0, /*fill=*/0x11));
  ASSERT_TRUE(Put(c, kHost, 0, /*fill=*/0x33));
  {
    auto [slot_a, reuse_a] = TakeHostSlot();  // a goes to disk
    auto [slot_c, reuse_c] = TakeHostSlot();  // and c
    reuse_a.gate->WaitForNotification();
    reuse_c.gate->WaitForNotification();
    MutexLock lock(&placement->mu());
    placement->ReturnSlot(kHost, slot_a, std::move(reuse_a));
    placement->ReturnSlot(kHost, slot_c, std::move(reuse_c));
  }
  mover_->Drain();
  completions.Drain();
  ASSERT_TRUE(Has(a, kDisk));
  ASSERT_TRUE(Has(c, kDisk));
  ASSERT_TRUE(Put(b1, kHost, 0, /*fill=*/0x22));
  ASSERT_TRUE(Put(b2, kHost, 0, /*fill=*/0x44));
  // a's read evicts b1 into a tier that never lets go of it (a disk whose writes stall) ...
  testing::FakeLowerTier stuck(*placement), slow(*placement);
  auto read = [&](const BlockKey& key, LowerTier* evicts_into) {
    placement->set_lower_tier(evicts_into);
    MutexLock lock(&placement->mu());
    EXPECT_TRUE(mover_->EnsureHostCopy(key, /*passing=*/false).ok());
    return table.Find(key, [](BlockEntry* e) { return e->host_fill; });
  };
  std::shared_ptr<HostFill> fill_a = read(a, &stuck);
  placement->set_lower_tier(mover_.get());
  ASSERT_EQ(stuck.taken, std::vector<BlockKey>{b1});
  absl::SleepFor(absl::Milliseconds(50));  // a's read lands in its bounce buffer and waits
  // ... and c's read evicts b2 into one whose copy-out finishes a moment later.
  std::shared_ptr<HostFill> fill_c = read(c, &slow);
  placement->set_lower_tier(mover_.get());
  ASSERT_EQ(slow.taken, std::vector<BlockKey>{b2});
  ASSERT_NE(fill_a, nullptr);
  ASSERT_NE(fill_c, nullptr);
  absl::SleepFor(absl::Milliseconds(50));  // c's read lands too
  slow.gate->Notify();
  // c's slot is free: its read lands whatever a's slot is waiting for.
  ASSERT_TRUE(fill_c->done.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(5)))
      << "c's read waited for a's slot";
  ASSERT_TRUE(fill_c->status.ok()) << fill_c->status;
  EXPECT_FALSE(fill_a->done.HasBeenNotified());
  stuck.gate->Notify();
  fill_a->done.WaitForNotification();
  ASSERT_TRUE(fill_a->status.ok()) << fill_a->status;
  fill_a->settled.WaitForNotification();
  fill_c->settled.WaitForNotification();
  const char* bytes_a = static_cast<const char*>(host->Address(stuck.from_slots[0]).host);
  const char* bytes_c = static_cast<const char*>(host->Address(slow.from_slots[0]).host);
  EXPECT_EQ(std::vector<char>(bytes_a, bytes_a + block), std::vector<char>(block, 0x11));
  EXPECT_EQ(std::vector<char>(bytes_c, bytes_c + block), std::vector<char>(block, 0x33));
}

TEST_F(DiskMoverTest, AReopenedDirectoryBringsEveryBlockBack) {
  Make(0, 1);
  OpenMover();
  for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(Put(BlockKey{i, i}, kHost, 1));
  CloseMover();  // the third block stays in the host tier and is not written
  EXPECT_TRUE(Has({1, 1}, kDisk));
  EXPECT_TRUE(Has({2, 2}, kDisk));
  // A new table and placement over the same directory.
  PartsRig fresh;
  fresh.Make(0, 2);
  DiskOptions o;
  o.directory = dir_ + "/cache";
  o.region_bytes = 64 * 1024;
  o.capacity_bytes = 8 * o.region_bytes;
  absl::StatusOr<std::unique_ptr<DiskMover>> m = DiskMover::Open(
      o, fresh.geometry, false, *fresh.placement, fresh.table, fresh.namespaces,
      fresh.completions, *fresh.counters,
      [&](const std::string& ns) { return fresh.namespaces.Find(ns).value()->id; });
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(fresh.Has({1, 1}, kDisk));
  EXPECT_TRUE(fresh.Has({2, 2}, kDisk));
  EXPECT_FALSE(fresh.Cached({3, 3}));
  EXPECT_EQ(fresh.table.Find({1, 1}, [](BlockEntry* e) { return e->ns_id; }), 1u);
  (*m)->Drain();
  fresh.completions.Drain();
  m->reset();
  fresh.Close();
}

}  // namespace
}  // namespace kvtier
