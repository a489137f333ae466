// tests/kernels/quantize_cuda_test.cc — the CUDA quantization kernels against their CPU
// reference: quantized bytes (payload, scales, padding) and dequantized values must be
// identical, bit for bit, over several geometries, all dtypes and formats, many blocks, the
// vectorized and the element-at-a-time paths, strided blocks (gaps untouched), and heads of
// zeros, NaN and Inf. Skips, saying why, on machines without a usable GPU.
//
// Inputs are fresh random data each run; the seed is printed on failure and can be pinned
// with KVTIER_TEST_SEED=N.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "device/cuda_device.h"
#include "kernels/numeric.h"
#include "kernels/quantize.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"
#include "tests/device/test_util.h"

namespace kvtier {
namespace {

constexpr uint8_t kPoison = 0xA5;

uint64_t TestSeed() {
  if (const char* env = std::getenv("KVTIER_TEST_SEED"); env != nullptr) {
    return std::strtoull(env, nullptr, 10);
  }
  std::random_device rd;
  return (uint64_t{rd()} << 32) | rd();
}

void StoreValue(DType dtype, uint8_t* p, float v) {
  switch (dtype) {
    case DType::kFloat16: {
      const uint16_t b = numeric::FloatToHalfBits(v);
      std::memcpy(p, &b, 2);
      return;
    }
    case DType::kBFloat16: {
      const uint16_t b = numeric::FloatToBf16Bits(v);
      std::memcpy(p, &b, 2);
      return;
    }
    case DType::kFp8E4m3:  // one byte per element: never quantized, never here
    case DType::kFp8E5m2:
      std::abort();
    case DType::kFloat32:
      std::memcpy(p, &v, 4);
      return;
  }
}

// `blocks` original blocks, each `stride` bytes apart (gaps poisoned): per head gaussian with
// σ over e^±3 and an outlier; every third block has a head of zeros, every fifth NaN and ±Inf.
std::vector<uint8_t> MakeBlocks(const Geometry& g, size_t blocks, size_t stride, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> log_sigma(-3, 3);
  std::vector<uint8_t> out(blocks * stride, kPoison);
  const size_t es = g.element_bytes();
  for (size_t b = 0; b < blocks; ++b) {
    uint8_t* block = out.data() + b * stride;
    for (uint32_t l = 0; l < g.num_layers; ++l) {
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        for (uint32_t h = 0; h < g.num_kv_heads; ++h) {
          const bool zeros = b % 3 == 0 && l == 0 && part == KvPart::kKey && h == 0;
          std::normal_distribution<float> normal(0, std::exp(log_sigma(rng)));
          for (uint32_t t = 0; t < g.block_tokens; ++t) {
            for (uint32_t d = 0; d < g.head_dim; ++d) {
              StoreValue(g.dtype, block + g.Offset(l, part, t) + (size_t{h} * g.head_dim + d) * es,
                         zeros ? 0.0f : normal(rng));
            }
          }
          const uint32_t t = static_cast<uint32_t>(rng() % g.block_tokens);
          const uint32_t d = static_cast<uint32_t>(rng() % g.head_dim);
          if (!zeros) {
            StoreValue(g.dtype, block + g.Offset(l, part, t) + (size_t{h} * g.head_dim + d) * es,
                       20.0f * normal.stddev());
          }
        }
      }
    }
    if (b % 5 == 0) {
      const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                                std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity()};
      for (float v : specials) {
        const size_t element = rng() % (g.block_bytes() / es);
        StoreValue(g.dtype, block + element * es, v);
      }
    }
  }
  return out;
}

struct Layout {
  size_t src_stride_extra = 0;  // bytes added to the original block size
  size_t q_stride_extra = 0;    // bytes added to the quantized block size
  size_t q_offset = 0;          // quantized blocks start this far into their allocation
};

class QuantizeCudaTest : public ::testing::Test {
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
    absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    stream_ = std::move(*stream);
    seed_ = TestSeed();
  }

  void TearDown() override {
    if (stream_ != nullptr) (void)stream_->Synchronize();
    for (DevicePtr p : allocations_) (void)device_->Free(p);
    stream_.reset();  // before the device
  }

  DevicePtr Upload(const std::vector<uint8_t>& bytes) {
    absl::StatusOr<DevicePtr> p = device_->Allocate(bytes.size());
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return DevicePtr();
    allocations_.push_back(*p);
    EXPECT_TRUE(stream_->CopyToDevice(*p, bytes.data(), bytes.size()).ok());
    EXPECT_TRUE(stream_->Synchronize().ok());
    return *p;
  }

  std::vector<uint8_t> Download(DevicePtr p, size_t bytes) {
    std::vector<uint8_t> out(bytes);
    EXPECT_TRUE(stream_->CopyToHost(out.data(), p, bytes).ok());
    EXPECT_TRUE(stream_->Synchronize().ok());
    return out;
  }

  // Quantizes and dequantizes on the GPU and with the CPU reference; every byte must match,
  // including the poisoned gaps between strided blocks (untouched on both).
  void ExpectSameAsCpu(const Geometry& g, QuantFormat f, size_t blocks, const Layout& layout) {
    SCOPED_TRACE(absl::StrFormat("%s, %s, %d blocks, strides +%d/+%d, quantized at +%d, seed %d",
                                 g.ToString(), QuantFormatName(f), blocks, layout.src_stride_extra,
                                 layout.q_stride_extra, layout.q_offset, seed_));
    const size_t src_stride = g.block_bytes() + layout.src_stride_extra;
    const size_t q_stride = QuantizedBlockBytes(g, f) + layout.q_stride_extra;
    const std::vector<uint8_t> original = MakeBlocks(g, blocks, src_stride, seed_);
    const size_t q_size = layout.q_offset + blocks * q_stride;

    const DevicePtr src = Upload(original);
    const DevicePtr q = Upload(std::vector<uint8_t>(q_size, kPoison));
    const DevicePtr back = Upload(std::vector<uint8_t>(original.size(), kPoison));
    ASSERT_FALSE(src.is_null() || q.is_null() || back.is_null());
    const uint32_t n = static_cast<uint32_t>(blocks);
    const QuantizeParams qp{g, f, n, src, src_stride, q + layout.q_offset, q_stride};
    const QuantizeParams dp{g, f, n, q + layout.q_offset, q_stride, back, src_stride};
    KVTIER_ASSERT_OK(stream_->Launch(MakeQuantizeKernel(qp)));
    KVTIER_ASSERT_OK(stream_->Launch(MakeDequantizeKernel(dp)));
    KVTIER_ASSERT_OK(stream_->Synchronize());
    const std::vector<uint8_t> gpu_q = Download(q, q_size);
    const std::vector<uint8_t> gpu_back = Download(back, original.size());

    std::vector<uint8_t> cpu_q(q_size, kPoison);
    QuantizeBlocksCpu(qp, original.data(), cpu_q.data() + layout.q_offset);
    std::vector<uint8_t> cpu_back(original.size(), kPoison);
    // Dequantize the GPU's bytes, so a quantization difference is not reported twice.
    DequantizeBlocksCpu(dp, gpu_q.data() + layout.q_offset, cpu_back.data());

    auto first_difference = [](const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
      for (size_t i = 0; i < a.size(); ++i) {
        if (a[i] != b[i]) return static_cast<long>(i);
      }
      return -1L;
    };
    const long dq = first_difference(gpu_q, cpu_q);
    EXPECT_EQ(dq, -1) << absl::StrFormat("quantized byte %d: gpu 0x%02x, cpu 0x%02x", dq,
                                         dq >= 0 ? gpu_q[dq] : 0, dq >= 0 ? cpu_q[dq] : 0);
    const long dd = first_difference(gpu_back, cpu_back);
    EXPECT_EQ(dd, -1) << absl::StrFormat("dequantized byte %d: gpu 0x%02x, cpu 0x%02x", dd,
                                         dd >= 0 ? gpu_back[dd] : 0, dd >= 0 ? cpu_back[dd] : 0);
    // The source was only read.
    EXPECT_EQ(first_difference(Download(src, original.size()), original), -1L);
  }

  uint64_t seed_ = 0;
  std::unique_ptr<Device> device_;
  std::unique_ptr<Stream> stream_;
  std::vector<DevicePtr> allocations_;
};

// The vectorized paths: head_dim a multiple of 16, everything 16-byte aligned.
TEST_F(QuantizeCudaTest, VectorizedPathsMatchTheCpuReferenceBitForBit) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (QuantFormat f : {QuantFormat::kFp8E4m3, QuantFormat::kInt8}) {
      for (uint32_t head_dim : {64u, 128u}) {
        for (uint32_t kv_heads : {1u, 8u}) {
          for (uint32_t tokens : {16u, 256u}) {
            const Geometry g{4, kv_heads, head_dim, dtype, tokens};
            // At most ~16 MiB per case (the CPU reference is the slow side), 37 blocks of the
            // small geometries.
            const size_t blocks =
                std::max<size_t>(3, std::min<size_t>(37, (16u << 20) / g.block_bytes()));
            ExpectSameAsCpu(g, f, blocks, Layout{});
            ExpectSameAsCpu(g, f, blocks, Layout{4096, 48, 0});  // strided, still aligned
          }
        }
      }
    }
  }
}

// Element-at-a-time paths: head_dim not a multiple of 16, or strides / addresses that are
// not multiples of 16.
TEST_F(QuantizeCudaTest, ScalarPathsMatchTheCpuReferenceBitForBit) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (QuantFormat f : {QuantFormat::kFp8E4m3, QuantFormat::kInt8}) {
      ExpectSameAsCpu(Geometry{3, 5, 40, dtype, 16}, f, 29, Layout{});
      ExpectSameAsCpu(Geometry{2, 3, 5, dtype, 7}, f, 50, Layout{});
      ExpectSameAsCpu(Geometry{2, 8, 128, dtype, 16}, f, 9, Layout{4, 4, 4});
    }
  }
}

// More blocks than the launch grid has CTAs: the grid-stride loops cover them all.
TEST_F(QuantizeCudaTest, ManySmallBlocksBeyondOneGrid) {
  ExpectSameAsCpu(Geometry{2, 8, 16, DType::kFloat16, 16}, QuantFormat::kFp8E4m3, 5000, Layout{});
  ExpectSameAsCpu(Geometry{2, 8, 16, DType::kBFloat16, 16}, QuantFormat::kInt8, 5000, Layout{});
}

TEST_F(QuantizeCudaTest, InvalidParamsAreRejectedByLaunch) {
  const Geometry g{2, 2, 16, DType::kFloat16, 16};
  absl::StatusOr<DevicePtr> a = device_->Allocate(g.block_bytes());
  ASSERT_TRUE(a.ok()) << a.status();
  allocations_.push_back(*a);
  const QuantizeParams bad{g, QuantFormat::kFp8E4m3, 1, *a, g.block_bytes(), DevicePtr(), 4096};
  const absl::Status s = stream_->Launch(MakeQuantizeKernel(bad));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "dst")) << s;
  const QuantizeParams none{g, QuantFormat::kNone, 1, *a, g.block_bytes(), *a, 4096};
  EXPECT_EQ(stream_->Launch(MakeDequantizeKernel(none)).code(), absl::StatusCode::kInvalidArgument);
  KVTIER_EXPECT_OK(stream_->Synchronize());
}

}  // namespace
}  // namespace kvtier
