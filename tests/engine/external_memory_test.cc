// ExternalMemory: a registered range stays registered while a transfer whose buffers lie in it
// holds a Use, and only the ranges a transfer's buffers touch are held.

#include "engine/external_memory.h"

#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "device/emulated_device.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

class ExternalMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<EmulatedDevice>> d = EmulatedDevice::Create({});
    ASSERT_TRUE(d.ok()) << d.status();
    device_ = std::move(*d);
    external_ = std::make_unique<ExternalMemory>(*device_, geometry_);
    // Two "inference engine" pools in host memory the device does not own.
    for (auto& pool : pools_) pool.resize(8 * geometry_.block_bytes());
  }
  DevicePtr Base(int i) {
    return DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(pools_[i].data()));
  }

  const Geometry geometry_{2, 2, 16, DType::kFloat16, 4};  // 512-byte blocks
  std::unique_ptr<EmulatedDevice> device_;
  std::unique_ptr<ExternalMemory> external_;
  std::vector<uint8_t> pools_[2];
};

TEST_F(ExternalMemoryTest, ARangeInUseCannotBeUnregisteredUntilTheUseIsReleased) {
  const size_t bytes = pools_[0].size();
  ASSERT_TRUE(external_->Register(Base(0), bytes).ok());
  ASSERT_TRUE(external_->Register(Base(1), bytes).ok());
  const size_t block = geometry_.block_bytes();
  // Two blocks in pool 0: one Use holds pool 0 once; pool 1 is free.
  std::shared_ptr<ExternalMemory::Use> use =
      external_->Acquire(KvBuffers::Blocks({Base(0), Base(0) + 3 * block}));
  ASSERT_NE(use, nullptr);
  EXPECT_EQ(external_->transfers_using(Base(0)), 1u);
  EXPECT_EQ(external_->transfers_using(Base(1)), 0u);
  absl::Status s = external_->Unregister(Base(0));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "in use by 1")) << s;
  EXPECT_TRUE(external_->Unregister(Base(1)).ok());
  use->Release();
  use->Release();  // idempotent: the count does not go below zero
  EXPECT_EQ(external_->transfers_using(Base(0)), 0u);
  EXPECT_TRUE(external_->Unregister(Base(0)).ok());
}

TEST_F(ExternalMemoryTest, DestroyingAUseReleasesIt) {
  ASSERT_TRUE(external_->Register(Base(0), pools_[0].size()).ok());
  {
    std::shared_ptr<ExternalMemory::Use> use = external_->Acquire(KvBuffers::Blocks({Base(0)}));
    ASSERT_NE(use, nullptr);
    EXPECT_FALSE(external_->Unregister(Base(0)).ok());
  }
  EXPECT_TRUE(external_->Unregister(Base(0)).ok());
}

TEST_F(ExternalMemoryTest, BuffersOutsideEveryRangeOrCrossingItsEndHoldNothing) {
  ASSERT_TRUE(external_->Register(Base(0), pools_[0].size()).ok());
  const size_t block = geometry_.block_bytes();
  // The engine's own memory (not registered) and a block that runs past the range's end.
  absl::StatusOr<DevicePtr> own = device_->Allocate(block);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(external_->Acquire(KvBuffers::Blocks({*own})), nullptr);
  EXPECT_EQ(external_->Acquire(KvBuffers::Blocks({Base(0) + (pools_[0].size() - block / 2)})),
            nullptr);
  EXPECT_EQ(external_->transfers_using(Base(0)), 0u);
  EXPECT_TRUE(device_->Free(*own).ok());
}

TEST_F(ExternalMemoryTest, APagedPoolHoldsTheRangesItsLayerTensorsLieIn) {
  // Layer tensors of [2][pages][part]: 2 pages per layer, one layer tensor in each pool.
  const size_t layer_bytes = 2 * 2 * geometry_.part_bytes();
  ASSERT_TRUE(external_->Register(Base(0), layer_bytes).ok());
  ASSERT_TRUE(external_->Register(Base(1), layer_bytes).ok());
  KvBuffers::PagedPool pool;
  pool.layers = {Base(0), Base(1)};
  pool.num_pages = 2;
  std::shared_ptr<ExternalMemory::Use> use = external_->Acquire(KvBuffers::Paged(pool, {0, 1}));
  ASSERT_NE(use, nullptr);
  EXPECT_EQ(external_->transfers_using(Base(0)), 1u);
  EXPECT_EQ(external_->transfers_using(Base(1)), 1u);
}

TEST_F(ExternalMemoryTest, RegistrationErrorsComeFromTheDevice) {
  absl::StatusOr<DevicePtr> own = device_->Allocate(1024);
  ASSERT_TRUE(own.ok());
  // The device's own memory is not the caller's to register.
  EXPECT_FALSE(external_->Register(*own, 1024).ok());
  EXPECT_FALSE(external_->Register(DevicePtr(), 1024).ok());
  EXPECT_FALSE(external_->Unregister(Base(0)).ok()) << "never registered";
  EXPECT_TRUE(device_->Free(*own).ok());
}

}  // namespace
}  // namespace kvtier
