// tiers/region_allocator.h — where the disk tier's records go: the data file cut into equal
// regions, records appended to one active region, whole regions reclaimed oldest first.
//
// Each region has a generation (bumped when it is reclaimed; a record remembers the
// generation it was written in, so a stale index entry or a stale read is recognised), a
// write offset (bytes used), and counts of its live records, writes in flight and reads in
// flight. As CacheLib's BlockCache does, regions are never compacted: when the active region
// cannot take a record, the next one is a free region, else the region with the oldest
// generation that no write or read is using (its live records are dropped whole).
//
// Promises:
//   * A region with a write or a read in flight is never reclaimed, and a region with live
//     records, or anything in flight, is never handed out as free: bytes are never
//     overwritten under an I/O that still uses them.
//   * Reclaim goes through the caller: Allocate calls `reclaim(region, new_generation)`, which
//     must make the index forget the region's records (and record its new generation) before
//     any of its bytes are reused; if it fails, the region is left as it was, not used.
//   * Generations only grow; after Restore, new records never go into a region that was
//     active before (the tail of a region active at a crash is never rewritten in place).
//
// Not thread-safe, and holds no lock: a region's counts change together with the records in
// it, so the disk tier calls every method under its own lock (DiskTier::mu_), and `reclaim`
// runs under that lock too.

#ifndef KVTIER_TIERS_REGION_ALLOCATOR_H_
#define KVTIER_TIERS_REGION_ALLOCATOR_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace kvtier {

// Where a record was placed.
struct RegionLocation {
  uint32_t region = 0;
  uint64_t offset = 0;      // absolute, in the data file
  uint64_t generation = 0;  // of the region when placed
};

class RegionAllocator {
 public:
  // REQUIRES: region_bytes > 0, regions >= 2 (DiskTierOptions::Validate checks both).
  RegionAllocator(uint64_t region_bytes, uint32_t regions);

  // ---------------------------------------------------------------- recovery (before use)
  // The region's generation as the index holds it. Later generations start above it.
  void RestoreGeneration(uint32_t region, uint64_t generation);
  // A recovered record of `region` ending `end` bytes from the region's start.
  void RestoreRecord(uint32_t region, uint64_t end);

  // ---------------------------------------------------------------- placement
  // Makes the index forget `region`'s records and records `generation` as its new one
  // (durably, before the region's bytes are reused). An error leaves the region unused.
  using ReclaimFn = absl::FunctionRef<absl::Status(uint32_t region, uint64_t generation)>;
  // Places a record of `bytes` in the active region, or, when it does not fit, in a new
  // active region: a free one, else the oldest one with no I/O in flight; either is
  // reclaimed through `reclaim` first (which may call RecordDropped for the records it
  // drops). The record counts as live and as a
  // write in flight in its region. nullopt when no region can take it now (every other
  // region has I/O in flight) or `reclaim` failed (logged).
  // REQUIRES: bytes <= region_bytes.
  std::optional<RegionLocation> Allocate(uint32_t bytes, ReclaimFn reclaim);

  // ---------------------------------------------------------------- I/O in flight, records
  // An I/O on `region` began / landed. A region is reclaimed or freed only with none.
  void WriteStarted(uint32_t region);
  void WriteLanded(uint32_t region);
  void ReadStarted(uint32_t region);
  void ReadLanded(uint32_t region);
  // A live record of `region` went away (erased, dropped, failed).
  void RecordDropped(uint32_t region);

  // ---------------------------------------------------------------- observers
  uint32_t regions() const { return static_cast<uint32_t>(regions_.size()); }
  uint64_t region_bytes() const { return region_bytes_; }
  uint64_t generation(uint32_t region) const { return regions_[region].generation; }
  uint64_t used_bytes(uint32_t region) const { return regions_[region].write_offset; }
  uint32_t live_records(uint32_t region) const { return regions_[region].live_records; }
  bool is_free(uint32_t region) const { return regions_[region].free; }
  int active_region() const { return active_; }  // -1 before the first Allocate
  uint32_t free_regions() const;

 private:
  struct Region {
    uint64_t generation = 0;
    uint64_t write_offset = 0;  // bytes used, relative to the region start
    uint32_t live_records = 0;
    uint32_t writes_in_flight = 0;
    // Reads whose location is taken and whose bytes have not landed: the region is neither
    // reclaimed nor reused under them (a read of a reclaimed location would find another
    // record's header and fail with DataLoss, a spurious error for a block that was cached).
    uint32_t reads_in_flight = 0;
    bool free = true;

    bool idle() const { return live_records == 0 && writes_in_flight == 0 && reads_in_flight == 0; }
  };
  // A region that became idle, and is not the active one, is free again.
  void MaybeFree(uint32_t region);
  // The region to make active next: a free one, else the oldest one with no I/O in flight;
  // -1 if none.
  int PickNext() const;

  const uint64_t region_bytes_;
  std::vector<Region> regions_;
  int active_ = -1;
  uint64_t next_generation_ = 1;
};

}  // namespace kvtier

#endif  // KVTIER_TIERS_REGION_ALLOCATOR_H_
