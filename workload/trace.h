// workload/trace.h — request traces for the eviction study: the in-memory form, readers for
// Mooncake's JSONL and kvtier's own CSV, a CSV writer, and summary statistics.
//
// A request is the sequence of KV blocks (kTokensPerBlock tokens each) its prompt covers,
// identified the way Mooncake's `hash_ids` are: block i's id stands for the whole prefix
// 0..i, so two requests share their first k ids exactly when they share their first k
// blocks of prompt. The simulator (workload/simulator.h) relies on that only for its
// prefix-hit metric; the readers do not check it.
//
// Ordering: the order of lines in a file is the replay order. `time_s` is carried along but
// not required to be non-decreasing (traces merged from several sources are not always
// sorted, and the simulator never looks at time); TraceSummary::time_sorted says whether it
// is.
//
// Mooncake JSONL (one JSON object per line; blank lines skipped):
//   {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47]}
//   * timestamp      required, a JSON number >= 0, milliseconds (time_s = timestamp / 1000)
//   * output_length  required, an integer in [0, 2^32)
//   * hash_ids       required, a non-empty array of integers in [0, 2^64)
//   * input_length   optional, an integer >= 0; checked for type, otherwise ignored
//   * tenant         optional, a string (not in Mooncake's files; "" when absent)
//   Other keys are skipped whatever their value. "Integer" means written as one: 52.0, 5e1
//   and -0 are rejected, so a float slipped into an id column is caught, not truncated.
//
// kvtier CSV (one request per line; blank lines skipped; no quoting):
//   time_s,tenant,output_tokens,blocks          <- header, the first non-blank line, exactly
//   0.125,alice,52,46 47 48
//   * time_s         a finite decimal number >= 0, seconds
//   * tenant         any text without ',', '\r' or '\n' (may be empty)
//   * output_tokens  an integer in [0, 2^32)
//   * blocks         one or more integers in [0, 2^64) separated by spaces
//   WriteCsvTrace writes times with the fewest digits that read back to the same double, so
//   a write/read round trip is exact.
//
// Errors: a malformed line fails the whole read with InvalidArgument "SOURCE:LINE: what"
// (LINE 1-based, counting blank lines), e.g. "trace.jsonl:17: hash_ids[3] is not a
// non-negative integer: -2". A file that cannot be opened is NotFound.

#ifndef KVTIER_WORKLOAD_TRACE_H_
#define KVTIER_WORKLOAD_TRACE_H_

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier::workload {

// Tokens per block id, as in Mooncake's hash_ids (the last block of a prompt may be partial).
inline constexpr uint32_t kTokensPerBlock = 512;

struct Request {
  double time_s = 0;             // arrival, seconds from the trace's origin
  std::vector<uint64_t> blocks;  // prefix-chained block ids, in prompt order
  uint32_t output_tokens = 0;
  std::string tenant;  // "" when the trace has none

  friend bool operator==(const Request&, const Request&) = default;
};

// Mooncake JSONL. `source_name` names the input in error messages.
absl::StatusOr<std::vector<Request>> ReadMooncakeTrace(absl::string_view path);
absl::StatusOr<std::vector<Request>> ReadMooncakeTrace(std::istream& in,
                                                       absl::string_view source_name);

// kvtier CSV, the format above.
absl::StatusOr<std::vector<Request>> ReadCsvTrace(absl::string_view path);
absl::StatusOr<std::vector<Request>> ReadCsvTrace(std::istream& in, absl::string_view source_name);

// Writes the CSV format above. InvalidArgument (naming the request's index) for what the
// format cannot hold: a tenant with ',', '\r' or '\n', a negative or non-finite time, or a
// request without blocks; DataLoss when the stream or file fails.
absl::Status WriteCsvTrace(const std::vector<Request>& requests, std::ostream& out);
absl::Status WriteCsvTrace(const std::vector<Request>& requests, absl::string_view path);

struct TraceSummary {
  uint64_t requests = 0;
  uint64_t block_refs = 0;        // sum of request lengths, in blocks
  uint64_t unique_blocks = 0;     // distinct ids: the footprint of an infinite cache, in blocks
  uint64_t footprint_tokens = 0;  // unique_blocks * kTokensPerBlock (partial blocks rounded up)
  uint64_t max_request_blocks = 0;
  double mean_request_blocks = 0;
  // Of the block references, the share whose id an earlier request already referenced: the
  // block hit ratio of an infinite cache (1 - unique/refs when no request repeats an id).
  double reuse_ratio = 0;
  // Per request, the leading blocks an earlier request already referenced (the prefix an
  // infinite cache would serve), averaged; and summed over all requests, over block_refs.
  double mean_reused_prefix_blocks = 0;
  double prefix_reuse_ratio = 0;
  uint64_t tenants = 0;     // distinct tenant strings ("" counts as one)
  double duration_s = 0;    // max time - min time
  bool time_sorted = true;  // times non-decreasing in file order
};

TraceSummary Summarize(const std::vector<Request>& requests);

// One line per field, for logs and benchmark output.
std::string FormatSummary(const TraceSummary& summary);

}  // namespace kvtier::workload

#endif  // KVTIER_WORKLOAD_TRACE_H_
