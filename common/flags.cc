// common/flags.cc — see flags.h.

#include "common/flags.h"

#include <cstdio>
#include <iostream>

namespace kvtier::flags {

std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11's own codes are one per kind of error (106 for a failed check, ...); kvtier's
    // programs have always exited 2 for every bad argument.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return std::nullopt;
}

CLI::Option* AddDevice(CLI::App& app, DeviceChoice* device) {
  return AddParsed(app, "--device", device, ParseDeviceChoice, DeviceChoiceName,
                   "auto|cuda|emulated",
                   "the device: cuda, emulated (host memory, copies on worker threads), or auto "
                   "(CUDA when a GPU is present)");
}

CLI::Option* AddCopyGbps(CLI::App& app, double* gbps, const std::string& help) {
  return app.add_option("--copy-gbps", *gbps, help)->check(AtLeast(0.0))->capture_default_str();
}

CLI::Option* AddRuns(CLI::App& app, int* runs) {
  return app.add_option("--runs", *runs, "timed repetitions (figures are their median)")
      ->check(AtLeast(1))
      ->capture_default_str();
}

CLI::Option* AddSeed(CLI::App& app, uint64_t* seed) {
  return app.add_option("--seed", *seed, "seed of everything random in the run")
      ->capture_default_str();
}

CLI::Option* AddDir(CLI::App& app, std::string* dir, const std::string& help) {
  return app.add_option("--dir", *dir, help)->capture_default_str();
}

CLI::Option* AddTrace(CLI::App& app, std::string* path) {
  return app.add_option("--trace", *path, "a Mooncake JSONL trace")->capture_default_str();
}

CLI::Option* AddBlocks(CLI::App& app, const std::string& name, size_t* blocks, size_t min_blocks,
                       const std::string& help) {
  CLI::Option* option = app.add_option(name, *blocks, help)->capture_default_str();
  return min_blocks > 0 ? option->check(AtLeast(min_blocks)) : option;
}

}  // namespace kvtier::flags
