// examples/llm/safetensors.cc — the safetensors reader: a small JSON parser for the header's
// subset of JSON, the header's checks, and tensor reads with dtype conversion.

#include "examples/llm/safetensors.h"

#include <bit>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/numeric.h"

namespace kvtier::llm {
namespace {

// safetensors stores little-endian data; reading it with memcpy assumes a host that agrees.
static_assert(std::endian::native == std::endian::little,
              "the reader assumes a little-endian host");

// ------------------------------------------------------------------------------------ JSON

// A parsed JSON value. Objects keep their members in order, as parallel key and value
// vectors (a vector of an incomplete type is fine since C++17; a pair of one is not).
struct JsonValue {
  enum class Kind { kNull, kBool, kInteger, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  uint64_t integer = 0;
  std::string string;
  std::vector<JsonValue> items;   // kArray elements, or kObject values
  std::vector<std::string> keys;  // kObject keys, parallel to items
};

const char* KindName(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Kind::kNull:
      return "null";
    case JsonValue::Kind::kBool:
      return "a boolean";
    case JsonValue::Kind::kInteger:
      return "an integer";
    case JsonValue::Kind::kString:
      return "a string";
    case JsonValue::Kind::kArray:
      return "an array";
    case JsonValue::Kind::kObject:
      return "an object";
  }
  return "?";
}

// Recursive descent over the whole text. Nesting is bounded so that a hostile header (a
// million '[') cannot overflow the stack.
class JsonParser {
 public:
  explicit JsonParser(absl::string_view text) : text_(text) {}

  absl::StatusOr<JsonValue> ParseDocument() {
    JsonValue value;
    if (absl::Status s = ParseValue(&value, 0); !s.ok()) return s;
    SkipWhitespace();
    if (pos_ != text_.size()) return Error("unexpected text after the top-level value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  absl::Status Error(absl::string_view what) const {
    std::string near;
    if (pos_ < text_.size()) {
      near = absl::StrFormat(" (near \"%s\")", absl::CHexEscape(text_.substr(pos_, 16)));
    } else {
      near = " (at the end of the header)";
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("malformed JSON at byte %d of the header: %s%s", pos_, what, near));
  }

  void SkipWhitespace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(char c) {
    SkipWhitespace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  absl::Status ParseValue(JsonValue* out, int depth) {
    if (depth > kMaxDepth) return Error("nesting deeper than 64 levels");
    SkipWhitespace();
    if (pos_ >= text_.size()) return Error("expected a value");
    const char c = text_[pos_];
    if (c == '{') return ParseObject(out, depth);
    if (c == '[') return ParseArray(out, depth);
    if (c == '"') {
      out->kind = JsonValue::Kind::kString;
      return ParseString(&out->string);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return ParseInteger(out);
    for (const auto& [word, kind] :
         {std::pair<absl::string_view, JsonValue::Kind>{"null", JsonValue::Kind::kNull},
          {"true", JsonValue::Kind::kBool},
          {"false", JsonValue::Kind::kBool}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        out->kind = kind;
        return absl::OkStatus();
      }
    }
    return Error("expected a value");
  }

  absl::Status ParseObject(JsonValue* out, int depth) {
    out->kind = JsonValue::Kind::kObject;
    ++pos_;  // '{'
    if (Consume('}')) return absl::OkStatus();
    while (true) {
      SkipWhitespace();
      if (pos_ >= text_.size() || text_[pos_] != '"') return Error("expected a string key");
      std::string key;
      if (absl::Status s = ParseString(&key); !s.ok()) return s;
      for (const std::string& seen : out->keys) {
        // Two entries for one tensor would make the file mean two things.
        if (seen == key)
          return Error(absl::StrCat("duplicate key \"", absl::CHexEscape(key), "\""));
      }
      if (!Consume(':')) return Error("expected ':' after an object key");
      JsonValue value;
      if (absl::Status s = ParseValue(&value, depth + 1); !s.ok()) return s;
      out->keys.push_back(std::move(key));
      out->items.push_back(std::move(value));
      if (Consume(',')) continue;
      if (Consume('}')) return absl::OkStatus();
      return Error("expected ',' or '}' in an object");
    }
  }

  absl::Status ParseArray(JsonValue* out, int depth) {
    out->kind = JsonValue::Kind::kArray;
    ++pos_;  // '['
    if (Consume(']')) return absl::OkStatus();
    while (true) {
      JsonValue value;
      if (absl::Status s = ParseValue(&value, depth + 1); !s.ok()) return s;
      out->items.push_back(std::move(value));
      if (Consume(',')) continue;
      if (Consume(']')) return absl::OkStatus();
      return Error("expected ',' or ']' in an array");
    }
  }

  // Integers only: every number in a safetensors header is a shape or an offset.
  absl::Status ParseInteger(JsonValue* out) {
    if (text_[pos_] == '-') return Error("negative number (shapes and offsets are >= 0)");
    const size_t start = pos_;
    uint64_t value = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const uint64_t digit = static_cast<uint64_t>(text_[pos_] - '0');
      if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
        return Error("integer does not fit in 64 bits");
      }
      value = value * 10 + digit;
      ++pos_;
    }
    if (pos_ - start > 1 && text_[start] == '0') {
      pos_ = start;
      return Error("integer with a leading zero");
    }
    if (pos_ < text_.size() && (text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E')) {
      return Error("non-integer number (shapes and offsets are integers)");
    }
    out->kind = JsonValue::Kind::kInteger;
    out->integer = value;
    return absl::OkStatus();
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
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

  absl::Status ParseHex4(uint32_t* out) {
    if (text_.size() - pos_ < 4) return Error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return Error("bad hex digit in a \\u escape");
      }
      v = v * 16 + d;
      ++pos_;
    }
    *out = v;
    return absl::OkStatus();
  }

  absl::Status ParseString(std::string* out) {
    ++pos_;  // opening quote
    while (true) {
      if (pos_ >= text_.size()) return Error("unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (static_cast<unsigned char>(c) < 0x20) return Error("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= text_.size()) return Error("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (absl::Status s = ParseHex4(&cp); !s.ok()) return s;
          if (cp >= 0xd800 && cp < 0xdc00) {  // a high surrogate: its low half must follow
            uint32_t low = 0;
            if (text_.substr(pos_, 2) != "\\u") return Error("unpaired surrogate in \\u escape");
            pos_ += 2;
            if (absl::Status s = ParseHex4(&low); !s.ok()) return s;
            if (low < 0xdc00 || low >= 0xe000) return Error("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            return Error("unpaired surrogate in \\u escape");
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          --pos_;
          return Error("unknown escape in a string");
      }
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

// ----------------------------------------------------------------------------- the header

const JsonValue* Member(const JsonValue& object, absl::string_view key) {
  for (size_t i = 0; i < object.keys.size(); ++i) {
    if (object.keys[i] == key) return &object.items[i];
  }
  return nullptr;
}

absl::Status TensorError(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("safetensors header: tensor \"%s\": %s", absl::CHexEscape(name), what));
}

absl::StatusOr<std::vector<uint64_t>> IntegerArray(const JsonValue* value, absl::string_view name,
                                                   absl::string_view field) {
  if (value == nullptr) return TensorError(name, absl::StrCat("missing \"", field, "\""));
  if (value->kind != JsonValue::Kind::kArray) {
    return TensorError(name, absl::StrCat("\"", field, "\" is ", KindName(value->kind),
                                          ", not an array of integers"));
  }
  std::vector<uint64_t> out;
  for (const JsonValue& item : value->items) {
    if (item.kind != JsonValue::Kind::kInteger) {
      return TensorError(
          name, absl::StrCat("\"", field, "\" holds ", KindName(item.kind), ", not only integers"));
    }
    out.push_back(item.integer);
  }
  return out;
}

std::string ShapeString(absl::Span<const uint64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

uint64_t SafetensorsTensorInfo::num_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // overflow is rejected when the header is parsed
  return n;
}

uint32_t SafetensorsDTypeSize(absl::string_view dtype) {
  static constexpr std::pair<absl::string_view, uint32_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return 0;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json) {
  absl::StatusOr<JsonValue> root = JsonParser(json).ParseDocument();
  if (!root.ok()) return root.status();
  if (root->kind != JsonValue::Kind::kObject) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors header: the top-level value is ",
                                                   KindName(root->kind), ", not an object"));
  }
  SafetensorsHeader header;
  for (size_t i = 0; i < root->keys.size(); ++i) {
    const std::string& name = root->keys[i];
    const JsonValue& entry = root->items[i];
    if (name == "__metadata__") {
      if (entry.kind != JsonValue::Kind::kObject) {
        return absl::InvalidArgumentError(absl::StrCat("safetensors header: \"__metadata__\" is ",
                                                       KindName(entry.kind), ", not an object"));
      }
      for (size_t j = 0; j < entry.keys.size(); ++j) {
        if (entry.items[j].kind != JsonValue::Kind::kString) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "safetensors header: \"__metadata__\" value \"%s\" is %s, not a string",
              absl::CHexEscape(entry.keys[j]), KindName(entry.items[j].kind)));
        }
        header.metadata[entry.keys[j]] = entry.items[j].string;
      }
      continue;
    }
    if (entry.kind != JsonValue::Kind::kObject) {
      return TensorError(name, absl::StrCat("is ", KindName(entry.kind), ", not an object"));
    }
    SafetensorsTensorInfo info;
    info.name = name;
    const JsonValue* dtype = Member(entry, "dtype");
    if (dtype == nullptr) return TensorError(name, "missing \"dtype\"");
    if (dtype->kind != JsonValue::Kind::kString) {
      return TensorError(name,
                         absl::StrCat("\"dtype\" is ", KindName(dtype->kind), ", not a string"));
    }
    info.dtype = dtype->string;
    const uint32_t element_bytes = SafetensorsDTypeSize(info.dtype);
    if (element_bytes == 0) {
      return TensorError(name,
                         absl::StrFormat("unknown dtype \"%s\"", absl::CHexEscape(info.dtype)));
    }
    absl::StatusOr<std::vector<uint64_t>> shape =
        IntegerArray(Member(entry, "shape"), name, "shape");
    if (!shape.ok()) return shape.status();
    info.shape = *std::move(shape);
    absl::StatusOr<std::vector<uint64_t>> offsets =
        IntegerArray(Member(entry, "data_offsets"), name, "data_offsets");
    if (!offsets.ok()) return offsets.status();
    if (offsets->size() != 2) {
      return TensorError(
          name, absl::StrFormat("\"data_offsets\" has %d entries, not 2", offsets->size()));
    }
    info.data_begin = (*offsets)[0];
    info.data_end = (*offsets)[1];
    if (info.data_end < info.data_begin) {
      return TensorError(name, absl::StrFormat("\"data_offsets\" [%d, %d] end before they begin",
                                               info.data_begin, info.data_end));
    }
    // Bytes the shape needs, with every product checked for overflow.
    uint64_t bytes = element_bytes;
    for (uint64_t d : info.shape) {
      if (d != 0 && bytes > std::numeric_limits<uint64_t>::max() / d) {
        return TensorError(name,
                           absl::StrCat("shape ", ShapeString(info.shape), " overflows 64 bits"));
      }
      bytes *= d;
    }
    if (info.data_end - info.data_begin != bytes) {
      return TensorError(
          name, absl::StrFormat("\"data_offsets\" [%d, %d] span %d bytes, but %s shape %s "
                                "needs %d",
                                info.data_begin, info.data_end, info.data_end - info.data_begin,
                                info.dtype, ShapeString(info.shape), bytes));
    }
    header.tensors.push_back(std::move(info));
  }
  return header;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the file"));
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0) return absl::DataLossError(absl::StrCat(path, ": cannot find the file's size"));
  const uint64_t file_size = static_cast<uint64_t>(end);
  in.seekg(0);

  if (file_size < 8) {
    return absl::DataLossError(absl::StrFormat(
        "%s: truncated: %d bytes, shorter than the 8-byte header length", path, file_size));
  }
  unsigned char length_bytes[8];
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  if (!in) return absl::DataLossError(absl::StrCat(path, ": cannot read the header length"));
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length_bytes[i];
  if (header_bytes > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: bad header length %d (more than the %d-byte limit)", path,
                        header_bytes, kMaxSafetensorsHeaderBytes));
  }
  if (header_bytes > file_size - 8) {
    return absl::DataLossError(
        absl::StrFormat("%s: truncated: header length %d runs past the end of the file (%d bytes)",
                        path, header_bytes, file_size));
  }
  std::string json(header_bytes, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_bytes));
  if (!in) return absl::DataLossError(absl::StrCat(path, ": cannot read the header"));

  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(json);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  }

  SafetensorsFile file;
  file.path_ = path;
  file.data_start_ = 8 + header_bytes;
  const uint64_t data_bytes = file_size - file.data_start_;
  for (size_t i = 0; i < header->tensors.size(); ++i) {
    const SafetensorsTensorInfo& t = header->tensors[i];
    if (t.data_end > data_bytes) {
      return absl::DataLossError(absl::StrFormat(
          "%s: truncated: tensor \"%s\" data [%d, %d) runs past the end of the data section "
          "(%d bytes)",
          path, absl::CHexEscape(t.name), t.data_begin, t.data_end, data_bytes));
    }
    file.index_.emplace(t.name, i);
  }
  file.header_ = *std::move(header);
  return file;
}

const SafetensorsTensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::Status SafetensorsFile::ReadAsFloat(absl::string_view name, absl::Span<float> out) const {
  const SafetensorsTensorInfo* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("%s: no tensor \"%s\"", path_, absl::CHexEscape(name)));
  }
  if (t->dtype != "F32" && t->dtype != "F16" && t->dtype != "BF16") {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tensor \"%s\" has dtype %s; only F32, F16 and BF16 are supported",
                        path_, absl::CHexEscape(name), t->dtype));
  }
  const uint64_t n = t->num_elements();
  if (n != out.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tensor \"%s\" has %d elements, the destination %d", path_,
                        absl::CHexEscape(name), n, out.size()));
  }
  std::ifstream in(path_, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path_, ": cannot open the file"));
  std::string bytes(t->data_end - t->data_begin, '\0');
  in.seekg(static_cast<std::streamoff>(data_start_ + t->data_begin));
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!in || static_cast<uint64_t>(in.gcount()) != bytes.size()) {
    return absl::DataLossError(absl::StrFormat(
        "%s: tensor \"%s\": short read of %d bytes at offset %d (did the file change?)", path_,
        absl::CHexEscape(name), bytes.size(), data_start_ + t->data_begin));
  }
  if (t->dtype == "F32") {
    std::memcpy(out.data(), bytes.data(), bytes.size());
  } else {
    const bool half = t->dtype == "F16";
    for (uint64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      out[i] = half ? numeric::HalfBitsToFloat(bits) : numeric::Bf16BitsToFloat(bits);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadAsFloat(absl::string_view name) const {
  const SafetensorsTensorInfo* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("%s: no tensor \"%s\"", path_, absl::CHexEscape(name)));
  }
  std::vector<float> out(t->num_elements());
  if (absl::Status s = ReadAsFloat(name, absl::MakeSpan(out)); !s.ok()) return s;
  return out;
}

}  // namespace kvtier::llm
