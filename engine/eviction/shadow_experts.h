// engine/eviction/shadow_experts.h — miniature caches that tell which eviction policy would hit
// most on the keys a tier sees.
//
// The adaptive policy's judge (adaptive_policy.h). Each expert (any policy MakeEvictionPolicy
// knows) runs alone, metadata only, as a "shadow" cache over a sample of the key space: a key
// is in the sample when a mix of its hash falls below rate x 2^64, and each shadow holds
// rate x num_slots slots, so it sees the sampled keys the way the full-size cache would see
// all of them (spatial sampling, as SHARDS and the "miniature simulations" of Waldspurger et
// al., FAST'17, do for miss-ratio curves). rate = min(1, max_shadow_slots / num_slots): a tier
// of up to max_shadow_slots slots is simulated exactly, a larger one at that size.
//
// Reference(key) is one request for a key (an insert or an access of the real cache): for each
// shadow, a hit (OnAccess) or a miss (insert, evicting its own victim first when full). The
// shadows count their hits, which is the objective itself (a hit of the real cache), rather
// than a proxy such as regret from ghost lists, and they are independent of what the real
// cache does: nothing a shadow decides depends on which expert the real cache follows.
//
// Memory: each shadow's policy over S = rate x num_slots slots plus an 8-byte key per slot, and
// one map from a sampled key to its slot in each shadow (at most experts x S entries of
// 8 + 4 x experts bytes over the map's load factor). Cost: one hash mix per reference; per
// sampled reference (a fraction `rate`), one map probe and one event per expert. No
// allocation after construction (the map is reserved). Not thread-safe.

#ifndef KVTIER_ENGINE_EVICTION_SHADOW_EXPERTS_H_
#define KVTIER_ENGINE_EVICTION_SHADOW_EXPERTS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "engine/eviction/eviction_policy.h"

namespace kvtier {
namespace policy_internal {

class ShadowExperts {
 public:
  static constexpr int kMaxExperts = 4;

  // experts: policy names for MakeEvictionPolicy (1..kMaxExperts, each known; checked by
  // assert). num_slots: the real cache's; max_shadow_slots >= 1.
  ShadowExperts(absl::Span<const char* const> experts, uint32_t num_slots,
                uint32_t max_shadow_slots);

  // One request for `key_hash`, the block at `depth` of its prompt (0: a request starts).
  // Sampled references are held until the next request starts (a reference at depth 0) and
  // then played into the shadows in depth order, so each shadow sees every request's chain
  // root first whatever order the real cache's hits and inserts came in. Returns how many
  // references were played now (0 for most calls).
  uint32_t Reference(uint64_t key_hash, uint32_t depth) {
    uint32_t played = 0;
    if (depth == 0 && !pending_.empty()) played = Flush();
    if (Sampled(key_hash))
      pending_.push_back(Pending{depth, static_cast<uint32_t>(pending_.size()), key_hash});
    return played;
  }
  // Whether `key_hash` is in the sample (a multiplicative hash of it at most the threshold).
  bool Sampled(uint64_t key_hash) const {
    return (key_hash ^ (key_hash >> 29)) * 0x9e3779b97f4a7c15ULL <= threshold_;
  }

  int num_experts() const { return num_experts_; }
  uint32_t shadow_slots() const { return shadow_slots_; }
  double sample_rate() const { return rate_; }
  // Sampled references and each expert's hits among them, since construction.
  uint64_t references() const { return references_; }
  uint64_t hits(int expert) const { return hits_[expert]; }
  // Hits while every shallower sampled reference of the same request hit too (a reference at
  // depth 0, sampled or not, starts a request): the prefix hits the expert would have had,
  // estimated on the sample.
  uint64_t prefix_hits(int expert) const { return prefix_hits_[expert]; }
  // The shadow's own policy instance (metadata only, over shadow_slots() slots).
  const EvictionPolicy& policy(int expert) const { return *policy_[expert]; }
  // Whether the shadow of `expert` holds `key_hash` now (for tests).
  bool Holds(int expert, uint64_t key_hash) const;

 private:
  void Play(uint64_t key_hash);
  template <typename F>
  void With(int e, F&& f);

  enum class Kind : uint8_t { kOther, kArc, kLru, kLfu, kS3Fifo };
  uint32_t Flush();  // plays the pending references in depth order; returns how many

  struct Pending {
    uint32_t depth;
    uint32_t seq;  // its place among the request's sampled references
    uint64_t key;
  };
  struct Where {
    std::array<SlotId, kMaxExperts> slot;
  };

  int num_experts_;
  uint32_t shadow_slots_;
  double rate_;
  uint64_t threshold_;  // sampled iff Sampled(key)
  std::array<std::unique_ptr<EvictionPolicy>, kMaxExperts> policy_;
  std::array<Kind, kMaxExperts> kind_{};
  std::array<std::vector<uint64_t>, kMaxExperts> key_of_;  // per shadow slot
  std::array<uint32_t, kMaxExperts> used_{};               // slots handed out so far
  absl::flat_hash_map<uint64_t, Where> where_;
  std::vector<Pending> pending_;  // this request's sampled references, not yet played
  uint64_t references_ = 0;
  std::array<uint64_t, kMaxExperts> hits_{};
  std::array<uint64_t, kMaxExperts> prefix_hits_{};
  std::array<bool, kMaxExperts> intact_{};  // the request's chain has only hit so far
};

}  // namespace policy_internal
}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_SHADOW_EXPERTS_H_
