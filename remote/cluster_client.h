// remote/cluster_client.h — a Redis Cluster client built for moving KV blocks: values are sent
// straight from the caller's (pinned) memory with writev and bulk replies are received straight
// into the caller's destination, over a few non-blocking connections per master, driven by a
// few epoll I/O threads.
//
// Protocol: RESP2. Keys are routed by CRC16 hash slot (hash tags honoured, though kvtier does
// not use them) with the slot map read by CLUSTER SLOTS from any reachable seed or known node.
// MOVED refreshes the slot map and retries at the named node; ASK sends ASKING + the command
// to the named node once. CLUSTERDOWN, TRYAGAIN, LOADING, connection errors and deadlines fail
// the operation (Unavailable / DeadlineExceeded naming the node): the caller treats a failed
// read as a miss and a failed write as dropped. A per-node circuit breaker opens after
// `breaker_failures` consecutive failures and fails that node's operations at once (no
// timeout) for `breaker_open_for`, then lets one probe through.
//
// Promises:
//   * Every operation completes exactly once, by its deadline (plus one I/O-thread tick), with
//     OK or an error; none blocks the caller except the synchronous batch calls, which return
//     by their deadline.
//   * A GET's destination is written only with bytes of that key's reply; when the call fails
//     after receiving part of the value, the destination holds garbage and the callback says so
//     (the caller must not use it).
//   * Nothing but 127.0.0.1/::1 or the addresses the caller (or the cluster's slot map) names is
//     contacted. With TLS on, every connection is TLS (verified against ca_file).
//
// Thread-safe. Callbacks run on an I/O thread: they must not block or call back into the
// client's synchronous calls.

#ifndef KVTIER_REMOTE_CLUSTER_CLIENT_H_
#define KVTIER_REMOTE_CLUSTER_CLIENT_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace kvtier::remote {

struct TlsOptions {
  bool enabled = false;
  std::string ca_file;    // PEM CA bundle the servers' certificates must chain to (required)
  std::string cert_file;  // client certificate (PEM), optional (servers with tls-auth-clients)
  std::string key_file;   // its private key (PEM), required with cert_file
  std::string server_name;  // SNI / hostname to verify; empty = verify the CA chain only
};

struct ClusterOptions {
  std::vector<std::string> seeds;  // "host:port"; at least one
  std::string user;                // ACL user (AUTH user password); empty = "default"
  std::string password;            // empty = no AUTH
  TlsOptions tls;
  absl::Duration connect_timeout = absl::Milliseconds(500);
  absl::Duration op_timeout = absl::Seconds(2);  // the default deadline of one operation
  uint32_t connections_per_node = 2;             // 1..16
  uint32_t io_threads = 2;                       // 1..16
  // The most value bytes (sent or expected) in flight on one connection; further operations
  // wait in the client's queue (deep pipelines of MiB values collapse Redis's throughput).
  size_t max_inflight_bytes_per_connection = size_t{8} << 20;
  uint32_t breaker_failures = 3;
  absl::Duration breaker_open_for = absl::Seconds(1);
  // When false, Connect fails if no seed answers; when true it returns a client that keeps
  // trying in the background (every operation fails Unavailable until a seed answers).
  bool allow_unreachable = false;
};

// Errors by kind, counted per node and in total.
enum class ErrorKind : uint8_t {
  kConnect = 0,    // could not connect / TLS handshake / AUTH failed
  kTimeout,        // deadline passed
  kMoved,          // MOVED seen (not an error by itself; counted)
  kAsk,            // ASK seen
  kClusterDown,    // CLUSTERDOWN
  kTryAgain,       // TRYAGAIN
  kLoading,        // LOADING
  kNoPerm,         // NOPERM / NOAUTH / WRONGPASS
  kBreakerOpen,    // failed at once: the node's circuit breaker is open
  kProtocol,       // malformed reply, value larger than the destination, other -ERR
  kCount
};
const char* ErrorKindName(ErrorKind kind);

struct NodeStats {
  std::string address;        // host:port
  bool master = false;
  bool connected = false;     // at least one connection is up
  bool breaker_open = false;
  uint64_t slots = 0;         // hash slots it serves (masters)
  uint64_t ops = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t errors[static_cast<size_t>(ErrorKind::kCount)] = {};
};

struct ClientStats {
  uint64_t gets = 0, get_hits = 0, get_misses = 0, sets = 0, dels = 0, exists = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
  uint64_t slot_map_refreshes = 0;
  uint64_t errors[static_cast<size_t>(ErrorKind::kCount)] = {};
  // Latency of completed GET and SET operations, microseconds: bucket i counts operations
  // that took < 2^i us (the last bucket: the rest).
  static constexpr int kLatencyBuckets = 24;
  uint64_t get_latency_us[kLatencyBuckets] = {};
  uint64_t set_latency_us[kLatencyBuckets] = {};
  std::vector<NodeStats> nodes;
};

// The CRC16 (XMODEM) hash slot of a key, honouring {hash tags}: 0 .. 16383.
uint16_t KeySlot(absl::string_view key);

class ClusterClient {
 public:
  // Validates the options (InvalidArgument naming the field: no seeds, a seed that is not
  // host:port with a port in 1..65535, TLS without ca_file, ...), connects to the seeds and
  // reads the slot map. Unavailable naming every seed tried and why when none answers (unless
  // allow_unreachable); PermissionDenied when AUTH is refused; FailedPrecondition when the
  // server is not in cluster mode.
  static absl::StatusOr<std::unique_ptr<ClusterClient>> Connect(const ClusterOptions& options);
  // Fails every queued operation (Cancelled), closes the connections, joins the threads.
  virtual ~ClusterClient() = default;

  using Done = absl::AnyInvocable<void(absl::Status) &&>;
  using GetDone = absl::AnyInvocable<void(absl::StatusOr<size_t>) &&>;

  // SET key value [PX px_ms] (px_ms <= 0: no expiry). `value`'s buffers are sent as they are
  // (no copy) and must stay valid and unchanged until `done` runs. deadline: InfiniteFuture =
  // now + op_timeout.
  virtual void Set(std::string key, std::vector<iovec> value, int64_t px_ms, Done done,
                   absl::Time deadline = absl::InfiniteFuture()) = 0;
  // GET key, the bulk value scattered over `dest` in order (received straight into it). done:
  // the value's length; NotFound for a nil reply; OutOfRange when the value is longer than the
  // destination (it is drained and dropped). `dest` must stay valid until `done` runs.
  virtual void Get(std::string key, std::vector<iovec> dest, GetDone done,
                   absl::Time deadline = absl::InfiniteFuture()) = 0;

  // Synchronous batches, each one pipelined round trip per node involved (in parallel), all
  // finished by `deadline`. Per-key results; a key whose node failed reports the error.
  virtual std::vector<absl::StatusOr<bool>> Exists(absl::Span<const std::string> keys,
                                                   absl::Time deadline) = 0;
  virtual std::vector<absl::Status> Del(absl::Span<const std::string> keys,
                                        absl::Time deadline) = 0;
  // SCAN every master for keys matching `pattern` (MATCH, COUNT 1000), calling fn(key) for
  // each. Read-only. Error when a master cannot be scanned by the deadline (fn has been called
  // for what was scanned until then).
  virtual absl::Status Scan(absl::string_view pattern,
                            const std::function<void(absl::string_view key)>& fn,
                            absl::Time deadline) = 0;
  // One command on the node serving `key` (or any master when key is empty), for tools and
  // tests: the reply rendered as text (bulk strings as-is, arrays one element per line,
  // errors as an error status carrying the server's message).
  virtual absl::StatusOr<std::string> Command(const std::vector<std::string>& args,
                                              absl::string_view key, absl::Time deadline) = 0;

  virtual ClientStats Stats() const = 0;

 protected:
  ClusterClient() = default;
};

}  // namespace kvtier::remote

#endif  // KVTIER_REMOTE_CLUSTER_CLIENT_H_
