// remote/resp.h — an incremental RESP2 reply parser that can receive a bulk value straight
// into the caller's scatter list.
//
// Bytes are fed as they arrive, in any pieces; Feed consumes what it can and stops after each
// complete top-level reply, so the caller can direct the next reply's bulk payload (SetSink)
// before its bytes are fed. While the parser is inside a sunk bulk payload, DirectIovecs names
// the destination ranges still to fill, so a connection can readv straight into them and report
// the bytes with DirectConsumed; no byte of the value passes through a buffer of ours.
//
// Promises: never crashes or reads outside what it was given, whatever the bytes; every size is
// bounded by RespLimits (line length, bulk length, array length, nesting, total bytes one reply
// keeps in memory); a protocol error is sticky (the connection must be dropped). A bulk reply
// longer than its sink is drained and dropped (Reply::overflow); the sink is written only with
// that reply's payload bytes, in order.
//
// Not thread-safe: one connection, one thread.

#ifndef KVTIER_REMOTE_RESP_H_
#define KVTIER_REMOTE_RESP_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier::remote {

struct RespLimits {
  size_t max_line = 64 << 10;            // a +simple / -error / :int / $len / *len line
  int64_t max_bulk = int64_t{512} << 20; // Redis's own proto-max-bulk-len default
  int64_t max_array = 1 << 20;           // elements of one array
  int max_depth = 8;                     // nested arrays
  size_t max_reply_bytes = 64 << 20;     // bytes one (unsunk) reply keeps in memory
};

struct Reply {
  enum class Type : uint8_t { kSimple, kError, kInteger, kBulk, kNil, kArray, kNilArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;              // kSimple, kError, kBulk (unless sunk)
  std::vector<Reply> elements;  // kArray
  // A top-level bulk reply received into the sink: its length, and whether it was longer than
  // the sink (then it was drained and the sink holds only its first bytes: garbage).
  bool sunk = false;
  bool overflow = false;
  int64_t bulk_length = 0;

  bool IsError() const { return type == Type::kError; }
  // Bulk strings as-is, integers in decimal, nil as "(nil)", arrays one element per line.
  std::string ToText() const;
};

// RESP2 encoding of one command's arguments ("*N\r\n$len\r\narg\r\n...").
void AppendCommand(std::string* out, const std::vector<std::string>& args);
void AppendArrayHeader(std::string* out, size_t n);
void AppendBulk(std::string* out, absl::string_view arg);
void AppendBulkHeader(std::string* out, size_t len);

class RespParser {
 public:
  explicit RespParser(RespLimits limits = {}) : limits_(limits) {}

  // Directs the payload of the next reply, when it is a top-level bulk string, into `dest`
  // (the ranges in order). REQUIRES: no byte of that reply has been fed yet; `dest` stays
  // valid until the reply completes or AbandonSink.
  void SetSink(const iovec* dest, size_t count);
  // Forgets the sink set for the next reply. REQUIRES: no byte of that reply has been fed.
  void ClearSink() {
    sink_.clear();
    sink_set_ = false;
  }
  // Stops writing into the sink: the rest of the current reply's payload is drained, and the
  // reply reports overflow (the caller has gone).
  void AbandonSink();

  // Consumes bytes from data[0, n); returns how many. Stops after a complete top-level reply
  // (then HasReply()). Returns fewer than n when it needs more bytes to go on (an incomplete
  // line stays unconsumed: the caller keeps it and feeds it again with what follows). An error
  // is a protocol violation or a limit exceeded; it is sticky.
  absl::StatusOr<size_t> Feed(const char* data, size_t n);

  bool HasReply() const { return has_reply_; }
  // REQUIRES: HasReply(). The parser is then ready for the next reply (and its sink).
  Reply TakeReply();

  // While inside a sunk bulk payload: the number of payload bytes still expected straight into
  // the sink (0 otherwise), and the ranges they go to (at most `max`, returns how many).
  size_t DirectRemaining() const;
  int DirectIovecs(iovec* out, int max) const;
  // Reports `n` bytes the caller received straight into DirectIovecs. REQUIRES: n <=
  // DirectRemaining().
  void DirectConsumed(size_t n);

  const absl::Status& error() const { return error_; }

 private:
  enum class State : uint8_t { kLine, kBulkPayload, kBulkCrlf };
  absl::Status Fail(absl::string_view what);
  // Places a finished value at the current position of the reply tree.
  void Complete(Reply value);
  absl::StatusOr<size_t> FeedLine(const char* data, size_t n);
  void CopyToSink(const char* data, size_t n);

  RespLimits limits_;
  State state_ = State::kLine;
  absl::Status error_;
  bool has_reply_ = false;
  Reply root_;
  // Arrays being filled: the Reply and how many elements it still needs.
  struct Frame {
    Reply* array;
    int64_t remaining;
  };
  std::vector<Frame> stack_;
  size_t reply_bytes_ = 0;

  // The current bulk string.
  Reply pending_bulk_;
  int64_t bulk_left_ = 0;   // payload bytes still to come
  bool bulk_to_sink_ = false;
  bool bulk_drain_ = false;  // an overflowing or abandoned sunk bulk

  // The sink for the next (or current) top-level bulk reply.
  std::vector<iovec> sink_;
  size_t sink_index_ = 0, sink_offset_ = 0;
  bool sink_set_ = false;
};

}  // namespace kvtier::remote

#endif  // KVTIER_REMOTE_RESP_H_
