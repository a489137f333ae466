#include "tiers/region_allocator.h"

#include <algorithm>
#include <cstdint>

#include "common/log.h"

namespace kvtier {

RegionAllocator::RegionAllocator(uint64_t region_bytes, uint32_t regions)
    : region_bytes_(region_bytes), regions_(regions) {}

void RegionAllocator::RestoreGeneration(uint32_t region, uint64_t generation) {
  regions_[region].generation = generation;
  next_generation_ = std::max(next_generation_, generation + 1);
}

void RegionAllocator::RestoreRecord(uint32_t region, uint64_t end) {
  Region& g = regions_[region];
  g.free = false;
  ++g.live_records;
  g.write_offset = std::max(g.write_offset, end);
}

int RegionAllocator::PickNext() const {
  for (size_t r = 0; r < regions_.size(); ++r) {
    if (regions_[r].free && static_cast<int>(r) != active_) return static_cast<int>(r);
  }
  // Reclaim the oldest region that no I/O is using (FIFO, as CacheLib's BlockCache does:
  // regions are reclaimed whole, never compacted).
  int next = -1;
  uint64_t oldest = UINT64_MAX;
  for (size_t r = 0; r < regions_.size(); ++r) {
    const Region& g = regions_[r];
    if (static_cast<int>(r) == active_ || g.writes_in_flight > 0 || g.reads_in_flight > 0) {
      continue;
    }
    if (g.generation < oldest) {
      oldest = g.generation;
      next = static_cast<int>(r);
    }
  }
  return next;
}

std::optional<RegionLocation> RegionAllocator::Allocate(uint32_t bytes, ReclaimFn reclaim) {
  if (active_ < 0 || regions_[active_].write_offset + bytes > region_bytes_) {
    const int next = PickNext();
    if (next < 0) return std::nullopt;
    const uint64_t generation = next_generation_++;
    if (absl::Status s = reclaim(static_cast<uint32_t>(next), generation); !s.ok()) {
      KVTIER_LOG(kError, "%s", s.ToString());
      return std::nullopt;
    }
    Region& g = regions_[next];
    g.generation = generation;
    g.write_offset = 0;
    g.live_records = 0;
    g.free = false;
    active_ = next;
  }
  Region& g = regions_[active_];
  RegionLocation at;
  at.region = static_cast<uint32_t>(active_);
  at.offset = uint64_t(active_) * region_bytes_ + g.write_offset;
  at.generation = g.generation;
  g.write_offset += bytes;
  ++g.writes_in_flight;
  ++g.live_records;
  return at;
}

void RegionAllocator::MaybeFree(uint32_t region) {
  Region& g = regions_[region];
  if (g.idle() && static_cast<int>(region) != active_) g.free = true;
}

void RegionAllocator::WriteStarted(uint32_t region) { ++regions_[region].writes_in_flight; }

void RegionAllocator::WriteLanded(uint32_t region) {
  --regions_[region].writes_in_flight;
  MaybeFree(region);
}

void RegionAllocator::ReadStarted(uint32_t region) { ++regions_[region].reads_in_flight; }

void RegionAllocator::ReadLanded(uint32_t region) {
  --regions_[region].reads_in_flight;
  MaybeFree(region);
}

void RegionAllocator::RecordDropped(uint32_t region) {
  Region& g = regions_[region];
  if (g.live_records > 0) --g.live_records;
  MaybeFree(region);
}

uint32_t RegionAllocator::free_regions() const {
  uint32_t n = 0;
  for (const Region& g : regions_) n += g.free ? 1 : 0;
  return n;
}

}  // namespace kvtier
