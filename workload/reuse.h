// workload/reuse.h — what a block's past says about its next use: the measurement behind the
// eviction study's claim that, on a trace, no online policy gets near the offline optimum.
//
// Every block reference (a request's first occurrence of a block id) is put in a class that a
// cache could know when the reference happens, without foresight:
//   * "new, short prompt" / "new, medium prompt" / "new, long prompt": the block's first
//     reference, in a request whose first block was never seen (a prompt with no cached
//     prefix) of < 8, 8..47 or >= 48 blocks;
//   * "new, after a known prefix": the block's first reference, in a request whose first
//     block was seen before (the block extends or branches off a known chain);
//   * "seen 2", "seen 3", "seen 4", "seen 5+": the block's 2nd, 3rd, 4th, 5th or later
//     reference.
// For each class and each idle time a (requests since the reference, without another one),
// MeasureReuse gives the chance that the block is referenced again within the next
// `horizon_requests` requests, given that it has stayed idle a requests: P(a < g <= a + H |
// g > a), g being the number of requests to the block's next reference (never: infinite).
// A policy can only rank blocks by such conditional chances; when they are flat in a, idle
// time carries no signal, and the spread between classes bounds what any ranking by class
// can gain.
//
// Requests are in trace order; an id repeated within a request counts once.

#ifndef KVTIER_WORKLOAD_REUSE_H_
#define KVTIER_WORKLOAD_REUSE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workload/trace.h"

namespace kvtier::workload {

struct ReuseRow {
  std::string name;       // the class, as listed above
  uint64_t references = 0;
  uint64_t reused = 0;    // references followed by another reference of the block, ever
  // Per idle point: references still idle after that many requests (g > a), and the share of
  // them referenced within the horizon after it. 0 where none is left.
  std::vector<uint64_t> idle;
  std::vector<double> reuse_within_horizon;
};

struct ReuseTable {
  uint64_t horizon_requests = 0;
  std::vector<uint64_t> idle_points;
  std::vector<ReuseRow> rows;  // in the order of the classes above, empty classes included
};

// InvalidArgument for horizon 0, no idle points, or idle points not strictly increasing.
absl::StatusOr<ReuseTable> MeasureReuse(const std::vector<Request>& requests,
                                        uint64_t horizon_requests,
                                        const std::vector<uint64_t>& idle_points);

}  // namespace kvtier::workload

#endif  // KVTIER_WORKLOAD_REUSE_H_
