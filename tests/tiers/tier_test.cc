#include <set>

#include "gtest/gtest.h"
#include "tiers/gpu_tier.h"
#include "tiers/host_tier.h"

namespace kvtier {
namespace {

std::unique_ptr<Device> Emulated() {
  DeviceOptions o;
  o.choice = DeviceChoice::kEmulated;
  absl::StatusOr<std::unique_ptr<Device>> d = Device::Create(o);
  EXPECT_TRUE(d.ok()) << d.status();
  return std::move(*d);
}

TEST(GpuTier, SlotsAreDistinctDeviceRangesInsideOneAllocation) {
  std::unique_ptr<Device> dev = Emulated();
  auto tier = GpuTier::Create(*dev, 4096, 10 * 4096 + 100);  // rounds down to 10 slots
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ((*tier)->num_slots(), 10u);
  std::set<uint64_t> seen;
  for (int i = 0; i < 10; ++i) {
    std::optional<SlotId> s = (*tier)->Allocate();
    ASSERT_TRUE(s.has_value());
    const SlotAddress a = (*tier)->Address(*s);
    EXPECT_EQ(a.host, nullptr);
    EXPECT_TRUE(dev->Contains(a.device, 4096));
    EXPECT_TRUE(seen.insert(a.device.address()).second);
  }
  EXPECT_FALSE((*tier)->Allocate().has_value());
  EXPECT_EQ((*tier)->free_slots(), 0u);
  (*tier)->Release(3);
  EXPECT_EQ((*tier)->Allocate(), SlotId{3});
}

TEST(HostTier, SlotsArePinnedHostMemoryAndAligned) {
  std::unique_ptr<Device> dev = Emulated();
  auto tier = HostTier::Create(*dev, 8192, 4 * 8192);
  ASSERT_TRUE(tier.ok()) << tier.status();
  for (SlotId s = 0; s < 4; ++s) {
    const SlotAddress a = (*tier)->Address(s);
    ASSERT_NE(a.host, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.host) % 4096, 0u);
    static_cast<char*>(a.host)[8191] = 1;  // whole slot writable (ASan checks the bound)
  }
}

TEST(Tier, CapacitySmallerThanOneBlockIsAnError) {
  std::unique_ptr<Device> dev = Emulated();
  absl::Status g = GpuTier::Create(*dev, 4096, 4095).status();
  EXPECT_EQ(g.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.message().find("GPU tier"), absl::string_view::npos) << g;
  absl::Status h = HostTier::Create(*dev, 4096, 0).status();
  EXPECT_EQ(h.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(h.message().find("smaller than one block"), absl::string_view::npos) << h;
}

TEST(GpuTier, DeviceOutOfMemoryIsReportedNotFatal) {
  DeviceOptions o;
  o.choice = DeviceChoice::kEmulated;
  o.emulated_memory_limit = 1 << 20;
  auto dev = Device::Create(o);
  ASSERT_TRUE(dev.ok());
  absl::Status s = GpuTier::Create(**dev, 4096, 2 << 20).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("GPU tier"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace kvtier

namespace kvtier {
namespace {

TEST(Tier, HandsOutTheLowestFreeSlotSoBatchesStayAdjacent) {
  DeviceOptions o;
  o.choice = DeviceChoice::kEmulated;
  auto dev = Device::Create(o);
  ASSERT_TRUE(dev.ok());
  auto tier = HostTier::Create(**dev, 4096, 130 * 4096);  // spans three bitmap words
  ASSERT_TRUE(tier.ok());
  Tier& t = **tier;
  for (SlotId want = 0; want < 130; ++want) EXPECT_EQ(t.Allocate(), want);
  EXPECT_EQ(t.Allocate(), std::nullopt);
  for (SlotId s : {129u, 5u, 70u, 6u, 64u}) t.Release(s);
  EXPECT_EQ(t.free_slots(), 5u);
  EXPECT_EQ(t.Allocate(), SlotId{5});
  EXPECT_EQ(t.Allocate(), SlotId{6});
  EXPECT_EQ(t.Allocate(), SlotId{64});
  EXPECT_EQ(t.Allocate(), SlotId{70});
  EXPECT_EQ(t.Allocate(), SlotId{129});
  EXPECT_EQ(t.Allocate(), std::nullopt);
  EXPECT_EQ(t.used_slots(), 130u);
}

}  // namespace
}  // namespace kvtier
