// engine/options.h — what the engine derives from its public options (kvtier/engine.h).
//
// EngineOptions::Validate and the engine's parts share these: each returns InvalidArgument
// naming the bad field.

#ifndef KVTIER_ENGINE_OPTIONS_H_
#define KVTIER_ENGINE_OPTIONS_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/placement.h"
#include "kvtier/engine.h"
#include "tiers/disk_tier.h"

namespace kvtier {

// The disk tier's options from the public ones, validated.
absl::StatusOr<DiskTierOptions> MakeDiskTierOptions(const DiskOptions& disk,
                                                    const Geometry& geometry);

absl::Status ValidateNamespaceLimits(const NamespaceLimits& limits, size_t block_bytes);

// The disk record of one block under the options' codec (NominalRecordSize): the unit of the
// disk tier's capacity in blocks and of disk quotas.
size_t DiskRecordBytes(const DiskOptions& disk, const Geometry& geometry);

// When the remote tier writes blocks (RemoteOptions::write_policy).
enum class RemoteWritePolicy : uint8_t { kWriteThrough = 0, kOnEvict = 1, kBoth = 2 };
// "write-through", "on-evict", "both"; "invalid" outside the enum.
const char* RemoteWritePolicyName(RemoteWritePolicy policy);
// The inverse; InvalidArgument naming the accepted names otherwise.
absl::StatusOr<RemoteWritePolicy> ParseRemoteWritePolicy(absl::string_view name);
// OK when `seed` is host:port with a port in 1..65535; InvalidArgument naming it otherwise.
absl::Status ValidateRemoteSeed(absl::string_view seed);
// OK (also when remote.seeds is empty: no remote tier), or InvalidArgument naming the bad
// remote.* field.
absl::Status ValidateRemoteOptions(const RemoteOptions& remote, const Geometry& geometry);

// Placement's options (engine/placement.h) from the engine's.
Placement::Options PlacementOptions(const EngineOptions& options);

}  // namespace kvtier

#endif  // KVTIER_ENGINE_OPTIONS_H_
