// engine/eviction/adaptive_policy.cc — the adaptive policy (see adaptive_policy.h).

#include "engine/eviction/adaptive_policy.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace kvtier {

AdaptivePolicy::AdaptivePolicy(uint32_t num_slots, const Tuning& tuning)
    : tuning_(tuning),
      num_slots_(std::max<uint32_t>(num_slots, 1)),
      keys_(num_slots_),
      depth_(num_slots_, 0),
      leader_(std::clamp(tuning.first, 0, kNumExperts - 1)),
      shadows_(kExperts, num_slots_, tuning.max_shadow_slots) {
  for (int e = 0; e < kNumExperts; ++e) {
    absl::StatusOr<std::unique_ptr<EvictionPolicy>> p = MakeEvictionPolicy(kExperts[e], num_slots_);
    assert(p.ok());
    experts_[e] = std::move(*p);
  }
  epoch_ = std::max<uint64_t>(shadows_.shadow_slots(), 1);
}

void AdaptivePolicy::SetNextKey(uint64_t key_hash) {
  keys_.SetNext(key_hash);
  for (auto& e : experts_) e->SetNextKey(key_hash);
}

void AdaptivePolicy::OnInsert(SlotId slot) {
  const uint64_t key = keys_.Take(slot);
  depth_[slot] = next_depth_;
  next_depth_ = 0;
  for (auto& e : experts_) e->OnInsert(slot);
  if (const uint32_t n = shadows_.Reference(key, depth_[slot])) Played(n);
}

void AdaptivePolicy::OnInsertCold(SlotId slot) {
  keys_.Take(slot);
  depth_[slot] = next_depth_;
  next_depth_ = 0;
  for (auto& e : experts_) e->OnInsertCold(slot);
}

void AdaptivePolicy::OnAccess(SlotId slot) {
  for (auto& e : experts_) e->OnAccess(slot);
  if (const uint32_t n = shadows_.Reference(keys_.Of(slot), depth_[slot])) Played(n);
}

void AdaptivePolicy::OnRemove(SlotId slot) {
  for (auto& e : experts_) e->OnRemove(slot);
}

std::optional<SlotId> AdaptivePolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  return experts_[leader_]->PickVictim(evictable);
}

void AdaptivePolicy::Played(uint32_t references) {
  in_epoch_ += references;
  if (in_epoch_ < epoch_) return;
  ++epochs_;
  const double keep = 1 - tuning_.decay;
  for (int e = 0; e < kNumExperts; ++e) {
    const uint64_t hits = shadows_.prefix_hits(e);
    score_[e] = score_[e] * keep + static_cast<double>(hits - hits_before_[e]);
    hits_before_[e] = hits;
  }
  decayed_refs_ = decayed_refs_ * keep + static_cast<double>(in_epoch_);
  in_epoch_ = 0;
  int best = leader_;
  for (int e = 0; e < kNumExperts; ++e) {
    if (score_[e] > score_[best]) best = e;
  }
  if (best != leader_ && score_[best] - score_[leader_] > tuning_.margin * decayed_refs_) {
    leader_ = best;
    ++switches_;
  }
}

}  // namespace kvtier
