// engine/rate_estimator.cc — busy-time EWMAs of a tier's read rate (engine/rate_estimator.h).

#include "engine/rate_estimator.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace kvtier {

absl::Status RateEstimatorOptions::Validate() const {
  if (!std::isfinite(prior_bytes_per_s) || !(prior_bytes_per_s > 0)) {
    // A prior of 0 would make the planner avoid the tier forever, so it would never be measured.
    return absl::InvalidArgumentError(absl::StrFormat(
        "RateEstimatorOptions: prior_bytes_per_s = %g, must be finite and > 0", prior_bytes_per_s));
  }
  if (!std::isfinite(prior_latency_s) || prior_latency_s < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RateEstimatorOptions: prior_latency_s = %g, must be finite and >= 0", prior_latency_s));
  }
  if (tau <= absl::ZeroDuration() || tau == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RateEstimatorOptions: tau = %s, must be finite and > 0", absl::FormatDuration(tau)));
  }
  if (idle_before_decay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RateEstimatorOptions: idle_before_decay = %s, must be >= 0",
                        absl::FormatDuration(idle_before_decay)));
  }
  if (sample_busy < absl::ZeroDuration() || sample_busy == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RateEstimatorOptions: sample_busy = %s, must be finite and >= 0",
                        absl::FormatDuration(sample_busy)));
  }
  if (!(min_relative_depth >= 0 && min_relative_depth <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RateEstimatorOptions: min_relative_depth = %g, must be in [0, 1]", min_relative_depth));
  }
  return absl::OkStatus();
}

absl::StatusOr<RateEstimator> RateEstimator::Create(const RateEstimatorOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  return RateEstimator(options);
}

RateEstimator::RateEstimator(const RateEstimatorOptions& options)
    : options_(options),
      bytes_per_s_(options.prior_bytes_per_s),
      latency_s_(options.prior_latency_s) {}

absl::Status RateEstimator::CheckTime(absl::Time now, const char* call) const {
  if (now == absl::InfinitePast() || now == absl::InfiniteFuture()) {
    return absl::InvalidArgumentError(absl::StrFormat("RateEstimator::%s: now = %s, must be finite",
                                                      call, absl::FormatTime(now)));
  }
  // Busy time is a difference of timestamps: one going back would make it negative.
  if (now < last_event_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RateEstimator::%s: now = %s is before the previous call's %s", call,
                        absl::FormatTime(now), absl::FormatTime(last_event_)));
  }
  return absl::OkStatus();
}

void RateEstimator::Advance(absl::Time now) {
  if (in_flight_ > 0) {
    const absl::Duration dt = now - last_event_;
    window_busy_ += dt;
    window_depth_s_ += static_cast<double>(in_flight_) * absl::ToDoubleSeconds(dt);
  }
  last_event_ = now;
}

double RateEstimator::Decayed(double value, double prior, absl::Time now) const {
  if (in_flight_ > 0 || idle_since_ == absl::InfinitePast() ||
      options_.idle_before_decay == absl::InfiniteDuration()) {
    return value;
  }
  const absl::Duration decaying = now - idle_since_ - options_.idle_before_decay;
  if (decaying <= absl::ZeroDuration()) return value;
  return prior + (value - prior) * std::exp(-absl::FDivDuration(decaying, options_.tau));
}

absl::Status RateEstimator::OpStarted(absl::Time now) {
  if (absl::Status s = CheckTime(now, "OpStarted"); !s.ok()) return s;
  if (in_flight_ == 0) {
    // The idle decay stops here; keep where it got to, as the base the next window moves.
    bytes_per_s_ = Decayed(bytes_per_s_, options_.prior_bytes_per_s, now);
    latency_s_ = Decayed(latency_s_, options_.prior_latency_s, now);
  }
  Advance(now);
  ++in_flight_;
  return absl::OkStatus();
}

absl::Status RateEstimator::OpFinished(absl::Time now, uint64_t bytes, absl::Duration latency) {
  if (in_flight_ == 0) {
    return absl::FailedPreconditionError(
        "RateEstimator::OpFinished: no op in flight (every OpFinished needs an OpStarted)");
  }
  if (absl::Status s = CheckTime(now, "OpFinished"); !s.ok()) return s;
  if (latency < absl::ZeroDuration() || latency == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RateEstimator::OpFinished: latency = %s, must be finite and >= 0",
                        absl::FormatDuration(latency)));
  }
  Advance(now);
  --in_flight_;
  window_bytes_ += bytes;
  ++window_ops_;
  window_latency_s_ += absl::ToDoubleSeconds(latency);
  if (in_flight_ == 0 || window_busy_ >= options_.sample_busy ||
      window_bytes_ >= options_.sample_bytes) {
    CloseWindow();
  }
  if (in_flight_ == 0) idle_since_ = now;
  return absl::OkStatus();
}

void RateEstimator::CloseWindow() {
  const double busy_s = absl::ToDoubleSeconds(window_busy_);
  // Ops that began and ended at one instant carry no busy time, so no weight; their bytes wait
  // for the next window rather than dividing by zero.
  if (!(busy_s > 0)) return;
  const double alpha = -std::expm1(-busy_s / absl::ToDoubleSeconds(options_.tau));
  const double depth = window_depth_s_ / busy_s;
  latency_s_ += alpha * (window_latency_s_ / static_cast<double>(window_ops_) - latency_s_);
  if (samples_ == 0 || depth >= options_.min_relative_depth * depth_) {
    bytes_per_s_ += alpha * (static_cast<double>(window_bytes_) / busy_s - bytes_per_s_);
    ++throughput_samples_;
  }
  // The first window defines the usual depth; there is no prior for it.
  depth_ = samples_ == 0 ? depth : depth_ + alpha * (depth - depth_);
  ++samples_;
  window_busy_ = absl::ZeroDuration();
  window_depth_s_ = 0;
  window_bytes_ = 0;
  window_ops_ = 0;
  window_latency_s_ = 0;
}

double RateEstimator::bytes_per_s(absl::Time now) const {
  return Decayed(bytes_per_s_, options_.prior_bytes_per_s, now);
}

double RateEstimator::latency_s(absl::Time now) const {
  return Decayed(latency_s_, options_.prior_latency_s, now);
}

}  // namespace kvtier
