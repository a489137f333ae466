// remote/connection.h — one RESP2 connection to one Redis node, plain TCP or TLS, built for
// large values: a command's value is written with writev straight from the caller's iovecs
// (no copy) and a GET's bulk reply is received straight into the caller's destination (readv
// into RespParser::DirectIovecs). Commands are pipelined, with at most
// `max_inflight_bytes` of value bytes (sent or expected) in flight; further ones wait in the
// connection's queue.
//
// Open (connect, TLS handshake with CA verification and hostname check, AUTH) and Call are
// blocking but bounded by a deadline (poll on a non-blocking socket); they are used before the
// connection is handed to an I/O thread, and by the slot-map refresher. Everything else is
// driven by one I/O thread through Flush / OnReadable / Expire and is not thread-safe.
//
// Promises: every Request enqueued completes exactly once through the completion callback
// (OK with its reply, or an error); a request whose deadline passes completes with
// DeadlineExceeded at the next Expire, and is never touched again (its value is not read, its
// sink not written) — when it was half-written Expire asks the owner to close the connection.

#ifndef KVTIER_REMOTE_CONNECTION_H_
#define KVTIER_REMOTE_CONNECTION_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "remote/cluster_client.h"
#include "remote/resp.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace kvtier::remote {

// An OpenSSL client context: TLS 1.2+, peers verified against options.ca_file, with the
// client certificate when given. InvalidArgument naming the file that could not be loaded.
struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const;
};
using TlsContext = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
absl::StatusOr<TlsContext> MakeTlsContext(const TlsOptions& options);

struct ConnectionOptions {
  std::string host;
  int port = 0;
  std::string user;        // empty = "default"
  std::string password;    // empty = no AUTH
  SSL_CTX* tls = nullptr;  // not owned; null = plain TCP
  std::string server_name; // SNI and the name the certificate must carry; empty = chain only
  int socket_buffer_bytes = 4 << 20;
  size_t max_inflight_bytes = size_t{8} << 20;
};

// One command on the wire: head, then the value's iovecs, then tail.
struct Request {
  virtual ~Request() = default;
  std::string head;
  std::vector<iovec> value;  // not owned: sent as they are
  std::string tail;
  std::vector<iovec> sink;   // a GET's destination (not owned); empty = replies kept in memory
  size_t value_bytes = 0;    // value bytes sent or expected, counted against the in-flight cap
  bool asking = false;       // head starts with ASKING, whose reply is consumed here
  absl::Time deadline = absl::InfiniteFuture();

  size_t WireBytes() const;
};

class Connection {
 public:
  // Completion of one request: status OK with the reply, or the error (reply null). The
  // request is handed back. Must not destroy or enqueue into this connection.
  using Completion =
      absl::AnyInvocable<void(std::unique_ptr<Request>, absl::Status, Reply* reply)>;

  // Connects, does the TLS handshake and AUTH by `deadline`. Unavailable (naming host:port and
  // the cause) for connect or TLS failures, PermissionDenied when AUTH is refused,
  // DeadlineExceeded when the deadline passes.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const ConnectionOptions& options,
                                                          absl::Time deadline);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // A blocking command by `deadline`. REQUIRES: nothing is enqueued.
  absl::StatusOr<Reply> Call(const std::vector<std::string>& args, absl::Time deadline);

  const std::string& address() const { return address_; }
  int fd() const { return fd_; }
  void set_completion(Completion completion) { completion_ = std::move(completion); }

  // --- event-loop side (one I/O thread)
  void Enqueue(std::unique_ptr<Request> request);
  // Starts queued requests as the in-flight cap allows and writes until the socket is full.
  // An error means the connection is broken: the owner calls FailAll and drops it.
  absl::Status Flush();
  // Reads until the socket is empty, completing requests. Errors as for Flush (EOF included).
  absl::Status OnReadable();
  // Whether bytes wait to be written (the owner then watches for EPOLLOUT).
  bool WantsWrite() const;
  // Completes the requests whose deadline is <= now with DeadlineExceeded. Returns an error
  // when one of them was half-written: the owner must FailAll and drop the connection.
  absl::Status Expire(absl::Time now);
  // Completes every request with `status`.
  void FailAll(const absl::Status& status);
  bool idle() const { return pending_.empty() && in_flight_.empty(); }
  size_t queued_requests() const { return pending_.size() + in_flight_.size(); }
  // Bytes moved since the last call (for the owner's counters).
  uint64_t TakeBytesSent();
  uint64_t TakeBytesReceived();

 private:
  Connection(std::string address, int fd, size_t max_inflight_bytes);
  // Raw I/O: bytes moved, 0 on would-block; errors (EOF: Unavailable "closed by peer").
  absl::StatusOr<size_t> WriteV(const iovec* iov, int count);
  absl::StatusOr<size_t> ReadV(const iovec* iov, int count);
  absl::Status ProcessBuffer();
  absl::Status Deliver(Reply reply);
  void SetupSink();
  absl::Status WaitFd(short events, absl::Time deadline);

  struct InFlight {
    std::unique_ptr<Request> request;  // null once abandoned (its deadline passed)
    size_t value_bytes = 0;
    size_t wire_bytes = 0;
    bool asking = false;
  };

  std::string address_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  bool ssl_wants_write_ = false;  // an SSL_read needs the socket writable
  size_t max_inflight_bytes_;
  Completion completion_;

  std::deque<std::unique_ptr<Request>> pending_;
  std::deque<InFlight> in_flight_;
  size_t inflight_value_bytes_ = 0;
  size_t write_index_ = 0;   // first entry of in_flight_ not completely written
  size_t write_offset_ = 0;  // bytes of it written
  bool asking_reply_seen_ = false;  // the front's ASKING reply has been consumed

  RespParser parser_;
  std::vector<char> rbuf_;
  size_t rstart_ = 0, rend_ = 0;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0;
};

}  // namespace kvtier::remote

#endif  // KVTIER_REMOTE_CONNECTION_H_
