// examples/llm/safetensors.cc — the safetensors reader: the header's checks (its JSON is
// parsed by common/json.h's strict reader), and tensor reads with dtype conversion.

#include "examples/llm/safetensors.h"

#include <bit>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/json.h"
#include "kernels/numeric.h"

namespace kvtier::llm {
namespace {

// safetensors stores little-endian data; reading it with memcpy assumes a host that agrees.
static_assert(std::endian::native == std::endian::little,
              "the reader assumes a little-endian host");

// ----------------------------------------------------------------------------- the header

absl::Status TensorError(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("safetensors header: tensor \"%s\": %s", absl::CHexEscape(name), what));
}

// The integers of member `field` of `entry` ("shape" or "data_offsets"), read exactly
// (offsets use all 64 bits; a double would round them).
absl::StatusOr<std::vector<uint64_t>> IntegerArray(const nlohmann::ordered_json& entry,
                                                   absl::string_view name,
                                                   absl::string_view field) {
  const auto value = entry.find(std::string(field));
  if (value == entry.end()) return TensorError(name, absl::StrCat("missing \"", field, "\""));
  if (!value->is_array()) {
    return TensorError(name, absl::StrCat("\"", field, "\" is ", json::TypeName(*value),
                                          ", not an array of integers"));
  }
  std::vector<uint64_t> out;
  out.reserve(value->size());
  for (const nlohmann::ordered_json& item : *value) {
    if (!item.is_number()) {
      return TensorError(name, absl::StrCat("\"", field, "\" holds ", json::TypeName(item),
                                            ", not only integers"));
    }
    absl::StatusOr<uint64_t> v = json::GetUint64(item);
    if (!v.ok()) {
      return TensorError(name,
                         absl::StrCat("\"", field, "\"[", out.size(), "]: ", v.status().message(),
                                      " (shapes and offsets are integers in [0, 2^64))"));
    }
    out.push_back(*v);
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

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view text) {
  // The JSON reader checks the grammar (escapes, numbers, nesting depth) and rejects a
  // repeated key: two entries for one tensor would make the file mean two things. Members
  // come in file order, so the tensors do too.
  absl::StatusOr<nlohmann::ordered_json> root = json::Parse(text);
  if (!root.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors header: ", root.status().message()));
  }
  if (!root->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors header: the top-level value is ",
                                                   json::TypeName(*root), ", not an object"));
  }
  SafetensorsHeader header;
  for (const auto& [name, entry] : root->items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat("safetensors header: \"__metadata__\" is ",
                                                       json::TypeName(entry), ", not an object"));
      }
      for (const auto& [key, item] : entry.items()) {
        if (!item.is_string()) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "safetensors header: \"__metadata__\" value \"%s\" is %s, not a string",
              absl::CHexEscape(key), json::TypeName(item)));
        }
        header.metadata[key] = item.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) {
      return TensorError(name, absl::StrCat("is ", json::TypeName(entry), ", not an object"));
    }
    SafetensorsTensorInfo info;
    info.name = name;
    const auto dtype = entry.find("dtype");
    if (dtype == entry.end()) return TensorError(name, "missing \"dtype\"");
    if (!dtype->is_string()) {
      return TensorError(name,
                         absl::StrCat("\"dtype\" is ", json::TypeName(*dtype), ", not a string"));
    }
    info.dtype = dtype->get<std::string>();
    const uint32_t element_bytes = SafetensorsDTypeSize(info.dtype);
    if (element_bytes == 0) {
      return TensorError(name,
                         absl::StrFormat("unknown dtype \"%s\"", absl::CHexEscape(info.dtype)));
    }
    absl::StatusOr<std::vector<uint64_t>> shape = IntegerArray(entry, name, "shape");
    if (!shape.ok()) return shape.status();
    info.shape = *std::move(shape);
    absl::StatusOr<std::vector<uint64_t>> offsets = IntegerArray(entry, name, "data_offsets");
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
