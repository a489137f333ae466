// engine/eviction/shadow_experts.cc — sampled shadow caches, one per expert (shadow_experts.h).

#include "engine/eviction/shadow_experts.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "engine/eviction/arc_policy.h"
#include "engine/eviction/lfu_policy.h"
#include "engine/eviction/lru_policy.h"
#include "engine/eviction/s3fifo_policy.h"

namespace kvtier {
namespace policy_internal {

// Calls f with shadow e's policy as its concrete (final) type where it is one of the usual
// experts, so the per-event calls are direct rather than virtual.
template <typename F>
void ShadowExperts::With(int e, F&& f) {
  switch (kind_[e]) {
    case Kind::kArc:
      f(static_cast<ArcPolicy&>(*policy_[e]));
      break;
    case Kind::kLru:
      f(static_cast<LruPolicy&>(*policy_[e]));
      break;
    case Kind::kLfu:
      f(static_cast<AgedLfuPolicy&>(*policy_[e]));
      break;
    case Kind::kS3Fifo:
      f(static_cast<S3FifoPolicy&>(*policy_[e]));
      break;
    default:
      f(*policy_[e]);
      break;
  }
}
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
    const char* name = policy_[e]->name();
    kind_[e] = std::strcmp(name, "arc") == 0      ? Kind::kArc
               : std::strcmp(name, "lru") == 0    ? Kind::kLru
               : std::strcmp(name, "lfu") == 0    ? Kind::kLfu
               : std::strcmp(name, "s3fifo") == 0 ? Kind::kS3Fifo
                                                  : Kind::kOther;
    key_of_[e].assign(shadow_slots_, 0);
  }
  where_.reserve(static_cast<size_t>(shadow_slots_) * num_experts_ + 1);
  pending_.reserve(1024);
}

uint32_t ShadowExperts::Flush() {
  // Stable by depth (seq is the arrival order); std::sort, unlike std::stable_sort,
  // allocates nothing.
  std::sort(pending_.begin(), pending_.end(), [](const Pending& a, const Pending& b) {
    return a.depth != b.depth ? a.depth < b.depth : a.seq < b.seq;
  });
  // A request's chain starts intact: its first sampled reference counts as a prefix hit if it
  // hits, whether or not its root (depth 0) is in the sample.
  intact_.fill(true);
  for (const Pending& p : pending_) Play(p.key);
  const uint32_t played = static_cast<uint32_t>(pending_.size());
  pending_.clear();
  return played;
}

void ShadowExperts::Play(uint64_t key_hash) {
  ++references_;
  Where absent;
  absent.slot.fill(kNoSlot);
  auto [it, inserted] = where_.try_emplace(key_hash, absent);
  // Erasing other keys below does not move this entry (absl's erase never rehashes).
  Where& here = it->second;
  for (int e = 0; e < num_experts_; ++e) {
    With(e, [&](auto& policy) {
      const bool hit = here.slot[e] != kNoSlot;
      intact_[e] = intact_[e] && hit;
      if (hit) {
        ++hits_[e];
        if (intact_[e]) ++prefix_hits_[e];
        policy.OnAccess(here.slot[e]);
        return;
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
    });
  }
}

bool ShadowExperts::Holds(int expert, uint64_t key_hash) const {
  auto it = where_.find(key_hash);
  return it != where_.end() && it->second.slot[expert] != kNoSlot;
}

}  // namespace policy_internal
}  // namespace kvtier
