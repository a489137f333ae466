// tools/kvtier.cc — the `kvtier` command-line tool: inspect, verify and erase cache
// directories; read a live engine's metrics endpoint (stats, top). Usage and exit codes: tools/README.md; `kvtier SUBCOMMAND --help`.

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "tools/cli/disk_commands.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/http_commands.h"

namespace kvtier::cli {
namespace {

int Fail(const char* command, const absl::Status& s) {
  std::fprintf(stderr, "kvtier %s: error: %s\n", command, std::string(s.message()).c_str());
  return ExitCodeFor(s);
}

int Main(int argc, char** argv) {
  CLI::App app{
      "kvtier: inspect, verify and manage kvtier KV-cache directories, and watch a live "
      "engine.\n"
      "Exit codes: 0 ok, 1 problems found (verify), 2 usage error, 3 cannot open (missing, "
      "not a kvtier cache, in use by another process, unreachable), 4 failed mid-way.",
      "kvtier"};
  app.require_subcommand(1);

  std::string dir;
  bool json = false;

  CLI::App* inspect = app.add_subcommand(
      "inspect", "What a cache directory holds: format, geometry, blocks and bytes per "
                 "namespace, compression, space, ages. Read-only: safe next to a live engine.");
  inspect->add_option("DIR", dir, "cache directory (DiskOptions::directory)")->required();
  inspect->add_flag("--json", json, "print the report as JSON");

  bool repair = false;
  CLI::App* verify = app.add_subcommand(
      "verify", "Read every record the index points at and check it (header, identity, "
                "payload checksum). Exit 1 if anything is wrong.");
  verify->add_option("DIR", dir, "cache directory")->required();
  verify->add_flag("--repair", repair,
                   "delete the index entries of bad records (needs the directory: fails with "
                   "exit 3 while an engine holds it)");
  verify->add_flag("--json", json, "print the report as JSON");

  std::string ns;
  CLI::App* erase = app.add_subcommand(
      "erase", "Remove every block of one namespace from a cache directory (not while an "
               "engine holds it).");
  erase->add_option("DIR", dir, "cache directory")->required();
  erase->add_option("--namespace,-n", ns, "namespace to remove")->required();
  erase->add_flag("--json", json, "print the report as JSON");

  std::string url;
  CLI::App* stats = app.add_subcommand(
      "stats", "One snapshot of a live engine's metrics (EngineOptions::metrics_port).");
  stats->add_option("URL", url, "metrics endpoint, http://127.0.0.1:PORT")->required();
  stats->add_flag("--json", json, "print the endpoint's /stats JSON");

  double interval = 1.0;
  bool once = false;
  CLI::App* top = app.add_subcommand(
      "top", "A refreshing view of a live engine: tiers, hit ratios, bandwidth (from deltas).");
  top->add_option("URL", url, "metrics endpoint, http://127.0.0.1:PORT")->required();
  top->add_option("--interval,-i", interval, "seconds between refreshes")
      ->check(CLI::PositiveNumber);
  top->add_flag("--once", once, "print one frame (rates over one interval) and exit");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a "successful" ParseError (code 0); everything else is a usage error.
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  if (inspect->parsed()) {
    absl::StatusOr<Json> r = InspectCache(dir);
    if (!r.ok()) return Fail("inspect", r.status());
    std::cout << (json ? r->Dump() + "\n" : FormatInspect(*r));
    return kExitOk;
  }
  if (verify->parsed()) {
    absl::StatusOr<VerifyResult> r = VerifyCache(dir, repair);
    if (!r.ok()) return Fail("verify", r.status());
    std::cout << (json ? r->report.Dump() + "\n" : FormatVerify(r->report));
    return r->problems > 0 ? kExitProblems : kExitOk;
  }
  if (erase->parsed()) {
    absl::StatusOr<Json> r = EraseNamespaceFromCache(dir, ns);
    if (!r.ok()) return Fail("erase", r.status());
    std::cout << (json ? r->Dump() + "\n" : FormatErase(*r));
    return kExitOk;
  }
  if (stats->parsed()) {
    absl::StatusOr<Json> r = FetchStats(url);
    if (!r.ok()) return Fail("stats", r.status());
    std::cout << (json ? r->Dump() + "\n" : FormatStats(*r));
    return kExitOk;
  }
  if (top->parsed()) {
    absl::StatusOr<Json> prev = FetchStats(url);
    if (!prev.ok()) return Fail("top", prev.status());
    auto last = std::chrono::steady_clock::now();
    while (true) {
      std::this_thread::sleep_for(std::chrono::duration<double>(interval));
      absl::StatusOr<Json> cur = FetchStats(url);
      if (!cur.ok()) return Fail("top", cur.status());
      const auto now = std::chrono::steady_clock::now();
      const std::string frame =
          FormatTopFrame(*prev, *cur, std::chrono::duration<double>(now - last).count(), url);
      // Home the cursor and clear the screen between frames (not for --once: it may be piped).
      std::cout << (once ? "" : "\x1b[H\x1b[2J") << frame << std::flush;
      if (once) return kExitOk;
      prev = std::move(cur);
      last = now;
    }
  }
  return kExitUsage;
}

}  // namespace
}  // namespace kvtier::cli

int main(int argc, char** argv) { return kvtier::cli::Main(argc, argv); }
