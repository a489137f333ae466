// tools/cli/disk_commands.h — `kvtier inspect`, `kvtier verify` and `kvtier erase`: what a
// cache directory at rest holds, whether every record the index points at is intact, and
// removing one namespace.
//
// Each command builds its report as JSON (printed as is under --json) and a Format*
// function renders the same report for people, so both outputs always agree.

#ifndef KVTIER_TOOLS_CLI_DISK_COMMANDS_H_
#define KVTIER_TOOLS_CLI_DISK_COMMANDS_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvtier::cli {

// Geometry, layout, blocks and bytes per namespace, compression, space (live, dead,
// reclaimable, free regions) and an age histogram. Read-only: works next to a live engine.
absl::StatusOr<nlohmann::ordered_json> InspectCache(const std::string& dir);
std::string FormatInspect(const nlohmann::ordered_json& report);

struct VerifyResult {
  nlohmann::ordered_json report;
  size_t problems = 0;  // corrupt records, orphans, malformed entries, directory problems
};
// Reads and checks every record the index points at. With `repair`, deletes the index
// entries of every bad record in one batch (needs the directory's lock: Unavailable when an
// engine holds it).
absl::StatusOr<VerifyResult> VerifyCache(const std::string& dir, bool repair);
std::string FormatVerify(const nlohmann::ordered_json& report);

// Deletes every index entry of namespace `ns` in one batch. Needs the directory's lock.
// Starts a cache directory over: removes data.kvt and index/ (links as links, never their
// targets) and nothing else. Refused (FailedPrecondition) when the directory holds other
// files, Unavailable while an engine holds it, PermissionDenied when another user owns it.
// Without `yes` it only reports what it would remove ("dry_run": true).
absl::StatusOr<nlohmann::ordered_json> ResetCache(const std::string& dir, bool yes);
std::string FormatReset(const nlohmann::ordered_json& r);

absl::StatusOr<nlohmann::ordered_json> EraseNamespaceFromCache(const std::string& dir,
                                                               const std::string& ns);
std::string FormatErase(const nlohmann::ordered_json& report);

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_DISK_COMMANDS_H_
