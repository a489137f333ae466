// The disk tier on its own: durable round trips, warm restart, refusal of foreign directories,
// corruption and faults that become misses (never wrong bytes), region reclaim, and erase.
// The lossy codecs: quantized_disk_tier_test.cc; reads in place: disk_tier_read_test.cc;
// Reserve / Submit: disk_tier_reservation_test.cc. Every test runs on both I/O backends
// (io_uring where the machine allows it, and the thread pool).

#include "tiers/disk_tier.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/mutex.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "tests/tiers/disk_tier_fixture.h"

namespace kvtier {
namespace {

TEST_P(DiskTierTest, WriteThenReadIsByteExact) {
  ASSERT_TRUE(Open(Options()).ok());
  std::vector<RecordId> ids;
  for (uint64_t i = 1; i <= 5; ++i) ids.push_back(WriteSync(BlockKey{i, i * 7}));
  for (uint64_t i = 1; i <= 5; ++i) {
    std::vector<char> got;
    ASSERT_TRUE(ReadSync(ids[i - 1], BlockKey{i, i * 7}, &got).ok());
    EXPECT_EQ(got, Content(BlockKey{i, i * 7}, tier_->block_bytes())) << i;
  }
  DiskTierStats st = tier_->Stats();
  EXPECT_EQ(st.records, 5u);
  EXPECT_EQ(st.writes_failed, 0u);
  // In place by default (where the destination is page-aligned: these vectors may or may
  // not be, depending on the allocator; InPlaceReadsLandVerifiedInAlignedDestinations covers
  // both cases).
  EXPECT_TRUE(DiskTierOptions{}.read_in_place);
  EXPECT_LE(st.reads_in_place, 5u);
  // ... where this kernel has transparent huge pages (ReadsGoInPlaceOnlyWhereTheKernelHas...).
  EXPECT_EQ(st.huge_pages, ReadHugePageSetting());
  EXPECT_EQ(st.read_in_place, st.huge_pages == HugePageSetting::kAlways ||
                                  st.huge_pages == HugePageSetting::kMadvise);
  if (!st.read_in_place) {
    EXPECT_EQ(st.reads_in_place, 0u);
  }
  EXPECT_FALSE(st.io_backend.empty());
  // The staging buffers, and how much of them the kernel gave huge pages (io_engine.h, IoMemory).
  EXPECT_GT(st.staging_bytes, 0u);
  EXPECT_EQ(st.staging_bytes % kIoAlignment, 0u);
  EXPECT_LE(st.staging_huge_page_bytes, st.staging_bytes);
}

TEST_P(DiskTierTest, ReopenRecoversEveryIndexedRecord) {
  ASSERT_TRUE(Open(Options()).ok());
  for (uint64_t i = 1; i <= 9; ++i) WriteSync(BlockKey{i, 1}, i % 2 ? "a" : "b");
  ASSERT_TRUE(Open(Options()).ok());  // closes, then reopens the same directory
  ASSERT_EQ(recovered_.size(), 9u);
  for (uint64_t i = 1; i <= 9; ++i) {
    auto it = recovered_.find(BlockKey{i, 1});
    ASSERT_NE(it, recovered_.end());
    EXPECT_EQ(it->second.first, i % 2 ? "a" : "b");
    std::vector<char> got;
    ASSERT_TRUE(ReadSync(it->second.second, BlockKey{i, 1}, &got, it->second.first).ok());
    EXPECT_EQ(got, Content(BlockKey{i, 1}, tier_->block_bytes()));
  }
  // And it keeps accepting writes after the restart, without clobbering old records.
  WriteSync(BlockKey{100, 1});
  std::vector<char> got;
  ASSERT_TRUE(ReadSync(recovered_[BlockKey{1, 1}].second, BlockKey{1, 1}, &got, "a").ok());
  EXPECT_EQ(got, Content(BlockKey{1, 1}, tier_->block_bytes()));
}

TEST_P(DiskTierTest, DirectoryOfAnotherGeometryIsRefusedNotMisread) {
  ASSERT_TRUE(Open(Options()).ok());
  WriteSync(BlockKey{1, 1});
  tier_.reset();
  Geometry other = TestGeometry();
  other.dtype = DType::kBFloat16;
  absl::Status s = Open(Options(), other);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("geometry"), absl::string_view::npos) << s;
  DiskTierOptions bigger = Options();
  bigger.capacity_bytes *= 2;
  s = Open(bigger);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("layout"), absl::string_view::npos) << s;
  ASSERT_TRUE(Open(Options()).ok());  // the right one still opens, data intact
  EXPECT_EQ(recovered_.size(), 1u);
}

TEST_P(DiskTierTest, DirectoryOfAnotherFormatVersionIsRefused) {
  ASSERT_TRUE(Open(Options()).ok());
  tier_.reset();
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_ + "/cache/index", &db).ok());
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), MetaIndexKey("format"), "99").ok());
  delete db;
  absl::Status s = Open(Options());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("format"), absl::string_view::npos) << s;
}

TEST_P(DiskTierTest, EntryPointingIntoAReusedRegionIsDroppedNotMisread) {
  ASSERT_TRUE(Open(Options()).ok());
  WriteSync(BlockKey{1, 1});
  tier_.reset();
  // As if region 0 had been reclaimed and rewritten while this entry survived (a crash
  // between the two): the region's generation moved on, the entry still names the old one.
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_ + "/cache/index", &db).ok());
  std::string gen;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), RegionIndexKey(0), &gen).ok());
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), RegionIndexKey(0), EncodeU64(*DecodeU64(gen) + 5))
                  .ok());
  delete db;
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_EQ(recovered_.count(BlockKey{1, 1}), 0u);
  // And the stale entry is gone from the index for good.
  tier_.reset();
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_ + "/cache/index", &db).ok());
  std::string value;
  EXPECT_TRUE(db->Get(rocksdb::ReadOptions(), BlockIndexKey(BlockKey{1, 1}), &value).IsNotFound());
  delete db;
}

// A damaged or hostile index entry whose offset is near 2^64 made offset + record_bytes wrap
// around, so it passed the check that a record lies inside its region and was recovered,
// pointing outside the data file (and setting its region's write offset to a wrapped value).
// It must be dropped like any other entry that points at no valid record.
TEST_P(DiskTierTest, EntryWhoseOffsetWrapsAroundIsDroppedNotRecovered) {
  ASSERT_TRUE(Open(Options()).ok());
  WriteSync(BlockKey{1, 1});
  tier_.reset();
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_ + "/cache/index", &db).ok());
  std::string value;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), BlockIndexKey(BlockKey{1, 1}), &value).ok());
  absl::StatusOr<IndexEntry> e = DecodeIndexEntry(value);
  ASSERT_TRUE(e.ok()) << e.status();
  for (uint32_t region : {0u, 1u}) {
    IndexEntry bad = *e;  // the real entry's generation and sizes; only the offset is wrong
    bad.region = region;
    bad.offset = ~uint64_t{kRecordAlignment - 1};  // 2^64 - 4096: + record_bytes wraps to small
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), BlockIndexKey(BlockKey{9, region}),
                        EncodeIndexEntry(bad))
                    .ok());
  }
  delete db;
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_EQ(recovered_.count(BlockKey{9, 0}), 0u);
  EXPECT_EQ(recovered_.count(BlockKey{9, 1}), 0u);
  EXPECT_EQ(recovered_.count(BlockKey{1, 1}), 1u);  // the real record is untouched
  // The tier still writes and reads back correctly after recovering from such an index.
  std::vector<char> out;
  for (uint64_t i = 0; i < 12; ++i) {
    const RecordId id = WriteSync(BlockKey{2, i});
    ASSERT_TRUE(ReadSync(id, BlockKey{2, i}, &out).ok());
    EXPECT_EQ(out, Content(BlockKey{2, i}, tier_->block_bytes()));
  }
  tier_.reset();
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_ + "/cache/index", &db).ok());
  EXPECT_TRUE(db->Get(rocksdb::ReadOptions(), BlockIndexKey(BlockKey{9, 0}), &value).IsNotFound());
  EXPECT_TRUE(db->Get(rocksdb::ReadOptions(), BlockIndexKey(BlockKey{9, 1}), &value).IsNotFound());
  delete db;
}

TEST_P(DiskTierTest, DirectoryInUseIsRefused) {
  ASSERT_TRUE(Open(Options()).ok());
  auto second = DiskTier::Open(Options(), TestGeometry(), [](auto&&...) {}, nullptr);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_NE(second.status().message().find("in use"), absl::string_view::npos);
}

TEST_P(DiskTierTest, FlippedPayloadByteIsDataLossNotWrongData) {
  ASSERT_TRUE(Open(Options()).ok());
  const RecordId a = WriteSync(BlockKey{1, 1});
  const RecordId b = WriteSync(BlockKey{2, 2});
  // Record a is the first in region 0: its payload starts right after its 4 KiB header.
  FlipByte(kRecordHeaderBytes + 100);
  std::vector<char> got;
  absl::Status s = ReadSync(a, BlockKey{1, 1}, &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(got, std::vector<char>(tier_->block_bytes(), 0)) << "destination must be zeroed";
  EXPECT_EQ(tier_->Stats().checksum_failures, 1u);
  EXPECT_EQ(ReadSync(a, BlockKey{1, 1}, &got).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(ReadSync(b, BlockKey{2, 2}, &got).ok());  // its neighbour is untouched
  // The dropped entry stays dropped across a restart.
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_EQ(recovered_.count(BlockKey{1, 1}), 0u);
  EXPECT_EQ(recovered_.count(BlockKey{2, 2}), 1u);
}

TEST_P(DiskTierTest, HeaderThatDisagreesWithTheIndexIsDataLoss) {
  ASSERT_TRUE(Open(Options()).ok());
  const RecordId a = WriteSync(BlockKey{1, 1});
  WriteSync(BlockKey{2, 2});
  // Copy record 2's whole record over record 1's: valid checksums, wrong identity.
  const size_t rec = RecordSize(tier_->block_bytes());
  std::string other(rec, '\0');
  const int fd = ::open((dir_ + "/cache/data.kvt").c_str(), O_RDONLY);
  ASSERT_EQ(::pread(fd, other.data(), rec, static_cast<off_t>(rec)), static_cast<ssize_t>(rec));
  ::close(fd);
  Corrupt(0, other);
  std::vector<char> got;
  absl::Status s = ReadSync(a, BlockKey{1, 1}, &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("disagrees"), absl::string_view::npos) << s;
  EXPECT_EQ(got, std::vector<char>(tier_->block_bytes(), 0));
}

TEST_P(DiskTierTest, TruncatedDataFileIsRefusedNotReadAsMisses) {
  ASSERT_TRUE(Open(Options()).ok());
  WriteSync(BlockKey{1, 1});
  WriteSync(BlockKey{2, 2});
  tier_.reset();
  // Cut the file inside record 2: the superblock at its end goes with the cut, and the
  // directory is refused (it used to be grown back with zeros and opened silently).
  const std::string data = dir_ + "/cache/data.kvt";
  ASSERT_EQ(::truncate(data.c_str(), static_cast<off_t>(RecordSize(8192) + 4096)), 0);
  const absl::Status s = Open(Options());
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_NE(s.message().find("truncated"), absl::string_view::npos) << s;
  EXPECT_EQ(std::filesystem::file_size(data), RecordSize(8192) + 4096);
}

TEST_P(DiskTierTest, FullDiskReclaimsTheOldestRegionWhole) {
  ASSERT_TRUE(Open(Options()).ok());
  const size_t per_region = (64 * 1024) / RecordSize(8192);  // 3 records of 20 KiB
  const size_t total = per_region * 4 + 2;  // more than the 4 regions hold
  std::vector<RecordId> ids;
  for (uint64_t i = 0; i < total; ++i) ids.push_back(WriteSync(BlockKey{i + 1, 9}));
  DiskTierStats st = tier_->Stats();
  EXPECT_EQ(st.regions_reclaimed, 1u);
  EXPECT_EQ(st.records_dropped, per_region);
  {
    std::lock_guard<std::mutex> l(dropped_mu_);
    ASSERT_EQ(dropped_.size(), per_region);
    for (size_t i = 0; i < per_region; ++i) EXPECT_EQ(dropped_[i], (BlockKey{i + 1, 9}));
  }
  // The newest records all read back.
  for (uint64_t i = per_region; i < total; ++i) {
    std::vector<char> got;
    ASSERT_TRUE(ReadSync(ids[i], BlockKey{i + 1, 9}, &got).ok()) << i;
    EXPECT_EQ(got, Content(BlockKey{i + 1, 9}, tier_->block_bytes()));
  }
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_EQ(recovered_.size(), total - per_region);
  EXPECT_EQ(recovered_.count(BlockKey{1, 9}), 0u);
}

// When every staging buffer is busy with a write in flight, the next Write waits for one
// to come free rather than refusing at once (which made the engine drop evicted blocks a
// fast GPU produced faster than the disk wrote them).
TEST_P(DiskTierTest, AWriteWaitsForAStagingBufferInsteadOfRefusing) {
  DiskTierOptions o = Options();
  o.staging_buffers = 2;  // plus 8 overflow buffers: 10 writes in flight at most
  o.codec = Codec::kNone;  // one buffer per write
  ASSERT_TRUE(Open(o).ok());
  tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 0, absl::Milliseconds(200)});
  constexpr int kWrites = 12;
  std::vector<std::vector<char>> contents;
  for (int i = 0; i < kWrites; ++i) {
    contents.push_back(Content(BlockKey{uint64_t(i) + 1, 5}, tier_->block_bytes()));
  }
  std::mutex mu;
  std::vector<absl::Status> results;
  std::vector<RecordId> ids;
  absl::Duration slowest_call;
  for (int i = 0; i < kWrites; ++i) {
    const absl::Time start = absl::Now();
    absl::StatusOr<RecordId> id = tier_->Write(BlockKey{uint64_t(i) + 1, 5}, "default",
                                               contents[i].data(), [&](absl::Status s) {
                                                 std::lock_guard<std::mutex> l(mu);
                                                 results.push_back(s);
                                               });
    slowest_call = std::max(slowest_call, absl::Now() - start);
    ASSERT_TRUE(id.ok()) << "write " << i << ": " << id.status();
    ids.push_back(*id);
  }
  EXPECT_GE(slowest_call, absl::Milliseconds(100)) << "no write waited for a buffer";
  EXPECT_LT(slowest_call, DiskTier::kStagingWait);
  tier_->Drain();
  tier_->io().ClearFaults();
  ASSERT_EQ(results.size(), size_t{kWrites});
  for (const absl::Status& r : results) EXPECT_TRUE(r.ok()) << r;
  for (int i = 0; i < kWrites; ++i) {
    std::vector<char> got;
    ASSERT_TRUE(ReadSync(ids[i], BlockKey{uint64_t(i) + 1, 5}, &got).ok()) << i;
    EXPECT_EQ(got, contents[i]) << i;
  }
}

// A read takes its record's location when it starts; the region must not be reclaimed and
// rewritten before the read lands, or the read finds another record there (a spurious
// DataLoss for a block that was cached). With a read of the oldest region held in flight,
// the next region to go is the next oldest.
TEST_P(DiskTierTest, RegionWithAReadInFlightIsNotReclaimedUnderIt) {
  ASSERT_TRUE(Open(Options()).ok());
  const size_t per_region = (64 * 1024) / RecordSize(8192);  // 3 records of 20 KiB
  std::vector<RecordId> ids;
  for (uint64_t i = 0; i < per_region * 4; ++i) ids.push_back(WriteSync(BlockKey{i + 1, 9}));
  ASSERT_EQ(tier_->Stats().regions_reclaimed, 0u);
  // The read of the first record (oldest region) is held for 300 ms after its Submit.
  tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 1, absl::Milliseconds(300)});
  std::vector<char> got(tier_->block_bytes(), 'P');
  absl::Status read_status = absl::UnknownError("not done");
  ASSERT_TRUE(tier_->Read(ids[0], BlockKey{1, 9}, "default", got.data(), [&](absl::Status st) {
                read_status = st;
              }).ok());
  // Needs a region: all four are full, the oldest has the read in flight.
  const BlockKey next{100, 9};
  const std::vector<char> c = Content(next, tier_->block_bytes());
  absl::Status write_status = absl::UnknownError("not done");
  ASSERT_TRUE(tier_->Write(next, "default", c.data(), [&](absl::Status st) {
                write_status = st;
              }).ok());
  tier_->Drain();
  EXPECT_TRUE(write_status.ok()) << write_status;
  EXPECT_TRUE(read_status.ok()) << read_status;
  EXPECT_EQ(got, Content(BlockKey{1, 9}, tier_->block_bytes()));
  EXPECT_EQ(tier_->Stats().regions_reclaimed, 1u);
  {
    std::lock_guard<std::mutex> l(dropped_mu_);
    ASSERT_EQ(dropped_.size(), per_region);
    for (size_t i = 0; i < per_region; ++i) {
      EXPECT_EQ(dropped_[i], (BlockKey{per_region + i + 1, 9})) << "the second region goes";
    }
  }
  // Once the read has landed, the oldest region is the next to go again.
  for (uint64_t i = 0; i < per_region; ++i) WriteSync(BlockKey{200 + i, 9});
  std::lock_guard<std::mutex> l(dropped_mu_);
  ASSERT_EQ(dropped_.size(), 2 * per_region);
  EXPECT_EQ(dropped_[per_region], (BlockKey{1, 9}));
}

TEST_P(DiskTierTest, ARegionWithAReadQueuedForABufferIsNotReclaimedUnderIt) {
  DiskTierOptions o = Options();
  o.staging_buffers = 2;
  ASSERT_TRUE(Open(o).ok());
  const size_t per_region = (64 * 1024) / RecordSize(8192);
  std::vector<RecordId> ids;
  for (uint64_t i = 0; i < per_region * 4; ++i) ids.push_back(WriteSync(BlockKey{i + 1, 9}));
  // Two reads of the second region take both staging buffers and are held; a third read, of
  // the oldest region, queues for a buffer.
  tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 2, absl::Milliseconds(300)});
  std::vector<std::vector<char>> got(3, std::vector<char>(tier_->block_bytes(), 'P'));
  std::vector<absl::Status> status(3, absl::UnknownError("not done"));
  const size_t which[3] = {per_region, per_region + 1, 0};
  for (int r = 0; r < 3; ++r) {
    const uint64_t i = which[r];
    ASSERT_TRUE(tier_->Read(ids[i], BlockKey{i + 1, 9}, "default", got[r].data(),
                            [&status, r](absl::Status st) { status[r] = st; })
                    .ok());
  }
  // A new record needs a region while the third read still waits for its buffer: the oldest
  // region must not be reclaimed under it.
  const BlockKey next{100, 9};
  const std::vector<char> c = Content(next, tier_->block_bytes());
  absl::Status write_status = absl::UnknownError("not done");
  ASSERT_TRUE(tier_->Write(next, "default", c.data(), [&](absl::Status st) {
                write_status = st;
              }).ok());
  tier_->Drain();
  EXPECT_TRUE(write_status.ok()) << write_status;
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(status[r].ok()) << r << ": " << status[r];
    EXPECT_EQ(got[r], Content(BlockKey{which[r] + 1, 9}, tier_->block_bytes())) << r;
  }
  std::lock_guard<std::mutex> l(dropped_mu_);
  ASSERT_EQ(dropped_.size(), per_region);
  EXPECT_EQ(dropped_[0], (BlockKey{2 * per_region + 1, 9})) << "the third region goes";
}

TEST_P(DiskTierTest, EraseIsDurable) {
  ASSERT_TRUE(Open(Options()).ok());
  const RecordId a = WriteSync(BlockKey{1, 1});
  WriteSync(BlockKey{2, 2});
  ASSERT_TRUE(tier_->Erase(a, BlockKey{1, 1}).ok());
  ASSERT_TRUE(tier_->Erase(a, BlockKey{1, 1}).ok());  // idempotent
  std::vector<char> got;
  EXPECT_EQ(ReadSync(a, BlockKey{1, 1}, &got).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_EQ(recovered_.size(), 1u);
  EXPECT_EQ(recovered_.count(BlockKey{2, 2}), 1u);
}

TEST_P(DiskTierTest, WriteFaultsFailThatWriteOnlyAndLoseNothing) {
  ASSERT_TRUE(Open(Options()).ok());
  const RecordId a = WriteSync(BlockKey{1, 1});
  for (FaultSpec::Kind kind : {FaultSpec::Kind::kEio, FaultSpec::Kind::kEnospc,
                               FaultSpec::Kind::kShortWrite}) {
    tier_->io().InjectFault(FaultSpec{kind, 0, 1});
    absl::Status result;
    WriteSync(BlockKey{50 + static_cast<uint64_t>(kind), 1}, "default", &result);
    EXPECT_FALSE(result.ok()) << "fault " << static_cast<int>(kind);
    EXPECT_NE(result.message().find(BlockKey{50 + static_cast<uint64_t>(kind), 1}.ToHex()),
              absl::string_view::npos)
        << result;
  }
  EXPECT_EQ(tier_->Stats().writes_failed, 3u);
  std::vector<char> got;
  ASSERT_TRUE(ReadSync(a, BlockKey{1, 1}, &got).ok());
  EXPECT_EQ(got, Content(BlockKey{1, 1}, tier_->block_bytes()));
  const RecordId b = WriteSync(BlockKey{2, 2});  // and it keeps working
  ASSERT_TRUE(ReadSync(b, BlockKey{2, 2}, &got).ok());
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_EQ(recovered_.size(), 2u);  // failed writes never reached the index
}

TEST_P(DiskTierTest, ReadFaultsAreMissesNotWrongData) {
  ASSERT_TRUE(Open(Options()).ok());
  const RecordId a = WriteSync(BlockKey{1, 1});
  const RecordId b = WriteSync(BlockKey{2, 2});
  tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kShortRead, 0, 1});
  std::vector<char> got;
  absl::Status s = ReadSync(a, BlockKey{1, 1}, &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(got, std::vector<char>(tier_->block_bytes(), 0));
  tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kEio, 0, 1});
  s = ReadSync(b, BlockKey{2, 2}, &got);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(got, std::vector<char>(tier_->block_bytes(), 0));
  const RecordId c = WriteSync(BlockKey{3, 3});
  ASSERT_TRUE(ReadSync(c, BlockKey{3, 3}, &got).ok());
  EXPECT_EQ(got, Content(BlockKey{3, 3}, tier_->block_bytes()));
}

TEST_P(DiskTierTest, CompressedRecordsRoundTripAndSurviveRestart) {
  DiskTierOptions o = Options();
  o.codec = Codec::kZstdShuffle;
  o.region_bytes = 128 * 1024;
  o.capacity_bytes = 4 * o.region_bytes;
  ASSERT_TRUE(Open(o).ok());
  // Low-entropy "KV": repeated small halves compress well.
  std::vector<char> block(tier_->block_bytes());
  for (size_t i = 0; i < block.size(); i += 2) {
    block[i] = static_cast<char>(i % 7);
    block[i + 1] = 0x3c;
  }
  absl::Status st;
  auto id = tier_->Write(BlockKey{7, 7}, "default", block.data(), [&](absl::Status s) { st = s; });
  ASSERT_TRUE(id.ok());
  tier_->Drain();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_LT(tier_->Stats().bytes_written, RecordSize(block.size()));
  ASSERT_TRUE(Open(o).ok());
  std::vector<char> got(block.size());
  absl::Status rs;
  ASSERT_TRUE(tier_->Read(recovered_[BlockKey{7, 7}].second, BlockKey{7, 7}, "default",
                          got.data(), [&](absl::Status s) { rs = s; })
                  .ok());
  tier_->Drain();
  ASSERT_TRUE(rs.ok()) << rs;
  EXPECT_EQ(got, block);
}

TEST_P(DiskTierTest, RecordsArePlacedInSubmissionOrderWhateverOrderTheCodecThreadsFinish) {
  DiskTierOptions o = Options();
  o.codec = Codec::kZstd;
  o.codec_threads = 4;
  o.staging_buffers = 16;
  o.region_bytes = 128 * 1024;
  o.capacity_bytes = 8 * o.region_bytes;
  ASSERT_TRUE(Open(o).ok());
  // Incompressible blocks (zstd's slow path) between all-zero ones (its fast path): the codec
  // threads finish them out of order.
  constexpr int kBlocks = 40;
  std::vector<BlockKey> keys;
  std::atomic<int> failed{0};
  for (int i = 0; i < kBlocks; ++i) {
    const BlockKey key{static_cast<uint64_t>(i) + 1, 99};
    std::vector<char> block = Content(key, tier_->block_bytes());
    if (i % 2 == 1) std::fill(block.begin(), block.end(), 0);
    ASSERT_TRUE(tier_
                    ->Write(key, "default", block.data(),
                            [&](absl::Status s) {
                              if (!s.ok()) failed.fetch_add(1);
                            })
                    .ok());
    keys.push_back(key);
  }
  tier_->Drain();
  ASSERT_EQ(failed.load(), 0);
  ASSERT_EQ(tier_->Stats().records, static_cast<uint64_t>(kBlocks));
  // Every record header in the data file, by offset.
  const int fd = ::open((dir_ + "/cache/data.kvt").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<char> file(o.capacity_bytes + 4096);
  const ssize_t n = ::pread(fd, file.data(), file.size(), 0);
  ::close(fd);
  ASSERT_GT(n, 0);
  std::vector<BlockKey> on_disk;
  for (size_t at = 0; at + kRecordHeaderBytes <= static_cast<size_t>(n); at += 4096) {
    absl::StatusOr<RecordHeader> h = ParseRecordHeader(file.data() + at, n - at);
    if (h.ok() && h->key.lo == 99) on_disk.push_back(h->key);
  }
  EXPECT_EQ(on_disk, keys);
}

TEST_P(DiskTierTest, BadOptionsNameTheField) {
  DiskTierOptions o = Options();
  o.region_bytes = 1000;
  EXPECT_NE(Open(o).message().find("region_bytes"), absl::string_view::npos);
  o = Options();
  o.capacity_bytes = o.region_bytes;
  EXPECT_NE(Open(o).message().find("fewer than 2 regions"), absl::string_view::npos);
  o = Options();
  o.directory = "/nonexistent-kvtier/x/y";
  absl::Status s = Open(o);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent-kvtier/x/y"), absl::string_view::npos) << s;
}

TEST_P(DiskTierTest, ConcurrentWritesReadsAndErases) {
  DiskTierOptions o = Options();
  o.capacity_bytes = 16 * o.region_bytes;
  o.staging_buffers = 16;
  ASSERT_TRUE(Open(o).ok());
  std::atomic<int> wrong{0};
  auto worker = [&](int t) {
    std::mt19937 rng(t);
    for (int i = 0; i < 60; ++i) {
      const BlockKey key{static_cast<uint64_t>(t * 1000 + i + 1), 3};
      const std::vector<char> c = Content(key, tier_->block_bytes());
      Notification written;
      absl::Status ws;
      auto id = tier_->Write(key, "default", c.data(), [&](absl::Status s) {
        ws = s;
        written.Notify();
      });
      if (!id.ok()) continue;  // staging busy: acceptable
      written.WaitForNotification();
      if (!ws.ok()) continue;
      std::vector<char> got(c.size());
      Notification read;
      absl::Status rs;
      if (tier_->Read(*id, key, "default", got.data(), [&](absl::Status s) {
            rs = s;
            read.Notify();
          }).ok()) {
        read.WaitForNotification();
        if (rs.ok() && got != c) ++wrong;
      }
      if (rng() % 3 == 0) (void)tier_->Erase(*id, key);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// Every region but the full active one has a read in flight: the next write cannot be placed
// at once, and waits for a read to land (then reclaims that region) rather than fail.
TEST_P(DiskTierTest, AWriteWaitsForARegionWithoutIoInsteadOfFailing) {
  ASSERT_TRUE(Open(Options()).ok());
  const size_t per_region = (64 * 1024) / RecordSize(8192);
  std::vector<RecordId> ids;
  for (uint64_t i = 0; i < per_region * 4; ++i) ids.push_back(WriteSync(BlockKey{i + 1, 3}));
  ASSERT_EQ(tier_->Stats().free_regions, 0u);
  // One read in each of regions 0, 1 and 2, each held 300 ms.
  tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 3, absl::Milliseconds(300)});
  std::vector<std::vector<char>> got(3, std::vector<char>(tier_->block_bytes()));
  Heard reads;
  for (size_t r = 0; r < 3; ++r) {
    const uint64_t i = r * per_region;
    ASSERT_TRUE(
        tier_->Read(ids[i], BlockKey{i + 1, 3}, "default", got[r].data(), reads.Callback()).ok());
  }
  const BlockKey next{500, 3};
  const std::vector<char> c = Content(next, tier_->block_bytes());
  Heard write;
  const absl::Time start = absl::Now();
  absl::StatusOr<RecordId> id = tier_->Write(next, "default", c.data(), write.Callback());
  ASSERT_TRUE(id.ok()) << id.status();
  write.first.WaitForNotification();
  const absl::Duration waited = absl::Now() - start;
  tier_->Drain();
  EXPECT_TRUE(write.at(0).ok()) << write.at(0);
  EXPECT_GE(waited, absl::Milliseconds(200)) << "placed while every region had a read in flight";
  ASSERT_EQ(reads.count(), 3u);
  for (size_t r = 0; r < 3; ++r) {
    EXPECT_TRUE(reads.at(r).ok()) << reads.at(r);
    EXPECT_EQ(got[r], Content(BlockKey{r * per_region + 1, 3}, tier_->block_bytes())) << r;
  }
  std::vector<char> back;
  ASSERT_TRUE(ReadSync(*id, next, &back).ok());
  EXPECT_EQ(back, c);
}

INSTANTIATE_TEST_SUITE_P(Backends, DiskTierTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ThreadPool" : "IoUring";
                         });

}  // namespace
}  // namespace kvtier
