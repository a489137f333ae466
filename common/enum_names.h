// common/enum_names.h — the one way kvtier turns a name back into an enum value: the inverse of
// an enum's Name function (DeviceChoiceName, KeyHashName, TierKindName, ...), found by trying
// every value, with one phrasing for a name that is none of them:
//   "unknown device 'tpu' (expected auto, cuda or emulated)".
// Each public Parse function (ParseDeviceChoice, ParseKeyHash, ...) is this over its enum's
// values, so a name and its parse can never disagree.

#ifndef KVTIER_COMMON_ENUM_NAMES_H_
#define KVTIER_COMMON_ENUM_NAMES_H_

#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kvtier {

enum class NameCase { kExact, kIgnoreCase };

// The value of `values` whose name(value) is `text`; InvalidArgument "unknown WHAT 'TEXT'
// (expected A, B or C)" otherwise. REQUIRES: `values` is not empty.
template <typename Enum>
absl::StatusOr<Enum> ParseEnumName(absl::string_view text, absl::string_view what,
                                   std::initializer_list<Enum> values, const char* (*name)(Enum),
                                   NameCase name_case = NameCase::kExact) {
  std::string expected;
  size_t i = 0;
  for (Enum v : values) {
    const absl::string_view n = name(v);
    if (name_case == NameCase::kExact ? text == n : absl::EqualsIgnoreCase(text, n)) return v;
    absl::StrAppend(&expected, i == 0 ? "" : i + 1 == values.size() ? " or " : ", ", n);
    ++i;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " '", absl::CHexEscape(text), "' (expected ", expected, ")"));
}

}  // namespace kvtier

#endif  // KVTIER_COMMON_ENUM_NAMES_H_
