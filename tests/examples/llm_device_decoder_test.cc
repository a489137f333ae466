// tests/examples/llm_device_decoder_test.cc — the decoder with device weights
// (examples/llm/device_decoder.h) and its kernels (device_gemm.h), on the emulated device:
// what stands in for a GPU here. The emulated matmul is the CPU reference of the cuBLAS path
// (same fp16/bf16 inputs, float accumulation); llm_device_decoder_cuda_test compares the two
// on a GPU.
//
// Tolerances:
//  * The emulated matmul against an exact (double) product of the same rounded inputs: float
//    accumulation of k products errs by at most ~k · 2^-24 · Σ|x·w|; we allow 1e-5 · Σ|x·w|
//    at k <= 300 (a wrong index or a missing rounding shows as O(1e-2) or more).
//  * The device decoder against the CPU float32 Model over the same weights, 2 layers of
//    d_model 64: the weights and matmul inputs are rounded to 11 (fp16) or 8 (bf16)
//    significant bits, so logits of O(1) move by O(√d · 2^-11) ≈ 4e-3 (fp16) and 8x that in
//    bf16. Measured max |logit diff| over 48 prompt + 8 greedy steps: 1.6e-3 fp16, 1.3e-2
//    bf16; bounds: 2e-2 (fp16) and 1e-1 (bf16). Both must also be nonzero and bf16's larger:
//    a device path that skipped the rounding would pass the bound but not that.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "examples/llm/decoder.h"
#include "examples/llm/device_decoder.h"
#include "examples/llm/device_gemm.h"
#include "examples/llm/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/numeric.h"
#include "kvtier/device.h"
#include "tests/device/test_util.h"

namespace kvtier::llm {
namespace {

using ::testing::HasSubstr;

ModelConfig SmallConfig() {
  ModelConfig c;
  c.num_layers = 2;
  c.d_model = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 84;  // % 8 != 0: the dot product's tail
  c.vocab_size = 103;
  return c;
}

std::unique_ptr<Device> Emulated() {
  DeviceOptions options;
  options.choice = DeviceChoice::kEmulated;
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
  EXPECT_TRUE(device.ok()) << device.status();
  return device.ok() ? std::move(*device) : nullptr;
}

uint16_t Round(DType dtype, float f) {
  return dtype == DType::kBFloat16 ? numeric::FloatToBf16Bits(f) : numeric::FloatToHalfBits(f);
}
float Widen(DType dtype, uint16_t b) {
  return dtype == DType::kBFloat16 ? numeric::Bf16BitsToFloat(b) : numeric::HalfBitsToFloat(b);
}

// Runs the device matmul of random x [rows][k], w [n][k] on `device`; returns y and the
// rounded inputs.
struct GemmRun {
  std::vector<uint16_t> x, w;
  std::vector<float> y;
};
GemmRun RunGemm(Device& device, DType dtype, uint32_t rows, uint32_t k, uint32_t n, uint64_t seed) {
  GemmRun run;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t i = 0; i < size_t{rows} * k; ++i) run.x.push_back(Round(dtype, u(rng)));
  for (size_t i = 0; i < size_t{n} * k; ++i) run.w.push_back(Round(dtype, u(rng)));
  run.y.assign(size_t{rows} * n, std::nanf(""));
  auto stream = device.CreateStream();
  EXPECT_TRUE(stream.ok());
  auto x = device.Allocate(run.x.size() * 2);
  auto w = device.Allocate(run.w.size() * 2);
  auto y = device.Allocate(run.y.size() * 4);
  EXPECT_TRUE(x.ok() && w.ok() && y.ok());
  DeviceGemmParams p;
  p.dtype = dtype;
  p.rows = rows;
  p.k = k;
  p.n = n;
  p.x = *x;
  p.w = *w;
  p.y = *y;
  KVTIER_EXPECT_OK((*stream)->CopyToDevice(*x, run.x.data(), run.x.size() * 2));
  KVTIER_EXPECT_OK((*stream)->CopyToDevice(*w, run.w.data(), run.w.size() * 2));
  KVTIER_EXPECT_OK((*stream)->Launch(MakeDeviceGemmKernel(p, nullptr)));
  KVTIER_EXPECT_OK((*stream)->CopyToHost(run.y.data(), *y, run.y.size() * 4));
  KVTIER_EXPECT_OK((*stream)->Synchronize());
  for (DevicePtr ptr : {*x, *w, *y}) KVTIER_EXPECT_OK(device.Free(ptr));
  return run;
}

TEST(DeviceGemm, EmulatedMatchesAnExactProductOfTheRoundedInputs) {
  std::unique_ptr<Device> device = Emulated();
  ASSERT_NE(device, nullptr);
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const uint32_t rows = 3, k = 299, n = 37;
    const GemmRun run = RunGemm(*device, dtype, rows, k, n, 7);
    for (uint32_t t = 0; t < rows; ++t) {
      for (uint32_t j = 0; j < n; ++j) {
        double exact = 0, magnitude = 0;
        for (uint32_t i = 0; i < k; ++i) {
          const double prod =
              double{Widen(dtype, run.x[t * k + i])} * Widen(dtype, run.w[j * k + i]);
          exact += prod;
          magnitude += std::fabs(prod);
        }
        ASSERT_NEAR(run.y[t * n + j], exact, 1e-5 * magnitude)
            << DTypeName(dtype) << " row " << t << " col " << j;
      }
    }
  }
}

TEST(DeviceGemm, BadParamsAreRefusedNamingTheField) {
  DeviceGemmParams p;
  p.rows = 1;
  p.k = 8;
  p.n = 8;
  p.x = DevicePtr::FromAddress(256);
  p.w = DevicePtr::FromAddress(512);
  p.y = DevicePtr::FromAddress(768);
  KVTIER_EXPECT_OK(p.Validate());
  DeviceGemmParams bad = p;
  bad.dtype = DType::kFloat32;
  EXPECT_THAT(bad.Validate().message(), HasSubstr("DeviceGemmParams.dtype"));
  bad = p;
  bad.k = 0;
  EXPECT_THAT(bad.Validate().message(), HasSubstr("DeviceGemmParams.k is 0"));
  bad = p;
  bad.w = DevicePtr();
  EXPECT_THAT(bad.Validate().message(), HasSubstr("DeviceGemmParams.w is null"));
  // A launch of an invalid matmul fails with the same error on the device.
  std::unique_ptr<Device> device = Emulated();
  ASSERT_NE(device, nullptr);
  auto stream = device->CreateStream();
  ASSERT_TRUE(stream.ok());
  bad.dtype = DType::kFloat32;
  absl::Status launched = (*stream)->Launch(MakeDeviceGemmKernel(bad, nullptr));
  if (launched.ok()) launched = (*stream)->Synchronize();
  EXPECT_EQ(launched.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(launched.message(), HasSubstr("DeviceGemmParams.dtype"));
}

std::vector<uint16_t> Fill(Device& device, const FillUniformParams& base, uint64_t count) {
  auto stream = device.CreateStream();
  EXPECT_TRUE(stream.ok());
  auto out = device.Allocate(count * 2);
  EXPECT_TRUE(out.ok());
  FillUniformParams p = base;
  p.count = count;
  p.out = *out;
  std::vector<uint16_t> host(count);
  KVTIER_EXPECT_OK((*stream)->Launch(MakeFillUniformKernel(p)));
  KVTIER_EXPECT_OK((*stream)->CopyToHost(host.data(), *out, count * 2));
  KVTIER_EXPECT_OK((*stream)->Synchronize());
  KVTIER_EXPECT_OK(device.Free(*out));
  return host;
}

TEST(FillUniform, SameBitsForTheSameTensorAndTheStatedSpread) {
  std::unique_ptr<Device> device = Emulated();
  ASSERT_NE(device, nullptr);
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    FillUniformParams p;
    p.dtype = dtype;
    p.seed = 42;
    p.stream = 3;
    p.stddev = 0.05;
    const uint64_t n = 1 << 17;
    const std::vector<uint16_t> a = Fill(*device, p, n);
    EXPECT_EQ(a, Fill(*device, p, n));
    p.stream = 4;
    const std::vector<uint16_t> other = Fill(*device, p, n);
    size_t same = 0;
    for (uint64_t i = 0; i < n; ++i) same += a[i] == other[i];
    EXPECT_LT(same, n / 50) << "another tensor draws other values";
    double sum = 0, sum_sq = 0, most = 0;
    for (uint16_t b : a) {
      const double v = Widen(dtype, b);
      sum += v;
      sum_sq += v * v;
      most = std::max(most, std::fabs(v));
    }
    const double mean = sum / n, sd = std::sqrt(sum_sq / n - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.01 * p.stddev) << DTypeName(dtype);
    EXPECT_NEAR(sd, p.stddev, 0.01 * p.stddev) << DTypeName(dtype);
    EXPECT_LE(most, p.stddev * std::sqrt(3.0) * (1 + 1.0 / 128)) << DTypeName(dtype);
    EXPECT_GT(most, p.stddev * std::sqrt(3.0) * 0.99) << DTypeName(dtype);
  }
}

TEST(FillUniform, BadParamsAreRefusedNamingTheField) {
  FillUniformParams p;
  p.count = 4;
  p.stddev = 1;
  p.out = DevicePtr::FromAddress(256);
  KVTIER_EXPECT_OK(p.Validate());
  FillUniformParams bad = p;
  bad.stddev = std::nan("");
  EXPECT_THAT(bad.Validate().message(), HasSubstr("stddev"));
  bad = p;
  bad.count = 0;
  EXPECT_THAT(bad.Validate().message(), HasSubstr("count is 0"));
  bad = p;
  bad.dtype = DType::kFloat32;
  EXPECT_THAT(bad.Validate().message(), HasSubstr("FillUniformParams.dtype"));
}

// Max |logit difference| between two decoders over a prompt and greedy continuation fed the
// same tokens (the first decoder's choices); counts differing greedy choices.
struct Comparison {
  double max_diff = 0;
  int token_mismatches = 0;
};
Comparison Compare(const Decoder& a, const Decoder& b) {
  ReferenceSession sa(&a), sb(&b);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 48; ++i) prompt.push_back((i * 37 + 5) % a.config().vocab_size);
  absl::StatusOr<std::vector<float>> la = sa.Prefill(prompt);
  absl::StatusOr<std::vector<float>> lb = sb.Prefill(prompt);
  Comparison c;
  for (int step = 0; step < 9; ++step) {
    EXPECT_TRUE(la.ok() && lb.ok()) << la.status() << " " << lb.status();
    if (!la.ok() || !lb.ok()) return c;
    for (size_t v = 0; v < la->size(); ++v) {
      c.max_diff = std::max(c.max_diff, static_cast<double>(std::fabs((*la)[v] - (*lb)[v])));
    }
    const int32_t token = Argmax(*la);
    c.token_mismatches += token != Argmax(*lb);
    la = sa.Step(token);
    lb = sb.Step(token);
  }
  return c;
}

TEST(DeviceDecoder, MatchesTheCpuModelWithinTheRoundingOfItsWeights) {
  std::unique_ptr<Device> device = Emulated();
  ASSERT_NE(device, nullptr);
  KVTIER_ASSERT_OK_AND_ASSIGN(Model model, Model::Random(SmallConfig(), 11));
  const CpuDecoder cpu(&model);
  double diffs[2] = {};
  int i = 0;
  for (const auto& [dtype, tolerance] :
       {std::pair<DType, double>{DType::kFloat16, 2e-2}, {DType::kBFloat16, 1e-1}}) {
    DeviceDecoder::Options options;
    options.weight_dtype = dtype;
    KVTIER_ASSERT_OK_AND_ASSIGN(std::unique_ptr<DeviceDecoder> dd,
                                DeviceDecoder::FromModel(model, *device, options));
    EXPECT_THAT(dd->Describe(), HasSubstr("emulated"));
    const Comparison c = Compare(cpu, *dd);
    EXPECT_LE(c.max_diff, tolerance) << DTypeName(dtype);
    EXPECT_GT(c.max_diff, 0.0) << DTypeName(dtype) << ": the weights were not rounded";
    EXPECT_EQ(c.token_mismatches, 0) << DTypeName(dtype);
    diffs[i++] = c.max_diff;
    std::printf("%s: max |logit diff| vs CPU float32 %.3g\n", DTypeName(dtype), c.max_diff);
  }
  EXPECT_GT(diffs[1], diffs[0]) << "bf16 keeps fewer bits than fp16";
}

TEST(DeviceDecoder, RandomWeightsAreReproducibleAndDependOnTheSeed) {
  std::unique_ptr<Device> device = Emulated();
  ASSERT_NE(device, nullptr);
  DeviceDecoder::Options options;
  KVTIER_ASSERT_OK_AND_ASSIGN(auto a, DeviceDecoder::Random(SmallConfig(), 5, *device, options));
  KVTIER_ASSERT_OK_AND_ASSIGN(auto b, DeviceDecoder::Random(SmallConfig(), 5, *device, options));
  KVTIER_ASSERT_OK_AND_ASSIGN(auto c, DeviceDecoder::Random(SmallConfig(), 6, *device, options));
  EXPECT_EQ(a->device_weight_bytes(),
            2 * (2 * (64 * (64 + 2 * 32) + 64 * 64 + 2 * 84 * 64 + 64 * 84) + 103 * 64));
  const Comparison same = Compare(*a, *b);
  EXPECT_EQ(same.max_diff, 0.0);
  const Comparison other = Compare(*a, *c);
  EXPECT_GT(other.max_diff, 0.1);
  // Activations stay O(1), as Model::Random's do: the logits are neither 0 nor huge.
  ReferenceSession s(a.get());
  KVTIER_ASSERT_OK_AND_ASSIGN(std::vector<float> logits, s.Prefill(std::vector<int32_t>{1, 2, 3}));
  double sum_sq = 0;
  for (float v : logits) sum_sq += double{v} * v;
  const double rms = std::sqrt(sum_sq / logits.size());
  EXPECT_GT(rms, 0.1);
  EXPECT_LT(rms, 10.0);
}

TEST(DeviceDecoder, BadInputIsRefusedNamingIt) {
  std::unique_ptr<Device> device = Emulated();
  ASSERT_NE(device, nullptr);
  DeviceDecoder::Options options;
  ModelConfig odd = SmallConfig();
  odd.num_kv_heads = 3;
  absl::StatusOr<std::unique_ptr<DeviceDecoder>> bad =
      DeviceDecoder::Random(odd, 1, *device, options);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("num_kv_heads"));
  options.weight_dtype = DType::kFloat32;
  bad = DeviceDecoder::Random(SmallConfig(), 1, *device, options);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("weight_dtype"));

  options.weight_dtype = DType::kFloat16;
  KVTIER_ASSERT_OK_AND_ASSIGN(auto dd, DeviceDecoder::Random(SmallConfig(), 1, *device, options));
  EXPECT_THAT(dd->Embed(std::vector<int32_t>{103}).status().message(), HasSubstr("vocabulary"));
  const std::vector<float> hidden(64, 0.5f);
  EXPECT_THAT(dd->Qkv(2, hidden, 0).status().message(), HasSubstr("layer 2 of 2"));
  EXPECT_THAT(dd->Qkv(0, std::vector<float>(63), 0).status().message(), HasSubstr("d_model"));
  std::vector<float> h = hidden;
  EXPECT_THAT(dd->FinishLayer(0, std::vector<float>(10), &h).message(), HasSubstr("attn"));
  EXPECT_THAT(dd->Logits(std::vector<float>(3)).status().message(), HasSubstr("hidden_row"));
}

}  // namespace
}  // namespace kvtier::llm
