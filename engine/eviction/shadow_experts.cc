// engine/eviction/shadow_experts.cc — sampled shadow caches, one per expert (shadow_experts.h).

#include "engine/eviction/shadow_experts.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <utility>

namespace kvtier {
namespace policy_internal {
namespace {

// SplitMix64's finalizer. Keys are hashes already, but without SetNextKey a slot id stands in
// for the key, and the sample must be a spread subset of the key space either way.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

ShadowExperts::ShadowExperts(absl::Span<const char* const> experts, uint32_t num_slots,
                             uint32_t max_shadow_slots)
    : num_experts_(static_cast<int>(std::min<size_t>(experts.size(), kMaxExperts))) {
  assert(!experts.empty() && experts.size() <= kMaxExperts);
  num_slots = std::max<uint32_t>(num_slots, 1);
  max_shadow_slots = std::max<uint32_t>(max_shadow_slots, 1);
  if (num_slots <= max_shadow_slots) {
    shadow_slots_ = num_slots;
    rate_ = 1.0;
    threshold_ = std::numeric_limits<uint64_t>::max();
  } else {
    shadow_slots_ = max_shadow_slots;
    rate_ = static_cast<double>(max_shadow_slots) / num_slots;
    threshold_ = static_cast<uint64_t>(std::ldexp(rate_, 64));
  }
  for (int e = 0; e < num_experts_; ++e) {
    absl::StatusOr<std::unique_ptr<EvictionPolicy>> p = MakeEvictionPolicy(experts[e], shadow_slots_);
    assert(p.ok());
    policy_[e] = std::move(*p);
    key_of_[e].assign(shadow_slots_, 0);
  }
  where_.reserve(static_cast<size_t>(shadow_slots_) * num_experts_ + 1);
  pending_.reserve(1024);
}

uint32_t ShadowExperts::Reference(uint64_t key_hash, uint32_t depth) {
  uint32_t played = 0;
  if (depth == 0 && !pending_.empty()) {
    std::stable_sort(pending_.begin(), pending_.end(),
                     [](const Pending& a, const Pending& b) { return a.depth < b.depth; });
    for (const Pending& p : pending_) Play(p.key, p.depth);
    played = static_cast<uint32_t>(pending_.size());
    pending_.clear();
  }
  if (Mix(key_hash) <= threshold_) pending_.push_back(Pending{depth, key_hash});
  return played;
}

void ShadowExperts::Play(uint64_t key_hash, uint32_t depth) {
  ++references_;
  Where absent;
  absent.slot.fill(kNoSlot);
  auto [it, inserted] = where_.try_emplace(key_hash, absent);
  // Erasing other keys below does not move this entry (absl's erase never rehashes).
  Where& here = it->second;
  for (int e = 0; e < num_experts_; ++e) {
    EvictionPolicy& policy = *policy_[e];
    const bool hit = here.slot[e] != kNoSlot;
    intact_[e] = (depth == 0 || intact_[e]) && hit;
    if (hit) {
      ++hits_[e];
      if (intact_[e]) ++prefix_hits_[e];
      policy.OnAccess(here.slot[e]);
      continue;
    }
    SlotId slot;
    if (used_[e] < shadow_slots_) {
      slot = used_[e]++;
    } else {
      const std::optional<SlotId> victim = policy.PickVictim([](SlotId) { return true; });
      assert(victim.has_value());
      slot = *victim;
      policy.OnRemove(slot);
      auto old = where_.find(key_of_[e][slot]);
      assert(old != where_.end());
      old->second.slot[e] = kNoSlot;
      bool anywhere = false;
      for (int f = 0; f < num_experts_; ++f) anywhere |= old->second.slot[f] != kNoSlot;
      if (!anywhere) where_.erase(old);
    }
    key_of_[e][slot] = key_hash;
    here.slot[e] = slot;
    policy.SetNextKey(key_hash);
    policy.OnInsert(slot);
  }
}

bool ShadowExperts::Holds(int expert, uint64_t key_hash) const {
  auto it = where_.find(key_hash);
  return it != where_.end() && it->second.slot[expert] != kNoSlot;
}

}  // namespace policy_internal
}  // namespace kvtier
