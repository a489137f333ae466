// tests/examples/llm_device_decoder_cuda_test.cc — the device decoder's GPU path (cuBLAS,
// dlopen'ed, and the CUDA fill kernel) against its CPU reference on the emulated device.
// Skips, saying why, where there is no usable GPU; fails where there is a GPU but no cuBLAS
// (scripts/gpu-check.sh puts the pip wheel's libcublas.so.13 on LD_LIBRARY_PATH).
//
// Tolerances: the fill is bit-exact by construction. cuBLAS and the reference multiply the
// same fp16/bf16 inputs exactly in float and accumulate in float in different orders, so
// each output may differ by ~√k · 2^-24 · Σ|x·w| typically, k · 2^-24 at worst; we allow
// 1e-4 · Σ|x·w| (k · 2^-24 = 2.4e-4 at k = 4096 is the worst case, never approached by
// random signs). Whole decoders: a last-bit difference in one matmul can flip the fp16
// rounding of the next matmul's input, so logits of O(1) may move by ~1e-3; we allow 2e-2
// and equal greedy tokens.

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "device/cuda_device.h"
#include "examples/llm/cublas_library.h"
#include "examples/llm/device_decoder.h"
#include "examples/llm/device_gemm.h"
#include "examples/llm/model.h"
#include "gtest/gtest.h"
#include "kernels/numeric.h"
#include "kvtier/device.h"
#include "tests/device/test_util.h"

namespace kvtier::llm {
namespace {

class DeviceDecoderCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> count = CudaDeviceCount();
    if (!count.ok() || *count == 0) {
      GTEST_SKIP() << "no usable GPU: "
                   << (count.ok() ? std::string("0 devices") : count.status().ToString());
    }
    DeviceOptions options;
    options.choice = DeviceChoice::kCuda;
    KVTIER_ASSERT_OK_AND_ASSIGN(cuda_, Device::Create(options));
    options.choice = DeviceChoice::kEmulated;
    KVTIER_ASSERT_OK_AND_ASSIGN(emulated_, Device::Create(options));
    absl::StatusOr<std::unique_ptr<CublasLibrary>> cublas = CublasLibrary::Load();
    ASSERT_TRUE(cublas.ok()) << cublas.status();
    cublas_ = std::move(*cublas);
  }

  std::unique_ptr<Device> cuda_, emulated_;
  std::unique_ptr<CublasLibrary> cublas_;
};

std::vector<uint16_t> Fill(Device& device, FillUniformParams p) {
  auto stream = device.CreateStream();
  EXPECT_TRUE(stream.ok());
  auto out = device.Allocate(p.count * 2);
  EXPECT_TRUE(out.ok());
  p.out = *out;
  std::vector<uint16_t> host(p.count);
  KVTIER_EXPECT_OK((*stream)->Launch(MakeFillUniformKernel(p)));
  KVTIER_EXPECT_OK((*stream)->CopyToHost(host.data(), *out, p.count * 2));
  KVTIER_EXPECT_OK((*stream)->Synchronize());
  KVTIER_EXPECT_OK(device.Free(*out));
  return host;
}

TEST_F(DeviceDecoderCudaTest, FillDrawsTheSameBitsAsTheCpuReference) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (uint64_t count : {uint64_t{1}, uint64_t{1000}, uint64_t{(1 << 24) + 3}}) {
      FillUniformParams p;
      p.dtype = dtype;
      p.count = count;
      p.seed = 9;
      p.stream = 17;
      p.stddev = 1.0 / 64;
      EXPECT_EQ(Fill(*cuda_, p), Fill(*emulated_, p)) << DTypeName(dtype) << " " << count;
    }
  }
}

std::vector<float> Gemm(Device& device, const CublasLibrary* cublas, DType dtype, uint32_t rows,
                        uint32_t k, uint32_t n, const std::vector<uint16_t>& x,
                        const std::vector<uint16_t>& w) {
  auto stream = device.CreateStream();
  EXPECT_TRUE(stream.ok());
  auto xd = device.Allocate(x.size() * 2);
  auto wd = device.Allocate(w.size() * 2);
  auto yd = device.Allocate(size_t{rows} * n * 4);
  EXPECT_TRUE(xd.ok() && wd.ok() && yd.ok());
  std::vector<float> y(size_t{rows} * n, std::nanf(""));
  DeviceGemmParams p;
  p.dtype = dtype;
  p.rows = rows;
  p.k = k;
  p.n = n;
  p.x = *xd;
  p.w = *wd;
  p.y = *yd;
  KVTIER_EXPECT_OK((*stream)->CopyToDevice(*xd, x.data(), x.size() * 2));
  KVTIER_EXPECT_OK((*stream)->CopyToDevice(*wd, w.data(), w.size() * 2));
  KVTIER_EXPECT_OK((*stream)->Launch(MakeDeviceGemmKernel(p, cublas)));
  KVTIER_EXPECT_OK((*stream)->CopyToHost(y.data(), *yd, y.size() * 4));
  KVTIER_EXPECT_OK((*stream)->Synchronize());
  for (DevicePtr ptr : {*xd, *wd, *yd}) KVTIER_EXPECT_OK(device.Free(ptr));
  return y;
}

TEST_F(DeviceDecoderCudaTest, CublasMatchesTheEmulatedReference) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Shape {
    uint32_t rows, k, n;
  };
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (const Shape s : {Shape{1, 4096, 6144}, Shape{7, 136, 33}, Shape{64, 4096, 1024}}) {
      auto round = [&](float f) {
        return dtype == DType::kBFloat16 ? numeric::FloatToBf16Bits(f)
                                         : numeric::FloatToHalfBits(f);
      };
      auto widen = [&](uint16_t b) {
        return dtype == DType::kBFloat16 ? numeric::Bf16BitsToFloat(b)
                                         : numeric::HalfBitsToFloat(b);
      };
      std::vector<uint16_t> x(size_t{s.rows} * s.k), w(size_t{s.n} * s.k);
      for (uint16_t& v : x) v = round(u(rng));
      for (uint16_t& v : w) v = round(u(rng) / 64);
      const std::vector<float> gpu = Gemm(*cuda_, cublas_.get(), dtype, s.rows, s.k, s.n, x, w);
      const std::vector<float> ref = Gemm(*emulated_, nullptr, dtype, s.rows, s.k, s.n, x, w);
      for (uint32_t t = 0; t < s.rows; ++t) {
        for (uint32_t j = 0; j < s.n; j += 1 + s.n / 97) {
          double magnitude = 0;
          for (uint32_t i = 0; i < s.k; ++i) {
            magnitude += std::fabs(double{widen(x[t * s.k + i])} * widen(w[j * s.k + i]));
          }
          ASSERT_NEAR(gpu[t * s.n + j], ref[t * s.n + j], 1e-4 * magnitude)
              << DTypeName(dtype) << " " << s.rows << "x" << s.k << "x" << s.n << " at " << t << ","
              << j;
        }
      }
    }
  }
}

TEST_F(DeviceDecoderCudaTest, DecoderOnTheGpuMatchesItOnTheEmulatedDevice) {
  ModelConfig c;
  c.num_layers = 4;
  c.d_model = 512;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.ffn_dim = 1408;
  c.vocab_size = 4096;
  DeviceDecoder::Options options;
  options.cublas = cublas_.get();
  KVTIER_ASSERT_OK_AND_ASSIGN(auto gpu, DeviceDecoder::Random(c, 1, *cuda_, options));
  KVTIER_ASSERT_OK_AND_ASSIGN(auto ref, DeviceDecoder::Random(c, 1, *emulated_, options));
  ReferenceSession sg(gpu.get()), sr(ref.get());
  std::vector<int32_t> prompt;
  for (int i = 0; i < 100; ++i) prompt.push_back((i * 389 + 7) % 4096);
  absl::StatusOr<std::vector<float>> lg = sg.Prefill(prompt), lr = sr.Prefill(prompt);
  for (int step = 0; step < 6; ++step) {
    ASSERT_TRUE(lg.ok()) << lg.status();
    ASSERT_TRUE(lr.ok()) << lr.status();
    double diff = 0;
    for (size_t v = 0; v < lg->size(); ++v)
      diff = std::max(diff, double{std::fabs((*lg)[v] - (*lr)[v])});
    EXPECT_LE(diff, 2e-2) << "step " << step;
    const int32_t token = Argmax(*lr);
    EXPECT_EQ(Argmax(*lg), token) << "step " << step;
    lg = sg.Step(token);
    lr = sr.Step(token);
  }
}

}  // namespace
}  // namespace kvtier::llm
