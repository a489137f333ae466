// tools/cli/http_commands.h — `kvtier stats` and `kvtier top`: read a live engine's metrics
// endpoint (EngineOptions::metrics_port; engine/metrics_server.h serves /stats as JSON).
// Both walk the description of every statistic (kvtier/stats.h) and find each value where
// engine/metrics.h's StatsJsonPointer says, so a statistic added to the schema shows here
// without a change.

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

// One snapshot for people: a row for every statistic kvtier/stats.h describes (tiers and
// namespaces as columns), hit ratios, latency percentiles; the remote tier's own figures
// (its cluster's nodes as columns) when the engine has one.
std::string FormatStats(const nlohmann::ordered_json& stats);

// One `top` frame: a row for every statistic, counters as rates (per second, bandwidth, share
// of time) from the deltas since `prev`, taken `seconds` earlier, gauges as they are in `cur`;
// occupancy, the interval's hit ratios and latency percentiles.
std::string FormatTopFrame(const nlohmann::ordered_json& prev, const nlohmann::ordered_json& cur,
                           double seconds, const std::string& url);

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_HTTP_COMMANDS_H_
