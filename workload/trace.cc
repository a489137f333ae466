// workload/trace.cc — trace readers, the CSV writer and summaries.
//
// Mooncake lines are parsed by kvtier's strict JSON reader (common/json.h: nlohmann-json with
// duplicate keys rejected and integers read exactly, the column of the first error), which rejects
// a broken line with a precise message instead of misreading it the way a substring search would;
// the fields are then checked against the format in trace.h.

#include "workload/trace.h"

#include <cmath>
#include <fstream>
#include <istream>
#include <limits>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/json.h"

namespace kvtier::workload {
namespace {

// Digits only (no sign, fraction or exponent), converted to T if it fits: the CSV reader's
// integers.
template <typename T>
bool ParseUnsignedToken(absl::string_view token, T* out) {
  if (token.empty()) return false;
  for (char c : token) {
    if (c < '0' || c > '9') return false;
  }
  uint64_t v;
  if (!absl::SimpleAtoi(token, &v) || v > std::numeric_limits<T>::max()) return false;
  *out = static_cast<T>(v);
  return true;
}

// ---------------------------------------------------------------------------------------
// Mooncake JSONL. Each line is parsed whole by common/json.h, which enforces the grammar
// (and rejects duplicate keys, known or not); the fields are then checked here. Errors are
// plain strings; the caller prefixes "source:line: ".

// An integer field in [0, 2^(8 * sizeof(T))). `what` names it in messages ("\"output_length\""
// or "hash_ids[3]"), `expected` says what it must be when it is not a number at all.
template <typename T>
bool ReadUnsigned(const nlohmann::ordered_json& value, absl::string_view what,
                  absl::string_view expected, T* out, std::string* error) {
  if (!value.is_number()) {
    *error = absl::StrCat(what, " must be ", expected, ", not ", json::TypeName(value));
    return false;
  }
  // GetUint64 reads the number exactly (no detour through double) and refuses one written
  // with a sign, a fraction or an exponent, so 52.0, 5e1 and -0 fail here instead of being
  // truncated.
  absl::StatusOr<uint64_t> v = json::GetUint64(value);
  if (!v.ok() || *v > std::numeric_limits<T>::max()) {
    *error = absl::StrCat(what, " is not a non-negative integer below 2^", sizeof(T) * 8, ": ",
                          json::NumberText(value));
    return false;
  }
  *out = static_cast<T>(*v);
  return true;
}

// Parses one Mooncake line into `r`; false with `error` set otherwise.
bool ParseMooncakeLine(absl::string_view line, Request* r, std::string* error) {
  // Checked before parsing so that a line that is not an object at all gets the message a
  // JSONL reader expects, rather than the parser's "expected a value" or "trailing text".
  size_t first = 0;
  while (first < line.size() && (line[first] == ' ' || line[first] == '\t')) ++first;
  if (first == line.size() || line[first] != '{') {
    *error =
        absl::StrCat("bad JSON at column ", first + 1, ": expected '{' (one JSON object per line)");
    return false;
  }
  json::ParseError parse_error;
  absl::StatusOr<nlohmann::ordered_json> doc = json::Parse(line, {}, &parse_error);
  if (!doc.ok()) {
    // Columns from 1, like the line numbers in front of them.
    *error = absl::StrCat("bad JSON at column ", parse_error.offset + 1, ": ", parse_error.what);
    return false;
  }
  bool have_time = false, have_output = false, have_ids = false;
  for (const auto& [key, field] : doc->items()) {
    if (key == "timestamp") {
      have_time = true;
      if (!field.is_number()) {
        *error = absl::StrCat("\"timestamp\" must be a number, not ", json::TypeName(field));
        return false;
      }
      absl::StatusOr<double> ms = json::GetDouble(field);
      if (!ms.ok() || !std::isfinite(*ms) || *ms < 0) {
        *error =
            absl::StrCat("\"timestamp\" must be a finite number >= 0: ", json::NumberText(field));
        return false;
      }
      r->time_s = *ms / 1000.0;
    } else if (key == "output_length") {
      have_output = true;
      if (!ReadUnsigned(field, "\"output_length\"", "a non-negative integer", &r->output_tokens,
                        error)) {
        return false;
      }
    } else if (key == "input_length") {
      uint64_t ignored;
      if (!ReadUnsigned(field, "\"input_length\"", "a non-negative integer", &ignored, error)) {
        return false;
      }
    } else if (key == "tenant") {
      if (!field.is_string()) {
        *error = absl::StrCat("\"tenant\" must be a string, not ", json::TypeName(field));
        return false;
      }
      r->tenant = field.get<std::string>();
    } else if (key == "hash_ids") {
      have_ids = true;
      if (!field.is_array()) {
        *error = absl::StrCat("\"hash_ids\" must be an array, not ", json::TypeName(field));
        return false;
      }
      r->blocks.reserve(field.size());
      for (const nlohmann::ordered_json& id : field) {
        absl::StatusOr<uint64_t> block = json::GetUint64(id);
        if (!block.ok()) {
          // ReadUnsigned only to phrase the error: the loop runs once per block id, so the
          // name "hash_ids[i]" is formatted on this path alone.
          uint64_t unused;
          ReadUnsigned(id, absl::StrCat("hash_ids[", r->blocks.size(), "]"), "an integer", &unused,
                       error);
          return false;
        }
        r->blocks.push_back(*block);
      }
    }
    // Other keys are skipped whatever their value (the parser has checked it is JSON).
  }
  for (auto [have, name] : {std::pair{have_time, "timestamp"},
                            {have_output, "output_length"},
                            {have_ids, "hash_ids"}}) {
    if (!have) {
      *error = absl::StrCat("missing field \"", name, "\"");
      return false;
    }
  }
  if (r->blocks.empty()) {
    *error = "\"hash_ids\" is empty (a prompt covers at least one block)";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// CSV.

constexpr absl::string_view kCsvHeader = "time_s,tenant,output_tokens,blocks";

bool ParseCsvLine(absl::string_view line, Request* r, std::string* error) {
  std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
  if (fields.size() != 4) {
    *error =
        absl::StrCat("expected 4 comma-separated fields (", kCsvHeader, "), got ", fields.size());
    return false;
  }
  // SimpleAtod also accepts "inf", "nan" and hex floats; the finiteness check drops the
  // first two, and a hex float is still a correctly read number.
  if (!absl::SimpleAtod(fields[0], &r->time_s) || !std::isfinite(r->time_s) || r->time_s < 0) {
    *error = absl::StrCat("time_s must be a finite number >= 0: '", fields[0], "'");
    return false;
  }
  // Only a line's final '\r' is a line ending (ReadLines strips it); one anywhere else would
  // give a tenant the format cannot hold, which WriteCsvTrace would then refuse.
  if (absl::StrContains(fields[1], '\r')) {
    *error = absl::StrCat("tenant contains a carriage return: '", absl::CEscape(fields[1]), "'");
    return false;
  }
  r->tenant = std::string(fields[1]);
  if (!ParseUnsignedToken(absl::StripAsciiWhitespace(fields[2]), &r->output_tokens)) {
    *error =
        absl::StrCat("output_tokens is not a non-negative integer below 2^32: '", fields[2], "'");
    return false;
  }
  for (absl::string_view v : absl::StrSplit(fields[3], ' ', absl::SkipEmpty())) {
    uint64_t id;
    if (!ParseUnsignedToken(v, &id)) {
      *error = absl::StrCat("blocks[", r->blocks.size(),
                            "] is not a non-negative integer below 2^64: '", v, "'");
      return false;
    }
    r->blocks.push_back(id);
  }
  if (r->blocks.empty()) {
    *error = "blocks is empty (a prompt covers at least one block)";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Shared line loop: strips '\r' (files written on Windows), skips blank lines, numbers lines
// from 1 and prefixes errors with "source:line: ".

enum class Format { kMooncake, kCsv };

absl::StatusOr<std::vector<Request>> ReadLines(std::istream& in, absl::string_view source,
                                               Format format) {
  std::vector<Request> out;
  std::string line;
  size_t line_no = 0;
  bool header_seen = format != Format::kCsv;
  while (std::getline(in, line)) {
    ++line_no;
    absl::string_view view(line);
    if (!view.empty() && view.back() == '\r') view.remove_suffix(1);
    if (absl::StripAsciiWhitespace(view).empty()) continue;
    if (!header_seen) {
      if (absl::StripAsciiWhitespace(view) != kCsvHeader) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ":", line_no, ": expected the header '", kCsvHeader, "'"));
      }
      header_seen = true;
      continue;
    }
    Request r;
    std::string error;
    const bool ok = format == Format::kMooncake ? ParseMooncakeLine(view, &r, &error)
                                                : ParseCsvLine(view, &r, &error);
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": ", error));
    out.push_back(std::move(r));
  }
  if (in.bad())
    return absl::DataLossError(absl::StrCat(source, ": read error after line ", line_no));
  if (!header_seen) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": empty file (expected the header '", kCsvHeader, "')"));
  }
  return out;
}

absl::StatusOr<std::vector<Request>> ReadFile(absl::string_view path, Format format) {
  std::ifstream in{std::string(path)};
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open trace '", path, "'"));
  return ReadLines(in, path, format);
}

// The shortest of %.15g..%.17g that reads back as `v` (17 digits always do).
std::string FormatExactDouble(double v) {
  for (int digits = 15; digits < 17; ++digits) {
    std::string s = absl::StrFormat("%.*g", digits, v);
    double back;
    if (absl::SimpleAtod(s, &back) && back == v) return s;
  }
  return absl::StrFormat("%.17g", v);
}

}  // namespace

absl::StatusOr<std::vector<Request>> ReadMooncakeTrace(absl::string_view path) {
  return ReadFile(path, Format::kMooncake);
}

absl::StatusOr<std::vector<Request>> ReadMooncakeTrace(std::istream& in,
                                                       absl::string_view source_name) {
  return ReadLines(in, source_name, Format::kMooncake);
}

absl::StatusOr<std::vector<Request>> ReadCsvTrace(absl::string_view path) {
  return ReadFile(path, Format::kCsv);
}

absl::StatusOr<std::vector<Request>> ReadCsvTrace(std::istream& in, absl::string_view source_name) {
  return ReadLines(in, source_name, Format::kCsv);
}

absl::Status WriteCsvTrace(const std::vector<Request>& requests, std::ostream& out) {
  out << kCsvHeader << '\n';
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    if (r.tenant.find_first_of(",\r\n") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", i, ": tenant '", r.tenant,
                       "' contains ',', '\\r' or '\\n', which CSV cannot hold"));
    }
    if (!std::isfinite(r.time_s) || r.time_s < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", i, ": time_s must be finite and >= 0, is ", r.time_s));
    }
    if (r.blocks.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": no blocks"));
    }
    out << FormatExactDouble(r.time_s) << ',' << r.tenant << ',' << r.output_tokens << ','
        << absl::StrJoin(r.blocks, " ") << '\n';
  }
  out.flush();
  if (!out) return absl::DataLossError("write to the CSV stream failed");
  return absl::OkStatus();
}

absl::Status WriteCsvTrace(const std::vector<Request>& requests, absl::string_view path) {
  std::ofstream out{std::string(path), std::ios::trunc};
  if (!out) return absl::NotFoundError(absl::StrCat("cannot create '", path, "'"));
  absl::Status s = WriteCsvTrace(requests, out);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": close failed"));
  return absl::OkStatus();
}

TraceSummary Summarize(const std::vector<Request>& requests) {
  TraceSummary s;
  s.requests = requests.size();
  absl::flat_hash_set<uint64_t> seen;  // ids referenced by earlier requests
  absl::flat_hash_set<absl::string_view> tenants;
  uint64_t reused = 0, reused_prefix = 0;
  double min_t = 0, max_t = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    s.block_refs += r.blocks.size();
    s.max_request_blocks = std::max<uint64_t>(s.max_request_blocks, r.blocks.size());
    tenants.insert(r.tenant);
    if (i == 0) {
      min_t = max_t = r.time_s;
    } else {
      if (r.time_s < requests[i - 1].time_s) s.time_sorted = false;
      min_t = std::min(min_t, r.time_s);
      max_t = std::max(max_t, r.time_s);
    }
    // Judged against earlier requests only, like a cache that admits a request's blocks
    // after serving it: an id repeated within one request is not reuse.
    bool prefix = true;
    for (uint64_t id : r.blocks) {
      if (seen.contains(id)) {
        ++reused;
        if (prefix) ++reused_prefix;
      } else {
        prefix = false;
      }
    }
    for (uint64_t id : r.blocks) seen.insert(id);
  }
  s.unique_blocks = seen.size();
  s.footprint_tokens = s.unique_blocks * kTokensPerBlock;
  s.tenants = tenants.size();
  s.duration_s = max_t - min_t;
  if (s.requests > 0) {
    s.mean_request_blocks = static_cast<double>(s.block_refs) / s.requests;
    s.mean_reused_prefix_blocks = static_cast<double>(reused_prefix) / s.requests;
  }
  if (s.block_refs > 0) {
    s.reuse_ratio = static_cast<double>(reused) / s.block_refs;
    s.prefix_reuse_ratio = static_cast<double>(reused_prefix) / s.block_refs;
  }
  return s;
}

std::string FormatSummary(const TraceSummary& s) {
  return absl::StrFormat(
      "requests             %d\n"
      "block refs           %d\n"
      "unique blocks        %d (%d tokens)\n"
      "request blocks       mean %.2f, max %d\n"
      "reused prefix        mean %.2f blocks per request\n"
      "reuse ratio          %.4f (infinite cache, block hits)\n"
      "prefix reuse ratio   %.4f (infinite cache, prefix hits)\n"
      "tenants              %d\n"
      "duration             %.3f s (%s)\n",
      s.requests, s.block_refs, s.unique_blocks, s.footprint_tokens, s.mean_request_blocks,
      s.max_request_blocks, s.mean_reused_prefix_blocks, s.reuse_ratio, s.prefix_reuse_ratio,
      s.tenants, s.duration_s, s.time_sorted ? "sorted" : "not sorted");
}

}  // namespace kvtier::workload
