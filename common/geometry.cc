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

const char* KvKindName(KvKind kind) {
  switch (kind) {
    case KvKind::kKeyValue:
      return "kv";
    case KvKind::kLatent:
      return "mla";
  }
  return "invalid";
}

absl::StatusOr<KvKind> ParseKvKind(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "kv" || n == "mha" || n == "gqa" || n == "mqa") return KvKind::kKeyValue;
  if (n == "mla" || n == "latent") return KvKind::kLatent;
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown KV kind '%s' (expected kv: separate K and V, or mla: one latent per token)", name));
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
  switch (kind) {
    case KvKind::kKeyValue:
      if (rope_dim != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "geometry: rope_dim = %u is for kind = mla (the latent's rope part); kind = kv "
            "must have rope_dim = 0",
            rope_dim));
      }
      break;
    case KvKind::kLatent:
      if (num_kv_heads != 1) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "geometry: kind = mla stores one latent vector per token and layer: num_kv_heads "
            "= %u, must be 1",
            num_kv_heads));
      }
      if (rope_dim >= head_dim) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "geometry: rope_dim = %u must be less than head_dim = %u (head_dim is the whole "
            "latent: compressed part + rope part, 512 + 64 = 576 in DeepSeek-V3)",
            rope_dim, head_dim));
      }
      if (kv_head_begin != 0 || total_kv_heads > 1) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "geometry: kind = mla is replicated on every tensor-parallel rank, never sharded: "
            "kv_head_begin = %u and total_kv_heads = %u must be 0 (or total_kv_heads = 1)",
            kv_head_begin, total_kv_heads));
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "geometry: kind = %d is not a known kind (0 = kv, 1 = mla)", static_cast<int>(kind)));
  }
  if (total_kv_heads != 0) {
    if (auto s = check(total_kv_heads, 4096, "total_kv_heads"); !s.ok()) return s;
    if (uint64_t{kv_head_begin} + num_kv_heads > total_kv_heads) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "geometry: the shard's heads [kv_head_begin = %u, + num_kv_heads = %u) are outside "
          "total_kv_heads = %u",
          kv_head_begin, num_kv_heads, total_kv_heads));
    }
  } else if (kv_head_begin != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "geometry: kv_head_begin = %u needs total_kv_heads (the model's KV heads; 0 means "
        "unsharded)",
        kv_head_begin));
  }
  // 64-bit math: fields are bounded above, so this cannot overflow.
  const uint64_t bytes =
      uint64_t{num_layers} * parts() * block_tokens * num_kv_heads * head_dim * DTypeSize(dtype);
  if (bytes > (uint64_t{1} << 32)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "geometry: one block would be %u bytes; the limit is 4 GiB (lower block_tokens)", bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<Geometry> Geometry::ForTensorParallelRank(uint32_t tp_rank, uint32_t tp_size) const {
  if (absl::Status s = Validate(); !s.ok()) return s;
  if (tp_size == 0 || tp_rank >= tp_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor parallel: tp_rank = %u must be in [0, tp_size = %u)", tp_rank, tp_size));
  }
  if (sharded()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor parallel: the geometry is already a shard (kv_head_begin = %u, total_kv_heads "
        "= %u); give the whole model's geometry",
        kv_head_begin, total_kv_heads));
  }
  Geometry g = *this;
  if (kind == KvKind::kLatent) return g;  // the latent is the same on every rank
  const uint32_t total = num_kv_heads;
  g.total_kv_heads = total;
  if (tp_size <= total) {
    if (total % tp_size != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor parallel: num_kv_heads = %u is not divisible by tp_size = %u", total, tp_size));
    }
    g.num_kv_heads = total / tp_size;
    g.kv_head_begin = tp_rank * g.num_kv_heads;
  } else {
    if (tp_size % total != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor parallel: tp_size = %u is more than num_kv_heads = %u but not a multiple of "
          "it (each head must be replicated on the same number of ranks)",
          tp_size, total));
    }
    g.num_kv_heads = 1;
    g.kv_head_begin = tp_rank / (tp_size / total);
  }
  return g;
}

uint32_t Geometry::ReplicasUnder(uint32_t tp_size) const {
  if (tp_size <= 1) return 1;
  if (kind == KvKind::kLatent) return tp_size;
  const uint32_t total = total_kv_heads == 0 ? num_kv_heads : total_kv_heads;
  return tp_size > total ? tp_size / total : 1;
}

uint64_t Geometry::Fingerprint() const {
  // Fixed little-endian encodings; the tag versions them. Changing one changes every key.
  auto put32 = [](unsigned char* at, uint32_t v) {
    for (int i = 0; i < 4; ++i) at[i] = static_cast<unsigned char>(v >> (8 * i));
  };
  if (!IsExtended()) {
    // Version 1: every geometry before kinds and shards hashed exactly these 32 bytes.
    unsigned char buf[32] = {};
    static constexpr char kTag[] = "kvtier.geom.v1";  // 14 chars + NUL
    std::memcpy(buf, kTag, sizeof(kTag) - 1);
    put32(buf + 14, num_layers);
    put32(buf + 18, num_kv_heads);
    put32(buf + 22, head_dim);
    put32(buf + 26, block_tokens);
    buf[30] = static_cast<unsigned char>(dtype);
    return XXH3_64bits(buf, sizeof(buf));
  }
  // Version 2: the shard as (begin, total) with total normalised (an mla latent is unsharded,
  // total 0). No rank number or TP size: ranks holding the same bytes share their blocks.
  unsigned char buf[48] = {};
  static constexpr char kTag[] = "kvtier.geom.v2";
  std::memcpy(buf, kTag, sizeof(kTag) - 1);
  put32(buf + 14, num_layers);
  put32(buf + 18, num_kv_heads);
  put32(buf + 22, head_dim);
  put32(buf + 26, block_tokens);
  buf[30] = static_cast<unsigned char>(dtype);
  buf[31] = static_cast<unsigned char>(kind);
  put32(buf + 32, rope_dim);
  put32(buf + 36, sharded() ? kv_head_begin : 0);
  put32(buf + 40, sharded() ? total_kv_heads : 0);
  return XXH3_64bits(buf, sizeof(buf));
}

std::string Geometry::ToString() const {
  std::string s =
      absl::StrFormat("layers=%u kv_heads=%u head_dim=%u dtype=%s block_tokens=%u", num_layers,
                      num_kv_heads, head_dim, DTypeName(dtype), block_tokens);
  if (kind != KvKind::kKeyValue || rope_dim != 0) {
    absl::StrAppendFormat(&s, " kind=%s rope_dim=%u", KvKindName(kind), rope_dim);
  }
  if (sharded()) {
    absl::StrAppendFormat(&s, " kv_head_begin=%u total_kv_heads=%u", kv_head_begin, total_kv_heads);
  }
  absl::StrAppendFormat(&s, " (%u B/block)", block_bytes());
  return s;
}

}  // namespace kvtier
