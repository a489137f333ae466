// StagingPool on its own: pool buffers before overflow ones, all-or-none takes for writes
// with a bounded wait, reads queued for a buffer served first and in order, and Release that
// hands nothing over.

#include "tiers/staging_pool.h"

#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

std::unique_ptr<StagingPool> MakePool(uint32_t buffers, uint32_t overflow) {
  StagingPool::Options o;
  o.buffers = buffers;
  o.buffer_bytes = 8192;
  o.overflow_buffers = overflow;
  absl::StatusOr<std::unique_ptr<StagingPool>> pool = StagingPool::Create(o);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? std::move(*pool) : nullptr;
}

bool InsidePool(StagingPool& pool, const char* p) {
  const auto [base, bytes] = pool.memory();
  const char* b = static_cast<const char*>(base);
  return p >= b && p < b + bytes;
}

TEST(StagingPool, LendsPoolBuffersFirstThenOverflowOnesEachAlignedAndDistinct) {
  auto pool = MakePool(2, 2);
  std::vector<int> ids;
  std::set<const char*> memory;
  for (int i = 0; i < 4; ++i) {
    int id = -1;
    ASSERT_TRUE(pool->TakeForWrite({&id, 1}, absl::ZeroDuration()).ok()) << i;
    char* p = pool->Buffer(id);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u) << i;
    EXPECT_EQ(InsidePool(*pool, p), i < 2) << "buffer " << i << " (id " << id << ")";
    std::memset(p, i, 8192);  // the whole buffer is usable
    EXPECT_TRUE(memory.insert(p).second) << "two holders of one buffer";
    ids.push_back(id);
  }
  EXPECT_EQ(pool->counts().free, 0u);
  EXPECT_EQ(pool->counts().overflow_in_use, 2u);
  int extra = -1;
  const absl::Status s = pool->TakeForWrite({&extra, 1}, absl::Milliseconds(20));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("staging buffers"), absl::string_view::npos) << s;
  for (int id : ids) pool->Return(id);
  EXPECT_EQ(pool->counts().free, 2u);
  EXPECT_EQ(pool->counts().overflow_in_use, 0u);
}

TEST(StagingPool, AWriteTakesEveryBufferItAsksForOrNone) {
  auto pool = MakePool(1, 0);
  int ids[2] = {-1, -1};
  EXPECT_EQ(pool->TakeForWrite(ids, absl::Milliseconds(10)).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ids[0], -1);
  EXPECT_EQ(ids[1], -1);
  EXPECT_EQ(pool->counts().free, 1u) << "a failed take keeps nothing";
  auto two = MakePool(1, 1);
  ASSERT_TRUE(two->TakeForWrite(ids, absl::ZeroDuration()).ok());
  EXPECT_NE(ids[0], ids[1]);
  two->Return(ids[0]);
  two->Return(ids[1]);
}

TEST(StagingPool, AWriteWaitsForAReturnedBuffer) {
  auto pool = MakePool(1, 0);
  int held = -1;
  ASSERT_TRUE(pool->TakeForWrite({&held, 1}, absl::ZeroDuration()).ok());
  std::thread returner([&] {
    absl::SleepFor(absl::Milliseconds(100));
    pool->Return(held);
  });
  const absl::Time start = absl::Now();
  int id = -1;
  const absl::Status s = pool->TakeForWrite({&id, 1}, absl::Seconds(10));
  const absl::Duration waited = absl::Now() - start;
  returner.join();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(id, held);
  EXPECT_GE(waited, absl::Milliseconds(80));
  EXPECT_LT(waited, absl::Seconds(5));
  pool->Return(id);
}

TEST(StagingPool, QueuedReadsGetReturnedBuffersFirstInOrderOnTheReturningThread) {
  auto pool = MakePool(1, 0);
  const int first = pool->TakeOrQueue([](int) { ADD_FAILURE() << "not queued"; });
  ASSERT_GE(first, 0);
  std::vector<std::pair<char, int>> served;
  const std::thread::id here = std::this_thread::get_id();
  for (char name : {'a', 'b'}) {
    EXPECT_EQ(pool->TakeOrQueue([&, name](int id) {
      EXPECT_EQ(std::this_thread::get_id(), here);
      served.push_back({name, id});
    }),
              -1);
  }
  EXPECT_EQ(pool->counts().queued, 2u);
  // A writer does not get the buffer while reads are queued.
  pool->Return(first);
  ASSERT_EQ(served.size(), 1u);
  EXPECT_EQ(served[0], (std::pair<char, int>{'a', first}));
  int w = -1;
  EXPECT_EQ(pool->TakeForWrite({&w, 1}, absl::Milliseconds(20)).code(),
            absl::StatusCode::kResourceExhausted);
  pool->Return(first);
  ASSERT_EQ(served.size(), 2u);
  EXPECT_EQ(served[1], (std::pair<char, int>{'b', first}));
  pool->Return(first);
  EXPECT_EQ(pool->counts().free, 1u);
  EXPECT_EQ(pool->counts().queued, 0u);
}

TEST(StagingPool, ReleaseAndOverflowReturnsHandNothingToQueuedReads) {
  auto pool = MakePool(1, 1);
  int ids[2] = {-1, -1};
  ASSERT_TRUE(pool->TakeForWrite(ids, absl::ZeroDuration()).ok());
  bool served = false;
  EXPECT_EQ(pool->TakeOrQueue([&](int) { served = true; }), -1);
  pool->Return(ids[1]);  // the overflow buffer: freed, never lent to a read
  EXPECT_FALSE(served);
  EXPECT_EQ(pool->counts().overflow_in_use, 0u);
  pool->Release(ids[0]);  // a caller's thread: no hand-over
  EXPECT_FALSE(served);
  EXPECT_EQ(pool->counts().free, 1u);
  EXPECT_EQ(pool->counts().queued, 1u);
  // The queued read is served by the next Return.
  const int again = pool->TakeOrQueue([](int) { ADD_FAILURE() << "not queued"; });
  ASSERT_GE(again, 0);
  pool->Return(again);
  EXPECT_TRUE(served);
  pool->Return(again);
}

TEST(StagingPool, BadOptionsNameTheField) {
  StagingPool::Options o;
  o.buffers = 0;
  o.buffer_bytes = 4096;
  absl::Status s = StagingPool::Create(o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("buffers"), absl::string_view::npos) << s;
  o.buffers = 1;
  o.buffer_bytes = 1000;
  s = StagingPool::Create(o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("buffer_bytes"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace kvtier
