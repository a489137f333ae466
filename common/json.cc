// common/json.cc — the JSON parser behind common/json.h: recursive descent over the text,
// appending one node per value to the document, and the Value accessors.

#include "common/json.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier::json {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// Up to this many members, duplicate keys are found by comparing with every earlier key (no
// allocation: trace lines and tensor entries are this small); past it, through a hash set,
// so that a hostile object with a million keys costs linear time, not quadratic.
constexpr uint32_t kMaxLinearKeyScan = 16;

}  // namespace

const char* TypeName(Type type) {
  switch (type) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "a boolean";
    case Type::kNumber:
      return "a number";
    case Type::kString:
      return "a string";
    case Type::kArray:
      return "an array";
    case Type::kObject:
      return "an object";
  }
  return "?";
}

// ------------------------------------------------------------------------------- parsing

class Document::Parser {
 public:
  Parser(Document* doc, absl::string_view text, int max_depth)
      : doc_(*doc), nodes_(doc->nodes_), text_(text), max_depth_(max_depth) {}

  bool Run() {
    SkipWhitespace();
    if (!ParseValue(0, Span{}, false)) return false;
    SkipWhitespace();
    if (pos_ != text_.size()) {
      return Fail("unexpected text after the top-level value (trailing characters)");
    }
    return true;
  }

 private:
  // The duplicate-key set of a large object holds node indices (the member values, which
  // carry their keys) and hashes the keys they resolve to; it also looks up a key that has
  // no node yet (heterogeneous lookup). Indices, not string_views, because arena_ may move
  // while the object's later members are parsed.
  struct KeyHash {
    using is_transparent = void;
    const Document* doc;
    size_t operator()(uint32_t index) const { return (*this)(doc->KeyOf(index)); }
    size_t operator()(absl::string_view key) const { return absl::HashOf(key); }
  };
  struct KeyEq {
    using is_transparent = void;
    const Document* doc;
    bool operator()(uint32_t a, uint32_t b) const { return doc->KeyOf(a) == doc->KeyOf(b); }
    bool operator()(uint32_t a, absl::string_view b) const { return doc->KeyOf(a) == b; }
    bool operator()(absl::string_view a, uint32_t b) const { return a == doc->KeyOf(b); }
  };
  using KeySet = absl::flat_hash_set<uint32_t, KeyHash, KeyEq>;

  bool FailAt(size_t offset, std::string what) {
    doc_.error_ = ParseError{offset, std::move(what)};
    return false;
  }
  bool Fail(std::string what) { return FailAt(pos_, std::move(what)); }

  // '\0' at the end of the text: never a valid character where it is compared, so callers
  // need no separate end check.
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void SkipWhitespace() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return;
      ++pos_;
    }
  }

  uint32_t Pos() const { return static_cast<uint32_t>(pos_); }  // Parse caps the text size

  // One value at pos_ (whitespace already skipped), appended as the node at nodes_.size()
  // together with its subtree. `depth` counts the containers around it.
  bool ParseValue(int depth, Span key, bool key_in_arena) {
    if (pos_ >= text_.size()) return Fail("expected a value");
    const uint32_t index = static_cast<uint32_t>(nodes_.size());
    Node& node = nodes_.emplace_back();  // a reference valid only until the next node
    node.offset = Pos();
    node.key = key;
    node.key_in_arena = key_in_arena;
    node.end = index + 1;
    switch (text_[pos_]) {
      case '{':
        return ParseObject(index, depth + 1);
      case '[':
        return ParseArray(index, depth + 1);
      case '"':
        node.type = Type::kString;
        return ParseString(&node.text, &node.text_in_arena);
      case 't':
        return ParseLiteral("true", Type::kBool, true, node);
      case 'f':
        return ParseLiteral("false", Type::kBool, false, node);
      case 'n':
        return ParseLiteral("null", Type::kNull, false, node);
      default:
        if (Peek() == '-' || IsDigit(Peek())) {
          node.type = Type::kNumber;
          return ParseNumber(&node.text);
        }
        return Fail("expected a value");
    }
  }

  bool ParseLiteral(absl::string_view word, Type type, bool value, Node& node) {
    if (text_.substr(pos_, word.size()) != word) return Fail("expected a value");
    pos_ += word.size();
    node.type = type;
    node.bool_value = value;
    return true;
  }

  bool CheckDepth(int depth) {
    if (depth <= max_depth_) return true;
    return Fail(absl::StrFormat("nesting deeper than %d levels", max_depth_));
  }

  void Close(uint32_t index, uint32_t children) {
    nodes_[index].size = children;
    nodes_[index].end = static_cast<uint32_t>(nodes_.size());
  }

  bool ParseArray(uint32_t index, int depth) {
    if (!CheckDepth(depth)) return false;
    nodes_[index].type = Type::kArray;
    ++pos_;  // '['
    SkipWhitespace();
    uint32_t count = 0;
    if (Peek() != ']') {
      while (true) {
        SkipWhitespace();
        if (!ParseValue(depth, Span{}, false)) return false;
        ++count;
        SkipWhitespace();
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        if (Peek() == ']') break;
        return Fail("expected ',' or ']' in an array");
      }
    }
    ++pos_;  // ']'
    Close(index, count);
    return true;
  }

  bool ParseObject(uint32_t index, int depth) {
    if (!CheckDepth(depth)) return false;
    nodes_[index].type = Type::kObject;
    ++pos_;  // '{'
    SkipWhitespace();
    uint32_t count = 0;
    KeySet seen(0, KeyHash{&doc_}, KeyEq{&doc_});  // used past kMaxLinearKeyScan members only
    if (Peek() != '}') {
      while (true) {
        SkipWhitespace();
        if (Peek() != '"') {
          return Fail(count == 0 ? "expected a string key or '}'" : "expected a string key");
        }
        const size_t key_offset = pos_;
        Span key;
        bool key_in_arena = false;
        if (!ParseString(&key, &key_in_arena)) return false;
        const absl::string_view key_text = doc_.Resolve(key, key_in_arena);
        if (HasKey(index, count, key_text, seen)) {
          return FailAt(key_offset,
                        absl::StrCat("duplicate key \"", absl::CHexEscape(key_text), "\""));
        }
        SkipWhitespace();
        if (Peek() != ':') return Fail("expected ':' after an object key");
        ++pos_;
        SkipWhitespace();
        const uint32_t member = static_cast<uint32_t>(nodes_.size());
        if (!ParseValue(depth, key, key_in_arena)) return false;
        ++count;
        if (count > kMaxLinearKeyScan) {
          if (seen.empty()) {  // the object just outgrew the linear scan: index every key
            for (uint32_t i = index + 1; i != nodes_.size(); i = nodes_[i].end) seen.insert(i);
          } else {
            seen.insert(member);
          }
        }
        SkipWhitespace();
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        if (Peek() == '}') break;
        return Fail("expected ',' or '}' in an object");
      }
    }
    ++pos_;  // '}'
    Close(index, count);
    return true;
  }

  // Whether the object at `index`, with `count` members so far, already has `key`.
  bool HasKey(uint32_t index, uint32_t count, absl::string_view key, const KeySet& seen) const {
    if (count > kMaxLinearKeyScan) return seen.contains(key);
    uint32_t member = index + 1;
    for (uint32_t i = 0; i < count; ++i, member = nodes_[member].end) {
      if (doc_.KeyOf(member) == key) return true;
    }
    return false;
  }

  // A string at pos_ (its opening quote). Without escapes it stays where it is in the text;
  // with them, its unescaped bytes go to the arena.
  bool ParseString(Span* out, bool* in_arena) {
    const size_t quote = pos_;
    const size_t start = ++pos_;
    // The common case: no escapes.
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"') {
        *out = Span{static_cast<uint32_t>(start), static_cast<uint32_t>(pos_ - start)};
        *in_arena = false;
        ++pos_;
        return true;
      }
      if (c == '\\') break;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("control character in a string");
      ++pos_;
    }
    if (pos_ >= text_.size()) return FailAt(quote, "unterminated string");

    std::string& arena = doc_.arena_;
    const size_t arena_begin = arena.size();
    arena.append(text_.data() + start, pos_ - start);
    while (true) {
      if (pos_ >= text_.size()) return FailAt(quote, "unterminated string");
      const char c = text_[pos_];
      if (c == '"') break;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("control character in a string");
      if (c != '\\') {
        arena.push_back(c);
        ++pos_;
        continue;
      }
      const size_t escape = pos_;
      ++pos_;
      switch (Peek()) {
        case '"':
        case '\\':
        case '/':
          arena.push_back(text_[pos_]);
          break;
        case 'b':
          arena.push_back('\b');
          break;
        case 'f':
          arena.push_back('\f');
          break;
        case 'n':
          arena.push_back('\n');
          break;
        case 'r':
          arena.push_back('\r');
          break;
        case 't':
          arena.push_back('\t');
          break;
        case 'u': {
          ++pos_;
          uint32_t cp = 0;
          if (!ReadHex4(&cp)) return FailAt(escape, "\\u not followed by 4 hex digits");
          if (cp >= 0xdc00 && cp <= 0xdfff) {
            return FailAt(escape, absl::StrFormat("unpaired surrogate \\u%04X in a string (a low "
                                                  "surrogate without a high one before it)",
                                                  cp));
          }
          if (cp >= 0xd800 && cp <= 0xdbff) {
            // A UTF-16 surrogate pair: one code point above U+FFFF in two escapes.
            uint32_t low = 0;
            const size_t second = pos_;
            if (text_.substr(pos_, 2) != "\\u") {
              return FailAt(escape, absl::StrFormat("unpaired surrogate \\u%04X in a string (a "
                                                    "high surrogate not followed by a low one)",
                                                    cp));
            }
            pos_ += 2;
            if (!ReadHex4(&low)) return FailAt(second, "\\u not followed by 4 hex digits");
            if (low < 0xdc00 || low > 0xdfff) {
              return FailAt(escape, absl::StrFormat("unpaired surrogate \\u%04X in a string (a "
                                                    "high surrogate not followed by a low one)",
                                                    cp));
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          AppendUtf8(cp, &arena);
          continue;  // ReadHex4 moved past the digits
        }
        default:
          if (pos_ >= text_.size()) return FailAt(quote, "unterminated string");
          return FailAt(escape,
                        absl::StrCat("unknown escape '\\", absl::CHexEscape(text_.substr(pos_, 1)),
                                     "' in a string"));
      }
      ++pos_;
    }
    ++pos_;  // closing quote
    *out =
        Span{static_cast<uint32_t>(arena_begin), static_cast<uint32_t>(arena.size() - arena_begin)};
    *in_arena = true;
    return true;
  }

  // Four hex digits at pos_; moves past them on success.
  bool ReadHex4(uint32_t* out) {
    if (text_.size() - pos_ < 4) return false;
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) {
      const char h = text_[pos_ + i];
      uint32_t digit;
      if (h >= '0' && h <= '9') {
        digit = static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        digit = static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        digit = static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return false;
      }
      v = v * 16 + digit;
    }
    pos_ += 4;
    *out = v;
    return true;
  }

  // A number at pos_ ('-' or a digit), by the JSON grammar; its token is kept as written.
  bool ParseNumber(Span* out) {
    const size_t start = pos_;
    if (Peek() == '-') ++pos_;
    if (Peek() == '0') {
      ++pos_;
      if (IsDigit(Peek())) return FailAt(start, "number with a leading zero");
    } else if (IsDigit(Peek())) {
      while (IsDigit(Peek())) ++pos_;
    } else {
      return Fail("expected a digit after '-'");
    }
    if (Peek() == '.') {
      ++pos_;
      if (!IsDigit(Peek())) return Fail("expected a digit after the decimal point");
      while (IsDigit(Peek())) ++pos_;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++pos_;
      if (Peek() == '+' || Peek() == '-') ++pos_;
      if (!IsDigit(Peek())) return Fail("expected a digit in the exponent");
      while (IsDigit(Peek())) ++pos_;
    }
    *out = Span{static_cast<uint32_t>(start), static_cast<uint32_t>(pos_ - start)};
    return true;
  }

  Document& doc_;
  std::vector<Node>& nodes_;
  absl::string_view text_;
  const int max_depth_;
  size_t pos_ = 0;
};

// ------------------------------------------------------------------------------ Document

Document::Document() { Reset(); }

void Document::Reset() {
  nodes_.clear();
  nodes_.emplace_back();  // a null root
  arena_.clear();
}

absl::Status Document::Parse(absl::string_view text, const ParseOptions& options) {
  // clear() keeps the capacity of nodes_ and arena_: the next line of a JSONL file reuses it.
  nodes_.clear();
  arena_.clear();
  error_ = ParseError{};
  text_ = text;
  bool ok;
  if (text.size() >= std::numeric_limits<uint32_t>::max()) {
    error_ =
        ParseError{0, absl::StrFormat("a text of %d bytes is over the 4 GiB limit", text.size())};
    ok = false;
  } else {
    ok = Parser(this, text, options.max_depth).Run();
  }
  if (ok) return absl::OkStatus();
  Reset();
  const std::string near =
      error_.offset < text.size()
          ? absl::StrFormat(" (near \"%s\")", absl::CHexEscape(text.substr(error_.offset, 16)))
          : std::string(" (at the end of the text)");
  return absl::InvalidArgumentError(
      absl::StrFormat("malformed JSON at byte %d: %s%s", error_.offset, error_.what, near));
}

absl::StatusOr<Document> Parse(absl::string_view text, const ParseOptions& options) {
  Document doc;
  if (absl::Status s = doc.Parse(text, options); !s.ok()) return s;
  return doc;
}

// --------------------------------------------------------------------------------- Value

Type Value::type() const { return doc_->nodes_[index_].type; }

size_t Value::offset() const { return doc_->nodes_[index_].offset; }

absl::string_view Value::key() const { return doc_->KeyOf(index_); }

bool Value::bool_value() const {
  const Document::Node& node = doc_->nodes_[index_];
  return node.type == Type::kBool && node.bool_value;
}

absl::string_view Value::string_value() const {
  const Document::Node& node = doc_->nodes_[index_];
  if (node.type != Type::kString) return absl::string_view();
  return doc_->Resolve(node.text, node.text_in_arena);
}

absl::string_view Value::number_token() const {
  const Document::Node& node = doc_->nodes_[index_];
  if (node.type != Type::kNumber) return absl::string_view();
  return doc_->Resolve(node.text, false);
}

absl::StatusOr<uint64_t> Value::GetUint64() const {
  if (type() != Type::kNumber) {
    return absl::InvalidArgumentError(absl::StrCat(TypeName(type()), " is not a number"));
  }
  const absl::string_view token = number_token();
  // One pass, no library calls: this runs once per block id of a trace. The grammar has
  // already been checked, so the token is '-'? digits, then '.' or an exponent or nothing.
  const bool negative = token[0] == '-';
  uint64_t value = 0;
  bool overflow = false;
  for (size_t i = negative ? 1 : 0; i < token.size(); ++i) {
    const char c = token[i];
    if (!IsDigit(c)) {  // '.', 'e' or 'E': 52.0 and 5e1 are not written as integers
      return absl::InvalidArgumentError(absl::StrCat(token, " is a non-integer number"));
    }
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    // Up to 19 digits always fit (10^19 - 1 < 2^64), so only longer tokens pay for the check.
    if (i >= 19 && value > (std::numeric_limits<uint64_t>::max() - digit) / 10) overflow = true;
    value = value * 10 + digit;
  }
  if (negative) return absl::InvalidArgumentError(absl::StrCat(token, " is a negative number"));
  if (overflow) return absl::InvalidArgumentError(absl::StrCat(token, " does not fit in 64 bits"));
  return value;
}

absl::StatusOr<double> Value::GetDouble() const {
  if (type() != Type::kNumber) {
    return absl::InvalidArgumentError(absl::StrCat(TypeName(type()), " is not a number"));
  }
  double value;
  // Every JSON number token is something SimpleAtod reads; out of range gives ±infinity.
  if (!absl::SimpleAtod(number_token(), &value)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", number_token()));
  }
  return value;
}

size_t Value::size() const { return doc_->nodes_[index_].size; }

Value::Range Value::children() const {
  // Children sit right after their parent; a scalar's "subtree" ends right after it, so for
  // a scalar this range is empty.
  return Range(Iterator(doc_, index_ + 1), Iterator(doc_, doc_->nodes_[index_].end));
}

std::optional<Value> Value::Find(absl::string_view key) const {
  if (type() != Type::kObject) return std::nullopt;
  for (Value member : children()) {
    if (member.key() == key) return member;
  }
  return std::nullopt;
}

Value::Iterator& Value::Iterator::operator++() {
  index_ = doc_->nodes_[index_].end;
  return *this;
}

}  // namespace kvtier::json
