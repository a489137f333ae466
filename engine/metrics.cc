#include "engine/metrics.h"

#include <algorithm>
#include <bit>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace kvtier {

uint64_t LatencyBucketUpperNs(int i) {
  return i >= kLatencyBuckets - 1 ? UINT64_MAX : (uint64_t{1} << i) * 1000;
}

void LatencyHistogram::Record(std::chrono::nanoseconds elapsed) {
  const uint64_t ns = elapsed.count() > 0 ? static_cast<uint64_t>(elapsed.count()) : 0;
  // Bucket i holds [2^(i-1), 2^i) microseconds: the bit width of the whole microseconds.
  const int i = std::min<int>(std::bit_width(ns / 1000), kLatencyBuckets - 1);
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

LatencyStats LatencyHistogram::Snapshot() const {
  LatencyStats s;
  s.count = count_.load(std::memory_order_relaxed);
  s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  for (int i = 0; i < kLatencyBuckets; ++i)
    s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  return s;
}

namespace {

using Json = nlohmann::ordered_json;

// Prometheus label values escape backslash, double quote and newline (text format 0.0.4).
std::string PromEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

const char* PromType(StatKind kind) {
  switch (kind) {
    case StatKind::kCounter:
      return "counter";
    case StatKind::kHistogram:
      return "histogram";
    case StatKind::kGauge:
    case StatKind::kLabel:  // an info metric: a gauge of 1 carrying the string as a label
      return "gauge";
  }
  return "untyped";
}

// Prometheus wants base units: nanoseconds go out as seconds; everything else as it is.
std::string PromValue(StatUnit unit, uint64_t value) {
  if (unit == StatUnit::kNanoseconds)
    return absl::StrFormat("%.17g", static_cast<double>(value) * 1e-9);
  return absl::StrCat(value);
}

class PrometheusWriter : public StatsVisitor {
 public:
  void BeginStat(const StatInfo& info) override {
    absl::StrAppend(&out_, "# HELP ", info.metric, " ", info.help, "\n# TYPE ", info.metric, " ",
                    PromType(info.kind), "\n");
  }
  void Number(const StatInfo& info, const StatLabels& labels, uint64_t value) override {
    Sample(info.metric, LabelSet(info, labels), PromValue(info.unit, value));
  }
  void Histogram(const StatInfo& info, const StatLabels& labels, const LatencyStats& l) override {
    const std::string base = LabelSet(info, labels);
    const std::string sep = base.empty() ? "" : ",";
    uint64_t cumulative = 0;
    for (int i = 0; i < kLatencyBuckets; ++i) {
      cumulative += l.buckets[i];
      const std::string le = i == kLatencyBuckets - 1
                                 ? std::string("+Inf")
                                 : absl::StrFormat("%g", LatencyBucketUpperNs(i) * 1e-9);
      Sample(absl::StrCat(info.metric, "_bucket"), absl::StrCat(base, sep, "le=\"", le, "\""),
             absl::StrCat(cumulative));
    }
    Sample(absl::StrCat(info.metric, "_sum"), base, PromValue(info.unit, l.sum_ns));
    Sample(absl::StrCat(info.metric, "_count"), base, absl::StrCat(l.count));
  }
  void Label(const StatInfo& info, absl::string_view value) override {
    Sample(info.metric, absl::StrCat(info.name, "=\"", PromEscape(value), "\""), "1");
  }

  std::string Take() { return std::move(out_); }

 private:
  static std::string LabelSet(const StatInfo& info, const StatLabels& labels) {
    std::string out;
    if (HasNamespaceLabel(info.group))
      absl::StrAppend(&out, "namespace=\"", PromEscape(labels.ns), "\"");
    if (HasTierLabel(info.group)) {
      absl::StrAppend(&out, out.empty() ? "" : ",", "tier=\"", TierKindName(labels.tier), "\"");
    }
    if (HasNodeLabel(info.group)) {
      absl::StrAppend(&out, out.empty() ? "" : ",", "node=\"", PromEscape(labels.node), "\"");
    }
    return out;
  }
  void Sample(absl::string_view name, absl::string_view labels, absl::string_view value) {
    absl::StrAppend(&out_, name, labels.empty() ? "" : "{", labels, labels.empty() ? "" : "}", " ",
                    value, "\n");
  }

  std::string out_;
};

class JsonWriter : public StatsVisitor {
 public:
  explicit JsonWriter(const EngineStats& stats) : stats_(stats) {}

  // The arrays a group's values go into exist before its first value, with each element's
  // label first ("tier", "name"), and also when there is no namespace at all.
  void BeginStat(const StatInfo& info) override {
    if (info.group == StatGroup::kTier && !doc_.contains("tiers")) {
      Json& tiers = doc_["tiers"] = Json::array();
      for (TierKind t : kAllTiers) tiers.push_back(Json{{"tier", TierKindName(t)}});
    }
    if (HasNamespaceLabel(info.group) && !doc_.contains("namespaces")) {
      Json& spaces = doc_["namespaces"] = Json::array();
      for (const NamespaceStats& n : stats_.namespaces) spaces.push_back(Json{{"name", n.name}});
    }
    if (HasNodeLabel(info.group) && !doc_.contains(Json::json_pointer("/remote/nodes"))) {
      Json& nodes = doc_["remote"]["nodes"] = Json::array();
      for (const RemoteNodeStats& n : stats_.remote.nodes) {
        nodes.push_back(Json{{"address", n.address}});
      }
    }
  }
  void Number(const StatInfo& info, const StatLabels& labels, uint64_t value) override {
    At(info, labels) = value;
  }
  void Histogram(const StatInfo& info, const StatLabels& labels, const LatencyStats& l) override {
    At(info, labels) =
        Json{{"count", l.count},
             {"sum_ns", l.sum_ns},
             {"buckets_le_us", std::vector<uint64_t>(std::begin(l.buckets), std::end(l.buckets))}};
  }
  void Label(const StatInfo& info, absl::string_view value) override {
    At(info, StatLabels{}) = std::string(value);
  }

  // Bytes that are not UTF-8 (none are expected: namespace names are ASCII) become U+FFFD
  // rather than an exception.
  std::string Dump() const { return doc_.dump(-1, ' ', false, Json::error_handler_t::replace); }

 private:
  Json& At(const StatInfo& info, const StatLabels& labels) {
    return doc_[Json::json_pointer(StatsJsonPointer(info, labels))];
  }

  const EngineStats& stats_;
  Json doc_ = Json::object();
};

// `stats` with the engine's block size, which the derived byte figures need.
EngineStats WithBlockBytes(const EngineStats& stats, size_t block_bytes) {
  EngineStats s = stats;
  s.block_bytes = block_bytes;
  return s;
}

}  // namespace

std::string StatsJsonPointer(const StatInfo& info, const StatLabels& labels) {
  switch (info.group) {
    case StatGroup::kInfo:
      return absl::StrCat("/", info.name);
    case StatGroup::kEngine:
      return absl::StrCat("/engine/", info.name);
    case StatGroup::kPrefetch: {
      absl::string_view key = info.metric;
      absl::ConsumePrefix(&key, "kvtier_");
      absl::ConsumeSuffix(&key, "_total");
      return absl::StrCat("/engine/", key);
    }
    case StatGroup::kLatency: {
      absl::string_view op = info.name;
      absl::ConsumeSuffix(&op, "_latency");
      return absl::StrCat("/latency/", op);
    }
    case StatGroup::kTier:
      return absl::StrCat("/tiers/", static_cast<size_t>(labels.tier), "/", info.name);
    case StatGroup::kNamespace:
      return absl::StrCat("/namespaces/", labels.ns_index, "/", info.name);
    case StatGroup::kNamespaceTier:
      return absl::StrCat("/namespaces/", labels.ns_index, "/", info.name, "/",
                          TierKindName(labels.tier));
    case StatGroup::kRemote:
      return absl::StrCat("/remote/", info.name);
    case StatGroup::kRemoteNode:
      return absl::StrCat("/remote/nodes/", labels.node_index, "/", info.name);
  }
  return "/invalid";
}

std::string FormatPrometheus(const EngineStats& stats, size_t block_bytes) {
  PrometheusWriter w;
  VisitStats(WithBlockBytes(stats, block_bytes), w);
  return w.Take();
}

std::string FormatStatsJson(const EngineStats& stats, size_t block_bytes) {
  const EngineStats s = WithBlockBytes(stats, block_bytes);
  JsonWriter w(s);
  VisitStats(s, w);
  return w.Dump();
}

}  // namespace kvtier
