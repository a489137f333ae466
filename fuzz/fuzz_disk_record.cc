// fuzz/fuzz_disk_record.cc — the on-disk record codec (tiers/disk_record.h) on hostile bytes.
//
// What a disk read hands the codec is untrusted: a torn write, a reused region, a flipped bit,
// another program's file. The properties checked:
//   * ParseRecordHeader and DecodeRecordPayload only ever return OK, DataLoss or (for the
//     caller's own buffer) InvalidArgument; never crash, never read outside what they were
//     given (ASan watches every read; inputs are copied into exactly-sized heap buffers).
//   * A header that parses satisfies the documented field invariants.
//   * EncodeRecord → ParseRecordHeader → DecodeRecordPayload is the identity on the block for
//     every lossless codec, and for the lossy ones (fp8, int8) exactly the quantization
//     kernels' round trip (DequantizeBlocksCpu ∘ QuantizeBlocksCpu); and after a fuzzer-chosen
//     byte of the record is changed, decoding either fails or still returns exactly that
//     (never other bytes).
//
// The first input byte picks a mode, so one corpus reaches every path:
//   0  the rest is a record, verbatim (header, then payload)
//   1  the rest is the first 208 header bytes (every byte the format assigns; 228 when the
//      codec byte is a quantized codec's, whose geometry follows; 244 when the version is 2,
//      whose records carry the whole extended geometry) and then the payload; the
//      harness zeroes the rest of the header and writes a correct header checksum, so the
//      fuzzer reaches the field checks instead of stopping at the checksum
//   2  as 1, and the payload checksum is made to match too, so zstd decodes fuzzer bytes
//   3  encode round trip: codec, level, element width, namespace and block from the input
//      (for fp8 / int8 also a dtype and shape the block's size must fit, else it is refused)
//   4  DecodeRecordPayload on a RecordHeader built field by field (it takes headers from
//      anywhere), payload from the input
//   5  as 3, with an extended geometry (an MLA latent or a tensor-parallel shard, format
//      version 2) given under every codec

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/quantized_round_trip.h"
#include "kernels/quantize.h"
#include "tiers/disk_record.h"
#include "xxhash.h"

namespace kvtier {
namespace {

using fuzz::Input;

// Offsets of docs/disk-format.md that the harness rewrites.
constexpr size_t kOffStoredBytes = 44;
constexpr size_t kOffPayloadChecksum = 64;
constexpr size_t kOffCodec = 12;
constexpr size_t kAssignedHeaderBytes = 80 + 128;  // fixed fields + the namespace area
constexpr size_t kQuantizedGeometryBytes = 20;     // 208..227, under fp8 / int8 only
constexpr size_t kExtendedGeometryBytes = 36;      // 208..243, in every version 2 record
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderChecksum = kRecordHeaderBytes - 8;
// Blocks larger than this are not decoded (the decoder would allocate raw_bytes).
constexpr size_t kMaxDecodeBytes = 1 << 20;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t[], FreeDeleter>;

// Exactly `bytes` long (ASan flags a read one past the end); 4096-aligned when asked.
Buffer Allocate(size_t bytes, bool aligned) {
  void* p = aligned ? std::aligned_alloc(kRecordAlignment,
                                         (bytes + kRecordAlignment - 1) / kRecordAlignment *
                                             kRecordAlignment)
                    : std::malloc(bytes == 0 ? 1 : bytes);
  KVTIER_FUZZ_CHECK(p != nullptr, "out of memory");
  return Buffer(static_cast<uint8_t*>(p));
}

void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

void CheckErrorCode(const absl::Status& s, const char* where) {
  KVTIER_FUZZ_CHECK(s.code() == absl::StatusCode::kDataLoss ||
                        s.code() == absl::StatusCode::kInvalidArgument,
                    std::string(where) + " returned " + s.ToString());
}

// The invariants a parsed header promises its readers (tiers/disk_tier.cc sizes its reads by
// them).
void CheckParsedHeader(const RecordHeader& h) {
  KVTIER_FUZZ_CHECK(static_cast<uint8_t>(h.codec) < kNumCodecs, "codec");
  if (IsQuantizedCodec(h.codec)) {
    KVTIER_FUZZ_CHECK(h.geometry.has_value() && h.geometry->Validate().ok(), "geometry");
    KVTIER_FUZZ_CHECK(h.geometry->Fingerprint() == h.geometry_fingerprint, "fingerprint");
    KVTIER_FUZZ_CHECK(h.geometry->block_bytes() == h.raw_bytes, "geometry raw_bytes");
    KVTIER_FUZZ_CHECK(h.stored_bytes == QuantizedBlockBytes(*h.geometry, CodecQuantFormat(h.codec)),
                      "quantized stored_bytes");
  } else if (h.geometry.has_value()) {
    // Format version 2: the whole extended geometry, whatever the codec.
    KVTIER_FUZZ_CHECK(h.geometry->IsExtended() && h.geometry->Validate().ok(),
                      "geometry under a lossless codec that is not a valid extended one");
    KVTIER_FUZZ_CHECK(h.geometry->Fingerprint() == h.geometry_fingerprint, "v2 fingerprint");
    KVTIER_FUZZ_CHECK(h.geometry->block_bytes() == h.raw_bytes, "v2 geometry raw_bytes");
  }
  KVTIER_FUZZ_CHECK(
      h.format_version() == (h.geometry.has_value() && h.geometry->IsExtended() ? 2u : 1u),
      "format version");
  KVTIER_FUZZ_CHECK(h.raw_bytes > 0 && h.stored_bytes > 0, "sizes");
  KVTIER_FUZZ_CHECK(RecordSize(h.stored_bytes) <= MaxRecordSize(h.raw_bytes), "stored_bytes");
  KVTIER_FUZZ_CHECK(h.ns.size() <= 128, "namespace length");
  if (h.codec == Codec::kNone) KVTIER_FUZZ_CHECK(h.stored_bytes == h.raw_bytes, "codec none");
  if (h.codec == Codec::kZstdShuffle) {
    KVTIER_FUZZ_CHECK(h.element_bytes == 1 || h.element_bytes == 2 || h.element_bytes == 4,
                      "element_bytes");
    KVTIER_FUZZ_CHECK(h.raw_bytes % h.element_bytes == 0, "element_bytes divides raw_bytes");
  } else {
    KVTIER_FUZZ_CHECK(h.element_bytes == 0, "element_bytes without shuffle");
  }
}

// Parses `record` (header + `payload_bytes` of payload) and decodes it when it parses.
void ParseAndDecode(const uint8_t* record, size_t size) {
  absl::StatusOr<RecordHeader> h = ParseRecordHeader(record, size);
  if (!h.ok()) {
    CheckErrorCode(h.status(), "ParseRecordHeader");
    return;
  }
  CheckParsedHeader(*h);
  if (h->raw_bytes > kMaxDecodeBytes) return;
  Buffer raw = Allocate(h->raw_bytes, false);
  const absl::Status s = DecodeRecordPayload(*h, record + kRecordHeaderBytes,
                                             size - kRecordHeaderBytes, raw.get(), h->raw_bytes);
  if (!s.ok()) CheckErrorCode(s, "DecodeRecordPayload");
}

void Verbatim(Input& in) {
  const absl::string_view rest = in.Rest();
  Buffer record = Allocate(rest.size(), false);
  if (!rest.empty()) std::memcpy(record.get(), rest.data(), rest.size());
  ParseAndDecode(record.get(), rest.size());
}

void FixedUpChecksums(Input& in, bool fix_payload) {
  absl::string_view assigned = in.Bytes(kAssignedHeaderBytes);
  if (assigned.size() > kOffVersion && static_cast<uint8_t>(assigned[kOffVersion]) == 2) {
    // Version 2: the whole extended geometry follows directly (Input is one buffer).
    assigned = absl::string_view(assigned.data(),
                                 assigned.size() + in.Bytes(kExtendedGeometryBytes).size());
  } else if (assigned.size() > kOffCodec &&
             IsQuantizedCodec(static_cast<Codec>(static_cast<uint8_t>(assigned[kOffCodec])))) {
    // The geometry the quantized codecs assign follows directly.
    assigned = absl::string_view(assigned.data(),
                                 assigned.size() + in.Bytes(kQuantizedGeometryBytes).size());
  }
  const absl::string_view payload = in.Rest();
  const size_t size = kRecordHeaderBytes + payload.size();
  Buffer record = Allocate(size, false);
  std::memset(record.get(), 0, kRecordHeaderBytes);
  std::memcpy(record.get(), assigned.data(), assigned.size());
  if (!payload.empty()) std::memcpy(record.get() + kRecordHeaderBytes, payload.data(), payload.size());
  if (fix_payload) {
    // The checksum of the bytes the header says are stored, as far as they exist.
    size_t stored = GetU32(record.get() + kOffStoredBytes);
    if (stored > payload.size()) stored = payload.size();
    PutU64(record.get() + kOffPayloadChecksum, XXH3_64bits(record.get() + kRecordHeaderBytes, stored));
  }
  PutU64(record.get() + kOffHeaderChecksum, XXH3_64bits(record.get(), kOffHeaderChecksum));
  ParseAndDecode(record.get(), size);
}

// A one-block geometry of `dtype` whose blocks are `bytes` long, when there is one with
// `tokens` tokens and `heads` kv heads of one layer.
std::optional<Geometry> GeometryOfSize(size_t bytes, DType dtype, uint32_t tokens,
                                       uint32_t heads) {
  const size_t per_dim = 2 * size_t{tokens} * heads * DTypeSize(dtype);
  if (bytes == 0 || bytes % per_dim != 0) return std::nullopt;
  const Geometry g{1, heads, static_cast<uint32_t>(std::min<size_t>(bytes / per_dim, 1u << 20)),
                   dtype, tokens};
  if (!g.Validate().ok() || g.block_bytes() != bytes) return std::nullopt;
  return g;
}

// An extended one-block geometry whose blocks are `bytes` long, when there is one: an MLA
// latent (one part; rope_dim from `rope`) or a shard of `heads` heads starting at `begin` of
// heads + begin + `more` (the sums may be out of range: then it does not validate).
std::optional<Geometry> ExtendedGeometryOfSize(size_t bytes, bool mla, DType dtype, uint32_t tokens,
                                               uint32_t heads, uint32_t rope, uint32_t begin,
                                               uint32_t more) {
  Geometry g{1, mla ? 1u : heads, 1, dtype, tokens};
  if (mla) {
    g.kind = KvKind::kLatent;
  } else {
    g.kv_head_begin = begin;
    g.total_kv_heads = heads + begin + more;
  }
  const size_t per_dim = size_t{g.parts()} * tokens * g.num_kv_heads * DTypeSize(dtype);
  if (bytes == 0 || per_dim == 0 || bytes % per_dim != 0) return std::nullopt;
  g.head_dim = static_cast<uint32_t>(std::min<size_t>(bytes / per_dim, 1u << 20));
  if (mla) g.rope_dim = g.head_dim == 0 ? 0 : rope % g.head_dim;
  if (!g.Validate().ok() || g.block_bytes() != bytes || !g.IsExtended()) return std::nullopt;
  return g;
}

void EncodeRoundTrip(Input& in, bool extended) {
  RecordHeader header;
  EncodeOptions options;
  // 3, 4: fp8, int8 (lossy); 5: an unknown codec, must be refused.
  options.codec = static_cast<Codec>(in.U8() % 6);
  // Mode 5: an extended geometry under any codec, read first.
  bool ext_mla = false, ext_fingerprint = false;
  DType ext_dtype = DType::kFloat16;
  uint32_t ext_tokens = 1, ext_heads = 1, ext_rope = 0, ext_begin = 0, ext_more = 0;
  if (extended) {
    ext_mla = in.Bool();
    ext_dtype = static_cast<DType>(1 + in.U8() % 5);  // every dtype, fp8 included
    ext_tokens = 1 + in.U8() % 4;
    ext_heads = 1 + in.U8() % 2;
    ext_rope = in.U8();
    ext_begin = in.U8() % 4;
    ext_more = in.U8() % 4;
    ext_fingerprint = in.Bool();
  }
  // The quantized codecs read their dtype and shape next (nothing else does, so inputs of
  // the lossless codecs mean what they always meant).
  int quant_dtype = 0;  // 1..3: a DType; 0: no geometry given (must be refused)
  uint32_t quant_tokens = 1, quant_heads = 1;
  bool quant_fingerprint = false;  // the header's fingerprint is the geometry's
  if (!extended && IsQuantizedCodec(options.codec)) {
    quant_dtype = in.U8() % 4;
    quant_tokens = 1 + in.U8() % 4;
    quant_heads = 1 + in.U8() % 2;
    quant_fingerprint = in.Bool();
  }
  options.zstd_level = static_cast<int>(in.U8() % 22);  // 0, 20, 21: out of range
  options.element_bytes = in.U8() % 6;
  header.key = BlockKey{in.U64(), in.U64()};
  header.geometry_fingerprint = in.U64();
  header.region = in.U32();
  header.generation = in.U64();
  header.created_unix_ms = in.U64();
  header.ns = std::string(in.Bytes(in.U8() % 140));  // up to 139: over 128 must be refused
  const size_t corrupt_at = in.U32();
  const uint8_t corrupt_xor = in.U8();
  const absl::string_view raw = in.Rest();
  if (extended) {
    options.geometry = ExtendedGeometryOfSize(raw.size(), ext_mla, ext_dtype, ext_tokens, ext_heads,
                                              ext_rope, ext_begin, ext_more);
    if (options.geometry.has_value() && ext_fingerprint) {
      header.geometry_fingerprint = options.geometry->Fingerprint();
    }
  } else if (quant_dtype != 0) {
    options.geometry =
        GeometryOfSize(raw.size(), static_cast<DType>(quant_dtype), quant_tokens, quant_heads);
    if (options.geometry.has_value() && quant_fingerprint) {
      header.geometry_fingerprint = options.geometry->Fingerprint();
    }
  }
  const bool ext_mismatch = options.geometry.has_value() && options.geometry->IsExtended() &&
                            header.geometry_fingerprint != options.geometry->Fingerprint();

  Buffer raw_copy = Allocate(raw.size(), false);
  if (!raw.empty()) std::memcpy(raw_copy.get(), raw.data(), raw.size());
  const size_t capacity = MaxRecordSize(raw.size());
  Buffer record = Allocate(capacity, true);
  RecordHeader written;
  absl::StatusOr<size_t> n =
      EncodeRecord(header, raw_copy.get(), raw.size(), options, record.get(), capacity, &written);
  if (!n.ok()) {
    KVTIER_FUZZ_CHECK(n.status().code() == absl::StatusCode::kInvalidArgument,
                      "EncodeRecord returned " + n.status().ToString());
    const bool bad_input =
        raw.empty() || header.ns.size() > 128 ||
        static_cast<uint8_t>(options.codec) >= kNumCodecs ||
        (IsQuantizedCodec(options.codec) &&
         (!options.geometry.has_value() ||
          header.geometry_fingerprint != options.geometry->Fingerprint() ||
          !DTypeIsQuantizable(options.geometry->dtype))) ||
        (ext_mismatch && static_cast<uint8_t>(options.codec) < kNumCodecs) ||
        ((options.codec == Codec::kZstd || options.codec == Codec::kZstdShuffle) &&
         (options.zstd_level < 1 || options.zstd_level > 19)) ||
        (options.codec == Codec::kZstdShuffle &&
         (options.element_bytes == 0 || options.element_bytes == 3 || options.element_bytes > 4 ||
          raw.size() % options.element_bytes != 0));
    KVTIER_FUZZ_CHECK(bad_input, "EncodeRecord refused valid input: " + n.status().ToString());
    return;
  }
  KVTIER_FUZZ_CHECK(*n <= capacity && *n % kRecordAlignment == 0 && *n == RecordSize(written.stored_bytes),
                    "record size");

  absl::StatusOr<RecordHeader> parsed = ParseRecordHeader(record.get(), *n);
  KVTIER_FUZZ_CHECK(parsed.ok(), "a fresh record does not parse: " + parsed.status().ToString());
  CheckParsedHeader(*parsed);
  KVTIER_FUZZ_CHECK(parsed->key == header.key && parsed->ns == header.ns &&
                        parsed->geometry_fingerprint == header.geometry_fingerprint &&
                        parsed->region == header.region &&
                        parsed->generation == header.generation &&
                        parsed->created_unix_ms == header.created_unix_ms &&
                        parsed->raw_bytes == raw.size() && parsed->codec == written.codec &&
                        parsed->stored_bytes == written.stored_bytes &&
                        parsed->payload_checksum == written.payload_checksum,
                    "parsed header differs from the one written");
  if (options.geometry.has_value() && options.geometry->IsExtended()) {
    KVTIER_FUZZ_CHECK(parsed->format_version() == 2 && parsed->geometry == options.geometry,
                      "an extended geometry's record is not version 2 carrying it");
  } else {
    KVTIER_FUZZ_CHECK(parsed->format_version() == 1, "a legacy geometry's record is not version 1");
  }
  Buffer out = Allocate(raw.size(), false);
  absl::Status s =
      DecodeRecordPayload(*parsed, record.get() + kRecordHeaderBytes, *n - kRecordHeaderBytes,
                          out.get(), raw.size());
  KVTIER_FUZZ_CHECK(s.ok(), "a fresh record does not decode: " + s.ToString());
  // What every successful decode must return: the block, or its quantized round trip.
  std::vector<uint8_t> expected(raw.begin(), raw.end());
  if (IsQuantizedCodec(written.codec)) {
    KVTIER_FUZZ_CHECK(written.codec == options.codec, "quantized under another codec");
    expected = fuzz::QuantizedRoundTrip(*options.geometry, CodecQuantFormat(written.codec),
                                  raw_copy.get());
  } else if (IsQuantizedCodec(options.codec)) {
    // Fell back to none: only where quantizing would not have saved a page.
    KVTIER_FUZZ_CHECK(
        RecordSize(QuantizedBlockBytes(*options.geometry, CodecQuantFormat(options.codec))) >=
            RecordSize(raw.size()),
        "a quantized codec fell back to none although it would have saved a page");
  }
  KVTIER_FUZZ_CHECK(std::memcmp(out.get(), expected.data(), raw.size()) == 0,
                    "round trip changed the block");

  // One byte changed anywhere in the record: an error, or exactly the original block.
  const size_t at = corrupt_at % *n;
  record[at] ^= (corrupt_xor == 0 ? 1 : corrupt_xor);
  parsed = ParseRecordHeader(record.get(), *n);
  if (!parsed.ok()) {
    CheckErrorCode(parsed.status(), "ParseRecordHeader");
    return;
  }
  std::memset(out.get(), 0xA5, raw.size());
  s = DecodeRecordPayload(*parsed, record.get() + kRecordHeaderBytes, *n - kRecordHeaderBytes,
                          out.get(), raw.size());
  if (!s.ok()) {
    CheckErrorCode(s, "DecodeRecordPayload");
    return;
  }
  KVTIER_FUZZ_CHECK(parsed->raw_bytes == raw.size() &&
                        std::memcmp(out.get(), expected.data(), raw.size()) == 0,
                    "a corrupted record decoded to other bytes (corrupted offset " +
                        std::to_string(at) + ")");
}

void DecodeAnyHeader(Input& in) {
  RecordHeader h;
  h.codec = static_cast<Codec>(in.U8() % 6);  // 5: unknown
  if (IsQuantizedCodec(h.codec) && in.Bool()) {
    // A geometry, often consistent with the sizes below, so the dequantizer runs on fuzzer
    // payloads; an out-of-range dtype byte sometimes.
    Geometry g{1 + in.U8() % 4u, 1 + in.U8() % 4u, 1 + in.U16() % 256u,
               static_cast<DType>(in.U8() % 5), 1 + in.U8() % 32u};
    h.geometry = g;
    if (in.Bool() && g.Validate().ok()) {
      h.geometry_fingerprint = g.Fingerprint();
      h.raw_bytes = static_cast<uint32_t>(g.block_bytes());
      h.stored_bytes = static_cast<uint32_t>(QuantizedBlockBytes(g, CodecQuantFormat(h.codec)));
    }
  } else if (!IsQuantizedCodec(h.codec) && in.Bool()) {
    // A version 2 header: an extended geometry (or a fuzzer-made, maybe invalid, one) under a
    // lossless codec.
    Geometry g{1 + in.U8() % 4u, 1 + in.U8() % 2u, 1 + in.U16() % 256u,
               static_cast<DType>(in.U8() % 7), 1 + in.U8() % 32u};
    g.kind = static_cast<KvKind>(in.U8() % 3);
    g.rope_dim = in.U8();
    g.kv_head_begin = in.U8() % 3;
    g.total_kv_heads = in.U8() % 5;
    h.geometry = g;
    if (in.Bool() && g.Validate().ok()) {
      h.geometry_fingerprint = g.Fingerprint();
      h.raw_bytes = static_cast<uint32_t>(g.block_bytes());
      h.stored_bytes = h.raw_bytes;
    }
  }
  h.element_bytes = in.U8() % 6;
  if (h.raw_bytes == 0) {
    h.raw_bytes = in.Bool() ? in.U32() : in.U16();  // mostly small, sometimes anything
    h.stored_bytes = in.Bool() ? in.U32() : in.U16();
  }
  const bool right_checksum = in.Bool();
  const size_t capacity_slack = in.U8() % 3;  // 0: exact, 1: one short, 2: one over
  h.payload_checksum = in.U64();
  const absl::string_view payload = in.Rest();
  Buffer copy = Allocate(payload.size(), false);
  if (!payload.empty()) std::memcpy(copy.get(), payload.data(), payload.size());
  if (right_checksum) {
    h.payload_checksum = XXH3_64bits(copy.get(), std::min<size_t>(h.stored_bytes, payload.size()));
  }
  if (h.raw_bytes > kMaxDecodeBytes) {
    // A small buffer: the decoder must refuse before writing (ASan catches a write past it).
    uint8_t small[64];
    const absl::Status s = DecodeRecordPayload(h, copy.get(), payload.size(), small, sizeof(small));
    KVTIER_FUZZ_CHECK(!s.ok(), "decoded a block larger than the buffer");
    CheckErrorCode(s, "DecodeRecordPayload");
    return;
  }
  size_t capacity = h.raw_bytes;
  if (capacity_slack == 1 && capacity > 0) --capacity;
  if (capacity_slack == 2) ++capacity;
  Buffer out = Allocate(capacity, false);
  const absl::Status s = DecodeRecordPayload(h, copy.get(), payload.size(), out.get(), capacity);
  if (!s.ok()) {
    CheckErrorCode(s, "DecodeRecordPayload");
    return;
  }
  KVTIER_FUZZ_CHECK(capacity >= h.raw_bytes && h.raw_bytes > 0 && h.stored_bytes <= payload.size(),
                    "DecodeRecordPayload accepted impossible sizes");
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::fuzz::Input in(data, size);
  switch (in.U8() % 6) {
    case 0:
      kvtier::Verbatim(in);
      break;
    case 1:
      kvtier::FixedUpChecksums(in, /*fix_payload=*/false);
      break;
    case 2:
      kvtier::FixedUpChecksums(in, /*fix_payload=*/true);
      break;
    case 3:
      kvtier::EncodeRoundTrip(in, /*extended=*/false);
      break;
    case 5:
      kvtier::EncodeRoundTrip(in, /*extended=*/true);
      break;
    case 4:
      kvtier::DecodeAnyHeader(in);
      break;
  }
  return 0;
}
