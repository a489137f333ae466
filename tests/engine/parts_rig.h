// tests/engine/parts_rig.h — the engine's parts wired together without an Engine, for the
// tests that drive them directly: an emulated device with an offload stream, GPU and host
// tiers with LRU policies, a block table, namespaces "a" (id 0) and "b" (id 1), counters, a
// completion queue and a Placement over all of it.

#ifndef KVTIER_TESTS_ENGINE_PARTS_RIG_H_
#define KVTIER_TESTS_ENGINE_PARTS_RIG_H_

#include <cstring>
#include <memory>
#include <optional>

#include "device/emulated_device.h"
#include "engine/eviction/eviction_policy.h"
#include "engine/placement.h"
#include "gtest/gtest.h"
#include "tiers/gpu_tier.h"
#include "tiers/host_tier.h"

namespace kvtier::testing {

// A tier below host that takes every host copy it is offered and records what it was given.
class FakeLowerTier final : public LowerTier {
 public:
  explicit FakeLowerTier(Placement& p) : p_(p) {}
  std::shared_ptr<Notification> TakeHostCopy(const BlockKey& key, BlockEntry& e,
                                             SlotId slot) override {
    p_.mu().AssertHeld();
    taken.push_back(key);
    from_slots.push_back(slot);
    p_.Attach(key, e, TierKind::kDisk, static_cast<SlotId>(taken.size()));
    gate = std::make_shared<Notification>();
    return gate;
  }
  void Erase(const BlockKey& key, SlotId) override { erased.push_back(key); }

  std::vector<BlockKey> taken, erased;
  std::vector<SlotId> from_slots;
  std::shared_ptr<Notification> gate;

 private:
  Placement& p_;
};

class PartsRig {
 public:
  // 2 layers x 2 kv heads x 16 dim x fp16 x 4 tokens: 1 KiB blocks.
  const Geometry geometry{2, 2, 16, DType::kFloat16, 4};
  const size_t block = geometry.block_bytes();

  // REQUIRES: called once, before anything else. gpu_slots may be 0 (no GPU tier).
  void Make(uint32_t gpu_slots, uint32_t host_slots) {
    absl::StatusOr<std::unique_ptr<EmulatedDevice>> d = EmulatedDevice::Create({});
    ASSERT_TRUE(d.ok()) << d.status();
    device = std::move(*d);
    absl::StatusOr<std::unique_ptr<Stream>> s = device->CreateStream();
    ASSERT_TRUE(s.ok());
    offload = std::move(*s);
    TierArray<std::unique_ptr<EvictionPolicy>> policies;
    if (gpu_slots > 0) {
      absl::StatusOr<std::unique_ptr<GpuTier>> g = GpuTier::Create(*device, block, gpu_slots * block);
      ASSERT_TRUE(g.ok()) << g.status();
      gpu = std::move(*g);
      policies[TierKind::kGpu] = *MakeEvictionPolicy("lru", gpu_slots);
    }
    absl::StatusOr<std::unique_ptr<HostTier>> h =
        HostTier::Create(*device, block, host_slots * block);
    ASSERT_TRUE(h.ok()) << h.status();
    host = std::move(*h);
    policies[TierKind::kHost] = *MakeEvictionPolicy("lru", host_slots);
    planner = std::make_unique<CopyPlanner>(geometry, *device, 512 << 10);
    counters = std::make_unique<EngineCounters>(TierArray<bool>{{gpu_slots > 0, true, true}});
    Placement::Options o;
    o.block_bytes = block;
    o.disk_record_bytes = block;
    placement = std::make_unique<Placement>(
        o, table, TierArray<Tier*>{{gpu.get(), host.get(), nullptr}}, std::move(policies),
        *device, *offload, completions, *planner, *counters, namespaces, nullptr, nullptr);
    for (const char* ns : {"a", "b"}) {
      const uint32_t id = *namespaces.Create(ns);
      MutexLock lock(&placement->mu());
      placement->AddNamespace(id);
    }
  }

  // Waits for the offload stream and the completions, then drops every event (before the
  // device goes).
  void Close() {
    if (offload != nullptr) {
      EXPECT_TRUE(offload->Synchronize().ok());
    }
    completions.Drain();
    if (placement != nullptr) placement->ClearEvents();
    table.ForEach([](const BlockKey&, BlockEntry& e) {
      for (auto& r : e.ready) r.reset();
    });
    offload.reset();
  }

  // A block of namespace `ns` placed in tier t as a landed copy (no write in flight), with
  // `fill` in every byte (host tier only: after the slot's gate opens; 0 = leave the slot as
  // it is, and wait for nothing). Returns the slot, or nullopt when none could be had.
  std::optional<SlotId> Put(const BlockKey& key, TierKind t, uint32_t ns = 0, int fill = 0) {
    MutexLock lock(&placement->mu());
    SlotReuse reuse;
    std::optional<SlotId> slot = placement->AcquireSlot(t, ns, 0, &reuse);
    if (!slot) return std::nullopt;
    EXPECT_TRUE(reuse.OrderStream(*offload).ok());
    if (fill != 0) {
      if (reuse.gate != nullptr) reuse.gate->WaitForNotification();
      std::memset(host->Address(*slot).host, fill, block);
    }
    table.Upsert(key, [&](BlockEntry& e, bool inserted) {
      placement->mu().AssertHeld();
      e.ns_id = ns;
      if (inserted) placement->CountNewBlock(ns);
      placement->Attach(key, e, t, *slot);
    });
    return slot;
  }
  bool Has(const BlockKey& key, TierKind t) {
    return table.Find(key, [&](BlockEntry* e) { return e != nullptr && e->has(t); });
  }
  bool Cached(const BlockKey& key) {
    return table.Find(key, [&](BlockEntry* e) { return e != nullptr && e->has_any(); });
  }

  std::unique_ptr<EmulatedDevice> device;
  std::unique_ptr<Stream> offload;
  CompletionQueue completions;
  std::unique_ptr<GpuTier> gpu;
  std::unique_ptr<HostTier> host;
  std::unique_ptr<CopyPlanner> planner;
  std::unique_ptr<EngineCounters> counters;
  NamespaceRegistry namespaces{KeyHash::kXxh3, "test-model@1", 1};
  BlockTable table;
  std::unique_ptr<Placement> placement;
};

}  // namespace kvtier::testing

#endif  // KVTIER_TESTS_ENGINE_PARTS_RIG_H_
