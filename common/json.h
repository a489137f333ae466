// common/json.h — kvtier's JSON reader: a strict RFC 8259 parser into a compact,
// read-only document, shared by the readers that take JSON input (the Mooncake trace reader in
// workload/trace.cc, the safetensors header reader in examples/llm/safetensors.cc).
//
// kvtier has no JSON library to lean on (Debian's Abseil has none, and nothing else is a
// dependency), and its inputs come from files it did not write, so the parser is strict and
// says where it stopped:
//   * strings: every escape, \uXXXX included, with surrogate pairs combined into one code point
//     and lone surrogates rejected; raw control characters rejected. Strings come back as
//     UTF-8. (Bytes >= 0x80 are passed through unchecked: no caller needs UTF-8 validation.)
//   * numbers: exactly the JSON grammar -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, kept
//     as the token written in the text, so a caller reads an integer exactly (Value::GetUint64
//     never goes through double: block ids use all 64 bits) and can tell 52 from 52.0.
//   * objects: a key repeated within one object is an error (two values for one field would
//     make the input mean two things); members keep their order.
//   * nesting deeper than ParseOptions::max_depth is an error, so hostile input cannot
//     overflow the stack; anything but whitespace after the top-level value is an error.
// A failure is InvalidArgument "malformed JSON at byte N: what (near "...")", N counting from
// 0; Document::error() has the offset and the description apart, for callers that phrase
// their own messages (a line reader counts columns, say).
//
// Layout, for speed: a Document is one vector of fixed-size nodes in document order (a
// container is followed by its children, and knows where its subtree ends), with strings and
// number tokens as offsets into the parsed text or, for strings that had escapes, into one
// buffer of unescaped bytes. Parsing a document therefore allocates nothing per value, and
// re-parsing into the same Document (one per line of a JSONL file) reuses its memory. The
// document does not copy the text: the text must outlive every Value read from it.
//
//   json::Document doc;
//   if (absl::Status s = doc.Parse(text); !s.ok()) return s;
//   for (json::Value member : doc.root().children()) {
//     if (member.key() == "ids") { ... member.GetUint64() ... }
//   }

#ifndef KVTIER_COMMON_JSON_H_
#define KVTIER_COMMON_JSON_H_

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier::json {

enum class Type : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

// "null", "a boolean", "a number", "a string", "an array", "an object": for messages such as
// "\"shape\" is a string, not an array".
const char* TypeName(Type type);

struct ParseOptions {
  // The most arrays/objects that may enclose one another: 64 admits any real header or trace
  // line and bounds the parser's recursion.
  int max_depth = 64;
};

// Where and why the last Parse failed.
struct ParseError {
  size_t offset = 0;  // byte offset into the text, from 0
  std::string what;   // e.g. "expected ',' or '}' in an object"
};

class Document;

// A handle to one value of a Document: two words, cheap to copy, valid until the document
// is parsed again or destroyed (and while the parsed text is alive). Accessors for another
// type than the value's return an empty result (false, "", 0 children) rather than failing.
class Value {
 public:
  class Iterator;
  class Range;

  Type type() const;
  // Byte offset of the value's first character in the parsed text.
  size_t offset() const;
  // The key this value is stored under when it is an object member; "" otherwise.
  absl::string_view key() const;

  bool bool_value() const;                 // kBool
  absl::string_view string_value() const;  // kString: the unescaped UTF-8 bytes
  absl::string_view number_token() const;  // kNumber: the token as written, e.g. "-1.5e3"

  // A number written as a non-negative integer (digits only: no sign, fraction or exponent),
  // converted exactly. InvalidArgument otherwise, phrased to follow the name of what was read:
  // "-1 is a negative number", "1.5 is a non-integer number", "18446744073709551616 does not
  // fit in 64 bits", "a string is not a number".
  absl::StatusOr<uint64_t> GetUint64() const;
  // Any number, as the nearest double (±infinity beyond its range). InvalidArgument "a string
  // is not a number" for other types.
  absl::StatusOr<double> GetDouble() const;

  // Elements of an array or members of an object (each with its key()), in document order;
  // empty for other types. size() is their count.
  size_t size() const;
  Range children() const;
  // The member of an object with this key (linear in the object's size), or nullopt.
  std::optional<Value> Find(absl::string_view key) const;

 private:
  friend class Document;
  Value(const Document* doc, uint32_t index) : doc_(doc), index_(index) {}

  const Document* doc_;
  uint32_t index_;  // position of the value's node in doc_->nodes_
};

class Value::Iterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = Value;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = Value;

  Iterator() = default;
  Value operator*() const { return Value(doc_, index_); }
  Iterator& operator++();
  Iterator operator++(int) {
    Iterator old = *this;
    ++*this;
    return old;
  }
  friend bool operator==(const Iterator& a, const Iterator& b) { return a.index_ == b.index_; }

 private:
  friend class Value;
  Iterator(const Document* doc, uint32_t index) : doc_(doc), index_(index) {}

  const Document* doc_ = nullptr;
  uint32_t index_ = 0;
};

class Value::Range {
 public:
  Iterator begin() const { return begin_; }
  Iterator end() const { return end_; }

 private:
  friend class Value;
  Range(Iterator begin, Iterator end) : begin_(begin), end_(end) {}

  Iterator begin_;
  Iterator end_;
};

// A parsed JSON text. Copyable and movable (Values hold a pointer to the Document they came
// from, so take them from the copy to read the copy).
class Document {
 public:
  // An empty document: root() is null.
  Document();

  // Parses `text`, replacing what the document held; the text must stay alive while the
  // document is read. OK, or InvalidArgument "malformed JSON at byte N: what (near "...")"
  // with error() set and root() null. Texts of 4 GiB or more are refused (offsets are 32-bit
  // to keep nodes small).
  absl::Status Parse(absl::string_view text, const ParseOptions& options = {});

  Value root() const { return Value(this, 0); }
  // Meaningful after a failed Parse.
  const ParseError& error() const { return error_; }

 private:
  friend class Value;
  friend class Value::Iterator;
  class Parser;

  // Where a string's bytes are: in the parsed text when it had no escapes, else in arena_.
  struct Span {
    uint32_t begin = 0;
    uint32_t size = 0;
  };

  // One value; 32 bytes.
  struct Node {
    Type type = Type::kNull;
    bool bool_value = false;
    bool text_in_arena = false;  // where `text` points
    bool key_in_arena = false;   // where `key` points
    uint32_t offset = 0;         // of the value's first character in the text
    Span text;                   // kString: the unescaped bytes; kNumber: the token
    Span key;                    // the member's key, when the parent is an object
    uint32_t size = 0;           // kArray/kObject: number of children
    uint32_t end = 0;            // index one past the last node of this value's subtree
  };

  absl::string_view Resolve(Span span, bool in_arena) const {
    if (span.size == 0) return absl::string_view();  // also for text_ never set (null data)
    return absl::string_view((in_arena ? arena_.data() : text_.data()) + span.begin, span.size);
  }
  absl::string_view KeyOf(uint32_t index) const {
    return Resolve(nodes_[index].key, nodes_[index].key_in_arena);
  }
  void Reset();

  absl::string_view text_;
  std::vector<Node> nodes_;  // nodes_[0] is the root; children follow their parent
  std::string arena_;        // unescaped bytes of strings that had escapes
  ParseError error_;
};

// Parses into a new Document: the one-shot form of Document::Parse.
absl::StatusOr<Document> Parse(absl::string_view text, const ParseOptions& options = {});

}  // namespace kvtier::json

#endif  // KVTIER_COMMON_JSON_H_
