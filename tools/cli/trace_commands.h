// tools/cli/trace_commands.h — `kvtier trace`: summarize, convert and generate workload
// traces with the kvtier_workload library (workload/trace.h, workload/generators.h).
//
// Formats: the Mooncake JSONL trace (`hash_ids` per request, 512-token blocks) and kvtier's
// CSV (workload/trace.h documents it). "auto" picks by extension: .jsonl / .json are
// Mooncake, .csv is CSV.

#ifndef KVTIER_TOOLS_CLI_TRACE_COMMANDS_H_
#define KVTIER_TOOLS_CLI_TRACE_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workload/trace.h"

namespace kvtier::cli {

// "mooncake" or "csv" for `format` ("auto", "mooncake", "csv") and `path`; InvalidArgument
// for an unknown format, or an extension "auto" cannot place.
absl::StatusOr<std::string> ResolveTraceFormat(const std::string& path, const std::string& format);

// Reads a trace in a resolved format ("mooncake" or "csv"). NotFound for a missing file;
// InvalidArgument naming the file and line for a malformed one.
absl::StatusOr<std::vector<workload::Request>> ReadTrace(const std::string& path,
                                                         const std::string& format);

// The summary of a trace as JSON (the fields of workload::TraceSummary).
nlohmann::ordered_json SummaryJson(const workload::TraceSummary& summary);

// Writes `requests` as kvtier CSV to `path`.
absl::Status WriteTrace(const std::vector<workload::Request>& requests, const std::string& path);

// A synthetic workload by name ("chat", "rag", "agent", "scan"), as the benchmarks use it.
absl::StatusOr<std::vector<workload::Request>> GenerateTrace(const std::string& kind,
                                                             uint64_t seed);

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_TRACE_COMMANDS_H_
