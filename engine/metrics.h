// engine/metrics.h — lock-free latency histograms and the engine's metrics formats.
//
// LatencyHistogram: fixed log2 buckets of microseconds (kvtier/engine.h, LatencyStats), one
// relaxed atomic add per bucket hit, so recording costs a clock read and two atomic adds and
// never takes a lock on the Match / Load / Store paths.
//
// FormatPrometheus / FormatStatsJson render an EngineStats snapshot for the metrics endpoint
// (engine/metrics_server.h): Prometheus text exposition format 0.0.4 and a JSON document
// with the same numbers (`kvtier stats` and `kvtier top` read the JSON).

#ifndef KVTIER_ENGINE_METRICS_H_
#define KVTIER_ENGINE_METRICS_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvtier/engine.h"

namespace kvtier {

// Upper bound of bucket i in nanoseconds (2^i microseconds); UINT64_MAX for the last bucket.
uint64_t LatencyBucketUpperNs(int i);

class LatencyHistogram {
 public:
  void Record(std::chrono::nanoseconds elapsed);
  LatencyStats Snapshot() const;

 private:
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> buckets_[kLatencyBuckets] = {};
};

// Records the time from construction to destruction into `h`.
class ScopedLatency {
 public:
  explicit ScopedLatency(LatencyHistogram& h) : h_(h), start_(std::chrono::steady_clock::now()) {}
  ~ScopedLatency() { h_.Record(std::chrono::steady_clock::now() - start_); }
  ScopedLatency(const ScopedLatency&) = delete;
  ScopedLatency& operator=(const ScopedLatency&) = delete;

 private:
  LatencyHistogram& h_;
  const std::chrono::steady_clock::time_point start_;
};

// Prometheus text format: counters `kvtier_*_total`, gauges, and histograms
// `kvtier_{match,store,load}_latency_seconds`, labelled by tier and namespace.
std::string FormatPrometheus(const EngineStats& stats, size_t block_bytes);
// The same snapshot as one JSON object.
std::string FormatStatsJson(const EngineStats& stats, size_t block_bytes);

}  // namespace kvtier

#endif  // KVTIER_ENGINE_METRICS_H_
