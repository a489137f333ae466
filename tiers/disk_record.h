// tiers/disk_record.h — one block as stored on disk: a self-describing, checksummed record.
//
// Layout (format versions 1 and 2; docs/disk-format.md):
//
//   [ header: 4096 bytes ][ payload: stored_bytes, zero-padded to a multiple of 4096 ]
//
// The header carries everything needed to verify a record without trusting the index: magic,
// format version, the block key, the namespace name, the geometry fingerprint, the codec, raw
// and stored sizes, the region and its generation (a reused region's old records fail the
// generation check), the payload checksum, the creation time, and a checksum over the header
// itself. All integers are little-endian. Checksums are XXH3-64.
//
// Codecs: kNone (the raw block), kZstd (zstd of the raw block), kZstdShuffle (zstd of the
// block after a byte shuffle that groups byte 0 of every element, then byte 1, …, which lets
// zstd find the redundancy in fp16/bf16 exponents) — all lossless — and the lossy kFp8 /
// kInt8: the block quantized by kernels/quantize.h (one byte per element plus one float scale
// per (layer, K/V, kv_head)), dequantized back to the block's dtype on decode. A quantized
// record carries the block's geometry in its header, so it decodes without the index.
//
// Format version 2 is version 1 plus the geometry's kind, rope_dim and shard fields: the
// records of an extended geometry (Geometry::IsExtended: an mla latent, a tensor-parallel
// shard) are version 2 and carry their whole geometry under every codec, so a record says
// what it is. Records of every other geometry are still written, byte for byte, as version 1.
// EncodeRecord falls back to kNone when a codec would not save at least one 4096-byte page.
//
// Pure functions, no I/O; safe on any thread.

#ifndef KVTIER_TIERS_DISK_RECORD_H_
#define KVTIER_TIERS_DISK_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/quantize.h"
#include "kvtier/block_key.h"
#include "kvtier/geometry.h"

namespace kvtier {

inline constexpr uint64_t kRecordMagic = 0x3143455252545654ULL;  // "TVTRREC1" little-endian
inline constexpr uint32_t kRecordFormatVersion = 1;              // kind kv, unsharded
inline constexpr uint32_t kRecordFormatVersionExtended = 2;      // Geometry::IsExtended()
// The version of the records (and of a cache directory) holding blocks of `geometry`.
inline uint32_t RecordFormatVersion(const Geometry& geometry) {
  return geometry.IsExtended() ? kRecordFormatVersionExtended : kRecordFormatVersion;
}
inline constexpr size_t kRecordHeaderBytes = 4096;
inline constexpr size_t kRecordAlignment = 4096;

// The codec byte of a record header (docs/disk-format.md). kFp8 / kInt8 are lossy.
enum class Codec : uint8_t { kNone = 0, kZstd = 1, kZstdShuffle = 2, kFp8 = 3, kInt8 = 4 };
inline constexpr int kNumCodecs = 5;  // codec bytes 0 .. kNumCodecs - 1 are known
// "none", "zstd", "zstd-shuffle", "fp8", "int8"; "invalid" outside the enum.
const char* CodecName(Codec codec);
// The names above; InvalidArgument listing them otherwise.
absl::StatusOr<Codec> ParseCodec(absl::string_view name);
// The quantization format of kFp8 / kInt8 (QuantFormat::kNone for the lossless codecs).
QuantFormat CodecQuantFormat(Codec codec);
inline bool IsQuantizedCodec(Codec codec) { return CodecQuantFormat(codec) != QuantFormat::kNone; }
// OK when `codec` can store blocks of `dtype`: the lossless codecs store anything, the
// quantized ones the dtypes kernels/quantize.h takes (fp16, bf16, fp32). Otherwise
// InvalidArgument naming the codec and the dtype.
absl::Status CheckCodecDType(Codec codec, DType dtype);

struct RecordHeader {
  BlockKey key;
  std::string ns;                  // namespace name, at most 128 bytes
  uint64_t geometry_fingerprint = 0;
  Codec codec = Codec::kNone;
  uint8_t element_bytes = 0;       // kZstdShuffle's shuffle granularity (1, 2 or 4); else 0
  uint32_t raw_bytes = 0;          // the block's size
  uint32_t stored_bytes = 0;       // payload bytes before padding
  uint32_t region = 0;
  uint64_t generation = 0;         // of the region when the record was written
  uint64_t payload_checksum = 0;   // XXH3-64 of the stored payload bytes
  uint64_t created_unix_ms = 0;
  // The block's geometry (header bytes 208..243): under kFp8 / kInt8, which decoding needs,
  // and in every format-version-2 record (an extended geometry). Its Fingerprint() equals
  // geometry_fingerprint and its block_bytes() raw_bytes. Empty otherwise.
  std::optional<Geometry> geometry;

  // 2 when the record carries an extended geometry, else 1.
  uint32_t format_version() const {
    return geometry.has_value() && geometry->IsExtended() ? kRecordFormatVersionExtended
                                                          : kRecordFormatVersion;
  }
};

// Total on-disk size of a record whose payload is `stored_bytes` long.
size_t RecordSize(size_t stored_bytes);
// The largest record EncodeRecord can produce for a raw block of `raw_bytes`.
size_t MaxRecordSize(size_t raw_bytes);
// The size of the record EncodeRecord writes for a block of `g` under `codec`: exact for none,
// fp8 and int8 (the quantized form, or the raw block where that would not save a page), and
// the uncompressed MaxRecordSize for zstd and zstd-shuffle, whose output depends on the data.
// What a byte budget of records (capacity, quotas) is counted in. REQUIRES: g.Validate().ok().
size_t NominalRecordSize(const Geometry& g, Codec codec);

struct EncodeOptions {
  Codec codec = Codec::kNone;  // requested; may fall back to kNone
  int zstd_level = 1;          // 1..19
  size_t element_bytes = 2;    // shuffle granularity for kZstdShuffle (1, 2 or 4)
  // The block's geometry. Required by kFp8 / kInt8 and for an extended geometry (whose
  // records are format version 2 and carry it); ignored by the lossless codecs otherwise.
  // Its block_bytes() must be raw_bytes, its Fingerprint() the header's
  // geometry_fingerprint, and under kFp8 / kInt8 its dtype one CheckCodecDType accepts.
  std::optional<Geometry> geometry;
};

// Writes a whole record (header + payload + zero padding) for the raw block `raw` into `out`.
// `header` supplies key, ns, geometry_fingerprint, region, generation, created_unix_ms; codec,
// element_bytes, raw_bytes, stored_bytes, payload_checksum and geometry are filled in here.
// Returns the record size. kFp8 / kInt8 quantize the block (QuantizeBlocksCpu): lossy.
// InvalidArgument if `out_capacity` < MaxRecordSize(raw_bytes), the namespace is too long,
// element_bytes does not divide raw_bytes for kZstdShuffle, or a quantized codec lacks a
// geometry that matches the block (size, fingerprint, dtype).
// REQUIRES: `out` is 4096-aligned (it is written with O_DIRECT). With Codec::kNone, `raw` may
// be `out + kRecordHeaderBytes` (the block already in place: no copy is made); otherwise `raw`
// must not overlap `out` (for kFp8 / kInt8 an overlap, or `raw` not aligned to the element
// size, is InvalidArgument).
absl::StatusOr<size_t> EncodeRecord(const RecordHeader& header, const void* raw, size_t raw_bytes,
                                    const EncodeOptions& options, void* out, size_t out_capacity,
                                    RecordHeader* written = nullptr);

// Rewrites the region and generation in the header of an encoded record (and its header
// checksum): a record is encoded before it has a place, then placed.
// REQUIRES: `record` holds a header EncodeRecord wrote.
void SetRecordPlacement(void* record, uint32_t region, uint64_t generation);

// Parses and verifies the first kRecordHeaderBytes of a record: magic, format version, header
// checksum, field ranges. DataLoss naming what is wrong otherwise (never crashes on garbage).
absl::StatusOr<RecordHeader> ParseRecordHeader(const void* data, size_t size);

// Verifies the payload checksum and decodes the payload into `raw_out` (exactly raw_bytes;
// for kFp8 / kInt8 the dequantized block, DequantizeBlocksCpu, in the geometry's dtype).
// `payload` points just past the header; `available` is how many bytes are readable there.
// DataLoss on checksum mismatch, truncation or a decode error; InvalidArgument if
// raw_capacity < header.raw_bytes, or for kFp8 / kInt8 if `payload` is not 4-byte aligned,
// `raw_out` not aligned to the element size, or the two overlap (QuantizeParams' rules; for
// kNone they may be the same buffer, verified in place, but not partly overlap). On a checksum
// mismatch raw_out's first raw_bytes are zero (codec none verifies while it copies).
absl::Status DecodeRecordPayload(const RecordHeader& header, const void* payload,
                                 size_t available, void* raw_out, size_t raw_capacity);

}  // namespace kvtier

#endif  // KVTIER_TIERS_DISK_RECORD_H_
