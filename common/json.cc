// common/json.cc — the strict reader behind common/json.h: nlohmann's SAX parser feeding a
// document builder that rejects repeated keys and deep nesting, and the translation of the
// parser's errors into messages that say what was wrong and at which byte.

#include "common/json.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace kvtier::json {
namespace {

using nlohmann::ordered_json;

// An input iterator over the text whose position lives in one variable shared by every copy:
// nlohmann's SAX events carry no position, so the builder reads this one to say where a
// repeated key or a too-deep container is. (When an event fires the parser has read exactly
// the event's token: a key's closing quote, a container's opening bracket.)
class TrackedIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  explicit TrackedIterator(const char** at) : at_(at) {}
  const char& operator*() const { return **at_; }
  TrackedIterator& operator++() {
    ++*at_;
    return *this;
  }
  TrackedIterator operator++(int) {
    TrackedIterator old = *this;
    ++*at_;
    return old;
  }
  friend bool operator==(const TrackedIterator& a, const TrackedIterator& b) {
    return *a.at_ == *b.at_;
  }

 private:
  const char** at_;
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool IsNumberChar(char c) {
  return IsDigit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// Up to this many members, a repeated key is found by comparing with every earlier key (no
// allocation: trace lines and tensor entries are this small); past it, through a hash set,
// so that a hostile object with a million keys costs linear time, not quadratic.
constexpr size_t kMaxLinearKeyScan = 16;

// Builds an ordered_json from nlohmann's SAX events (the interface nlohmann::json::sax_parse
// calls), enforcing unique keys and the depth limit, and records the first error.
class StrictBuilder {
 public:
  using number_integer_t = ordered_json::number_integer_t;
  using number_unsigned_t = ordered_json::number_unsigned_t;
  using number_float_t = ordered_json::number_float_t;
  using string_t = ordered_json::string_t;
  using binary_t = ordered_json::binary_t;

  StrictBuilder(absl::string_view text, const char* const* at, int max_depth)
      : text_(text), at_(at), max_depth_(max_depth) {}

  bool null() { return Put(nullptr) != nullptr; }
  bool boolean(bool v) { return Put(v) != nullptr; }
  bool number_integer(number_integer_t v) { return Put(v) != nullptr; }
  bool number_unsigned(number_unsigned_t v) { return Put(v) != nullptr; }
  bool number_float(number_float_t v, const string_t& /*token*/) { return Put(v) != nullptr; }
  bool string(string_t& v) { return Put(std::move(v)) != nullptr; }
  bool binary(binary_t& /*v*/) { return Fail(Offset(), "binary data"); }  // not in JSON text

  bool start_object(size_t /*elements*/) { return Open(ordered_json::object()); }
  bool start_array(size_t /*elements*/) { return Open(ordered_json::array()); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }

  bool key(string_t& key) {
    Frame& frame = frames_.back();
    const ordered_json::object_t& members = frame.value->get_ref<const ordered_json::object_t&>();
    bool repeated = false;
    if (members.size() < kMaxLinearKeyScan) {
      for (const auto& member : members) repeated = repeated || member.first == key;
    } else {
      if (frame.keys.empty()) {  // the object just outgrew the linear scan: index every key
        for (const auto& member : members) frame.keys.insert(member.first);
      }
      repeated = !frame.keys.insert(key).second;
    }
    if (repeated) {
      return Fail(StringStart(Offset() - 1),
                  absl::StrFormat("duplicate key \"%s\" in an object", absl::CHexEscape(key)));
    }
    frame.key = std::move(key);
    return true;
  }

  bool parse_error(size_t position, const std::string& /*last_token*/,
                   const ordered_json::exception& e) {
    Translate(position, e);
    return false;
  }

  ordered_json& root() { return root_; }
  const ParseError& error() const { return error_; }
  bool failed() const { return failed_; }

  // Fails before parsing: nlohmann skips a UTF-8 byte order mark, which RFC 8259 forbids.
  void RejectByteOrderMark() { Fail(0, "expected a value (a byte order mark is not JSON)"); }

 private:
  struct Frame {
    ordered_json* value;                    // the open array or object
    std::string key;                        // objects: the key of the member being read
    absl::flat_hash_set<std::string> keys;  // objects past kMaxLinearKeyScan members
  };

  size_t Offset() const { return static_cast<size_t>(*at_ - text_.data()); }

  // Adds a value where the parser is (the root, an array's next element or an object's member
  // under the last key); returns it.
  ordered_json* Put(ordered_json value) {
    if (frames_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Frame& frame = frames_.back();
    if (frame.value->is_array()) {
      ordered_json::array_t& items = frame.value->get_ref<ordered_json::array_t&>();
      items.push_back(std::move(value));
      return &items.back();
    }
    // key() has checked the key is new, so the member is appended without ordered_map's own
    // (linear) search for it.
    ordered_json::object_t& members = frame.value->get_ref<ordered_json::object_t&>();
    static_cast<ordered_json::object_t::Container&>(members).emplace_back(std::move(frame.key),
                                                                          std::move(value));
    return &members.back().second;
  }

  bool Open(ordered_json container) {
    if (frames_.size() >= static_cast<size_t>(max_depth_ < 0 ? 0 : max_depth_)) {
      return Fail(Offset() - 1, absl::StrFormat("nesting deeper than %d levels", max_depth_));
    }
    ordered_json* value = Put(std::move(container));
    frames_.push_back(Frame{value, {}, {}});
    return true;
  }

  bool Close() {
    frames_.pop_back();
    return true;
  }

  bool Fail(size_t offset, std::string what) {
    if (!failed_) error_ = ParseError{offset, std::move(what)};
    failed_ = true;
    return false;
  }

  // The opening quote of the string whose closing quote is at `before` (or, for a string cut
  // short, that runs up to `before`): the last '"' before it that no backslash escapes.
  size_t StringStart(size_t before) const {
    for (size_t i = before; i-- > 0;) {
      if (text_[i] != '"') continue;
      size_t backslashes = 0;
      while (backslashes < i && text_[i - 1 - backslashes] == '\\') ++backslashes;
      if (backslashes % 2 == 0) return i;
    }
    return 0;  // not reached for a string the lexer read
  }

  // The first of the number characters that run up to `end`.
  size_t NumberRunStart(size_t end) const {
    while (end > 0 && IsNumberChar(text_[end - 1])) --end;
    return end;
  }

  // Where the unexpected token that ends just before `end` begins, from its name in nlohmann's
  // message ("number literal", "']'", "end of input", ...).
  size_t TokenStart(size_t end, absl::string_view token) const {
    if (token == "end of input") return text_.size();
    if (token == "true literal" || token == "null literal") return end - 4;
    if (token == "false literal") return end - 5;
    if (token == "string literal") return StringStart(end - 1);
    if (token == "number literal") {
      // The number may directly follow another ("1-2"): it starts at the last '-' that is
      // not an exponent's sign, or where the run of number characters does.
      const size_t run = NumberRunStart(end);
      for (size_t i = end; i-- > run + 1;) {
        if (text_[i] == '-' && text_[i - 1] != 'e' && text_[i - 1] != 'E') return i;
      }
      return run;
    }
    return end - 1;  // '[', ']', '{', '}', ':' or ','
  }

  // Turns nlohmann's error (position: the bytes the parser had consumed, one past the end of
  // the text when it ran out) into an offset and a phrase in kvtier's words. nlohmann's message
  // is "... syntax error while parsing CONTEXT - unexpected TOKEN; expected WHAT" when a whole
  // token came where it may not, or "... - LEXER ERROR; last read: 'BYTES'[; expected WHAT]"
  // when the bytes do not form a token.
  void Translate(size_t position, const ordered_json::exception& e) {
    const absl::string_view message = e.what();
    const size_t end = position < text_.size() ? position : text_.size();
    if (e.id == 406) {  // out_of_range: "number overflow parsing '1e999'"
      Fail(TokenStart(end, "number literal"), "number beyond the range of a double");
      return;
    }
    absl::string_view context, detail;
    if (size_t at = message.find("while parsing "); at != absl::string_view::npos) {
      context = message.substr(at + 14);
      const size_t dash = context.find(" - ");
      detail = dash == absl::string_view::npos ? absl::string_view() : context.substr(dash + 3);
      context = context.substr(0, dash);
    }
    const size_t last_read = detail.find("; last read: '");
    const bool lexer = last_read != absl::string_view::npos;
    // A lexer message without an expectation ends with the quoted bytes; this suffix is
    // therefore nlohmann's own.
    const bool trailing = absl::EndsWith(message, "; expected end of input");

    size_t offset;
    absl::string_view token;  // the unexpected token's name (syntax errors)
    if (lexer) {
      offset = position > text_.size() ? text_.size() : position - 1;  // the breaking byte
    } else {
      token = detail;
      absl::ConsumePrefix(&token, "unexpected ");
      token = token.substr(0, token.find(';'));
      offset = TokenStart(end, token);
    }
    // Digits directly after "0" or "-0": the grammar has no leading zeros, so the lexer
    // ended a number there and the digits came as a second one.
    if (!lexer && token == "number literal") {
      const size_t run = NumberRunStart(end);
      const size_t zero = run + (text_[run] == '-' ? 1 : 0);
      if (zero + 1 < end && text_[zero] == '0' && IsDigit(text_[zero + 1])) {
        Fail(run, "number with a leading zero");
        return;
      }
    }
    if (trailing) {
      Fail(offset, "unexpected text after the top-level value (trailing characters)");
      return;
    }
    if (lexer) {
      const absl::string_view what = detail.substr(0, last_read);
      if (absl::StartsWith(what, "invalid string: ")) {
        TranslateString(position, offset, what);
        return;
      }
      if (context == "value") {
        if (absl::StrContains(what, "after '-'")) {
          Fail(offset, "expected a digit after '-'");
        } else if (absl::StrContains(what, "after '.'")) {
          Fail(offset, "expected a digit after the decimal point");
        } else if (absl::StrContains(what, "exponent")) {
          Fail(offset, "expected a digit in the exponent");
        } else {
          Fail(offset, "expected a value");  // "invalid literal"
        }
        return;
      }
    }
    if (context == "value") {
      Fail(offset, "expected a value");
    } else if (context == "object key") {
      size_t before = offset;
      while (before > 0 && IsJsonSpace(text_[before - 1])) --before;
      const bool first = before > 0 && text_[before - 1] == '{';
      Fail(offset, first ? "expected a string key or '}'" : "expected a string key");
    } else if (context == "object separator") {
      Fail(offset, "expected ':' after an object key");
    } else if (context == "object") {
      Fail(offset, "expected ',' or '}' in an object");
    } else if (context == "array") {
      Fail(offset, "expected ',' or ']' in an array");
    } else {
      Fail(offset, std::string(message));  // not a message this nlohmann version writes
    }
  }

  // A string the lexer could not read; `what` is nlohmann's "invalid string: ..." message.
  void TranslateString(size_t position, size_t offset, absl::string_view what) {
    if (position > text_.size() || absl::StrContains(what, "missing closing quote")) {
      Fail(StringStart(text_.size()), "unterminated string");
    } else if (absl::StrContains(what, "control character")) {
      Fail(offset, absl::StrFormat("control character in a string (\\x%02x: write it escaped)",
                                   static_cast<unsigned char>(text_[offset])));
    } else if (absl::StrContains(what, "after backslash")) {
      Fail(offset - 1, absl::StrFormat("unknown escape '\\%s' in a string",
                                       absl::CHexEscape(text_.substr(offset, 1))));
    } else if (absl::StrContains(what, "4 hex digits")) {
      Fail(offset, "\\u not followed by 4 hex digits");
    } else if (absl::StrContains(what, "must be followed by")) {
      Fail(offset, "unpaired surrogate in a string (a high surrogate not followed by a low one)");
    } else if (absl::StrContains(what, "must follow")) {
      Fail(offset, "unpaired surrogate in a string (a low surrogate without a high one before)");
    } else if (absl::StrContains(what, "UTF-8")) {
      Fail(offset, "ill-formed UTF-8 in a string");
    } else {
      Fail(offset, std::string(what));
    }
  }

  absl::string_view text_;
  const char* const* at_;  // the parser's position in text_ (TrackedIterator's variable)
  int max_depth_;
  ordered_json root_;
  std::vector<Frame> frames_;  // the open containers, outermost first
  ParseError error_;
  bool failed_ = false;
};

}  // namespace

absl::StatusOr<ordered_json> Parse(absl::string_view text, const ParseOptions& options,
                                   ParseError* error) {
  const char* at = text.data();
  const char* end = text.data() + text.size();
  StrictBuilder builder(text, &at, options.max_depth);
  bool ok;
  if (absl::StartsWith(text, "\xef\xbb\xbf")) {
    builder.RejectByteOrderMark();
    ok = false;
  } else {
    ok = ordered_json::sax_parse(TrackedIterator(&at), TrackedIterator(&end), &builder) &&
         !builder.failed();
  }
  if (ok) return std::move(builder.root());
  const ParseError& e = builder.error();
  if (error != nullptr) *error = e;
  const std::string near =
      e.offset < text.size()
          ? absl::StrFormat(" (near \"%s\")", absl::CHexEscape(text.substr(e.offset, 16)))
          : std::string(" (at the end of the text)");
  return absl::InvalidArgumentError(
      absl::StrFormat("malformed JSON at byte %d: %s%s", e.offset, e.what, near));
}

const char* TypeName(const ordered_json& value) {
  switch (value.type()) {
    case ordered_json::value_t::null:
      return "null";
    case ordered_json::value_t::boolean:
      return "a boolean";
    case ordered_json::value_t::number_integer:
    case ordered_json::value_t::number_unsigned:
    case ordered_json::value_t::number_float:
      return "a number";
    case ordered_json::value_t::string:
      return "a string";
    case ordered_json::value_t::array:
      return "an array";
    case ordered_json::value_t::object:
      return "an object";
    case ordered_json::value_t::binary:
      return "binary data";
    case ordered_json::value_t::discarded:
      return "a discarded value";
  }
  return "?";
}

std::string NumberText(const ordered_json& value) {
  // "-0" is stored as the signed integer 0 (digits alone give an unsigned one): keep its sign.
  if (value.is_number_integer() && !value.is_number_unsigned() &&
      value.get<ordered_json::number_integer_t>() == 0) {
    return "-0";
  }
  return Dump(value);
}

absl::StatusOr<uint64_t> GetUint64(const ordered_json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (!value.is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(TypeName(value), " is not a number"));
  }
  const std::string text = NumberText(value);
  if (value.is_number_integer() || value.get<double>() < 0 || text[0] == '-') {
    return absl::InvalidArgumentError(absl::StrCat(text, " is a negative number"));
  }
  const double d = value.get<double>();
  if (d == std::floor(d) && d >= 18446744073709551616.0) {
    return absl::InvalidArgumentError(absl::StrCat(text, " does not fit in 64 bits"));
  }
  return absl::InvalidArgumentError(absl::StrCat(text, " is a non-integer number"));
}

absl::StatusOr<double> GetDouble(const ordered_json& value) {
  if (!value.is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(TypeName(value), " is not a number"));
  }
  return value.get<double>();
}

const ordered_json* Find(const ordered_json& value, absl::string_view pointer) {
  try {
    const ordered_json::json_pointer ptr{std::string(pointer)};
    return value.contains(ptr) ? &value.at(ptr) : nullptr;
  } catch (const ordered_json::exception&) {
    return nullptr;  // a malformed pointer, or an array index beyond size_t
  }
}

ordered_json RoundedNumber(double v, int digits) {
  if (!std::isfinite(v)) return nullptr;
  const double r = std::strtod(absl::StrFormat("%.*g", digits, v).c_str(), nullptr);
  if (r == std::trunc(r) && std::fabs(r) < 9007199254740992.0) return static_cast<int64_t>(r);
  return r;
}

std::string Dump(const ordered_json& value, int indent) {
  return value.dump(indent, ' ', /*ensure_ascii=*/false, ordered_json::error_handler_t::replace);
}

}  // namespace kvtier::json
