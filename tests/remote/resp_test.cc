// tests/remote/resp_test.cc — the RESP2 parser: pieces, sinks, limits, garbage.

#include "remote/resp.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier::remote {
namespace {

// Feeds `wire` in pieces of `piece` bytes, keeping unconsumed bytes like a connection does.
std::vector<Reply> FeedInPieces(RespParser* p, const std::string& wire, size_t piece) {
  std::vector<Reply> out;
  std::string pending;
  for (size_t at = 0; at < wire.size(); at += piece) {
    pending += wire.substr(at, piece);
    while (!pending.empty()) {
      absl::StatusOr<size_t> used = p->Feed(pending.data(), pending.size());
      EXPECT_TRUE(used.ok()) << used.status();
      if (!used.ok()) return out;
      pending.erase(0, *used);
      if (p->HasReply()) {
        out.push_back(p->TakeReply());
        continue;
      }
      if (*used == 0) break;
    }
  }
  return out;
}

TEST(RespParser, EveryTypeInEveryPieceSize) {
  const std::string wire =
      "+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:-7\r\n*-1\r\n*0\r\n";
  for (size_t piece = 1; piece <= wire.size(); ++piece) {
    RespParser p;
    std::vector<Reply> r = FeedInPieces(&p, wire, piece);
    ASSERT_EQ(r.size(), 8u) << "piece " << piece;
    EXPECT_EQ(r[0].type, Reply::Type::kSimple);
    EXPECT_EQ(r[0].str, "OK");
    EXPECT_TRUE(r[1].IsError());
    EXPECT_EQ(r[1].str, "ERR bad");
    EXPECT_EQ(r[2].integer, 42);
    EXPECT_EQ(r[3].str, "hello");
    EXPECT_EQ(r[4].type, Reply::Type::kNil);
    ASSERT_EQ(r[5].elements.size(), 2u);
    EXPECT_EQ(r[5].elements[1].elements[0].integer, -7);
    EXPECT_EQ(r[6].type, Reply::Type::kNilArray);
    EXPECT_EQ(r[7].type, Reply::Type::kArray);
    EXPECT_TRUE(r[7].elements.empty());
  }
}

TEST(RespParser, BulkGoesIntoTheSinkAcrossRanges) {
  std::string a(3, '.'), b(10, '.');
  RespParser p;
  iovec sink[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  p.SetSink(sink, 2);
  std::vector<Reply> r = FeedInPieces(&p, "$6\r\nabcdef\r\n+OK\r\n", 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(r[0].sunk);
  EXPECT_FALSE(r[0].overflow);
  EXPECT_EQ(r[0].bulk_length, 6);
  EXPECT_EQ(a, "abc");
  EXPECT_EQ(b.substr(0, 3), "def");
  EXPECT_EQ(b.substr(3), std::string(7, '.'));
}

TEST(RespParser, DirectReceiveFillsTheSinkWithoutTheBuffer) {
  std::string dest(8, '.');
  RespParser p;
  iovec sink{dest.data(), dest.size()};
  p.SetSink(&sink, 1);
  const std::string head = "$8\r\n12";
  ASSERT_EQ(*p.Feed(head.data(), head.size()), head.size());
  ASSERT_EQ(p.DirectRemaining(), 6u);
  iovec iov[4];
  ASSERT_EQ(p.DirectIovecs(iov, 4), 1);
  EXPECT_EQ(iov[0].iov_len, 6u);
  std::memcpy(iov[0].iov_base, "345678", 6);  // as readv would
  p.DirectConsumed(6);
  EXPECT_EQ(p.DirectRemaining(), 0u);
  ASSERT_EQ(*p.Feed("\r\n", 2), 2u);
  ASSERT_TRUE(p.HasReply());
  EXPECT_EQ(p.TakeReply().bulk_length, 8);
  EXPECT_EQ(dest, "12345678");
}

TEST(RespParser, ValueLongerThanTheSinkIsDrainedAndReported) {
  std::string dest(4, '.');
  RespParser p;
  iovec sink{dest.data(), dest.size()};
  p.SetSink(&sink, 1);
  std::vector<Reply> r = FeedInPieces(&p, "$10\r\n0123456789\r\n:1\r\n", 3);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(r[0].overflow);
  EXPECT_EQ(r[0].bulk_length, 10);
  EXPECT_EQ(dest, "....");  // never written with a part of a value that does not fit
  EXPECT_EQ(r[1].integer, 1);
}

TEST(RespParser, GarbageAndLimitsAreStickyErrors) {
  for (const std::string bad : {"?x\r\n", "$-2\r\n", "$5\r\nabcdefg\r\n", ":12a\r\n", "+OK\n",
                                "*-5\r\n", "\r\n"}) {
    RespParser p;
    absl::StatusOr<size_t> r = p.Feed(bad.data(), bad.size());
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_FALSE(p.Feed("+OK\r\n", 5).ok());
  }
  RespLimits limits;
  limits.max_depth = 2;
  limits.max_bulk = 16;
  limits.max_line = 8;
  RespParser deep(limits);
  EXPECT_FALSE(deep.Feed("*1\r\n*1\r\n*1\r\n:1\r\n", 16).ok());
  RespParser big(limits);
  EXPECT_FALSE(big.Feed("$17\r\n", 5).ok());
  RespParser long_line(limits);
  const std::string line = "+" + std::string(20, 'x');
  EXPECT_FALSE(long_line.Feed(line.data(), line.size()).ok());
}

}  // namespace
}  // namespace kvtier::remote
