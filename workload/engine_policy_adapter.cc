// workload/engine_policy_adapter.cc — engine eviction policies as simulator policies (see
// engine_policy_adapter.h).

#include "workload/engine_policy_adapter.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/eviction/eviction_policy.h"

namespace kvtier::workload {
namespace {

// SplitMix64's finalizer: spreads consecutive ids over all 64 bits, as a key hash would be.
uint64_t MixId(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

[[noreturn]] void Fail(const char* policy, const std::string& what) {
  std::fprintf(stderr, "EnginePolicyAdapter(%s): %s\n", policy, what.c_str());
  std::abort();
}

}  // namespace

const std::vector<std::string>& EnginePolicyNames() {
  static const std::vector<std::string>* names = new std::vector<std::string>{
      "lru", "fifo", "clock", "sieve", "s3fifo", "arc", "tinylfu", "lfu", "adaptive"};
  return *names;
}

absl::StatusOr<std::unique_ptr<EnginePolicyAdapter>> EnginePolicyAdapter::Create(
    absl::string_view name, size_t capacity) {
  // kNoSlot (2^32 - 1) is the policies' "no slot" marker, so the last usable id is below it.
  if (capacity >= std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("capacity ", capacity, " exceeds the engine's slot id range"));
  }
  // A policy over 0 slots is not a case the engine has (a tier holds >= 1 block); give it
  // one slot, which Simulate never uses at capacity 0.
  absl::string_view base = name;
  const bool prefix_aware = absl::ConsumeSuffix(&base, "+prefix");
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      MakeEvictionPolicy(base, static_cast<uint32_t>(std::max<size_t>(capacity, 1)));
  if (!policy.ok()) return policy.status();
  return std::unique_ptr<EnginePolicyAdapter>(
      new EnginePolicyAdapter(std::move(*policy), capacity, prefix_aware));
}

EnginePolicyAdapter::EnginePolicyAdapter(std::unique_ptr<EvictionPolicy> policy, size_t capacity,
                                         bool prefix_aware)
    : policy_(std::move(policy)),
      block_of_slot_(capacity, 0),
      prefix_aware_(prefix_aware),
      name_(std::string(policy_->name()) + (prefix_aware ? "+prefix" : "")),
      depth_of_slot_(capacity, 0) {
  free_slots_.reserve(capacity);
  for (size_t s = capacity; s-- > 0;) free_slots_.push_back(static_cast<uint32_t>(s));
  slot_of_block_.reserve(capacity);
}

EnginePolicyAdapter::~EnginePolicyAdapter() = default;

const char* EnginePolicyAdapter::name() const { return name_.c_str(); }

void EnginePolicyAdapter::Insert(uint64_t id) {
  if (free_slots_.empty()) {
    Fail(name(), absl::StrCat("Insert(", id, ") with all ", capacity(), " slots in use"));
  }
  const uint32_t slot = free_slots_.back();
  if (!slot_of_block_.try_emplace(id, slot).second) {
    Fail(name(), absl::StrCat("Insert(", id, ") of a block already tracked"));
  }
  free_slots_.pop_back();
  block_of_slot_[slot] = id;
  depth_of_slot_[slot] = next_depth_;
  next_depth_ = 0;
  policy_->SetNextKey(MixId(id));
  policy_->SetNextDepth(depth_of_slot_[slot]);
  policy_->OnInsert(slot);
}

void EnginePolicyAdapter::Access(uint64_t id) {
  auto it = slot_of_block_.find(id);
  if (it != slot_of_block_.end()) policy_->OnAccess(it->second);
}

void EnginePolicyAdapter::Remove(uint64_t id) {
  auto it = slot_of_block_.find(id);
  if (it == slot_of_block_.end()) return;
  const uint32_t slot = it->second;
  slot_of_block_.erase(it);
  policy_->OnRemove(slot);
  free_slots_.push_back(slot);
}

std::optional<uint64_t> EnginePolicyAdapter::Victim() {
  if (slot_of_block_.empty()) return std::nullopt;
  if (!prefix_aware_) {
    const std::optional<SlotId> slot = policy_->PickVictim([](SlotId) { return true; });
    if (!slot.has_value()) return std::nullopt;
    return block_of_slot_[*slot];
  }
  // As the engine's EvictOne: the policy's 8 most evictable slots, the deepest of them, then
  // that slot requested from the policy by name so it records the eviction as its own.
  constexpr size_t kWindow = 8;
  std::optional<SlotId> best;
  size_t seen = 0;
  (void)policy_->PickVictim([&](SlotId s) {
    if (!best.has_value() || depth_of_slot_[s] > depth_of_slot_[*best]) best = s;
    return ++seen >= kWindow;
  });
  if (!best.has_value()) return std::nullopt;
  const SlotId chosen = *best;
  std::optional<SlotId> slot = policy_->PickVictim([&](SlotId s) { return s == chosen; });
  if (!slot.has_value()) slot = policy_->PickVictim([](SlotId) { return true; });
  if (!slot.has_value()) return std::nullopt;
  return block_of_slot_[*slot];
}

}  // namespace kvtier::workload
