// The disk tier with the lossy codecs (fp8, int8) on fresh random fp16 / bf16 blocks:
// dequantized reads within the formats' bounds, exact record sizes, restart, corruption, a
// codec changed on reopen, and the dtype check. Every test runs on both I/O backends.

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/tiers/disk_tier_fixture.h"
#include "tests/tiers/quantized_kv.h"
#include "tiers/disk_tier.h"

namespace kvtier {
namespace {

// 2 layers x 4 kv heads x 64 dim x 16 tokens: 32 KiB blocks in fp16 / bf16.
Geometry QuantGeometry(DType dtype) { return Geometry{2, 4, 64, dtype, 16}; }

class QuantizedDiskTierTest : public DiskTierTest {
 protected:
  void SetUp() override {
    DiskTierTest::SetUp();
    seed_ = quantized_kv::TestSeed();
    rng_.seed(seed_);
  }
  std::string Seed() const {
    return absl::StrFormat("seed %d (KVTIER_TEST_SEED=%d reproduces)", seed_, seed_);
  }
  DiskTierOptions QuantOptions(Codec codec) {
    DiskTierOptions o = Options();
    o.codec = codec;
    o.region_bytes = 256 * 1024;  // 7 raw records of 36 KiB, 10 quantized of 24 KiB
    o.capacity_bytes = 4 * o.region_bytes;
    return o;
  }
  RecordId Write(const BlockKey& key, const std::vector<uint8_t>& block) {
    absl::Status status;
    absl::StatusOr<RecordId> id =
        tier_->Write(key, "default", block.data(), [&](absl::Status s) { status = s; });
    EXPECT_TRUE(id.ok()) << id.status();
    tier_->Drain();
    EXPECT_TRUE(status.ok()) << status;
    return id.ok() ? *id : 0;
  }
  absl::Status Read(RecordId id, const BlockKey& key, std::vector<uint8_t>* out) {
    out->assign(tier_->block_bytes(), 0xA5);
    absl::Status status;
    absl::Status s =
        tier_->Read(id, key, "default", out->data(), [&](absl::Status st) { status = st; });
    if (!s.ok()) return s;
    tier_->Drain();
    return status;
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_P(QuantizedDiskTierTest, ReadsAreDequantizedWithinBoundsAndSurviveRestart) {
  SCOPED_TRACE(Seed());
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (Codec codec : {Codec::kFp8, Codec::kInt8}) {
      SCOPED_TRACE(absl::StrFormat("%s %s", DTypeName(dtype), CodecName(codec)));
      const QuantFormat format = CodecQuantFormat(codec);
      const Geometry g = QuantGeometry(dtype);
      std::filesystem::remove_all(dir_ + "/cache");
      ASSERT_TRUE(Open(QuantOptions(codec), g).ok());
      std::vector<std::vector<uint8_t>> blocks;
      std::vector<RecordId> ids;
      for (uint64_t i = 1; i <= 6; ++i) {
        blocks.push_back(quantized_kv::RandomBlock(g, rng_));
        ids.push_back(Write(BlockKey{i, 9}, blocks.back()));
      }
      // Each record: a 4 KiB header and 16,448 stored bytes in 5 pages, 24 KiB against the
      // 36 KiB of a raw 32 KiB block.
      const size_t record = RecordSize(QuantizedBlockBytes(g, format));
      ASSERT_EQ(record, 24u * 1024);
      DiskTierStats st = tier_->Stats();
      EXPECT_EQ(st.bytes_written, 6 * record);
      EXPECT_EQ(st.raw_bytes_written, 6 * g.block_bytes());
      EXPECT_EQ(st.used_bytes, 6 * record);
      std::vector<std::vector<uint8_t>> first_reads;
      for (size_t i = 0; i < blocks.size(); ++i) {
        std::vector<uint8_t> got;
        ASSERT_TRUE(Read(ids[i], BlockKey{i + 1, 9}, &got).ok());
        EXPECT_EQ(got, quantized_kv::ReferenceRoundTrip(g, format, blocks[i])) << i;
        quantized_kv::ExpectDequantizedWithinBounds(g, format, blocks[i], got);
        first_reads.push_back(std::move(got));
      }
      // Reopened: every record is recovered and reads back the same dequantized bytes.
      ASSERT_TRUE(Open(QuantOptions(codec), g).ok());
      ASSERT_EQ(recovered_.size(), blocks.size());
      for (size_t i = 0; i < blocks.size(); ++i) {
        std::vector<uint8_t> got;
        ASSERT_TRUE(Read(recovered_[BlockKey{i + 1, 9}].second, BlockKey{i + 1, 9}, &got).ok());
        EXPECT_EQ(got, first_reads[i]) << i;
      }
      EXPECT_EQ(tier_->Stats().checksum_failures, 0u);
    }
  }
}

TEST_P(QuantizedDiskTierTest, CorruptedQuantizedRecordIsAMissNeverWrongValues) {
  SCOPED_TRACE(Seed());
  const Geometry g = QuantGeometry(DType::kFloat16);
  for (Codec codec : {Codec::kFp8, Codec::kInt8}) {
    SCOPED_TRACE(CodecName(codec));
    std::filesystem::remove_all(dir_ + "/cache");
    ASSERT_TRUE(Open(QuantOptions(codec), g).ok());
    const std::vector<uint8_t> a = quantized_kv::RandomBlock(g, rng_);
    const std::vector<uint8_t> b = quantized_kv::RandomBlock(g, rng_);
    const RecordId ia = Write(BlockKey{1, 1}, a);
    const RecordId ib = Write(BlockKey{2, 2}, b);
    // Record a is first in region 0. One byte of its codes, then (on the reopened
    // directory, record b) one byte of its scales.
    FlipByte(kRecordHeaderBytes + 1000);
    std::vector<uint8_t> got;
    absl::Status s = Read(ia, BlockKey{1, 1}, &got);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find("payload_checksum"), absl::string_view::npos) << s;
    EXPECT_EQ(got, std::vector<uint8_t>(g.block_bytes(), 0)) << "destination must be zeroed";
    EXPECT_EQ(tier_->Stats().checksum_failures, 1u);
    EXPECT_EQ(Read(ia, BlockKey{1, 1}, &got).code(), absl::StatusCode::kNotFound);
    ASSERT_TRUE(Read(ib, BlockKey{2, 2}, &got).ok());
    EXPECT_EQ(got, quantized_kv::ReferenceRoundTrip(g, CodecQuantFormat(codec), b));

    const uint64_t record_b = RecordSize(QuantizedBlockBytes(g, CodecQuantFormat(codec)));
    ASSERT_TRUE(Open(QuantOptions(codec), g).ok());
    EXPECT_EQ(recovered_.count(BlockKey{1, 1}), 0u);  // dropped for good
    ASSERT_EQ(recovered_.count(BlockKey{2, 2}), 1u);
    FlipByte(record_b + kRecordHeaderBytes + QuantizedScalesOffset(g) + 2);
    s = Read(recovered_[BlockKey{2, 2}].second, BlockKey{2, 2}, &got);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_EQ(got, std::vector<uint8_t>(g.block_bytes(), 0));
  }
}

TEST_P(QuantizedDiskTierTest, CodecIsPerRecordSoAnotherCodecOnReopenReadsOldRecordsAsWritten) {
  SCOPED_TRACE(Seed());
  const Geometry g = QuantGeometry(DType::kBFloat16);
  const std::vector<uint8_t> quantized = quantized_kv::RandomBlock(g, rng_);
  const std::vector<uint8_t> exact = quantized_kv::RandomBlock(g, rng_);
  const std::vector<uint8_t> later = quantized_kv::RandomBlock(g, rng_);
  // Written under fp8, read under none: dequantized, as written.
  ASSERT_TRUE(Open(QuantOptions(Codec::kFp8), g).ok());
  Write(BlockKey{1, 1}, quantized);
  ASSERT_TRUE(Open(QuantOptions(Codec::kNone), g).ok());
  std::vector<uint8_t> got;
  ASSERT_TRUE(Read(recovered_[BlockKey{1, 1}].second, BlockKey{1, 1}, &got).ok());
  EXPECT_EQ(got, quantized_kv::ReferenceRoundTrip(g, QuantFormat::kFp8E4m3, quantized));
  // New writes take the codec of this run: exact.
  const RecordId ie = Write(BlockKey{2, 2}, exact);
  ASSERT_TRUE(Read(ie, BlockKey{2, 2}, &got).ok());
  EXPECT_EQ(got, exact);
  // Reopened under int8: the fp8 record and the exact one read as before; new ones are int8.
  ASSERT_TRUE(Open(QuantOptions(Codec::kInt8), g).ok());
  ASSERT_EQ(recovered_.size(), 2u);
  ASSERT_TRUE(Read(recovered_[BlockKey{1, 1}].second, BlockKey{1, 1}, &got).ok());
  EXPECT_EQ(got, quantized_kv::ReferenceRoundTrip(g, QuantFormat::kFp8E4m3, quantized));
  ASSERT_TRUE(Read(recovered_[BlockKey{2, 2}].second, BlockKey{2, 2}, &got).ok());
  EXPECT_EQ(got, exact);
  const uint64_t before = tier_->Stats().bytes_written;
  const RecordId il = Write(BlockKey{3, 3}, later);
  EXPECT_EQ(tier_->Stats().bytes_written - before,
            RecordSize(QuantizedBlockBytes(g, QuantFormat::kInt8)));
  ASSERT_TRUE(Read(il, BlockKey{3, 3}, &got).ok());
  EXPECT_EQ(got, quantized_kv::ReferenceRoundTrip(g, QuantFormat::kInt8, later));
  EXPECT_EQ(tier_->Stats().checksum_failures, 0u);
}

TEST_P(QuantizedDiskTierTest, DTypesTheQuantizersTakeOpenOthersAreRefusedNamingBoth) {
  // Every dtype kvtier has (fp16, bf16, fp32) is one kernels/quantize.h takes.
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    std::filesystem::remove_all(dir_ + "/cache");
    EXPECT_TRUE(Open(QuantOptions(Codec::kInt8), QuantGeometry(dtype)).ok()) << DTypeName(dtype);
  }
  // One outside them is refused by the options check, naming the codec and the dtype (Open
  // refuses it earlier still: the geometry itself is invalid).
  Geometry bad = QuantGeometry(DType::kFloat16);
  bad.dtype = static_cast<DType>(7);
  absl::Status s = QuantOptions(Codec::kFp8).Validate(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("codec fp8"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("dtype invalid (7)"), absl::string_view::npos) << s;
  EXPECT_EQ(Open(QuantOptions(Codec::kFp8), bad).code(), absl::StatusCode::kInvalidArgument);
  DiskTierOptions unknown = QuantOptions(Codec::kNone);
  unknown.codec = static_cast<Codec>(5);
  EXPECT_NE(unknown.Validate(QuantGeometry(DType::kFloat16)).message().find("codec = 5"),
            absl::string_view::npos);
}

INSTANTIATE_TEST_SUITE_P(Backends, QuantizedDiskTierTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ThreadPool" : "IoUring";
                         });

}  // namespace
}  // namespace kvtier
