// fuzz/make_seeds.cc — writes the seed corpus of fuzz/corpus/ (checked in; rerun this after
// changing an encoder or a harness's input format):
//
//   build-fuzz/fuzz/fuzz_make_seeds fuzz/corpus
//
// Records and index values come from kvtier's own encoders (EncodeRecord, EncodeIndexEntry),
// so the fuzzers start from inputs that pass every check and mutate from there; traces, JSON
// and C API programs are small hand-written examples of each input format. Every seed is a
// few KiB at most.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/flags.h"
#include "remote/remote_record.h"
#include "tiers/disk_index.h"
#include "tiers/disk_record.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

// Little-endian appends, in the order the harnesses read (fuzz/fuzz_support.h).
struct Bytes {
  std::string s;
  Bytes& U8(uint8_t v) {
    s.push_back(static_cast<char>(v));
    return *this;
  }
  Bytes& U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  Bytes& U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  Bytes& Str(const std::string& v) {
    s += v;
    return *this;
  }
};

// fp16-like KV bytes: small values around zero, so zstd finds the exponent redundancy.
// `mantissa_mask` bounds the noise in the low bytes (0xff: as noisy as real activations,
// which only the shuffled codec compresses by a page).
std::string KvLikeBlock(size_t bytes, uint32_t seed, uint8_t mantissa_mask = 0xff) {
  std::string b(bytes, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i + 1 < bytes; i += 2) {
    x = x * 1664525u + 1013904223u;
    b[i] = static_cast<char>((x >> 24) & mantissa_mask);  // mantissa: noisy
    b[i + 1] = static_cast<char>(0x38 + ((x >> 8) & 3));  // exponent: nearly constant
  }
  return b;
}

// `geometry`: the quantized codecs' (the block's shape; its fingerprint goes in the header).
std::string Record(const std::string& raw, Codec codec, size_t element_bytes,
                   std::optional<Geometry> geometry = std::nullopt) {
  RecordHeader h;
  h.key = BlockKey{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  h.ns = "tenant-a";
  h.geometry_fingerprint = geometry.has_value() ? geometry->Fingerprint() : 0x5eed;
  h.region = 3;
  h.generation = 7;
  h.created_unix_ms = 1700000000000ULL;
  EncodeOptions o;
  o.codec = codec;
  o.element_bytes = element_bytes;
  o.geometry = geometry;
  const size_t capacity = MaxRecordSize(raw.size());
  std::unique_ptr<uint8_t, decltype(&std::free)> out(
      static_cast<uint8_t*>(std::aligned_alloc(kRecordAlignment, capacity)), &std::free);
  absl::StatusOr<size_t> n = EncodeRecord(h, raw.data(), raw.size(), o, out.get(), capacity);
  if (!n.ok()) {
    std::fprintf(stderr, "EncodeRecord: %s\n", n.status().ToString().c_str());
    std::exit(1);
  }
  return std::string(reinterpret_cast<const char*>(out.get()), *n);
}

void DiskRecordSeeds(const fs::path& dir) {
  const std::string small = KvLikeBlock(512, 1);
  const std::string large = KvLikeBlock(12288, 2);
  const std::string compressible = KvLikeBlock(12288, 3, 0x0f);
  // Mode 0: whole records, as the encoder writes them.
  Write(dir, "verbatim-none", std::string(1, '\0') + Record(small, Codec::kNone, 2));
  Write(dir, "verbatim-zstd", std::string(1, '\0') + Record(compressible, Codec::kZstd, 2));
  Write(dir, "verbatim-shuffle", std::string(1, '\0') + Record(large, Codec::kZstdShuffle, 2));
  // Modes 1 and 2: the assigned header bytes, then the stored payload.
  for (const auto& [name, codec] :
       {std::pair{"zstd", Codec::kZstd}, std::pair{"shuffle", Codec::kZstdShuffle}}) {
    const std::string r = Record(codec == Codec::kZstd ? compressible : large, codec, 2);
    if (r[12] != static_cast<char>(codec)) {
      std::fprintf(stderr, "seed block did not compress under codec %d\n", static_cast<int>(codec));
      std::exit(1);
    }
    const uint32_t stored = static_cast<uint8_t>(r[44]) | static_cast<uint8_t>(r[45]) << 8 |
                            static_cast<uint8_t>(r[46]) << 16 |
                            static_cast<uint8_t>(r[47]) << 24;
    const std::string compact = r.substr(0, 208) + r.substr(kRecordHeaderBytes, stored);
    Write(dir, std::string("fixed-header-") + name, std::string(1, '\1') + compact);
    Write(dir, std::string("fixed-both-") + name, std::string(1, '\2') + compact);
  }
  // The lossy codecs: 12 KiB fp16 blocks of one layer, one head, one token (head_dim 3072),
  // which quantize to two pages; their header carries the geometry (bytes 208..227).
  const Geometry quantized{1, 1, 3072, DType::kFloat16, 1};
  for (const auto& [name, codec] :
       {std::pair{"fp8", Codec::kFp8}, std::pair{"int8", Codec::kInt8}}) {
    const std::string r = Record(large, codec, 0, quantized);
    if (r[12] != static_cast<char>(codec)) {
      std::fprintf(stderr, "seed block was not quantized under codec %s\n", name);
      std::exit(1);
    }
    Write(dir, std::string("verbatim-") + name, std::string(1, '\0') + r);
    const uint32_t stored = static_cast<uint8_t>(r[44]) | static_cast<uint8_t>(r[45]) << 8 |
                            static_cast<uint8_t>(r[46]) << 16 |
                            static_cast<uint8_t>(r[47]) << 24;
    const std::string compact = r.substr(0, 228) + r.substr(kRecordHeaderBytes, stored);
    Write(dir, std::string("fixed-header-") + name, std::string(1, '\1') + compact);
    Write(dir, std::string("fixed-both-") + name, std::string(1, '\2') + compact);
  }
  // Mode 3: codec, level, element width, key, geometry, region, generation, created, ns,
  // corruption offset and xor, then the block.
  for (uint8_t codec = 0; codec < 3; ++codec) {
    Bytes b;
    b.U8(3).U8(codec).U8(3).U8(2).U64(1).U64(2).U64(3).U32(4).U64(5).U64(6).U8(3).Str("ns1");
    b.U32(4200).U8(0x40).Str(KvLikeBlock(codec == 0 ? 300 : 9000, codec));
    Write(dir, "encode-codec" + std::to_string(codec), b.s);
  }
  // ... and for fp8 / int8, after the codec: dtype (1 = fp16), token and head choices (0: one
  // each), "the header's fingerprint is the geometry's"; a 12 KiB block (head_dim 3072).
  for (uint8_t codec = 3; codec < 5; ++codec) {
    Bytes b;
    b.U8(3).U8(codec).U8(1).U8(0).U8(0).U8(1);
    b.U8(3).U8(2).U64(1).U64(2).U64(3).U32(4).U64(5).U64(6).U8(3).Str("ns1");
    b.U32(4200).U8(0x40).Str(KvLikeBlock(12288, codec));
    Write(dir, "encode-codec" + std::to_string(codec), b.s);
  }
  // Format version 2: records of extended geometries (an MLA latent of 3072 = 3008 + 64 rope,
  // one token; a tensor-parallel shard, heads [1, 2) of 3), whose headers carry the whole
  // geometry (bytes 208..243) under every codec; verbatim and with the checksums fixed up.
  Geometry mla{1, 1, 3072, DType::kFloat16, 2};
  mla.kind = KvKind::kLatent;
  mla.rope_dim = 64;
  Geometry shard{1, 1, 3072, DType::kFloat16, 1};
  shard.kv_head_begin = 1;
  shard.total_kv_heads = 3;
  for (const auto& [name, g, codec] :
       {std::tuple{"mla-shuffle", mla, Codec::kZstdShuffle},
        std::tuple{"mla-int8", mla, Codec::kInt8}, std::tuple{"shard-none", shard, Codec::kNone}}) {
    const std::string r = Record(large, codec, codec == Codec::kZstdShuffle ? 2 : 0, g);
    if (r[8] != 2) {
      std::fprintf(stderr, "seed record %s is not format version 2\n", name);
      std::exit(1);
    }
    Write(dir, std::string("verbatim-v2-") + name, std::string(1, '\0') + r);
    const uint32_t stored = static_cast<uint8_t>(r[44]) | static_cast<uint8_t>(r[45]) << 8 |
                            static_cast<uint8_t>(r[46]) << 16 | static_cast<uint8_t>(r[47]) << 24;
    const std::string compact = r.substr(0, 244) + r.substr(kRecordHeaderBytes, stored);
    Write(dir, std::string("fixed-both-v2-") + name, std::string(1, '\2') + compact);
  }
  // Mode 5: as mode 3 after the codec, an extended geometry: MLA or shard, dtype (0: fp16),
  // token and head choices, rope, shard begin and extra heads, "the fingerprint is the
  // geometry's"; a 12 KiB block.
  for (uint8_t codec = 0; codec < 5; ++codec) {
    Bytes b;
    b.U8(5).U8(codec).U8(codec % 2).U8(0).U8(1).U8(0).U8(64).U8(1).U8(1).U8(1);
    b.U8(3).U8(2).U64(1).U64(2).U64(3).U32(4).U64(5).U64(6).U8(3).Str("ns1");
    b.U32(4200).U8(0x40).Str(KvLikeBlock(12288, codec));
    Write(dir, "encode-v2-codec" + std::to_string(codec), b.s);
  }
  // Mode 4: a header given field by field, then a payload.
  Bytes d;
  d.U8(4).U8(1).U8(0).U8(0).Str(std::string("\x00\x10", 2)).U8(0).Str(std::string("\x00\x02", 2));
  d.U8(1).U8(0).U64(0).Str(std::string(512, 'p'));
  Write(dir, "decode-any-header", d.s);
}

// fuzz/fuzz_remote_record.cc: real remote values (its kGeometries[0], key, namespace and
// model), verbatim (mode 0) and with checksums fixed up (mode 1), and encode programs (mode 2).
void RemoteRecordSeeds(const fs::path& dir) {
  const Geometry g{1, 2, 64, DType::kFloat16, 16};  // 8 KiB blocks
  const BlockKey key{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  const std::string block = KvLikeBlock(g.block_bytes(), 4, 0x0f);
  for (uint8_t c = 0; c < kNumCodecs; ++c) {
    const auto codec = static_cast<Codec>(c);
    for (bool mac : {false, true}) {
      EncodeOptions o;
      o.codec = codec;
      o.geometry = g;
      std::string encoded(remote::MaxRemotePayload(block.size()), '\0');
      Codec used = Codec::kNone;
      absl::StatusOr<size_t> n = remote::EncodeRemotePayload(
          block.data(), block.size(), o, encoded.data(), encoded.size(), &used);
      if (!n.ok() || used != codec) {
        std::fprintf(stderr, "remote seed: codec %s not kept\n", CodecName(codec));
        std::exit(1);
      }
      const std::string payload = used == Codec::kNone ? block : encoded.substr(0, *n);
      remote::RemoteHeader h;
      h.key = key;
      h.ns = "tenant-a";
      h.model_id = remote::RemoteModelId("fuzz-model", g.Fingerprint());
      h.geometry_fingerprint = g.Fingerprint();
      h.codec = used;
      h.element_bytes = used == Codec::kZstdShuffle ? 2 : 0;
      h.raw_bytes = static_cast<uint32_t>(block.size());
      h.stored_bytes = static_cast<uint32_t>(*n);
      h.created_unix_ms = 1700000000000ULL;
      std::string value(remote::kRemoteHeaderBytes, '\0');
      if (!remote::WriteRemoteHeader(h, payload.data(), mac ? "fuzz-secret" : "", value.data())
               .ok()) {
        std::fprintf(stderr, "remote seed: WriteRemoteHeader failed\n");
        std::exit(1);
      }
      value += payload;
      const std::string name = std::string(CodecName(codec)) + (mac ? "-mac" : "");
      // opts: bit 0 the reader expects the MAC, bit 1 also reads against the header's fields.
      const std::string opts(1, static_cast<char>((mac ? 1 : 0) | 2));
      Write(dir, "verbatim-" + name, std::string(1, '\0') + opts + std::string(1, '\0') + value);
      Write(dir, "fixed-" + name, std::string(1, '\1') + opts + std::string(1, '\0') + value);
    }
    // Mode 2: codec, geometry, level, width, MAC, namespace, key, corruption, block.
    Bytes b;
    b.U8(2).U8(c).U8(0).U8(3).U8(2).U8(1).U8(8).Str("tenant-a").U64(key.lo).U64(key.hi);
    b.U32(300).U8(0x40).Str(block);
    Write(dir, std::string("encode-") + CodecName(codec), b.s);
  }
}

void IndexValueSeeds(const fs::path& dir) {
  IndexEntry e;
  e.region = 2;
  e.offset = 8192;
  e.stored_bytes = 5000;
  e.record_bytes = static_cast<uint32_t>(RecordSize(e.stored_bytes));
  e.generation = 9;
  e.codec = Codec::kZstdShuffle;
  e.payload_checksum = 0xabcdef;
  e.created_unix_ms = 1700000000000ULL;
  e.ns = "default";
  Write(dir, "entry", std::string(1, '\0') + EncodeIndexEntry(e));
  e.codec = Codec::kNone;
  e.stored_bytes = 4096;
  e.record_bytes = 8192;
  e.ns = std::string(128, 'n');
  Write(dir, "entry-long-ns", std::string(1, '\0') + EncodeIndexEntry(e));
  Write(dir, "u64", std::string(1, '\0') + EncodeU64(42));
  Write(dir, "block-key", std::string(1, '\0') + BlockIndexKey(BlockKey{1, 2}));
  Bytes b;
  b.U8(1).U32(5).U64(4096 * 3).U64(11).U8(1).U32(777).U64(0x1234).U64(99).U8(4).Str("tnt-").U64(7).U64(8);
  Write(dir, "encode", b.s);
}

void JsonSeeds(const fs::path& dir) {
  const char* docs[] = {
      R"({"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47]})",
      R"({"a": [1, -2.5e+3, true, false, null, "s\u00e9\ud83d\ude00\n"], "b": {"c": {}}})",
      R"([[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]])",
      R"({"dtype": "F16", "shape": [32, 8, 128], "data_offsets": [0, 65536]})",
      R"("\"\\\/\b\f\n\r\t")",
      "18446744073709551615",
  };
  int i = 0;
  for (const char* doc : docs) Write(dir, "doc" + std::to_string(i++), std::string(1, '@') + doc);
}

void TraceSeeds(const fs::path& mooncake, const fs::path& csv) {
  Write(mooncake, "mooncake",
        "{\"timestamp\": 0, \"input_length\": 1024, \"output_length\": 12, \"hash_ids\": [0, 1]}\n"
        "{\"timestamp\": 27482, \"input_length\": 6955, \"output_length\": 52, "
        "\"hash_ids\": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]}\n"
        "\n"
        "{\"timestamp\": 30000.5, \"output_length\": 0, \"hash_ids\": [18446744073709551615], "
        "\"tenant\": \"bob\", \"extra\": {\"x\": [1, 2]}}\n");
  Write(mooncake, "mooncake-crlf",
        "{\"timestamp\": 1, \"output_length\": 3, \"hash_ids\": [5]}\r\n"
        "  {\"timestamp\": 2, \"output_length\": 3, \"hash_ids\": [5, 6], \"tenant\": \"a,b\"}\r\n");
  Write(csv, "csv",
        "time_s,tenant,output_tokens,blocks\n"
        "0.125,alice,52,46 47 48\n"
        "\n"
        "1e-3,,0,18446744073709551615\n"
        "2.5,bob,4294967295,1 2 3 4 5 6 7 8\n");
  Write(csv, "csv-crlf", "time_s,tenant,output_tokens,blocks\r\n0,t,1,1\r\n0.30000000000000004,t,2,1 2\r\n");
}

// C API programs, in the order fuzz/fuzz_c_api.cc reads them.
// Engine: layers, heads, dim, block_tokens (each minus its minimum), host and GPU blocks,
// setter count.
void Open(Bytes& b, uint8_t host_blocks, uint8_t gpu_blocks) {
  b.U8(0).U8(1).U8(3).U8(3).U8(host_blocks - 1).U8(gpu_blocks).U8(0);
}
// Tokens(): count (U32 % 41), alphabet (U8 % 4 + 1), then the tokens.
void Tokens(Bytes& b, uint32_t n, uint8_t alphabet) {
  b.U32(n).U8(alphabet - 1);
  for (uint32_t i = 0; i < n; ++i) b.U8(static_cast<uint8_t>(i % alphabet));
}
// Keys(): count (U32 % 7), then each key: U8 not 0 mod 4 picks a known key, U32 says which.
void KnownKeys(Bytes& b, uint32_t n, uint32_t first_known) {
  b.U32(n);
  for (uint32_t i = 0; i < n; ++i) b.U8(1).U32(first_known + i);
}

void CApiSeeds(const fs::path& dir) {
  // store_host (op 6) of blocks 0..1 of an 8-token prompt in "a", then load_host (op 8) of
  // them, then a managed GPU-tier load and stats.
  Bytes p;
  Open(p, 8, 2);
  p.U8(6).U8(1);
  Tokens(p, 8, 3);
  p.U32(0).U32(2).U8(3);  // first 0, 2 blocks, no mangling
  p.U8(8).U8(1);
  KnownKeys(p, 2, 0);
  p.U8(3);  // no mangling
  p.U8(12).U8(1);
  KnownKeys(p, 2, 0);
  p.U8(1).U8(1).U8(1);  // default lease, layerwise, release
  p.U8(17).U8(1).U8(1).U8(1).U8(1);
  Write(dir, "store-load-host", p.s);

  // Device buffers: store (op 10) from a fresh buffer, load (op 11) into one, layerwise.
  Bytes d;
  Open(d, 4, 0);
  d.U8(10).U8(2);
  Tokens(d, 16, 2);
  d.U32(1).U32(3);                      // first 1, 3 blocks
  d.U8(1).U8(1).U8(1).U8(1).U8(1);      // exact block pointers, an out handle, wait
  d.U8(11).U8(2);
  KnownKeys(d, 3, 1);  // blocks 1..3 of the prompt
  d.U8(1).U8(1).U8(1).U8(1).U8(1).U8(0);  // exact pointers, layerwise, non-NULL blocks
  d.U8(16).U8(1).U32(0).U8(6);          // destroy a handle
  d.U8(18).U8(0);                       // close: refused while a handle lives
  Write(dir, "store-load-device", d.s);

  // Bad arguments: options setters with junk, then a NULL-engine sweep.
  Bytes b;
  b.U8(0).U8(0).U8(0).U8(0).U8(2).U8(0).U8(3);
  b.U8(0).U8(1).U8(1).U32(0).U32(7).U32(0).U8(4).U32(9);  // geometry via the scratch options
  b.U8(4).U8(1).U8(1).U8(2).U64(0);                       // set_disk, capacity 0
  b.U8(9).U8(1).U8(1).U8(3).U8(4).U8(5).U8(0).U8(1);      // invalid namespace names
  b.U8(19).U8(5).U8(15).U8(9).U8(13).U8(4);
  Write(dir, "bad-arguments", b.s);
}

// Edit programs of fuzz/fuzz_disk_recover.cc: index edits (count, then each edit), then data
// file patches (count, then each patch).
void DiskRecoverSeeds(const fs::path& dir) {
  Write(dir, "no-edits", std::string(2, '\0'));
  // Block 1's entry with its offset at 2^64 - 4096: offset + record_bytes wraps around.
  Bytes wrap;
  wrap.U8(1).U8(0).U8(1).U8(1).U8(1).U8(1).U8(1).U8(0).U8(0).U8(0);
  Write(dir, "offset-wraps", wrap.s);
  // The same in region 1.
  Bytes wrap1;
  wrap1.U8(1).U8(0).U8(1).U8(1).U8(1).U8(3).U8(1).U8(0).U8(0).U8(0).U8(1).U8(0);
  Write(dir, "offset-wraps-region1", wrap1.s);
  // Region 0's generation moved on (its records are stale), then 8 bytes of block 0's
  // payload overwritten.
  Bytes gen;
  gen.U8(1).U8(1).U8(0).U8(1).U8(0).U8(2).U8(1).U32(4096 + 100).U8(8).Str("garbage!");
  Write(dir, "generation-and-patch", gen.s);
  // A raw value under a block key and a malformed region key.
  Bytes raw;
  raw.U8(2).U8(4).U8(1).U8(9).Str("\x01junk!!!").U8(3).U8(0).U8(3).Str("r\x01\x02").U8(2).Str("xx");
  raw.U8(0);
  Write(dir, "raw-values", raw.s);
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) {
  std::string corpus;
  CLI::App app("Writes the fuzzers' seed corpus from kvtier's own encoders", "fuzz_make_seeds");
  app.add_option("CORPUS_DIR", corpus, "the corpus directory (fuzz/corpus)")->required();
  if (std::optional<int> exit_code = kvtier::flags::Parse(app, argc, argv)) return *exit_code;
  const std::filesystem::path root = corpus;
  kvtier::DiskRecordSeeds(root / "fuzz_disk_record");
  kvtier::RemoteRecordSeeds(root / "fuzz_remote_record");
  kvtier::IndexValueSeeds(root / "fuzz_index_value");
  kvtier::JsonSeeds(root / "fuzz_json");
  kvtier::TraceSeeds(root / "fuzz_trace_mooncake", root / "fuzz_trace_csv");
  kvtier::CApiSeeds(root / "fuzz_c_api");
  kvtier::DiskRecoverSeeds(root / "fuzz_disk_recover");
  return 0;
}
