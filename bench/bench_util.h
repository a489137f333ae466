// bench/bench_util.h — what every kvtier benchmark shares: timing, the in-run memcpy ceiling,
// and the contract's last line (one JSON object, built with nlohmann-json; see DESIGN.md,
// "The benchmark contract"). Flags: common/flags.h.

#ifndef KVTIER_BENCH_BENCH_UTIL_H_
#define KVTIER_BENCH_BENCH_UTIL_H_

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/flags.h"
#include "common/json.h"
#include "kvtier/geometry.h"

namespace kvtier::bench {

// The model shapes beyond fp16 K/V (docs/integration.md, "Model shapes"), each paired with the
// fp16 K/V geometry of exactly the same block bytes that the storage benches have always
// measured: `--shapes` runs both, so the storage path's indifference to the shape is a ratio
// of ratios measured in one run.
struct ShapePair {
  const char* name;
  Geometry shape;
  Geometry baseline;  // fp16, kind kv, unsharded; baseline.block_bytes() == shape.block_bytes()
};

inline std::vector<ShapePair> ModelShapePairs() {
  auto mla = [](DType dtype) {  // DeepSeek-V3 / R1: 61 layers, 512 + 64 latent, FlashMLA's 64
    Geometry g{61, 1, 576, dtype, 64};
    g.kind = KvKind::kLatent;
    g.rope_dim = 64;
    return g;
  };
  Geometry tp_rank{80, 8, 128, DType::kBFloat16, 16};  // Llama-3-70B at TP = 8, rank 3
  tp_rank = tp_rank.ForTensorParallelRank(3, 8).value();
  return {
      // K = V of the same width would take two parts: half the tokens for the same bytes.
      {"deepseek-v3-mla-bf16", mla(DType::kBFloat16), Geometry{61, 1, 576, DType::kFloat16, 32}},
      {"deepseek-v3-mla-fp8", mla(DType::kFp8E4m3), Geometry{61, 1, 576, DType::kFloat16, 16}},
      {"llama-3-8b-fp8", Geometry{32, 8, 128, DType::kFp8E4m3, 16},
       Geometry{16, 8, 128, DType::kFloat16, 16}},
      {"llama-3-70b-tp8-rank3", tp_rank, Geometry{80, 1, 128, DType::kFloat16, 16}},
  };
}

// What --shapes runs: first a control, fp16 K/V against itself (its "vs fp16" is the bench's
// own noise on the machine; 1.000 on a quiet one), then ModelShapePairs.
inline std::vector<ShapePair> ShapePairsWithControl() {
  const Geometry fp16{16, 8, 128, DType::kFloat16, 32};  // 2 MiB
  std::vector<ShapePair> pairs = {{"control-fp16-itself", fp16, fp16}};
  for (const ShapePair& p : ModelShapePairs()) pairs.push_back(p);
  return pairs;
}

// Each pair's "vs fp16" (shape ratio to the ceiling / fp16 ratio), in ShapePairsWithControl's
// order: the control's, and the worst shape's, which is --shapes' figure.
struct ShapeRelatives {
  double control = 0;
  double worst = 0;
  void Add(size_t pair_index, double relative) {
    if (pair_index == 0) {
      control = relative;
    } else {
      worst = worst == 0 ? relative : std::min(worst, relative);
    }
  }
};

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CPU time this process has used so far (every thread, user and kernel), in seconds.
inline double ProcessCpuSeconds() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// Median of `runs` timings of fn(), in seconds.
template <typename F>
double MedianSeconds(int runs, F&& fn) {
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const double s = Now();
    fn();
    t.push_back(Now() - s);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// --layers, --kv-heads, --head-dim and --block-tokens: the shape of `g` (its values are the
// defaults shown in --help).
inline void AddGeometryShape(CLI::App& app, Geometry* g) {
  app.add_option("--layers", g->num_layers, "geometry: layers")->capture_default_str();
  app.add_option("--kv-heads", g->num_kv_heads, "geometry: KV heads")->capture_default_str();
  app.add_option("--head-dim", g->head_dim, "geometry: head dimension")->capture_default_str();
  app.add_option("--block-tokens", g->block_tokens, "geometry: tokens per block")
      ->capture_default_str();
}

// Single-thread memcpy bandwidth over `bytes` (GB/s, 1e9 bytes/s): the host-copy ceiling.
inline double MemcpyGbps(size_t bytes, int runs = 5) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  std::memcpy(b.data(), a.data(), bytes);  // fault both in before timing
  const double s = MedianSeconds(runs, [&] {
    std::memcpy(b.data(), a.data(), bytes);
    asm volatile("" : : "r"(b.data()) : "memory");
  });
  return bytes / s / 1e9;
}

// Builds the contract's JSON line: one object whose fields keep the order they were added in
// (the contract's "bench", "figure", "unit", "ceiling", "ceiling_source", "ratio" first).
// Strings are escaped; numbers keep six significant digits (a whole number prints as one) and
// a number that is not finite prints as null.
class JsonLine {
 public:
  JsonLine& Num(const std::string& key, double v) {
    fields_[key] = json::RoundedNumber(v);
    return *this;
  }
  JsonLine& Str(const std::string& key, const std::string& v) {
    fields_[key] = v;
    return *this;
  }
  // An array of numbers, each rounded as Num rounds it.
  JsonLine& Nums(const std::string& key, const std::vector<double>& v) {
    nlohmann::ordered_json items = nlohmann::ordered_json::array();
    for (double x : v) items.push_back(json::RoundedNumber(x));
    fields_[key] = std::move(items);
    return *this;
  }
  // Adds another line's fields after this one's (a field of the same name takes its value).
  JsonLine& Merge(const JsonLine& other) {
    for (const auto& [key, value] : other.fields_.items()) fields_[key] = value;
    return *this;
  }
  const nlohmann::ordered_json& fields() const { return fields_; }
  // Prints the line; it must be the program's last output.
  void Print() const { std::printf("%s\n", json::Dump(fields_).c_str()); }

 private:
  nlohmann::ordered_json fields_ = nlohmann::ordered_json::object();
};

// fio, the disks' same-run ceiling: random reads or writes with io_uring, O_DIRECT, fixed
// buffers and registered files (fio at its best) at `iodepth` in flight, for `seconds`.
struct FioJob {
  std::string file;     // created (size_mib) if absent; the caller removes it
  size_t size_mib = 0;  // > 0
  size_t bs = 0;        // bytes, a multiple of 4096 (O_DIRECT)
  std::string rw;       // "randread", "write", ...
  int iodepth = 32;
  double seconds = 5;  // at least 1
  // fio's buffers in hugetlb pages (--iomem=shmhuge): physically contiguous, so each request
  // is a segment or two, not one per 4 KiB page. Needs iodepth x bs of free hugetlb pages
  // (FreeHugetlbBytes); with 4 KiB pages fio kept 4-13 of its 32 reads in flight at the dev
  // VM's disk and read 1.6-2.4 GB/s, with huge pages 29 and 6.9-7.7 GB/s.
  bool huge_pages = false;
  // One pass over the file (no --time_based; `seconds` is ignored): lays a file out.
  bool one_pass = false;
};

// Free hugetlb memory (/proc/meminfo HugePages_Free x Hugepagesize), 0 if none or unknown.
inline uint64_t FreeHugetlbBytes() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  unsigned long long free_pages = 0, page_kib = 0, v = 0;
  char line[256];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "HugePages_Free: %llu", &v) == 1) free_pages = v;
    if (std::sscanf(line, "Hugepagesize: %llu kB", &v) == 1) page_kib = v;
  }
  std::fclose(f);
  return static_cast<uint64_t>(free_pages * page_kib * 1024);
}

// Runs fio and returns its bandwidth in GB/s (1e9 B/s), or a negative value if fio failed.
inline double FioGbps(const FioJob& j) {
  const std::string cmd = absl::StrFormat(
      "fio --name=kvtier-ceiling --filename=%s --size=%dM --bs=%d --rw=%s --ioengine=io_uring "
      "--direct=1 --fixedbufs --registerfiles --iodepth=%d %s"
      "--group_reporting %s"
      "--output-format=terse --terse-version=3 2>/dev/null",
      j.file, j.size_mib, j.bs, j.rw, j.iodepth,
      j.one_pass ? ""
                 : absl::StrFormat("--runtime=%d --time_based ",
                                   static_cast<int>(std::max(1.0, j.seconds))),
      j.huge_pages ? "--iomem=shmhuge " : "");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  if (pclose(p) != 0) return -1;
  // Terse v3: field 7 is read bandwidth (KiB/s), field 48 is write bandwidth (KiB/s).
  std::vector<std::string> f = absl::StrSplit(out, ';');
  const size_t idx = j.rw.find("read") != std::string::npos ? 6 : 47;
  double kib_s = 0;
  if (f.size() <= idx || !absl::SimpleAtod(f[idx], &kib_s)) return -1;
  return kib_s * 1024 / 1e9;
}

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "benchmark failed: %s\n", what.c_str());
  std::exit(1);
}

// "a/b" or a decimal, in [0, 1].
inline absl::StatusOr<double> ParseFraction(absl::string_view s) {
  std::vector<absl::string_view> parts = absl::StrSplit(s, '/');
  double v = -1;
  if (parts.size() == 2) {
    double num, den;
    if (absl::SimpleAtod(parts[0], &num) && absl::SimpleAtod(parts[1], &den) && den > 0) {
      v = num / den;
    }
  } else if (parts.size() == 1) {
    if (!absl::SimpleAtod(s, &v)) v = -1;
  }
  if (!(v >= 0 && v <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", s, "' is not a fraction in [0, 1] (1/8 or 0.125)"));
  }
  return v;
}

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_BENCH_UTIL_H_
