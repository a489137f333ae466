// workload/reuse.cc — MeasureReuse (workload/reuse.h).

#include "workload/reuse.h"

#include <algorithm>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"

namespace kvtier::workload {
namespace {

constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

constexpr const char* kClassNames[] = {
    "new, short prompt", "new, medium prompt", "new, long prompt", "new, after a known prefix",
    "seen 2",            "seen 3",             "seen 4",           "seen 5+"};
constexpr int kNumClasses = sizeof(kClassNames) / sizeof(kClassNames[0]);

// The request's blocks without repeats, in prompt order.
std::vector<uint64_t> Unique(const Request& r) {
  std::vector<uint64_t> out;
  absl::flat_hash_set<uint64_t> seen;
  for (uint64_t b : r.blocks) {
    if (seen.insert(b).second) out.push_back(b);
  }
  return out;
}

}  // namespace

absl::StatusOr<ReuseTable> MeasureReuse(const std::vector<Request>& requests,
                                        uint64_t horizon_requests,
                                        const std::vector<uint64_t>& idle_points) {
  if (horizon_requests == 0) return absl::InvalidArgumentError("MeasureReuse: horizon is 0");
  if (idle_points.empty()) return absl::InvalidArgumentError("MeasureReuse: no idle points");
  for (size_t i = 1; i < idle_points.size(); ++i) {
    if (idle_points[i] <= idle_points[i - 1]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "MeasureReuse: idle points must increase strictly (%d after %d)", idle_points[i],
          idle_points[i - 1]));
    }
  }
  std::vector<std::vector<uint64_t>> blocks(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) blocks[i] = Unique(requests[i]);

  // Backward: the request of each reference's next reference.
  std::vector<std::vector<uint64_t>> next(requests.size());
  absl::flat_hash_map<uint64_t, uint64_t> later;
  for (size_t i = requests.size(); i-- > 0;) {
    next[i].reserve(blocks[i].size());
    for (uint64_t b : blocks[i]) {
      auto it = later.find(b);
      next[i].push_back(it == later.end() ? kNever : it->second);
    }
    for (uint64_t b : blocks[i]) later[b] = i;
  }

  // Forward: each reference's class, and its gap to the next reference.
  std::vector<std::vector<uint64_t>> gaps(kNumClasses);
  absl::flat_hash_map<uint64_t, uint32_t> count;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (blocks[i].empty()) continue;
    const bool known_prefix = count.contains(blocks[i][0]);
    const size_t length = requests[i].blocks.size();
    for (size_t k = 0; k < blocks[i].size(); ++k) {
      const uint32_t seen = ++count[blocks[i][k]];
      int cls;
      if (seen >= 2) {
        cls = 4 + static_cast<int>(std::min<uint32_t>(seen, 5) - 2);
      } else if (known_prefix) {
        cls = 3;
      } else {
        cls = length < 8 ? 0 : length < 48 ? 1 : 2;
      }
      gaps[cls].push_back(next[i][k] == kNever ? kNever : next[i][k] - i);
    }
  }

  ReuseTable table;
  table.horizon_requests = horizon_requests;
  table.idle_points = idle_points;
  for (int c = 0; c < kNumClasses; ++c) {
    std::vector<uint64_t>& g = gaps[c];
    std::sort(g.begin(), g.end());
    ReuseRow row;
    row.name = kClassNames[c];
    row.references = g.size();
    row.reused = static_cast<uint64_t>(std::lower_bound(g.begin(), g.end(), kNever) - g.begin());
    for (uint64_t a : idle_points) {
      // Idle after a requests: g > a. Referenced within the horizon after that: g <= a + H.
      const auto idle_from = std::upper_bound(g.begin(), g.end(), a);
      const uint64_t end = a > kNever - horizon_requests ? kNever - 1 : a + horizon_requests;
      const auto within_end = std::upper_bound(idle_from, g.end(), end);
      const uint64_t idle = static_cast<uint64_t>(g.end() - idle_from);
      const uint64_t within = static_cast<uint64_t>(within_end - idle_from);
      row.idle.push_back(idle);
      row.reuse_within_horizon.push_back(idle == 0 ? 0.0 : static_cast<double>(within) / idle);
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

}  // namespace kvtier::workload
