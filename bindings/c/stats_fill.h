// bindings/c/stats_fill.h — the C API's stats structs (kvtier_stats, kvtier_namespace_stats,
// kvtier_remote_node_stats)
// filled from an EngineStats by walking kvtier/stats.h's description of every statistic.
//
// The C structs are fixed ABI, so which statistic sits in which C field is a table here
// (CStatFields), keyed by the statistic's group and name; FillStats writes each visited value
// where its entry says. A statistic with no entry has no C field (the device name, the tiers'
// used_bytes); tests/capi/stats_fill_test.cc checks that every other statistic has one, that
// each lands in its own field, and that no C field is left unfilled.
//
// Versioning (include/kvtier/c_api.h, "Versioned structs"): CheckStructSize validates a
// caller's struct_size and CopyOut copies the prefix it covers.

#ifndef KVTIER_BINDINGS_C_STATS_FILL_H_
#define KVTIER_BINDINGS_C_STATS_FILL_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvtier/c_api.h"
#include "kvtier/stats.h"

namespace kvtier::capi {

// Where a statistic lives in the C structs, as a byte offset:
//   info, engine, prefetch, latency,
//   remote                           into kvtier_stats;
//   tier                             into kvtier_tier_stats (of kvtier_stats::tiers[tier]);
//   namespace                        into kvtier_namespace_stats;
//   namespace_tier                   of the first element of a uint64_t[KVTIER_NUM_TIERS]
//                                    array of kvtier_namespace_stats, indexed by tier;
//   remote_node                      into kvtier_remote_node_stats.
struct CStatField {
  StatGroup group;
  absl::string_view name;
  size_t offset;
  // kTier only: the field is an array by tier appended to kvtier_stats (offset into it), not
  // a field of kvtier_tier_stats, whose size the ABI fixes.
  bool tier_array = false;
};
absl::Span<const CStatField> CStatFields();
// The C struct that holds the statistics of a group.
enum class CStruct { kStats, kNamespace, kRemoteNode };
CStruct CStructOf(StatGroup group);
// The entry for `info`, or nullptr when it has no C field.
const CStatField* FindCStatField(const StatInfo& info);

// Every field of *out from `stats`; out->struct_size = sizeof(kvtier_stats).
void FillStats(const EngineStats& stats, kvtier_stats* out);
// Every field of *out from stats.namespaces[ns_index].
// REQUIRES: ns_index < stats.namespaces.size().
void FillNamespaceStats(const EngineStats& stats, size_t ns_index, kvtier_namespace_stats* out);
// Every field of *out from stats.remote.nodes[node_index], the address truncated to fit.
// REQUIRES: node_index < stats.remote.nodes.size().
void FillRemoteNodeStats(const EngineStats& stats, size_t node_index,
                         kvtier_remote_node_stats* out);

// OK for a struct_size a caller may pass for `struct_name` ("kvtier_stats"), whose smallest
// accepted size is `min_size` bytes: a multiple of 8 from min_size to KVTIER_STATS_MAX_SIZE.
// InvalidArgument naming `what` ("out_stats->struct_size"), the struct and the sizes otherwise.
absl::Status CheckStructSize(uint64_t struct_size, size_t min_size, absl::string_view what,
                             absl::string_view struct_name);

// Copies `full` (a struct of `full_size` bytes filled by this library, struct_size first) into
// the caller's struct `out` of out->struct_size bytes: the prefix both have, zeros after it,
// and the bytes copied into out->struct_size.
// REQUIRES: CheckStructSize(out->struct_size, ...) was OK.
void CopyOut(const void* full, size_t full_size, void* out);

}  // namespace kvtier::capi

#endif  // KVTIER_BINDINGS_C_STATS_FILL_H_
