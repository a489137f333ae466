// The C++ public API through libkvtier.so alone: every out-of-line function the public
// headers declare is called here, so a symbol that engine/libkvtier.map fails to export
// breaks this test's link, and each call is checked to do its job through the library.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvtier/block_key.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"
#include "kvtier/geometry.h"

namespace kvtier {
namespace {

Geometry SmallGeometry() {
  Geometry g;
  g.num_layers = 2;
  g.num_kv_heads = 2;
  g.head_dim = 8;
  g.dtype = DType::kBFloat16;
  g.block_tokens = 4;
  return g;
}

TEST(SharedLibrary, ExportsTheGeometryAndKeyFunctions) {
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_STREQ(DTypeName(DType::kBFloat16), "bf16");
  absl::StatusOr<DType> parsed = ParseDType("fp16");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, DType::kFloat16);
  EXPECT_FALSE(ParseDType("int4").ok());
  EXPECT_STREQ(PageLayoutName(PageLayout::kHnd), "HND");
  EXPECT_STREQ(KeyHashName(KeyHash::kXxh3), "xxh3");
  EXPECT_STREQ(TierKindName(TierKind::kDisk), "disk");
  EXPECT_STREQ(DeviceKindName(DeviceKind::kEmulated), "emulated");

  const Geometry g = SmallGeometry();
  EXPECT_TRUE(g.Validate().ok());
  EXPECT_EQ(g.block_bytes(), 512u);
  EXPECT_NE(g.Fingerprint(), 0u);
  EXPECT_NE(g.ToString().find("bf16"), std::string::npos);

  const KeyHasher hasher(KeyHash::kSha256, "default", "model@1", g.Fingerprint());
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<BlockKey> keys = hasher.Keys(tokens, g.block_tokens, "");
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(hasher.Chain(hasher.root(), absl::MakeConstSpan(tokens).subspan(0, 4), ""), keys[0]);
  absl::StatusOr<BlockKey> back = BlockKey::FromHex(keys[1].ToHex());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, keys[1]);
}

TEST(SharedLibrary, OpensADeviceAndAnEngineAndMovesBlocks) {
  DeviceOptions d;
  d.choice = DeviceChoice::kEmulated;
  ASSERT_TRUE(d.Validate().ok());
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(d);
  ASSERT_TRUE(device.ok()) << device.status();
  absl::StatusOr<DevicePtr> p = (*device)->Allocate(4096);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE((*device)->Free(*p).ok());

  EngineOptions o;
  o.geometry = SmallGeometry();
  o.model_fingerprint = "model@1";
  o.device = d;
  o.host_tier_bytes = 16 * o.geometry.block_bytes();
  ASSERT_TRUE(o.Validate().ok()) << o.Validate();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Open(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Device& dev = (*engine)->device();

  const size_t block = o.geometry.block_bytes();
  absl::StatusOr<DevicePtr> src = dev.Allocate(2 * block);
  absl::StatusOr<DevicePtr> dst = dev.Allocate(2 * block);
  ASSERT_TRUE(src.ok() && dst.ok());
  std::vector<uint8_t> bytes(2 * block);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  absl::StatusOr<std::unique_ptr<Stream>> stream = dev.CreateStream();
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->CopyToDevice(*src, bytes.data(), bytes.size()).ok());
  ASSERT_TRUE((*stream)->Synchronize().ok());

  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  StoreRequest store;
  store.ns = "default";
  store.tokens = tokens;
  store.buffers = KvBuffers::Blocks({*src, *src + block});
  absl::StatusOr<std::unique_ptr<TransferHandle>> stored = (*engine)->Store(store);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE((*stored)->Wait().ok());
  EXPECT_EQ((*stored)->blocks_moved(), 2u);

  absl::StatusOr<MatchResult> m = (*engine)->Match("default", tokens);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->keys.size(), 2u);
  LoadRequest load;
  load.ns = "default";
  load.keys = m->keys;
  load.buffers = KvBuffers::Blocks({*dst, *dst + block});
  absl::StatusOr<std::unique_ptr<TransferHandle>> loaded = (*engine)->Load(load);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE((*loaded)->WaitLayer(1, **stream).ok());
  ASSERT_TRUE((*loaded)->Wait().ok());
  std::vector<uint8_t> out(2 * block);
  ASSERT_TRUE((*stream)->CopyToHost(out.data(), *dst, out.size()).ok());
  ASSERT_TRUE((*stream)->Synchronize().ok());
  EXPECT_EQ(out, bytes);

  // Paged buffers go through the library's KvBuffers::Paged and the engine's checks: one
  // layer tensor for a two-layer geometry is refused.
  KvBuffers::PagedPool pool;
  pool.layers = {*dst};
  pool.num_pages = 1;
  absl::StatusOr<std::unique_ptr<TransferHandle>> bad =
      (*engine)->Store({.ns = "default",
                        .tokens = tokens,
                        .buffers = KvBuffers::Paged(pool, {0, 0}),
                        .after = nullptr});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("layer"), std::string::npos) << bad.status();

  stored->reset();
  loaded->reset();
  EXPECT_TRUE(dev.Free(*src).ok());
  EXPECT_TRUE(dev.Free(*dst).ok());
  EXPECT_EQ((*engine)->Stats().loaded_blocks, 2u);
}

}  // namespace
}  // namespace kvtier
