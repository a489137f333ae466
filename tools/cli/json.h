// tools/cli/json.h — a small JSON value tree with a writer; parsing goes through
// common/json (the project's one JSON reader).
//
// Just enough JSON for the kvtier CLI: `--json` output (inspect, verify, stats), reading the
// engine's /stats endpoint (kvtier stats / top), and the tests that check both. Numbers are
// doubles (exact for integers below 2^53, which every counter the CLI prints is); object keys
// keep their insertion order so the output reads in the order it was built.

#ifndef KVTIER_TOOLS_CLI_JSON_H_
#define KVTIER_TOOLS_CLI_JSON_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier::cli {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Json() = default;  // null
  static Json Bool(bool b);
  static Json Number(double v);
  static Json String(std::string s);
  static Json Array();
  static Json Object();

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool bool_value() const { return bool_; }
  double number() const { return number_; }
  const std::string& str() const { return string_; }
  const std::vector<Json>& items() const { return items_; }
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }

  // Object: sets (or replaces) member `key`; returns *this for chaining.
  Json& Set(absl::string_view key, Json value);
  Json& Set(absl::string_view key, double v) { return Set(key, Number(v)); }
  Json& Set(absl::string_view key, uint64_t v) { return Set(key, Number(static_cast<double>(v))); }
  Json& Set(absl::string_view key, int v) { return Set(key, Number(v)); }
  Json& Set(absl::string_view key, const char* s) { return Set(key, String(s)); }
  Json& Set(absl::string_view key, const std::string& s) { return Set(key, String(s)); }
  Json& Set(absl::string_view key, bool b) { return Set(key, Bool(b)); }
  // Array: appends.
  Json& Push(Json value);

  // Object member `key`, or nullptr.
  const Json* Find(absl::string_view key) const;
  // Follows a '/'-separated path of object keys and array indices ("tiers/0/hits");
  // nullptr when any step is missing.
  const Json* Path(absl::string_view path) const;

  // Compact when indent < 0, else pretty-printed with `indent` spaces per level.
  std::string Dump(int indent = 2) const;

  // Parses exactly one JSON value (surrounding whitespace allowed) with common/json;
  // InvalidArgument naming the byte offset of the first error.
  static absl::StatusOr<Json> Parse(absl::string_view text);

 private:
  void DumpTo(std::string* out, int indent, int depth) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_JSON_H_
