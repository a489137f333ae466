// engine/keys.cc — chained block keys (see include/kvtier/block_key.h).
//
// Encoding (little-endian, fixed forever for a given tag; docs/architecture.md):
//   root  = H("kvtier.root.v1"  | u32 len(ns) | ns | u32 len(model) | model | u64 geometry)
//   block = H("kvtier.block.v1" | u64 parent.hi | u64 parent.lo | u32 n | n x i32 token |
//             u32 len(extra) | extra)
// H is SHA-256 truncated to its first 16 bytes (hi = bytes 0..7, lo = bytes 8..15, each read
// little-endian) or XXH3-128 with seed 0 (hi = high64, lo = low64).

#include <openssl/evp.h>

#include <bit>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "common/xxhash.h"
#include "kvtier/block_key.h"

namespace kvtier {
namespace {

class Encoder {
 public:
  explicit Encoder(std::string* buf) : buf_(buf) { buf_->clear(); }
  void Bytes(const void* p, size_t n) { buf_->append(static_cast<const char*>(p), n); }
  void U32(uint32_t v) {
    char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
    Bytes(b, 4);
  }
  void U64(uint64_t v) {
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
    Bytes(b, 8);
  }
  void Str(absl::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  void Tokens(absl::Span<const int32_t> tokens) {
    U32(static_cast<uint32_t>(tokens.size()));
    if constexpr (std::endian::native == std::endian::little) {
      Bytes(tokens.data(), tokens.size() * sizeof(int32_t));
    } else {
      for (int32_t t : tokens) U32(static_cast<uint32_t>(t));
    }
  }

 private:
  std::string* buf_;
};

uint64_t LoadLe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

const EVP_MD* Sha256() {
  // Fetched once: implicit fetching on every digest costs more than the hash itself.
  static const EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

BlockKey Digest(KeyHash hash, const std::string& msg) {
  if (hash == KeyHash::kXxh3) {
    const XXH128_hash_t h = XXH3_128bits(msg.data(), msg.size());
    return BlockKey{h.high64, h.low64};
  }
  // One context per thread, reused across digests and freed when the thread exits.
  struct CtxFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  thread_local std::unique_ptr<EVP_MD_CTX, CtxFree> owned(EVP_MD_CTX_new());
  EVP_MD_CTX* ctx = owned.get();
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // These calls fail only on allocation failure inside OpenSSL, which EVP_MD_CTX_new
  // already survived; an empty digest would still be deterministic, never wrong data.
  EVP_DigestInit_ex(ctx, Sha256(), nullptr);
  EVP_DigestUpdate(ctx, msg.data(), msg.size());
  EVP_DigestFinal_ex(ctx, out, &len);
  return BlockKey{LoadLe64(out), LoadLe64(out + 8)};
}

std::string& ScratchBuffer() {
  thread_local std::string buf;
  return buf;
}

}  // namespace

KeyHasher::KeyHasher(KeyHash hash, absl::string_view ns, absl::string_view model_fingerprint,
                     uint64_t geometry_fingerprint)
    : hash_(hash) {
  std::string& buf = ScratchBuffer();
  Encoder e(&buf);
  e.Bytes("kvtier.root.v1", 14);
  e.Str(ns);
  e.Str(model_fingerprint);
  e.U64(geometry_fingerprint);
  root_ = Digest(hash_, buf);
}

BlockKey KeyHasher::Chain(const BlockKey& parent, absl::Span<const int32_t> tokens,
                          absl::string_view extra) const {
  std::string& buf = ScratchBuffer();
  Encoder e(&buf);
  e.Bytes("kvtier.block.v1", 15);
  e.U64(parent.hi);
  e.U64(parent.lo);
  e.Tokens(tokens);
  e.Str(extra);
  return Digest(hash_, buf);
}

std::vector<BlockKey> KeyHasher::Keys(absl::Span<const int32_t> tokens, uint32_t block_tokens,
                                      absl::string_view extra) const {
  std::vector<BlockKey> keys;
  const size_t n = tokens.size() / block_tokens;
  keys.reserve(n);
  BlockKey parent = root_;
  for (size_t i = 0; i < n; ++i) {
    parent = Chain(parent, tokens.subspan(i * block_tokens, block_tokens), extra);
    keys.push_back(parent);
  }
  return keys;
}

}  // namespace kvtier
