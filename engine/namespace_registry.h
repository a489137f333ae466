// engine/namespace_registry.h — the engine's namespaces (tenants): names, ids, key hashers and
// per-namespace counters.
//
// A namespace is created once (at Open, by CreateNamespace, or when a cache directory brings
// it back) and never destroyed, so a `const Namespace*` returned by Find or Get stays valid
// for the registry's lifetime; ids are dense, 0 .. size() - 1, in creation order. Everything a
// namespace holds that changes (its counters, its time to live as Match reads it) is atomic:
// callers read and count without the registry's lock.
//
// What a namespace may hold (quotas, blocks per tier) is placement's business
// (engine/placement.h), kept there under the placement lock.
//
// Thread-safe. Locking: mu_ is a leaf lock, held only inside these methods; callers may hold
// any other engine lock when they call in.

#ifndef KVTIER_ENGINE_NAMESPACE_REGISTRY_H_
#define KVTIER_ENGINE_NAMESPACE_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/mutex.h"
#include "engine/transfer_handle.h"
#include "kvtier/block_key.h"
#include "kvtier/engine.h"
#include "kvtier/tier_kind.h"

namespace kvtier {

// What the engine counts per namespace (NamespaceStats). Relaxed atomics: counted without
// any lock, read for a snapshot.
struct NamespaceCounters {
  std::atomic<uint64_t> matched{0}, missed{0}, stored{0}, loaded{0};
  TierArray<std::atomic<uint64_t>> hits, misses;
  // Where the namespace's loads charge their stall time (shared with the handles, which may
  // outlive the engine).
  const std::shared_ptr<StallMeter> stall = std::make_shared<StallMeter>();
  std::atomic<uint64_t> quota_evictions{0}, quota_rejections{0}, expired{0};
  // The namespace's time to live in ms (0 = none), for Match, which reads it unlocked.
  // Written by placement (ApplyLimits) under its lock.
  std::atomic<int64_t> ttl_ms{0};
};

struct Namespace {
  std::string name;
  uint32_t id = 0;
  KeyHasher hasher;
  mutable NamespaceCounters counters;
};

class NamespaceRegistry {
 public:
  // Every namespace's keys are seeded by its name, the model and the geometry.
  NamespaceRegistry(KeyHash hash, std::string model_fingerprint, uint64_t geometry_fingerprint);
  NamespaceRegistry(const NamespaceRegistry&) = delete;
  NamespaceRegistry& operator=(const NamespaceRegistry&) = delete;

  // The new namespace's id. InvalidArgument for a name ValidateNamespaceName refuses,
  // AlreadyExists for a name in use.
  absl::StatusOr<uint32_t> Create(absl::string_view name) ABSL_LOCKS_EXCLUDED(mu_);
  // NotFound naming the namespace (and how to create one) when it does not exist.
  absl::StatusOr<const Namespace*> Find(absl::string_view name) const ABSL_LOCKS_EXCLUDED(mu_);
  // REQUIRES: id < size().
  const Namespace& Get(uint32_t id) const ABSL_LOCKS_EXCLUDED(mu_);
  // The name of namespace `id`; empty for an id never issued.
  std::string Name(uint32_t id) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<std::string> List() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  // Calls fn for every namespace, in id order. fn must not call back into the registry.
  void ForEach(absl::FunctionRef<void(const Namespace&)> fn) const ABSL_LOCKS_EXCLUDED(mu_);
  // Appends one NamespaceStats per namespace, in id order, with its name and counters (what
  // placement knows of it, blocks and quotas, is placement's to fill).
  void FillStats(EngineStats* out) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const KeyHash hash_;
  const std::string model_fingerprint_;
  const uint64_t geometry_fingerprint_;
  mutable Mutex mu_;
  // unique_ptr: a Namespace never moves, so pointers handed out stay valid as this grows.
  std::vector<std::unique_ptr<Namespace>> namespaces_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> by_name_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_NAMESPACE_REGISTRY_H_
