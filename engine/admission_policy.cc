// engine/admission_policy.cc — disk admission: a frequency filter and a write budget, composed
// (see engine/admission_policy.h).
//
// FrequencySketch is a count-min sketch of 4 rows x `sketch_width` 4-bit counters, packed 16
// to a 64-bit word (width / 2 bytes per row). A key's 4 counters come from disjoint slices of
// XXH3-128 of its 16 bytes, so the rows hash independently even for keys that are not
// uniformly distributed. Updates are conservative (only the counters at the key's minimum are
// raised), which keeps the estimate >= the true count and lowers the overcount other keys
// cause; counters saturate at 15. After every `aging_window`-th Record every counter is
// halved (TinyLFU's reset).
//
// WriteBudget is a token bucket refilled at write_budget_mbps * 1e6 bytes/s, holding at most
// one second of budget and starting full. A block is admitted if the bucket holds its bytes,
// or if the bucket is full (so a block larger than one second of budget is not refused
// forever: the bucket then goes into debt and later blocks wait for it to refill). Time that
// runs backwards refills nothing.
//
// The frequency check runs first, so a block refused for rarity spends no budget.

#include "engine/admission_policy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/mutex.h"
#include "xxhash.h"

namespace kvtier {
namespace {

constexpr uint32_t kMaxCount = 15;
constexpr uint32_t kMinSketchWidth = 64;
constexpr uint32_t kMaxSketchWidth = 1u << 24;

class FrequencySketch {
 public:
  static constexpr int kRows = 4;

  FrequencySketch(uint32_t width, uint32_t aging_window)
      : mask_(width - 1),
        words_per_row_(width / kCountersPerWord),
        aging_window_(aging_window),
        words_(static_cast<size_t>(kRows) * words_per_row_, 0) {}

  void Record(const BlockKey& key) {
    const std::array<uint32_t, kRows> slots = Slots(key);
    std::array<uint32_t, kRows> counts;
    uint32_t min = kMaxCount;
    for (int r = 0; r < kRows; ++r) {
      counts[r] = Get(r, slots[r]);
      min = std::min(min, counts[r]);
    }
    if (min < kMaxCount) {
      for (int r = 0; r < kRows; ++r) {
        if (counts[r] == min) Increment(r, slots[r]);
      }
    }
    if (++records_since_aging_ >= aging_window_) {
      Halve();
      records_since_aging_ = 0;
    }
  }

  uint32_t Estimate(const BlockKey& key) const {
    const std::array<uint32_t, kRows> slots = Slots(key);
    uint32_t min = kMaxCount;
    for (int r = 0; r < kRows; ++r) min = std::min(min, Get(r, slots[r]));
    return min;
  }

 private:
  static constexpr uint32_t kCountersPerWord = 16;

  // Four 24-bit slices of XXH3-128 (bits 0, 32, 64 and 96 up), one per row; the width is at
  // most 2^24, so the slices never overlap.
  std::array<uint32_t, kRows> Slots(const BlockKey& key) const {
    uint8_t bytes[16];
    for (int i = 0; i < 8; ++i) {
      bytes[i] = static_cast<uint8_t>(key.lo >> (8 * i));
      bytes[8 + i] = static_cast<uint8_t>(key.hi >> (8 * i));
    }
    const XXH128_hash_t h = XXH3_128bits(bytes, sizeof(bytes));
    return {static_cast<uint32_t>(h.low64) & mask_, static_cast<uint32_t>(h.low64 >> 32) & mask_,
            static_cast<uint32_t>(h.high64) & mask_, static_cast<uint32_t>(h.high64 >> 32) & mask_};
  }

  uint32_t Get(int row, uint32_t slot) const {
    const uint64_t word = words_[Word(row, slot)];
    return static_cast<uint32_t>(word >> Shift(slot)) & 0xF;
  }
  // REQUIRES: Get(row, slot) < kMaxCount.
  void Increment(int row, uint32_t slot) { words_[Word(row, slot)] += uint64_t{1} << Shift(slot); }
  void Halve() {
    for (uint64_t& w : words_) w = (w >> 1) & 0x7777777777777777ULL;
  }

  size_t Word(int row, uint32_t slot) const {
    return static_cast<size_t>(row) * words_per_row_ + slot / kCountersPerWord;
  }
  static int Shift(uint32_t slot) { return static_cast<int>(slot % kCountersPerWord) * 4; }

  const uint32_t mask_;
  const uint32_t words_per_row_;
  const uint32_t aging_window_;
  std::vector<uint64_t> words_;
  uint32_t records_since_aging_ = 0;
};

class WriteBudget {
 public:
  // `mbps` == 0: unlimited.
  explicit WriteBudget(double mbps)
      : bytes_per_second_(mbps * 1e6), capacity_(bytes_per_second_), tokens_(capacity_) {}

  bool TryTake(size_t bytes, absl::Time now) {
    if (bytes_per_second_ == 0) return true;
    if (!started_) {
      started_ = true;
      last_refill_ = now;
    } else if (now > last_refill_) {
      const double elapsed = absl::ToDoubleSeconds(now - last_refill_);
      tokens_ = std::min(capacity_, tokens_ + elapsed * bytes_per_second_);
      last_refill_ = now;
    }
    const auto need = static_cast<double>(bytes);
    if (tokens_ < need && tokens_ < capacity_) return false;
    tokens_ -= need;
    return true;
  }

 private:
  const double bytes_per_second_;
  const double capacity_;  // one second of budget
  double tokens_;          // may go negative after an oversized block (debt)
  absl::Time last_refill_;
  bool started_ = false;
};

class FilteredAdmissionPolicy final : public AdmissionPolicy {
 public:
  explicit FilteredAdmissionPolicy(const AdmissionOptions& options)
      : min_seen_(options.min_seen),
        sketch_(options.sketch_width,
                options.aging_window != 0 ? options.aging_window : 10 * options.sketch_width),
        budget_(options.write_budget_mbps) {}

  void Record(const BlockKey& key) override {
    MutexLock lock(&mu_);
    sketch_.Record(key);
  }

  bool Admit(const BlockKey& key, size_t bytes, absl::Time now) override {
    MutexLock lock(&mu_);
    if (min_seen_ > 1 && sketch_.Estimate(key) < min_seen_) {
      ++stats_.rejected_frequency;
      return false;
    }
    if (!budget_.TryTake(bytes, now)) {
      ++stats_.rejected_budget;
      return false;
    }
    ++stats_.admitted;
    return true;
  }

  uint32_t Estimate(const BlockKey& key) const override {
    MutexLock lock(&mu_);
    return sketch_.Estimate(key);
  }

  AdmissionStats stats() const override {
    MutexLock lock(&mu_);
    return stats_;
  }

 private:
  const uint32_t min_seen_;
  mutable Mutex mu_;
  FrequencySketch sketch_ ABSL_GUARDED_BY(mu_);
  WriteBudget budget_ ABSL_GUARDED_BY(mu_);
  AdmissionStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::Status AdmissionOptions::Validate() const {
  if (min_seen < 1 || min_seen > kMaxCount) {
    return absl::InvalidArgumentError(
        absl::StrFormat("AdmissionOptions.min_seen = %d must be in 1..%d", min_seen, kMaxCount));
  }
  if (!std::isfinite(write_budget_mbps) || write_budget_mbps < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "AdmissionOptions.write_budget_mbps = %g must be a finite number >= 0 (0 = unlimited)",
        write_budget_mbps));
  }
  if (sketch_width < kMinSketchWidth || sketch_width > kMaxSketchWidth ||
      (sketch_width & (sketch_width - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("AdmissionOptions.sketch_width = %d must be a power of two in [%d, %d]",
                        sketch_width, kMinSketchWidth, kMaxSketchWidth));
  }
  if (min_seen > 1 && aging_window != 0 && aging_window <= min_seen) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "AdmissionOptions.aging_window = %d halves every count before it can reach min_seen = "
        "%d; use a larger window (or 0 for 10 x sketch_width)",
        aging_window, min_seen));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AdmissionPolicy>> AdmissionPolicy::Create(
    const AdmissionOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  return std::make_unique<FilteredAdmissionPolicy>(options);
}

}  // namespace kvtier
