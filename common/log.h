// common/log.h — kvtier's minimal logger.
//
// Abseil's logging library is newer than the Abseil in Debian 12, so kvtier carries this
// small one: severity-filtered lines to stderr, "kvtier I1122 08:15:01.123 file.cc:42] msg".
// KVTIER_LOG_ONCE logs a message the first time a call site is reached only.
// The threshold comes from the environment variable KVTIER_LOG_LEVEL (debug, info, warning,
// error; default info) or SetLogLevel.

#ifndef KVTIER_COMMON_LOG_H_
#define KVTIER_COMMON_LOG_H_

#include <atomic>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/strings/string_view.h"

namespace kvtier {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, const char* file, int line, absl::string_view message);

}  // namespace kvtier

#define KVTIER_LOG(level, ...)                                         \
  do {                                                                 \
    if (::kvtier::LogEnabled(::kvtier::LogLevel::level)) {             \
      ::kvtier::LogLine(::kvtier::LogLevel::level, __FILE__, __LINE__, \
                        absl::StrFormat(__VA_ARGS__));                 \
    }                                                                  \
  } while (0)

#define KVTIER_LOG_ONCE(level, ...)                                         \
  do {                                                                      \
    static std::atomic<bool> kvtier_logged_once{false};                     \
    if (!kvtier_logged_once.exchange(true)) KVTIER_LOG(level, __VA_ARGS__); \
  } while (0)

// At most one line every `seconds` from this statement (a condition that repeats, such as a
// cluster node that is down, is logged, not flooded).
#define KVTIER_LOG_EVERY_N_SEC(level, seconds, ...)                                        \
  do {                                                                                     \
    static std::atomic<int64_t> kvtier_logged_at{INT64_MIN};                               \
    const int64_t kvtier_now = absl::ToUnixSeconds(absl::Now());                           \
    int64_t kvtier_last = kvtier_logged_at.load(std::memory_order_relaxed);                \
    if ((kvtier_last == INT64_MIN || kvtier_now - kvtier_last >= (seconds)) &&             \
        kvtier_logged_at.compare_exchange_strong(kvtier_last, kvtier_now)) {               \
      KVTIER_LOG(level, __VA_ARGS__);                                                      \
    }                                                                                      \
  } while (0)

#endif  // KVTIER_COMMON_LOG_H_
