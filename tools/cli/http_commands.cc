#include "tools/cli/http_commands.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json.h"
#include "engine/metrics.h"
#include "httplib.h"
#include "kvtier/stats.h"
#include "tools/cli/text_format.h"

namespace kvtier::cli {
namespace {

using nlohmann::ordered_json;

// The value at a '/'-separated path of /stats ("tiers/0/tier"), or nullptr.
const ordered_json* At(const ordered_json& j, absl::string_view path) {
  return json::Find(j, absl::StrCat("/", path));
}
double Num(const ordered_json& j, absl::string_view path) {
  const ordered_json* v = At(j, path);
  return v != nullptr && v->is_number() ? v->get<double>() : 0;
}
std::string Str(const ordered_json& j, absl::string_view path) {
  const ordered_json* v = At(j, path);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string("?");
}

std::string Ratio(double num, double den) {
  return den > 0 ? absl::StrFormat("%5.1f%%", 100.0 * num / den) : std::string("    -");
}

// The upper bound (microseconds) of the bucket holding quantile q, from log2 buckets as
// /stats has them (bucket i < last: below 2^i us). An upper bound, as Prometheus would report.
std::string Quantile(const std::vector<double>& buckets, double q) {
  double count = 0;
  for (double b : buckets) count += b;
  if (count <= 0) return "-";
  double seen = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    seen += buckets[i];
    if (seen >= q * count) {
      if (i + 1 == buckets.size()) return absl::StrFormat(">%dus", 1ull << (i - 1));
      return absl::StrFormat("<%dus", 1ull << i);
    }
  }
  return "-";
}

// ----------------------------------------------------------------- the statistics, walked

// Where a statistic's value is in a /stats document: kvtier/stats.h describes every
// statistic, engine/metrics.h says where /stats puts it. Nothing here names a statistic: the
// tables below have a row for each one the schema has (a value an older engine does not
// serve shows as "-").
const ordered_json* StatValue(const ordered_json& doc, const StatInfo& info,
                              const StatLabels& labels) {
  return json::Find(doc, StatsJsonPointer(info, labels));
}

// The columns of a group: one (no labels), the tiers, or the namespaces of `doc`.
struct Column {
  std::string title;
  StatLabels labels;
};
std::vector<Column> TierColumns(const ordered_json& doc) {
  std::vector<Column> out;
  for (size_t i = 0; i < kAllTiers.size(); ++i) {
    out.push_back({Str(doc, absl::StrCat("tiers/", i, "/tier")), StatLabels{.tier = kAllTiers[i]}});
  }
  return out;
}
std::vector<Column> NamespaceColumns(const ordered_json& doc) {
  std::vector<Column> out;
  const ordered_json* spaces = At(doc, "namespaces");
  const size_t n = spaces != nullptr && spaces->is_array() ? spaces->size() : 0;
  for (size_t i = 0; i < n; ++i) {
    out.push_back({Str(doc, absl::StrCat("namespaces/", i, "/name")), StatLabels{.ns_index = i}});
  }
  return out;
}

// The nodes of the remote tier's cluster in `doc`, by address.
std::vector<Column> NodeColumns(const ordered_json& doc) {
  std::vector<Column> out;
  const ordered_json* nodes = At(doc, "remote/nodes");
  const size_t n = nodes != nullptr && nodes->is_array() ? nodes->size() : 0;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(
        {Str(doc, absl::StrCat("remote/nodes/", i, "/address")), StatLabels{.node_index = i}});
  }
  return out;
}

using Table = TextTable;

// The statistics of `groups` as rows, with `columns` as columns (a per-tier statistic of a
// namespace gives one row per tier). `cell` renders one value.
using CellFn = std::function<std::string(const StatInfo&, const StatLabels&)>;
void AddRows(Table& table, std::initializer_list<StatGroup> groups,
             const std::vector<Column>& columns, const CellFn& cell) {
  for (const StatInfo& info : AllStats()) {
    if (std::find(groups.begin(), groups.end(), info.group) == groups.end()) continue;
    if (info.kind == StatKind::kHistogram) continue;  // latency tables of their own
    const bool per_tier_rows = info.group == StatGroup::kNamespaceTier;
    for (TierKind t : per_tier_rows ? std::vector<TierKind>(kAllTiers.begin(), kAllTiers.end())
                                    : std::vector<TierKind>{TierKind::kGpu}) {
      std::vector<std::string> cells;
      for (const Column& c : columns) {
        StatLabels labels = c.labels;
        if (per_tier_rows) labels.tier = t;
        cells.push_back(cell(info, labels));
      }
      table.Row(
          per_tier_rows ? absl::StrCat(info.name, " ", TierKindName(t)) : std::string(info.name),
          std::move(cells));
    }
  }
}

// A table titled `title` (its label column's header) with a column per `columns`.
Table ColumnTable(const std::string& title, const std::vector<Column>& columns) {
  std::vector<std::string> header = {title};
  for (const Column& c : columns) header.push_back(c.title);
  return Table(std::move(header));
}

// A figure of a statistic for some labels (a value now, or a change over an interval).
using FigureFn = std::function<double(const StatInfo&, const StatLabels&)>;
// hits / (hits + misses) for each column, as the cells of a row.
std::vector<std::string> HitRatios(const std::vector<Column>& columns, const FigureFn& figure,
                                   const StatInfo& hits, const StatInfo& misses) {
  std::vector<std::string> out;
  for (const Column& c : columns) {
    const double h = figure(hits, c.labels);
    out.push_back(Ratio(h, h + figure(misses, c.labels)));
  }
  return out;
}

std::vector<double> Buckets(const ordered_json* histogram) {
  std::vector<double> out;
  const ordered_json* b = histogram != nullptr ? json::Find(*histogram, "/buckets_le_us") : nullptr;
  if (b == nullptr || !b->is_array()) return out;
  for (const ordered_json& v : *b) out.push_back(v.is_number() ? v.get<double>() : 0);
  return out;
}

// A value as people read it: bytes in KiB/MiB, nanoseconds in seconds, the rest as integers.
std::string Show(const StatInfo& info, const ordered_json* v) {
  if (v == nullptr) return "-";
  if (v->is_string()) return v->get<std::string>();
  if (!v->is_number()) return "?";
  const double x = v->get<double>();
  switch (info.unit) {
    case StatUnit::kBytes:
      return HumanBytes(x);
    case StatUnit::kBytesPerSecond:
      return HumanBytes(x) + "/s";
    case StatUnit::kNanoseconds:
      return absl::StrFormat("%.3f s", x * 1e-9);
    default:
      return v->is_number_unsigned() ? absl::StrCat(v->get<uint64_t>())
                                     : absl::StrFormat("%.0f", x);
  }
}

// A counter's change over `seconds`, as people read it: per second, bytes as bandwidth,
// nanoseconds as a share of the wall time.
std::string ShowRate(const StatInfo& info, double delta, double seconds) {
  switch (info.unit) {
    case StatUnit::kBytes:
      return HumanBytes(delta / seconds) + "/s";
    case StatUnit::kNanoseconds:
      return absl::StrFormat("%.1f%%", 100 * delta * 1e-9 / seconds);
    default:
      return absl::StrFormat("%.1f/s", delta / seconds);
  }
}

// The value of `info` in `doc`, or 0.
double ValueOf(const ordered_json& doc, const StatInfo& info, const StatLabels& labels) {
  const ordered_json* v = StatValue(doc, info, labels);
  return v != nullptr && v->is_number() ? v->get<double>() : 0;
}
// A statistic by group and name, for the derived figures (hit ratios).
const StatInfo& Stat(StatGroup group, absl::string_view name) {
  for (const StatInfo& info : AllStats()) {
    if (info.group == group && info.name == name) return info;
  }
  static const StatInfo kNone{};
  return kNone;
}

// The latency table of the histograms of `group`: count, p50, p99 and mean of each.
std::string LatencyTable(const ordered_json& s, StatGroup group, const std::string& title) {
  Table latency({title, "count", "p50", "p99", "mean"});
  for (const StatInfo& info : AllStats()) {
    if (info.group != group || info.kind != StatKind::kHistogram) continue;
    const ordered_json* h = StatValue(s, info, {});
    const double count = h != nullptr ? Num(*h, "count") : 0;
    const std::vector<double> buckets = Buckets(h);
    latency.Row(std::string(info.name),
                {h == nullptr ? "-" : absl::StrFormat("%.0f", count), Quantile(buckets, 0.5),
                 Quantile(buckets, 0.99),
                 count > 0 ? absl::StrFormat("%.1fus", Num(*h, "sum_ns") / count / 1e3) : "-"});
  }
  return latency.Render();
}

// The same over an interval: the histograms' bucket differences between `prev` and `cur`.
std::string IntervalLatencyTable(const ordered_json& prev, const ordered_json& cur, double dt,
                                 StatGroup group, const std::string& title) {
  Table latency({title, "calls/s", "p50", "p99"});
  for (const StatInfo& info : AllStats()) {
    if (info.group != group || info.kind != StatKind::kHistogram) continue;
    std::vector<double> now = Buckets(StatValue(cur, info, {}));
    const std::vector<double> before = Buckets(StatValue(prev, info, {}));
    double calls = 0;
    for (size_t i = 0; i < now.size(); ++i) {
      now[i] -= i < before.size() ? before[i] : 0;
      calls += now[i];
    }
    latency.Row(std::string(info.name),
                {absl::StrFormat("%.1f", calls / dt), Quantile(now, 0.5), Quantile(now, 0.99)});
  }
  return latency.Render();
}

// Whether `doc` comes from an engine with a remote tier. An engine without one (or one that
// predates it) gets a line saying so instead of tables of zeros.
bool RemoteEnabled(const ordered_json& doc) {
  return ValueOf(doc, Stat(StatGroup::kRemote, "enabled"), {}) > 0;
}

// The remote tier's own figures (tables "remote", "remote node", "remote latency"), `cell`
// rendering each value; `latency` renders the latency table.
std::string RemoteSection(const ordered_json& doc, const CellFn& cell, const std::string& latency) {
  if (!RemoteEnabled(doc)) return "\nremote tier: off (EngineOptions::remote.seeds is empty)\n";
  Table remote({"remote", ""});
  AddRows(remote, {StatGroup::kRemote}, {Column{}}, cell);
  std::string out = "\n" + remote.Render();
  const std::vector<Column> nodes = NodeColumns(doc);
  if (!nodes.empty()) {
    Table node_table = ColumnTable("remote node", nodes);
    AddRows(node_table, {StatGroup::kRemoteNode}, nodes, cell);
    out += "\n" + node_table.Render();
  }
  return out + "\n" + latency;
}

}  // namespace

absl::StatusOr<ordered_json> FetchStats(const std::string& url) {
  const std::string base = absl::StrContains(url, "://") ? url : absl::StrCat("http://", url);
  httplib::Client client(base);
  if (!client.is_valid()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("'%s' is not a URL (expected http://HOST:PORT)", url));
  }
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  httplib::Result res = client.Get("/stats");
  if (!res) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot reach %s/stats (%s); is the engine running with EngineOptions::metrics_port "
        "set to this port? The endpoint listens on 127.0.0.1 only",
        base, httplib::to_string(res.error())));
  }
  if (res->status != 200) {
    return absl::UnavailableError(absl::StrFormat(
        "%s/stats answered HTTP %d; is this a kvtier metrics endpoint?", base, res->status));
  }
  absl::StatusOr<ordered_json> j = json::Parse(res->body);
  if (!j.ok()) {
    return absl::DataLossError(
        absl::StrFormat("%s/stats did not answer JSON: %s", base, j.status().message()));
  }
  return j;
}

std::string FormatStats(const ordered_json& s) {
  auto value = [&](const StatInfo& info, const StatLabels& labels) {
    return Show(info, StatValue(s, info, labels));
  };
  std::string out;
  // What the engine is.
  Table info({"engine", ""});
  AddRows(info, {StatGroup::kInfo}, {Column{}}, value);
  out += info.Render();

  // Tiers, and their hit ratios.
  const FigureFn now = [&](const StatInfo& info, const StatLabels& labels) {
    return ValueOf(s, info, labels);
  };
  const std::vector<Column> tiers = TierColumns(s);
  Table tier_table = ColumnTable("tier", tiers);
  AddRows(tier_table, {StatGroup::kTier}, tiers, value);
  tier_table.Row("hit ratio", HitRatios(tiers, now, Stat(StatGroup::kTier, "hits"),
                                        Stat(StatGroup::kTier, "misses")));
  out += "\n" + tier_table.Render();

  // Namespaces, and their Match hit ratios.
  const std::vector<Column> spaces = NamespaceColumns(s);
  Table ns_table = ColumnTable("namespace", spaces);
  AddRows(ns_table, {StatGroup::kNamespace, StatGroup::kNamespaceTier}, spaces, value);
  ns_table.Row("match hit ratio",
               HitRatios(spaces, now, Stat(StatGroup::kNamespace, "matched_blocks"),
                         Stat(StatGroup::kNamespace, "missed_blocks")));
  out += "\n" + ns_table.Render();

  // Engine-wide counters and prefetch.
  Table engine({"engine-wide", ""});
  AddRows(engine, {StatGroup::kEngine}, {Column{}}, value);
  out += "\n" + engine.Render();
  const double hit = ValueOf(s, Stat(StatGroup::kEngine, "matched_blocks"), {});
  const double miss = ValueOf(s, Stat(StatGroup::kEngine, "missed_blocks"), {});
  absl::StrAppendFormat(&out, "match: hit ratio %s of the full blocks looked up\n",
                        Ratio(hit, hit + miss));
  absl::StrAppendFormat(&out, "stall: %s waiting for loaded bytes over %s waits\n",
                        value(Stat(StatGroup::kEngine, "stall_ns"), {}),
                        value(Stat(StatGroup::kEngine, "stalled_waits"), {}));
  Table prefetch({"prefetch", ""});
  AddRows(prefetch, {StatGroup::kPrefetch}, {Column{}}, value);
  out += "\n" + prefetch.Render();

  // Latency: the time inside each call, as bucket upper bounds.
  out += "\n" + LatencyTable(s, StatGroup::kLatency, "latency (time in the call)");
  out += RemoteSection(s, value, LatencyTable(s, StatGroup::kRemote, "remote latency"));
  return out;
}

std::string FormatTopFrame(const ordered_json& prev, const ordered_json& cur, double seconds,
                           const std::string& url) {
  const double dt = seconds > 0 ? seconds : 1;
  // The same namespace in `prev`, found by name (one created meanwhile starts from 0).
  auto prev_labels = [&](const StatInfo& info, const StatLabels& labels) {
    StatLabels p = labels;
    if (HasNamespaceLabel(info.group)) {
      const std::string name = Str(cur, absl::StrCat("namespaces/", labels.ns_index, "/name"));
      const std::vector<Column> before = NamespaceColumns(prev);
      p.ns_index = before.size();  // past the end: absent, 0
      for (const Column& c : before) {
        if (c.title == name) p.ns_index = c.labels.ns_index;
      }
    }
    // The same node in `prev`, found by address (the node list may be reordered).
    if (HasNodeLabel(info.group)) {
      const std::string address =
          Str(cur, absl::StrCat("remote/nodes/", labels.node_index, "/address"));
      const std::vector<Column> before = NodeColumns(prev);
      p.node_index = before.size();  // past the end: absent, 0
      for (const Column& c : before) {
        if (c.title == address) p.node_index = c.labels.node_index;
      }
    }
    return p;
  };
  const FigureFn delta = [&](const StatInfo& info, const StatLabels& labels) {
    return ValueOf(cur, info, labels) - ValueOf(prev, info, prev_labels(info, labels));
  };
  // Counters as rates over the interval; gauges as they are now.
  auto cell = [&](const StatInfo& info, const StatLabels& labels) {
    if (info.kind == StatKind::kCounter) {
      if (StatValue(cur, info, labels) == nullptr) return std::string("-");
      return ShowRate(info, delta(info, labels), dt);
    }
    return Show(info, StatValue(cur, info, labels));
  };

  std::string out = absl::StrFormat(
      "kvtier top  %s  (counters as rates over %.1fs, gauges as they are now)\n\n", url, dt);
  Table info({"engine", ""});
  AddRows(info, {StatGroup::kInfo}, {Column{}}, cell);
  out += info.Render() + "\n";
  const std::vector<Column> tiers = TierColumns(cur);
  Table tier_table = ColumnTable("tier", tiers);
  AddRows(tier_table, {StatGroup::kTier}, tiers, cell);
  std::vector<std::string> occupancy, served;
  const double loaded = delta(Stat(StatGroup::kEngine, "loaded_blocks"), {});
  for (const Column& c : tiers) {
    occupancy.push_back(Ratio(ValueOf(cur, Stat(StatGroup::kTier, "used_blocks"), c.labels),
                              ValueOf(cur, Stat(StatGroup::kTier, "capacity_blocks"), c.labels)));
    served.push_back(Ratio(delta(Stat(StatGroup::kTier, "hits"), c.labels), loaded));
  }
  tier_table.Row("occupancy", occupancy);
  tier_table.Row("hit ratio (interval)", HitRatios(tiers, delta, Stat(StatGroup::kTier, "hits"),
                                                   Stat(StatGroup::kTier, "misses")));
  tier_table.Row("loads served", served);
  out += tier_table.Render();

  const std::vector<Column> spaces = NamespaceColumns(cur);
  Table ns_table = ColumnTable("namespace", spaces);
  AddRows(ns_table, {StatGroup::kNamespace, StatGroup::kNamespaceTier}, spaces, cell);
  out += "\n" + ns_table.Render();

  Table engine({"engine-wide", ""});
  AddRows(engine, {StatGroup::kEngine}, {Column{}}, cell);
  out += "\n" + engine.Render();
  const double hit = delta(Stat(StatGroup::kEngine, "matched_blocks"), {});
  const double miss = delta(Stat(StatGroup::kEngine, "missed_blocks"), {});
  absl::StrAppendFormat(&out, "hit ratio (interval) %s of the full blocks Match looked up\n",
                        Ratio(hit, hit + miss));
  Table prefetch({"prefetch", ""});
  AddRows(prefetch, {StatGroup::kPrefetch}, {Column{}}, cell);
  out += "\n" + prefetch.Render();

  // Latency of the calls made in the interval: the buckets' differences.
  out += "\n" + IntervalLatencyTable(prev, cur, dt, StatGroup::kLatency, "latency (interval)");
  out += RemoteSection(
      cur, cell,
      IntervalLatencyTable(prev, cur, dt, StatGroup::kRemote, "remote latency (interval)"));
  return out;
}

}  // namespace kvtier::cli
