// workload/fleet_simulator.cc — nodes of PolicyCache tiers and the shared remote pool
// (fleet_simulator.h).

#include "workload/fleet_simulator.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "workload/engine_policy_adapter.h"
#include "workload/simulator.h"

namespace kvtier::workload {
namespace {

constexpr uint32_t kMaxMinSeen = 15;  // as AdmissionOptions::min_seen

// SplitMix64's finalizer, for routing hashes.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A cache and the policy it borrows, owned together.
struct OwnedCache {
  std::unique_ptr<CachePolicy> policy;
  std::unique_ptr<PolicyCache> cache;
};

absl::StatusOr<OwnedCache> MakeCache(const std::string& policy_name, size_t capacity,
                                     absl::string_view field) {
  absl::StatusOr<std::unique_ptr<EnginePolicyAdapter>> p =
      EnginePolicyAdapter::Create(policy_name, capacity);
  if (!p.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", p.status().message()));
  OwnedCache c;
  c.policy = std::move(*p);
  c.cache = std::make_unique<PolicyCache>(capacity, *c.policy);
  return c;
}

class Fleet;

// One inference node: its present tiers, top first, and its admission counts.
class Node {
 public:
  Node(Fleet* fleet, std::vector<OwnedCache> tiers, std::vector<ServedFrom> kinds,
       uint32_t disk_min_seen)
      : fleet_(fleet),
        tiers_(std::move(tiers)),
        kinds_(std::move(kinds)),
        disk_min_seen_(disk_min_seen) {}

  // The highest tier holding id, or -1.
  int Find(uint64_t id) const {
    for (size_t t = 0; t < tiers_.size(); ++t) {
      if (tiers_[t].cache->Contains(id)) return static_cast<int>(t);
    }
    return -1;
  }
  ServedFrom kind(int tier) const { return kinds_[tier]; }
  void See(uint64_t id) { ++seen_[id]; }
  uint32_t Seen(uint64_t id) const {
    auto it = seen_.find(id);
    return it == seen_.end() ? 0 : it->second;
  }
  void Touch(int tier, uint64_t id) { tiers_[tier].cache->Touch(id); }
  bool TopHas(uint64_t id) const { return tiers_[0].cache->Contains(id); }
  // Inserts id into `tier`, then settles every victim (placement's rule, the header).
  absl::Status InsertAt(size_t tier, uint64_t id, uint32_t depth);

 private:
  absl::Status Evicted(size_t tier, uint64_t id);

  Fleet* fleet_;
  std::vector<OwnedCache> tiers_;
  std::vector<ServedFrom> kinds_;
  uint32_t disk_min_seen_;
  absl::flat_hash_map<uint64_t, uint32_t> seen_;
  absl::flat_hash_map<uint64_t, uint32_t> depth_;  // a block's position in its last request
};

class Fleet {
 public:
  explicit Fleet(const FleetOptions& options) : options_(options) {}

  absl::Status Init() {
    for (size_t n = 0; n < options_.nodes.size(); ++n) {
      const NodeTiers& t = options_.nodes[n];
      std::vector<OwnedCache> tiers;
      std::vector<ServedFrom> kinds;
      const struct {
        size_t blocks;
        const std::string& policy;
        const char* name;
        ServedFrom kind;
      } specs[] = {{t.gpu_blocks, t.gpu_eviction, "gpu_eviction", ServedFrom::kGpu},
                   {t.host_blocks, t.host_eviction, "host_eviction", ServedFrom::kHost},
                   {t.disk_blocks, t.disk_eviction, "disk_eviction", ServedFrom::kDisk}};
      for (const auto& s : specs) {
        if (s.blocks == 0) continue;
        absl::StatusOr<OwnedCache> c =
            MakeCache(s.policy, s.blocks, absl::StrCat("nodes[", n, "].", s.name));
        if (!c.ok()) return c.status();
        tiers.push_back(std::move(*c));
        kinds.push_back(s.kind);
      }
      nodes_.push_back(
          std::make_unique<Node>(this, std::move(tiers), std::move(kinds), t.disk_admit_min_seen));
    }
    if (options_.remote.has_value()) {
      pool_policy_ = std::make_unique<LruCachePolicy>();
      pool_ = std::make_unique<PolicyCache>(options_.remote->capacity_blocks, *pool_policy_);
    }
    result_.node_requests.assign(nodes_.size(), 0);
    result_.node_block_refs.assign(nodes_.size(), 0);
    return absl::OkStatus();
  }

  size_t Route(const Request& req, uint64_t index) const {
    return RouteRequest(req, index, nodes_.size(), options_);
  }

  absl::Status Replay(const std::vector<Request>& requests) {
    std::vector<int> where;  // per position: tier index, kRemoteHit, or kMiss
    for (uint64_t r = 0; r < requests.size(); ++r) {
      const Request& req = requests[r];
      const size_t n = Route(req, r);
      Node& node = *nodes_[n];
      ++result_.requests;
      result_.block_refs += req.blocks.size();
      ++result_.node_requests[n];
      result_.node_block_refs[n] += req.blocks.size();
      // 1. lookup, against the state at arrival.
      where.assign(req.blocks.size(), kMiss);
      size_t prefix = 0;
      for (size_t i = 0; i < req.blocks.size(); ++i) {
        const uint64_t id = req.blocks[i];
        const int t = node.Find(id);
        if (t >= 0) {
          where[i] = t;
        } else if (pool_ != nullptr && pool_->Contains(id)) {
          where[i] = kRemoteHit;
        }
        if (prefix == i && where[i] != kMiss) ++prefix;
      }
      for (size_t i = 0; i < prefix; ++i) {
        const ServedFrom from = where[i] == kRemoteHit ? ServedFrom::kRemote : node.kind(where[i]);
        ++result_.prefix_hits_by[static_cast<int>(from)];
      }
      result_.prefix_hit_blocks += prefix;
      // 2. sightings.
      for (uint64_t id : req.blocks) node.See(id);
      // 3. apply. The state may have moved since the lookup (this request's own inserts
      // evict), so each step looks again.
      for (size_t i = 0; i < req.blocks.size(); ++i) {
        const uint64_t id = req.blocks[i];
        const uint32_t depth = static_cast<uint32_t>(i);
        if (i < prefix && where[i] == kRemoteHit) {
          ++result_.remote_blocks_read;
          pool_->Touch(id);
          if (!node.TopHas(id)) {
            if (absl::Status s = node.InsertAt(0, id, depth); !s.ok()) return s;
          }
          continue;
        }
        if (i < prefix && where[i] > 0) node.Touch(where[i], id);  // a hit below the top
        if (node.TopHas(id)) {
          node.Touch(0, id);
          continue;
        }
        if (absl::Status s = node.InsertAt(0, id, depth); !s.ok()) return s;
        // Computed (or recomputed) here: write-through sends it to the pool now.
        if (i >= prefix && pool_ != nullptr &&
            options_.remote->write_policy == RemoteWritePolicy::kWriteThrough) {
          if (absl::Status s = WriteRemote(node, id, depth); !s.ok()) return s;
        }
      }
    }
    return absl::OkStatus();
  }

  // A block's last copy left `node`.
  absl::Status LeftNode(Node& node, uint64_t id, uint32_t depth) {
    if (pool_ == nullptr || options_.remote->write_policy != RemoteWritePolicy::kOnEvict) {
      return absl::OkStatus();
    }
    return WriteRemote(node, id, depth);
  }

  FleetResult& result() { return result_; }

 private:
  static constexpr int kMiss = -1;
  static constexpr int kRemoteHit = -2;

  absl::Status WriteRemote(const Node& node, uint64_t id, uint32_t depth) {
    if (pool_->Contains(id)) {
      ++result_.remote_writes_skipped;
      return absl::OkStatus();
    }
    if (node.Seen(id) < options_.remote->admit_min_seen) {
      ++result_.remote_writes_rejected;
      return absl::OkStatus();
    }
    evicted_.clear();
    if (absl::Status s = pool_->Insert(id, depth, &evicted_); !s.ok()) return s;
    result_.remote_evictions += evicted_.size();
    ++result_.remote_blocks_written;
    return absl::OkStatus();
  }

  const FleetOptions& options_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::unique_ptr<LruCachePolicy> pool_policy_;
  std::unique_ptr<PolicyCache> pool_;
  std::vector<uint64_t> evicted_;
  FleetResult result_;
};

absl::Status Node::InsertAt(size_t tier, uint64_t id, uint32_t depth) {
  depth_[id] = depth;
  std::vector<uint64_t> evicted;
  if (absl::Status s = tiers_[tier].cache->Insert(id, depth, &evicted); !s.ok()) return s;
  for (uint64_t v : evicted) {
    if (absl::Status s = Evicted(tier, v); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Node::Evicted(size_t tier, uint64_t id) {
  if (Find(id) >= 0) return absl::OkStatus();  // another copy stays on the node
  const uint32_t depth = depth_[id];
  const size_t below = tier + 1;
  if (below < tiers_.size()) {
    const bool admitted = kinds_[below] != ServedFrom::kDisk || Seen(id) >= disk_min_seen_;
    if (kinds_[below] == ServedFrom::kDisk) {
      ++(admitted ? fleet_->result().disk_blocks_written
                  : fleet_->result().disk_admissions_rejected);
    }
    if (admitted) return InsertAt(below, id, depth);
  }
  depth_.erase(id);
  return fleet_->LeftNode(*this, id, depth);
}

}  // namespace

size_t RouteRequest(const Request& request, uint64_t index, size_t nodes,
                    const FleetOptions& options) {
  const uint64_t n = nodes;
  switch (options.routing) {
    case Routing::kRoundRobin:
      return index % n;
    case Routing::kRandom:
      return Mix64(options.seed ^ Mix64(index)) % n;
    case Routing::kPrefixAffinity: {
      uint64_t h = Mix64(options.seed);
      const size_t k = std::min<size_t>(options.affinity_blocks, request.blocks.size());
      for (size_t i = 0; i < k; ++i) h = Mix64(h ^ request.blocks[i]);
      return h % n;
    }
  }
  return 0;
}

absl::StatusOr<Routing> ParseRouting(absl::string_view name) {
  for (Routing r : {Routing::kRoundRobin, Routing::kPrefixAffinity, Routing::kRandom}) {
    if (name == RoutingName(r)) return r;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("routing: unknown mode '", name, "' (round-robin, prefix-affinity or random)"));
}

const char* RoutingName(Routing routing) {
  switch (routing) {
    case Routing::kRoundRobin:
      return "round-robin";
    case Routing::kPrefixAffinity:
      return "prefix-affinity";
    case Routing::kRandom:
      return "random";
  }
  return "?";
}

absl::StatusOr<RemoteWritePolicy> ParseRemoteWritePolicy(absl::string_view name) {
  for (RemoteWritePolicy p : {RemoteWritePolicy::kWriteThrough, RemoteWritePolicy::kOnEvict}) {
    if (name == RemoteWritePolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("remote.write_policy: unknown policy '", name, "' (write-through or on-evict)"));
}

const char* RemoteWritePolicyName(RemoteWritePolicy policy) {
  switch (policy) {
    case RemoteWritePolicy::kWriteThrough:
      return "write-through";
    case RemoteWritePolicy::kOnEvict:
      return "on-evict";
  }
  return "?";
}

absl::Status FleetOptions::Validate() const {
  if (nodes.empty()) return absl::InvalidArgumentError("nodes: a fleet needs at least 1 node");
  auto min_seen_ok = [](uint32_t v) { return v >= 1 && v <= kMaxMinSeen; };
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (nodes[n].host_blocks == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("nodes[", n,
                       "].host_blocks: must be at least 1 (the engine's host tier "
                       "holds at least one block)"));
    }
    if (!min_seen_ok(nodes[n].disk_admit_min_seen)) {
      return absl::InvalidArgumentError(
          absl::StrCat("nodes[", n, "].disk_admit_min_seen: ", nodes[n].disk_admit_min_seen,
                       " is not in 1..", kMaxMinSeen));
    }
  }
  if (routing != Routing::kRoundRobin && routing != Routing::kPrefixAffinity &&
      routing != Routing::kRandom) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing: unknown mode ", static_cast<int>(routing)));
  }
  if (routing == Routing::kPrefixAffinity && affinity_blocks == 0) {
    return absl::InvalidArgumentError("affinity_blocks: must be at least 1");
  }
  if (remote.has_value()) {
    if (remote->capacity_blocks == 0) {
      return absl::InvalidArgumentError(
          "remote.capacity_blocks: must be at least 1 (leave remote unset for no pool)");
    }
    if (remote->write_policy != RemoteWritePolicy::kWriteThrough &&
        remote->write_policy != RemoteWritePolicy::kOnEvict) {
      return absl::InvalidArgumentError(absl::StrCat("remote.write_policy: unknown policy ",
                                                     static_cast<int>(remote->write_policy)));
    }
    if (!min_seen_ok(remote->admit_min_seen)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "remote.admit_min_seen: ", remote->admit_min_seen, " is not in 1..", kMaxMinSeen));
    }
  }
  return absl::OkStatus();
}

std::vector<NodeTiers> UniformNodes(size_t n, const NodeTiers& tiers) {
  return std::vector<NodeTiers>(n, tiers);
}

double FleetResult::load_imbalance() const {
  if (node_requests.empty() || requests == 0) return 0;
  const double mean = static_cast<double>(requests) / node_requests.size();
  return *std::max_element(node_requests.begin(), node_requests.end()) / mean;
}

absl::StatusOr<FleetResult> SimulateFleet(const std::vector<Request>& requests,
                                          const FleetOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  Fleet fleet(options);
  if (absl::Status s = fleet.Init(); !s.ok()) return s;
  if (absl::Status s = fleet.Replay(requests); !s.ok()) return s;
  return std::move(fleet.result());
}

}  // namespace kvtier::workload
