// tools/kvtier.cc — the `kvtier` command-line tool: inspect, verify and erase cache
// directories; read a live engine's metrics endpoint (stats, top); inspect the Redis Cluster
// of a remote tier (remote inspect). Usage and exit codes:
// tools/README.md; `kvtier SUBCOMMAND --help`.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "common/json.h"
#include "tools/cli/disk_commands.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/http_commands.h"
#include "tools/cli/remote_commands.h"
#include "tools/cli/trace_commands.h"

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
      "inspect",
      "What a cache directory holds: format, geometry, blocks and bytes per "
      "namespace, compression, space, ages. Read-only: safe next to a live engine.");
  inspect->add_option("DIR", dir, "cache directory (DiskOptions::directory)")->required();
  inspect->add_flag("--json", json, "print the report as JSON");

  bool repair = false;
  CLI::App* verify =
      app.add_subcommand("verify",
                         "Read every record the index points at and check it (header, identity, "
                         "payload checksum). Exit 1 if anything is wrong.");
  verify->add_option("DIR", dir, "cache directory")->required();
  verify->add_flag("--repair", repair,
                   "delete the index entries of bad records (needs the directory: fails with "
                   "exit 3 while an engine holds it)");
  verify->add_flag("--json", json, "print the report as JSON");

  std::string ns;
  CLI::App* erase =
      app.add_subcommand("erase",
                         "Remove every block of one namespace from a cache directory (not while an "
                         "engine holds it).");
  erase->add_option("DIR", dir, "cache directory")->required();
  erase->add_option("--namespace,-n", ns, "namespace to remove")->required();
  erase->add_flag("--json", json, "print the report as JSON");

  bool yes = false;
  CLI::App* reset = app.add_subcommand(
      "reset",
      "Start a cache directory over: remove its data.kvt and index/ (every cached block), "
      "nothing else; for a directory the engine refuses (a data file that does not belong with "
      "its index, a truncated one). Not while an engine holds it.");
  reset->add_option("DIR", dir, "cache directory")->required();
  reset->add_flag("--yes", yes, "really remove them (without it: say what would go)");
  reset->add_flag("--json", json, "print the report as JSON");

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

  std::string seeds, password_file;
  RemoteInspectOptions remote_options;
  double remote_timeout = 5.0;
  CLI::App* remote = app.add_subcommand("remote", "The remote tier's Redis Cluster.");
  remote->require_subcommand(1);
  CLI::App* remote_inspect = remote->add_subcommand(
      "inspect",
      "Read-only report of a cluster: state, slot map, nodes (keys, used memory, maxmemory and "
      "policy, with warnings where docs/operations.md advises otherwise) and kvtier's blocks "
      "per namespace and model (SCAN).");
  remote_inspect->add_option("--seeds", seeds, "host:port[,host:port...] of cluster nodes")
      ->required();
  remote_inspect->add_option("--user", remote_options.user, "ACL user (default: \"default\")");
  remote_inspect->add_option("--password-file", password_file,
                             "file holding the password (not on the command line: ps shows it)");
  remote_inspect->add_flag("--tls", remote_options.tls, "connect with TLS");
  remote_inspect->add_option("--tls-ca-file", remote_options.tls_ca_file,
                             "CA bundle the servers' certificates chain to (required with --tls)");
  remote_inspect->add_option("--tls-cert-file", remote_options.tls_cert_file,
                             "client certificate (servers with tls-auth-clients)");
  remote_inspect->add_option("--tls-key-file", remote_options.tls_key_file,
                             "the client certificate's key");
  remote_inspect->add_option("--tls-server-name", remote_options.tls_server_name,
                             "hostname the certificates must carry (default: the CA chain only)");
  remote_inspect->add_option("--timeout", remote_timeout, "seconds for connecting and each command")
      ->check(CLI::PositiveNumber);
  remote_inspect->add_flag("--json", json, "print the report as JSON");

  std::string trace_in, trace_out, trace_format = "auto", kind;
  uint64_t seed = 1;
  CLI::App* trace = app.add_subcommand(
      "trace", "Workload traces: summarize, convert to kvtier CSV, generate synthetic ones.");
  trace->require_subcommand(1);
  CLI::App* summarize = trace->add_subcommand(
      "summarize", "Requests, blocks, reuse and the prefix reuse an unbounded cache would see.");
  summarize->add_option("FILE", trace_in, "trace file (.jsonl Mooncake or .csv)")->required();
  summarize->add_option("--format", trace_format, "auto (by extension), mooncake or csv");
  summarize->add_flag("--json", json, "print the summary as JSON");
  CLI::App* convert = trace->add_subcommand("convert", "Rewrite a trace as kvtier CSV.");
  convert->add_option("IN", trace_in, "trace file")->required();
  convert->add_option("OUT", trace_out, "CSV file to write")->required();
  convert->add_option("--format", trace_format, "format of IN: auto, mooncake or csv");
  CLI::App* generate = trace->add_subcommand(
      "generate", "Write a synthetic workload (the benchmarks' sizes) as kvtier CSV.");
  generate->add_option("KIND", kind, "chat, rag, agent or scan")->required();
  generate->add_option("OUT", trace_out, "CSV file to write")->required();
  generate->add_option("--seed", seed, "generator seed");

  std::string bench_name;
  CLI::App* bench =
      app.add_subcommand("bench",
                         "Run a benchmark from the source tree (bench/run NAME [ARGS...]); "
                         "`kvtier bench --list` names them.");
  bench->add_option("NAME", bench_name, "benchmark name, or --list");
  bench->allow_extras();
  bench->prefix_command();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a "successful" ParseError (code 0); everything else is a usage error.
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  if (inspect->parsed()) {
    absl::StatusOr<nlohmann::ordered_json> r = InspectCache(dir);
    if (!r.ok()) return Fail("inspect", r.status());
    std::cout << (json ? kvtier::json::Dump(*r, 2) + "\n" : FormatInspect(*r));
    return kExitOk;
  }
  if (verify->parsed()) {
    absl::StatusOr<VerifyResult> r = VerifyCache(dir, repair);
    if (!r.ok()) return Fail("verify", r.status());
    std::cout << (json ? kvtier::json::Dump(r->report, 2) + "\n" : FormatVerify(r->report));
    return r->problems > 0 ? kExitProblems : kExitOk;
  }
  if (erase->parsed()) {
    absl::StatusOr<nlohmann::ordered_json> r = EraseNamespaceFromCache(dir, ns);
    if (!r.ok()) return Fail("erase", r.status());
    std::cout << (json ? kvtier::json::Dump(*r, 2) + "\n" : FormatErase(*r));
    return kExitOk;
  }
  if (reset->parsed()) {
    absl::StatusOr<nlohmann::ordered_json> r = ResetCache(dir, yes);
    if (!r.ok()) return Fail("reset", r.status());
    std::cout << (json ? kvtier::json::Dump(*r, 2) + "\n" : FormatReset(*r));
    return yes ? kExitOk : kExitUsage;  // without --yes: nothing done, say so by the exit code
  }
  if (stats->parsed()) {
    absl::StatusOr<nlohmann::ordered_json> r = FetchStats(url);
    if (!r.ok()) return Fail("stats", r.status());
    std::cout << (json ? kvtier::json::Dump(*r, 2) + "\n" : FormatStats(*r));
    return kExitOk;
  }
  if (top->parsed()) {
    absl::StatusOr<nlohmann::ordered_json> prev = FetchStats(url);
    if (!prev.ok()) return Fail("top", prev.status());
    auto last = std::chrono::steady_clock::now();
    while (true) {
      std::this_thread::sleep_for(std::chrono::duration<double>(interval));
      absl::StatusOr<nlohmann::ordered_json> cur = FetchStats(url);
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
  if (remote_inspect->parsed()) {
    absl::StatusOr<std::vector<std::string>> list = SplitSeeds(seeds);
    if (!list.ok()) return Fail("remote inspect", list.status());
    remote_options.seeds = *std::move(list);
    if (!password_file.empty()) {
      absl::StatusOr<std::string> pw = ReadPasswordFile(password_file);
      if (!pw.ok()) return Fail("remote inspect", pw.status());
      remote_options.password = *std::move(pw);
    }
    remote_options.timeout = absl::Seconds(remote_timeout);
    absl::StatusOr<nlohmann::ordered_json> r = InspectRemote(remote_options);
    if (!r.ok()) return Fail("remote inspect", r.status());
    std::cout << (json ? kvtier::json::Dump(*r, 2) + "\n" : FormatRemoteInspect(*r));
    return kExitOk;
  }
  // A malformed trace is a problem found in the input (exit 1), not a usage error.
  auto read_trace = [&](const char* command) -> absl::StatusOr<std::vector<workload::Request>> {
    absl::StatusOr<std::string> format = ResolveTraceFormat(trace_in, trace_format);
    if (!format.ok()) return format.status();
    absl::StatusOr<std::vector<workload::Request>> r = ReadTrace(trace_in, *format);
    if (!r.ok() && absl::IsInvalidArgument(r.status())) {
      std::fprintf(stderr, "kvtier %s: error: %s\n", command,
                   std::string(r.status().message()).c_str());
      return absl::AbortedError("malformed trace (reported)");  // exit 1 below
    }
    return r;
  };
  auto trace_fail = [&](const char* command, const absl::Status& s) {
    if (absl::IsAborted(s)) return kExitProblems;  // malformed input, already reported
    return Fail(command, s);
  };
  if (summarize->parsed()) {
    absl::StatusOr<std::vector<workload::Request>> r = read_trace("trace summarize");
    if (!r.ok()) return trace_fail("trace summarize", r.status());
    const workload::TraceSummary summary = workload::Summarize(*r);
    std::cout << (json ? kvtier::json::Dump(SummaryJson(summary), 2) + "\n"
                       : workload::FormatSummary(summary));
    return kExitOk;
  }
  if (convert->parsed()) {
    absl::StatusOr<std::vector<workload::Request>> r = read_trace("trace convert");
    if (!r.ok()) return trace_fail("trace convert", r.status());
    if (absl::Status s = WriteTrace(*r, trace_out); !s.ok()) return Fail("trace convert", s);
    std::cout << "wrote " << r->size() << " requests to " << trace_out << "\n";
    return kExitOk;
  }
  if (generate->parsed()) {
    absl::StatusOr<std::vector<workload::Request>> r = GenerateTrace(kind, seed);
    if (!r.ok()) return Fail("trace generate", r.status());
    if (absl::Status s = WriteTrace(*r, trace_out); !s.ok()) return Fail("trace generate", s);
    std::cout << "wrote " << r->size() << " requests to " << trace_out << "\n";
    return kExitOk;
  }
  if (bench->parsed()) {
    // Hand over to bench/run: it builds the benchmark if needed and prints its JSON line.
    const std::string run = std::string(KVTIER_SOURCE_DIR) + "/bench/run";
    std::vector<std::string> args = {run};
    if (!bench_name.empty()) args.push_back(bench_name);
    for (const std::string& extra : bench->remaining()) args.push_back(extra);
    std::vector<char*> argv_run;
    for (std::string& a : args) argv_run.push_back(a.data());
    argv_run.push_back(nullptr);
    execv(run.c_str(), argv_run.data());
    std::fprintf(stderr, "kvtier bench: error: cannot run %s (the source tree moved?)\n",
                 run.c_str());
    return kExitCannotOpen;
  }
  return kExitUsage;
}

}  // namespace
}  // namespace kvtier::cli

int main(int argc, char** argv) { return kvtier::cli::Main(argc, argv); }
