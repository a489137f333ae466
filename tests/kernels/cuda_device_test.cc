// tests/kernels/cuda_device_test.cc — what the CUDA device promises beyond the Device
// contract (which device_conformance_test.cc checks on it): native handles, copies to device
// memory that kvtier did not allocate (the connector case), and errors that name the CUDA
// call. Skips, saying why, on machines without a usable GPU.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/copy_kernels.h"
#include "kernels/cuda_device.h"
#include "kvtier/device.h"
#include "tests/kernels/test_util.h"

namespace kvtier {
namespace {

using testing_util::RandomBytes;

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> count = CudaDeviceCount();
    if (!count.ok() || *count == 0) {
      GTEST_SKIP() << "no CUDA device on this machine ("
                   << (count.ok() ? std::string("0 devices") : count.status().ToString()) << ")";
    }
    DeviceOptions options;
    options.choice = DeviceChoice::kCuda;
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
  }

  std::unique_ptr<Device> device_;
};

TEST_F(CudaDeviceTest, KindNameAndNativeHandle) {
  EXPECT_EQ(device_->kind(), DeviceKind::kCuda);
  EXPECT_TRUE(absl::StrContains(device_->name(), "(cuda:0)")) << device_->name();
  absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  EXPECT_NE((*stream)->native_handle(), nullptr);
}

TEST_F(CudaDeviceTest, CopiesReachMemoryKvtierDidNotAllocate) {
  constexpr size_t kBytes = (size_t{1} << 20) + 3;
  void* raw = nullptr;
  ASSERT_EQ(cudaMalloc(&raw, kBytes), cudaSuccess);
  const DevicePtr foreign = DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(raw));
  EXPECT_FALSE(device_->Contains(foreign, kBytes));
  {
    absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    const std::vector<uint8_t> source = RandomBytes(kBytes, 17);
    std::vector<uint8_t> back(kBytes);
    KVTIER_ASSERT_OK((*stream)->CopyToDevice(foreign, source.data(), kBytes));
    KVTIER_ASSERT_OK((*stream)->CopyToHost(back.data(), foreign, kBytes));
    KVTIER_ASSERT_OK((*stream)->Synchronize());
    EXPECT_EQ(back, source);
    EXPECT_EQ(device_->Free(foreign).code(), absl::StatusCode::kInvalidArgument);
  }
  ASSERT_EQ(cudaFree(raw), cudaSuccess);
}

TEST_F(CudaDeviceTest, RuntimeErrorsNameTheCall) {
  // More memory than any GPU has.
  absl::StatusOr<DevicePtr> huge = device_->Allocate(size_t{1} << 50);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  EXPECT_TRUE(absl::StrContains(huge.status().message(), "cudaMalloc(")) << huge.status();
  // The device is still usable afterwards.
  absl::StatusOr<DevicePtr> small = device_->Allocate(4096);
  ASSERT_TRUE(small.ok()) << small.status();
  KVTIER_EXPECT_OK(device_->Free(*small));
}

TEST_F(CudaDeviceTest, FillKernelRunsOnTheGpu) {
  constexpr size_t kBytes = size_t{64} << 20;
  absl::StatusOr<DevicePtr> d = device_->Allocate(kBytes);
  ASSERT_TRUE(d.ok()) << d.status();
  absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  std::vector<uint8_t> back(kBytes);
  KVTIER_ASSERT_OK((*stream)->Launch(MakeFillKernel(*d, kBytes, 77)));
  KVTIER_ASSERT_OK((*stream)->CopyToHost(back.data(), *d, kBytes));
  KVTIER_ASSERT_OK((*stream)->Synchronize());
  EXPECT_EQ(FindPatternMismatch(back.data(), kBytes, 77), kBytes);
  stream->reset();
  KVTIER_EXPECT_OK(device_->Free(*d));
}

}  // namespace
}  // namespace kvtier
