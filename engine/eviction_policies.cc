// engine/eviction_policies.cc — FIFO, CLOCK, SIEVE, S3-FIFO, ARC and W-TinyLFU (see the
// header for each algorithm, its paper, and how busy slots are treated).

#include "engine/eviction_policies.h"

#include <algorithm>
#include <bit>
#include <cassert>

namespace kvtier {
namespace policy_internal {

// ---------------------------------------------------------------------------------------------
// SlotLists

SlotLists::SlotLists(uint32_t num_slots, int num_lists)
    : newer_(num_slots, kNoSlot),
      older_(num_slots, kNoSlot),
      list_(num_slots, kNoList),
      front_(num_lists, kNoSlot),
      back_(num_lists, kNoSlot),
      size_(num_lists, 0) {}

void SlotLists::PushFront(int list, SlotId slot) {
  assert(slot < list_.size() && list_[slot] == kNoList);
  list_[slot] = static_cast<uint8_t>(list);
  newer_[slot] = kNoSlot;
  older_[slot] = front_[list];
  if (front_[list] != kNoSlot)
    newer_[front_[list]] = slot;
  else
    back_[list] = slot;
  front_[list] = slot;
  ++size_[list];
}

void SlotLists::PushBack(int list, SlotId slot) {
  assert(slot < list_.size() && list_[slot] == kNoList);
  list_[slot] = static_cast<uint8_t>(list);
  older_[slot] = kNoSlot;
  newer_[slot] = back_[list];
  if (back_[list] != kNoSlot)
    older_[back_[list]] = slot;
  else
    front_[list] = slot;
  back_[list] = slot;
  ++size_[list];
}

void SlotLists::InsertOlderThan(SlotId pos, SlotId slot) {
  assert(list_[pos] != kNoList && list_[slot] == kNoList);
  const int list = list_[pos];
  const SlotId after = older_[pos];
  list_[slot] = static_cast<uint8_t>(list);
  newer_[slot] = pos;
  older_[slot] = after;
  older_[pos] = slot;
  if (after != kNoSlot)
    newer_[after] = slot;
  else
    back_[list] = slot;
  ++size_[list];
}

void SlotLists::Remove(SlotId slot) {
  assert(slot < list_.size() && list_[slot] != kNoList);
  const int list = list_[slot];
  const SlotId n = newer_[slot];
  const SlotId o = older_[slot];
  if (n != kNoSlot)
    older_[n] = o;
  else
    front_[list] = o;
  if (o != kNoSlot)
    newer_[o] = n;
  else
    back_[list] = n;
  newer_[slot] = older_[slot] = kNoSlot;
  list_[slot] = kNoList;
  --size_[list];
}

void SlotLists::MoveToFront(int list, SlotId slot) {
  if (list_[slot] == list && front_[list] == slot) return;
  Remove(slot);
  PushFront(list, slot);
}

std::vector<SlotId> SlotLists::Order(int list) const {
  std::vector<SlotId> order;
  for (SlotId s = front_[list]; s != kNoSlot; s = older_[s]) order.push_back(s);
  return order;
}

// ---------------------------------------------------------------------------------------------
// GhostList

GhostList::GhostList(uint32_t capacity)
    : capacity_(capacity), key_(capacity), newer_(capacity, kNil), older_(capacity, kNil) {
  free_.reserve(capacity);
  for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
  index_.reserve(capacity);
}

void GhostList::Unlink(uint32_t node) {
  const uint32_t n = newer_[node];
  const uint32_t o = older_[node];
  if (n != kNil)
    older_[n] = o;
  else
    front_ = o;
  if (o != kNil)
    newer_[o] = n;
  else
    back_ = n;
  newer_[node] = older_[node] = kNil;
}

bool GhostList::Remove(uint64_t key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  const uint32_t node = it->second;
  index_.erase(it);
  Unlink(node);
  free_.push_back(node);
  return true;
}

void GhostList::PopBack() {
  if (back_ != kNil) Remove(key_[back_]);
}

void GhostList::PushFront(uint64_t key) {
  if (capacity_ == 0) return;
  Remove(key);  // a key is on the list at most once
  if (free_.empty()) PopBack();
  const uint32_t node = free_.back();
  free_.pop_back();
  key_[node] = key;
  newer_[node] = kNil;
  older_[node] = front_;
  if (front_ != kNil)
    newer_[front_] = node;
  else
    back_ = node;
  front_ = node;
  index_.emplace(key, node);
}

// ---------------------------------------------------------------------------------------------
// FrequencySketch

namespace {

// splitmix64's finalizer: a cheap, well-mixing 64-bit hash (the key hashes may be slot ids).
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kRowSeeds[] = {0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL,
                                  0x165667b19e3779f9ULL, 0xd6e8feb86659fd93ULL};

}  // namespace

FrequencySketch::FrequencySketch(uint32_t num_slots)
    // Width ~ the number of slots keeps collisions rare among the blocks that matter (those
    // cached and the candidates), as Caffeine sizes its sketch; 64 is a floor for tiny tiers.
    : width_(std::bit_ceil(std::max<uint32_t>(num_slots, 64))),
      table_(static_cast<size_t>(kDepth) * (width_ / 16), 0),
      sample_size_(10 * static_cast<uint64_t>(std::max<uint32_t>(num_slots, 1))) {}

FrequencySketch::FrequencySketch(uint32_t width, uint64_t sample_size)
    : width_(std::bit_ceil(std::clamp<uint32_t>(width, 64, uint32_t{1} << 30))),
      table_(static_cast<size_t>(kDepth) * (width_ / 16), 0),
      sample_size_(std::max<uint64_t>(sample_size, 1)) {}

void FrequencySketch::Locate(uint64_t key, int row, size_t* word, int* shift) const {
  const uint32_t i = static_cast<uint32_t>(Mix64(key + kRowSeeds[row])) & (width_ - 1);
  *word = static_cast<size_t>(row) * (width_ / 16) + i / 16;
  *shift = static_cast<int>(i % 16) * 4;
}

void FrequencySketch::Increment(uint64_t key) {
  for (int row = 0; row < kDepth; ++row) {
    size_t word;
    int shift;
    Locate(key, row, &word, &shift);
    if (((table_[word] >> shift) & 0xf) != 0xf) table_[word] += uint64_t{1} << shift;
  }
  if (++additions_ >= sample_size_) Halve();
}

uint32_t FrequencySketch::Estimate(uint64_t key) const {
  uint32_t estimate = 0xf;
  for (int row = 0; row < kDepth; ++row) {
    size_t word;
    int shift;
    Locate(key, row, &word, &shift);
    estimate = std::min(estimate, static_cast<uint32_t>((table_[word] >> shift) & 0xf));
  }
  return estimate;
}

void FrequencySketch::Halve() {
  // Shifting a word right by one halves all 16 counters at once; the mask drops the bit each
  // counter would otherwise take from its neighbour.
  for (uint64_t& w : table_) w = (w >> 1) & 0x7777777777777777ULL;
  additions_ /= 2;
}

}  // namespace policy_internal

// ---------------------------------------------------------------------------------------------
// FIFO

void FifoPolicy::OnInsert(SlotId slot) { lists_.PushFront(0, slot); }

void FifoPolicy::OnInsertCold(SlotId slot) { lists_.PushBack(0, slot); }

void FifoPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  (void)slot;
}

void FifoPolicy::OnRemove(SlotId slot) { lists_.Remove(slot); }

std::optional<SlotId> FifoPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  for (SlotId s = lists_.Back(0); s != kNoSlot; s = lists_.Newer(s)) {
    if (evictable(s)) return s;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// CLOCK

ClockPolicy::ClockPolicy(uint32_t num_slots)
    : prev_(num_slots, kNoSlot),
      next_(num_slots, kNoSlot),
      referenced_(num_slots, false),
      tracked_(num_slots, false) {}

void ClockPolicy::LinkBefore(SlotId pos, SlotId slot) {
  if (pos == kNoSlot) {
    prev_[slot] = next_[slot] = slot;
    return;
  }
  const SlotId p = prev_[pos];
  prev_[slot] = p;
  next_[slot] = pos;
  next_[p] = slot;
  prev_[pos] = slot;
}

void ClockPolicy::Unlink(SlotId slot) {
  next_[prev_[slot]] = next_[slot];
  prev_[next_[slot]] = prev_[slot];
  prev_[slot] = next_[slot] = kNoSlot;
}

void ClockPolicy::OnInsert(SlotId slot) {
  assert(slot < tracked_.size() && !tracked_[slot]);
  tracked_[slot] = true;
  referenced_[slot] = false;
  // Just behind the hand: the last slot it will reach, as a newly loaded page.
  LinkBefore(hand_, slot);
  if (hand_ == kNoSlot) hand_ = slot;
  ++size_;
}

void ClockPolicy::OnInsertCold(SlotId slot) {
  OnInsert(slot);
  hand_ = slot;
}

void ClockPolicy::OnAccess(SlotId slot) {
  assert(slot < tracked_.size() && tracked_[slot]);
  referenced_[slot] = true;
}

void ClockPolicy::OnRemove(SlotId slot) {
  assert(slot < tracked_.size() && tracked_[slot]);
  tracked_[slot] = false;
  referenced_[slot] = false;
  if (--size_ == 0) {
    hand_ = kNoSlot;
  } else if (hand_ == slot) {
    hand_ = next_[slot];
  }
  Unlink(slot);
}

std::optional<SlotId> ClockPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  if (size_ == 0) return std::nullopt;
  // Every slot is examined at most twice: once to clear its bit, once more to decide.
  const uint64_t max_steps = 2 * static_cast<uint64_t>(size_) + 1;
  bool skipped = false;
  SlotId s = hand_;
  for (uint64_t step = 0; step < max_steps; ++step) {
    const SlotId next = next_[s];
    if (referenced_[s]) {
      referenced_[s] = false;
      // Second chance: the slot goes behind the hand. While the hand moves with us that is
      // just advancing it; once it rests on a skipped slot, relink the slot there.
      if (!skipped) {
        hand_ = next;
      } else {
        Unlink(s);
        LinkBefore(hand_, s);
      }
    } else if (evictable(s)) {
      if (!skipped) hand_ = s;
      return s;
    } else {
      skipped = true;  // the hand stays here: this slot remains the next candidate
    }
    s = next;
  }
  return std::nullopt;
}

std::vector<SlotId> ClockPolicy::Order() const {
  std::vector<SlotId> order;
  if (hand_ == kNoSlot) return order;
  SlotId s = hand_;
  do {
    order.push_back(s);
    s = next_[s];
  } while (s != hand_);
  return order;
}

// ---------------------------------------------------------------------------------------------
// SIEVE

void SievePolicy::OnInsert(SlotId slot) {
  visited_[slot] = false;
  lists_.PushFront(0, slot);
}

void SievePolicy::OnInsertCold(SlotId slot) {
  visited_[slot] = false;
  // The hand examines its own slot first, then moves toward the head: put the copy just
  // behind it and move the hand onto it, so the sweep resumes where it was after it.
  if (hand_ == kNoSlot) {
    lists_.PushBack(0, slot);
  } else {
    lists_.InsertOlderThan(hand_, slot);
  }
  hand_ = slot;
}

void SievePolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  visited_[slot] = true;
}

void SievePolicy::OnRemove(SlotId slot) {
  // The hand rests on the evicted object's newer neighbour (kNoSlot: wrap to the tail).
  if (hand_ == slot) hand_ = lists_.Newer(slot);
  visited_[slot] = false;
  lists_.Remove(slot);
}

std::optional<SlotId> SievePolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  const uint32_t size = lists_.size(0);
  if (size == 0) return std::nullopt;
  const uint64_t max_steps = 2 * static_cast<uint64_t>(size) + 1;
  SlotId s = hand_ != kNoSlot ? hand_ : lists_.Back(0);
  for (uint64_t step = 0; step < max_steps; ++step) {
    if (visited_[s]) {
      visited_[s] = false;
    } else if (evictable(s)) {
      // The hand stops here; a repeated call before the removal finds the same slot.
      hand_ = s;
      return s;
    }
    s = lists_.Newer(s);
    if (s == kNoSlot) s = lists_.Back(0);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// S3-FIFO

S3FifoPolicy::S3FifoPolicy(uint32_t num_slots)
    : small_capacity_(std::max<uint32_t>(1, (num_slots + 9) / 10)),
      lists_(num_slots, 2),
      freq_(num_slots, 0),
      keys_(num_slots),
      // G holds as many entries as M holds objects.
      ghost_(std::max<uint32_t>(1, num_slots > small_capacity_ ? num_slots - small_capacity_
                                                               : 1)) {}

void S3FifoPolicy::OnInsert(SlotId slot) {
  const uint64_t key = keys_.Take(slot);
  freq_[slot] = 0;
  // A key still in G was evicted from S before its reuse came: it belongs in M.
  lists_.PushFront(ghost_.Remove(key) ? kMain : kSmall, slot);
}

void S3FifoPolicy::OnInsertCold(SlotId slot) {
  keys_.Take(slot);
  freq_[slot] = 0;
  lists_.PushBack(kSmall, slot);
}

void S3FifoPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  if (freq_[slot] < kMaxFrequency) ++freq_[slot];
}

void S3FifoPolicy::OnRemove(SlotId slot) {
  if (slot == pending_victim_) {
    // An eviction from S remembers the key; one from M does not (the paper's G only records
    // S's evictions, the objects that had no chance to prove themselves).
    if (lists_.ListOf(slot) == kSmall) ghost_.PushFront(keys_.Of(slot));
    pending_victim_ = kNoSlot;
  }
  freq_[slot] = 0;
  lists_.Remove(slot);
}

std::optional<SlotId> S3FifoPolicy::EvictFromSmall(absl::FunctionRef<bool(SlotId)> evictable) {
  SlotId s = lists_.Back(kSmall);
  while (s != kNoSlot) {
    const SlotId newer = lists_.Newer(s);
    if (freq_[s] >= kMoveToMainThreshold) {
      // Reused while in S: promote to M, access bits cleared. Busy or not, it leaves S.
      lists_.Remove(s);
      freq_[s] = 0;
      lists_.PushFront(kMain, s);
    } else if (evictable(s)) {
      return s;
    }  // else busy: it stays at S's tail end, still the first to go
    s = newer;
  }
  return std::nullopt;
}

std::optional<SlotId> S3FifoPolicy::EvictFromMain(absl::FunctionRef<bool(SlotId)> evictable) {
  // Terminates: a step either passes a slot for good or lowers a counter, and counters only
  // go down here (at most 3 reinsertions per slot).
  SlotId s = lists_.Back(kMain);
  while (s != kNoSlot) {
    SlotId newer = lists_.Newer(s);
    if (freq_[s] > 0) {
      --freq_[s];
      lists_.MoveToFront(kMain, s);
      if (newer == kNoSlot) newer = s;  // it was the front: look at it again
    } else if (evictable(s)) {
      return s;
    }
    s = newer;
  }
  return std::nullopt;
}

std::optional<SlotId> S3FifoPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  // Stable across repeated calls: the promotions of the first call change the queue sizes,
  // which could otherwise send a second call to the other queue.
  if (pending_victim_ != kNoSlot && lists_.Contains(pending_victim_) &&
      freq_[pending_victim_] == 0 && evictable(pending_victim_)) {
    return pending_victim_;
  }
  pending_victim_ = kNoSlot;
  const uint32_t small = lists_.size(kSmall);
  const bool small_first = small > 0 && (small >= small_capacity_ || lists_.size(kMain) == 0);
  std::optional<SlotId> victim;
  if (small_first) {
    victim = EvictFromSmall(evictable);
    if (!victim) victim = EvictFromMain(evictable);
  } else {
    victim = EvictFromMain(evictable);
    if (!victim) victim = EvictFromSmall(evictable);
    // EvictFromSmall may have promoted evictable slots (hit ones) into M: look once more.
    if (!victim) victim = EvictFromMain(evictable);
  }
  if (victim) pending_victim_ = *victim;
  return victim;
}

// ---------------------------------------------------------------------------------------------
// ARC

ArcPolicy::ArcPolicy(uint32_t num_slots)
    : capacity_(num_slots),
      lists_(num_slots, 2),
      keys_(num_slots),
      // With the cache full |B1| + |B2| <= c, so c entries each suffice; a ghost list at
      // capacity drops its LRU entry, which the directory rules would drop next anyway.
      b1_(std::max<uint32_t>(num_slots, 1)),
      b2_(std::max<uint32_t>(num_slots, 1)) {}

void ArcPolicy::TrimDirectory() {
  const uint64_t t1 = lists_.size(kT1);
  const uint64_t l1 = t1 + b1_.size();
  const uint64_t total = l1 + lists_.size(kT2) + b2_.size();
  if (l1 >= capacity_) {
    // Case IV.A: L1 is full. |T1| < c here (the new slot was free), so B1 has an entry.
    b1_.PopBack();
  } else if (total >= 2 * static_cast<uint64_t>(capacity_)) {
    b2_.PopBack();  // case IV.B: the directory is full
  }
}

void ArcPolicy::OnInsert(SlotId slot) {
  const uint64_t key = keys_.Take(slot);
  if (b1_.Contains(key)) {
    // Case II: T1 evicted this too early; favour recency.
    const uint32_t delta = std::max<uint32_t>(1, b2_.size() / b1_.size());
    p_ = std::min(capacity_, p_ + delta);
    b1_.Remove(key);
    lists_.PushFront(kT2, slot);
    return;
  }
  if (b2_.Contains(key)) {
    // Case III: T2 evicted this too early; favour frequency.
    const uint32_t delta = std::max<uint32_t>(1, b1_.size() / b2_.size());
    p_ = p_ > delta ? p_ - delta : 0;
    b2_.Remove(key);
    lists_.PushFront(kT2, slot);
    return;
  }
  TrimDirectory();  // case IV: a new key
  lists_.PushFront(kT1, slot);
}

void ArcPolicy::OnInsertCold(SlotId slot) {
  const uint64_t key = keys_.Take(slot);
  // Keep every key on one list only, so the directory bounds hold.
  if (!b1_.Remove(key) && !b2_.Remove(key)) TrimDirectory();
  lists_.PushBack(kT1, slot);
}

void ArcPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  lists_.MoveToFront(kT2, slot);  // case I: a hit in T1 or T2
}

void ArcPolicy::OnRemove(SlotId slot) {
  if (slot == pending_victim_) {
    (lists_.ListOf(slot) == kT1 ? b1_ : b2_).PushFront(keys_.Of(slot));
    pending_victim_ = kNoSlot;
  }
  lists_.Remove(slot);
}

std::optional<SlotId> ArcPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  // REPLACE(x, p). x is the block about to be inserted, known only if SetNextKey came first.
  const uint32_t t1 = lists_.size(kT1);
  const std::optional<uint64_t> next = keys_.Pending();
  const bool next_in_b2 = next.has_value() && b2_.Contains(*next);
  const bool t1_first = t1 > 0 && (t1 > p_ || (t1 == p_ && next_in_b2) || lists_.size(kT2) == 0);
  const int order[2] = {t1_first ? kT1 : kT2, t1_first ? kT2 : kT1};
  for (int list : order) {
    for (SlotId s = lists_.Back(list); s != kNoSlot; s = lists_.Newer(s)) {
      if (evictable(s)) {
        pending_victim_ = s;
        return s;
      }
    }
  }
  pending_victim_ = kNoSlot;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// W-TinyLFU

TinyLfuPolicy::TinyLfuPolicy(uint32_t num_slots)
    : window_capacity_(std::max<uint32_t>(1, num_slots / 100)),
      main_capacity_(num_slots > window_capacity_ ? num_slots - window_capacity_ : 0),
      protected_capacity_(static_cast<uint32_t>(uint64_t{main_capacity_} * 8 / 10)),
      lists_(num_slots, 3),
      keys_(num_slots),
      sketch_(num_slots) {}

void TinyLfuPolicy::Insert(SlotId slot, bool cold) {
  sketch_.Increment(keys_.Take(slot));
  if (cold) {
    lists_.PushBack(kWindow, slot);
  } else {
    lists_.PushFront(kWindow, slot);
  }
  Rebalance();
}

void TinyLfuPolicy::OnInsert(SlotId slot) { Insert(slot, /*cold=*/false); }

void TinyLfuPolicy::OnInsertCold(SlotId slot) { Insert(slot, /*cold=*/true); }

void TinyLfuPolicy::Rebalance() {
  while (lists_.size(kWindow) > window_capacity_ && main_size() < main_capacity_) {
    const SlotId s = lists_.Back(kWindow);
    lists_.Remove(s);
    lists_.PushFront(kProbation, s);
  }
}

void TinyLfuPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  sketch_.Increment(keys_.Of(slot));
  switch (lists_.ListOf(slot)) {
    case kWindow:
      lists_.MoveToFront(kWindow, slot);
      break;
    case kProbation:
      // Reused in probation: protect it; protected's LRU drops back to probation.
      lists_.Remove(slot);
      lists_.PushFront(kProtected, slot);
      if (lists_.size(kProtected) > protected_capacity_) {
        const SlotId demoted = lists_.Back(kProtected);
        lists_.Remove(demoted);
        lists_.PushFront(kProbation, demoted);
      }
      break;
    default:
      lists_.MoveToFront(kProtected, slot);
      break;
  }
}

void TinyLfuPolicy::OnRemove(SlotId slot) {
  if (slot == pending_victim_) {
    // The candidate that won the duel takes the victim's place in main.
    if (pending_admit_ != kNoSlot && pending_admit_ != slot &&
        lists_.ListOf(pending_admit_) == kWindow) {
      lists_.Remove(pending_admit_);
      lists_.PushFront(kProbation, pending_admit_);
    }
    pending_victim_ = pending_admit_ = kNoSlot;
  } else if (slot == pending_admit_) {
    pending_admit_ = kNoSlot;
  }
  lists_.Remove(slot);
}

std::optional<SlotId> TinyLfuPolicy::MainVictim(absl::FunctionRef<bool(SlotId)> evictable) const {
  for (int list : {kProbation, kProtected}) {
    for (SlotId s = lists_.Back(list); s != kNoSlot; s = lists_.Newer(s)) {
      if (evictable(s)) return s;
    }
  }
  return std::nullopt;
}

std::optional<SlotId> TinyLfuPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  pending_victim_ = pending_admit_ = kNoSlot;
  const SlotId candidate = lists_.Back(kWindow);
  // The insert to come will push the window's LRU slot out; with main full, it must win a
  // place there or go.
  const bool duel = candidate != kNoSlot && lists_.size(kWindow) >= window_capacity_ &&
                    main_size() > 0 && main_size() >= main_capacity_;
  if (duel) {
    const std::optional<SlotId> victim = MainVictim(evictable);
    const bool candidate_evictable = evictable(candidate);
    if (victim.has_value() &&
        (!candidate_evictable || sketch_.Estimate(keys_.Of(candidate)) >
                                     sketch_.Estimate(keys_.Of(*victim)))) {
      pending_victim_ = *victim;
      pending_admit_ = candidate;
      return victim;
    }
    if (candidate_evictable) {
      pending_victim_ = candidate;
      return candidate;
    }
  } else if (std::optional<SlotId> victim = MainVictim(evictable)) {
    pending_victim_ = *victim;
    return victim;
  }
  // Main has nothing evictable (or is empty): the window, from its LRU end.
  for (SlotId s = lists_.Back(kWindow); s != kNoSlot; s = lists_.Newer(s)) {
    if (evictable(s)) {
      pending_victim_ = s;
      return s;
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// LFU with aging

// The sketch ages as TinyLFU's does (halved after 10 x num_slots counts) but is 16 times
// wider: a prefix cache sees many more distinct keys than it holds (most prompt tails are
// never seen again), and where TinyLFU's sketch only ranks a candidate against one victim,
// here the count places every block in a class, so a collision that lifts a one-time block
// — say the head of a chain, while its tail stays in class 1 — breaks prefixes. 16 counters
// per slot keep the increments of one aging period below one per counter (32 bytes a slot).
AgedLfuPolicy::AgedLfuPolicy(uint32_t num_slots)
    : lists_(num_slots, kClasses),
      keys_(num_slots),
      sketch_(static_cast<uint32_t>(std::min<uint64_t>(uint64_t{num_slots} * 16, uint64_t{1} << 30)),
              10 * static_cast<uint64_t>(std::max<uint32_t>(num_slots, 1))),
      stamp_(num_slots, 0) {}

void AgedLfuPolicy::Touch(SlotId slot, uint64_t key) {
  sketch_.Increment(key);
  const uint32_t count = std::clamp<uint32_t>(sketch_.Estimate(key), 1, kClasses);
  stamp_[slot] = ++clock_;
  lists_.PushFront(static_cast<int>(count) - 1, slot);
}

void AgedLfuPolicy::OnInsert(SlotId slot) {
  assert(!lists_.Contains(slot));
  Touch(slot, keys_.Take(slot));
}

void AgedLfuPolicy::OnInsertCold(SlotId slot) {
  assert(!lists_.Contains(slot));
  keys_.Take(slot);
  stamp_[slot] = 0;
  lists_.PushBack(0, slot);
}

void AgedLfuPolicy::OnAccess(SlotId slot) {
  assert(lists_.Contains(slot));
  lists_.Remove(slot);
  Touch(slot, keys_.Of(slot));
}

void AgedLfuPolicy::OnRemove(SlotId slot) { lists_.Remove(slot); }

std::optional<SlotId> AgedLfuPolicy::PickVictim(absl::FunctionRef<bool(SlotId)> evictable) {
  std::optional<SlotId> best;
  double best_score = -1;
  for (int list = 0; list < kClasses; ++list) {
    for (SlotId s = lists_.Back(list); s != kNoSlot; s = lists_.Newer(s)) {
      if (!evictable(s)) continue;
      // The class's oldest evictable slot; idle time in clock ticks, at least 1.
      const double idle = static_cast<double>(clock_ - stamp_[s] + 1);
      const double score = idle / static_cast<double>((list + 1) * (list + 1));
      if (score > best_score) {
        best_score = score;
        best = s;
      }
      break;
    }
  }
  return best;
}

}  // namespace kvtier
