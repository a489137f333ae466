// bench gpu-copy — host ↔ device block transfers as kvtier issues them, against one large
// copy of pinned memory in the same run; and, for one layer's slice of paged-pool blocks,
// per-part DMA against the zero-copy kernel, side by side.
//
//   bench/run gpu-copy [--device=auto|cuda|emulated] [--total-mib=N] [--runs=N]
//                      [--emulated-gbps=G]
//
// Part 1, whole blocks: N blocks of 64 KiB … 8 MiB (N × size = total), scattered over a
// pinned host arena and a device arena in shuffled order (so no two neighbours can merge),
// moved by one Stream::CopyBatch per direction. ceiling = one Stream copy of the whole total
// as a single pinned buffer, per direction, measured in the same run.
// figure = host→device GB/s at 1 MiB blocks (the target: ratio ≥ 0.9 at ≥ 1 MiB).
//
// Part 2, paged layer slices: a Llama-3-8B-like geometry (8 KV heads × 128 dim × fp16) with
// pages of 16, 64 and 256 tokens; one layer of N blocks scattered from pinned host slots into
// an NHD pool, by DMA (one copy per block and K/V, batched) and by the paged-transfer kernel
// reading host memory directly. The engine picks DMA for parts ≥ paged_dma_min_part_bytes;
// the crossover measured here is what that option should be on this machine.
//
// On the emulated device every number is CPU memcpy (or the throttled link with
// --emulated-gbps) and the JSON says "device": "emulated".

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "kernels/paged_kernels.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier::bench {
namespace {

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) Die(absl::StrFormat("%s: %s", what, s.ToString()));
}

template <typename T>
T Get(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Die(absl::StrFormat("%s: %s", what, v.status().ToString()));
  return std::move(*v);
}

// Median seconds of `runs` runs of enqueue() followed by a stream synchronize, after one
// untimed warm-up run.
template <typename F>
double TimeOnStream(Stream& stream, int runs, F&& enqueue) {
  enqueue();
  Check(stream.Synchronize(), "warm-up");
  return MedianSeconds(runs, [&] {
    enqueue();
    Check(stream.Synchronize(), "synchronize");
  });
}

struct Buffers {
  Device* device = nullptr;
  void* host = nullptr;
  DevicePtr dev;
  ~Buffers() {
    if (host != nullptr) (void)device->FreePinned(host);
    if (!dev.is_null()) (void)device->Free(dev);
  }
};

int Main(int argc, char** argv) {
  DeviceOptions options;
  size_t total_mib = 0;
  int runs = 7;
  double emulated_gbps = 0;
  CLI::App app(
      "bench gpu-copy: host<->device block copies 64 KiB..8 MiB vs one large pinned copy; "
      "paged DMA vs the zero-copy kernel",
      "bench/run gpu-copy");
  flags::AddDevice(app, &options.choice);
  app.add_option("--total-mib", total_mib, "bytes moved per size, MiB (default: by device)")
      ->check(flags::AtLeast<size_t>(16));
  flags::AddRuns(app, &runs);
  app.add_option("--emulated-gbps", emulated_gbps,
                 "throttle the emulated link to G GB/s; 0 = unthrottled")
      ->check(flags::AtLeast(0.0))
      ->capture_default_str();
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  options.emulated_copy_gbps = emulated_gbps;
  std::unique_ptr<Device> device = Get(Device::Create(options), "opening the device");
  const bool cuda = device->kind() == DeviceKind::kCuda;
  if (total_mib == 0) total_mib = cuda ? 1024 : 128;
  const size_t total = total_mib << 20;
  std::unique_ptr<Stream> stream = Get(device->CreateStream(), "creating a stream");
  std::printf("gpu-copy on %s (%s), %zu MiB per transfer, median of %d runs\n",
              device->name().c_str(), DeviceKindName(device->kind()), total_mib, runs);

  Buffers buf;
  buf.device = device.get();
  buf.host = Get(device->AllocatePinned(total), "pinned arena");
  buf.dev = Get(device->Allocate(total), "device arena");
  // Fresh non-zero bytes: never time copies of zeros.
  std::mt19937_64 rng(std::random_device{}());
  for (size_t i = 0; i < total; i += 8) {
    const uint64_t w = rng();
    std::memcpy(static_cast<char*>(buf.host) + i, &w, std::min<size_t>(8, total - i));
  }

  // Ceilings: one copy of the whole arena per direction.
  const double h2d_ceiling =
      total / TimeOnStream(*stream, runs, [&] {
        Check(stream->CopyToDevice(buf.dev, buf.host, total), "ceiling H2D");
      }) / 1e9;
  const double d2h_ceiling =
      total / TimeOnStream(*stream, runs, [&] {
        Check(stream->CopyToHost(buf.host, buf.dev, total), "ceiling D2H");
      }) / 1e9;
  std::printf("ceiling (one %zu MiB copy): H2D %.2f GB/s, D2H %.2f GB/s\n\n", total_mib,
              h2d_ceiling, d2h_ceiling);

  JsonLine fields;
  std::printf("%-10s %8s %10s %8s %10s %8s\n", "block", "blocks", "H2D GB/s", "ratio",
              "D2H GB/s", "ratio");
  double figure = 0;
  double min_ratio_1mib = 1e9;
  for (size_t kib : {64, 256, 1024, 2048, 8192}) {
    const size_t block = kib << 10;
    const size_t n = total / block;
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<CopyOp> h2d, d2h;
    for (size_t i = 0; i < n; ++i) {
      CopyOp op;
      op.kind = CopyOp::Kind::kHostToDevice;
      op.src_host = static_cast<char*>(buf.host) + i * block;
      op.dst_device = buf.dev + order[i] * block;
      op.bytes = block;
      h2d.push_back(op);
      CopyOp back;
      back.kind = CopyOp::Kind::kDeviceToHost;
      back.src_device = buf.dev + order[i] * block;
      back.dst_host = static_cast<char*>(buf.host) + i * block;
      back.bytes = block;
      d2h.push_back(back);
    }
    const double up = n * block / TimeOnStream(*stream, runs, [&] {
      Check(stream->CopyBatch(h2d), "block H2D");
    }) / 1e9;
    const double down = n * block / TimeOnStream(*stream, runs, [&] {
      Check(stream->CopyBatch(d2h), "block D2H");
    }) / 1e9;
    std::printf("%-10s %8zu %10.2f %8.3f %10.2f %8.3f\n",
                absl::StrFormat("%d KiB", kib).c_str(), n, up, up / h2d_ceiling, down,
                down / d2h_ceiling);
    fields.Num(absl::StrFormat("h2d_gbps_%dk", kib), up)
        .Num(absl::StrFormat("h2d_ratio_%dk", kib), up / h2d_ceiling)
        .Num(absl::StrFormat("d2h_gbps_%dk", kib), down)
        .Num(absl::StrFormat("d2h_ratio_%dk", kib), down / d2h_ceiling);
    if (kib == 1024) figure = up;
    if (kib >= 1024) {
      min_ratio_1mib = std::min({min_ratio_1mib, up / h2d_ceiling, down / d2h_ceiling});
    }
  }

  // Part 2: one layer's slice of paged blocks, DMA per part vs the zero-copy kernel.
  std::printf("\npaged NHD pool, one layer of N blocks from pinned host (8 heads x 128 dim fp16)\n");
  std::printf("%-12s %10s %8s %12s %12s %8s\n", "page tokens", "part", "blocks", "DMA GB/s",
              "kernel GB/s", "faster");
  size_t crossover = 0;
  for (uint32_t tokens : {16u, 64u, 256u}) {
    Geometry g{2, 8, 128, DType::kFloat16, tokens};
    // Blocks are whole (2 layers) in the host arena; the pool holds one page per block.
    const size_t n = std::min<size_t>(total / g.block_bytes(), 4096);
    std::vector<DevicePtr> layers = {buf.dev, buf.dev + 2 * n * g.part_bytes()};
    if (2 * 2 * n * g.part_bytes() > total) Die("arena too small for the pool");
    PagedTransfer t;
    t.geometry = g;
    t.layout = PageLayout::kNhd;
    t.direction = PagedTransfer::Direction::kBlocksToPool;
    t.num_pages = static_cast<uint32_t>(n);
    t.layers = layers;
    t.layer = 0;
    t.blocks_on_host = true;
    std::vector<uint32_t> pages(n);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    std::vector<CopyOp> ops;
    for (size_t i = 0; i < n; ++i) {
      char* block = static_cast<char*>(buf.host) + i * g.block_bytes();
      t.blocks.push_back(reinterpret_cast<uintptr_t>(block));
      t.pages.push_back(pages[i]);
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        CopyOp op;
        op.kind = CopyOp::Kind::kHostToDevice;
        op.src_host = block + g.Offset(0, part);
        op.dst_device =
            layers[0] + (static_cast<size_t>(part) * n + pages[i]) * g.part_bytes();
        op.bytes = g.part_bytes();
        ops.push_back(op);
      }
    }
    const double bytes = static_cast<double>(n) * g.layer_bytes();
    const double dma = bytes / TimeOnStream(*stream, runs, [&] {
      Check(stream->CopyBatch(ops), "paged DMA");
    }) / 1e9;
    const double kernel = bytes / TimeOnStream(*stream, runs, [&] {
      Check(stream->Launch(MakePagedTransferKernel(t)), "paged kernel");
    }) / 1e9;
    const size_t part_kib = g.part_bytes() >> 10;
    std::printf("%-12u %7zu KiB %8zu %12.2f %12.2f %8s\n", tokens, part_kib, n, dma, kernel,
                dma >= kernel ? "DMA" : "kernel");
    fields.Num(absl::StrFormat("paged_dma_gbps_%dk", part_kib), dma)
        .Num(absl::StrFormat("paged_kernel_gbps_%dk", part_kib), kernel);
    if (crossover == 0 && dma >= kernel) crossover = g.part_bytes();
  }
  std::printf("\nDMA overtakes the zero-copy kernel at parts of %s (engine default: 256 KiB)\n",
              crossover == 0 ? "more than 256 KiB" : absl::StrFormat("%d KiB", crossover >> 10).c_str());
  std::printf("smallest ratio at >= 1 MiB blocks, either direction: %.3f (target >= 0.9)\n",
              min_ratio_1mib);

  JsonLine line;
  line.Str("bench", "gpu-copy")
      .Num("figure", figure)
      .Str("unit", "GB/s")
      .Num("ceiling", h2d_ceiling)
      .Str("ceiling_source", absl::StrFormat("one %d MiB pinned H2D Stream copy (%s), same run",
                                             total_mib, cuda ? "cudaMemcpyAsync" : "emulated"))
      .Num("ratio", figure / h2d_ceiling)
      .Str("device", DeviceKindName(device->kind()))
      .Str("device_name", device->name())
      .Num("d2h_ceiling", d2h_ceiling)
      .Num("min_ratio_at_1mib_plus", min_ratio_1mib)
      .Num("paged_dma_crossover_part_kib", static_cast<double>(crossover >> 10))
      .Merge(fields);
  stream.reset();
  line.Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
