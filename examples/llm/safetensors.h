// examples/llm/safetensors.h — a reader for the safetensors checkpoint format, enough to load
// Llama-style weights into the example decoder (examples/llm/model.h).
//
// A safetensors file is
//
//     [u64 little-endian N][N bytes of JSON header][data section]
//
// where the header is a JSON object mapping each tensor name to
// {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]} (byte offsets into the
// data section), plus an optional "__metadata__" object of string values. The header is
// parsed by kvtier's strict JSON reader (common/json.h; keys other than those above are
// accepted and ignored), and shapes and offsets are read as exact 64-bit integers.
// Everything in the file is checked before it is used: malformed JSON is InvalidArgument
// saying what was expected and at which byte, a header or a tensor that runs past the end of
// the file is DataLoss naming the file and the tensor.
//
// Tensors are read on demand (one seek and read each), so opening a file costs only its
// header; F32, F16 and BF16 tensors convert to float32.

#ifndef KVTIER_EXAMPLES_LLM_SAFETENSORS_H_
#define KVTIER_EXAMPLES_LLM_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvtier::llm {

// The largest header accepted (the reference implementation's limit too): a bound on what a
// corrupt length field can make us allocate.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;  // as written in the file: "F32", "F16", "BF16", "I64", ...
  std::vector<uint64_t> shape;
  uint64_t data_begin = 0;  // [data_begin, data_end): bytes of the data section
  uint64_t data_end = 0;

  uint64_t num_elements() const;  // 1 for a scalar (empty shape)
};

struct SafetensorsHeader {
  std::vector<SafetensorsTensorInfo> tensors;  // in header order
  std::map<std::string, std::string> metadata;
};

// Parses and checks a header's JSON: every tensor has a known dtype, a shape, and offsets
// whose length matches the shape and dtype. Does not know the file size: offsets are checked
// against it by SafetensorsFile::Open. InvalidArgument on any error, naming the tensor or the
// byte where the JSON went wrong.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json);

// Bytes per element of a safetensors dtype name; 0 when unknown.
uint32_t SafetensorsDTypeSize(absl::string_view dtype);

class SafetensorsFile {
 public:
  // Reads and checks the header. NotFound when the file cannot be opened; DataLoss when it is
  // shorter than its header length or a tensor's data runs past its end; InvalidArgument for
  // a malformed header. Every message names the file.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr when the file has no tensor of that name.
  const SafetensorsTensorInfo* Find(absl::string_view name) const;

  // Reads a tensor converted to float32 into `out`, which must hold exactly its elements.
  // NotFound for an unknown name, InvalidArgument for a dtype other than F32/F16/BF16 or a
  // size mismatch, DataLoss when the read comes up short (the file changed since Open).
  absl::Status ReadAsFloat(absl::string_view name, absl::Span<float> out) const;
  absl::StatusOr<std::vector<float>> ReadAsFloat(absl::string_view name) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  uint64_t data_start_ = 0;  // file offset of the data section: 8 + header length
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;  // name → position in header_.tensors
};

}  // namespace kvtier::llm

#endif  // KVTIER_EXAMPLES_LLM_SAFETENSORS_H_
