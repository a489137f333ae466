// The engine with a lossy disk codec (DiskOptions::codec = "fp8" or "int8"): a block demoted
// to disk and loaded back holds the dequantized values — exactly the quantization kernels'
// round trip, within the format's error bound for every element — while blocks that never
// left the host tier load exact; records are the quantized size; a reopened directory serves
// the same values, also under another codec; a corrupted quantized record is a miss (zeros +
// DataLoss), never wrong values. Data is fresh random fp16 / bf16 each run
// (tests/tiers/quantized_kv.h; KVTIER_TEST_SEED=N reproduces a run).

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "absl/strings/str_format.h"
#include "engine_test_util.h"
#include "gtest/gtest.h"
#include "kernels/quantize.h"
#include "kvtier/engine.h"
#include "tests/tiers/quantized_kv.h"
#include "tiers/disk_record.h"

namespace kvtier {
namespace {

using ::kvtier::testing::DeviceBlocks;
using ::kvtier::testing::KeysOf;
using ::kvtier::testing::Poison;
using ::kvtier::testing::Prompt;
using ::kvtier::testing::ReadDevice;
using ::kvtier::testing::WriteDevice;

// 4 layers x 2 kv heads x 64 dim x 16 tokens: 32 KiB blocks in fp16 / bf16, which quantize
// to 16,448 bytes (records of 24 KiB instead of 36 KiB).
Geometry QuantGeometry(DType dtype) { return Geometry{4, 2, 64, dtype, 16}; }

class EngineQuantizedDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-engine-qdisk-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    seed_ = quantized_kv::TestSeed();
    rng_.seed(seed_);
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string Seed() const {
    return absl::StrFormat("seed %d (KVTIER_TEST_SEED=%d reproduces)", seed_, seed_);
  }

  EngineOptions Options(DType dtype, const std::string& codec) {
    EngineOptions o;
    o.geometry = QuantGeometry(dtype);
    o.model_fingerprint = "test-model@1";
    o.device.choice = DeviceChoice::kEmulated;
    o.host_tier_bytes = 4 * o.geometry.block_bytes();
    o.namespaces = {"default"};
    o.disk.directory = dir_ + "/cache";
    o.disk.region_bytes = 256 * 1024;
    o.disk.capacity_bytes = 16 * o.disk.region_bytes;
    o.disk.staging_buffers = 32;
    o.disk.admit_min_seen = 1;  // every eviction reaches the disk
    o.disk.codec = codec;
    return o;
  }
  void Open(const EngineOptions& o) {
    engine_.reset();
    auto e = Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    g_ = o.geometry;
  }

  // Stores blocks [first, first + data.size()) of `tokens` with the given contents.
  void StoreData(const std::vector<int32_t>& tokens, size_t first,
                 const std::vector<std::vector<uint8_t>>& data) {
    DeviceBlocks src(engine_->device(), data.size(), g_.block_bytes());
    for (size_t i = 0; i < data.size(); ++i) WriteDevice(engine_->device(), src[i], data[i]);
    StoreRequest r;
    r.ns = "default";
    r.tokens = tokens;
    r.first_block = first;
    r.buffers = KvBuffers::Blocks(src.ptrs());
    auto h = engine_->Store(r);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
    ASSERT_EQ((*h)->blocks_moved(), data.size());
  }
  // Loads `keys` into fresh (poisoned) buffers; returns the status and the bytes.
  absl::Status Load(const std::vector<BlockKey>& keys, std::vector<std::vector<uint8_t>>* got) {
    got->clear();
    DeviceBlocks dst(engine_->device(), keys.size(), g_.block_bytes());
    Poison(engine_->device(), dst.ptrs(), g_.block_bytes());
    LoadRequest r;
    r.ns = "default";
    r.keys = keys;
    r.buffers = KvBuffers::Blocks(dst.ptrs());
    auto h = engine_->Load(r);
    if (!h.ok()) return h.status();
    absl::Status s = (*h)->Wait();
    for (size_t i = 0; i < keys.size(); ++i) {
      got->push_back(ReadDevice(engine_->device(), dst[i], g_.block_bytes()));
    }
    return s;
  }
  std::vector<TierKind> Tiers(const std::vector<int32_t>& tokens) {
    auto m = engine_->Match("default", tokens);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? m->tiers : std::vector<TierKind>{};
  }
  // `n` random blocks stored as `tokens` two at a time (a Store cannot evict its own blocks),
  // so through a 4-block host tier all but the last few go to disk.
  std::vector<std::vector<uint8_t>> StoreRandom(const std::vector<int32_t>& tokens, size_t n) {
    std::vector<std::vector<uint8_t>> data;
    for (size_t i = 0; i < n; ++i) {
      if (DTypeIsQuantizable(g_.dtype)) {
        data.push_back(quantized_kv::RandomBlock(g_, rng_));
      } else {  // fp8: every bit pattern
        std::vector<uint8_t>& b = data.emplace_back(g_.block_bytes());
        for (uint8_t& x : b) x = static_cast<uint8_t>(rng_());
      }
    }
    for (size_t first = 0; first < n; first += 2) {
      StoreData(tokens, first, {data[first], data[first + 1]});
    }
    EXPECT_TRUE(engine_->Flush().ok());
    return data;
  }

  std::string dir_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<Engine> engine_;
  Geometry g_;
};

TEST_F(EngineQuantizedDiskTest, BlocksBackFromDiskAreDequantizedWithinBoundsOthersExact) {
  SCOPED_TRACE(Seed());
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (const char* codec : {"fp8", "int8"}) {
      SCOPED_TRACE(absl::StrFormat("%s %s", DTypeName(dtype), codec));
      const QuantFormat format = *ParseQuantFormat(codec);
      std::filesystem::remove_all(dir_ + "/cache");
      Open(Options(dtype, codec));
      const std::vector<int32_t> prompt = Prompt(8, 1);
      const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
      const std::vector<std::vector<uint8_t>> data = StoreRandom(prompt, 8);
      const std::vector<TierKind> tiers = Tiers(prompt);
      ASSERT_EQ(tiers.size(), 8u);
      size_t on_disk = 0;
      for (TierKind t : tiers) on_disk += t == TierKind::kDisk;
      EXPECT_GE(on_disk, 4u);
      // Records of the quantized size: 24 KiB each where the raw block would take 36 KiB.
      const size_t record = RecordSize(QuantizedBlockBytes(g_, format));
      ASSERT_EQ(record, 24u * 1024);
      EngineStats st = engine_->Stats();
      const TierStats& disk = st.tiers[static_cast<int>(TierKind::kDisk)];
      EXPECT_EQ(disk.used_blocks, on_disk);
      EXPECT_EQ(disk.bytes_in, on_disk * record);
      EXPECT_EQ(disk.capacity_blocks, 16 * 256 * 1024 / record);
      // The host tier's blocks first (loading a disk block takes a host slot, which demotes
      // one of them), then the disk's, one at a time.
      for (TierKind from : {TierKind::kHost, TierKind::kDisk}) {
        for (size_t i = 0; i < keys.size(); ++i) {
          if (tiers[i] != from) continue;
          std::vector<std::vector<uint8_t>> got;
          ASSERT_TRUE(Load({keys[i]}, &got).ok()) << i;
          if (from == TierKind::kHost) {
            EXPECT_EQ(got[0], data[i]) << "block " << i << " never left the host tier";
          } else {
            EXPECT_EQ(got[0], quantized_kv::ReferenceRoundTrip(g_, format, data[i])) << i;
            quantized_kv::ExpectDequantizedWithinBounds(g_, format, data[i], got[0]);
          }
        }
      }
      EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(TierKind::kDisk)].checksum_failures, 0u);
    }
  }
}

TEST_F(EngineQuantizedDiskTest, ReopenedDirectoryServesTheSameValuesUnderAnyCodec) {
  SCOPED_TRACE(Seed());
  Open(Options(DType::kFloat16, "int8"));
  const std::vector<int32_t> prompt = Prompt(6, 2);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  const std::vector<std::vector<uint8_t>> data = StoreRandom(prompt, 6);
  const std::vector<TierKind> tiers = Tiers(prompt);
  engine_.reset();

  // Reopened with the same codec, then with the default ("none"): the disk blocks read back
  // as the int8 round trip either way (the codec is per record).
  for (const char* codec : {"int8", "none"}) {
    SCOPED_TRACE(codec);
    Open(Options(DType::kFloat16, codec));
    size_t checked = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (tiers[i] != TierKind::kDisk) continue;  // host copies did not survive the close
      std::vector<std::vector<uint8_t>> got;
      ASSERT_TRUE(Load({keys[i]}, &got).ok()) << i;
      EXPECT_EQ(got[0], quantized_kv::ReferenceRoundTrip(g_, QuantFormat::kInt8, data[i])) << i;
      ++checked;
    }
    EXPECT_GE(checked, 2u);
    engine_.reset();
  }
  // Under "none", a block newly demoted to disk comes back exact.
  Open(Options(DType::kFloat16, "none"));
  const std::vector<int32_t> other = Prompt(6, 3);
  const std::vector<BlockKey> other_keys = KeysOf(*engine_, "default", other);
  const std::vector<std::vector<uint8_t>> other_data = StoreRandom(other, 6);
  ASSERT_EQ(Tiers(other)[0], TierKind::kDisk);
  std::vector<std::vector<uint8_t>> got;
  ASSERT_TRUE(Load({other_keys[0]}, &got).ok());
  EXPECT_EQ(got[0], other_data[0]);
}

TEST_F(EngineQuantizedDiskTest, CorruptQuantizedRecordIsAMissWithZerosNeverWrongValues) {
  SCOPED_TRACE(Seed());
  Open(Options(DType::kBFloat16, "fp8"));
  const std::vector<int32_t> prompt = Prompt(2, 4);
  const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
  std::vector<std::vector<uint8_t>> data = StoreRandom(prompt, 2);
  StoreRandom(Prompt(4, 5), 4);  // both blocks now only on disk, first records of region 0
  ASSERT_EQ(Tiers(prompt), std::vector<TierKind>(2, TierKind::kDisk));
  engine_.reset();
  {
    const int fd = ::open((dir_ + "/cache/data.kvt").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "XXXX", 4, 4096 + 64), 4);  // the codes of the first record
    ::close(fd);
  }
  Open(Options(DType::kBFloat16, "fp8"));
  std::vector<std::vector<uint8_t>> got;
  absl::Status s = Load(keys, &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  ASSERT_EQ(got.size(), 2u);
  int zero = 0, right = 0;
  for (size_t i = 0; i < 2; ++i) {
    zero += got[i] == std::vector<uint8_t>(g_.block_bytes(), 0);
    right += got[i] == quantized_kv::ReferenceRoundTrip(g_, QuantFormat::kFp8E4m3, data[i]);
  }
  EXPECT_EQ(zero, 1);
  EXPECT_EQ(right, 1);
  EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(TierKind::kDisk)].checksum_failures, 1u);
  EXPECT_LT(engine_->Match("default", prompt)->matched_tokens, prompt.size());
}

TEST_F(EngineQuantizedDiskTest, CodecOptionNamesTheChoices) {
  EngineOptions o = Options(DType::kFloat16, "none");
  EXPECT_EQ(EngineOptions().disk.codec, "none");  // lossy is opt-in
  for (const char* codec : {"none", "zstd", "zstd-shuffle", "fp8", "int8"}) {
    o.disk.codec = codec;
    EXPECT_TRUE(o.Validate().ok()) << codec << ": " << o.Validate();
  }
  o.geometry.dtype = DType::kFloat32;  // quantizable too (to a quarter of its size)
  o.host_tier_bytes = 4 * o.geometry.block_bytes();
  o.disk.codec = "fp8";
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  o.disk.codec = "FP8";
  absl::Status s = o.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("disk.codec"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("fp8, int8"), absl::string_view::npos) << s;
}

// fp8 KV caches (vLLM's kv_cache_dtype fp8_e4m3 / fp8_e5m2): one byte per element, stored
// and loaded as bytes, exactly, through the disk tier and a restart, with the lossless codecs;
// the quantizing codecs refuse them at Open, naming the dtype.
TEST_F(EngineQuantizedDiskTest, Fp8CachesAreStoredExactlyAndRefuseQuantizingCodecs) {
  SCOPED_TRACE(Seed());
  for (DType dtype : {DType::kFp8E4m3, DType::kFp8E5m2}) {
    for (const char* codec : {"fp8", "int8"}) {
      absl::StatusOr<std::unique_ptr<Engine>> refused = Engine::Open(Options(dtype, codec));
      ASSERT_FALSE(refused.ok()) << DTypeName(dtype) << " " << codec;
      EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(refused.status().message().find(DTypeName(dtype)), absl::string_view::npos)
          << refused.status();
      EXPECT_NE(refused.status().message().find("one byte per element"), absl::string_view::npos)
          << refused.status();
    }
    for (const char* codec : {"none", "zstd-shuffle"}) {
      SCOPED_TRACE(absl::StrFormat("%s %s", DTypeName(dtype), codec));
      std::filesystem::remove_all(dir_ + "/cache");
      Open(Options(dtype, codec));
      EXPECT_EQ(g_.block_bytes(), 4u * 2 * 16 * 2 * 64);  // half of the fp16 block
      const std::vector<int32_t> prompt = Prompt(8, 3);
      const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
      std::vector<std::vector<uint8_t>> data(8, std::vector<uint8_t>(g_.block_bytes()));
      for (auto& block : data) {
        for (uint8_t& b : block) b = static_cast<uint8_t>(rng_());  // every bit pattern
      }
      for (size_t first = 0; first < data.size(); first += 2) {
        StoreData(prompt, first, {data[first], data[first + 1]});
      }
      ASSERT_TRUE(engine_->Flush().ok());
      const std::vector<TierKind> tiers = Tiers(prompt);
      ASSERT_EQ(tiers.size(), 8u);
      size_t on_disk = 0;
      for (TierKind t : tiers) on_disk += t == TierKind::kDisk;
      EXPECT_GE(on_disk, 4u);
      // Restart: the disk copies come back byte for byte.
      Open(Options(dtype, codec));
      size_t checked = 0;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (tiers[i] != TierKind::kDisk) continue;
        std::vector<std::vector<uint8_t>> got;
        ASSERT_TRUE(Load({keys[i]}, &got).ok()) << i;
        EXPECT_EQ(got[0], data[i]) << "block " << i;
        ++checked;
      }
      EXPECT_EQ(checked, on_disk);
      EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(TierKind::kDisk)].checksum_failures, 0u);
    }
  }
}

// The model shapes beyond K = V: an MLA latent (one part per layer) and a tensor-parallel
// shard of a GQA cache. Each goes through the disk tier and a restart: lossless codecs give
// the bytes back exactly; a bf16 latent under fp8 / int8 is quantized per layer (its one
// "head" is the whole latent) and comes back within the format's bound. The directory is
// format version 2 and says what it holds: an engine of the other kind is refused, naming
// both geometries.
Geometry MlaGeometry(DType dtype) {
  Geometry g{4, 1, 96, dtype, 16};  // a small DeepSeek-like latent: 64 + 32 rope
  g.kind = KvKind::kLatent;
  g.rope_dim = 32;
  return g;
}

TEST_F(EngineQuantizedDiskTest, MlaAndShardedCachesRoundTripThroughDiskAndRestart) {
  SCOPED_TRACE(Seed());
  const Geometry shard = *Geometry{4, 4, 64, DType::kBFloat16, 16}.ForTensorParallelRank(1, 2);
  struct Case {
    Geometry g;
    const char* codec;
  };
  const Case cases[] = {{MlaGeometry(DType::kBFloat16), "none"},
                        {MlaGeometry(DType::kBFloat16), "zstd-shuffle"},
                        {MlaGeometry(DType::kBFloat16), "fp8"},
                        {MlaGeometry(DType::kFloat16), "int8"},
                        {MlaGeometry(DType::kFp8E4m3), "zstd"},
                        {shard, "none"},
                        {shard, "int8"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrFormat("%s codec %s", c.g.ToString(), c.codec));
    std::filesystem::remove_all(dir_ + "/cache");
    EngineOptions o = Options(c.g.dtype, c.codec);
    o.geometry = c.g;
    o.host_tier_bytes = 4 * c.g.block_bytes();
    Open(o);
    const std::vector<int32_t> prompt = Prompt(8, 5);
    const std::vector<BlockKey> keys = KeysOf(*engine_, "default", prompt);
    const std::vector<std::vector<uint8_t>> data = StoreRandom(prompt, 8);
    ASSERT_TRUE(engine_->Flush().ok());
    const std::vector<TierKind> tiers = Tiers(prompt);
    ASSERT_EQ(tiers.size(), 8u);
    Open(o);  // restart: the host tier's blocks are gone, the disk's prefix is back
    std::vector<TierKind> on_disk_prefix;
    for (TierKind t : tiers) {
      if (t != TierKind::kDisk) break;
      on_disk_prefix.push_back(t);
    }
    EXPECT_EQ(Tiers(prompt), on_disk_prefix);
    const bool lossy = std::string(c.codec) == "fp8" || std::string(c.codec) == "int8";
    size_t on_disk = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (tiers[i] != TierKind::kDisk) continue;
      ++on_disk;
      std::vector<std::vector<uint8_t>> got;
      ASSERT_TRUE(Load({keys[i]}, &got).ok()) << i;
      if (!lossy) {
        EXPECT_EQ(got[0], data[i]) << "block " << i;
        continue;
      }
      // Each (layer, part, head) within the quantized round trip's bound.
      const QuantFormat f =
          std::string(c.codec) == "fp8" ? QuantFormat::kFp8E4m3 : QuantFormat::kInt8;
      quantized_kv::ExpectDequantizedWithinBounds(g_, f, data[i], got[0]);
      EXPECT_EQ(got[0], quantized_kv::ReferenceRoundTrip(g_, f, data[i])) << "block " << i;
    }
    EXPECT_GE(on_disk, 4u);
    EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(TierKind::kDisk)].checksum_failures, 0u);
  }
}

TEST_F(EngineQuantizedDiskTest, DirectoryOfOneKindIsRefusedByTheOtherNamingBoth) {
  EngineOptions mla = Options(DType::kBFloat16, "none");
  mla.geometry = MlaGeometry(DType::kBFloat16);
  mla.host_tier_bytes = 4 * mla.geometry.block_bytes();
  Open(mla);
  const std::vector<int32_t> prompt = Prompt(8, 6);
  StoreRandom(prompt, 8);
  ASSERT_TRUE(engine_->Flush().ok());
  engine_.reset();
  // The same bytes per token as K and V of half the width: not the same cache.
  EngineOptions kv = mla;
  kv.geometry = Geometry{4, 1, 48, DType::kBFloat16, 16};
  ASSERT_EQ(kv.geometry.block_bytes(), mla.geometry.block_bytes());
  absl::StatusOr<std::unique_ptr<Engine>> refused = Engine::Open(kv);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("kind=mla rope_dim=32"), absl::string_view::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("head_dim=48 dtype=bf16 block_tokens=16 ("),
            absl::string_view::npos)
      << refused.status();
  // And the other way round: a KV directory refuses an MLA engine.
  std::filesystem::remove_all(dir_ + "/cache");
  Open(kv);
  engine_.reset();
  refused = Engine::Open(mla);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("kind=mla"), absl::string_view::npos)
      << refused.status();
  // A shard is refused by another rank's engine the same way.
  std::filesystem::remove_all(dir_ + "/cache");
  EngineOptions r0 = Options(DType::kBFloat16, "none");
  r0.geometry = *Geometry{4, 4, 64, DType::kBFloat16, 16}.ForTensorParallelRank(0, 2);
  r0.tensor_parallel = {0, 2, 0};
  Open(r0);
  engine_.reset();
  EngineOptions r1 = r0;
  r1.geometry = *Geometry{4, 4, 64, DType::kBFloat16, 16}.ForTensorParallelRank(1, 2);
  r1.tensor_parallel = {1, 2, 0};
  refused = Engine::Open(r1);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("kv_head_begin=2 total_kv_heads=4"),
            absl::string_view::npos)
      << refused.status();
}

}  // namespace
}  // namespace kvtier
