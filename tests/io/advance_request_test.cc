// tests/io/advance_request_test.cc — the rules both backends share for turning one transfer's
// result into "done" or "resubmit the rest": short transfers continue, end of file completes
// with the bytes read, transient errors retry, and errors name the op.

#include <errno.h>

#include <cstddef>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "io/io_engine_base.h"
#include "tests/io/io_test_util.h"

namespace kvtier::io_internal {
namespace {

using io_test::Contains;

IoRequest Request(IoOp::Kind kind, size_t length) {
  IoRequest r;
  r.kind = kind;
  r.file = 3;
  r.offset = 1 << 20;
  r.buffer = reinterpret_cast<std::byte*>(uintptr_t{1} << 30);
  r.length = length;
  return r;
}

TEST(AdvanceRequest, FullTransferCompletes) {
  IoRequest r = Request(IoOp::Kind::kWrite, 8192);
  std::optional<absl::StatusOr<size_t>> result = AdvanceRequest(r, 8192);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->value_or(0), 8192u);
}

TEST(AdvanceRequest, ShortTransferResubmitsTheRemainder) {
  for (IoOp::Kind kind : {IoOp::Kind::kRead, IoOp::Kind::kWrite}) {
    IoRequest r = Request(kind, 16384);
    EXPECT_FALSE(AdvanceRequest(r, 4096).has_value());
    EXPECT_EQ(r.next_offset(), r.offset + 4096);
    EXPECT_EQ(r.next_buffer(), r.buffer + 4096);
    EXPECT_EQ(r.next_length(), 12288u);
    std::optional<absl::StatusOr<size_t>> result = AdvanceRequest(r, 12288);
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(result->value_or(0), 16384u);
  }
}

TEST(AdvanceRequest, LongOpsAreSplitIntoTransfersOfAtMostOneGiB) {
  IoRequest r = Request(IoOp::Kind::kRead, 3 * kMaxTransfer);
  EXPECT_EQ(r.next_length(), kMaxTransfer);
  EXPECT_FALSE(AdvanceRequest(r, kMaxTransfer).has_value());
  EXPECT_FALSE(AdvanceRequest(r, kMaxTransfer).has_value());
  EXPECT_EQ(AdvanceRequest(r, kMaxTransfer)->value_or(0), 3 * kMaxTransfer);
}

TEST(AdvanceRequest, ReadEndsAtEndOfFile) {
  IoRequest zero = Request(IoOp::Kind::kRead, 16384);
  EXPECT_FALSE(AdvanceRequest(zero, 8192).has_value());
  EXPECT_EQ(AdvanceRequest(zero, 0)->value_or(99), 8192u);
  // O_DIRECT returns a count that is not page-aligned only at end of file.
  IoRequest partial = Request(IoOp::Kind::kRead, 16384);
  EXPECT_EQ(AdvanceRequest(partial, 5000)->value_or(99), 5000u);
}

TEST(AdvanceRequest, WriteThatStopsMakingProgressIsAShortWrite) {
  IoRequest r = Request(IoOp::Kind::kWrite, 16384);
  EXPECT_FALSE(AdvanceRequest(r, 4096).has_value());
  absl::Status s = AdvanceRequest(r, 0)->status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s.message(), "wrote 4096 of 16384 bytes")) << s;
  EXPECT_FALSE(Contains(s.message(), "injected")) << s;
}

TEST(AdvanceRequest, TransientErrorsRetryThenGiveUp) {
  for (int error : {EINTR, EAGAIN, ECANCELED}) {
    IoRequest r = Request(IoOp::Kind::kRead, 4096);
    for (uint32_t i = 0; i < kMaxRetries; ++i) ASSERT_FALSE(AdvanceRequest(r, -error).has_value());
    std::optional<absl::StatusOr<size_t>> result = AdvanceRequest(r, -error);
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(result->status().code(), absl::ErrnoToStatusCode(error));
  }
}

TEST(AdvanceRequest, ErrorNamesKindFileOffsetLengthProgressAndErrno) {
  IoRequest r = Request(IoOp::Kind::kWrite, 16384);
  EXPECT_FALSE(AdvanceRequest(r, 4096).has_value());
  absl::Status s = AdvanceRequest(r, -ENOSPC)->status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  for (const char* part : {"write of file 3", "offset 1048576", "length 16384", "after 4096 bytes",
                           "No space left on device"}) {
    EXPECT_TRUE(Contains(s.message(), part)) << part << " missing from " << s;
  }
}

TEST(AdvanceRequest, InjectedFaultsCompleteAsDocumented) {
  IoRequest eio = Request(IoOp::Kind::kRead, 8192);
  eio.fault = InjectedFault::kEio;
  EXPECT_EQ(InjectedTransferLength(eio), 0u);
  EXPECT_TRUE(Contains(AdvanceRequest(eio, 0)->status().message(), "injected fault"));

  IoRequest short_read = Request(IoOp::Kind::kRead, 8192);
  short_read.fault = InjectedFault::kShortRead;
  EXPECT_EQ(AdvanceRequest(short_read, 0)->value_or(0), 4096u);

  IoRequest short_write = Request(IoOp::Kind::kWrite, 3 * 4096);
  short_write.fault = InjectedFault::kShortWrite;
  EXPECT_EQ(InjectedTransferLength(short_write), 4096u);  // half, rounded down to 4096
  absl::Status s = AdvanceRequest(short_write, 4096)->status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s.message(), "wrote 4096 of 12288 bytes (injected fault)")) << s;

  IoRequest tiny = Request(IoOp::Kind::kWrite, 4096);
  tiny.fault = InjectedFault::kShortWrite;
  EXPECT_EQ(InjectedTransferLength(tiny), 0u);
}

}  // namespace
}  // namespace kvtier::io_internal
