// kvtier/geometry.h — the shape of one model's KV cache, and where bytes sit inside a block.
//
// A block holds the KV cache of `block_tokens` consecutive tokens for all layers, as one
// contiguous byte range laid out layer-major:
//
//     [layer][part][token][kv_head][head_dim]
//
// where the parts of a layer are K and V (kind kv: MHA, GQA, MQA), or the one latent vector
// of multi-head latent attention (kind mla: DeepSeek-V2/V3/R1, Kimi K2; num_kv_heads is 1 and
// head_dim is the latent plus its rope part, 512 + 64 = 576 in DeepSeek-V3). A block of kind
// mla is [layer][token][head_dim], which is vLLM's MLA page [block_size][head_size] per layer.
//
// Under tensor parallelism a geometry also says which shard its bytes are: the range of KV
// heads [kv_head_begin, kv_head_begin + num_kv_heads) out of the model's total_kv_heads. The
// shard is part of the fingerprint (so two ranks never match each other's blocks); the rank
// number and TP size are not (so ranks that hold the same bytes share them: every rank's MLA
// latent, or a KV head replicated when TP > total_kv_heads). See ForTensorParallelRank.
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

// What one layer of a block holds for each token.
enum class KvKind : uint8_t {
  kKeyValue = 0,  // "kv": K and V, num_kv_heads x head_dim each
  kLatent = 1,    // "mla": one latent vector of head_dim elements (num_kv_heads = 1)
};
const char* KvKindName(KvKind kind);  // "kv", "mla"; "invalid" outside the enum
// "kv" (or "mha", "gqa"), "mla" (or "latent"), any case; InvalidArgument naming them otherwise.
absl::StatusOr<KvKind> ParseKvKind(absl::string_view name);

// The parts of one layer: K and V under kind kv; the latent (part 0) under kind mla.
enum class KvPart : uint8_t { kKey = 0, kValue = 1, kLatent = 0 };

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
  // Kind mla: one latent part per layer. rope_dim is how many of its head_dim elements are
  // the RoPE'd key that follows the compressed latent (64 of 576 in DeepSeek-V3); it changes
  // no byte offset, but it is recorded (and fingerprinted) so that two models whose latents
  // split differently never share blocks. 0 under kind kv.
  KvKind kind = KvKind::kKeyValue;
  uint32_t rope_dim = 0;
  // The tensor-parallel shard (kind kv): these blocks hold KV heads [kv_head_begin,
  // kv_head_begin + num_kv_heads) of a model with total_kv_heads. total_kv_heads = 0 means
  // unsharded (all of the model's heads), as does kv_head_begin = 0 with total_kv_heads =
  // num_kv_heads. An mla latent is never sharded: every rank holds all of it.
  uint32_t kv_head_begin = 0;
  uint32_t total_kv_heads = 0;

  // OK when every field is in range and consistent and a block fits in 4 GiB; otherwise
  // InvalidArgument naming the field.
  absl::Status Validate() const;

  // The geometry of tensor-parallel rank `tp_rank` of `tp_size`, from the whole model's
  // (unsharded) geometry, by the rule vLLM shards KV heads with: with tp_size <= num_kv_heads
  // each rank holds num_kv_heads / tp_size consecutive heads; with more ranks than heads each
  // head is replicated on tp_size / num_kv_heads consecutive ranks. An mla geometry is
  // returned unchanged (the latent is replicated). InvalidArgument naming the field when the
  // geometry is invalid or already sharded, tp_rank >= tp_size, or the heads do not divide.
  absl::StatusOr<Geometry> ForTensorParallelRank(uint32_t tp_rank, uint32_t tp_size) const;
  // How many of `tp_size` ranks hold the same bytes as this geometry's rank: tp_size for an
  // mla latent, tp_size / total_kv_heads for a KV head replicated over ranks, else 1.
  // REQUIRES: Validate().ok(), and this geometry is ForTensorParallelRank(r, tp_size).
  uint32_t ReplicasUnder(uint32_t tp_size) const;

  // 2 under kind kv (K and V), 1 under kind mla (the latent).
  uint32_t parts() const { return kind == KvKind::kLatent ? 1 : 2; }
  // Kind mla: the compressed latent's elements (head_dim - rope_dim).
  uint32_t latent_dim() const { return head_dim - rope_dim; }
  // Whether these blocks hold a subset of the model's KV heads.
  bool sharded() const {
    return total_kv_heads != 0 && !(kv_head_begin == 0 && total_kv_heads == num_kv_heads);
  }

  size_t element_bytes() const { return DTypeSize(dtype); }
  // Bytes of one token's part (K, V or latent) for one layer: kv_heads * head_dim * element.
  size_t token_bytes() const { return size_t{num_kv_heads} * head_dim * element_bytes(); }
  // Bytes of one part (K, V or latent) of one layer of one block.
  size_t part_bytes() const { return token_bytes() * block_tokens; }
  // Bytes of every part of one layer of one block.
  size_t layer_bytes() const { return parts() * part_bytes(); }
  // Bytes of one whole block.
  size_t block_bytes() const { return layer_bytes() * num_layers; }
  // Bytes one token takes in a block: every layer's parts.
  size_t bytes_per_token() const { return size_t{num_layers} * parts() * token_bytes(); }

  // Byte offset of (layer, part) inside a block.
  // REQUIRES: layer < num_layers, part < parts().
  size_t Offset(uint32_t layer, KvPart part) const {
    return layer * layer_bytes() + static_cast<size_t>(part) * part_bytes();
  }
  // Byte offset of (layer, part, token) inside a block. REQUIRES: token < block_tokens.
  size_t Offset(uint32_t layer, KvPart part, uint32_t token) const {
    return Offset(layer, part) + token * token_bytes();
  }

  // A stable 64-bit identity of this geometry (same on every machine and release). A kind kv,
  // unsharded geometry hashes exactly the bytes it hashed before kinds and shards existed, so
  // its keys and disk records stay valid; the others hash a second, tagged encoding.
  uint64_t Fingerprint() const;
  // Whether this geometry needs the second encoding (kind mla or a shard): its disk records
  // are format version 2 (docs/disk-format.md).
  bool IsExtended() const { return kind != KvKind::kKeyValue || rope_dim != 0 || sharded(); }
  // "layers=.. kv_heads=.. head_dim=.. dtype=.. block_tokens=.. (N B/block)", with
  // " kind=mla rope_dim=R" and " kv_head_begin=B total_kv_heads=T" before the byte count where
  // they apply (tiers/disk_index.h parses it back).
  std::string ToString() const;

  friend bool operator==(const Geometry&, const Geometry&) = default;
};

}  // namespace kvtier

#endif  // KVTIER_GEOMETRY_H_
