// tiers/read_claim.h — who may write a read's destination: the tier that reads into it, or
// the reader that gave up on it.
//
// A reader with a deadline (a Load that must not wait past it) may abandon a read whose bytes
// have not arrived: from then on the tier never writes the destination, so the reader can
// zero it and let its copies go. The tier claims the destination before it writes it (the
// verified bytes, a decode, or zeros after a failure); once claimed, the reader can no
// longer abandon it and waits for the write, which is a copy or a decode, never I/O.
// Exactly one of Claim and Abandon succeeds, once, and the outcome never changes.
// (An in-place read, DiskTierOptions::read_in_place, is the exception: its I/O writes the
// destination directly, so until it settles an abandoned one may still land the block's own
// bytes there. Its reader keeps the destination out of use until then, as with any read.)
//
// Thread-safe (one atomic).

#ifndef KVTIER_TIERS_READ_CLAIM_H_
#define KVTIER_TIERS_READ_CLAIM_H_

#include <atomic>
#include <cstdint>

namespace kvtier {

class ReadClaim {
 public:
  // The tier: may it write the destination? False once the reader abandoned it: the tier
  // then leaves the destination alone and reports the read as Cancelled.
  bool Claim() { return Settle(kClaimed) == kClaimed; }
  // The reader: true when the tier will never write the destination (it is the reader's
  // again); false when the tier has claimed it (its write is under way or done).
  bool Abandon() { return Settle(kAbandoned) == kAbandoned; }
  // A read nobody has claimed or abandoned yet.
  bool open() const { return state_.load(std::memory_order_acquire) == kOpen; }
  bool abandoned() const { return state_.load(std::memory_order_acquire) == kAbandoned; }

 private:
  enum : uint8_t { kOpen = 0, kClaimed = 1, kAbandoned = 2 };
  // Moves kOpen to `to`; returns the final state either way.
  uint8_t Settle(uint8_t to) {
    uint8_t expected = kOpen;
    if (state_.compare_exchange_strong(expected, to, std::memory_order_acq_rel)) return to;
    return expected;
  }

  std::atomic<uint8_t> state_{kOpen};
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_READ_CLAIM_H_
