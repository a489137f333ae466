// kvtier/block_key.h — content addresses of KV blocks.
//
// A BlockKey is a 128-bit chained hash. The root of a chain is seeded by the namespace, the
// model fingerprint and the geometry; each block's key hashes its parent's key, the block's
// token ids and optional extra keys (a LoRA id, a multimodal hash, a salt). Two prompts that
// share their first k blocks of tokens share their first k keys, in the same namespace only.
//
// Keys are deterministic across processes, machines and releases: no random seeds, a fixed
// little-endian encoding (docs/architecture.md, "Block keys"), and golden-vector tests that
// pin exact values. Two hash functions:
//   * kSha256 (default): SHA-256 truncated to 128 bits; collision resistant, for shared and
//     multi-tenant caches where a tenant could craft colliding prompts.
//   * kXxh3: XXH3-128; several times faster, for single-tenant caches that trust their input.

#ifndef KVTIER_BLOCK_KEY_H_
#define KVTIER_BLOCK_KEY_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvtier {

struct BlockKey {
  uint64_t hi = 0;
  uint64_t lo = 0;

  friend bool operator==(const BlockKey&, const BlockKey&) = default;
  friend auto operator<=>(const BlockKey&, const BlockKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockKey& k) {
    // Both words: keys made by KeyHasher are uniform, but keys from elsewhere (tests, tools,
    // a recovered index) need not be, and one word would let them collide wholesale.
    return H::combine(std::move(h), k.hi, k.lo);
  }
  // 32 lowercase hex digits, hi first.
  std::string ToHex() const;
  static absl::StatusOr<BlockKey> FromHex(absl::string_view hex);
};

enum class KeyHash : uint8_t { kSha256 = 1, kXxh3 = 2 };
// "sha256", "xxh3"; "invalid" for a value outside the enum.
const char* KeyHashName(KeyHash hash);
// The inverse of KeyHashName; InvalidArgument naming the accepted names otherwise.
absl::StatusOr<KeyHash> ParseKeyHash(absl::string_view name);

// Computes chained block keys. Cheap to copy; immutable after construction.
class KeyHasher {
 public:
  // `ns` is the namespace name, `model_fingerprint` identifies the model weights (e.g.
  // "llama-3-8b@rev"), `geometry_fingerprint` is Geometry::Fingerprint().
  KeyHasher(KeyHash hash, absl::string_view ns, absl::string_view model_fingerprint,
            uint64_t geometry_fingerprint);

  KeyHash hash() const { return hash_; }
  // The virtual parent of the first block of every prompt in this namespace and model.
  const BlockKey& root() const { return root_; }

  // Key of one block given its parent's key, its token ids and extra keys.
  BlockKey Chain(const BlockKey& parent, absl::Span<const int32_t> tokens,
                 absl::string_view extra) const;

  // Keys of the first `tokens.size() / block_tokens` full blocks of a prompt (a trailing
  // partial block gets no key). `extra` applies to every block. REQUIRES: block_tokens > 0.
  std::vector<BlockKey> Keys(absl::Span<const int32_t> tokens, uint32_t block_tokens,
                             absl::string_view extra) const;

 private:
  KeyHash hash_;
  BlockKey root_;
};

}  // namespace kvtier

#endif  // KVTIER_BLOCK_KEY_H_
