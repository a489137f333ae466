// The engine's metrics endpoint (EngineOptions::metrics_port) read by the real `kvtier stats`
// and `kvtier top` binaries, and /metrics parsed as Prometheus text.

#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "kvtier/engine.h"
#include "tests/api/engine_test_util.h"

namespace kvtier {
namespace {

// True for a Prometheus text-format sample line: `name{label="value",...} number`, with
// the label set optional. (Hand-written: GCC 12's <regex> trips -Wmaybe-uninitialized under
// the sanitizer build's -O2 -Werror.)
bool IsPrometheusSample(absl::string_view line) {
  auto name_start = [](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  };
  auto name_char = [&](char c) {
    return name_start(c) || std::isdigit(static_cast<unsigned char>(c));
  };
  size_t i = 0;
  if (i >= line.size() || !name_start(line[i])) return false;
  while (i < line.size() && name_char(line[i])) ++i;
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      if (!name_start(line[i]) || line[i] == ':') return false;
      while (i < line.size() && name_char(line[i]) && line[i] != ':') ++i;
      if (i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') return false;
      i += 2;
      while (i < line.size() && line[i] != '"') i += line[i] == '\\' ? 2 : 1;
      if (i >= line.size()) return false;
      ++i;  // closing quote
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return false;
    ++i;  // '}'
  }
  if (i >= line.size() || line[i] != ' ') return false;
  const absl::string_view value = line.substr(i + 1);
  if (value == "+Inf" || value == "-Inf" || value == "NaN") return true;
  double v;
  return !value.empty() && absl::SimpleAtod(value, &v);
}

using nlohmann::ordered_json;

struct RunResult {
  int exit_code = -1;
  std::string out;
};

// Runs the kvtier binary; stderr is merged into `out`.
RunResult RunCli(const std::string& args) {
  const std::string cmd = absl::StrCat("'", KVTIER_CLI_PATH, "' ", args, " 2>&1");
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Values of /stats by their '/'-separated path ("tiers/1/hits").
double Num(const ordered_json& j, const std::string& path) {
  const ordered_json* v = json::Find(j, "/" + path);
  EXPECT_TRUE(v != nullptr && v->is_number()) << path;
  return v != nullptr && v->is_number() ? v->get<double>() : -1;
}
std::string Str(const ordered_json& j, const std::string& path) {
  const ordered_json* v = json::Find(j, "/" + path);
  EXPECT_TRUE(v != nullptr && v->is_string()) << path;
  return v != nullptr && v->is_string() ? v->get<std::string>() : "";
}

class KvtierMetricsTest : public ::testing::Test {
 protected:
  // Opens an engine with the endpoint on a free loopback port: ports from a pid-derived base
  // are tried until one binds (Open fails with Unavailable when the port is taken).
  void SetUp() override {
    for (int attempt = 0; attempt < 50 && engine_ == nullptr; ++attempt) {
      EngineOptions o = testing::SmallOptions(0, 4);
      o.metrics_port = static_cast<uint16_t>(20000 + (getpid() * 7 + attempt * 131) % 40000);
      absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
      if (e.ok()) {
        engine_ = std::move(*e);
        port_ = o.metrics_port;
      } else {
        ASSERT_EQ(e.status().code(), absl::StatusCode::kUnavailable) << e.status();
      }
    }
    ASSERT_NE(engine_, nullptr) << "no free loopback port found";
    url_ = absl::StrCat("http://127.0.0.1:", port_);
  }

  std::unique_ptr<Engine> engine_;
  uint16_t port_ = 0;
  std::string url_;
};

TEST_F(KvtierMetricsTest, StatsTopAndPrometheusTextAgreeWithTheEngine) {
  const std::vector<int32_t> prompt = testing::Prompt(3, 1);
  const std::vector<BlockKey> keys = testing::StoreBlocks(*engine_, "default", prompt);
  ASSERT_TRUE(engine_->Match("default", prompt).ok());                 // 3 hits
  ASSERT_TRUE(engine_->Match("default", testing::Prompt(2, 9)).ok());  // 2 misses
  const size_t bytes = engine_->options().geometry.block_bytes();
  {
    testing::DeviceBlocks dst(engine_->device(), 2, bytes);  // freed before the engine goes
    LoadRequest load;
    load.ns = "default";
    load.keys = {keys[0], keys[1]};
    load.buffers = KvBuffers::Blocks(dst.ptrs());
    auto h = engine_->Load(load);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
  }

  RunResult r = RunCli(absl::StrCat("stats --json ", url_));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  absl::StatusOr<ordered_json> j = json::Parse(r.out);
  ASSERT_TRUE(j.ok()) << j.status() << r.out;
  EXPECT_EQ(Num(*j, "block_bytes"), bytes);
  EXPECT_EQ(Str(*j, "tiers/1/tier"), "host");
  EXPECT_EQ(Num(*j, "tiers/1/used_blocks"), 3);
  EXPECT_EQ(Num(*j, "tiers/1/used_bytes"), 3.0 * bytes);
  EXPECT_EQ(Num(*j, "tiers/1/hits"), 2);
  EXPECT_EQ(Num(*j, "tiers/1/misses"), 2);  // the 2 blocks Match could not find
  EXPECT_EQ(Num(*j, "tiers/0/misses"), 0);  // no GPU tier: no lookups counted there
  EXPECT_EQ(Num(*j, "namespaces/0/hits_per_tier/host"), 2);
  EXPECT_EQ(Num(*j, "namespaces/0/misses_per_tier/host"), 2);
  EXPECT_EQ(Num(*j, "namespaces/1/hits_per_tier/host"), 0);
  EXPECT_GE(Num(*j, "engine/stall_ns"), 0);
  EXPECT_EQ(Num(*j, "engine/match_calls"), 2);
  EXPECT_EQ(Num(*j, "engine/matched_blocks"), 3);
  EXPECT_EQ(Num(*j, "engine/missed_blocks"), 2);
  EXPECT_EQ(Num(*j, "engine/stored_blocks"), 3);
  EXPECT_EQ(Num(*j, "engine/loaded_blocks"), 2);
  EXPECT_EQ(Str(*j, "namespaces/0/name"), "default");
  EXPECT_EQ(Num(*j, "namespaces/0/matched_blocks"), 3);
  EXPECT_EQ(Num(*j, "namespaces/0/missed_blocks"), 2);
  EXPECT_EQ(Num(*j, "namespaces/0/stored_blocks"), 3);
  EXPECT_EQ(Num(*j, "namespaces/0/loaded_blocks"), 2);
  EXPECT_EQ(Num(*j, "namespaces/1/stored_blocks"), 0);
  EXPECT_EQ(Num(*j, "latency/match/count"), 2);
  EXPECT_EQ(Num(*j, "latency/store/count"), 1);
  EXPECT_EQ(Num(*j, "latency/load/count"), 1);

  RunResult human = RunCli(absl::StrCat("stats ", url_));
  ASSERT_EQ(human.exit_code, 0) << human.out;
  EXPECT_NE(human.out.find("host"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("hit ratio  60.0%"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("stall: "), std::string::npos) << human.out;
  RunResult top = RunCli(absl::StrCat("top --once --interval 0.1 ", url_));
  ASSERT_EQ(top.exit_code, 0) << top.out;
  EXPECT_NE(top.out.find("hit ratio"), std::string::npos) << top.out;

  // /metrics: every sample line is `name{labels} value`, and the numbers match.
  httplib::Client client(url_);
  httplib::Result res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_EQ(res->status, 200);
  size_t samples = 0;
  for (absl::string_view piece : absl::StrSplit(res->body, '\n', absl::SkipEmpty())) {
    const std::string line(piece);
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    EXPECT_TRUE(IsPrometheusSample(line)) << line;
    ++samples;
  }
  EXPECT_GT(samples, 50u);
  for (const char* want :
       {"kvtier_tier_used_blocks{tier=\"host\"} 3\n",
        "kvtier_namespace_stored_blocks_total{namespace=\"default\"} 3\n",
        "kvtier_missed_blocks_total 2\n", "kvtier_tier_misses_total{tier=\"host\"} 2\n",
        "kvtier_namespace_hits_total{namespace=\"default\",tier=\"host\"} 2\n",
        "kvtier_match_latency_seconds_count 2\n",
        "kvtier_match_latency_seconds_bucket{le=\"+Inf\"} 2\n"}) {
    EXPECT_NE(res->body.find(want), std::string::npos) << want;
  }

  // A second engine cannot take the same port.
  EngineOptions o = testing::SmallOptions(0, 4);
  o.metrics_port = port_;
  absl::StatusOr<std::unique_ptr<Engine>> second = Engine::Open(o);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();

  // Once the engine is gone the endpoint is unreachable: exit 3, saying what to check.
  engine_.reset();
  RunResult gone = RunCli(absl::StrCat("stats ", url_));
  EXPECT_EQ(gone.exit_code, 3) << gone.out;
  EXPECT_NE(gone.out.find("metrics_port"), std::string::npos) << gone.out;
  EXPECT_EQ(RunCli(absl::StrCat("top --once ", url_)).exit_code, 3);
  EXPECT_EQ(RunCli("stats --help").exit_code, 0);
  EXPECT_EQ(RunCli("top --help").exit_code, 0);
  EXPECT_EQ(RunCli("top --interval -1 " + url_).exit_code, 2);
}

}  // namespace
}  // namespace kvtier
