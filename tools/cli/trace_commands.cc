// tools/cli/trace_commands.cc — see trace_commands.h.

#include "tools/cli/trace_commands.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workload/generators.h"

namespace kvtier::cli {

absl::StatusOr<std::string> ResolveTraceFormat(const std::string& path, const std::string& format) {
  if (format == "mooncake" || format == "csv") return format;
  if (format != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown trace format '", format, "' (auto, mooncake, csv)"));
  }
  if (absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json"))
    return std::string("mooncake");
  if (absl::EndsWith(path, ".csv")) return std::string("csv");
  return absl::InvalidArgumentError(absl::StrCat(
      "cannot tell the format of '", path,
      "' from its extension (.jsonl or .csv); pass --format=mooncake or --format=csv"));
}

absl::StatusOr<std::vector<workload::Request>> ReadTrace(const std::string& path,
                                                         const std::string& format) {
  if (format == "mooncake") return workload::ReadMooncakeTrace(path);
  return workload::ReadCsvTrace(path);
}

nlohmann::ordered_json SummaryJson(const workload::TraceSummary& s) {
  return {{"requests", s.requests},
          {"block_refs", s.block_refs},
          {"unique_blocks", s.unique_blocks},
          {"footprint_tokens", s.footprint_tokens},
          {"max_request_blocks", s.max_request_blocks},
          {"mean_request_blocks", s.mean_request_blocks},
          {"reuse_ratio", s.reuse_ratio},
          {"mean_reused_prefix_blocks", s.mean_reused_prefix_blocks},
          {"prefix_reuse_ratio", s.prefix_reuse_ratio},
          {"tenants", s.tenants},
          {"duration_s", s.duration_s},
          {"time_sorted", s.time_sorted}};
}

absl::Status WriteTrace(const std::vector<workload::Request>& requests, const std::string& path) {
  return workload::WriteCsvTrace(requests, path);
}

absl::StatusOr<std::vector<workload::Request>> GenerateTrace(const std::string& kind,
                                                             uint64_t seed) {
  return workload::GenerateBenchWorkload(kind, seed);
}

}  // namespace kvtier::cli
