// CopyPlanner: neighbouring blocks become one copy, allocations are never merged, paged parts
// go by DMA or by kernel as the layout and the threshold say, bad buffers are refused naming
// the problem, and what Enqueue puts on a stream moves the right bytes.

#include "engine/copy_planner.h"

#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "device/emulated_device.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

class CopyPlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<EmulatedDevice>> d = EmulatedDevice::Create({});
    ASSERT_TRUE(d.ok()) << d.status();
    device_ = std::move(*d);
    absl::StatusOr<void*> host = device_->AllocatePinned(8 * g_.block_bytes());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = static_cast<char*>(*host);
  }
  void TearDown() override {
    for (DevicePtr p : allocations_) EXPECT_TRUE(device_->Free(p).ok());
    EXPECT_TRUE(device_->FreePinned(host_).ok());
  }
  DevicePtr Allocate(size_t bytes) {
    absl::StatusOr<DevicePtr> p = device_->Allocate(bytes);
    EXPECT_TRUE(p.ok()) << p.status();
    allocations_.push_back(*p);
    return *p;
  }
  Endpoint HostSlot(size_t i) {
    return Endpoint::Slot(SlotAddress{DevicePtr(), host_ + i * g_.block_bytes()});
  }
  CopyPlanner Planner(size_t dma_min_part_bytes = 512 << 10) {
    return CopyPlanner(g_, *device_, dma_min_part_bytes);
  }
  KvBuffers::PagedPool Pool(uint32_t pages, PageLayout layout) {
    KvBuffers::PagedPool pool;
    for (uint32_t l = 0; l < g_.num_layers; ++l) {
      pool.layers.push_back(Allocate(2 * pages * g_.part_bytes()));
    }
    pool.num_pages = pages;
    pool.layout = layout;
    return pool;
  }

  // 2 layers x 2 kv heads x 16 dim x fp16 x 4 tokens: 256-byte parts, 1 KiB blocks.
  const Geometry g_{2, 2, 16, DType::kFloat16, 4};
  std::unique_ptr<EmulatedDevice> device_;
  char* host_ = nullptr;
  std::vector<DevicePtr> allocations_;
};

TEST_F(CopyPlannerTest, NeighbouringBlocksToNeighbouringBuffersAreOneCopy) {
  const DevicePtr dst = Allocate(3 * g_.block_bytes());
  std::vector<BlockCopy> copies;
  for (size_t i = 0; i < 3; ++i) {
    copies.push_back({HostSlot(2 + i), Endpoint::Slot({dst + i * g_.block_bytes(), nullptr})});
  }
  const CopyPlan whole = Planner().Plan(copies, /*layer=*/-1);
  ASSERT_EQ(whole.ops.size(), 1u);
  EXPECT_EQ(whole.ops[0].kind, CopyOp::Kind::kHostToDevice);
  EXPECT_EQ(whole.ops[0].bytes, 3 * g_.block_bytes());
  EXPECT_EQ(whole.ops[0].src_host, host_ + 2 * g_.block_bytes());
  EXPECT_TRUE(whole.kernels.empty());
  // One layer of each block is not contiguous with the next block's: three copies.
  const CopyPlan layer1 = Planner().Plan(copies, /*layer=*/1);
  ASSERT_EQ(layer1.ops.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(layer1.ops[i].bytes, g_.layer_bytes());
    EXPECT_EQ(layer1.ops[i].dst_device,
              dst + i * g_.block_bytes() + g_.Offset(1, KvPart::kKey));
  }
}

TEST_F(CopyPlannerTest, CopiesAreNeverMergedAcrossAllocationsOrOutOfOrder) {
  const DevicePtr a = Allocate(g_.block_bytes());
  const DevicePtr b = Allocate(g_.block_bytes());
  // Slots 0 and 1 are neighbours but their destinations are two allocations.
  std::vector<BlockCopy> copies = {{HostSlot(0), Endpoint::Slot({a, nullptr})},
                                   {HostSlot(1), Endpoint::Slot({b, nullptr})}};
  EXPECT_EQ(Planner().Plan(copies, -1).ops.size(), 2u);
  // Reversed order: slot 1 then slot 0 into one allocation is not one ascending range.
  const DevicePtr ab = Allocate(2 * g_.block_bytes());
  copies = {{HostSlot(1), Endpoint::Slot({ab, nullptr})},
            {HostSlot(0), Endpoint::Slot({ab + g_.block_bytes(), nullptr})}};
  EXPECT_EQ(Planner().Plan(copies, -1).ops.size(), 2u);
}

TEST_F(CopyPlannerTest, PagedCopiesGoByDmaOrKernelAsLayoutAndThresholdSay) {
  KvBuffers::PagedPool nhd = Pool(4, PageLayout::kNhd);
  KvBuffers::PagedPool hnd = Pool(4, PageLayout::kHnd);
  const KvBuffers to_nhd = KvBuffers::Paged(nhd, {3});
  const KvBuffers to_hnd = KvBuffers::Paged(hnd, {3});
  const BlockCopy host_to_nhd{HostSlot(0), Endpoint::Caller(to_nhd, 0)};
  const BlockCopy host_to_hnd{HostSlot(0), Endpoint::Caller(to_hnd, 0)};
  const BlockCopy device_to_nhd{Endpoint::Slot({Allocate(g_.block_bytes()), nullptr}),
                                Endpoint::Caller(to_nhd, 0)};
  // Parts of 256 bytes: DMA when the threshold allows it, one K and one V copy per layer.
  const CopyPlanner dma = Planner(/*dma_min_part_bytes=*/256);
  EXPECT_FALSE(dma.UsesPagedKernel(host_to_nhd));
  const CopyPlan by_dma = dma.Plan({&host_to_nhd, 1}, -1);
  ASSERT_EQ(by_dma.ops.size(), 2u * g_.num_layers);
  EXPECT_EQ(by_dma.ops[1].bytes, g_.part_bytes());
  // V of layer 0 sits in the second half of the layer tensor, at page 3.
  EXPECT_EQ(by_dma.ops[1].dst_device, nhd.layers[0] + (4 + 3) * g_.part_bytes());
  // Above the parts' size: the zero-copy kernel, one launch for the whole batch.
  const CopyPlanner kernel = Planner(/*dma_min_part_bytes=*/257);
  EXPECT_TRUE(kernel.UsesPagedKernel(host_to_nhd));
  const CopyPlan by_kernel = kernel.Plan({&host_to_nhd, 1}, 1);
  EXPECT_TRUE(by_kernel.ops.empty());
  ASSERT_EQ(by_kernel.kernels.size(), 1u);
  EXPECT_EQ(by_kernel.kernels[0].layer, 1);
  EXPECT_TRUE(by_kernel.kernels[0].blocks_on_host);
  EXPECT_EQ(by_kernel.kernels[0].direction, PagedTransfer::Direction::kBlocksToPool);
  EXPECT_EQ(by_kernel.kernels[0].pages, std::vector<uint32_t>{3});
  // HND parts are never contiguous with the block's, and device <-> pool is always a kernel.
  EXPECT_TRUE(dma.UsesPagedKernel(host_to_hnd));
  EXPECT_TRUE(dma.UsesPagedKernel(device_to_nhd));
  // Two directions or sides in one batch are two kernels.
  const BlockCopy nhd_to_host{Endpoint::Caller(to_nhd, 0), HostSlot(1)};
  EXPECT_EQ(kernel.Plan(std::vector<BlockCopy>{host_to_nhd, nhd_to_host, device_to_nhd}, -1)
                .kernels.size(),
            3u);
}

TEST_F(CopyPlannerTest, BadBuffersAreRefusedNamingTheOpAndTheProblem) {
  const CopyPlanner p = Planner();
  const DevicePtr block = Allocate(g_.block_bytes());
  auto refused = [&](const KvBuffers& b, size_t n, bool writes, const char* what) {
    absl::Status s = p.ValidateBuffers(b, n, "Load", writes);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_TRUE(absl::StrContains(s.message(), "Load: ")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), what)) << s;
  };
  EXPECT_TRUE(p.ValidateBuffers(KvBuffers::Blocks({block}), 1, "Load", true).ok());
  refused(KvBuffers::Blocks({block}), 2, true, "1 buffers given for 2 blocks");
  refused(KvBuffers::Blocks({DevicePtr()}), 1, true, "buffer 0 is null");
  std::vector<char> not_device(g_.block_bytes());
  refused(KvBuffers::Blocks({DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(
              not_device.data()))}),
          1, true, "is not device memory");
  KvBuffers::PagedPool pool = Pool(2, PageLayout::kNhd);
  EXPECT_TRUE(p.ValidateBuffers(KvBuffers::Paged(pool, {1, 0}), 2, "Load", true).ok());
  refused(KvBuffers::Paged(pool, {2}), 1, true, "page 2 for block 0 is out of range");
  refused(KvBuffers::Paged(pool, {1, 1}), 2, true, "page 1 is given for blocks 0 and 1");
  // Reading one page into two blocks (a Store) is fine.
  EXPECT_TRUE(p.ValidateBuffers(KvBuffers::Paged(pool, {1, 1}), 2, "Store", false).ok());
  KvBuffers::PagedPool short_pool = pool;
  short_pool.layers.pop_back();
  refused(KvBuffers::Paged(short_pool, {0}), 1, true, "1 layer tensors, the geometry has 2");
  KvBuffers::PagedPool no_pages = pool;
  no_pages.num_pages = 0;
  refused(KvBuffers::Paged(no_pages, {0}), 1, true, "0 pages");
}

TEST_F(CopyPlannerTest, EnqueueMovesTheBytesAndRecordsEachLayersEvent) {
  std::vector<char> src(2 * g_.block_bytes());
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 7 + 1);
  std::memcpy(host_, src.data(), src.size());
  const DevicePtr dst = Allocate(2 * g_.block_bytes());
  std::vector<BlockCopy> copies;
  for (size_t i = 0; i < 2; ++i) {
    copies.push_back({HostSlot(i), Endpoint::Slot({dst + i * g_.block_bytes(), nullptr})});
  }
  absl::StatusOr<std::unique_ptr<Stream>> stream = device_->CreateStream();
  ASSERT_TRUE(stream.ok());
  std::vector<std::shared_ptr<Event>> layers;
  for (uint32_t l = 0; l < g_.num_layers; ++l) {
    absl::StatusOr<std::unique_ptr<Event>> e = device_->CreateEvent();
    ASSERT_TRUE(e.ok());
    layers.push_back(std::move(*e));
  }
  ASSERT_TRUE(Planner().Enqueue(**stream, copies, /*layerwise=*/true, layers).ok());
  for (const auto& e : layers) EXPECT_TRUE(e->Synchronize().ok());
  std::vector<char> back(src.size());
  ASSERT_TRUE((*stream)->CopyToHost(back.data(), dst, back.size()).ok());
  ASSERT_TRUE((*stream)->Synchronize().ok());
  EXPECT_EQ(back, src);
}

}  // namespace
}  // namespace kvtier
