// tiers/record_codec.h — the payload codecs shared by the disk record (tiers/disk_record.h) and
// the remote record (remote/remote_record.h). Internal: not part of libkvtier's API.
//
// A payload is one raw KV block under a Codec: kNone (the block), kZstd, kZstdShuffle (zstd of
// the block after a byte shuffle of `element_bytes`-wide elements), kFp8 / kInt8 (the block
// quantized by kernels/quantize.h's CPU reference). The formats own their headers, padding and
// checksums; this file owns only the bytes between. EncodePayload keeps a codec only when its
// output fits a caller-given limit (the disk saves a page, the remote tier 1/16 of the block),
// so the caller decides what "worth it" means and the fallback is always the raw block.
//
// Compression contexts and the shuffle scratch buffer are per thread: the functions are pure
// and lock-free, safe on any thread.

#ifndef KVTIER_TIERS_RECORD_CODEC_H_
#define KVTIER_TIERS_RECORD_CODEC_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kvtier/geometry.h"
#include "tiers/disk_record.h"  // Codec, EncodeOptions

namespace kvtier::record_codec {

// 1, 2 or 4: the shuffle widths kZstdShuffle takes.
bool IsShuffleWidth(size_t element_bytes);

// Checks `options` for a raw block of raw_bytes (> 0, fits 32 bits: the caller checks):
// codec known, zstd level 1..19, shuffle width valid and dividing raw_bytes, and for kFp8 /
// kInt8 a valid geometry of a quantizable dtype whose blocks are raw_bytes long, whose
// fingerprint is *geometry_fingerprint (when not null), and whose quantize parameters are
// valid for `raw` → `payload_out` (alignment, no overlap). InvalidArgument prefixed with
// `caller` ("EncodeRecord: ...") naming what is wrong.
absl::Status CheckEncodeOptions(const char* caller, const EncodeOptions& options, size_t raw_bytes,
                                const uint64_t* geometry_fingerprint, const void* raw,
                                const void* payload_out);

struct EncodedPayload {
  Codec codec = Codec::kNone;  // kNone: nothing was written to `out`
  size_t stored_bytes = 0;     // the payload's size under `codec` (raw_bytes under kNone)
};

// Encodes `raw` under options.codec into `out` when the result is at most `limit` bytes;
// otherwise (or for kNone, or when zstd fails) returns {kNone, raw_bytes} and leaves `out`'s
// contents unspecified (zstd may have written into it). `out` has room for `limit` bytes.
// REQUIRES: CheckEncodeOptions(options, raw_bytes, ..., raw, out) is OK; `raw` does not
// overlap `out`; limit < raw_bytes.
EncodedPayload EncodePayload(const void* raw, size_t raw_bytes, const EncodeOptions& options,
                             void* out, size_t limit);

// Decodes a payload of stored_bytes under `codec` into raw_out (raw_bytes). No checksum: the
// caller has verified the payload's integrity first. `geometry` is required by kFp8 / kInt8
// (its blocks raw_bytes long, its quantized size stored_bytes; the caller checks) and ignored
// otherwise. DataLoss ("<what> payload: ...") when zstd cannot decode it or it decodes to
// another size; InvalidArgument prefixed with `caller` when the quantize kernels refuse the
// buffers (alignment, overlap). Under kNone `payload` may equal `raw_out` (nothing to copy).
absl::Status DecodePayload(const char* caller, const char* what, Codec codec, uint8_t element_bytes,
                           const Geometry* geometry, const void* payload, size_t stored_bytes,
                           void* raw_out, size_t raw_bytes);

}  // namespace kvtier::record_codec

#endif  // KVTIER_TIERS_RECORD_CODEC_H_
