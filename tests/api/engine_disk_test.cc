// The engine with a disk tier: host victims go to disk and come back byte for byte, a reopened
// directory serves what it held, corruption is a miss (zeros + DataLoss, never another
// block's bytes), admission keeps one-off blocks off the disk, erase reaches the disk, and a
// process killed mid-store leaves a directory whose every indexed block is exact.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine_impl.h"
#include "engine_test_util.h"
#include "gtest/gtest.h"
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

class EngineDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-engine-disk-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  EngineOptions Options(size_t gpu_blocks = 0, size_t host_blocks = 4) {
    EngineOptions o = SmallOptions(gpu_blocks, host_blocks);  // 8 KiB blocks
    o.disk.directory = dir_ + "/cache";
    o.disk.region_bytes = 64 * 1024;
    o.disk.capacity_bytes = 16 * o.disk.region_bytes;  // 3 records per region: 48 blocks
    o.disk.staging_buffers = 32;
    o.disk.admit_min_seen = 1;  // every eviction reaches the disk (the default is 2)
    return o;
  }
  void Open(const EngineOptions& o) {
    engine_.reset();
    auto e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    bytes_ = o.geometry.block_bytes();
  }
  std::vector<BlockKey> StoreAll(const std::vector<int32_t>& tokens,
                                 absl::string_view ns = "default") {
    return testing::StoreBlocks(*engine_, ns, tokens);
  }
  // Loads keys; returns the status and checks bytes of every block when it succeeded.
  absl::Status LoadAndCheck(const std::vector<BlockKey>& keys, absl::string_view ns = "default",
                            std::vector<std::vector<uint8_t>>* got = nullptr) {
    DeviceBlocks dst(engine_->device(), keys.size(), bytes_);
    Poison(engine_->device(), dst.ptrs(), bytes_);
    LoadRequest r;
    r.ns = ns;
    r.keys = keys;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    auto h = engine_->Load(r);
    if (!h.ok()) return h.status();
    absl::Status s = (*h)->Wait();
    for (size_t i = 0; i < keys.size(); ++i) {
      std::vector<uint8_t> bytes = ReadDevice(engine_->device(), dst[i], bytes_);
      if (s.ok()) {
        EXPECT_EQ(bytes, BlockContent(keys[i], bytes_)) << "block " << i;
      }
      if (got != nullptr) got->push_back(std::move(bytes));
    }
    return s;
  }
  // Stores `prompt`'s first `blocks` blocks two at a time (one Store cannot evict its own
  // blocks: they are in flight until it completes); each Store must move both.
  void StoreInPairs(const std::vector<int32_t>& prompt, size_t blocks) {
    for (size_t first = 0; first < blocks; first += 2) {
      ASSERT_NO_FATAL_FAILURE(testing::StoreBlockRange(*engine_, "default", prompt, first, 2));
    }
  }
  void FlushHostToDisk(int seed) {
    // Four fresh blocks push every older host copy down to disk.
    StoreAll(Prompt(4, seed));
    ASSERT_TRUE(engine_->Flush().ok());
  }

  std::string dir_;
  std::unique_ptr<Engine> engine_;
  size_t bytes_ = 0;
};

TEST_F(EngineDiskTest, HostVictimsGoToDiskAndComeBackByteExact) {
  Open(Options());
  const std::vector<int32_t> prompt = Prompt(10, 1);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  // 10 blocks through a 4-block host tier, two at a time (one Store cannot evict its own
  // blocks: they are in flight until it completes).
  ASSERT_NO_FATAL_FAILURE(StoreInPairs(prompt, 10));
  auto m = engine_->Match("default", prompt);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->matched_tokens, prompt.size());
  size_t on_disk = 0;
  for (TierKind t : m->tiers) on_disk += t == TierKind::kDisk;
  EXPECT_EQ(on_disk, 6u);
  // A load needs a host slot for each block it reads from disk: with 4 host slots, load 2
  // at a time.
  for (size_t first = 0; first < 10; first += 2) {
    ASSERT_TRUE(LoadAndCheck({keys[first], keys[first + 1]}).ok()) << first;
  }
  // More than the host tier can stage at once is refused with a clear error, not half done.
  absl::Status too_many = LoadAndCheck(keys);
  EXPECT_EQ(too_many.code(), absl::StatusCode::kResourceExhausted) << too_many;
  EXPECT_NE(too_many.message().find("no host slot is free"), absl::string_view::npos);
  ASSERT_TRUE(engine_->Flush().ok());
  EngineStats st = engine_->Stats();
  EXPECT_GE(st.tiers[1].demotions, 6u);  // 6 at store, more as loading them back evicts
  EXPECT_GE(st.tiers[2].hits, 6u);
  EXPECT_EQ(st.tiers[2].checksum_failures, 0u);
  EXPECT_GT(st.tiers[2].bytes_in, 0u);
}

TEST_F(EngineDiskTest, ReopenedDirectoryServesWhatItHeld) {
  Open(Options());
  const std::vector<int32_t> a = Prompt(3, 2);
  const std::vector<BlockKey> ka = StoreAll(a, "tenant-b");
  FlushHostToDisk(3);
  engine_.reset();  // close
  EngineOptions o = Options();
  o.namespaces = {"default"};  // tenant-b is recovered from the directory itself
  Open(o);
  auto m = engine_->Match("tenant-b", a);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->matched_tokens, a.size());
  for (TierKind t : m->tiers) EXPECT_EQ(t, TierKind::kDisk);
  ASSERT_TRUE(LoadAndCheck(ka, "tenant-b").ok());
  EXPECT_EQ(engine_->Match("default", a)->matched_tokens, 0u);  // still isolated
  StoreAll(Prompt(2, 4));  // accepts new writes
}

TEST_F(EngineDiskTest, CorruptRecordIsAMissWithZerosNeverWrongBytes) {
  Open(Options());
  const std::vector<int32_t> prompt = Prompt(2, 5);
  const std::vector<BlockKey> keys = StoreAll(prompt);
  FlushHostToDisk(6);  // both blocks now only on disk, first records of region 0
  ASSERT_EQ(engine_->Match("default", prompt)->tiers[0], TierKind::kDisk);
  engine_.reset();
  {
    const int fd = ::open((dir_ + "/cache/data.kvt").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "XXXX", 4, 4096 + 64), 4);  // payload of the first record
    ::close(fd);
  }
  Open(Options());
  std::vector<std::vector<uint8_t>> got;
  absl::Status s = LoadAndCheck(keys, "default", &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  ASSERT_EQ(got.size(), 2u);
  // One of the two records was hit: its destination holds zeros, the other its own bytes.
  int zero = 0, exact = 0;
  for (size_t i = 0; i < 2; ++i) {
    zero += got[i] == std::vector<uint8_t>(bytes_, 0);
    exact += got[i] == BlockContent(keys[i], bytes_);
  }
  EXPECT_EQ(zero, 1);
  EXPECT_EQ(exact, 1);
  EXPECT_EQ(engine_->Stats().tiers[2].checksum_failures, 1u);
  // Afterwards the bad block is a miss, and storing it again works.
  EXPECT_LT(engine_->Match("default", prompt)->matched_tokens, prompt.size());
  StoreAll(prompt);
  ASSERT_TRUE(LoadAndCheck(keys).ok());
}

TEST_F(EngineDiskTest, AdmissionKeepsOneOffBlocksOffTheDisk) {
  EngineOptions o = Options();
  o.disk.admit_min_seen = 2;
  Open(o);
  const std::vector<int32_t> hot = Prompt(2, 7);
  const std::vector<BlockKey> khot = StoreAll(hot);
  ASSERT_TRUE(LoadAndCheck(khot).ok());  // a hit: seen twice now
  StoreAll(Prompt(4, 8));                 // seen once each; pushes hot to disk
  StoreAll(Prompt(4, 9));                 // pushes Prompt(8) out: rejected, dropped
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(engine_->Match("default", hot)->matched_tokens, hot.size());
  EXPECT_EQ(engine_->Match("default", Prompt(4, 8))->matched_tokens, 0u);
  EngineStats st = engine_->Stats();
  EXPECT_EQ(st.tiers[2].used_blocks, 2u);
  EXPECT_GE(st.tiers[2].admissions_rejected, 4u);
}

TEST_F(EngineDiskTest, EraseAndEraseNamespaceReachTheDisk) {
  Open(Options());
  const std::vector<int32_t> a = Prompt(3, 10);
  const std::vector<BlockKey> ka = StoreAll(a);
  const std::vector<BlockKey> kb = StoreAll(Prompt(3, 11), "tenant-b");
  FlushHostToDisk(12);
  EXPECT_EQ(*engine_->Erase("default", {ka[1]}), 1u);
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(*engine_->EraseNamespace("tenant-b"), 3u);
  engine_.reset();
  Open(Options());
  EXPECT_EQ(engine_->Match("default", a)->matched_tokens, 16u);  // block 1 is gone
  EXPECT_EQ(engine_->Match("tenant-b", Prompt(3, 11))->matched_tokens, 0u);
  EngineStats st = engine_->Stats();
  ASSERT_EQ(st.namespaces.size(), 2u);
  EXPECT_EQ(st.namespaces[1].blocks, 0u);
}

TEST_F(EngineDiskTest, DirectoryOfAnotherGeometryIsRefused) {
  Open(Options());
  StoreAll(Prompt(6, 13));
  engine_.reset();
  EngineOptions o = Options();
  o.geometry.num_layers = 8;  // same block size in bytes would be wrong too; this differs
  o.host_tier_bytes = 4 * o.geometry.block_bytes();
  absl::Status s = Engine::Open(o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("geometry"), absl::string_view::npos) << s;
}

TEST_F(EngineDiskTest, LeaseAndPrefetchBringDiskBlocksUp) {
  Open(Options(/*gpu_blocks=*/2, /*host_blocks=*/4));
  const std::vector<int32_t> prompt = Prompt(2, 14);
  const std::vector<BlockKey> keys = StoreAll(prompt);
  FlushHostToDisk(15);
  ASSERT_EQ(engine_->Match("default", prompt)->tiers[0], TierKind::kDisk);
  auto lease = engine_->LoadToGpuTier("default", keys);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE((*lease)->Wait().ok());
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(ReadDevice(engine_->device(), (*lease)->slots()[i], bytes_),
              BlockContent(keys[i], bytes_));
  }
  ASSERT_TRUE((*lease)->Release().ok());
  FlushHostToDisk(16);
  FlushHostToDisk(17);
  const std::vector<int32_t> p2 = Prompt(1, 15);
  auto pf = engine_->Prefetch("default", KeysOf(*engine_, "default", p2));
  ASSERT_TRUE(pf.ok()) << pf.status();
  ASSERT_TRUE((*pf)->Wait().ok());
  EXPECT_EQ(engine_->Match("default", p2)->tiers[0], TierKind::kGpu);
}

// The prefetch budget accounts for the host tier's room: hinted blocks read from disk take
// host slots (held while in flight with a GPU tier; the hinted copies themselves without
// one), so a look-ahead window larger than the host tier used to fill it with reads and skip
// (drop) the hints past its size. The budget in effect is at most half the host tier, and
// the prefetcher waits for room instead: every hinted block arrives and is used, none is
// skipped or evicted unused.
TEST_F(EngineDiskTest, HintsBeyondTheHostTierWaitForRoomInsteadOfBeingSkipped) {
  for (size_t gpu_blocks : {size_t{0}, size_t{16}}) {
    SCOPED_TRACE(absl::StrCat("gpu_blocks = ", gpu_blocks));
    EngineOptions o = Options(gpu_blocks, /*host_blocks=*/4);
    // Without a GPU tier, a budget set far above the host tier; with one, the default (half
    // the GPU tier: 8 blocks, twice the host tier).
    o.prefetch_budget_bytes = gpu_blocks == 0 ? 16 * o.geometry.block_bytes() : 0;
    Open(o);
    EXPECT_EQ(engine_->Stats().prefetch.budget_bytes, 2 * bytes_);
    const std::vector<int32_t> prompt = Prompt(12, 30 + static_cast<int>(gpu_blocks));
    const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
    ASSERT_NO_FATAL_FAILURE(StoreInPairs(prompt, keys.size()));
    FlushHostToDisk(31 + static_cast<int>(gpu_blocks));
    absl::StatusOr<MatchResult> m = engine_->Match("default", prompt);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->tiers.size(), keys.size());
    for (TierKind t : m->tiers) ASSERT_EQ(t, TierKind::kDisk);

    ASSERT_TRUE(engine_->Hint("default", keys).ok());
    for (size_t first = 0; first < keys.size(); first += 2) {
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      auto served = [&] {
        const PrefetchStats p = engine_->Stats().prefetch;
        return p.issued + p.skipped >= first + 2;
      };
      while (!served() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
      ASSERT_TRUE(served()) << "block " << first;
      ASSERT_TRUE(engine_->Flush().ok());
      EXPECT_LE(engine_->Stats().prefetch.outstanding_bytes, 2 * bytes_);
      ASSERT_TRUE(LoadAndCheck({keys[first], keys[first + 1]}).ok()) << first;
    }
    const PrefetchStats p = engine_->Stats().prefetch;
    EXPECT_EQ(p.skipped, 0u);
    EXPECT_EQ(p.issued, keys.size());
    EXPECT_EQ(p.in_time + p.late, keys.size());
    EXPECT_EQ(p.unused, 0u);
    EXPECT_EQ(p.outstanding_bytes, 0u);
  }
}

// Secure erase: blocks whose bytes carry a marker are stored, pushed to disk, then erased;
// afterwards no file of the cache directory holds the marker. Without secure_erase the same
// scan finds it (the scan can see what it looks for).
std::string SecretMarker(int i) { return absl::StrCat("kvtier-secret-", i, "-end"); }

std::vector<int32_t> StoreSecrets(Engine& engine, absl::string_view ns, int seed, size_t n) {
  const size_t bytes = engine.options().geometry.block_bytes();
  const std::vector<int32_t> tokens = Prompt(n, seed);
  DeviceBlocks src(engine.device(), n, bytes);
  for (size_t b = 0; b < n; ++b) {
    std::vector<uint8_t> content(bytes);
    const std::string marker = SecretMarker(seed);
    for (size_t i = 0; i < bytes; ++i) content[i] = static_cast<uint8_t>(marker[i % marker.size()]);
    testing::WriteDevice(engine.device(), src[b], content);
  }
  StoreRequest r;
  r.ns = ns;
  r.tokens = tokens;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto h = engine.Store(r);
  EXPECT_TRUE(h.ok()) << h.status();
  if (h.ok()) {
    EXPECT_TRUE((*h)->Wait().ok());
  }
  return tokens;
}

// Whether any file under `dir` contains `needle`.
bool AnyFileContains(const std::string& dir, const std::string& needle) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    FILE* f = std::fopen(entry.path().c_str(), "rb");
    if (f == nullptr) continue;
    std::string data;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
    std::fclose(f);
    if (data.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST_F(EngineDiskTest, SecureEraseLeavesNoErasedBytesInTheCacheFiles) {
  for (bool secure : {false, true}) {
    SCOPED_TRACE(secure ? "secure_erase" : "plain erase");
    EngineOptions o = Options();
    o.secure_erase = secure;
    std::filesystem::remove_all(dir_ + "/cache");
    Open(o);
    StoreSecrets(*engine_, "tenant-b", 41, 3);
    FlushHostToDisk(42);  // the secrets' only copies are now disk records
    ASSERT_EQ(engine_->Stats().namespaces[1].blocks_per_tier[2], 3u);
    EXPECT_TRUE(AnyFileContains(dir_, SecretMarker(41)));
    ASSERT_EQ(*engine_->EraseNamespace("tenant-b"), 3u);
    ASSERT_TRUE(engine_->Flush().ok());  // the zero writes land
    EXPECT_EQ(AnyFileContains(dir_, SecretMarker(41)), !secure);
    // The engine still serves the other namespace's blocks, byte for byte.
    const std::vector<int32_t> kept = Prompt(4, 42);
    EXPECT_TRUE(LoadAndCheck(KeysOf(*engine_, "default", kept)).ok());
    // Evicted, not erased: a region reclaimed to make room is zeroed before reuse.
    StoreSecrets(*engine_, "tenant-b", 43, 3);
    FlushHostToDisk(44);
    EXPECT_TRUE(AnyFileContains(dir_, SecretMarker(43)));
    for (int round = 0; round < 20; ++round) FlushHostToDisk(100 + round);  // 80 blocks > 48
    ASSERT_EQ(engine_->Match("tenant-b", Prompt(3, 43))->matched_tokens, 0u);
    if (secure) {
      EXPECT_FALSE(AnyFileContains(dir_, SecretMarker(43)));
    }
    engine_.reset();
  }
}

TEST_F(EngineDiskTest, SecureEraseZeroesFreedHostAndGpuSlots) {
  EngineOptions o = Options(/*gpu_blocks=*/2, /*host_blocks=*/4);
  o.secure_erase = true;
  Open(o);
  const std::vector<int32_t> secret = StoreSecrets(*engine_, "tenant-b", 51, 2);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "tenant-b", secret);
  auto lease = engine_->LoadToGpuTier("tenant-b", keys, true, absl::ZeroDuration());
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE((*lease)->Wait().ok());
  ASSERT_TRUE((*lease)->Release().ok());
  auto* impl = dynamic_cast<EngineImpl*>(engine_.get());
  ASSERT_NE(impl, nullptr);
  // Every byte of a tier's memory, as the host sees it.
  auto tier_bytes = [&](TierKind t) {
    Tier* tier = impl->tier_for_testing(t);
    std::string all;
    for (SlotId s = 0; s < tier->num_slots(); ++s) {
      const SlotAddress at = tier->Address(s);
      if (t == TierKind::kHost) {
        all.append(static_cast<const char*>(at.host), bytes_);
      } else {
        std::vector<uint8_t> b = ReadDevice(engine_->device(), at.device, bytes_);
        all.append(b.begin(), b.end());
      }
    }
    return all;
  };
  const std::string marker = SecretMarker(51);
  ASSERT_NE(tier_bytes(TierKind::kHost).find(marker), std::string::npos);
  ASSERT_NE(tier_bytes(TierKind::kGpu).find(marker), std::string::npos);
  ASSERT_EQ(*engine_->EraseNamespace("tenant-b"), 2u);
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(tier_bytes(TierKind::kHost).find(marker), std::string::npos);
  EXPECT_EQ(tier_bytes(TierKind::kGpu).find(marker), std::string::npos);
  // Slots zeroed on eviction too, and reused slots hold exactly their new blocks.
  StoreSecrets(*engine_, "tenant-b", 52, 2);
  const std::vector<BlockKey> others = StoreAll(Prompt(4, 53));  // evicts the secrets to disk
  ASSERT_TRUE(engine_->Flush().ok());
  EXPECT_EQ(tier_bytes(TierKind::kHost).find(SecretMarker(52)), std::string::npos);
  EXPECT_TRUE(LoadAndCheck(others).ok());
}

TEST_F(EngineDiskTest, BadDiskOptionsNameTheField) {
  EngineOptions o = Options();
  o.disk.codec = "lz5";
  EXPECT_NE(o.Validate().message().find("disk.codec"), absl::string_view::npos);
  o = Options();
  o.disk.sync = "sometimes";
  EXPECT_NE(o.Validate().message().find("disk.sync"), absl::string_view::npos);
  o = Options();
  o.disk.capacity_bytes = 0;
  EXPECT_NE(o.Validate().message().find("capacity_bytes"), absl::string_view::npos);
  o = Options();
  o.disk.admit_min_seen = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
}

// The child side of the crash test: runs only when the parent re-executes this binary with
// KVTIER_CRASH_CHILD=<dir>:<first seed> (a fresh process: no inherited threads or locks).
TEST(EngineDiskCrashChild, StoreUntilKilled) {
  const char* spec = std::getenv("KVTIER_CRASH_CHILD");
  if (spec == nullptr) GTEST_SKIP() << "only runs as the child of KilledMidStoreLeavesOnlyExactBlocks";
  const std::string s(spec);
  const std::string dir = s.substr(0, s.find(':'));
  const int first_seed = std::atoi(s.substr(s.find(':') + 1).c_str());
  EngineOptions o = SmallOptions(0, 4);
  o.disk.directory = dir;
  o.disk.region_bytes = 64 * 1024;
  o.disk.capacity_bytes = 16 * o.disk.region_bytes;
  o.disk.staging_buffers = 8;
  o.disk.admit_min_seen = 1;
  auto e = Engine::Open(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const size_t bytes = o.geometry.block_bytes();
  DeviceBlocks src((*e)->device(), 2, bytes);
  for (int seed = first_seed; seed < first_seed + 40; ++seed) {
    const std::vector<int32_t> p = Prompt(2, seed);
    const std::vector<BlockKey> keys = KeysOf(**e, "default", p);
    FillBlocks((*e)->device(), src.ptrs(), keys, bytes);
    StoreRequest r;
    r.ns = "default";
    r.tokens = p;
    r.buffers = KvBuffers::Blocks(src.ptrs());
    auto h = (*e)->Store(r);
    if (h.ok()) (void)(*h)->Wait();
  }
  std::fprintf(stderr, "crash child: all stores issued\n");
  for (;;) pause();  // wait to be killed
}

// A child stores blocks as fast as it can (evicting to disk) and is SIGKILLed at a random
// moment; the parent reopens the directory and every block the index returns must be exact,
// and the engine must accept new writes. (bench/run crash does hundreds of rounds.)
TEST_F(EngineDiskTest, KilledMidStoreLeavesOnlyExactBlocks) {
  std::mt19937 rng(42);
  constexpr int kRounds = 3;
  int seed = 100;
  for (int round = 0; round < kRounds; ++round) {
    const std::string spec = absl::StrCat(dir_, "/cache:", seed);
    seed += 40;
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      setenv("KVTIER_CRASH_CHILD", spec.c_str(), 1);
      execl("/proc/self/exe", "crash-child", "--gtest_filter=EngineDiskCrashChild.*",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 150));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);

    Open(Options());
    size_t verified = 0;
    for (int s = 100; s < seed; ++s) {
      const std::vector<int32_t> p = Prompt(2, s);
      auto m = engine_->Match("default", p);
      ASSERT_TRUE(m.ok());
      if (m->keys.empty()) continue;
      ASSERT_TRUE(LoadAndCheck(m->keys).ok()) << "round " << round << " seed " << s;
      verified += m->keys.size();
    }
    StoreAll(Prompt(1, 10000 + round));  // and it accepts new writes
    engine_.reset();
    RecordProperty("verified_round_" + std::to_string(round), static_cast<int>(verified));
  }
}

}  // namespace
}  // namespace kvtier
