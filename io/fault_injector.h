// io/fault_injector.h — decides, deterministically, which submitted ops an injected fault hits.
//
// Each active FaultSpec counts the ops that match it (reads for kShortRead, writes for kEnospc
// and kShortWrite, any op for kEio and kDelay) in the order they are claimed, from the moment it was
// added; matching op number k (from 1) is hit when skip < k <= skip + count (count 0: no upper
// bound). When two faults hit the same op the one added first applies; the other still counts
// the op. A fault whose window has passed is dropped. No randomness, no clocks.
//
// Not thread-safe: the engine calls it under its own lock, in Submit order.

#ifndef KVTIER_IO_FAULT_INJECTOR_H_
#define KVTIER_IO_FAULT_INJECTOR_H_

#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "io/io_engine.h"

namespace kvtier::io_internal {

enum class InjectedFault : uint8_t { kNone, kEio, kEnospc, kShortRead, kShortWrite, kDelay };

class FaultInjector {
 public:
  void Add(const FaultSpec& spec);
  void Clear() { active_.clear(); }
  // The fault for the next submitted op of `kind` (kNone for most), counting it. For kDelay,
  // *delay (if given) receives how long the op is held.
  InjectedFault Claim(IoOp::Kind kind, absl::Duration* delay = nullptr);

 private:
  struct Active {
    FaultSpec spec;
    uint64_t seen = 0;  // matching ops claimed since Add
  };
  std::vector<Active> active_;
};

}  // namespace kvtier::io_internal

#endif  // KVTIER_IO_FAULT_INJECTOR_H_
