// workload/trace.cc — trace readers, the CSV writer and summaries.
//
// No JSON library is available to kvtier (Debian's Abseil has none and RapidJSON is not a
// dependency), and a trace line is one flat object, so this file carries a small strict
// JSON reader: it parses the top-level object per RFC 8259 (strings with escapes, numbers
// by the JSON grammar, nested values skipped), which is enough to reject broken lines with
// a precise message instead of misreading them the way a substring search would.

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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace kvtier::workload {
namespace {

// ---------------------------------------------------------------------------------------
// Minimal JSON reading. Errors are plain strings; the caller prefixes "source:line: ".

class JsonCursor {
 public:
  explicit JsonCursor(absl::string_view text) : text_(text) {}

  void SkipWhitespace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }
  size_t column() const { return pos_ + 1; }

  // Consumes `c` after optional whitespace.
  bool Consume(char c) {
    SkipWhitespace();
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }

  // A string literal; the cursor is on its opening quote.
  bool ParseString(std::string* out, std::string* error) {
    out->clear();
    if (Peek() != '"') return Fail("expected a string", error);
    ++pos_;
    while (!AtEnd()) {
      const char c = text_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("control character in string", error);
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (AtEnd()) break;
      const char e = text_[pos_++];
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp;
          if (!ParseHex4(&cp)) return Fail("bad \\u escape", error);
          // A surrogate pair encodes one code point above U+FFFF.
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low;
            if (text_.substr(pos_, 2) != "\\u") return Fail("lone surrogate in \\u escape", error);
            pos_ += 2;
            if (!ParseHex4(&low) || low < 0xDC00 || low > 0xDFFF) {
              return Fail("bad surrogate pair in \\u escape", error);
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return Fail("lone surrogate in \\u escape", error);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return Fail(absl::StrCat("bad escape '\\", std::string(1, e), "'"), error);
      }
    }
    return Fail("unterminated string", error);
  }

  // A number by the JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. Returns
  // its text; the cursor is on its first character.
  bool ParseNumber(absl::string_view* token, std::string* error) {
    const size_t start = pos_;
    if (Peek() == '-') ++pos_;
    if (Peek() == '0') {
      ++pos_;
    } else if (IsDigit(Peek())) {
      while (IsDigit(Peek())) ++pos_;
    } else {
      return Fail("bad number", error);
    }
    if (Peek() == '.') {
      ++pos_;
      if (!IsDigit(Peek())) return Fail("bad number", error);
      while (IsDigit(Peek())) ++pos_;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++pos_;
      if (Peek() == '+' || Peek() == '-') ++pos_;
      if (!IsDigit(Peek())) return Fail("bad number", error);
      while (IsDigit(Peek())) ++pos_;
    }
    *token = text_.substr(start, pos_ - start);
    return true;
  }

  // Skips any value (used for keys the reader does not know). Depth-limited so a hostile
  // line cannot overflow the stack.
  bool SkipValue(std::string* error, int depth = 0) {
    if (depth > 64) return Fail("nesting too deep", error);
    SkipWhitespace();
    const char c = Peek();
    if (c == '"') {
      std::string ignored;
      return ParseString(&ignored, error);
    }
    if (c == '-' || IsDigit(c)) {
      absl::string_view ignored;
      return ParseNumber(&ignored, error);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      if (Consume(close)) return true;
      do {
        if (c == '{') {
          SkipWhitespace();
          std::string key;
          if (!ParseString(&key, error)) return false;
          if (!Consume(':')) return Fail("expected ':'", error);
        }
        if (!SkipValue(error, depth + 1)) return false;
      } while (Consume(','));
      if (!Consume(close))
        return Fail(absl::StrCat("expected ',' or '", std::string(1, close), "'"), error);
      return true;
    }
    for (absl::string_view literal : {"true", "false", "null"}) {
      if (text_.substr(pos_, literal.size()) == literal) {
        pos_ += literal.size();
        return true;
      }
    }
    return Fail("expected a value", error);
  }

  bool Fail(absl::string_view what, std::string* error) const {
    *error = absl::StrCat("bad JSON at column ", column(), ": ", what);
    return false;
  }

 private:
  static bool IsDigit(char c) { return c >= '0' && c <= '9'; }

  bool ParseHex4(uint32_t* out) {
    if (pos_ + 4 > text_.size()) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_ + i];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= h - '0';
      } else if (h >= 'a' && h <= 'f') {
        v |= h - 'a' + 10;
      } else if (h >= 'A' && h <= 'F') {
        v |= h - 'A' + 10;
      } else {
        return false;
      }
    }
    pos_ += 4;
    *out = v;
    return true;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

// The JSON type a value starts with, for "wrong type" messages.
const char* JsonTypeAt(char c) {
  switch (c) {
    case '"':
      return "a string";
    case '[':
      return "an array";
    case '{':
      return "an object";
    case 't':
    case 'f':
      return "a boolean";
    case 'n':
      return "null";
    default:
      return (c == '-' || (c >= '0' && c <= '9')) ? "a number" : "not a value";
  }
}

// Digits only (no sign, fraction or exponent), converted to T if it fits.
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

// Reads an integer field (cursor before the value) into `out`.
template <typename T>
bool ReadUnsignedField(JsonCursor& cur, absl::string_view key, T* out, std::string* error) {
  cur.SkipWhitespace();
  const char c = cur.Peek();
  if (c != '-' && !(c >= '0' && c <= '9')) {
    *error = absl::StrCat("\"", key, "\" must be a non-negative integer, not ", JsonTypeAt(c));
    return false;
  }
  absl::string_view token;
  if (!cur.ParseNumber(&token, error)) return false;
  if (!ParseUnsignedToken(token, out)) {
    *error = absl::StrCat("\"", key, "\" is not a non-negative integer below 2^", sizeof(T) * 8,
                          ": ", token);
    return false;
  }
  return true;
}

// Parses one Mooncake line into `r`; false with `error` set otherwise.
bool ParseMooncakeLine(absl::string_view line, Request* r, std::string* error) {
  JsonCursor cur(line);
  if (!cur.Consume('{')) {
    return cur.Fail("expected '{' (one JSON object per line)", error);
  }
  bool have_time = false, have_output = false, have_ids = false, have_input = false,
       have_tenant = false;
  if (!cur.Consume('}')) {
    do {
      cur.SkipWhitespace();
      std::string key;
      if (!cur.ParseString(&key, error)) return false;
      if (!cur.Consume(':')) return cur.Fail("expected ':'", error);
      cur.SkipWhitespace();
      bool* seen = key == "timestamp"       ? &have_time
                   : key == "output_length" ? &have_output
                   : key == "hash_ids"      ? &have_ids
                   : key == "input_length"  ? &have_input
                   : key == "tenant"        ? &have_tenant
                                            : nullptr;
      if (seen != nullptr) {
        if (*seen) {
          *error = absl::StrCat("duplicate key \"", key, "\"");
          return false;
        }
        *seen = true;
      }
      if (key == "timestamp") {
        const char c = cur.Peek();
        if (c != '-' && !(c >= '0' && c <= '9')) {
          *error = absl::StrCat("\"timestamp\" must be a number, not ", JsonTypeAt(c));
          return false;
        }
        absl::string_view token;
        double ms;
        if (!cur.ParseNumber(&token, error)) return false;
        if (!absl::SimpleAtod(token, &ms) || !std::isfinite(ms) || ms < 0) {
          *error = absl::StrCat("\"timestamp\" must be a finite number >= 0: ", token);
          return false;
        }
        r->time_s = ms / 1000.0;
      } else if (key == "output_length") {
        if (!ReadUnsignedField(cur, key, &r->output_tokens, error)) return false;
      } else if (key == "input_length") {
        uint64_t ignored;
        if (!ReadUnsignedField(cur, key, &ignored, error)) return false;
      } else if (key == "tenant") {
        if (cur.Peek() != '"') {
          *error = absl::StrCat("\"tenant\" must be a string, not ", JsonTypeAt(cur.Peek()));
          return false;
        }
        if (!cur.ParseString(&r->tenant, error)) return false;
      } else if (key == "hash_ids") {
        if (cur.Peek() != '[') {
          *error = absl::StrCat("\"hash_ids\" must be an array, not ", JsonTypeAt(cur.Peek()));
          return false;
        }
        cur.Consume('[');
        if (!cur.Consume(']')) {
          do {
            cur.SkipWhitespace();
            const char c = cur.Peek();
            const size_t index = r->blocks.size();
            if (c != '-' && !(c >= '0' && c <= '9')) {
              *error =
                  absl::StrCat("hash_ids[", index, "] must be an integer, not ", JsonTypeAt(c));
              return false;
            }
            absl::string_view token;
            uint64_t id;
            if (!cur.ParseNumber(&token, error)) return false;
            if (!ParseUnsignedToken(token, &id)) {
              *error = absl::StrCat("hash_ids[", index,
                                    "] is not a non-negative integer below 2^64: ", token);
              return false;
            }
            r->blocks.push_back(id);
          } while (cur.Consume(','));
          if (!cur.Consume(']')) return cur.Fail("expected ',' or ']' in hash_ids", error);
        }
      } else if (!cur.SkipValue(error)) {
        return false;
      }
    } while (cur.Consume(','));
    if (!cur.Consume('}')) return cur.Fail("expected ',' or '}'", error);
  }
  cur.SkipWhitespace();
  if (!cur.AtEnd()) return cur.Fail("trailing characters after the object", error);
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
