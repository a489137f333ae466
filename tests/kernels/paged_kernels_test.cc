// tests/kernels/paged_kernels_test.cc — the paged-transfer kernel against an independent
// element-by-element model of both layouts, on one Device.
//
// Built twice: kernels_paged_kernels_test (the emulated device, i.e. the CPU reference) and,
// where CUDA is built, kernels_paged_kernels_cuda_test (KVTIER_TEST_CUDA_DEVICE; the CUDA
// kernel, skipping where this machine has no GPU). Inputs are fresh random bytes every run,
// outputs are poisoned first so bytes a transfer should not touch (other pages, other layers)
// are checked too.

#include "kernels/paged_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"
#include "tests/device/test_util.h"

#if defined(KVTIER_TEST_CUDA_DEVICE)
#include "device/cuda_device.h"
#endif

namespace kvtier {
namespace {

using testing_util::RandomBytes;

constexpr uint8_t kPoison = 0xA5;

uint64_t FreshSeed() {
  static const uint64_t seed = std::random_device{}();
  return seed;
}

class PagedKernelsTest : public ::testing::TestWithParam<PageLayout> {
 protected:
  void SetUp() override {
    DeviceOptions options;
#if defined(KVTIER_TEST_CUDA_DEVICE)
    absl::StatusOr<int> count = CudaDeviceCount();
    if (!count.ok() || *count == 0) {
      GTEST_SKIP() << "no CUDA device on this machine ("
                   << (count.ok() ? std::string("0 devices") : count.status().ToString())
                   << "); the CUDA kernel is tested where a GPU is present";
    }
    options.choice = DeviceChoice::kCuda;
#else
    options.choice = DeviceChoice::kEmulated;
#endif
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
    absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    stream_ = std::move(*stream);
  }

  void TearDown() override {
    stream_.reset();
    if (device_ == nullptr) return;
    for (DevicePtr p : allocations_) KVTIER_EXPECT_OK(device_->Free(p));
    for (void* p : pinned_) KVTIER_EXPECT_OK(device_->FreePinned(p));
  }

  DevicePtr Allocate(size_t bytes) {
    absl::StatusOr<DevicePtr> p = device_->Allocate(bytes);
    EXPECT_TRUE(p.ok()) << p.status();
    allocations_.push_back(*p);
    return *p;
  }
  uint8_t* AllocatePinned(size_t bytes) {
    absl::StatusOr<void*> p = device_->AllocatePinned(bytes);
    EXPECT_TRUE(p.ok()) << p.status();
    pinned_.push_back(*p);
    return static_cast<uint8_t*>(*p);
  }
  void Upload(DevicePtr dst, const std::vector<uint8_t>& bytes) {
    KVTIER_ASSERT_OK(stream_->CopyToDevice(dst, bytes.data(), bytes.size()));
    KVTIER_ASSERT_OK(stream_->Synchronize());
  }
  std::vector<uint8_t> Download(DevicePtr src, size_t bytes) {
    std::vector<uint8_t> out(bytes);
    EXPECT_TRUE(stream_->CopyToHost(out.data(), src, bytes).ok());
    EXPECT_TRUE(stream_->Synchronize().ok());
    return out;
  }

  std::unique_ptr<Device> device_;
  std::unique_ptr<Stream> stream_;

 private:
  std::vector<DevicePtr> allocations_;
  std::vector<void*> pinned_;
};

// One suite name per device, so that CTest's names stay unique across the two binaries.
#if defined(KVTIER_TEST_CUDA_DEVICE)
#define KVTIER_PAGED_SUITE CudaPagedKernels
#else
#define KVTIER_PAGED_SUITE PagedKernels
#endif
using KVTIER_PAGED_SUITE = PagedKernelsTest;

// The model: where byte `b` of row (token, head) of (layer, part) of a block lives in the
// layer tensor, written without the kernels' shared offset helper.
size_t PoolByte(const Geometry& g, PageLayout layout, uint32_t num_pages, uint32_t part,
                uint32_t page, uint32_t token, uint32_t head, size_t b) {
  const size_t row = size_t{g.head_dim} * g.element_bytes();
  const size_t page_base = (size_t{part} * num_pages + page) * g.part_bytes();
  const size_t row_index = layout == PageLayout::kNhd ? size_t{token} * g.num_kv_heads + head
                                                      : size_t{head} * g.block_tokens + token;
  return page_base + row_index * row + b;
}

size_t BlockByte(const Geometry& g, uint32_t layer, uint32_t part, uint32_t token,
                 uint32_t head, size_t b) {
  const size_t row = size_t{g.head_dim} * g.element_bytes();
  return g.Offset(layer, static_cast<KvPart>(part), token) + size_t{head} * row + b;
}

Geometry SmallGeometry() {
  Geometry g;
  g.num_layers = 3;
  g.num_kv_heads = 4;
  g.head_dim = 24;  // 48-byte rows: exercises the 16-byte path on HND row boundaries
  g.dtype = DType::kFloat16;
  g.block_tokens = 5;
  return g;
}

// Scatters `n` host blocks into random distinct pages of a pool, through the zero-copy
// path, and checks every byte of the pool: moved bytes where the model says, poison elsewhere.
// The geometries every pool shape needs: fp16 K/V, fp8 K/V (1-byte rows of 24), and an MLA
// latent (one part per layer: the layer tensor is [pages][tokens][latent], vLLM's MLA page).
std::vector<Geometry> PoolGeometries() {
  Geometry fp8 = SmallGeometry();
  fp8.dtype = DType::kFp8E4m3;
  Geometry mla{3, 1, 96, DType::kBFloat16, 5};
  mla.kind = KvKind::kLatent;
  mla.rope_dim = 32;
  return {SmallGeometry(), fp8, mla};
}

TEST_P(KVTIER_PAGED_SUITE, ScatterFromPinnedHostMatchesTheModel) {
  const PageLayout layout = GetParam();
  for (const Geometry& g : PoolGeometries()) {
    SCOPED_TRACE(g.ToString());
    constexpr uint32_t kPages = 9;
    constexpr size_t kBlocks = 6;
    std::mt19937_64 rng(FreshSeed());
    SCOPED_TRACE(testing::Message() << "seed " << FreshSeed());
    std::vector<uint32_t> pages(kPages);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    pages.resize(kBlocks);

    // Exactly the pool's bytes: a part written past them is out of every allocation.
    const size_t layer_tensor = g.parts() * size_t{kPages} * g.part_bytes();
    std::vector<DevicePtr> layers;
    for (uint32_t l = 0; l < g.num_layers; ++l) {
      layers.push_back(Allocate(layer_tensor));
      Upload(layers.back(), std::vector<uint8_t>(layer_tensor, kPoison));
    }
    uint8_t* host = AllocatePinned(kBlocks * g.block_bytes());
    const std::vector<uint8_t> source = RandomBytes(kBlocks * g.block_bytes(), rng());
    std::memcpy(host, source.data(), source.size());

    PagedTransfer t;
    t.geometry = g;
    t.layout = layout;
    t.direction = PagedTransfer::Direction::kBlocksToPool;
    t.num_pages = kPages;
    t.layers = layers;
    t.blocks_on_host = true;
    for (size_t i = 0; i < kBlocks; ++i) {
      t.blocks.push_back(reinterpret_cast<uintptr_t>(host + i * g.block_bytes()));
    }
    t.pages = pages;
    KVTIER_ASSERT_OK(stream_->Launch(MakePagedTransferKernel(t)));
    KVTIER_ASSERT_OK(stream_->Synchronize());

    const size_t row = size_t{g.head_dim} * g.element_bytes();
    for (uint32_t l = 0; l < g.num_layers; ++l) {
      std::vector<uint8_t> expected(layer_tensor, kPoison);
      for (size_t i = 0; i < kBlocks; ++i) {
        for (uint32_t part = 0; part < g.parts(); ++part) {
          for (uint32_t tok = 0; tok < g.block_tokens; ++tok) {
            for (uint32_t h = 0; h < g.num_kv_heads; ++h) {
              for (size_t b = 0; b < row; ++b) {
                expected[PoolByte(g, layout, kPages, part, pages[i], tok, h, b)] =
                    source[i * g.block_bytes() + BlockByte(g, l, part, tok, h, b)];
              }
            }
          }
        }
      }
      ASSERT_EQ(Download(layers[l], layer_tensor), expected) << "layer " << l;
    }
    // And back: a gather of every page into fresh blocks returns the source, byte for byte.
    uint8_t* back = AllocatePinned(kBlocks * g.block_bytes());
    std::memset(back, kPoison, kBlocks * g.block_bytes());
    PagedTransfer gather = t;
    gather.direction = PagedTransfer::Direction::kPoolToBlocks;
    for (size_t i = 0; i < kBlocks; ++i) {
      gather.blocks[i] = reinterpret_cast<uintptr_t>(back + i * g.block_bytes());
    }
    KVTIER_ASSERT_OK(stream_->Launch(MakePagedTransferKernel(gather)));
    KVTIER_ASSERT_OK(stream_->Synchronize());
    EXPECT_EQ(std::memcmp(back, source.data(), source.size()), 0);
  }
}

// Gathers one layer of pool pages into device blocks: that layer's bytes arrive, the other
// layers of the blocks keep their poison.
TEST_P(KVTIER_PAGED_SUITE, GatherOneLayerToDeviceBlocksTouchesOnlyThatLayer) {
  const PageLayout layout = GetParam();
  const Geometry g = SmallGeometry();
  constexpr uint32_t kPages = 7;
  std::mt19937_64 rng(FreshSeed() + 1);
  SCOPED_TRACE(testing::Message() << "seed " << FreshSeed());
  const size_t layer_tensor = 2 * size_t{kPages} * g.part_bytes();
  std::vector<DevicePtr> layers;
  std::vector<std::vector<uint8_t>> pool;
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    layers.push_back(Allocate(layer_tensor));
    pool.push_back(RandomBytes(layer_tensor, rng()));
    Upload(layers.back(), pool.back());
  }
  // Pages may repeat on a gather (one page read into two blocks).
  const std::vector<uint32_t> pages = {6, 0, 3, 3};
  DevicePtr blocks = Allocate(pages.size() * g.block_bytes());
  Upload(blocks, std::vector<uint8_t>(pages.size() * g.block_bytes(), kPoison));

  PagedTransfer t;
  t.geometry = g;
  t.layout = layout;
  t.direction = PagedTransfer::Direction::kPoolToBlocks;
  t.num_pages = kPages;
  t.layers = layers;
  t.layer = 1;
  for (size_t i = 0; i < pages.size(); ++i) {
    t.blocks.push_back((blocks + i * g.block_bytes()).address());
  }
  t.pages = pages;
  KVTIER_ASSERT_OK(stream_->Launch(MakePagedTransferKernel(t)));
  KVTIER_ASSERT_OK(stream_->Synchronize());

  std::vector<uint8_t> expected(pages.size() * g.block_bytes(), kPoison);
  const size_t row = size_t{g.head_dim} * g.element_bytes();
  for (size_t i = 0; i < pages.size(); ++i) {
    for (uint32_t part = 0; part < 2; ++part) {
      for (uint32_t tok = 0; tok < g.block_tokens; ++tok) {
        for (uint32_t h = 0; h < g.num_kv_heads; ++h) {
          for (size_t b = 0; b < row; ++b) {
            expected[i * g.block_bytes() + BlockByte(g, 1, part, tok, h, b)] =
                pool[1][PoolByte(g, layout, kPages, part, pages[i], tok, h, b)];
          }
        }
      }
    }
  }
  EXPECT_EQ(Download(blocks, expected.size()), expected);
}

// A round trip through a pool of many pages (more blocks than one CUDA launch carries, and
// a realistic 16-token fp16 geometry) gives the blocks back byte for byte, each layer moved
// separately, to pinned host memory.
TEST_P(KVTIER_PAGED_SUITE, LayerByLayerRoundTripOfManyBlocksIsByteExact) {
  const PageLayout layout = GetParam();
  Geometry g;
  g.num_layers = 2;
  g.num_kv_heads = 2;
  g.head_dim = 64;
  g.dtype = DType::kBFloat16;
  g.block_tokens = 16;
  constexpr uint32_t kPages = 1500;
  constexpr size_t kBlocks = 1200;
  std::mt19937_64 rng(FreshSeed() + 2);
  SCOPED_TRACE(testing::Message() << "seed " << FreshSeed());
  std::vector<uint32_t> pages(kPages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), rng);
  pages.resize(kBlocks);
  const size_t layer_tensor = 2 * size_t{kPages} * g.part_bytes();
  std::vector<DevicePtr> layers = {Allocate(layer_tensor), Allocate(layer_tensor)};
  const size_t total = kBlocks * g.block_bytes();
  uint8_t* in = AllocatePinned(total);
  uint8_t* out = AllocatePinned(total);
  const std::vector<uint8_t> source = RandomBytes(total, rng());
  std::memcpy(in, source.data(), total);
  std::memset(out, kPoison, total);

  PagedTransfer t;
  t.geometry = g;
  t.layout = layout;
  t.num_pages = kPages;
  t.layers = layers;
  t.blocks_on_host = true;
  t.pages = pages;
  for (size_t i = 0; i < kBlocks; ++i) {
    t.blocks.push_back(reinterpret_cast<uintptr_t>(in + i * g.block_bytes()));
  }
  for (int l = 0; l < 2; ++l) {
    t.layer = l;
    t.direction = PagedTransfer::Direction::kBlocksToPool;
    KVTIER_ASSERT_OK(stream_->Launch(MakePagedTransferKernel(t)));
  }
  PagedTransfer back = t;
  back.direction = PagedTransfer::Direction::kPoolToBlocks;
  for (size_t i = 0; i < kBlocks; ++i) {
    back.blocks[i] = reinterpret_cast<uintptr_t>(out + i * g.block_bytes());
  }
  for (int l = 0; l < 2; ++l) {
    back.layer = l;
    KVTIER_ASSERT_OK(stream_->Launch(MakePagedTransferKernel(back)));
  }
  KVTIER_ASSERT_OK(stream_->Synchronize());
  EXPECT_EQ(std::memcmp(out, source.data(), total), 0);
}

TEST_P(KVTIER_PAGED_SUITE, BadTransfersAreRejectedNamingTheProblem) {
  const Geometry g = SmallGeometry();
  DevicePtr layer = Allocate(2 * 4 * g.part_bytes());
  DevicePtr block = Allocate(g.block_bytes());
  PagedTransfer good;
  good.geometry = g;
  good.layout = GetParam();
  good.direction = PagedTransfer::Direction::kBlocksToPool;
  good.num_pages = 4;
  good.layers = {layer, layer, layer};
  good.blocks = {block.address(), (block + 0).address()};
  good.pages = {0, 1};
  KVTIER_EXPECT_OK(good.Validate());

  auto expect_error = [](PagedTransfer t, const char* needle) {
    absl::Status s = t.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << needle;
    EXPECT_TRUE(absl::StrContains(s.message(), needle)) << s;
  };
  PagedTransfer t = good;
  t.layers.pop_back();
  expect_error(t, "2 layer tensors given, the geometry has 3");
  t = good;
  t.layers[1] = DevicePtr();
  expect_error(t, "layer tensor 1 is null");
  t = good;
  t.layer = 3;
  expect_error(t, "layer 3 is out of range");
  t = good;
  t.pages = {0, 4};
  expect_error(t, "page 4 of block 1 is out of range");
  t = good;
  t.pages = {2, 2};
  expect_error(t, "page 2 is the target of more than one block");
  t = good;
  t.pages.pop_back();
  expect_error(t, "2 blocks but 1 pages");
  t = good;
  t.blocks[0] = 0;
  expect_error(t, "block 0 is null");
  t = good;
  t.num_pages = 0;
  expect_error(t, "0 pages");
  t = good;
  t.geometry.head_dim = 0;
  expect_error(t, "head_dim");
  t = good;
  t.geometry.num_layers = 200;
  t.layers.assign(200, layer);
  expect_error(t, "at most 128");

  // The launch reports the same error (on the stream for the emulated device).
  t = good;
  t.layer = 7;
  absl::Status launched = stream_->Launch(MakePagedTransferKernel(t));
  if (launched.ok()) launched = stream_->Synchronize();
  EXPECT_EQ(launched.code(), absl::StatusCode::kInvalidArgument) << launched;
  EXPECT_TRUE(absl::StrContains(launched.message(), "layer 7 is out of range")) << launched;
}

#if !defined(KVTIER_TEST_CUDA_DEVICE)
TEST(PagedPathChoice, DmaOnlyForLargeContiguousNhdParts) {
  Geometry g = SmallGeometry();  // part = 5 tokens * 4 heads * 48 bytes = 960 bytes
  EXPECT_EQ(ChooseHostPagedPath(g, PageLayout::kNhd, 512), HostPagedPath::kDma);
  EXPECT_EQ(ChooseHostPagedPath(g, PageLayout::kNhd, 4096), HostPagedPath::kZeroCopyKernel);
  EXPECT_EQ(ChooseHostPagedPath(g, PageLayout::kHnd, 1), HostPagedPath::kZeroCopyKernel);
}

// On the emulated device a zero-copy kernel's host bytes pass through the throttled link,
// so emulated runs cannot make zero-copy look faster than the bus allows.
TEST(PagedKernelsEmulated, ZeroCopyHostBytesAreChargedToTheLink) {
  DeviceOptions options;
  options.choice = DeviceChoice::kEmulated;
  options.emulated_copy_gbps = 0.5;  // 8 MiB: about 17 ms
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options);
  ASSERT_TRUE(device.ok()) << device.status();
  Geometry g;
  g.num_layers = 4;
  g.num_kv_heads = 8;
  g.head_dim = 128;
  g.dtype = DType::kFloat16;
  g.block_tokens = 16;  // 256 KiB blocks
  constexpr uint32_t kBlocks = 32;
  absl::StatusOr<DevicePtr> layer = (*device)->Allocate(2 * kBlocks * g.part_bytes());
  ASSERT_TRUE(layer.ok());
  absl::StatusOr<void*> host = (*device)->AllocatePinned(kBlocks * g.block_bytes());
  ASSERT_TRUE(host.ok());
  PagedTransfer t;
  t.geometry = g;
  t.direction = PagedTransfer::Direction::kBlocksToPool;
  t.num_pages = kBlocks;
  t.layers.assign(g.num_layers, *layer);  // every layer in one tensor: fine for timing
  t.blocks_on_host = true;
  for (uint32_t i = 0; i < kBlocks; ++i) {
    t.blocks.push_back(reinterpret_cast<uintptr_t>(*host) + i * g.block_bytes());
    t.pages.push_back(i);
  }
  const KernelLaunch launch = MakePagedTransferKernel(t);
  EXPECT_EQ(launch.host_bytes_read, kBlocks * g.block_bytes());
  EXPECT_EQ(launch.host_bytes_written, 0u);
  {
    absl::StatusOr<std::unique_ptr<Stream>> stream = (*device)->CreateStream();
    ASSERT_TRUE(stream.ok());
    const absl::Time start = absl::Now();
    KVTIER_ASSERT_OK((*stream)->Launch(MakePagedTransferKernel(t)));
    KVTIER_ASSERT_OK((*stream)->Synchronize());
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    EXPECT_GE(seconds, 0.9 * kBlocks * g.block_bytes() / 0.5e9);
  }
  KVTIER_EXPECT_OK((*device)->FreePinned(*host));
  KVTIER_EXPECT_OK((*device)->Free(*layer));
}
#endif

INSTANTIATE_TEST_SUITE_P(Layouts, KVTIER_PAGED_SUITE,
                         ::testing::Values(PageLayout::kNhd, PageLayout::kHnd),
                         [](const ::testing::TestParamInfo<PageLayout>& info) {
                           return std::string(PageLayoutName(info.param));
                         });

}  // namespace
}  // namespace kvtier
