// tiers/disk_tier.h — the disk tier: block records in a log-structured data file, a RocksDB
// index, crash-safe and recovered on reopen.
//
// A cache directory holds `data.kvt` (one preallocated file, cut into equal regions) and
// `index/` (RocksDB). Records are appended to the active region; when no region is free, the
// oldest region with no write or read in flight is reclaimed whole: its index entries are
// deleted and its generation bumped in one RocksDB write batch *before* any byte of it is
// overwritten. When every other region has I/O in flight, a write waits (up to kStagingWait,
// on the encoder thread) for one to land rather than fail.
// Layout and byte formats: docs/disk-format.md.
//
// Promises:
//   * Data first, index second: an index entry is written only after its record's bytes are
//     written (and fdatasync'ed under SyncPolicy::kData/kFull).
//   * Every read is verified: header (magic, version, checksum), identity (key, namespace,
//     geometry, region, generation) and payload checksum. Any mismatch is DataLoss, the index
//     entry is dropped and a counter incremented; wrong bytes are never returned. (Under the
//     lossy codecs, fp8 and int8, a read returns the dequantized block: DiskTierOptions::codec.)
//   * Reopening a directory recovers every indexed record (Open's `recovered` callback). A
//     directory of another format version or geometry is refused with FailedPrecondition.
//   * A write failure (EIO, ENOSPC) fails that write only; what is stored stays readable.
//
// Asynchrony: a write is Reserve (a record id, at once: never waits, never does I/O) then
// Submit (copies the block into a staging buffer before returning, so the caller may reuse
// its memory at once; this is the only call that may wait, for a buffer); Write is both.
// Encoding, I/O and the index update then happen on the tier's threads, and `done` runs on
// the tier's threads (never on the caller's, so a caller may hold locks its callback takes).
// Read likewise. A callback may call Erase, Reserve and Read, but not Drain; Submit and Write
// from a callback may wait for a buffer only the tier's threads can free (and then fail after
// kStagingWait), so a caller that must not stall submits from its own threads.
//
// Parts (each with its own lock order written in its header):
//   StagingPool (tiers/staging_pool.h)         the registered buffers, overflow, waiting
//   RegionAllocator (tiers/region_allocator.h)  regions, generations, reclaim, I/O in flight
//   DiskIndex (tiers/disk_index.h)             the RocksDB index, metadata, recovery
// DiskTier composes them: the record table, the codec threads (encoding and verifying
// records: common/task_pool.h), the encoder thread (placing records in regions, in order)
// and the I/O completions.
//
// Lock order: DiskTier::mu_ → StagingPool's lock (a leaf); mu_ → task_mu_ (a leaf: the
// encoder thread's queue). RegionAllocator has no lock (it
// is guarded by mu_); DiskIndex has none (RocksDB's own; called under mu_ so that index
// writes are ordered with the record table). No tier lock is held while a callback runs, a
// staging buffer is waited for, or a returned buffer is handed to a queued read.
//
// Thread-safe. Record ids are small integers valid until the record is erased or dropped.

#ifndef KVTIER_TIERS_DISK_TIER_H_
#define KVTIER_TIERS_DISK_TIER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/io_memory.h"
#include "common/mutex.h"
#include "common/task_pool.h"
#include "io/io_engine.h"
#include "kvtier/geometry.h"
#include "tiers/disk_index.h"
#include "tiers/disk_record.h"
#include "tiers/read_claim.h"
#include "tiers/region_allocator.h"
#include "tiers/staging_pool.h"

namespace kvtier {

using RecordId = uint32_t;

enum class SyncPolicy : uint8_t {
  kNone,  // O_DIRECT writes reach the device; survives a process crash, not power loss
  kData,  // fdatasync the data file before each index update
  kFull,  // kData, and the index's write-ahead log is synced too
};
// "none", "data", "full" (DiskOptions::sync); "invalid" for a value outside the enum.
const char* SyncPolicyName(SyncPolicy policy);
// The inverse of SyncPolicyName; InvalidArgument naming the accepted names otherwise.
absl::StatusOr<SyncPolicy> ParseSyncPolicy(absl::string_view name);

struct DiskTierOptions {
  std::string directory;
  uint64_t capacity_bytes = 0;          // rounded down to whole regions; >= 2 regions
  uint64_t region_bytes = 64ull << 20;  // multiple of 4096, >= one largest record
  // Chosen per record when it is written, and recorded in it: a directory may hold records
  // of every codec, and each is read with its own. kFp8 / kInt8 are lossy (a read returns
  // the dequantized block) and need a dtype CheckCodecDType accepts.
  Codec codec = Codec::kNone;
  int zstd_level = 1;
  SyncPolicy sync = SyncPolicy::kNone;
  uint32_t queue_depth = 64;
  bool force_fallback_io = false;  // thread-pool I/O instead of io_uring
  uint32_t staging_buffers = 32;   // writes + reads in flight at once
  // Threads that encode records as they are written (checksums, zstd, fp8 / int8
  // quantization) and verify and decode them as they are read, off the encoder and I/O
  // completion threads. 0: min(4, hardware threads).
  uint32_t codec_threads = 0;
  // Reads of uncompressed records put the payload straight into the destination (one readv:
  // the header into a staging buffer, the block into `dst`), saving a copy per read, when the
  // destination is page-aligned and the block a whole number of pages. The kernel pins the
  // destination's pages on every such read (the staging buffers are registered once): cheap
  // in huge pages (the engine's host tier, common/io_memory.h: 256 KiB reads at 0.63-0.70 of
  // fio in place against 0.59-0.61 through staging, 2 MiB 0.81-0.83 against 0.76-0.78), dear
  // in 4 KiB pages (0.46 against 0.76 there, before the host tier was in huge pages;
  // docs/benchmarks.md, "disk"). So the tier reads in place only where the kernel has
  // transparent huge pages ("always" or "madvise" in hugepage_setting_path, read at Open):
  // where they are "never" or absent it reads through staging whatever this says, and says
  // so once in the log (DiskTierStats::read_in_place: what is in effect). With it, a read its
  // reader abandons while its I/O is in the kernel may still land its own (unverified) bytes
  // in `dst` until it settles: never any other block's, and never after Read's `done`.
  bool read_in_place = true;
  // Where the kernel's transparent huge page setting is read (common/io_memory.h); another
  // file only in tests.
  std::string hugepage_setting_path = kHugePageSettingPath;
  // Erased records are overwritten with zeros (asynchronously; the region is not reused
  // until that lands), and a reclaimed region is zeroed before new records go into it, so
  // no erased or evicted block can be read back from the data file. Costs a write of every
  // erased record and of every reclaimed region.
  bool secure_erase = false;
  // The directory 0750 and its files 0640 instead of 0700 / 0600, and a group-readable
  // directory accepted (tiers/disk_directory.h). Never world access, never group write.
  bool group_access = false;

  // InvalidArgument naming the field; for a quantized codec and a dtype it cannot store,
  // naming both.
  absl::Status Validate(const Geometry& geometry) const;
};

struct DiskTierStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;  // bytes of live records
  uint64_t records = 0;
  uint64_t regions = 0;
  uint64_t free_regions = 0;
  uint64_t bytes_written = 0;      // record bytes written (after compression)
  uint64_t raw_bytes_written = 0;  // block bytes those records hold
  uint64_t bytes_read = 0;
  uint64_t writes_failed = 0;
  uint64_t checksum_failures = 0;          // reads that failed verification (entry dropped)
  uint64_t reads_abandoned = 0;            // reads their reader gave up on (a Load's deadline)
  uint64_t reads_abandoned_before_io = 0;  // ... of which were dropped without any I/O
  uint64_t reads_in_place = 0;             // reads whose payload went straight into its destination
  uint64_t regions_reclaimed = 0;
  uint64_t records_dropped = 0;  // live records lost to region reclaim
  uint64_t staging_bytes = 0;    // the registered staging buffers (StagingPool)
  // ... of which in huge pages, as measured at open (common/io_memory.h says why it matters)
  uint64_t staging_huge_page_bytes = 0;
  // Whether reads go in place where they can (DiskTierOptions::read_in_place, and the kernel
  // has transparent huge pages), and the kernel's setting it was decided on.
  bool read_in_place = false;
  HugePageSetting huge_pages = HugePageSetting::kUnknown;
  std::string io_backend;
};

class DiskTier {
 public:
  // How long Submit (and so Write) waits for a staging buffer (writes in flight free them)
  // before it refuses with ResourceExhausted.
  static constexpr absl::Duration kStagingWait = absl::Seconds(2);

  // Called by Open for every record in the index: its key, namespace and id.
  using RecoveredFn = absl::FunctionRef<void(const BlockKey&, const std::string& ns, RecordId)>;
  // Called (from a tier thread, holding no tier lock) with records dropped because their
  // region was reclaimed or their read failed verification.
  using DroppedFn = absl::AnyInvocable<void(std::vector<std::pair<BlockKey, RecordId>>)>;

  static absl::StatusOr<std::unique_ptr<DiskTier>> Open(const DiskTierOptions& options,
                                                        const Geometry& geometry,
                                                        RecoveredFn recovered, DroppedFn dropped);
  // Abandons reservations never submitted (as Erase), drains in-flight work, then closes the
  // index and the data file.
  ~DiskTier();
  DiskTier(const DiskTier&) = delete;
  DiskTier& operator=(const DiskTier&) = delete;

  // Creates a record for `key` in namespace `ns` whose bytes are not yet submitted: never
  // waits, never does I/O. Reads of it wait until its write lands (as for a write in flight)
  // or fail when it is abandoned; Erase abandons it. Drain waits for it until it is
  // submitted or erased.
  // InvalidArgument when `ns` is not 1 to 128 bytes (what an index entry holds).
  // REQUIRES: the id is passed to Submit exactly once, erased or not (an erased reservation
  // keeps its id until then).
  absl::StatusOr<RecordId> Reserve(const BlockKey& key, const std::string& ns);

  // Copies the block at `src` (block_bytes) into a staging buffer — waiting up to
  // kStagingWait for one — and queues its encoding and write. Beyond the registered staging
  // pool it borrows up to 4x as many plain buffers. On OK, `done` runs exactly once later (on
  // a tier thread) with the final status: whether the record became durable and indexed. On
  // error (an unknown or already-submitted id: NotFound / FailedPrecondition; no buffer in
  // time: ResourceExhausted) `done` is not called and the record is abandoned as by Erase
  // (reads waiting for it get an error). A record erased between Reserve and Submit: OK is
  // returned, nothing is written, and `done` gets Cancelled.
  // REQUIRES: the caller holds no lock that a tier callback takes (this may wait).
  absl::Status Submit(RecordId id, const void* src, absl::AnyInvocable<void(absl::Status)> done);

  // Reserve + Submit: starts writing the block at `src` as `key` in namespace `ns` and returns
  // the new record's id; on Submit's error the record is gone and the error returned (the
  // caller may then drop the block). REQUIRES: as Submit.
  absl::StatusOr<RecordId> Write(const BlockKey& key, const std::string& ns, const void* src,
                                 absl::AnyInvocable<void(absl::Status)> done);

  // Starts reading record `id`, verifying it is `key` of namespace `ns`, and decoding it into
  // `dst` (block_bytes). On any verification failure `dst` is zero-filled, the record is
  // dropped, and `done` gets DataLoss. Never waits: when every staging buffer is busy the read
  // queues; a read of a reservation, or of a record whose write is still in flight, waits
  // (inside the tier) for the write to land.
  // With a `claim` (tiers/read_claim.h) the reader may abandon the read: the tier claims `dst`
  // before it writes it, and once the reader has abandoned it the tier never touches `dst`
  // again (but see read_in_place: such a read's own bytes may still land until it settles). A read
  // abandoned before its I/O started (it waited for a staging buffer, or for its record's write) is
  // dropped without I/O; one already in the kernel settles first. Either way `done` gets Cancelled.
  absl::Status Read(RecordId id, const BlockKey& key, const std::string& ns, void* dst,
                    absl::AnyInvocable<void(absl::Status)> done,
                    std::shared_ptr<ReadClaim> claim = nullptr);

  // Removes record `id` if it still holds `key` (index entry and space accounting). A write
  // still in flight, or a reservation not yet submitted, is abandoned: its index entry is
  // never written. Idempotent. Never waits.
  absl::Status Erase(RecordId id, const BlockKey& key);

  // Waits until every write and read started so far has completed and its callback returned,
  // and every reservation has been submitted (and written) or erased.
  // REQUIRES: the caller holds no reservation it has yet to Submit or Erase.
  void Drain();

  DiskTierStats Stats();
  // When the record was written (Unix ms, from its index entry); 0 for an unknown id.
  uint64_t CreatedUnixMs(RecordId id);
  size_t block_bytes() const { return block_bytes_; }
  IoEngine& io() { return *io_; }

 private:
  struct Record {
    BlockKey key;
    std::string ns;
    IndexEntry entry;        // valid once placed
    bool live = false;       // slot in use (from Reserve)
    bool submitted = false;  // Submit took it (its write is queued or in flight)
    bool placed = false;     // has a location (written or being written)
    bool indexed = false;    // index entry written
    bool erased = false;     // erased before its write landed
  };
  struct PendingRead {
    RecordId id;
    BlockKey key;
    std::string ns;
    void* dst;
    absl::AnyInvocable<void(absl::Status)> done;
    std::shared_ptr<ReadClaim> claim;  // null: not abandonable
    // A read queued for a staging buffer holds its record's region (a read in flight, for the
    // region allocator) from the moment it is queued, so the region is not reclaimed under
    // it; StartRead lets go of it. -1: none held (the read waits for its record's write).
    int64_t held_region = -1;
  };
  struct WriteJob {
    RecordId id;
    BlockKey key;
    std::string ns;
    int staging;  // raw copy of the block (-1: encoded in place, in `out`)
    int out;      // the encoded record
    absl::AnyInvocable<void(absl::Status)> done;
    uint64_t sequence = 0;  // the order Submit handed it to the codec threads
  };

  DiskTier(const DiskTierOptions& options, const Geometry& geometry, DroppedFn dropped);
  absl::Status Init(RecoveredFn recovered);
  absl::Status Recover(RecoveredFn recovered);

  // The encoder thread runs tasks in order: placing encoded writes, and callbacks that must
  // not run on a caller's thread.
  void EncoderLoop();
  void PostLocked(absl::AnyInvocable<void()> task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues the placement of the encoded write `sequence` once every earlier one is queued:
  // records are placed in the order they were submitted whatever order the codec threads
  // finish in, so a prefix written together lies on disk in order (read locality, and a
  // layout that does not depend on thread timing).
  void PostPlacement(uint64_t sequence, absl::AnyInvocable<void()> task);
  // A write's two steps: Encode (a codec thread: the codec and the checksums, into the record
  // buffer), then Place (the encoder thread, one record at a time: a place in a region, the
  // header's region and generation, the I/O).
  void Encode(WriteJob job);
  void Place(WriteJob job, absl::StatusOr<size_t> encoded, RecordHeader written);
  // Places record `id` (RegionAllocator::Allocate, reclaiming through ReclaimLocked).
  // Returns false if no region can take it now.
  bool PlaceLocked(RecordId id, uint32_t bytes, std::vector<std::pair<BlockKey, RecordId>>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ReclaimLocked(uint32_t region, uint64_t generation,
                             std::vector<std::pair<BlockKey, RecordId>>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWritten(WriteJob job, int encoded_staging, absl::Status io_status);
  // Starts a read that has staging buffer `staging` (or finishes it, when its record went
  // away meanwhile). Runs on the tier's own threads only (it may call `done`).
  void StartRead(PendingRead read, int staging);
  // Submits the I/O of a read whose location is taken (RegionAllocator::ReadStarted); on an
  // error nothing was submitted and the caller still owns the read.
  absl::Status SubmitReadIo(std::shared_ptr<PendingRead> read, int staging, const IndexEntry& at);
  // Waiters of a record whose write finished: started (written) or failed (never written).
  void ResumeWaiters(std::vector<PendingRead> waiters, bool written);
  std::vector<PendingRead> TakeWaitersLocked(RecordId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the reads waiting for record `id` with `why`, on the encoder thread.
  void FailWaitersLocked(RecordId id, const absl::Status& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Abandons a record that was never placed (a reservation): drops it, ends its op, and
  // fails the reads that waited for it.
  void AbandonLocked(RecordId id, const absl::Status& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A read's I/O landed: hands it to the codec threads (VerifyRead), or ends it when its
  // reader abandoned it meanwhile.
  void FinishRead(std::shared_ptr<PendingRead> read, int staging, uint64_t generation,
                  uint32_t region, bool in_place, absl::StatusOr<size_t> io_result);
  // Verifies and decodes a landed read into its destination (a codec thread).
  void VerifyRead(PendingRead& read, int staging, uint64_t generation, uint32_t region,
                  bool in_place, absl::StatusOr<size_t> io_result);
  // Whether record `at` is read in place: its payload straight into `dst` (uncompressed,
  // page-sized block, page-aligned destination), its header into the staging buffer.
  bool InPlaceRead(const IndexEntry& at, const void* dst) const;
  // May the tier write the read's destination? (Claims it; false once its reader abandoned it.)
  static bool ClaimDst(const PendingRead& read) {
    return read.claim == nullptr || read.claim->Claim();
  }
  // Ends a read its reader abandoned, without touching its destination. REQUIRES: mu_ not held.
  void EndAbandonedRead(PendingRead& read);
  void DropRecordLocked(RecordId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpFinished();
  // secure_erase: writes zeros over [offset, offset + bytes) of `region`. REQUIRES: mu_ NOT
  // held, and the caller already counted the write in the region (WriteStarted) and in
  // ops_in_flight_ (so the region is not reclaimed, nor the tier drained, before it lands).
  void SubmitZeroWrite(uint32_t region, uint64_t offset, uint32_t bytes);
  // Zeroes the used part of `region` synchronously (secure_erase, at reclaim).
  absl::Status ZeroRegionLocked(uint32_t region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DiskTierOptions options_;
  // options_.read_in_place where the kernel has transparent huge pages; set by Open.
  bool read_in_place_ = false;
  const Geometry geometry_;
  const size_t block_bytes_;
  const size_t max_record_bytes_;
  DroppedFn dropped_;

  std::unique_ptr<DiskIndex> index_;
  int fd_ = -1;
  int file_ = -1;  // index in io_
  // secure_erase: an aligned buffer of zeros (never written) of zeros_bytes_.
  void* zeros_ = nullptr;
  size_t zeros_bytes_ = 0;
  std::unique_ptr<IoEngine> io_;
  std::unique_ptr<StagingPool> staging_;
  std::unique_ptr<TaskPool> codec_pool_;

  Mutex mu_;
  std::vector<Record> records_ ABSL_GUARDED_BY(mu_);
  std::vector<RecordId> free_ids_ ABSL_GUARDED_BY(mu_);
  RegionAllocator regions_ ABSL_GUARDED_BY(mu_);
  // The encoder thread's queue, on a leaf lock of its own (taken under mu_ by PostLocked).
  Mutex task_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::deque<absl::AnyInvocable<void()>> tasks_ ABSL_GUARDED_BY(task_mu_);
  bool tasks_stopping_ ABSL_GUARDED_BY(task_mu_) = false;
  // Encoded writes that finished ahead of an earlier one, by sequence; the next sequence
  // to place. Submit takes sequences from next_write_sequence_.
  std::map<uint64_t, absl::AnyInvocable<void()>> encoded_early_ ABSL_GUARDED_BY(task_mu_);
  uint64_t next_placement_ ABSL_GUARDED_BY(task_mu_) = 0;
  std::atomic<uint64_t> next_write_sequence_{0};
  // Reads of records whose write has not landed yet.
  absl::flat_hash_map<RecordId, std::vector<PendingRead>> waiting_for_write_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Reservations, writes and reads not finished (callback not yet returned).
  uint64_t ops_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  DiskTierStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread encoder_;
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_DISK_TIER_H_
