// engine/testing_hooks.cc — fault injection into an open Engine (see testing_hooks.h).

#include "engine/testing_hooks.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "engine/engine_impl.h"
#include "device/emulated_device.h"

namespace kvtier {
namespace {

absl::StatusOr<IoEngine*> DiskIo(Engine& engine, const char* op) {
  auto* impl = dynamic_cast<EngineImpl*>(&engine);
  if (impl == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: the engine was not made by Engine::Open", op));
  }
  DiskTier* disk = impl->disk_tier_for_testing();
  if (disk == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the engine has no disk tier (EngineOptions::disk.directory is empty)", op));
  }
  return &disk->io();
}

absl::StatusOr<EmulatedDevice*> Emulated(Engine& engine, const char* op) {
  auto* device = dynamic_cast<EmulatedDevice*>(&engine.device());
  if (device == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: the engine runs on %s, not the emulated device; faults can only be "
                        "injected into the emulated device",
                        op, engine.device().name()));
  }
  return device;
}

}  // namespace

absl::Status InjectDiskFault(Engine& engine, const FaultSpec& fault) {
  absl::StatusOr<IoEngine*> io = DiskIo(engine, "InjectDiskFault");
  if (!io.ok()) return io.status();
  (*io)->InjectFault(fault);
  return absl::OkStatus();
}

absl::Status ClearDiskFaults(Engine& engine) {
  absl::StatusOr<IoEngine*> io = DiskIo(engine, "ClearDiskFaults");
  if (!io.ok()) return io.status();
  (*io)->ClearFaults();
  return absl::OkStatus();
}

absl::Status InjectDeviceFault(Engine& engine, const DeviceFault& fault) {
  absl::StatusOr<EmulatedDevice*> device = Emulated(engine, "InjectDeviceFault");
  if (!device.ok()) return device.status();
  (*device)->InjectFault(fault);
  return absl::OkStatus();
}

absl::Status ClearDeviceFaults(Engine& engine) {
  absl::StatusOr<EmulatedDevice*> device = Emulated(engine, "ClearDeviceFaults");
  if (!device.ok()) return device.status();
  (*device)->ClearFaults();
  return absl::OkStatus();
}

absl::Status PostToCompletionQueue(Engine& engine, absl::AnyInvocable<void() &&> fn) {
  auto* impl = dynamic_cast<EngineImpl*>(&engine);
  if (impl == nullptr) {
    return absl::InvalidArgumentError(
        "PostToCompletionQueue: the engine was not made by Engine::Open");
  }
  impl->completions_for_testing().Post(std::move(fn));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> CompletionsPosted(Engine& engine) {
  auto* impl = dynamic_cast<EngineImpl*>(&engine);
  if (impl == nullptr) {
    return absl::InvalidArgumentError("CompletionsPosted: the engine was not made by Engine::Open");
  }
  return impl->completions_for_testing().posted();
}

}  // namespace kvtier
