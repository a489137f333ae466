// kvtier/geometry.h — the shape of one model's KV cache, and where bytes sit inside a block.
//
// A block holds the K and V of `block_tokens` consecutive tokens for all layers, as one
// contiguous byte range laid out layer-major:
//
//     [layer][K,V][token][kv_head][head_dim]
//
// Every offset into a block is computed here (Geometry::Offset) and nowhere else.

#ifndef KVTIER_GEOMETRY_H_
#define KVTIER_GEOMETRY_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

enum class DType : uint8_t {
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat32 = 3,
  // One byte per element, as vLLM / SGLang / TensorRT-LLM keep fp8 KV caches on Hopper:
  // stored and moved as bytes (the storage path does no arithmetic on them). Their scales are
  // per tensor (or per head) and live with the model, not in the pages: a model fingerprint
  // must name them. The quantizing codecs (fp8, int8) refuse these dtypes; the lossless ones
  // (zstd, zstd-shuffle) apply.
  kFp8E4m3 = 4,  // OCP e4m3fn: torch.float8_e4m3fn, vLLM "fp8" / "fp8_e4m3" on CUDA
  kFp8E5m2 = 5,  // OCP e5m2: torch.float8_e5m2, vLLM "fp8_e5m2"
};

// Bytes per element; 0 for a value outside the enum.
size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);
// Whether the quantizing codecs / kernels take this dtype (fp16, bf16, fp32).
bool DTypeIsQuantizable(DType dtype);
// "fp16" (float16, half), "bf16" (bfloat16), "fp32" (float32, float), "fp8_e4m3"
// (float8_e4m3fn, e4m3), "fp8_e5m2" (float8_e5m2, e5m2). A bare "fp8" is refused, naming both
// (vLLM means e4m3 by it on CUDA, and AMD's e4m3fnuz is another encoding).
absl::StatusOr<DType> ParseDType(absl::string_view name);

enum class KvPart : uint8_t { kKey = 0, kValue = 1 };

// How an inference engine's paged KV pool orders the K (or V) of one page for one layer:
//   kNhd: [page_tokens][kv_heads][head_dim]  (vLLM's FlashAttention backend)
//   kHnd: [kv_heads][page_tokens][head_dim]  (FlashInfer's HND layout)
// kvtier's own blocks are always token-major, as kNhd.
enum class PageLayout : uint8_t { kNhd = 0, kHnd = 1 };
const char* PageLayoutName(PageLayout layout);  // "NHD", "HND"; "invalid" outside the enum
// The inverse of PageLayoutName, ignoring case ("nhd" too); InvalidArgument naming the
// accepted names otherwise.
absl::StatusOr<PageLayout> ParsePageLayout(absl::string_view name);

struct Geometry {
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kFloat16;
  uint32_t block_tokens = 0;

  // OK when every field is in range and a block fits in 4 GiB; otherwise InvalidArgument
  // naming the field.
  absl::Status Validate() const;

  size_t element_bytes() const { return DTypeSize(dtype); }
  // Bytes of one token's K (or V) for one layer: kv_heads * head_dim * element size.
  size_t token_bytes() const { return size_t{num_kv_heads} * head_dim * element_bytes(); }
  // Bytes of the K (or V) of one layer of one block.
  size_t part_bytes() const { return token_bytes() * block_tokens; }
  // Bytes of K and V of one layer of one block.
  size_t layer_bytes() const { return 2 * part_bytes(); }
  // Bytes of one whole block.
  size_t block_bytes() const { return layer_bytes() * num_layers; }

  // Byte offset of (layer, part) inside a block. REQUIRES: layer < num_layers.
  size_t Offset(uint32_t layer, KvPart part) const {
    return layer * layer_bytes() + static_cast<size_t>(part) * part_bytes();
  }
  // Byte offset of (layer, part, token) inside a block. REQUIRES: token < block_tokens.
  size_t Offset(uint32_t layer, KvPart part, uint32_t token) const {
    return Offset(layer, part) + token * token_bytes();
  }

  // A stable 64-bit identity of this geometry (same on every machine and release).
  uint64_t Fingerprint() const;
  std::string ToString() const;

  friend bool operator==(const Geometry&, const Geometry&) = default;
};

}  // namespace kvtier

#endif  // KVTIER_GEOMETRY_H_
