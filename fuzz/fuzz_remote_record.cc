// fuzz/fuzz_remote_record.cc — the remote record (remote/remote_record.h) on hostile bytes.
//
// A value read from Redis is untrusted: evicted and rewritten, replicated late, swapped
// between keys, written by a peer. The properties checked:
//   * CheckRemoteHeader and VerifyRemotePayload return a verdict in range, never crash, never
//     read outside what they were given (inputs are copied into exactly-sized heap buffers).
//   * A header that is not kCorrupt describes itself: read back against the very fields it
//     carries, it is kOk (or kBadMac, when a MAC is expected and it has none).
//   * An accepted kNone payload is returned byte for byte.
//   * Encode → write header → check → verify is the identity on the block under the lossless
//     codecs and the kernels' round trip under fp8 / int8; after one fuzzer-chosen byte of
//     the value is changed, the read is refused or returns exactly that (never other bytes).
//
// The first input byte picks a mode; the second carries options (bit 0: the reader expects
// the MAC secret; bit 1: it expects what the header claims; bit 2: a kNone payload is
// verified in place), the third a geometry (kGeometries):
//   0  the rest is a value, verbatim (header, then payload)
//   1  as 0, and the harness writes a correct payload checksum, MAC (when the flag is set)
//      and header checksum, so the fuzzer reaches the field checks and the decoders
//   2  encode round trip: codec, zstd level, shuffle width, MAC or not, namespace, key,
//      corruption offset and xor, then the block

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/quantized_round_trip.h"
#include "kernels/quantize.h"
#include "remote/remote_record.h"
#include "xxhash.h"

namespace kvtier::remote {
namespace {

using fuzz::Input;

// Offsets of docs/remote-format.md that the harness rewrites.
constexpr size_t kOffFlags = 14;
constexpr size_t kOffStoredBytes = 52;
constexpr size_t kOffPayloadChecksum = 64;
constexpr size_t kOffMac = 216;
constexpr size_t kOffHeaderChecksum = 248;
// Blocks larger than this are not decoded (the reader would allocate raw_bytes).
constexpr size_t kMaxDecodeBytes = 1 << 20;

constexpr char kSecret[] = "fuzz-secret";
constexpr BlockKey kSeedKey{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
constexpr char kSeedNamespace[] = "tenant-a";
constexpr char kModel[] = "fuzz-model";
// 8 KiB blocks: fp16 and bf16 (2 kv heads of 64 dims, 16 tokens), fp32 (32 dims).
const Geometry kGeometries[] = {{1, 2, 64, DType::kFloat16, 16},
                                {1, 2, 64, DType::kBFloat16, 16},
                                {1, 2, 32, DType::kFloat32, 16}};

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t[], FreeDeleter>;

// Exactly `bytes` long, so ASan flags a read one past the end.
Buffer Allocate(size_t bytes) {
  void* p = std::malloc(bytes == 0 ? 1 : bytes);
  KVTIER_FUZZ_CHECK(p != nullptr, "out of memory");
  return Buffer(static_cast<uint8_t*>(p));
}
Buffer Copy(absl::string_view bytes) {
  Buffer b = Allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(b.get(), bytes.data(), bytes.size());
  return b;
}

void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

RemoteExpect SeedExpect(const Geometry& g, bool secret) {
  RemoteExpect e;
  e.key = kSeedKey;
  e.ns = kSeedNamespace;
  e.model_id = RemoteModelId(kModel, g.Fingerprint());
  e.geometry_fingerprint = g.Fingerprint();
  e.raw_bytes = static_cast<uint32_t>(g.block_bytes());
  e.mac_secret = secret ? kSecret : "";
  return e;
}

bool InRange(RemoteVerdict v) {
  return static_cast<uint8_t>(v) < static_cast<uint8_t>(RemoteVerdict::kCount);
}

// Reads `value` (size bytes) as the engine does; returns the verdict and, when kOk, the block.
RemoteVerdict ReadValue(const uint8_t* value, size_t size, const RemoteExpect& expect,
                        const Geometry& g, bool in_place, std::vector<uint8_t>* block) {
  RemoteHeader h;
  const RemoteVerdict v = CheckRemoteHeader(value, size, expect, &h);
  KVTIER_FUZZ_CHECK(InRange(v), "CheckRemoteHeader verdict out of range");
  if (v != RemoteVerdict::kOk) return v;
  KVTIER_FUZZ_CHECK(size >= kRemoteHeaderBytes && h.raw_bytes == expect.raw_bytes, "accepted");
  if (h.raw_bytes > kMaxDecodeBytes) return RemoteVerdict::kCorrupt;
  const size_t payload_size = size - kRemoteHeaderBytes;
  Buffer payload = Copy(
      absl::string_view(reinterpret_cast<const char*>(value) + kRemoteHeaderBytes, payload_size));
  const bool same = in_place && h.codec == Codec::kNone && payload_size == h.raw_bytes;
  Buffer out_owner = same ? nullptr : Allocate(h.raw_bytes);
  uint8_t* out = same ? payload.get() : out_owner.get();
  const RemoteVerdict p =
      VerifyRemotePayload(value, h, payload.get(), payload_size, expect, g, out);
  KVTIER_FUZZ_CHECK(p == RemoteVerdict::kOk || p == RemoteVerdict::kCorrupt ||
                        p == RemoteVerdict::kBadMac || p == RemoteVerdict::kWrongModel,
                    std::string("VerifyRemotePayload returned ") + RemoteVerdictName(p));
  if (p != RemoteVerdict::kOk) return p;
  if (h.codec == Codec::kNone) {
    KVTIER_FUZZ_CHECK(std::memcmp(out, value + kRemoteHeaderBytes, h.raw_bytes) == 0,
                      "an accepted kNone payload came back changed");
  }
  if (block != nullptr) block->assign(out, out + h.raw_bytes);
  return p;
}

void ReadAny(Input& in, bool fix_checksums) {
  const uint8_t opts = in.U8();
  const Geometry& g = kGeometries[in.U8() % 3];
  const bool secret = (opts & 1) != 0;
  const absl::string_view rest = in.Rest();
  Buffer value = Copy(rest);
  const size_t size = rest.size();
  if (fix_checksums && size >= kRemoteHeaderBytes) {
    uint8_t* h = value.get();
    uint8_t* payload = h + kRemoteHeaderBytes;
    const size_t stored = std::min<size_t>(GetU32(h + kOffStoredBytes), size - kRemoteHeaderBytes);
    PutU64(h + kOffPayloadChecksum, XXH3_64bits(payload, stored));
    if ((h[kOffFlags] & 1) != 0 && secret) {
      std::vector<uint8_t> covered(h, h + kOffMac);
      covered.insert(covered.end(), payload, payload + stored);
      unsigned int n = 0;
      KVTIER_FUZZ_CHECK(HMAC(EVP_sha256(), kSecret, sizeof(kSecret) - 1, covered.data(),
                             covered.size(), h + kOffMac, &n) != nullptr,
                        "HMAC");
    }
    PutU64(h + kOffHeaderChecksum, XXH3_64bits(h, kOffHeaderChecksum));
  }
  const RemoteExpect seed = SeedExpect(g, secret);
  ReadValue(value.get(), size, seed, g, (opts & 4) != 0, nullptr);

  if ((opts & 2) != 0) {
    // Read back against what the header itself claims.
    RemoteHeader h;
    if (CheckRemoteHeader(value.get(), size, seed, &h) == RemoteVerdict::kCorrupt) return;
    RemoteExpect self = seed;
    self.key = h.key;
    self.ns = h.ns;
    self.model_id = h.model_id;
    self.geometry_fingerprint = h.geometry_fingerprint;
    self.raw_bytes = h.raw_bytes;
    const RemoteVerdict v = CheckRemoteHeader(value.get(), size, self, nullptr);
    KVTIER_FUZZ_CHECK(
        v == RemoteVerdict::kOk || (v == RemoteVerdict::kBadMac && secret && !h.has_mac),
        std::string("a header read against its own fields: ") + RemoteVerdictName(v));
    ReadValue(value.get(), size, self, g, (opts & 4) != 0, nullptr);
  }
}

void EncodeRoundTrip(Input& in) {
  EncodeOptions options;
  options.codec = static_cast<Codec>(in.U8() % 6);  // 5: unknown, must be refused
  const Geometry& g = kGeometries[in.U8() % 3];
  options.zstd_level = static_cast<int>(in.U8() % 22);  // 0, 20, 21: out of range
  options.element_bytes = in.U8() % 6;
  options.geometry = g;
  const bool secret = in.Bool();
  const std::string ns(in.Bytes(in.U8() % 140));  // over 128 must be refused
  BlockKey key{in.U64(), in.U64()};
  const size_t corrupt_at = in.U32();
  const uint8_t corrupt_xor = in.U8();
  absl::string_view rest = in.Rest();
  std::string block(rest);
  if (IsQuantizedCodec(options.codec)) {
    // The quantized codecs take blocks of the geometry's size: the input, repeated.
    if (rest.empty()) return;
    block.resize(g.block_bytes());
    for (size_t i = rest.size(); i < block.size(); ++i) block[i] = rest[i % rest.size()];
  }
  Buffer raw = Copy(block);
  const size_t raw_bytes = block.size();
  Buffer encoded = Allocate(MaxRemotePayload(raw_bytes));
  Codec used = Codec::kNone;
  absl::StatusOr<size_t> n = EncodeRemotePayload(raw.get(), raw_bytes, options, encoded.get(),
                                                 MaxRemotePayload(raw_bytes), &used);
  if (!n.ok()) {
    KVTIER_FUZZ_CHECK(n.status().code() == absl::StatusCode::kInvalidArgument,
                      "EncodeRemotePayload returned " + n.status().ToString());
    const bool bad_input =
        raw_bytes == 0 || static_cast<uint8_t>(options.codec) >= kNumCodecs ||
        ((options.codec == Codec::kZstd || options.codec == Codec::kZstdShuffle) &&
         (options.zstd_level < 1 || options.zstd_level > 19)) ||
        (options.codec == Codec::kZstdShuffle &&
         (options.element_bytes == 0 || options.element_bytes == 3 || options.element_bytes > 4 ||
          raw_bytes % options.element_bytes != 0));
    KVTIER_FUZZ_CHECK(bad_input,
                      "EncodeRemotePayload refused valid input: " + n.status().ToString());
    return;
  }
  KVTIER_FUZZ_CHECK(*n > 0 && *n <= raw_bytes, "payload size");
  KVTIER_FUZZ_CHECK(used == Codec::kNone
                        ? *n == raw_bytes
                        : used == options.codec && *n <= raw_bytes - (raw_bytes + 15) / 16,
                    "a codec kept although it saves less than 1/16");
  const uint8_t* payload = used == Codec::kNone ? raw.get() : encoded.get();

  RemoteHeader h;
  h.key = key;
  h.ns = ns;
  h.model_id = RemoteModelId(kModel, g.Fingerprint());
  h.geometry_fingerprint = g.Fingerprint();
  h.codec = used;
  h.element_bytes = used == Codec::kZstdShuffle ? static_cast<uint8_t>(options.element_bytes) : 0;
  h.raw_bytes = static_cast<uint32_t>(raw_bytes);
  h.stored_bytes = static_cast<uint32_t>(*n);
  h.created_unix_ms = key.lo;
  const size_t size = kRemoteHeaderBytes + *n;
  Buffer value = Allocate(size);
  const absl::Status s = WriteRemoteHeader(h, payload, secret ? kSecret : "", value.get());
  if (!s.ok()) {
    KVTIER_FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument && ns.size() > 128,
                      "WriteRemoteHeader refused valid input: " + s.ToString());
    return;
  }
  std::memcpy(value.get() + kRemoteHeaderBytes, payload, *n);

  RemoteExpect expect;
  expect.key = key;
  expect.ns = ns;
  expect.model_id = h.model_id;
  expect.geometry_fingerprint = h.geometry_fingerprint;
  expect.raw_bytes = h.raw_bytes;
  expect.mac_secret = secret ? kSecret : "";
  std::vector<uint8_t> expected(raw.get(), raw.get() + raw_bytes);
  if (IsQuantizedCodec(used)) {
    expected = fuzz::QuantizedRoundTrip(g, CodecQuantFormat(used), raw.get());
  }
  std::vector<uint8_t> back;
  RemoteVerdict v = ReadValue(value.get(), size, expect, g, false, &back);
  KVTIER_FUZZ_CHECK(v == RemoteVerdict::kOk,
                    std::string("a fresh record is refused: ") + RemoteVerdictName(v));
  KVTIER_FUZZ_CHECK(back == expected, "round trip changed the block");

  value[corrupt_at % size] ^= corrupt_xor == 0 ? 1 : corrupt_xor;
  back.clear();
  v = ReadValue(value.get(), size, expect, g, false, &back);
  if (v == RemoteVerdict::kOk) {
    KVTIER_FUZZ_CHECK(back == expected, "a corrupted record was read as other bytes (offset " +
                                            std::to_string(corrupt_at % size) + ")");
  }
}

}  // namespace
}  // namespace kvtier::remote

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::fuzz::Input in(data, size);
  switch (in.U8() % 3) {
    case 0:
      kvtier::remote::ReadAny(in, /*fix_checksums=*/false);
      break;
    case 1:
      kvtier::remote::ReadAny(in, /*fix_checksums=*/true);
      break;
    default:
      kvtier::remote::EncodeRoundTrip(in);
      break;
  }
  return 0;
}
