// Faults under the engine, seen through the engine: a pinned or device allocation that fails
// at Open, a CUDA error while a Store or Load enqueues its copies, EIO / ENOSPC / short writes
// on the disk tier's writes, EIO / short reads on its reads, and slow disk I/O. For each: the
// call that met the fault gets a clear status (naming what failed), the engine keeps serving,
// and nothing already stored is lost or served with wrong bytes (a block hit by a fault is a
// miss or an error, never garbage).
//
// Faults are injected with engine/testing_hooks.h (the disk tier's I/O engine, the emulated
// device) and EmulatedDevice::InjectFaultIntoNextDevice (calls Open makes).

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "device/emulated_device.h"
#include "engine/testing_hooks.h"
#include "engine_test_util.h"
#include "gtest/gtest.h"
#include "io/io_engine.h"
#include "kvtier/engine.h"

namespace kvtier {
namespace {

using ::kvtier::testing::BlockContent;
using ::kvtier::testing::DeviceBlocks;
using ::kvtier::testing::FillBlocks;
using ::kvtier::testing::KeysOf;
using ::kvtier::testing::Poison;
using ::kvtier::testing::Prompt;
using ::kvtier::testing::ReadDevice;
using ::kvtier::testing::SmallOptions;

constexpr int kHost = static_cast<int>(TierKind::kHost);
constexpr int kDisk = static_cast<int>(TierKind::kDisk);

class EngineFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-engine-fault-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    FreeBuffers();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  EngineOptions Options(size_t host_blocks, bool disk) {
    EngineOptions o = SmallOptions(/*gpu_blocks=*/0, host_blocks);  // 8 KiB blocks
    testing::UseEmulatedDevice(o);  // device faults are injected into the emulated device
    if (disk) {
      o.disk.directory = dir_ + "/cache";
      o.disk.region_bytes = 64 * 1024;
      o.disk.capacity_bytes = 16 * o.disk.region_bytes;
      o.disk.admit_min_seen = 1;  // every evicted block goes to disk
    }
    return o;
  }
  // Caller buffers come from a pool and go back to it, as an inference engine's caching
  // allocator does: Free synchronizes the device (as cudaFree does), so freeing buffers
  // mid-test would make every call wait for the slowest transfer and hide what the tests
  // measure. The pool is freed with the engine.
  class Buffers {
   public:
    Buffers(EngineFaultTest& t, size_t n) : t_(t) {
      for (size_t i = 0; i < n; ++i) {
        if (!t_.free_.empty()) {
          ptrs_.push_back(t_.free_.back());
          t_.free_.pop_back();
          continue;
        }
        absl::StatusOr<DevicePtr> p = t_.engine_->device().Allocate(t_.bytes_);
        EXPECT_TRUE(p.ok()) << p.status();
        ptrs_.push_back(*p);
      }
    }
    ~Buffers() { t_.free_.insert(t_.free_.end(), ptrs_.begin(), ptrs_.end()); }
    const std::vector<DevicePtr>& ptrs() const { return ptrs_; }
    DevicePtr operator[](size_t i) const { return ptrs_[i]; }

   private:
    EngineFaultTest& t_;
    std::vector<DevicePtr> ptrs_;
  };
  void FreeBuffers() {
    if (engine_ == nullptr) return;
    for (DevicePtr p : free_) EXPECT_TRUE(engine_->device().Free(p).ok());
    free_.clear();
  }

  void Open(const EngineOptions& o) {
    FreeBuffers();
    engine_.reset();
    auto e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    bytes_ = o.geometry.block_bytes();
  }

  // Stores every block of `tokens`; returns what Store and then Wait said. `before` runs
  // once the source buffers are filled, just before Store (to arm a device fault that the
  // test's own copies must not meet).
  absl::Status Store(const std::vector<int32_t>& tokens, absl::string_view ns = "default",
                     size_t* rejected = nullptr, const std::function<void()>& before = {}) {
    const std::vector<BlockKey> keys = KeysOf(*engine_, ns, tokens);
    Buffers src(*this, keys.size());
    FillBlocks(engine_->device(), src.ptrs(), keys, bytes_);
    if (before) before();
    StoreRequest r;
    r.ns = ns;
    r.tokens = tokens;
    r.buffers = KvBuffers::Blocks(src.ptrs());
    auto h = engine_->Store(r);
    if (!h.ok()) return h.status();
    if (rejected != nullptr) *rejected = (*h)->blocks_rejected();
    return (*h)->Wait();
  }

  // Loads `keys`; returns what Load and then Wait said, with each block's bytes in *got (the
  // destinations are poisoned first, so a block never written reads 0xA5). `before` runs
  // just before Load.
  absl::Status Load(const std::vector<BlockKey>& keys, absl::string_view ns = "default",
                    std::vector<std::vector<uint8_t>>* got = nullptr,
                    const std::function<void()>& before = {}) {
    Buffers dst(*this, keys.size());
    Poison(engine_->device(), dst.ptrs(), bytes_);
    if (before) before();
    LoadRequest r;
    r.ns = ns;
    r.keys = keys;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    auto h = engine_->Load(r);
    absl::Status s = h.ok() ? (*h)->Wait() : h.status();
    if (got != nullptr) {
      for (size_t i = 0; i < keys.size(); ++i) {
        got->push_back(ReadDevice(engine_->device(), dst[i], bytes_));
      }
    }
    return s;
  }

  // Every block of `keys` loads byte for byte.
  void ExpectExact(const std::vector<BlockKey>& keys, absl::string_view ns = "default") {
    std::vector<std::vector<uint8_t>> got;
    absl::Status s = Load(keys, ns, &got);
    ASSERT_TRUE(s.ok()) << s;
    for (size_t i = 0; i < keys.size(); ++i) {
      EXPECT_EQ(got[i], BlockContent(keys[i], bytes_)) << "block " << i;
    }
  }

  // Loads each key alone. A key that is no longer cached must be NotFound; one that loads
  // must be byte-exact. Returns how many were NotFound.
  size_t CountMissesCheckingTheRest(const std::vector<BlockKey>& keys,
                                    absl::string_view ns = "default") {
    size_t misses = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      std::vector<std::vector<uint8_t>> got;
      absl::Status s = Load({keys[i]}, ns, &got);
      if (s.code() == absl::StatusCode::kNotFound) {
        ++misses;
        continue;
      }
      EXPECT_TRUE(s.ok()) << "block " << i << ": " << s;
      EXPECT_EQ(got[0], BlockContent(keys[i], bytes_)) << "block " << i;
    }
    return misses;
  }

  // Blocks of `cold` on disk and a free host tier: stores `cold`, pushes it down with `warm`
  // (as many blocks as the host tier), then erases `warm`, whose slots keep its bytes
  // (secure_erase is off). Reading `cold` back then evicts nothing: its reads are the only
  // I/O, in key order. Returns the keys of `cold` in *keys.
  void OnDiskWithAFreeHostTier(const std::vector<int32_t>& cold, const std::vector<int32_t>& warm,
                               std::vector<BlockKey>* keys) {
    ASSERT_TRUE(Store(cold).ok());
    ASSERT_TRUE(Store(warm).ok());
    ASSERT_TRUE(engine_->Flush().ok());
    auto erased = engine_->Erase("default", KeysOf(*engine_, "default", warm));
    ASSERT_TRUE(erased.ok()) << erased.status();
    ASSERT_EQ(*erased, warm.size() / 16);
    *keys = KeysOf(*engine_, "default", cold);
  }

  std::string dir_;
  std::unique_ptr<Engine> engine_;
  size_t bytes_ = 0;
  std::vector<DevicePtr> free_;  // Buffers returned to the pool
};

bool Contains(const absl::Status& s, absl::string_view part) {
  return absl::StrContains(s.message(), part);
}

// ------------------------------------------------------------------------ device: at Open

TEST_F(EngineFaultTest, PinnedAllocationFailingAtOpenIsAClearErrorAndTheNextOpenWorks) {
  EmulatedDevice::InjectFaultIntoNextDevice({DeviceFault::Kind::kAllocatePinned, 0, 1});
  auto failed = Engine::Open(Options(8, /*disk=*/false));
  ASSERT_FALSE(failed.ok());
  const absl::Status s = failed.status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  for (absl::string_view part : {"host tier", "pinned memory", "cudaHostAlloc(65536 bytes)",
                                 "out of memory", "injected fault"}) {
    EXPECT_TRUE(Contains(s, part)) << part << " missing from " << s;
  }
  // Nothing of the failed engine lingers: the next Open (no fault) works and serves.
  Open(Options(8, false));
  const std::vector<int32_t> prompt = Prompt(4, 1);
  ASSERT_TRUE(Store(prompt).ok());
  ExpectExact(KeysOf(*engine_, "default", prompt));
}

TEST_F(EngineFaultTest, DeviceAllocationFailingAtOpenNamesTheGpuTier) {
  EmulatedDevice::InjectFaultIntoNextDevice({DeviceFault::Kind::kAllocate, 0, 1});
  EngineOptions o = Options(8, false);
  o.gpu_tier_bytes = 4 * o.geometry.block_bytes();
  auto failed = Engine::Open(o);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted) << failed.status();
  EXPECT_TRUE(Contains(failed.status(), "cudaMalloc(32768 bytes): out of memory"))
      << failed.status();
  Open(o);
  EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(TierKind::kGpu)].capacity_blocks, 4u);
}

// ---------------------------------------------------------- device: CUDA errors mid-transfer

struct DeviceCase {
  DeviceFault::Kind kind;
  const char* cuda_call;  // what the error must name
};

// A Store or Load that meets a CUDA error returns it from the call. In the "Kinds" cases the
// error comes before any copy of the transfer is enqueued (the first CopyBatch of a Store, or
// of a layer-wise Load, fails whole). In the "AfterPartlyEnqueued" cases the error comes
// after some copies are on the engine's stream (cudaEventRecord fails after a Store's copies,
// or after a Load's layer 0): the engine waits for what it enqueued before it reports the
// error and frees slots, so a caller that frees its buffers on the error (as it may: the call
// failed) breaks nothing, and no failure stays pending on the engine's streams.


class EngineDeviceFaultTest : public EngineFaultTest,
                              public ::testing::WithParamInterface<DeviceCase> {};

TEST_P(EngineDeviceFaultTest, ErrorMidStoreFailsThatStoreOnly) {
  Open(Options(8, false));
  const std::vector<int32_t> earlier = Prompt(4, 1), failing = Prompt(3, 2);
  ASSERT_TRUE(Store(earlier).ok());

  const absl::Status s = Store(failing, "default", nullptr, [&] {
    ASSERT_TRUE(InjectDeviceFault(*engine_, {GetParam().kind, 0, 1}).ok());
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  for (absl::string_view part : {"Store", GetParam().cuda_call, "injected fault"}) {
    EXPECT_TRUE(Contains(s, part)) << part << " missing from " << s;
  }
  // The failed blocks are not served: not matched, not loadable (never garbage).
  auto m = engine_->Match("default", failing);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->matched_tokens, 0u);
  const std::vector<BlockKey> failed_keys = KeysOf(*engine_, "default", failing);
  EXPECT_EQ(Load(failed_keys).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->Stats().tiers[kHost].used_blocks, 4u);
  // What was stored before is intact, and the engine keeps serving: the same Store works.
  ExpectExact(KeysOf(*engine_, "default", earlier));
  const absl::Status again = Store(failing);
  ASSERT_TRUE(again.ok()) << again;
  ExpectExact(failed_keys);
  EXPECT_TRUE(engine_->Flush().ok());
}

TEST_P(EngineDeviceFaultTest, ErrorMidLoadFailsThatLoadOnlyAndLeaksNoPin) {
  Open(Options(8, false));
  const std::vector<int32_t> prompt = Prompt(4, 1);
  ASSERT_TRUE(Store(prompt).ok());
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);

  // A Load's first host callback starts the timing of its copies (the tiers' read rates): the
  // second is its completion.
  const uint64_t skip = GetParam().kind == DeviceFault::Kind::kCallback ? 1 : 0;
  const absl::Status s = Load(keys, "default", nullptr, [&] {
    ASSERT_TRUE(InjectDeviceFault(*engine_, {GetParam().kind, skip, 1}).ok());
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  for (absl::string_view part : {"Load", GetParam().cuda_call, "injected fault"}) {
    EXPECT_TRUE(Contains(s, part)) << part << " missing from " << s;
  }
  ExpectExact(keys);
  // The failed Load released its pins: 8 new blocks can evict every one of the 4.
  ASSERT_TRUE(Store(Prompt(4, 2)).ok());
  size_t rejected = 99;
  ASSERT_TRUE(Store(Prompt(4, 3), "default", &rejected).ok());
  EXPECT_EQ(rejected, 0u);
  EXPECT_EQ(engine_->Stats().tiers[kHost].pinned_blocks, 0u);
}

std::string DeviceCaseName(const ::testing::TestParamInfo<DeviceCase>& info) {
  switch (info.param.kind) {
    case DeviceFault::Kind::kCopy:
      return "Copy";
    case DeviceFault::Kind::kEventRecord:
      return "EventRecord";
    case DeviceFault::Kind::kCallback:
      return "Callback";
    default:
      return "Other";
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, EngineDeviceFaultTest,
                         ::testing::Values(DeviceCase{DeviceFault::Kind::kCopy, "cudaMemcpy"}),
                         DeviceCaseName);
// The completion cannot be attached (cudaLaunchHostFunc fails) after every copy and the
// transfer's event are on the stream: without its completion the handle's Wait would never
// return and its pins would leak, so the transfer fails like any other.
INSTANTIATE_TEST_SUITE_P(AfterPartlyEnqueued, EngineDeviceFaultTest,
                         ::testing::Values(DeviceCase{DeviceFault::Kind::kEventRecord,
                                                      "cudaEventRecord"},
                                           DeviceCase{DeviceFault::Kind::kCallback,
                                                      "cudaLaunchHostFunc"}),
                         DeviceCaseName);

TEST_F(EngineFaultTest, LaunchErrorMidPagedStoreFailsThatStoreOnly) {
  EngineOptions o = Options(8, false);
  // SmallGeometry's parts are 1 KiB: a huge DMA threshold sends every paged part through the
  // zero-copy kernel, so the Store's one enqueue is a kernel Launch.
  o.paged_dma_min_part_bytes = std::numeric_limits<size_t>::max();
  Open(o);
  const Geometry& g = o.geometry;
  const std::vector<int32_t> earlier = Prompt(2, 1), failing = Prompt(3, 2);
  ASSERT_TRUE(Store(earlier).ok());

  // Two vLLM-style pools of 3 pages per layer: the source filled with distinct bytes per
  // layer, the destination poisoned. Block i sits in page i.
  constexpr uint32_t kPages = 3;
  const size_t layer_bytes = 2 * kPages * g.part_bytes();
  DeviceBlocks src_tensors(engine_->device(), g.num_layers, layer_bytes);
  DeviceBlocks dst_tensors(engine_->device(), g.num_layers, layer_bytes);
  std::vector<std::vector<uint8_t>> src_bytes;
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    src_bytes.push_back(BlockContent(BlockKey{l + 1, 77}, layer_bytes));
    testing::WriteDevice(engine_->device(), src_tensors[l], src_bytes.back());
  }
  Poison(engine_->device(), dst_tensors.ptrs(), layer_bytes);
  auto pool = [&](const DeviceBlocks& tensors) {
    KvBuffers::PagedPool p;
    p.layers = tensors.ptrs();
    p.num_pages = kPages;
    p.layout = PageLayout::kNhd;
    return p;
  };
  const std::vector<uint32_t> pages = {0, 1, 2};
  StoreRequest sr;
  sr.ns = "default";
  sr.tokens = failing;
  sr.buffers = KvBuffers::Paged(pool(src_tensors), pages);

  ASSERT_TRUE(InjectDeviceFault(*engine_, {DeviceFault::Kind::kLaunch, 0, 1}).ok());
  auto failed = engine_->Store(sr);
  ASSERT_FALSE(failed.ok());
  const absl::Status s = failed.status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  for (absl::string_view part : {"Store", "kernel '", "kernel launch", "injected fault"}) {
    EXPECT_TRUE(Contains(s, part)) << part << " missing from " << s;
  }
  auto m = engine_->Match("default", failing);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->matched_tokens, 0u);

  // The engine keeps serving: the same Store works, and loading its blocks into the other
  // pool at the same pages reproduces the source pool byte for byte.
  auto stored = engine_->Store(sr);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE((*stored)->Wait().ok());
  LoadRequest lr;
  lr.ns = "default";
  lr.keys = KeysOf(*engine_, "default", failing);
  lr.buffers = KvBuffers::Paged(pool(dst_tensors), pages);
  auto loaded = engine_->Load(lr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE((*loaded)->Wait().ok());
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    EXPECT_EQ(ReadDevice(engine_->device(), dst_tensors[l], layer_bytes), src_bytes[l])
        << "layer " << l;
  }
  ExpectExact(KeysOf(*engine_, "default", earlier));
}

// ---------------------------------------------------------------------- disk: write faults

class EngineDiskWriteFaultTest : public EngineFaultTest,
                                 public ::testing::WithParamInterface<FaultSpec::Kind> {};

TEST_P(EngineDiskWriteFaultTest, LosesOnlyTheBlockBeingWrittenAndKeepsServing) {
  Open(Options(4, /*disk=*/true));
  const std::vector<int32_t> a = Prompt(4, 1), b = Prompt(4, 2), c = Prompt(4, 3);
  ASSERT_TRUE(Store(a).ok());
  // B's store evicts A's four host copies to disk; the second of those writes fails.
  ASSERT_TRUE(InjectDiskFault(*engine_, FaultSpec{GetParam(), /*skip=*/1, /*count=*/1}).ok());
  ASSERT_TRUE(Store(b).ok());
  EXPECT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(engine_->Stats().tiers[kDisk].write_failures, 1u);

  // One block of A is gone (a miss), the other three load byte for byte from disk, B from
  // the host tier.
  EXPECT_EQ(CountMissesCheckingTheRest(KeysOf(*engine_, "default", a)), 1u);
  ExpectExact(KeysOf(*engine_, "default", b));

  // The disk keeps taking writes: C pushes B down, and B comes back exact.
  ASSERT_TRUE(Store(c).ok());
  EXPECT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(engine_->Stats().tiers[kDisk].write_failures, 1u);
  EXPECT_EQ(CountMissesCheckingTheRest(KeysOf(*engine_, "default", b)), 0u);
}

INSTANTIATE_TEST_SUITE_P(Kinds, EngineDiskWriteFaultTest,
                         ::testing::Values(FaultSpec::Kind::kEio, FaultSpec::Kind::kEnospc,
                                           FaultSpec::Kind::kShortWrite),
                         [](const ::testing::TestParamInfo<FaultSpec::Kind>& info) {
                           switch (info.param) {
                             case FaultSpec::Kind::kEio:
                               return std::string("Eio");
                             case FaultSpec::Kind::kEnospc:
                               return std::string("Enospc");
                             default:
                               return std::string("ShortWrite");
                           }
                         });

// ----------------------------------------------------------------------- disk: read faults

class EngineDiskReadFaultTest : public EngineFaultTest,
                                public ::testing::WithParamInterface<FaultSpec::Kind> {};

TEST_P(EngineDiskReadFaultTest, IsAnErrorAndAMissNeverWrongBytes) {
  Open(Options(4, /*disk=*/true));
  std::vector<BlockKey> keys;
  ASSERT_NO_FATAL_FAILURE(OnDiskWithAFreeHostTier(Prompt(4, 1), Prompt(4, 2), &keys));
  ASSERT_TRUE(InjectDiskFault(*engine_, FaultSpec{GetParam(), 0, 1}).ok());

  std::vector<std::vector<uint8_t>> got;
  const absl::Status s = Load(keys, "default", &got);
  ASSERT_FALSE(s.ok());
  if (GetParam() == FaultSpec::Kind::kShortRead) {
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  } else {
    EXPECT_TRUE(Contains(s, "Input/output error")) << s;
  }
  // Each destination holds its own block or zeros: never another block's bytes.
  size_t zeroed = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (got[i] == std::vector<uint8_t>(bytes_, 0)) {
      ++zeroed;
    } else {
      EXPECT_EQ(got[i], BlockContent(keys[i], bytes_)) << "block " << i;
    }
  }
  EXPECT_EQ(zeroed, 1u);
  // The block that failed is now a miss; the rest load exact; the engine keeps serving.
  EXPECT_EQ(CountMissesCheckingTheRest(keys), 1u);
  ASSERT_TRUE(Store(Prompt(4, 3)).ok());
  ExpectExact(KeysOf(*engine_, "default", Prompt(4, 3)));
}

INSTANTIATE_TEST_SUITE_P(Kinds, EngineDiskReadFaultTest,
                         ::testing::Values(FaultSpec::Kind::kEio, FaultSpec::Kind::kShortRead),
                         [](const ::testing::TestParamInfo<FaultSpec::Kind>& info) {
                           return info.param == FaultSpec::Kind::kEio ? std::string("Eio")
                                                                      : std::string("ShortRead");
                         });

// ------------------------------------------------------------------------- disk: slow I/O

TEST_F(EngineFaultTest, SlowDiskMakesADiskLoadLateNotWrongAndStallsNothingElse) {
  Open(Options(6, /*disk=*/true));
  const std::vector<int32_t> cold = Prompt(2, 1), warm = Prompt(4, 2), other = Prompt(2, 3);
  ASSERT_TRUE(Store(cold).ok());
  ASSERT_TRUE(Store(warm).ok());
  ASSERT_TRUE(Store(other, "tenant-b").ok());  // evicts `cold` to disk
  ASSERT_TRUE(engine_->Flush().ok());
  const std::vector<BlockKey> cold_keys = KeysOf(*engine_, "default", cold);
  auto m = engine_->Match("default", cold);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->tiers, (std::vector<TierKind>{TierKind::kDisk, TierKind::kDisk}));

  // Every disk op now takes 800 ms longer.
  constexpr absl::Duration kDelay = absl::Milliseconds(800);
  ASSERT_TRUE(
      InjectDiskFault(*engine_, FaultSpec{FaultSpec::Kind::kDelay, 0, 0, kDelay}).ok());
  const EngineStats before = engine_->Stats();
  Buffers dst(*this, cold_keys.size());
  const absl::Time start = absl::Now();
  Poison(engine_->device(), dst.ptrs(), bytes_);
  LoadRequest r;
  r.ns = "default";
  r.keys = cold_keys;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  auto slow = engine_->Load(r);
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_LT(absl::Now() - start, kDelay) << "Load blocked the host on the disk";

  // While it waits for the disk, the other tenant matches and stores.
  auto other_match = engine_->Match("tenant-b", other);
  ASSERT_TRUE(other_match.ok());
  EXPECT_EQ(other_match->matched_tokens, other.size());
  ASSERT_TRUE(Store(Prompt(1, 4), "tenant-b").ok());
  EXPECT_FALSE((*slow)->IsReady()) << "the disk read was not slowed";
  EXPECT_LT(absl::Now() - start, kDelay) << "a Store or Match waited for the slow disk";
  // Its host-resident blocks load exact.
  ExpectExact(KeysOf(*engine_, "tenant-b", other), "tenant-b");

  // The slow load lands late, byte for byte, and its wait shows as stall time.
  ASSERT_TRUE((*slow)->Wait().ok());
  EXPECT_GE(absl::Now() - start, kDelay);
  for (size_t i = 0; i < cold_keys.size(); ++i) {
    EXPECT_EQ(ReadDevice(engine_->device(), dst[i], bytes_), BlockContent(cold_keys[i], bytes_))
        << "block " << i;
  }
  const EngineStats after = engine_->Stats();
  EXPECT_GT(after.stall_ns - before.stall_ns, 0u);
  EXPECT_GE(after.stalled_waits - before.stalled_waits, 1u);
  ASSERT_TRUE(ClearDiskFaults(*engine_).ok());
  EXPECT_TRUE(engine_->Flush().ok());
}

// A load gated on a disk read waits for it on a stream of its own (a host callback there
// holds that stream until the read is verified), so a later load of host-resident blocks,
// here another tenant's, does not queue behind the slow disk.
TEST_F(EngineFaultTest, SlowDiskDoesNotHoldUpAnotherTenantsHostLoads) {
  Open(Options(6, /*disk=*/true));
  const std::vector<int32_t> cold = Prompt(2, 1), warm = Prompt(4, 2), other = Prompt(2, 3);
  ASSERT_TRUE(Store(cold).ok());
  ASSERT_TRUE(Store(warm).ok());
  ASSERT_TRUE(Store(other, "tenant-b").ok());  // evicts `cold` to disk
  ASSERT_TRUE(engine_->Flush().ok());
  constexpr absl::Duration kDelay = absl::Milliseconds(800);
  ASSERT_TRUE(
      InjectDiskFault(*engine_, FaultSpec{FaultSpec::Kind::kDelay, 0, 0, kDelay}).ok());
  const std::vector<BlockKey> cold_keys = KeysOf(*engine_, "default", cold);
  Buffers dst(*this, cold_keys.size());
  LoadRequest r;
  r.ns = "default";
  r.keys = cold_keys;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  const absl::Time start = absl::Now();
  auto slow = engine_->Load(r);
  ASSERT_TRUE(slow.ok()) << slow.status();
  ExpectExact(KeysOf(*engine_, "tenant-b", other), "tenant-b");
  EXPECT_LT(absl::Now() - start, kDelay) << "the host-resident load waited for the disk";
  EXPECT_FALSE((*slow)->IsReady());
  ASSERT_TRUE((*slow)->Wait().ok());
  ASSERT_TRUE(ClearDiskFaults(*engine_).ok());
}

// ------------------------------------------------------------------- disk: load deadlines

// A Load with a deadline whose disk reads are held (in the I/O layer) far past it returns at
// the deadline: the late blocks are listed (FailedBlocks), their destinations hold zeros —
// never the bytes the host slots held before, here another block's — and the rest are exact.
// When the held reads finally complete, nothing is corrupted or leaked: every block, the late
// ones included (they stay cached on disk), loads exact, and no slot stays pinned.
TEST_F(EngineFaultTest, DeadlineAbandonsHeldDiskReadsAndListsTheLateBlocks) {
  Open(Options(4, /*disk=*/true));
  const std::vector<int32_t> a = Prompt(4, 1);
  std::vector<BlockKey> keys;  // the host slots keep the erased blocks' bytes
  ASSERT_NO_FATAL_FAILURE(OnDiskWithAFreeHostTier(a, Prompt(4, 2), &keys));
  constexpr absl::Duration kHeld = absl::Seconds(2);
  constexpr absl::Duration kDeadline = absl::Milliseconds(150);
  // Reads 2 and 3 (blocks 1 and 2) are held for 2 s before they start.
  ASSERT_TRUE(InjectDiskFault(*engine_, FaultSpec{FaultSpec::Kind::kDelay, 1, 2, kHeld}).ok());

  Buffers dst(*this, keys.size());
  Poison(engine_->device(), dst.ptrs(), bytes_);
  LoadRequest r;
  r.ns = "default";
  r.keys = keys;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  const absl::Time start = absl::Now();
  r.deadline = start + kDeadline;
  auto h = engine_->Load(r);
  ASSERT_TRUE(h.ok()) << h.status();
  const absl::Status s = (*h)->Wait();
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(Contains(s, "deadline")) << s;
  EXPECT_GE(took, kDeadline);
  // The stated slack is milliseconds; the bound leaves room for sanitizer builds, and is far
  // below the 2 s the reads are held.
  EXPECT_LT(took, kDeadline + absl::Milliseconds(700)) << "Wait outlived the deadline";
  auto failed = (*h)->FailedBlocks();
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(*failed, (std::vector<size_t>{1, 2}));
  const std::vector<uint8_t> zeros(bytes_, 0);
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::vector<uint8_t> got = ReadDevice(engine_->device(), dst[i], bytes_);
    if (i == 1 || i == 2) {
      EXPECT_EQ(got, zeros) << "block " << i;
    } else {
      EXPECT_EQ(got, BlockContent(keys[i], bytes_)) << "block " << i;
    }
  }
  EXPECT_EQ(engine_->Stats().blocks_abandoned, 2u);
  // The late blocks keep their disk records (only the host copies they were getting went),
  // even while their reads are still held.
  auto m = engine_->Match("default", a);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tiers, (std::vector<TierKind>{TierKind::kHost, TierKind::kDisk, TierKind::kDisk,
                                             TierKind::kHost}));
  EXPECT_LT(absl::Now() - start, kHeld);

  // The held reads complete (Flush waits for them); they write nothing anywhere.
  ASSERT_TRUE(ClearDiskFaults(*engine_).ok());
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(engine_->Stats().tiers[kHost].pinned_blocks, 0u);
  // Every block loads exact (the late ones read from disk again), and the host slots the
  // abandoned reads held are back in use: four other blocks take the whole host tier.
  EXPECT_EQ(CountMissesCheckingTheRest(keys), 0u);
  ASSERT_TRUE(Store(Prompt(4, 9)).ok());
  ExpectExact(KeysOf(*engine_, "default", Prompt(4, 9)));
  EXPECT_EQ(CountMissesCheckingTheRest(keys), 0u);
}

// A deadline that nothing misses changes nothing, and one already past when the call comes
// abandons every disk read not yet delivered: what is in memory still loads.
TEST_F(EngineFaultTest, DeadlineMetOrPastLoadsWhatHasArrived) {
  Open(Options(4, /*disk=*/true));
  const std::vector<int32_t> a = Prompt(2, 1), b = Prompt(4, 2);
  ASSERT_TRUE(Store(a).ok());
  ASSERT_TRUE(Store(b).ok());  // A goes to disk
  ASSERT_TRUE(engine_->Flush().ok());
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", a);
  const std::vector<BlockKey> host_keys = KeysOf(*engine_, "default", b);
  auto load = [&](const std::vector<BlockKey>& k, absl::Time deadline,
                  std::vector<size_t>* failed) {
    Buffers dst(*this, k.size());
    Poison(engine_->device(), dst.ptrs(), bytes_);
    LoadRequest r;
    r.ns = "default";
    r.keys = k;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    r.deadline = deadline;
    auto h = engine_->Load(r);
    ASSERT_TRUE(h.ok()) << h.status();
    auto f = (*h)->FailedBlocks();
    ASSERT_TRUE(f.ok()) << f.status();
    *failed = *f;
    for (size_t i = 0; i < k.size(); ++i) {
      const std::vector<uint8_t> got = ReadDevice(engine_->device(), dst[i], bytes_);
      if (std::find(f->begin(), f->end(), i) != f->end()) {
        EXPECT_EQ(got, std::vector<uint8_t>(bytes_, 0)) << "block " << i;
      } else {
        EXPECT_EQ(got, BlockContent(k[i], bytes_)) << "block " << i;
      }
    }
  };
  std::vector<size_t> failed;
  // Host-resident blocks have no reads to miss, whatever the deadline.
  load(host_keys, absl::InfinitePast(), &failed);
  EXPECT_TRUE(failed.empty());
  // A generous deadline: the disk reads arrive.
  load(keys, absl::Now() + absl::Seconds(30), &failed);
  EXPECT_TRUE(failed.empty());
  EXPECT_EQ(engine_->Stats().blocks_abandoned, 0u);
  // Push A back to disk, then load it with a deadline already past, the reads held.
  ASSERT_TRUE(Store(Prompt(4, 3)).ok());
  ASSERT_TRUE(engine_->Flush().ok());
  ASSERT_TRUE(
      InjectDiskFault(*engine_, FaultSpec{FaultSpec::Kind::kDelay, 0, 0, absl::Milliseconds(300)})
          .ok());
  load(keys, absl::InfinitePast(), &failed);
  EXPECT_EQ(failed, (std::vector<size_t>{0, 1}));
  ASSERT_TRUE(ClearDiskFaults(*engine_).ok());
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(CountMissesCheckingTheRest(keys), 0u);
}

// Deadlines drawn around the time the reads take: whichever side of the deadline each read
// lands on, a destination FailedBlocks does not list holds its own block; one it lists holds
// zeros, or, where the read was already in the kernel reading in place into the host slot
// (it cannot be called back), zeros and its own bytes mixed: never another block's bytes. The
// engine stays consistent (no pinned slot, every later load exact).
TEST_F(EngineFaultTest, DeadlineRacingTheReadsNeverGivesWrongBytes) {
  Open(Options(4, /*disk=*/true));
  std::mt19937 rng(7);
  size_t abandoned = 0, delivered = 0;
  for (int round = 0; round < 12; ++round) {
    std::vector<BlockKey> keys;
    ASSERT_NO_FATAL_FAILURE(
        OnDiskWithAFreeHostTier(Prompt(4, 100 + round), Prompt(4, 200 + round), &keys));
    ASSERT_TRUE(
        InjectDiskFault(*engine_, FaultSpec{FaultSpec::Kind::kDelay, 0, 0, absl::Milliseconds(10)})
            .ok());
    Buffers dst(*this, keys.size());
    Poison(engine_->device(), dst.ptrs(), bytes_);
    LoadRequest r;
    r.ns = "default";
    r.keys = keys;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    r.deadline =
        absl::Now() + absl::Microseconds(std::uniform_int_distribution<int>(0, 25000)(rng));
    auto h = engine_->Load(r);
    ASSERT_TRUE(h.ok()) << h.status();
    auto failed = (*h)->FailedBlocks();
    ASSERT_TRUE(failed.ok()) << failed.status();
    for (size_t i = 0; i < keys.size(); ++i) {
      const std::vector<uint8_t> got = ReadDevice(engine_->device(), dst[i], bytes_);
      const std::vector<uint8_t> want = BlockContent(keys[i], bytes_);
      if (std::find(failed->begin(), failed->end(), i) == failed->end()) {
        EXPECT_EQ(got, want) << "round " << round << " block " << i;
        continue;
      }
      size_t foreign = 0;
      for (size_t b = 0; b < bytes_; ++b) foreign += got[b] != 0 && got[b] != want[b];
      EXPECT_EQ(foreign, 0u) << "round " << round << " block " << i
                             << ": abandoned, and holds bytes that are neither zeros nor its own";
    }
    abandoned += failed->size();
    delivered += keys.size() - failed->size();
    ASSERT_TRUE(ClearDiskFaults(*engine_).ok());
    ASSERT_TRUE(engine_->Flush().ok());
    EXPECT_EQ(engine_->Stats().tiers[kHost].pinned_blocks, 0u);
    EXPECT_EQ(CountMissesCheckingTheRest(keys), 0u) << "round " << round;
    ASSERT_TRUE(engine_->Erase("default", keys).ok());
  }
  EXPECT_EQ(engine_->Stats().blocks_abandoned, abandoned);
  // Both sides of the race were exercised.
  EXPECT_GT(abandoned, 0u);
  EXPECT_GT(delivered, 0u);
}

// LoadToGpuTier out of GPU slots whose copies have landed but whose completions have not run
// (the completion queue is behind, as when a slow completion holds it): the call lets the
// queue catch up and tries once more instead of failing. A 32K-token demo on an H100 hit
// this; here a blocking completion holds the queue while A's copies land.
TEST(EngineCompletionTest, LoadToGpuTierWaitsForLandedCopiesBeforeGivingUp) {
  EngineOptions o = SmallOptions(/*gpu_blocks=*/4, /*host_blocks=*/12);
  testing::UseEmulatedDevice(o);  // unthrottled: copies land in microseconds
  auto opened = Engine::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Engine& engine = **opened;
  const size_t bytes = o.geometry.block_bytes();
  std::vector<std::vector<BlockKey>> keys;
  {
    DeviceBlocks src(engine.device(), 4, bytes);
    for (int32_t p = 0; p < 2; ++p) {
      const std::vector<int32_t> prompt = Prompt(4, 40 + p);
      keys.push_back(KeysOf(engine, "default", prompt));
      FillBlocks(engine.device(), src.ptrs(), keys.back(), bytes);
      StoreRequest r;
      r.ns = "default";
      r.tokens = prompt;
      r.buffers = KvBuffers::Blocks(src.ptrs());
      auto h = engine.Store(r);
      ASSERT_TRUE(h.ok()) << h.status();
      ASSERT_TRUE((*h)->Wait().ok());
    }
  }
  Notification gate;
  ASSERT_TRUE(PostToCompletionQueue(engine, [&gate] { gate.WaitForNotification(); }).ok());
  const uint64_t posted = *CompletionsPosted(engine);
  // A takes the four GPU slots on a 1 ms lease; its copies land, its completion waits.
  auto a = engine.LoadToGpuTier("default", keys[0], /*layerwise=*/false, absl::Milliseconds(1));
  ASSERT_TRUE(a.ok()) << a.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (*CompletionsPosted(engine) == posted && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_GT(*CompletionsPosted(engine), posted) << "A's copies never finished";
  absl::SleepFor(absl::Milliseconds(5));  // A's lease is over: only "in flight" holds A now
  std::thread opener([&gate] {
    absl::SleepFor(absl::Milliseconds(100));
    gate.Notify();
  });
  // B needs the slots A holds, which look in flight until A's completion runs.
  auto b = engine.LoadToGpuTier("default", keys[1]);
  opener.join();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*b)->Wait().ok());
  for (size_t i = 0; i < keys[1].size(); ++i) {
    EXPECT_EQ(ReadDevice(engine.device(), (*b)->slots()[i], bytes), BlockContent(keys[1][i], bytes))
        << i;
  }
  EXPECT_TRUE((*b)->Release().ok());
  EXPECT_TRUE((*a)->Wait().ok());
}

// The same for a Load of blocks that are only on disk: every host slot but one holds a copy
// that has landed but whose completion has not run, so the Load reads its first block into
// the one free slot and finds none for the second. It lets the queue catch up and tries once
// more, and counts both blocks as the disk hits they are. (Seen as a spurious
// ResourceExhausted in capi.disk_reopen, EngineDiskWriteFaultTest and the Python offloader's
// disk test on a loaded machine.)
TEST_F(EngineFaultTest, ALoadFromDiskWaitsForLandedCopiesBeforeGivingUp) {
  Open(Options(/*host_blocks=*/4, /*disk=*/true));
  const std::vector<int32_t> a = Prompt(4, 50);
  const std::vector<BlockKey> ka = KeysOf(*engine_, "default", a);
  ASSERT_TRUE(Store(a).ok());
  ASSERT_TRUE(Store(Prompt(4, 51)).ok());  // A goes to disk
  ASSERT_TRUE(engine_->Flush().ok());
  ASSERT_EQ(engine_->Match("default", a)->tiers, std::vector<TierKind>(4, TierKind::kDisk));
  Notification gate;
  ASSERT_TRUE(PostToCompletionQueue(*engine_, [&gate] { gate.WaitForNotification(); }).ok());
  // C takes three host slots (three of B's blocks go to disk); its copies land, its
  // completion waits. B's last block holds the fourth slot, evictable.
  const std::vector<int32_t> c = Prompt(3, 52);
  const std::vector<BlockKey> kc = KeysOf(*engine_, "default", c);
  Buffers src(*this, kc.size());
  FillBlocks(engine_->device(), src.ptrs(), kc, bytes_);
  StoreRequest r;
  r.ns = "default";
  r.tokens = c;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto stored = engine_->Store(r);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ((*stored)->blocks_rejected(), 0u);
  ASSERT_TRUE(engine_->device().Synchronize().ok());  // landed; the engine has not heard
  const EngineStats before = engine_->Stats();
  std::thread opener([&gate] {
    absl::SleepFor(absl::Milliseconds(100));
    gate.Notify();
  });
  std::vector<std::vector<uint8_t>> got;
  const absl::Status s = Load({ka[0], ka[1]}, "default", &got);
  opener.join();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got[0], BlockContent(ka[0], bytes_));
  EXPECT_EQ(got[1], BlockContent(ka[1], bytes_));
  const EngineStats after = engine_->Stats();
  EXPECT_EQ(after.tiers[kDisk].hits - before.tiers[kDisk].hits, 2u);
  EXPECT_EQ(after.tiers[kHost].hits - before.tiers[kHost].hits, 0u);
  EXPECT_TRUE((*stored)->Wait().ok());
}

// A saturated disk slows only what waits for the disk. Every write is held for a long time
// and the staging pool is two buffers, so evictions to disk back up; the blocks they evict
// still go down (the eviction reserves a record and hands the slot back at once), and
// the copy of their bytes out of the host tier waits off every engine lock. Match and a
// host-tier Load of other blocks meanwhile complete in a small fraction of the disk's delay.
TEST_F(EngineFaultTest, ASlowDiskDoesNotStallMatchOrHostLoadsOfOtherBlocks) {
  constexpr absl::Duration kDiskDelay = absl::Milliseconds(1000);
  EngineOptions o = Options(/*host_blocks=*/8, /*disk=*/true);
  o.disk.staging_buffers = 2;
  o.namespaces = {"default", "bulk"};
  // "bulk" evicts only its own blocks, so the blocks of "default" stay in the host tier.
  o.namespace_limits["bulk"].host_bytes = 4 * o.geometry.block_bytes();
  Open(o);
  const std::vector<int32_t> hot = Prompt(2, 7);
  ASSERT_TRUE(Store(hot).ok());
  const std::vector<BlockKey> hot_keys = KeysOf(*engine_, "default", hot);
  ASSERT_TRUE(InjectDiskFault(*engine_, FaultSpec{FaultSpec::Kind::kDelay, 0, 0, kDiskDelay}).ok());

  // A producer that keeps storing new "bulk" blocks: every Store evicts two to disk.
  std::atomic<bool> stop{false};
  std::atomic<int> stores{0};
  absl::Duration slowest_store;
  Buffers src(*this, 2);
  std::vector<std::unique_ptr<TransferHandle>> handles;
  std::thread producer([&] {
    for (int i = 0; i < 10 && !stop.load(); ++i) {
      const std::vector<int32_t> tokens = Prompt(2, 100 + i);
      FillBlocks(engine_->device(), src.ptrs(), KeysOf(*engine_, "bulk", tokens), bytes_);
      StoreRequest r;
      r.ns = "bulk";
      r.tokens = tokens;
      r.buffers = KvBuffers::Blocks(src.ptrs());
      const absl::Time start = absl::Now();
      auto h = engine_->Store(r);
      slowest_store = std::max(slowest_store, absl::Now() - start);
      ASSERT_TRUE(h.ok()) << h.status();
      handles.push_back(std::move(*h));
      ++stores;
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  while (stores.load() < 6) absl::SleepFor(absl::Milliseconds(1));  // the disk is backed up now
  absl::Duration slowest_match, slowest_load;
  for (int i = 0; i < 10; ++i) {
    absl::Time start = absl::Now();
    auto m = engine_->Match("default", hot);
    slowest_match = std::max(slowest_match, absl::Now() - start);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->tiers, std::vector<TierKind>(2, TierKind::kHost));
    start = absl::Now();
    std::vector<std::vector<uint8_t>> got;
    const absl::Status s = Load(hot_keys, "default", &got);
    slowest_load = std::max(slowest_load, absl::Now() - start);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(got[0], BlockContent(hot_keys[0], bytes_));
    EXPECT_EQ(got[1], BlockContent(hot_keys[1], bytes_));
    absl::SleepFor(absl::Milliseconds(20));
  }
  stop = true;
  producer.join();
  EXPECT_LT(slowest_match, kDiskDelay / 10);
  EXPECT_LT(slowest_load, kDiskDelay / 10) << "a host-tier Load waited for the disk";
  // Storing itself never waits for the disk either: its copies do (stream waits).
  EXPECT_LT(slowest_store, kDiskDelay / 10);
  ASSERT_TRUE(ClearDiskFaults(*engine_).ok());
  for (auto& h : handles) EXPECT_TRUE(h->Wait().ok());
  EXPECT_TRUE(engine_->Flush().ok());
}

TEST_F(EngineFaultTest, HooksSayWhatIsMissing) {
  Open(Options(4, /*disk=*/false));
  const absl::Status s = InjectDiskFault(*engine_, FaultSpec{});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(Contains(s, "no disk tier")) << s;
  EXPECT_TRUE(InjectDeviceFault(*engine_, {DeviceFault::Kind::kCopy, 0, 1}).ok());
  EXPECT_TRUE(ClearDeviceFaults(*engine_).ok());
  ASSERT_TRUE(Store(Prompt(2, 1)).ok());  // the cleared fault hits nothing
}

}  // namespace
}  // namespace kvtier
