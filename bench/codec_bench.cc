// bench codec — what the disk tier's record codecs cost on the CPU, on one thread and on all
// of them: the encode (checksum, zstd, quantization) a write runs on the codec threads and the
// verify + decode a read runs there, in GB/s of block bytes (what a store hands in and a load
// gets back).
//
//   bench/run codec [--threads=N] [--seconds=S] [--blocks=N] [--codecs=none,zstd,...]
//                   [--layers=16] [--kv-heads=8] [--head-dim=128] [--block-tokens=16]
//
// For each codec, `blocks` distinct blocks (fp16 N(0, 1), as bench/run disk writes) are encoded
// into records with EncodeRecord, then decoded with ParseRecordHeader + DecodeRecordPayload —
// exactly what DiskTier::Encode and DiskTier::VerifyRead run — for `seconds` per measurement,
// first on one thread, then on `threads` threads each working its own blocks (the disk tier's
// codec pool: DiskTierOptions::codec_threads, 0 = min(4, hardware threads)). Lossless codecs
// must give back every byte (else the run fails).
//
// Ceiling: memcpy of the same block bytes, on one thread and on `threads` threads, in the same
// run (a codec can at best move its bytes once). figure = zstd-shuffle decode GB/s on all
// threads, the heaviest lossless read path; ratio = figure / memcpy on all threads.
// `scaling` per codec = all-threads GB/s / one-thread GB/s (ideal: the thread count, where the
// machine has that many free cores).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "common/flags.h"
#include "kernels/numeric.h"
#include "kvtier/geometry.h"
#include "tiers/disk_record.h"

namespace kvtier::bench {
namespace {

struct Args {
  int threads = 0;  // 0: min(4, hardware threads), the disk tier's default
  double seconds = 1.0;
  int blocks = 8;
  std::string codecs = "none,zstd,zstd-shuffle,fp8,int8";
  Geometry geometry{16, 8, 128, DType::kFloat16, 16};
};

// Aligned, owned bytes (records are written with O_DIRECT: EncodeRecord wants 4096 alignment).
struct Buffer {
  explicit Buffer(size_t n) : size(n) {
    data = static_cast<char*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096));
    if (data == nullptr) Die("out of memory");
    std::memset(data, 0, n);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : data(o.data), size(o.size) { o.data = nullptr; }
  char* data;
  size_t size;
};

// One worker's blocks, records and decode targets.
struct Lane {
  std::vector<Buffer> raw, record, out;
  std::vector<size_t> record_bytes;
};

Lane MakeLane(const Geometry& g, int blocks, uint64_t seed) {
  Lane lane;
  const size_t bytes = g.block_bytes();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int b = 0; b < blocks; ++b) {
    lane.raw.emplace_back(bytes);
    uint16_t* h = reinterpret_cast<uint16_t*>(lane.raw.back().data);
    for (size_t i = 0; i < bytes / 2; ++i) h[i] = numeric::FloatToHalfBits(normal(rng));
    lane.record.emplace_back(MaxRecordSize(bytes));
    lane.out.emplace_back(bytes);
    lane.record_bytes.push_back(0);
  }
  return lane;
}

EncodeOptions Options(const Geometry& g, Codec codec) {
  EncodeOptions eo;
  eo.codec = codec;
  eo.element_bytes = g.element_bytes();
  eo.geometry = g;
  return eo;
}

RecordHeader Header(const Geometry& g, int b) {
  RecordHeader h;
  h.key = BlockKey{static_cast<uint64_t>(b) + 1, 7};
  h.ns = "default";
  h.geometry_fingerprint = g.Fingerprint();
  return h;
}

// What each lane does `op` to, block by block, until `seconds` have passed on every lane:
// GB/s of block bytes over all lanes.
template <typename Op>
double Run(std::vector<Lane>& lanes, size_t block_bytes, double seconds, Op op) {
  std::atomic<bool> stop{false};
  std::vector<uint64_t> done(lanes.size(), 0);
  std::vector<std::thread> workers;
  const double start = Now();
  for (size_t t = 0; t < lanes.size(); ++t) {
    workers.emplace_back([&, t] {
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (size_t b = 0; b < lanes[t].raw.size(); ++b) op(lanes[t], b);
        n += lanes[t].raw.size();
      }
      done[t] = n;
    });
  }
  while (Now() - start < seconds) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop = true;
  for (std::thread& w : workers) w.join();
  const double elapsed = Now() - start;
  uint64_t blocks = 0;
  for (uint64_t n : done) blocks += n;
  return static_cast<double>(blocks) * block_bytes / elapsed / 1e9;
}

struct CodecResult {
  double encode_1 = 0, encode_all = 0, decode_1 = 0, decode_all = 0, stored_ratio = 0;
};

CodecResult Measure(const Args& a, Codec codec, int threads) {
  const Geometry& g = a.geometry;
  const size_t bytes = g.block_bytes();
  const EncodeOptions eo = Options(g, codec);
  auto encode = [&](Lane& lane, size_t b) {
    absl::StatusOr<size_t> n = EncodeRecord(Header(g, static_cast<int>(b)), lane.raw[b].data, bytes,
                                            eo, lane.record[b].data, lane.record[b].size);
    if (!n.ok()) Die(absl::StrFormat("encode (%s): %s", CodecName(codec), n.status().ToString()));
    lane.record_bytes[b] = *n;
  };
  auto decode = [&](Lane& lane, size_t b) {
    absl::StatusOr<RecordHeader> h = ParseRecordHeader(lane.record[b].data, lane.record_bytes[b]);
    if (!h.ok()) Die(absl::StrFormat("parse (%s): %s", CodecName(codec), h.status().ToString()));
    absl::Status s = DecodeRecordPayload(*h, lane.record[b].data + kRecordHeaderBytes,
                                         lane.record_bytes[b] - kRecordHeaderBytes,
                                         lane.out[b].data, lane.out[b].size);
    if (!s.ok()) Die(absl::StrFormat("decode (%s): %s", CodecName(codec), s.ToString()));
  };
  CodecResult r;
  for (int pass = 0; pass < 2; ++pass) {
    const int n = pass == 0 ? 1 : threads;
    std::vector<Lane> lanes;
    for (int t = 0; t < n; ++t) lanes.push_back(MakeLane(g, a.blocks, 1000 + t));
    const double enc = Run(lanes, bytes, a.seconds, encode);
    const double dec = Run(lanes, bytes, a.seconds, decode);
    (pass == 0 ? r.encode_1 : r.encode_all) = enc;
    (pass == 0 ? r.decode_1 : r.decode_all) = dec;
    if (pass == 0) {
      size_t stored = 0;
      for (size_t b = 0; b < lanes[0].raw.size(); ++b) {
        stored += lanes[0].record_bytes[b];
        if (!IsQuantizedCodec(codec) &&
            std::memcmp(lanes[0].raw[b].data, lanes[0].out[b].data, bytes) != 0) {
          Die(absl::StrFormat("codec %s returned other bytes", CodecName(codec)));
        }
      }
      r.stored_ratio = static_cast<double>(stored) / (bytes * lanes[0].raw.size());
    }
  }
  return r;
}

double MemcpyOnThreads(const Args& a, int threads) {
  const size_t bytes = a.geometry.block_bytes();
  std::vector<Lane> lanes;
  for (int t = 0; t < threads; ++t) lanes.push_back(MakeLane(a.geometry, a.blocks, 1000 + t));
  return Run(lanes, bytes, a.seconds, [&](Lane& lane, size_t b) {
    std::memcpy(lane.out[b].data, lane.raw[b].data, bytes);
    asm volatile("" : : "r"(lane.out[b].data) : "memory");
  });
}

int Main(int argc, char** argv) {
  Args a;
  CLI::App app{"bench codec: record codec encode/decode GB/s, one thread and all, vs memcpy",
               "bench/run codec"};
  app.add_option("--threads", a.threads, "threads for the all-threads figures (0: min(4, hw))")
      ->check(CLI::Range(0, 64));
  app.add_option("--seconds", a.seconds, "seconds per measurement")->check(CLI::Range(0.05, 60.0));
  app.add_option("--blocks", a.blocks, "distinct blocks per thread")->check(CLI::Range(1, 256));
  app.add_option("--codecs", a.codecs, "comma-separated codecs to measure");
  AddGeometryShape(app, &a.geometry);
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  if (absl::Status s = a.geometry.Validate(); !s.ok()) Die(s.ToString());
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = a.threads > 0 ? a.threads : std::min(4, hw);
  std::vector<Codec> codecs;
  for (absl::string_view name : absl::StrSplit(a.codecs, ',', absl::SkipEmpty())) {
    absl::StatusOr<Codec> c = ParseCodec(name);
    if (!c.ok()) Die(absl::StrFormat("--codecs: %s", c.status().message()));
    if (absl::Status s = CheckCodecDType(*c, a.geometry.dtype); !s.ok()) Die(s.ToString());
    codecs.push_back(*c);
  }
  if (codecs.empty()) Die("--codecs names no codec");

  std::fprintf(stderr,
               "codec bench: %zu B blocks (fp16 N(0,1)), %d blocks per thread, 1 and %d threads "
               "(%d hardware threads), %.2f s per measurement\n",
               a.geometry.block_bytes(), a.blocks, threads, hw, a.seconds);
  const double memcpy_1 = MemcpyOnThreads(a, 1);
  const double memcpy_all = MemcpyOnThreads(a, threads);
  std::fprintf(stderr, "%-13s %9s %9s %9s %9s %8s %8s\n", "codec", "enc 1t", "enc all", "dec 1t",
               "dec all", "scaling", "stored");
  std::fprintf(stderr, "%-13s %9.2f %9.2f %9.2f %9.2f %8.2f %8s\n", "memcpy", memcpy_1, memcpy_all,
               memcpy_1, memcpy_all, memcpy_all / memcpy_1, "-");
  JsonLine extra;
  double figure = 0;
  bool have_figure = false;
  for (Codec c : codecs) {
    const CodecResult r = Measure(a, c, threads);
    const std::string n = CodecName(c);
    std::fprintf(stderr, "%-13s %9.2f %9.2f %9.2f %9.2f %8.2f %8.3f\n", n.c_str(), r.encode_1,
                 r.encode_all, r.decode_1, r.decode_all, r.decode_all / r.decode_1, r.stored_ratio);
    std::string key = n;
    std::replace(key.begin(), key.end(), '-', '_');
    extra.Num("encode_gbps_1t_" + key, r.encode_1)
        .Num("encode_gbps_all_" + key, r.encode_all)
        .Num("decode_gbps_1t_" + key, r.decode_1)
        .Num("decode_gbps_all_" + key, r.decode_all)
        .Num("scaling_encode_" + key, r.encode_all / r.encode_1)
        .Num("scaling_decode_" + key, r.decode_all / r.decode_1)
        .Num("stored_ratio_" + key, r.stored_ratio);
    if (c == Codec::kZstdShuffle) {
      figure = r.decode_all;
      have_figure = true;
    }
  }
  if (!have_figure) figure = NAN;  // zstd-shuffle not measured: no figure
  JsonLine line;
  line.Str("bench", "codec")
      .Num("figure", figure)
      .Str("unit", "GB/s")
      .Num("ceiling", memcpy_all)
      .Str("ceiling_source",
           absl::StrFormat("memcpy of the same blocks on %d threads, same run", threads))
      .Num("ratio", figure / memcpy_all)
      .Num("threads", threads)
      .Num("hardware_threads", hw)
      .Str("block_bytes", std::to_string(a.geometry.block_bytes()))
      .Num("memcpy_gbps_1t", memcpy_1)
      .Num("memcpy_gbps_all", memcpy_all)
      .Merge(extra)
      .Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
