// device/device.cc — Device::Create, DeviceOptions::Validate and DeviceKindName.
//
// Create picks the implementation: kEmulated always gets the emulated device; kCuda gets
// the CUDA device or an error naming why not (not built, or the failing CUDA call); kAuto
// gets CUDA when the runtime reports at least one device, and otherwise the emulated device
// with one log line (per process) saying why.

#include <cmath>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/enum_names.h"
#include "common/log.h"
#include "device/emulated_device.h"
#include "kvtier/device.h"

#if defined(KVTIER_HAVE_CUDA)
#include "device/cuda_device.h"
#endif

namespace kvtier {

const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kEmulated:
      return "emulated";
    case DeviceKind::kCuda:
      return "cuda";
  }
  return "unknown";
}

absl::StatusOr<DeviceKind> ParseDeviceKind(absl::string_view name) {
  return ParseEnumName(name, "device kind", {DeviceKind::kEmulated, DeviceKind::kCuda},
                       DeviceKindName);
}

const char* DeviceChoiceName(DeviceChoice choice) {
  switch (choice) {
    case DeviceChoice::kAuto:
      return "auto";
    case DeviceChoice::kCuda:
      return "cuda";
    case DeviceChoice::kEmulated:
      return "emulated";
  }
  return "unknown";
}

absl::StatusOr<DeviceChoice> ParseDeviceChoice(absl::string_view name) {
  return ParseEnumName(name, "device",
                       {DeviceChoice::kAuto, DeviceChoice::kCuda, DeviceChoice::kEmulated},
                       DeviceChoiceName);
}

const char* CopyKindName(CopyOp::Kind kind) {
  switch (kind) {
    case CopyOp::Kind::kHostToDevice:
      return "H2D";
    case CopyOp::Kind::kDeviceToHost:
      return "D2H";
    case CopyOp::Kind::kDeviceToDevice:
      return "D2D";
  }
  return "unknown";
}

absl::StatusOr<CopyOp::Kind> ParseCopyKind(absl::string_view name) {
  return ParseEnumName(
      name, "copy kind",
      {CopyOp::Kind::kHostToDevice, CopyOp::Kind::kDeviceToHost, CopyOp::Kind::kDeviceToDevice},
      CopyKindName);
}

absl::Status DeviceOptions::Validate() const {
  switch (choice) {
    case DeviceChoice::kAuto:
    case DeviceChoice::kCuda:
    case DeviceChoice::kEmulated:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("DeviceOptions.choice: unknown value %d", static_cast<int>(choice)));
  }
  if (cuda_ordinal < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DeviceOptions.cuda_ordinal must be >= 0, got %d", cuda_ordinal));
  }
  if (!std::isfinite(emulated_copy_gbps) || emulated_copy_gbps < 0.0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "DeviceOptions.emulated_copy_gbps must be a finite value >= 0 (0 = unthrottled), got %g",
        emulated_copy_gbps));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Device>> Device::Create(const DeviceOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;

  switch (options.choice) {
    case DeviceChoice::kEmulated:
      break;
    case DeviceChoice::kCuda:
#if defined(KVTIER_HAVE_CUDA)
      return NewCudaDevice(options);
#else
      return absl::FailedPreconditionError(
          "kvtier was built without CUDA (KVTIER_CUDA=OFF or nvcc not found)");
#endif
    case DeviceChoice::kAuto: {
#if defined(KVTIER_HAVE_CUDA)
      absl::StatusOr<int> count = CudaDeviceCount();
      if (count.ok() && *count > 0) return NewCudaDevice(options);
      // Only the absence of a usable driver or device falls back; any other failure on a
      // machine that has a GPU (a bad ordinal, out of memory) is the caller's to see.
      KVTIER_LOG_ONCE(kWarning, "no usable CUDA device (%s); using the emulated device",
                      count.ok() ? "cudaGetDeviceCount: 0 devices"
                                 : std::string(count.status().message()));
#else
      KVTIER_LOG_ONCE(kInfo, "kvtier was built without CUDA; using the emulated device");
#endif
      break;
    }
  }
  absl::StatusOr<std::unique_ptr<EmulatedDevice>> device = EmulatedDevice::Create(options);
  if (!device.ok()) return device.status();
  return std::unique_ptr<Device>(std::move(*device));
}

}  // namespace kvtier
