// bench/workload_flags.h — the flags of the benchmarks that replay a workload (bench eviction,
// bench stress): which trace (workload::LoadBenchWorkload) and which eviction policies
// (workload::EnginePolicyAdapter), defined once on CLI11 (common/flags.h).

#ifndef KVTIER_BENCH_WORKLOAD_FLAGS_H_
#define KVTIER_BENCH_WORKLOAD_FLAGS_H_

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "common/flags.h"
#include "workload/engine_policy_adapter.h"

namespace kvtier::bench {

// --workload=mooncake|chat|rag|agent|scan|shift and --trace=PATH, the inputs of
// workload::LoadBenchWorkload.
inline void AddWorkloadFlags(CLI::App& app, std::string* workload, std::string* trace) {
  app.add_option("--workload", *workload,
                 "the Mooncake trace (--trace) or a generated chat, rag, agent or scan trace, "
                 "or shift (chat, then scan)")
      ->check(CLI::IsMember({"mooncake", "chat", "rag", "agent", "scan", "shift"}))
      ->capture_default_str();
  flags::AddTrace(app, trace);
}

// A check that a value names an engine eviction policy (workload::EnginePolicyNames, or one
// with "+prefix"), failing with EnginePolicyAdapter::Create's message.
inline CLI::Validator EnginePolicyName() {
  return CLI::Validator(
      [](std::string& name) -> std::string {
        absl::StatusOr<std::unique_ptr<workload::EnginePolicyAdapter>> p =
            workload::EnginePolicyAdapter::Create(name, 1);
        return p.ok() ? std::string() : std::string(p.status().message());
      },
      "POLICY");
}

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_WORKLOAD_FLAGS_H_
