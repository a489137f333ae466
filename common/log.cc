#include "common/log.h"

#include <sys/time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "absl/strings/match.h"

namespace kvtier {
namespace {

LogLevel LevelFromEnv() {
  const char* env = std::getenv("KVTIER_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  absl::string_view v(env);
  if (absl::EqualsIgnoreCase(v, "debug")) return LogLevel::kDebug;
  if (absl::EqualsIgnoreCase(v, "warning")) return LogLevel::kWarning;
  if (absl::EqualsIgnoreCase(v, "error")) return LogLevel::kError;
  return LogLevel::kInfo;
}

std::atomic<int>& Threshold() {
  static std::atomic<int> threshold{static_cast<int>(LevelFromEnv())};
  return threshold;
}

}  // namespace

void SetLogLevel(LogLevel level) { Threshold().store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= Threshold().load(); }

void LogLine(LogLevel level, const char* file, int line, absl::string_view message) {
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E'};
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm local;
  localtime_r(&tv.tv_sec, &local);
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
  // One fprintf per line keeps concurrent lines from interleaving.
  std::fprintf(stderr, "kvtier %c%02d%02d %02d:%02d:%02d.%03d %s:%d] %.*s\n",
               kLetters[static_cast<int>(level)], local.tm_mon + 1, local.tm_mday, local.tm_hour,
               local.tm_min, local.tm_sec, static_cast<int>(tv.tv_usec / 1000), base, line,
               static_cast<int>(message.size()), message.data());
}

}  // namespace kvtier
