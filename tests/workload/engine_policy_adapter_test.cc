// tests/workload/engine_policy_adapter_test.cc — the engine's eviction policies driven by the
// simulator through EnginePolicyAdapter: the engine's LRU reproduces the simulator's own LRU
// exactly, textbook fault counts, and every policy runs on every generator within the
// offline optima.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workload/engine_policy_adapter.h"
#include "workload/generators.h"
#include "workload/simulator.h"
#include "workload/trace.h"

namespace kvtier::workload {
namespace {

using ::testing::HasSubstr;

struct NamedTrace {
  const char* name;
  std::vector<Request> requests;
};

std::vector<NamedTrace> Generated(uint64_t seed) {
  ChatParams chat;
  chat.seed = seed;
  RagParams rag;
  rag.seed = seed;
  AgentParams agent;
  agent.seed = seed;
  ScanParams scan;
  scan.seed = seed;
  return {{"chat", *GenerateChat(chat)},
          {"rag", *GenerateRag(rag)},
          {"agent", *GenerateAgent(agent)},
          {"scan", *GenerateScan(scan)}};
}

std::unique_ptr<EnginePolicyAdapter> Adapter(const std::string& name, size_t capacity) {
  absl::StatusOr<std::unique_ptr<EnginePolicyAdapter>> a =
      EnginePolicyAdapter::Create(name, capacity);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(*a) : nullptr;
}

void ExpectSameResult(const SimResult& a, const SimResult& b) {
  EXPECT_EQ(a.requests, b.requests);
  EXPECT_EQ(a.block_refs, b.block_refs);
  EXPECT_EQ(a.block_hits, b.block_hits);
  EXPECT_EQ(a.prefix_hit_blocks, b.prefix_hit_blocks);
  EXPECT_EQ(a.insertions, b.insertions);
  EXPECT_EQ(a.evictions, b.evictions);
  EXPECT_EQ(a.bypassed, b.bypassed);
}

std::vector<size_t> Capacities(const std::vector<Request>& t) {
  const uint64_t unique = Summarize(t).unique_blocks;
  return {0, 1, unique / 50, unique / 20, unique / 5, unique / 2, unique};
}

TEST(EnginePolicyAdapter, UnknownNameIsInvalidArgument) {
  absl::StatusOr<std::unique_ptr<EnginePolicyAdapter>> a =
      EnginePolicyAdapter::Create("random", 8);
  ASSERT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("random"));
}

TEST(EnginePolicyAdapter, EveryNameCreatesAnEmptyPolicy) {
  for (const std::string& name : EnginePolicyNames()) {
    std::unique_ptr<EnginePolicyAdapter> a = Adapter(name, 4);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(std::string(a->name()), name);
    EXPECT_EQ(a->capacity(), 4u);
    EXPECT_EQ(a->Victim(), std::nullopt);
  }
}

TEST(EnginePolicyAdapter, PlainRemovalFreesTheSlotForReuse) {
  // A removal that no Victim() chose (the engine's Erase) must leave the policy consistent:
  // the freed slot is reused and every victim offered afterwards is a tracked block.
  for (const std::string& name : EnginePolicyNames()) {
    SCOPED_TRACE(name);
    std::unique_ptr<EnginePolicyAdapter> a = Adapter(name, 3);
    ASSERT_NE(a, nullptr);
    a->Insert(10);
    a->Insert(20);
    a->Insert(30);
    a->Remove(20);
    EXPECT_EQ(a->size(), 2u);
    a->Insert(40);
    std::vector<uint64_t> seen;
    for (int i = 0; i < 3; ++i) {
      std::optional<uint64_t> v = a->Victim();
      ASSERT_TRUE(v.has_value());
      EXPECT_NE(*v, 20u);
      EXPECT_THAT(seen, ::testing::Not(::testing::Contains(*v)));
      seen.push_back(*v);
      a->Remove(*v);
    }
    EXPECT_EQ(a->Victim(), std::nullopt);
  }
}

TEST(EnginePolicyAdapter, TextbookFaultCounts) {
  // Silberschatz et al.'s reference string with 3 frames: 12 faults under LRU, 15 under FIFO.
  std::vector<Request> t;
  for (uint64_t id : {7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1}) {
    Request r;
    r.blocks = {id};
    t.push_back(r);
  }
  for (const auto& [name, faults] : {std::pair<std::string, uint64_t>{"lru", 12},
                                     std::pair<std::string, uint64_t>{"fifo", 15}}) {
    SCOPED_TRACE(name);
    std::unique_ptr<EnginePolicyAdapter> a = Adapter(name, 3);
    absl::StatusOr<SimResult> r = Simulate(t, 3, *a);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->block_refs - r->block_hits, faults);
  }
}

TEST(EnginePolicyAdapter, EngineLruMatchesSimulatorLruOnEveryGenerator) {
  for (const NamedTrace& t : Generated(77)) {
    for (size_t capacity : Capacities(t.requests)) {
      SCOPED_TRACE(absl::StrCat(t.name, " at ", capacity, " blocks"));
      LruCachePolicy reference;
      absl::StatusOr<SimResult> want = Simulate(t.requests, capacity, reference);
      ASSERT_TRUE(want.ok()) << want.status();
      std::unique_ptr<EnginePolicyAdapter> a = Adapter("lru", capacity);
      absl::StatusOr<SimResult> got = Simulate(t.requests, capacity, *a);
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSameResult(*got, *want);
      EXPECT_EQ(a->size(), reference.size());
    }
  }
}

TEST(EnginePolicyAdapter, EveryPolicyRunsOnEveryGeneratorWithinTheOptima) {
  for (const NamedTrace& t : Generated(5)) {
    for (size_t capacity : Capacities(t.requests)) {
      const SimResult min = SimulateBelady(t.requests, capacity);
      const SimResult min_prefix = SimulateBeladyPrefix(t.requests, capacity);
      for (const std::string& name : EnginePolicyNames()) {
        SCOPED_TRACE(absl::StrCat(name, " on ", t.name, " at ", capacity, " blocks"));
        std::unique_ptr<EnginePolicyAdapter> a = Adapter(name, capacity);
        ASSERT_NE(a, nullptr);
        absl::StatusOr<SimResult> r = Simulate(t.requests, capacity, *a);
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_EQ(r->block_refs, min.block_refs);
        EXPECT_LE(r->prefix_hit_blocks, r->block_hits);
        EXPECT_LE(a->size(), capacity);
        EXPECT_EQ(r->insertions - r->evictions, a->size());
        // Every policy here inserts on every miss (demand paging), where MIN is optimal for
        // block hits; the prefix-aware MIN is the reference ceiling for prefix hits.
        EXPECT_LE(r->block_hits, min.block_hits);
        EXPECT_LE(r->prefix_hit_blocks, min_prefix.prefix_hit_blocks);
        if (capacity >= Summarize(t.requests).unique_blocks) {
          // Nothing is ever evicted: every policy is the unbounded cache.
          EXPECT_EQ(r->evictions, 0u);
          EXPECT_EQ(r->block_hits, min.block_hits);
        }
      }
    }
  }
}

TEST(EnginePolicyAdapter, SharedTraceEngineLruMatchesSimulatorLru) {
  const std::string path =
      std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no shared trace at " << path;
  absl::StatusOr<std::vector<Request>> t = ReadMooncakeTrace(path);
  ASSERT_TRUE(t.ok()) << t.status();
  const size_t capacity = Summarize(*t).unique_blocks / 8;
  LruCachePolicy reference;
  absl::StatusOr<SimResult> want = Simulate(*t, capacity, reference);
  ASSERT_TRUE(want.ok());
  std::unique_ptr<EnginePolicyAdapter> a = Adapter("lru", capacity);
  absl::StatusOr<SimResult> got = Simulate(*t, capacity, *a);
  ASSERT_TRUE(got.ok());
  ExpectSameResult(*got, *want);
}

}  // namespace
}  // namespace kvtier::workload
