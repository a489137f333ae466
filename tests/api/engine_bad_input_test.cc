// Bad input to every public call: a clear error that names what was wrong, and nothing else
// lost (the blocks stored before the bad call still load byte for byte, counts unchanged).

#include <string>

#include "engine_test_util.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"

namespace kvtier {
namespace {

using ::kvtier::testing::BlockContent;
using ::kvtier::testing::DeviceBlocks;
using ::kvtier::testing::FillBlocks;
using ::kvtier::testing::KeysOf;
using ::kvtier::testing::Prompt;
using ::kvtier::testing::ReadDevice;
using ::kvtier::testing::SmallOptions;

void ExpectError(const absl::Status& s, absl::StatusCode code, absl::string_view mentions) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(s.message().find(mentions), absl::string_view::npos)
      << "error '" << s.message() << "' should mention '" << mentions << "'";
}

TEST(EngineOptionsValidate, EveryBadFieldIsNamed) {
  struct Case {
    const char* what;
    void (*mutate)(EngineOptions&);
    const char* mentions;
  };
  const Case cases[] = {
      {"geometry", [](EngineOptions& o) { o.geometry.head_dim = 0; }, "head_dim"},
      {"model", [](EngineOptions& o) { o.model_fingerprint.clear(); }, "model_fingerprint"},
      {"hash", [](EngineOptions& o) { o.key_hash = static_cast<KeyHash>(7); }, "key_hash"},
      {"host too small", [](EngineOptions& o) { o.host_tier_bytes = 100; }, "host_tier_bytes"},
      {"gpu too small", [](EngineOptions& o) { o.gpu_tier_bytes = 100; }, "gpu_tier_bytes"},
      {"policy", [](EngineOptions& o) { o.host_eviction = "random"; }, "random"},
      {"ns name", [](EngineOptions& o) { o.namespaces = {"a/b"}; }, "namespace"},
      {"ns twice",
       [](EngineOptions& o) {
         o.namespaces = {"a", "a"};
       },
       "twice"},
      {"lease", [](EngineOptions& o) { o.lease_timeout = absl::ZeroDuration(); }, "lease_timeout"},
      {"read rate", [](EngineOptions& o) { o.read_rate_priors[TierKind::kDisk].bytes_per_s = -5; },
       "read_rate_priors[disk] = {bytes_per_s -5"},
      {"read latency",
       [](EngineOptions& o) {
         o.read_rate_priors[TierKind::kRemote].latency = absl::InfiniteDuration();
       },
       "read_rate_priors[remote]"},
      {"throttle", [](EngineOptions& o) { o.device.emulated_copy_gbps = -1; },
       "emulated_copy_gbps"},
      {"sync",
       [](EngineOptions& o) {
         o.disk.directory = "/tmp/kvtier-bad-input-never-created";
         o.disk.capacity_bytes = 1 << 30;
         o.disk.sync = "fsync";
       },
       "disk.sync: unknown sync policy 'fsync' (expected none, data or full)"},
      {"codec threads",
       [](EngineOptions& o) {
         o.disk.directory = "/tmp/kvtier-bad-input-never-created";
         o.disk.capacity_bytes = 1 << 30;
         o.disk.codec_threads = 65;
       },
       "codec_threads = 65 exceeds 64"},
      {"mla heads",
       [](EngineOptions& o) {
         o.geometry.kind = KvKind::kLatent;
         o.geometry.num_kv_heads = 2;
       },
       "kind = mla stores one latent vector per token and layer: num_kv_heads = 2"},
      {"shard range",
       [](EngineOptions& o) {
         o.geometry.kv_head_begin = 1;
         o.geometry.total_kv_heads = 2;
       },
       "outside total_kv_heads = 2"},
      {"tp rank",
       [](EngineOptions& o) {
         o.tensor_parallel = {2, 2, 0};
       },
       "tensor_parallel.rank"},
      {"tp store rank",
       [](EngineOptions& o) {
         o.tensor_parallel = {0, 2, 5};
       },
       "tensor_parallel.store_rank = 5"},
      {"tp unsharded",
       [](EngineOptions& o) {
         o.tensor_parallel = {1, 2, 0};
       },
       "not a shard (total_kv_heads = 0)"},
      {"tp other rank's shard",
       [](EngineOptions& o) {
         o.geometry.num_kv_heads = 1;
         o.geometry.total_kv_heads = 2;
         o.tensor_parallel = {1, 2, 0};
       },
       "rank 1 of 2 holds KV heads [1, 2) of 2, but the geometry says kv_head_begin = 0"},
      {"tp heads do not divide",
       [](EngineOptions& o) {
         o.geometry.num_kv_heads = 1;
         o.geometry.total_kv_heads = 2;
         o.tensor_parallel = {0, 3, 0};
       },
       "tp_size = 3 is more than num_kv_heads = 2 but not a multiple"},
      {"fp8 with quantizing codec",
       [](EngineOptions& o) {
         o.geometry.dtype = DType::kFp8E4m3;
         o.disk.directory = "/tmp/kvtier-bad-input-never-created";
         o.disk.capacity_bytes = 1 << 30;
         o.disk.codec = "int8";
       },
       "codec int8 cannot store blocks of dtype fp8_e4m3"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    EngineOptions o = SmallOptions(2, 4);
    c.mutate(o);
    ExpectError(o.Validate(), absl::StatusCode::kInvalidArgument, c.mentions);
    ExpectError(Engine::Open(o).status(), absl::StatusCode::kInvalidArgument, c.mentions);
  }
  EXPECT_TRUE(SmallOptions(0, 1).Validate().ok());
}

TEST(EngineOptionsShard, MakesTheRanksGeometryOrChangesNothing) {
  EngineOptions o = SmallOptions(0, 4);
  o.geometry.num_kv_heads = 4;
  const EngineOptions before = o;
  // Refused: nothing changes.
  ExpectError(o.ShardForTensorParallel(2, 2), absl::StatusCode::kInvalidArgument, "tp_rank = 2");
  ExpectError(o.ShardForTensorParallel(0, 3), absl::StatusCode::kInvalidArgument,
              "not divisible by tp_size = 3");
  ExpectError(o.ShardForTensorParallel(0, 2, 2), absl::StatusCode::kInvalidArgument,
              "store_rank = 2");
  EXPECT_EQ(o.geometry, before.geometry);
  EXPECT_EQ(o.tensor_parallel.size, 1u);
  // Rank 1 of 2: heads [2, 4) of 4, and the options open.
  ASSERT_TRUE(o.ShardForTensorParallel(1, 2, 1).ok());
  EXPECT_EQ(o.geometry.num_kv_heads, 2u);
  EXPECT_EQ(o.geometry.kv_head_begin, 2u);
  EXPECT_EQ(o.geometry.total_kv_heads, 4u);
  EXPECT_EQ(o.tensor_parallel.rank, 1u);
  EXPECT_EQ(o.tensor_parallel.size, 2u);
  EXPECT_EQ(o.tensor_parallel.store_rank, 1u);
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  ExpectError(o.ShardForTensorParallel(1, 2), absl::StatusCode::kInvalidArgument,
              "already a shard");
}

// Which rank writes the shared tier: of each group holding the same bytes, the one whose index
// in the group is store_rank (modulo the group's size); every rank of a head-sharded geometry.
TEST(TensorParallelOptions, OneRankOfEachReplicaGroupStores) {
  Geometry mla{4, 1, 96, DType::kBFloat16, 16};
  mla.kind = KvKind::kLatent;
  for (uint32_t rank = 0; rank < 4; ++rank) {
    EXPECT_EQ((TensorParallelOptions{rank, 4, 2}.Stores(mla)), rank == 2) << rank;
  }
  const Geometry gqa{4, 8, 16, DType::kFloat16, 16};
  for (uint32_t rank = 0; rank < 16; ++rank) {  // each head on two ranks: the odd one stores
    const TensorParallelOptions tp{rank, 16, 1};
    const Geometry g = *gqa.ForTensorParallelRank(rank, 16);
    ASSERT_TRUE(tp.Validate(g).ok());
    EXPECT_EQ(tp.Stores(g), rank % 2 == 1) << rank;
  }
  for (uint32_t rank = 0; rank < 2; ++rank) {  // head-sharded: every rank its own
    EXPECT_TRUE((TensorParallelOptions{rank, 2, 0}.Stores(*gqa.ForTensorParallelRank(rank, 2))));
  }
  EXPECT_TRUE((TensorParallelOptions{}.Stores(gqa)));
}

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = Engine::Open(SmallOptions(2, 8));
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    bytes_ = engine_->options().geometry.block_bytes();
    prompt_ = Prompt(2, 1);
    keys_ = KeysOf(*engine_, "default", prompt_);
    buf_ = std::make_unique<DeviceBlocks>(engine_->device(), 2, bytes_);
    FillBlocks(engine_->device(), buf_->ptrs(), keys_, bytes_);
    StoreRequest r = GoodStore();
    auto h = engine_->Store(r);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
    before_ = engine_->Stats();
  }

  // After each bad call: nothing lost, nothing counted.
  void TearDown() override {
    EngineStats after = engine_->Stats();
    EXPECT_EQ(after.stored_blocks, before_.stored_blocks);
    EXPECT_EQ(after.tiers[1].used_blocks, before_.tiers[1].used_blocks);
    EXPECT_EQ(after.tiers[1].pinned_blocks, 0u);
    EXPECT_EQ(after.tiers[0].used_blocks, before_.tiers[0].used_blocks);
    auto m = engine_->Match("default", prompt_);
    ASSERT_TRUE(m.ok());
    ASSERT_EQ(m->keys, keys_);
    DeviceBlocks dst(engine_->device(), 2, bytes_);
    LoadRequest r;
    r.ns = "default";
    r.keys = keys_;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    auto h = engine_->Load(r);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(ReadDevice(engine_->device(), dst[i], bytes_), BlockContent(keys_[i], bytes_));
    }
  }

  StoreRequest GoodStore() {
    StoreRequest r;
    r.ns = "default";
    r.tokens = prompt_;
    r.buffers = KvBuffers::Blocks(buf_->ptrs());
    return r;
  }
  LoadRequest GoodLoad() {
    LoadRequest r;
    r.ns = "default";
    r.keys = keys_;
    r.buffers = KvBuffers::Blocks(buf_->ptrs());
    return r;
  }

  std::unique_ptr<Engine> engine_;
  size_t bytes_ = 0;
  std::vector<int32_t> prompt_;
  std::vector<BlockKey> keys_;
  std::unique_ptr<DeviceBlocks> buf_;
  EngineStats before_;
};

TEST_F(BadInputTest, UnknownNamespaceIsNotFoundInEveryCall) {
  const auto nf = absl::StatusCode::kNotFound;
  ExpectError(engine_->Match("nobody", prompt_).status(), nf, "'nobody'");
  StoreRequest s = GoodStore();
  s.ns = "nobody";
  ExpectError(engine_->Store(s).status(), nf, "'nobody'");
  LoadRequest l = GoodLoad();
  l.ns = "nobody";
  ExpectError(engine_->Load(l).status(), nf, "'nobody'");
  ExpectError(engine_->LoadToGpuTier("nobody", keys_).status(), nf, "'nobody'");
  ExpectError(engine_->Prefetch("nobody", keys_).status(), nf, "'nobody'");
  ExpectError(engine_->Erase("nobody", keys_).status(), nf, "'nobody'");
  ExpectError(engine_->EraseNamespace("nobody").status(), nf, "'nobody'");
}

TEST_F(BadInputTest, StoreRejectsPartialBlocksAndMismatchedBuffers) {
  std::vector<int32_t> ragged = prompt_;
  ragged.push_back(5);
  StoreRequest r = GoodStore();
  r.tokens = ragged;
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument,
              "not a multiple of block_tokens");
  r = GoodStore();
  r.buffers = KvBuffers::Blocks({(*buf_)[0]});
  r.first_block = 2;  // past the prompt's 2 blocks
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument, "hold only 2");
  r = GoodStore();
  r.buffers = KvBuffers::Blocks({});
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument, "no buffers");
}

TEST_F(BadInputTest, NullAndForeignPointersAreNamed) {
  StoreRequest r = GoodStore();
  r.buffers = KvBuffers::Blocks({(*buf_)[0], DevicePtr()});
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument, "buffer 1 is null");
  r.buffers = KvBuffers::Blocks({DevicePtr::FromAddress(0x1000), (*buf_)[1]});
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument,
              "not device memory");
  // A pointer into the right allocation but too close to its end for a whole block.
  r.buffers = KvBuffers::Blocks({(*buf_)[0] + 8, (*buf_)[1]});
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument, "buffer 0");
  LoadRequest l = GoodLoad();
  l.buffers = KvBuffers::Blocks({DevicePtr::FromAddress(0xdeadbeef000), (*buf_)[1]});
  ExpectError(engine_->Load(l).status(), absl::StatusCode::kInvalidArgument, "0xdeadbeef000");
}

TEST_F(BadInputTest, PagedPoolShapeIsChecked) {
  const Geometry g = engine_->options().geometry;
  auto pool_mem = engine_->device().Allocate(2 * 4 * g.part_bytes() * g.num_layers);
  ASSERT_TRUE(pool_mem.ok());
  KvBuffers::PagedPool pool;
  pool.num_pages = 4;
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    pool.layers.push_back(*pool_mem + l * 2 * 4 * g.part_bytes());
  }
  StoreRequest r = GoodStore();
  KvBuffers::PagedPool short_pool = pool;
  short_pool.layers.pop_back();
  r.buffers = KvBuffers::Paged(short_pool, {0, 1});
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument, "3 layer tensors");
  r.buffers = KvBuffers::Paged(pool, {0, 4});
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument,
              "page 4 for block 1 is out of range");
  KvBuffers::PagedPool huge = pool;
  huge.num_pages = 1000;  // larger than the memory behind the pointers
  r.buffers = KvBuffers::Paged(huge, {0, 1});
  ExpectError(engine_->Store(r).status(), absl::StatusCode::kInvalidArgument,
              "not device memory");
  LoadRequest l = GoodLoad();
  l.buffers = KvBuffers::Paged(pool, {0});
  ExpectError(engine_->Load(l).status(), absl::StatusCode::kInvalidArgument,
              "1 buffers given for 2 blocks");
  l.buffers = KvBuffers::Paged(pool, {3, 3});
  ExpectError(engine_->Load(l).status(), absl::StatusCode::kInvalidArgument,
              "page 3 is given for blocks 0 and 1");
  KvBuffers::PagedPool odd = pool;
  odd.layout = static_cast<PageLayout>(7);
  l.buffers = KvBuffers::Paged(odd, {0, 1});
  ExpectError(engine_->Load(l).status(), absl::StatusCode::kInvalidArgument,
              "unknown page layout 7");
  EXPECT_TRUE(engine_->device().Free(*pool_mem).ok());
}

TEST_F(BadInputTest, LoadOfUnknownKeysNamesTheFirstAndPinsNothing) {
  LoadRequest l = GoodLoad();
  l.keys = {keys_[0], BlockKey{1, 2}};
  ExpectError(engine_->Load(l).status(), absl::StatusCode::kNotFound,
              "block 1 (key 00000000000000010000000000000002)");
  l.keys.clear();
  l.buffers = KvBuffers::Blocks({});
  ExpectError(engine_->Load(l).status(), absl::StatusCode::kInvalidArgument, "no keys");
}

TEST_F(BadInputTest, WaitLayerOutOfRangeAndOnAStore) {
  auto h = engine_->Load(GoodLoad());
  ASSERT_TRUE(h.ok());
  auto stream = engine_->device().CreateStream();
  ASSERT_TRUE(stream.ok());
  ExpectError((*h)->WaitLayer(4, **stream), absl::StatusCode::kInvalidArgument, "layer 4");
  ExpectError((*h)->WaitLayerHost(99), absl::StatusCode::kInvalidArgument, "4 layers");
  EXPECT_TRUE((*h)->Wait().ok());
  std::vector<int32_t> other = Prompt(1, 9);
  StoreRequest s = GoodStore();
  s.tokens = other;
  s.buffers = KvBuffers::Blocks({(*buf_)[0]});
  auto sh = engine_->Store(s);
  ASSERT_TRUE(sh.ok());
  ExpectError((*sh)->WaitLayer(0, **stream), absl::StatusCode::kFailedPrecondition,
              "not a load");
  EXPECT_TRUE((*sh)->Wait().ok());
  EXPECT_TRUE(engine_->Erase("default", KeysOf(*engine_, "default", other)).ok());
  before_.stored_blocks += 1;
}

TEST_F(BadInputTest, LoadToGpuTierChecksItsArguments) {
  ExpectError(engine_->LoadToGpuTier("default", {}).status(), absl::StatusCode::kInvalidArgument,
              "no keys");
  ExpectError(engine_->LoadToGpuTier("default", {keys_[0], keys_[0]}).status(),
              absl::StatusCode::kInvalidArgument, "twice");
  ExpectError(engine_->LoadToGpuTier("default", keys_, true, absl::Seconds(-1)).status(),
              absl::StatusCode::kInvalidArgument, "negative");
  std::vector<BlockKey> three = {keys_[0], keys_[1], BlockKey{3, 3}};
  ExpectError(engine_->LoadToGpuTier("default", three).status(),
              absl::StatusCode::kResourceExhausted, "holds only 2");
  ExpectError(engine_->LoadToGpuTier("default", {keys_[0], BlockKey{4, 4}}).status(),
              absl::StatusCode::kNotFound, "block 1");
}

TEST(EngineWithoutGpuTier, GpuTierCallsAreFailedPrecondition) {
  auto e = Engine::Open(SmallOptions(0, 4));
  ASSERT_TRUE(e.ok());
  ExpectError((*e)->LoadToGpuTier("default", {BlockKey{1, 1}}).status(),
              absl::StatusCode::kFailedPrecondition, "gpu_tier_bytes = 0");
  ExpectError((*e)->Prefetch("default", {BlockKey{1, 1}}).status(),
              absl::StatusCode::kFailedPrecondition, "GPU tier is disabled");
}

TEST(EngineOpen, DemandingCudaWithoutAGpuIsAnErrorNotAFallback) {
  EngineOptions o = SmallOptions(1, 2);
  o.device.choice = DeviceChoice::kCuda;
  auto d = Device::Create(o.device);
  if (d.ok()) GTEST_SKIP() << "a CUDA device is present: " << (*d)->name();
  absl::Status s = Engine::Open(o).status();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("CUDA"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace kvtier
