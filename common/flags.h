// common/flags.h — command-line flags for kvtier's programs (the benchmarks, the long-context
// demo, the fuzz seed maker) on CLI11, and the flags several of them share, defined once.
//
// Every program parses the same way: `--flag=value` and `--flag value` both work, `--help`
// prints the flags with their defaults and exits 0, and a bad argument (an unknown flag, a
// value that does not parse or is out of range) prints CLI11's message naming the flag and
// exits 2:
//
//   CLI::App app("bench host: store/load through the host tier vs memcpy", "bench/run host");
//   int runs = 7;
//   flags::AddRuns(app, &runs);
//   app.add_option("--total-mib", total_mib, "MiB moved per run")->check(CLI::Range(8, 1 << 20));
//   if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
//
// Checks that involve several flags go in app.final_callback, throwing CLI::ValidationError:
// Parse reports them like any other bad argument.

#ifndef KVTIER_COMMON_FLAGS_H_
#define KVTIER_COMMON_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kvtier/device.h"

namespace kvtier::flags {

// Parses argv into `app`'s options. nullopt when the program should go on; otherwise the code
// it should exit with, after printing: 0 for --help (the usage, on stdout), 2 for a bad
// argument (the message, on stderr).
std::optional<int> Parse(CLI::App& app, int argc, char** argv);

// A value check: a number of type T that is at least `min` (help: ">= min").
template <typename T>
CLI::Validator AtLeast(T min) {
  return CLI::Validator(
      [min](std::string& value) -> std::string {
        T v{};
        if (!CLI::detail::lexical_cast(value, v)) return "'" + value + "' is not a number";
        if (v < min) return absl::StrCat("must be at least ", min, ", not ", value);
        return std::string();
      },
      absl::StrCat(">= ", min));
}

// A value check passing exactly what `parse` accepts (ParseDeviceChoice, ParseCodec, ...),
// failing with its message ("unknown device 'tpu' (expected auto, cuda or emulated)").
template <typename T>
CLI::Validator Accepts(absl::StatusOr<T> (*parse)(absl::string_view), std::string description) {
  return CLI::Validator(
      [parse](std::string& value) -> std::string {
        absl::StatusOr<T> parsed = parse(value);
        return parsed.ok() ? std::string() : std::string(parsed.status().message());
      },
      std::move(description));
}

// --NAME=VALUE read into *value by `parse`; the help shows `name_of(*value)` as the default.
template <typename T>
CLI::Option* AddParsed(CLI::App& app, const std::string& name, T* value,
                       absl::StatusOr<T> (*parse)(absl::string_view), const char* (*name_of)(T),
                       const std::string& choices, const std::string& help) {
  return app
      .add_option_function<std::string>(
          name, [value, parse](const std::string& v) { *value = *parse(v); }, help)
      ->check(Accepts(parse, choices))
      ->default_str(name_of(*value));
}

// --device=auto|cuda|emulated (ParseDeviceChoice).
CLI::Option* AddDevice(CLI::App& app, DeviceChoice* device);
// --copy-gbps=G: the emulated device's host<->device bandwidth in GB/s, >= 0; 0 = unthrottled.
CLI::Option* AddCopyGbps(CLI::App& app, double* gbps, const std::string& help);
// --runs=N: timed repetitions, >= 1 (figures are their median).
CLI::Option* AddRuns(CLI::App& app, int* runs);
// --seed=N: the seed of everything random in the run.
CLI::Option* AddSeed(CLI::App& app, uint64_t* seed);
// --dir=PATH: where the program keeps its cache directory (`help` says what is kept there).
CLI::Option* AddDir(CLI::App& app, std::string* dir, const std::string& help);
// --trace=PATH: a Mooncake JSONL trace (workload/trace.h).
CLI::Option* AddTrace(CLI::App& app, std::string* path);
// --NAME=N: a tier's capacity in blocks, at least `min_blocks`.
CLI::Option* AddBlocks(CLI::App& app, const std::string& name, size_t* blocks, size_t min_blocks,
                       const std::string& help);

}  // namespace kvtier::flags

#endif  // KVTIER_COMMON_FLAGS_H_
