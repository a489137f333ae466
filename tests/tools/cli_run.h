// Runs the real `kvtier` binary (KVTIER_CLI_PATH, set by tests/tools/CMakeLists.txt) for the
// CLI's tests and captures its exit code, stdout and stderr.

#ifndef KVTIER_TESTS_TOOLS_CLI_RUN_H_
#define KVTIER_TESTS_TOOLS_CLI_RUN_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "gtest/gtest.h"

namespace kvtier::testing {

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string Quote(const std::string& s) { return "'" + s + "'"; }

// Runs the kvtier binary with `args` (already shell-quoted where needed).
inline RunResult RunCli(const std::string& args) {
  const std::string err_file = absl::StrCat(::testing::TempDir(), "/kvtier-cli-stderr-", getpid());
  const std::string cmd = absl::StrCat(Quote(KVTIER_CLI_PATH), " ", args, " 2>", Quote(err_file));
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  std::filesystem::remove(err_file);
  return r;
}

inline nlohmann::ordered_json ParseJson(const std::string& text) {
  absl::StatusOr<nlohmann::ordered_json> j = json::Parse(text);
  EXPECT_TRUE(j.ok()) << j.status() << "\n" << text;
  return j.ok() ? *j : nlohmann::ordered_json();
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTS_TOOLS_CLI_RUN_H_
