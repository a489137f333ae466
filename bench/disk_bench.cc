// bench disk — write and random-read throughput of the disk tier against fio in the same run.
//
//   bench/run disk [--dir=PATH] [--file-mib=N] [--qd=N] [--seconds=S] [--trials=N]
//                  [--sizes=256k,2m,8m]
//                  [--codec=none|zstd|zstd-shuffle|fp8|int8] [--fallback-io] [--shapes]
//                  [--staged-reads] [--codec-threads=N]
//
// For each block size: fill a fresh cache directory with blocks twice (the first fill writes
// the fresh file: "fresh write"; the second reclaims and overwrites it, a full cache's steady
// state: write GB/s), then read random blocks for a while (read GB/s), with `qd` operations
// in flight at the device. The ceiling is fio with
// --ioengine=io_uring --direct=1 --fixedbufs --registerfiles (fio at its best: without
// registered buffers it pins pages on every op and runs about half as fast here, which would
// flatter kvtier) at the same block size and queue depth: writes to a file of the same size in
// the same directory, random reads over kvtier's own data file (the regions the fill wrote
// whole: the same extents). Run by this program interleaved with kvtier's runs: fio's
// untimed layout of its file, fio write, kvtier's two fills, fio write; then fio randread, and
// `trials` rounds of (kvtier randread, fio randread).
// The disk's bandwidth on a shared VM drifts by 2x within a minute, so each kvtier read run is
// compared with the mean of the two fio runs that bracket it, and the read ratio is the median
// of those per-trial ratios (their spread is printed too); the GB/s columns are medians.
// The write ratio is the second fill's GB/s over the mean of the two fio writes around it
// (both sides overwrite written extents).
// "verify read": a second ceiling, the verifying reader (VerifyingReader: one thread,
// io_uring, fixed buffers in huge pages, XXH3 over every read, as the tier verifies every
// record), run after each fio read; its "ratio" is kvtier's over it, per trial as for fio. fio
// never touches the bytes it reads; where the disk serves data at memory speed (this VM's, for
// data written in the last minutes), reading each byte once more is most of the gap to fio.
// "2-thread vr": the verifying reader with one thread submitting and another reaping and
// hashing (the tier's shape: callers submit, its completion thread reaps), run after the first;
// its "ratio" is kvtier's over it. Against the one-thread reader it is the cost of handing
// every read from thread to thread, which a reader serving other threads cannot avoid.
// "cpu us/rd" / "verify cpu": this process's CPU time (all threads, user + kernel; not the
// device sampler's) per read during kvtier's read runs and the verifying reader's (medians).
// "dev qd" / "fio qd": reads in flight at the block device while it was busy, during kvtier's
// read runs and fio's (io/block_device_sampler.h; medians): the depth the device was given.
// figure = random-read GB/s at 2 MiB.
//
// --shapes: instead of the sizes, each model shape of bench_util.h's ModelShapePairs (an MLA
// latent, fp8 K/V, a tensor-parallel shard) and the fp16 K/V geometry of the same block bytes,
// each against fio at that block size, in the order fp16, shape, shape, fp16 (means of the
// two); figure = the worst (shape read ratio to fio) / (fp16 read ratio to fio) over the
// pairs (1 when the storage path does not care about the shape).
// A control pair (fp16 against itself) runs first: its relative is the bench's own noise on
// the machine (control_relative in the JSON).
// Lossless codecs only (the lossy ones would measure quantization, not the storage path).
//
// Content: four distinct blocks of fp16 values drawn from N(0, 1), written in turn. After the
// reads, 32 records spread over the file are read back and compared with what was written:
// lossless codecs must return every byte (else the run fails); the lossy ones (fp8, int8)
// report the error against the fp16 original, with kernels/quantize.h's definitions
// (MeasureQuantError): max |x̂ − x|, mean |x̂ − x|, relative RMS ‖x̂ − x‖₂ / ‖x‖₂, and the
// largest error in units of its head's scale.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/bench_util.h"
#include "bench/verifying_reader.h"
#include "common/flags.h"
#include "common/io_memory.h"
#include "common/mutex.h"
#include "io/block_device_sampler.h"
#include "kernels/numeric.h"
#include "kernels/quantize.h"
#include "tiers/disk_tier.h"

namespace kvtier::bench {
namespace {

struct Args {
  std::string dir = "/tmp/kvtier-bench-disk";
  size_t file_mib = 2048;
  int qd = 32;
  double seconds = 5;
  int trials = 5;  // kvtier read runs, each bracketed by fio runs
  std::vector<size_t> sizes_kib = {256, 2048, 8192};
  Codec codec = Codec::kNone;
  bool fallback_io = false;
  bool shapes = false;
  bool in_place = true;        // DiskTierOptions::read_in_place (its default)
  uint32_t codec_threads = 0;  // DiskTierOptions::codec_threads (0: the tier's default)
  bool fio_huge = false;       // fio's buffers in hugetlb pages (set in Main when they are free)
};

// fio (bench_util.h's FioGbps) over this run's file size, queue depth and duration.
double Fio(const Args& a, const std::string& rw, size_t bs, const std::string& file,
           size_t size_mib = 0) {
  FioJob job{file, size_mib > 0 ? size_mib : a.file_mib, bs, rw, a.qd, a.seconds};
  job.huge_pages = a.fio_huge;
  const double gbps = FioGbps(job);
  // Never a ratio against a ceiling that was not measured.
  if (!(gbps > 0)) {
    Die(
        absl::StrFormat("fio %s of %s (bs %d, qd %d%s) failed or measured nothing: is fio "
                        "installed (scripts/install-deps.sh)?",
                        rw, file, bs, a.qd, a.fio_huge ? ", hugetlb buffers" : ""));
  }
  return gbps;
}

// The error of blocks read back against the fp16 originals (0 for the lossless codecs).
struct ReadBackError {
  double max_abs = 0, mean_abs = 0, relative_rms = 0, max_abs_over_scale = 0;
  uint64_t elements = 0;
};

struct Figures {
  double write_gbps = 0, read_gbps = 0, fio_write_gbps = 0, fio_read_gbps = 0;
  double write_fresh_gbps = 0;  // the first fill, into the fresh file's unwritten extents
  // The verifying reader (VerifyingReader) after each fio read: its median GB/s, and the
  // median over trials of kvtier's GB/s over the mean of the verifier's runs around it.
  double verify_read_gbps = 0, verify_ratio = 0;
  // The same with two threads (one submits, one reaps and hashes): kvtier's shape.
  double split_verify_read_gbps = 0, split_verify_ratio = 0;
  // CPU time of this process per read (every thread, user + kernel; medians over runs):
  // kvtier's timed reads, and the verifying reader's. On a VM whose vCPUs share the host with
  // its disk emulation, CPU the guest spends is time the disk does not get.
  double cpu_us_per_read = 0, verify_cpu_us_per_read = 0;
  // read: the median over trials of kvtier's GB/s over the mean of the fio runs before and
  // after it, and the smallest and largest of those; write: fill over the mean of fio's two.
  double read_ratio = 0, read_ratio_min = 0, read_ratio_max = 0, write_ratio = 0;
  double stored_ratio = 1;  // bytes on disk / block bytes
  // Reads in flight at the block device while it was busy (io/block_device_sampler.h), medians
  // over kvtier's read runs and fio's; -1 where the device cannot be sampled.
  double dev_qd = -1, fio_dev_qd = -1;
  double in_place = 0;  // fraction of the timed reads whose payload landed in place
  ReadBackError error;
  std::string backend;
};

// Accumulates the error of `got` against `original` (fp16 blocks of g), as MeasureQuantError
// defines it, plus the mean |error|, which it does not report.
class ErrorAccumulator {
 public:
  ErrorAccumulator(const Geometry& g, Codec codec) : g_(g), codec_(codec) {}

  void Add(const std::vector<char>& original, const std::vector<char>& got) {
    if (!IsQuantizedCodec(codec_)) {
      if (original != got) Die("a lossless codec returned other bytes");
      e_.elements += original.size() / 2;
      return;
    }
    for (size_t i = 0; i + 1 < original.size(); i += 2) {
      uint16_t a, b;
      std::memcpy(&a, original.data() + i, 2);
      std::memcpy(&b, got.data() + i, 2);
      const double x = numeric::HalfBitsToFloat(a), y = numeric::HalfBitsToFloat(b);
      if (!std::isfinite(x)) continue;
      const double err = std::isfinite(y) ? std::fabs(y - x) : INFINITY;
      e_.max_abs = std::max(e_.max_abs, err);
      sum_abs_ += err;
      sum_sq_err_ += err * err;
      sum_sq_x_ += x * x;
      ++e_.elements;
    }
    absl::StatusOr<QuantError> q =
        MeasureQuantError(g_, CodecQuantFormat(codec_), original.data(), got.data(), 1);
    if (!q.ok()) Die(q.status().ToString());
    e_.max_abs_over_scale = std::max(e_.max_abs_over_scale, q->max_abs_over_scale);
    // The same definitions: its max |error| over this block is ours over it.
    if (q->max_abs > e_.max_abs) Die("MeasureQuantError disagrees with the bench");
  }

  ReadBackError Result() const {
    ReadBackError e = e_;
    if (e.elements > 0) e.mean_abs = sum_abs_ / static_cast<double>(e.elements);
    if (sum_sq_x_ > 0) e.relative_rms = std::sqrt(sum_sq_err_ / sum_sq_x_);
    return e;
  }

 private:
  const Geometry g_;
  const Codec codec_;
  ReadBackError e_;
  double sum_abs_ = 0, sum_sq_err_ = 0, sum_sq_x_ = 0;
};

// IEEE half from float, round to nearest even (normal range; enough for N(0,1) samples).
uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  if (exp <= 0) return static_cast<uint16_t>(sign);  // flush tiny values to zero
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}

// Geometry with a block of `kib` KiB: 16 layers x 8 heads x 128 x fp16 is 64 KiB per token.
Geometry SizeGeometry(size_t kib) {
  return Geometry{16, 8, 128, DType::kFloat16, static_cast<uint32_t>(kib / 64)};
}

Figures RunSize(const Args& a, const Geometry& g) {
  Figures fig;
  std::filesystem::remove_all(a.dir);
  std::filesystem::create_directories(a.dir);
  const std::string fio_file = a.dir + "/fio.dat";
  // fio at the block size (rounded up to a page for O_DIRECT), as kvtier reads whole blocks.
  const size_t bs = (g.block_bytes() + 4095) / 4096 * 4096;
  const size_t kib = g.block_bytes() >> 10;  // a key component only
  // This machine's disk bandwidth drifts by 2x from one run to the next, so the ceiling is
  // measured interleaved with kvtier's own runs and medians are compared.
  // fio lays its file out in one untimed pass first: its timed writes overwrite written
  // extents, as kvtier's timed (second) fill does.
  {
    FioJob layout{fio_file, a.file_mib, bs, "write", a.qd, 0};
    layout.one_pass = true;
    if (!(FioGbps(layout) > 0)) Die("fio could not lay out " + fio_file);
  }
  std::vector<double> fio_writes = {Fio(a, "write", bs, fio_file)};

  DiskTierOptions o;
  o.directory = a.dir + "/cache";
  o.region_bytes = std::max<uint64_t>(64ull << 20, 4 * RecordSize(g.block_bytes()));
  o.capacity_bytes = std::max<uint64_t>(uint64_t{a.file_mib} << 20, 3 * o.region_bytes);
  o.codec = a.codec;
  o.queue_depth = static_cast<uint32_t>(a.qd);
  o.staging_buffers = static_cast<uint32_t>(2 * a.qd + 2);
  o.force_fallback_io = a.fallback_io;
  o.read_in_place = a.in_place;
  o.codec_threads = a.codec_threads;
  auto tier = DiskTier::Open(
      o, g, [](const BlockKey&, const std::string&, RecordId) {}, nullptr);
  if (!tier.ok()) Die(tier.status().ToString());
  DiskTier& t = **tier;
  fig.backend = t.Stats().io_backend;
  // KV-like content: fp16 values drawn from N(0, 1), so compression and quantization see
  // realistic data; four distinct blocks, written in turn.
  constexpr size_t kBlocks = 4;
  std::vector<std::vector<char>> blocks(kBlocks, std::vector<char>(g.block_bytes()));
  std::mt19937_64 rng(7);
  {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::vector<char>& block : blocks) {
      for (size_t i = 0; i + 1 < block.size(); i += 2) {
        const uint16_t h = FloatToHalf(normal(rng));
        std::memcpy(block.data() + i, &h, 2);
      }
    }
  }

  Mutex mu;
  int inflight = 0;
  std::atomic<int> failures{0};
  auto wait_below = [&](int limit) {
    MutexLock lock(&mu);
    mu.Await([&] {
      mu.AssertHeld();
      return inflight < limit;
    });
  };
  auto finished = [&](absl::Status s) {
    if (!s.ok()) ++failures;
    MutexLock lock(&mu);
    --inflight;
  };

  // Write: two fills of ~90% of the file each. The first writes into the fresh file's
  // preallocated extents, which the file system converts from unwritten at every write's
  // completion (fio writes 6.5-6.8 GB/s into such a file here and 9.4-10.0 GB/s over one it
  // wrote before); the second reclaims the first's regions and overwrites them, as a full
  // cache does from then on. The second is the write figure, against fio's writes over a file
  // it has already laid out: the same state of extents on both sides. The first is reported
  // as the fresh-file write (write_fresh_gbps in the JSON).
  // The bench keeps as many writes in flight as the tier has staging buffers: its own bound;
  // the device gets at most the ring's queue depth of them, as fio's iodepth.
  const size_t per_region = o.region_bytes / RecordSize(g.block_bytes());
  const size_t n = static_cast<size_t>((o.capacity_bytes / o.region_bytes) * per_region * 0.9);
  std::vector<std::pair<BlockKey, RecordId>> written;
  auto fill = [&](uint64_t first_key, size_t count) {
    written.clear();
    written.reserve(count);
    const double start = Now();
    for (size_t i = 0; i < count; ++i) {
      wait_below(static_cast<int>(o.staging_buffers));
      const BlockKey key{first_key + i, kib};
      {
        MutexLock lock(&mu);
        ++inflight;
      }
      absl::StatusOr<RecordId> id = t.Write(key, "bench", blocks[key.hi % kBlocks].data(), finished);
      if (!id.ok()) {
        {
          MutexLock lock(&mu);
          --inflight;
        }
        --i;  // staging busy: retry this block
        continue;
      }
      written.push_back({key, *id});
    }
    t.Drain();
    return count * static_cast<double>(g.block_bytes()) / (Now() - start) / 1e9;
  };
  // The second fill stops short of reclaiming the region it started in (it would drop its own
  // first records, which the reads below pick from): at most all regions but one, which only
  // binds on small files (--file-mib=256 is 4 regions of 64 MiB).
  const size_t regions = o.capacity_bytes / o.region_bytes;
  fig.write_fresh_gbps = fill(1, n);
  fig.write_gbps = fill(n + 1, std::min(n, (regions - 1) * per_region));
  {
    const DiskTierStats st = t.Stats();
    fig.stored_ratio = static_cast<double>(st.bytes_written) / st.raw_bytes_written;
  }
  fio_writes.push_back(Fio(a, "write", bs, fio_file));
  std::filesystem::remove(fio_file);
  // fio's random reads go over kvtier's own data file, the regions the fill wrote whole: the
  // same extents of the same file, so where the file system put each file (which moved the
  // ratio by up to 2x between runs when fio read a file of its own) is no longer a variable.
  // Read only; the unwritten tails of those regions (under 3% of each) read as zeros without
  // touching the disk, which can only flatter fio.
  const std::string data_file = o.directory + "/data.kvt";
  const size_t fio_read_mib = (n / per_region) * o.region_bytes >> 20;
  if (fio_read_mib == 0) Die("the fill wrote no whole region for fio to read");

  // Random reads for `seconds`, `trials` runs, each between two of fio's.
  // Page-aligned destinations, as the engine's host slots are: reads land in place.
  const size_t slot = (g.block_bytes() + 4095) / 4096 * 4096;
  absl::StatusOr<IoMemory> dst = IoMemory::Allocate(slot * a.qd);
  if (!dst.ok()) Die(dst.status().ToString());
  std::vector<char*> free_dst;
  for (int i = 0; i < a.qd; ++i) free_dst.push_back(static_cast<char*>(dst->data()) + i * slot);
  std::uniform_int_distribution<size_t> pick(0, written.size() - 1);
  std::vector<double> reads_gbps, fio_reads;
  const uint64_t in_place_before = t.Stats().reads_in_place;
  size_t timed_reads = 0;
  std::vector<double> dev_qd, fio_dev_qd;
  std::vector<double> verify_reads, verify_cpu, read_cpu, split_reads;
  auto fio_read = [&] {
    BlockDeviceSampler sampler(a.dir);
    fio_reads.push_back(Fio(a, "randread", bs, data_file, fio_read_mib));
    fio_dev_qd.push_back(sampler.Stop().mean_in_flight);
    const VerifyingReaderResult v = VerifyingReader(data_file, fio_read_mib, bs, a.qd, a.seconds);
    if (!(v.gbps > 0)) Die("the verifying reader could not read " + data_file);
    verify_reads.push_back(v.gbps);
    verify_cpu.push_back(v.cpu_us_per_read);
    const VerifyingReaderResult split =
        VerifyingReader(data_file, fio_read_mib, bs, a.qd, a.seconds, /*split=*/true);
    if (!(split.gbps > 0)) Die("the two-thread verifying reader could not read " + data_file);
    split_reads.push_back(split.gbps);
  };
  fio_read();
  std::vector<double> trial_ratios, verify_ratios, split_ratios;
  for (int trial = 0; trial < a.trials; ++trial) {
    size_t reads = 0;
    BlockDeviceSampler sampler(a.dir);
    const double start = Now();
    const double cpu_start = ProcessCpuSeconds();
    while (Now() - start < a.seconds) {
      wait_below(a.qd);
      const auto& [key, id] = written[pick(rng)];
      char* into;
      {
        // Each read in flight has a destination of its own (a read lands in it in place).
        MutexLock lock(&mu);
        ++inflight;
        into = free_dst.back();
        free_dst.pop_back();
      }
      auto read_done = [&, into](absl::Status st) {
        if (!st.ok()) ++failures;
        MutexLock lock(&mu);
        --inflight;
        free_dst.push_back(into);
      };
      if (absl::Status st = t.Read(id, key, "bench", into, read_done); !st.ok()) {
        Die("read: " + st.ToString());
      }
      ++reads;
    }
    t.Drain();
    reads_gbps.push_back(reads * static_cast<double>(g.block_bytes()) / (Now() - start) / 1e9);
    const BlockDeviceSampler::Figures sampled = sampler.Stop();
    dev_qd.push_back(sampled.mean_in_flight);
    read_cpu.push_back((ProcessCpuSeconds() - cpu_start - sampled.cpu_seconds) /
                       static_cast<double>(reads) * 1e6);
    timed_reads += reads;
    fio_read();
    trial_ratios.push_back(reads_gbps.back() /
                           ((fio_reads[fio_reads.size() - 2] + fio_reads.back()) / 2));
    verify_ratios.push_back(reads_gbps.back() /
                            ((verify_reads[verify_reads.size() - 2] + verify_reads.back()) / 2));
    split_ratios.push_back(reads_gbps.back() /
                           ((split_reads[split_reads.size() - 2] + split_reads.back()) / 2));
  }
  fig.in_place = static_cast<double>(t.Stats().reads_in_place - in_place_before) /
                 static_cast<double>(std::max<size_t>(1, timed_reads));

  // Read back 32 records spread over the file and compare them with what was written.
  {
    ErrorAccumulator acc(g, a.codec);
    std::vector<char> got(g.block_bytes());
    for (size_t j = 0; j < 32; ++j) {
      const size_t w = j * (written.size() - 1) / 31;
      const auto& [key, id] = written[w];
      absl::Status status;
      if (!t.Read(id, key, "bench", got.data(), [&](absl::Status s) { status = s; }).ok()) {
        Die("read back");
      }
      t.Drain();
      if (!status.ok()) Die(status.ToString());
      acc.Add(blocks[key.hi % kBlocks], got);
    }
    fig.error = acc.Result();
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  fig.read_gbps = median(reads_gbps);
  fig.fio_read_gbps = median(fio_reads);
  fig.fio_write_gbps = median(fio_writes);
  fig.read_ratio = median(trial_ratios);
  fig.verify_read_gbps = median(verify_reads);
  fig.verify_ratio = median(verify_ratios);
  fig.split_verify_read_gbps = median(split_reads);
  fig.split_verify_ratio = median(split_ratios);
  fig.cpu_us_per_read = median(read_cpu);
  fig.verify_cpu_us_per_read = median(verify_cpu);
  fig.dev_qd = median(dev_qd);
  fig.fio_dev_qd = median(fio_dev_qd);
  fig.read_ratio_min = *std::min_element(trial_ratios.begin(), trial_ratios.end());
  fig.read_ratio_max = *std::max_element(trial_ratios.begin(), trial_ratios.end());
  fig.write_ratio = fig.write_gbps / ((fio_writes[0] + fio_writes[1]) / 2);
  if (failures.load() != 0) Die(absl::StrFormat("%d operations failed", failures.load()));
  tier->reset();
  std::filesystem::remove_all(a.dir);
  return fig;
}

// --shapes: each pair's fp16 baseline, then its shape, each against fio at its block size.
int Shapes(const Args& a) {
  if (IsQuantizedCodec(a.codec)) {
    std::fprintf(stderr,
                 "bench disk: --shapes measures the storage path (bytes in, bytes out): use a "
                 "lossless codec (none, zstd, zstd-shuffle), not %s\n",
                 CodecName(a.codec));
    return 2;
  }
  std::printf(
      "disk tier by model shape vs fp16 K/V blocks of the same bytes, fio (io_uring, O_DIRECT) "
      "at each block size, %zu MiB file in %s, queue depth %d, codec %s\n",
      a.file_mib, a.dir.c_str(), a.qd, CodecName(a.codec));
  std::printf("%-24s %11s %11s %10s %7s %11s %10s %7s %8s\n", "shape", "block bytes", "write GB/s",
              "fio write", "ratio", "read GB/s", "fio read", "ratio", "vs fp16");
  JsonLine json;
  std::string backend;
  const std::vector<ShapePair> pairs = ShapePairsWithControl();
  ShapeRelatives relatives;
  for (size_t pair_index = 0; pair_index < pairs.size(); ++pair_index) {
    const ShapePair& p = pairs[pair_index];
    // A B B A: whatever the run before leaves behind (the discard of the last run's files,
    // a warmer device) falls on both sides alike. Each side's figures are the mean of its two.
    Figures sum[2];
    for (int side : {0, 1, 1, 0}) {
      const Figures f = RunSize(a, side == 0 ? p.baseline : p.shape);
      backend = f.backend;
      sum[side].write_gbps += f.write_gbps / 2;
      sum[side].read_gbps += f.read_gbps / 2;
      sum[side].fio_write_gbps += f.fio_write_gbps / 2;
      sum[side].fio_read_gbps += f.fio_read_gbps / 2;
      sum[side].read_ratio += f.read_ratio / 2;
      sum[side].write_ratio += f.write_ratio / 2;
    }
    double read_ratio[2] = {0, 0};
    for (int side = 0; side < 2; ++side) {
      const Geometry& g = side == 0 ? p.baseline : p.shape;
      const Figures& f = sum[side];
      read_ratio[side] = f.read_ratio;
      const std::string label = side == 0 ? std::string("  fp16 K/V, same bytes") : p.name;
      const std::string rel =
          side == 0 ? "" : absl::StrFormat("%.3f", read_ratio[1] / read_ratio[0]);
      std::printf("%-24s %11zu %11.2f %10.2f %7.2f %11.2f %10.2f %7.2f %8s\n", label.c_str(),
                  g.block_bytes(), f.write_gbps, f.fio_write_gbps, f.write_ratio, f.read_gbps,
                  f.fio_read_gbps, read_ratio[side], rel.c_str());
      const std::string tag = std::string(p.name) + (side == 0 ? "_fp16" : "");
      json.Num("write_gbps_" + tag, f.write_gbps)
          .Num("fio_write_gbps_" + tag, f.fio_write_gbps)
          .Num("read_gbps_" + tag, f.read_gbps)
          .Num("fio_read_gbps_" + tag, f.fio_read_gbps)
          .Num("read_ratio_" + tag, read_ratio[side])
          .Num("write_ratio_" + tag, f.write_ratio);
    }
    const double rel = read_ratio[1] / read_ratio[0];
    json.Num(std::string("relative_") + p.name, rel)
        .Str(std::string("geometry_") + p.name, p.shape.ToString());
    relatives.Add(pair_index, rel);
  }
  JsonLine head;
  head.Str("bench", "disk")
      .Str("mode", "shapes")
      .Num("figure", relatives.worst)
      .Str("unit", "x")
      .Num("ceiling", 1)
      .Str("ceiling_source",
           absl::StrFormat(
               "each shape's random-read ratio to fio (io_uring O_DIRECT fixedbufs "
               "registerfiles randread, its block size, qd=%d, size=%dMiB, same "
               "directory, each read run against the fio runs around it, median of those ratios) "
               "over the ratio of fp16 K/V blocks "
               "of the same bytes; the worst pair",
               a.qd, a.file_mib))
      .Num("ratio", relatives.worst)
      .Num("control_relative", relatives.control)
      .Str("io_backend", backend)
      .Str("codec", CodecName(a.codec))
      .Str("fio_buffers", a.fio_huge ? "hugetlb" : "4k");
  head.Merge(json).Print();
  return 0;
}

int Main(int argc, char** argv) {
  Args a;
  CLI::App app(
      "bench disk: disk tier write and random read at 256 KiB, 2 MiB, 8 MiB blocks, vs fio "
      "io_uring O_DIRECT in the same run",
      "bench/run disk");
  flags::AddDir(app, &a.dir, "where the cache directory and fio's file go");
  app.add_option("--file-mib", a.file_mib, "bytes per run, MiB (the cache and fio's file)")
      ->check(flags::AtLeast<size_t>(256))
      ->capture_default_str();
  app.add_option("--qd", a.qd, "operations in flight")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--seconds", a.seconds, "seconds of random reads per run")
      ->check(CLI::PositiveNumber.description("> 0"))
      ->capture_default_str();
  app.add_option("--trials", a.trials,
                 "kvtier random-read runs per size, each between two fio runs")
      ->check(CLI::Range(1, 50))
      ->capture_default_str();
  app.add_option_function<std::string>(
         "--sizes",
         [&a](const std::string& v) {
           a.sizes_kib.clear();
           for (absl::string_view written : absl::StrSplit(v, ',')) {
             absl::string_view size = written;
             size_t mult = 1;
             if (absl::ConsumeSuffix(&size, "m")) {
               mult = 1024;
             } else {
               absl::ConsumeSuffix(&size, "k");
             }
             size_t x = 0;
             if (!absl::SimpleAtoi(size, &x) || x * mult < 64 || (x * mult) % 64 != 0) {
               throw CLI::ValidationError("--sizes", "'" + std::string(written) +
                                                         "' is not a block size: 64k or more, "
                                                         "a multiple of 64k (256k, 2m, ...)");
             }
             a.sizes_kib.push_back(x * mult);
           }
         },
         "block sizes, comma-separated: 256k,2m,8m")
      ->default_str("256k,2m,8m");
  flags::AddParsed(app, "--codec", &a.codec, ParseCodec, CodecName,
                   "none|zstd|zstd-shuffle|fp8|int8", "the codec records are written with");
  app.add_flag("--fallback-io", a.fallback_io, "thread-pool I/O instead of io_uring");
  bool staged = false;
  app.add_flag("--staged-reads", staged,
               "every read through a staging buffer and copied out (read_in_place off; by "
               "default uncompressed records land straight in the destination)");
  app.add_option("--codec-threads", a.codec_threads,
                 "threads verifying / decoding reads (0: min(4, hardware threads))")
      ->check(CLI::Range(0u, 64u));
  app.add_flag("--shapes", a.shapes,
               "model shapes (MLA, fp8, a TP shard) against fp16 K/V blocks of the same bytes, "
               "instead of --sizes");
  if (std::optional<int> exit_code = flags::Parse(app, argc, argv)) return *exit_code;
  a.in_place = !staged;
  {
    // fio at its best has its buffers in huge pages; that takes free hugetlb pages, which only
    // an administrator can reserve, so the bench uses them where they are and says which.
    size_t max_bs = 0;
    if (a.shapes) {
      for (const ShapePair& p : ShapePairsWithControl()) {
        max_bs = std::max({max_bs, p.baseline.block_bytes(), p.shape.block_bytes()});
      }
    } else {
      for (size_t kib : a.sizes_kib) max_bs = std::max(max_bs, kib << 10);
    }
    const uint64_t need = uint64_t(a.qd) * ((max_bs + 4095) / 4096 * 4096) + (16u << 20);
    a.fio_huge = FreeHugetlbBytes() >= need;
    if (a.fio_huge) {
      std::printf("fio's buffers: hugetlb pages (--iomem=shmhuge)\n");
    } else {
      std::printf(
          "fio's buffers: 4 KiB pages, a weaker ceiling: fewer of its reads fit the device's "
          "queue at once (for fio at its best reserve %d MiB of huge pages: echo %d | sudo tee "
          "/proc/sys/vm/nr_hugepages)\n",
          static_cast<int>(need >> 20), static_cast<int>((need + (2u << 20) - 1) / (2u << 20)));
    }
  }
  if (a.shapes) return Shapes(a);
  std::printf(
      "disk tier vs fio (io_uring, O_DIRECT), %zu MiB file in %s, queue depth %d, "
      "codec %s\n",
      a.file_mib, a.dir.c_str(), a.qd, CodecName(a.codec));
  std::printf(
      "%8s %11s %12s %12s %8s %12s %12s %8s %12s %11s %8s %11s %8s %8s %8s %10s %10s %9s %10s "
      "%10s %9s\n",
      "block", "fresh write", "write GB/s", "fio write", "ratio", "read GB/s", "fio read", "ratio",
      "ratio range", "verify read", "ratio", "2-thread vr", "ratio", "dev qd", "fio qd",
      "cpu us/rd", "verify cpu", "stored", "max err", "mean err", "rel RMS");
  JsonLine json;
  double figure = 0, ceiling = 0, ratio = 0;
  std::string figure_tag;
  std::string backend;
  for (size_t kib : a.sizes_kib) {
    const Figures f = RunSize(a, SizeGeometry(kib));
    backend = f.backend;
    const std::string tag =
        kib < 1024 ? absl::StrFormat("%dk", kib) : absl::StrFormat("%dm", kib / 1024);
    const std::string range = absl::StrFormat("%.2f-%.2f", f.read_ratio_min, f.read_ratio_max);
    std::printf(
        "%8s %11.2f %12.2f %12.2f %8.2f %12.2f %12.2f %8.2f %12s %11.2f %8.2f %11.2f %8.2f %8.1f "
        "%8.1f %10.1f %10.1f %9.3f %10.4g %10.4g %9.4g\n",
        tag.c_str(), f.write_fresh_gbps, f.write_gbps, f.fio_write_gbps, f.write_ratio, f.read_gbps,
        f.fio_read_gbps, f.read_ratio, range.c_str(), f.verify_read_gbps, f.verify_ratio,
        f.split_verify_read_gbps, f.split_verify_ratio, f.dev_qd, f.fio_dev_qd, f.cpu_us_per_read,
        f.verify_cpu_us_per_read, f.stored_ratio, f.error.max_abs, f.error.mean_abs,
        f.error.relative_rms);
    json.Num("stored_ratio_" + tag, f.stored_ratio)
        .Num("write_fresh_gbps_" + tag, f.write_fresh_gbps)
        .Num("write_gbps_" + tag, f.write_gbps)
        .Num("fio_write_gbps_" + tag, f.fio_write_gbps)
        .Num("write_ratio_" + tag, f.write_ratio)
        .Num("read_gbps_" + tag, f.read_gbps)
        .Num("fio_read_gbps_" + tag, f.fio_read_gbps)
        .Num("read_ratio_" + tag, f.read_ratio)
        .Num("read_ratio_min_" + tag, f.read_ratio_min)
        .Num("read_ratio_max_" + tag, f.read_ratio_max)
        .Num("verify_read_gbps_" + tag, f.verify_read_gbps)
        .Num("read_ratio_to_verifier_" + tag, f.verify_ratio)
        .Num("split_verify_read_gbps_" + tag, f.split_verify_read_gbps)
        .Num("read_ratio_to_split_verifier_" + tag, f.split_verify_ratio)
        .Num("read_cpu_us_per_read_" + tag, f.cpu_us_per_read)
        .Num("verify_cpu_us_per_read_" + tag, f.verify_cpu_us_per_read)
        .Num("device_reads_in_flight_" + tag, f.dev_qd)
        .Num("fio_device_reads_in_flight_" + tag, f.fio_dev_qd)
        .Num("reads_in_place_" + tag, f.in_place)
        .Num("err_max_abs_" + tag, f.error.max_abs)
        .Num("err_mean_abs_" + tag, f.error.mean_abs)
        .Num("err_relative_rms_" + tag, f.error.relative_rms)
        .Num("err_max_abs_over_scale_" + tag, f.error.max_abs_over_scale)
        .Num("err_elements_" + tag, static_cast<double>(f.error.elements));
    if (kib == 2048 || figure == 0) {
      figure = f.read_gbps;
      ceiling = f.fio_read_gbps;
      ratio = f.read_ratio;
      figure_tag = tag;
    }
  }
  JsonLine head;
  head.Str("bench", "disk")
      .Num("figure", figure)
      .Str("unit", "GB/s")
      .Num("ceiling", ceiling)
      .Str("ceiling_source",
           absl::StrFormat("fio io_uring O_DIRECT fixedbufs registerfiles randread bs=%s qd=%d "
                           "over kvtier's data file "
                           "size=%dMiB, same directory; each of %d kvtier read runs against "
                           "the mean of the fio runs before and after it, median of those ratios",
                           figure_tag, a.qd, a.file_mib, a.trials))
      .Num("ratio", ratio)
      .Str("io_backend", backend)
      .Str("codec", CodecName(a.codec))
      .Str("lossy", IsQuantizedCodec(a.codec) ? "yes" : "no")
      .Str("read_in_place", a.in_place ? "yes" : "no")
      .Num("codec_threads", a.codec_threads)
      .Str("content", "fp16 N(0,1), 16 layers x 8 kv heads x 128 dim")
      .Str("fio_buffers", a.fio_huge ? "hugetlb" : "4k");
  head.Merge(json).Print();
  return 0;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) { return kvtier::bench::Main(argc, argv); }
