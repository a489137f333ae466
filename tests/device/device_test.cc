// tests/device/device_test.cc — Device::Create picks the device the options ask for, and
// DeviceOptions::Validate rejects impossible options.
//
// Which device kAuto and kCuda give depends on the machine; the expectations ask the CUDA
// runtime (where kvtier is built with it) whether a device exists instead of assuming.

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kvtier/device.h"
#include "tests/device/test_util.h"

#if defined(KVTIER_HAVE_CUDA)
#include "device/cuda_device.h"
#endif

namespace kvtier {
namespace {

// Whether this machine has a usable CUDA device, and if not, why.
bool HaveCudaDevice(std::string* why_not) {
#if defined(KVTIER_HAVE_CUDA)
  absl::StatusOr<int> count = CudaDeviceCount();
  if (!count.ok()) {
    *why_not = count.status().ToString();
    return false;
  }
  if (*count == 0) *why_not = "0 CUDA devices";
  return *count > 0;
#else
  *why_not = "built without CUDA";
  return false;
#endif
}

DeviceOptions With(DeviceChoice choice) {
  DeviceOptions options;
  options.choice = choice;
  return options;
}

TEST(DeviceKindName, NamesEveryKind) {
  EXPECT_STREQ(DeviceKindName(DeviceKind::kEmulated), "emulated");
  EXPECT_STREQ(DeviceKindName(DeviceKind::kCuda), "cuda");
}

TEST(DeviceOptions, DefaultsAreValid) { KVTIER_EXPECT_OK(DeviceOptions().Validate()); }

TEST(DeviceOptions, ImpossibleValuesAreRejected) {
  DeviceOptions options;
  options.cuda_ordinal = -1;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(options.Validate().message(), "cuda_ordinal"));

  for (double gbps : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    options = DeviceOptions();
    options.emulated_copy_gbps = gbps;
    absl::Status status = options.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << gbps;
    EXPECT_TRUE(absl::StrContains(status.message(), "emulated_copy_gbps")) << status;
  }

  options = DeviceOptions();
  options.choice = static_cast<DeviceChoice>(42);
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options.cuda_ordinal = -3;
  EXPECT_EQ(Device::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DeviceCreate, EmulatedIsAlwaysAvailable) {
  DeviceOptions options = With(DeviceChoice::kEmulated);
  options.emulated_copy_gbps = 8.0;
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ((*device)->kind(), DeviceKind::kEmulated);
  EXPECT_EQ((*device)->name(), "emulated (copy 8.0 GB/s)");
}

TEST(DeviceCreate, AutoPicksCudaExactlyWhenADeviceExists) {
  std::string why_not;
  const bool have_cuda = HaveCudaDevice(&why_not);
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(With(DeviceChoice::kAuto));
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ((*device)->kind(), have_cuda ? DeviceKind::kCuda : DeviceKind::kEmulated)
      << (have_cuda ? "" : why_not);
}

TEST(DeviceCreate, CudaGivesACudaDeviceOrSaysWhyNot) {
  std::string why_not;
  const bool have_cuda = HaveCudaDevice(&why_not);
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(With(DeviceChoice::kCuda));
  if (have_cuda) {
    ASSERT_TRUE(device.ok()) << device.status();
    EXPECT_EQ((*device)->kind(), DeviceKind::kCuda);
    EXPECT_TRUE(absl::StrContains((*device)->name(), "(cuda:0)")) << (*device)->name();
    return;
  }
  ASSERT_FALSE(device.ok());
#if defined(KVTIER_HAVE_CUDA)
  // The error names the CUDA call that failed (or says there are no devices).
  EXPECT_TRUE(absl::StrContains(device.status().message(), "cudaGetDeviceCount"))
      << device.status();
#else
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(device.status().message(),
            "kvtier was built without CUDA (KVTIER_CUDA=OFF or nvcc not found)");
#endif
}

TEST(DeviceCreate, CudaOrdinalThatDoesNotExistIsAnError) {
  std::string why_not;
  if (!HaveCudaDevice(&why_not)) GTEST_SKIP() << "no CUDA device: " << why_not;
  DeviceOptions options = With(DeviceChoice::kCuda);
  options.cuda_ordinal = 1000;
  EXPECT_EQ(Device::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
