// tools/cli/http_commands.h — `kvtier stats` and `kvtier top`: read a live engine's metrics
// endpoint (EngineOptions::metrics_port; engine/metrics_server.h serves /stats as JSON).

#ifndef KVTIER_TOOLS_CLI_HTTP_COMMANDS_H_
#define KVTIER_TOOLS_CLI_HTTP_COMMANDS_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvtier::cli {

// GETs `<url>/stats` and parses it. `url` is "http://HOST:PORT" (the scheme may be left out).
// Unavailable (exit 3) when the endpoint cannot be reached or answers non-200; DataLoss when
// the answer is not JSON.
absl::StatusOr<nlohmann::ordered_json> FetchStats(const std::string& url);

// One snapshot for people: tiers, namespaces, engine counters, latency percentiles.
std::string FormatStats(const nlohmann::ordered_json& stats);

// One `top` frame: the snapshot `cur`, with rates (bandwidth, hits, stores per second) and
// hit ratios from the deltas since `prev`, taken `seconds` earlier.
std::string FormatTopFrame(const nlohmann::ordered_json& prev, const nlohmann::ordered_json& cur,
                           double seconds, const std::string& url);

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_HTTP_COMMANDS_H_
