// engine/eviction/adaptive_policy.cc — the adaptive policy (see adaptive_policy.h).

#include "engine/eviction/adaptive_policy.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

#include "engine/eviction/arc_policy.h"
#include "engine/eviction/lfu_policy.h"
#include "engine/eviction/lru_policy.h"
#include "engine/eviction/s3fifo_policy.h"

namespace kvtier {
namespace {

std::unique_ptr<EvictionPolicy> MakeExpert(int e, uint32_t num_slots) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> p =
      MakeEvictionPolicy(AdaptivePolicy::kExperts[e], num_slots);
  assert(p.ok());
  return std::move(*p);
}

uint32_t ShadowSize(const AdaptivePolicy::Tuning& t, uint32_t num_slots) {
  const double want = std::ceil(t.shadow_fraction * num_slots);
  uint32_t s = want >= 4e9 ? 4000000000u : static_cast<uint32_t>(want);
  s = std::max(s, t.min_shadow_slots);
  s = std::min(s, t.max_shadow_slots);
  return std::max<uint32_t>(std::min(s, num_slots), 1);
}

}  // namespace

AdaptivePolicy::AdaptivePolicy(uint32_t num_slots) : AdaptivePolicy(num_slots, Tuning()) {}

AdaptivePolicy::AdaptivePolicy(uint32_t num_slots, const Tuning& tuning)
    : tuning_(tuning),
      num_slots_(std::max<uint32_t>(num_slots, 1)),
      slots_(num_slots_),
      leader_(std::clamp(tuning.first, 0, kNumExperts - 1)),
      counts_(AgedLfuPolicy::MakeSketch(num_slots_)),
      shadows_(kExperts, num_slots_, ShadowSize(tuning, num_slots_)) {
  live_ = MakeExpert(leader_, num_slots_);
  if (leader_ == kLfu) std::swap(counts_, static_cast<AgedLfuPolicy&>(*live_).frequencies());
  epoch_ =
      std::max<uint64_t>(static_cast<uint64_t>(tuning_.epoch_factor * shadows_.shadow_slots()), 1);
}

template <typename F>
decltype(auto) AdaptivePolicy::Live(F&& f) {
  static_assert(kNumExperts == 4);
  switch (leader_) {
    case 0:
      return f(static_cast<ArcPolicy&>(*live_));
    case 1:
      return f(static_cast<LruPolicy&>(*live_));
    case 2:
      return f(static_cast<AgedLfuPolicy&>(*live_));
    default:
      return f(static_cast<S3FifoPolicy&>(*live_));
  }
}

void AdaptivePolicy::SetNextKey(uint64_t key_hash) {
  next_key_ = key_hash;
  has_next_key_ = true;
  Live([&](auto& p) { p.SetNextKey(key_hash); });
}

void AdaptivePolicy::OnInsert(SlotId slot) {
  Slot& s = slots_[slot];
  s.key = has_next_key_ ? next_key_ : slot;
  has_next_key_ = false;
  s.depth = next_depth_;
  next_depth_ = 0;
  s.stamp = clock_++;
  s.uses = 1;
  if (leader_ != kLfu) counts_.Increment(s.key);
  Live([&](auto& p) { p.OnInsert(slot); });
  if (const uint32_t n = shadows_.Reference(s.key, s.depth)) Played(n);
}

void AdaptivePolicy::OnInsertCold(SlotId slot) {
  Slot& s = slots_[slot];
  s.key = has_next_key_ ? next_key_ : slot;
  has_next_key_ = false;
  s.depth = next_depth_;
  next_depth_ = 0;
  s.stamp = 1;
  s.uses = 0;
  Live([&](auto& p) { p.OnInsertCold(slot); });
}

void AdaptivePolicy::OnAccess(SlotId slot) {
  Slot& s = slots_[slot];
  s.stamp = clock_++;
  ++s.uses;
  if (leader_ != kLfu) counts_.Increment(s.key);
  Live([&](auto& p) { p.OnAccess(slot); });
  if (const uint32_t n = shadows_.Reference(s.key, s.depth)) Played(n);
}

void AdaptivePolicy::OnRemove(SlotId slot) {
  slots_[slot].stamp = 0;
  Live([&](auto& p) { p.OnRemove(slot); });
}

std::optional<SlotId> AdaptivePolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  return Live([&](auto& p) { return p.PickVictim(evictable); });
}

void AdaptivePolicy::Rebuild(int e) {
  std::vector<SlotId> tracked;
  for (SlotId s = 0; s < num_slots_; ++s) {
    if (slots_[s].stamp != 0) tracked.push_back(s);
  }
  std::sort(tracked.begin(), tracked.end(),
            [&](SlotId a, SlotId b) { return slots_[a].stamp < slots_[b].stamp; });
  // The key counts go with `lfu`: back to counts_ when it stops leading, from there to the
  // new instance when it leads again, so they are always the live lfu's own.
  if (leader_ == kLfu) std::swap(counts_, static_cast<AgedLfuPolicy&>(*live_).frequencies());
  std::unique_ptr<EvictionPolicy> p = MakeExpert(e, num_slots_);
  if (e == kLfu) {
    auto& lfu = static_cast<AgedLfuPolicy&>(*p);
    std::swap(counts_, lfu.frequencies());
    for (SlotId s : tracked) {
      lfu.SetNextKey(slots_[s].key);
      if (slots_[s].stamp == 1) {
        lfu.OnInsertCold(s);
      } else {
        lfu.InsertAt(s, slots_[s].stamp);  // counted already; its real idle time
      }
    }
  } else {
    for (SlotId s : tracked) {
      p->SetNextKey(slots_[s].key);
      if (slots_[s].stamp == 1) {
        p->OnInsertCold(s);
        continue;
      }
      p->OnInsert(s);
      for (uint32_t i = 1; i < std::min<uint32_t>(slots_[s].uses, 4); ++i) p->OnAccess(s);
    }
  }
  live_ = std::move(p);
  leader_ = e;
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
    ++switches_;
    Rebuild(best);
  }
}

}  // namespace kvtier
