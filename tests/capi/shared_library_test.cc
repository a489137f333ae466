// The C++ public API through libkvtier.so alone: every out-of-line function the public
// headers declare is called here, so a symbol that engine/libkvtier.map fails to export
// breaks this test's link, and each call is checked to do its job through the library.

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvtier/block_key.h"
#include "kvtier/c_api.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"
#include "kvtier/geometry.h"
#include "kvtier/load_plan.h"
#include "kvtier/stats.h"

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

TEST(SharedLibrary, ExportsThePlanner) {
  const std::vector<TierKind> tiers(2, TierKind::kHost);
  LoadPlanInput in;
  in.prompt_tokens = 9;
  in.tiers = tiers;
  in.geometry = SmallGeometry();
  LoadCostModel cost;
  cost.h2d.bytes_per_s = 1e10;
  ComputeModel compute;
  compute.prefill_tokens_per_s = 1000;
  absl::StatusOr<LoadPlan> plan = PlanLoad(in, cost, compute);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->load_blocks, 2u);
  EXPECT_STREQ(LoadPlanReasonName(plan->reason), "load_all");
  compute.prefill_tokens_per_s = 0;
  EXPECT_FALSE(PlanLoad(in, cost, compute).ok());
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

TEST(SharedLibrary, ExportsTheStatisticsSchema) {
  ASSERT_FALSE(AllStats().empty());
  EXPECT_STREQ(StatKindName(StatKind::kCounter), "counter");
  EXPECT_STREQ(StatUnitName(StatUnit::kBytes), "bytes");
  EXPECT_STREQ(StatGroupName(StatGroup::kNamespaceTier), "namespace_tier");
  // A caller's own visitor, driven by the library.
  class Sum : public StatsVisitor {
   public:
    void Number(const StatInfo& info, const StatLabels&, uint64_t value) override {
      if (info.name == "stored_blocks" && info.group == StatGroup::kEngine) stored = value;
      ++numbers;
    }
    void Histogram(const StatInfo&, const StatLabels&, const LatencyStats&) override {}
    void Label(const StatInfo&, absl::string_view value) override { device = std::string(value); }
    uint64_t stored = 0;
    size_t numbers = 0;
    std::string device;
  } v;
  EngineStats s;
  s.device = "emulated";
  s.stored_blocks = 7;
  VisitStats(s, v);
  EXPECT_EQ(v.stored, 7u);
  EXPECT_EQ(v.device, "emulated");
  EXPECT_GT(v.numbers, 40u);
}

// A C caller whose kvtier_stats ends before the remote figures (the smallest struct_size a
// version-4 library accepts): its own, shorter struct.
struct StatsBeforeRemote {
  uint64_t struct_size;
  kvtier_tier_stats tiers[KVTIER_NUM_TIERS];
  uint64_t namespaces, match_calls, matched_blocks, missed_blocks, stored_blocks,
      deduplicated_blocks, rejected_blocks, loaded_blocks, leases_held, leases_expired,
      prefetch_hinted, prefetch_issued, prefetch_in_time, prefetch_late, prefetch_unused,
      block_bytes, stall_ns, stalled_waits, prefetch_present, prefetch_skipped, prefetch_cancelled,
      prefetch_queued, prefetch_outstanding_bytes, prefetch_budget_bytes;
  kvtier_latency_stats match_latency, store_latency, load_latency;
};
static_assert(sizeof(StatsBeforeRemote) == KVTIER_STATS_SIZE_MIN);
// A caller built against C API version 3: three tiers, so every field after them elsewhere.
struct StatsV3 {
  uint64_t struct_size;
  kvtier_tier_stats tiers[3];
  uint64_t figures[24];
  kvtier_latency_stats latency[3];
};

TEST(SharedLibrary, CStatsServeCallersOfEveryStructSize) {
  kvtier_options* o = nullptr;
  ASSERT_EQ(kvtier_options_create(&o), KVTIER_OK);
  ASSERT_EQ(kvtier_options_set_geometry(o, 2, 2, 8, KVTIER_DTYPE_BFLOAT16, 4), KVTIER_OK);
  ASSERT_EQ(kvtier_options_set_model_fingerprint(o, "model@1"), KVTIER_OK);
  ASSERT_EQ(kvtier_options_set_device(o, KVTIER_DEVICE_EMULATED, 0, 0.0), KVTIER_OK);
  ASSERT_EQ(kvtier_options_set_tier_bytes(o, 0, 16 * 512), KVTIER_OK);
  kvtier_engine* e = nullptr;
  ASSERT_EQ(kvtier_engine_open(o, &e), KVTIER_OK) << kvtier_last_error();
  kvtier_options_destroy(o);
  const int32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<uint8_t> kv(2 * 512, 7);
  ASSERT_EQ(
      kvtier_store_host(e, "default", tokens, 8, nullptr, 0, 0, 2, kv.data(), kv.size(), nullptr),
      KVTIER_OK)
      << kvtier_last_error();

  struct {
    StatsBeforeRemote v;
    uint64_t after[4];
  } old;
  std::memset(&old, 0xAB, sizeof(old));
  old.v.struct_size = sizeof(StatsBeforeRemote);
  ASSERT_EQ(kvtier_engine_stats(e, reinterpret_cast<kvtier_stats*>(&old.v)), KVTIER_OK)
      << kvtier_last_error();
  EXPECT_EQ(old.v.struct_size, sizeof(StatsBeforeRemote));
  EXPECT_EQ(old.v.stored_blocks, 2u);
  EXPECT_EQ(old.v.tiers[KVTIER_TIER_HOST].used_blocks, 2u);
  EXPECT_EQ(old.v.namespaces, 1u);
  EXPECT_EQ(old.v.store_latency.count, 1u);
  for (uint64_t w : old.after) EXPECT_EQ(w, 0xABABABABABABABABu);  // nothing past the struct

  // A version-3 caller's struct is refused, not filled with figures in the wrong places.
  StatsV3 v3;
  std::memset(&v3, 0xAB, sizeof(v3));
  v3.struct_size = sizeof(v3);
  EXPECT_EQ(kvtier_engine_stats(e, reinterpret_cast<kvtier_stats*>(&v3)), KVTIER_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvtier_last_error()).find("version 4"), std::string::npos)
      << kvtier_last_error();
  EXPECT_EQ(v3.figures[0], 0xABABABABABABABABu);

  kvtier_stats now;
  std::memset(&now, 0, sizeof(now));
  now.struct_size = sizeof(now);
  ASSERT_EQ(kvtier_engine_stats(e, &now), KVTIER_OK);
  EXPECT_EQ(now.struct_size, sizeof(now));
  EXPECT_EQ(now.block_bytes, 512u);
  EXPECT_EQ(now.store_latency.count, 1u);

  now.struct_size = KVTIER_STATS_SIZE_MIN - 8;
  EXPECT_EQ(kvtier_engine_stats(e, &now), KVTIER_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvtier_last_error()).find("struct_size"), std::string::npos)
      << kvtier_last_error();
  kvtier_namespace_stats ns;
  std::memset(&ns, 0, sizeof(ns));
  ns.struct_size = 4;
  EXPECT_EQ(kvtier_namespace_stats_get(e, "default", &ns), KVTIER_INVALID_ARGUMENT);
  ns.struct_size = KVTIER_NAMESPACE_STATS_SIZE_MIN - 8;
  EXPECT_EQ(kvtier_namespace_stats_get(e, "default", &ns), KVTIER_INVALID_ARGUMENT);
  ns.struct_size = KVTIER_NAMESPACE_STATS_SIZE_MIN;
  ASSERT_EQ(kvtier_namespace_stats_get(e, "default", &ns), KVTIER_OK);
  EXPECT_EQ(ns.stored_blocks, 2u);
  EXPECT_EQ(ns.blocks_per_tier[KVTIER_TIER_REMOTE], 0u);
  EXPECT_EQ(kvtier_engine_close(e), KVTIER_OK);
}

}  // namespace
}  // namespace kvtier
