// device/cuda_device.h — the Device on a real GPU, through the CUDA runtime API.
//
// Compiled only when kvtier is built with CUDA (KVTIER_HAVE_CUDA). Streams are non-blocking
// CUDA streams, events are timing-free CUDA events, copies are cudaMemcpyAsync, kernels run
// their `cuda` implementation on the stream. Every CUDA error becomes a Status that names the
// call, e.g. "cudaMemcpyAsync(H2D, 2097152 bytes): invalid argument". Each entry point
// selects the device's ordinal first, so one process may drive several devices from any
// thread.
//
// Device ranges passed to copies are not checked against Contains: an inference engine's own
// cudaMalloc'ed KV pool (DevicePtr::FromAddress) is a valid copy target; the CUDA runtime
// rejects what is not device memory. Contains covers this device's Allocate and the ranges
// registered with RegisterDeviceMemory (checked with cudaPointerGetAttributes: device or
// managed memory of this GPU at the first and the last byte), which is how such a pool
// passes the engine's buffer checks.
//
// Thread safety: all methods may be called from any thread.

#ifndef KVTIER_DEVICE_CUDA_DEVICE_H_
#define KVTIER_DEVICE_CUDA_DEVICE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kvtier/device.h"

namespace kvtier {

// Number of CUDA devices, or an error naming cudaGetDeviceCount and the runtime's reason
// (no driver, driver too old, no device).
absl::StatusOr<int> CudaDeviceCount();

// Opens CUDA device options.cuda_ordinal. REQUIRES: options.Validate().ok().
// The device's destructor REQUIRES every Stream and Event it created to be destroyed first.
absl::StatusOr<std::unique_ptr<Device>> NewCudaDevice(const DeviceOptions& options);

}  // namespace kvtier

#endif  // KVTIER_DEVICE_CUDA_DEVICE_H_
