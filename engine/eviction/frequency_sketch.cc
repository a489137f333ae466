// engine/eviction/frequency_sketch.cc — count-min sketch with aging (see the header).

#include "engine/eviction/frequency_sketch.h"

#include <algorithm>
#include <bit>

namespace kvtier {
namespace policy_internal {

namespace {

// splitmix64's finalizer: a cheap, well-mixing 64-bit hash (the key hashes may be slot ids).
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kRowSeeds[] = {0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL,
                                  0x165667b19e3779f9ULL, 0xd6e8feb86659fd93ULL};

}  // namespace

FrequencySketch::FrequencySketch(uint32_t num_slots)
    // Width ~ the number of slots keeps collisions rare among the blocks that matter (those
    // cached and the candidates), as Caffeine sizes its sketch; 64 is a floor for tiny tiers.
    : width_(std::bit_ceil(std::max<uint32_t>(num_slots, 64))),
      table_(static_cast<size_t>(kDepth) * (width_ / 16), 0),
      sample_size_(10 * static_cast<uint64_t>(std::max<uint32_t>(num_slots, 1))) {}

FrequencySketch::FrequencySketch(uint32_t width, uint64_t sample_size)
    : width_(std::bit_ceil(std::clamp<uint32_t>(width, 64, uint32_t{1} << 30))),
      table_(static_cast<size_t>(kDepth) * (width_ / 16), 0),
      sample_size_(std::max<uint64_t>(sample_size, 1)) {}

void FrequencySketch::Locate(uint64_t key, int row, size_t* word, int* shift) const {
  const uint32_t i = static_cast<uint32_t>(Mix64(key + kRowSeeds[row])) & (width_ - 1);
  *word = static_cast<size_t>(row) * (width_ / 16) + i / 16;
  *shift = static_cast<int>(i % 16) * 4;
}

void FrequencySketch::Increment(uint64_t key) {
  for (int row = 0; row < kDepth; ++row) {
    size_t word;
    int shift;
    Locate(key, row, &word, &shift);
    if (((table_[word] >> shift) & 0xf) != 0xf) table_[word] += uint64_t{1} << shift;
  }
  if (++additions_ >= sample_size_) Halve();
}

uint32_t FrequencySketch::Estimate(uint64_t key) const {
  uint32_t estimate = 0xf;
  for (int row = 0; row < kDepth; ++row) {
    size_t word;
    int shift;
    Locate(key, row, &word, &shift);
    estimate = std::min(estimate, static_cast<uint32_t>((table_[word] >> shift) & 0xf));
  }
  return estimate;
}

uint32_t FrequencySketch::IncrementAndEstimate(uint64_t key) {
  size_t word[kDepth];
  int shift[kDepth];
  for (int row = 0; row < kDepth; ++row) {
    Locate(key, row, &word[row], &shift[row]);
    if (((table_[word[row]] >> shift[row]) & 0xf) != 0xf)
      table_[word[row]] += uint64_t{1} << shift[row];
  }
  if (++additions_ >= sample_size_) Halve();
  uint32_t estimate = 0xf;
  for (int row = 0; row < kDepth; ++row) {
    estimate = std::min(estimate, static_cast<uint32_t>((table_[word[row]] >> shift[row]) & 0xf));
  }
  return estimate;
}

void FrequencySketch::Halve() {
  // Shifting a word right by one halves all 16 counters at once; the mask drops the bit each
  // counter would otherwise take from its neighbour.
  for (uint64_t& w : table_) w = (w >> 1) & 0x7777777777777777ULL;
  additions_ /= 2;
}

}  // namespace policy_internal
}  // namespace kvtier
