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

#include <sys/wait.h>

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
  std::string Str(const std::string& key) const {
    const auto it = figures_.find(key);
    return it != figures_.end() && it->is_string() ? it->get<std::string>() : "";
  }

 private:
  nlohmann::ordered_json figures_;
};

int Main(int argc, char** argv) {
  double link_gbps = 0;
  CLI::App app(
      "bench demo: the long-context demo, prefetch on and off: decode tokens/s, stall, TTFT "
      "reuse vs recompute. Flags it does not know go to the demo "
      "(kvtier_long_context_demo --help lists them).",
      "bench/run demo");
  app.add_option("--link-gbps", link_gbps,
                 "host->device link bandwidth for the ceiling (measure it with bench/run "
                 "gpu-copy); default: the demo's emulated throttle")
      ->check(CLI::PositiveNumber.description("> 0"));
  app.allow_extras();
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  std::string flags;
  for (const std::string& extra : app.remaining()) absl::StrAppend(&flags, " '", extra, "'");
  const std::filesystem::path self = std::filesystem::canonical("/proc/self/exe");
  const std::filesystem::path demo =
      self.parent_path().parent_path() / "examples" / "kvtier_long_context_demo";
  if (!std::filesystem::exists(demo)) {
    Die("the demo is not built (" + demo.string() + "); build with KVTIER_BUILD_EXAMPLES=ON");
  }
  const std::string command =
      absl::StrCat("'", demo.string(), "' --json --prefetch=both", flags, " 2>/dev/null");
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
