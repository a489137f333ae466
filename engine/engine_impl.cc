// engine/engine_impl.cc — see engine_impl.h. LoadToGpuTier, Prefetch and hints:
// engine_impl_promote.cc.

#include "engine/engine_impl.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/log.h"
#include "engine/options.h"
#include "engine/pending_transfer.h"
#include "tiers/gpu_tier.h"
#include "tiers/host_tier.h"

namespace kvtier {
namespace {

constexpr TierKind kGpu = TierKind::kGpu;
constexpr TierKind kHost = TierKind::kHost;
constexpr TierKind kDisk = TierKind::kDisk;
constexpr TierKind kRemote = TierKind::kRemote;

// The interval of the sweep of expired blocks for the shortest time to live (0 = none).
absl::Duration SweepInterval(int64_t shortest_ttl_ms) {
  if (shortest_ttl_ms == 0) return absl::InfiniteDuration();
  return std::clamp(absl::Milliseconds(shortest_ttl_ms) / 4, absl::Milliseconds(10),
                    absl::Seconds(1));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  return EngineImpl::Open(options);
}

absl::StatusOr<std::unique_ptr<Engine>> EngineImpl::Open(const EngineOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<EngineImpl> engine(new EngineImpl(options));
  if (absl::Status s = engine->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(std::move(engine));
}

EngineImpl::EngineImpl(const EngineOptions& options)
    : options_(options),
      namespaces_(options.key_hash, options.model_fingerprint, options.geometry.Fingerprint()) {}

absl::Status EngineImpl::MakeParts() {
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(options_.device);
  if (!device.ok()) return device.status();
  device_ = std::move(*device);
  for (std::unique_ptr<Stream>* stream : {&onboard_, &gated_onboard_, &offload_}) {
    absl::StatusOr<std::unique_ptr<Stream>> s = device_->CreateStream();
    if (!s.ok()) return s.status();
    *stream = std::move(*s);
  }
  const size_t block = options_.geometry.block_bytes();
  if (options_.gpu_tier_bytes > 0) {
    absl::StatusOr<std::unique_ptr<GpuTier>> gpu =
        GpuTier::Create(*device_, block, options_.gpu_tier_bytes);
    if (!gpu.ok()) return gpu.status();
    tiers_[kGpu] = std::move(*gpu);
    if (options_.secure_erase) {
      absl::StatusOr<void*> zeros = device_->AllocatePinned(block);
      if (!zeros.ok()) return zeros.status();
      zeros_ = *zeros;
      std::memset(zeros_, 0, block);
    }
  }
  absl::StatusOr<std::unique_ptr<HostTier>> host =
      HostTier::Create(*device_, block, options_.host_tier_bytes);
  if (!host.ok()) return host.status();
  tiers_[kHost] = std::move(*host);
  TierArray<std::unique_ptr<EvictionPolicy>> policies;
  for (TierKind t : {kGpu, kHost}) {
    if (tiers_[t] == nullptr) continue;
    const std::string& name = t == kGpu ? options_.gpu_eviction : options_.host_eviction;
    absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
        MakeEvictionPolicy(name, tiers_[t]->num_slots());
    if (!policy.ok()) return policy.status();
    policies[t] = std::move(*policy);
  }
  TierArray<TierRates::Prior> priors;
  for (TierKind t : kAllTiers) {
    priors[t] = {options_.read_rate_priors[t].bytes_per_s,
                 absl::ToDoubleSeconds(options_.read_rate_priors[t].latency)};
  }
  counters_ = std::make_unique<EngineCounters>(
      TierArray<bool>{{tiers_[kGpu] != nullptr, true, !options_.disk.directory.empty(),
                       !options_.remote.seeds.empty()}},
      priors);
  external_ = std::make_unique<ExternalMemory>(*device_, options_.geometry);
  planner_ = std::make_unique<CopyPlanner>(options_.geometry, *device_,
                                           options_.paged_dma_min_part_bytes);
  // The prefetch budget (prefetcher.h, "The budget"): the configured bytes or half the top
  // tier, and, where hinted blocks can come from below the host tier, at most half the host
  // tier, since each one then holds a host slot too while it is read and copied up.
  const Tier& top = *tiers_[tiers_[kGpu] != nullptr ? kGpu : kHost];
  size_t budget = options_.prefetch_budget_bytes != 0 ? options_.prefetch_budget_bytes
                                                      : size_t{top.num_slots()} / 2 * block;
  if (!options_.disk.directory.empty() || !options_.remote.seeds.empty()) {
    budget = std::min(budget, size_t{tiers_[kHost]->num_slots()} / 2 * block);
  }
  budget = std::max(budget, block);  // a tier of one slot still prefetches one block
  prefetcher_ = std::make_unique<Prefetcher>(
      block, budget,
      Prefetcher::Hooks{[this](uint32_t ns_id, absl::Span<const BlockKey> keys) {
                          placement_->DestroyRetiredEvents();
                          // The handle is dropped: the promotion completes on its own.
                          return Promote(ns_id, keys, /*hinted=*/true).status();
                        },
                        [this] { placement_->SweepExpired(); }});
  placement_ = std::make_unique<Placement>(
      PlacementOptions(options_), table_, TierArray<Tier*>{{tiers_[kGpu].get(), tiers_[kHost].get(), nullptr}},
      std::move(policies), *device_, *offload_, completions_, *planner_, *counters_, namespaces_,
      prefetcher_.get(), zeros_);
  return absl::OkStatus();
}

absl::Status EngineImpl::Init() {
  if (absl::Status s = MakeParts(); !s.ok()) return s;
  for (const std::string& ns : options_.namespaces) {
    if (absl::Status s = CreateNamespace(ns); !s.ok()) return s;
  }
  if (!options_.disk.directory.empty()) {
    absl::StatusOr<std::unique_ptr<DiskMover>> disk = DiskMover::Open(
        options_.disk, options_.geometry, options_.secure_erase, *placement_, table_, namespaces_,
        completions_, *counters_,
        [this](const std::string& ns) { return RecoveredNamespace(ns); });
    if (!disk.ok()) return disk.status();
    disk_ = std::move(*disk);
    placement_->set_lower_tier(disk_.get());
  }
  if (!options_.remote.seeds.empty()) {
    absl::StatusOr<std::unique_ptr<RemoteMover>> remote =
        RemoteMover::Open(options_.remote, options_.geometry, options_.model_fingerprint,
                          options_.secure_erase, options_.tensor_parallel.Stores(options_.geometry),
                          *placement_, table_, namespaces_, completions_, *counters_);
    if (!remote.ok()) return remote.status();
    remote_ = std::move(*remote);
    placement_->set_remote_sink(remote_.get());
  }
  if (options_.metrics_port != 0) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(
        options_.metrics_port, options_.geometry.block_bytes(), [this] { return Stats(); });
    if (!server.ok()) return server.status();
    metrics_server_ = std::move(*server);
  }
  KVTIER_LOG(kInfo, "engine open: device %s; %s; gpu tier %u blocks, host tier %u blocks%s",
             device_->name(), options_.geometry.ToString(),
             tiers_[kGpu] ? tiers_[kGpu]->num_slots() : 0u, tiers_[kHost]->num_slots(),
             disk_ ? absl::StrFormat(", disk tier %d MiB at %s",
                                     disk_->tier().Stats().capacity_bytes >> 20,
                                     options_.disk.directory)
                   : std::string(""));
  if (remote_ != nullptr) {
    KVTIER_LOG(kInfo, "engine open: remote tier on %d seed node(s), %s, write policy %s",
               options_.remote.seeds.size(), options_.remote.tls ? "TLS" : "plain TCP",
               options_.remote.write_policy);
  }
  return absl::OkStatus();
}

EngineImpl::~EngineImpl() {
  metrics_server_.reset();  // its thread calls Stats(): stop it before anything goes away
  if (prefetcher_ != nullptr) prefetcher_->Stop();
  // Drain the streams so no completion runs against a dying engine. A stream may be gated on
  // a disk read or a copy-out, so the disk mover lives until the streams are drained.
  for (Stream* s : {onboard_.get(), gated_onboard_.get(), offload_.get()}) {
    if (s == nullptr) continue;
    if (absl::Status st = s->Synchronize(); !st.ok()) {
      KVTIER_LOG(kError, "engine close: a transfer failed: %s", st.ToString());
    }
  }
  completions_.Drain();  // the streams' completions, posted by now
  if (remote_ != nullptr) {
    // Reads and writes end by their deadlines; their bookkeeping runs here.
    remote_->Drain();
    completions_.Drain();
    placement_->set_remote_sink(nullptr);
  }
  if (disk_ != nullptr) {
    disk_->Drain();
    completions_.Drain();  // the disk's completions, while the mover they refer to is alive
    placement_->set_lower_tier(nullptr);
    disk_.reset();  // runs what closing the disk tier posts
  }
  // A completion may have enqueued more (secure_erase zeroes a freed GPU slot).
  if (offload_ != nullptr) (void)offload_->Synchronize();
  onboard_.reset();
  gated_onboard_.reset();
  offload_.reset();
  if (placement_ != nullptr) placement_->ClearEvents();
  table_.ForEach([](const BlockKey&, BlockEntry& e) {
    for (auto& r : e.ready) r.reset();
  });
  for (auto& t : tiers_) t.reset();
  remote_.reset();
  if (zeros_ != nullptr) (void)device_->FreePinned(zeros_);
}

// ----------------------------------------------------------------------------- namespaces

absl::StatusOr<uint32_t> EngineImpl::AddNamespace(absl::string_view ns) {
  absl::StatusOr<uint32_t> id = namespaces_.Create(ns);
  if (!id.ok()) return id.status();
  MutexLock lock(&placement_->mu());
  placement_->AddNamespace(*id);
  // Validate() checked every listed namespace's limits.
  auto limits = options_.namespace_limits.find(std::string(ns));
  if (limits != options_.namespace_limits.end()) ApplyLimits(*id, limits->second);
  return id;
}

absl::Status EngineImpl::CreateNamespace(absl::string_view ns) {
  return AddNamespace(ns).status();
}

absl::StatusOr<uint32_t> EngineImpl::RecoveredNamespace(const std::string& ns) {
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (space.ok()) return (*space)->id;
  return AddNamespace(ns);
}

void EngineImpl::ApplyLimits(uint32_t ns_id, const NamespaceLimits& limits) {
  prefetcher_->SetSweepInterval(SweepInterval(placement_->ApplyLimits(ns_id, limits)));
}

absl::Status EngineImpl::SetNamespaceLimits(absl::string_view ns, const NamespaceLimits& limits) {
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (!space.ok()) return space.status();
  if (absl::Status s = ValidateNamespaceLimits(limits, options_.geometry.block_bytes()); !s.ok()) {
    return absl::Status(s.code(), absl::StrFormat("SetNamespaceLimits('%s'): %s", ns, s.message()));
  }
  MutexLock lock(&placement_->mu());
  ApplyLimits((*space)->id, limits);
  return absl::OkStatus();
}

std::vector<std::string> EngineImpl::ListNamespaces() const { return namespaces_.List(); }

absl::Status EngineImpl::RegisterDeviceMemory(DevicePtr base, size_t bytes) {
  return external_->Register(base, bytes);
}

absl::Status EngineImpl::UnregisterDeviceMemory(DevicePtr base) {
  return external_->Unregister(base);
}

// ----------------------------------------------------------------------------- Match

absl::StatusOr<MatchResult> EngineImpl::Match(absl::string_view ns,
                                              absl::Span<const int32_t> tokens,
                                              absl::string_view extra) {
  ScopedLatency timed(counters_->match_latency);
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (!space.ok()) return space.status();
  const Namespace& n = **space;
  const uint32_t bt = options_.geometry.block_tokens;
  MatchResult result;
  const size_t blocks = tokens.size() / bt;
  const int64_t ttl_ms = n.counters.ttl_ms.load(std::memory_order_relaxed);
  const int64_t now_ms = ttl_ms > 0 ? absl::ToUnixMillis(absl::Now()) : 0;
  result.keys.reserve(blocks);
  result.tiers.reserve(blocks);
  BlockKey parent = n.hasher.root();
  for (size_t i = 0; i < blocks; ++i) {
    const BlockKey key = n.hasher.Chain(parent, tokens.subspan(i * bt, bt), extra);
    TierKind where = kHost;
    const bool hit = table_.Find(key, [&](BlockEntry* e) {
      if (e == nullptr || e->erased || e->ns_id != n.id || !e->has_any()) return false;
      if (ttl_ms > 0 && now_ms - e->stored_unix_ms >= ttl_ms) return false;  // expired
      where = e->best_tier();
      return true;
    });
    if (!hit) break;
    result.keys.push_back(key);
    result.tiers.push_back(where);
    parent = key;
  }
  // The rest of the chain may be in the remote tier: one question, by match_timeout.
  if (remote_ != nullptr && result.keys.size() < blocks) {
    std::vector<BlockKey> rest;
    rest.reserve(blocks - result.keys.size());
    for (size_t i = result.keys.size(); i < blocks; ++i) {
      parent = n.hasher.Chain(parent, tokens.subspan(i * bt, bt), extra);
      rest.push_back(parent);
    }
    const size_t found = remote_->MatchPrefix(n.id, rest);
    for (size_t i = 0; i < found; ++i) {
      result.keys.push_back(rest[i]);
      result.tiers.push_back(kRemote);
    }
  }
  result.matched_tokens = result.keys.size() * bt;
  const size_t missed = blocks - result.keys.size();
  counters_->match_calls.fetch_add(1, std::memory_order_relaxed);
  counters_->matched_blocks.fetch_add(result.keys.size(), std::memory_order_relaxed);
  counters_->missed_blocks.fetch_add(missed, std::memory_order_relaxed);
  n.counters.matched.fetch_add(result.keys.size(), std::memory_order_relaxed);
  n.counters.missed.fetch_add(missed, std::memory_order_relaxed);
  counters_->CountLookups(n.counters, {}, missed);
  return result;
}

// ----------------------------------------------------------------------------- Store

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::Store(const StoreRequest& r) {
  ScopedLatency timed(counters_->store_latency);
  placement_->DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = namespaces_.Find(r.ns);
  if (!space.ok()) return space.status();
  const Namespace& n = **space;
  const Geometry& g = options_.geometry;
  if (r.tokens.size() % g.block_tokens != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Store: %d tokens is not a multiple of block_tokens = %u (store full blocks only)",
        r.tokens.size(), g.block_tokens));
  }
  const size_t total = r.tokens.size() / g.block_tokens;
  const size_t count = r.buffers.num_blocks();
  if (count == 0) return absl::InvalidArgumentError("Store: no buffers given");
  if (r.first_block > total || count > total - r.first_block) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Store: blocks %d..%d requested but the %d tokens hold only %d blocks",
                        r.first_block, r.first_block + count - 1, r.tokens.size(), total));
  }
  const std::shared_ptr<ExternalMemory::Use> external = external_->Acquire(r.buffers);
  if (absl::Status s = planner_->ValidateBuffers(r.buffers, count, "Store", false); !s.ok()) {
    return s;
  }
  const std::vector<BlockKey> all = n.hasher.Keys(
      r.tokens.subspan(0, (r.first_block + count) * g.block_tokens), g.block_tokens, r.extra);
  absl::StatusOr<PendingTransfer> t = PendingTransfer::Create(*device_, completions_, "Store", 0);
  if (!t.ok()) return t.status();
  t->set_stream(offload_.get());

  enum class Found { kAbsent, kPresent, kErasedButBusy, kExpired };
  TransferHandleImpl::Counts counts;
  std::vector<BlockKey> stored;
  Placement::FailedTransfer failed;
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  {
    MutexLock lock(&placement_->mu());
    const uint64_t write_id = failed.write_id = placement_->OpenWrite();
    std::vector<BlockCopy> copies;
    std::vector<SlotReuse> reuses;
    for (size_t i = 0; i < count; ++i) {
      const BlockKey& key = all[r.first_block + i];
      auto find = [&] {
        return table_.Find(key, [&](BlockEntry* e) {
          placement_->mu().AssertHeld();
          if (e == nullptr) return Found::kAbsent;
          if (e->erased) return Found::kErasedButBusy;
          return placement_->Expired(*e, now_ms) ? Found::kExpired : Found::kPresent;
        });
      };
      Found found = find();
      if (found == Found::kExpired) {
        // Expired and not swept yet: it goes now, and the block is stored afresh.
        if (placement_->Erase(n.id, {&key, 1}) == 1) {
          n.counters.expired.fetch_add(1, std::memory_order_relaxed);
        }
        found = find();
      }
      if (disk_ != nullptr) disk_->RecordSeen(key);
      if (remote_ != nullptr) remote_->RecordSeen(key);
      if (found == Found::kPresent) {
        ++counts.present;
        continue;
      }
      SlotReuse reuse;
      std::optional<SlotId> slot = found == Found::kAbsent
                                       ? placement_->AcquireSlot(kHost, n.id, 0, &reuse)
                                       : std::nullopt;
      if (!slot) {
        ++counts.rejected;
        continue;
      }
      reuses.push_back(std::move(reuse));
      table_.Upsert(key, [&](BlockEntry& e, bool) {
        placement_->mu().AssertHeld();
        e.ns_id = n.id;
        e.depth = static_cast<uint32_t>(r.first_block + i);
        e.stored_unix_ms = now_ms;
        placement_->Attach(key, e, kHost, *slot);
        placement_->StartWrite(e, kHost, write_id, t->done());
      });
      placement_->CountNewBlock(n.id);
      stored.push_back(key);
      copies.push_back(BlockCopy{Endpoint::Caller(r.buffers, i),
                                 Endpoint::Slot(placement_->Address(kHost, *slot))});
    }
    counts.moved = stored.size();
    if (!copies.empty()) {
      (void)t->WaitAfter(r.after);
      for (const SlotReuse& reuse : reuses) (void)t->WaitForReuse(reuse);
      (void)t->Enqueue(*planner_, copies, /*layerwise=*/false);
      (void)t->Finish([this, stored, write_id, external, ns_id = n.id] {
        placement_->OnWritesLanded(kHost, stored, write_id);
        if (external != nullptr) external->Release();
        if (remote_ != nullptr) remote_->OnStored(ns_id, stored);  // write-through
      });
      // Blocks not (all) copied are invisible from now on, so no one reads garbage; their
      // slots return once the copies already enqueued are done.
      if (!t->ok()) placement_->WithdrawWrites(kHost, stored, &failed);
    }
    if (t->ok()) placement_->CloseWrite(write_id);
  }
  // Copies enqueued before a failure still read the caller's buffers and write the slots:
  // they finish before the slots are reused and before the caller hears of the error (and may
  // free its buffers).
  if (!t->ok()) return Fail(*t, failed);
  counters_->stored_blocks.fetch_add(counts.moved, std::memory_order_relaxed);
  n.counters.stored.fetch_add(counts.moved, std::memory_order_relaxed);
  counters_->deduplicated_blocks.fetch_add(counts.present, std::memory_order_relaxed);
  counters_->rejected_blocks.fetch_add(counts.rejected, std::memory_order_relaxed);
  counters_->tier(kHost).bytes_in.fetch_add(counts.moved * g.block_bytes(),
                                            std::memory_order_relaxed);
  TransferHandleImpl::Parts parts;
  parts.counts = counts;
  return std::unique_ptr<TransferHandle>(t->TakeHandle(std::move(parts)));
}

// ----------------------------------------------------------------------------- PlanLoad

absl::StatusOr<LoadPlan> EngineImpl::PlanLoad(const MatchResult& match, size_t prompt_tokens,
                                              size_t local_tokens, const ComputeModel& compute,
                                              bool layerwise) {
  const Geometry& g = options_.geometry;
  if (match.tiers.size() != match.keys.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PlanLoad: the match has %d keys but %d tiers (pass Match's result as it is)",
        match.keys.size(), match.tiers.size()));
  }
  if (local_tokens % g.block_tokens != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: local_tokens %d is not a multiple of block_tokens %d",
                        local_tokens, g.block_tokens));
  }
  const size_t local_blocks = local_tokens / g.block_tokens;
  if (local_blocks > match.tiers.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("PlanLoad: local_tokens %d is more than the %d matched tokens",
                        local_tokens, match.tiers.size() * g.block_tokens));
  }
  LoadPlanInput in;
  in.prompt_tokens = prompt_tokens;
  in.local_tokens = local_tokens;
  in.tiers = absl::MakeConstSpan(match.tiers).subspan(local_blocks);
  in.geometry = g;
  in.layerwise = layerwise;
  LoadCostModel cost;
  const TierRates& rates = counters_->rates();
  const uint64_t block = g.block_bytes();
  cost.d2d = rates.Rate(kGpu, block);
  cost.h2d = rates.Rate(kHost, block);
  // A tier the engine does not have is a gap: nothing planned can come from it.
  if (disk_ != nullptr) cost.stage[kDisk] = rates.Rate(kDisk, block);
  if (remote_ != nullptr) cost.stage[kRemote] = rates.Rate(kRemote, block);
  absl::StatusOr<LoadPlan> plan = kvtier::PlanLoad(in, cost, compute);
  if (!plan.ok()) {
    return absl::Status(plan.status().code(), absl::StrCat("PlanLoad: ", plan.status().message()));
  }
  return plan;
}

// ----------------------------------------------------------------------------- Load

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::Load(const LoadRequest& r) {
  ScopedLatency timed(counters_->load_latency);
  placement_->DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = namespaces_.Find(r.ns);
  if (!space.ok()) return space.status();
  const Namespace& n = **space;
  if (r.keys.empty()) return absl::InvalidArgumentError("Load: no keys given");
  const std::shared_ptr<ExternalMemory::Use> external = external_->Acquire(r.buffers);
  if (absl::Status s = planner_->ValidateBuffers(r.buffers, r.keys.size(), "Load", true);
      !s.ok()) {
    return s;
  }
  const Geometry& g = options_.geometry;
  absl::StatusOr<PendingTransfer> t =
      PendingTransfer::Create(*device_, completions_, "Load", g.num_layers);
  if (!t.ok()) return t.status();

  TierArray<uint64_t> from;   // bytes' source tiers
  TierArray<uint64_t> found;  // where each block was when the call came
  Placement::FailedTransfer failed;
  {
    MutexLock lock(&placement_->mu());
    // The blocks are held until this transfer's copies have run (not until its completion).
    // Keys not cached here are read from the remote tier, if there is one.
    std::vector<size_t> remote_reads;
    if (absl::Status s = StartRemoteReads(n.id, r.keys, /*passing=*/false, "Load", &remote_reads);
        !s.ok()) {
      return s;
    }
    const uint64_t id = failed.write_id = placement_->OpenWrite();
    if (absl::Status s = placement_->PinAll(n.id, r.ns, r.keys, "Load", &t->done(), id);
        !s.ok()) {
      placement_->CloseWrite(id);
      return s;
    }
    // Blocks whose only copy is on disk are first read into host slots (verified there). A
    // load that waits for a disk read (its own, or one already in flight) goes on its own
    // stream.
    Stream* stream = onboard_.get();
    // The disk reads started here go to the kernel one by one, not held in an IoPlug until
    // the loop ends: this thread takes the placement lock between them, and a thread holding
    // that lock can be blocked in a device call behind a Free that synchronizes the device,
    // which waits for a stream gated on a read held here. (That deadlock hung
    // EngineDiskTest.HintsBeyondTheHostTierWaitForRoomInsteadOfBeingSkipped once, in Promote.)
    for (size_t i = 0; i < r.keys.size(); ++i) {
      bool filling = false;
      const TierKind best = table_.Find(r.keys[i], [&](BlockEntry* e) {
        filling = e->host_fill != nullptr;
        return e->best_tier();
      });
      ++found[best];
      if (best == kGpu) continue;
      if (best == kHost) {
        if (filling) stream = gated_onboard_.get();
        continue;
      }
      if (absl::Status s = disk_->EnsureHostCopy(r.keys[i], /*passing=*/false); !s.ok()) {
        placement_->ReleaseReaders(r.keys, id);
        placement_->CloseWrite(id);
        return absl::Status(s.code(), absl::StrFormat("Load: block %d: %s", i, s.message()));
      }
      stream = gated_onboard_.get();
    }
    // Blocks read from the remote tier were found there, not in the host slot they fill.
    found[kHost] -= remote_reads.size();
    found[kRemote] += remote_reads.size();
    t->set_stream(stream);
    t->set_deadline(r.deadline);
    (void)t->WaitAfter(r.after);
    std::vector<BlockCopy> copies;
    copies.reserve(r.keys.size());
    for (size_t i = 0; i < r.keys.size(); ++i) {
      table_.Find(r.keys[i], [&](BlockEntry* e) {
        placement_->mu().AssertHeld();
        const TierKind at = e->best_tier();
        placement_->ConsumePrefetch(*e);
        // A host copy still being read from disk counts as the disk's bytes, not the host's.
        if (at != kHost || e->host_fill == nullptr) ++from[at];
        (void)t->WaitForCopy(*e, at, i);
        placement_->Touch(at, e->slot[at]);
        copies.push_back(BlockCopy{Endpoint::Slot(placement_->Address(at, e->slot[at])),
                                   Endpoint::Caller(r.buffers, i)});
      });
    }
    // The copies' time (after every gate) is a sample of the link they use: host → caller
    // when any block comes out of a host slot, else GPU tier → caller.
    const TierKind link = from[kGpu] == r.keys.size() ? kGpu : kHost;
    const uint64_t bytes = uint64_t{r.keys.size()} * g.block_bytes();
    TierRates* rates = &counters_->rates();
    (void)t->MeasureCopies(
        [rates, link] { rates->Started(link); },
        [rates, link, bytes](absl::Duration took) { rates->Finished(link, bytes, took); });
    (void)t->Enqueue(*planner_, copies, r.layerwise);
    (void)t->Finish([this, keys = r.keys, id, external] {
      placement_->OnReadsDone(keys, id);
      if (external != nullptr) external->Release();
    });
    if (t->ok()) placement_->CloseWrite(id);
  }
  // Copies enqueued before a failure still write the caller's buffers: they finish before
  // the caller hears of the error (and may free them), and the blocks are let go after.
  if (!t->ok()) {
    failed.read = r.keys;
    return Fail(*t, failed);
  }
  for (TierKind at : kAllTiers) {
    counters_->tier(at).bytes_out.fetch_add(from[at] * g.block_bytes(), std::memory_order_relaxed);
  }
  counters_->CountLookups(n.counters, found, 0);
  counters_->loaded_blocks.fetch_add(r.keys.size(), std::memory_order_relaxed);
  n.counters.loaded.fetch_add(r.keys.size(), std::memory_order_relaxed);
  for (const BlockKey& key : r.keys) {
    if (disk_ != nullptr) disk_->RecordSeen(key);
    if (remote_ != nullptr) remote_->RecordSeen(key);
  }
  TransferHandleImpl::Parts parts;
  parts.counts = TransferHandleImpl::Counts{r.keys.size(), 0, 0};
  parts.meters = Meters(n);
  return std::unique_ptr<TransferHandle>(t->TakeHandle(std::move(parts)));
}

// ----------------------------------------------------------------------------- erase, flush

absl::StatusOr<size_t> EngineImpl::Erase(absl::string_view ns, absl::Span<const BlockKey> keys) {
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (!space.ok()) return space.status();
  size_t erased;
  {
    MutexLock lock(&placement_->mu());
    erased = placement_->Erase((*space)->id, keys);
  }
  if (remote_ != nullptr) remote_->Erase(ns, keys);
  return erased;
}

absl::StatusOr<size_t> EngineImpl::EraseNamespace(absl::string_view ns) {
  absl::StatusOr<const Namespace*> space = namespaces_.Find(ns);
  if (!space.ok()) return space.status();
  size_t erased;
  {
    MutexLock lock(&placement_->mu());
    erased = placement_->EraseNamespace((*space)->id);
  }
  if (remote_ != nullptr) {
    // Every engine's blocks of the namespace, not only this one's: the tier is shared.
    if (absl::StatusOr<size_t> r = remote_->EraseNamespace(ns); !r.ok()) return r.status();
  }
  return erased;
}

absl::Status EngineImpl::Flush() {
  absl::Status first;
  // Streams first: a stream may be gated on a disk read or a copy-out, and copies may start
  // disk writes.
  for (Stream* s : {offload_.get(), onboard_.get(), gated_onboard_.get()}) {
    if (absl::Status st = s->Synchronize(); !st.ok() && first.ok()) first = st;
  }
  completions_.Drain();  // what the streams' callbacks posted
  if (disk_ != nullptr) disk_->Drain();
  if (remote_ != nullptr) remote_->Drain();
  completions_.Drain();  // what the disk's and the remote tier's callbacks posted
  placement_->DestroyRetiredEvents();
  return first;
}

// ----------------------------------------------------------------------------- stats

EngineStats EngineImpl::Stats() {
  placement_->DestroyRetiredEvents();
  EngineStats st;
  st.device = device_->name();
  st.block_bytes = options_.geometry.block_bytes();
  prefetcher_->Fill(&st.prefetch);
  counters_->Fill(&st);
  namespaces_.FillStats(&st);
  placement_->FillStats(&st);
  if (disk_ != nullptr) disk_->FillStats(&st.tiers[kDisk]);
  if (remote_ != nullptr) remote_->FillStats(&st);
  return st;
}

}  // namespace kvtier
