// fuzz/fuzz_json.cc — kvtier's strict JSON reader (common/json.h: nlohmann-json under a SAX
// builder) on arbitrary bytes.
//
// The Mooncake trace reader, the safetensors header reader and the CLI (reading /stats) parse
// text kvtier did not write. The properties checked:
//   * Parse returns OK or InvalidArgument "malformed JSON at byte N: ...", with ParseError's
//     offset inside the text (or at its end) and a description; it never crashes, never throws,
//     never nests past max_depth (the first input byte picks a small max_depth so deep nesting
//     is reached cheaply), never reads outside the text (a heap copy of exactly its size);
//   * a document that parses can be walked completely: nesting never exceeds max_depth,
//     object keys are unique, GetUint64 succeeds exactly for unsigned integers and agrees with
//     their value, GetDouble succeeds for every number and only for numbers;
//   * what parses survives the writer: Dump gives text that parses back to an equal value;
//   * parsing the same text again gives the same answer.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "common/json.h"
#include "fuzz/fuzz_support.h"

namespace kvtier::json {
namespace {

using nlohmann::ordered_json;

// Walks `v` and its subtree; returns the number of values in it.
size_t Walk(const ordered_json& v, int depth, int max_depth) {
  size_t values = 1;
  if (v.is_number()) {
    KVTIER_FUZZ_CHECK(GetDouble(v).ok(), "a number without a double value");
    absl::StatusOr<uint64_t> u = GetUint64(v);
    KVTIER_FUZZ_CHECK(u.ok() == v.is_number_unsigned(), "GetUint64 of a non-integer");
    if (u.ok()) KVTIER_FUZZ_CHECK(*u == v.get<uint64_t>(), "GetUint64 is not exact");
    if (!u.ok()) {
      KVTIER_FUZZ_CHECK(u.status().code() == absl::StatusCode::kInvalidArgument, "GetUint64 error");
    }
    return values;
  }
  KVTIER_FUZZ_CHECK(!GetDouble(v).ok() && !GetUint64(v).ok(), "a non-number read as a number");
  if (v.is_string()) {
    size_t sum = 0;
    for (char c : v.get_ref<const std::string&>()) sum += static_cast<unsigned char>(c);
    (void)sum;  // touch every byte
  }
  if (!v.is_structured()) return values;
  KVTIER_FUZZ_CHECK(depth < max_depth, "nesting deeper than max_depth");
  if (v.is_object()) {
    std::set<std::string> keys;
    for (const auto& [key, child] : v.items()) {
      KVTIER_FUZZ_CHECK(keys.insert(key).second, "a repeated key in a parsed object");
      KVTIER_FUZZ_CHECK(Find(v, (ordered_json::json_pointer() / key).to_string()) == &child,
                        "Find does not find a member by its key");
      values += Walk(child, depth + 1, max_depth);
    }
  } else {
    for (const ordered_json& child : v) values += Walk(child, depth + 1, max_depth);
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

  ParseError error;
  const absl::StatusOr<nlohmann::ordered_json> v = Parse(text, options, &error);
  if (!v.ok()) {
    KVTIER_FUZZ_CHECK(v.status().code() == absl::StatusCode::kInvalidArgument &&
                          absl::StartsWith(v.status().message(), "malformed JSON at byte "),
                      "Parse error: " + v.status().ToString());
    KVTIER_FUZZ_CHECK(error.offset <= text.size() && !error.what.empty(),
                      "error offset outside the text");
  } else {
    Walk(*v, 0, options.max_depth);
    // The writer's output reads back as the same value (options: the writer adds no depth).
    const std::string written = Dump(*v);
    const absl::StatusOr<nlohmann::ordered_json> back = Parse(written, options);
    KVTIER_FUZZ_CHECK(back.ok(), "Dump wrote what Parse rejects: " + back.status().ToString());
    KVTIER_FUZZ_CHECK(*back == *v, "Dump then Parse changed the value: " + written);
  }
  // The same text parses the same way again.
  const absl::StatusOr<nlohmann::ordered_json> again = Parse(text, options);
  KVTIER_FUZZ_CHECK(again.ok() == v.ok() && again.status().message() == v.status().message(),
                    "a second parse disagrees");
  return 0;
}
