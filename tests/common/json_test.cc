// tests/common/json_test.cc — the strict JSON reader and helpers (common/json.h): values and
// their order, string escapes, numbers kept exact and read as integers only when written as
// one, every kind of malformed input with its message and byte offset, duplicate keys (small
// and large objects), the depth limit, JSON pointers, the writer and rounded figures.

#include "common/json.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::json {
namespace {

using ::nlohmann::ordered_json;
using ::testing::HasSubstr;

// Parses text that must be valid.
ordered_json MustParse(const std::string& text) {
  absl::StatusOr<ordered_json> v = Parse(text);
  EXPECT_TRUE(v.ok()) << v.status() << " in " << text;
  return v.ok() ? *v : ordered_json();
}

std::vector<std::string> Keys(const ordered_json& object) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : object.items()) keys.push_back(key);
  return keys;
}

TEST(Json, ScalarsAtTheTop) {
  struct Case {
    std::string text;
    ordered_json::value_t type;
  };
  using T = ordered_json::value_t;
  for (const Case& c : std::vector<Case>{{"null", T::null},
                                         {" true ", T::boolean},
                                         {"false", T::boolean},
                                         {"\t\r\n-0.5e+3\n", T::number_float},
                                         {"\"s\"", T::string},
                                         {"[]", T::array},
                                         {"{}", T::object}}) {
    const ordered_json v = MustParse(c.text);
    EXPECT_EQ(v.type(), c.type) << c.text;
    EXPECT_EQ(v.size(), v.is_structured() ? 0u : v.is_null() ? 0u : 1u);
  }
  EXPECT_EQ(MustParse("true"), true);
  EXPECT_EQ(MustParse("false"), false);
  EXPECT_EQ(MustParse("-0.5e+3"), -500.0);
}

TEST(Json, ObjectsKeepTheirMembersInDocumentOrder) {
  const std::string text =
      R"({"b": [1, [2, 3], {"x": null}], "a": {"k": "v"}, "": true, "n": -12.5e-1})";
  const ordered_json root = MustParse(text);
  ASSERT_TRUE(root.is_object());
  EXPECT_EQ(root.size(), 4u);
  EXPECT_EQ(Keys(root), (std::vector<std::string>{"b", "a", "", "n"}));
  EXPECT_EQ(root.dump(), R"({"b":[1,[2,3],{"x":null}],"a":{"k":"v"},"":true,"n":-1.25})");

  const ordered_json& b = root["b"];
  ASSERT_TRUE(b.is_array());
  ASSERT_EQ(b.size(), 3u);
  EXPECT_TRUE(b[0].is_number_unsigned());
  EXPECT_EQ(b[1].size(), 2u);
  EXPECT_EQ(Keys(b[2]), (std::vector<std::string>{"x"}));
  EXPECT_TRUE(b[2]["x"].is_null());
  EXPECT_EQ(root["a"]["k"], "v");
  EXPECT_EQ(root[""], true);
  EXPECT_DOUBLE_EQ(*GetDouble(root["n"]), -1.25);
  EXPECT_FALSE(root.contains("missing"));
}

TEST(Json, StringEscapes) {
  const std::string text =
      R"(["plain", "q\"b\\s\/", "\b\f\n\r\t", "\u0041\u00e9\u20AC", "\ud83d\ude00", "\u0000",)"
      R"( "caf\u00e9 x", "raw é"])";
  const ordered_json doc = MustParse(text);
  std::vector<std::string> got;
  for (const ordered_json& v : doc) got.push_back(v.get<std::string>());
  EXPECT_EQ(got, (std::vector<std::string>{"plain", "q\"b\\s/", "\b\f\n\r\t",
                                           "A\xc3\xa9\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                           std::string(1, '\0'), "caf\xc3\xa9 x", "raw \xc3\xa9"}));
  // Escaped keys are unescaped, and compared unescaped for duplicates.
  EXPECT_EQ(Keys(MustParse(R"({"a\u0062": 1, "\n": 2})")), (std::vector<std::string>{"ab", "\n"}));
  EXPECT_THAT(Parse(R"({"ab": 1, "a\u0062": 2})").status().message(), HasSubstr("duplicate key"));
}

TEST(Json, IntegersAreExactAndReadOnlyWhenWrittenAsIntegers) {
  const std::string text =
      "[0, 18446744073709551615, 18446744073709551616, -1, -0, 1.0, 1e3, 2E-2, 9007199254740993,"
      " 123456789012345678901234567890]";
  const ordered_json v = MustParse(text);
  ASSERT_EQ(v.size(), 10u);
  EXPECT_EQ(*GetUint64(v[0]), 0u);
  EXPECT_EQ(*GetUint64(v[1]), UINT64_MAX);
  // 2^53 + 1: a double would round it.
  EXPECT_EQ(*GetUint64(v[8]), 9007199254740993u);
  EXPECT_THAT(GetUint64(v[2]).status().message(), HasSubstr("does not fit in 64 bits"));
  EXPECT_THAT(GetUint64(v[9]).status().message(), HasSubstr("does not fit in 64 bits"));
  EXPECT_EQ(GetUint64(v[3]).status().message(), "-1 is a negative number");
  EXPECT_EQ(GetUint64(v[4]).status().message(), "-0 is a negative number");
  EXPECT_EQ(GetUint64(v[5]).status().message(), "1.0 is a non-integer number");
  EXPECT_THAT(GetUint64(v[6]).status().message(), HasSubstr("non-integer"));
  EXPECT_EQ(NumberText(v[6]), "1000.0");
  EXPECT_EQ(NumberText(v[4]), "-0");
  EXPECT_DOUBLE_EQ(*GetDouble(v[6]), 1000.0);
  EXPECT_DOUBLE_EQ(*GetDouble(v[7]), 0.02);
  EXPECT_DOUBLE_EQ(*GetDouble(v[3]), -1.0);
  EXPECT_EQ(GetUint64(v[3]).status().code(), absl::StatusCode::kInvalidArgument);

  const ordered_json not_numbers = MustParse(R"(["1", null])");
  EXPECT_EQ(GetUint64(not_numbers[0]).status().message(), "a string is not a number");
  EXPECT_EQ(GetDouble(not_numbers[1]).status().message(), "null is not a number");

  // Beyond a double's range a number cannot be read at all: an error, not infinity.
  EXPECT_THAT(Parse("[1, 1e999]").status().message(),
              HasSubstr("malformed JSON at byte 4: number beyond the range of a double"));
}

TEST(Json, MalformedTextSaysWhatAndWhere) {
  struct Case {
    std::string text;
    size_t offset;
    std::string what;
  };
  const std::vector<Case> cases = {
      {"", 0, "expected a value"},
      {"   ", 3, "expected a value"},
      {"tru", 3, "expected a value"},
      {"trux", 3, "expected a value"},
      {"+1", 0, "expected a value"},
      {".5", 0, "expected a value"},
      {"'s'", 0, "expected a value"},
      {"\xef\xbb\xbf[1]", 0, "expected a value (a byte order mark is not JSON)"},
      {"[1,]", 3, "expected a value"},
      {"[1 2]", 3, "expected ',' or ']' in an array"},
      {"[1", 2, "expected ',' or ']' in an array"},
      {"[1 x]", 3, "expected ',' or ']' in an array"},
      {"{", 1, "expected a string key or '}'"},
      {"{\"a\":1,}", 7, "expected a string key"},
      {"{a:1}", 1, "expected a string key"},
      {"{\"a\" 1}", 5, "expected ':' after an object key"},
      {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}' in an object"},
      {"{\"a\":1", 6, "expected ',' or '}' in an object"},
      {"{\"a\":1} x", 8, "unexpected text after the top-level value (trailing characters)"},
      {"1 2", 2, "unexpected text after the top-level value"},
      {"[1] [", 4, "unexpected text after the top-level value"},
      {"01", 0, "number with a leading zero"},
      {"[-01]", 1, "number with a leading zero"},
      {"[1, 00]", 4, "number with a leading zero"},
      {"[1-2]", 2, "expected ',' or ']' in an array"},
      {"[1e-5-2]", 5, "expected ',' or ']' in an array"},
      {"-", 1, "expected a digit after '-'"},
      {"-a", 1, "expected a digit after '-'"},
      {"1.", 2, "expected a digit after the decimal point"},
      {"1.e5", 2, "expected a digit after the decimal point"},
      {"1e", 2, "expected a digit in the exponent"},
      {"1e+", 3, "expected a digit in the exponent"},
      {"0x10", 1, "unexpected text"},
      {"\"abc", 0, "unterminated string"},
      {"[\"a\\", 1, "unterminated string"},
      {"[\"a\\n", 1, "unterminated string"},
      {"[\"", 1, "unterminated string"},
      {"\"a\nb\"", 2, "control character in a string"},
      {"\"a\\n\tb\"", 4, "control character in a string"},
      {"\"a\\qb\"", 2, "unknown escape '\\q' in a string"},
      {"\"\\u12G4\"", 5, "\\u not followed by 4 hex digits"},
      {"\"\\u12\"", 5, "\\u not followed by 4 hex digits"},
      {"\"\\ud800\"", 7, "unpaired surrogate in a string (a high surrogate not followed"},
      {"\"\\ud800\\u0041\"", 12, "unpaired surrogate in a string (a high surrogate"},
      {"\"\\ud800\\uzz\"", 9, "\\u not followed by 4 hex digits"},
      {"\"x\\udc00\"", 7, "unpaired surrogate in a string (a low surrogate without"},
      {"\"\xff\"", 1, "ill-formed UTF-8 in a string"},
      {"{\"a\":1,\"b\":2,\"a\":3}", 13, "duplicate key \"a\""},
      {"{\"a\":{\"b\":1,\"b\":1}}", 12, "duplicate key \"b\""},
      {"{\"a\\\"\":1,\"a\\\"\":1}", 9, "duplicate key \"a\\\"\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    ParseError error;
    absl::StatusOr<ordered_json> v = Parse(c.text, {}, &error);
    ASSERT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(error.what, HasSubstr(c.what));
    EXPECT_EQ(error.offset, c.offset);
    EXPECT_THAT(v.status().message(),
                HasSubstr(absl::StrCat("malformed JSON at byte ", c.offset, ": ")));
    EXPECT_THAT(v.status().message(), HasSubstr(c.what));
  }
}

TEST(Json, MessagesQuoteTheTextNearTheError) {
  EXPECT_EQ(std::string(Parse("[1, 2 3, 4]").status().message()),
            "malformed JSON at byte 6: expected ',' or ']' in an array (near \"3, 4]\")");
  EXPECT_EQ(std::string(Parse("[1, 2").status().message()),
            "malformed JSON at byte 5: expected ',' or ']' in an array (at the end of the text)");
  // Non-printable bytes are escaped, and the excerpt is at most 16 bytes.
  EXPECT_EQ(std::string(Parse("[\x01\x02 aaaaaaaaaaaaaaaaaaaaaaaa]").status().message()),
            "malformed JSON at byte 1: expected a value (near \"\\x01\\x02 aaaaaaaaaaaaa\")");
}

TEST(Json, DuplicateKeysInLargeObjects) {
  // Past the linear scan's reach the check goes through a hash set; both ends of it, and
  // escaped keys, must still be caught.
  auto object = [](int members, const std::string& extra) {
    std::string text = "{";
    for (int i = 0; i < members; ++i) absl::StrAppend(&text, "\"k\\u0030", i, "\": ", i, ",");
    return absl::StrCat(text, extra, "}");
  };
  for (int members : {15, 16, 17, 18, 1000}) {
    SCOPED_TRACE(members);
    const ordered_json ok = MustParse(object(members, "\"last\": [\"k00\"]"));
    EXPECT_EQ(ok.size(), static_cast<size_t>(members) + 1);
    EXPECT_EQ(ok[absl::StrCat("k0", members - 1)], members - 1);
    EXPECT_EQ(Keys(ok).back(), "last");
    for (const std::string& key :
         {std::string("k00"), absl::StrCat("k0", members - 1), absl::StrCat("k0", members / 2)}) {
      const std::string dup = object(members, absl::StrCat("\"", key, "\": 1"));
      ParseError error;
      EXPECT_THAT(Parse(dup, {}, &error).status().message(),
                  HasSubstr(absl::StrCat("duplicate key \"", key)));
      EXPECT_EQ(error.offset, dup.rfind(absl::StrCat("\"", key)));
    }
  }
}

TEST(Json, DepthLimit) {
  auto nested = [](int depth) {
    std::string text;
    for (int i = 0; i < depth; ++i) text += (i % 2 == 0) ? "[" : "{\"k\":";
    text += "0";
    for (int i = depth - 1; i >= 0; --i) text += (i % 2 == 0) ? "]" : "}";
    return text;
  };
  EXPECT_TRUE(MustParse(nested(64)).is_array());
  EXPECT_THAT(Parse(nested(65)).status().message(), HasSubstr("nesting deeper than 64 levels"));
  // A hostile text: a million '[' fails at the limit, without building a million arrays.
  EXPECT_THAT(Parse(std::string(1'000'000, '[')).status().message(),
              HasSubstr("malformed JSON at byte 64: nesting deeper"));
  ParseOptions shallow;
  shallow.max_depth = 2;
  EXPECT_TRUE(Parse("[[1]]", shallow).ok());
  EXPECT_THAT(Parse("[[[1]]]", shallow).status().message(),
              HasSubstr("malformed JSON at byte 2: nesting deeper than 2 levels"));
  EXPECT_THAT(Parse("[{\"a\":{}}]", shallow).status().message(),
              HasSubstr("malformed JSON at byte 6: nesting deeper than 2 levels"));
}

TEST(Json, ErrorIsLeftAloneByASuccessfulParse) {
  ParseError error{7, "earlier"};
  ASSERT_TRUE(Parse("[1]", {}, &error).ok());
  EXPECT_EQ(error.offset, 7u);
  EXPECT_EQ(error.what, "earlier");
  EXPECT_FALSE(Parse("[", {}, &error).ok());
  EXPECT_EQ(error.offset, 1u);
}

TEST(Json, FindFollowsAPointerAndNeverThrows) {
  const ordered_json v = MustParse(R"({"tiers": [{"hits": 3}, {"hits": 4}], "a/b": 1, "": 2})");
  ASSERT_NE(Find(v, "/tiers/1/hits"), nullptr);
  EXPECT_EQ(*Find(v, "/tiers/1/hits"), 4);
  EXPECT_EQ(Find(v, ""), &v);
  EXPECT_EQ(*Find(v, "/a~1b"), 1);  // RFC 6901 escapes
  EXPECT_EQ(*Find(v, "/"), 2);
  EXPECT_EQ(Find(v, "/tiers/2/hits"), nullptr);
  EXPECT_EQ(Find(v, "/tiers/x"), nullptr);
  EXPECT_EQ(Find(v, "/tiers/99999999999999999999999"), nullptr);
  EXPECT_EQ(Find(v, "/missing"), nullptr);
  EXPECT_EQ(Find(v, "/tiers/0/hits/deeper"), nullptr);
  EXPECT_EQ(Find(v, "tiers"), nullptr);  // not a pointer: no leading '/'
  EXPECT_EQ(Find(v, "/~2"), nullptr);    // a bad escape
}

TEST(Json, DumpNeverFailsAndRoundTrips) {
  ordered_json v = ordered_json::object();
  v["z"] = 1;
  v["a"] = std::numeric_limits<double>::quiet_NaN();
  v["s"] = std::string("ok \xff \"q\"\n");
  v["n"] = 0.1;
  v["big"] = uint64_t{18446744073709551615u};
  EXPECT_EQ(Dump(v),
            "{\"z\":1,\"a\":null,\"s\":\"ok \xef\xbf\xbd \\\"q\\\"\\n\",\"n\":0.1,"
            "\"big\":18446744073709551615}");
  EXPECT_EQ(Dump(ordered_json::array({1, 2}), 2), "[\n  1,\n  2\n]");
  v.erase("a");
  absl::StatusOr<ordered_json> back = Parse(Dump(v, 2));
  ASSERT_TRUE(back.ok()) << back.status();
  v["s"] = "ok \xef\xbf\xbd \"q\"\n";
  EXPECT_EQ(*back, v);
}

TEST(Json, RoundedNumbersKeepSixDigitsAndPrintWholeNumbersAsIntegers) {
  EXPECT_EQ(Dump(RoundedNumber(0.123456789)), "0.123457");
  EXPECT_EQ(Dump(RoundedNumber(-2.5)), "-2.5");
  EXPECT_EQ(Dump(RoundedNumber(1000.0)), "1000");
  EXPECT_EQ(Dump(RoundedNumber(12345678)), "12345700");
  EXPECT_EQ(Dump(RoundedNumber(1.5e-7)), "1.5e-07");
  EXPECT_EQ(Dump(RoundedNumber(1e300)), "1e+300");
  EXPECT_EQ(Dump(RoundedNumber(0.123456789, 3)), "0.123");
  EXPECT_EQ(Dump(RoundedNumber(std::numeric_limits<double>::quiet_NaN())), "null");
  EXPECT_EQ(Dump(RoundedNumber(-std::numeric_limits<double>::infinity())), "null");
}

TEST(Json, TypeNames) {
  EXPECT_STREQ(TypeName(ordered_json()), "null");
  EXPECT_STREQ(TypeName(ordered_json(true)), "a boolean");
  EXPECT_STREQ(TypeName(ordered_json(1)), "a number");
  EXPECT_STREQ(TypeName(ordered_json(-1)), "a number");
  EXPECT_STREQ(TypeName(ordered_json(1.5)), "a number");
  EXPECT_STREQ(TypeName(ordered_json("s")), "a string");
  EXPECT_STREQ(TypeName(ordered_json::array()), "an array");
  EXPECT_STREQ(TypeName(ordered_json::object()), "an object");
}

}  // namespace
}  // namespace kvtier::json
