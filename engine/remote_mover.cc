// engine/remote_mover.cc — see remote_mover.h.

#include "engine/remote_mover.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace kvtier {
namespace {

constexpr TierKind kHost = TierKind::kHost;
constexpr TierKind kRemote = TierKind::kRemote;
constexpr size_t kHeader = remote::kRemoteHeaderBytes;
// Worker threads: the checks of values read (checksum, MAC, decode) and the encoding of values
// written. Two keep a read's verification off a write's encoding.
constexpr int kWorkers = 2;

uint64_t Err(const remote::ClientStats& c, remote::ErrorKind k) {
  return c.errors[static_cast<size_t>(k)];
}

// The client's log2-microsecond buckets, as the engine's LatencyStats (whose sum is unknown:
// the client keeps none, so it is estimated from bucket midpoints).
LatencyStats ToLatency(const uint64_t (&us)[remote::ClientStats::kLatencyBuckets]) {
  LatencyStats l;
  for (int i = 0; i < remote::ClientStats::kLatencyBuckets && i < kLatencyBuckets; ++i) {
    l.buckets[i] = us[i];
    l.count += us[i];
    const uint64_t mid_ns = i == 0 ? 500 : (uint64_t{3} << (i - 1)) * 500;
    l.sum_ns += us[i] * mid_ns;
  }
  return l;
}

}  // namespace

remote::ClusterOptions MakeClusterOptions(const RemoteOptions& r) {
  remote::ClusterOptions o;
  o.seeds = r.seeds;
  o.user = r.user;
  o.password = r.password;
  o.tls.enabled = r.tls;
  o.tls.ca_file = r.tls_ca_file;
  o.tls.cert_file = r.tls_cert_file;
  o.tls.key_file = r.tls_key_file;
  o.tls.server_name = r.tls_server_name;
  o.connect_timeout = r.connect_timeout;
  o.op_timeout = r.op_timeout;
  o.connections_per_node = r.connections_per_node;
  o.io_threads = r.io_threads;
  o.allow_unreachable = r.allow_unreachable;
  return o;
}

// One value being read into a host slot.
struct RemoteMover::Read {
  BlockKey key;
  uint32_t ns_id = 0;
  std::string ns;
  uint64_t write_id = 0;
  std::shared_ptr<HostFill> fill;
  void* slot = nullptr;
  std::unique_ptr<char[]> header;
  // When the slot's old bytes are still in use (SlotReuse pending), the value lands here and is
  // copied into the slot once they are not.
  std::unique_ptr<char[]> bounce;
  SlotReuse reuse;
  absl::Time started;  // the GET was sent (a sample of the remote tier's rate)
};

RemoteMover::RemoteMover(const RemoteOptions& options, const Geometry& geometry,
                         absl::string_view model_fingerprint, bool secure_erase, bool stores,
                         Placement& placement, BlockTable& table, NamespaceRegistry& namespaces,
                         CompletionQueue& completions, EngineCounters& counters)
    : options_(options),
      geometry_(geometry),
      block_bytes_(geometry.block_bytes()),
      model_id_(remote::RemoteModelId(model_fingerprint, geometry.Fingerprint())),
      secure_erase_(secure_erase),
      stores_(stores),
      policy_(
          ParseRemoteWritePolicy(options.write_policy).value_or(RemoteWritePolicy::kWriteThrough)),
      placement_(placement),
      table_(table),
      namespaces_(namespaces),
      completions_(completions),
      counters_(counters) {
  if (Tier* host = placement.tier(kHost); host != nullptr) {
    max_write_pins_ = std::max<size_t>(1, host->num_slots() / 4);
  }
}

absl::StatusOr<std::unique_ptr<RemoteMover>> RemoteMover::Open(
    const RemoteOptions& options, const Geometry& geometry, absl::string_view model_fingerprint,
    bool secure_erase, bool stores, Placement& placement, BlockTable& table,
    NamespaceRegistry& namespaces, CompletionQueue& completions, EngineCounters& counters) {
  if (absl::Status s = ValidateRemoteOptions(options, geometry); !s.ok()) return s;
  AdmissionOptions ao;
  ao.min_seen = options.admit_min_seen;
  ao.write_budget_mbps = options.write_budget_mbps;
  absl::StatusOr<std::unique_ptr<AdmissionPolicy>> admission = AdmissionPolicy::Create(ao);
  if (!admission.ok()) return admission.status();
  absl::StatusOr<std::unique_ptr<remote::ClusterClient>> client =
      remote::ClusterClient::Connect(MakeClusterOptions(options));
  if (!client.ok()) {
    return absl::Status(client.status().code(),
                        absl::StrCat("remote tier: ", client.status().message()));
  }
  std::unique_ptr<RemoteMover> mover(new RemoteMover(options, geometry, model_fingerprint,
                                                     secure_erase, stores, placement, table,
                                                     namespaces, completions, counters));
  mover->codec_ = ParseCodec(options.codec).value_or(Codec::kNone);
  mover->admission_ = std::move(*admission);
  mover->client_ = std::move(*client);
  RemoteMover* self = mover.get();
  for (int i = 0; i < kWorkers; ++i) mover->workers_.emplace_back([self] { self->Loop(); });
  return mover;
}

RemoteMover::~RemoteMover() {
  Drain();
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
  client_.reset();  // fails what is left (nothing: drained) and joins the I/O threads
  completions_.Drain();
}

// ----------------------------------------------------------------------------- workers

void RemoteMover::Post(absl::AnyInvocable<void() &&> job) {
  MutexLock lock(&mu_);
  jobs_.push_back(std::move(job));
}

void RemoteMover::Loop() {
  for (;;) {
    absl::AnyInvocable<void() &&> job;
    {
      MutexLock lock(&mu_);
      mu_.Await([this] {
        mu_.AssertHeld();
        return stop_ || !jobs_.empty();
      });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
      ++running_;
    }
    std::move(job)();
    MutexLock lock(&mu_);
    --running_;
  }
}

void RemoteMover::OpStarted() {
  MutexLock lock(&mu_);
  ++ops_;
}

void RemoteMover::OpEnded() {
  MutexLock lock(&mu_);
  --ops_;
}

void RemoteMover::Drain() {
  MutexLock lock(&mu_);
  mu_.Await([this] {
    mu_.AssertHeld();
    return ops_ == 0 && jobs_.empty() && running_ == 0;
  });
}

absl::string_view RemoteMover::Secret(absl::string_view ns) const {
  auto it = options_.hmac_secrets.find(std::string(ns));
  return it == options_.hmac_secrets.end() ? absl::string_view() : absl::string_view(it->second);
}

// ----------------------------------------------------------------------------- match

size_t RemoteMover::MatchPrefix(uint32_t ns_id, absl::Span<const BlockKey> keys) {
  if (keys.empty()) return 0;
  const std::string ns = namespaces_.Name(ns_id);
  std::vector<std::string> names;
  names.reserve(keys.size());
  for (const BlockKey& key : keys) names.push_back(remote::RemoteKey(ns, model_id_, key));
  const std::vector<absl::StatusOr<bool>> found =
      client_->Exists(names, absl::Now() + options_.match_timeout);
  size_t prefix = 0;
  uint64_t errors = 0;
  for (size_t i = 0; i < found.size(); ++i) {
    if (!found[i].ok()) ++errors;
    if (prefix == i && found[i].ok() && *found[i]) ++prefix;
  }
  lookups_.fetch_add(keys.size(), std::memory_order_relaxed);
  lookup_hits_.fetch_add(prefix, std::memory_order_relaxed);
  if (errors != 0) {
    lookup_errors_.fetch_add(errors, std::memory_order_relaxed);
    auto failed = std::find_if(found.begin(), found.end(), [](const auto& f) { return !f.ok(); });
    KVTIER_LOG_EVERY_N_SEC(kWarning, 10, "remote tier: Match could not ask about %d keys (%s)",
                           errors, failed->status().ToString());
  }
  return prefix;
}

// ----------------------------------------------------------------------------- up

bool RemoteMover::Readable(const BlockKey& key) const {
  return table_.Find(key, [](BlockEntry* e) { return e == nullptr; });
}

absl::Status RemoteMover::StartRead(const BlockKey& key, uint32_t ns_id, bool passing) {
  placement_.mu().AssertHeld();
  SlotReuse reuse;
  std::optional<SlotId> slot = placement_.AcquireSlot(kHost, ns_id, 0, &reuse);
  if (!slot) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "block %s is in the remote tier and no host slot is free to read it into (all %u are "
        "pinned or in flight%s)",
        key.ToHex(), placement_.tier(kHost)->num_slots(),
        placement_.AtQuota(ns_id, kHost) ? ", or its namespace is at its host quota with every "
                                           "block of it pinned"
                                         : ""));
  }
  auto read = std::make_shared<Read>();
  read->key = key;
  read->ns_id = ns_id;
  read->ns = namespaces_.Name(ns_id);
  read->write_id = placement_.NextWriteId();
  read->fill = std::make_shared<HostFill>();
  read->slot = placement_.Address(kHost, *slot).host;
  read->header.reset(new char[kHeader]);
  if (reuse.pending()) {
    read->bounce.reset(new char[block_bytes_]);
    read->reuse = std::move(reuse);
  }
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  table_.Upsert(key, [&](BlockEntry& e, bool) {
    placement_.mu().AssertHeld();
    e.ns_id = ns_id;
    e.stored_unix_ms = now_ms;
    e.remote = true;
    placement_.Attach(key, e, kHost, *slot, passing);
    e.set_writing(kHost, true);
    e.write_id[kHost] = read->write_id;
    e.host_fill = read->fill;
  });
  placement_.CountNewBlock(ns_id);
  reads_.fetch_add(1, std::memory_order_relaxed);
  OpStarted();
  read->started = absl::Now();
  counters_.rates().Started(kRemote);
  std::vector<iovec> dest = {
      iovec{read->header.get(), kHeader},
      iovec{read->bounce != nullptr ? read->bounce.get() : read->slot, block_bytes_}};
  // The I/O thread hands the value to a worker: checks must not hold up the socket loop.
  client_->Get(remote::RemoteKey(read->ns, model_id_, key), std::move(dest),
               [this, read](absl::StatusOr<size_t> got) mutable {
                 Post([this, read = std::move(read), got = std::move(got)]() mutable {
                   FinishRead(std::move(read), std::move(got));
                 });
               });
  return absl::OkStatus();
}

// On a worker: checks the value, puts it (or zeros) into the slot, releases the streams gated
// on it, then posts the bookkeeping.
void RemoteMover::FinishRead(std::shared_ptr<Read> read, absl::StatusOr<size_t> got) {
  using remote::RemoteVerdict;
  absl::Status status;
  counters_.rates().Finished(kRemote, got.ok() ? *got : 0, absl::Now() - read->started);
  char* const landed = read->bounce != nullptr ? read->bounce.get() : static_cast<char*>(read->slot);
  const std::string name = absl::StrFormat("block %s of namespace '%s'", read->key.ToHex(), read->ns);
  if (!got.ok()) {
    if (absl::IsNotFound(got.status())) {
      read_misses_.fetch_add(1, std::memory_order_relaxed);
      status = absl::NotFoundError(
          absl::StrCat("remote tier: ", name, " is gone (evicted, expired or lost in a failover)"));
    } else {
      read_errors_.fetch_add(1, std::memory_order_relaxed);
      status = absl::Status(got.status().code(),
                            absl::StrCat("remote tier: reading ", name, ": ", got.status().message()));
    }
  } else {
    bytes_read_.fetch_add(*got, std::memory_order_relaxed);
    remote::RemoteExpect expect;
    expect.key = read->key;
    expect.ns = read->ns;
    expect.model_id = model_id_;
    expect.geometry_fingerprint = geometry_.Fingerprint();
    expect.raw_bytes = static_cast<uint32_t>(block_bytes_);
    expect.mac_secret = Secret(read->ns);
    remote::RemoteHeader header;
    RemoteVerdict verdict = *got < kHeader ? RemoteVerdict::kCorrupt
                                           : remote::CheckRemoteHeader(read->header.get(), kHeader,
                                                                       expect, &header);
    if (verdict == RemoteVerdict::kOk) {
      const size_t payload = *got - kHeader;
      if (header.codec == Codec::kNone) {
        verdict = remote::VerifyRemotePayload(read->header.get(), header, landed, payload, expect,
                                              geometry_, landed);
      } else {
        // A coded payload landed at the front of the block's space: decode from a copy.
        std::unique_ptr<char[]> coded(new char[payload + 8]);
        std::memcpy(coded.get(), landed, payload);
        verdict = remote::VerifyRemotePayload(read->header.get(), header, coded.get(), payload,
                                              expect, geometry_, landed);
      }
    }
    if (verdict != RemoteVerdict::kOk) {
      verdicts_[static_cast<size_t>(verdict)].fetch_add(1, std::memory_order_relaxed);
      status = absl::DataLossError(absl::StrCat("remote tier: ", name, " failed verification (",
                                                remote::RemoteVerdictName(verdict), ")"));
    } else {
      read_hits_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // The slot is written only once nothing reads its old bytes any more.
  if (read->bounce != nullptr) {
    if (read->reuse.event != nullptr) (void)read->reuse.event->Synchronize();
    if (read->reuse.gate != nullptr) read->reuse.gate->WaitForNotification();
    if (status.ok()) std::memcpy(read->slot, read->bounce.get(), block_bytes_);
  }
  // Never another block's bytes: a failed read leaves zeros for readers already queued.
  if (!status.ok()) std::memset(read->slot, 0, block_bytes_);
  read->fill->status = status;
  read->fill->done.Notify();
  completions_.Post([this, read = std::move(read), status = std::move(status)]() mutable {
    OnReadDone(std::move(read), std::move(status));
  });
}

void RemoteMover::OnReadDone(std::shared_ptr<Read> read, absl::Status status) {
  {
    MutexLock lock(&placement_.mu());
    table_.Mutate(read->key, [&](BlockEntry& e) {
      placement_.mu().AssertHeld();
      if (!e.is_writing(kHost) || e.write_id[kHost] != read->write_id) {
        return placement_.ReclaimIfErased(read->key, e);
      }
      e.set_writing(kHost, false);
      e.host_fill.reset();
      if (!status.ok()) {
        // A miss: the entry existed only for this read; it goes once nobody uses it.
        e.remote = false;
        e.erased = true;
      }
      return placement_.ReclaimIfErased(read->key, e);
    });
  }
  if (status.ok()) {
    counters_.tier(kHost).bytes_in.fetch_add(block_bytes_, std::memory_order_relaxed);
    counters_.tier(kHost).promotions.fetch_add(1, std::memory_order_relaxed);
  }
  read->fill->settled.Notify();
  OpEnded();
}

// ----------------------------------------------------------------------------- down

int64_t RemoteMover::PxFor(uint32_t ns_id, int64_t stored_unix_ms) const {
  const int64_t ttl_ms = namespaces_.Get(ns_id).counters.ttl_ms.load(std::memory_order_relaxed);
  if (ttl_ms <= 0) return 0;
  const int64_t left = stored_unix_ms + ttl_ms - absl::ToUnixMillis(absl::Now());
  return left > 0 ? left : -1;
}

bool RemoteMover::Send(const BlockKey& key, uint32_t ns_id, int64_t px_ms, const void* bytes,
                       std::shared_ptr<char[]> owned, bool pinned) {
  // The value's size is known only once encoded; the budget counts the block and its header.
  const uint64_t cost = block_bytes_ + kHeader;
  uint64_t now = inflight_write_bytes_.load(std::memory_order_relaxed);
  do {
    if (now + cost > options_.max_inflight_bytes) {
      writes_dropped_.fetch_add(1, std::memory_order_relaxed);
      KVTIER_LOG_EVERY_N_SEC(kWarning, 10,
                             "remote tier: %d bytes of writes in flight (remote.max_inflight_bytes)"
                             ": further writes are dropped until they land",
                             now);
      return false;
    }
  } while (!inflight_write_bytes_.compare_exchange_weak(now, now + cost,
                                                        std::memory_order_relaxed));
  OpStarted();
  std::string ns = namespaces_.Name(ns_id);
  Post([this, key, ns = std::move(ns), px_ms, bytes, owned = std::move(owned), pinned,
        cost]() mutable {
    auto header = std::shared_ptr<char[]>(new char[kHeader]);
    const void* payload = bytes;
    size_t payload_bytes = block_bytes_;
    std::shared_ptr<char[]> coded;
    Codec used = Codec::kNone;
    absl::Status s;
    if (codec_ != Codec::kNone) {
      const size_t cap = remote::MaxRemotePayload(block_bytes_);
      coded.reset(new char[cap]);
      EncodeOptions eo;
      eo.codec = codec_;
      eo.zstd_level = options_.zstd_level;
      eo.element_bytes = DTypeSize(geometry_.dtype);
      eo.geometry = geometry_;
      absl::StatusOr<size_t> n =
          remote::EncodeRemotePayload(bytes, block_bytes_, eo, coded.get(), cap, &used);
      if (!n.ok()) {
        s = n.status();
      } else if (used != Codec::kNone) {
        payload = coded.get();
        payload_bytes = *n;
      }
    }
    if (s.ok()) {
      remote::RemoteHeader h;
      h.key = key;
      h.ns = ns;
      h.model_id = model_id_;
      h.geometry_fingerprint = geometry_.Fingerprint();
      h.codec = used;
      h.element_bytes = used == Codec::kZstdShuffle
                            ? static_cast<uint8_t>(DTypeSize(geometry_.dtype))
                            : uint8_t{0};
      h.raw_bytes = static_cast<uint32_t>(block_bytes_);
      h.stored_bytes = static_cast<uint32_t>(payload_bytes);
      h.created_unix_ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
      s = remote::WriteRemoteHeader(h, payload, Secret(ns), header.get());
    }
    if (!s.ok()) {
      inflight_write_bytes_.fetch_sub(cost, std::memory_order_relaxed);
      completions_.Post([this, key, pinned, s] { OnWriteDone(key, pinned, s); });
      return;
    }
    const size_t value_bytes = kHeader + payload_bytes;
    std::vector<iovec> value = {iovec{header.get(), kHeader},
                                iovec{const_cast<void*>(payload), payload_bytes}};
    client_->Set(remote::RemoteKey(ns, model_id_, key), std::move(value), px_ms,
                 [this, key, pinned, cost, value_bytes, header, owned, coded](absl::Status st) {
                   inflight_write_bytes_.fetch_sub(cost, std::memory_order_relaxed);
                   if (st.ok()) bytes_written_.fetch_add(value_bytes, std::memory_order_relaxed);
                   completions_.Post([this, key, pinned, st] { OnWriteDone(key, pinned, st); });
                 });
  });
  return true;
}

void RemoteMover::OnStored(uint32_t ns_id, absl::Span<const BlockKey> keys) {
  if (policy_ == RemoteWritePolicy::kOnEvict) return;
  if (!stores_) {
    writes_skipped_replica_.fetch_add(keys.size(), std::memory_order_relaxed);
    return;
  }
  struct Pending {
    BlockKey key;
    int64_t px;
    const void* src;
    bool from_slot;  // sent from the pinned slot; else copied out, then unpinned
  };
  std::vector<Pending> sends;
  {
    MutexLock lock(&placement_.mu());
    const absl::Time now = absl::Now();
    for (const BlockKey& key : keys) {
      table_.Find(key, [&](BlockEntry* e) {
        placement_.mu().AssertHeld();
        if (e == nullptr || e->erased || e->remote || e->ns_id != ns_id || !e->has(kHost) ||
            e->is_writing(kHost)) {
          return;
        }
        const int64_t px = PxFor(ns_id, e->stored_unix_ms);
        if (px < 0) return;
        if (!admission_->Admit(key, block_bytes_, now)) {
          writes_rejected_.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        // Pinned while its bytes are read: until the value is sent from the slot, or (past
        // the pin budget) until they are copied out below, outside the lock.
        size_t held = write_pins_.load(std::memory_order_relaxed);
        bool from_slot = false;
        while (held < max_write_pins_ &&
               !(from_slot = write_pins_.compare_exchange_weak(held, held + 1,
                                                               std::memory_order_relaxed))) {
        }
        e->remote = true;
        ++e->pins;
        sends.push_back({key, px, placement_.Address(kHost, e->slot[kHost]).host, from_slot});
      });
    }
  }
  for (const Pending& p : sends) {
    bool sent;
    if (p.from_slot) {
      sent = Send(p.key, ns_id, p.px, p.src, nullptr, /*pinned=*/true);
      if (!sent) write_pins_.fetch_sub(1, std::memory_order_relaxed);
    } else {
      std::shared_ptr<char[]> copy(new char[block_bytes_]);
      std::memcpy(copy.get(), p.src, block_bytes_);
      sent = Send(p.key, ns_id, p.px, copy.get(), copy, /*pinned=*/false);
    }
    if (sent && p.from_slot) continue;
    // Copied out (the slot is free to go), or not sent (in-flight cap): a block not sent may be
    // written by a later Store.
    MutexLock lock(&placement_.mu());
    if (!sent) {
      table_.Find(p.key, [](BlockEntry* e) {
        if (e != nullptr) e->remote = false;
      });
    }
    placement_.Unpin({&p.key, 1});
  }
}

void RemoteMover::OnLastHostCopyEvicted(const BlockKey& key, BlockEntry& e, const void* bytes) {
  placement_.mu().AssertHeld();
  if (policy_ == RemoteWritePolicy::kWriteThrough || e.erased || e.remote) return;
  if (!stores_) {
    writes_skipped_replica_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const int64_t px = PxFor(e.ns_id, e.stored_unix_ms);
  if (px < 0) return;
  if (!admission_->Admit(key, block_bytes_, absl::Now())) {
    writes_rejected_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The slot is reused as soon as the eviction is over: its bytes are copied out now.
  if (inflight_write_bytes_.load(std::memory_order_relaxed) + block_bytes_ + kHeader >
      options_.max_inflight_bytes) {
    writes_dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::shared_ptr<char[]> copy(new char[block_bytes_]);
  std::memcpy(copy.get(), bytes, block_bytes_);
  if (Send(key, e.ns_id, px, copy.get(), copy, /*pinned=*/false)) e.remote = true;
}

void RemoteMover::OnWriteDone(const BlockKey& key, bool pinned, absl::Status status) {
  if (status.ok()) {
    writes_.fetch_add(1, std::memory_order_relaxed);
    counters_.tier(kRemote).demotions.fetch_add(1, std::memory_order_relaxed);
  } else {
    writes_failed_.fetch_add(1, std::memory_order_relaxed);
    KVTIER_LOG_EVERY_N_SEC(kWarning, 10, "remote tier: a write was dropped: %s",
                           status.ToString());
  }
  {
    MutexLock lock(&placement_.mu());
    table_.Find(key, [&](BlockEntry* e) {
      placement_.mu().AssertHeld();
      if (e != nullptr && !status.ok()) e->remote = false;  // may be written again later
    });
    if (pinned) placement_.Unpin({&key, 1});
  }
  if (pinned) write_pins_.fetch_sub(1, std::memory_order_relaxed);
  OpEnded();
}

// ----------------------------------------------------------------------------- erase

void RemoteMover::Erase(absl::string_view ns, absl::Span<const BlockKey> keys) {
  if (keys.empty()) return;
  std::vector<std::string> names;
  names.reserve(keys.size());
  for (const BlockKey& key : keys) names.push_back(remote::RemoteKey(ns, model_id_, key));
  const std::vector<absl::Status> done = client_->Del(names, absl::Now() + options_.op_timeout);
  size_t ok = 0;
  for (const absl::Status& s : done) {
    if (s.ok()) {
      ++ok;
    } else {
      KVTIER_LOG_EVERY_N_SEC(kWarning, 10, "remote tier: erase of a block failed: %s",
                             s.ToString());
    }
  }
  erased_keys_.fetch_add(ok, std::memory_order_relaxed);
}

absl::StatusOr<size_t> RemoteMover::EraseNamespace(absl::string_view ns) {
  const absl::Time deadline = absl::Now() + std::max(options_.op_timeout, absl::Seconds(30));
  std::vector<std::string> names;
  absl::Status scan = client_->Scan(
      remote::RemoteNamespacePattern(ns),
      [&](absl::string_view k) { names.emplace_back(k); }, deadline);
  size_t deleted = 0;
  absl::Status first = scan;
  constexpr size_t kBatch = 512;
  for (size_t i = 0; i < names.size(); i += kBatch) {
    const size_t n = std::min(kBatch, names.size() - i);
    for (const absl::Status& s :
         client_->Del(absl::MakeConstSpan(names).subspan(i, n), deadline)) {
      if (s.ok()) {
        ++deleted;
      } else if (first.ok()) {
        first = s;
      }
    }
  }
  erased_keys_.fetch_add(deleted, std::memory_order_relaxed);
  if (!first.ok()) {
    return absl::Status(first.code(),
                        absl::StrFormat("remote tier: erasing namespace '%s' (%d keys deleted): %s",
                                        ns, deleted, first.message()));
  }
  return deleted;
}

// ----------------------------------------------------------------------------- stats

void RemoteMover::FillStats(EngineStats* st) const {
  using remote::ErrorKind;
  using remote::RemoteVerdict;
  const remote::ClientStats c = client_->Stats();
  RemoteStats& r = st->remote;
  r.enabled = 1;
  r.lookups = lookups_.load(std::memory_order_relaxed);
  r.lookup_hits = lookup_hits_.load(std::memory_order_relaxed);
  r.lookup_errors = lookup_errors_.load(std::memory_order_relaxed);
  r.reads = reads_.load(std::memory_order_relaxed);
  r.read_hits = read_hits_.load(std::memory_order_relaxed);
  r.read_misses = read_misses_.load(std::memory_order_relaxed);
  r.read_errors = read_errors_.load(std::memory_order_relaxed);
  auto verdicts = [&](RemoteVerdict v) {
    return verdicts_[static_cast<size_t>(v)].load(std::memory_order_relaxed);
  };
  r.read_corrupt = verdicts(RemoteVerdict::kCorrupt);
  r.read_wrong_block = verdicts(RemoteVerdict::kWrongKey) +
                       verdicts(RemoteVerdict::kWrongNamespace) +
                       verdicts(RemoteVerdict::kWrongModel);
  r.read_bad_mac = verdicts(RemoteVerdict::kBadMac);
  r.writes = writes_.load(std::memory_order_relaxed);
  r.writes_failed = writes_failed_.load(std::memory_order_relaxed);
  r.writes_dropped = writes_dropped_.load(std::memory_order_relaxed);
  r.writes_rejected = writes_rejected_.load(std::memory_order_relaxed);
  r.writes_skipped_replica = writes_skipped_replica_.load(std::memory_order_relaxed);
  r.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  r.bytes_read = bytes_read_.load(std::memory_order_relaxed);
  r.erased_keys = erased_keys_.load(std::memory_order_relaxed);
  r.slot_map_refreshes = c.slot_map_refreshes;
  r.errors_connect = Err(c, ErrorKind::kConnect);
  r.errors_timeout = Err(c, ErrorKind::kTimeout);
  r.errors_cluster_down = Err(c, ErrorKind::kClusterDown) + Err(c, ErrorKind::kTryAgain) +
                          Err(c, ErrorKind::kLoading);
  r.errors_no_perm = Err(c, ErrorKind::kNoPerm);
  r.errors_breaker_open = Err(c, ErrorKind::kBreakerOpen);
  r.errors_protocol = Err(c, ErrorKind::kProtocol);
  r.redirects = Err(c, ErrorKind::kMoved) + Err(c, ErrorKind::kAsk);
  r.get_latency = ToLatency(c.get_latency_us);
  r.set_latency = ToLatency(c.set_latency_us);
  r.nodes.clear();
  for (const remote::NodeStats& n : c.nodes) {
    RemoteNodeStats ns;
    ns.address = n.address;
    ns.master = n.master ? 1 : 0;
    ns.connected = n.connected ? 1 : 0;
    ns.breaker_open = n.breaker_open ? 1 : 0;
    ns.slots = n.slots;
    ns.ops = n.ops;
    for (size_t k = 0; k < static_cast<size_t>(ErrorKind::kCount); ++k) {
      if (k != static_cast<size_t>(ErrorKind::kMoved) && k != static_cast<size_t>(ErrorKind::kAsk)) {
        ns.errors += n.errors[k];
      }
    }
    r.nodes.push_back(std::move(ns));
  }
  TierStats& t = st->tiers[kRemote];
  t.bytes_in = r.bytes_written;
  t.bytes_out = r.bytes_read;
  t.checksum_failures = r.read_corrupt + r.read_wrong_block + r.read_bad_mac;
  t.write_failures = r.writes_failed;
  t.admissions_rejected = r.writes_rejected + r.writes_dropped;
}

}  // namespace kvtier
