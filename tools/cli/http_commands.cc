#include "tools/cli/http_commands.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json.h"
#include "httplib.h"

namespace kvtier::cli {
namespace {

using nlohmann::ordered_json;

// The value at a '/'-separated path of /stats ("tiers/0/hits"), or nullptr.
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

std::string HumanBytes(double b) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f B", b) : absl::StrFormat("%.1f %s", b, kUnits[u]);
}

std::string Ratio(double num, double den) {
  return den > 0 ? absl::StrFormat("%5.1f%%", 100.0 * num / den) : std::string("    -");
}

// The upper bound (microseconds) of the bucket holding quantile q, from the log2 buckets
// of /stats (bucket i < last: below 2^i us). An upper bound, as Prometheus would report.
std::string Quantile(const ordered_json& lat, double q) {
  const double count = Num(lat, "count");
  const ordered_json* buckets = At(lat, "buckets_le_us");
  if (count <= 0 || buckets == nullptr || !buckets->is_array()) return "-";
  double seen = 0;
  for (size_t i = 0; i < buckets->size(); ++i) {
    seen += Num(*buckets, absl::StrCat(i));
    if (seen >= q * count) {
      if (i + 1 == buckets->size()) return absl::StrFormat(">%dus", 1ull << (i - 1));
      return absl::StrFormat("<%dus", 1ull << i);
    }
  }
  return "-";
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
  std::string out;
  absl::StrAppendFormat(&out, "device %s, block %s\n\n", Str(s, "device"),
                        HumanBytes(Num(s, "block_bytes")));
  out +=
      "tier      used/capacity      bytes      hits    misses  hit-ratio   bytes in  bytes out  "
      "evict  demote  promote  rejected  cksum-fail\n";
  if (const ordered_json* tiers = At(s, "tiers"); tiers != nullptr && tiers->is_array()) {
    for (const ordered_json& t : *tiers) {
      const double hits = Num(t, "hits"), misses = Num(t, "misses");
      absl::StrAppendFormat(
          &out,
          "%-5s %8.0f/%-9.0f %10s %9.0f %9.0f %10s %10s %10s %6.0f %7.0f %8.0f %9.0f %11.0f\n",
          Str(t, "tier"), Num(t, "used_blocks"), Num(t, "capacity_blocks"),
          HumanBytes(Num(t, "used_bytes")), hits, misses, Ratio(hits, hits + misses),
          HumanBytes(Num(t, "bytes_in")), HumanBytes(Num(t, "bytes_out")), Num(t, "evictions"),
          Num(t, "demotions"), Num(t, "promotions"), Num(t, "admissions_rejected"),
          Num(t, "checksum_failures"));
    }
  }
  out +=
      "\nnamespace                  blocks   gpu  host  disk   matched   missed  hit-ratio  "
      "stored  loaded\n";
  if (const ordered_json* nss = At(s, "namespaces"); nss != nullptr && nss->is_array()) {
    for (const ordered_json& n : *nss) {
      const double hit = Num(n, "matched_blocks"), miss = Num(n, "missed_blocks");
      absl::StrAppendFormat(&out, "%-24s %8.0f %5.0f %5.0f %5.0f %9.0f %8.0f %10s %7.0f %7.0f\n",
                            Str(n, "name"), Num(n, "blocks"), Num(n, "blocks_per_tier/gpu"),
                            Num(n, "blocks_per_tier/host"), Num(n, "blocks_per_tier/disk"), hit,
                            miss, Ratio(hit, hit + miss), Num(n, "stored_blocks"),
                            Num(n, "loaded_blocks"));
    }
  }
  const double hit = Num(s, "engine/matched_blocks"), miss = Num(s, "engine/missed_blocks");
  absl::StrAppendFormat(&out,
                        "\nmatch calls %.0f, blocks matched %.0f, missed %.0f (hit ratio %s); "
                        "stored %.0f, deduplicated %.0f, rejected %.0f; loaded %.0f; leases "
                        "held %.0f, expired %.0f\n",
                        Num(s, "engine/match_calls"), hit, miss, Ratio(hit, hit + miss),
                        Num(s, "engine/stored_blocks"), Num(s, "engine/deduplicated_blocks"),
                        Num(s, "engine/rejected_blocks"), Num(s, "engine/loaded_blocks"),
                        Num(s, "engine/leases_held"), Num(s, "engine/leases_expired"));
  absl::StrAppendFormat(&out, "stall: %.3f s waiting for loaded bytes over %.0f waits\n",
                        Num(s, "engine/stall_ns") * 1e-9, Num(s, "engine/stalled_waits"));
  absl::StrAppendFormat(&out,
                        "prefetch: hinted %.0f, issued %.0f, useful %.0f, late %.0f, unused "
                        "%.0f, queued %.0f\n",
                        Num(s, "engine/prefetch_hinted"), Num(s, "engine/prefetch_issued"),
                        Num(s, "engine/prefetch_useful"), Num(s, "engine/prefetch_late"),
                        Num(s, "engine/prefetch_unused"), Num(s, "engine/prefetch_queued"));
  out += "latency (time in the call)   count      p50      p99\n";
  for (const char* op : {"match", "store", "load"}) {
    const ordered_json* lat = At(s, absl::StrCat("latency/", op));
    if (lat == nullptr) continue;
    absl::StrAppendFormat(&out, "  %-26s %7.0f %8s %8s\n", op, Num(*lat, "count"),
                          Quantile(*lat, 0.5), Quantile(*lat, 0.99));
  }
  return out;
}

std::string FormatTopFrame(const ordered_json& prev, const ordered_json& cur, double seconds,
                           const std::string& url) {
  const double dt = seconds > 0 ? seconds : 1;
  auto delta = [&](absl::string_view path) { return Num(cur, path) - Num(prev, path); };
  std::string out = absl::StrFormat("kvtier top  %s  (rates over %.1fs)\n\n", url, dt);
  out +=
      "tier   used/capacity    occupancy   hits/s  hit-ratio  in/s        out/s       "
      "evict/s\n";
  for (int i = 0; i < 3; ++i) {
    const std::string t = absl::StrCat("tiers/", i, "/");
    absl::StrAppendFormat(
        &out, "%-5s %7.0f/%-8.0f %9s %8.1f %10s %11s %11s %9.1f\n", Str(cur, t + "tier"),
        Num(cur, t + "used_blocks"), Num(cur, t + "capacity_blocks"),
        Ratio(Num(cur, t + "used_blocks"), Num(cur, t + "capacity_blocks")), delta(t + "hits") / dt,
        Ratio(delta(t + "hits"), delta(t + "hits") + delta(t + "misses")),
        HumanBytes(delta(t + "bytes_in") / dt) + "/s",
        HumanBytes(delta(t + "bytes_out") / dt) + "/s", delta(t + "evictions") / dt);
  }
  const double hit = delta("engine/matched_blocks"), miss = delta("engine/missed_blocks");
  const double loaded = delta("engine/loaded_blocks");
  absl::StrAppendFormat(&out,
                        "\nhit ratio (interval) %s   match/s %.1f   store/s %.1f   load/s %.1f\n",
                        Ratio(hit, hit + miss), delta("engine/match_calls") / dt,
                        delta("engine/stored_blocks") / dt, loaded / dt);
  out += "loads served by      ";
  for (int i = 0; i < 3; ++i) {
    const std::string t = absl::StrCat("tiers/", i, "/");
    absl::StrAppendFormat(&out, "%s %s   ", Str(cur, t + "tier"), Ratio(delta(t + "hits"), loaded));
  }
  absl::StrAppendFormat(&out, "\nprefetch (interval)  useful %.0f  late %.0f  unused %.0f\n",
                        delta("engine/prefetch_useful"), delta("engine/prefetch_late"),
                        delta("engine/prefetch_unused"));
  absl::StrAppendFormat(&out, "stall (interval)     %.1f%% of the time, %.0f waits\n",
                        100 * delta("engine/stall_ns") * 1e-9 / dt, delta("engine/stalled_waits"));
  return out;
}

}  // namespace kvtier::cli
