// io/fault_injector.cc — positional, deterministic fault selection (see fault_injector.h).

#include "io/fault_injector.h"

#include <vector>

namespace kvtier::io_internal {
namespace {

bool Matches(FaultSpec::Kind fault, IoOp::Kind op) {
  switch (fault) {
    case FaultSpec::Kind::kEio:
    case FaultSpec::Kind::kDelay:
      return true;
    case FaultSpec::Kind::kEnospc:
    case FaultSpec::Kind::kShortWrite:
      return op == IoOp::Kind::kWrite;
    case FaultSpec::Kind::kShortRead:
      return op == IoOp::Kind::kRead;
  }
  return false;
}

InjectedFault ToInjected(FaultSpec::Kind fault) {
  switch (fault) {
    case FaultSpec::Kind::kEio:
      return InjectedFault::kEio;
    case FaultSpec::Kind::kEnospc:
      return InjectedFault::kEnospc;
    case FaultSpec::Kind::kShortRead:
      return InjectedFault::kShortRead;
    case FaultSpec::Kind::kShortWrite:
      return InjectedFault::kShortWrite;
    case FaultSpec::Kind::kDelay:
      return InjectedFault::kDelay;
  }
  return InjectedFault::kNone;
}

}  // namespace

void FaultInjector::Add(const FaultSpec& spec) { active_.push_back(Active{spec, 0}); }

InjectedFault FaultInjector::Claim(IoOp::Kind kind, absl::Duration* delay) {
  InjectedFault hit = InjectedFault::kNone;
  for (Active& a : active_) {
    if (!Matches(a.spec.kind, kind)) continue;
    const uint64_t n = a.seen++;  // this op is matching op n + 1
    const bool in_window =
        n >= a.spec.skip && (a.spec.count == 0 || n - a.spec.skip < a.spec.count);
    if (in_window && hit == InjectedFault::kNone) {
      hit = ToInjected(a.spec.kind);
      if (hit == InjectedFault::kDelay && delay != nullptr) *delay = a.spec.delay;
    }
  }
  std::erase_if(active_, [](const Active& a) {
    return a.spec.count != 0 && a.seen >= a.spec.skip && a.seen - a.spec.skip >= a.spec.count;
  });
  return hit;
}

}  // namespace kvtier::io_internal
