// tools/cli/remote_commands.h — `kvtier remote inspect`: what a Redis Cluster serving as
// kvtier's remote tier looks like, read-only. Connects with the remote tier's own client
// (remote/cluster_client.h) and reports the cluster's state and slot map, every node (role,
// its master, slots, link), each reachable node's key count (DBSIZE), used memory, maxmemory
// and maxmemory-policy (INFO memory), and, from a SCAN of the masters for kvtier's keys
// ("kvtier:1:<namespace>:<model id>:<block key>"), the blocks held per namespace and model
// with their bytes estimated from one sampled value each. Warnings name what
// docs/operations.md advises against: maxmemory 0 (unbounded) or a maxmemory-policy other
// than allkeys-lru on a master, failed nodes, unassigned slots.
//
// As the other commands, the report is JSON (printed as is under --json), and
// FormatRemoteInspect renders the same report for people.

#ifndef KVTIER_TOOLS_CLI_REMOTE_COMMANDS_H_
#define KVTIER_TOOLS_CLI_REMOTE_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace kvtier::cli {

struct RemoteInspectOptions {
  std::vector<std::string> seeds;  // "host:port"
  std::string user;                // empty = "default"
  std::string password;            // empty = no AUTH
  bool tls = false;
  std::string tls_ca_file, tls_cert_file, tls_key_file, tls_server_name;
  absl::Duration timeout = absl::Seconds(5);  // connecting, and each command
};

// "a:1,b:2" as a list, spaces around entries dropped; InvalidArgument for an empty entry.
absl::StatusOr<std::vector<std::string>> SplitSeeds(const std::string& seeds);
// The password in `path`: its contents without the trailing newline. NotFound / InvalidArgument
// naming the file.
absl::StatusOr<std::string> ReadPasswordFile(const std::string& path);

// The report. InvalidArgument for bad options (seeds that are not host:port, TLS without a
// CA, ...), Unavailable naming the seeds when none answers, PermissionDenied when AUTH is
// refused, FailedPrecondition when the server is not in cluster mode. A node that cannot be
// queried is reported (with its error) and warned about, not fatal.
absl::StatusOr<nlohmann::ordered_json> InspectRemote(const RemoteInspectOptions& options);
std::string FormatRemoteInspect(const nlohmann::ordered_json& report);

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_REMOTE_COMMANDS_H_
