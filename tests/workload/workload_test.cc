// tests/workload/workload_test.cc — the eviction study's workload library: trace readers
// (good and malformed input, the shared Mooncake trace when present), CSV round trip,
// generator determinism and shape, the simulator on hand traces, and MIN against LRU.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workload/generators.h"
#include "workload/simulator.h"
#include "workload/trace.h"

namespace kvtier::workload {
namespace {

using ::testing::HasSubstr;

std::string SharedTracePath() {
  return std::string(KVTIER_SOURCE_DIR) + "/../shared/traces/mooncake_synthetic_trace.jsonl";
}

absl::StatusOr<std::vector<Request>> ReadMooncakeText(const std::string& text) {
  std::istringstream in(text);
  return ReadMooncakeTrace(in, "inline.jsonl");
}

absl::StatusOr<std::vector<Request>> ReadCsvText(const std::string& text) {
  std::istringstream in(text);
  return ReadCsvTrace(in, "inline.csv");
}

Request Req(std::vector<uint64_t> blocks) {
  Request r;
  r.blocks = std::move(blocks);
  return r;
}

// ---------------------------------------------------------------------------------------
// Readers.

TEST(MooncakeReader, ReadsLinesSkipsBlanksAndUnknownKeys) {
  const std::string text =
      "{\"timestamp\": 27482, \"input_length\": 1000, \"output_length\": 52, "
      "\"hash_ids\": [46, 47]}\n"
      "\n"
      "   \r\n"
      "{\"hash_ids\":[18446744073709551615],\"output_length\":0,\"timestamp\":1.5,"
      "\"extra\":{\"a\":[1,{\"b\":null}],\"c\":\"x\\\"y\"},\"tenant\":\"t\\u00e9\"}\r\n";
  absl::StatusOr<std::vector<Request>> got = ReadMooncakeText(text);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_DOUBLE_EQ((*got)[0].time_s, 27.482);
  EXPECT_EQ((*got)[0].blocks, (std::vector<uint64_t>{46, 47}));
  EXPECT_EQ((*got)[0].output_tokens, 52u);
  EXPECT_EQ((*got)[0].tenant, "");
  EXPECT_DOUBLE_EQ((*got)[1].time_s, 0.0015);
  EXPECT_EQ((*got)[1].blocks, (std::vector<uint64_t>{18446744073709551615ull}));
  EXPECT_EQ((*got)[1].tenant, "t\xc3\xa9");
}

TEST(MooncakeReader, RejectsMalformedLinesNamingTheLine) {
  const std::string good = "{\"timestamp\": 0, \"output_length\": 1, \"hash_ids\": [1]}\n";
  struct Case {
    std::string line;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"not json", "expected '{'"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1, 2", "expected ',' or ']'"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1, 2]", "expected ',' or '}'"},
      {"{\"timestamp\": 1, \"output_length\": 2}", "missing field \"hash_ids\""},
      {"{\"output_length\": 2, \"hash_ids\": [1]}", "missing field \"timestamp\""},
      {"{\"timestamp\": 1, \"hash_ids\": [1]}", "missing field \"output_length\""},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": \"1 2\"}",
       "\"hash_ids\" must be an array, not a string"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1, -2]}",
       "hash_ids[1] is not a non-negative integer below 2^64: -2"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1, 2.5]}",
       "hash_ids[1] is not a non-negative integer"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1, 1e3]}",
       "hash_ids[1] is not a non-negative integer"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [18446744073709551616]}",
       "hash_ids[0] is not a non-negative integer below 2^64"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1, \"2\"]}",
       "hash_ids[1] must be an integer, not a string"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": []}", "\"hash_ids\" is empty"},
      {"{\"timestamp\": 1, \"output_length\": 2.5, \"hash_ids\": [1]}",
       "\"output_length\" is not a non-negative integer below 2^32"},
      {"{\"timestamp\": 1, \"output_length\": 4294967296, \"hash_ids\": [1]}",
       "\"output_length\" is not a non-negative integer below 2^32"},
      {"{\"timestamp\": -1, \"output_length\": 2, \"hash_ids\": [1]}",
       "\"timestamp\" must be a finite number >= 0"},
      {"{\"timestamp\": \"1\", \"output_length\": 2, \"hash_ids\": [1]}",
       "\"timestamp\" must be a number, not a string"},
      {"{\"timestamp\": 1, \"timestamp\": 2, \"output_length\": 2, \"hash_ids\": [1]}",
       "duplicate key \"timestamp\""},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1]} x", "trailing characters"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1], \"tenant\": 5}",
       "\"tenant\" must be a string, not a number"},
      {"{\"timestamp\": 01, \"output_length\": 2, \"hash_ids\": [1]}", "bad JSON"},
      {"{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [1], \"x\": tru}",
       "expected a value"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    // The bad line is line 3: a good line and a blank line come first.
    absl::StatusOr<std::vector<Request>> got = ReadMooncakeText(good + "\n" + c.line + "\n" + good);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr("inline.jsonl:3: "));
    EXPECT_THAT(got.status().message(), HasSubstr(c.message));
  }
}

TEST(MooncakeReader, MissingFileIsNotFound) {
  absl::StatusOr<std::vector<Request>> got = ReadMooncakeTrace("/nonexistent/trace.jsonl");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr("/nonexistent/trace.jsonl"));
}

TEST(MooncakeReader, SharedTrace) {
  const std::string path = SharedTracePath();
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << "shared trace not found at " << path
                 << " (it lives beside the checkout, in ../shared/traces)";
  }
  absl::StatusOr<std::vector<Request>> trace = ReadMooncakeTrace(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  // The figures its README states.
  const TraceSummary s = Summarize(*trace);
  EXPECT_EQ(s.requests, 3993u);
  EXPECT_EQ(s.block_refs, 121877u);
  EXPECT_EQ(s.unique_blocks, 43924u);
  EXPECT_NEAR(s.reuse_ratio, 0.640, 0.0005);
  EXPECT_TRUE(s.time_sorted);
  EXPECT_EQ(s.tenants, 1u);
  EXPECT_LE(s.prefix_reuse_ratio, s.reuse_ratio);

  // The offline references against LRU at a cache of ~1/8 of the footprint.
  const size_t capacity = s.unique_blocks / 8;
  LruCachePolicy lru;
  absl::StatusOr<SimResult> l = Simulate(*trace, capacity, lru);
  ASSERT_TRUE(l.ok()) << l.status();
  const SimResult b = SimulateBelady(*trace, capacity);
  const SimResult bp = SimulateBeladyPrefix(*trace, capacity);
  EXPECT_GE(b.block_hits, l->block_hits);
  EXPECT_GE(bp.prefix_hit_blocks, l->prefix_hit_blocks);
  EXPECT_GE(bp.prefix_hit_blocks, b.prefix_hit_blocks);
  EXPECT_LE(bp.prefix_hit_ratio(), s.prefix_reuse_ratio);
  std::printf(
      "shared trace, capacity %zu blocks: LRU %.4f/%.4f, MIN %.4f/%.4f, "
      "prefix-MIN %.4f/%.4f (block/prefix hit ratio)\n",
      capacity, l->block_hit_ratio(), l->prefix_hit_ratio(), b.block_hit_ratio(),
      b.prefix_hit_ratio(), bp.block_hit_ratio(), bp.prefix_hit_ratio());
}

TEST(CsvReader, ReadsGoodInput) {
  const std::string text =
      "\n"
      "time_s,tenant,output_tokens,blocks\r\n"
      "0.125,alice,52,46 47 48\n"
      "\n"
      "2,,0, 7  8 \n";
  absl::StatusOr<std::vector<Request>> got = ReadCsvText(text);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].time_s, 0.125);
  EXPECT_EQ((*got)[0].tenant, "alice");
  EXPECT_EQ((*got)[0].output_tokens, 52u);
  EXPECT_EQ((*got)[0].blocks, (std::vector<uint64_t>{46, 47, 48}));
  EXPECT_EQ((*got)[1].tenant, "");
  EXPECT_EQ((*got)[1].blocks, (std::vector<uint64_t>{7, 8}));
}

TEST(CsvReader, RejectsMalformedLinesNamingTheLine) {
  const std::string header = "time_s,tenant,output_tokens,blocks\n";
  const std::string good = "1,t,2,3 4\n";
  struct Case {
    std::string line;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"1,t,2", "expected 4 comma-separated fields"},
      {"1,t,2,3,4", "expected 4 comma-separated fields"},
      {"abc,t,2,3", "time_s must be a finite number >= 0"},
      {"nan,t,2,3", "time_s must be a finite number >= 0"},
      {"-1,t,2,3", "time_s must be a finite number >= 0"},
      {"1,t,x,3", "output_tokens is not a non-negative integer"},
      {"1,t,-2,3", "output_tokens is not a non-negative integer"},
      {"1,t,2,3 -4", "blocks[1] is not a non-negative integer below 2^64: '-4'"},
      {"1,t,2,3 4.0", "blocks[1] is not a non-negative integer"},
      {"1,t,2,", "blocks is empty"},
      // Found by fuzz_trace_csv: a '\r' inside a line (not its ending) was read into the
      // tenant, a trace WriteCsvTrace then refused to write back.
      {"1,t\r,2,3", "tenant contains a carriage return: 't\\r'"},
      {"1,\r\r,2,3", "tenant contains a carriage return"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    // Header on line 1, a good line on 2, the bad line on 3.
    absl::StatusOr<std::vector<Request>> got = ReadCsvText(header + good + c.line + "\n");
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr("inline.csv:3: "));
    EXPECT_THAT(got.status().message(), HasSubstr(c.message));
  }
  absl::StatusOr<std::vector<Request>> no_header = ReadCsvText("\n" + good);
  EXPECT_THAT(no_header.status().message(), HasSubstr("inline.csv:2: expected the header"));
  absl::StatusOr<std::vector<Request>> empty = ReadCsvText("");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  // A header alone is an empty trace, not an error.
  absl::StatusOr<std::vector<Request>> header_only = ReadCsvText(header);
  ASSERT_TRUE(header_only.ok());
  EXPECT_TRUE(header_only->empty());
}

TEST(CsvTrace, RoundTripIsExact) {
  absl::StatusOr<std::vector<Request>> chat = GenerateChat(ChatParams{});
  ASSERT_TRUE(chat.ok()) << chat.status();
  std::vector<Request> trace = *chat;
  trace.push_back(Request{0.1, {0, 18446744073709551615ull}, 4294967295u, ""});
  trace.push_back(Request{1e-300, {5}, 0, "a b"});
  std::stringstream buf;
  ASSERT_TRUE(WriteCsvTrace(trace, buf).ok());
  absl::StatusOr<std::vector<Request>> back = ReadCsvTrace(buf, "buffer");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, trace);

  // Through a file.
  const std::string path = ::testing::TempDir() + "/kvtier_workload_roundtrip.csv";
  ASSERT_TRUE(WriteCsvTrace(trace, path).ok());
  absl::StatusOr<std::vector<Request>> from_file = ReadCsvTrace(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(*from_file, trace);
  std::filesystem::remove(path);
}

TEST(CsvTrace, WriterRejectsWhatTheFormatCannotHold) {
  std::stringstream buf;
  absl::Status s = WriteCsvTrace({Req({1}), Request{0, {1}, 0, "a,b"}}, buf);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("request 1"));
  EXPECT_EQ(WriteCsvTrace({Request{-1, {1}, 0, ""}}, buf).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteCsvTrace({Req({})}, buf).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Summary, CountsOnAHandTrace) {
  std::vector<Request> t = {Req({1, 2}), Req({1, 2, 3}), Req({4}), Req({9, 2, 3})};
  t[0].time_s = 1;
  t[1].time_s = 3;
  t[2].time_s = 2;
  t[3].tenant = "x";
  const TraceSummary s = Summarize(t);
  EXPECT_EQ(s.requests, 4u);
  EXPECT_EQ(s.block_refs, 9u);
  EXPECT_EQ(s.unique_blocks, 5u);
  EXPECT_EQ(s.footprint_tokens, 5u * kTokensPerBlock);
  EXPECT_EQ(s.max_request_blocks, 3u);
  EXPECT_DOUBLE_EQ(s.mean_request_blocks, 9.0 / 4);
  EXPECT_DOUBLE_EQ(s.reuse_ratio, 4.0 / 9);         // 1 2 in request 2; 2 3 in request 4
  EXPECT_DOUBLE_EQ(s.prefix_reuse_ratio, 2.0 / 9);  // request 4 misses its first block
  EXPECT_DOUBLE_EQ(s.mean_reused_prefix_blocks, 2.0 / 4);
  EXPECT_EQ(s.tenants, 2u);
  EXPECT_FALSE(s.time_sorted);
  EXPECT_DOUBLE_EQ(s.duration_s, 3);
  EXPECT_THAT(FormatSummary(s), HasSubstr("unique blocks        5"));
}

// ---------------------------------------------------------------------------------------
// Samplers and generators.

TEST(Samplers, UniformIntCoversItsRangeOnly) {
  std::mt19937_64 rng(7);
  std::vector<int> seen(5);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t v = UniformInt(rng, 3, 7);
    ASSERT_GE(v, 3u);
    ASSERT_LE(v, 7u);
    ++seen[v - 3];
  }
  for (int c : seen) EXPECT_GT(c, 150);
  EXPECT_EQ(UniformInt(rng, 4, 4), 4u);
  for (int i = 0; i < 100; ++i) {
    const double u = UniformDouble(rng);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(Samplers, ZipfMatchesItsDistribution) {
  absl::StatusOr<ZipfSampler> z = ZipfSampler::Create(100, 1.0);
  ASSERT_TRUE(z.ok());
  double harmonic = 0;
  for (int k = 1; k <= 100; ++k) harmonic += 1.0 / k;
  EXPECT_NEAR(z->Probability(0), 1 / harmonic, 1e-12);
  EXPECT_NEAR(z->Probability(9), 0.1 / harmonic, 1e-12);
  EXPECT_EQ(z->Probability(100), 0);
  std::mt19937_64 rng(11);
  std::vector<int> counts(100);
  constexpr int kSamples = 100000;
  for (int i = 0; i < kSamples; ++i) ++counts[z->Sample(rng)];
  EXPECT_EQ(std::max_element(counts.begin(), counts.end()) - counts.begin(), 0);
  EXPECT_NEAR(counts[0] / double{kSamples}, z->Probability(0), 0.01);
  EXPECT_NEAR(counts[1] / double{kSamples}, z->Probability(1), 0.01);
  EXPECT_GT(counts[0], counts[1]);
  EXPECT_GT(counts[1], counts[4]);

  EXPECT_FALSE(ZipfSampler::Create(0, 1.0).ok());
  EXPECT_FALSE(ZipfSampler::Create(10, -1).ok());
  absl::StatusOr<ZipfSampler> uniform = ZipfSampler::Create(4, 0);
  ASSERT_TRUE(uniform.ok());
  EXPECT_DOUBLE_EQ(uniform->Probability(3), 0.25);
}

// The four generators at their defaults with `seed`.
std::vector<std::vector<Request>> AllGenerators(uint64_t seed) {
  ChatParams chat;
  chat.seed = seed;
  RagParams rag;
  rag.seed = seed;
  AgentParams agent;
  agent.seed = seed;
  ScanParams scan;
  scan.seed = seed;
  return {*GenerateChat(chat), *GenerateRag(rag), *GenerateAgent(agent), *GenerateScan(scan)};
}

TEST(Generators, DeterministicGivenTheSeed) {
  const std::vector<std::vector<Request>> a = AllGenerators(42);
  const std::vector<std::vector<Request>> b = AllGenerators(42);
  const std::vector<std::vector<Request>> c = AllGenerators(43);
  for (size_t g = 0; g < a.size(); ++g) {
    SCOPED_TRACE(g);
    ASSERT_FALSE(a[g].empty());
    EXPECT_EQ(a[g], b[g]);
    EXPECT_NE(a[g], c[g]);
    EXPECT_TRUE(Summarize(a[g]).time_sorted);
  }
}

TEST(Generators, PinnedOutput) {
  // Pinned values catch a change of algorithm, which would silently change every trace a
  // study generated before it. mt19937_64's output is fixed by the standard; the rest is
  // this library's code. Update the constants only for a deliberate change.
  std::vector<Request> c = *GenerateChat(ChatParams{});
  EXPECT_EQ(c.size(), 324u);
  EXPECT_EQ(c.front().blocks.front(), 4408516914421247679ull);
  EXPECT_EQ(c.back().blocks.back(), 655978022459287316ull);
  EXPECT_EQ(GenerateRag(RagParams{})->back().blocks.back(), 744615600956641791ull);
  EXPECT_EQ(GenerateAgent(AgentParams{})->back().blocks.back(), 5469483352442326011ull);
  EXPECT_EQ(GenerateScan(ScanParams{})->back().blocks.back(), 6646911811829365428ull);
  std::mt19937_64 rng(1);
  absl::StatusOr<ZipfSampler> z = ZipfSampler::Create(1000, 0.9);
  ASSERT_TRUE(z.ok());
  std::vector<uint64_t> samples;
  for (int i = 0; i < 8; ++i) samples.push_back(z->Sample(rng));
  EXPECT_EQ(samples, (std::vector<uint64_t>{1, 1, 32, 0, 14, 619, 37, 0}));
}

// Requests that extend an earlier request exactly (its blocks are a strict prefix of
// theirs). With prefix-chained ids a request is named by its last block id.
size_t CountExtendingEarlier(const std::vector<Request>& trace) {
  absl::flat_hash_set<uint64_t> ends;
  size_t n = 0;
  for (const Request& r : trace) {
    for (size_t i = 0; i + 1 < r.blocks.size(); ++i) {
      if (ends.contains(r.blocks[i])) {
        ++n;
        break;
      }
    }
    ends.insert(r.blocks.back());
  }
  return n;
}

TEST(Generators, ChatTurnsExtendEarlierTurnsOverSharedSystemPrompts) {
  ChatParams p;
  absl::StatusOr<std::vector<Request>> t = GenerateChat(p);
  ASSERT_TRUE(t.ok());
  // Every turn but each session's first extends the session's previous turn.
  EXPECT_EQ(CountExtendingEarlier(*t), t->size() - p.num_sessions);
  absl::flat_hash_set<uint64_t> system_prompts;
  for (const Request& r : *t) {
    ASSERT_GT(r.blocks.size(), p.system_prompt_blocks);
    system_prompts.insert(r.blocks[p.system_prompt_blocks - 1]);
    EXPECT_EQ(r.output_tokens % kTokensPerBlock, 0u);
    EXPECT_THAT(r.tenant, ::testing::StartsWith("chat-"));
  }
  EXPECT_LE(system_prompts.size(), p.num_system_prompts);
  EXPECT_GE(system_prompts.size(), 2u);
  EXPECT_GE(t->size(), p.num_sessions * p.min_turns);
  EXPECT_LE(t->size(), p.num_sessions * p.max_turns);
}

TEST(Generators, RagHeadDocumentIsMostFrequentAndQuestionsAreUnique) {
  RagParams p;
  absl::StatusOr<std::vector<Request>> t = GenerateRag(p);
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), p.num_queries);
  absl::flat_hash_map<uint64_t, int> doc_count;  // first document block -> requests
  absl::flat_hash_set<uint64_t> instructions, last_blocks;
  for (const Request& r : *t) {
    instructions.insert(r.blocks[p.instruction_blocks - 1]);
    ++doc_count[r.blocks[p.instruction_blocks]];
    last_blocks.insert(r.blocks.back());
  }
  EXPECT_EQ(instructions.size(), 1u);
  EXPECT_EQ(last_blocks.size(), p.num_queries);  // no question is asked twice
  std::vector<int> counts;
  for (const auto& [id, n] : doc_count) counts.push_back(n);
  std::sort(counts.rbegin(), counts.rend());
  const double p0 = ZipfSampler::Create(p.num_documents, p.alpha)->Probability(0);
  EXPECT_NEAR(counts[0] / double(p.num_queries), p0, 0.03);
  EXPECT_GT(counts[0], 1.5 * counts[1]);  // Zipf(1): rank 0 twice as likely as rank 1
}

TEST(Generators, AgentStepsResendTheWholeHistory) {
  AgentParams p;
  absl::StatusOr<std::vector<Request>> t = GenerateAgent(p);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(CountExtendingEarlier(*t), t->size() - p.num_agents);
  const uint64_t tools = (*t)[0].blocks[p.shared_prompt_blocks - 1];
  size_t longest = 0;
  for (const Request& r : *t) {
    EXPECT_EQ(r.blocks[p.shared_prompt_blocks - 1], tools);
    longest = std::max(longest, r.blocks.size());
  }
  EXPECT_GE(longest, p.shared_prompt_blocks + p.task_blocks + p.min_steps * p.min_step_blocks);
}

TEST(Generators, ScanBlocksNeverRepeatAndTheHotSetIsSmall) {
  ScanParams p;
  absl::StatusOr<std::vector<Request>> t = GenerateScan(p);
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), p.scan_requests * (1 + p.hot_requests_per_scan));
  absl::flat_hash_map<uint64_t, int> refs;
  absl::flat_hash_set<uint64_t> scan_ids, hot_ids;
  for (const Request& r : *t) {
    for (uint64_t id : r.blocks) {
      ++refs[id];
      (r.tenant == "scan" ? scan_ids : hot_ids).insert(id);
    }
  }
  EXPECT_EQ(scan_ids.size(), size_t{p.scan_requests} * p.scan_request_blocks);
  for (uint64_t id : scan_ids) ASSERT_EQ(refs[id], 1) << "scan block " << id << " repeats";
  EXPECT_LE(hot_ids.size(), size_t{p.hot_prompts} * p.hot_prompt_blocks);
}

TEST(Generators, RejectBadParameters) {
  ChatParams chat;
  chat.min_turns = 5;
  chat.max_turns = 2;
  absl::StatusOr<std::vector<Request>> c = GenerateChat(chat);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("min_turns"));
  RagParams rag;
  rag.alpha = -1;
  EXPECT_EQ(GenerateRag(rag).status().code(), absl::StatusCode::kInvalidArgument);
  AgentParams agent;
  agent.agent_rate_per_s = 0;
  EXPECT_THAT(GenerateAgent(agent).status().message(), HasSubstr("agent_rate_per_s"));
  ScanParams scan;
  scan.hot_prompts = 0;
  EXPECT_THAT(GenerateScan(scan).status().message(), HasSubstr("hot_prompts"));
}

// ---------------------------------------------------------------------------------------
// Simulator.

std::vector<Request> OneBlockRequests(const std::vector<uint64_t>& ids) {
  std::vector<Request> t;
  for (uint64_t id : ids) t.push_back(Req({id}));
  return t;
}

TEST(Simulator, TextbookReferenceStringUnderMinAndLru) {
  // Silberschatz et al.: 3 frames, 9 page faults under OPT and 12 under LRU.
  const std::vector<Request> t =
      OneBlockRequests({7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1});
  const SimResult min = SimulateBelady(t, 3);
  EXPECT_EQ(min.block_refs, 20u);
  EXPECT_EQ(min.block_refs - min.block_hits, 9u);
  EXPECT_EQ(min.prefix_hit_blocks, min.block_hits);  // one-block requests: the same metric
  LruCachePolicy lru;
  absl::StatusOr<SimResult> l = Simulate(t, 3, lru);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->block_refs - l->block_hits, 12u);
  // MIN with bypass can only do better.
  EXPECT_GE(SimulateBeladyPrefix(t, 3).block_hits, min.block_hits);
}

TEST(Simulator, HandTraceCounts) {
  const std::vector<Request> t = {Req({1, 2}), Req({1, 2, 3}), Req({4}), Req({1, 2, 3})};
  // LRU, 3 blocks: request 3 evicts 1 (the least recent); request 4 misses 1 but finds 2
  // and 3 (block hits, not prefix hits) and evicts 4 to reinsert 1.
  LruCachePolicy lru;
  absl::StatusOr<SimResult> l = Simulate(t, 3, lru);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->requests, 4u);
  EXPECT_EQ(l->block_refs, 9u);
  EXPECT_EQ(l->block_hits, 4u);
  EXPECT_EQ(l->prefix_hit_blocks, 2u);
  EXPECT_EQ(l->insertions, 5u);
  EXPECT_EQ(l->evictions, 2u);
  EXPECT_DOUBLE_EQ(l->block_hit_ratio(), 4.0 / 9);
  EXPECT_DOUBLE_EQ(l->prefix_hit_ratio(), 2.0 / 9);
  EXPECT_EQ(lru.size(), 3u);

  // MIN: at request 3, blocks 1, 2 and 3 are all next used by request 4; the tie goes to the
  // deepest (3), so request 4's prefix 1 2 survives.
  const SimResult b = SimulateBelady(t, 3);
  EXPECT_EQ(b.block_hits, 4u);
  EXPECT_EQ(b.prefix_hit_blocks, 4u);
  EXPECT_EQ(b.evictions, 2u);
  // Prefix MIN: block 4 is never used again, so it is not inserted at all.
  const SimResult bp = SimulateBeladyPrefix(t, 3);
  EXPECT_EQ(bp.block_hits, 5u);
  EXPECT_EQ(bp.prefix_hit_blocks, 5u);
  EXPECT_EQ(bp.bypassed, 1u);
  EXPECT_EQ(bp.evictions, 0u);

  // No cache: everything misses.
  LruCachePolicy none;
  absl::StatusOr<SimResult> z = Simulate(t, 0, none);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->block_hits, 0u);
  EXPECT_EQ(z->insertions, 0u);
  EXPECT_EQ(SimulateBelady(t, 0).block_hits, 0u);
}

TEST(Simulator, LruWithOracleAdmissionSkipsBlocksNotUsedAgainInTime) {
  const std::vector<Request> t = {Req({1, 2}), Req({1, 2, 3}), Req({4}), Req({1, 2, 3})};
  // Any horizon: block 4 is never used again, so it is never inserted and nothing is evicted.
  const SimResult ever =
      SimulateLruOracleAdmission(t, 3, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(ever.block_hits, 5u);
  EXPECT_EQ(ever.prefix_hit_blocks, 5u);
  EXPECT_EQ(ever.insertions, 3u);
  EXPECT_EQ(ever.bypassed, 1u);
  EXPECT_EQ(ever.evictions, 0u);
  // Horizon 1 request: block 3 (next used two requests later) is not admitted either, at
  // request 2 nor at request 4 (never used after it).
  const SimResult near = SimulateLruOracleAdmission(t, 3, 1);
  EXPECT_EQ(near.block_hits, 4u);
  EXPECT_EQ(near.prefix_hit_blocks, 4u);
  EXPECT_EQ(near.insertions, 2u);
  EXPECT_EQ(near.bypassed, 3u);
  // Capacity 1: admitted blocks still go in LRU order (2 evicts 1 at request 1).
  const SimResult tiny = SimulateLruOracleAdmission(t, 1, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(tiny.prefix_hit_blocks, 0u);
  EXPECT_GT(tiny.evictions, 0u);
  EXPECT_EQ(SimulateLruOracleAdmission(t, 0, 5).insertions, 0u);
}

TEST(Simulator, UnboundedCacheReachesTheTraceCeiling) {
  for (const std::vector<Request>& t : AllGenerators(9)) {
    const TraceSummary s = Summarize(t);
    LruCachePolicy lru;
    absl::StatusOr<SimResult> l = Simulate(t, s.unique_blocks, lru);
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->evictions, 0u);
    EXPECT_DOUBLE_EQ(l->block_hit_ratio(), s.reuse_ratio);
    EXPECT_DOUBLE_EQ(l->prefix_hit_ratio(), s.prefix_reuse_ratio);
  }
}

TEST(LruCachePolicy, EvictsLeastRecentlyUsed) {
  LruCachePolicy lru;
  EXPECT_EQ(lru.Victim(), std::nullopt);
  lru.Insert(1);
  lru.Insert(2);
  lru.Insert(3);
  EXPECT_EQ(lru.Victim(), 1u);
  lru.Access(1);
  EXPECT_EQ(lru.Victim(), 2u);
  lru.Remove(2);
  EXPECT_EQ(lru.Victim(), 3u);
  EXPECT_EQ(lru.size(), 2u);
}

// Policies that break the contract, to check the simulator reports it.
class BogusVictimPolicy final : public CachePolicy {
 public:
  explicit BogusVictimPolicy(bool offer_nothing) : offer_nothing_(offer_nothing) {}
  const char* name() const override { return "bogus"; }
  void Insert(uint64_t) override { ++tracked_; }
  void Access(uint64_t) override {}
  void Remove(uint64_t) override {}
  std::optional<uint64_t> Victim() override {
    if (tracked_ == 0 || offer_nothing_) return std::nullopt;
    return 999;  // never inserted
  }

 private:
  bool offer_nothing_;
  int tracked_ = 0;
};

TEST(Simulator, ReportsPoliciesThatBreakTheContract) {
  const std::vector<Request> t = OneBlockRequests({1, 2, 3});
  BogusVictimPolicy absent(/*offer_nothing=*/false);
  EXPECT_EQ(Simulate(t, 2, absent).status().code(), absl::StatusCode::kInternal);
  BogusVictimPolicy none(/*offer_nothing=*/true);
  EXPECT_EQ(Simulate(t, 2, none).status().code(), absl::StatusCode::kFailedPrecondition);
  LruCachePolicy used;
  used.Insert(5);
  EXPECT_EQ(Simulate(t, 2, used).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Simulator, MinBeatsLruOnEveryGenerator) {
  const char* names[] = {"chat", "rag", "agent", "scan"};
  const std::vector<std::vector<Request>> traces = AllGenerators(1234);
  for (size_t g = 0; g < traces.size(); ++g) {
    const TraceSummary s = Summarize(traces[g]);
    for (size_t capacity : {s.unique_blocks / 20, s.unique_blocks / 5, s.unique_blocks / 2}) {
      SCOPED_TRACE(absl::StrCat(names[g], " at ", capacity, " blocks"));
      LruCachePolicy lru;
      absl::StatusOr<SimResult> l = Simulate(traces[g], capacity, lru);
      ASSERT_TRUE(l.ok()) << l.status();
      const SimResult b = SimulateBelady(traces[g], capacity);
      const SimResult bp = SimulateBeladyPrefix(traces[g], capacity);
      EXPECT_GE(b.block_hits, l->block_hits);
      EXPECT_GE(bp.prefix_hit_blocks, l->prefix_hit_blocks);
      EXPECT_GE(bp.prefix_hit_blocks, b.prefix_hit_blocks);
      // Prefix-closed on prefix-chained traces: every block hit is a prefix hit.
      EXPECT_EQ(bp.prefix_hit_blocks, bp.block_hits);
      EXPECT_LE(bp.prefix_hit_ratio(), s.prefix_reuse_ratio);
    }
  }
}

TEST(Simulator, ScanFlushesLruButNotMin) {
  ScanParams p;
  absl::StatusOr<std::vector<Request>> t = GenerateScan(p);
  ASSERT_TRUE(t.ok());
  // Room for the hot set and one scan request: MIN keeps the hot set, so nearly every hot
  // block hits; LRU lets each scan push hot prompts out.
  const size_t capacity = p.hot_prompts * p.hot_prompt_blocks + p.scan_request_blocks;
  const TraceSummary s = Summarize(*t);
  LruCachePolicy lru;
  absl::StatusOr<SimResult> l = Simulate(*t, capacity, lru);
  ASSERT_TRUE(l.ok());
  const SimResult bp = SimulateBeladyPrefix(*t, capacity);
  EXPECT_GT(bp.prefix_hit_ratio(), 0.95 * s.prefix_reuse_ratio);
  EXPECT_LT(l->prefix_hit_ratio(), 0.9 * bp.prefix_hit_ratio());
}

TEST(Generators, ShiftIsChatThenScanWithNoSharedBlockAndTimeMovingOn) {
  absl::StatusOr<std::vector<Request>> chat = GenerateBenchWorkload("chat", 3);
  absl::StatusOr<std::vector<Request>> scan = GenerateBenchWorkload("scan", 3);
  absl::StatusOr<std::vector<Request>> shift = GenerateBenchWorkload("shift", 3);
  ASSERT_TRUE(chat.ok() && scan.ok() && shift.ok());
  ASSERT_EQ(shift->size(), chat->size() + scan->size());
  absl::flat_hash_set<uint64_t> first;
  for (size_t i = 0; i < chat->size(); ++i) {
    EXPECT_EQ((*shift)[i].blocks, (*chat)[i].blocks);
    first.insert((*chat)[i].blocks.begin(), (*chat)[i].blocks.end());
  }
  for (size_t i = chat->size(); i < shift->size(); ++i) {
    for (uint64_t b : (*shift)[i].blocks) ASSERT_FALSE(first.contains(b));
    EXPECT_GE((*shift)[i].time_s, (*shift)[i - 1].time_s);
  }
  size_t boundary = 0;
  EXPECT_EQ(Concatenate(*chat, *scan, &boundary).size(), shift->size());
  EXPECT_EQ(boundary, chat->size());
  EXPECT_THAT(GenerateBenchWorkload("nope", 1).status().message(), HasSubstr("shift"));
}

TEST(Simulate, PerRequestPrefixHitsAddUpToTheTotal) {
  absl::StatusOr<std::vector<Request>> trace = GenerateBenchWorkload("scan", 1);
  ASSERT_TRUE(trace.ok());
  LruCachePolicy lru;
  std::vector<uint32_t> per_request = {7};  // cleared first
  absl::StatusOr<SimResult> r = Simulate(*trace, 500, lru, &per_request);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(per_request.size(), trace->size());
  uint64_t sum = 0;
  for (size_t i = 0; i < per_request.size(); ++i) {
    EXPECT_LE(per_request[i], (*trace)[i].blocks.size());
    sum += per_request[i];
  }
  EXPECT_GT(sum, 0u);
  EXPECT_EQ(sum, r->prefix_hit_blocks);
}

}  // namespace
}  // namespace kvtier::workload
