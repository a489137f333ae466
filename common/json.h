// common/json.h — kvtier's JSON on nlohmann-json: a strict reader for input kvtier did not
// write, and the few helpers its readers and writers share. Values are nlohmann::ordered_json
// (objects keep their members in document / insertion order, so output reads in the order it
// was built and a header's tensors come back in file order).
//
// The reader (json::Parse) is nlohmann's parser, driven through its SAX interface so that it
// also enforces what kvtier's inputs need (the Mooncake trace reader in workload/trace.cc, the
// safetensors header reader in examples/llm/safetensors.cc, the CLI reading /stats):
//   * the RFC 8259 grammar, strings as valid UTF-8 (\uXXXX escapes combined, lone surrogates
//     rejected), no byte order mark, nothing but whitespace after the top-level value;
//   * a key repeated within one object is an error (two values for one field would make the
//     input mean two things);
//   * nesting deeper than ParseOptions::max_depth is an error;
//   * numbers keep the kind they were written as: digits alone give an exact unsigned 64-bit
//     integer (GetUint64 never goes through double: block ids use all 64 bits), a minus sign
//     an exact signed one, and a fraction, an exponent or an integer beyond 64 bits a double;
//     a number beyond a double's range is an error.
// A failure is InvalidArgument "malformed JSON at byte N: what (near "...")", N counting from 0
// (where the reader stopped: the start of an unexpected token, the byte that broke one);
// ParseError has the offset and the description apart, for callers that phrase their own
// messages (a line reader counts columns, say).
//
// Nothing here throws: read values after checking their type (is_number(), ...), or through
// the helpers below, never with nlohmann's throwing at() / get<T>() on unchecked values.
//
//   absl::StatusOr<nlohmann::ordered_json> doc = json::Parse(text);
//   if (!doc.ok()) return doc.status();
//   for (const auto& [key, value] : doc->items()) { ... json::GetUint64(value) ... }

#ifndef KVTIER_COMMON_JSON_H_
#define KVTIER_COMMON_JSON_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace kvtier::json {

struct ParseOptions {
  // The most arrays/objects that may enclose one another: 64 admits any real header or trace
  // line and bounds what hostile input can make the reader build.
  int max_depth = 64;
};

// Where and why a Parse failed.
struct ParseError {
  size_t offset = 0;  // byte offset into the text, from 0; the text's size when it ended early
  std::string what;   // e.g. "expected ',' or '}' in an object"
};

// Parses exactly one JSON value (whitespace around it allowed). OK with the value, or
// InvalidArgument "malformed JSON at byte N: what (near "...")", with `*error` (when not null)
// set to N and what.
absl::StatusOr<nlohmann::ordered_json> Parse(absl::string_view text,
                                             const ParseOptions& options = {},
                                             ParseError* error = nullptr);

// "null", "a boolean", "a number", "a string", "an array", "an object": for messages such as
// "\"shape\" is a string, not an array".
const char* TypeName(const nlohmann::ordered_json& value);

// A number written as a non-negative integer (digits only: no sign, fraction or exponent) that
// fits in 64 bits, exactly. InvalidArgument otherwise, phrased to follow the name of what was
// read: "-1 is a negative number", "1.5 is a non-integer number", "1.8446744073709552e+19 does
// not fit in 64 bits", "a string is not a number".
absl::StatusOr<uint64_t> GetUint64(const nlohmann::ordered_json& value);
// Any number, as the nearest double. InvalidArgument "a string is not a number" for other types.
absl::StatusOr<double> GetDouble(const nlohmann::ordered_json& value);
// A number as JSON writes it, for messages: "-2", "2.5", "1000.0" (for 1e3), "-0".
std::string NumberText(const nlohmann::ordered_json& value);

// The value at a JSON pointer (RFC 6901: "/tiers/0/hits", "" for `value` itself), or nullptr
// when a step is missing or the pointer is malformed.
const nlohmann::ordered_json* Find(const nlohmann::ordered_json& value, absl::string_view pointer);

// `v` rounded to `digits` significant digits, for figures that are read by people as well as
// programs (the benchmarks' JSON line, the demo's): a whole number becomes an integer (1000,
// not 1000.0), and a number that is not finite becomes null.
nlohmann::ordered_json RoundedNumber(double v, int digits = 6);

// Serializes `value`: compact when indent < 0, else pretty-printed with `indent` spaces per
// level. Non-finite numbers print as null (JSON has no NaN or infinity) and bytes that are not
// UTF-8 as U+FFFD, so this never fails.
std::string Dump(const nlohmann::ordered_json& value, int indent = -1);

}  // namespace kvtier::json

#endif  // KVTIER_COMMON_JSON_H_
