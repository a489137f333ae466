// tests/api/engine_paged_test.cc — Store from and Load into an inference engine's paged KV
// pool (KvBuffers::Paged), in both page layouts, through every path the engine picks: per-part
// DMA (NHD, large parts), the zero-copy kernel (small parts, and every HND transfer), and the
// device kernel between the pool and the GPU tier. Each case checks every byte of every
// page against an element model of the layout written here, and that pages the call does
// not name keep their poison.

#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "tests/api/engine_test_util.h"

namespace kvtier {
namespace {

using testing::BlockContent;
using testing::KeysOf;
using testing::Prompt;
using testing::ReadDevice;
using testing::WriteDevice;

enum class Path { kDma, kZeroCopy, kGpuTier };

std::string PathName(Path p) {
  switch (p) {
    case Path::kDma:
      return "Dma";
    case Path::kZeroCopy:
      return "ZeroCopy";
    case Path::kGpuTier:
      return "GpuTier";
  }
  return "?";
}

constexpr uint32_t kPages = 8;
constexpr uint8_t kPoison = 0x5A;

// Byte offset in a layer tensor of element row (token, head) of (part, page).
size_t PoolRow(const Geometry& g, PageLayout layout, KvPart part, uint32_t page, uint32_t token,
               uint32_t head) {
  const size_t row = size_t{g.head_dim} * g.element_bytes();
  const size_t base = (static_cast<size_t>(part) * kPages + page) * g.part_bytes();
  return base + (layout == PageLayout::kNhd ? size_t{token} * g.num_kv_heads + head
                                            : size_t{head} * g.block_tokens + token) *
                    row;
}

class EnginePagedTest : public ::testing::TestWithParam<std::tuple<PageLayout, Path, bool>> {
 protected:
  void SetUp() override {
    const auto [layout, path, layerwise] = GetParam();
    layout_ = layout;
    path_ = path;
    layerwise_ = layerwise;
    EngineOptions o = testing::SmallOptions(path == Path::kGpuTier ? 16 : 0, 16);
    // SmallGeometry's parts are 1 KiB: a 0 threshold forces DMA, a huge one the kernel.
    o.paged_dma_min_part_bytes = path == Path::kDma ? 0 : std::numeric_limits<size_t>::max();
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    g_ = engine_->options().geometry;
  }
  void TearDown() override {
    for (DevicePtr p : owned_) EXPECT_TRUE(engine_->device().Free(p).ok());
  }

  KvBuffers::PagedPool MakePool() {
    KvBuffers::PagedPool pool;
    pool.num_pages = kPages;
    pool.layout = layout_;
    for (uint32_t l = 0; l < g_.num_layers; ++l) {
      absl::StatusOr<DevicePtr> p = engine_->device().Allocate(2 * kPages * g_.part_bytes());
      EXPECT_TRUE(p.ok()) << p.status();
      owned_.push_back(*p);
      pool.layers.push_back(*p);
      WriteDevice(engine_->device(), *p,
                  std::vector<uint8_t>(2 * kPages * g_.part_bytes(), kPoison));
    }
    return pool;
  }

  // Layer tensors as the pool must look with `keys[i]`'s content in pages[i].
  std::vector<std::vector<uint8_t>> ExpectedPool(const std::vector<BlockKey>& keys,
                                                 const std::vector<uint32_t>& pages) {
    std::vector<std::vector<uint8_t>> layers(
        g_.num_layers, std::vector<uint8_t>(2 * kPages * g_.part_bytes(), kPoison));
    const size_t row = size_t{g_.head_dim} * g_.element_bytes();
    for (size_t b = 0; b < keys.size(); ++b) {
      const std::vector<uint8_t> content = BlockContent(keys[b], g_.block_bytes());
      for (uint32_t l = 0; l < g_.num_layers; ++l) {
        for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
          for (uint32_t t = 0; t < g_.block_tokens; ++t) {
            for (uint32_t h = 0; h < g_.num_kv_heads; ++h) {
              const size_t from = g_.Offset(l, part, t) + h * row;
              std::copy(content.begin() + from, content.begin() + from + row,
                        layers[l].begin() + PoolRow(g_, layout_, part, pages[b], t, h));
            }
          }
        }
      }
    }
    return layers;
  }

  std::unique_ptr<Engine> engine_;
  Geometry g_;
  PageLayout layout_ = PageLayout::kNhd;
  Path path_ = Path::kDma;
  bool layerwise_ = false;
  std::vector<DevicePtr> owned_;
};

TEST_P(EnginePagedTest, StoreFromAndLoadIntoAPagedPoolMoveEveryByte) {
  const std::vector<int32_t> prompt = Prompt(3, 6);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  const std::vector<uint32_t> src_pages = {5, 2, 7};
  const std::vector<uint32_t> dst_pages = {0, 6, 3};

  KvBuffers::PagedPool src = MakePool();
  const std::vector<std::vector<uint8_t>> src_layers = ExpectedPool(keys, src_pages);
  for (uint32_t l = 0; l < g_.num_layers; ++l) {
    WriteDevice(engine_->device(), src.layers[l], src_layers[l]);
  }
  StoreRequest sr;
  sr.ns = "default";
  sr.tokens = prompt;
  sr.buffers = KvBuffers::Paged(src, src_pages);
  absl::StatusOr<std::unique_ptr<TransferHandle>> stored = engine_->Store(sr);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE((*stored)->Wait().ok());

  // What was stored is each block in kvtier's layout: a plain block load shows it.
  {
    testing::DeviceBlocks blocks(engine_->device(), keys.size(), g_.block_bytes());
    LoadRequest lr;
    lr.ns = "default";
    lr.keys = keys;
    lr.buffers = KvBuffers::Blocks(blocks.ptrs());
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Load(lr);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
    for (size_t b = 0; b < keys.size(); ++b) {
      EXPECT_EQ(ReadDevice(engine_->device(), blocks.ptrs()[b], g_.block_bytes()),
                BlockContent(keys[b], g_.block_bytes()))
          << "block " << b;
    }
  }

  if (path_ == Path::kGpuTier) {
    // Bring the blocks into the GPU tier first, so the load below is GPU tier → pool.
    absl::StatusOr<std::unique_ptr<TransferHandle>> p = engine_->Prefetch("default", keys);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE((*p)->Wait().ok());
    ASSERT_EQ(engine_->Match("default", prompt, "")->tiers,
              std::vector<TierKind>(keys.size(), TierKind::kGpu));
  }
  KvBuffers::PagedPool dst = MakePool();
  LoadRequest lr;
  lr.ns = "default";
  lr.keys = keys;
  lr.layerwise = layerwise_;
  lr.buffers = KvBuffers::Paged(dst, dst_pages);
  absl::StatusOr<std::unique_ptr<TransferHandle>> loaded = engine_->Load(lr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  if (layerwise_) {
    for (uint32_t l = 0; l < g_.num_layers; ++l) ASSERT_TRUE((*loaded)->WaitLayerHost(l).ok());
  }
  ASSERT_TRUE((*loaded)->Wait().ok());
  const std::vector<std::vector<uint8_t>> want = ExpectedPool(keys, dst_pages);
  for (uint32_t l = 0; l < g_.num_layers; ++l) {
    EXPECT_EQ(ReadDevice(engine_->device(), dst.layers[l], want[l].size()), want[l])
        << "layer " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(
    LayoutsAndPaths, EnginePagedTest,
    ::testing::Combine(::testing::Values(PageLayout::kNhd, PageLayout::kHnd),
                       ::testing::Values(Path::kDma, Path::kZeroCopy, Path::kGpuTier),
                       ::testing::Bool()),
    [](const auto& info) {
      return absl::StrFormat("%s_%s_%s", PageLayoutName(std::get<0>(info.param)),
                             PathName(std::get<1>(info.param)),
                             std::get<2>(info.param) ? "Layerwise" : "Whole");
    });

}  // namespace
}  // namespace kvtier
