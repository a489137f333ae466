// engine/rate_estimator.h — how fast one tier reads right now: throughput and latency.
//
// PlanLoad (kvtier/load_plan.h) needs each tier's current read rate. A single op's bytes ÷
// latency is not it: with 16 reads in flight a disk delivers ~16× what one read's bytes ÷
// latency says. So throughput is measured over **busy time** (time with at least one op in
// flight): the bytes finished in a window ÷ the busy time of the window. Latency is the mean
// of the window's per-op latencies.
//
// Both are exponentially weighted averages **over busy time**: a window of busy time t moves
// the estimate by α = 1 − exp(−t/τ) toward its own value. Weighting by busy time rather than by
// the wall time since the last window means a tiny window (one 4 KiB read after an hour idle)
// carries as little weight as the evidence it holds; and since exp(−a)·exp(−b) = exp(−(a+b)),
// the estimate does not depend on how the busy time was cut into windows. So `τ` is "τ seconds
// of the tier's own activity": after 3τ of busy time at a new rate, the old one weighs e⁻³ ≈ 5%.
//
// Windows close when the tier drains (no op in flight), or once they hold `sample_busy` of busy
// time or `sample_bytes` of bytes. A window whose mean queue depth is below
// `min_relative_depth` × the usual (averaged) depth updates latency but not throughput: a
// lone read at depth 1 shows a disk's latency, not its capacity.
//
// An idle tier keeps its estimates: the planner must not forget a slow disk because it stopped
// using it. But a tier the planner avoids gets no samples, so after `idle_before_decay` with
// nothing in flight the estimates return toward the prior, with the same τ (now in wall time),
// until new activity measures the tier again.
//
// Timestamps are passed in (no clock read), so tests drive time. Not thread-safe: the owner
// (one estimator per tier in the engine) guards it with its own mutex.

#ifndef KVTIER_ENGINE_RATE_ESTIMATOR_H_
#define KVTIER_ENGINE_RATE_ESTIMATOR_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvtier {

struct RateEstimatorOptions {
  double prior_bytes_per_s = 0;            // required, finite, > 0: the estimate before any sample
  double prior_latency_s = 0;              // finite, >= 0
  absl::Duration tau = absl::Seconds(10);  // busy time that moves the estimate by 1 − 1/e; > 0
  // Time with nothing in flight after which the estimates decay toward the prior; >= 0,
  // absl::InfiniteDuration() = never.
  absl::Duration idle_before_decay = absl::Seconds(60);
  // A window closes at the first OpFinished that reaches either (or drains the tier).
  absl::Duration sample_busy = absl::Milliseconds(2);  // >= 0
  uint64_t sample_bytes = uint64_t{1} << 20;
  // In [0, 1]; 0 = every window moves throughput.
  double min_relative_depth = 0.5;

  absl::Status Validate() const;  // InvalidArgument naming the field and value
};

class RateEstimator {
 public:
  static absl::StatusOr<RateEstimator> Create(const RateEstimatorOptions& options);

  // An op reached the device (for a disk read: entered the ring, not the backlog; a remote
  // GET: was sent). InvalidArgument if `now` is before the previous call's.
  absl::Status OpStarted(absl::Time now);
  // An op ended with `bytes` delivered after `latency` (the caller measures it, e.g. from the
  // submission that OpStarted marked to the completion). Which op ended does not matter: busy
  // time only needs the count in flight, so the caller keeps no token per op.
  // FailedPrecondition with nothing in flight; InvalidArgument for `now` before the previous
  // call's or a negative or infinite latency. A refused call changes nothing.
  absl::Status OpFinished(absl::Time now, uint64_t bytes, absl::Duration latency);

  // The estimates as of `now` (`now` only matters for the idle decay toward the prior).
  double bytes_per_s(absl::Time now) const;
  double latency_s(absl::Time now) const;
  // Windows that updated the estimates; of those, the ones that also moved throughput.
  uint64_t samples() const { return samples_; }
  uint64_t throughput_samples() const { return throughput_samples_; }
  // The averaged queue depth that windows are compared with (0 before the first window).
  double usual_depth() const { return depth_; }
  int64_t in_flight() const { return in_flight_; }
  const RateEstimatorOptions& options() const { return options_; }

 private:
  explicit RateEstimator(const RateEstimatorOptions& options);

  absl::Status CheckTime(absl::Time now, const char* call) const;
  void Advance(absl::Time now);
  void CloseWindow();
  // `value` (an estimate as of the last window) decayed toward `prior` for the idle time at
  // `now`.
  double Decayed(double value, double prior, absl::Time now) const;

  RateEstimatorOptions options_;
  double bytes_per_s_;
  double latency_s_;
  double depth_ = 0;
  uint64_t samples_ = 0;
  uint64_t throughput_samples_ = 0;
  int64_t in_flight_ = 0;
  absl::Time last_event_ = absl::InfinitePast();
  absl::Time idle_since_ = absl::InfinitePast();  // when in_flight_ last fell to 0

  // The open window.
  absl::Duration window_busy_ = absl::ZeroDuration();
  double window_depth_s_ = 0;  // ∫ in_flight dt over the window, op·seconds
  uint64_t window_bytes_ = 0;
  uint64_t window_ops_ = 0;
  double window_latency_s_ = 0;  // sum over the window's ops
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_RATE_ESTIMATOR_H_
