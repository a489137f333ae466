// tests/device/cuda_device_test.cc — what the CUDA device promises beyond the Device
// contract (which device_conformance_test.cc checks on it): native handles, copies to device
// memory that kvtier did not allocate (the connector case) and its registration
// (RegisterDeviceMemory), and errors that name the CUDA call. Skips, saying why, on machines
// without a usable GPU.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/copy_kernels.h"
#include "device/cuda_device.h"
#include "kvtier/device.h"
#include "tests/device/test_util.h"

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

TEST_F(CudaDeviceTest, RegisteredCudaMemoryIsContainedAndOtherMemoryIsRefusedSayingWhy) {
  constexpr size_t kBytes = size_t{1} << 20;
  void* raw = nullptr;
  ASSERT_EQ(cudaMalloc(&raw, kBytes), cudaSuccess);
  const DevicePtr foreign = DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(raw));
  EXPECT_FALSE(device_->Contains(foreign, kBytes));
  KVTIER_ASSERT_OK(device_->RegisterDeviceMemory(foreign, kBytes));
  EXPECT_TRUE(device_->Contains(foreign, kBytes));
  EXPECT_TRUE(device_->Contains(foreign + 4096, kBytes - 4096));
  EXPECT_FALSE(device_->Contains(foreign + 4096, kBytes));
  EXPECT_EQ(device_->RegisterDeviceMemory(foreign, kBytes).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(device_->RegisterDeviceMemory(foreign + 4096, 4096).code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status status = device_->Free(foreign);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "registered device memory")) << status;
  KVTIER_ASSERT_OK(device_->UnregisterDeviceMemory(foreign));
  EXPECT_FALSE(device_->Contains(foreign, kBytes));
  EXPECT_EQ(device_->UnregisterDeviceMemory(foreign).code(), absl::StatusCode::kNotFound);

  // Pageable host memory is not CUDA memory; pinned host memory is host memory.
  std::vector<uint8_t> pageable(kBytes);
  status = device_->RegisterDeviceMemory(
      DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(pageable.data())), kBytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "not CUDA memory")) << status;
  void* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, 4096), cudaSuccess);
  status = device_->RegisterDeviceMemory(
      DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(pinned)), 4096);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "is host memory")) << status;
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
  // A range that runs off the end of the allocation: its last byte is checked too. (With a
  // gigabyte past the end, the last byte lies in no allocation of this process.)
  status = device_->RegisterDeviceMemory(foreign, kBytes + (size_t{1} << 30));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_FALSE(device_->Contains(foreign, 1));
  ASSERT_EQ(cudaFree(raw), cudaSuccess);

  // Another GPU's memory belongs to that GPU.
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count > 1) {
    void* other = nullptr;
    ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&other, 4096), cudaSuccess);
    status = device_->RegisterDeviceMemory(
        DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(other)), 4096);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "belongs to device 1")) << status;
    ASSERT_EQ(cudaFree(other), cudaSuccess);
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  }
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
