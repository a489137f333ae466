// engine/eviction/expert_learner.h — which of two eviction experts to follow, learned online.
//
// The learner of the adaptive policy (adaptive_policy.h): a weight per expert, moved by
// regret (multiplicative weights, as LeCaR and CACHEUS do), and a learning rate that adapts
// to the hit ratio the cache gets (CACHEUS's rule, below). The leader is the expert with the
// larger weight, ties to expert 0, so the choice is deterministic: nothing is drawn at random
// for a decision.
//
//  * Regret(e, r), r in (0, 1]: w_e <- w_e * exp(-eta * r), then the weights are normalised
//    and clamped to [0.01, 0.99] (LeCaR's clamp), so an expert that fell behind can lead again
//    after a bounded amount of evidence: about ln(99) / eta net regret.
//  * CountRequest(hit): one request the cache served (a hit) or did not. Every `window`
//    requests (the cache's slot count, as in CACHEUS) the learning rate moves by the hill
//    climb of CACHEUS (Rodriguez et al., FAST'21), on values rounded to 3 decimals as there:
//    HR = hits / window, dHR = HR - HR_prev, d_eta = eta - eta_prev. If d_eta * dHR > 0 the
//    rate keeps going the way it went: eta += |eta * d_eta| (at most 1); if < 0 it turns:
//    eta -= |eta * d_eta| (at least 0.001). If the product is 0 and the hit ratio fell (or
//    sits at 0), a counter of such windows grows; 10 of them reset eta to eta_0; short of
//    that a fall moves eta by a random x1.25 or x0.75 (from 1 to 0.9, from 0.001 to 0.005).
//    eta_0 = sqrt(2 ln 2 / window), clamped to [0.001, 1]. The random step draws from a
//    SplitMix64 generator seeded at construction, so a run is reproducible.
//
// O(1) per call, no allocation. Not thread-safe.

#ifndef KVTIER_ENGINE_EVICTION_EXPERT_LEARNER_H_
#define KVTIER_ENGINE_EVICTION_EXPERT_LEARNER_H_

#include <cstdint>

namespace kvtier {
namespace policy_internal {

class ExpertLearner {
 public:
  static constexpr double kMinWeight = 0.01;
  static constexpr double kMinRate = 0.001;
  static constexpr double kMaxRate = 1.0;
  // Windows without progress before eta returns to eta_0.
  static constexpr int kResetAfter = 10;

  // window: requests per learning-rate step (>= 1; 0 is taken as 1).
  explicit ExpertLearner(uint32_t window, uint64_t seed = 0x5eed);

  // REQUIRES: expert is 0 or 1; 0 < regret <= 1.
  void Regret(int expert, double regret);
  void CountRequest(bool hit);

  int leader() const { return weight_[1] > weight_[0] ? 1 : 0; }
  double weight(int expert) const { return weight_[expert]; }
  double learning_rate() const { return eta_; }
  double initial_learning_rate() const { return eta_reset_; }
  // Learning-rate steps taken so far (one per window).
  uint64_t windows() const { return windows_; }

 private:
  void StepLearningRate();
  uint64_t NextRandom();

  double weight_[2] = {0.5, 0.5};
  uint32_t window_;
  double eta_reset_;
  double eta_;
  double eta_prev_ = 0;
  int64_t hr_prev_milli_ = 0;  // the last window's hit ratio, in thousandths
  uint32_t requests_ = 0;      // in this window
  uint32_t hits_ = 0;
  int zero_count_ = 0;
  int nega_count_ = 0;
  uint64_t windows_ = 0;
  uint64_t rng_;
};

}  // namespace policy_internal
}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_EXPERT_LEARNER_H_
