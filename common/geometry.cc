#include "kvtier/geometry.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "common/enum_names.h"
#include "xxhash.h"

namespace kvtier {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat32:
      return 4;
    case DType::kFp8E4m3:
    case DType::kFp8E5m2:
      return 1;
  }
  return 0;
}

bool DTypeIsQuantizable(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kFloat32:
      return true;
    case DType::kFp8E4m3:
    case DType::kFp8E5m2:
      return false;
  }
  return false;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return "fp16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat32:
      return "fp32";
    case DType::kFp8E4m3:
      return "fp8_e4m3";
    case DType::kFp8E5m2:
      return "fp8_e5m2";
  }
  return "invalid";
}

const char* PageLayoutName(PageLayout layout) {
  switch (layout) {
    case PageLayout::kNhd:
      return "NHD";
    case PageLayout::kHnd:
      return "HND";
  }
  return "invalid";
}

absl::StatusOr<PageLayout> ParsePageLayout(absl::string_view name) {
  return ParseEnumName(name, "page layout", {PageLayout::kNhd, PageLayout::kHnd}, PageLayoutName,
                       NameCase::kIgnoreCase);
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "fp16" || n == "float16" || n == "half") return DType::kFloat16;
  if (n == "bf16" || n == "bfloat16") return DType::kBFloat16;
  if (n == "fp32" || n == "float32" || n == "float") return DType::kFloat32;
  if (n == "fp8_e4m3" || n == "float8_e4m3fn" || n == "e4m3") return DType::kFp8E4m3;
  if (n == "fp8_e5m2" || n == "float8_e5m2" || n == "e5m2") return DType::kFp8E5m2;
  if (n == "fp8" || n == "float8") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "dtype '%s' is ambiguous: name the encoding, fp8_e4m3 (what vLLM's 'fp8' means on "
        "CUDA) or fp8_e5m2",
        name));
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown dtype '%s' (expected fp16, bf16, fp32, fp8_e4m3 or fp8_e5m2)", name));
}

absl::Status Geometry::Validate() const {
  auto check = [](uint32_t v, uint32_t max, const char* field) -> absl::Status {
    if (v == 0 || v > max) {
      return absl::InvalidArgumentError(
          absl::StrFormat("geometry: %s = %u, must be in [1, %u]", field, v, max));
    }
    return absl::OkStatus();
  };
  if (auto s = check(num_layers, 4096, "num_layers"); !s.ok()) return s;
  if (auto s = check(num_kv_heads, 4096, "num_kv_heads"); !s.ok()) return s;
  if (auto s = check(head_dim, 8192, "head_dim"); !s.ok()) return s;
  if (auto s = check(block_tokens, 1 << 20, "block_tokens"); !s.ok()) return s;
  if (DTypeSize(dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("geometry: dtype = %d is not a known dtype", static_cast<int>(dtype)));
  }
  // 64-bit math: fields are bounded above, so this cannot overflow.
  const uint64_t bytes =
      uint64_t{num_layers} * 2 * block_tokens * num_kv_heads * head_dim * DTypeSize(dtype);
  if (bytes > (uint64_t{1} << 32)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "geometry: one block would be %u bytes; the limit is 4 GiB (lower block_tokens)", bytes));
  }
  return absl::OkStatus();
}

uint64_t Geometry::Fingerprint() const {
  // Fixed little-endian encoding; the tag versions it. Changing it changes every key.
  unsigned char buf[32] = {};
  static constexpr char kTag[] = "kvtier.geom.v1";  // 14 chars + NUL
  std::memcpy(buf, kTag, sizeof(kTag) - 1);
  auto put32 = [&buf](int at, uint32_t v) {
    for (int i = 0; i < 4; ++i) buf[at + i] = static_cast<unsigned char>(v >> (8 * i));
  };
  put32(14, num_layers);
  put32(18, num_kv_heads);
  put32(22, head_dim);
  put32(26, block_tokens);
  buf[30] = static_cast<unsigned char>(dtype);
  return XXH3_64bits(buf, sizeof(buf));
}

std::string Geometry::ToString() const {
  return absl::StrFormat("layers=%u kv_heads=%u head_dim=%u dtype=%s block_tokens=%u (%u B/block)",
                         num_layers, num_kv_heads, head_dim, DTypeName(dtype), block_tokens,
                         block_bytes());
}

}  // namespace kvtier
