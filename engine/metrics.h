// engine/metrics.h — lock-free latency histograms and the engine's metrics formats.
//
// LatencyHistogram: fixed log2 buckets of microseconds (kvtier/stats.h, LatencyStats), one
// relaxed atomic add per bucket hit, so recording costs a clock read and two atomic adds and
// never takes a lock on the Match / Load / Store paths.
//
// FormatPrometheus / FormatStatsJson render an EngineStats snapshot for the metrics endpoint
// (engine/metrics_server.h): Prometheus text exposition format 0.0.4 and a JSON document
// with the same numbers (`kvtier stats` and `kvtier top` read the JSON). Both walk the one
// description of the statistics (kvtier/stats.h, VisitStats), so each shows every statistic.
//
// The /stats JSON, by group (StatsJsonPointer gives each value's place):
//   info        top level:            {"device": ..., "block_bytes": ...}
//   tier        "tiers": [{"tier": "gpu", <name>: n, ...}, host, disk]   (kAllTiers order)
//   namespace   "namespaces": [{"name": ns, <name>: n, <per-tier name>: {"gpu": n, ...}}]
//   engine      "engine": {<name>: n}
//   prefetch    "engine": {"prefetch_<x>": n}, x named after the Prometheus metric
//               (kvtier_prefetch_useful_total: "prefetch_useful" for in_time)
//   latency     "latency": {"match": {"count", "sum_ns", "buckets_le_us": [...]}, ...}

#ifndef KVTIER_ENGINE_METRICS_H_
#define KVTIER_ENGINE_METRICS_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvtier/stats.h"

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

// Prometheus text format: every statistic of AllStats() as its metric (counters
// `kvtier_*_total`, gauges, histograms `kvtier_{match,store,load}_latency_seconds`, the device
// as `kvtier_engine_info{device="..."} 1`), labelled by tier and namespace; nanoseconds are
// exported as seconds. `block_bytes` is the engine's (Geometry::block_bytes()); it replaces
// stats.block_bytes.
std::string FormatPrometheus(const EngineStats& stats, size_t block_bytes);
// The same snapshot as one JSON object (the layout above).
std::string FormatStatsJson(const EngineStats& stats, size_t block_bytes);

// Where FormatStatsJson puts the value of `info` for `labels`: a JSON pointer (RFC 6901),
// e.g. "/tiers/1/hits", "/namespaces/0/hits_per_tier/host", "/engine/prefetch_useful",
// "/latency/match".
std::string StatsJsonPointer(const StatInfo& info, const StatLabels& labels);

}  // namespace kvtier

#endif  // KVTIER_ENGINE_METRICS_H_
