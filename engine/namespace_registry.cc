// engine/namespace_registry.cc — see namespace_registry.h.

#include "engine/namespace_registry.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "kvtier/engine.h"

namespace kvtier {

NamespaceRegistry::NamespaceRegistry(KeyHash hash, std::string model_fingerprint,
                                     uint64_t geometry_fingerprint)
    : hash_(hash),
      model_fingerprint_(std::move(model_fingerprint)),
      geometry_fingerprint_(geometry_fingerprint) {}

absl::StatusOr<uint32_t> NamespaceRegistry::Create(absl::string_view name) {
  if (absl::Status s = ValidateNamespaceName(name); !s.ok()) return s;
  MutexLock lock(&mu_);
  if (by_name_.contains(name)) {
    return absl::AlreadyExistsError(absl::StrFormat("namespace '%s' already exists", name));
  }
  const uint32_t id = static_cast<uint32_t>(namespaces_.size());
  namespaces_.push_back(std::unique_ptr<Namespace>(new Namespace{
      std::string(name), id, KeyHasher(hash_, name, model_fingerprint_, geometry_fingerprint_)}));
  by_name_[std::string(name)] = id;
  return id;
}

absl::StatusOr<const Namespace*> NamespaceRegistry::Find(absl::string_view name) const {
  MutexLock lock(&mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(
        absl::StrFormat("namespace '%s' does not exist (create it with CreateNamespace or "
                        "EngineOptions::namespaces)",
                        absl::CHexEscape(name)));
  }
  return namespaces_[it->second].get();
}

const Namespace& NamespaceRegistry::Get(uint32_t id) const {
  MutexLock lock(&mu_);
  return *namespaces_[id];
}

std::string NamespaceRegistry::Name(uint32_t id) const {
  MutexLock lock(&mu_);
  return id < namespaces_.size() ? namespaces_[id]->name : std::string();
}

std::vector<std::string> NamespaceRegistry::List() const {
  MutexLock lock(&mu_);
  std::vector<std::string> names;
  names.reserve(namespaces_.size());
  for (const auto& n : namespaces_) names.push_back(n->name);
  return names;
}

size_t NamespaceRegistry::size() const {
  MutexLock lock(&mu_);
  return namespaces_.size();
}

void NamespaceRegistry::ForEach(absl::FunctionRef<void(const Namespace&)> fn) const {
  MutexLock lock(&mu_);
  for (const auto& n : namespaces_) fn(*n);
}

void NamespaceRegistry::FillStats(EngineStats* out) const {
  ForEach([&](const Namespace& n) {
    NamespaceStats& ns = out->namespaces.emplace_back();
    const NamespaceCounters& c = n.counters;
    ns.name = n.name;
    ns.matched_blocks = c.matched.load(std::memory_order_relaxed);
    ns.missed_blocks = c.missed.load(std::memory_order_relaxed);
    ns.stored_blocks = c.stored.load(std::memory_order_relaxed);
    ns.loaded_blocks = c.loaded.load(std::memory_order_relaxed);
    ns.quota_evictions = c.quota_evictions.load(std::memory_order_relaxed);
    ns.quota_rejections = c.quota_rejections.load(std::memory_order_relaxed);
    ns.expired_blocks = c.expired.load(std::memory_order_relaxed);
    ns.stall_ns = c.stall->ns.load(std::memory_order_relaxed);
    ns.stalled_waits = c.stall->waits.load(std::memory_order_relaxed);
    for (TierKind t : kAllTiers) {
      ns.hits_per_tier[t] = c.hits[t].load(std::memory_order_relaxed);
      ns.misses_per_tier[t] = c.misses[t].load(std::memory_order_relaxed);
    }
  });
}

}  // namespace kvtier
