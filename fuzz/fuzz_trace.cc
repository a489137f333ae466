// fuzz/fuzz_trace.cc — the trace readers (workload/trace.h) on arbitrary bytes. One source,
// two targets: fuzz_trace_mooncake (KVTIER_FUZZ_TRACE_MOONCAKE) reads Mooncake JSONL,
// fuzz_trace_csv reads kvtier CSV.
//
// Traces come from files kvtier did not write. The properties checked:
//   * a read returns OK or InvalidArgument ("SOURCE:LINE: what", naming the source), never
//     crashes or reads outside the input;
//   * every request it returns meets the format (at least one block; CSV times finite and
//     >= 0; no ',', '\r' or '\n' in a CSV tenant);
//   * whatever it returns survives WriteCsvTrace → ReadCsvTrace exactly (trace.h promises an
//     exact round trip), when the writer accepts it; and the writer refuses only what the
//     CSV format cannot hold;
//   * Summarize's counts agree with the requests.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_support.h"
#include "workload/trace.h"

namespace kvtier::workload {
namespace {

constexpr char kSource[] = "fuzz-input";

bool CsvCanHold(const Request& r) {
  return !r.blocks.empty() && std::isfinite(r.time_s) && r.time_s >= 0 &&
         r.tenant.find_first_of(",\r\n") == std::string::npos;
}

void CheckTrace(const std::vector<Request>& requests, bool csv) {
  uint64_t refs = 0;
  for (const Request& r : requests) {
    KVTIER_FUZZ_CHECK(!r.blocks.empty(), "a request without blocks");
    if (csv) KVTIER_FUZZ_CHECK(CsvCanHold(r), "a CSV request the format cannot hold");
    refs += r.blocks.size();
  }
  const TraceSummary s = Summarize(requests);
  KVTIER_FUZZ_CHECK(s.requests == requests.size() && s.block_refs == refs &&
                        s.unique_blocks <= refs && s.reuse_ratio >= 0 && s.reuse_ratio <= 1,
                    "summary disagrees with the requests");
  (void)FormatSummary(s);

  bool holdable = true;
  for (const Request& r : requests) holdable &= CsvCanHold(r);
  std::ostringstream out;
  const absl::Status written = WriteCsvTrace(requests, out);
  if (!written.ok()) {
    KVTIER_FUZZ_CHECK(!holdable && written.code() == absl::StatusCode::kInvalidArgument,
                      "WriteCsvTrace refused a trace it can hold: " + written.ToString());
    return;
  }
  KVTIER_FUZZ_CHECK(holdable, "WriteCsvTrace accepted what CSV cannot hold");
  std::istringstream back_in(out.str());
  absl::StatusOr<std::vector<Request>> back = ReadCsvTrace(back_in, "round-trip");
  KVTIER_FUZZ_CHECK(back.ok(), "written CSV does not read back: " + back.status().ToString());
  KVTIER_FUZZ_CHECK(*back == requests, "CSV round trip changed the trace");
}

}  // namespace
}  // namespace kvtier::workload

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier::workload;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
#ifdef KVTIER_FUZZ_TRACE_MOONCAKE
  constexpr bool kCsv = false;
  absl::StatusOr<std::vector<Request>> trace = ReadMooncakeTrace(in, kSource);
#else
  constexpr bool kCsv = true;
  absl::StatusOr<std::vector<Request>> trace = ReadCsvTrace(in, kSource);
#endif
  if (!trace.ok()) {
    KVTIER_FUZZ_CHECK(trace.status().code() == absl::StatusCode::kInvalidArgument &&
                          absl::StartsWith(trace.status().message(), kSource),
                      "reader failed without naming the line: " + trace.status().ToString());
    return 0;
  }
  CheckTrace(*trace, kCsv);
  return 0;
}
