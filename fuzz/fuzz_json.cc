// fuzz/fuzz_json.cc — kvtier's JSON reader (common/json.h) on arbitrary bytes.
//
// The Mooncake trace reader and the safetensors header reader parse files kvtier did not
// write. The properties checked:
//   * Parse returns OK or InvalidArgument "malformed JSON at byte N: ...", with error().offset
//     inside the text; it never crashes, never recurses past max_depth (the first input byte
//     picks a small max_depth so deep nesting is reached cheaply), never reads outside the
//     text (a heap copy of exactly its size);
//   * a document that parses can be walked completely: every value's offset lies in the text,
//     children() yields exactly size() values, Find(key) of an object member finds a member
//     with that key (keys are unique), nesting never exceeds max_depth, GetUint64 succeeds
//     only for tokens of digits, string and number views lie inside the text or the
//     document's own buffer (ASan checks the reads);
//   * parsing the same text into a reused Document gives the same answer (JSONL readers reuse
//     one).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "common/json.h"
#include "fuzz/fuzz_support.h"

namespace kvtier::json {
namespace {

// Walks `v` and its subtree; returns the number of values in it.
size_t Walk(Value v, absl::string_view text, int depth, int max_depth) {
  KVTIER_FUZZ_CHECK(depth <= max_depth, "nesting deeper than max_depth");
  KVTIER_FUZZ_CHECK(v.offset() < text.size(), "value offset outside the text");
  size_t values = 1;
  switch (v.type()) {
    case Type::kNull:
      KVTIER_FUZZ_CHECK(absl::StartsWith(text.substr(v.offset()), "null"), "null");
      break;
    case Type::kBool:
      KVTIER_FUZZ_CHECK(absl::StartsWith(text.substr(v.offset()), v.bool_value() ? "true" : "false"),
                        "bool");
      break;
    case Type::kString: {
      const absl::string_view s = v.string_value();
      size_t sum = 0;
      for (char c : s) sum += static_cast<unsigned char>(c);  // touch every byte
      (void)sum;
      KVTIER_FUZZ_CHECK(text[v.offset()] == '"', "string offset");
      KVTIER_FUZZ_CHECK(!v.GetDouble().ok() && !v.GetUint64().ok(), "a string read as a number");
      break;
    }
    case Type::kNumber: {
      const absl::string_view token = v.number_token();
      KVTIER_FUZZ_CHECK(!token.empty() && text.substr(v.offset(), token.size()) == token,
                        "number token is not the text at its offset");
      KVTIER_FUZZ_CHECK(v.GetDouble().ok(), "a number without a double value");
      absl::StatusOr<uint64_t> u = v.GetUint64();
      if (u.ok()) {
        for (char c : token) KVTIER_FUZZ_CHECK(c >= '0' && c <= '9', "GetUint64 of a non-integer");
        // The grammar has no leading zeros, so the exact value prints as the token.
        KVTIER_FUZZ_CHECK(std::to_string(*u) == token,
                          "GetUint64 is not exact: " + std::string(token));
      } else {
        KVTIER_FUZZ_CHECK(u.status().code() == absl::StatusCode::kInvalidArgument, "GetUint64 error");
      }
      break;
    }
    case Type::kArray:
    case Type::kObject: {
      size_t count = 0;
      for (Value child : v.children()) {
        ++count;
        if (v.type() == Type::kObject) {
          std::optional<Value> found = v.Find(child.key());
          KVTIER_FUZZ_CHECK(found.has_value() && found->offset() == child.offset(),
                            "Find does not find a member by its key");
        } else {
          KVTIER_FUZZ_CHECK(child.key().empty(), "an array element with a key");
        }
        values += Walk(child, text, depth + 1, max_depth);
      }
      KVTIER_FUZZ_CHECK(count == v.size(), "children() and size() disagree");
      break;
    }
  }
  return values;
}

}  // namespace
}  // namespace kvtier::json

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier::json;
  if (size == 0) return 0;
  ParseOptions options;
  options.max_depth = 1 + data[0] % 70;  // 1..70: the default 64 and beyond
  const size_t n = size - 1;
  std::unique_ptr<char[]> copy(new char[n + 1]);
  if (n > 0) std::memcpy(copy.get(), data + 1, n);
  const absl::string_view text(copy.get(), n);

  Document doc;
  const absl::Status s = doc.Parse(text, options);
  if (!s.ok()) {
    KVTIER_FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument &&
                          absl::StartsWith(s.message(), "malformed JSON at byte "),
                      "Parse error: " + s.ToString());
    KVTIER_FUZZ_CHECK(doc.error().offset <= text.size() && !doc.error().what.empty(),
                      "error offset outside the text");
    KVTIER_FUZZ_CHECK(doc.root().type() == Type::kNull, "a failed parse left a root");
  } else {
    Walk(doc.root(), text, 0, options.max_depth);
  }
  // Reuse: a second parse into the same document must agree with the first.
  const absl::Status again = doc.Parse(text, options);
  KVTIER_FUZZ_CHECK(again.ok() == s.ok() && again.message() == s.message(),
                    "reparse into a reused Document disagrees");
  return 0;
}
