// engine/remote_mover.h — how the engine uses the shared remote tier (a Redis Cluster): what
// it asks the cluster at Match, what comes up from it, what goes down to it.
//
// Up: Match asks for the continuation of a chain not cached locally (MatchPrefix: one
// pipelined EXISTS per master, bounded by match_timeout; an error is a miss). Load and the
// promotions then read such a block into a host slot (StartRead): the entry is created with a
// host copy being filled, exactly like a disk read, so device streams that copy out of the slot
// wait for the verified bytes through HostFill. The value is received straight into the slot
// (its header into a small buffer beside it) and verified there (remote/remote_record.h); a
// missing or invalid value zero-fills the slot, fails the readers' transfers with NotFound or
// DataLoss naming the block, and the block becomes a miss.
//
// Down: write-through (after a Store's copy into the host tier has landed: the block is pinned
// while its value is sent from the slot; at most a quarter of the host slots are held so, and
// past that the block is copied into a send buffer and unpinned at once, so write-through never
// fills the host tier with pinned blocks and never makes a Store reject) and/or on eviction (when a host copy that is the
// block's last copy above disk is evicted, its bytes are copied into a send buffer at once,
// under the placement lock, and sent from there). Both pass this tier's own admission policy
// (seen-count filter, write budget) and a cap on bytes in flight; a write that does not fit is
// dropped and counted: the remote tier is a cache, no caller waits for it.
//
// Erase and EraseNamespace reach the cluster (DEL; SCAN of every master for the namespace's
// keys); time to live reaches it as PX on every write.
//
// Thread-safe. The client's I/O threads never take an engine lock: they post the bookkeeping to
// the completion queue and the checks (checksum, MAC, decode) to this part's worker threads.
// Methods marked REQUIRES take the placement lock from their caller.

#ifndef KVTIER_ENGINE_REMOTE_MOVER_H_
#define KVTIER_ENGINE_REMOTE_MOVER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "engine/admission_policy.h"
#include "engine/block_table.h"
#include "engine/completion_queue.h"
#include "engine/engine_counters.h"
#include "engine/namespace_registry.h"
#include "engine/options.h"
#include "engine/placement.h"
#include "kvtier/engine.h"
#include "kvtier/stats.h"
#include "remote/cluster_client.h"
#include "remote/remote_record.h"

namespace kvtier {

// The client's options from the engine's.
remote::ClusterOptions MakeClusterOptions(const RemoteOptions& options);

class RemoteMover final : public RemoteSink {
 public:
  // Connects to the cluster (Unavailable naming the seeds when none answers, unless
  // allow_unreachable; PermissionDenied for refused credentials). Everything passed by
  // reference outlives the mover.
  // `stores`: whether this engine writes the cluster (TensorParallelOptions::Stores); one
  // that does not only reads it, and counts what it leaves to the rank that does.
  static absl::StatusOr<std::unique_ptr<RemoteMover>> Open(
      const RemoteOptions& options, const Geometry& geometry, absl::string_view model_fingerprint,
      bool secure_erase, bool stores, Placement& placement, BlockTable& table,
      NamespaceRegistry& namespaces, CompletionQueue& completions, EngineCounters& counters);
  // Waits for reads and writes in flight (each ends by its deadline), stops the workers and
  // runs the completions they posted. REQUIRES: no engine lock held, not on a completion.
  ~RemoteMover() override;
  RemoteMover(const RemoteMover&) = delete;
  RemoteMover& operator=(const RemoteMover&) = delete;

  // How many of `keys` (the continuation of a chain, in order), from the first, the cluster
  // holds in namespace ns_id, asked in one pipelined round trip per master, by match_timeout.
  // Errors count as misses (and are counted). REQUIRES: no engine lock held.
  size_t MatchPrefix(uint32_t ns_id, absl::Span<const BlockKey> keys);

  // For a key with no local copy (no entry, or an entry with no copy that is not busy): creates
  // its entry with a host copy being filled from the cluster, as DiskMover::EnsureHostCopy does
  // for disk. ResourceExhausted when no host slot can be had. `passing`: the block is on its
  // way to the GPU tier (its host copy is inserted cold). REQUIRES: the placement lock.
  absl::Status StartRead(const BlockKey& key, uint32_t ns_id, bool passing);
  // Whether StartRead applies to `key` (no entry, or one with no copy that nothing uses).
  // REQUIRES: the placement lock.
  bool Readable(const BlockKey& key) const;

  // Write-through: the host copies of `keys` (namespace ns_id) have just landed. Writes those
  // the policy admits. REQUIRES: no engine lock held (takes the placement lock).
  void OnStored(uint32_t ns_id, absl::Span<const BlockKey> keys);
  // RemoteSink (on-evict). REQUIRES: the placement lock.
  void OnLastHostCopyEvicted(const BlockKey& key, BlockEntry& e, const void* bytes) override;
  // Counts a block as seen by the admission policy (a Store or a hit).
  void RecordSeen(const BlockKey& key) { admission_->Record(key); }

  // Deletes `keys` of namespace `ns` from the cluster (best effort, by op_timeout). REQUIRES:
  // no engine lock held.
  void Erase(absl::string_view ns, absl::Span<const BlockKey> keys);
  // Deletes every block of namespace `ns` the cluster holds (all models: SCAN of every
  // master). Returns how many keys were deleted; an error when a master could not be scanned or
  // a delete failed (what could be deleted is). REQUIRES: no engine lock held.
  absl::StatusOr<size_t> EraseNamespace(absl::string_view ns);

  // Waits until every read and write this part started has completed and its bookkeeping ran
  // (completion queue drained by the caller after). REQUIRES: no engine lock held.
  void Drain();

  // The remote tier's row of the stats and its own section.
  void FillStats(EngineStats* stats) const;
  remote::ClusterClient& client() { return *client_; }

 private:
  struct Read;
  struct Write;
  RemoteMover(const RemoteOptions& options, const Geometry& geometry,
              absl::string_view model_fingerprint, bool secure_erase, bool stores,
              Placement& placement, BlockTable& table, NamespaceRegistry& namespaces,
              CompletionQueue& completions, EngineCounters& counters);
  void Post(absl::AnyInvocable<void() &&> job) ABSL_LOCKS_EXCLUDED(mu_);
  void Loop();
  // The namespace's secret (empty: unsigned).
  absl::string_view Secret(absl::string_view ns) const;
  // Starts a write of `bytes` (which stay valid until `release` runs) as key's value.
  // Returns false when it does not fit in the in-flight budget.
  bool Send(const BlockKey& key, uint32_t ns_id, int64_t px_ms, const void* bytes,
            std::shared_ptr<char[]> owned, bool pinned);
  // PX for a block of namespace ns_id stored at stored_unix_ms: its time to live left (0 =
  // none; -1 = expired already). REQUIRES: the placement lock.
  int64_t PxFor(uint32_t ns_id, int64_t stored_unix_ms) const;
  void FinishRead(std::shared_ptr<Read> read, absl::StatusOr<size_t> got);
  void OnReadDone(std::shared_ptr<Read> read, absl::Status status);
  void OnWriteDone(const BlockKey& key, bool pinned, absl::Status status);
  void OpStarted();
  void OpEnded();

  const RemoteOptions options_;
  const Geometry geometry_;
  const size_t block_bytes_;
  const uint64_t model_id_;
  const bool secure_erase_;
  const bool stores_;
  const RemoteWritePolicy policy_;
  Codec codec_ = Codec::kNone;
  Placement& placement_;
  BlockTable& table_;
  NamespaceRegistry& namespaces_;
  CompletionQueue& completions_;
  EngineCounters& counters_;
  std::unique_ptr<AdmissionPolicy> admission_;
  std::unique_ptr<remote::ClusterClient> client_;

  std::atomic<uint64_t> inflight_write_bytes_{0};
  // Host slots pinned by write-through sends from the slot, and the most there may be.
  std::atomic<size_t> write_pins_{0};
  size_t max_write_pins_ = 1;
  // What the stats' remote section counts beyond the client's own figures.
  std::atomic<uint64_t> lookups_{0}, lookup_hits_{0}, lookup_errors_{0};
  std::atomic<uint64_t> reads_{0}, read_hits_{0}, read_misses_{0}, read_errors_{0};
  std::atomic<uint64_t> verdicts_[static_cast<size_t>(remote::RemoteVerdict::kCount)] = {};
  std::atomic<uint64_t> writes_{0}, writes_failed_{0}, writes_dropped_{0}, writes_rejected_{0},
      writes_skipped_replica_{0}, bytes_written_{0}, bytes_read_{0};
  std::atomic<uint64_t> erased_keys_{0};

  Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> jobs_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t ops_ ABSL_GUARDED_BY(mu_) = 0;  // reads and writes not yet ended
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_REMOTE_MOVER_H_
