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

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "bench/bench_util.h"

namespace kvtier::bench {
namespace {

// The value of "key": in a flat JSON object, as text ("" when absent).
std::string Field(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\": ";
  const size_t at = json.find(needle);
  if (at == std::string::npos) return "";
  size_t begin = at + needle.size();
  size_t end;
  if (json[begin] == '"') {
    ++begin;
    end = json.find('"', begin);
  } else {
    end = json.find_first_of(",}", begin);
  }
  return end == std::string::npos ? "" : json.substr(begin, end - begin);
}

double Num(const std::string& json, const std::string& key) {
  double v = 0;
  if (!absl::SimpleAtod(Field(json, key), &v)) Die("demo output lacks numeric field " + key);
  return v;
}

int Main(int argc, char** argv) {
  double link_gbps = 0;
  std::string flags;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a(argv[i]);
    if (absl::ConsumePrefix(&a, "--link-gbps=")) {
      if (!absl::SimpleAtod(a, &link_gbps) || link_gbps <= 0) Die("bad --link-gbps");
      continue;
    }
    absl::StrAppend(&flags, " '", argv[i], "'");
  }
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
  const size_t brace = out.rfind('{');
  if (brace == std::string::npos) Die("the demo printed no JSON (exit status " + std::to_string(status) + ")");
  const std::string json = out.substr(brace);

  const double tps = Num(json, "decode_tokens_per_s_prefetch");
  const double kv_bytes = Num(json, "kv_mib") * 1048576.0;
  const double link = link_gbps > 0 ? link_gbps : Num(json, "copy_gbps");
  const std::string device = Field(json, "device");
  const double ceiling = link > 0 ? link * 1e9 / kv_bytes : 0;

  std::printf("decode with prefetch    %.2f tokens/s, stall %.1f%%\n", tps,
              100 * Num(json, "stall_fraction_prefetch"));
  std::printf("decode without prefetch %.2f tokens/s, stall %.1f%%\n",
              Num(json, "decode_tokens_per_s_no_prefetch"),
              100 * Num(json, "stall_fraction_no_prefetch"));
  std::printf("TTFT turn 2             %.3f s reusing vs %.3f s recomputing (%.1fx)\n",
              Num(json, "ttft_reuse_s"), Num(json, "ttft_recompute_s"),
              Num(json, "ttft_recompute_s") / Num(json, "ttft_reuse_s"));
  std::printf("check                   %s, turn-2 first tokens agree: %s\n",
              Field(json, "check").c_str(), Field(json, "turn2_first_token_match").c_str());

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
      .Str("device", device);
  for (const char* key :
       {"stall_fraction_prefetch", "stall_fraction_no_prefetch", "decode_tokens_per_s_no_prefetch",
        "ttft_reuse_s", "ttft_recompute_s", "reused_tokens", "context_tokens", "kv_mib",
        "gpu_tier_mib", "host_tier_mib", "kv_over_gpu", "prefill_tokens_per_s",
        "gpu_bytes_in_prefetch", "host_bytes_out_prefetch", "disk_bytes_out_prefetch",
        "gpu_bytes_in_no_prefetch", "host_bytes_out_no_prefetch", "disk_bytes_out_no_prefetch",
        "prefetch_in_time", "prefetch_late", "prefetch_unused", "max_logit_diff",
        "token_mismatches"}) {
    line.Num(key, Num(json, key));
  }
  line.Str("check", Field(json, "check"))
      .Str("turn2_first_token_match", Field(json, "turn2_first_token_match"));
  line.Print();
  return status == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
