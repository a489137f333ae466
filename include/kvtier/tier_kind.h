// kvtier/tier_kind.h — the tiers a block's copies can live in, and an array indexed by them.
//
// Tiers are ordered fastest first: a lower TierKind value is closer to the GPU's attention
// kernels. Everything that keeps one value per tier (slots of a block, counters, statistics)
// holds a TierArray<T>, indexed by TierKind, so no caller casts a tier to an integer.

#ifndef KVTIER_TIER_KIND_H_
#define KVTIER_TIER_KIND_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

// kRemote: the shared remote tier (a Redis Cluster, EngineOptions::remote), below disk. Its
// copies are not placed in local slots: a block is found there by Match and read into a host
// slot by Load, Prefetch and hints.
enum class TierKind : uint8_t { kGpu = 0, kHost = 1, kDisk = 2, kRemote = 3 };
inline constexpr int kNumTiers = 4;
// Every tier, fastest first: `for (TierKind t : kAllTiers)`.
inline constexpr std::array<TierKind, kNumTiers> kAllTiers = {TierKind::kGpu, TierKind::kHost,
                                                             TierKind::kDisk, TierKind::kRemote};

// "gpu", "host", "disk", "remote"; "invalid" for a value outside the enum.
const char* TierKindName(TierKind tier);
// The inverse of TierKindName; InvalidArgument naming the accepted names otherwise.
absl::StatusOr<TierKind> ParseTierKind(absl::string_view name);

// One T per tier, indexed by TierKind. (Also by position, 0 .. kNumTiers - 1, for code that
// walks the tiers as numbers, such as the C API's arrays.)
template <typename T>
struct TierArray {
  std::array<T, kNumTiers> values{};

  // Every tier's value set to `v`.
  static constexpr TierArray Filled(const T& v) {
    TierArray a;
    a.values.fill(v);
    return a;
  }

  constexpr T& operator[](TierKind t) { return values[static_cast<size_t>(t)]; }
  constexpr const T& operator[](TierKind t) const { return values[static_cast<size_t>(t)]; }
  constexpr T& operator[](size_t i) { return values[i]; }
  constexpr const T& operator[](size_t i) const { return values[i]; }
  constexpr T* begin() { return values.data(); }
  constexpr T* end() { return values.data() + kNumTiers; }
  constexpr const T* begin() const { return values.data(); }
  constexpr const T* end() const { return values.data() + kNumTiers; }
  static constexpr size_t size() { return kNumTiers; }
  friend bool operator==(const TierArray&, const TierArray&) = default;
};

}  // namespace kvtier

#endif  // KVTIER_TIER_KIND_H_
