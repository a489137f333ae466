// The disk tier's two-step write (Reserve, then Submit with the bytes): a read of a
// reservation waits for its Submit; an erase, a missing buffer or a close before the Submit
// abandons the record (its waiting reads hear kCancelled, nothing is written or recovered);
// a Submit of an unknown or already submitted id fails without calling its callback; Drain
// waits for reservations. Every test runs on both I/O backends.

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/tiers/disk_tier_fixture.h"
#include "tiers/disk_tier.h"

namespace kvtier {
namespace {

using DiskTierReservationTest = DiskTierTest;

// Reserves `key` and starts a read of the reservation into `got` (filled with 'P' first),
// heard by `read`; the read waits for the reservation's write.
RecordId ReserveWithAWaitingRead(DiskTier& tier, const BlockKey& key, std::vector<char>* got,
                                 Heard* read) {
  absl::StatusOr<RecordId> id = tier.Reserve(key, "default");
  EXPECT_TRUE(id.ok()) << id.status();
  got->assign(tier.block_bytes(), 'P');
  EXPECT_TRUE(tier.Read(id.value_or(0), key, "default", got->data(), read->Callback()).ok());
  return id.value_or(0);
}

TEST_P(DiskTierReservationTest, AReadOfAReservationWaitsForItsSubmit) {
  ASSERT_TRUE(Open(Options()).ok());
  const BlockKey key{1, 2};
  std::vector<char> got;
  Heard read;
  const RecordId id = ReserveWithAWaitingRead(*tier_, key, &got, &read);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(read.count(), 0u) << "a read of a reservation must wait for its bytes";
  const std::vector<char> c = Content(key, tier_->block_bytes());
  Heard write;
  ASSERT_TRUE(tier_->Submit(id, c.data(), write.Callback()).ok());
  tier_->Drain();
  ASSERT_EQ(write.count(), 1u);
  EXPECT_TRUE(write.at(0).ok()) << write.at(0);
  ASSERT_EQ(read.count(), 1u);
  EXPECT_TRUE(read.at(0).ok()) << read.at(0);
  EXPECT_EQ(got, c);
  EXPECT_EQ(tier_->Stats().records, 1u);
}

TEST_P(DiskTierReservationTest, EraseBetweenReserveAndSubmitAbandonsTheRecordAndWritesNothing) {
  ASSERT_TRUE(Open(Options()).ok());
  const BlockKey key{3, 4};
  std::vector<char> got;
  Heard read;
  const RecordId id = ReserveWithAWaitingRead(*tier_, key, &got, &read);
  ASSERT_TRUE(tier_->Erase(id, key).ok());
  // The waiting read fails (on a tier thread, not inside Erase), with a zeroed destination.
  read.first.WaitForNotification();
  EXPECT_EQ(read.at(0).code(), absl::StatusCode::kNotFound) << read.at(0);
  EXPECT_EQ(got, std::vector<char>(tier_->block_bytes(), 0));
  // A new read of the abandoned reservation fails at once.
  EXPECT_EQ(tier_->Read(id, key, "default", got.data(), [](absl::Status) {}).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(tier_->Erase(id, key).ok());  // idempotent
  // Submit after the erase: OK, nothing is written, `done` hears Cancelled.
  const std::vector<char> c = Content(key, tier_->block_bytes());
  Heard write;
  ASSERT_TRUE(tier_->Submit(id, c.data(), write.Callback()).ok());
  tier_->Drain();
  ASSERT_EQ(write.count(), 1u);
  EXPECT_EQ(write.at(0).code(), absl::StatusCode::kCancelled) << write.at(0);
  const DiskTierStats st = tier_->Stats();
  EXPECT_EQ(st.records, 0u);
  EXPECT_EQ(st.bytes_written, 0u);
  EXPECT_EQ(st.writes_failed, 0u);
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_TRUE(recovered_.empty());
}

TEST_P(DiskTierReservationTest, SubmitOfAnUnknownOrSubmittedIdFailsWithoutCallingDone) {
  ASSERT_TRUE(Open(Options()).ok());
  const std::vector<char> c = Content(BlockKey{5, 5}, tier_->block_bytes());
  bool called = false;
  EXPECT_EQ(tier_->Submit(12345, c.data(), [&](absl::Status) { called = true; }).code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<RecordId> id = tier_->Reserve(BlockKey{5, 5}, "default");
  ASSERT_TRUE(id.ok());
  Heard write;
  ASSERT_TRUE(tier_->Submit(*id, c.data(), write.Callback()).ok());
  const absl::Status again = tier_->Submit(*id, c.data(), [&](absl::Status) { called = true; });
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  EXPECT_NE(again.message().find("already submitted"), absl::string_view::npos) << again;
  tier_->Drain();
  EXPECT_FALSE(called);
  ASSERT_EQ(write.count(), 1u);
  EXPECT_TRUE(write.at(0).ok()) << write.at(0);
  EXPECT_EQ(tier_->Reserve(BlockKey{6, 6}, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier_->Reserve(BlockKey{6, 6}, std::string(129, 'n')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Every staging buffer is held by a write whose I/O is delayed past kStagingWait: a Submit
// finds none in time, fails with ResourceExhausted without calling `done`, and its record is
// abandoned — the read that waited for it fails, and the id reads as unknown.
TEST_P(DiskTierReservationTest, SubmitWithoutABufferInTimeAbandonsTheRecord) {
  DiskTierOptions o = Options();
  o.staging_buffers = 2;   // plus 8 overflow buffers: 10 writes in flight at most
  o.codec = Codec::kNone;  // one buffer per write
  ASSERT_TRUE(Open(o).ok());
  const absl::Duration hold = DiskTier::kStagingWait + absl::Seconds(1);
  tier_->io().InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 0, hold});
  Heard held;
  std::vector<std::vector<char>> contents;
  for (uint64_t i = 0; i < 10; ++i) {
    contents.push_back(Content(BlockKey{i + 1, 8}, tier_->block_bytes()));
    ASSERT_TRUE(
        tier_->Write(BlockKey{i + 1, 8}, "default", contents.back().data(), held.Callback()).ok())
        << i;
  }
  const BlockKey key{100, 8};
  std::vector<char> got;
  Heard read;
  const RecordId id = ReserveWithAWaitingRead(*tier_, key, &got, &read);
  const std::vector<char> c = Content(key, tier_->block_bytes());
  bool called = false;
  const absl::Time start = absl::Now();
  const absl::Status s = tier_->Submit(id, c.data(), [&](absl::Status) { called = true; });
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_GE(waited, DiskTier::kStagingWait - absl::Milliseconds(50));
  read.first.WaitForNotification();
  EXPECT_FALSE(read.at(0).ok());
  EXPECT_EQ(read.at(0).code(), absl::StatusCode::kResourceExhausted) << read.at(0);
  EXPECT_EQ(tier_->Read(id, key, "default", got.data(), [](absl::Status) {}).code(),
            absl::StatusCode::kNotFound);
  tier_->Drain();
  tier_->io().ClearFaults();
  EXPECT_FALSE(called);
  ASSERT_EQ(held.count(), 10u);
  for (size_t i = 0; i < 10; ++i) EXPECT_TRUE(held.at(i).ok()) << held.at(i);
  EXPECT_EQ(tier_->Stats().records, 10u);
  // The tier goes on: a new write lands and reads back.
  const RecordId next = WriteSync(BlockKey{200, 8});
  ASSERT_TRUE(ReadSync(next, BlockKey{200, 8}, &got).ok());
  EXPECT_EQ(got, Content(BlockKey{200, 8}, tier_->block_bytes()));
}

TEST_P(DiskTierReservationTest, DrainWaitsForReservationsUntilSubmittedOrErased) {
  ASSERT_TRUE(Open(Options()).ok());
  const BlockKey a{1, 9}, b{2, 9};
  absl::StatusOr<RecordId> ida = tier_->Reserve(a, "default");
  absl::StatusOr<RecordId> idb = tier_->Reserve(b, "default");
  ASSERT_TRUE(ida.ok() && idb.ok());
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    tier_->Drain();
    drained = true;
  });
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(drained) << "Drain returned with two reservations outstanding";
  const std::vector<char> c = Content(a, tier_->block_bytes());
  Heard wa;
  ASSERT_TRUE(tier_->Submit(*ida, c.data(), wa.Callback()).ok());
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(drained) << "Drain returned with a reservation outstanding";
  ASSERT_TRUE(tier_->Erase(*idb, b).ok());
  drainer.join();  // a hang here fails the test by its timeout
  EXPECT_TRUE(drained);
  ASSERT_EQ(wa.count(), 1u);
  EXPECT_TRUE(wa.at(0).ok()) << wa.at(0);
  Heard wb;
  ASSERT_TRUE(tier_->Submit(*idb, c.data(), wb.Callback()).ok());
  tier_->Drain();
  ASSERT_EQ(wb.count(), 1u);
  EXPECT_EQ(wb.at(0).code(), absl::StatusCode::kCancelled);
}

TEST_P(DiskTierReservationTest, ClosingWithAReservationOutstandingAbandonsIt) {
  ASSERT_TRUE(Open(Options()).ok());
  std::vector<char> got;
  Heard read;
  ReserveWithAWaitingRead(*tier_, BlockKey{7, 7}, &got, &read);
  tier_.reset();  // must not wait for a Submit that never comes
  ASSERT_EQ(read.count(), 1u);
  EXPECT_EQ(read.at(0).code(), absl::StatusCode::kCancelled) << read.at(0);
  ASSERT_TRUE(Open(Options()).ok());
  EXPECT_TRUE(recovered_.empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, DiskTierReservationTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ThreadPool" : "IoUring";
                         });

}  // namespace
}  // namespace kvtier
