// remote/connection.cc — see connection.h.

#include "remote/connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/secret_file.h"

namespace kvtier::remote {
namespace {

constexpr int kMaxIov = 64;
constexpr size_t kReadBuffer = 256 << 10;

std::string SslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

}  // namespace

void SslCtxDeleter::operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }

absl::StatusOr<TlsContext> MakeTlsContext(const TlsOptions& options) {
  if (options.ca_file.empty()) {
    return absl::InvalidArgumentError("tls.ca_file: required when TLS is enabled");
  }
  TlsContext ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return absl::InternalError(absl::StrCat("SSL_CTX_new: ", SslErrors()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(ctx.get(), options.ca_file.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls.ca_file: cannot load '", options.ca_file, "': ", SslErrors()));
  }
  if (!options.cert_file.empty() || !options.key_file.empty()) {
    if (options.cert_file.empty() || options.key_file.empty()) {
      return absl::InvalidArgumentError("tls.cert_file and tls.key_file: give both or neither");
    }
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), options.cert_file.c_str()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls.cert_file: cannot load '", options.cert_file, "': ", SslErrors()));
    }
    // A private key others can read is refused, as ssh refuses one.
    if (absl::Status s = CheckSecretFile(options.key_file, "tls.key_file"); !s.ok()) return s;
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), options.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls.key_file: cannot load '", options.key_file,
                       "' or it does not match the certificate: ", SslErrors()));
    }
  }
  return ctx;
}

size_t Request::WireBytes() const {
  size_t n = head.size() + tail.size();
  for (const iovec& v : value) n += v.iov_len;
  return n;
}

Connection::Connection(std::string address, int fd, size_t max_inflight_bytes)
    : address_(std::move(address)), fd_(fd), max_inflight_bytes_(max_inflight_bytes),
      rbuf_(kReadBuffer) {}

Connection::~Connection() {
  FailAll(absl::CancelledError(absl::StrCat(address_, ": connection closed")));
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (fd_ >= 0) close(fd_);
}

absl::Status Connection::WaitFd(short events, absl::Time deadline) {
  while (true) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return absl::DeadlineExceededError(absl::StrCat(address_, ": timed out"));
    pollfd p{fd_, events, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1000)));
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(address_, ": poll: ", std::strerror(errno)));
    }
  }
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const ConnectionOptions& options,
                                                             absl::Time deadline) {
  const std::string address = absl::StrCat(options.host, ":", options.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = absl::StrCat(options.port);
  const int gai = getaddrinfo(options.host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0 || res == nullptr) {
    return absl::UnavailableError(
        absl::StrCat(address, ": cannot resolve host: ", gai_strerror(gai)));
  }
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return absl::UnavailableError(absl::StrCat(address, ": socket: ", std::strerror(errno)));
  }
  std::unique_ptr<Connection> conn(new Connection(address, fd, options.max_inflight_bytes));
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options.socket_buffer_bytes, sizeof(int));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options.socket_buffer_bytes, sizeof(int));
  const int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  const int connect_errno = errno;
  freeaddrinfo(res);
  if (rc != 0) {
    if (connect_errno != EINPROGRESS) {
      return absl::UnavailableError(
          absl::StrCat(address, ": connect: ", std::strerror(connect_errno)));
    }
    if (absl::Status s = conn->WaitFd(POLLOUT, deadline); !s.ok()) {
      return absl::UnavailableError(absl::StrCat(address, ": connect: ", s.message()));
    }
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      return absl::UnavailableError(absl::StrCat(address, ": connect: ", std::strerror(err)));
    }
  }
  if (options.tls != nullptr) {
    conn->ssl_ = SSL_new(options.tls);
    if (conn->ssl_ == nullptr) {
      return absl::UnavailableError(absl::StrCat(address, ": SSL_new: ", SslErrors()));
    }
    SSL_set_fd(conn->ssl_, fd);
    if (!options.server_name.empty()) {
      SSL_set_tlsext_host_name(conn->ssl_, options.server_name.c_str());
      X509_VERIFY_PARAM* param = SSL_get0_param(conn->ssl_);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      // An IP literal is checked against the certificate's IP SANs, a name against its DNS SANs.
      if (X509_VERIFY_PARAM_set1_ip_asc(param, options.server_name.c_str()) != 1) {
        ERR_clear_error();
        SSL_set1_host(conn->ssl_, options.server_name.c_str());
      }
    }
    while (true) {
      ERR_clear_error();
      const int r = SSL_connect(conn->ssl_);
      if (r == 1) break;
      const int e = SSL_get_error(conn->ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (absl::Status s = conn->WaitFd(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
            !s.ok()) {
          return absl::UnavailableError(absl::StrCat(address, ": TLS handshake: ", s.message()));
        }
        continue;
      }
      const long verify = SSL_get_verify_result(conn->ssl_);
      return absl::UnavailableError(absl::StrCat(
          address, ": TLS handshake failed: ",
          verify != X509_V_OK ? X509_verify_cert_error_string(verify) : SslErrors()));
    }
  }
  if (!options.password.empty()) {
    absl::StatusOr<Reply> reply = conn->Call(
        {"AUTH", options.user.empty() ? "default" : options.user, options.password}, deadline);
    if (!reply.ok()) return reply.status();
    if (reply->IsError()) {
      return absl::PermissionDeniedError(
          absl::StrCat(address, ": AUTH as '", options.user.empty() ? "default" : options.user,
                       "' refused: ", reply->str));
    }
  }
  return conn;
}

absl::StatusOr<size_t> Connection::WriteV(const iovec* iov, int count) {
  if (ssl_ == nullptr) {
    const ssize_t n = writev(fd_, iov, count);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    return absl::UnavailableError(absl::StrCat(address_, ": write: ", std::strerror(errno)));
  }
  // TLS has no writev: each range becomes its own records (OpenSSL copies as it encrypts).
  size_t total = 0;
  for (int i = 0; i < count; ++i) {
    ERR_clear_error();
    const int n = SSL_write(ssl_, iov[i].iov_base, static_cast<int>(std::min<size_t>(
                                                        iov[i].iov_len, 1 << 30)));
    if (n > 0) {
      total += static_cast<size_t>(n);
      if (static_cast<size_t>(n) < iov[i].iov_len) break;
      continue;
    }
    const int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) break;
    return absl::UnavailableError(absl::StrCat(address_, ": TLS write: ", SslErrors()));
  }
  return total;
}

absl::StatusOr<size_t> Connection::ReadV(const iovec* iov, int count) {
  if (ssl_ == nullptr) {
    const ssize_t n = readv(fd_, iov, count);
    if (n > 0) return static_cast<size_t>(n);
    if (n == 0) return absl::UnavailableError(absl::StrCat(address_, ": connection closed by peer"));
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    return absl::UnavailableError(absl::StrCat(address_, ": read: ", std::strerror(errno)));
  }
  ssl_wants_write_ = false;
  ERR_clear_error();
  const int n = SSL_read(ssl_, iov[0].iov_base,
                         static_cast<int>(std::min<size_t>(iov[0].iov_len, 1 << 30)));
  if (n > 0) return static_cast<size_t>(n);
  const int e = SSL_get_error(ssl_, n);
  if (e == SSL_ERROR_WANT_READ) return 0;
  if (e == SSL_ERROR_WANT_WRITE) {
    ssl_wants_write_ = true;
    return 0;
  }
  if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
    return absl::UnavailableError(absl::StrCat(address_, ": connection closed by peer"));
  }
  return absl::UnavailableError(absl::StrCat(address_, ": TLS read: ", SslErrors()));
}

absl::StatusOr<Reply> Connection::Call(const std::vector<std::string>& args,
                                       absl::Time deadline) {
  std::string wire;
  AppendCommand(&wire, args);
  size_t sent = 0;
  while (sent < wire.size()) {
    iovec v{wire.data() + sent, wire.size() - sent};
    absl::StatusOr<size_t> n = WriteV(&v, 1);
    if (!n.ok()) return n.status();
    sent += *n;
    bytes_sent_ += *n;
    if (*n == 0) {
      if (absl::Status s = WaitFd(POLLOUT, deadline); !s.ok()) return s;
    }
  }
  while (true) {
    if (rend_ > rstart_) {
      absl::StatusOr<size_t> used = parser_.Feed(rbuf_.data() + rstart_, rend_ - rstart_);
      if (!used.ok()) return absl::DataLossError(absl::StrCat(address_, ": ", used.status().message()));
      rstart_ += *used;
      if (parser_.HasReply()) return parser_.TakeReply();
    }
    if (rstart_ == rend_) rstart_ = rend_ = 0;
    if (rend_ == rbuf_.size()) {
      std::memmove(rbuf_.data(), rbuf_.data() + rstart_, rend_ - rstart_);
      rend_ -= rstart_;
      rstart_ = 0;
    }
    if (ssl_ == nullptr || SSL_pending(ssl_) == 0) {
      if (absl::Status s = WaitFd(POLLIN, deadline); !s.ok()) return s;
    }
    iovec v{rbuf_.data() + rend_, rbuf_.size() - rend_};
    absl::StatusOr<size_t> n = ReadV(&v, 1);
    if (!n.ok()) return n.status();
    rend_ += *n;
    bytes_received_ += *n;
  }
}

void Connection::Enqueue(std::unique_ptr<Request> request) {
  pending_.push_back(std::move(request));
}

bool Connection::WantsWrite() const {
  return write_index_ < in_flight_.size() || ssl_wants_write_ ||
         (!pending_.empty() && (inflight_value_bytes_ == 0 ||
                                inflight_value_bytes_ + pending_.front()->value_bytes <=
                                    max_inflight_bytes_));
}

absl::Status Connection::Flush() {
  if (ssl_wants_write_) {
    if (absl::Status s = OnReadable(); !s.ok()) return s;
  }
  while (true) {
    // Start what the cap allows (always at least one request, however large).
    while (!pending_.empty() &&
           (in_flight_.empty() ||
            inflight_value_bytes_ + pending_.front()->value_bytes <= max_inflight_bytes_)) {
      InFlight f;
      f.request = std::move(pending_.front());
      pending_.pop_front();
      f.value_bytes = f.request->value_bytes;
      f.wire_bytes = f.request->WireBytes();
      f.asking = f.request->asking;
      inflight_value_bytes_ += f.value_bytes;
      in_flight_.push_back(std::move(f));
      if (in_flight_.size() == 1) SetupSink();
    }
    if (write_index_ >= in_flight_.size()) return absl::OkStatus();
    iovec iov[kMaxIov];
    int count = 0;
    size_t skip = write_offset_;
    for (size_t i = write_index_; i < in_flight_.size() && count < kMaxIov; ++i) {
      const Request& r = *in_flight_[i].request;
      auto add = [&](const void* base, size_t len) {
        if (count >= kMaxIov || len == 0) return;
        if (skip >= len) {
          skip -= len;
          return;
        }
        iov[count].iov_base = const_cast<char*>(static_cast<const char*>(base)) + skip;
        iov[count].iov_len = len - skip;
        skip = 0;
        ++count;
      };
      add(r.head.data(), r.head.size());
      for (const iovec& v : r.value) add(v.iov_base, v.iov_len);
      add(r.tail.data(), r.tail.size());
    }
    absl::StatusOr<size_t> n = WriteV(iov, count);
    if (!n.ok()) return n.status();
    if (*n == 0) return absl::OkStatus();
    bytes_sent_ += *n;
    size_t left = *n;
    while (left > 0 && write_index_ < in_flight_.size()) {
      const size_t rest = in_flight_[write_index_].wire_bytes - write_offset_;
      if (left >= rest) {
        left -= rest;
        ++write_index_;
        write_offset_ = 0;
      } else {
        write_offset_ += left;
        left = 0;
      }
    }
  }
}

void Connection::SetupSink() {
  if (in_flight_.empty()) return;
  const InFlight& f = in_flight_.front();
  if (f.asking && !asking_reply_seen_) return;  // the next reply is ASKING's +OK
  if (f.request == nullptr) {
    parser_.SetSink(nullptr, 0);  // abandoned: drain its value
  } else if (!f.request->sink.empty()) {
    parser_.SetSink(f.request->sink.data(), f.request->sink.size());
  }
}

absl::Status Connection::Deliver(Reply reply) {
  if (in_flight_.empty() || write_index_ == 0) {
    return absl::DataLossError(
        absl::StrCat(address_, ": a reply arrived for no (completely sent) request"));
  }
  InFlight& f = in_flight_.front();
  if (f.asking && !asking_reply_seen_) {
    asking_reply_seen_ = true;  // ASKING's reply; an error shows again in the command's reply
    return absl::OkStatus();
  }
  asking_reply_seen_ = false;
  std::unique_ptr<Request> request = std::move(f.request);
  inflight_value_bytes_ -= f.value_bytes;
  in_flight_.pop_front();
  --write_index_;
  if (request != nullptr) completion_(std::move(request), absl::OkStatus(), &reply);
  return absl::OkStatus();
}

absl::Status Connection::ProcessBuffer() {
  while (rend_ > rstart_) {
    absl::StatusOr<size_t> used = parser_.Feed(rbuf_.data() + rstart_, rend_ - rstart_);
    if (!used.ok()) {
      return absl::DataLossError(absl::StrCat(address_, ": ", used.status().message()));
    }
    rstart_ += *used;
    if (parser_.HasReply()) {
      if (absl::Status s = Deliver(parser_.TakeReply()); !s.ok()) return s;
      SetupSink();
      continue;
    }
    if (*used == 0) break;
  }
  if (rstart_ == rend_) rstart_ = rend_ = 0;
  return absl::OkStatus();
}

absl::Status Connection::OnReadable() {
  while (true) {
    if (absl::Status s = ProcessBuffer(); !s.ok()) return s;
    if (rstart_ > 0 && rbuf_.size() - rend_ < (64 << 10)) {
      std::memmove(rbuf_.data(), rbuf_.data() + rstart_, rend_ - rstart_);
      rend_ -= rstart_;
      rstart_ = 0;
    }
    iovec iov[17];
    int count = 0;
    size_t direct = 0;
    if (rend_ == rstart_) {
      // Inside a sunk bulk value: receive straight into the destination, and what follows it
      // (CRLF, the next replies) into the buffer, in one call.
      direct = parser_.DirectRemaining();
      if (direct > 0) count = parser_.DirectIovecs(iov, 16);
    }
    if (ssl_ == nullptr || count == 0) {
      iov[count].iov_base = rbuf_.data() + rend_;
      iov[count].iov_len = rbuf_.size() - rend_;
      ++count;
    }
    absl::StatusOr<size_t> n = ReadV(iov, count);
    if (!n.ok()) return n.status();
    if (*n == 0) return absl::OkStatus();
    bytes_received_ += *n;
    const size_t to_sink = std::min(*n, direct);
    if (to_sink > 0) parser_.DirectConsumed(to_sink);
    rend_ += *n - to_sink;
  }
}

absl::Status Connection::Expire(absl::Time now) {
  const absl::Status expired = absl::DeadlineExceededError(
      absl::StrCat(address_, ": deadline passed before the reply"));
  for (auto it = pending_.begin(); it != pending_.end();) {
    if ((*it)->deadline <= now) {
      std::unique_ptr<Request> r = std::move(*it);
      it = pending_.erase(it);
      completion_(std::move(r), absl::DeadlineExceededError(absl::StrCat(
                                    address_, ": deadline passed while queued")), nullptr);
    } else {
      ++it;
    }
  }
  bool half_written = false;
  for (size_t i = 0; i < in_flight_.size(); ++i) {
    InFlight& f = in_flight_[i];
    if (f.request == nullptr || f.request->deadline > now) continue;
    if (i < write_index_) {
      // Sent: its reply will still come and is dropped; its sink is never written again.
      if (i == 0) parser_.AbandonSink();
      completion_(std::move(f.request), expired, nullptr);
      f.request = nullptr;
    } else if (i == write_index_ && write_offset_ > 0) {
      half_written = true;
    }
  }
  // Unsent requests past their deadline are taken back off the wire queue.
  for (size_t i = in_flight_.size(); i > write_index_ + (write_offset_ > 0 ? 1 : 0); --i) {
    InFlight& f = in_flight_[i - 1];
    if (f.request == nullptr || f.request->deadline > now) continue;
    std::unique_ptr<Request> r = std::move(f.request);
    inflight_value_bytes_ -= f.value_bytes;
    in_flight_.erase(in_flight_.begin() + static_cast<std::ptrdiff_t>(i - 1));
    if (i == 1) {
      // It was the front (nothing of it sent, so no byte of its reply was parsed): the sink
      // now belongs to the new front.
      parser_.ClearSink();
      asking_reply_seen_ = false;
      SetupSink();
    }
    completion_(std::move(r), expired, nullptr);
  }
  if (half_written) {
    return absl::DeadlineExceededError(
        absl::StrCat(address_, ": deadline passed while sending a value"));
  }
  return absl::OkStatus();
}

void Connection::FailAll(const absl::Status& status) {
  if (!completion_) {
    pending_.clear();
    in_flight_.clear();
    return;
  }
  parser_.AbandonSink();
  std::deque<InFlight> in_flight = std::move(in_flight_);
  std::deque<std::unique_ptr<Request>> pending = std::move(pending_);
  in_flight_.clear();
  pending_.clear();
  inflight_value_bytes_ = 0;
  write_index_ = write_offset_ = 0;
  for (InFlight& f : in_flight) {
    if (f.request != nullptr) completion_(std::move(f.request), status, nullptr);
  }
  for (std::unique_ptr<Request>& r : pending) completion_(std::move(r), status, nullptr);
}

uint64_t Connection::TakeBytesSent() { return std::exchange(bytes_sent_, 0); }
uint64_t Connection::TakeBytesReceived() { return std::exchange(bytes_received_, 0); }

}  // namespace kvtier::remote
