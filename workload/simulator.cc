// workload/simulator.cc — the replay loop, LRU, and the two MIN variants (simulator.h).

#include "workload/simulator.h"

#include <compare>
#include <cstdint>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvtier::workload {
namespace {

constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

// SplitMix64's finalizer, for hashing prefix paths.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// What "the same block again" means for the next-use computation.
enum class UseKey {
  kBlock,       // the block id: its next reference
  kPrefixPath,  // the whole path root..block: its next reference after the same prefix
};

// next[offset[r] + i] = the index of the first request after r that references request r's
// i-th block (under `key`), or kNever. One backward pass with a map of the latest request
// per key: O(refs) expected time and memory.
std::vector<uint64_t> NextUses(const std::vector<Request>& requests, UseKey key,
                               std::vector<uint64_t>* offset) {
  offset->assign(requests.size() + 1, 0);
  for (size_t r = 0; r < requests.size(); ++r) {
    (*offset)[r + 1] = (*offset)[r] + requests[r].blocks.size();
  }
  std::vector<uint64_t> keys(offset->back());
  for (size_t r = 0; r < requests.size(); ++r) {
    uint64_t path = 0;
    for (size_t i = 0; i < requests[r].blocks.size(); ++i) {
      const uint64_t id = requests[r].blocks[i];
      // The path hash chains every id before this one, so it names the prefix path even in
      // traces whose ids are not themselves prefix-chained.
      path = Mix64(Mix64(path) ^ id);
      keys[(*offset)[r] + i] = key == UseKey::kBlock ? id : path;
    }
  }
  std::vector<uint64_t> next(offset->back());
  absl::flat_hash_map<uint64_t, uint64_t> later;  // key -> earliest request seen so far
  for (size_t r = requests.size(); r-- > 0;) {
    // Look up all of r before recording r, so an id repeated within r points past r.
    for (uint64_t j = (*offset)[r]; j < (*offset)[r + 1]; ++j) {
      auto it = later.find(keys[j]);
      next[j] = it == later.end() ? kNever : it->second;
    }
    for (uint64_t j = (*offset)[r]; j < (*offset)[r + 1]; ++j) later[keys[j]] = r;
  }
  return next;
}

// The lookup half of a request (the model in simulator.h): counts the request, its block
// references and its hits (prefix hits up to the first miss), calls on_hit(i) for each
// present block i, and lists the missing positions in `missing`.
template <typename Present, typename OnHit>
void LookUpRequest(const std::vector<uint64_t>& blocks, Present present, OnHit on_hit,
                   SimResult* res, std::vector<size_t>* missing) {
  ++res->requests;
  res->block_refs += blocks.size();
  bool prefix = true;
  missing->clear();
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!present(blocks[i])) {
      prefix = false;
      missing->push_back(i);
      continue;
    }
    ++res->block_hits;
    if (prefix) ++res->prefix_hit_blocks;
    on_hit(i);
  }
}

// Eviction order of the MIN variants: the greatest key goes first — farthest next use, then
// (on a tie, e.g. a block and its child used next by the same request) the deeper block.
struct MinKey {
  uint64_t next;
  uint64_t depth;
  uint64_t id;
  friend auto operator<=>(const MinKey&, const MinKey&) = default;
};

SimResult RunMin(const std::vector<Request>& requests, size_t capacity, UseKey use_key,
                 bool allow_bypass) {
  std::vector<uint64_t> offset;
  const std::vector<uint64_t> next = NextUses(requests, use_key, &offset);
  SimResult res;
  absl::flat_hash_map<uint64_t, MinKey> resident;
  std::set<MinKey> order;
  std::vector<size_t> missing;
  for (size_t r = 0; r < requests.size(); ++r) {
    const std::vector<uint64_t>& blocks = requests[r].blocks;
    LookUpRequest(
        blocks, [&](uint64_t id) { return resident.contains(id); },
        [&](size_t i) {
          MinKey& key = resident.find(blocks[i])->second;
          order.erase(key);
          key = MinKey{next[offset[r] + i], i, blocks[i]};
          order.insert(key);
        },
        &res, &missing);
    for (size_t i : missing) {
      const uint64_t id = blocks[i];
      if (resident.contains(id)) continue;  // repeated within the request, inserted already
      const MinKey key{next[offset[r] + i], i, id};
      if (capacity == 0) {
        ++res.bypassed;
        continue;
      }
      if (resident.size() >= capacity) {
        auto victim = std::prev(order.end());
        if (allow_bypass && !(key < *victim)) {
          // The newcomer would be the first to go: keeping what is there is no worse.
          ++res.bypassed;
          continue;
        }
        resident.erase(victim->id);
        order.erase(victim);
        ++res.evictions;
      }
      resident.emplace(id, key);
      order.insert(key);
      ++res.insertions;
    }
  }
  return res;
}

}  // namespace

SimResult SimulateLruOracleAdmission(const std::vector<Request>& requests,
                                     size_t capacity_blocks, uint64_t horizon_requests) {
  std::vector<uint64_t> offset;
  const std::vector<uint64_t> next = NextUses(requests, UseKey::kPrefixPath, &offset);
  SimResult res;
  LruCachePolicy lru;
  absl::flat_hash_set<uint64_t> resident;
  std::vector<size_t> missing;
  for (size_t r = 0; r < requests.size(); ++r) {
    const std::vector<uint64_t>& blocks = requests[r].blocks;
    LookUpRequest(
        blocks, [&](uint64_t id) { return resident.contains(id); },
        [&](size_t i) { lru.Access(blocks[i]); }, &res, &missing);
    for (size_t i : missing) {
      const uint64_t id = blocks[i];
      if (resident.contains(id)) continue;  // repeated within the request, inserted already
      const uint64_t use = next[offset[r] + i];
      // The oracle: admit only a block whose next use as a prefix comes within the horizon.
      if (capacity_blocks == 0 || use == kNever || use - r > horizon_requests) {
        ++res.bypassed;
        continue;
      }
      if (resident.size() >= capacity_blocks) {
        const uint64_t victim = *lru.Victim();
        resident.erase(victim);
        lru.Remove(victim);
        ++res.evictions;
      }
      resident.insert(id);
      lru.Insert(id);
      ++res.insertions;
    }
  }
  return res;
}

void LruCachePolicy::Insert(uint64_t id) {
  auto [it, inserted] = where_.try_emplace(id);
  if (!inserted) {
    // Not expected (REQUIRES), but harmless: treat as an access.
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  order_.push_front(id);
  it->second = order_.begin();
}

void LruCachePolicy::Access(uint64_t id) {
  auto it = where_.find(id);
  if (it != where_.end()) order_.splice(order_.begin(), order_, it->second);
}

void LruCachePolicy::Remove(uint64_t id) {
  auto it = where_.find(id);
  if (it == where_.end()) return;
  order_.erase(it->second);
  where_.erase(it);
}

std::optional<uint64_t> LruCachePolicy::Victim() {
  if (order_.empty()) return std::nullopt;
  return order_.back();
}

void PolicyCache::Touch(uint64_t id) {
  if (resident_.contains(id)) policy_->Access(id);
}

absl::Status PolicyCache::Insert(uint64_t id, uint32_t depth, std::vector<uint64_t>* evicted) {
  while (resident_.size() >= capacity_) {
    const std::optional<uint64_t> victim = policy_->Victim();
    if (!victim.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("policy '", policy_->name(), "' offered no victim with ", resident_.size(),
                       " blocks present (capacity ", capacity_, ")"));
    }
    if (resident_.erase(*victim) == 0) {
      return absl::InternalError(absl::StrCat("policy '", policy_->name(), "' offered block ",
                                              *victim, ", which is not present"));
    }
    policy_->Remove(*victim);
    evicted->push_back(*victim);
  }
  resident_.insert(id);
  policy_->SetNextDepth(depth);
  policy_->Insert(id);
  return absl::OkStatus();
}

absl::StatusOr<SimResult> Simulate(const std::vector<Request>& requests, size_t capacity_blocks,
                                   CachePolicy& policy,
                                   std::vector<uint32_t>* prefix_hits_per_request) {
  if (policy.Victim().has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("policy '", policy.name(), "' already tracks blocks; pass a fresh one"));
  }
  SimResult res;
  PolicyCache cache(capacity_blocks, policy);
  std::vector<std::pair<uint64_t, uint32_t>> missing;  // (id, position in the request)
  std::vector<uint64_t> evicted;
  if (prefix_hits_per_request != nullptr) prefix_hits_per_request->clear();
  for (const Request& req : requests) {
    ++res.requests;
    res.block_refs += req.blocks.size();
    const uint64_t prefix_before = res.prefix_hit_blocks;
    bool prefix = true;
    missing.clear();
    for (size_t pos = 0; pos < req.blocks.size(); ++pos) {
      const uint64_t id = req.blocks[pos];
      if (!cache.Contains(id)) {
        prefix = false;
        missing.emplace_back(id, static_cast<uint32_t>(pos));
        continue;
      }
      ++res.block_hits;
      if (prefix) ++res.prefix_hit_blocks;
      policy.Access(id);
    }
    for (const auto& [id, pos] : missing) {
      if (capacity_blocks == 0) {
        ++res.bypassed;
        continue;
      }
      if (cache.Contains(id)) continue;  // repeated within the request, inserted already
      evicted.clear();
      if (absl::Status s = cache.Insert(id, pos, &evicted); !s.ok()) return s;
      res.evictions += evicted.size();
      ++res.insertions;
    }
    if (prefix_hits_per_request != nullptr) {
      prefix_hits_per_request->push_back(
          static_cast<uint32_t>(res.prefix_hit_blocks - prefix_before));
    }
  }
  return res;
}

SimResult SimulateBelady(const std::vector<Request>& requests, size_t capacity_blocks) {
  return RunMin(requests, capacity_blocks, UseKey::kBlock, /*allow_bypass=*/false);
}

SimResult SimulateBeladyPrefix(const std::vector<Request>& requests, size_t capacity_blocks) {
  return RunMin(requests, capacity_blocks, UseKey::kPrefixPath, /*allow_bypass=*/true);
}

}  // namespace kvtier::workload
