// remote/testing/local_cluster.cc — see local_cluster.h.

#include "remote/testing/local_cluster.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kvtier::remote::testing {
namespace {

// Waits for `pid` (ours) until `deadline`; true when it was reaped.
bool WaitPid(pid_t pid, absl::Time deadline, int* exit_status = nullptr) {
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid && exit_status != nullptr) *exit_status = status;
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

// Starts `argv` with stdout/stderr to `out_fd`/`err_fd` (-1: /dev/null). The child dies with
// the thread that started it (PR_SET_PDEATHSIG), so a crashed test leaves no server.
// vfork, not fork: a benchmark holding gigabytes of buffers would otherwise copy its page tables
// at every redis-cli call and then take a copy-on-write fault on every page it writes next. The
// child only makes system calls (prctl, open, dup2, execv) and _exits, which vfork allows; the
// /dev/null descriptor is opened before, in the parent, so the child allocates nothing.
absl::StatusOr<pid_t> Spawn(const std::string& path, const std::vector<std::string>& argv,
                            int out_fd, int err_fd) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) return absl::InternalError(absl::StrCat("/dev/null: ", std::strerror(errno)));
  const pid_t pid = vfork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(null_fd, 0);  // dup2 clears O_CLOEXEC on the copies
    dup2(out_fd >= 0 ? out_fd : null_fd, 1);
    dup2(err_fd >= 0 ? err_fd : null_fd, 2);
    execv(path.c_str(), args.data());
    _exit(127);
  }
  const int fork_errno = errno;
  close(null_fd);
  if (pid < 0) return absl::InternalError(absl::StrCat("vfork: ", std::strerror(fork_errno)));
  return pid;
}

// Two free loopback ports: `p` and its cluster bus port p + 10000.
absl::StatusOr<int> FreePort(std::set<int>* taken) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    int port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    close(fd);
    if (port == 0 || port + 10000 > 65535 || taken->count(port) || taken->count(port + 10000)) {
      continue;
    }
    // The bus port must be free too.
    const int bus = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.sin_port = htons(static_cast<uint16_t>(port + 10000));
    const bool bus_free = bind(bus, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(bus);
    if (!bus_free) continue;
    taken->insert(port);
    taken->insert(port + 10000);
    return port;
  }
  return absl::UnavailableError("LocalCluster: no free pair of loopback ports (p, p+10000)");
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("LocalCluster: cannot write ", path));
  return absl::OkStatus();
}

std::string ReadTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > max_bytes) text = text.substr(text.size() - max_bytes);
  return text;
}

struct NodeLine {
  std::string id, address, master_id;
  bool master = false, failed = false, myself = false;
  int slot_ranges = 0;
};

// Parses CLUSTER NODES output.
std::vector<NodeLine> ParseClusterNodes(absl::string_view text) {
  std::vector<NodeLine> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 8) continue;
    NodeLine n;
    n.id = std::string(f[0]);
    absl::string_view addr = f[1];
    addr = addr.substr(0, addr.find('@'));
    n.address = std::string(addr);
    for (absl::string_view flag : absl::StrSplit(f[2], ',')) {
      if (flag == "master") n.master = true;
      if (flag == "fail" || flag == "fail?" || flag == "noaddr") n.failed = true;
      if (flag == "myself") n.myself = true;
    }
    n.master_id = f[3] == "-" ? "" : std::string(f[3]);
    n.slot_ranges = static_cast<int>(f.size()) - 8;
    out.push_back(std::move(n));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> FindOnPath(absl::string_view name) {
  if (absl::StrContains(name, '/')) {  // a path already, as execvp takes it
    if (access(std::string(name).c_str(), X_OK) == 0) return std::string(name);
    return absl::NotFoundError(absl::StrCat(name, " is not an executable file"));
  }
  const char* path = getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    std::string full = absl::StrCat(dir, "/", name);
    if (access(full.c_str(), X_OK) == 0) return full;
  }
  return absl::NotFoundError(absl::StrCat(name, " not found on PATH"));
}

absl::StatusOr<std::string> RunProgram(const std::vector<std::string>& argv,
                                       absl::Duration timeout) {
  if (argv.empty()) return absl::InvalidArgumentError("RunProgram: empty argv");
  absl::StatusOr<std::string> path = FindOnPath(argv[0]);
  if (!path.ok()) return path.status();
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return absl::InternalError("pipe");
  }
  absl::StatusOr<pid_t> pid = Spawn(*path, argv, out_pipe[1], err_pipe[1]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!pid.ok()) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return pid.status();
  }
  const absl::Time deadline = absl::Now() + timeout;
  std::string out, err;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) {
      timed_out = true;
      break;
    }
    if (poll(fds, 2, static_cast<int>(ms)) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        (i == 0 ? out : err).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  int status = 0;
  if (timed_out) {
    kill(*pid, SIGKILL);
    waitpid(*pid, &status, 0);
    return absl::DeadlineExceededError(absl::StrCat(absl::StrJoin(argv, " "), ": no exit within ",
                                                    absl::FormatDuration(timeout), "; ", out,
                                                    err));
  }
  if (!WaitPid(*pid, deadline + absl::Seconds(1), &status)) {
    kill(*pid, SIGKILL);
    waitpid(*pid, &status, 0);
    return absl::DeadlineExceededError(absl::StrCat(absl::StrJoin(argv, " "), ": did not exit"));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "), ": exit status ", status,
                                            ": ", err, out));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(
    const LocalClusterOptions& options) {
  absl::StatusOr<std::string> redis_server = FindOnPath("redis-server");
  if (!redis_server.ok()) {
    return absl::FailedPreconditionError(
        "redis-server not found on PATH (scripts/install-deps.sh installs Debian's "
        "redis-server): the Redis Cluster tests need a real server");
  }
  if (!FindOnPath("redis-cli").ok()) {
    return absl::FailedPreconditionError("redis-cli not found on PATH (Debian: redis-tools)");
  }
  if (options.masters < 3) {
    return absl::InvalidArgumentError("LocalClusterOptions.masters: at least 3");
  }
  if (options.replicas_per_master < 0 || options.replicas_per_master > 2) {
    return absl::InvalidArgumentError("LocalClusterOptions.replicas_per_master: 0..2");
  }
  std::unique_ptr<LocalCluster> cluster(new LocalCluster(options));
  std::string tmpl = (std::filesystem::temp_directory_path() / "kvtier-redis.XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  cluster->dir_ = tmpl;
  const absl::Time deadline = absl::Now() + options.startup_timeout;
  if (options.tls) {
    if (absl::Status s = cluster->MakeTlsFiles(); !s.ok()) return s;
  }
  if (absl::Status s = cluster->StartNodes(*redis_server); !s.ok()) return s;
  if (absl::Status s = cluster->CreateCluster(); !s.ok()) return s;
  if (absl::Status s = cluster->WaitHealthy(deadline); !s.ok()) return s;
  return cluster;
}

absl::StatusOr<LocalCluster*> LocalCluster::Shared() {
  static absl::StatusOr<std::unique_ptr<LocalCluster>>* shared =
      new absl::StatusOr<std::unique_ptr<LocalCluster>>(Start(LocalClusterOptions{}));
  // Stopped at exit (the processes would die with the test's main thread anyway).
  static const int registered = [] {
    std::atexit([] {
      if (shared->ok()) shared->value().reset();
    });
    return 0;
  }();
  (void)registered;
  if (!shared->ok()) return shared->status();
  return shared->value().get();
}

absl::Status LocalCluster::MakeTlsFiles() {
  const std::string d = dir_;
  ca_file_ = d + "/ca.crt";
  client_cert_ = d + "/client.crt";
  client_key_ = d + "/client.key";
  const absl::Duration t = absl::Seconds(20);
  auto run = [&](std::vector<std::string> argv) -> absl::Status {
    return RunProgram(argv, t).status();
  };
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt",
                                       "ec_paramgen_curve:prime256v1", "-nodes"};
  auto req = [&](std::vector<std::string> head, std::vector<std::string> tail) {
    head.insert(head.end(), ec.begin(), ec.end());
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  if (absl::Status s = run(req({"openssl", "req", "-x509", "-new"},
                               {"-keyout", d + "/ca.key", "-out", ca_file_, "-days", "2", "-subj",
                                "/CN=kvtier-test-ca"}));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFile(d + "/san.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
      !s.ok()) {
    return s;
  }
  for (const std::string name : {"server", "client"}) {
    if (absl::Status s = run(req({"openssl", "req", "-new"},
                                 {"-keyout", d + "/" + name + ".key", "-out",
                                  d + "/" + name + ".csr", "-subj", "/CN=kvtier-test-" + name}));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = run({"openssl", "x509", "-req", "-in", d + "/" + name + ".csr", "-CA",
                              ca_file_, "-CAkey", d + "/ca.key", "-CAcreateserial", "-out",
                              d + "/" + name + ".crt", "-days", "2", "-extfile",
                              d + "/san.ext"});
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::StartNodes(const std::string& redis_server) {
  const int total = options_.masters * (1 + options_.replicas_per_master);
  std::set<int> taken;
  std::string acl_path;
  if (!options_.acl_lines.empty()) {
    acl_path = dir_ + "/users.acl";
    std::string text;
    bool has_default = false;
    for (const std::string& l : options_.acl_lines) {
      if (absl::StartsWith(l, "user default ")) has_default = true;
    }
    if (!has_default) text = "user default on nopass ~* &* +@all\n";
    for (const std::string& l : options_.acl_lines) absl::StrAppend(&text, l, "\n");
    if (absl::Status s = WriteFile(acl_path, text); !s.ok()) return s;
  }
  for (int i = 0; i < total; ++i) {
    absl::StatusOr<int> port = FreePort(&taken);
    if (!port.ok()) return port.status();
    const std::string node_dir = absl::StrCat(dir_, "/n", *port);
    std::filesystem::create_directories(node_dir);
    std::string conf = absl::StrCat(
        "bind 127.0.0.1\nprotected-mode yes\ndaemonize no\n", "dir ", node_dir, "\n",
        "logfile ", node_dir, "/redis.log\n", "cluster-enabled yes\n",
        "cluster-config-file nodes.conf\n", "cluster-node-timeout ",
        options_.cluster_node_timeout_ms, "\n", "cluster-require-full-coverage no\n",
        "appendonly no\nsave \"\"\n", "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n");
    if (options_.tls) {
      absl::StrAppend(&conf, "port 0\ntls-port ", *port, "\ntls-cert-file ", dir_,
                      "/server.crt\ntls-key-file ", dir_, "/server.key\ntls-ca-cert-file ",
                      ca_file_, "\ntls-cluster yes\ntls-replication yes\ntls-auth-clients ",
                      options_.tls_auth_clients ? "yes" : "no", "\n");
    } else {
      absl::StrAppend(&conf, "port ", *port, "\n");
    }
    if (options_.maxmemory_bytes > 0) {
      absl::StrAppend(&conf, "maxmemory ", options_.maxmemory_bytes,
                      "\nmaxmemory-policy allkeys-lru\n");
    }
    if (!acl_path.empty()) absl::StrAppend(&conf, "aclfile ", acl_path, "\n");
    const std::string conf_path = node_dir + "/redis.conf";
    if (absl::Status s = WriteFile(conf_path, conf); !s.ok()) return s;
    absl::StatusOr<pid_t> pid = Spawn(redis_server, {redis_server, conf_path}, -1, -1);
    if (!pid.ok()) return pid.status();
    Process p;
    p.port = *port;
    p.pid = *pid;
    p.alive = true;
    processes_.push_back(p);
  }
  // Each answers PING (bounded).
  for (size_t i = 0; i < processes_.size(); ++i) {
    const std::string address = absl::StrCat("127.0.0.1:", processes_[i].port);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (true) {
      absl::StatusOr<std::string> pong = Cli(address, {"PING"}, absl::Seconds(2));
      if (pong.ok() && absl::StrContains(*pong, "PONG")) break;
      int status = 0;
      if (waitpid(processes_[i].pid, &status, WNOHANG) == processes_[i].pid) {
        processes_[i].alive = false;
        return absl::InternalError(absl::StrCat("LocalCluster: redis-server at ", address,
                                                " exited at start; log: ", LogTail(i)));
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat("LocalCluster: redis-server at ", address,
                                                        " does not answer PING; log: ",
                                                        LogTail(i)));
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  return absl::OkStatus();
}

std::string LocalCluster::LogTail(size_t index) const {
  return ReadTail(absl::StrCat(dir_, "/n", processes_[index].port, "/redis.log"), 1500);
}

std::vector<std::string> LocalCluster::CliBaseArgs(absl::string_view address) const {
  std::vector<std::string> args = {"redis-cli"};
  if (!address.empty()) {
    const size_t colon = address.rfind(':');
    args.insert(args.end(), {"-h", std::string(address.substr(0, colon)), "-p",
                             std::string(address.substr(colon + 1))});
  }
  if (options_.tls) {
    args.insert(args.end(), {"--tls", "--cacert", ca_file_, "--cert", client_cert_, "--key",
                             client_key_});
  }
  return args;
}

absl::StatusOr<std::string> LocalCluster::Cli(absl::string_view address,
                                              const std::vector<std::string>& args,
                                              absl::Duration timeout) {
  std::vector<std::string> argv = CliBaseArgs(address);
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProgram(argv, timeout);
}

absl::Status LocalCluster::CreateCluster() {
  std::vector<std::string> argv = CliBaseArgs("");
  argv.push_back("--cluster");
  argv.push_back("create");
  for (const Process& p : processes_) argv.push_back(absl::StrCat("127.0.0.1:", p.port));
  argv.insert(argv.end(), {"--cluster-replicas", absl::StrCat(options_.replicas_per_master),
                           "--cluster-yes"});
  absl::StatusOr<std::string> out = RunProgram(argv, absl::Seconds(30));
  if (!out.ok()) return out.status();
  if (!absl::StrContains(*out, "All 16384 slots covered")) {
    return absl::InternalError(absl::StrCat("LocalCluster: redis-cli --cluster create: ", *out));
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::WaitHealthy(absl::Time deadline) {
  const size_t total = processes_.size();
  std::string last;
  while (true) {
    bool ok = true;
    for (const Process& p : processes_) {
      const std::string address = absl::StrCat("127.0.0.1:", p.port);
      absl::StatusOr<std::string> info = Cli(address, {"CLUSTER", "INFO"}, absl::Seconds(3));
      if (!info.ok() || !absl::StrContains(*info, "cluster_state:ok") ||
          !absl::StrContains(*info, absl::StrCat("cluster_known_nodes:", total))) {
        ok = false;
        last = absl::StrCat(address, ": ", info.ok() ? *info : info.status().ToString());
        break;
      }
      absl::StatusOr<std::string> repl = Cli(address, {"INFO", "replication"}, absl::Seconds(3));
      if (!repl.ok()) {
        ok = false;
        last = absl::StrCat(address, ": ", repl.status().ToString());
        break;
      }
      if (absl::StrContains(*repl, "role:slave") &&
          (!absl::StrContains(*repl, "master_link_status:up") ||
           !absl::StrContains(*repl, "master_sync_in_progress:0"))) {
        ok = false;
        last = absl::StrCat(address, ": replica not in sync: ", *repl);
        break;
      }
    }
    if (ok) {
      absl::StatusOr<std::vector<LocalNode>> nodes = Nodes();
      if (nodes.ok()) {
        int replicas = 0;
        for (const LocalNode& n : *nodes) replicas += n.master ? 0 : 1;
        if (replicas == options_.masters * options_.replicas_per_master) return absl::OkStatus();
        last = absl::StrCat("CLUSTER NODES lists ", replicas, " replicas");
      } else {
        last = nodes.status().ToString();
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("LocalCluster: the cluster is not healthy in time: ", last));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

std::vector<std::string> LocalCluster::seeds() const {
  std::vector<std::string> out;
  const size_t n = static_cast<size_t>(options_.masters);
  for (size_t i = 0; i < processes_.size() && out.size() < n; ++i) {
    out.push_back(absl::StrCat("127.0.0.1:", processes_[i].port));
  }
  return out;
}

absl::StatusOr<std::vector<LocalNode>> LocalCluster::Nodes() {
  absl::Status last = absl::UnavailableError("LocalCluster: no live node");
  for (const Process& asked : processes_) {
    if (!asked.alive) continue;
    absl::StatusOr<std::string> text =
        Cli(absl::StrCat("127.0.0.1:", asked.port), {"CLUSTER", "NODES"}, absl::Seconds(3));
    if (!text.ok()) {
      last = text.status();
      continue;
    }
    std::vector<NodeLine> lines = ParseClusterNodes(*text);
    std::map<std::string, std::string> address_of;
    for (const NodeLine& l : lines) address_of[l.id] = l.address;
    for (Process& p : processes_) {
      const std::string address = absl::StrCat("127.0.0.1:", p.port);
      for (const NodeLine& l : lines) {
        if (l.address != address) continue;
        p.id = l.id;
        p.master = l.master;
        p.master_address = l.master ? "" : address_of[l.master_id];
      }
    }
    std::vector<LocalNode> out;
    for (const Process& p : processes_) {
      LocalNode n;
      n.address = absl::StrCat("127.0.0.1:", p.port);
      n.pid = p.pid;
      n.id = p.id;
      n.master = p.master;
      n.master_address = p.master_address;
      n.alive = p.alive;
      out.push_back(n);
    }
    return out;
  }
  return last;
}

absl::Status LocalCluster::KillNode(absl::string_view address) {
  for (Process& p : processes_) {
    if (absl::StrCat("127.0.0.1:", p.port) != address) continue;
    if (!p.alive) return absl::FailedPreconditionError(absl::StrCat(address, " is already dead"));
    kill(p.pid, SIGKILL);
    WaitPid(p.pid, absl::Now() + absl::Seconds(5));
    p.alive = false;
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("LocalCluster::KillNode: ", address,
                                          " is not a node this cluster started"));
}

absl::StatusOr<std::string> LocalCluster::ReplicaOf(absl::string_view master_address) {
  absl::StatusOr<std::vector<LocalNode>> nodes = Nodes();
  if (!nodes.ok()) return nodes.status();
  for (const LocalNode& n : *nodes) {
    if (n.alive && !n.master && n.master_address == master_address) return n.address;
  }
  return absl::NotFoundError(absl::StrCat("no live replica follows ", master_address));
}

absl::StatusOr<std::string> LocalCluster::WaitForFailover(absl::string_view old_master,
                                                          absl::Time deadline) {
  std::set<std::string> candidates;
  for (const Process& p : processes_) {
    if (p.master_address == old_master) candidates.insert(absl::StrCat("127.0.0.1:", p.port));
  }
  if (candidates.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("WaitForFailover: no replica of ", old_master, " was known"));
  }
  std::string last;
  while (absl::Now() < deadline) {
    for (const Process& p : processes_) {
      const std::string address = absl::StrCat("127.0.0.1:", p.port);
      if (!p.alive || !candidates.count(address)) continue;
      absl::StatusOr<std::string> text = Cli(address, {"CLUSTER", "NODES"}, absl::Seconds(2));
      if (!text.ok()) continue;
      for (const NodeLine& l : ParseClusterNodes(*text)) {
        if (!l.myself || !l.master || l.slot_ranges == 0) continue;
        bool all_ok = true;
        for (const Process& q : processes_) {
          if (!q.alive) continue;
          absl::StatusOr<std::string> info =
              Cli(absl::StrCat("127.0.0.1:", q.port), {"CLUSTER", "INFO"}, absl::Seconds(2));
          if (!info.ok() || !absl::StrContains(*info, "cluster_state:ok")) all_ok = false;
        }
        if (all_ok) {
          (void)Nodes();  // refresh the recorded roles
          return address;
        }
        last = "promoted, but not every node says cluster_state:ok";
      }
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("WaitForFailover: no replica of ", old_master, " promoted in time ", last));
}

void LocalCluster::Stop() {
  for (Process& p : processes_) {
    if (p.alive) kill(p.pid, SIGTERM);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  for (Process& p : processes_) {
    if (!p.alive) continue;
    if (!WaitPid(p.pid, deadline)) {
      kill(p.pid, SIGKILL);
      WaitPid(p.pid, absl::Now() + absl::Seconds(5));
    }
    p.alive = false;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

LocalCluster::~LocalCluster() { Stop(); }

}  // namespace kvtier::remote::testing
