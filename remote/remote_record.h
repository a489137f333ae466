// remote/remote_record.h — one block as stored in the remote tier: a Redis key and a
// self-verifying value.
//
// Key (one per block, no hash tag, so a namespace's blocks spread over every master):
//   kvtier:1:<namespace>:<model id, 16 hex>:<block key, 32 hex>
// The namespace is in the key so ACL key patterns (~kvtier:1:<ns>:*) confine a tenant and a
// SCAN finds a namespace's blocks; the model id (XXH3-64 of the model fingerprint and the
// geometry fingerprint) lets `kvtier remote inspect` group blocks by model.
//
// Value: [ header: kRemoteHeaderBytes ][ payload: stored_bytes ]. The header carries magic,
// format version, the block key, the namespace, the model id, the geometry fingerprint, the
// codec, raw and stored sizes, the creation time, the payload checksum (XXH3-64), an optional
// HMAC-SHA256 (over the header's other bytes and the payload, with the namespace's secret),
// and a checksum of the header itself. Under Codec::kNone the payload is the raw block, so a
// value can be sent from the block's memory (writev: header, block) and received into it
// (scatter: header buffer, block) with no copy. Redis loses and mixes data silently (eviction,
// asynchronous replication, failover, a peer that can write), so every read is verified
// against what the reader expects: anything that does not match is a miss of a named kind,
// never wrong bytes.
//
// Header layout, format version 1 (docs/remote-format.md; all integers little-endian; a value
// is exactly kRemoteHeaderBytes + stored_bytes long, no padding):
//     0 u64 magic            14 u8  flags (bit 0: MAC)   40 u64 geometry fingerprint
//     8 u32 format version   15 u8  namespace bytes      48 u32 raw_bytes
//    12 u8  codec            16 u64 key hi               52 u32 stored_bytes
//    13 u8  element_bytes    24 u64 key lo               56 u64 created_unix_ms
//                            32 u64 model id             64 u64 payload XXH3-64
//    72 namespace (128 bytes, zero-padded)   200 reserved (16 zero bytes)
//   216 HMAC-SHA256 (32 bytes; over bytes [0, 216) and the payload; zero without the flag)
//   248 u64 XXH3-64 of bytes [0, 248)
// A codec is kept only when it saves at least 1/16 of the block (stored_bytes <= raw_bytes -
// ceil(raw_bytes / 16)); every byte the layout does not assign is zero.
//
// Pure functions, no I/O; safe on any thread.

#ifndef KVTIER_REMOTE_REMOTE_RECORD_H_
#define KVTIER_REMOTE_REMOTE_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvtier/block_key.h"
#include "kvtier/geometry.h"
#include "tiers/disk_record.h"  // Codec, EncodeOptions

namespace kvtier::remote {

inline constexpr uint64_t kRemoteMagic = 0x31304d4552545654ULL;  // "TVTREM01" little-endian
inline constexpr uint32_t kRemoteFormatVersion = 1;
inline constexpr size_t kRemoteHeaderBytes = 256;

// XXH3-64 of (model fingerprint, geometry fingerprint): the model id of keys and headers.
uint64_t RemoteModelId(absl::string_view model_fingerprint, uint64_t geometry_fingerprint);
// "kvtier:1:<ns>:<model id hex>:<key hex>".
std::string RemoteKey(absl::string_view ns, uint64_t model_id, const BlockKey& key);
// "kvtier:1:<ns>:*" (every block of a namespace; all models).
std::string RemoteNamespacePattern(absl::string_view ns);
// Parses a key RemoteKey made. InvalidArgument for anything else.
struct ParsedRemoteKey {
  std::string ns;
  uint64_t model_id = 0;
  BlockKey key;
};
absl::StatusOr<ParsedRemoteKey> ParseRemoteKey(absl::string_view redis_key);

struct RemoteHeader {
  BlockKey key;
  std::string ns;  // at most 128 bytes
  uint64_t model_id = 0;
  uint64_t geometry_fingerprint = 0;
  Codec codec = Codec::kNone;
  uint8_t element_bytes = 0;   // kZstdShuffle's granularity; else 0
  uint32_t raw_bytes = 0;
  uint32_t stored_bytes = 0;
  uint64_t payload_checksum = 0;  // XXH3-64 of the payload
  uint64_t created_unix_ms = 0;
  bool has_mac = false;
};

// Encodes `raw` (raw_bytes) under options.codec into `out` (capacity out_capacity, at least
// MaxRemotePayload(raw_bytes)) and returns the payload size; *codec_used says which codec was
// applied (kNone when the codec would not save at least 1/16 of the block, or for kNone
// itself, in which case nothing is written and the payload is `raw`). Quantized codecs need
// options.geometry (as EncodeRecord). InvalidArgument naming what is wrong.
size_t MaxRemotePayload(size_t raw_bytes);
absl::StatusOr<size_t> EncodeRemotePayload(const void* raw, size_t raw_bytes,
                                           const EncodeOptions& options, void* out,
                                           size_t out_capacity, Codec* codec_used);

// Fills the kRemoteHeaderBytes at `out` for `payload` (header.codec, stored_bytes and
// raw_bytes as encoded; payload_checksum and has_mac are computed here). With a non-empty
// `mac_secret` the header carries HMAC-SHA256(secret, header bytes before the MAC, payload).
// InvalidArgument for a namespace longer than 128 bytes or sizes that do not fit.
absl::Status WriteRemoteHeader(const RemoteHeader& header, const void* payload,
                               absl::string_view mac_secret, void* out);

// Why a value is not the block the reader asked for.
enum class RemoteVerdict : uint8_t {
  kOk = 0,
  kCorrupt,         // bad magic / version / header checksum / sizes / payload checksum
  kWrongKey,        // a valid record of another block (values swapped between keys)
  kWrongNamespace,  // a valid record of another namespace under this key
  kWrongModel,      // another model id or geometry fingerprint
  kBadMac,          // the MAC does not verify, or a MAC was expected and is missing
  kCount
};
const char* RemoteVerdictName(RemoteVerdict verdict);

struct RemoteExpect {
  BlockKey key;
  absl::string_view ns;
  uint64_t model_id = 0;
  uint64_t geometry_fingerprint = 0;
  uint32_t raw_bytes = 0;
  absl::string_view mac_secret;  // empty: no MAC expected (a MAC present is ignored)
};

// Parses and checks the header at `header` (size bytes, at least kRemoteHeaderBytes) against
// `expect` (key, namespace, model, geometry, raw size). The header alone: kCorrupt for a
// damaged header, a kWrong* verdict for a valid one of another block.
RemoteVerdict CheckRemoteHeader(const void* header, size_t size, const RemoteExpect& expect,
                                RemoteHeader* parsed);
// Verifies the payload (checksum, then MAC when expect.mac_secret is set) of a header that
// CheckRemoteHeader accepted, and decodes it into raw_out (raw_bytes; under kNone `payload`
// may equal raw_out: then only verified). kCorrupt / kBadMac otherwise; raw_out's contents are
// then unspecified (the caller must zero or discard them). payload_size is the value's length
// less kRemoteHeaderBytes: anything but header.stored_bytes is kCorrupt (truncated, or not
// written by this format). Under kFp8 / kInt8, a `geometry` whose fingerprint is not the
// header's (or whose blocks are not raw_bytes long) is kWrongModel.
RemoteVerdict VerifyRemotePayload(const void* header_bytes, const RemoteHeader& header,
                                  const void* payload, size_t payload_size,
                                  const RemoteExpect& expect, const Geometry& geometry,
                                  void* raw_out);

}  // namespace kvtier::remote

#endif  // KVTIER_REMOTE_REMOTE_RECORD_H_
