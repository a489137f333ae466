// tests/api/engine_external_memory_test.cc — an inference engine's own KV memory, registered
// with Engine::RegisterDeviceMemory, used as Store and Load buffers (KvBuffers::Blocks and
// KvBuffers::Paged, NHD and HND). On the emulated device an inference engine's "GPU" pool is
// host memory it owns, registered by its host address: here plain heap buffers the test fills
// and checks directly, byte for byte, with no kvtier call in between. Also: every address
// outside a registration is refused naming the buffer, before registering and after
// unregistering; the registration errors (null, zero bytes, overlaps, double registration,
// unknown ranges); and a range cannot be unregistered while a transfer that uses it is in
// flight.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "tests/api/engine_test_util.h"

namespace kvtier {
namespace {

using testing::BlockContent;
using testing::KeysOf;
using testing::Prompt;

void ExpectError(const absl::Status& s, absl::StatusCode code, absl::string_view needle) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), needle))
      << "expected '" << needle << "' in: " << s.message();
}

// Host memory an "inference engine" owns: 256-byte aligned like a CUDA allocation.
class HostPool {
 public:
  explicit HostPool(size_t bytes)
      : bytes_(bytes),
        data_(static_cast<uint8_t*>(::operator new(bytes, std::align_val_t(256)))) {
    std::memset(data_, 0xA5, bytes);
  }
  ~HostPool() { ::operator delete(data_, std::align_val_t(256)); }
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  uint8_t* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  // How kvtier names this memory: its own address.
  DevicePtr ptr(size_t offset = 0) const {
    return DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(data_) + offset);
  }

 private:
  const size_t bytes_;
  uint8_t* const data_;
};

class EngineExternalMemoryTest : public ::testing::Test {
 protected:
  void Open(double copy_gbps = 0) {
    EngineOptions o = testing::SmallOptions(/*gpu_blocks=*/0, /*host_blocks=*/64);
    o.device.emulated_copy_gbps = copy_gbps;
    // A "pool" here is host memory, which only the emulated device takes as device memory.
    // ForeignDeviceMemory below is the case that runs on a real GPU too.
    testing::UseEmulatedDevice(o);
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    g_ = engine_->options().geometry;
  }
  void SetUp() override { Open(); }

  // REQUIRES: `tokens` outlives the request (it holds a span of them).
  StoreRequest BlocksStore(const std::vector<int32_t>& tokens, const HostPool& pool) {
    StoreRequest r;
    r.ns = "default";
    r.tokens = tokens;
    std::vector<DevicePtr> blocks;
    for (size_t i = 0; i < tokens.size() / g_.block_tokens; ++i) {
      blocks.push_back(pool.ptr(i * g_.block_bytes()));
    }
    r.buffers = KvBuffers::Blocks(std::move(blocks));
    return r;
  }

  std::unique_ptr<Engine> engine_;
  Geometry g_;
};

TEST_F(EngineExternalMemoryTest, BlocksStoreFromAndLoadIntoRegisteredMemoryByteExact) {
  const std::vector<int32_t> prompt = Prompt(4, 1);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  const size_t block = g_.block_bytes();
  HostPool pool(8 * block);  // blocks 0..3 are the source, 4..7 the destination
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::vector<uint8_t> content = BlockContent(keys[i], block);
    std::memcpy(pool.data() + i * block, content.data(), block);
  }

  // Unregistered, the pool is refused, naming the buffer and the remedy.
  absl::Status refused = engine_->Store(BlocksStore(prompt, pool)).status();
  ExpectError(refused, absl::StatusCode::kInvalidArgument, "buffer 0");
  ExpectError(refused, absl::StatusCode::kInvalidArgument, "RegisterDeviceMemory");

  ASSERT_TRUE(engine_->RegisterDeviceMemory(pool.ptr(), pool.bytes()).ok());
  absl::StatusOr<std::unique_ptr<TransferHandle>> stored =
      engine_->Store(BlocksStore(prompt, pool));
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE((*stored)->Wait().ok());
  EXPECT_EQ((*stored)->blocks_moved(), keys.size());
  // The source is read, never written.
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(std::vector<uint8_t>(pool.data() + i * block, pool.data() + (i + 1) * block),
              BlockContent(keys[i], block))
        << "source block " << i;
  }

  // Load in another order into the second half, layer by layer.
  const std::vector<size_t> order = {2, 0, 3, 1};
  LoadRequest lr;
  lr.ns = "default";
  std::vector<DevicePtr> dst;
  for (size_t j = 0; j < order.size(); ++j) {
    lr.keys.push_back(keys[order[j]]);
    dst.push_back(pool.ptr((4 + j) * block));
  }
  lr.buffers = KvBuffers::Blocks(dst);
  lr.layerwise = true;
  absl::StatusOr<std::unique_ptr<TransferHandle>> loaded = engine_->Load(lr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (uint32_t l = 0; l < g_.num_layers; ++l) ASSERT_TRUE((*loaded)->WaitLayerHost(l).ok());
  ASSERT_TRUE((*loaded)->Wait().ok());
  for (size_t j = 0; j < order.size(); ++j) {
    EXPECT_EQ(std::vector<uint8_t>(pool.data() + (4 + j) * block,
                                   pool.data() + (5 + j) * block),
              BlockContent(keys[order[j]], block))
        << "loaded block " << j;
  }

  // Unregistered again, the same buffers are refused again.
  ASSERT_TRUE(engine_->UnregisterDeviceMemory(pool.ptr()).ok());
  lr.layerwise = false;
  ExpectError(engine_->Load(lr).status(), absl::StatusCode::kInvalidArgument, "buffer 0");
  ExpectError(engine_->Store(BlocksStore(prompt, pool)).status(),
              absl::StatusCode::kInvalidArgument, "is not device memory");
}

TEST_F(EngineExternalMemoryTest, ABufferRunningPastTheRegisteredRangeIsRefused) {
  const std::vector<int32_t> prompt = Prompt(2, 2);
  HostPool pool(4 * g_.block_bytes());
  // Registered: the first 1.5 blocks only.
  ASSERT_TRUE(engine_->RegisterDeviceMemory(pool.ptr(), g_.block_bytes() * 3 / 2).ok());
  StoreRequest r = BlocksStore(prompt, pool);
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument, "buffer 1");
  EXPECT_TRUE(engine_->UnregisterDeviceMemory(pool.ptr()).ok());
}

class EngineExternalPagedTest : public EngineExternalMemoryTest,
                                public ::testing::WithParamInterface<PageLayout> {};

TEST_P(EngineExternalPagedTest, PagedStoreFromAndLoadIntoARegisteredPoolByteExact) {
  constexpr uint32_t kPages = 8;
  const size_t layer_bytes = size_t{2} * kPages * g_.part_bytes();
  // One allocation holds every layer's tensor, as one registration (vLLM allocates the layers
  // separately; either works).
  HostPool memory(g_.num_layers * layer_bytes);
  KvBuffers::PagedPool pool;
  pool.num_pages = kPages;
  pool.layout = GetParam();
  for (uint32_t l = 0; l < g_.num_layers; ++l) pool.layers.push_back(memory.ptr(l * layer_bytes));
  // Distinct bytes everywhere: the pages the store reads, and the pages the load must leave.
  for (size_t i = 0; i < memory.bytes(); ++i) {
    memory.data()[i] = static_cast<uint8_t>(i * 131 + (i >> 9) * 7 + 1);
  }
  const std::vector<uint8_t> before(memory.data(), memory.data() + memory.bytes());

  const std::vector<int32_t> prompt = Prompt(3, 3);
  const std::vector<uint32_t> src_pages = {5, 1, 6};
  const std::vector<uint32_t> dst_pages = {0, 7, 3};
  StoreRequest sr;
  sr.ns = "default";
  sr.tokens = prompt;
  sr.buffers = KvBuffers::Paged(pool, src_pages);
  ExpectError(engine_->Store(sr).status(), absl::StatusCode::kInvalidArgument,
              "paged pool layer 0");

  ASSERT_TRUE(engine_->RegisterDeviceMemory(memory.ptr(), memory.bytes()).ok());
  absl::StatusOr<std::unique_ptr<TransferHandle>> stored = engine_->Store(sr);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE((*stored)->Wait().ok());

  LoadRequest lr;
  lr.ns = "default";
  lr.keys = KeysOf(*engine_, "default", prompt);
  lr.buffers = KvBuffers::Paged(pool, dst_pages);
  absl::StatusOr<std::unique_ptr<TransferHandle>> loaded = engine_->Load(lr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE((*loaded)->Wait().ok());

  // Every destination page of every layer now equals its source page (K and V parts), and
  // every other byte of the memory is what it was.
  std::vector<uint8_t> want = before;
  for (uint32_t l = 0; l < g_.num_layers; ++l) {
    for (size_t b = 0; b < src_pages.size(); ++b) {
      for (size_t part = 0; part < 2; ++part) {
        const size_t from = l * layer_bytes + (part * kPages + src_pages[b]) * g_.part_bytes();
        const size_t to = l * layer_bytes + (part * kPages + dst_pages[b]) * g_.part_bytes();
        std::copy(before.begin() + from, before.begin() + from + g_.part_bytes(),
                  want.begin() + to);
      }
    }
  }
  EXPECT_TRUE(std::equal(want.begin(), want.end(), memory.data()));

  // What was stored is in kvtier's block layout: a block load into registered memory, read
  // back through the page model, matches the source pages element for element.
  HostPool blocks(src_pages.size() * g_.block_bytes());
  ASSERT_TRUE(engine_->RegisterDeviceMemory(blocks.ptr(), blocks.bytes()).ok());
  LoadRequest br;
  br.ns = "default";
  br.keys = lr.keys;
  br.buffers = KvBuffers::Blocks({blocks.ptr(0), blocks.ptr(g_.block_bytes()),
                                  blocks.ptr(2 * g_.block_bytes())});
  absl::StatusOr<std::unique_ptr<TransferHandle>> as_blocks = engine_->Load(br);
  ASSERT_TRUE(as_blocks.ok()) << as_blocks.status();
  ASSERT_TRUE((*as_blocks)->Wait().ok());
  const size_t row = size_t{g_.head_dim} * g_.element_bytes();
  for (size_t b = 0; b < src_pages.size(); ++b) {
    for (uint32_t l = 0; l < g_.num_layers; ++l) {
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        for (uint32_t t = 0; t < g_.block_tokens; ++t) {
          for (uint32_t h = 0; h < g_.num_kv_heads; ++h) {
            const size_t in_block = b * g_.block_bytes() + g_.Offset(l, part, t) + h * row;
            const size_t in_page = static_cast<size_t>(part) * kPages + src_pages[b];
            const size_t in_pool = l * layer_bytes + in_page * g_.part_bytes() +
                                   (GetParam() == PageLayout::kNhd
                                        ? size_t{t} * g_.num_kv_heads + h
                                        : size_t{h} * g_.block_tokens + t) *
                                       row;
            ASSERT_EQ(std::memcmp(blocks.data() + in_block, before.data() + in_pool, row), 0)
                << "block " << b << " layer " << l << " token " << t << " head " << h;
          }
        }
      }
    }
  }

  ASSERT_TRUE(engine_->UnregisterDeviceMemory(blocks.ptr()).ok());
  ASSERT_TRUE(engine_->UnregisterDeviceMemory(memory.ptr()).ok());
  ExpectError(engine_->Load(lr).status(), absl::StatusCode::kInvalidArgument,
              "paged pool layer 0");
}

INSTANTIATE_TEST_SUITE_P(Layouts, EngineExternalPagedTest,
                         ::testing::Values(PageLayout::kNhd, PageLayout::kHnd),
                         [](const auto& info) { return PageLayoutName(info.param); });

TEST_F(EngineExternalMemoryTest, RegistrationErrorsSayWhatIsWrong) {
  HostPool pool(4 * g_.block_bytes());
  ExpectError(engine_->RegisterDeviceMemory(DevicePtr(), 4096),
              absl::StatusCode::kInvalidArgument, "null");
  ExpectError(engine_->RegisterDeviceMemory(pool.ptr(), 0), absl::StatusCode::kInvalidArgument,
              "zero bytes");
  // The engine's own device memory needs no registration (and cannot be registered twice).
  absl::StatusOr<DevicePtr> own = engine_->device().Allocate(g_.block_bytes());
  ASSERT_TRUE(own.ok());
  ExpectError(engine_->RegisterDeviceMemory(*own, g_.block_bytes()),
              absl::StatusCode::kInvalidArgument, "needs no registration");
  ExpectError(engine_->UnregisterDeviceMemory(*own), absl::StatusCode::kNotFound, "Free it");

  ASSERT_TRUE(engine_->RegisterDeviceMemory(pool.ptr(), 2 * g_.block_bytes()).ok());
  ExpectError(engine_->RegisterDeviceMemory(pool.ptr(), 2 * g_.block_bytes()),
              absl::StatusCode::kAlreadyExists, "registered already");
  // Overlaps, from either side.
  ExpectError(engine_->RegisterDeviceMemory(pool.ptr(g_.block_bytes()), 2 * g_.block_bytes()),
              absl::StatusCode::kInvalidArgument, "overlaps registered device memory");
  ExpectError(engine_->RegisterDeviceMemory(
                  DevicePtr::FromAddress(pool.ptr().address() - 100), 200),
              absl::StatusCode::kInvalidArgument, "overlaps");
  // Adjacent is fine.
  EXPECT_TRUE(engine_->RegisterDeviceMemory(pool.ptr(2 * g_.block_bytes()), g_.block_bytes()).ok());

  ExpectError(engine_->UnregisterDeviceMemory(pool.ptr(8)), absl::StatusCode::kNotFound,
              "not the start of device memory registered");
  ExpectError(engine_->UnregisterDeviceMemory(DevicePtr::FromAddress(0x1000)),
              absl::StatusCode::kNotFound, "0x1000");
  // kvtier never frees what it did not allocate.
  ExpectError(engine_->device().Free(pool.ptr()), absl::StatusCode::kInvalidArgument,
              "never frees");
  EXPECT_TRUE(engine_->UnregisterDeviceMemory(pool.ptr()).ok());
  ExpectError(engine_->UnregisterDeviceMemory(pool.ptr()), absl::StatusCode::kNotFound,
              "not the start");
  EXPECT_TRUE(engine_->UnregisterDeviceMemory(pool.ptr(2 * g_.block_bytes())).ok());
  // Registering again after unregistering is fine.
  EXPECT_TRUE(engine_->RegisterDeviceMemory(pool.ptr(), pool.bytes()).ok());
  EXPECT_TRUE(engine_->UnregisterDeviceMemory(pool.ptr()).ok());
  EXPECT_TRUE(engine_->device().Free(*own).ok());
}

TEST_F(EngineExternalMemoryTest, UnregisterIsRefusedWhileATransferUsesTheRange) {
  // A slow link (2 MB/s) keeps a 32-block (256 KiB) store in flight for ~130 ms.
  Open(/*copy_gbps=*/0.002);
  constexpr size_t kBlocks = 32;
  const std::vector<int32_t> prompt = Prompt(kBlocks, 4);
  HostPool pool(2 * kBlocks * g_.block_bytes());
  ASSERT_TRUE(engine_->RegisterDeviceMemory(pool.ptr(), pool.bytes()).ok());

  absl::StatusOr<std::unique_ptr<TransferHandle>> stored =
      engine_->Store(BlocksStore(prompt, pool));
  ASSERT_TRUE(stored.ok()) << stored.status();
  int refusals_checked = 0;  // a transfer found still in flight (one is all but certain)
  if (!(*stored)->IsReady()) {
    ExpectError(engine_->UnregisterDeviceMemory(pool.ptr()),
                absl::StatusCode::kFailedPrecondition, "in flight");
    ++refusals_checked;
  }
  ASSERT_TRUE((*stored)->Wait().ok());

  LoadRequest lr;
  lr.ns = "default";
  lr.keys = KeysOf(*engine_, "default", prompt);
  std::vector<DevicePtr> dst;
  for (size_t i = 0; i < kBlocks; ++i) dst.push_back(pool.ptr((kBlocks + i) * g_.block_bytes()));
  lr.buffers = KvBuffers::Blocks(dst);
  absl::StatusOr<std::unique_ptr<TransferHandle>> loaded = engine_->Load(lr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  if (!(*loaded)->IsReady()) {
    ExpectError(engine_->UnregisterDeviceMemory(pool.ptr()),
                absl::StatusCode::kFailedPrecondition, "in flight");
    ++refusals_checked;
  }
  ASSERT_TRUE((*loaded)->Wait().ok());
  EXPECT_GT(refusals_checked, 0) << "both 128 ms transfers finished before their call returned";
  // Once the handles say done, the range may go.
  EXPECT_TRUE(engine_->UnregisterDeviceMemory(pool.ptr()).ok());
  EXPECT_EQ(std::memcmp(pool.data(), pool.data() + kBlocks * g_.block_bytes(),
                        kBlocks * g_.block_bytes()),
            0);
}

TEST_F(EngineExternalMemoryTest, TransfersThatFailValidationDoNotHoldTheRange) {
  HostPool pool(2 * g_.block_bytes());
  ASSERT_TRUE(engine_->RegisterDeviceMemory(pool.ptr(), pool.bytes()).ok());
  LoadRequest lr;
  lr.ns = "default";
  lr.keys = KeysOf(*engine_, "default", Prompt(1, 5));  // never stored
  lr.buffers = KvBuffers::Blocks({pool.ptr()});
  EXPECT_TRUE(absl::IsNotFound(engine_->Load(lr).status()));
  const std::vector<int32_t> prompt = Prompt(2, 5);
  StoreRequest sr = BlocksStore(prompt, pool);
  sr.ns = "no-such-namespace";
  EXPECT_TRUE(absl::IsNotFound(engine_->Store(sr).status()));
  // A store of blocks already cached moves nothing and holds nothing.
  sr.ns = "default";
  absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Store(sr);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  h = engine_->Store(sr);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ((*h)->blocks_present(), 2u);
  EXPECT_TRUE(engine_->UnregisterDeviceMemory(pool.ptr()).ok());
}

}  // namespace
}  // namespace kvtier
