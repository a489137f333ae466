// kernels/copy_kernels.cc — CPU references of the copy kernels and their KernelLaunch
// builders (see copy_kernels.h). The CUDA implementations live in copy_kernels.cu.

#include "kernels/copy_kernels.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kernels/copy_kernels_internal.h"

#if defined(KVTIER_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace kvtier {
namespace {

using copy_kernels_internal::FillPatternWord;

constexpr char kFillKernelName[] = "fill_pattern";

// Writes the first `count` (<= 8) bytes of `word`, least significant first.
void StoreWordBytes(unsigned char* dst, uint64_t word, size_t count) {
  if (count == 8 && std::endian::native == std::endian::little) {
    std::memcpy(dst, &word, 8);
    return;
  }
  for (size_t b = 0; b < count; ++b) dst[b] = static_cast<unsigned char>(word >> (8 * b));
}

}  // namespace

void FillPatternCpu(void* dst, size_t bytes, uint64_t seed) {
  auto* out = static_cast<unsigned char*>(dst);
  for (size_t offset = 0, word = 0; offset < bytes; offset += 8, ++word) {
    StoreWordBytes(out + offset, FillPatternWord(seed, word), std::min<size_t>(8, bytes - offset));
  }
}

size_t FindPatternMismatch(const void* data, size_t bytes, uint64_t seed) {
  const auto* in = static_cast<const unsigned char*>(data);
  for (size_t offset = 0, word = 0; offset < bytes; offset += 8, ++word) {
    const size_t count = std::min<size_t>(8, bytes - offset);
    unsigned char expected[8];
    StoreWordBytes(expected, FillPatternWord(seed, word), count);
    if (std::memcmp(in + offset, expected, count) == 0) continue;
    for (size_t b = 0; b < count; ++b) {
      if (in[offset + b] != expected[b]) return offset + b;
    }
  }
  return bytes;
}

KernelLaunch MakeFillKernel(DevicePtr dst, size_t bytes, uint64_t seed) {
  KernelLaunch launch;
  launch.name = kFillKernelName;
  launch.cpu = [dst, bytes, seed](const KernelLaunch::Resolver& resolve) -> absl::Status {
    if (bytes == 0) return absl::OkStatus();
    void* host = resolve(dst, bytes);
    if (host == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "device range [0x%x, +%d bytes) is not inside one live allocation", dst.address(),
          bytes));
    }
    FillPatternCpu(host, bytes, seed);
    return absl::OkStatus();
  };
#if defined(KVTIER_HAVE_CUDA)
  launch.cuda = [dst, bytes, seed](void* cuda_stream) -> absl::Status {
    if (bytes == 0) return absl::OkStatus();
    if (dst.is_null()) return absl::InvalidArgumentError("fill_pattern: null device pointer");
    const int error =
        copy_kernels_internal::LaunchFillPatternCuda(cuda_stream, dst.address(), bytes, seed);
    if (error != 0) {
      return absl::InternalError(
          absl::StrFormat("fill_pattern kernel launch (%d bytes at 0x%x): %s", bytes,
                          dst.address(), cudaGetErrorString(static_cast<cudaError_t>(error))));
    }
    return absl::OkStatus();
  };
#endif
  return launch;
}

}  // namespace kvtier
