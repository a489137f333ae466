// remote/testing/local_cluster.h — a real Redis Cluster on loopback for tests and benchmarks.
//
// LocalCluster::Start launches `redis-server` processes (N masters, R replicas each) on free
// 127.0.0.1 ports, with their configs, logs and (optionally) TLS material and ACL file in a
// fresh temporary directory, joins them with `redis-cli --cluster create`, and returns once
// every node reports cluster_state:ok and every replica is in sync (bounded by
// `startup_timeout`). The topology it reports (Nodes) is read from CLUSTER NODES, never
// assumed from the order the processes were started in.
//
// Promises:
//   * Only 127.0.0.1 is bound or contacted; protected mode stays on.
//   * It signals only the processes it started, by their recorded PIDs (SIGTERM, a bounded
//     wait, then SIGKILL), in its destructor, and removes its temporary directory.
//   * Every wait is bounded; a failure to start returns an error naming the node and quoting
//     the end of its log.
//   * Without `redis-server` on PATH, Start returns FailedPrecondition("redis-server not
//     found ..."): tests skip with that message.
//
// Not thread-safe: one thread drives it (tests call it from the test body).

#ifndef KVTIER_REMOTE_TESTING_LOCAL_CLUSTER_H_
#define KVTIER_REMOTE_TESTING_LOCAL_CLUSTER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kvtier::remote::testing {

struct LocalClusterOptions {
  int masters = 3;               // >= 3 (redis-cli --cluster create needs three)
  int replicas_per_master = 1;   // 0..2
  int cluster_node_timeout_ms = 2000;
  size_t maxmemory_bytes = 0;    // > 0: maxmemory with allkeys-lru
  bool tls = false;              // TLS only (port 0, tls-port, tls-cluster, tls-replication)
  bool tls_auth_clients = false; // require a client certificate
  // Lines of an ACL file written to every node (e.g. "user app on >pw ~app:* +get"). When
  // non-empty, a line for the default user (nopass, all keys and commands) is added first unless
  // one of the lines defines "user default".
  std::vector<std::string> acl_lines;
  absl::Duration startup_timeout = absl::Seconds(40);
};

struct LocalNode {
  std::string address;     // 127.0.0.1:port (the TLS port with TLS on)
  pid_t pid = 0;
  std::string id;          // the cluster node id
  bool master = false;
  std::string master_address;  // replicas: the master it follows; masters: empty
  bool alive = true;       // false once KillNode killed it
};

class LocalCluster {
 public:
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const LocalClusterOptions& options);
  // A cluster with default options started on first use and stopped at exit, shared by every
  // test of one binary. Tests must leave its topology as they found it (no KillNode).
  static absl::StatusOr<LocalCluster*> Shared();

  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // The masters' addresses as they were at start ("127.0.0.1:port").
  std::vector<std::string> seeds() const;
  // Every node started, with its role and master as CLUSTER NODES reports them now (asked of a
  // live node); killed nodes are listed with alive = false and their last known role.
  absl::StatusOr<std::vector<LocalNode>> Nodes();
  // SIGKILLs the node at `address` (one this cluster started) and reaps it.
  absl::Status KillNode(absl::string_view address);
  // The address of a replica following `master_address` (from CLUSTER NODES).
  absl::StatusOr<std::string> ReplicaOf(absl::string_view master_address);
  // Waits until a node other than `old_master` serves the slots `old_master` served and every
  // live node says cluster_state:ok; returns the new master's address.
  absl::StatusOr<std::string> WaitForFailover(absl::string_view old_master, absl::Time deadline);
  // Runs `redis-cli` against `address` with `args` (TLS and no auth arguments added), e.g.
  // {"CLUSTER", "SETSLOT", ...}; returns its stdout. Bounded by `timeout`.
  absl::StatusOr<std::string> Cli(absl::string_view address, const std::vector<std::string>& args,
                                  absl::Duration timeout = absl::Seconds(10));

  bool tls() const { return options_.tls; }
  const std::string& ca_file() const { return ca_file_; }
  const std::string& client_cert_file() const { return client_cert_; }
  const std::string& client_key_file() const { return client_key_; }
  const std::string& dir() const { return dir_; }

 private:
  explicit LocalCluster(const LocalClusterOptions& options) : options_(options) {}
  absl::Status StartNodes(const std::string& redis_server);
  absl::Status MakeTlsFiles();
  absl::Status CreateCluster();
  absl::Status WaitHealthy(absl::Time deadline);
  std::vector<std::string> CliBaseArgs(absl::string_view address) const;
  std::string LogTail(size_t index) const;
  void Stop();

  LocalClusterOptions options_;
  std::string dir_;
  std::string ca_file_, client_cert_, client_key_;
  struct Process {
    int port = 0;
    pid_t pid = 0;
    bool alive = false;
    std::string id;
    bool master = false;
    std::string master_address;
  };
  std::vector<Process> processes_;
};

// Runs argv[0] (looked up on PATH) with `argv`, stdin from /dev/null, and returns its stdout
// when it exits 0 by `timeout` (killed, by its PID, and an error otherwise). stderr is
// appended to the error message.
absl::StatusOr<std::string> RunProgram(const std::vector<std::string>& argv,
                                       absl::Duration timeout);
// The full path of `name` on PATH, or NotFound.
absl::StatusOr<std::string> FindOnPath(absl::string_view name);

}  // namespace kvtier::remote::testing

#endif  // KVTIER_REMOTE_TESTING_LOCAL_CLUSTER_H_
