// remote/cluster_client.cc — see cluster_client.h.
//
// Threads: the caller's threads route an operation (slot map, circuit breaker) and post it to
// the I/O thread that owns the chosen connection; each I/O thread runs an epoll loop over its
// connections, and every connection's state is touched only by its thread. One connector
// thread opens connections (blocking, bounded by connect_timeout, so an I/O thread never
// waits on a handshake) and refreshes the slot map. Nodes are never deleted before the client
// is; the slot map is an array of atomic Node pointers.

#include "remote/cluster_client.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/mutex.h"
#include "remote/connection.h"
#include "remote/resp.h"

namespace kvtier::remote {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kConnect: return "connect";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kMoved: return "moved";
    case ErrorKind::kAsk: return "ask";
    case ErrorKind::kClusterDown: return "clusterdown";
    case ErrorKind::kTryAgain: return "tryagain";
    case ErrorKind::kLoading: return "loading";
    case ErrorKind::kNoPerm: return "noperm";
    case ErrorKind::kBreakerOpen: return "breaker_open";
    case ErrorKind::kProtocol: return "protocol";
    case ErrorKind::kCount: break;
  }
  return "unknown";
}

uint16_t KeySlot(absl::string_view key) {
  const size_t open = key.find('{');
  if (open != absl::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != absl::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  uint16_t crc = 0;  // CRC16-CCITT (XMODEM): poly 0x1021, init 0
  for (unsigned char c : key) {
    crc ^= static_cast<uint16_t>(c) << 8;
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc & 16383;
}

namespace {

constexpr int kSlots = 16384;
constexpr int kMaxRedirects = 5;
constexpr absl::Duration kTick = absl::Milliseconds(5);
constexpr absl::Duration kMinRefreshInterval = absl::Milliseconds(100);
constexpr char kAsking[] = "*1\r\n$6\r\nASKING\r\n";
constexpr size_t kErrorKinds = static_cast<size_t>(ErrorKind::kCount);

class Impl;
class IoThread;
struct Node;

enum class OpKind : uint8_t { kGet, kSet, kGeneric };

struct Op : Request {
  OpKind kind = OpKind::kGeneric;
  uint16_t slot = 0;
  bool has_key = false;
  Node* node = nullptr;  // where it was sent
  int redirects = 0;
  absl::Time start;
  ClusterClient::Done set_done;
  ClusterClient::GetDone get_done;
  absl::AnyInvocable<void(absl::StatusOr<Reply>) &&> reply_done;
};

// One connection slot of a node, owned by one I/O thread: every field but the constants is
// touched only on that thread.
struct ConnSlot {
  Node* node = nullptr;
  IoThread* thread = nullptr;
  std::unique_ptr<Connection> conn;
  std::deque<std::unique_ptr<Op>> waiting;  // ops that arrived while connecting
  bool connecting = false;
  uint32_t epoll_mask = 0;
  absl::Time last_connect_failure = absl::InfinitePast();
  absl::Status last_connect_error;
};

struct Node {
  std::string address, host;
  int port = 0;
  std::vector<std::unique_ptr<ConnSlot>> conns;
  std::atomic<uint32_t> next_conn{0};
  std::atomic<bool> master{false};
  std::atomic<uint64_t> slots{0};
  std::atomic<int> connected{0};
  std::atomic<uint64_t> ops{0}, bytes_sent{0}, bytes_received{0};
  std::array<std::atomic<uint64_t>, kErrorKinds> errors{};
  // The circuit breaker.
  Mutex mu;
  int failures ABSL_GUARDED_BY(mu) = 0;
  absl::Time open_until ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  bool probing ABSL_GUARDED_BY(mu) = false;
};

struct Task {
  enum class Type : uint8_t { kOp, kFail, kConnected, kConnectFailed } type = Type::kOp;
  ConnSlot* slot = nullptr;
  std::unique_ptr<Op> op;
  std::unique_ptr<Connection> conn;
  absl::Status status;
};

class IoThread {
 public:
  explicit IoThread(Impl* client);
  ~IoThread();
  void Start() { thread_ = std::thread([this] { Loop(); }); }
  void Post(Task task) ABSL_LOCKS_EXCLUDED(mu_);
  void StopAndJoin() ABSL_LOCKS_EXCLUDED(mu_);
  // After StopAndJoin: fails every operation still owned here with `status`.
  void FailEverything(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  void AddSlot(ConnSlot* slot) ABSL_LOCKS_EXCLUDED(slots_mu_) {
    MutexLock lock(&slots_mu_);
    slots_.push_back(slot);
  }

 private:
  void Loop();
  void Run(Task task);
  void Drop(ConnSlot* slot, const absl::Status& status);
  void Service(ConnSlot* slot, bool readable);
  void UpdateMask(ConnSlot* slot);
  void Account(ConnSlot* slot);

  Impl* const client_;
  int epfd_ = -1, evfd_ = -1;
  std::thread thread_;
  Mutex mu_;
  std::vector<Task> inbox_ ABSL_GUARDED_BY(mu_);
  bool signalled_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stop_{false};
  Mutex slots_mu_;  // guards slots_ against AddSlot from the routing threads
  std::vector<ConnSlot*> slots_ ABSL_GUARDED_BY(slots_mu_);
};

class Impl final : public ClusterClient {
 public:
  explicit Impl(const ClusterOptions& options) : options_(options) {
    for (auto& owner : owners_) owner.store(nullptr, std::memory_order_relaxed);
  }
  ~Impl() override;

  absl::Status Init(TlsContext tls);

  void Set(std::string key, std::vector<iovec> value, int64_t px_ms, Done done,
           absl::Time deadline) override;
  void Get(std::string key, std::vector<iovec> dest, GetDone done, absl::Time deadline) override;
  std::vector<absl::StatusOr<bool>> Exists(absl::Span<const std::string> keys,
                                           absl::Time deadline) override;
  std::vector<absl::Status> Del(absl::Span<const std::string> keys, absl::Time deadline) override;
  absl::Status Scan(absl::string_view pattern,
                    const std::function<void(absl::string_view key)>& fn,
                    absl::Time deadline) override;
  absl::StatusOr<std::string> Command(const std::vector<std::string>& args, absl::string_view key,
                                      absl::Time deadline) override;
  ClientStats Stats() const override;

  // --- used by the I/O threads and the connector
  void OnDone(std::unique_ptr<Request> request, absl::Status status, Reply* reply);
  void Finish(std::unique_ptr<Op> op, absl::Status status, Reply* reply);
  void RequestConnect(ConnSlot* slot);
  void RequestRefresh();
  void CountError(Node* node, ErrorKind kind) {
    node->errors[static_cast<size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
    errors_[static_cast<size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
  }
  void BreakerFailure(Node* node);
  void BreakerSuccess(Node* node);
  const ClusterOptions& options() const { return options_; }

 private:
  absl::Time Deadline(absl::Time deadline) const {
    return deadline == absl::InfiniteFuture() ? absl::Now() + options_.op_timeout : deadline;
  }
  Node* GetOrCreateNode(absl::string_view address) ABSL_LOCKS_EXCLUDED(nodes_mu_);
  // Sends `op` to `node` (or, null, to the slot's owner); fails it at once (on an I/O thread)
  // when there is no owner or the node's breaker is open.
  void Route(std::unique_ptr<Op> op, Node* node);
  bool BreakerAllows(Node* node);
  ConnectionOptions ConnOptions(const Node& node) const;
  // Reads CLUSTER SLOTS from the known masters, then the seeds; applies the first answer.
  absl::Status Refresh();
  absl::Status ApplySlots(const Reply& reply, absl::string_view asked_host);
  void ConnectorLoop();
  std::unique_ptr<Op> NewGeneric(const std::vector<std::string>& args, absl::Time deadline,
                                 absl::AnyInvocable<void(absl::StatusOr<Reply>) &&> done);
  std::vector<Node*> Masters() ABSL_LOCKS_EXCLUDED(nodes_mu_);

  const ClusterOptions options_;
  TlsContext tls_;
  std::vector<std::unique_ptr<IoThread>> threads_;
  std::array<std::atomic<Node*>, kSlots> owners_;

  mutable Mutex nodes_mu_;
  std::vector<std::unique_ptr<Node>> nodes_ ABSL_GUARDED_BY(nodes_mu_);
  absl::flat_hash_map<std::string, Node*> by_address_ ABSL_GUARDED_BY(nodes_mu_);
  size_t next_thread_ ABSL_GUARDED_BY(nodes_mu_) = 0;

  // The connector.
  Mutex connector_mu_;
  std::deque<ConnSlot*> connect_queue_ ABSL_GUARDED_BY(connector_mu_);
  bool refresh_wanted_ ABSL_GUARDED_BY(connector_mu_) = false;
  bool connector_stop_ ABSL_GUARDED_BY(connector_mu_) = false;
  absl::Time last_refresh_ ABSL_GUARDED_BY(connector_mu_) = absl::InfinitePast();
  std::thread connector_;
  std::atomic<bool> have_map_{false};

  // Counters.
  std::atomic<uint64_t> gets_{0}, get_hits_{0}, get_misses_{0}, sets_{0}, dels_{0}, exists_{0};
  std::atomic<uint64_t> refreshes_{0};
  std::array<std::atomic<uint64_t>, kErrorKinds> errors_{};
  std::array<std::atomic<uint64_t>, ClientStats::kLatencyBuckets> get_latency_{};
  std::array<std::atomic<uint64_t>, ClientStats::kLatencyBuckets> set_latency_{};
};

// --- IoThread

IoThread::IoThread(Impl* client) : client_(client) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev);
}

IoThread::~IoThread() {
  if (epfd_ >= 0) close(epfd_);
  if (evfd_ >= 0) close(evfd_);
}

void IoThread::Post(Task task) {
  bool wake = false;
  {
    MutexLock lock(&mu_);
    inbox_.push_back(std::move(task));
    if (!signalled_) {
      signalled_ = true;
      wake = true;
    }
  }
  if (wake) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = write(evfd_, &one, sizeof(one));
  }
}

void IoThread::StopAndJoin() {
  stop_.store(true);
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(evfd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

void IoThread::FailEverything(const absl::Status& status) {
  std::vector<Task> inbox;
  {
    MutexLock lock(&mu_);
    inbox.swap(inbox_);
  }
  for (Task& t : inbox) {
    if (t.op != nullptr) client_->Finish(std::move(t.op), status, nullptr);
  }
  MutexLock lock(&slots_mu_);
  for (ConnSlot* slot : slots_) {
    if (slot->conn != nullptr) slot->conn->FailAll(status);
    slot->conn.reset();
    for (auto& op : slot->waiting) client_->Finish(std::move(op), status, nullptr);
    slot->waiting.clear();
  }
}

void IoThread::UpdateMask(ConnSlot* slot) {
  if (slot->conn == nullptr) return;
  const uint32_t want = EPOLLIN | (slot->conn->WantsWrite() ? EPOLLOUT : 0u);
  if (want == slot->epoll_mask) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.ptr = slot;
  epoll_ctl(epfd_, EPOLL_CTL_MOD, slot->conn->fd(), &ev);
  slot->epoll_mask = want;
}

void IoThread::Account(ConnSlot* slot) {
  const uint64_t sent = slot->conn->TakeBytesSent();
  const uint64_t received = slot->conn->TakeBytesReceived();
  slot->node->bytes_sent.fetch_add(sent, std::memory_order_relaxed);
  slot->node->bytes_received.fetch_add(received, std::memory_order_relaxed);
}

void IoThread::Drop(ConnSlot* slot, const absl::Status& status) {
  if (slot->conn == nullptr) return;
  Account(slot);
  epoll_ctl(epfd_, EPOLL_CTL_DEL, slot->conn->fd(), nullptr);
  std::unique_ptr<Connection> conn = std::move(slot->conn);
  slot->epoll_mask = 0;
  slot->node->connected.fetch_sub(1);
  client_->CountError(slot->node, status.code() == absl::StatusCode::kDeadlineExceeded
                                      ? ErrorKind::kTimeout
                                      : ErrorKind::kConnect);
  client_->BreakerFailure(slot->node);
  client_->RequestRefresh();
  conn->FailAll(status);
}

void IoThread::Service(ConnSlot* slot, bool readable) {
  if (slot->conn == nullptr) return;
  absl::Status s;
  if (readable) s = slot->conn->OnReadable();
  if (s.ok()) s = slot->conn->Flush();
  if (slot->conn != nullptr) Account(slot);
  if (!s.ok()) {
    Drop(slot, s);
    return;
  }
  UpdateMask(slot);
}

void IoThread::Run(Task task) {
  ConnSlot* slot = task.slot;
  switch (task.type) {
    case Task::Type::kFail:
      client_->Finish(std::move(task.op), task.status, nullptr);
      return;
    case Task::Type::kOp:
      if (slot->conn != nullptr) {
        slot->conn->Enqueue(std::move(task.op));
        return;  // flushed once the inbox is drained
      }
      if (!slot->connecting && absl::Now() - slot->last_connect_failure < kMinRefreshInterval) {
        // The last attempt failed a moment ago: fail now rather than queue behind a retry.
        client_->Finish(std::move(task.op), slot->last_connect_error, nullptr);
        return;
      }
      slot->waiting.push_back(std::move(task.op));
      if (!slot->connecting) {
        slot->connecting = true;
        client_->RequestConnect(slot);
      }
      return;
    case Task::Type::kConnected: {
      slot->connecting = false;
      slot->conn = std::move(task.conn);
      slot->conn->set_completion(
          [client = client_](std::unique_ptr<Request> r, absl::Status s, Reply* reply) {
            client->OnDone(std::move(r), std::move(s), reply);
          });
      slot->node->connected.fetch_add(1);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = slot;
      epoll_ctl(epfd_, EPOLL_CTL_ADD, slot->conn->fd(), &ev);
      slot->epoll_mask = EPOLLIN;
      for (auto& op : slot->waiting) slot->conn->Enqueue(std::move(op));
      slot->waiting.clear();
      return;
    }
    case Task::Type::kConnectFailed: {
      slot->connecting = false;
      slot->last_connect_failure = absl::Now();
      slot->last_connect_error = task.status;
      client_->CountError(slot->node, ErrorKind::kConnect);
      client_->BreakerFailure(slot->node);
      client_->RequestRefresh();
      std::deque<std::unique_ptr<Op>> waiting = std::move(slot->waiting);
      slot->waiting.clear();
      for (auto& op : waiting) client_->Finish(std::move(op), task.status, nullptr);
      return;
    }
  }
}

void IoThread::Loop() {
  epoll_event events[64];
  absl::Time next_expire = absl::Now() + kTick;
  std::vector<Task> tasks;
  std::vector<ConnSlot*> touched;
  while (!stop_.load()) {
    const int n = epoll_wait(epfd_, events, 64, static_cast<int>(absl::ToInt64Milliseconds(kTick)));
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        uint64_t v;
        [[maybe_unused]] const ssize_t r = read(evfd_, &v, sizeof(v));
        continue;
      }
      auto* slot = static_cast<ConnSlot*>(events[i].data.ptr);
      Service(slot, (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0);
    }
    {
      MutexLock lock(&mu_);
      tasks.swap(inbox_);
      signalled_ = false;
    }
    touched.clear();
    for (Task& t : tasks) {
      ConnSlot* slot = t.slot;
      const bool op = t.type == Task::Type::kOp || t.type == Task::Type::kConnected;
      Run(std::move(t));
      if (op && slot != nullptr && slot->conn != nullptr) touched.push_back(slot);
    }
    tasks.clear();
    for (ConnSlot* slot : touched) Service(slot, false);
    const absl::Time now = absl::Now();
    if (now >= next_expire) {
      next_expire = now + kTick;
      std::vector<ConnSlot*> slots;
      {
        MutexLock lock(&slots_mu_);
        slots = slots_;
      }
      for (ConnSlot* slot : slots) {
        for (auto it = slot->waiting.begin(); it != slot->waiting.end();) {
          if ((*it)->deadline <= now) {
            std::unique_ptr<Op> op = std::move(*it);
            it = slot->waiting.erase(it);
            client_->Finish(std::move(op),
                            absl::DeadlineExceededError(absl::StrCat(
                                slot->node->address, ": deadline passed while connecting")),
                            nullptr);
          } else {
            ++it;
          }
        }
        if (slot->conn == nullptr) continue;
        if (absl::Status s = slot->conn->Expire(now); !s.ok()) {
          Drop(slot, s);
        } else {
          UpdateMask(slot);
        }
      }
    }
  }
}

// --- Impl

Impl::~Impl() {
  {
    MutexLock lock(&connector_mu_);
    connector_stop_ = true;
  }
  if (connector_.joinable()) connector_.join();
  for (auto& t : threads_) t->StopAndJoin();
  const absl::Status cancelled = absl::CancelledError("ClusterClient destroyed");
  for (auto& t : threads_) t->FailEverything(cancelled);
}

ConnectionOptions Impl::ConnOptions(const Node& node) const {
  ConnectionOptions o;
  o.host = node.host;
  o.port = node.port;
  o.user = options_.user;
  o.password = options_.password;
  o.tls = tls_.get();
  o.server_name = options_.tls.server_name;
  o.max_inflight_bytes = options_.max_inflight_bytes_per_connection;
  return o;
}

Node* Impl::GetOrCreateNode(absl::string_view address) {
  MutexLock lock(&nodes_mu_);
  auto it = by_address_.find(address);
  if (it != by_address_.end()) return it->second;
  auto node = std::make_unique<Node>();
  node->address = std::string(address);
  const size_t colon = address.rfind(':');
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  node->host = std::string(host);
  (void)absl::SimpleAtoi(address.substr(colon + 1), &node->port);
  for (uint32_t i = 0; i < options_.connections_per_node; ++i) {
    auto slot = std::make_unique<ConnSlot>();
    slot->node = node.get();
    slot->thread = threads_[next_thread_++ % threads_.size()].get();
    slot->thread->AddSlot(slot.get());
    node->conns.push_back(std::move(slot));
  }
  Node* raw = node.get();
  by_address_[raw->address] = raw;
  nodes_.push_back(std::move(node));
  return raw;
}

std::vector<Node*> Impl::Masters() {
  std::vector<Node*> out;
  MutexLock lock(&nodes_mu_);
  for (auto& n : nodes_) {
    if (n->master.load() && n->slots.load() > 0) out.push_back(n.get());
  }
  return out;
}

bool Impl::BreakerAllows(Node* node) {
  MutexLock lock(&node->mu);
  if (node->failures < static_cast<int>(options_.breaker_failures)) return true;
  const absl::Time now = absl::Now();
  if (now < node->open_until || node->probing) return false;
  node->probing = true;  // half-open: one probe goes through
  return true;
}

void Impl::BreakerFailure(Node* node) {
  MutexLock lock(&node->mu);
  ++node->failures;
  node->probing = false;
  if (node->failures >= static_cast<int>(options_.breaker_failures)) {
    node->open_until = absl::Now() + options_.breaker_open_for;
  }
}

void Impl::BreakerSuccess(Node* node) {
  MutexLock lock(&node->mu);
  node->failures = 0;
  node->probing = false;
}

void Impl::Route(std::unique_ptr<Op> op, Node* node) {
  if (node == nullptr) node = owners_[op->slot].load(std::memory_order_acquire);
  if (node == nullptr) {
    Node* any = nullptr;
    {
      MutexLock lock(&nodes_mu_);
      if (!nodes_.empty()) any = nodes_.front().get();
    }
    RequestRefresh();
    const absl::Status s = absl::UnavailableError(
        have_map_.load() ? absl::StrCat("no node serves hash slot ", op->slot)
                         : std::string("no seed node has answered yet"));
    if (any == nullptr) {
      Finish(std::move(op), s, nullptr);  // no I/O thread knows any node yet
      return;
    }
    op->node = nullptr;
    ConnSlot* slot = any->conns[0].get();
    Task t;
    t.type = Task::Type::kFail;
    t.slot = slot;
    t.op = std::move(op);
    t.status = s;
    slot->thread->Post(std::move(t));
    return;
  }
  op->node = node;
  const uint32_t i = node->next_conn.fetch_add(1, std::memory_order_relaxed);
  ConnSlot* slot = node->conns[i % node->conns.size()].get();
  Task t;
  t.slot = slot;
  if (!BreakerAllows(node)) {
    CountError(node, ErrorKind::kBreakerOpen);
    RequestRefresh();
    t.type = Task::Type::kFail;
    t.status = absl::UnavailableError(
        absl::StrCat(node->address, ": circuit breaker open (recent failures)"));
  }
  t.op = std::move(op);
  slot->thread->Post(std::move(t));
}

void Impl::Set(std::string key, std::vector<iovec> value, int64_t px_ms, Done done,
               absl::Time deadline) {
  auto op = std::make_unique<Op>();
  op->kind = OpKind::kSet;
  op->start = absl::Now();
  op->deadline = Deadline(deadline);
  op->slot = KeySlot(key);
  op->has_key = true;
  size_t len = 0;
  for (const iovec& v : value) len += v.iov_len;
  op->head.reserve(64 + key.size());
  AppendArrayHeader(&op->head, px_ms > 0 ? 5 : 3);
  AppendBulk(&op->head, "SET");
  AppendBulk(&op->head, key);
  AppendBulkHeader(&op->head, len);
  op->tail = "\r\n";
  if (px_ms > 0) {
    AppendBulk(&op->tail, "PX");
    AppendBulk(&op->tail, absl::StrCat(px_ms));
  }
  op->value = std::move(value);
  op->value_bytes = len;
  op->set_done = std::move(done);
  sets_.fetch_add(1, std::memory_order_relaxed);
  Route(std::move(op), nullptr);
}

void Impl::Get(std::string key, std::vector<iovec> dest, GetDone done, absl::Time deadline) {
  auto op = std::make_unique<Op>();
  op->kind = OpKind::kGet;
  op->start = absl::Now();
  op->deadline = Deadline(deadline);
  op->slot = KeySlot(key);
  op->has_key = true;
  AppendArrayHeader(&op->head, 2);
  AppendBulk(&op->head, "GET");
  AppendBulk(&op->head, key);
  size_t len = 0;
  for (const iovec& v : dest) len += v.iov_len;
  op->value_bytes = len;
  op->sink = std::move(dest);
  op->get_done = std::move(done);
  gets_.fetch_add(1, std::memory_order_relaxed);
  Route(std::move(op), nullptr);
}

std::unique_ptr<Op> Impl::NewGeneric(const std::vector<std::string>& args, absl::Time deadline,
                                     absl::AnyInvocable<void(absl::StatusOr<Reply>) &&> done) {
  auto op = std::make_unique<Op>();
  op->kind = OpKind::kGeneric;
  op->start = absl::Now();
  op->deadline = deadline;
  AppendCommand(&op->head, args);
  op->reply_done = std::move(done);
  return op;
}

void Impl::OnDone(std::unique_ptr<Request> request, absl::Status status, Reply* reply) {
  std::unique_ptr<Op> op(static_cast<Op*>(request.release()));
  Node* node = op->node;
  if (!status.ok()) {
    if (status.code() == absl::StatusCode::kDeadlineExceeded) {
      CountError(node, ErrorKind::kTimeout);
      BreakerFailure(node);
    }
    Finish(std::move(op), status, nullptr);
    return;
  }
  if (reply->IsError()) {
    const std::string& msg = reply->str;
    const bool moved = absl::StartsWith(msg, "MOVED ");
    const bool ask = absl::StartsWith(msg, "ASK ");
    if (moved || ask) {
      CountError(node, moved ? ErrorKind::kMoved : ErrorKind::kAsk);
      std::vector<absl::string_view> parts = absl::StrSplit(msg, ' ', absl::SkipEmpty());
      int slot = -1;
      if (parts.size() < 3 || !absl::SimpleAtoi(parts[1], &slot) || slot < 0 || slot >= kSlots ||
          parts[2].rfind(':') == absl::string_view::npos) {
        CountError(node, ErrorKind::kProtocol);
        Finish(std::move(op), absl::InternalError(absl::StrCat(node->address,
                                                               ": malformed redirect: ", msg)),
               nullptr);
        return;
      }
      if (op->redirects >= kMaxRedirects) {
        Finish(std::move(op), absl::UnavailableError(absl::StrCat(
                                  node->address, ": too many redirects, last: ", msg)),
               nullptr);
        return;
      }
      ++op->redirects;
      Node* target = GetOrCreateNode(parts[2]);
      if (op->asking) {
        op->head.erase(0, sizeof(kAsking) - 1);
        op->asking = false;
      }
      if (moved) {
        owners_[slot].store(target, std::memory_order_release);
        RequestRefresh();
      } else {
        op->head.insert(0, kAsking);
        op->asking = true;
      }
      Route(std::move(op), target);
      return;
    }
    ErrorKind kind = ErrorKind::kProtocol;
    absl::Status s;
    if (absl::StartsWith(msg, "CLUSTERDOWN")) {
      kind = ErrorKind::kClusterDown;
    } else if (absl::StartsWith(msg, "TRYAGAIN")) {
      kind = ErrorKind::kTryAgain;
    } else if (absl::StartsWith(msg, "LOADING")) {
      kind = ErrorKind::kLoading;
    } else if (absl::StartsWith(msg, "NOPERM") || absl::StartsWith(msg, "NOAUTH") ||
               absl::StartsWith(msg, "WRONGPASS")) {
      kind = ErrorKind::kNoPerm;
    }
    CountError(node, kind);
    switch (kind) {
      case ErrorKind::kClusterDown:
      case ErrorKind::kLoading:
        BreakerFailure(node);
        RequestRefresh();
        s = absl::UnavailableError(absl::StrCat(node->address, ": ", msg));
        break;
      case ErrorKind::kTryAgain:
        s = absl::UnavailableError(absl::StrCat(node->address, ": ", msg));
        break;
      case ErrorKind::kNoPerm:
        BreakerSuccess(node);
        s = absl::PermissionDeniedError(absl::StrCat(node->address, ": ", msg));
        break;
      default:
        BreakerSuccess(node);
        s = absl::InternalError(absl::StrCat(node->address, ": server error: ", msg));
        break;
    }
    Finish(std::move(op), s, nullptr);
    return;
  }
  BreakerSuccess(node);
  Finish(std::move(op), absl::OkStatus(), reply);
}

void Impl::Finish(std::unique_ptr<Op> op, absl::Status status, Reply* reply) {
  if (op->node != nullptr) op->node->ops.fetch_add(1, std::memory_order_relaxed);
  const auto latency_bucket = [&] {
    const int64_t us = absl::ToInt64Microseconds(absl::Now() - op->start);
    int b = 0;
    while (b < ClientStats::kLatencyBuckets - 1 && us >= (int64_t{1} << b)) ++b;
    return b;
  };
  switch (op->kind) {
    case OpKind::kGet: {
      absl::StatusOr<size_t> result;
      if (!status.ok()) {
        result = status;
      } else if (reply->type == Reply::Type::kNil) {
        get_misses_.fetch_add(1, std::memory_order_relaxed);
        result = absl::NotFoundError("no such key");
      } else if (reply->type == Reply::Type::kBulk && reply->sunk) {
        if (reply->overflow) {
          CountError(op->node, ErrorKind::kProtocol);
          result = absl::OutOfRangeError(absl::StrCat(
              op->node->address, ": the value (", reply->bulk_length,
              " bytes) is larger than the destination (", op->value_bytes, " bytes)"));
        } else {
          get_hits_.fetch_add(1, std::memory_order_relaxed);
          result = static_cast<size_t>(reply->bulk_length);
        }
      } else if (reply->type == Reply::Type::kBulk && op->sink.empty() && reply->str.empty()) {
        get_hits_.fetch_add(1, std::memory_order_relaxed);
        result = size_t{0};
      } else {
        CountError(op->node, ErrorKind::kProtocol);
        result = absl::InternalError(absl::StrCat(op->node->address,
                                                  ": unexpected reply to GET: ", reply->ToText()));
      }
      if (status.ok()) get_latency_[latency_bucket()].fetch_add(1, std::memory_order_relaxed);
      std::move(op->get_done)(std::move(result));
      return;
    }
    case OpKind::kSet: {
      if (status.ok() && !(reply->type == Reply::Type::kSimple && reply->str == "OK")) {
        CountError(op->node, ErrorKind::kProtocol);
        status = absl::InternalError(absl::StrCat(op->node->address,
                                                  ": unexpected reply to SET: ", reply->ToText()));
      }
      if (status.ok()) set_latency_[latency_bucket()].fetch_add(1, std::memory_order_relaxed);
      std::move(op->set_done)(std::move(status));
      return;
    }
    case OpKind::kGeneric:
      if (status.ok()) {
        std::move(op->reply_done)(std::move(*reply));
      } else {
        std::move(op->reply_done)(std::move(status));
      }
      return;
  }
}

void Impl::RequestConnect(ConnSlot* slot) {
  MutexLock lock(&connector_mu_);
  connect_queue_.push_back(slot);
}

void Impl::RequestRefresh() {
  MutexLock lock(&connector_mu_);
  refresh_wanted_ = true;
}

void Impl::ConnectorLoop() {
  while (true) {
    ConnSlot* slot = nullptr;
    bool refresh = false;
    {
      MutexLock lock(&connector_mu_);
      connector_mu_.AwaitWithTimeout(
          [&] {
            connector_mu_.AssertHeld();
            return connector_stop_ || !connect_queue_.empty() ||
                   (refresh_wanted_ && absl::Now() - last_refresh_ >= kMinRefreshInterval);
          },
          kMinRefreshInterval);
      if (connector_stop_) return;
      if (!connect_queue_.empty()) {
        slot = connect_queue_.front();
        connect_queue_.pop_front();
      } else if ((refresh_wanted_ || !have_map_.load()) &&
                 absl::Now() - last_refresh_ >= kMinRefreshInterval) {
        refresh = true;
        refresh_wanted_ = false;
        last_refresh_ = absl::Now();
      }
    }
    if (slot != nullptr) {
      absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Open(
          ConnOptions(*slot->node), absl::Now() + options_.connect_timeout);
      Task t;
      t.slot = slot;
      if (conn.ok()) {
        t.type = Task::Type::kConnected;
        t.conn = std::move(*conn);
      } else {
        t.type = Task::Type::kConnectFailed;
        t.status = conn.status().code() == absl::StatusCode::kPermissionDenied
                       ? conn.status()
                       : absl::UnavailableError(conn.status().message());
      }
      slot->thread->Post(std::move(t));
    } else if (refresh) {
      (void)Refresh();
    }
  }
}

absl::Status Impl::ApplySlots(const Reply& reply, absl::string_view asked_host) {
  if (reply.type != Reply::Type::kArray) {
    return absl::InternalError(absl::StrCat("CLUSTER SLOTS: unexpected reply ", reply.ToText()));
  }
  std::vector<Node*> owner(kSlots, nullptr);
  absl::flat_hash_map<Node*, uint64_t> counts;
  for (const Reply& range : reply.elements) {
    if (range.type != Reply::Type::kArray || range.elements.size() < 3 ||
        range.elements[0].type != Reply::Type::kInteger ||
        range.elements[1].type != Reply::Type::kInteger ||
        range.elements[2].type != Reply::Type::kArray || range.elements[2].elements.size() < 2) {
      return absl::InternalError("CLUSTER SLOTS: malformed range");
    }
    const int64_t first = range.elements[0].integer, last = range.elements[1].integer;
    const Reply& master = range.elements[2];
    if (first < 0 || last >= kSlots || first > last ||
        master.elements[1].type != Reply::Type::kInteger) {
      return absl::InternalError("CLUSTER SLOTS: malformed range");
    }
    std::string host = master.elements[0].str;
    if (host.empty() || host == "?") host = std::string(asked_host);
    const std::string address = host.find(':') != std::string::npos
                                    ? absl::StrCat("[", host, "]:", master.elements[1].integer)
                                    : absl::StrCat(host, ":", master.elements[1].integer);
    Node* node = GetOrCreateNode(address);
    for (int64_t s = first; s <= last; ++s) owner[static_cast<size_t>(s)] = node;
    counts[node] += static_cast<uint64_t>(last - first + 1);
  }
  for (int s = 0; s < kSlots; ++s) owners_[s].store(owner[s], std::memory_order_release);
  {
    MutexLock lock(&nodes_mu_);
    for (auto& n : nodes_) {
      auto it = counts.find(n.get());
      n->slots.store(it == counts.end() ? 0 : it->second);
      n->master.store(it != counts.end());
    }
  }
  have_map_.store(true);
  refreshes_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status Impl::Refresh() {
  std::vector<std::string> candidates;
  for (Node* n : Masters()) candidates.push_back(n->address);
  for (const std::string& s : options_.seeds) candidates.push_back(s);
  {
    MutexLock lock(&nodes_mu_);
    for (auto& n : nodes_) candidates.push_back(n->address);
  }
  std::vector<std::string> errors;
  absl::flat_hash_map<std::string, bool> tried;
  for (const std::string& address : candidates) {
    if (tried[address]) continue;
    tried[address] = true;
    Node probe;
    const size_t colon = address.rfind(':');
    probe.host = address.substr(0, colon);
    if (probe.host.size() >= 2 && probe.host.front() == '[') {
      probe.host = probe.host.substr(1, probe.host.size() - 2);
    }
    (void)absl::SimpleAtoi(address.substr(colon + 1), &probe.port);
    const absl::Time deadline = absl::Now() + options_.connect_timeout;
    absl::StatusOr<std::unique_ptr<Connection>> conn =
        Connection::Open(ConnOptions(probe), deadline);
    if (!conn.ok()) {
      if (conn.status().code() == absl::StatusCode::kPermissionDenied) return conn.status();
      errors.push_back(std::string(conn.status().message()));
      continue;
    }
    absl::StatusOr<Reply> reply =
        (*conn)->Call({"CLUSTER", "SLOTS"}, absl::Now() + options_.op_timeout);
    if (!reply.ok()) {
      errors.push_back(absl::StrCat(address, ": CLUSTER SLOTS: ", reply.status().message()));
      continue;
    }
    if (reply->IsError()) {
      if (absl::StrContains(reply->str, "cluster support disabled")) {
        return absl::FailedPreconditionError(
            absl::StrCat(address, ": the server is not in cluster mode (", reply->str, ")"));
      }
      if (absl::StartsWith(reply->str, "NOPERM")) {
        return absl::PermissionDeniedError(
            absl::StrCat(address, ": CLUSTER SLOTS refused: ", reply->str,
                         " (the user needs +cluster|slots)"));
      }
      errors.push_back(absl::StrCat(address, ": CLUSTER SLOTS: ", reply->str));
      continue;
    }
    if (absl::Status s = ApplySlots(*reply, probe.host); !s.ok()) {
      errors.push_back(absl::StrCat(address, ": ", s.message()));
      continue;
    }
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat("no cluster node answered CLUSTER SLOTS: ",
                                             absl::StrJoin(errors, "; ")));
}

absl::Status Impl::Init(TlsContext tls) {
  tls_ = std::move(tls);
  for (uint32_t i = 0; i < options_.io_threads; ++i) {
    threads_.push_back(std::make_unique<IoThread>(this));
  }
  absl::Status s = Refresh();
  if (!s.ok() && (!options_.allow_unreachable || s.code() != absl::StatusCode::kUnavailable)) {
    return s;
  }
  for (auto& t : threads_) t->Start();
  connector_ = std::thread([this] { ConnectorLoop(); });
  return absl::OkStatus();
}

std::vector<absl::StatusOr<bool>> Impl::Exists(absl::Span<const std::string> keys,
                                               absl::Time deadline) {
  struct State {
    Mutex mu;
    size_t left ABSL_GUARDED_BY(mu) = 0;
    std::vector<absl::StatusOr<bool>> results ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<State>();
  {
    MutexLock lock(&state->mu);
    state->left = keys.size();
    state->results.assign(keys.size(), absl::UnknownError("not done"));
  }
  exists_.fetch_add(keys.size(), std::memory_order_relaxed);
  for (size_t i = 0; i < keys.size(); ++i) {
    auto op = NewGeneric({"EXISTS", keys[i]}, deadline,
                         [state, i](absl::StatusOr<Reply> r) {
                           MutexLock lock(&state->mu);
                           if (!r.ok()) {
                             state->results[i] = r.status();
                           } else if (r->type == Reply::Type::kInteger) {
                             state->results[i] = r->integer > 0;
                           } else {
                             state->results[i] = absl::InternalError(
                                 absl::StrCat("unexpected reply to EXISTS: ", r->ToText()));
                           }
                           --state->left;
                         });
    op->slot = KeySlot(keys[i]);
    op->has_key = true;
    Route(std::move(op), nullptr);
  }
  MutexLock lock(&state->mu);
  state->mu.Await([&] {
    state->mu.AssertHeld();
    return state->left == 0;
  });
  return state->results;
}

std::vector<absl::Status> Impl::Del(absl::Span<const std::string> keys, absl::Time deadline) {
  struct State {
    Mutex mu;
    size_t left ABSL_GUARDED_BY(mu) = 0;
    std::vector<absl::Status> results ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<State>();
  {
    MutexLock lock(&state->mu);
    state->left = keys.size();
    state->results.assign(keys.size(), absl::UnknownError("not done"));
  }
  dels_.fetch_add(keys.size(), std::memory_order_relaxed);
  for (size_t i = 0; i < keys.size(); ++i) {
    auto op = NewGeneric({"DEL", keys[i]}, deadline, [state, i](absl::StatusOr<Reply> r) {
      MutexLock lock(&state->mu);
      state->results[i] = r.ok() ? absl::OkStatus() : r.status();
      --state->left;
    });
    op->slot = KeySlot(keys[i]);
    op->has_key = true;
    Route(std::move(op), nullptr);
  }
  MutexLock lock(&state->mu);
  state->mu.Await([&] {
    state->mu.AssertHeld();
    return state->left == 0;
  });
  return state->results;
}

namespace {
// Runs one generic op and waits for its reply (every op completes by its deadline).
struct SyncCall {
  Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<Reply> reply ABSL_GUARDED_BY(mu);
};
}  // namespace

absl::StatusOr<std::string> Impl::Command(const std::vector<std::string>& args,
                                          absl::string_view key, absl::Time deadline) {
  if (args.empty()) return absl::InvalidArgumentError("Command: no arguments");
  auto call = std::make_shared<SyncCall>();
  auto op = NewGeneric(args, deadline, [call](absl::StatusOr<Reply> r) {
    MutexLock lock(&call->mu);
    call->reply = std::move(r);
    call->done = true;
  });
  Node* node = nullptr;
  if (key.empty()) {
    std::vector<Node*> masters = Masters();
    if (masters.empty()) return absl::UnavailableError("Command: no master is known");
    node = masters.front();
  } else {
    op->slot = KeySlot(key);
    op->has_key = true;
  }
  Route(std::move(op), node);
  MutexLock lock(&call->mu);
  call->mu.Await([&] {
    call->mu.AssertHeld();
    return call->done;
  });
  if (!call->reply.ok()) return call->reply.status();
  return call->reply->ToText();
}

absl::Status Impl::Scan(absl::string_view pattern,
                        const std::function<void(absl::string_view key)>& fn,
                        absl::Time deadline) {
  for (Node* node : Masters()) {
    std::string cursor = "0";
    do {
      auto call = std::make_shared<SyncCall>();
      auto op = NewGeneric({"SCAN", cursor, "MATCH", std::string(pattern), "COUNT", "1000"},
                           deadline, [call](absl::StatusOr<Reply> r) {
                             MutexLock lock(&call->mu);
                             call->reply = std::move(r);
                             call->done = true;
                           });
      Route(std::move(op), node);
      MutexLock lock(&call->mu);
      call->mu.Await([&] {
        call->mu.AssertHeld();
        return call->done;
      });
      if (!call->reply.ok()) {
        return absl::Status(call->reply.status().code(),
                            absl::StrCat("Scan of ", node->address, ": ",
                                         call->reply.status().message()));
      }
      const Reply& r = *call->reply;
      if (r.type != Reply::Type::kArray || r.elements.size() != 2 ||
          r.elements[1].type != Reply::Type::kArray) {
        return absl::InternalError(absl::StrCat("Scan of ", node->address,
                                                ": unexpected reply ", r.ToText()));
      }
      cursor = r.elements[0].str;
      for (const Reply& k : r.elements[1].elements) fn(k.str);
    } while (cursor != "0");
  }
  return absl::OkStatus();
}

ClientStats Impl::Stats() const {
  ClientStats s;
  s.gets = gets_.load();
  s.get_hits = get_hits_.load();
  s.get_misses = get_misses_.load();
  s.sets = sets_.load();
  s.dels = dels_.load();
  s.exists = exists_.load();
  s.slot_map_refreshes = refreshes_.load();
  for (size_t k = 0; k < kErrorKinds; ++k) s.errors[k] = errors_[k].load();
  for (int b = 0; b < ClientStats::kLatencyBuckets; ++b) {
    s.get_latency_us[b] = get_latency_[b].load();
    s.set_latency_us[b] = set_latency_[b].load();
  }
  MutexLock lock(&nodes_mu_);
  const absl::Time now = absl::Now();
  for (const auto& n : nodes_) {
    NodeStats ns;
    ns.address = n->address;
    ns.master = n->master.load();
    ns.connected = n->connected.load() > 0;
    {
      MutexLock breaker(&n->mu);
      ns.breaker_open =
          n->failures >= static_cast<int>(options_.breaker_failures) && now < n->open_until;
    }
    ns.slots = n->slots.load();
    ns.ops = n->ops.load();
    ns.bytes_sent = n->bytes_sent.load();
    ns.bytes_received = n->bytes_received.load();
    for (size_t k = 0; k < kErrorKinds; ++k) ns.errors[k] = n->errors[k].load();
    s.bytes_sent += ns.bytes_sent;
    s.bytes_received += ns.bytes_received;
    s.nodes.push_back(std::move(ns));
  }
  return s;
}

absl::Status ValidateSeed(absl::string_view seed) {
  const size_t colon = seed.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("seeds: '", seed, "' is not host:port (e.g. 127.0.0.1:7000)"));
  }
  int port = 0;
  if (!absl::SimpleAtoi(seed.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("seeds: '", seed, "' has no port in 1..65535"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClusterClient>> ClusterClient::Connect(
    const ClusterOptions& options) {
  if (options.seeds.empty()) {
    return absl::InvalidArgumentError("seeds: at least one host:port is required");
  }
  for (const std::string& seed : options.seeds) {
    if (absl::Status s = ValidateSeed(seed); !s.ok()) return s;
  }
  if (options.connections_per_node < 1 || options.connections_per_node > 16) {
    return absl::InvalidArgumentError("connections_per_node: must be 1..16");
  }
  if (options.io_threads < 1 || options.io_threads > 16) {
    return absl::InvalidArgumentError("io_threads: must be 1..16");
  }
  if (options.max_inflight_bytes_per_connection == 0) {
    return absl::InvalidArgumentError("max_inflight_bytes_per_connection: must be > 0");
  }
  if (options.breaker_failures < 1) {
    return absl::InvalidArgumentError("breaker_failures: must be >= 1");
  }
  if (options.connect_timeout <= absl::ZeroDuration() ||
      options.op_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("connect_timeout and op_timeout: must be > 0");
  }
  if (options.user.size() > 0 && options.password.empty()) {
    return absl::InvalidArgumentError("user: given without a password");
  }
  TlsContext tls;
  if (options.tls.enabled) {
    absl::StatusOr<TlsContext> ctx = MakeTlsContext(options.tls);
    if (!ctx.ok()) return ctx.status();
    tls = std::move(*ctx);
  }
  auto client = std::make_unique<Impl>(options);
  if (absl::Status s = client->Init(std::move(tls)); !s.ok()) return s;
  return std::unique_ptr<ClusterClient>(std::move(client));
}

}  // namespace kvtier::remote
