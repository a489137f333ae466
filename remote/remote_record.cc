// remote/remote_record.cc — the remote tier's Redis keys and self-verifying values (see
// remote/remote_record.h; docs/remote-format.md gives the byte-exact layout).
//
// As in tiers/disk_record.cc, every integer is written byte by byte, little-endian, at a fixed
// offset, and the reader treats a value as hostile: it reads only inside the bytes it was
// given and trusts no field before checking it. The payload codecs are tiers/record_codec.h's,
// shared with the disk record. The MAC is HMAC-SHA256 through OpenSSL's EVP_MAC, with one
// context per thread (re-keyed per call), so the functions stay pure and lock-free.

#include "remote/remote_record.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/xxhash.h"
#include "tiers/record_codec.h"

namespace kvtier::remote {
namespace {

// Header layout, format version 1 (docs/remote-format.md). Offsets in bytes.
constexpr size_t kOffMagic = 0;             // u64
constexpr size_t kOffVersion = 8;           // u32
constexpr size_t kOffCodec = 12;            // u8
constexpr size_t kOffElementBytes = 13;     // u8
constexpr size_t kOffFlags = 14;            // u8: kFlagMac, other bits zero
constexpr size_t kOffNamespaceBytes = 15;   // u8, 0..128
constexpr size_t kOffKeyHi = 16;            // u64
constexpr size_t kOffKeyLo = 24;            // u64
constexpr size_t kOffModelId = 32;          // u64
constexpr size_t kOffGeometry = 40;         // u64
constexpr size_t kOffRawBytes = 48;         // u32
constexpr size_t kOffStoredBytes = 52;      // u32
constexpr size_t kOffCreated = 56;          // u64
constexpr size_t kOffPayloadChecksum = 64;  // u64
constexpr size_t kOffNamespace = 72;        // kMaxNamespaceBytes, zero-padded
constexpr size_t kMaxNamespaceBytes = 128;
constexpr size_t kOffReserved = 200;  // 16 bytes, zero
constexpr size_t kOffMac = 216;       // 32 bytes: HMAC-SHA256, zero without kFlagMac
constexpr size_t kMacBytes = 32;
constexpr size_t kOffHeaderChecksum = 248;  // u64, XXH3-64 of [0, 248)
constexpr uint8_t kFlagMac = 1;
static_assert(kOffNamespace + kMaxNamespaceBytes == kOffReserved);
static_assert(kOffReserved + 16 == kOffMac);
static_assert(kOffMac + kMacBytes == kOffHeaderChecksum);
static_assert(kOffHeaderChecksum + 8 == kRemoteHeaderBytes);

constexpr absl::string_view kKeyPrefix = "kvtier:1:";

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t HeaderChecksum(const uint8_t* header) { return XXH3_64bits(header, kOffHeaderChecksum); }

// The largest payload a codec may produce for a block of raw_bytes: it must save at least
// 1/16 of the block (rounded up, so at least one byte), else the block is stored raw.
size_t CodecLimit(size_t raw_bytes) { return raw_bytes - (raw_bytes + 15) / 16; }

// The field rules of a header that do not need its bytes; shared by the writer (refused as
// InvalidArgument) and the reader (kCorrupt). Empty when the fields are consistent.
std::string FieldProblem(Codec codec, uint8_t element_bytes, uint32_t raw_bytes,
                         uint32_t stored_bytes) {
  if (static_cast<uint8_t>(codec) >= kNumCodecs) {
    return absl::StrFormat("codec = %d is unknown", static_cast<int>(codec));
  }
  if (raw_bytes == 0) return "raw_bytes = 0 (a record holds a non-empty block)";
  if (stored_bytes == 0) return "stored_bytes = 0";
  if (codec == Codec::kNone) {
    if (stored_bytes != raw_bytes) {
      return absl::StrFormat("stored_bytes = %d differs from raw_bytes = %d under codec none",
                             stored_bytes, raw_bytes);
    }
  } else if (stored_bytes > CodecLimit(raw_bytes)) {
    return absl::StrFormat(
        "stored_bytes = %d under codec %s saves less than 1/16 of raw_bytes = %d (at most %d)",
        stored_bytes, CodecName(codec), raw_bytes, CodecLimit(raw_bytes));
  }
  if (codec == Codec::kZstdShuffle) {
    if (!record_codec::IsShuffleWidth(element_bytes) || raw_bytes % element_bytes != 0) {
      return absl::StrFormat(
          "element_bytes = %d under codec zstd-shuffle (must be 1, 2 or 4 and divide "
          "raw_bytes = %d)",
          element_bytes, raw_bytes);
    }
  } else if (element_bytes != 0) {
    return absl::StrFormat("element_bytes = %d under codec %s (must be 0)", element_bytes,
                           CodecName(codec));
  }
  return "";
}

// One HMAC-SHA256 context per thread, fetched once and re-keyed per call.
class ThreadMac {
 public:
  ThreadMac() {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
    if (mac != nullptr) {
      ctx_ = EVP_MAC_CTX_new(mac);
      EVP_MAC_free(mac);  // the context holds its own reference
    }
  }
  ThreadMac(const ThreadMac&) = delete;
  ThreadMac& operator=(const ThreadMac&) = delete;
  ~ThreadMac() { EVP_MAC_CTX_free(ctx_); }

  // HMAC-SHA256(secret, a || b) into out; false when OpenSSL fails (no context, no memory).
  bool Compute(absl::string_view secret, const uint8_t* a, size_t a_bytes, const uint8_t* b,
               size_t b_bytes, uint8_t out[kMacBytes]) {
    if (ctx_ == nullptr) return false;
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                                 OSSL_PARAM_END};
    size_t n = 0;
    return EVP_MAC_init(ctx_, reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
                        params) == 1 &&
           EVP_MAC_update(ctx_, a, a_bytes) == 1 && EVP_MAC_update(ctx_, b, b_bytes) == 1 &&
           EVP_MAC_final(ctx_, out, &n, kMacBytes) == 1 && n == kMacBytes;
  }

 private:
  EVP_MAC_CTX* ctx_ = nullptr;
};

bool ComputeMac(absl::string_view secret, const uint8_t* header, const void* payload,
                size_t payload_bytes, uint8_t out[kMacBytes]) {
  thread_local ThreadMac mac;
  return mac.Compute(secret, header, kOffMac, static_cast<const uint8_t*>(payload), payload_bytes,
                     out);
}

bool Overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a);
  const auto y = reinterpret_cast<uintptr_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

uint64_t RemoteModelId(absl::string_view model_fingerprint, uint64_t geometry_fingerprint) {
  // The fingerprint's bytes, then the geometry's 8 bytes little-endian: the fixed-length tail
  // makes the concatenation unambiguous.
  std::string bytes(model_fingerprint);
  uint8_t tail[8];
  PutU64(tail, geometry_fingerprint);
  bytes.append(reinterpret_cast<const char*>(tail), sizeof(tail));
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::string RemoteKey(absl::string_view ns, uint64_t model_id, const BlockKey& key) {
  return absl::StrCat(kKeyPrefix, ns, ":", absl::Hex(model_id, absl::kZeroPad16), ":", key.ToHex());
}

std::string RemoteNamespacePattern(absl::string_view ns) {
  // SCAN MATCH and ACL key patterns are globs: escape what a glob would read as one.
  std::string escaped;
  for (char c : ns) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') escaped.push_back('\\');
    escaped.push_back(c);
  }
  return absl::StrCat(kKeyPrefix, escaped, ":*");
}

absl::StatusOr<ParsedRemoteKey> ParseRemoteKey(absl::string_view redis_key) {
  // kvtier:1:<ns>:<16 hex>:<32 hex>; the namespace may hold ':', so parse from the right.
  constexpr size_t kTail = 1 + 16 + 1 + 32;
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "'%s' is not a kvtier remote key (kvtier:1:<namespace>:<16 hex>:<32 hex>): %s",
        absl::CHexEscape(redis_key.substr(0, 300)), why));
  };
  if (!absl::StartsWith(redis_key, kKeyPrefix)) return bad("wrong prefix");
  absl::string_view rest = redis_key.substr(kKeyPrefix.size());
  if (rest.size() < 1 + kTail) return bad("too short");
  const absl::string_view tail = rest.substr(rest.size() - kTail);
  const absl::string_view ns = rest.substr(0, rest.size() - kTail);
  if (tail[0] != ':' || tail[17] != ':') return bad("separators misplaced");
  const absl::string_view model_hex = tail.substr(1, 16);
  const absl::string_view key_hex = tail.substr(18);
  if (!IsLowerHex(model_hex) || !IsLowerHex(key_hex)) return bad("not lowercase hex");
  if (ns.size() > kMaxNamespaceBytes) return bad("namespace longer than 128 bytes");
  ParsedRemoteKey parsed;
  parsed.ns = std::string(ns);
  for (char c : model_hex) {
    parsed.model_id =
        (parsed.model_id << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  absl::StatusOr<BlockKey> key = BlockKey::FromHex(key_hex);
  if (!key.ok()) return bad(key.status().message());
  parsed.key = *key;
  return parsed;
}

size_t MaxRemotePayload(size_t raw_bytes) { return raw_bytes; }

absl::StatusOr<size_t> EncodeRemotePayload(const void* raw, size_t raw_bytes,
                                           const EncodeOptions& options, void* out,
                                           size_t out_capacity, Codec* codec_used) {
  if (codec_used == nullptr) {
    return absl::InvalidArgumentError("EncodeRemotePayload: codec_used is null");
  }
  if (raw_bytes == 0) {
    return absl::InvalidArgumentError("EncodeRemotePayload: raw_bytes = 0; a record holds a block");
  }
  if (raw_bytes > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("EncodeRemotePayload: raw_bytes = %d exceeds the format's limit of %d",
                        raw_bytes, std::numeric_limits<uint32_t>::max()));
  }
  if (raw == nullptr) return absl::InvalidArgumentError("EncodeRemotePayload: raw is null");
  *codec_used = Codec::kNone;
  if (options.codec == Codec::kNone) return raw_bytes;  // the payload is `raw` itself
  if (out == nullptr || out_capacity < MaxRemotePayload(raw_bytes)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "EncodeRemotePayload: out_capacity = %d is smaller than MaxRemotePayload(%d) = %d",
        out == nullptr ? 0 : out_capacity, raw_bytes, MaxRemotePayload(raw_bytes)));
  }
  if (Overlap(raw, raw_bytes, out, out_capacity)) {
    return absl::InvalidArgumentError(
        "EncodeRemotePayload: raw and out overlap (a codec cannot encode in place)");
  }
  if (absl::Status s = record_codec::CheckEncodeOptions("EncodeRemotePayload", options, raw_bytes,
                                                        nullptr, raw, out);
      !s.ok()) {
    return s;
  }
  const record_codec::EncodedPayload encoded =
      record_codec::EncodePayload(raw, raw_bytes, options, out, CodecLimit(raw_bytes));
  *codec_used = encoded.codec;
  return encoded.stored_bytes;
}

absl::Status WriteRemoteHeader(const RemoteHeader& header, const void* payload,
                               absl::string_view mac_secret, void* out) {
  if (out == nullptr) return absl::InvalidArgumentError("WriteRemoteHeader: out is null");
  if (header.ns.size() > kMaxNamespaceBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("WriteRemoteHeader: namespace is %d bytes long, at most %d fit a record",
                        header.ns.size(), kMaxNamespaceBytes));
  }
  if (const std::string problem =
          FieldProblem(header.codec, header.element_bytes, header.raw_bytes, header.stored_bytes);
      !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("WriteRemoteHeader: ", problem));
  }
  if (payload == nullptr) return absl::InvalidArgumentError("WriteRemoteHeader: payload is null");

  auto* p = static_cast<uint8_t*>(out);
  std::memset(p, 0, kRemoteHeaderBytes);
  PutU64(p + kOffMagic, kRemoteMagic);
  PutU32(p + kOffVersion, kRemoteFormatVersion);
  p[kOffCodec] = static_cast<uint8_t>(header.codec);
  p[kOffElementBytes] = header.element_bytes;
  p[kOffFlags] = mac_secret.empty() ? 0 : kFlagMac;
  p[kOffNamespaceBytes] = static_cast<uint8_t>(header.ns.size());
  PutU64(p + kOffKeyHi, header.key.hi);
  PutU64(p + kOffKeyLo, header.key.lo);
  PutU64(p + kOffModelId, header.model_id);
  PutU64(p + kOffGeometry, header.geometry_fingerprint);
  PutU32(p + kOffRawBytes, header.raw_bytes);
  PutU32(p + kOffStoredBytes, header.stored_bytes);
  PutU64(p + kOffCreated, header.created_unix_ms);
  PutU64(p + kOffPayloadChecksum, XXH3_64bits(payload, header.stored_bytes));
  if (!header.ns.empty()) std::memcpy(p + kOffNamespace, header.ns.data(), header.ns.size());
  if (!mac_secret.empty() &&
      !ComputeMac(mac_secret, p, payload, header.stored_bytes, p + kOffMac)) {
    return absl::InternalError("WriteRemoteHeader: OpenSSL could not compute HMAC-SHA256");
  }
  PutU64(p + kOffHeaderChecksum, HeaderChecksum(p));
  return absl::OkStatus();
}

const char* RemoteVerdictName(RemoteVerdict verdict) {
  switch (verdict) {
    case RemoteVerdict::kOk:
      return "ok";
    case RemoteVerdict::kCorrupt:
      return "corrupt";
    case RemoteVerdict::kWrongKey:
      return "wrong_key";
    case RemoteVerdict::kWrongNamespace:
      return "wrong_namespace";
    case RemoteVerdict::kWrongModel:
      return "wrong_model";
    case RemoteVerdict::kBadMac:
      return "bad_mac";
    case RemoteVerdict::kCount:
      break;
  }
  return "invalid";
}

RemoteVerdict CheckRemoteHeader(const void* header, size_t size, const RemoteExpect& expect,
                                RemoteHeader* parsed) {
  if (header == nullptr || size < kRemoteHeaderBytes) return RemoteVerdict::kCorrupt;
  const auto* p = static_cast<const uint8_t*>(header);
  if (GetU64(p + kOffMagic) != kRemoteMagic) return RemoteVerdict::kCorrupt;
  if (GetU32(p + kOffVersion) != kRemoteFormatVersion) return RemoteVerdict::kCorrupt;
  if (GetU64(p + kOffHeaderChecksum) != HeaderChecksum(p)) return RemoteVerdict::kCorrupt;

  // A correctly checksummed header must still be one a version-1 writer could have written:
  // known flags, every unassigned byte zero, consistent fields.
  const uint8_t flags = p[kOffFlags];
  if ((flags & ~kFlagMac) != 0) return RemoteVerdict::kCorrupt;
  const size_t ns_bytes = p[kOffNamespaceBytes];
  if (ns_bytes > kMaxNamespaceBytes) return RemoteVerdict::kCorrupt;
  const bool has_mac = (flags & kFlagMac) != 0;
  for (size_t i = kOffNamespace + ns_bytes; i < kOffHeaderChecksum; ++i) {
    if (p[i] != 0 && !(has_mac && i >= kOffMac)) return RemoteVerdict::kCorrupt;
  }
  RemoteHeader h;
  h.key.hi = GetU64(p + kOffKeyHi);
  h.key.lo = GetU64(p + kOffKeyLo);
  h.ns.assign(reinterpret_cast<const char*>(p + kOffNamespace), ns_bytes);
  h.model_id = GetU64(p + kOffModelId);
  h.geometry_fingerprint = GetU64(p + kOffGeometry);
  h.codec = static_cast<Codec>(p[kOffCodec]);
  h.element_bytes = p[kOffElementBytes];
  h.raw_bytes = GetU32(p + kOffRawBytes);
  h.stored_bytes = GetU32(p + kOffStoredBytes);
  h.payload_checksum = GetU64(p + kOffPayloadChecksum);
  h.created_unix_ms = GetU64(p + kOffCreated);
  h.has_mac = has_mac;
  if (!FieldProblem(h.codec, h.element_bytes, h.raw_bytes, h.stored_bytes).empty()) {
    return RemoteVerdict::kCorrupt;
  }

  // An unauthenticated record where one is required is refused before anything it claims is
  // believed: it is what a peer without the secret would write.
  const bool mac_missing = !expect.mac_secret.empty() && !h.has_mac;
  RemoteVerdict verdict = RemoteVerdict::kOk;
  if (mac_missing) {
    verdict = RemoteVerdict::kBadMac;
  } else if (h.ns != expect.ns) {
    verdict = RemoteVerdict::kWrongNamespace;
  } else if (h.model_id != expect.model_id ||
             h.geometry_fingerprint != expect.geometry_fingerprint ||
             h.raw_bytes != expect.raw_bytes) {
    verdict = RemoteVerdict::kWrongModel;
  } else if (h.key != expect.key) {
    verdict = RemoteVerdict::kWrongKey;
  }
  if (parsed != nullptr) *parsed = std::move(h);
  return verdict;
}

RemoteVerdict VerifyRemotePayload(const void* header_bytes, const RemoteHeader& header,
                                  const void* payload, size_t payload_size,
                                  const RemoteExpect& expect, const Geometry& geometry,
                                  void* raw_out) {
  // `header` may come from anywhere: its fields are re-checked, not trusted.
  if (header_bytes == nullptr || raw_out == nullptr) return RemoteVerdict::kCorrupt;
  if (!FieldProblem(header.codec, header.element_bytes, header.raw_bytes, header.stored_bytes)
           .empty() ||
      header.raw_bytes != expect.raw_bytes) {
    return RemoteVerdict::kCorrupt;
  }
  // The value must be exactly the header and the payload it announces: a longer one was not
  // written by this format.
  if (payload == nullptr || payload_size != header.stored_bytes) return RemoteVerdict::kCorrupt;
  if (XXH3_64bits(payload, header.stored_bytes) != header.payload_checksum) {
    return RemoteVerdict::kCorrupt;
  }
  if (!expect.mac_secret.empty()) {
    if (!header.has_mac) return RemoteVerdict::kBadMac;
    const auto* h = static_cast<const uint8_t*>(header_bytes);
    if ((h[kOffFlags] & kFlagMac) == 0) return RemoteVerdict::kBadMac;
    uint8_t mac[kMacBytes];
    if (!ComputeMac(expect.mac_secret, h, payload, header.stored_bytes, mac) ||
        CRYPTO_memcmp(mac, h + kOffMac, kMacBytes) != 0) {
      return RemoteVerdict::kBadMac;
    }
  }

  // Verified: decode. Under kNone a payload received straight into raw_out is already there.
  const bool in_place = header.codec == Codec::kNone && payload == raw_out;
  if (!in_place && Overlap(payload, header.stored_bytes, raw_out, header.raw_bytes)) {
    return RemoteVerdict::kCorrupt;  // the caller's buffers; never decode over the input
  }
  const Geometry* g = nullptr;
  if (IsQuantizedCodec(header.codec)) {
    if (!geometry.Validate().ok() || geometry.Fingerprint() != header.geometry_fingerprint ||
        geometry.block_bytes() != header.raw_bytes) {
      return RemoteVerdict::kWrongModel;
    }
    if (!CheckCodecDType(header.codec, geometry.dtype).ok() ||
        QuantizedBlockBytes(geometry, CodecQuantFormat(header.codec)) != header.stored_bytes) {
      return RemoteVerdict::kCorrupt;
    }
    g = &geometry;
  }
  if (!record_codec::DecodePayload("VerifyRemotePayload", "remote record", header.codec,
                                   header.element_bytes, g, payload, header.stored_bytes, raw_out,
                                   header.raw_bytes)
           .ok()) {
    return RemoteVerdict::kCorrupt;
  }
  return RemoteVerdict::kOk;
}

}  // namespace kvtier::remote
