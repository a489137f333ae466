#include "tools/cli/remote_commands.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/secret_file.h"
#include "engine/remote_mover.h"
#include "kvtier/engine.h"
#include "remote/cluster_client.h"
#include "remote/connection.h"
#include "remote/resp.h"
#include "tools/cli/text_format.h"

namespace kvtier::cli {
namespace {

using nlohmann::ordered_json;

// The prefix of every key the remote tier writes (remote/remote_record.h, RemoteKey).
constexpr char kKeyPrefix[] = "kvtier:1:";

// One line of CLUSTER NODES:
//   <id> <ip:port@cport[,hostname]> <flags> <master id|-> <ping> <pong> <epoch> <link> <slots>...
struct ClusterNode {
  std::string id, address, master_id, link;
  std::vector<std::string> flags;
  std::vector<std::pair<int, int>> slots;  // ranges, inclusive
  bool Has(absl::string_view flag) const {
    return std::find(flags.begin(), flags.end(), flag) != flags.end();
  }
  uint64_t SlotCount() const {
    uint64_t n = 0;
    for (const auto& [lo, hi] : slots) n += static_cast<uint64_t>(hi - lo + 1);
    return n;
  }
};

absl::StatusOr<std::vector<ClusterNode>> ParseClusterNodes(absl::string_view text) {
  std::vector<ClusterNode> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    const std::vector<absl::string_view> f =
        absl::StrSplit(absl::StripAsciiWhitespace(line), ' ', absl::SkipEmpty());
    if (f.size() < 8) {
      return absl::DataLossError(absl::StrCat("unexpected CLUSTER NODES line: ", line));
    }
    ClusterNode n;
    n.id = std::string(f[0]);
    n.address = std::string(f[1].substr(0, f[1].find('@')));
    n.flags = absl::StrSplit(f[2], ',');
    n.master_id = f[3] == "-" ? "" : std::string(f[3]);
    n.link = std::string(f[7]);
    for (size_t i = 8; i < f.size(); ++i) {
      if (absl::StartsWith(f[i], "[")) continue;  // a slot being migrated or imported
      const std::vector<absl::string_view> range = absl::StrSplit(f[i], '-');
      int lo = 0, hi = 0;
      if (!absl::SimpleAtoi(range[0], &lo) ||
          !absl::SimpleAtoi(range.size() > 1 ? range[1] : range[0], &hi) || hi < lo) {
        return absl::DataLossError(absl::StrCat("unexpected slot range '", f[i], "'"));
      }
      n.slots.emplace_back(lo, hi);
    }
    out.push_back(std::move(n));
  }
  return out;
}

// "key:value" lines of an INFO reply.
std::map<std::string, std::string> ParseInfo(absl::string_view text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    out[std::string(line.substr(0, colon))] = std::string(line.substr(colon + 1));
  }
  return out;
}

// DBSIZE and INFO memory of one node, on a connection of its own (replicas included: the
// cluster client talks to masters only).
absl::Status QueryNode(const RemoteInspectOptions& o, SSL_CTX* tls, const std::string& address,
                       ordered_json& node) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::DataLossError(absl::StrCat("node address '", address, "' is not host:port"));
  }
  remote::ConnectionOptions co;
  co.host = address.substr(0, colon);
  if (co.host.size() >= 2 && co.host.front() == '[')
    co.host = co.host.substr(1, co.host.size() - 2);
  co.port = port;
  co.user = o.user;
  co.password = o.password;
  co.tls = tls;
  co.server_name = o.tls_server_name;
  absl::StatusOr<std::unique_ptr<remote::Connection>> c =
      remote::Connection::Open(co, absl::Now() + o.timeout);
  if (!c.ok()) return c.status();
  absl::StatusOr<remote::Reply> keys = (*c)->Call({"DBSIZE"}, absl::Now() + o.timeout);
  if (!keys.ok()) return keys.status();
  if (keys->IsError()) return absl::PermissionDeniedError(absl::StrCat("DBSIZE: ", keys->str));
  absl::StatusOr<remote::Reply> info = (*c)->Call({"INFO", "memory"}, absl::Now() + o.timeout);
  if (!info.ok()) return info.status();
  if (info->IsError()) return absl::PermissionDeniedError(absl::StrCat("INFO: ", info->str));
  const std::map<std::string, std::string> m = ParseInfo(info->str);
  auto number = [&](const char* key) -> uint64_t {
    uint64_t v = 0;
    auto it = m.find(key);
    return it != m.end() && absl::SimpleAtoi(it->second, &v) ? v : 0;
  };
  node["keys"] = keys->integer;
  node["used_memory"] = number("used_memory");
  node["maxmemory"] = number("maxmemory");
  auto policy = m.find("maxmemory_policy");
  node["maxmemory_policy"] = policy != m.end() ? policy->second : "?";
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SplitSeeds(const std::string& seeds) {
  std::vector<std::string> out;
  for (absl::string_view s : absl::StrSplit(seeds, ',')) {
    s = absl::StripAsciiWhitespace(s);
    if (s.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--seeds '%s': entry %d is empty (expected host:port[,host:port...])",
                          seeds, out.size() + 1));
    }
    out.emplace_back(s);
  }
  return out;
}

absl::StatusOr<std::string> ReadPasswordFile(const std::string& path) {
  return ReadSecretFile(path, "--password-file");
}

absl::StatusOr<ordered_json> InspectRemote(const RemoteInspectOptions& o) {
  // The remote tier's own translation of its options, with one connection and thread: a
  // report needs no parallelism.
  RemoteOptions ro;
  ro.seeds = o.seeds;
  ro.user = o.user;
  ro.password = o.password;
  ro.tls = o.tls;
  ro.tls_ca_file = o.tls_ca_file;
  ro.tls_cert_file = o.tls_cert_file;
  ro.tls_key_file = o.tls_key_file;
  ro.tls_server_name = o.tls_server_name;
  ro.connect_timeout = o.timeout;
  ro.op_timeout = o.timeout;
  ro.connections_per_node = 1;
  ro.io_threads = 1;
  const remote::ClusterOptions co = MakeClusterOptions(ro);
  absl::StatusOr<std::unique_ptr<remote::ClusterClient>> client =
      remote::ClusterClient::Connect(co);
  if (!client.ok()) return client.status();
  remote::TlsContext tls;
  if (o.tls) {
    absl::StatusOr<remote::TlsContext> t = remote::MakeTlsContext(co.tls);
    if (!t.ok()) return t.status();
    tls = *std::move(t);
  }

  ordered_json report;
  report["seeds"] = o.seeds;
  ordered_json warnings = ordered_json::array();
  absl::StatusOr<std::string> info =
      (*client)->Command({"CLUSTER", "INFO"}, "", absl::Now() + o.timeout);
  if (!info.ok()) return info.status();
  const std::map<std::string, std::string> ci = ParseInfo(*info);
  ordered_json cluster;
  for (const char* key : {"cluster_state", "cluster_slots_assigned", "cluster_slots_ok",
                          "cluster_known_nodes", "cluster_size"}) {
    auto it = ci.find(key);
    if (it == ci.end()) continue;
    uint64_t v = 0;
    if (absl::SimpleAtoi(it->second, &v)) {
      cluster[std::string(key).substr(8)] = v;
    } else {
      cluster[std::string(key).substr(8)] = it->second;
    }
  }
  report["cluster"] = cluster;
  if (ci.count("cluster_state") > 0 && ci.at("cluster_state") != "ok") {
    warnings.push_back(
        absl::StrCat("cluster_state is ", ci.at("cluster_state"), ": some slots are not served"));
  }

  absl::StatusOr<std::string> nodes_text =
      (*client)->Command({"CLUSTER", "NODES"}, "", absl::Now() + o.timeout);
  if (!nodes_text.ok()) return nodes_text.status();
  absl::StatusOr<std::vector<ClusterNode>> nodes = ParseClusterNodes(*nodes_text);
  if (!nodes.ok()) return nodes.status();
  std::sort(nodes->begin(), nodes->end(),
            [](const ClusterNode& a, const ClusterNode& b) { return a.address < b.address; });
  std::map<std::string, std::string> address_of;
  for (const ClusterNode& n : *nodes) address_of[n.id] = n.address;
  ordered_json node_list = ordered_json::array();
  uint64_t slots = 0;
  for (const ClusterNode& n : *nodes) {
    ordered_json j;
    j["address"] = n.address;
    j["id"] = n.id;
    const bool master = n.Has("master");
    j["role"] = master ? "master" : "replica";
    if (!master)
      j["master"] = address_of.count(n.master_id) ? address_of[n.master_id] : n.master_id;
    j["flags"] = absl::StrJoin(n.flags, ",");
    j["link"] = n.link;
    j["slot_count"] = n.SlotCount();
    ordered_json ranges = ordered_json::array();
    for (const auto& [lo, hi] : n.slots) ranges.push_back(ordered_json::array({lo, hi}));
    j["slots"] = ranges;
    if (master) slots += n.SlotCount();
    if (n.Has("fail") || n.Has("fail?") || n.Has("noaddr")) {
      warnings.push_back(absl::StrCat(n.address, " is flagged ", absl::StrJoin(n.flags, ",")));
    }
    if (absl::Status s = QueryNode(o, tls.get(), n.address, j); !s.ok()) {
      j["error"] = std::string(s.message());
      warnings.push_back(absl::StrCat(n.address, " could not be queried: ", s.message()));
    } else if (master) {
      if (j["maxmemory"].get<uint64_t>() == 0) {
        warnings.push_back(
            absl::StrCat(n.address,
                         " has maxmemory 0 (unbounded): a cache node grows until the OS kills "
                         "it; set maxmemory (docs/operations.md)"));
      }
      if (j["maxmemory_policy"] != "allkeys-lru") {
        warnings.push_back(absl::StrCat(
            n.address, " has maxmemory-policy ", j["maxmemory_policy"].get<std::string>(),
            "; kvtier's remote tier is a cache and expects allkeys-lru (docs/operations.md)"));
      }
    }
    node_list.push_back(std::move(j));
  }
  report["nodes"] = node_list;
  if (slots != 16384) {
    warnings.push_back(absl::StrFormat("masters serve %d of 16384 slots", slots));
  }

  // kvtier's blocks per namespace and model: a read-only SCAN of every master.
  struct Group {
    uint64_t keys = 0;
    std::string sample;
  };
  std::map<std::pair<std::string, std::string>, Group> groups;
  uint64_t other_keys = 0;
  const absl::Status scanned = (*client)->Scan(
      absl::StrCat(kKeyPrefix, "*"),
      [&](absl::string_view key) {
        // kvtier:1:<namespace>:<model id>:<block key>; the namespace may contain ':'.
        const absl::string_view rest = key.substr(sizeof(kKeyPrefix) - 1);
        const size_t key_colon = rest.rfind(':');
        const size_t model_colon = key_colon == absl::string_view::npos || key_colon == 0
                                       ? absl::string_view::npos
                                       : rest.rfind(':', key_colon - 1);
        if (model_colon == absl::string_view::npos || model_colon == 0) {
          ++other_keys;
          return;
        }
        Group& g = groups[{std::string(rest.substr(0, model_colon)),
                           std::string(rest.substr(model_colon + 1, key_colon - model_colon - 1))}];
        if (g.keys++ == 0) g.sample = std::string(key);
      },
      absl::Now() + 10 * o.timeout);
  if (!scanned.ok()) warnings.push_back(absl::StrCat("SCAN incomplete: ", scanned.message()));
  ordered_json spaces = ordered_json::array();
  for (const auto& [name, g] : groups) {
    ordered_json j;
    j["namespace"] = name.first;
    j["model_id"] = name.second;
    j["blocks"] = g.keys;
    absl::StatusOr<std::string> len =
        (*client)->Command({"STRLEN", g.sample}, g.sample, absl::Now() + o.timeout);
    uint64_t value_bytes = 0;
    if (len.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*len), &value_bytes)) {
      j["value_bytes_sampled"] = value_bytes;
      j["bytes_estimated"] = value_bytes * g.keys;
    }
    spaces.push_back(std::move(j));
  }
  report["namespaces"] = spaces;
  if (other_keys > 0) report["malformed_kvtier_keys"] = other_keys;
  report["scan_complete"] = scanned.ok();
  report["warnings"] = warnings;
  return report;
}

std::string FormatRemoteInspect(const ordered_json& r) {
  std::string out;
  const ordered_json& c = r["cluster"];
  absl::StrAppendFormat(&out,
                        "cluster: state %s, %s of 16384 slots assigned, %s nodes, %s masters\n",
                        c.value("state", std::string("?")),
                        c.contains("slots_assigned") ? c["slots_assigned"].dump() : "?",
                        c.contains("known_nodes") ? c["known_nodes"].dump() : "?",
                        c.contains("size") ? c["size"].dump() : "?");
  TextTable nodes({"node", "role", "slots", "link", "keys", "used", "maxmemory", "policy"});
  for (const ordered_json& n : r["nodes"]) {
    std::string role = n["role"].get<std::string>();
    if (n.contains("master")) role += " of " + n["master"].get<std::string>();
    std::string ranges;
    for (const ordered_json& s : n["slots"]) {
      absl::StrAppend(&ranges, ranges.empty() ? "" : ",", s[0].get<int>(), "-", s[1].get<int>());
    }
    const bool ok = !n.contains("error");
    nodes.Row(
        n["address"].get<std::string>(),
        {role,
         ranges.empty() ? "-" : absl::StrCat(n["slot_count"].get<uint64_t>(), " (", ranges, ")"),
         n["link"].get<std::string>(), ok ? absl::StrCat(n["keys"].get<int64_t>()) : "?",
         ok ? HumanBytes(n["used_memory"].get<double>()) : "?",
         ok ? (n["maxmemory"].get<uint64_t>() == 0 ? std::string("0 (unbounded)")
                                                   : HumanBytes(n["maxmemory"].get<double>()))
            : "?",
         ok ? n["maxmemory_policy"].get<std::string>() : "?"});
  }
  out += "\n" + nodes.Render() + "\n";
  if (r["namespaces"].empty()) {
    out += "no kvtier blocks in the cluster\n";
  } else {
    TextTable spaces({"namespace", "model id", "blocks", "bytes (est.)"});
    for (const ordered_json& n : r["namespaces"]) {
      spaces.Row(
          n["namespace"].get<std::string>(),
          {n["model_id"].get<std::string>(), absl::StrCat(n["blocks"].get<uint64_t>()),
           n.contains("bytes_estimated") ? HumanBytes(n["bytes_estimated"].get<double>()) : "?"});
    }
    out += spaces.Render();
    out += "(bytes estimated from one sampled value per namespace and model)\n";
  }
  if (!r.value("scan_complete", true)) out += "(the SCAN did not finish: counts are partial)\n";
  for (const ordered_json& w : r["warnings"]) out += "warning: " + w.get<std::string>() + "\n";
  return out;
}

}  // namespace kvtier::cli
