// bench demo — the long-context demo's figures in the benchmark contract's JSON.
//
//   bench/run demo [demo flags...]
//
// Runs examples/kvtier_long_context_demo --json --prefetch=both (prefetch on, then off, in
// the same run, same engine) plus any flags given, and prints its figures: figure = decode
// tokens/s with prefetch; ceiling = the decode rate the host→device link alone would allow
// (link GB/s over the KV bytes one decode step streams; the emulated throttle, or
// --link-gbps=G measured by bench/run gpu-copy on a GPU), ratio = figure / ceiling. Fields:
// stall fractions with and without prefetch, TTFT with reuse and with recompute, bytes per
// tier, the reference check. Fails (exit 1) when the demo's correctness checks fail.
//
// The disk in the decode path: the bytes the engine read from its disk tier during each
// decode run ÷ the time the block device had reads in flight meanwhile (the demo's
// --sample-disk: /sys/dev/block/MAJ:MIN/inflight every 200 us; busy fraction x wall time),
// against fio's random reads at the demo's record size (its block + the 4 KiB record header,
// a page multiple) with io_uring, O_DIRECT, fixed buffers, registered files, at the disk
// tier's queue depth, in the demo's own directory right after the demo (--fio-seconds each,
// twice; the mean). disk_ratio_<mode> = the first ÷ fio. Busy time, not wall time: a decode
// step computes as well as reads, so over wall time the figure says how much of the step the
// demo spends reading; over busy time, whether its reads get from the disk what fio gets.
// Both are in the JSON (disk_read_gbps_wall_<mode>), with the mean reads in flight while
// busy and fio once more at that depth (disk_fio_randread_gbps_at_demo_depth).

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "common/json.h"
#include "tiers/disk_record.h"

namespace kvtier::bench {
namespace {

// The demo's JSON object, and its fields by name.
class DemoFigures {
 public:
  explicit DemoFigures(nlohmann::ordered_json figures) : figures_(std::move(figures)) {}

  double Num(const std::string& key) const {
    const auto it = figures_.find(key);
    if (it == figures_.end() || !it->is_number()) Die("demo output lacks numeric field " + key);
    return it->get<double>();
  }
  bool Has(const std::string& key) const {
    const auto it = figures_.find(key);
    return it != figures_.end() && it->is_number();
  }
  std::string Str(const std::string& key) const {
    const auto it = figures_.find(key);
    return it != figures_.end() && it->is_string() ? it->get<std::string>() : "";
  }

 private:
  nlohmann::ordered_json figures_;
};

int Main(int argc, char** argv) {
  double link_gbps = 0;
  double fio_seconds = 3;
  size_t fio_mib = 512;
  CLI::App app(
      "bench demo: the long-context demo, prefetch on and off: decode tokens/s, stall, TTFT "
      "reuse vs recompute. Flags it does not know go to the demo "
      "(kvtier_long_context_demo --help lists them).",
      "bench/run demo");
  app.add_option("--link-gbps", link_gbps,
                 "host->device link bandwidth for the ceiling (measure it with bench/run "
                 "gpu-copy); default: the demo's emulated throttle")
      ->check(CLI::PositiveNumber.description("> 0"));
  app.add_option("--fio-seconds", fio_seconds,
                 "seconds of each of fio's two random-read runs (the disk's ceiling)")
      ->check(CLI::Range(1.0, 600.0));
  app.add_option("--fio-mib", fio_mib, "size of fio's file, MiB, in the demo's directory")
      ->check(CLI::Range(size_t{16}, size_t{1} << 20));
  app.allow_extras();
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  std::string flags;
  std::string dir;  // the demo's directory (fio's file goes there too)
  for (const std::string& extra : app.remaining()) {
    absl::StrAppend(&flags, " '", extra, "'");
    if (extra.rfind("--dir=", 0) == 0) dir = extra.substr(6);
  }
  for (size_t i = 0; i + 1 < app.remaining().size(); ++i) {
    if (app.remaining()[i] == "--dir") dir = app.remaining()[i + 1];
  }
  const bool temp_dir = dir.empty();
  if (temp_dir) {
    char tmpl[] = "/tmp/kvtier-bench-demo-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Die("mkdtemp failed");
    dir = tmpl;
    absl::StrAppend(&flags, " '--dir=", dir, "'");
  }
  struct Cleanup {
    std::string dir;
    bool remove;
    ~Cleanup() {
      std::error_code ec;
      if (remove) std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir, temp_dir};
  const std::filesystem::path self = std::filesystem::canonical("/proc/self/exe");
  const std::filesystem::path demo =
      self.parent_path().parent_path() / "examples" / "kvtier_long_context_demo";
  if (!std::filesystem::exists(demo)) {
    Die("the demo is not built (" + demo.string() + "); build with KVTIER_BUILD_EXAMPLES=ON");
  }
  const std::string command = absl::StrCat(
      "'", demo.string(), "' --json --prefetch=both --sample-disk", flags, " 2>/dev/null");
  std::fprintf(stderr, "running: %s\n", command.c_str());
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) Die("cannot run the demo");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {  // the demo's exit code for a bad flag
    std::fprintf(stderr,
                 "bench demo: the demo rejected its flags:%s (kvtier_long_context_demo --help "
                 "lists them)\n",
                 flags.c_str());
    return 2;
  }
  // The demo's last line is its JSON object.
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const size_t last_line = out.rfind('\n');
  absl::StatusOr<nlohmann::ordered_json> parsed =
      json::Parse(last_line == std::string::npos ? out : out.substr(last_line + 1));
  if (!parsed.ok() || !parsed->is_object()) {
    Die(absl::StrCat("the demo printed no JSON object last (exit status ", status, ")",
                     parsed.ok() ? "" : absl::StrCat(": ", parsed.status().message())));
  }
  const DemoFigures figures(*std::move(parsed));

  // fio's random reads at the demo's record size, in its directory, after it.
  const size_t block = static_cast<size_t>(figures.Num("block_bytes"));
  const size_t record = kRecordHeaderBytes + (block + 4095) / 4096 * 4096;
  const int qd = static_cast<int>(figures.Num("disk_queue_depth"));
  const std::string fio_file = dir + "/fio.dat";
  std::vector<double> fio_runs;
  for (int i = 0; i < 2; ++i) {
    fio_runs.push_back(FioGbps(FioJob{fio_file, fio_mib, record, "randread", qd, fio_seconds}));
  }
  // And once at the depth the demo kept in flight with prefetch (what the disk gives at that
  // depth: a low ratio to the first ceiling with a high one to this says too few reads).
  const double demo_depth = figures.Has("disk_reads_in_flight_prefetch")
                                ? figures.Num("disk_reads_in_flight_prefetch")
                                : -1;
  const int shallow_qd = std::max(1, static_cast<int>(std::lround(demo_depth)));
  const double fio_shallow_gbps =
      demo_depth > 0
          ? FioGbps(FioJob{fio_file, fio_mib, record, "randread", shallow_qd, fio_seconds})
          : -1;
  std::error_code ec;
  std::filesystem::remove(fio_file, ec);
  const double fio_gbps = fio_runs[0] > 0 && fio_runs[1] > 0 ? (fio_runs[0] + fio_runs[1]) / 2 : -1;

  const double tps = figures.Num("decode_tokens_per_s_prefetch");
  const double kv_bytes = figures.Num("kv_mib") * 1048576.0;
  const double link = link_gbps > 0 ? link_gbps : figures.Num("copy_gbps");
  const std::string device = figures.Str("device");
  const double ceiling = link > 0 ? link * 1e9 / kv_bytes : 0;

  std::printf("decode with prefetch    %.2f tokens/s, stall %.1f%%\n", tps,
              100 * figures.Num("stall_fraction_prefetch"));
  std::printf("decode without prefetch %.2f tokens/s, stall %.1f%%\n",
              figures.Num("decode_tokens_per_s_no_prefetch"),
              100 * figures.Num("stall_fraction_no_prefetch"));
  std::printf("TTFT turn 2             %.3f s reusing vs %.3f s recomputing (%.1fx)\n",
              figures.Num("ttft_reuse_s"), figures.Num("ttft_recompute_s"),
              figures.Num("ttft_recompute_s") / figures.Num("ttft_reuse_s"));
  std::printf("\ndisk during decode (fio randread %zu KiB, qd %d: %s)\n", record >> 10, qd,
              fio_gbps > 0 ? absl::StrFormat("%.3f GB/s", fio_gbps).c_str() : "failed");
  if (fio_shallow_gbps > 0) {
    std::printf("fio randread at the depth the demo kept in flight (qd %d): %.3f GB/s\n",
                shallow_qd, fio_shallow_gbps);
  }
  std::printf("%-12s %9s %8s %7s %10s %9s %10s %10s\n", "", "read MiB", "busy s", "busy %",
              "in flight", "GB/s busy", "vs fio", "GB/s wall");
  for (const char* sfx : {"prefetch", "no_prefetch"}) {
    if (!figures.Has(absl::StrCat("decode_seconds_", sfx))) continue;
    const double bytes = figures.Num(absl::StrCat("disk_bytes_out_", sfx));
    const double busy = figures.Num(absl::StrCat("disk_busy_seconds_", sfx));
    const double gbps = figures.Num(absl::StrCat("disk_read_gbps_busy_", sfx));
    const double seconds = figures.Num(absl::StrCat("decode_seconds_", sfx));
    std::printf("%-12s %9.1f %8.2f %6.1f%% %10.1f %9s %10s %10.3f\n", sfx, bytes / 1048576.0, busy,
                busy >= 0 ? 100 * busy / seconds : -1.0,
                figures.Num(absl::StrCat("disk_reads_in_flight_", sfx)),
                gbps > 0 ? absl::StrFormat("%.3f", gbps).c_str() : "-",
                gbps > 0 && fio_gbps > 0 ? absl::StrFormat("%.2f", gbps / fio_gbps).c_str() : "-",
                figures.Num(absl::StrCat("disk_read_gbps_wall_", sfx)));
  }
  std::printf("check                   %s, turn-2 first tokens agree: %s\n",
              figures.Str("check").c_str(), figures.Str("turn2_first_token_match").c_str());

  JsonLine line;
  line.Str("bench", "demo")
      .Num("figure", tps)
      .Str("unit", "tokens/s")
      .Num("ceiling", ceiling)
      .Str("ceiling_source",
           link > 0 ? absl::StrFormat("host->device link %.2f GB/s / %.1f MiB of KV per decode "
                                      "step (%s)",
                                      link, kv_bytes / 1048576.0,
                                      link_gbps > 0 ? "--link-gbps" : "emulated throttle")
                    : "none: unthrottled emulated link; pass --link-gbps")
      .Num("ratio", ceiling > 0 ? tps / ceiling : 0)
      .Str("device", device)
      .Str("matmul", figures.Str("matmul"));
  line.Num("disk_fio_randread_gbps", fio_gbps)
      .Nums("disk_fio_randread_gbps_runs", fio_runs)
      .Num("disk_record_bytes", static_cast<double>(record))
      .Num("disk_queue_depth", qd)
      .Num("disk_fio_randread_gbps_at_demo_depth", fio_shallow_gbps)
      .Num("disk_fio_demo_depth", demo_depth > 0 ? shallow_qd : -1);
  for (const char* sfx : {"prefetch", "no_prefetch"}) {
    if (!figures.Has(absl::StrCat("decode_seconds_", sfx))) continue;
    const double gbps = figures.Num(absl::StrCat("disk_read_gbps_busy_", sfx));
    line.Num(absl::StrCat("disk_read_gbps_busy_", sfx), gbps)
        .Num(absl::StrCat("disk_ratio_", sfx), gbps > 0 && fio_gbps > 0 ? gbps / fio_gbps : -1);
    for (const char* what : {"disk_read_gbps_wall_", "disk_busy_seconds_", "decode_seconds_",
                             "disk_reads_in_flight_", "disk_samples_", "disk_device_read_bytes_",
                             "disk_engine_read_gbps_", "disk_read_latency_ms_"}) {
      line.Num(absl::StrCat(what, sfx), figures.Num(absl::StrCat(what, sfx)));
    }
  }
  for (const char* key : {"stall_fraction_prefetch",
                          "stall_fraction_no_prefetch",
                          "decode_tokens_per_s_no_prefetch",
                          "ttft_reuse_s",
                          "ttft_recompute_s",
                          "reused_tokens",
                          "context_tokens",
                          "kv_mib",
                          "gpu_tier_mib",
                          "host_tier_mib",
                          "kv_over_gpu",
                          "prefill_tokens_per_s",
                          "gpu_bytes_in_prefetch",
                          "host_bytes_out_prefetch",
                          "disk_bytes_out_prefetch",
                          "gpu_bytes_in_no_prefetch",
                          "host_bytes_out_no_prefetch",
                          "disk_bytes_out_no_prefetch",
                          "prefetch_in_time",
                          "prefetch_late",
                          "prefetch_unused",
                          "max_logit_diff",
                          "token_mismatches"}) {
    line.Num(key, figures.Num(key));
  }
  line.Str("check", figures.Str("check"))
      .Str("turn2_first_token_match", figures.Str("turn2_first_token_match"));
  line.Print();
  return status == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
