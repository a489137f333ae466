#include "engine/engine_impl.h"

#include <cstring>

#include <algorithm>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "common/mutex.h"
#include "common/log.h"
#include "engine/transfer_handle.h"
#include "kernels/paged_kernels.h"
#include "tiers/gpu_tier.h"
#include "tiers/host_tier.h"

namespace kvtier {
namespace {

constexpr int kGpu = static_cast<int>(TierKind::kGpu);
constexpr int kHost = static_cast<int>(TierKind::kHost);
// What one paged-transfer kernel launch carries (kernels/paged_kernels_internal.h).
constexpr size_t kMaxPagedLayers = 128;
// The remedy ValidateBuffers names for a buffer that is not the engine's device memory.
constexpr char kNotDeviceMemoryHint[] =
    "allocate it on the engine's device, or register the memory it lies in with "
    "RegisterDeviceMemory";

uint8_t Bit(TierKind t) { return static_cast<uint8_t>(1u << static_cast<int>(t)); }

CopyOp MakeCopyOp(const SlotAddress& src, const SlotAddress& dst, size_t bytes) {
  CopyOp op;
  op.bytes = bytes;
  const bool src_host = src.host != nullptr;
  const bool dst_host = dst.host != nullptr;
  if (src_host) {
    op.kind = CopyOp::Kind::kHostToDevice;  // host → host never happens: see callers
    op.src_host = src.host;
    op.dst_device = dst.device;
  } else if (dst_host) {
    op.kind = CopyOp::Kind::kDeviceToHost;
    op.src_device = src.device;
    op.dst_host = dst.host;
  } else {
    op.kind = CopyOp::Kind::kDeviceToDevice;
    op.src_device = src.device;
    op.dst_device = dst.device;
  }
  return op;
}

SlotAddress Offset(const SlotAddress& a, size_t offset) {
  if (a.host != nullptr) return SlotAddress{DevicePtr(), static_cast<char*>(a.host) + offset};
  return SlotAddress{a.device + offset, nullptr};
}

// Merges each op into the previous one when both are of the same kind and contiguous on
// both sides (neighbouring slots copied to neighbouring caller buffers): fewer, larger copies.
// A merged device range must lie inside one allocation (`device.Contains`): two allocations
// that merely happen to be adjacent cannot be copied as one. Host ranges are always slots of
// the host tier's single region.
void Coalesce(const Device& device, std::vector<CopyOp>* ops) {
  if (ops->size() < 2) return;
  size_t out = 0;
  for (size_t i = 1; i < ops->size(); ++i) {
    CopyOp& prev = (*ops)[out];
    const CopyOp& op = (*ops)[i];
    const bool same_kind = prev.kind == op.kind;
    const bool src_next =
        prev.kind == CopyOp::Kind::kHostToDevice
            ? static_cast<const char*>(prev.src_host) + prev.bytes == op.src_host
            : prev.src_device + prev.bytes == op.src_device;
    const bool dst_next =
        prev.kind == CopyOp::Kind::kDeviceToHost
            ? static_cast<char*>(prev.dst_host) + prev.bytes == op.dst_host
            : prev.dst_device + prev.bytes == op.dst_device;
    const size_t merged = prev.bytes + op.bytes;
    const bool one_allocation =
        (prev.kind == CopyOp::Kind::kHostToDevice || device.Contains(prev.src_device, merged)) &&
        (prev.kind == CopyOp::Kind::kDeviceToHost || device.Contains(prev.dst_device, merged));
    if (same_kind && src_next && dst_next && one_allocation) {
      prev.bytes = merged;
    } else {
      (*ops)[++out] = op;
    }
  }
  ops->resize(out + 1);
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

absl::Status EngineImpl::Init() {
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
  {
    MutexLock lock(&placement_mu_);
    for (int t = 0; t < kNumTiers; ++t) {
      if (tiers_[t] == nullptr) continue;
      const std::string& name = t == kGpu ? options_.gpu_eviction : options_.host_eviction;
      absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
          MakeEvictionPolicy(name, tiers_[t]->num_slots());
      if (!policy.ok()) return policy.status();
      policies_[t] = std::move(*policy);
      slot_owner_[t].resize(tiers_[t]->num_slots());
      reuse_after_[t].resize(tiers_[t]->num_slots());
    }
  }
  for (const std::string& ns : options_.namespaces) {
    if (absl::Status s = CreateNamespace(ns); !s.ok()) return s;
  }
  if (!options_.disk.directory.empty()) {
    if (absl::Status s = OpenDisk(); !s.ok()) return s;
  }
  const Tier* top = tiers_[static_cast<int>(top_tier())].get();
  prefetch_budget_ = options_.prefetch_budget_bytes != 0
                         ? options_.prefetch_budget_bytes
                         : size_t{top->num_slots()} / 2 * block;
  prefetcher_ = std::thread([this] { PrefetcherLoop(); });
  if (options_.metrics_port != 0) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> server =
        MetricsServer::Start(options_.metrics_port, block, [this] { return Stats(); });
    if (!server.ok()) return server.status();
    metrics_server_ = std::move(*server);
  }
  KVTIER_LOG(kInfo, "engine open: device %s; %s; gpu tier %u blocks, host tier %u blocks%s",
             device_->name(), options_.geometry.ToString(),
             tiers_[kGpu] ? tiers_[kGpu]->num_slots() : 0u, tiers_[kHost]->num_slots(),
             disk_ ? absl::StrFormat(", disk tier %d MiB at %s",
                                     disk_->Stats().capacity_bytes >> 20, options_.disk.directory)
                   : std::string(""));
  return absl::OkStatus();
}

EngineImpl::~EngineImpl() {
  metrics_server_.reset();  // its thread calls Stats(): stop it before anything goes away
  if (prefetcher_.joinable()) {
    {
      MutexLock lock(&hint_mu_);
      stop_prefetcher_ = true;
    }
    prefetcher_.join();
  }
  // Drain both streams so no completion callback runs against a dying engine. A stream may
  // be gated on a disk read, so the disk tier lives until the streams are drained.
  for (Stream* s : {onboard_.get(), gated_onboard_.get(), offload_.get()}) {
    if (s == nullptr) continue;
    if (absl::Status st = s->Synchronize(); !st.ok()) {
      KVTIER_LOG(kError, "engine close: a transfer failed: %s", st.ToString());
    }
  }
  completions_.Drain();  // the streams' completions, posted by now
  if (disk_ != nullptr) {
    disk_->Drain();
    disk_.reset();
    completions_.Drain();  // the disk's completions (closing it may cancel some)
  }
  // A completion may have enqueued more (secure_erase zeroes a freed GPU slot).
  if (offload_ != nullptr) (void)offload_->Synchronize();
  onboard_.reset();
  gated_onboard_.reset();
  offload_.reset();
  {
    MutexLock lock(&placement_mu_);
    for (auto& events : reuse_after_) events.clear();
    retired_events_.clear();
  }
  table_.ForEach([](const BlockKey&, BlockEntry& e) {
    for (auto& r : e.ready) r.reset();
  });
  for (auto& t : tiers_) t.reset();
  if (zeros_ != nullptr) (void)device_->FreePinned(zeros_);
}

// ----------------------------------------------------------------------------- namespaces

absl::Status EngineImpl::CreateNamespace(absl::string_view ns) {
  if (absl::Status s = ValidateNamespaceName(ns); !s.ok()) return s;
  uint32_t id;
  {
    MutexLock lock(&ns_mu_);
    if (ns_by_name_.contains(ns)) {
      return absl::AlreadyExistsError(absl::StrFormat("namespace '%s' already exists", ns));
    }
    id = static_cast<uint32_t>(namespaces_.size());
    namespaces_.push_back(std::make_unique<Namespace>(
        Namespace{std::string(ns), id,
                  KeyHasher(options_.key_hash, ns, options_.model_fingerprint,
                            options_.geometry.Fingerprint())}));
    ns_by_name_[std::string(ns)] = id;
  }
  MutexLock lock(&placement_mu_);
  if (ns_blocks_.size() <= id) {
    ns_blocks_.resize(id + 1, 0);
    ns_tier_blocks_.resize(id + 1, std::array<size_t, kNumTiers>{});
    ns_quota_blocks_.resize(id + 1, std::array<size_t, kNumTiers>{});
    ns_ttl_ms_.resize(id + 1, 0);
  }
  // Validate() checked every listed namespace's limits.
  auto limits = options_.namespace_limits.find(std::string(ns));
  if (limits != options_.namespace_limits.end()) ApplyLimits(id, limits->second);
  return absl::OkStatus();
}

absl::Status EngineImpl::SetNamespaceLimits(absl::string_view ns, const NamespaceLimits& limits) {
  absl::StatusOr<const Namespace*> space = FindNamespace(ns);
  if (!space.ok()) return space.status();
  if (absl::Status s = ValidateNamespaceLimits(limits, options_.geometry.block_bytes()); !s.ok()) {
    return absl::Status(s.code(), absl::StrFormat("SetNamespaceLimits('%s'): %s", ns, s.message()));
  }
  MutexLock lock(&placement_mu_);
  ApplyLimits((*space)->id, limits);
  return absl::OkStatus();
}

void EngineImpl::ApplyLimits(uint32_t ns_id, const NamespaceLimits& limits) {
  const size_t block = options_.geometry.block_bytes();
  ns_quota_blocks_[ns_id] = {limits.gpu_bytes / block, limits.host_bytes / block,
                             limits.disk_bytes / DiskRecordBytes()};
  const int64_t ttl_ms = limits.ttl == absl::InfiniteDuration()
                             ? 0
                             : std::max<int64_t>(1, absl::ToInt64Milliseconds(limits.ttl));
  ns_ttl_ms_[ns_id] = ttl_ms;
  {
    MutexLock ns_lock(&ns_mu_);
    namespaces_[ns_id]->counters->ttl_ms.store(ttl_ms, std::memory_order_relaxed);
  }
  int64_t shortest = 0;
  for (int64_t t : ns_ttl_ms_) {
    if (t > 0 && (shortest == 0 || t < shortest)) shortest = t;
  }
  MutexLock hint_lock(&hint_mu_);  // a leaf lock; unlocking wakes the sweeping thread
  sweep_interval_ = shortest == 0 ? absl::InfiniteDuration()
                                  : std::clamp(absl::Milliseconds(shortest) / 4,
                                               absl::Milliseconds(10), absl::Seconds(1));
}

std::vector<std::string> EngineImpl::ListNamespaces() const {
  MutexLock lock(&ns_mu_);
  std::vector<std::string> names;
  for (const auto& n : namespaces_) names.push_back(n->name);
  return names;
}

absl::StatusOr<const EngineImpl::Namespace*> EngineImpl::FindNamespace(absl::string_view ns) const {
  MutexLock lock(&ns_mu_);
  auto it = ns_by_name_.find(ns);
  if (it == ns_by_name_.end()) {
    return absl::NotFoundError(
        absl::StrFormat("namespace '%s' does not exist (create it with CreateNamespace or "
                        "EngineOptions::namespaces)",
                        absl::CHexEscape(ns)));
  }
  // Namespaces are never destroyed, so the pointer stays valid after the lock.
  return namespaces_[it->second].get();
}

// ----------------------------------------------------------------------------- registered memory

class EngineImpl::ExternalUse {
 public:
  ExternalUse(EngineImpl* engine, std::vector<uint64_t> bases)
      : engine_(engine), bases_(std::move(bases)) {}
  ~ExternalUse() { Release(); }
  ExternalUse(const ExternalUse&) = delete;
  ExternalUse& operator=(const ExternalUse&) = delete;

  // Idempotent. Called by the transfer's completion callback, before its handle reports it
  // finished, so UnregisterDeviceMemory succeeds once Wait() has returned.
  void Release() {
    if (released_.exchange(true, std::memory_order_acq_rel)) return;
    MutexLock lock(&engine_->external_mu_);
    for (uint64_t base : bases_) {
      auto it = engine_->external_.find(base);
      if (it != engine_->external_.end() && it->second.transfers > 0) --it->second.transfers;
    }
  }

 private:
  EngineImpl* const engine_;
  const std::vector<uint64_t> bases_;
  std::atomic<bool> released_{false};
};

std::shared_ptr<EngineImpl::ExternalUse> EngineImpl::UseExternal(const KvBuffers& buffers) {
  const Geometry& g = options_.geometry;
  std::vector<uint64_t> bases;
  MutexLock lock(&external_mu_);
  if (external_.empty()) return nullptr;
  auto note = [&](DevicePtr p, size_t bytes) {
    external_mu_.AssertHeld();
    auto it = external_.upper_bound(p.address());
    if (it == external_.begin()) return;
    --it;
    const uint64_t offset = p.address() - it->first;
    if (offset >= it->second.bytes || bytes > it->second.bytes - offset) return;
    if (bases.empty() || bases.back() != it->first) bases.push_back(it->first);
  };
  if (buffers.is_paged()) {
    const size_t layer_tensor_bytes = size_t{2} * buffers.pool().num_pages * g.part_bytes();
    for (DevicePtr layer : buffers.pool().layers) note(layer, layer_tensor_bytes);
  } else {
    for (DevicePtr block : buffers.blocks()) note(block, g.block_bytes());
  }
  if (bases.empty()) return nullptr;
  std::sort(bases.begin(), bases.end());
  bases.erase(std::unique(bases.begin(), bases.end()), bases.end());
  for (uint64_t base : bases) ++external_[base].transfers;
  return std::make_shared<ExternalUse>(this, std::move(bases));
}

absl::Status EngineImpl::RegisterDeviceMemory(DevicePtr base, size_t bytes) {
  MutexLock lock(&external_mu_);
  if (absl::Status s = device_->RegisterDeviceMemory(base, bytes); !s.ok()) return s;
  external_[base.address()] = ExternalRange{bytes, 0};
  return absl::OkStatus();
}

absl::Status EngineImpl::UnregisterDeviceMemory(DevicePtr base) {
  MutexLock lock(&external_mu_);
  auto it = external_.find(base.address());
  if (it != external_.end() && it->second.transfers > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "UnregisterDeviceMemory: [0x%x, +%d bytes) is in use by %d Store/Load transfers in "
        "flight; wait for their handles first",
        base.address(), it->second.bytes, it->second.transfers));
  }
  if (absl::Status s = device_->UnregisterDeviceMemory(base); !s.ok()) return s;
  if (it != external_.end()) external_.erase(it);
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------- validation

absl::Status EngineImpl::ValidateBuffers(const KvBuffers& buffers, size_t expected_blocks,
                                         const char* op) const {
  const Geometry& g = options_.geometry;
  if (buffers.num_blocks() != expected_blocks) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %d buffers given for %d blocks", op,
                                                      buffers.num_blocks(), expected_blocks));
  }
  if (!buffers.is_paged()) {
    for (size_t i = 0; i < buffers.blocks().size(); ++i) {
      const DevicePtr p = buffers.blocks()[i];
      if (p.is_null()) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: buffer %d is null", op, i));
      }
      if (!device_->Contains(p, g.block_bytes())) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: buffer %d (device address 0x%x, %d bytes) is not device memory of %s (%s)", op,
            i, p.address(), g.block_bytes(), device_->name(), kNotDeviceMemoryHint));
      }
    }
    return absl::OkStatus();
  }
  const KvBuffers::PagedPool& pool = buffers.pool();
  if (pool.layers.size() != g.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: paged pool has %d layer tensors, the geometry has %u layers", op,
                        pool.layers.size(), g.num_layers));
  }
  if (pool.num_pages == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: paged pool has 0 pages", op));
  }
  if (pool.layout != PageLayout::kNhd && pool.layout != PageLayout::kHnd) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: paged pool has unknown page layout %d", op, static_cast<int>(pool.layout)));
  }
  if (pool.layers.size() > kMaxPagedLayers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: paged pools of more than %d layers are not supported", op, kMaxPagedLayers));
  }
  const size_t layer_tensor_bytes = size_t{2} * pool.num_pages * g.part_bytes();
  for (size_t l = 0; l < pool.layers.size(); ++l) {
    if (pool.layers[l].is_null() || !device_->Contains(pool.layers[l], layer_tensor_bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: paged pool layer %d (device address 0x%x, %d bytes for %u pages) is not device "
          "memory of %s (%s)",
          op, l, pool.layers[l].address(), layer_tensor_bytes, pool.num_pages, device_->name(),
          kNotDeviceMemoryHint));
    }
  }
  // A load writes the pages: two blocks into one page would race.
  const bool writes_pages = std::string_view(op) == "Load";
  absl::flat_hash_map<uint32_t, size_t> first_block_of_page;
  for (size_t i = 0; i < buffers.pages().size(); ++i) {
    if (buffers.pages()[i] >= pool.num_pages) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: page %u for block %d is out of range (pool has %u pages)", op,
                          buffers.pages()[i], i, pool.num_pages));
    }
    if (writes_pages) {
      auto [it, inserted] = first_block_of_page.try_emplace(buffers.pages()[i], i);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: page %u is given for blocks %d and %d", op,
                            buffers.pages()[i], it->second, i));
      }
    }
  }
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------- copies

EngineImpl::Endpoint EngineImpl::CallerEndpoint(const KvBuffers& buffers, size_t i) {
  if (buffers.is_paged()) return Endpoint{SlotAddress{}, &buffers.pool(), buffers.pages()[i]};
  return Endpoint{SlotAddress{buffers.blocks()[i], nullptr}};
}

SlotAddress EngineImpl::EndpointAddress(const Endpoint& e, uint32_t layer, KvPart part) const {
  const Geometry& g = options_.geometry;
  if (e.pool != nullptr) {
    // [2][num_pages][page_tokens][kv_heads][head_dim] per layer.
    const uint64_t index = uint64_t{static_cast<uint32_t>(part)} * e.pool->num_pages + e.page;
    return SlotAddress{e.pool->layers[layer] + index * g.part_bytes(), nullptr};
  }
  return Offset(e.at, g.Offset(layer, part));
}

void EngineImpl::AppendCopyOps(const BlockCopy& copy, int layer, std::vector<CopyOp>* ops) const {
  const Geometry& g = options_.geometry;
  const bool paged = copy.src.pool != nullptr || copy.dst.pool != nullptr;
  if (!paged) {
    // Both sides in kvtier layout: a whole block, or one layer's K and V, is contiguous.
    if (layer < 0) {
      ops->push_back(MakeCopyOp(copy.src.at, copy.dst.at, g.block_bytes()));
    } else {
      const size_t off = g.Offset(static_cast<uint32_t>(layer), KvPart::kKey);
      ops->push_back(
          MakeCopyOp(Offset(copy.src.at, off), Offset(copy.dst.at, off), g.layer_bytes()));
    }
    return;
  }
  const uint32_t first = layer < 0 ? 0 : static_cast<uint32_t>(layer);
  const uint32_t last = layer < 0 ? g.num_layers : first + 1;
  for (uint32_t l = first; l < last; ++l) {
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      ops->push_back(MakeCopyOp(EndpointAddress(copy.src, l, part),
                                EndpointAddress(copy.dst, l, part), g.part_bytes()));
    }
  }
}

bool EngineImpl::UsesPagedKernel(const BlockCopy& copy) const {
  const Endpoint& pool_side = copy.src.pool != nullptr ? copy.src : copy.dst;
  const Endpoint& block_side = copy.src.pool != nullptr ? copy.dst : copy.src;
  if (pool_side.pool == nullptr) return false;
  // Device ↔ pool: always the kernel (one launch instead of a copy per part, at device
  // memory speed). Host ↔ pool: DMA for large contiguous parts, zero-copy kernel otherwise.
  if (block_side.at.host == nullptr) return true;
  return ChooseHostPagedPath(options_.geometry, pool_side.pool->layout,
                             options_.paged_dma_min_part_bytes) ==
         HostPagedPath::kZeroCopyKernel;
}

void EngineImpl::AddToPagedTransfers(const BlockCopy& copy,
                                     std::vector<PagedTransfer>* transfers) const {
  const bool to_pool = copy.dst.pool != nullptr;
  const Endpoint& pool_side = to_pool ? copy.dst : copy.src;
  const Endpoint& block_side = to_pool ? copy.src : copy.dst;
  const bool on_host = block_side.at.host != nullptr;
  const auto direction = to_pool ? PagedTransfer::Direction::kBlocksToPool
                                 : PagedTransfer::Direction::kPoolToBlocks;
  PagedTransfer* t = nullptr;
  for (PagedTransfer& candidate : *transfers) {
    if (candidate.direction == direction && candidate.blocks_on_host == on_host &&
        candidate.layers == pool_side.pool->layers) {
      t = &candidate;
      break;
    }
  }
  if (t == nullptr) {
    t = &transfers->emplace_back();
    t->geometry = options_.geometry;
    t->layout = pool_side.pool->layout;
    t->direction = direction;
    t->num_pages = pool_side.pool->num_pages;
    t->layers = pool_side.pool->layers;
    t->blocks_on_host = on_host;
  }
  t->blocks.push_back(on_host ? reinterpret_cast<uintptr_t>(block_side.at.host)
                              : block_side.at.device.address());
  t->pages.push_back(pool_side.page);
}

absl::Status EngineImpl::EnqueueCopies(Stream& stream, const std::vector<BlockCopy>& copies,
                                       bool layerwise,
                                       const std::vector<std::shared_ptr<Event>>& layer_events) {
  // Copies in kvtier layout on both sides (and paged copies that go by DMA) become copy
  // ops; the rest become paged-transfer kernels, one per direction and side.
  std::vector<const BlockCopy*> dma;
  std::vector<PagedTransfer> transfers;
  dma.reserve(copies.size());
  for (const BlockCopy& c : copies) {
    if (UsesPagedKernel(c)) {
      AddToPagedTransfers(c, &transfers);
    } else {
      dma.push_back(&c);
    }
  }
  // One layer (layer ≥ 0) or whole blocks (layer < 0).
  std::vector<CopyOp> ops;
  auto enqueue = [&](int layer) -> absl::Status {
    ops.clear();
    for (const BlockCopy* c : dma) AppendCopyOps(*c, layer, &ops);
    Coalesce(*device_, &ops);
    if (!ops.empty()) {
      if (absl::Status s = stream.CopyBatch(ops); !s.ok()) return s;
    }
    for (const PagedTransfer& t : transfers) {
      PagedTransfer part = t;
      part.layer = layer;
      if (absl::Status s = stream.Launch(MakePagedTransferKernel(std::move(part))); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  };
  if (layerwise && !layer_events.empty()) {
    ops.reserve(copies.size() * 2);
    for (size_t l = 0; l < layer_events.size(); ++l) {
      if (absl::Status s = enqueue(static_cast<int>(l)); !s.ok()) return s;
      if (absl::Status s = stream.Record(*layer_events[l]); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  ops.reserve(copies.size());
  if (absl::Status s = enqueue(-1); !s.ok()) return s;
  for (const auto& e : layer_events) {
    if (absl::Status s = stream.Record(*e); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Event>> EngineImpl::NewEvent() {
  absl::StatusOr<std::unique_ptr<Event>> e = device_->CreateEvent();
  if (!e.ok()) return e.status();
  return std::shared_ptr<Event>(std::move(*e));
}

absl::StatusOr<std::vector<std::shared_ptr<Event>>> EngineImpl::NewEvents(size_t n) {
  std::vector<std::shared_ptr<Event>> events;
  events.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<std::shared_ptr<Event>> e = NewEvent();
    if (!e.ok()) return e.status();
    events.push_back(std::move(*e));
  }
  return events;
}

// ----------------------------------------------------------------------------- placement

void EngineImpl::Attach(const BlockKey& key, BlockEntry& e, TierKind t, SlotId slot,
                        bool cold) {
  const int ti = static_cast<int>(t);
  e.slot[ti] = slot;
  ++ns_tier_blocks_[e.ns_id][ti];
  if (t == TierKind::kDisk) return;  // the disk tier places and evicts records itself
  slot_owner_[ti][slot] = key;
  // Policies with history (ghosts, frequency) need the block's identity, not the slot's.
  policies_[ti]->SetNextKey(key.hi ^ (key.lo * 0x9e3779b97f4a7c15ULL));
  if (cold) {
    policies_[ti]->OnInsertCold(slot);
  } else {
    policies_[ti]->OnInsert(slot);
  }
}

void EngineImpl::Detach(const BlockKey& key, BlockEntry& e, TierKind t, bool release_slot) {
  const int ti = static_cast<int>(t);
  const SlotId slot = e.slot[ti];
  if (t == TierKind::kDisk) {
    if (absl::Status s = disk_->Erase(slot, key); !s.ok()) {
      KVTIER_LOG(kWarning, "erasing block %s from disk: %s", key.ToHex(), s.ToString());
    }
  } else {
    policies_[ti]->OnRemove(slot);
    if (release_slot) {
      if (options_.secure_erase) ZeroSlot(t, slot);
      tiers_[ti]->Release(slot);
    }
  }
  --ns_tier_blocks_[e.ns_id][ti];
  e.slot[ti] = kNoSlot;
  if (e.prefetched & Bit(t)) {
    e.prefetched &= static_cast<uint8_t>(~Bit(t));
    prefetch_unused_.fetch_add(1, std::memory_order_relaxed);
    ReleasePrefetchBudget(options_.geometry.block_bytes());
  }
  RetireEvent(std::move(e.ready[ti]));
  if (t == TierKind::kHost) e.host_fill.reset();
  e.writing &= static_cast<uint8_t>(~Bit(t));
}

void EngineImpl::ZeroSlot(TierKind t, SlotId slot) {
  const size_t block = options_.geometry.block_bytes();
  const SlotAddress at = tier(t)->Address(slot);
  if (t == TierKind::kHost) {
    // Nothing reads a host slot once its block has left it (readers pin the block, and disk
    // writes copy the bytes out before the eviction returns).
    std::memset(at.host, 0, block);
    return;
  }
  // A GPU slot may still be read by a demotion copy on the offload stream: the zeros follow
  // it on the same stream, and the slot's next writer waits for them.
  absl::StatusOr<std::shared_ptr<Event>> zeroed = NewEvent();
  absl::Status s = zeroed.ok() ? offload_->CopyToDevice(at.device, zeros_, block)
                               : zeroed.status();
  if (s.ok()) s = offload_->Record(**zeroed);
  if (s.ok()) {
    reuse_after_[static_cast<int>(t)][slot] = std::move(*zeroed);
    return;
  }
  KVTIER_LOG(kError, "secure_erase: zeroing GPU slot %u failed (%s); waiting for the stream",
             slot, s.ToString());
  (void)offload_->Synchronize();
}

void EngineImpl::StartWrite(BlockEntry& e, TierKind t, uint64_t write_id,
                            std::shared_ptr<Event> ready) {
  const int ti = static_cast<int>(t);
  e.writing |= Bit(t);
  e.write_id[ti] = write_id;
  RetireEvent(std::move(e.ready[ti]));
  e.ready[ti] = std::move(ready);
}

void EngineImpl::RetireEvent(std::shared_ptr<Event> event) {
  if (event != nullptr) retired_events_.push_back(std::move(event));
}

void EngineImpl::DestroyRetiredEvents() {
  std::vector<std::shared_ptr<Event>> retired;
  {
    MutexLock lock(&placement_mu_);
    retired.swap(retired_events_);
  }
  // Destroyed here, on a caller's thread, outside the lock.
}

void EngineImpl::DetachAll(const BlockKey& key, BlockEntry& e) {
  for (int t = 0; t < kNumTiers; ++t) {
    if (e.slot[t] != kNoSlot) Detach(key, e, static_cast<TierKind>(t));
  }
  --ns_blocks_[e.ns_id];
}

std::optional<SlotId> EngineImpl::AcquireSlot(TierKind t, std::shared_ptr<Event>* reuse_after,
                                              uint32_t ns_id, size_t pending) {
  Tier* tr = tier(t);
  const int ti = static_cast<int>(t);
  if (AtQuota(ns_id, ti, pending)) {
    // At its quota the namespace makes room among its own copies, never another's.
    const bool evicted = EvictOne(t, ns_id);
    MutexLock ns_lock(&ns_mu_);
    NamespaceCounters& c = *namespaces_[ns_id]->counters;
    (evicted ? c.quota_evictions : c.quota_rejections).fetch_add(1, std::memory_order_relaxed);
    if (!evicted) return std::nullopt;
  }
  std::optional<SlotId> slot = tr->Allocate();
  if (!slot && EvictOne(t)) slot = tr->Allocate();
  if (!slot && !leases_.empty()) {
    // Expired leases may be what holds the tier: reclaim them and try once more.
    ReapExpiredLeases();
    if (EvictOne(t)) slot = tr->Allocate();
  }
  if (!slot) return std::nullopt;
  *reuse_after = std::move(reuse_after_[static_cast<int>(t)][*slot]);
  reuse_after_[static_cast<int>(t)][*slot].reset();
  return slot;
}

bool EngineImpl::EvictOne(TierKind t, uint32_t only_ns) {
  const int ti = static_cast<int>(t);
  const std::vector<BlockKey>& owners = slot_owner_[ti];
  // Set when a GPU block that is its only copy could not be demoted (no host slot could be
  // had): then only blocks with a copy in a lower tier may go.
  bool spare_only_copies = false;
  auto evictable = [&](SlotId s) {
    return table_.Find(owners[s], [&](BlockEntry* e) {
      placement_mu_.AssertHeld();
      return e != nullptr && (only_ns == kAnyNs || e->ns_id == only_ns) && e->pins == 0 &&
             !e->is_writing(t) &&
             !(protect_prefetched_ && (e->prefetched & Bit(t))) &&
             !(spare_only_copies && !e->has(TierKind::kHost) && !e->has(TierKind::kDisk));
    });
  };
  const bool prefix_aware = options_.prefix_aware_eviction;
  const bool cost_aware = options_.cost_aware_eviction;
  auto pick_victim = [&]() -> std::optional<SlotId> {
    placement_mu_.AssertHeld();
    std::optional<SlotId> victim;
    if (!prefix_aware && !cost_aware) {
      victim = policies_[ti]->PickVictim(evictable);
    } else {
      // The policy's most evictable candidates, in its order; among them the cheapest to lose
      // (cost-aware: a copy in a lower tier remains, so nothing is written or recomputed),
      // then the deepest (prefix-aware: a chain's tail before its head, whose loss would make
      // the tail useless for prefix reuse), then the policy's own order.
      struct Candidate {
        SlotId slot;
        int cost;
        uint32_t depth;
      };
      std::vector<Candidate> window;
      const size_t width = std::max<uint32_t>(1, options_.eviction_window);
      (void)policies_[ti]->PickVictim([&](SlotId s) {
        if (!evictable(s)) return false;
        Candidate c{s, 0, 0};
        table_.Find(owners[s], [&](BlockEntry* e) {
          bool lower = false;
          for (int u = ti + 1; u < kNumTiers; ++u) lower = lower || e->slot[u] != kNoSlot;
          c.cost = cost_aware && !lower ? 1 : 0;
          c.depth = prefix_aware ? e->depth : 0;
        });
        window.push_back(c);
        return window.size() >= width;
      });
      if (!window.empty()) {
        const Candidate* best = &window[0];
        for (const Candidate& c : window) {
          if (c.cost < best->cost || (c.cost == best->cost && c.depth > best->depth)) best = &c;
        }
        const SlotId chosen = best->slot;
        // Ask the policy for exactly this slot, so that it records the eviction as its own
        // (ghost history, hand positions).
        victim = policies_[ti]->PickVictim([&](SlotId s) { return s == chosen; });
        if (!victim) victim = policies_[ti]->PickVictim(evictable);  // not expected
      }
    }
    return victim;
  };
  std::optional<SlotId> victim = pick_victim();
  if (!victim) return false;
  BlockKey key = slot_owner_[ti][*victim];

  // A GPU copy that is the block's only copy is demoted to the host tier, not dropped.
  bool demote = false;
  uint32_t victim_ns = 0;
  table_.Find(key, [&](BlockEntry* e) {
    demote = t == TierKind::kGpu && !e->has(TierKind::kHost) && !e->has(TierKind::kDisk);
    victim_ns = e->ns_id;
  });
  std::shared_ptr<Event> host_reuse;
  SlotId host_slot = kNoSlot;
  std::shared_ptr<Event> landed;
  if (demote) {
    absl::StatusOr<std::shared_ptr<Event>> ev = NewEvent();
    std::optional<SlotId> acquired =
        ev.ok() ? AcquireSlot(TierKind::kHost, &host_reuse, victim_ns) : std::nullopt;
    if (!acquired.has_value()) {
      // No host slot for it (every one pinned or in flight): dropping the block would lose
      // its only copy. Evict a block that keeps a copy below instead, or nothing (the
      // caller reports the tier full).
      spare_only_copies = true;
      victim = pick_victim();
      if (!victim) return false;
      key = slot_owner_[ti][*victim];
      demote = false;
    } else {
      host_slot = *acquired;
      landed = std::move(*ev);
      std::vector<CopyOp> ops;
      AppendCopyOps(BlockCopy{SlotEndpoint(TierKind::kGpu, *victim),
                              SlotEndpoint(TierKind::kHost, host_slot)},
                    -1, &ops);
      absl::Status s = host_reuse ? offload_->Wait(*host_reuse) : absl::OkStatus();
      if (s.ok()) s = offload_->CopyBatch(ops);
      if (s.ok()) s = offload_->Record(*landed);
      if (!s.ok()) {
        KVTIER_LOG(kError, "demoting block %s to host failed, dropping it: %s", key.ToHex(),
                   s.ToString());
        tier(TierKind::kHost)->Release(host_slot);
        host_slot = kNoSlot;
        landed.reset();
      }
    }
  }

  const uint64_t write_id = next_write_id_++;
  bool to_disk = false;
  table_.Mutate(key, [&](BlockEntry& e) {
    placement_mu_.AssertHeld();
    if (host_slot != kNoSlot) {
      Attach(key, e, TierKind::kHost, host_slot);
      StartWrite(e, TierKind::kHost, write_id, landed);
    }
    // A host copy that is the block's only copy goes down to disk, if the disk admits it.
    if (t == TierKind::kHost && !e.has(TierKind::kGpu) && !e.has(TierKind::kDisk)) {
      to_disk = StartDiskWrite(key, e);
    }
    Detach(key, e, t);
    if (e.has_any()) return false;
    --ns_blocks_[e.ns_id];
    return true;  // its last copy is gone
  });
  if (host_slot != kNoSlot) {
    // The demotion still reads the GPU slot: its next writer waits for the copy (or for the
    // zeroing secure_erase enqueued after it, on the same stream, whose event is set already).
    if (reuse_after_[ti][*victim] == nullptr) reuse_after_[ti][*victim] = landed;
    counters_[ti].demotions.fetch_add(1, std::memory_order_relaxed);
    counters_[kHost].bytes_in.fetch_add(options_.geometry.block_bytes(),
                                        std::memory_order_relaxed);
    counters_[ti].bytes_out.fetch_add(options_.geometry.block_bytes(), std::memory_order_relaxed);
    (void)WhenDone(*offload_,
                   [this, key, write_id] { OnWritesLanded(TierKind::kHost, {key}, write_id); });
  } else if (to_disk) {
    counters_[ti].demotions.fetch_add(1, std::memory_order_relaxed);
    counters_[ti].bytes_out.fetch_add(options_.geometry.block_bytes(), std::memory_order_relaxed);
  } else {
    counters_[ti].evictions.fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

absl::Status EngineImpl::WhenDone(Stream& stream, absl::AnyInvocable<void() &&> fn) {
  return stream.AddCallback(
      [queue = &completions_, fn = std::move(fn)]() mutable { queue->Post(std::move(fn)); });
}

void EngineImpl::OnWritesLanded(TierKind t, const std::vector<BlockKey>& keys,
                                uint64_t write_id) {
  const int ti = static_cast<int>(t);
  MutexLock lock(&placement_mu_);
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_mu_.AssertHeld();
      // Only the write this callback belongs to: the slot may have been freed and
      // reassigned since.
      if (!e.is_writing(t) || e.write_id[ti] != write_id) return false;
      e.writing &= static_cast<uint8_t>(~Bit(t));
      RetireEvent(std::move(e.ready[ti]));
      if (e.erased && !e.busy()) {
        DetachAll(key, e);
        return true;
      }
      return false;
    });
  }
}

void EngineImpl::Unpin(absl::Span<const BlockKey> keys) {
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_mu_.AssertHeld();
      --e.pins;
      if (e.erased && !e.busy()) {
        DetachAll(key, e);
        return true;
      }
      return false;
    });
  }
}

void EngineImpl::OnReadsDone(const std::vector<BlockKey>& keys) {
  MutexLock lock(&placement_mu_);
  Unpin(keys);
}

absl::Status EngineImpl::PinAll(uint32_t ns_id, absl::string_view ns,
                                absl::Span<const BlockKey> keys, const char* op) {
  const int64_t now_ms = ns_ttl_ms_[ns_id] > 0 ? absl::ToUnixMillis(absl::Now()) : 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const bool pinned = table_.Find(keys[i], [&](BlockEntry* e) {
      placement_mu_.AssertHeld();
      if (e == nullptr || e->erased || e->ns_id != ns_id || !e->has_any()) return false;
      if (Expired(*e, now_ms)) return false;
      ++e->pins;
      return true;
    });
    if (!pinned) {
      Unpin(keys.subspan(0, i));
      return absl::NotFoundError(absl::StrFormat(
          "%s: block %d (key %s) is not cached in namespace '%s'", op, i, keys[i].ToHex(), ns));
    }
  }
  return absl::OkStatus();
}

void EngineImpl::ReapExpiredLeases() {
  const absl::Time now = absl::Now();
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.expires > now) {
      ++it;
      continue;
    }
    KVTIER_LOG(kWarning,
               "lease %d on %d GPU slots expired without Release(); its slots return to the "
               "pool (the caller must not read them any more)",
               it->first, it->second.keys.size());
    Unpin(it->second.keys);
    leases_expired_.fetch_add(1, std::memory_order_relaxed);
    leases_.erase(it++);
  }
}

absl::Status EngineImpl::ReleaseLease(uint64_t lease_id) {
  MutexLock lock(&placement_mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return absl::OkStatus();  // expired and reaped already
  Unpin(it->second.keys);
  leases_.erase(it);
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------- Match

absl::StatusOr<MatchResult> EngineImpl::Match(absl::string_view ns,
                                              absl::Span<const int32_t> tokens,
                                              absl::string_view extra) {
  ScopedLatency timed(match_latency_);
  absl::StatusOr<const Namespace*> space = FindNamespace(ns);
  if (!space.ok()) return space.status();
  const uint32_t bt = options_.geometry.block_tokens;
  const uint32_t ns_id = (*space)->id;
  MatchResult result;
  const size_t n = tokens.size() / bt;
  const int64_t ttl_ms = (*space)->counters->ttl_ms.load(std::memory_order_relaxed);
  const int64_t now_ms = ttl_ms > 0 ? absl::ToUnixMillis(absl::Now()) : 0;
  result.keys.reserve(n);
  result.tiers.reserve(n);
  BlockKey parent = (*space)->hasher.root();
  for (size_t i = 0; i < n; ++i) {
    const BlockKey key = (*space)->hasher.Chain(parent, tokens.subspan(i * bt, bt), extra);
    TierKind where = TierKind::kHost;
    const bool hit = table_.Find(key, [&](BlockEntry* e) {
      if (e == nullptr || e->erased || e->ns_id != ns_id || !e->has_any()) return false;
      if (ttl_ms > 0 && now_ms - e->stored_unix_ms >= ttl_ms) return false;  // expired
      where = e->best_tier();
      return true;
    });
    if (!hit) break;
    result.keys.push_back(key);
    result.tiers.push_back(where);
    parent = key;
  }
  result.matched_tokens = result.keys.size() * bt;
  match_calls_.fetch_add(1, std::memory_order_relaxed);
  matched_blocks_.fetch_add(result.keys.size(), std::memory_order_relaxed);
  missed_blocks_.fetch_add(n - result.keys.size(), std::memory_order_relaxed);
  (*space)->counters->matched.fetch_add(result.keys.size(), std::memory_order_relaxed);
  (*space)->counters->missed.fetch_add(n - result.keys.size(), std::memory_order_relaxed);
  CountLookups(*(*space)->counters, {}, n - result.keys.size());
  return result;
}

void EngineImpl::CountLookups(NamespaceCounters& ns, const std::array<uint64_t, kNumTiers>& found,
                              uint64_t not_cached) {
  uint64_t below = not_cached;  // blocks found below tier t, or nowhere
  for (int t = kNumTiers - 1; t >= 0; --t) {
    if (!HasTier(t)) {
      below += found[t];
      continue;
    }
    if (found[t] > 0) {
      counters_[t].hits.fetch_add(found[t], std::memory_order_relaxed);
      ns.hits[t].fetch_add(found[t], std::memory_order_relaxed);
    }
    if (below > 0) {
      counters_[t].misses.fetch_add(below, std::memory_order_relaxed);
      ns.misses[t].fetch_add(below, std::memory_order_relaxed);
    }
    below += found[t];
  }
}

// ----------------------------------------------------------------------------- Store

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::Store(const StoreRequest& r) {
  ScopedLatency timed(store_latency_);
  DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = FindNamespace(r.ns);
  if (!space.ok()) return space.status();
  const Geometry& g = options_.geometry;
  if (r.tokens.size() % g.block_tokens != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Store: %d tokens is not a multiple of block_tokens = %u (store full blocks only)",
        r.tokens.size(), g.block_tokens));
  }
  const size_t total = r.tokens.size() / g.block_tokens;
  const size_t n = r.buffers.num_blocks();
  if (n == 0) return absl::InvalidArgumentError("Store: no buffers given");
  if (r.first_block > total || n > total - r.first_block) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Store: blocks %d..%d requested but the %d tokens hold only %d blocks",
                        r.first_block, r.first_block + n - 1, r.tokens.size(), total));
  }
  const std::shared_ptr<ExternalUse> external = UseExternal(r.buffers);
  if (absl::Status s = ValidateBuffers(r.buffers, n, "Store"); !s.ok()) return s;

  const std::vector<BlockKey> all = (*space)->hasher.Keys(
      r.tokens.subspan(0, (r.first_block + n) * g.block_tokens), g.block_tokens, r.extra);
  absl::StatusOr<std::shared_ptr<Event>> done = NewEvent();
  if (!done.ok()) return done.status();
  auto finished = std::make_shared<Notification>();
  absl::StatusOr<std::shared_ptr<Event>> after = NewEvent();
  if (!after.ok()) return after.status();

  TransferHandleImpl::Counts counts;
  std::vector<BlockKey> stored;
  std::vector<BlockCopy> copies;
  absl::Status failure;
  uint64_t failed_write_id = 0;
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  {
    MutexLock lock(&placement_mu_);
    const uint64_t write_id = next_write_id_++;
    std::vector<std::shared_ptr<Event>> waits;
    for (size_t i = 0; i < n; ++i) {
      const BlockKey& key = all[r.first_block + i];
      int state = 0;  // 0 absent, 1 present, 2 erased but still busy
      table_.Find(key, [&](BlockEntry* e) {
        placement_mu_.AssertHeld();
        state = e == nullptr ? 0 : e->erased ? 2 : Expired(*e, now_ms) ? 3 : 1;
      });
      if (state == 3) {
        // Expired and not swept yet: it goes now, and the block is stored afresh.
        if (EraseLocked((*space)->id, {&key, 1}) == 1) {
          (*space)->counters->expired.fetch_add(1, std::memory_order_relaxed);
        }
        table_.Find(key, [&](BlockEntry* e) { state = e == nullptr ? 0 : 2; });
      }
      if (admission_ != nullptr) admission_->Record(key);
      if (state == 1) {
        ++counts.present;
        continue;
      }
      std::shared_ptr<Event> reuse;
      std::optional<SlotId> slot =
          state == 0 ? AcquireSlot(TierKind::kHost, &reuse, (*space)->id) : std::nullopt;
      if (!slot) {
        ++counts.rejected;
        continue;
      }
      if (reuse) waits.push_back(std::move(reuse));
      table_.Upsert(key, [&](BlockEntry& e, bool) {
        placement_mu_.AssertHeld();
        e.ns_id = (*space)->id;
        e.depth = static_cast<uint32_t>(r.first_block + i);
        e.stored_unix_ms = now_ms;
        Attach(key, e, TierKind::kHost, *slot);
        StartWrite(e, TierKind::kHost, write_id, *done);
      });
      ++ns_blocks_[(*space)->id];
      stored.push_back(key);
      copies.push_back(
          BlockCopy{CallerEndpoint(r.buffers, i), SlotEndpoint(TierKind::kHost, *slot)});
    }
    counts.moved = stored.size();
    if (!copies.empty()) {
      absl::Status s;
      if (r.after != nullptr) {
        s = r.after->Record(**after);
        if (s.ok()) s = offload_->Wait(**after);
      }
      for (size_t i = 0; s.ok() && i < waits.size(); ++i) s = offload_->Wait(*waits[i]);
      if (s.ok()) s = EnqueueCopies(*offload_, copies, /*layerwise=*/false, {});
      if (s.ok()) s = offload_->Record(**done);
      if (!s.ok()) {
        // These blocks were not (all) copied: invisible from now on, so no one reads
        // garbage; their slots are freed below, once copies already enqueued are done.
        for (const BlockKey& key : stored) {
          table_.Mutate(key, [&](BlockEntry& e) {
            e.erased = true;
            return false;
          });
        }
        failure = absl::Status(s.code(), "Store: enqueueing copies: " + std::string(s.message()));
        failed_write_id = write_id;
      } else {
        (void)WhenDone(*offload_, [this, stored, write_id, finished, external] {
          OnWritesLanded(TierKind::kHost, stored, write_id);
          if (external != nullptr) external->Release();
          finished->Notify();
        });
      }
    }
  }
  if (!failure.ok()) {
    // Copies enqueued before the failure still read the caller's buffers and write the
    // slots: they finish before the slots are reused and before the caller hears of the
    // error (and may free its buffers).
    (void)offload_->Synchronize();
    OnWritesLanded(TierKind::kHost, stored, failed_write_id);
    return failure;
  }
  stored_blocks_.fetch_add(counts.moved, std::memory_order_relaxed);
  (*space)->counters->stored.fetch_add(counts.moved, std::memory_order_relaxed);
  deduplicated_blocks_.fetch_add(counts.present, std::memory_order_relaxed);
  rejected_blocks_.fetch_add(counts.rejected, std::memory_order_relaxed);
  counters_[kHost].bytes_in.fetch_add(counts.moved * g.block_bytes(), std::memory_order_relaxed);
  if (copies.empty()) {
    return std::unique_ptr<TransferHandle>(
        new TransferHandleImpl(nullptr, nullptr, {}, counts, {}, nullptr));
  }
  return std::unique_ptr<TransferHandle>(
      new TransferHandleImpl(std::move(*done), std::move(finished), {}, counts, {}, nullptr));
}

// ----------------------------------------------------------------------------- Load

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::Load(const LoadRequest& r) {
  ScopedLatency timed(load_latency_);
  bool out_of_slots = false;
  std::vector<size_t> read_from_disk;
  absl::StatusOr<std::unique_ptr<TransferHandle>> h = LoadOnce(r, &out_of_slots, &read_from_disk);
  if (out_of_slots) {
    // As in LoadToGpuTier: host slots whose copies or disk reads have finished stay "in
    // flight" until their completions run. Let the queue catch up, then try once more (the
    // disk reads the first attempt started are found in flight and waited for). Seen as a
    // spurious ResourceExhausted under a loaded machine (EngineDiskWriteFaultTest, the
    // Python offloader's disk test).
    completions_.Drain();
    h = LoadOnce(r, &out_of_slots, &read_from_disk);
  }
  return h;
}

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::LoadOnce(
    const LoadRequest& r, bool* out_of_slots, std::vector<size_t>* read_from_disk) {
  *out_of_slots = false;
  DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = FindNamespace(r.ns);
  if (!space.ok()) return space.status();
  if (r.keys.empty()) return absl::InvalidArgumentError("Load: no keys given");
  const std::shared_ptr<ExternalUse> external = UseExternal(r.buffers);
  if (absl::Status s = ValidateBuffers(r.buffers, r.keys.size(), "Load"); !s.ok()) return s;
  const Geometry& g = options_.geometry;
  absl::StatusOr<std::vector<std::shared_ptr<Event>>> layers = NewEvents(g.num_layers);
  if (!layers.ok()) return layers.status();
  absl::StatusOr<std::shared_ptr<Event>> done = NewEvent();
  if (!done.ok()) return done.status();
  auto finished = std::make_shared<Notification>();
  absl::StatusOr<std::shared_ptr<Event>> after = NewEvent();
  if (!after.ok()) return after.status();

  std::array<size_t, kNumTiers> from{};
  std::array<uint64_t, kNumTiers> found{};  // where each block was when the call came
  absl::Status failure;
  Stream* stream = onboard_.get();
  std::vector<std::shared_ptr<HostFill>> fills;
  {
    MutexLock lock(&placement_mu_);
    if (absl::Status s = PinAll((*space)->id, r.ns, r.keys, "Load"); !s.ok()) return s;
    // Blocks whose only copy is on disk are first read into host slots (verified there). A
    // load that waits for a disk read (its own, or one already in flight) goes on its own
    // stream.
    for (size_t i = 0; i < r.keys.size(); ++i) {
      bool filling = false;
      const TierKind best = table_.Find(r.keys[i], [&](BlockEntry* e) {
        filling = e->host_fill != nullptr;
        return e->best_tier();
      });
      // Where the block was when the call came: a host copy that an earlier attempt of this
      // call read from disk (landed by now, or still filling) counts as the disk hit it is.
      const bool read_before =
          std::find(read_from_disk->begin(), read_from_disk->end(), i) != read_from_disk->end();
      ++found[static_cast<int>(read_before ? TierKind::kDisk : best)];
      if (best == TierKind::kGpu) continue;
      if (best == TierKind::kHost) {
        if (filling) stream = gated_onboard_.get();
        continue;
      }
      if (absl::Status s = EnsureHostCopy(r.keys[i]); !s.ok()) {
        Unpin(r.keys);
        *out_of_slots = absl::IsResourceExhausted(s);
        return absl::Status(s.code(), absl::StrFormat("Load: block %d: %s", i, s.message()));
      }
      read_from_disk->push_back(i);
      stream = gated_onboard_.get();
    }
    std::vector<BlockCopy> copies;
    std::vector<std::shared_ptr<Event>> waits;
    copies.reserve(r.keys.size());
    absl::Status s;
    if (r.after != nullptr) {
      s = r.after->Record(**after);
      if (s.ok()) s = stream->Wait(**after);
    }
    for (size_t i = 0; s.ok() && i < r.keys.size(); ++i) {
      table_.Find(r.keys[i], [&](BlockEntry* e) {
        placement_mu_.AssertHeld();
        const TierKind t = e->best_tier();
        const int ti = static_cast<int>(t);
        ConsumePrefetch(*e);
        if (t == TierKind::kHost) {
          s = AwaitHostCopy(*stream, *e, &fills);
          if (!e->host_fill) ++from[ti];
        } else {
          if (e->is_writing(t)) waits.push_back(e->ready[ti]);
          ++from[ti];
        }
        policies_[ti]->OnAccess(e->slot[ti]);
        copies.push_back(BlockCopy{SlotEndpoint(t, e->slot[ti]), CallerEndpoint(r.buffers, i)});
      });
    }
    for (size_t i = 0; s.ok() && i < waits.size(); ++i) s = stream->Wait(*waits[i]);
    if (s.ok()) s = EnqueueCopies(*stream, copies, r.layerwise, *layers);
    if (s.ok()) s = stream->Record(**done);
    if (!s.ok()) {
      failure = absl::Status(s.code(), "Load: enqueueing copies: " + std::string(s.message()));
    } else {
      (void)WhenDone(*stream, [this, keys = r.keys, finished, external] {
        OnReadsDone(keys);
        if (external != nullptr) external->Release();
        finished->Notify();
      });
    }
  }
  if (!failure.ok()) {
    // Copies enqueued before the failure still write the caller's buffers: they finish
    // before the caller hears of the error (and may free them), and the pins go after.
    (void)stream->Synchronize();
    MutexLock lock(&placement_mu_);
    Unpin(r.keys);
    return failure;
  }
  for (int t = 0; t < kNumTiers; ++t) {
    counters_[t].bytes_out.fetch_add(from[t] * g.block_bytes(), std::memory_order_relaxed);
  }
  CountLookups(*(*space)->counters, found, 0);
  loaded_blocks_.fetch_add(r.keys.size(), std::memory_order_relaxed);
  (*space)->counters->loaded.fetch_add(r.keys.size(), std::memory_order_relaxed);
  if (admission_ != nullptr) {
    for (const BlockKey& key : r.keys) admission_->Record(key);
  }
  TransferHandleImpl::Counts counts{r.keys.size(), 0, 0};
  return LoadHandle(std::make_unique<TransferHandleImpl>(std::move(*done), std::move(finished),
                                                         std::move(*layers), counts,
                                                         std::vector<DevicePtr>{}, nullptr,
                                                         std::move(fills)),
                    *(*space)->counters);
}

// ----------------------------------------------------------------------------- GPU tier

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::LoadToGpuTier(
    absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise,
    absl::Duration lease_timeout) {
  bool out_of_slots = false;
  absl::StatusOr<std::unique_ptr<TransferHandle>> h =
      LoadToGpuTierOnce(ns, keys, layerwise, lease_timeout, &out_of_slots);
  if (out_of_slots) {
    // A slot whose copy has finished stays "in flight" until its completion runs on the
    // completion queue: let the queue catch up, then try once more. (A 32K-token demo on
    // an H100 ran out of GPU slots this way while most of them had landed.)
    completions_.Drain();
    h = LoadToGpuTierOnce(ns, keys, layerwise, lease_timeout, &out_of_slots);
  }
  return h;
}

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::LoadToGpuTierOnce(
    absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise,
    absl::Duration lease_timeout, bool* out_of_slots) {
  *out_of_slots = false;
  DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = FindNamespace(ns);
  if (!space.ok()) return space.status();
  Tier* gpu = tier(TierKind::kGpu);
  if (gpu == nullptr) {
    return absl::FailedPreconditionError(
        "LoadToGpuTier: the GPU tier is disabled (EngineOptions::gpu_tier_bytes = 0)");
  }
  if (keys.empty()) return absl::InvalidArgumentError("LoadToGpuTier: no keys given");
  if (lease_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("LoadToGpuTier: negative lease timeout");
  }
  absl::flat_hash_set<BlockKey> distinct(keys.begin(), keys.end());
  if (distinct.size() != keys.size()) {
    return absl::InvalidArgumentError("LoadToGpuTier: the same key is listed twice");
  }
  if (keys.size() > gpu->num_slots()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("LoadToGpuTier: %d blocks requested but the GPU tier holds only %u",
                        keys.size(), gpu->num_slots()));
  }
  const Geometry& g = options_.geometry;
  absl::StatusOr<std::vector<std::shared_ptr<Event>>> layers = NewEvents(g.num_layers);
  if (!layers.ok()) return layers.status();
  absl::StatusOr<std::shared_ptr<Event>> done = NewEvent();
  if (!done.ok()) return done.status();
  auto finished = std::make_shared<Notification>();

  std::vector<DevicePtr> slots(keys.size());
  std::vector<std::shared_ptr<HostFill>> fills;
  uint64_t lease_id = 0;
  size_t promoted_count = 0;
  size_t from_disk = 0;
  absl::Status failure;
  std::vector<SlotId> held_slots;  // of GPU copies dropped by a failed enqueue
  Stream* stream = onboard_.get();
  {
    MutexLock lock(&placement_mu_);
    const uint64_t write_id = next_write_id_++;
    ReapExpiredLeases();
    if (absl::Status s = PinAll((*space)->id, ns, keys, "LoadToGpuTier"); !s.ok()) return s;
    // Plan: which keys need a GPU slot, and acquire them all before changing any entry.
    std::vector<size_t> need;
    std::vector<std::shared_ptr<Event>> waits;
    for (size_t i = 0; i < keys.size(); ++i) {
      table_.Find(keys[i], [&](BlockEntry* e) {
        placement_mu_.AssertHeld();
        ConsumePrefetch(*e);
        if (e->has(TierKind::kGpu)) {
          if (e->is_writing(TierKind::kGpu)) waits.push_back(e->ready[kGpu]);
          policies_[kGpu]->OnAccess(e->slot[kGpu]);
          slots[i] = gpu->Address(e->slot[kGpu]).device;
        } else {
          need.push_back(i);
        }
      });
    }
    if (need.empty()) {
      // Every block is already in the GPU tier (a prefetch put it there): nothing to enqueue,
      // so the lease does not queue behind the onboard stream's other work. Blocks still
      // landing are waited on directly through their ready events.
      lease_id = next_lease_id_++;
      leases_[lease_id] =
          Lease{std::vector<BlockKey>(keys.begin(), keys.end()),
                absl::Now() + (lease_timeout == absl::ZeroDuration() ? options_.lease_timeout
                                                                     : lease_timeout)};
      CountLookups(*(*space)->counters, {keys.size(), 0, 0}, 0);
      loaded_blocks_.fetch_add(keys.size(), std::memory_order_relaxed);
      (*space)->counters->loaded.fetch_add(keys.size(), std::memory_order_relaxed);
      TransferHandleImpl::Counts counts{0, keys.size(), 0};
      return LoadHandle(
          std::make_unique<TransferHandleImpl>(
              nullptr, nullptr, std::vector<std::shared_ptr<Event>>(g.num_layers), counts,
              std::move(slots), [this, lease_id] { return ReleaseLease(lease_id); },
              std::vector<std::shared_ptr<HostFill>>{}, std::move(waits)),
          *(*space)->counters);
    }
    // Blocks only on disk come up through a host slot first.
    for (size_t i : need) {
      const bool disk_only =
          table_.Find(keys[i], [](BlockEntry* e) { return !e->has(TierKind::kHost); });
      if (!disk_only) continue;
      ++from_disk;
      if (absl::Status s = EnsureHostCopy(keys[i], /*passing=*/true); !s.ok()) {
        Unpin(keys);
        *out_of_slots = absl::IsResourceExhausted(s);  // no host slot to read it into
        return absl::Status(s.code(),
                            absl::StrFormat("LoadToGpuTier: block %d: %s", i, s.message()));
      }
    }
    // A transfer that waits for a disk read goes on its own stream.
    for (size_t i : need) {
      table_.Find(keys[i], [&](BlockEntry* e) {
        if (e->host_fill != nullptr) stream = gated_onboard_.get();
      });
    }
    std::vector<SlotId> acquired;
    for (size_t k = 0; k < need.size(); ++k) {
      std::shared_ptr<Event> reuse;
      std::optional<SlotId> slot = AcquireSlot(TierKind::kGpu, &reuse, (*space)->id, k);
      if (!slot) {
        for (SlotId s : acquired) gpu->Release(s);
        Unpin(keys);
        if (AtQuota((*space)->id, kGpu, k)) {
          return absl::ResourceExhaustedError(absl::StrFormat(
              "LoadToGpuTier: namespace '%s' is at its GPU quota of %d blocks and none of its "
              "blocks there can be evicted for the %d more this call needs",
              ns, ns_quota_blocks_[(*space)->id][kGpu], need.size() - k));
        }
        *out_of_slots = true;
        return absl::ResourceExhaustedError(absl::StrFormat(
            "LoadToGpuTier: no free GPU slot for %d more blocks: all %u slots are pinned, "
            "leased or in flight",
            need.size() - k, gpu->num_slots()));
      }
      if (reuse) waits.push_back(std::move(reuse));
      acquired.push_back(*slot);
    }
    std::vector<BlockCopy> copies;
    std::vector<BlockKey> promoted;
    absl::Status s;
    for (size_t k = 0; k < need.size(); ++k) {
      const BlockKey& key = keys[need[k]];
      table_.Find(key, [&](BlockEntry* e) {
        placement_mu_.AssertHeld();
        if (s.ok()) s = AwaitHostCopy(*stream, *e, &fills);
        copies.push_back(BlockCopy{SlotEndpoint(TierKind::kHost, e->slot[kHost]),
                                   SlotEndpoint(TierKind::kGpu, acquired[k])});
        // A host copy read in from disk by this call came in passing: it stays cold.
        if (!e->is_writing(TierKind::kHost)) policies_[kHost]->OnAccess(e->slot[kHost]);
        Attach(key, *e, TierKind::kGpu, acquired[k]);
        StartWrite(*e, TierKind::kGpu, write_id, *done);
      });
      slots[need[k]] = gpu->Address(acquired[k]).device;
      promoted.push_back(key);
    }
    for (size_t i = 0; s.ok() && i < waits.size(); ++i) s = stream->Wait(*waits[i]);
    if (s.ok()) s = EnqueueCopies(*stream, copies, layerwise, *layers);
    if (s.ok()) s = stream->Record(**done);
    if (!s.ok()) {
      // The new GPU copies go at once (nobody may read them), but their slots stay out of
      // the pool until copies already enqueued into them are done (below, unlocked: the
      // stream's callbacks take this lock).
      for (const BlockKey& key : promoted) {
        table_.Find(key, [&](BlockEntry* e) {
          placement_mu_.AssertHeld();
          held_slots.push_back(e->slot[kGpu]);
          Detach(key, *e, TierKind::kGpu, /*release_slot=*/false);
        });
      }
      failure =
          absl::Status(s.code(), "LoadToGpuTier: enqueueing copies: " + std::string(s.message()));
    } else {
      (void)WhenDone(*stream, [this, promoted, write_id, finished] {
        OnWritesLanded(TierKind::kGpu, promoted, write_id);
        finished->Notify();
      });
      promoted_count = promoted.size();
      lease_id = next_lease_id_++;
      leases_[lease_id] =
          Lease{std::vector<BlockKey>(keys.begin(), keys.end()),
                absl::Now() + (lease_timeout == absl::ZeroDuration() ? options_.lease_timeout
                                                                     : lease_timeout)};
    }
  }
  if (!failure.ok()) {
    (void)stream->Synchronize();
    MutexLock lock(&placement_mu_);
    for (SlotId slot : held_slots) {
      if (options_.secure_erase) ZeroSlot(TierKind::kGpu, slot);
      gpu->Release(slot);
    }
    Unpin(keys);
    return failure;
  }
  counters_[kGpu].promotions.fetch_add(promoted_count, std::memory_order_relaxed);
  counters_[kGpu].bytes_in.fetch_add(promoted_count * g.block_bytes(), std::memory_order_relaxed);
  counters_[kHost].bytes_out.fetch_add(promoted_count * g.block_bytes(), std::memory_order_relaxed);
  CountLookups(*(*space)->counters,
               {keys.size() - promoted_count, promoted_count - from_disk, from_disk}, 0);
  loaded_blocks_.fetch_add(keys.size(), std::memory_order_relaxed);
  (*space)->counters->loaded.fetch_add(keys.size(), std::memory_order_relaxed);
  TransferHandleImpl::Counts counts{promoted_count, keys.size() - promoted_count, 0};
  return LoadHandle(std::make_unique<TransferHandleImpl>(
                        std::move(*done), std::move(finished), std::move(*layers), counts,
                        std::move(slots), [this, lease_id] { return ReleaseLease(lease_id); },
                        std::move(fills)),
                    *(*space)->counters);
}

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::Prefetch(
    absl::string_view ns, absl::Span<const BlockKey> keys) {
  DestroyRetiredEvents();
  absl::StatusOr<const Namespace*> space = FindNamespace(ns);
  if (!space.ok()) return space.status();
  if (tier(TierKind::kGpu) == nullptr && disk_ == nullptr) {
    return absl::FailedPreconditionError(
        "Prefetch: the GPU tier is disabled (EngineOptions::gpu_tier_bytes = 0) and there is no "
        "disk tier: there is no tier to promote from");
  }
  return PrefetchKeys((*space)->id, keys, /*hinted=*/false);
}

absl::StatusOr<std::unique_ptr<TransferHandle>> EngineImpl::PrefetchKeys(
    uint32_t ns_id, absl::Span<const BlockKey> keys, bool hinted) {
  Tier* gpu = tier(TierKind::kGpu);
  // Promotion goes one step past the host tier where there is a GPU tier, else to the host.
  const TierKind top = gpu != nullptr ? TierKind::kGpu : TierKind::kHost;
  absl::StatusOr<std::shared_ptr<Event>> done = NewEvent();
  if (!done.ok()) return done.status();
  auto finished = std::make_shared<Notification>();
  TransferHandleImpl::Counts counts;
  std::vector<BlockKey> promoted;   // to the GPU tier
  std::vector<BlockKey> read_in;    // from disk to host only
  std::vector<std::shared_ptr<HostFill>> fills;
  size_t from_disk = 0;
  absl::Status failure;
  std::vector<SlotId> held_slots;  // of GPU copies dropped by a failed enqueue
  {
    MutexLock lock(&placement_mu_);
    const uint64_t write_id = next_write_id_++;
    const int64_t now_ms = absl::ToUnixMillis(absl::Now());
    protect_prefetched_ = hinted;
    std::vector<BlockCopy> copies;
    std::vector<std::shared_ptr<Event>> waits;
    absl::flat_hash_set<BlockKey> seen;
    // A hinted block now in flight to the top tier: marked, and charged to the budget.
    auto mark = [&](BlockEntry& e) {
      if (!hinted) return;
      e.prefetched |= Bit(top);
      prefetch_outstanding_.fetch_add(options_.geometry.block_bytes(),
                                      std::memory_order_relaxed);
    };
    absl::Status s;
    for (const BlockKey& key : keys) {
      if (!seen.insert(key).second) continue;
      // 0: not cached here, 1: already at the top, 2: pinned for promotion.
      int state = table_.Find(key, [&](BlockEntry* e) {
        placement_mu_.AssertHeld();
        if (e == nullptr || e->erased || e->ns_id != ns_id || !e->has_any()) return 0;
        if (Expired(*e, now_ms)) return 0;
        if (e->has(top)) return 1;
        ++e->pins;  // keeps the source copies in place while they are read
        return 2;
      });
      if (state != 2) {
        state == 1 ? ++counts.present : ++counts.rejected;
        continue;
      }
      const bool disk_only =
          table_.Find(key, [](BlockEntry* e) { return !e->has(TierKind::kHost); });
      const bool from_disk_now = disk_only;
      if (disk_only) {
        if (!EnsureHostCopy(key, /*passing=*/gpu != nullptr).ok()) {
          Unpin({key});
          ++counts.rejected;
          continue;
        }
        ++from_disk;
      }
      if (gpu == nullptr) {
        table_.Find(key, [&](BlockEntry* e) {
          placement_mu_.AssertHeld();
          if (s.ok()) s = AwaitHostCopy(*gated_onboard_, *e, &fills);
          if (from_disk_now) mark(*e);
        });
        read_in.push_back(key);
        continue;
      }
      std::shared_ptr<Event> reuse;
      std::optional<SlotId> slot = AcquireSlot(TierKind::kGpu, &reuse, ns_id);
      if (!slot) {
        Unpin({key});
        ++counts.rejected;
        continue;
      }
      if (reuse) waits.push_back(std::move(reuse));
      table_.Find(key, [&](BlockEntry* e) {
        placement_mu_.AssertHeld();
        if (s.ok()) s = AwaitHostCopy(*gated_onboard_, *e, &fills);
        copies.push_back(BlockCopy{SlotEndpoint(TierKind::kHost, e->slot[kHost]),
                                   SlotEndpoint(TierKind::kGpu, *slot)});
        Attach(key, *e, TierKind::kGpu, *slot);
        StartWrite(*e, TierKind::kGpu, write_id, *done);
        mark(*e);
      });
      promoted.push_back(key);
    }
    protect_prefetched_ = false;
    if (!promoted.empty() || !read_in.empty()) {
      for (size_t i = 0; s.ok() && i < waits.size(); ++i) s = gated_onboard_->Wait(*waits[i]);
      if (s.ok() && !copies.empty()) s = EnqueueCopies(*gated_onboard_, copies, false, {});
      if (s.ok()) s = gated_onboard_->Record(**done);
      if (!s.ok()) {
        // As in LoadToGpuTier: the copies go now, their slots once the stream is done.
        for (const BlockKey& key : promoted) {
          table_.Find(key, [&](BlockEntry* e) {
            placement_mu_.AssertHeld();
            held_slots.push_back(e->slot[kGpu]);
            Detach(key, *e, TierKind::kGpu, /*release_slot=*/false);
          });
        }
        failure =
            absl::Status(s.code(), "Prefetch: enqueueing copies: " + std::string(s.message()));
      } else {
        std::vector<BlockKey> pinned = promoted;
        pinned.insert(pinned.end(), read_in.begin(), read_in.end());
        (void)WhenDone(*gated_onboard_, [this, promoted, pinned, write_id, finished] {
          OnWritesLanded(TierKind::kGpu, promoted, write_id);
          OnReadsDone(pinned);
          finished->Notify();
        });
      }
    }
  }
  if (!failure.ok()) {
    (void)gated_onboard_->Synchronize();
    MutexLock lock(&placement_mu_);
    for (SlotId slot : held_slots) {
      if (options_.secure_erase) ZeroSlot(TierKind::kGpu, slot);
      gpu->Release(slot);
    }
    Unpin(promoted);
    Unpin(read_in);
    return failure;
  }
  counts.moved = promoted.size() + read_in.size();
  if (hinted) {
    prefetch_issued_.fetch_add(counts.moved, std::memory_order_relaxed);
    prefetch_present_.fetch_add(counts.present, std::memory_order_relaxed);
    prefetch_skipped_.fetch_add(counts.rejected, std::memory_order_relaxed);
  }
  const size_t block = options_.geometry.block_bytes();
  counters_[kGpu].promotions.fetch_add(promoted.size(), std::memory_order_relaxed);
  counters_[kGpu].bytes_in.fetch_add(promoted.size() * block, std::memory_order_relaxed);
  counters_[kHost].bytes_out.fetch_add(promoted.size() * block, std::memory_order_relaxed);
  counters_[kHost].promotions.fetch_add(from_disk, std::memory_order_relaxed);
  if (counts.moved == 0) {
    return std::unique_ptr<TransferHandle>(
        new TransferHandleImpl(nullptr, nullptr, {}, counts, {}, nullptr));
  }
  return std::unique_ptr<TransferHandle>(new TransferHandleImpl(
      std::move(*done), std::move(finished), {}, counts, {}, nullptr, std::move(fills)));
}

// ----------------------------------------------------------------------------- Erase

size_t EngineImpl::EraseLocked(uint32_t ns_id, absl::Span<const BlockKey> keys) {
  size_t erased = 0;
  for (const BlockKey& key : keys) {
    table_.Mutate(key, [&](BlockEntry& e) {
      placement_mu_.AssertHeld();
      if (e.ns_id != ns_id || e.erased) return false;
      ++erased;
      if (e.busy()) {
        e.erased = true;  // reclaimed by the last unpin / landed write
        return false;
      }
      DetachAll(key, e);
      return true;
    });
  }
  return erased;
}

absl::StatusOr<size_t> EngineImpl::Erase(absl::string_view ns, absl::Span<const BlockKey> keys) {
  absl::StatusOr<const Namespace*> space = FindNamespace(ns);
  if (!space.ok()) return space.status();
  MutexLock lock(&placement_mu_);
  return EraseLocked((*space)->id, keys);
}

absl::StatusOr<size_t> EngineImpl::EraseNamespace(absl::string_view ns) {
  absl::StatusOr<const Namespace*> space = FindNamespace(ns);
  if (!space.ok()) return space.status();
  const uint32_t ns_id = (*space)->id;
  MutexLock lock(&placement_mu_);
  std::vector<BlockKey> keys;
  table_.ForEach([&](const BlockKey& key, const BlockEntry& e) {
    if (e.ns_id == ns_id && !e.erased) keys.push_back(key);
  });
  return EraseLocked(ns_id, keys);
}

void EngineImpl::SweepExpired() {
  DestroyRetiredEvents();
  MutexLock lock(&placement_mu_);
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::vector<std::vector<BlockKey>> expired(ns_ttl_ms_.size());
  table_.ForEach([&](const BlockKey& key, const BlockEntry& e) {
    placement_mu_.AssertHeld();
    if (!e.erased && Expired(e, now_ms)) expired[e.ns_id].push_back(key);
  });
  for (uint32_t ns_id = 0; ns_id < expired.size(); ++ns_id) {
    if (expired[ns_id].empty()) continue;
    const size_t n = EraseLocked(ns_id, expired[ns_id]);
    MutexLock ns_lock(&ns_mu_);
    namespaces_[ns_id]->counters->expired.fetch_add(n, std::memory_order_relaxed);
  }
}

// ----------------------------------------------------------------------------- Stats

absl::Status EngineImpl::Flush() {
  absl::Status first;
  // Streams first: a stream may be gated on a disk read, and copies may start disk writes.
  for (Stream* s : {offload_.get(), onboard_.get(), gated_onboard_.get()}) {
    if (absl::Status st = s->Synchronize(); !st.ok() && first.ok()) first = st;
  }
  completions_.Drain();  // what the streams' callbacks posted
  if (disk_ != nullptr) disk_->Drain();
  completions_.Drain();  // what the disk's callbacks posted
  DestroyRetiredEvents();
  return first;
}

// ----------------------------------------------------------------------------- look-ahead

absl::StatusOr<uint64_t> EngineImpl::Hint(absl::string_view ns, absl::Span<const BlockKey> keys) {
  absl::StatusOr<const Namespace*> space = FindNamespace(ns);
  if (!space.ok()) return space.status();
  if (tier(TierKind::kGpu) == nullptr && disk_ == nullptr) {
    return absl::FailedPreconditionError(
        "Hint: the GPU tier is disabled (EngineOptions::gpu_tier_bytes = 0) and there is no "
        "disk tier: there is no tier to promote into");
  }
  MutexLock lock(&hint_mu_);
  const uint64_t id = next_hint_id_++;
  for (const BlockKey& key : keys) hints_.push_back(HintItem{id, (*space)->id, key});
  prefetch_hinted_.fetch_add(keys.size(), std::memory_order_relaxed);
  return id;
}

absl::StatusOr<size_t> EngineImpl::CancelHint(uint64_t hint_id) {
  MutexLock lock(&hint_mu_);
  if (hint_id == 0 || hint_id >= next_hint_id_) {
    return absl::NotFoundError(absl::StrFormat("CancelHint: hint %d was never issued", hint_id));
  }
  const size_t before = hints_.size();
  std::erase_if(hints_, [hint_id](const HintItem& h) { return h.hint_id == hint_id; });
  const size_t dropped = before - hints_.size();
  prefetch_cancelled_.fetch_add(dropped, std::memory_order_relaxed);
  return dropped;
}

void EngineImpl::PrefetcherLoop() {
  const size_t block = options_.geometry.block_bytes();
  // Keys per batch: one placement-lock hold and one copy batch each.
  constexpr size_t kMaxBatch = 64;
  absl::Time next_sweep = absl::Now();
  for (;;) {
    uint32_t ns_id = 0;
    std::vector<BlockKey> batch;
    bool sweep = false;
    {
      MutexLock lock(&hint_mu_);
      // Only this thread adds to prefetch_outstanding_, so room seen here stays room.
      auto room = [&] {
        return prefetch_budget_ - std::min(prefetch_budget_, prefetch_outstanding_.load());
      };
      // Room for a batch: a quarter of the budget (as ReleasePrefetchBudget wakes us), or
      // whatever the queue still holds if that is less.
      const size_t wake_room = std::max(block, prefetch_budget_ / 4);
      auto hints_ready = [&] {
        hint_mu_.AssertHeld();
        return !hints_.empty() && room() >= std::min(wake_room, hints_.size() * block);
      };
      // The same thread sweeps blocks whose time to live has passed, when any namespace has
      // one: every sweep_interval_, which SetNamespaceLimits may change while it waits.
      const absl::Duration interval = sweep_interval_;
      auto wake = [&] {
        hint_mu_.AssertHeld();
        return stop_prefetcher_ || hints_ready() || sweep_interval_ != interval;
      };
      if (interval == absl::InfiniteDuration()) {
        hint_mu_.Await(wake);
      } else {
        (void)hint_mu_.AwaitWithTimeout(wake, std::max(absl::ZeroDuration(),
                                                       next_sweep - absl::Now()));
        if (absl::Now() >= next_sweep) {
          next_sweep = absl::Now() + interval;
          sweep = true;
        }
      }
      if (stop_prefetcher_) return;
      if (hints_ready()) {
        ns_id = hints_.front().ns_id;
        const size_t n = std::min(kMaxBatch, room() / block);
        while (batch.size() < n && !hints_.empty() && hints_.front().ns_id == ns_id) {
          batch.push_back(hints_.front().key);
          hints_.pop_front();
        }
      }
    }
    if (sweep) SweepExpired();
    if (batch.empty()) continue;
    DestroyRetiredEvents();
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = PrefetchKeys(ns_id, batch, true);
    if (!h.ok()) {
      KVTIER_LOG_ONCE(kWarning, "prefetcher: %s", h.status().ToString());
      prefetch_skipped_.fetch_add(batch.size(), std::memory_order_relaxed);
    }
    // The handle is dropped: the promotion completes on its own.
  }
}

void EngineImpl::ConsumePrefetch(BlockEntry& e) {
  const TierKind top = top_tier();
  if (!(e.prefetched & Bit(top))) return;
  e.prefetched &= static_cast<uint8_t>(~Bit(top));
  (e.is_writing(top) ? prefetch_late_ : prefetch_in_time_).fetch_add(1, std::memory_order_relaxed);
  ReleasePrefetchBudget(options_.geometry.block_bytes());
}

void EngineImpl::ReleasePrefetchBudget(size_t bytes) {
  const size_t before = prefetch_outstanding_.fetch_sub(bytes, std::memory_order_relaxed);
  // Wake the prefetcher only when the room crosses a quarter of the budget (at least one
  // block), so it starts a batch worth a lock hold instead of waking once per block: a
  // wake-up is a futex call and, in a VM, an inter-processor interrupt.
  const size_t block = options_.geometry.block_bytes();
  const size_t wake_room = std::max(block, prefetch_budget_ / 4);
  const size_t room_before = prefetch_budget_ - std::min(prefetch_budget_, before);
  const size_t room_after = prefetch_budget_ - std::min(prefetch_budget_, before - bytes);
  if (room_before < wake_room && room_after >= wake_room) {
    MutexLock wake(&hint_mu_);  // unlocking re-evaluates the prefetcher's wait
  }
}

EngineStats EngineImpl::Stats() {
  DestroyRetiredEvents();
  EngineStats st;
  st.device = device_->name();
  {
    PrefetchStats& p = st.prefetch;
    p.hinted = prefetch_hinted_.load();
    p.issued = prefetch_issued_.load();
    p.present = prefetch_present_.load();
    p.skipped = prefetch_skipped_.load();
    p.cancelled = prefetch_cancelled_.load();
    p.in_time = prefetch_in_time_.load();
    p.late = prefetch_late_.load();
    p.unused = prefetch_unused_.load();
    p.outstanding_bytes = prefetch_outstanding_.load();
    p.budget_bytes = prefetch_budget_;
    MutexLock lock(&hint_mu_);
    p.queued = hints_.size();
  }
  std::vector<std::string> names;
  std::vector<std::array<uint64_t, 4>> ns_counts;  // matched, missed, stored, loaded
  std::vector<std::pair<uint64_t, uint64_t>> ns_stall;        // ns, waits
  std::vector<std::array<uint64_t, 3>> ns_quota;  // quota evictions, rejections, expired
  std::vector<std::array<uint64_t, 2 * kNumTiers>> ns_lookups;  // hits..., misses...
  {
    MutexLock lock(&ns_mu_);
    for (const auto& n : namespaces_) {
      names.push_back(n->name);
      ns_counts.push_back({n->counters->matched.load(), n->counters->missed.load(),
                           n->counters->stored.load(), n->counters->loaded.load()});
      ns_stall.emplace_back(n->counters->stall->ns.load(), n->counters->stall->waits.load());
      ns_quota.push_back({n->counters->quota_evictions.load(),
                          n->counters->quota_rejections.load(), n->counters->expired.load()});
      std::array<uint64_t, 2 * kNumTiers>& l = ns_lookups.emplace_back();
      for (int t = 0; t < kNumTiers; ++t) {
        l[t] = n->counters->hits[t].load();
        l[kNumTiers + t] = n->counters->misses[t].load();
      }
    }
  }
  MutexLock lock(&placement_mu_);
  ReapExpiredLeases();
  std::array<size_t, kNumTiers> pinned{};
  table_.ForEach([&](const BlockKey&, const BlockEntry& e) {
    if (!e.busy()) return;
    for (int t = 0; t < kNumTiers; ++t) {
      if (e.slot[t] != kNoSlot) ++pinned[t];
    }
  });
  for (int t = 0; t < kNumTiers; ++t) {
    TierStats& ts = st.tiers[t];
    if (tiers_[t] != nullptr) {
      ts.capacity_blocks = tiers_[t]->num_slots();
      ts.used_blocks = tiers_[t]->used_slots();
    }
    ts.pinned_blocks = pinned[t];
    ts.hits = counters_[t].hits.load();
    ts.misses = counters_[t].misses.load();
    ts.bytes_in = counters_[t].bytes_in.load();
    ts.bytes_out = counters_[t].bytes_out.load();
    ts.evictions = counters_[t].evictions.load();
    ts.demotions = counters_[t].demotions.load();
    ts.promotions = counters_[t].promotions.load();
  }
  st.stall_ns = stall_->ns.load(std::memory_order_relaxed);
  st.stalled_waits = stall_->waits.load(std::memory_order_relaxed);
  for (size_t id = 0; id < names.size() && id < ns_blocks_.size(); ++id) {
    NamespaceStats ns;
    ns.name = names[id];
    ns.blocks = ns_blocks_[id];
    for (int t = 0; t < kNumTiers; ++t) ns.blocks_per_tier[t] = ns_tier_blocks_[id][t];
    ns.matched_blocks = ns_counts[id][0];
    ns.missed_blocks = ns_counts[id][1];
    ns.stored_blocks = ns_counts[id][2];
    ns.loaded_blocks = ns_counts[id][3];
    for (int t = 0; t < kNumTiers; ++t) ns.quota_blocks[t] = ns_quota_blocks_[id][t];
    ns.quota_evictions = ns_quota[id][0];
    ns.quota_rejections = ns_quota[id][1];
    ns.expired_blocks = ns_quota[id][2];
    ns.stall_ns = ns_stall[id].first;
    ns.stalled_waits = ns_stall[id].second;
    for (int t = 0; t < kNumTiers; ++t) {
      ns.hits_per_tier[t] = ns_lookups[id][t];
      ns.misses_per_tier[t] = ns_lookups[id][kNumTiers + t];
    }
    st.namespaces.push_back(std::move(ns));
  }
  if (disk_ != nullptr) {
    const DiskTierStats ds = disk_->Stats();
    TierStats& ts = st.tiers[static_cast<int>(TierKind::kDisk)];
    ts.capacity_blocks = ds.capacity_bytes / DiskRecordBytes();
    ts.used_blocks = ds.records;
    ts.bytes_in = ds.bytes_written;
    ts.bytes_out = ds.bytes_read;
    ts.evictions = ds.records_dropped;
    ts.checksum_failures = ds.checksum_failures;
    ts.write_failures = ds.writes_failed;
    ts.admissions_rejected = disk_busy_rejections_.load();
    if (admission_ != nullptr) {
      const AdmissionStats as = admission_->stats();
      ts.admissions_rejected += as.rejected_frequency + as.rejected_budget;
    }
  }
  st.match_calls = match_calls_.load();
  st.matched_blocks = matched_blocks_.load();
  st.stored_blocks = stored_blocks_.load();
  st.deduplicated_blocks = deduplicated_blocks_.load();
  st.rejected_blocks = rejected_blocks_.load();
  st.loaded_blocks = loaded_blocks_.load();
  st.leases_held = leases_.size();
  st.leases_expired = leases_expired_.load();
  st.missed_blocks = missed_blocks_.load();
  st.match_latency = match_latency_.Snapshot();
  st.store_latency = store_latency_.Snapshot();
  st.load_latency = load_latency_.Snapshot();
  return st;
}

}  // namespace kvtier
