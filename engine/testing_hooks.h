// engine/testing_hooks.h — fault injection into an open Engine, for tests only.
//
// The public API has no way to reach an engine's disk tier or device, and should not: these
// hooks exist so that tests can make the engine's own I/O and device calls fail (EIO, ENOSPC,
// short reads and writes, slow I/O; CUDA errors from the emulated device) and check what the
// engine then promises. They live in kvtier_engine_testing, a library that only tests link.
//
// Each returns OK once the fault is armed, or FailedPrecondition naming what is missing (an
// engine without a disk tier, an engine on a CUDA device) or InvalidArgument for an engine
// that Engine::Open did not make.

#ifndef KVTIER_ENGINE_TESTING_HOOKS_H_
#define KVTIER_ENGINE_TESTING_HOOKS_H_

#include <cstdint>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/io_engine.h"
#include "device/emulated_device.h"
#include "kvtier/engine.h"

namespace kvtier {

// Arms `fault` on the I/O engine of the engine's disk tier (io/io_engine.h, FaultSpec).
absl::Status InjectDiskFault(Engine& engine, const FaultSpec& fault);
// Disarms every fault InjectDiskFault armed.
absl::Status ClearDiskFaults(Engine& engine);

// Arms `fault` on the engine's emulated device (device/emulated_device.h, DeviceFault).
// To fail calls Engine::Open itself makes, use EmulatedDevice::InjectFaultIntoNextDevice
// before Open instead.
absl::Status InjectDeviceFault(Engine& engine, const DeviceFault& fault);
absl::Status ClearDeviceFaults(Engine& engine);

// Runs `fn` on the engine's completion queue after every completion posted so far: a `fn`
// that blocks holds back every completion posted after it (transfers land, their
// bookkeeping waits), which lets a test stand where copies have finished and the engine has
// not heard yet.
absl::Status PostToCompletionQueue(Engine& engine, absl::AnyInvocable<void() &&> fn);
// Completions posted to the engine's completion queue so far.
absl::StatusOr<uint64_t> CompletionsPosted(Engine& engine);

}  // namespace kvtier

#endif  // KVTIER_ENGINE_TESTING_HOOKS_H_
