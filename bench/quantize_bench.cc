// bench quantize — fp8 (e4m3) and int8 KV-cache quantization on the Device: quantize and
// dequantize throughput, the round trip's error against the original, and the compression.
//
//   bench/run quantize [--device=auto|emulated|cuda] [--blocks=N] [--runs=N]
//                      [--layers=32] [--kv-heads=8] [--head-dim=128] [--block-tokens=16]
//                      [--dtype=fp16|bf16|fp32]
//
// Geometry defaults to Llama-3-8B (32 layers, 8 KV heads, head_dim 128, fp16) with 16-token
// blocks: 2 MiB per block. Blocks default to ~512 MiB of originals on CUDA, ~128 MiB on the
// emulated device (where the kernels are the CPU reference on one thread). Data: per head,
// gaussian values with σ drawn log-uniformly over e^±2 (a few distinct blocks, repeated).
//
// Throughput counts bytes of the ORIGINAL per second (what a load restores) for both
// directions. figure = dequantize GB/s with fp8, the kernel on the load path; ceiling = a
// device-to-device copy (Stream::CopyOnDevice) of the same original bytes in the same run,
// i.e. what moving the unquantized block within the device would cost. Each figure is the
// median of --runs timed runs (launch + Synchronize) after one warm-up.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "kernels/numeric.h"
#include "kernels/quantize.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier::bench {
namespace {

struct Args {
  DeviceChoice device = DeviceChoice::kAuto;
  size_t blocks = 0;  // 0: by device
  int runs = 5;
  Geometry geometry{32, 8, 128, DType::kFloat16, 16};
};

struct FormatResult {
  double quantize_gbps = 0;
  double dequantize_gbps = 0;
  double compression = 0;
  QuantError error;
};

void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) Die(absl::StrFormat("%s: %s", what, status.ToString()));
}

// `count` distinct original blocks of gaussian heads.
std::vector<uint8_t> MakeOriginals(const Geometry& g, size_t count) {
  std::mt19937_64 rng(20240611);
  std::uniform_real_distribution<double> log_sigma(-2, 2);
  const size_t es = g.element_bytes();
  std::vector<uint8_t> out(count * g.block_bytes());
  for (size_t b = 0; b < count; ++b) {
    for (uint32_t l = 0; l < g.num_layers; ++l) {
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        for (uint32_t h = 0; h < g.num_kv_heads; ++h) {
          std::normal_distribution<float> normal(0, static_cast<float>(std::exp(log_sigma(rng))));
          for (uint32_t t = 0; t < g.block_tokens; ++t) {
            uint8_t* p = out.data() + b * g.block_bytes() + g.Offset(l, part, t) +
                         size_t{h} * g.head_dim * es;
            for (uint32_t d = 0; d < g.head_dim; ++d, p += es) {
              const float x = normal(rng);
              if (g.dtype == DType::kFloat32) {
                std::memcpy(p, &x, 4);
              } else {
                const uint16_t bits = g.dtype == DType::kFloat16 ? numeric::FloatToHalfBits(x)
                                                                 : numeric::FloatToBf16Bits(x);
                std::memcpy(p, &bits, 2);
              }
            }
          }
        }
      }
    }
  }
  return out;
}

int Main(int argc, char** argv) {
  Args args;
  CLI::App app(
      "bench quantize: fp8/int8 KV quantize + dequantize throughput and error vs the fp16 "
      "original",
      "bench/run quantize");
  flags::AddDevice(app, &args.device);
  app.add_option("--blocks", args.blocks, "blocks quantized per run (default: by device)")
      ->check(flags::AtLeast<size_t>(1));
  flags::AddRuns(app, &args.runs);
  AddGeometryShape(app, &args.geometry);
  flags::AddParsed(app, "--dtype", &args.geometry.dtype, ParseDType, DTypeName, "fp16|bf16|fp32",
                   "geometry: the original's element type");
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  const Geometry& g = args.geometry;
  Check(g.Validate(), "geometry");

  DeviceOptions options;
  options.choice = args.device;
  absl::StatusOr<std::unique_ptr<Device>> opened = Device::Create(options);
  Check(opened.status(), "opening the device");
  Device& device = **opened;
  const bool cuda = device.kind() == DeviceKind::kCuda;
  absl::StatusOr<std::unique_ptr<Stream>> stream_or = device.CreateStream();
  Check(stream_or.status(), "CreateStream");
  Stream& stream = **stream_or;

  const size_t block = g.block_bytes();
  if (args.blocks == 0)
    args.blocks = std::max<size_t>(1, (cuda ? size_t{512} << 20 : size_t{128} << 20) / block);
  const size_t n = args.blocks;
  const size_t total = n * block;
  const size_t max_q = std::max(QuantizedBlockBytes(g, QuantFormat::kFp8E4m3),
                                QuantizedBlockBytes(g, QuantFormat::kInt8));
  absl::StatusOr<DevicePtr> original = device.Allocate(total);
  absl::StatusOr<DevicePtr> quantized = device.Allocate(n * max_q);
  absl::StatusOr<DevicePtr> roundtrip = device.Allocate(total);
  absl::StatusOr<DevicePtr> copy = device.Allocate(total);
  Check(original.status(), "Allocate original");
  Check(quantized.status(), "Allocate quantized");
  Check(roundtrip.status(), "Allocate roundtrip");
  Check(copy.status(), "Allocate copy target");

  // A few distinct blocks, repeated over the whole range.
  const size_t distinct = std::min<size_t>(n, 4);
  const std::vector<uint8_t> host = MakeOriginals(g, distinct);
  for (size_t i = 0; i < n; ++i) {
    Check(stream.CopyToDevice(*original + i * block, host.data() + (i % distinct) * block, block),
          "CopyToDevice");
  }
  Check(stream.Synchronize(), "filling the originals");

  auto timed = [&](auto&& enqueue) {
    enqueue();  // warm-up
    Check(stream.Synchronize(), "warm-up");
    return MedianSeconds(args.runs, [&] {
      enqueue();
      Check(stream.Synchronize(), "timed run");
    });
  };

  const double copy_s =
      timed([&] { Check(stream.CopyOnDevice(*copy, *original, total), "CopyOnDevice"); });
  const double copy_gbps = static_cast<double>(total) / copy_s / 1e9;

  std::vector<std::pair<QuantFormat, FormatResult>> results;
  for (QuantFormat f : {QuantFormat::kFp8E4m3, QuantFormat::kInt8}) {
    const size_t qbytes = QuantizedBlockBytes(g, f);
    const QuantizeParams q{g, f, static_cast<uint32_t>(n), *original, block, *quantized, qbytes};
    const QuantizeParams d{g, f, static_cast<uint32_t>(n), *quantized, qbytes, *roundtrip, block};
    Check(q.Validate(true), "quantize params");
    Check(d.Validate(false), "dequantize params");
    FormatResult r;
    r.quantize_gbps =
        static_cast<double>(total) /
        timed([&] { Check(stream.Launch(MakeQuantizeKernel(q)), "Launch quantize"); }) / 1e9;
    r.dequantize_gbps =
        static_cast<double>(total) /
        timed([&] { Check(stream.Launch(MakeDequantizeKernel(d)), "Launch dequantize"); }) / 1e9;
    r.compression = static_cast<double>(block) / static_cast<double>(qbytes);
    // Error over the distinct blocks (the rest repeat them).
    std::vector<uint8_t> back(distinct * block);
    Check(stream.CopyToHost(back.data(), *roundtrip, back.size()), "CopyToHost");
    Check(stream.Synchronize(), "reading the round trip back");
    absl::StatusOr<QuantError> e = MeasureQuantError(g, f, host.data(), back.data(), distinct);
    Check(e.status(), "MeasureQuantError");
    r.error = *e;
    results.push_back({f, r});
  }
  for (DevicePtr p : {*original, *quantized, *roundtrip, *copy}) Check(device.Free(p), "Free");

  std::printf("KV quantization on %s: %s, %zu blocks (%.0f MiB of %s), median of %d runs\n",
              device.name().c_str(), g.ToString().c_str(), n, total / 1048576.0, DTypeName(g.dtype),
              args.runs);
  std::printf(
      "GB/s count bytes of the original; ceiling = device-to-device copy of them: %.2f GB/s\n",
      copy_gbps);
  std::printf("%-6s %14s %16s %8s %12s %13s %10s %14s\n", "format", "quantize GB/s",
              "dequantize GB/s", "ratio", "compression", "relative_rms", "max_abs",
              "max_abs/scale");
  for (const auto& [f, r] : results) {
    std::printf("%-6s %14.2f %16.2f %8.3f %11.3fx %13.5f %10.4g %14.3f\n", QuantFormatName(f),
                r.quantize_gbps, r.dequantize_gbps, r.dequantize_gbps / copy_gbps, r.compression,
                r.error.relative_rms, r.error.max_abs, r.error.max_abs_over_scale);
  }

  const FormatResult& fp8 = results[0].second;
  JsonLine json;
  json.Str("bench", "quantize")
      .Num("figure", fp8.dequantize_gbps)
      .Str("unit", "GB/s")
      .Str("figure_source", "fp8 dequantize, bytes of the original per second")
      .Num("ceiling", copy_gbps)
      .Str("ceiling_source", "Stream::CopyOnDevice of the same original bytes, same run")
      .Num("ratio", fp8.dequantize_gbps / copy_gbps)
      .Str("device", DeviceKindName(device.kind()))
      .Str("device_name", device.name())
      .Str("geometry", g.ToString())
      .Num("blocks", static_cast<double>(n))
      .Num("total_mib", total / 1048576.0)
      .Num("runs", args.runs)
      .Str("data", "gaussian per head, sigma log-uniform in e^-2..e^2");
  for (const auto& [f, r] : results) {
    const std::string p = QuantFormatName(f);
    json.Num(p + "_quantize_gbps", r.quantize_gbps)
        .Num(p + "_dequantize_gbps", r.dequantize_gbps)
        .Num(p + "_compression", r.compression)
        .Num(p + "_relative_rms", r.error.relative_rms)
        .Num(p + "_max_abs", r.error.max_abs)
        .Num(p + "_max_abs_over_scale", r.error.max_abs_over_scale);
  }
  json.Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
