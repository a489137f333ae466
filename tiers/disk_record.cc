// tiers/disk_record.cc — the on-disk record codec (see tiers/disk_record.h and
// docs/disk-format.md, which gives the byte-exact layout this file writes and reads).
//
// Every integer is written byte by byte, little-endian, at a fixed offset: no struct is ever
// memcpy'd to or from disk, so the format does not depend on the compiler or the host. The
// parser treats its input as hostile: it reads only inside the bytes it was given, trusts no
// length before checking it against a bound, and answers DataLoss naming the first field that
// is wrong. The payload codecs themselves (zstd, the shuffle, fp8 / int8 through
// kernels/quantize.h's CPU reference) live in tiers/record_codec.h, shared with the remote
// record; this file owns the disk format around them: header, padding, checksums.
//
// Long on purpose: it is one format, and its writer (EncodeRecord) and its hostile-input
// parser (ParseRecordHeader, DecodeRecordPayload) stay in one file so that every field's write
// and check, offsets and bounds can be read side by side.

#include "tiers/disk_record.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/xxhash.h"
#include "tiers/record_codec.h"

namespace kvtier {
namespace {

// Header layout, format versions 1 and 2 (docs/disk-format.md). Offsets in bytes.
constexpr size_t kOffMagic = 0;             // u64
constexpr size_t kOffVersion = 8;           // u32
constexpr size_t kOffCodec = 12;            // u8
constexpr size_t kOffElementBytes = 13;     // u8
constexpr size_t kOffNamespaceBytes = 14;   // u16
constexpr size_t kOffKeyHi = 16;            // u64
constexpr size_t kOffKeyLo = 24;            // u64
constexpr size_t kOffGeometry = 32;         // u64
constexpr size_t kOffRawBytes = 40;         // u32
constexpr size_t kOffStoredBytes = 44;      // u32
constexpr size_t kOffRegion = 48;           // u32
constexpr size_t kOffReserved = 52;         // 4 bytes, zero
constexpr size_t kOffGeneration = 56;       // u64
constexpr size_t kOffPayloadChecksum = 64;  // u64
constexpr size_t kOffCreated = 72;          // u64
constexpr size_t kOffNamespace = 80;        // kMaxNamespaceBytes, zero-padded
constexpr size_t kMaxNamespaceBytes = 128;
// The block's geometry, under the quantized codecs and in every version 2 record (zero bytes
// otherwise).
constexpr size_t kOffGeomDtype = 208;        // u8, then 3 zero bytes
constexpr size_t kOffGeomLayers = 212;       // u32
constexpr size_t kOffGeomKvHeads = 216;      // u32
constexpr size_t kOffGeomHeadDim = 220;      // u32
constexpr size_t kOffGeomBlockTokens = 224;  // u32
constexpr size_t kGeomEnd = 228;
// Version 2 only: the rest of an extended geometry.
constexpr size_t kOffGeomKind = 228;        // u8, then 3 zero bytes
constexpr size_t kOffGeomRopeDim = 232;     // u32
constexpr size_t kOffGeomHeadBegin = 236;   // u32
constexpr size_t kOffGeomTotalHeads = 240;  // u32
constexpr size_t kGeomEndV2 = 244;
constexpr size_t kOffHeaderChecksum = kRecordHeaderBytes - 8;  // u64, XXH3-64 of [0, 4088)
static_assert(kOffNamespace + kMaxNamespaceBytes <= kOffGeomDtype);
static_assert(kGeomEndV2 <= kOffHeaderChecksum);

void PutU16(uint8_t* p, uint16_t v) {
  for (int i = 0; i < 2; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
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

size_t RoundUpToPage(size_t n) {
  if (n > std::numeric_limits<size_t>::max() - (kRecordAlignment - 1)) {
    return std::numeric_limits<size_t>::max() / kRecordAlignment * kRecordAlignment;
  }
  return (n + kRecordAlignment - 1) / kRecordAlignment * kRecordAlignment;
}

uint64_t HeaderChecksum(const uint8_t* header) { return XXH3_64bits(header, kOffHeaderChecksum); }

// A carried geometry's checks: valid, the header's fingerprint, the header's raw size.
absl::Status ValidateCarriedGeometry(const RecordHeader& h) {
  const char* name = CodecName(h.codec);
  const Geometry& g = *h.geometry;
  if (absl::Status s = g.Validate(); !s.ok()) {
    return absl::DataLossError(
        absl::StrFormat("record header: geometry under codec %s: %s", name, s.message()));
  }
  if (g.Fingerprint() != h.geometry_fingerprint) {
    return absl::DataLossError(absl::StrFormat(
        "record header: geometry (%s) has fingerprint 0x%016x, geometry_fingerprint says "
        "0x%016x",
        g.ToString(), g.Fingerprint(), h.geometry_fingerprint));
  }
  if (g.block_bytes() != h.raw_bytes) {
    return absl::DataLossError(
        absl::StrFormat("record header: raw_bytes = %d, but the geometry's blocks are %d bytes",
                        h.raw_bytes, g.block_bytes()));
  }
  return absl::OkStatus();
}

// The quantized codecs' own field checks (ValidateFields has checked the codec byte).
absl::Status ValidateQuantizedFields(const RecordHeader& h) {
  const char* name = CodecName(h.codec);
  if (!h.geometry.has_value()) {
    return absl::DataLossError(
        absl::StrFormat("record header: geometry missing under codec %s", name));
  }
  const Geometry& g = *h.geometry;
  if (absl::Status s = g.Validate(); !s.ok()) {
    return absl::DataLossError(
        absl::StrFormat("record header: geometry under codec %s: %s", name, s.message()));
  }
  if (absl::Status s = CheckCodecDType(h.codec, g.dtype); !s.ok()) {
    return absl::DataLossError(absl::StrCat("record header: ", s.message()));
  }
  if (absl::Status s = ValidateCarriedGeometry(h); !s.ok()) return s;
  const size_t quantized = QuantizedBlockBytes(g, CodecQuantFormat(h.codec));
  if (h.stored_bytes != quantized) {
    return absl::DataLossError(absl::StrFormat(
        "record header: stored_bytes = %d under codec %s, a quantized block of this geometry "
        "is %d bytes",
        h.stored_bytes, name, quantized));
  }
  return absl::OkStatus();
}

// The checks on a header's fields that do not need its bytes: shared by ParseRecordHeader
// (after the header checksum matched) and DecodeRecordPayload (which may get a header from
// anywhere). DataLoss naming the field.
absl::Status ValidateFields(const RecordHeader& h) {
  const auto codec = static_cast<uint8_t>(h.codec);
  if (codec >= kNumCodecs) {
    return absl::DataLossError(absl::StrFormat("record header: codec = %d is unknown", codec));
  }
  if (h.raw_bytes == 0) {
    return absl::DataLossError("record header: raw_bytes = 0 (a record holds a non-empty block)");
  }
  if (h.stored_bytes == 0) {
    return absl::DataLossError("record header: stored_bytes = 0");
  }
  if (RecordSize(h.stored_bytes) > MaxRecordSize(h.raw_bytes)) {
    return absl::DataLossError(absl::StrFormat(
        "record header: stored_bytes = %d makes a record of %d bytes, larger than the %d "
        "bytes a block of raw_bytes = %d can need",
        h.stored_bytes, RecordSize(h.stored_bytes), MaxRecordSize(h.raw_bytes), h.raw_bytes));
  }
  if (h.codec == Codec::kNone && h.stored_bytes != h.raw_bytes) {
    return absl::DataLossError(absl::StrFormat(
        "record header: stored_bytes = %d differs from raw_bytes = %d under codec none",
        h.stored_bytes, h.raw_bytes));
  }
  if (h.codec == Codec::kZstdShuffle) {
    if (!record_codec::IsShuffleWidth(h.element_bytes)) {
      return absl::DataLossError(absl::StrFormat(
          "record header: element_bytes = %d under codec zstd-shuffle (must be 1, 2 or 4)",
          h.element_bytes));
    }
    if (h.raw_bytes % h.element_bytes != 0) {
      return absl::DataLossError(
          absl::StrFormat("record header: element_bytes = %d does not divide raw_bytes = %d",
                          h.element_bytes, h.raw_bytes));
    }
  } else if (h.element_bytes != 0) {
    return absl::DataLossError(
        absl::StrFormat("record header: element_bytes = %d under codec %s (must be 0)",
                        h.element_bytes, CodecName(h.codec)));
  }
  if (IsQuantizedCodec(h.codec)) return ValidateQuantizedFields(h);
  if (h.geometry.has_value()) {
    if (h.geometry->IsExtended()) return ValidateCarriedGeometry(h);  // format version 2
    return absl::DataLossError(absl::StrFormat(
        "record header: geometry set under codec %s (only the quantized codecs and format "
        "version 2, an extended geometry, carry one)",
        CodecName(h.codec)));
  }
  return absl::OkStatus();
}

}  // namespace

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone:
      return "none";
    case Codec::kZstd:
      return "zstd";
    case Codec::kZstdShuffle:
      return "zstd-shuffle";
    case Codec::kFp8:
      return "fp8";
    case Codec::kInt8:
      return "int8";
  }
  return "invalid";
}

absl::StatusOr<Codec> ParseCodec(absl::string_view name) {
  for (int i = 0; i < kNumCodecs; ++i) {
    if (name == CodecName(static_cast<Codec>(i))) return static_cast<Codec>(i);
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "codec '%s' is not one of none, zstd, zstd-shuffle, fp8, int8", name));
}

QuantFormat CodecQuantFormat(Codec codec) {
  switch (codec) {
    case Codec::kFp8:
      return QuantFormat::kFp8E4m3;
    case Codec::kInt8:
      return QuantFormat::kInt8;
    default:
      return QuantFormat::kNone;
  }
}

absl::Status CheckCodecDType(Codec codec, DType dtype) {
  if (!IsQuantizedCodec(codec) || DTypeIsQuantizable(dtype)) return absl::OkStatus();
  if (DTypeSize(dtype) == 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "codec %s cannot store blocks of dtype %s: they are already one byte per element "
        "(use codec none, zstd or zstd-shuffle)",
        CodecName(codec), DTypeName(dtype)));
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "codec %s cannot store blocks of dtype %s (%d): the quantized codecs take fp16, bf16 "
      "and fp32",
      CodecName(codec), DTypeName(dtype), static_cast<int>(dtype)));
}

size_t RecordSize(size_t stored_bytes) {
  const size_t payload = RoundUpToPage(stored_bytes);
  if (payload > std::numeric_limits<size_t>::max() - kRecordHeaderBytes) {
    return payload;  // saturated: no buffer can be this large anyway
  }
  return kRecordHeaderBytes + payload;
}

size_t MaxRecordSize(size_t raw_bytes) {
  // Compression is kept only when it saves a page, so a record is never larger than the raw
  // block stored as is.
  return RecordSize(raw_bytes);
}

size_t NominalRecordSize(const Geometry& g, Codec codec) {
  const size_t raw = MaxRecordSize(g.block_bytes());
  if (!IsQuantizedCodec(codec)) return raw;
  return std::min(raw, RecordSize(QuantizedBlockBytes(g, CodecQuantFormat(codec))));
}

absl::StatusOr<size_t> EncodeRecord(const RecordHeader& header, const void* raw, size_t raw_bytes,
                                    const EncodeOptions& options, void* out, size_t out_capacity,
                                    RecordHeader* written) {
  if (raw_bytes == 0) {
    return absl::InvalidArgumentError("EncodeRecord: raw_bytes = 0; a record holds a block");
  }
  if (raw_bytes > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("EncodeRecord: raw_bytes = %d exceeds the format's limit of %d", raw_bytes,
                        std::numeric_limits<uint32_t>::max()));
  }
  if (raw == nullptr) return absl::InvalidArgumentError("EncodeRecord: raw is null");
  if (header.ns.size() > kMaxNamespaceBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("EncodeRecord: namespace is %d bytes long, at most %d fit a record",
                        header.ns.size(), kMaxNamespaceBytes));
  }
  if (out == nullptr || reinterpret_cast<uintptr_t>(out) % kRecordAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "EncodeRecord: out = %p is not %d-byte aligned (records are written with O_DIRECT)", out,
        kRecordAlignment));
  }
  const size_t max_record = MaxRecordSize(raw_bytes);
  if (out_capacity < max_record) {
    return absl::InvalidArgumentError(
        absl::StrFormat("EncodeRecord: out_capacity = %d is smaller than MaxRecordSize(%d) = %d",
                        out_capacity, raw_bytes, max_record));
  }
  if (absl::Status s = record_codec::CheckEncodeOptions(
          "EncodeRecord", options, raw_bytes, &header.geometry_fingerprint, raw,
          static_cast<uint8_t*>(out) + kRecordHeaderBytes);
      !s.ok()) {
    return s;
  }
  // An extended geometry makes a version 2 record, which carries it under every codec.
  const bool extended = options.geometry.has_value() && options.geometry->IsExtended();
  if (extended) {
    const Geometry& g = *options.geometry;
    if (absl::Status s = g.Validate(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("EncodeRecord: ", s.message()));
    }
    if (g.block_bytes() != raw_bytes || g.Fingerprint() != header.geometry_fingerprint) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "EncodeRecord: EncodeOptions.geometry (%s, fingerprint 0x%016x) is not the block's: "
          "raw_bytes = %d, header.geometry_fingerprint = 0x%016x",
          g.ToString(), g.Fingerprint(), raw_bytes, header.geometry_fingerprint));
    }
  }

  // From here on the size is known to fit 32 bits; saying so lets the compiler see it too.
  const auto size = static_cast<uint32_t>(raw_bytes);
  const auto* src = static_cast<const uint8_t*>(raw);
  auto* record = static_cast<uint8_t*>(out);
  uint8_t* payload = record + kRecordHeaderBytes;

  // Compression must save at least one page: its output may fill at most one page less than
  // the raw block's padded size. Writing straight into the payload area with that capacity
  // lets zstd itself give up when the block does not compress enough.
  const size_t raw_padded = RoundUpToPage(size);
  // 0 for a one-page block; at most 2^32 - 1, so a compressed size always fits stored_bytes.
  const size_t compressed_limit =
      std::min<size_t>(raw_padded - kRecordAlignment, std::numeric_limits<uint32_t>::max());
  // In-place encoding (kNone, `raw` already at the payload position) must not be handed to
  // a codec, whose output would overwrite its input.
  record_codec::EncodedPayload encoded{Codec::kNone, size};
  if (payload != src) {
    encoded = record_codec::EncodePayload(src, size, options, payload, compressed_limit);
  }
  const Codec codec = encoded.codec;
  // The codecs' output fits compressed_limit, which fits 32 bits.
  auto stored = static_cast<uint32_t>(encoded.stored_bytes);
  if (codec == Codec::kNone) {
    // In-place encoding: the caller may have put the block at the payload position already.
    if (payload != src) std::memcpy(payload, src, size);
    stored = size;
  }
  const size_t padded =
      (size_t{stored} + kRecordAlignment - 1) / kRecordAlignment * kRecordAlignment;
  const size_t record_bytes = kRecordHeaderBytes + padded;
  std::memset(payload + stored, 0, padded - stored);

  RecordHeader h;
  h.key = header.key;
  h.ns = header.ns;
  h.geometry_fingerprint = header.geometry_fingerprint;
  h.codec = codec;
  h.element_bytes =
      codec == Codec::kZstdShuffle ? static_cast<uint8_t>(options.element_bytes) : uint8_t{0};
  h.raw_bytes = size;
  h.stored_bytes = stored;
  h.region = header.region;
  h.generation = header.generation;
  h.payload_checksum = XXH3_64bits(payload, stored);
  h.created_unix_ms = header.created_unix_ms;
  if (IsQuantizedCodec(codec) || extended) h.geometry = options.geometry;

  std::memset(record, 0, kRecordHeaderBytes);
  PutU64(record + kOffMagic, kRecordMagic);
  PutU32(record + kOffVersion, h.format_version());
  record[kOffCodec] = static_cast<uint8_t>(h.codec);
  record[kOffElementBytes] = h.element_bytes;
  PutU16(record + kOffNamespaceBytes, static_cast<uint16_t>(h.ns.size()));
  PutU64(record + kOffKeyHi, h.key.hi);
  PutU64(record + kOffKeyLo, h.key.lo);
  PutU64(record + kOffGeometry, h.geometry_fingerprint);
  PutU32(record + kOffRawBytes, h.raw_bytes);
  PutU32(record + kOffStoredBytes, h.stored_bytes);
  PutU32(record + kOffRegion, h.region);
  PutU64(record + kOffGeneration, h.generation);
  PutU64(record + kOffPayloadChecksum, h.payload_checksum);
  PutU64(record + kOffCreated, h.created_unix_ms);
  if (!h.ns.empty()) std::memcpy(record + kOffNamespace, h.ns.data(), h.ns.size());
  if (h.geometry.has_value()) {
    record[kOffGeomDtype] = static_cast<uint8_t>(h.geometry->dtype);
    PutU32(record + kOffGeomLayers, h.geometry->num_layers);
    PutU32(record + kOffGeomKvHeads, h.geometry->num_kv_heads);
    PutU32(record + kOffGeomHeadDim, h.geometry->head_dim);
    PutU32(record + kOffGeomBlockTokens, h.geometry->block_tokens);
    if (h.geometry->IsExtended()) {
      record[kOffGeomKind] = static_cast<uint8_t>(h.geometry->kind);
      PutU32(record + kOffGeomRopeDim, h.geometry->rope_dim);
      PutU32(record + kOffGeomHeadBegin, h.geometry->kv_head_begin);
      PutU32(record + kOffGeomTotalHeads, h.geometry->total_kv_heads);
    }
  }
  PutU64(record + kOffHeaderChecksum, HeaderChecksum(record));

  if (written != nullptr) *written = std::move(h);
  return record_bytes;
}

void SetRecordPlacement(void* record, uint32_t region, uint64_t generation) {
  auto* p = static_cast<uint8_t*>(record);
  PutU32(p + kOffRegion, region);
  PutU64(p + kOffGeneration, generation);
  PutU64(p + kOffHeaderChecksum, HeaderChecksum(p));
}

absl::StatusOr<RecordHeader> ParseRecordHeader(const void* data, size_t size) {
  if (data == nullptr || size < kRecordHeaderBytes) {
    return absl::DataLossError(absl::StrFormat("record header truncated: %d of %d bytes",
                                               data == nullptr ? 0 : size, kRecordHeaderBytes));
  }
  const auto* p = static_cast<const uint8_t*>(data);
  if (const uint64_t magic = GetU64(p + kOffMagic); magic != kRecordMagic) {
    return absl::DataLossError(
        absl::StrFormat("record header: magic = 0x%016x, expected 0x%016x (not a kvtier record)",
                        magic, kRecordMagic));
  }
  // The version comes before the checksum: a record of another version may checksum its
  // header differently, and "unsupported version" is the useful answer for it.
  const uint32_t version = GetU32(p + kOffVersion);
  if (version != kRecordFormatVersion && version != kRecordFormatVersionExtended) {
    return absl::DataLossError(
        absl::StrFormat("record header: format_version = %d, this build reads versions %d and %d",
                        version, kRecordFormatVersion, kRecordFormatVersionExtended));
  }
  const bool v2 = version == kRecordFormatVersionExtended;
  const uint64_t stored_checksum = GetU64(p + kOffHeaderChecksum);
  if (const uint64_t computed = HeaderChecksum(p); computed != stored_checksum) {
    return absl::DataLossError(absl::StrFormat(
        "record header: header_checksum mismatch (stored 0x%016x, computed 0x%016x)",
        stored_checksum, computed));
  }

  const size_t ns_bytes = GetU16(p + kOffNamespaceBytes);
  if (ns_bytes > kMaxNamespaceBytes) {
    return absl::DataLossError(absl::StrFormat("record header: namespace_bytes = %d exceeds %d",
                                               ns_bytes, kMaxNamespaceBytes));
  }
  // Every byte the format does not assign must be zero: a writer that disagrees is not this
  // version. The geometry bytes are assigned under the quantized codecs and in version 2, the
  // extended geometry's in version 2 only.
  const bool quantized = IsQuantizedCodec(static_cast<Codec>(p[kOffCodec]));
  const bool carries_geometry = quantized || v2;
  auto assigned = [carries_geometry, v2](size_t i) {
    if (carries_geometry && (i == kOffGeomDtype || (i >= kOffGeomLayers && i < kGeomEnd))) {
      return true;
    }
    return v2 && (i == kOffGeomKind || (i >= kOffGeomRopeDim && i < kGeomEndV2));
  };
  for (size_t i = kOffReserved; i < kOffReserved + 4; ++i) {
    if (p[i] != 0) {
      return absl::DataLossError(
          absl::StrFormat("record header: reserved byte at offset %d is not zero", i));
    }
  }
  for (size_t i = kOffNamespace + ns_bytes; i < kOffHeaderChecksum; ++i) {
    if (p[i] != 0 && !assigned(i)) {
      return absl::DataLossError(
          absl::StrFormat("record header: padding byte at offset %d is not zero", i));
    }
  }

  RecordHeader h;
  h.key.hi = GetU64(p + kOffKeyHi);
  h.key.lo = GetU64(p + kOffKeyLo);
  h.ns.assign(reinterpret_cast<const char*>(p + kOffNamespace), ns_bytes);
  h.geometry_fingerprint = GetU64(p + kOffGeometry);
  h.codec = static_cast<Codec>(p[kOffCodec]);
  h.element_bytes = p[kOffElementBytes];
  h.raw_bytes = GetU32(p + kOffRawBytes);
  h.stored_bytes = GetU32(p + kOffStoredBytes);
  h.region = GetU32(p + kOffRegion);
  h.generation = GetU64(p + kOffGeneration);
  h.payload_checksum = GetU64(p + kOffPayloadChecksum);
  h.created_unix_ms = GetU64(p + kOffCreated);
  if (carries_geometry) {
    Geometry g;
    g.dtype = static_cast<DType>(p[kOffGeomDtype]);
    g.num_layers = GetU32(p + kOffGeomLayers);
    g.num_kv_heads = GetU32(p + kOffGeomKvHeads);
    g.head_dim = GetU32(p + kOffGeomHeadDim);
    g.block_tokens = GetU32(p + kOffGeomBlockTokens);
    if (v2) {
      g.kind = static_cast<KvKind>(p[kOffGeomKind]);
      g.rope_dim = GetU32(p + kOffGeomRopeDim);
      g.kv_head_begin = GetU32(p + kOffGeomHeadBegin);
      g.total_kv_heads = GetU32(p + kOffGeomTotalHeads);
      if (!g.IsExtended()) {
        return absl::DataLossError(absl::StrFormat(
            "record header: format_version = 2 but its geometry (%s) is not extended (kind kv, "
            "unsharded: a version 1 record)",
            g.ToString()));
      }
    }
    h.geometry = g;
  }
  if (absl::Status s = ValidateFields(h); !s.ok()) return s;
  return h;
}

absl::Status DecodeRecordPayload(const RecordHeader& header, const void* payload, size_t available,
                                 void* raw_out, size_t raw_capacity) {
  if (absl::Status s = ValidateFields(header); !s.ok()) return s;
  if (raw_out == nullptr || raw_capacity < header.raw_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DecodeRecordPayload: raw_capacity = %d is smaller than raw_bytes = %d",
                        raw_out == nullptr ? 0 : raw_capacity, header.raw_bytes));
  }
  if (payload == nullptr || available < header.stored_bytes) {
    return absl::DataLossError(
        absl::StrFormat("record payload truncated: %d of stored_bytes = %d available",
                        payload == nullptr ? 0 : available, header.stored_bytes));
  }
  const auto* src = static_cast<const uint8_t*>(payload);
  auto mismatch = [&](uint64_t computed) {
    return absl::DataLossError(absl::StrFormat(
        "record payload: payload_checksum mismatch (header 0x%016x, computed 0x%016x)",
        header.payload_checksum, computed));
  };
  auto* out = static_cast<uint8_t*>(raw_out);
  if (header.codec == Codec::kNone && out != src) {
    // Verify and copy in one pass over memory: each chunk is hashed and then copied while it
    // is still in the cache, instead of hashing the whole payload and then reading it from
    // memory again to copy it. Reads are bound by memory bandwidth as much as by the disk
    // (on the dev VM the host's DMA into guest memory competes with them). XXH3's streaming
    // form gives the one-shot hash of the same bytes.
    if (out < src + header.stored_bytes && src < out + header.raw_bytes) {
      return absl::InvalidArgumentError(
          "DecodeRecordPayload: the payload and raw_out overlap (codec none)");
    }
    constexpr size_t kChunk = 64 << 10;
    // One state per thread, made once (the layout is the library's: XXH_STATIC_LINKING_ONLY
    // would tie a stack copy to the header's version), not an allocation per read.
    thread_local const std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> state(
        XXH3_createState(), XXH3_freeState);
    if (state == nullptr || XXH3_64bits_reset(state.get()) != XXH_OK) {
      return absl::ResourceExhaustedError("DecodeRecordPayload: XXH3_createState failed");
    }
    for (size_t at = 0; at < header.stored_bytes; at += kChunk) {
      const size_t n = std::min(kChunk, size_t{header.stored_bytes} - at);
      XXH3_64bits_update(state.get(), src + at, n);
      std::memcpy(out + at, src + at, n);
    }
    if (const uint64_t computed = XXH3_64bits_digest(state.get());
        computed != header.payload_checksum) {
      std::memset(out, 0, header.raw_bytes);  // never leave unverified bytes behind
      return mismatch(computed);
    }
    return absl::OkStatus();
  }
  if (const uint64_t computed = XXH3_64bits(src, header.stored_bytes);
      computed != header.payload_checksum) {
    return mismatch(computed);
  }

  // ValidateFields checked a quantized header's geometry against raw_bytes and stored_bytes.
  return record_codec::DecodePayload("DecodeRecordPayload", "record", header.codec,
                                     header.element_bytes,
                                     header.geometry.has_value() ? &*header.geometry : nullptr,
                                     src, header.stored_bytes, raw_out, header.raw_bytes);
}

}  // namespace kvtier
