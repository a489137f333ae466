// The disk tier's reads into their destination: in place (the payload straight into a
// page-aligned destination, verified there) or through a staging buffer, and reads their
// reader abandons (a Load's deadline passed), on both I/O backends. The rest of the tier:
// disk_tier_test.cc.

#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/io_memory.h"
#include "gtest/gtest.h"
#include "tests/tiers/disk_tier_fixture.h"
#include "tiers/disk_tier.h"
#include "tiers/read_claim.h"

namespace kvtier {
namespace {

class DiskTierReadTest : public DiskTierTest {
 protected:
  // A file that reads as the kernel's transparent huge page setting (DiskTierOptions::
  // hugepage_setting_path) and says `contents`.
  std::string SettingFile(const std::string& contents) {
    const std::string path = dir_ + "/hugepage-setting-" + std::to_string(++settings_);
    std::ofstream(path) << contents;
    return path;
  }
  // read_in_place, with the kernel's setting "madvise" whatever this machine's is: the tests
  // of in-place reads must not pass on the staging path where it is "never".
  DiskTierOptions InPlaceOptions() {
    DiskTierOptions o = Options();
    o.read_in_place = true;
    o.hugepage_setting_path = SettingFile("always [madvise] never\n");
    return o;
  }

  // Opens the tier with two staging buffers and `read_in_place`, writes `keys`, holds the
  // first two reads 300 ms in the I/O layer (a slow device), reads each key into its
  // destination under a claim, abandons every claim, and drains. The third read queued for a
  // staging buffer, so it is abandoned before any I/O. Returns each read's status; `ids` gets
  // the records' ids.
  std::vector<absl::Status> ReadThenAbandon(bool read_in_place, const std::vector<BlockKey>& keys,
                                            const std::vector<char*>& dsts,
                                            std::vector<RecordId>* ids) {
    DiskTierOptions o = read_in_place ? InPlaceOptions() : Options();
    o.staging_buffers = 2;
    o.read_in_place = read_in_place;
    EXPECT_TRUE(Open(o).ok());
    for (const BlockKey& k : keys) ids->push_back(WriteSync(k));
    tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 2, absl::Milliseconds(300)});
    std::vector<std::shared_ptr<ReadClaim>> claims;
    std::vector<absl::Status> status(keys.size(), absl::UnknownError("not done"));
    for (size_t i = 0; i < keys.size(); ++i) {
      claims.push_back(std::make_shared<ReadClaim>());
      EXPECT_TRUE(tier_
                      ->Read((*ids)[i], keys[i], "default", dsts[i],
                             [&status, i](absl::Status s) { status[i] = s; }, claims[i])
                      .ok());
    }
    for (const auto& c : claims) EXPECT_TRUE(c->Abandon());
    tier_->Drain();
    const DiskTierStats st = tier_->Stats();
    EXPECT_EQ(st.reads_abandoned, keys.size());
    EXPECT_EQ(st.reads_abandoned_before_io, 1u);
    EXPECT_EQ(st.read_in_place, read_in_place);
    return status;
  }

  // Every record is intact after its reads were abandoned.
  void ExpectIntact(const std::vector<BlockKey>& keys, const std::vector<RecordId>& ids) {
    std::vector<char> out;
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_TRUE(ReadSync(ids[i], keys[i], &out).ok());
      EXPECT_EQ(out, Content(keys[i], tier_->block_bytes())) << i;
    }
  }

 private:
  int settings_ = 0;
};

// read_in_place: the payload lands straight in a page-aligned destination (one readv) and is
// verified there; a destination that is not page-aligned takes the staging path; a corrupt
// payload read in place is DataLoss with the destination zeroed, as through staging.
TEST_P(DiskTierReadTest, InPlaceReadsLandVerifiedInAlignedDestinations) {
  DiskTierOptions o = InPlaceOptions();
  o.codec_threads = 2;
  ASSERT_TRUE(Open(o).ok());
  const size_t bytes = tier_->block_bytes();
  ASSERT_EQ(bytes % 4096, 0u);
  std::vector<RecordId> ids;
  for (uint64_t i = 1; i <= 4; ++i) ids.push_back(WriteSync(BlockKey{i, i}));
  absl::StatusOr<void*> mem = AllocateAligned(bytes + 4096);
  ASSERT_TRUE(mem.ok());
  char* const aligned = static_cast<char*>(*mem);
  auto read_into = [&](RecordId id, const BlockKey& key, char* dst) {
    std::memset(dst, 'P', bytes);
    absl::Status status = absl::UnknownError("done not called");
    EXPECT_TRUE(tier_->Read(id, key, "default", dst, [&](absl::Status st) { status = st; }).ok());
    tier_->Drain();
    return status;
  };
  for (uint64_t i = 1; i <= 4; ++i) {
    ASSERT_TRUE(read_into(ids[i - 1], BlockKey{i, i}, aligned).ok());
    EXPECT_EQ(std::vector<char>(aligned, aligned + bytes), Content(BlockKey{i, i}, bytes)) << i;
  }
  EXPECT_EQ(tier_->Stats().reads_in_place, 4u);
  // 512 bytes off a page: staging, and still exact.
  ASSERT_TRUE(read_into(ids[1], BlockKey{2, 2}, aligned + 512).ok());
  EXPECT_EQ(std::vector<char>(aligned + 512, aligned + 512 + bytes),
            Content(BlockKey{2, 2}, bytes));
  EXPECT_EQ(tier_->Stats().reads_in_place, 4u);
  // Record 1 is first in region 0: its payload starts right after its header.
  FlipByte(kRecordHeaderBytes + 100);
  absl::Status s = read_into(ids[0], BlockKey{1, 1}, aligned);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(std::vector<char>(aligned, aligned + bytes), std::vector<char>(bytes, 0))
      << "destination must be zeroed";
  EXPECT_EQ(tier_->Stats().checksum_failures, 1u);
  EXPECT_EQ(tier_->Stats().reads_in_place, 4u);
  FreeAligned(aligned);
}

// Where the kernel has no transparent huge pages ("never", or no setting file: built without
// them) or its setting cannot be told, an in-place read would pin every 4 KiB page of its
// destination: the tier reads through staging whatever read_in_place says, with the same
// bytes. With "always" or "madvise" it reads in place, unless read_in_place is off.
TEST_P(DiskTierReadTest, ReadsGoInPlaceOnlyWhereTheKernelHasHugePages) {
  struct Case {
    std::string contents;  // empty: no such file
    bool option;
    HugePageSetting setting;
    bool in_place;
  };
  const Case cases[] = {
      {"always madvise [never]\n", true, HugePageSetting::kNever, false},
      {"", true, HugePageSetting::kNone, false},
      {"always madvise never\n", true, HugePageSetting::kUnknown, false},
      {"[always] madvise never\n", true, HugePageSetting::kAlways, true},
      {"always [madvise] never\n", true, HugePageSetting::kMadvise, true},
      {"[always] madvise never\n", false, HugePageSetting::kAlways, false},
  };
  const size_t bytes = TestGeometry().block_bytes();
  absl::StatusOr<void*> mem = AllocateAligned(bytes);
  ASSERT_TRUE(mem.ok());
  char* const dst = static_cast<char*>(*mem);
  uint64_t n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.contents.empty() ? "no setting file" : c.contents);
    DiskTierOptions o = Options();
    o.read_in_place = c.option;
    o.hugepage_setting_path = c.contents.empty() ? dir_ + "/no-such-file" : SettingFile(c.contents);
    ASSERT_TRUE(Open(o).ok());
    DiskTierStats st = tier_->Stats();
    EXPECT_EQ(st.huge_pages, c.setting) << HugePageSettingName(st.huge_pages);
    EXPECT_EQ(st.read_in_place, c.in_place);
    const BlockKey key{++n, 8};
    const RecordId id = WriteSync(key);
    std::memset(dst, 'P', bytes);
    absl::Status s = absl::UnknownError("not done");
    ASSERT_TRUE(tier_->Read(id, key, "default", dst, [&](absl::Status st) { s = st; }).ok());
    tier_->Drain();
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(std::vector<char>(dst, dst + bytes), Content(key, bytes));
    EXPECT_EQ(tier_->Stats().reads_in_place, c.in_place ? 1u : 0u);
  }
  FreeAligned(dst);
}

// A reader that gives up on its reads (ReadClaim::Abandon). Through staging (read_in_place
// off), a read already submitted settles without touching its destination; one still queued
// for a staging buffer is dropped without any I/O. Both report Cancelled, and the records stay
// intact.
TEST_P(DiskTierReadTest, AbandonedReadsNeverTouchTheirDestination) {
  const std::vector<BlockKey> keys = {{1, 5}, {2, 5}, {3, 5}};
  const size_t bytes = TestGeometry().block_bytes();
  std::vector<std::vector<char>> got(3, std::vector<char>(bytes, 'P'));
  std::vector<RecordId> ids;
  const std::vector<absl::Status> status =
      ReadThenAbandon(false, keys, {got[0].data(), got[1].data(), got[2].data()}, &ids);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(absl::IsCancelled(status[i])) << i << ": " << status[i];
    EXPECT_EQ(got[i], std::vector<char>(bytes, 'P')) << "abandoned destination " << i << " written";
  }
  ExpectIntact(keys, ids);
  // A claim the tier took first cannot be abandoned: the reader waits for its bytes.
  ReadClaim claimed;
  EXPECT_TRUE(claimed.Claim());
  EXPECT_FALSE(claimed.Abandon());
  EXPECT_FALSE(claimed.abandoned());
}

// In place (the default), an abandoned read whose I/O was already in the kernel may still land
// its block's own bytes in its destination until it settles (read_claim.h): the destination
// holds either what the reader left there or exactly that block, never another's, never a
// mix; nothing lands after Drain, and a read abandoned before its I/O touches nothing.
TEST_P(DiskTierReadTest, AbandonedInPlaceReadsLandNothingButTheirOwnBlock) {
  const std::vector<BlockKey> keys = {{1, 6}, {2, 6}, {3, 6}};
  const size_t bytes = TestGeometry().block_bytes();  // whole pages: reads may land in place
  absl::StatusOr<void*> mem = AllocateAligned(4 * bytes);
  ASSERT_TRUE(mem.ok());
  char* const base = static_cast<char*>(*mem);
  std::memset(base, 'P', 4 * bytes);
  std::vector<RecordId> ids;
  const std::vector<absl::Status> status =
      ReadThenAbandon(true, keys, {base, base + bytes, base + 2 * bytes}, &ids);
  const std::vector<char> untouched(bytes, 'P');
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(absl::IsCancelled(status[i])) << i << ": " << status[i];
    const std::vector<char> got(base + i * bytes, base + (i + 1) * bytes);
    if (i == 2) {
      EXPECT_EQ(got, untouched) << "a read abandoned before its I/O wrote its destination";
    } else {
      EXPECT_TRUE(got == untouched || got == Content(keys[i], bytes))
          << "destination " << i << " holds neither what was there nor its own block";
    }
  }
  // Settled: nothing lands after Drain.
  const std::vector<char> after(base, base + 3 * bytes);
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(std::vector<char>(base, base + 3 * bytes), after);
  // The tier really reads in place into these destinations (else this test would pass on the
  // staging path): a read that is not abandoned lands in place and is counted.
  absl::Status s = absl::UnknownError("not done");
  ASSERT_TRUE(
      tier_->Read(ids[0], keys[0], "default", base + 3 * bytes, [&](absl::Status st) { s = st; })
          .ok());
  tier_->Drain();
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(tier_->Stats().reads_in_place, 1u);
  EXPECT_EQ(std::vector<char>(base + 3 * bytes, base + 4 * bytes), Content(keys[0], bytes));
  ExpectIntact(keys, ids);
  FreeAligned(base);
}

INSTANTIATE_TEST_SUITE_P(Backends, DiskTierReadTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ThreadPool" : "IoUring";
                         });

}  // namespace
}  // namespace kvtier
