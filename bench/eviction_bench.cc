// bench eviction — which eviction policy a prefix cache should run: every engine policy
// (through workload::EnginePolicyAdapter, so the code measured is the code the engine ships)
// replayed over the shared Mooncake trace at several cache sizes, against Belady's MIN and
// the prefix-aware MIN. Metadata only (workload/simulator.h): no bytes, no tiers, no time.
//
//   bench/run eviction [--workload=mooncake|chat|rag|agent|scan|shift] [--trace=PATH]
//                      [--capacities=1/50,1/20,0.125,...|BLOCKS,...] [--policies=lru,arc,...]
//                      [--seed=N] [--timeline-window=REQUESTS] [--out-dir=DIR]
//
// Capacities are fractions of the trace's distinct blocks ("1/8" or "0.125") or, written as
// integers, block counts. Default: 1/50, 1/20, 1/8, 1/4, 1/2; the middle one is the
// headline. The Mooncake trace defaults to ../shared/traces/ beside the source tree; when it
// is missing the bench falls back to a generated chat trace and says so in the JSON "trace"
// field, so it still runs outside that layout.
//
// Output: a table of prefix-hit ratios (policy rows x capacity columns, the two optima
// last), one of block hit ratios, eviction.csv in the output directory, and eviction.png
// (prefix miss ratio against cache size, one line per policy and per optimum) when gnuplot
// is on PATH. JSON: figure = the engine default policy's ("arc") prefix-hit ratio at the
// middle capacity; ceiling = the prefix-aware MIN's there; gap_closed_<policy> = the share of
// the distance from LRU to that ceiling the policy covers (the yardstick).
//
// The adaptive policy (issue 22) against the fixed ones: at each capacity, adaptive's
// prefix-hit ratio minus the best plain (not +prefix) fixed policy's, and minus LRU's. JSON:
// adaptive_gap_<c>, adaptive_vs_lru_<c>, adaptive_worst_gap (the smallest, with where and
// against which policy), adaptive_target_met (never more than 0.005 below the best, never
// below LRU); the plot draws adaptive_gap on a second axis.
//
// Hit ratio over time: the prefix-hit ratio per window of --timeline-window requests (default
// 1/50 of the trace) at the middle capacity, for lru, arc, lfu, s3fifo and adaptive (those
// asked for): eviction_timeline.csv and eviction_timeline.png. For --workload=shift (chat,
// then scan) the plot marks the phase boundary, and the JSON gets each policy's prefix-hit
// ratio per phase (shift_phase<1|2>_<policy>).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/bench_util.h"
#include "bench/workload_flags.h"
#include "common/flags.h"
#include "workload/engine_policy_adapter.h"
#include "workload/generators.h"
#include "workload/reuse.h"
#include "workload/simulator.h"
#include "workload/trace.h"

namespace kvtier::bench {
namespace {

using workload::Request;
using workload::SimResult;

// The engine's default (EngineOptions::host_eviction): the policy the figure is about.
constexpr char kDefaultPolicy[] = "arc";  // EngineOptions::{gpu,host}_eviction

// A capacity as given: a fraction of the distinct blocks, or an absolute block count.
struct CapacitySpec {
  std::string label;  // as written, for the table header
  double fraction = 0;
  size_t blocks = 0;  // used when fraction == 0
};

bool ParseCapacity(absl::string_view s, CapacitySpec* out) {
  out->label = std::string(s);
  std::vector<absl::string_view> parts = absl::StrSplit(s, '/');
  if (parts.size() == 2) {
    double num, den;
    if (!absl::SimpleAtod(parts[0], &num) || !absl::SimpleAtod(parts[1], &den) || den <= 0) {
      return false;
    }
    out->fraction = num / den;
    return out->fraction > 0 && out->fraction <= 1;
  }
  if (s.find('.') != absl::string_view::npos) {
    return absl::SimpleAtod(s, &out->fraction) && out->fraction > 0 && out->fraction <= 1;
  }
  return absl::SimpleAtoi(s, &out->blocks) && out->blocks > 0;
}


struct Row {
  std::string name;
  std::vector<SimResult> at;  // per capacity
};

// `name` padded on the right, for the tables.
void PrintTable(const char* title, const std::vector<Row>& rows,
                const std::vector<CapacitySpec>& specs, const std::vector<size_t>& blocks,
                double (SimResult::*metric)() const) {
  std::printf("\n%s\n%-22s", title, "policy");
  for (size_t c = 0; c < specs.size(); ++c) {
    // "1/8 5490" for a fraction (as written, then in blocks); just the count otherwise.
    std::printf(" %12s", (specs[c].fraction > 0 ? absl::StrCat(specs[c].label, " ", blocks[c])
                                                : absl::StrCat(blocks[c]))
                             .c_str());
  }
  std::printf("\n");
  for (const Row& r : rows) {
    std::printf("%-22s", r.name.c_str());
    for (const SimResult& s : r.at) std::printf(" %12.4f", (s.*metric)());
    std::printf("\n");
  }
}

// Writes the .gp script and runs gnuplot on it. Returns the PNG's path, or why not.
// rows: the policies first, then the optima (drawn dashed); `unbounded_miss` is drawn as a
// horizontal line (no cache size does better).
// `adaptive_gap` (one value per capacity, or empty): drawn on the right axis.
std::string Plot(const std::filesystem::path& dir, const std::string& title,
                 const std::vector<Row>& rows, size_t num_policies,
                 const std::vector<size_t>& blocks, double unique_blocks, double unbounded_miss,
                 const std::vector<double>& adaptive_gap, bool* ok) {
  *ok = false;
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    return "skipped: gnuplot is not on PATH (scripts/install-deps.sh installs gnuplot-nox)";
  }
  // Wide data: one row per capacity, one column per policy (miss ratio = 1 - prefix hits).
  const std::filesystem::path dat = dir / "eviction_plot.dat";
  {
    std::ofstream out(dat);
    out << "fraction";
    for (const Row& r : rows) out << ' ' << r.name;
    if (!adaptive_gap.empty()) out << " adaptive-minus-best-fixed";
    out << '\n';
    for (size_t c = 0; c < blocks.size(); ++c) {
      out << absl::StrFormat("%.6g", blocks[c] / unique_blocks);
      for (const Row& r : rows) out << absl::StrFormat(" %.6f", 1 - r.at[c].prefix_hit_ratio());
      if (!adaptive_gap.empty()) out << absl::StrFormat(" %.6f", adaptive_gap[c]);
      out << '\n';
    }
  }
  const auto [lo, hi] = std::minmax_element(blocks.begin(), blocks.end());
  const std::filesystem::path png = dir / "eviction.png";
  const std::filesystem::path gp = dir / "eviction.gp";
  {
    std::ofstream out(gp);
    out << "set terminal pngcairo size 900,600 noenhanced\n"
        << "set output '" << png.string() << "'\n"
        << "set title 'prefix miss ratio vs cache size: " << title << "'\n"
        << "set xlabel 'cache size (fraction of distinct blocks, log scale)'\n"
        << "set ylabel 'prefix miss ratio (1 - prefix-hit ratio)'\n"
        << "set logscale x\nset grid\nset key outside right\n"
        << (adaptive_gap.empty() ? std::string()
                                 : "set y2label 'adaptive minus best fixed policy (prefix hits)'\n"
                                   "set y2tics\nset y2range [-0.05:0.02]\n")
        << absl::StrFormat("set xrange [%g:%g]\n", *lo / unique_blocks / 1.3,
                           *hi / unique_blocks * 1.3)
        << "plot for [i=2:" << num_policies + 1 << "] '" << dat.string()
        << "' using 1:i with linespoints lw 2 title columnheader(i), \\\n"
        << "     for [i=" << num_policies + 2 << ":" << rows.size() + 1 << "] '" << dat.string()
        << "' using 1:i with linespoints lw 3 dt 2 lc 'black' pt (i + 4) title columnheader(i), "
           "\\\n"
        << absl::StrFormat("     %.6f with lines lc 'black' dt 3 title 'unbounded cache'",
                           unbounded_miss)
        << (adaptive_gap.empty()
                ? std::string("\n")
                : absl::StrFormat(", \\\n     '%s' using 1:%d axes x1y2 with linespoints lw 2 lc "
                                  "'red' dt 4 title columnheader(%d), \\\n     -0.005 axes "
                                  "x1y2 with lines lc 'red' dt 3 title 'target: -0.005'\n",
                                  dat.string(), rows.size() + 2, rows.size() + 2));
  }
  // pngcairo is gnuplot-nox's PNG terminal; fall back to the plain png terminal for builds
  // without cairo.
  const std::string run = absl::StrCat("gnuplot '", gp.string(), "' 2>/dev/null");
  if (std::system(run.c_str()) != 0 || !std::filesystem::exists(png)) {
    std::string script;
    {
      std::ifstream in(gp);
      script.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    absl::StrReplaceAll({{"pngcairo", "png"}}, &script);
    std::ofstream(gp) << script;
    if (std::system(absl::StrCat("gnuplot '", gp.string(), "'").c_str()) != 0) {
      return "failed: gnuplot exited with an error on " + gp.string();
    }
  }
  *ok = true;
  return png.string();
}

struct Timeline {
  std::string csv;
  std::string plot;  // the PNG's path, or why none
  std::vector<std::pair<std::string, double>> phase_fields;
};

// Prefix-hit ratio per window of requests at `capacity`, for the policies of interest among
// `policies`; CSV and (with gnuplot) PNG. For the shift workload, the phase boundary and each
// policy's hit ratio per phase.
Timeline WriteTimeline(const std::vector<Request>& trace, size_t capacity,
                       const std::vector<std::string>& policies, const std::string& workload_name,
                       uint64_t seed, size_t window, const std::string& out_dir) {
  Timeline out;
  if (window == 0) window = std::max<size_t>(1, trace.size() / 50);
  size_t boundary = 0;  // 0: one phase
  if (workload_name == "shift") {
    absl::StatusOr<std::vector<Request>> chat = workload::GenerateBenchWorkload("chat", seed);
    if (chat.ok()) boundary = chat->size();
  }
  std::vector<std::string> names;
  for (const char* n : {"lru", "arc", "lfu", "s3fifo", "adaptive"}) {
    if (std::find(policies.begin(), policies.end(), n) != policies.end()) names.push_back(n);
  }
  std::vector<std::vector<double>> series;
  for (const std::string& name : names) {
    absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
        workload::EnginePolicyAdapter::Create(name, capacity);
    if (!a.ok()) Die(a.status().ToString());
    std::vector<uint32_t> hits;
    if (absl::StatusOr<SimResult> r = workload::Simulate(trace, capacity, **a, &hits); !r.ok()) {
      Die(r.status().ToString());
    }
    std::vector<double> points;
    uint64_t phase_hits[2] = {0, 0}, phase_refs[2] = {0, 0};
    for (size_t start = 0; start < trace.size(); start += window) {
      uint64_t h = 0, refs = 0;
      for (size_t i = start; i < std::min(trace.size(), start + window); ++i) {
        h += hits[i];
        refs += trace[i].blocks.size();
        const int phase = boundary > 0 && i >= boundary ? 1 : 0;
        phase_hits[phase] += hits[i];
        phase_refs[phase] += trace[i].blocks.size();
      }
      points.push_back(refs ? static_cast<double>(h) / refs : 0);
    }
    series.push_back(std::move(points));
    if (boundary > 0) {
      for (int phase = 0; phase < 2; ++phase) {
        out.phase_fields.emplace_back(
            absl::StrCat("shift_phase", phase + 1, "_", name),
            phase_refs[phase] ? static_cast<double>(phase_hits[phase]) / phase_refs[phase] : 0);
      }
    }
  }
  if (boundary > 0) {
    out.phase_fields.emplace_back("shift_boundary_request", static_cast<double>(boundary));
    std::printf(
        "\nshift workload (chat, then scan from request %zu), prefix-hit ratio per phase "
        "at %zu blocks:\n",
        boundary, capacity);
    for (size_t n = 0; n < names.size(); ++n) {
      std::printf("%-22s %8.4f %8.4f\n", names[n].c_str(), out.phase_fields[2 * n].second,
                  out.phase_fields[2 * n + 1].second);
    }
  }
  const std::filesystem::path dir(out_dir);
  const std::filesystem::path csv = dir / "eviction_timeline.csv";
  {
    std::ofstream f(csv);
    f << "request";
    for (const std::string& n : names) f << ' ' << n;
    f << '\n';
    for (size_t w = 0; w < (series.empty() ? 0 : series[0].size()); ++w) {
      f << w * window;
      for (const std::vector<double>& s : series) f << absl::StrFormat(" %.6f", s[w]);
      f << '\n';
    }
  }
  out.csv = csv.string();
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    out.plot = "skipped: gnuplot is not on PATH";
    return out;
  }
  const std::filesystem::path png = dir / "eviction_timeline.png";
  const std::filesystem::path gp = dir / "eviction_timeline.gp";
  {
    std::ofstream f(gp);
    f << "set terminal png size 900,500 noenhanced\n"
      << "set output '" << png.string() << "'\n"
      << "set title 'prefix-hit ratio over time: " << workload_name << ", " << capacity
      << " blocks, windows of " << window << " requests'\n"
      << "set xlabel 'request'\nset ylabel 'prefix-hit ratio in the window'\n"
      << "set grid\nset key outside right\n";
    if (boundary > 0) {
      f << "set arrow from " << boundary << ", graph 0 to " << boundary
        << ", graph 1 nohead dt 2 lc 'black'\n"
        << "set label 'chat | scan' at " << boundary << ", graph 0.95 center\n";
    }
    f << "plot for [i=2:" << names.size() + 1 << "] '" << csv.string()
      << "' using 1:i with lines lw 2 title columnheader(i)\n";
  }
  if (std::system(absl::StrCat("gnuplot '", gp.string(), "'").c_str()) != 0) {
    out.plot = "failed: gnuplot exited with an error on " + gp.string();
  } else {
    out.plot = png.string();
  }
  return out;
}

int Main(int argc, char** argv) {
  std::string trace_path =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  std::string workload_name = "mooncake";
  std::string out_dir = std::string(KVTIER_BINARY_DIR) + "/bench-out/eviction";
  std::vector<CapacitySpec> specs;
  std::vector<std::string> policies = workload::EnginePolicyNames();
  // The engine's prefix-aware refinement on the policies that do best without it.
  for (const char* p : {"lru+prefix", "clock+prefix", "s3fifo+prefix", "arc+prefix"}) {
    policies.push_back(p);
  }
  uint64_t seed = 1;
  size_t timeline_window = 0;  // 0: 1/50 of the trace
  for (const char* c : {"1/50", "1/20", "1/8", "1/4", "1/2"}) {
    CapacitySpec s;
    ParseCapacity(c, &s);
    specs.push_back(s);
  }
  CLI::App app(
      "bench eviction: eviction policies x capacities on a trace (metadata simulation) vs "
      "Belady's optimum; PNG plot",
      "bench/run eviction");
  AddWorkloadFlags(app, &workload_name, &trace_path);
  app.add_option_function<std::vector<std::string>>(
         "--capacities",
         [&specs](const std::vector<std::string>& values) {
           specs.clear();
           for (const std::string& c : values) {
             CapacitySpec spec;
             if (!ParseCapacity(c, &spec)) {
               throw CLI::ValidationError("--capacities",
                                          "'" + c +
                                              "' is not a fraction (1/8, 0.125) or a "
                                              "block count");
             }
             specs.push_back(spec);
           }
         },
         "fractions of the trace's distinct blocks (1/8 or 0.125) or block counts, "
         "comma-separated")
      ->delimiter(',')
      ->default_str("1/50,1/20,1/8,1/4,1/2");
  app.add_option_function<std::vector<std::string>>(
         "--policies",
         [&policies](const std::vector<std::string>& values) {
           policies = values;
           // The figure is the default policy's, and gap_closed_* is measured from LRU.
           for (const char* needed : {kDefaultPolicy, "lru"}) {
             if (std::find(policies.begin(), policies.end(), needed) == policies.end()) {
               policies.insert(policies.begin(), needed);
             }
           }
         },
         "engine policies, comma-separated (default: all, and lru, clock, s3fifo and arc "
         "with +prefix)")
      ->delimiter(',')
      ->check(EnginePolicyName());
  flags::AddSeed(app, &seed);
  app.add_option("--timeline-window", timeline_window,
                 "requests per point of the hit-ratio-over-time plot (default: 1/50 of the "
                 "trace)");
  app.add_option("--out-dir", out_dir, "where the CSV and the plot go")->capture_default_str();
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;

  // The trace, or the fallback.
  std::string trace_label;
  absl::StatusOr<std::vector<Request>> loaded =
      workload::LoadBenchWorkload(workload_name, trace_path, seed, &trace_label);
  if (!loaded.ok()) Die(loaded.status().ToString());
  if (workload_name == "mooncake" && !std::filesystem::exists(trace_path)) workload_name = "chat";
  std::vector<Request> trace = std::move(*loaded);
  const workload::TraceSummary summary = workload::Summarize(trace);
  std::printf("trace: %s\n%s", trace_label.c_str(), workload::FormatSummary(summary).c_str());
  if (summary.unique_blocks == 0) Die("the trace has no blocks");

  std::vector<size_t> blocks;
  for (const CapacitySpec& s : specs) {
    blocks.push_back(s.fraction > 0 ? std::max<size_t>(1, static_cast<size_t>(
                                                              s.fraction * summary.unique_blocks))
                                    : s.blocks);
  }
  const size_t mid = blocks.size() / 2;

  std::vector<Row> rows;
  double sim_seconds = 0;
  uint64_t sim_refs = 0;
  for (const std::string& name : policies) {
    Row row{name, {}};
    for (size_t cap : blocks) {
      absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> a =
          workload::EnginePolicyAdapter::Create(name, cap);
      if (!a.ok()) Die(a.status().ToString());
      const double start = Now();
      absl::StatusOr<SimResult> r = workload::Simulate(trace, cap, **a);
      sim_seconds += Now() - start;
      if (!r.ok()) Die(absl::StrCat(name, " at ", cap, " blocks: ", r.status().ToString()));
      sim_refs += r->block_refs;
      row.at.push_back(*r);
    }
    rows.push_back(std::move(row));
  }
  Row belady{"belady", {}};
  Row belady_prefix{"belady-prefix", {}};
  for (size_t cap : blocks) {
    belady.at.push_back(workload::SimulateBelady(trace, cap));
    belady_prefix.at.push_back(workload::SimulateBeladyPrefix(trace, cap));
  }
  // Yardsticks for admission: LRU behind a filter that knows which blocks will be used again
  // as a prefix (ever, and within the best of a few horizons, chosen per capacity). They
  // bound what any admission filter in front of LRU could add, however well it predicted.
  Row oracle_ever{"lru-oracle-admit", {}};
  Row oracle_best{"lru-oracle-admit-best", {}};
  const double blocks_per_request =
      static_cast<double>(summary.block_refs) / std::max<size_t>(1, trace.size());
  for (size_t cap : blocks) {
    oracle_ever.at.push_back(
        workload::SimulateLruOracleAdmission(trace, cap, std::numeric_limits<uint64_t>::max()));
    SimResult best_at = oracle_ever.at.back();
    for (double k : {0.5, 1.0, 2.0, 4.0, 8.0}) {
      const uint64_t horizon =
          std::max<uint64_t>(1, static_cast<uint64_t>(k * cap / blocks_per_request));
      SimResult r = workload::SimulateLruOracleAdmission(trace, cap, horizon);
      if (r.prefix_hit_ratio() > best_at.prefix_hit_ratio()) best_at = r;
    }
    oracle_best.at.push_back(best_at);
  }
  const size_t num_policies = rows.size();

  // The adaptive policy against the best plain fixed policy at each capacity, and LRU.
  auto find_row = [&](absl::string_view name) -> const Row* {
    for (size_t p = 0; p < num_policies; ++p) {
      if (rows[p].name == name) return &rows[p];
    }
    return nullptr;
  };
  const Row* adaptive = find_row("adaptive");
  std::vector<double> adaptive_gap, adaptive_vs_lru;
  std::vector<std::string> best_fixed;
  size_t worst_at = 0, worst_lru_at = 0;
  if (adaptive != nullptr) {
    for (size_t c = 0; c < blocks.size(); ++c) {
      const Row* best_row = nullptr;
      for (size_t p = 0; p < num_policies; ++p) {
        const Row& r = rows[p];
        if (&r == adaptive || absl::EndsWith(r.name, "+prefix")) continue;
        if (best_row == nullptr ||
            r.at[c].prefix_hit_ratio() > best_row->at[c].prefix_hit_ratio()) {
          best_row = &r;
        }
      }
      const double a = adaptive->at[c].prefix_hit_ratio();
      adaptive_gap.push_back(best_row != nullptr ? a - best_row->at[c].prefix_hit_ratio() : 0);
      best_fixed.push_back(best_row != nullptr ? best_row->name : "none");
      adaptive_vs_lru.push_back(a - find_row("lru")->at[c].prefix_hit_ratio());
      if (adaptive_gap[c] < adaptive_gap[worst_at]) worst_at = c;
      if (adaptive_vs_lru[c] < adaptive_vs_lru[worst_lru_at]) worst_lru_at = c;
    }
    std::printf(
        "\nadaptive minus the best fixed policy (prefix hits; target >= -0.005), and "
        "minus lru (target >= 0):\n%-22s",
        "capacity");
    for (size_t c = 0; c < blocks.size(); ++c) std::printf(" %12s", specs[c].label.c_str());
    std::printf("\n%-22s", "best fixed");
    for (size_t c = 0; c < blocks.size(); ++c) std::printf(" %12s", best_fixed[c].c_str());
    std::printf("\n%-22s", "adaptive - best");
    for (double g : adaptive_gap) std::printf(" %+12.4f", g);
    std::printf("\n%-22s", "adaptive - lru");
    for (double g : adaptive_vs_lru) std::printf(" %+12.4f", g);
    std::printf("\nworst gap %+.4f at %s (vs %s); worst vs lru %+.4f at %s\n",
                adaptive_gap[worst_at], specs[worst_at].label.c_str(), best_fixed[worst_at].c_str(),
                adaptive_vs_lru[worst_lru_at], specs[worst_lru_at].label.c_str());
  }
  rows.push_back(belady);
  rows.push_back(belady_prefix);
  rows.push_back(oracle_ever);
  rows.push_back(oracle_best);

  PrintTable("prefix-hit ratio (share of prompt blocks served from cache before the first miss)",
             rows, specs, blocks, &SimResult::prefix_hit_ratio);
  PrintTable("block hit ratio (any cached block, prefix or not)", rows, specs, blocks,
             &SimResult::block_hit_ratio);
  std::printf("\nceiling of an unbounded cache: prefix %.4f, block %.4f; %d capacities x %zu "
              "policies simulated at %.1f M block refs/s\n",
              summary.prefix_reuse_ratio, summary.reuse_ratio, static_cast<int>(blocks.size()),
              num_policies, sim_refs / sim_seconds / 1e6);

  // CSV, long format: one line per (policy, capacity).
  std::filesystem::create_directories(out_dir);
  const std::filesystem::path csv = std::filesystem::path(out_dir) / "eviction.csv";
  {
    std::ofstream out(csv);
    out << "workload,policy,capacity_index,capacity_label,capacity_blocks,capacity_fraction,"
           "block_hit_ratio,prefix_hit_ratio,prefix_miss_ratio,insertions,evictions,bypassed\n";
    for (const Row& r : rows) {
      for (size_t c = 0; c < blocks.size(); ++c) {
        const SimResult& s = r.at[c];
        out << absl::StrFormat("%s,%s,%d,%s,%d,%.6g,%.6f,%.6f,%.6f,%d,%d,%d\n", workload_name,
                               r.name, c, specs[c].label, blocks[c],
                               static_cast<double>(blocks[c]) / summary.unique_blocks,
                               s.block_hit_ratio(), s.prefix_hit_ratio(),
                               1 - s.prefix_hit_ratio(), s.insertions, s.evictions, s.bypassed);
      }
    }
    if (!out) Die("writing " + csv.string());
  }
  std::printf("csv: %s\n", csv.string().c_str());
  bool plotted = false;
  const std::string plot = Plot(
      out_dir,
      workload_name == "mooncake"
          ? absl::StrCat("mooncake (", std::filesystem::path(trace_path).filename().string(), ")")
          : workload_name,
      rows, num_policies, blocks, static_cast<double>(summary.unique_blocks),
      1 - summary.prefix_reuse_ratio, adaptive_gap, &plotted);
  std::printf("plot: %s\n", plot.c_str());

  // What a block's past says about its next use (workload/reuse.h): per class a cache can
  // know online, the chance of a reuse within one cache lifetime (the middle capacity over
  // the blocks a request brings) after idle times of 0 to 4 lifetimes. Flat rows mean idle
  // time carries no signal; the spread between rows bounds what ranking by class can gain.
  const uint64_t lifetime = std::max<uint64_t>(
      1, static_cast<uint64_t>(static_cast<double>(blocks[mid]) / blocks_per_request));
  std::vector<uint64_t> idle_points = {0};
  for (uint64_t k : {1, 2, 4, 8}) idle_points.push_back(k * lifetime / 2);
  absl::StatusOr<workload::ReuseTable> reuse =
      workload::MeasureReuse(trace, lifetime, idle_points);
  if (!reuse.ok()) Die(reuse.status().ToString());
  std::printf("\nreuse within one cache lifetime (%llu requests at %s) after idle times of "
              "0..4 lifetimes, by what is known of a block when it is referenced\n%-28s %10s",
              static_cast<unsigned long long>(lifetime), specs[mid].label.c_str(), "class",
              "refs");
  for (uint64_t a : idle_points) {
    std::printf("  %9s", absl::StrCat("idle ", a).c_str());
  }
  std::printf("\n");
  for (const workload::ReuseRow& r : reuse->rows) {
    std::printf("%-28s %10llu", r.name.c_str(), static_cast<unsigned long long>(r.references));
    for (double p : r.reuse_within_horizon) std::printf("  %9.3f", p);
    std::printf("\n");
  }

  // Headline: the default policy at the middle capacity against the prefix-aware MIN.
  auto row_named = [&](const char* name) -> const Row& {
    return *std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.name == name; });
  };
  const double figure = row_named(kDefaultPolicy).at[mid].prefix_hit_ratio();
  const double lru_mid = row_named("lru").at[mid].prefix_hit_ratio();
  const double ceiling = belady_prefix.at[mid].prefix_hit_ratio();
  size_t best = 0;
  for (size_t p = 1; p < num_policies; ++p) {
    if (rows[p].at[mid].prefix_hit_ratio() > rows[best].at[mid].prefix_hit_ratio()) best = p;
  }
  JsonLine fields;
  fields.Str("workload", workload_name).Str("trace", trace_label)
      .Str("default_policy", kDefaultPolicy).Str("best_policy_middle", rows[best].name)
      .Num("best_prefix_hit_middle", rows[best].at[mid].prefix_hit_ratio())
      .Num("middle_capacity_index", static_cast<double>(mid))
      .Num("unique_blocks", static_cast<double>(summary.unique_blocks))
      .Num("block_refs", static_cast<double>(summary.block_refs))
      .Num("unbounded_prefix_hit", summary.prefix_reuse_ratio);
  for (size_t c = 0; c < blocks.size(); ++c) {
    fields.Num(absl::StrCat("capacity_blocks_", c), static_cast<double>(blocks[c]));
  }
  for (const Row& r : rows) {
    std::string key = r.name;
    std::replace(key.begin(), key.end(), '-', '_');
    for (size_t c = 0; c < blocks.size(); ++c) {
      fields.Num(absl::StrCat("prefix_hit_", key, "_", c), r.at[c].prefix_hit_ratio());
    }
  }
  const double span = ceiling - lru_mid;
  for (size_t p = 0; p < num_policies; ++p) {
    // Share of the distance from LRU to the optimum that the policy covers (negative: worse
    // than LRU). 0 when LRU already reaches the optimum.
    const double gap = span > 0 ? (rows[p].at[mid].prefix_hit_ratio() - lru_mid) / span : 0;
    fields.Num(absl::StrCat("gap_closed_", rows[p].name), gap);
  }
  fields.Num("gap_closed_lru_oracle_admit_best",
             span > 0 ? (oracle_best.at[mid].prefix_hit_ratio() - lru_mid) / span : 0);
  for (size_t c = 0; c < blocks.size(); ++c) {
    fields.Num(absl::StrCat("block_hit_belady_", c), belady.at[c].block_hit_ratio());
  }
  fields.Num("reuse_horizon_requests", static_cast<double>(lifetime));
  for (const workload::ReuseRow& r : reuse->rows) {
    std::string key;
    for (char ch : r.name) {
      if (ch == ' ') key += '_';
      else if (ch == '+') key += "_or_more";
      else if (ch != ',') key += ch;
    }
    for (size_t i = 0; i < r.reuse_within_horizon.size(); ++i) {
      fields.Num(absl::StrCat("reuse_", key, "_idle_", idle_points[i]),
                 r.reuse_within_horizon[i]);
    }
  }
  if (adaptive != nullptr) {
    for (size_t c = 0; c < blocks.size(); ++c) {
      fields.Num(absl::StrCat("adaptive_gap_", c), adaptive_gap[c])
          .Num(absl::StrCat("adaptive_vs_lru_", c), adaptive_vs_lru[c]);
    }
    const bool met = *std::min_element(adaptive_gap.begin(), adaptive_gap.end()) >= -0.005 &&
                     *std::min_element(adaptive_vs_lru.begin(), adaptive_vs_lru.end()) >= 0;
    fields.Num("adaptive_worst_gap", adaptive_gap[worst_at])
        .Str("adaptive_worst_gap_capacity", specs[worst_at].label)
        .Str("adaptive_worst_gap_best_policy", best_fixed[worst_at])
        .Num("adaptive_worst_vs_lru", adaptive_vs_lru[worst_lru_at])
        .Str("adaptive_worst_vs_lru_capacity", specs[worst_lru_at].label)
        .Num("adaptive_target_met", met ? 1 : 0);
  }
  const Timeline timeline =
      WriteTimeline(trace, blocks[mid], policies, workload_name, seed, timeline_window, out_dir);
  for (const auto& [key, value] : timeline.phase_fields) fields.Num(key, value);
  fields.Str("timeline_csv", timeline.csv).Str("timeline_plot", timeline.plot);
  fields.Num("sim_mrefs_per_s", sim_refs / sim_seconds / 1e6)
      .Str("csv", csv.string()).Str("plot", plot).Num("plot_written", plotted ? 1 : 0);
  JsonLine()
      .Str("bench", "eviction").Num("figure", figure)
      .Str("unit", absl::StrCat("prefix hit ratio (", kDefaultPolicy, ", capacity ",
                                specs[mid].label, " = ", blocks[mid], " blocks)"))
      .Num("ceiling", ceiling)
      .Str("ceiling_source", "prefix-aware Belady MIN (offline, may bypass) at the same capacity")
      .Num("ratio", ceiling > 0 ? figure / ceiling : 0).Merge(fields).Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
