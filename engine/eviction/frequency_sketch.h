// engine/eviction/frequency_sketch.h — how often a key was seen lately, in a few bits.
//
// Count-min sketch of 4-bit counters, 4 rows, with TinyLFU's aging: after 10 × num_slots
// increments every counter is halved, so the estimate follows recent popularity. An estimate
// is never below the key's own count (as halved by aging, capped at 15): collisions only add.
// W-TinyLFU and LFU with aging use it. Not thread-safe.

#ifndef KVTIER_ENGINE_EVICTION_FREQUENCY_SKETCH_H_
#define KVTIER_ENGINE_EVICTION_FREQUENCY_SKETCH_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvtier {
namespace policy_internal {

class FrequencySketch {
 public:
  explicit FrequencySketch(uint32_t num_slots);
  // A sketch of at least `width` counters per row (rounded up to a power of two, >= 64) that
  // halves after `sample_size` increments (>= 1).
  FrequencySketch(uint32_t width, uint64_t sample_size);

  void Increment(uint64_t key);
  uint32_t Estimate(uint64_t key) const;
  // Increment(key), then Estimate(key), hashing the key once.
  uint32_t IncrementAndEstimate(uint64_t key);

 private:
  static constexpr int kDepth = 4;
  // Word and bit shift of `key`'s counter in `row`.
  void Locate(uint64_t key, int row, size_t* word, int* shift) const;
  void Halve();

  uint32_t width_;               // counters per row, a power of two >= 64
  std::vector<uint64_t> table_;  // kDepth rows of width_ counters, 16 per word
  uint64_t additions_ = 0;
  uint64_t sample_size_;
};

}  // namespace policy_internal
}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_FREQUENCY_SKETCH_H_
