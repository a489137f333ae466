// tests/common/json_test.cc — the JSON reader (common/json.h): values and their accessors,
// string escapes, the number grammar and exact integers, every kind of malformed input with
// its message and byte offset, duplicate keys (small and large objects), the depth limit, and
// reuse of one Document across texts.

#include "common/json.h"

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::json {
namespace {

using ::testing::HasSubstr;

// Parses text that must be valid; the document keeps views into `text`, so callers keep it.
Document MustParse(const std::string& text) {
  Document doc;
  absl::Status s = doc.Parse(text);
  EXPECT_TRUE(s.ok()) << s << " in " << text;
  return doc;
}

std::vector<std::string> Keys(Value object) {
  std::vector<std::string> keys;
  for (Value member : object.children()) keys.emplace_back(member.key());
  return keys;
}

TEST(Json, ScalarsAtTheTop) {
  struct Case {
    std::string text;
    Type type;
  };
  for (const Case& c : std::vector<Case>{{"null", Type::kNull},
                                         {" true ", Type::kBool},
                                         {"false", Type::kBool},
                                         {"\t\r\n-0.5e+3\n", Type::kNumber},
                                         {"\"s\"", Type::kString},
                                         {"[]", Type::kArray},
                                         {"{}", Type::kObject}}) {
    Document doc = MustParse(c.text);
    EXPECT_EQ(doc.root().type(), c.type) << c.text;
    EXPECT_EQ(doc.root().size(), 0u);
    EXPECT_TRUE(doc.root().children().begin() == doc.root().children().end());
  }
  const std::string t = "true";
  EXPECT_TRUE(MustParse(t).root().bool_value());
  const std::string f = "false";
  EXPECT_FALSE(MustParse(f).root().bool_value());
}

TEST(Json, ObjectsAndArraysKeepOrderKeysAndOffsets) {
  const std::string text =
      R"({"b": [1, [2, 3], {"x": null}], "a": {"k": "v"}, "": true, "n": -12.5e-1})";
  Document doc = MustParse(text);
  Value root = doc.root();
  ASSERT_EQ(root.type(), Type::kObject);
  EXPECT_EQ(root.size(), 4u);
  EXPECT_EQ(Keys(root), (std::vector<std::string>{"b", "a", "", "n"}));
  EXPECT_EQ(root.offset(), 0u);

  std::optional<Value> b = root.Find("b");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->type(), Type::kArray);
  EXPECT_EQ(b->size(), 3u);
  EXPECT_EQ(b->offset(), text.find('['));
  std::vector<Type> types;
  for (Value item : b->children()) {
    types.push_back(item.type());
    EXPECT_EQ(item.key(), "");  // array elements have no key
  }
  EXPECT_EQ(types, (std::vector<Type>{Type::kNumber, Type::kArray, Type::kObject}));
  // Skipping over a nested subtree lands on the next sibling.
  auto it = b->children().begin();
  ++it;
  EXPECT_EQ((*it).size(), 2u);
  ++it;
  EXPECT_EQ(Keys(*it), (std::vector<std::string>{"x"}));
  EXPECT_EQ((*it).Find("x")->type(), Type::kNull);

  EXPECT_EQ(root.Find("a")->Find("k")->string_value(), "v");
  EXPECT_TRUE(root.Find("")->bool_value());
  EXPECT_EQ(root.Find("n")->number_token(), "-12.5e-1");
  EXPECT_DOUBLE_EQ(*root.Find("n")->GetDouble(), -1.25);
  EXPECT_FALSE(root.Find("missing").has_value());
  EXPECT_FALSE(b->Find("0").has_value());  // Find on an array: nothing

  // Accessors of the wrong type return empty results.
  EXPECT_EQ(b->string_value(), "");
  EXPECT_EQ(b->number_token(), "");
  EXPECT_FALSE(b->bool_value());
  EXPECT_EQ(root.Find("a")->Find("k")->size(), 0u);
}

TEST(Json, StringEscapes) {
  const std::string text =
      R"(["plain", "q\"b\\s\/", "\b\f\n\r\t", "\u0041\u00e9\u20AC", "\ud83d\ude00", "\u0000",)"
      R"( "caf\u00e9 x", "raw é"])";
  Document doc = MustParse(text);
  std::vector<std::string> got;
  for (Value v : doc.root().children()) got.emplace_back(v.string_value());
  EXPECT_EQ(got, (std::vector<std::string>{"plain", "q\"b\\s/", "\b\f\n\r\t",
                                           "A\xc3\xa9\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                           std::string(1, '\0'), "caf\xc3\xa9 x", "raw \xc3\xa9"}));
  // Escaped keys are unescaped, and compared unescaped for duplicates.
  const std::string keys = R"({"a\u0062": 1, "\n": 2})";
  Document k = MustParse(keys);
  EXPECT_EQ(Keys(k.root()), (std::vector<std::string>{"ab", "\n"}));
  Document dup;
  EXPECT_THAT(dup.Parse(R"({"ab": 1, "a\u0062": 2})").message(), HasSubstr("duplicate key"));
}

TEST(Json, NumbersKeepTheirTokenAndIntegersAreExact) {
  const std::string text =
      "[0, 18446744073709551615, 18446744073709551616, -1, -0, 1.0, 1e3, 2E-2, 9007199254740993,"
      " 123456789012345678901234567890]";
  Document doc = MustParse(text);
  std::vector<Value> v(doc.root().children().begin(), doc.root().children().end());
  ASSERT_EQ(v.size(), 10u);
  EXPECT_EQ(*v[0].GetUint64(), 0u);
  EXPECT_EQ(*v[1].GetUint64(), UINT64_MAX);
  // 2^53 + 1: a double would round it.
  EXPECT_EQ(*v[8].GetUint64(), 9007199254740993u);
  EXPECT_THAT(v[2].GetUint64().status().message(), HasSubstr("does not fit in 64 bits"));
  EXPECT_THAT(v[9].GetUint64().status().message(), HasSubstr("does not fit in 64 bits"));
  EXPECT_EQ(v[3].GetUint64().status().message(), "-1 is a negative number");
  EXPECT_THAT(v[4].GetUint64().status().message(), HasSubstr("negative"));
  EXPECT_EQ(v[5].GetUint64().status().message(), "1.0 is a non-integer number");
  EXPECT_THAT(v[6].GetUint64().status().message(), HasSubstr("non-integer"));
  EXPECT_EQ(v[6].number_token(), "1e3");
  EXPECT_DOUBLE_EQ(*v[6].GetDouble(), 1000.0);
  EXPECT_DOUBLE_EQ(*v[7].GetDouble(), 0.02);
  EXPECT_DOUBLE_EQ(*v[3].GetDouble(), -1.0);

  const std::string not_numbers = R"(["1", null])";
  Document n = MustParse(not_numbers);
  Value s = *n.root().children().begin();
  EXPECT_EQ(s.GetUint64().status().message(), "a string is not a number");
  EXPECT_EQ(s.GetDouble().status().code(), absl::StatusCode::kInvalidArgument);

  const std::string huge = "1e999";
  EXPECT_TRUE(std::isinf(*MustParse(huge).root().GetDouble()));
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
      {"tru", 0, "expected a value"},
      {"nul", 0, "expected a value"},
      {"+1", 0, "expected a value"},
      {".5", 0, "expected a value"},
      {"'s'", 0, "expected a value"},
      {"[1,]", 3, "expected a value"},
      {"[1 2]", 3, "expected ',' or ']' in an array"},
      {"[1", 2, "expected ',' or ']' in an array"},
      {"{", 1, "expected a string key or '}'"},
      {"{\"a\":1,}", 7, "expected a string key"},
      {"{a:1}", 1, "expected a string key"},
      {"{\"a\" 1}", 5, "expected ':' after an object key"},
      {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}' in an object"},
      {"{\"a\":1", 6, "expected ',' or '}' in an object"},
      {"{\"a\":1} x", 8, "unexpected text after the top-level value (trailing characters)"},
      {"1 2", 2, "unexpected text after the top-level value"},
      {"01", 0, "number with a leading zero"},
      {"[-01]", 1, "number with a leading zero"},
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
      {"\"a\nb\"", 2, "control character in a string"},
      {"\"a\\n\tb\"", 4, "control character in a string"},
      {"\"a\\qb\"", 2, "unknown escape '\\q' in a string"},
      {"\"\\u12G4\"", 1, "\\u not followed by 4 hex digits"},
      {"\"\\u12\"", 1, "\\u not followed by 4 hex digits"},
      {"\"\\ud800\"", 1, "unpaired surrogate \\uD800 in a string (a high surrogate not followed"},
      {"\"\\ud800\\u0041\"", 1, "unpaired surrogate \\uD800"},
      {"\"\\ud800\\uzz\"", 7, "\\u not followed by 4 hex digits"},
      {"\"x\\udc00\"", 2, "unpaired surrogate \\uDC00 in a string (a low surrogate without"},
      {"{\"a\":1,\"b\":2,\"a\":3}", 13, "duplicate key \"a\""},
      {"{\"a\":{\"b\":1,\"b\":1}}", 12, "duplicate key \"b\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    Document doc;
    absl::Status s = doc.Parse(c.text);
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(doc.error().what, HasSubstr(c.what));
    EXPECT_EQ(doc.error().offset, c.offset);
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("malformed JSON at byte ", c.offset, ": ")));
    EXPECT_THAT(s.message(), HasSubstr(c.what));
    // A failed parse leaves an empty (null) document behind.
    EXPECT_EQ(doc.root().type(), Type::kNull);
  }
}

TEST(Json, MessagesQuoteTheTextNearTheError) {
  Document doc;
  EXPECT_EQ(std::string(doc.Parse("[1, 2 3, 4]").message()),
            "malformed JSON at byte 6: expected ',' or ']' in an array (near \"3, 4]\")");
  EXPECT_EQ(std::string(doc.Parse("[1, 2").message()),
            "malformed JSON at byte 5: expected ',' or ']' in an array (at the end of the text)");
  // Non-printable bytes are escaped, and the excerpt is at most 16 bytes.
  EXPECT_EQ(std::string(doc.Parse("[\x01\x02 aaaaaaaaaaaaaaaaaaaaaaaa]").message()),
            "malformed JSON at byte 1: expected a value (near \"\\x01\\x02 aaaaaaaaaaaaa\")");
}

TEST(Json, DuplicateKeysInLargeObjects) {
  // Past the linear scan's reach the check goes through a hash set; both ends of it, and
  // escaped keys (stored apart from the text), must still be caught.
  auto object = [](int members, const std::string& extra) {
    std::string text = "{";
    for (int i = 0; i < members; ++i) absl::StrAppend(&text, "\"k\\u0030", i, "\": ", i, ",");
    return absl::StrCat(text, extra, "}");
  };
  for (int members : {15, 16, 17, 18, 1000}) {
    SCOPED_TRACE(members);
    const std::string ok = object(members, "\"last\": [\"k00\"]");
    Document doc = MustParse(ok);
    EXPECT_EQ(doc.root().size(), static_cast<size_t>(members) + 1);
    EXPECT_EQ(doc.root().Find(absl::StrCat("k0", members - 1))->number_token(),
              absl::StrCat(members - 1));
    for (const std::string& key :
         {std::string("k00"), absl::StrCat("k0", members - 1), absl::StrCat("k0", members / 2)}) {
      const std::string dup = object(members, absl::StrCat("\"", key, "\": 1"));
      Document bad;
      EXPECT_THAT(bad.Parse(dup).message(), HasSubstr(absl::StrCat("duplicate key \"", key)));
      EXPECT_EQ(bad.error().offset, dup.rfind(absl::StrCat("\"", key)));
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
  const std::string at_limit = nested(64);
  EXPECT_TRUE(MustParse(at_limit).root().type() == Type::kArray);
  Document doc;
  const std::string too_deep = nested(65);
  EXPECT_THAT(doc.Parse(too_deep).message(), HasSubstr("nesting deeper than 64 levels"));
  // A hostile text: a million '[' fails quickly instead of overflowing the stack.
  EXPECT_THAT(doc.Parse(std::string(1'000'000, '[')).message(), HasSubstr("nesting deeper"));
  ParseOptions shallow;
  shallow.max_depth = 2;
  EXPECT_TRUE(doc.Parse("[[1]]", shallow).ok());
  EXPECT_THAT(doc.Parse("[[[1]]]", shallow).message(),
              HasSubstr("malformed JSON at byte 2: nesting deeper than 2 levels"));
}

TEST(Json, ReusingADocumentReplacesItsContent) {
  Document doc;
  EXPECT_EQ(doc.root().type(), Type::kNull);  // before any parse
  const std::string first = R"({"a": "x\ty", "b": [1, 2, 3]})";
  ASSERT_TRUE(doc.Parse(first).ok());
  EXPECT_EQ(doc.root().Find("a")->string_value(), "x\ty");
  const std::string second = R"(["\u00e9", 7])";
  ASSERT_TRUE(doc.Parse(second).ok());
  EXPECT_EQ(doc.root().type(), Type::kArray);
  EXPECT_EQ(doc.root().size(), 2u);
  EXPECT_EQ((*doc.root().children().begin()).string_value(), "\xc3\xa9");
  EXPECT_FALSE(doc.Parse("[").ok());
  EXPECT_EQ(doc.root().type(), Type::kNull);
  ASSERT_TRUE(doc.Parse(first).ok());
  EXPECT_EQ(doc.root().Find("b")->size(), 3u);
}

TEST(Json, CopiesAndTheOneShotParse) {
  const std::string text = R"({"k\u0031": "v\u0032", "n": 5})";
  absl::StatusOr<Document> parsed = Parse(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  Document copy = *parsed;
  Document moved = *std::move(parsed);
  for (const Document* doc : {&copy, &moved}) {
    EXPECT_EQ(Keys(doc->root()), (std::vector<std::string>{"k1", "n"}));
    EXPECT_EQ(doc->root().Find("k1")->string_value(), "v2");
  }
  EXPECT_THAT(Parse("{]").status().message(), HasSubstr("malformed JSON at byte 1"));
}

TEST(Json, TypeNames) {
  EXPECT_STREQ(TypeName(Type::kNull), "null");
  EXPECT_STREQ(TypeName(Type::kBool), "a boolean");
  EXPECT_STREQ(TypeName(Type::kNumber), "a number");
  EXPECT_STREQ(TypeName(Type::kString), "a string");
  EXPECT_STREQ(TypeName(Type::kArray), "an array");
  EXPECT_STREQ(TypeName(Type::kObject), "an object");
}

}  // namespace
}  // namespace kvtier::json
