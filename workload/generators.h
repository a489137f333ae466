// workload/generators.h — synthetic request traces for the eviction study, each built to
// stress one thing a KV-cache eviction policy must get right:
//
//   * chat   multi-turn sessions over a few shared system prompts: each turn re-sends the
//            session's history, so turn t+1's blocks extend turn t's (recency and prefix
//            sharing both matter).
//   * rag    a shared instruction prefix, one of D documents picked by Zipf(alpha)
//            popularity, then a question nobody asks twice (frequency matters; the unique
//            suffixes are pure pollution).
//   * agent  tool-using loops: every step re-sends the whole, growing history plus a little
//            (very long prefixes, each reused once by the next step of the same loop).
//   * scan   a long run of never-reused blocks interleaved with a small hot working set
//            (the sequence that should not flush the cache: LRU does, MIN does not).
//
// Block ids are prefix-chained hashes like Mooncake's hash_ids: block i's id is a hash of
// block i-1's id and block i's content, so equal prefixes get equal ids and nothing else
// does (up to 64-bit hash collisions). Messages are whole blocks: a turn's reply fills
// reply_blocks blocks, output_tokens = reply_blocks * kTokensPerBlock, so the next turn's
// history reuses every block of the previous prompt (real prompts end in a partial block
// that the next turn cannot reuse; the generators leave that effect out).
//
// Deterministic given the seed, on every platform: the only randomness is std::mt19937_64
// (whose output the standard fixes) fed through the samplers below, never through
// std::*_distribution (whose algorithms differ between standard libraries). Arrival times
// use std::log, which may differ in the last bit between libms; block ids never depend on it.
// Requests are returned sorted by time (ties in generation order).

#ifndef KVTIER_WORKLOAD_GENERATORS_H_
#define KVTIER_WORKLOAD_GENERATORS_H_

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workload/trace.h"

namespace kvtier::workload {

// ---------------------------------------------------------------------------------------
// Samplers with fixed algorithms.

// Uniform in [0, 1), from the top 53 bits of one draw.
double UniformDouble(std::mt19937_64& rng);
// Uniform integer in [lo, hi] (inclusive; REQUIRES lo <= hi), by rejection, so unbiased.
uint64_t UniformInt(std::mt19937_64& rng, uint64_t lo, uint64_t hi);
// Exponentially distributed with the given mean (REQUIRES mean >= 0), by inversion.
double Exponential(std::mt19937_64& rng, double mean);

// Zipf over ranks 0..n-1: P(k) proportional to 1 / (k + 1)^alpha; rank 0 is the most
// popular. A precomputed CDF searched by bisection: O(n) memory, O(log n) per sample.
class ZipfSampler {
 public:
  // InvalidArgument unless n >= 1 and alpha is finite and >= 0 (0 = uniform).
  static absl::StatusOr<ZipfSampler> Create(uint64_t n, double alpha);

  uint64_t Sample(std::mt19937_64& rng) const;
  double Probability(uint64_t rank) const;  // 0 outside [0, n)
  uint64_t size() const { return cdf_.size(); }

 private:
  explicit ZipfSampler(std::vector<double> cdf) : cdf_(std::move(cdf)) {}
  std::vector<double> cdf_;  // cdf_[k] = P(rank <= k); cdf_.back() == 1
};

// The id of a block with content `content` whose prefix ends in block `parent` (kRootBlock
// for the first block of a prompt).
inline constexpr uint64_t kRootBlock = 0;
uint64_t ChainBlockId(uint64_t parent, uint64_t content);

// ---------------------------------------------------------------------------------------
// Generators. Every count and range must be >= 1 unless noted, min <= max, rates > 0 and
// means >= 0; otherwise InvalidArgument naming the field.

struct ChatParams {
  uint64_t seed = 1;
  uint32_t num_system_prompts = 4;
  uint32_t system_prompt_blocks = 8;
  double system_prompt_alpha = 1.0;  // Zipf popularity of the system prompts (0 = uniform)
  uint32_t num_sessions = 64;
  uint32_t min_turns = 2;
  uint32_t max_turns = 8;
  uint32_t min_user_blocks = 1;  // user message per turn
  uint32_t max_user_blocks = 2;
  uint32_t min_reply_blocks = 1;  // model reply per turn (joins the next turn's history)
  uint32_t max_reply_blocks = 2;
  double session_rate_per_s = 2.0;  // Poisson session starts
  double mean_think_time_s = 5.0;   // exponential gap between a session's turns
};
// Tenant "chat-<system prompt index>".
absl::StatusOr<std::vector<Request>> GenerateChat(const ChatParams& params);

struct RagParams {
  uint64_t seed = 2;
  uint32_t num_documents = 256;
  uint32_t min_document_blocks = 4;
  uint32_t max_document_blocks = 16;
  double alpha = 1.0;  // Zipf popularity of the documents (0 = uniform)
  uint32_t num_queries = 2000;
  uint32_t instruction_blocks = 2;   // shared prefix before the document; may be 0
  uint32_t min_question_blocks = 1;  // unique per query
  uint32_t max_question_blocks = 1;
  uint32_t output_tokens = 128;    // may be 0
  double query_rate_per_s = 20.0;  // Poisson arrivals
};
// Tenant "rag". The document of popularity rank k is document k; its first block sits at
// index instruction_blocks of the request.
absl::StatusOr<std::vector<Request>> GenerateRag(const RagParams& params);

struct AgentParams {
  uint64_t seed = 3;
  uint32_t num_agents = 16;
  uint32_t shared_prompt_blocks = 16;  // tool definitions, the same for every agent; may be 0
  uint32_t task_blocks = 2;            // the agent's own task, unique per agent
  uint32_t min_steps = 10;
  uint32_t max_steps = 30;
  uint32_t min_step_blocks = 1;  // tool output + next action, appended per step
  uint32_t max_step_blocks = 3;
  uint32_t output_tokens = 256;       // may be 0
  double agent_rate_per_s = 0.5;      // Poisson agent starts
  double mean_step_interval_s = 2.0;  // exponential gap between an agent's steps
};
// Tenant "agent-<agent index>".
absl::StatusOr<std::vector<Request>> GenerateAgent(const AgentParams& params);

struct ScanParams {
  uint64_t seed = 4;
  uint32_t hot_prompts = 8;  // the working set: hot_prompts * hot_prompt_blocks
  uint32_t hot_prompt_blocks = 4;
  uint32_t scan_requests = 200;
  uint32_t scan_request_blocks = 32;   // fresh blocks per scan request, never seen again
  uint32_t hot_requests_per_scan = 4;  // hot requests (uniform over hot prompts) between scans
  uint32_t output_tokens = 64;         // may be 0
  double request_rate_per_s = 50.0;    // Poisson arrivals
};
// Tenants "hot" and "scan". The sequence is, scan_requests times: hot_requests_per_scan hot
// requests, then one scan request.
absl::StatusOr<std::vector<Request>> GenerateScan(const ScanParams& params);

// A workload whose character changes mid-trace: `first`'s requests, then `second`'s (disjoint
// block ids: generated from different seeds), the second shifted in time to start after the
// first ends. *boundary gets the index of the second phase's first request.
std::vector<Request> Concatenate(std::vector<Request> first, std::vector<Request> second,
                                 size_t* boundary);

// The benchmarks' synthetic workloads by name ("chat", "rag", "agent", "scan", and "shift":
// the chat workload, then the scan workload with its hot set, to show a policy following a
// change of regime), each sized
// to tens of thousands of block references (the generators' defaults are test-sized), so
// bench eviction and bench stress replay the same traces. InvalidArgument for another name.
absl::StatusOr<std::vector<Request>> GenerateBenchWorkload(absl::string_view name,
                                                           uint64_t seed);

// The benchmarks' workload by name: "mooncake" reads the trace at `trace_path` (falling back,
// with a line on stderr, to the generated chat trace when the file is missing), any other name
// is GenerateBenchWorkload's. `*label` says which trace was used, for the JSON output.
absl::StatusOr<std::vector<Request>> LoadBenchWorkload(absl::string_view name,
                                                       const std::string& trace_path,
                                                       uint64_t seed, std::string* label);

}  // namespace kvtier::workload

#endif  // KVTIER_WORKLOAD_GENERATORS_H_
