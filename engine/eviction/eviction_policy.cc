// engine/eviction/eviction_policy.cc — MakeEvictionPolicy: every policy by its configuration name.

#include "engine/eviction/eviction_policy.h"

#include <memory>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/eviction/adaptive_policy.h"
#include "engine/eviction/arc_policy.h"
#include "engine/eviction/clock_policy.h"
#include "engine/eviction/fifo_policy.h"
#include "engine/eviction/lfu_policy.h"
#include "engine/eviction/lru_policy.h"
#include "engine/eviction/s3fifo_policy.h"
#include "engine/eviction/sieve_policy.h"
#include "engine/eviction/tinylfu_policy.h"

namespace kvtier {
namespace {

constexpr const char* kPolicyNames[] = {"lru", "fifo",    "clock", "sieve",   "s3fifo",
                                        "arc", "tinylfu", "lfu",   "adaptive"};

}  // namespace

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name,
                                                                   uint32_t num_slots) {
  if (name == "lru") return std::make_unique<LruPolicy>(num_slots);
  if (name == "fifo") return std::make_unique<FifoPolicy>(num_slots);
  if (name == "clock") return std::make_unique<ClockPolicy>(num_slots);
  if (name == "sieve") return std::make_unique<SievePolicy>(num_slots);
  if (name == "s3fifo") return std::make_unique<S3FifoPolicy>(num_slots);
  if (name == "arc") return std::make_unique<ArcPolicy>(num_slots);
  if (name == "tinylfu") return std::make_unique<TinyLfuPolicy>(num_slots);
  if (name == "lfu") return std::make_unique<AgedLfuPolicy>(num_slots);
  if (name == "adaptive") return std::make_unique<AdaptivePolicy>(num_slots);
  return absl::InvalidArgumentError(absl::StrFormat("unknown eviction policy '%s' (known: %s)",
                                                    name, absl::StrJoin(kPolicyNames, ", ")));
}

}  // namespace kvtier
