// engine/eviction/expert_learner.cc — the adaptive policy's learner (see expert_learner.h).

#include "engine/eviction/expert_learner.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace kvtier {
namespace policy_internal {
namespace {

int64_t Milli(double x) { return std::llround(x * 1000); }

}  // namespace

ExpertLearner::ExpertLearner(uint32_t window, uint64_t seed)
    : window_(std::max<uint32_t>(window, 1)),
      eta_reset_(std::clamp(std::sqrt(2 * std::log(2.0) / window_), kMinRate, kMaxRate)),
      eta_(eta_reset_),
      rng_(seed) {}

void ExpertLearner::Regret(int expert, double regret) {
  assert(expert == 0 || expert == 1);
  assert(regret > 0 && regret <= 1);
  weight_[expert] *= std::exp(-eta_ * regret);
  const double sum = weight_[0] + weight_[1];
  weight_[0] /= sum;
  weight_[1] /= sum;
  for (int e = 0; e < 2; ++e) {
    if (weight_[e] < kMinWeight) {
      weight_[e] = kMinWeight;
      weight_[1 - e] = 1 - kMinWeight;
    }
  }
}

void ExpertLearner::CountRequest(bool hit) {
  hits_ += hit ? 1 : 0;
  if (++requests_ < window_) return;
  StepLearningRate();
  requests_ = 0;
  hits_ = 0;
}

uint64_t ExpertLearner::NextRandom() {
  // SplitMix64.
  uint64_t z = (rng_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void ExpertLearner::StepLearningRate() {
  ++windows_;
  const int64_t hr = Milli(static_cast<double>(hits_) / window_);
  const int64_t d_hr = hr - hr_prev_milli_;
  const int64_t d_eta_milli = Milli(eta_) - Milli(eta_prev_);
  const double d_eta = static_cast<double>(d_eta_milli) / 1000;
  const int64_t direction = (d_eta_milli > 0) - (d_eta_milli < 0);
  const int64_t sign = direction * ((d_hr > 0) - (d_hr < 0));
  double next = eta_;
  if (sign > 0) {
    next = std::min(eta_ + std::abs(eta_ * d_eta), kMaxRate);
    zero_count_ = nega_count_ = 0;
  } else if (sign < 0) {
    next = std::max(eta_ - std::abs(eta_ * d_eta), kMinRate);
    zero_count_ = nega_count_ = 0;
  } else if (d_hr <= 0) {
    if (hr <= 0 && d_hr == 0) ++zero_count_;
    if (d_hr < 0) {
      ++nega_count_;
      ++zero_count_;
    }
    if (zero_count_ >= kResetAfter) {
      next = eta_reset_;
      zero_count_ = 0;
    } else if (d_hr < 0) {
      if (nega_count_ >= kResetAfter) {
        next = eta_reset_;
        nega_count_ = 0;
      } else if (eta_ >= kMaxRate) {
        next = 0.9;
      } else if (eta_ <= kMinRate) {
        next = 0.005;
      } else {
        next = (NextRandom() >> 63) != 0 ? std::min(eta_ * 1.25, kMaxRate)
                                         : std::max(eta_ * 0.75, kMinRate);
      }
    }
  }
  eta_prev_ = eta_;
  eta_ = next;
  hr_prev_milli_ = hr;
}

}  // namespace policy_internal
}  // namespace kvtier
