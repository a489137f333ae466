// tools/cli/exit_codes.h — the kvtier CLI's exit codes (documented in tools/README.md).

#ifndef KVTIER_TOOLS_CLI_EXIT_CODES_H_
#define KVTIER_TOOLS_CLI_EXIT_CODES_H_

#include "absl/status/status.h"

namespace kvtier::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitProblems = 1;    // verify found problems (repaired or not)
inline constexpr int kExitUsage = 2;       // bad arguments
inline constexpr int kExitCannotOpen = 3;  // missing, not a kvtier cache, in use, unreachable
inline constexpr int kExitFailed = 4;      // anything else failed mid-way (I/O error, ...)

// The exit code for a command's error status. Errors opening the target (NotFound,
// FailedPrecondition, Unavailable, PermissionDenied) are 3; InvalidArgument is a usage
// error; everything else is 4.
inline int ExitCodeFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk: return kExitOk;
    case absl::StatusCode::kInvalidArgument: return kExitUsage;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kPermissionDenied: return kExitCannotOpen;
    default: return kExitFailed;
  }
}

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_EXIT_CODES_H_
