// examples/llm/device_gemm.cc — validation, CPU references and KernelLaunch builders of the
// DeviceDecoder's matmul and random fill (see device_gemm.h). The fill's CUDA kernel is in
// device_gemm.cu; the matmul's CUDA side is cuBLAS.

#include "examples/llm/device_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "examples/llm/cublas_library.h"
#include "examples/llm/device_gemm_internal.h"
#include "kernels/numeric.h"

#if defined(KVTIER_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace kvtier::llm {
namespace {

static_assert(static_cast<int>(DType::kFloat16) == device_gemm_internal::kDTypeFloat16 &&
              static_cast<int>(DType::kBFloat16) == device_gemm_internal::kDTypeBFloat16);

constexpr size_t kLanes = 8;
// Below this many multiply-adds per thread a launch stays on one thread.
constexpr uint64_t kMinMacsPerThread = uint64_t{1} << 20;

bool IsHalfType(DType dtype) { return dtype == DType::kFloat16 || dtype == DType::kBFloat16; }

float ToFloat(DType dtype, uint16_t bits) {
  return dtype == DType::kBFloat16 ? numeric::Bf16BitsToFloat(bits)
                                   : numeric::HalfBitsToFloat(bits);
}

absl::Status CheckPointer(const char* what, const char* name, DevicePtr p) {
  if (p.is_null()) return absl::InvalidArgumentError(absl::StrFormat("%s.%s is null", what, name));
  return absl::OkStatus();
}

void RunParts(size_t parts, const std::function<void(size_t)>& fn) {
  std::vector<std::thread> workers;
  for (size_t p = 1; p < parts; ++p) workers.emplace_back(fn, p);
  fn(0);
  for (std::thread& w : workers) w.join();
}

size_t Parts(uint64_t work, size_t most) {
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max<size_t>(1, std::min<uint64_t>({cores, work / kMinMacsPerThread, most}));
}

// The reference: weight rows converted to float one at a time, each dot product in float with
// 8 interleaved partial sums (as the CPU Model's matmul), for weight rows [n0, n1).
void GemmRows(DType dtype, const uint16_t* x, size_t rows, size_t k, const uint16_t* w, size_t n,
              size_t n0, size_t n1, float* y) {
  std::vector<float> xf(rows * k), wf(k);
  for (size_t i = 0; i < rows * k; ++i) xf[i] = ToFloat(dtype, x[i]);
  for (size_t j = n0; j < n1; ++j) {
    for (size_t i = 0; i < k; ++i) wf[i] = ToFloat(dtype, w[j * k + i]);
    for (size_t t = 0; t < rows; ++t) {
      const float* xr = xf.data() + t * k;
      float acc[kLanes] = {};
      size_t i = 0;
      for (; i + kLanes <= k; i += kLanes) {
        for (size_t l = 0; l < kLanes; ++l) acc[l] += xr[i + l] * wf[i + l];
      }
      float tail = 0.0f;
      for (; i < k; ++i) tail += xr[i] * wf[i];
      y[t * n + j] =
          (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) +
          tail;
    }
  }
}

}  // namespace

absl::Status DeviceGemmParams::Validate() const {
  if (!IsHalfType(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DeviceGemmParams.dtype %s: the device matmul takes fp16 or bf16 inputs",
                        DTypeName(dtype)));
  }
  for (const auto& [name, v] :
       {std::pair<const char*, uint32_t>{"rows", rows}, {"k", k}, {"n", n}}) {
    if (v == 0)
      return absl::InvalidArgumentError(absl::StrFormat("DeviceGemmParams.%s is 0", name));
    if (v > static_cast<uint32_t>(INT32_MAX)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("DeviceGemmParams.%s %d does not fit cuBLAS's int", name, v));
    }
  }
  for (const auto& [name, p] : {std::pair<const char*, DevicePtr>{"x", x}, {"w", w}, {"y", y}}) {
    if (absl::Status s = CheckPointer("DeviceGemmParams", name, p); !s.ok()) return s;
  }
  return absl::OkStatus();
}

KernelLaunch MakeDeviceGemmKernel(const DeviceGemmParams& p, const CublasLibrary* cublas) {
  KernelLaunch launch;
  launch.name = "device_gemm";
  if (absl::Status status = p.Validate(); !status.ok()) {
    launch.cpu = [status](const KernelLaunch::Resolver&) { return status; };
    launch.cuda = [status](void*) { return status; };
    return launch;
  }
  launch.cpu = [p](const KernelLaunch::Resolver& resolve) -> absl::Status {
    const uint64_t x_bytes = uint64_t{p.rows} * p.k * 2, w_bytes = uint64_t{p.n} * p.k * 2;
    const uint64_t y_bytes = uint64_t{p.rows} * p.n * 4;
    const auto* x = static_cast<const uint16_t*>(resolve(p.x, x_bytes));
    const auto* w = static_cast<const uint16_t*>(resolve(p.w, w_bytes));
    auto* y = static_cast<float*>(resolve(p.y, y_bytes));
    for (const auto& [name, ptr, bytes] :
         {std::tuple<const char*, const void*, uint64_t>{"x", x, x_bytes},
          {"w", w, w_bytes},
          {"y", y, y_bytes}}) {
      if (ptr == nullptr) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "device_gemm: %s [+%d bytes) is not inside one live allocation", name, bytes));
      }
    }
    const size_t parts = Parts(uint64_t{p.rows} * p.k * p.n, p.n);
    RunParts(parts, [&](size_t part) {
      GemmRows(p.dtype, x, p.rows, p.k, w, p.n, p.n * part / parts, p.n * (part + 1) / parts, y);
    });
    return absl::OkStatus();
  };
  launch.cuda = [p, cublas](void* cuda_stream) -> absl::Status {
    if (cublas == nullptr) {
      return absl::FailedPreconditionError("device_gemm: no cuBLAS library for a CUDA launch");
    }
    return cublas->Gemm(cuda_stream, static_cast<int>(p.dtype), p.rows, p.k, p.n, p.x.address(),
                        p.w.address(), p.y.address());
  };
  return launch;
}

absl::Status FillUniformParams::Validate() const {
  if (!IsHalfType(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("FillUniformParams.dtype %s: weights are fp16 or bf16", DTypeName(dtype)));
  }
  if (count == 0) return absl::InvalidArgumentError("FillUniformParams.count is 0");
  if (!(std::isfinite(stddev) && stddev > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("FillUniformParams.stddev %g must be finite and > 0", stddev));
  }
  return CheckPointer("FillUniformParams", "out", out);
}

KernelLaunch MakeFillUniformKernel(const FillUniformParams& p) {
  KernelLaunch launch;
  launch.name = "fill_uniform";
  if (absl::Status status = p.Validate(); !status.ok()) {
    launch.cpu = [status](const KernelLaunch::Resolver&) { return status; };
    launch.cuda = [status](void*) { return status; };
    return launch;
  }
  // Values are centered integers in [-2^23, 2^23) times step: uniform on [-a, a), a = stddev·√3.
  const float step = static_cast<float>(p.stddev * std::sqrt(3.0) / (1 << 23));
  const int dtype = static_cast<int>(p.dtype);
  launch.cpu = [p, step, dtype](const KernelLaunch::Resolver& resolve) -> absl::Status {
    auto* out = static_cast<uint16_t*>(resolve(p.out, p.count * 2));
    if (out == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "fill_uniform: out [+%d elements) is not inside one live allocation", p.count));
    }
    const size_t parts = Parts(p.count * 16, 64);  // a hash costs ~16 multiply-adds
    RunParts(parts, [&](size_t part) {
      const uint64_t end = p.count * (part + 1) / parts;
      for (uint64_t i = p.count * part / parts; i < end; ++i) {
        out[i] = device_gemm_internal::RandomWeightBits(p.seed, p.stream, i, step, dtype);
      }
    });
    return absl::OkStatus();
  };
#if defined(KVTIER_HAVE_CUDA)
  launch.cuda = [p, step, dtype](void* cuda_stream) -> absl::Status {
    const int error = device_gemm_internal::LaunchFillUniformCuda(
        cuda_stream, dtype, p.out.address(), p.count, p.seed, p.stream, step);
    if (error != 0) {
      return absl::InternalError(
          absl::StrFormat("fill_uniform kernel launch (%d elements): %s", p.count,
                          cudaGetErrorString(static_cast<cudaError_t>(error))));
    }
    return absl::OkStatus();
  };
#endif
  return launch;
}

}  // namespace kvtier::llm
