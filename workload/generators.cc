// workload/generators.cc — the synthetic traces of generators.h and their samplers.
//
// Content identity: every run of blocks ("segment": a system prompt, a user turn, a
// document, a question, ...) gets a 64-bit content seed from (generator seed, kind, indices);
// block j of the segment has content Mix64(seed + j), and its id chains on the id of the
// block before it in the prompt. So a document's blocks have the same ids in every request
// that puts the same prefix before it, and different ids after a different prefix — exactly
// what a prefix cache can reuse.

#include "workload/generators.h"

#include <filesystem>

#include <cstdio>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvtier::workload {
namespace {

// SplitMix64's finalizer: a bijection on 64 bits with good avalanche.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Kinds of segments, so a system prompt and a document with the same index differ.
enum SegmentKind : uint64_t {
  kSystemPrompt = 1,
  kUserTurn,
  kReply,
  kInstruction,
  kDocument,
  kQuestion,
  kToolPrompt,
  kTask,
  kStep,
  kHotPrompt,
  kScan,
};

uint64_t SegmentSeed(uint64_t seed, SegmentKind kind, uint64_t a, uint64_t b = 0) {
  return Mix64(Mix64(Mix64(Mix64(seed) ^ kind) ^ a) ^ b);
}

// Appends `n` blocks of the segment, each chained on the block before it.
void AppendSegment(uint64_t segment_seed, uint64_t n, std::vector<uint64_t>* blocks) {
  for (uint64_t j = 0; j < n; ++j) {
    const uint64_t parent = blocks->empty() ? kRootBlock : blocks->back();
    blocks->push_back(ChainBlockId(parent, Mix64(segment_seed + j)));
  }
}

// A request tagged with its generation index, so sorting by time is stable and therefore
// deterministic (std::stable_sort would do too; this keeps the tie-break explicit).
struct Timed {
  double time_s;
  uint64_t order;
  Request request;
};

std::vector<Request> SortByTime(std::vector<Timed> timed) {
  std::sort(timed.begin(), timed.end(), [](const Timed& a, const Timed& b) {
    return a.time_s != b.time_s ? a.time_s < b.time_s : a.order < b.order;
  });
  std::vector<Request> out;
  out.reserve(timed.size());
  for (Timed& t : timed) out.push_back(std::move(t.request));
  return out;
}

// Parameter checks: InvalidArgument naming the field.
absl::Status AtLeastOne(const char* name, uint64_t v) {
  if (v >= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 1, is ", v));
}
absl::Status Range(const char* min_name, uint64_t min, const char* max_name, uint64_t max) {
  if (min < 1) return absl::InvalidArgumentError(absl::StrCat(min_name, " must be >= 1, is 0"));
  if (min > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(min_name, " (", min, ") must be <= ", max_name, " (", max, ")"));
  }
  return absl::OkStatus();
}
absl::Status Rate(const char* name, double v) {
  if (std::isfinite(v) && v > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, " must be finite and > 0, is ", v));
}
absl::Status Mean(const char* name, double v) {
  if (std::isfinite(v) && v >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, " must be finite and >= 0, is ", v));
}

// File-local (undefined at the end): Debian's Abseil has no public RETURN_IF_ERROR.
#define WORKLOAD_RETURN_IF_ERROR(expr) \
  do {                                 \
    absl::Status _status = (expr);     \
    if (!_status.ok()) return _status; \
  } while (0)

}  // namespace

double UniformDouble(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

uint64_t UniformInt(std::mt19937_64& rng, uint64_t lo, uint64_t hi) {
  const uint64_t span = hi - lo + 1;  // 0 when [lo, hi] is all of uint64
  if (span == 0) return rng();
  // Draws below `threshold` would make the low residues more likely; 2^64 mod span of them.
  const uint64_t threshold = (0 - span) % span;
  uint64_t x;
  do {
    x = rng();
  } while (x < threshold);
  return lo + x % span;
}

double Exponential(std::mt19937_64& rng, double mean) {
  // 1 - u is in (0, 1], so the log is finite.
  return -mean * std::log(1.0 - UniformDouble(rng));
}

absl::StatusOr<ZipfSampler> ZipfSampler::Create(uint64_t n, double alpha) {
  if (n < 1) return absl::InvalidArgumentError("Zipf needs n >= 1");
  if (!std::isfinite(alpha) || alpha < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Zipf alpha must be finite and >= 0, is ", alpha));
  }
  std::vector<double> cdf(n);
  double sum = 0;
  for (uint64_t k = 0; k < n; ++k) {
    sum += std::pow(static_cast<double>(k + 1), -alpha);
    cdf[k] = sum;
  }
  for (double& c : cdf) c /= sum;
  cdf.back() = 1.0;  // rounding must not leave a gap above the last rank
  return ZipfSampler(std::move(cdf));
}

uint64_t ZipfSampler::Sample(std::mt19937_64& rng) const {
  const double u = UniformDouble(rng);  // < 1 = cdf_.back(), so some rank's cdf exceeds it
  return static_cast<uint64_t>(std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
}

double ZipfSampler::Probability(uint64_t rank) const {
  if (rank >= cdf_.size()) return 0;
  return rank == 0 ? cdf_[0] : cdf_[rank] - cdf_[rank - 1];
}

uint64_t ChainBlockId(uint64_t parent, uint64_t content) { return Mix64(Mix64(parent) ^ content); }

absl::StatusOr<std::vector<Request>> GenerateChat(const ChatParams& p) {
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("num_system_prompts", p.num_system_prompts));
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("system_prompt_blocks", p.system_prompt_blocks));
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("num_sessions", p.num_sessions));
  WORKLOAD_RETURN_IF_ERROR(Range("min_turns", p.min_turns, "max_turns", p.max_turns));
  WORKLOAD_RETURN_IF_ERROR(
      Range("min_user_blocks", p.min_user_blocks, "max_user_blocks", p.max_user_blocks));
  WORKLOAD_RETURN_IF_ERROR(
      Range("min_reply_blocks", p.min_reply_blocks, "max_reply_blocks", p.max_reply_blocks));
  if (p.max_reply_blocks > std::numeric_limits<uint32_t>::max() / kTokensPerBlock) {
    return absl::InvalidArgumentError("max_reply_blocks too large for uint32 output_tokens");
  }
  WORKLOAD_RETURN_IF_ERROR(Rate("session_rate_per_s", p.session_rate_per_s));
  WORKLOAD_RETURN_IF_ERROR(Mean("mean_think_time_s", p.mean_think_time_s));
  absl::StatusOr<ZipfSampler> zipf =
      ZipfSampler::Create(p.num_system_prompts, p.system_prompt_alpha);
  if (!zipf.ok()) return zipf.status();

  std::mt19937_64 rng(p.seed);
  std::vector<Timed> timed;
  double session_start = 0;
  for (uint32_t s = 0; s < p.num_sessions; ++s) {
    session_start += Exponential(rng, 1.0 / p.session_rate_per_s);
    const uint64_t prompt = zipf->Sample(rng);
    const uint64_t turns = UniformInt(rng, p.min_turns, p.max_turns);
    std::vector<uint64_t> history;
    AppendSegment(SegmentSeed(p.seed, kSystemPrompt, prompt), p.system_prompt_blocks, &history);
    double t = session_start;
    for (uint64_t turn = 0; turn < turns; ++turn) {
      if (turn > 0) t += Exponential(rng, p.mean_think_time_s);
      AppendSegment(SegmentSeed(p.seed, kUserTurn, s, turn),
                    UniformInt(rng, p.min_user_blocks, p.max_user_blocks), &history);
      const uint64_t reply = UniformInt(rng, p.min_reply_blocks, p.max_reply_blocks);
      Request r;
      r.time_s = t;
      r.blocks = history;
      r.output_tokens = static_cast<uint32_t>(reply * kTokensPerBlock);
      r.tenant = absl::StrCat("chat-", prompt);
      timed.push_back({t, timed.size(), std::move(r)});
      // The reply becomes part of the history the next turn re-sends.
      AppendSegment(SegmentSeed(p.seed, kReply, s, turn), reply, &history);
    }
  }
  return SortByTime(std::move(timed));
}

absl::StatusOr<std::vector<Request>> GenerateRag(const RagParams& p) {
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("num_documents", p.num_documents));
  WORKLOAD_RETURN_IF_ERROR(Range("min_document_blocks", p.min_document_blocks,
                                 "max_document_blocks", p.max_document_blocks));
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("num_queries", p.num_queries));
  WORKLOAD_RETURN_IF_ERROR(Range("min_question_blocks", p.min_question_blocks,
                                 "max_question_blocks", p.max_question_blocks));
  WORKLOAD_RETURN_IF_ERROR(Rate("query_rate_per_s", p.query_rate_per_s));
  absl::StatusOr<ZipfSampler> zipf = ZipfSampler::Create(p.num_documents, p.alpha);
  if (!zipf.ok()) return zipf.status();

  std::mt19937_64 rng(p.seed);
  std::vector<uint64_t> doc_blocks(p.num_documents);
  for (uint64_t& n : doc_blocks) n = UniformInt(rng, p.min_document_blocks, p.max_document_blocks);
  std::vector<Timed> timed;
  double t = 0;
  for (uint32_t q = 0; q < p.num_queries; ++q) {
    t += Exponential(rng, 1.0 / p.query_rate_per_s);
    const uint64_t doc = zipf->Sample(rng);
    Request r;
    r.time_s = t;
    AppendSegment(SegmentSeed(p.seed, kInstruction, 0), p.instruction_blocks, &r.blocks);
    AppendSegment(SegmentSeed(p.seed, kDocument, doc), doc_blocks[doc], &r.blocks);
    AppendSegment(SegmentSeed(p.seed, kQuestion, q),
                  UniformInt(rng, p.min_question_blocks, p.max_question_blocks), &r.blocks);
    r.output_tokens = p.output_tokens;
    r.tenant = "rag";
    timed.push_back({t, timed.size(), std::move(r)});
  }
  return SortByTime(std::move(timed));
}

absl::StatusOr<std::vector<Request>> GenerateAgent(const AgentParams& p) {
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("num_agents", p.num_agents));
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("task_blocks", p.task_blocks));
  WORKLOAD_RETURN_IF_ERROR(Range("min_steps", p.min_steps, "max_steps", p.max_steps));
  WORKLOAD_RETURN_IF_ERROR(
      Range("min_step_blocks", p.min_step_blocks, "max_step_blocks", p.max_step_blocks));
  WORKLOAD_RETURN_IF_ERROR(Rate("agent_rate_per_s", p.agent_rate_per_s));
  WORKLOAD_RETURN_IF_ERROR(Mean("mean_step_interval_s", p.mean_step_interval_s));

  std::mt19937_64 rng(p.seed);
  std::vector<Timed> timed;
  double agent_start = 0;
  for (uint32_t a = 0; a < p.num_agents; ++a) {
    agent_start += Exponential(rng, 1.0 / p.agent_rate_per_s);
    const uint64_t steps = UniformInt(rng, p.min_steps, p.max_steps);
    std::vector<uint64_t> history;
    AppendSegment(SegmentSeed(p.seed, kToolPrompt, 0), p.shared_prompt_blocks, &history);
    AppendSegment(SegmentSeed(p.seed, kTask, a), p.task_blocks, &history);
    double t = agent_start;
    for (uint64_t step = 0; step < steps; ++step) {
      if (step > 0) t += Exponential(rng, p.mean_step_interval_s);
      // The step re-sends everything so far plus the last tool output and action.
      AppendSegment(SegmentSeed(p.seed, kStep, a, step),
                    UniformInt(rng, p.min_step_blocks, p.max_step_blocks), &history);
      Request r;
      r.time_s = t;
      r.blocks = history;
      r.output_tokens = p.output_tokens;
      r.tenant = absl::StrCat("agent-", a);
      timed.push_back({t, timed.size(), std::move(r)});
    }
  }
  return SortByTime(std::move(timed));
}

absl::StatusOr<std::vector<Request>> GenerateScan(const ScanParams& p) {
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("hot_prompts", p.hot_prompts));
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("hot_prompt_blocks", p.hot_prompt_blocks));
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("scan_requests", p.scan_requests));
  WORKLOAD_RETURN_IF_ERROR(AtLeastOne("scan_request_blocks", p.scan_request_blocks));
  WORKLOAD_RETURN_IF_ERROR(Rate("request_rate_per_s", p.request_rate_per_s));

  std::mt19937_64 rng(p.seed);
  std::vector<std::vector<uint64_t>> hot(p.hot_prompts);
  for (uint32_t h = 0; h < p.hot_prompts; ++h) {
    AppendSegment(SegmentSeed(p.seed, kHotPrompt, h), p.hot_prompt_blocks, &hot[h]);
  }
  std::vector<Timed> timed;
  double t = 0;
  auto emit = [&](std::vector<uint64_t> blocks, const char* tenant) {
    t += Exponential(rng, 1.0 / p.request_rate_per_s);
    Request r;
    r.time_s = t;
    r.blocks = std::move(blocks);
    r.output_tokens = p.output_tokens;
    r.tenant = tenant;
    timed.push_back({t, timed.size(), std::move(r)});
  };
  for (uint32_t s = 0; s < p.scan_requests; ++s) {
    for (uint32_t i = 0; i < p.hot_requests_per_scan; ++i) {
      emit(hot[UniformInt(rng, 0, p.hot_prompts - 1)], "hot");
    }
    // Each scan request starts a fresh chain: its ids appear nowhere else in the trace.
    std::vector<uint64_t> scan;
    AppendSegment(SegmentSeed(p.seed, kScan, s), p.scan_request_blocks, &scan);
    emit(std::move(scan), "scan");
  }
  return SortByTime(std::move(timed));
}

#undef WORKLOAD_RETURN_IF_ERROR

std::vector<Request> Concatenate(std::vector<Request> first, std::vector<Request> second,
                                 size_t* boundary) {
  const double offset = first.empty() ? 0 : first.back().time_s;
  *boundary = first.size();
  first.reserve(first.size() + second.size());
  for (Request& r : second) {
    r.time_s += offset;
    first.push_back(std::move(r));
  }
  return first;
}

absl::StatusOr<std::vector<Request>> GenerateBenchWorkload(absl::string_view name,
                                                           uint64_t seed) {
  if (name == "shift") {
    // The phases share no block: every segment seed includes its kind (chat turns, scan).
    absl::StatusOr<std::vector<Request>> chat = GenerateBenchWorkload("chat", seed);
    if (!chat.ok()) return chat.status();
    absl::StatusOr<std::vector<Request>> scan = GenerateBenchWorkload("scan", seed + 1000);
    if (!scan.ok()) return scan.status();
    size_t boundary = 0;
    return Concatenate(std::move(*chat), std::move(*scan), &boundary);
  }
  if (name == "chat") {
    ChatParams p;
    p.seed = seed;
    p.num_sessions = 2000;
    p.num_system_prompts = 16;
    return GenerateChat(p);
  }
  if (name == "rag") {
    RagParams p;
    p.seed = seed;
    p.num_documents = 2000;
    p.num_queries = 10000;
    return GenerateRag(p);
  }
  if (name == "agent") {
    AgentParams p;
    p.seed = seed;
    p.num_agents = 200;
    return GenerateAgent(p);
  }
  if (name == "scan") {
    ScanParams p;
    p.seed = seed;
    p.hot_prompts = 64;
    p.hot_prompt_blocks = 8;
    p.scan_requests = 1000;
    return GenerateScan(p);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload '", name, "' (known: chat, rag, agent, scan, shift)"));
}

absl::StatusOr<std::vector<Request>> LoadBenchWorkload(absl::string_view name,
                                                       const std::string& trace_path,
                                                       uint64_t seed, std::string* label) {
  if (name == "mooncake") {
    if (std::filesystem::exists(trace_path)) {
      *label = std::filesystem::weakly_canonical(trace_path).string();
      return ReadMooncakeTrace(trace_path);
    }
    std::fprintf(stderr, "trace %s not found: falling back to a generated chat trace\n",
                 trace_path.c_str());
    *label = absl::StrCat("generated chat (seed ", seed, "); Mooncake trace missing at ",
                          trace_path);
    return GenerateBenchWorkload("chat", seed);
  }
  *label = absl::StrCat("generated ", name, " (seed ", seed, ")");
  return GenerateBenchWorkload(name, seed);
}

}  // namespace kvtier::workload
