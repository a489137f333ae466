// common/block_key.cc — the BlockKey value type (hex form) and hash names. The hashing that
// makes keys lives in engine/keys.cc; this part is shared by tiers that store keys.

#include "absl/strings/str_format.h"
#include "common/enum_names.h"
#include "kvtier/block_key.h"

namespace kvtier {

std::string BlockKey::ToHex() const { return absl::StrFormat("%016x%016x", hi, lo); }

absl::StatusOr<BlockKey> BlockKey::FromHex(absl::string_view hex) {
  if (hex.size() != 32) {
    return absl::InvalidArgumentError(
        absl::StrFormat("block key '%s': expected 32 hex digits, got %d", hex, hex.size()));
  }
  BlockKey k;
  for (size_t i = 0; i < 32; ++i) {
    const char c = hex[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return absl::InvalidArgumentError(
          absl::StrFormat("block key '%s': '%c' is not a hex digit", hex, c));
    }
    uint64_t& word = i < 16 ? k.hi : k.lo;
    word = (word << 4) | static_cast<uint64_t>(d);
  }
  return k;
}

const char* KeyHashName(KeyHash hash) {
  switch (hash) {
    case KeyHash::kSha256:
      return "sha256";
    case KeyHash::kXxh3:
      return "xxh3";
  }
  return "invalid";
}

absl::StatusOr<KeyHash> ParseKeyHash(absl::string_view name) {
  return ParseEnumName(name, "key hash", {KeyHash::kSha256, KeyHash::kXxh3}, KeyHashName);
}

}  // namespace kvtier
