// bench/bench_util.h — what every kvtier benchmark shares: timing, the in-run memcpy ceiling,
// and the contract's last line (one JSON object; see DESIGN.md, "The benchmark contract").

#ifndef KVTIER_BENCH_BENCH_UTIL_H_
#define KVTIER_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kvtier::bench {

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
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

// Builds the contract's JSON line. Values are numbers or strings.
class JsonLine {
 public:
  JsonLine& Num(const std::string& k, double v) {
    fields_.push_back(absl::StrFormat("\"%s\": %.6g", k, v));
    return *this;
  }
  JsonLine& Str(const std::string& k, const std::string& v) {
    fields_.push_back(absl::StrFormat("\"%s\": \"%s\"", k, v));
    return *this;
  }
  // A value that is already JSON (an array, say), written as given.
  JsonLine& Raw(const std::string& k, const std::string& json) {
    fields_.push_back(absl::StrFormat("\"%s\": %s", k, json));
    return *this;
  }
  // Appends another line's fields after this one's.
  JsonLine& Merge(const JsonLine& other) {
    fields_.insert(fields_.end(), other.fields_.begin(), other.fields_.end());
    return *this;
  }
  // Prints the line; it must be the program's last output.
  void Print() const { std::printf("{%s}\n", absl::StrJoin(fields_, ", ").c_str()); }

 private:
  std::vector<std::string> fields_;
};

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "benchmark failed: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_BENCH_UTIL_H_
