// The `kvtier` CLI, run as a real process against cache directories an Engine filled:
// inspect's numbers, verify finding a corrupted payload byte, --repair dropping it so a
// reopened engine recovers the rest, erase removing one namespace, the lock of a live engine
// respected, and the documented exit codes for bad paths and usage.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "tests/api/engine_test_util.h"
#include "tests/tools/cli_run.h"
#include "tools/cli/cache_dir.h"

namespace kvtier {
namespace {

using ::kvtier::testing::KeysOf;
using ::kvtier::testing::Prompt;
using nlohmann::ordered_json;
using ::kvtier::testing::ParseJson;
using ::kvtier::testing::Quote;
using ::kvtier::testing::RunCli;
using ::kvtier::testing::RunResult;

// Values by their '/'-separated path ("namespaces/0/name").
double Num(const ordered_json& j, const std::string& path) {
  const ordered_json* v = json::Find(j, "/" + path);
  EXPECT_TRUE(v != nullptr && v->is_number()) << path << " in " << json::Dump(j, 2);
  return v != nullptr && v->is_number() ? v->get<double>() : -1;
}
std::string Str(const ordered_json& j, const std::string& path) {
  const ordered_json* v = json::Find(j, "/" + path);
  EXPECT_TRUE(v != nullptr && v->is_string()) << path << " in " << json::Dump(j, 2);
  return v != nullptr && v->is_string() ? v->get<std::string>() : "";
}
size_t Size(const ordered_json& j, const std::string& path) {
  const ordered_json* v = json::Find(j, "/" + path);
  EXPECT_TRUE(v != nullptr && v->is_array()) << path << " in " << json::Dump(j, 2);
  return v != nullptr && v->is_array() ? v->size() : 0;
}

class KvtierCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/kvtier-cli-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-",
                        getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    cache_ = dir_ + "/cache";
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  EngineOptions Options() const {
    EngineOptions o = testing::SmallOptions(0, 2);  // 8 KiB blocks, host tier of 2
    o.disk.directory = cache_;
    o.disk.region_bytes = 64 * 1024;
    o.disk.capacity_bytes = 16 * o.disk.region_bytes;
    o.disk.admit_min_seen = 1;  // every eviction reaches the disk
    return o;
  }
  void Open() {
    engine_.reset();
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(Options());
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }
  // Stores the prompt's blocks one Store at a time, so each evicts the oldest host copy.
  std::vector<BlockKey> StoreOneByOne(absl::string_view ns, const std::vector<int32_t>& tokens) {
    const size_t bytes = engine_->options().geometry.block_bytes();
    const std::vector<BlockKey> keys = KeysOf(*engine_, ns, tokens);
    for (size_t i = 0; i < keys.size(); ++i) {
      testing::DeviceBlocks src(engine_->device(), 1, bytes);
      testing::FillBlocks(engine_->device(), src.ptrs(), {keys[i]}, bytes);
      StoreRequest r;
      r.ns = ns;
      r.tokens = tokens;
      r.first_block = i;
      r.buffers = KvBuffers::Blocks(src.ptrs());
      auto h = engine_->Store(r);
      EXPECT_TRUE(h.ok()) << h.status();
      if (h.ok()) {
        EXPECT_TRUE((*h)->Wait().ok());
      }
    }
    return keys;
  }
  // 4 blocks in "default" and 3 in "tenant-b" on disk; 2 filler blocks stay in the host tier
  // (and are gone once the engine closes).
  void Fill() {
    Open();
    default_prompt_ = Prompt(4, 1);
    tenant_prompt_ = Prompt(3, 2);
    default_keys_ = StoreOneByOne("default", default_prompt_);
    tenant_keys_ = StoreOneByOne("tenant-b", tenant_prompt_);
    StoreOneByOne("default", Prompt(2, 3));
    ASSERT_TRUE(engine_->Flush().ok());
    for (auto [ns, prompt] :
         {std::pair{"default", &default_prompt_}, std::pair{"tenant-b", &tenant_prompt_}}) {
      auto m = engine_->Match(ns, *prompt);
      ASSERT_TRUE(m.ok());
      ASSERT_EQ(m->matched_tokens, prompt->size()) << ns;
      for (TierKind t : m->tiers) ASSERT_EQ(t, TierKind::kDisk) << ns;
    }
    engine_.reset();
  }
  size_t Matched(absl::string_view ns, const std::vector<int32_t>& prompt) {
    auto m = engine_->Match(ns, prompt);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? m->matched_tokens / 16 : 0;
  }

  std::string dir_, cache_;
  std::unique_ptr<Engine> engine_;
  std::vector<int32_t> default_prompt_, tenant_prompt_;
  std::vector<BlockKey> default_keys_, tenant_keys_;
};

TEST_F(KvtierCliTest, InspectReportsBlocksBytesAndSpace) {
  Fill();
  RunResult r = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const ordered_json j = ParseJson(r.out);
  constexpr double kBlock = 8192, kRecord = 4096 + 8192;
  EXPECT_EQ(Str(j, "format_version"), "1");
  EXPECT_EQ(Num(j, "geometry/block_bytes"), kBlock);
  EXPECT_EQ(Num(j, "layout/regions"), 16);
  EXPECT_EQ(Num(j, "layout/region_bytes"), 64 * 1024);
  EXPECT_EQ(Num(j, "blocks"), 7);
  EXPECT_EQ(Num(j, "raw_bytes"), 7 * kBlock);
  EXPECT_EQ(Num(j, "stored_bytes"), 7 * kBlock);  // codec none
  EXPECT_EQ(Num(j, "compression_ratio"), 1.0);
  EXPECT_EQ(Num(j, "codecs/none"), 7);
  ASSERT_EQ(Size(j, "namespaces"), 2u);
  EXPECT_EQ(Str(j, "namespaces/0/name"), "default");
  EXPECT_EQ(Num(j, "namespaces/0/blocks"), 4);
  EXPECT_EQ(Num(j, "namespaces/0/raw_bytes"), 4 * kBlock);
  EXPECT_EQ(Str(j, "namespaces/1/name"), "tenant-b");
  EXPECT_EQ(Num(j, "namespaces/1/blocks"), 3);
  EXPECT_EQ(Num(j, "space/live_bytes"), 7 * kRecord);
  EXPECT_EQ(Num(j, "space/capacity_bytes"), 16 * 64 * 1024);
  const double in_use = Num(j, "space/regions_in_use");
  EXPECT_GE(in_use, 2);  // at most 5 records of 12 KiB per 64 KiB region
  EXPECT_EQ(Num(j, "space/free_regions"), 16 - in_use);
  EXPECT_EQ(Num(j, "space/reclaimable_bytes"), in_use * 64 * 1024 - 7 * kRecord);
  const ordered_json* available = json::Find(j, "/age/available");
  ASSERT_NE(available, nullptr);
  EXPECT_EQ(*available, true);
  EXPECT_EQ(Num(j, "age/buckets/0/blocks"), 7);  // all written under a minute ago
  EXPECT_EQ(Num(j, "invalid_entries"), 0);

  RunResult human = RunCli(absl::StrCat("inspect ", Quote(cache_)));
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("tenant-b"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("compression"), std::string::npos) << human.out;
}

TEST_F(KvtierCliTest, VerifyFindsCorruptionRepairDropsItEngineRecoversTheRest) {
  Fill();
  RunResult clean = RunCli(absl::StrCat("verify ", Quote(cache_)));
  ASSERT_EQ(clean.exit_code, 0) << clean.out << clean.err;

  // Flip one payload byte of default's third block, found through the index.
  const BlockKey victim = default_keys_[2];
  uint64_t offset = 0;
  {
    auto c = cli::CacheDir::Open(cache_, cli::CacheDir::Mode::kReadOnly);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->ForEachBlock([&](const cli::BlockEntry& b) {
                      if (b.key.ok() && *b.key == victim) offset = b.entry->offset;
                    })
                    .ok());
  }
  ASSERT_NE(offset, 0u);
  {
    const int fd = ::open((cache_ + "/data.kvt").c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    const off_t at = static_cast<off_t>(offset + 4096 + 100);
    unsigned char byte = 0;
    ASSERT_EQ(::pread(fd, &byte, 1, at), 1);
    byte ^= 0x40;
    ASSERT_EQ(::pwrite(fd, &byte, 1, at), 1);
    ::close(fd);
  }

  RunResult found = RunCli(absl::StrCat("verify --json ", Quote(cache_)));
  EXPECT_EQ(found.exit_code, 1) << found.out << found.err;
  const ordered_json j = ParseJson(found.out);
  EXPECT_EQ(Num(j, "checked"), 7);
  EXPECT_EQ(Num(j, "ok"), 6);
  ASSERT_EQ(Size(j, "problems"), 1u);
  EXPECT_EQ(Str(j, "problems/0/block"), victim.ToHex());
  EXPECT_EQ(Str(j, "problems/0/problem"), "corrupt");
  RunResult human = RunCli(absl::StrCat("verify ", Quote(cache_)));
  EXPECT_EQ(human.exit_code, 1);
  EXPECT_NE(human.out.find(victim.ToHex()), std::string::npos) << human.out;

  RunResult repaired = RunCli(absl::StrCat("verify --repair ", Quote(cache_)));
  EXPECT_EQ(repaired.exit_code, 1) << repaired.out << repaired.err;
  EXPECT_NE(repaired.out.find("dropped 1 index entries"), std::string::npos) << repaired.out;
  RunResult again = RunCli(absl::StrCat("verify ", Quote(cache_)));
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;

  // The engine recovers the other six; the corrupted block is a miss, so default's prefix
  // stops before it, and nothing needed a checksum failure at read time to find out.
  Open();
  EXPECT_EQ(Matched("default", default_prompt_), 2u);
  EXPECT_EQ(Matched("tenant-b", tenant_prompt_), 3u);
  EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(TierKind::kDisk)].used_blocks, 6u);
  const size_t bytes = engine_->options().geometry.block_bytes();
  testing::DeviceBlocks dst(engine_->device(), 2, bytes);
  LoadRequest load;
  load.ns = "default";
  load.keys = {default_keys_[0], default_keys_[1]};
  load.buffers = KvBuffers::Blocks(dst.ptrs());
  auto h = engine_->Load(load);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(testing::ReadDevice(engine_->device(), dst[i], bytes),
              testing::BlockContent(default_keys_[i], bytes));
  }
  EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(TierKind::kDisk)].checksum_failures, 0u);
}

TEST_F(KvtierCliTest, QuantizedRecordsAreCountedAndVerified) {
  // 32 KiB fp16 blocks under int8: 16,448 stored bytes each, records of 24 KiB.
  EngineOptions o = Options();
  o.geometry = Geometry{4, 2, 64, DType::kFloat16, 16};
  o.host_tier_bytes = 2 * o.geometry.block_bytes();
  o.disk.region_bytes = 256 * 1024;
  o.disk.capacity_bytes = 4 * o.disk.region_bytes;
  o.disk.codec = "int8";
  {
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }
  StoreOneByOne("default", Prompt(5, 4));  // 3 to disk, 2 left in the host tier
  ASSERT_TRUE(engine_->Flush().ok());
  engine_.reset();
  RunResult r = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const ordered_json j = ParseJson(r.out);
  EXPECT_EQ(Num(j, "blocks"), 3);
  EXPECT_EQ(Num(j, "codecs/int8"), 3);
  EXPECT_EQ(Num(j, "codecs/none"), 0);
  EXPECT_EQ(Num(j, "codecs/fp8"), 0);
  EXPECT_EQ(Num(j, "stored_bytes"), 3 * 16448);
  EXPECT_EQ(Num(j, "space/live_bytes"), 3 * 24 * 1024);
  EXPECT_NEAR(Num(j, "compression_ratio"), 32768.0 / 16448, 1e-6);
  RunResult human = RunCli(absl::StrCat("inspect ", Quote(cache_)));
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("int8 3"), std::string::npos) << human.out;
  // verify decodes every record with the engine's own code: the quantized ones pass.
  RunResult verified = RunCli(absl::StrCat("verify --json ", Quote(cache_)));
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_EQ(Num(ParseJson(verified.out), "ok"), 3);
}

// A directory of MLA latents (format version 2): inspect names its kind and rope part, and
// verify decodes every record with its carried geometry; a tensor-parallel rank's directory
// names its shard.
TEST_F(KvtierCliTest, MlaAndShardDirectoriesSayWhatTheyHold) {
  EngineOptions o = Options();
  o.geometry = Geometry{4, 1, 96, DType::kBFloat16, 16};  // 12 KiB: 64 + 32 rope
  o.geometry.kind = KvKind::kLatent;
  o.geometry.rope_dim = 32;
  o.host_tier_bytes = 2 * o.geometry.block_bytes();
  {
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }
  StoreOneByOne("default", Prompt(5, 5));  // 3 to disk
  ASSERT_TRUE(engine_->Flush().ok());
  engine_.reset();
  RunResult r = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ordered_json j = ParseJson(r.out);
  EXPECT_EQ(Str(j, "format_version"), "2");
  EXPECT_EQ(Str(j, "geometry/kind"), "mla");
  EXPECT_EQ(Num(j, "geometry/rope_dim"), 32);
  EXPECT_EQ(Num(j, "geometry/block_bytes"), 4 * 16 * 96 * 2);
  EXPECT_EQ(Num(j, "geometry/bytes_per_token"), 4 * 96 * 2);
  EXPECT_EQ(Num(j, "blocks"), 3);
  RunResult human = RunCli(absl::StrCat("inspect ", Quote(cache_)));
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("kind=mla rope_dim=32"), std::string::npos) << human.out;
  RunResult verified = RunCli(absl::StrCat("verify --json ", Quote(cache_)));
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_EQ(Num(ParseJson(verified.out), "ok"), 3);

  std::filesystem::remove_all(cache_);
  o = Options();
  o.geometry = Geometry{4, 4, 16, DType::kFloat16, 16}.ForTensorParallelRank(1, 2).value();
  o.tensor_parallel = {1, 2, 0};
  o.host_tier_bytes = 2 * o.geometry.block_bytes();
  {
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }
  StoreOneByOne("default", Prompt(4, 6));
  ASSERT_TRUE(engine_->Flush().ok());
  engine_.reset();
  r = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = ParseJson(r.out);
  EXPECT_EQ(Str(j, "format_version"), "2");
  EXPECT_EQ(Str(j, "geometry/kind"), "kv");
  EXPECT_EQ(Num(j, "geometry/kv_head_begin"), 2);
  EXPECT_EQ(Num(j, "geometry/total_kv_heads"), 4);
  verified = RunCli(absl::StrCat("verify --json ", Quote(cache_)));
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
}

TEST_F(KvtierCliTest, EraseRemovesOneNamespace) {
  Fill();
  RunResult r = RunCli(absl::StrCat("erase ", Quote(cache_), " --namespace tenant-b --json"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const ordered_json j = ParseJson(r.out);
  EXPECT_EQ(Num(j, "erased_blocks"), 3);
  EXPECT_EQ(Num(j, "remaining_namespaces/default"), 4);

  RunResult inspect = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  const ordered_json after = ParseJson(inspect.out);
  EXPECT_EQ(Num(after, "blocks"), 4);
  ASSERT_EQ(Size(after, "namespaces"), 1u);
  EXPECT_EQ(Str(after, "namespaces/0/name"), "default");

  Open();
  EXPECT_EQ(Matched("tenant-b", tenant_prompt_), 0u);
  EXPECT_EQ(Matched("default", default_prompt_), 4u);
}

TEST_F(KvtierCliTest, LiveEngineDirectoryIsReadableButNotWritable) {
  Fill();
  Open();  // this process now holds the index's lock
  RunResult inspect = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  EXPECT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_EQ(Num(ParseJson(inspect.out), "blocks"), 7);
  RunResult verify = RunCli(absl::StrCat("verify ", Quote(cache_)));
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;

  RunResult repair = RunCli(absl::StrCat("verify --repair ", Quote(cache_)));
  EXPECT_EQ(repair.exit_code, 3);
  EXPECT_NE(repair.err.find("in use by another process"), std::string::npos) << repair.err;
  RunResult erase = RunCli(absl::StrCat("erase ", Quote(cache_), " -n default"));
  EXPECT_EQ(erase.exit_code, 3);
  EXPECT_NE(erase.err.find("in use by another process"), std::string::npos) << erase.err;
  EXPECT_EQ(Matched("default", default_prompt_), 4u);  // nothing was touched
}

TEST_F(KvtierCliTest, InspectAndVerifyReportModesSuperblockAndMismatch) {
  Fill();
  RunResult ok = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  ordered_json r = ParseJson(ok.out);
  EXPECT_EQ(Str(r, "access/directory_mode"), "0700");
  EXPECT_EQ(Str(r, "access/data_mode"), "0600");
  EXPECT_EQ(Str(r, "superblock/state"), "ok");
  EXPECT_EQ(Str(r, "superblock/directory_id"), Str(r, "superblock/index_directory_id"));
  EXPECT_EQ(Size(r, "access/problems"), 0u);

  // Loose modes and a data file of another directory: reported by both, verify exits 1.
  const std::string other = dir_ + "/other";
  {
    EngineOptions o = Options();
    o.disk.directory = other;
    ASSERT_TRUE(Engine::Open(o).ok());
  }
  std::filesystem::remove(cache_ + "/data.kvt");
  std::filesystem::copy_file(other + "/data.kvt", cache_ + "/data.kvt");
  ASSERT_EQ(::chmod((cache_ + "/data.kvt").c_str(), 0644), 0);
  RunResult bad = RunCli(absl::StrCat("inspect --json ", Quote(cache_)));
  ASSERT_EQ(bad.exit_code, 0) << bad.err;
  r = ParseJson(bad.out);
  EXPECT_EQ(Str(r, "access/data_mode"), "0644");
  EXPECT_EQ(Size(r, "access/problems"), 1u);
  EXPECT_NE(Str(r, "superblock/mismatch").find("another cache directory"), std::string::npos);
  RunResult text = RunCli(absl::StrCat("inspect ", Quote(cache_)));
  EXPECT_NE(text.out.find("MISMATCH"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("chmod 600"), std::string::npos) << text.out;
  RunResult verify = RunCli(absl::StrCat("verify ", Quote(cache_)));
  EXPECT_EQ(verify.exit_code, 1) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("another cache directory"), std::string::npos) << verify.out;
  // The engine refuses it for its mode first, then (mode fixed) for not being this directory's.
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(Options());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("chmod 600"), absl::string_view::npos) << e.status();
  ASSERT_EQ(::chmod((cache_ + "/data.kvt").c_str(), 0600), 0);
  e = Engine::Open(Options());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("kvtier reset"), absl::string_view::npos) << e.status();
}

TEST_F(KvtierCliTest, ResetStartsADirectoryOverAndNothingElse) {
  Fill();
  std::filesystem::remove(cache_ + "/data.kvt");  // an index without its data file: refused
  ASSERT_FALSE(Engine::Open(Options()).ok());

  // Without --yes: says what would go, removes nothing, exit 2.
  RunResult dry = RunCli(absl::StrCat("reset ", Quote(cache_)));
  EXPECT_EQ(dry.exit_code, 2) << dry.err;
  EXPECT_NE(dry.out.find("would remove index"), std::string::npos) << dry.out;
  EXPECT_TRUE(std::filesystem::exists(cache_ + "/index"));

  // While an engine holds a directory, reset is refused.
  {
    EngineOptions o = Options();
    o.disk.directory = dir_ + "/live";
    absl::StatusOr<std::unique_ptr<Engine>> live = Engine::Open(o);
    ASSERT_TRUE(live.ok()) << live.status();
    RunResult held = RunCli(absl::StrCat("reset --yes ", Quote(dir_ + "/live")));
    EXPECT_EQ(held.exit_code, 3) << held.err;
    EXPECT_TRUE(std::filesystem::exists(dir_ + "/live/data.kvt"));
  }

  // A file that is not kvtier's: reset refuses and names it.
  { std::ofstream(cache_ + "/notes.txt") << "mine"; }
  RunResult foreign = RunCli(absl::StrCat("reset --yes ", Quote(cache_)));
  EXPECT_EQ(foreign.exit_code, 3);
  EXPECT_NE(foreign.err.find("notes.txt"), std::string::npos) << foreign.err;
  std::filesystem::remove(cache_ + "/notes.txt");

  // An index/ whose files are links: removed as links, their targets stay.
  const std::string target = dir_ + "/precious";
  { std::ofstream(target) << "keep me"; }
  std::filesystem::create_symlink(target, cache_ + "/index/link");
  RunResult done = RunCli(absl::StrCat("reset --yes ", Quote(cache_)));
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_FALSE(std::filesystem::exists(cache_ + "/index"));
  EXPECT_TRUE(std::filesystem::exists(target));
  EXPECT_TRUE(std::filesystem::exists(cache_));
  Open();  // a new cache in the same place
  EXPECT_EQ(Matched("default", default_prompt_), 0u);
}

TEST_F(KvtierCliTest, BadPathsAndUsageGiveDocumentedExitCodes) {
  RunResult missing = RunCli(absl::StrCat("inspect ", Quote(dir_ + "/nope")));
  EXPECT_EQ(missing.exit_code, 3);
  EXPECT_NE(missing.err.find("does not exist"), std::string::npos) << missing.err;

  RunResult not_cache = RunCli(absl::StrCat("verify ", Quote(dir_)));
  EXPECT_EQ(not_cache.exit_code, 3);
  EXPECT_NE(not_cache.err.find("not a kvtier cache directory"), std::string::npos) << not_cache.err;
  RunResult erase_not_cache = RunCli(absl::StrCat("erase ", Quote(dir_), " -n x"));
  EXPECT_EQ(erase_not_cache.exit_code, 3);

  EXPECT_EQ(RunCli("").exit_code, 2);
  EXPECT_EQ(RunCli("frobnicate").exit_code, 2);
  EXPECT_EQ(RunCli("inspect").exit_code, 2);               // DIR missing
  EXPECT_EQ(RunCli("erase " + Quote(dir_)).exit_code, 2);  // --namespace missing
  for (const char* sub : {"inspect", "verify", "erase"}) {
    RunResult help = RunCli(absl::StrCat(sub, " --help"));
    EXPECT_EQ(help.exit_code, 0) << sub;
    EXPECT_NE(help.out.find("Usage"), std::string::npos) << sub << ": " << help.out;
  }
  EXPECT_EQ(RunCli("--help").exit_code, 0);
}

TEST(KvtierTraceCli, SummarizeConvertGenerateAndMalformedInput) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/kvtier-trace-", getpid());
  std::filesystem::create_directories(dir);
  const std::string jsonl = dir + "/t.jsonl";
  {
    std::ofstream out(jsonl);
    out << R"({"timestamp": 0, "input_length": 1024, "output_length": 5, "hash_ids": [1, 2]})"
        << "\n"
        << R"({"timestamp": 10, "input_length": 1536, "output_length": 5, "hash_ids": [1, 2, 3]})"
        << "\n";
  }
  RunResult r = RunCli(absl::StrCat("trace summarize --json ", Quote(jsonl)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ordered_json j = ParseJson(r.out);
  EXPECT_EQ(Num(j, "requests"), 2);
  EXPECT_EQ(Num(j, "block_refs"), 5);
  EXPECT_EQ(Num(j, "unique_blocks"), 3);
  EXPECT_DOUBLE_EQ(Num(j, "prefix_reuse_ratio"), 2.0 / 5.0);

  // Converted to CSV, the same trace summarizes the same.
  const std::string csv = dir + "/t.csv";
  r = RunCli(absl::StrCat("trace convert ", Quote(jsonl), " ", Quote(csv)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCli(absl::StrCat("trace summarize --json ", Quote(csv)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Num(ParseJson(r.out), "unique_blocks"), 3);

  // A malformed line is a problem in the input (exit 1), named by line number.
  const std::string bad = dir + "/bad.jsonl";
  {
    std::ofstream out(bad);
    out << R"({"timestamp": 0, "output_length": 1, "hash_ids": [1]})"
        << "\n{oops\n";
  }
  r = RunCli(absl::StrCat("trace summarize ", Quote(bad)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(":2:"), std::string::npos) << r.err;
  EXPECT_EQ(RunCli(absl::StrCat("trace summarize ", Quote(dir + "/missing.csv"))).exit_code, 3);
  EXPECT_EQ(RunCli(absl::StrCat("trace summarize ", Quote(dir + "/t.txt"))).exit_code, 2);

  // Generated traces are deterministic in their seed.
  r = RunCli(absl::StrCat("trace generate scan ", Quote(dir + "/a.csv"), " --seed 5"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RunCli(absl::StrCat("trace generate scan ", Quote(dir + "/b.csv"), " --seed 5"));
  std::ifstream a(dir + "/a.csv"), b(dir + "/b.csv");
  const std::string ca((std::istreambuf_iterator<char>(a)), std::istreambuf_iterator<char>());
  const std::string cb((std::istreambuf_iterator<char>(b)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(ca.empty());
  EXPECT_EQ(ca, cb);
  EXPECT_EQ(RunCli(absl::StrCat("trace generate nonsense ", Quote(dir + "/c.csv"))).exit_code, 2);
  std::filesystem::remove_all(dir);
}

TEST(KvtierBenchCli, ListsTheBenchmarksOfTheSourceTree) {
  RunResult r = RunCli("bench --list");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("demo"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("eviction"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace kvtier
