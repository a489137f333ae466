// DiskIndex on its own, on a real RocksDB: metadata written once and checked on every open,
// one writer process at a time (read-only beside it), the persist → recover round trip
// (valid entries come back exactly, stale and malformed ones are dropped durably), the
// reclaim batch, and the pure rules and texts the engine and the CLI share (CheckPlacement,
// the metadata and region-key encodings).

#include "tiers/disk_index.h"

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"

namespace kvtier {
namespace {

constexpr uint64_t kRegionBytes = 64 * 1024;
constexpr uint64_t kRegions = 4;

Geometry TestGeometry() { return Geometry{2, 2, 32, DType::kFloat16, 16}; }

IndexEntry Entry(uint32_t region, uint64_t slot, uint64_t generation, const std::string& ns) {
  IndexEntry e;
  e.region = region;
  e.offset = uint64_t{region} * kRegionBytes + slot * RecordSize(8192);
  e.record_bytes = static_cast<uint32_t>(RecordSize(8192));
  e.generation = generation;
  e.codec = Codec::kNone;
  e.stored_bytes = 8192;
  e.payload_checksum = 0x1234 + slot;
  e.created_unix_ms = 1700000000000 + slot;
  e.ns = ns;
  return e;
}

class DiskIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-index-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<DiskIndex> OpenOrDie(DiskIndex::Mode mode) {
    absl::StatusOr<std::unique_ptr<DiskIndex>> index = DiskIndex::Open(dir_, mode);
    EXPECT_TRUE(index.ok()) << index.status();
    return index.ok() ? std::move(*index) : nullptr;
  }

  // Writes raw key/values behind DiskIndex's back (hostile or stale content).
  void PutRaw(const std::string& key, const std::string& value) {
    rocksdb::DB* db = nullptr;
    rocksdb::Options o;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir_ + "/index", &db).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, value).ok());
    delete db;
  }

  std::string dir_;
};

TEST_F(DiskIndexTest, MetadataIsWrittenOnceAndADifferentOneIsRefusedNamingBoth) {
  const IndexMeta meta = IndexMeta::For(TestGeometry(), kRegionBytes, kRegions);
  {
    auto index = OpenOrDie(DiskIndex::Mode::kCreate);
    ASSERT_TRUE(index->CheckOrWriteMeta(meta).ok());
    EXPECT_EQ(*index->GetMeta("format"), absl::StrCat(kRecordFormatVersion));
    EXPECT_EQ(*index->GetMeta("layout"), "region_bytes=65536 regions=4");
    EXPECT_EQ(index->GetMeta("nothing").status().code(), absl::StatusCode::kNotFound);
  }
  auto index = OpenOrDie(DiskIndex::Mode::kCreate);
  EXPECT_TRUE(index->CheckOrWriteMeta(meta).ok());
  Geometry other = TestGeometry();
  other.num_layers = 3;
  const absl::Status s = index->CheckOrWriteMeta(IndexMeta::For(other, kRegionBytes, kRegions));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("geometry"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find(meta.geometry), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find(FormatGeometryMeta(other)), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find(dir_), absl::string_view::npos) << s;
  const absl::Status layout =
      index->CheckOrWriteMeta(IndexMeta::For(TestGeometry(), kRegionBytes, kRegions + 1));
  EXPECT_EQ(layout.code(), absl::StatusCode::kFailedPrecondition) << layout;
  EXPECT_NE(layout.message().find("layout"), absl::string_view::npos) << layout;
}

TEST_F(DiskIndexTest, OneWriterAtATimeAndReadOnlyBesideIt) {
  auto writer = OpenOrDie(DiskIndex::Mode::kCreate);
  ASSERT_TRUE(writer->Put(BlockKey{1, 1}, Entry(0, 0, 1, "a"), false).ok());
  for (DiskIndex::Mode mode : {DiskIndex::Mode::kCreate, DiskIndex::Mode::kReadWrite}) {
    const absl::Status s = DiskIndex::Open(dir_, mode).status();
    EXPECT_TRUE(DiskIndex::IsInUse(s)) << s;
    EXPECT_NE(s.message().find(dir_), absl::string_view::npos) << s;
  }
  auto reader = OpenOrDie(DiskIndex::Mode::kReadOnly);
  size_t blocks = 0;
  ASSERT_TRUE(reader
                  ->ForEachBlock([&](const IndexedBlock& b) {
                    ASSERT_TRUE(b.key.ok() && b.entry.ok());
                    EXPECT_EQ(*b.key, (BlockKey{1, 1}));
                    EXPECT_EQ(*b.entry, Entry(0, 0, 1, "a"));
                    ++blocks;
                  })
                  .ok());
  EXPECT_EQ(blocks, 1u);
  const absl::Status put = reader->Put(BlockKey{2, 2}, Entry(0, 1, 1, "a"), false);
  EXPECT_EQ(put.code(), absl::StatusCode::kFailedPrecondition) << put;
  EXPECT_FALSE(DiskIndex::IsInUse(put));
  EXPECT_FALSE(DiskIndex::IsInUse(absl::UnavailableError("in use by another process")));
}

TEST_F(DiskIndexTest, PersistThenRecoverReturnsValidEntriesAndDropsTheRestDurably) {
  std::map<BlockKey, IndexEntry> want;
  {
    auto index = OpenOrDie(DiskIndex::Mode::kCreate);
    ASSERT_TRUE(index->ReclaimRegion(0, 1, {}, true).ok());
    ASSERT_TRUE(index->ReclaimRegion(1, 2, {}, true).ok());
    for (uint64_t i = 0; i < 3; ++i) {
      const BlockKey k{10 + i, 1};
      want[k] = Entry(0, i, 1, i == 1 ? "b" : "a");
      ASSERT_TRUE(index->Put(k, want[k], false).ok());
    }
    // Region 1 held two records, then was reclaimed: one entry goes in the batch...
    ASSERT_TRUE(index->Put(BlockKey{20, 1}, Entry(1, 0, 2, "a"), false).ok());
    ASSERT_TRUE(index->Put(BlockKey{21, 1}, Entry(1, 1, 2, "a"), false).ok());
    const BlockKey in_batch[] = {BlockKey{20, 1}};
    ASSERT_TRUE(index->ReclaimRegion(1, 5, in_batch, true).ok());
    // ...the other (as if the batch had missed it) is an orphan of generation 2.
    const BlockKey fresh{22, 1};
    want[fresh] = Entry(1, 0, 5, "a");
    ASSERT_TRUE(index->Put(fresh, want[fresh], false).ok());
    ASSERT_TRUE(index->Delete(BlockKey{12, 1}, false).ok());
    want.erase(BlockKey{12, 1});
  }
  // Hostile and stale content: a malformed value, a record outside its region, an entry in a
  // region outside the layout, a malformed region key.
  PutRaw(BlockIndexKey(BlockKey{30, 1}), "garbage");
  IndexEntry outside = Entry(2, 0, 0, "a");
  outside.offset = std::numeric_limits<uint64_t>::max() - 4095;
  PutRaw(BlockIndexKey(BlockKey{31, 1}), EncodeIndexEntry(outside));
  PutRaw(BlockIndexKey(BlockKey{32, 1}), EncodeIndexEntry(Entry(9, 0, 1, "a")));
  PutRaw("rXY", EncodeU64(3));

  std::map<BlockKey, IndexEntry> got;
  {
    auto index = OpenOrDie(DiskIndex::Mode::kCreate);
    absl::StatusOr<DiskIndex::Recovery> r =
        index->Recover(kRegionBytes, kRegions, [&](const BlockKey& k, const IndexEntry& e) {
          EXPECT_TRUE(got.emplace(k, e).second) << "recovered twice";
        });
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->recovered, want.size());
    EXPECT_EQ(r->dropped, 4u);  // the orphan of region 1 and the three hostile entries
    EXPECT_EQ(r->generations, (std::vector<uint64_t>{1, 5, 0, 0}));
    size_t malformed = 0;
    ASSERT_TRUE(index->RegionGenerations(kRegions, &malformed).ok());
    EXPECT_EQ(malformed, 1u);
  }
  EXPECT_EQ(got, want);
  // The dropped entries are gone for good: the next open sees exactly the recovered ones.
  auto index = OpenOrDie(DiskIndex::Mode::kReadOnly);
  size_t blocks = 0;
  ASSERT_TRUE(index
                  ->ForEachBlock([&](const IndexedBlock& b) {
                    ASSERT_TRUE(b.key.ok() && b.entry.ok());
                    EXPECT_EQ(want.at(*b.key), *b.entry);
                    ++blocks;
                  })
                  .ok());
  EXPECT_EQ(blocks, want.size());
}

TEST_F(DiskIndexTest, DeleteKeysRemovesRawKeysInOneBatch) {
  auto index = OpenOrDie(DiskIndex::Mode::kCreate);
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(index->Put(BlockKey{i, 0}, Entry(0, i, 1, "a"), false).ok());
  }
  const std::string keys[] = {BlockIndexKey(BlockKey{0, 0}), BlockIndexKey(BlockKey{2, 0})};
  ASSERT_TRUE(index->DeleteKeys(keys).ok());
  std::vector<BlockKey> left;
  ASSERT_TRUE(index->ForEachBlock([&](const IndexedBlock& b) { left.push_back(*b.key); }).ok());
  EXPECT_EQ(left, (std::vector<BlockKey>{BlockKey{1, 0}}));
}

TEST(CheckPlacement, AcceptsOnlyEntriesInsideTheirRegionOfTheCurrentGeneration) {
  const std::vector<uint64_t> generations = {1, 5, 0, 0};
  EXPECT_TRUE(CheckPlacement(Entry(1, 2, 5, "a"), kRegionBytes, generations).ok());
  IndexEntry last = Entry(1, 0, 5, "a");
  last.offset = 2 * kRegionBytes - last.record_bytes;  // ends exactly at the region's end
  EXPECT_TRUE(CheckPlacement(last, kRegionBytes, generations).ok());

  EXPECT_EQ(CheckPlacement(Entry(4, 0, 1, "a"), kRegionBytes, generations).code(),
            absl::StatusCode::kOutOfRange);
  IndexEntry before = Entry(1, 0, 5, "a");
  before.offset = kRegionBytes - 4096;  // starts in region 0
  EXPECT_EQ(CheckPlacement(before, kRegionBytes, generations).code(),
            absl::StatusCode::kOutOfRange);
  IndexEntry past = last;
  past.offset += 4096;  // ends in region 2
  EXPECT_EQ(CheckPlacement(past, kRegionBytes, generations).code(), absl::StatusCode::kOutOfRange);
  IndexEntry wraps = Entry(1, 0, 5, "a");
  wraps.offset = std::numeric_limits<uint64_t>::max() - 4095;  // offset + size wraps to small
  EXPECT_EQ(CheckPlacement(wraps, kRegionBytes, generations).code(), absl::StatusCode::kOutOfRange);

  const absl::Status stale = CheckPlacement(Entry(1, 0, 2, "a"), kRegionBytes, generations);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.message().find("orphan"), absl::string_view::npos) << stale;
  EXPECT_EQ(CheckPlacement(Entry(2, 0, 0, "a"), kRegionBytes, generations).code(),
            absl::StatusCode::kFailedPrecondition)
      << "generation 0 is never written";
}

TEST(IndexText, MetadataAndRegionKeysRoundTripAndMalformedOnesAreRejected) {
  const Geometry g = TestGeometry();
  uint64_t fp = 0;
  absl::StatusOr<Geometry> parsed = ParseGeometryMeta(FormatGeometryMeta(g), &fp);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, g);
  EXPECT_EQ(fp, g.Fingerprint());
  std::string tampered = FormatGeometryMeta(g);
  tampered.replace(tampered.find("layers=2"), 8, "layers=3");
  EXPECT_EQ(ParseGeometryMeta(tampered, &fp).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseGeometryMeta("0123", &fp).status().code(), absl::StatusCode::kInvalidArgument);
  // Extended geometries (an MLA latent, a tensor-parallel shard) round trip too, and a
  // metadata line that drops or alters their fields no longer matches its fingerprint.
  Geometry mla{61, 1, 576, DType::kBFloat16, 64};
  mla.kind = KvKind::kLatent;
  mla.rope_dim = 64;
  const Geometry shard = *Geometry{32, 8, 128, DType::kFp8E4m3, 16}.ForTensorParallelRank(3, 4);
  for (const Geometry& x : {mla, shard}) {
    SCOPED_TRACE(x.ToString());
    absl::StatusOr<Geometry> back = ParseGeometryMeta(FormatGeometryMeta(x), &fp);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, x);
    EXPECT_EQ(fp, x.Fingerprint());
  }
  std::string no_kind = FormatGeometryMeta(mla);
  no_kind.erase(no_kind.find(" kind=mla"), 9);
  EXPECT_EQ(ParseGeometryMeta(no_kind, &fp).status().code(), absl::StatusCode::kInvalidArgument);
  std::string other_rank = FormatGeometryMeta(shard);
  other_rank.replace(other_rank.find("kv_head_begin=6"), 15, "kv_head_begin=4");
  EXPECT_EQ(ParseGeometryMeta(other_rank, &fp).status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* word : {" kind=mla", " kind=xyz", " color=blue", " rope_dim=1 rope_dim=1"}) {
    std::string bad = FormatGeometryMeta(g);
    bad.insert(bad.find(" ("), word);
    EXPECT_EQ(ParseGeometryMeta(bad, &fp).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }

  uint64_t region_bytes = 0, regions = 0;
  ASSERT_TRUE(ParseLayoutMeta(FormatLayoutMeta(kRegionBytes, 7), &region_bytes, &regions).ok());
  EXPECT_EQ(region_bytes, kRegionBytes);
  EXPECT_EQ(regions, 7u);
  for (const char* bad :
       {"region_bytes=65536", "region_bytes=100 regions=4", "region_bytes=0 regions=4",
        "regions=4 region_bytes=65536", "region_bytes=x regions=4"}) {
    EXPECT_EQ(ParseLayoutMeta(bad, &region_bytes, &regions).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }

  for (uint32_t region : {0u, 1u, 0x01020304u, 0xffffffffu}) {
    absl::StatusOr<uint32_t> r = ParseRegionIndexKey(RegionIndexKey(region));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, region);
  }
  EXPECT_EQ(ParseRegionIndexKey("rXY").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseRegionIndexKey(BlockIndexKey(BlockKey{1, 2})).status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kvtier
