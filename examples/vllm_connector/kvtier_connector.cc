// kvtier_connector.cc — KvtierConnector over kvtier's public API (Match, Load, Store).

#include "kvtier_connector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier_vllm {

using kvtier::BlockKey;
using kvtier::KvBuffers;
using kvtier::TransferHandle;

namespace {

size_t CeilDiv(size_t a, size_t b) { return (a + b - 1) / b; }

}  // namespace

absl::StatusOr<std::unique_ptr<KvtierConnector>> KvtierConnector::Create(kvtier::Engine* engine,
                                                                          ConnectorOptions options) {
  if (engine == nullptr) return absl::InvalidArgumentError("KvtierConnector: engine is null");
  if (options.ns.empty()) return absl::InvalidArgumentError("KvtierConnector: empty namespace");
  const std::vector<std::string> names = engine->ListNamespaces();
  if (std::find(names.begin(), names.end(), options.ns) == names.end()) {
    return absl::NotFoundError(
        absl::StrCat("KvtierConnector: namespace '", options.ns, "' does not exist"));
  }
  return std::unique_ptr<KvtierConnector>(new KvtierConnector(engine, std::move(options)));
}

KvtierConnector::KvtierConnector(kvtier::Engine* engine, ConnectorOptions options)
    : engine_(engine), options_(std::move(options)), geometry_(engine->options().geometry) {}

KvtierConnector::~KvtierConnector() {
  std::lock_guard<std::mutex> lock(mu_);
  // The handles' copies read or write the engine's pages: they must land before the pages
  // can be trusted to anyone else. Errors have no one left to report to.
  for (auto& [id, f] : in_flight_) {
    for (Load& l : f.loads) (void)l.handle->Wait();
    for (auto& s : f.saves) (void)s->Wait();
  }
  // Then the pool is the engine's alone again. (A transfer whose handle was dropped unwaited
  // would still hold its range: Flush lets it land.)
  for (kvtier::DevicePtr layer : registered_) {
    absl::Status s = engine_->UnregisterDeviceMemory(layer);
    if (absl::IsFailedPrecondition(s)) {
      (void)engine_->Flush();
      s = engine_->UnregisterDeviceMemory(layer);
    }
    (void)s;
  }
}

// ---- Scheduler side ----

absl::StatusOr<size_t> KvtierConnector::GetNumNewMatchedTokens(const Request& request,
                                                               size_t num_computed_tokens) {
  const size_t bt = geometry_.block_tokens;
  if (request.request_id.empty()) {
    return absl::InvalidArgumentError("GetNumNewMatchedTokens: empty request id");
  }
  if (num_computed_tokens % bt != 0 || num_computed_tokens > request.prompt_token_ids.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GetNumNewMatchedTokens(%s): num_computed_tokens %d is not a multiple of the block "
        "size %d within the prompt's %d tokens",
        request.request_id, num_computed_tokens, bt, request.prompt_token_ids.size()));
  }
  absl::StatusOr<kvtier::MatchResult> m =
      engine_->Match(options_.ns, request.prompt_token_ids, request.cache_salt);
  if (!m.ok()) return m.status();
  size_t usable = m->matched_tokens;
  // The engine must still run the last prompt token through the model for its logits.
  if (usable > 0 && usable == request.prompt_token_ids.size()) --usable;
  Matched matched;
  matched.external_tokens = usable > num_computed_tokens ? usable - num_computed_tokens : 0;
  const size_t offered_before_plan = matched.external_tokens;
  if (options_.compute.prefill_tokens_per_s > 0 && matched.external_tokens > 0) {
    // Load only what is faster to load than to recompute, given the tiers' measured rates.
    absl::StatusOr<kvtier::LoadPlan> plan = engine_->PlanLoad(
        *m, request.prompt_token_ids.size(), num_computed_tokens, options_.compute);
    if (!plan.ok()) return plan.status();
    matched.external_tokens = std::min(matched.external_tokens, plan->load_tokens);
    matched.expected_load_s = plan->expected_load_s + plan->expected_stage_s;
  }
  matched.prompt = request.prompt_token_ids;
  matched.keys = std::move(m->keys);
  matched.num_computed_tokens = num_computed_tokens;
  const size_t external = matched.external_tokens;
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.compute.prefill_tokens_per_s > 0) {
    stats_.planned_tokens += external;
    stats_.recompute_chosen_tokens += offered_before_plan - external;
  }
  matched_[request.request_id] = std::move(matched);
  return external;
}

absl::Status KvtierConnector::UpdateStateAfterAlloc(const Request& request,
                                                    absl::Span<const uint32_t> block_ids,
                                                    size_t num_external_tokens) {
  const size_t bt = geometry_.block_tokens;
  std::lock_guard<std::mutex> lock(mu_);
  auto mit = matched_.find(request.request_id);
  if (mit == matched_.end()) {
    auto tit = trackers_.find(request.request_id);
    if (tit != trackers_.end() && num_external_tokens == 0) {
      // A second allocation for a request already set up: only the page table grew.
      tit->second.block_ids.assign(block_ids.begin(), block_ids.end());
      return absl::OkStatus();
    }
    return absl::NotFoundError(absl::StrFormat(
        "UpdateStateAfterAlloc: unknown request id '%s' (GetNumNewMatchedTokens was not called "
        "for it)",
        request.request_id));
  }
  const Matched& m = mit->second;
  if (num_external_tokens != 0 && num_external_tokens != m.external_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "UpdateStateAfterAlloc(%s): %d external tokens, but GetNumNewMatchedTokens offered %d",
        request.request_id, num_external_tokens, m.external_tokens));
  }
  const size_t first_block = m.num_computed_tokens / bt;
  const size_t end_block = CeilDiv(m.num_computed_tokens + num_external_tokens, bt);
  if (num_external_tokens > 0 && block_ids.size() < end_block) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "UpdateStateAfterAlloc(%s): page table too short: %d pages for the %d blocks of "
        "%d computed + %d external tokens",
        request.request_id, block_ids.size(), end_block, m.num_computed_tokens,
        num_external_tokens));
  }
  Tracker t;
  t.cache_salt = request.cache_salt;
  t.tokens = m.prompt;
  t.block_ids.assign(block_ids.begin(), block_ids.end());
  // Blocks kvtier already holds need no save.
  t.saved_blocks = m.keys.size();
  if (num_external_tokens > 0) {
    LoadSpec load;
    load.tokens.assign(m.prompt.begin(), m.prompt.begin() + end_block * bt);
    load.first_block = first_block;
    load.keys.assign(m.keys.begin() + first_block, m.keys.begin() + end_block);
    load.block_ids.assign(block_ids.begin() + first_block, block_ids.begin() + end_block);
    load.expected_load_s = m.expected_load_s;
    t.pending_load = std::move(load);
  }
  trackers_[request.request_id] = std::move(t);
  matched_.erase(mit);
  stats_.external_tokens += num_external_tokens;
  return absl::OkStatus();
}

absl::StatusOr<ConnectorMetadata> KvtierConnector::BuildConnectorMeta(
    const SchedulerOutput& output) {
  const size_t bt = geometry_.block_tokens;
  std::lock_guard<std::mutex> lock(mu_);
  // Validate everything first: a bad entry changes nothing.
  for (const ScheduledRequest& s : output.scheduled) {
    auto it = trackers_.find(s.request_id);
    if (it == trackers_.end()) {
      return absl::NotFoundError(absl::StrFormat(
          "BuildConnectorMeta: unknown request id '%s' (no UpdateStateAfterAlloc)", s.request_id));
    }
    const size_t known = it->second.tokens.size() + s.new_token_ids.size();
    const size_t end = s.num_computed_tokens + s.num_scheduled_tokens;
    if (end > known) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "BuildConnectorMeta(%s): %d computed + %d scheduled tokens, but only %d token ids known",
          s.request_id, s.num_computed_tokens, s.num_scheduled_tokens, known));
    }
    if (s.block_ids.size() < CeilDiv(end, bt)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "BuildConnectorMeta(%s): page table too short: %d pages for %d tokens (%d blocks)",
          s.request_id, s.block_ids.size(), end, CeilDiv(end, bt)));
    }
  }
  ConnectorMetadata meta;
  for (const ScheduledRequest& s : output.scheduled) {
    Tracker& t = trackers_.at(s.request_id);
    t.tokens.insert(t.tokens.end(), s.new_token_ids.begin(), s.new_token_ids.end());
    t.block_ids = s.block_ids;
    ReqMeta r;
    r.request_id = s.request_id;
    r.cache_salt = t.cache_salt;
    r.load = std::move(t.pending_load);
    t.pending_load.reset();
    // Only full blocks are stored; a partial tail waits for the step that fills it.
    const size_t full = (s.num_computed_tokens + s.num_scheduled_tokens) / bt;
    if (full > t.saved_blocks) {
      SaveSpec save;
      save.tokens.assign(t.tokens.begin(), t.tokens.begin() + full * bt);
      save.first_block = t.saved_blocks;
      save.block_ids.assign(t.block_ids.begin() + t.saved_blocks, t.block_ids.begin() + full);
      r.save = std::move(save);
      t.saved_blocks = full;
    }
    if (r.load.has_value() || r.save.has_value()) meta.requests.push_back(std::move(r));
  }
  for (const std::string& id : output.preempted_req_ids) {
    // A preempted request starts over: the scheduler matches it again when it resumes.
    trackers_.erase(id);
    matched_.erase(id);
    meta.preempted_req_ids.push_back(id);
  }
  return meta;
}

absl::StatusOr<bool> KvtierConnector::RequestFinished(const Request& request,
                                                      absl::Span<const uint32_t> block_ids) {
  (void)block_ids;  // the connector tracks the pages itself; stores happen as blocks fill
  std::lock_guard<std::mutex> lock(mu_);
  const bool tracked = trackers_.erase(request.request_id) > 0;
  const bool matched = matched_.erase(request.request_id) > 0;
  if (!tracked && !matched) {
    return absl::NotFoundError(
        absl::StrFormat("RequestFinished: unknown request id '%s'", request.request_id));
  }
  ReapLocked();
  if (IdleLocked(request.request_id)) {
    in_flight_.erase(request.request_id);
    return false;
  }
  const InFlight& f = in_flight_.at(request.request_id);
  delayed_[request.request_id] = Delayed{!f.loads.empty(), !f.saves.empty()};
  ++stats_.delayed_frees;
  return true;
}

// ---- Worker side ----

absl::Status KvtierConnector::RegisterKvCaches(const KvBuffers::PagedPool& pool,
                                               kvtier::Stream* compute_stream) {
  if (compute_stream == nullptr) {
    return absl::InvalidArgumentError("RegisterKvCaches: compute stream is null");
  }
  if (pool.layers.size() != geometry_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RegisterKvCaches: %d layer tensors for a model of %d layers",
                        pool.layers.size(), geometry_.num_layers));
  }
  if (pool.num_pages == 0) return absl::InvalidArgumentError("RegisterKvCaches: 0 pages");
  // [parts][num_pages][page]: K and V, or vLLM's MLA [num_pages][block_size][576].
  const size_t layer_bytes = size_t{geometry_.parts()} * pool.num_pages * geometry_.part_bytes();
  // The engine's pool is its own memory (vLLM's torch allocator), not kvtier's: each layer
  // tensor is registered with kvtier, unless it is kvtier's memory already (or registered).
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<kvtier::DevicePtr> registered;
  for (size_t l = 0; l < pool.layers.size(); ++l) {
    if (engine_->device().Contains(pool.layers[l], layer_bytes)) continue;
    absl::Status s = engine_->RegisterDeviceMemory(pool.layers[l], layer_bytes);
    if (!s.ok()) {
      for (kvtier::DevicePtr p : registered) (void)engine_->UnregisterDeviceMemory(p);
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterKvCaches: layer %d's tensor ([%d][%d pages][%d bytes] = %d bytes at 0x%x) is "
          "not device memory kvtier can use: %s",
          l, geometry_.parts(), pool.num_pages, geometry_.part_bytes(), layer_bytes,
          pool.layers[l].address(), s.message()));
    }
    registered.push_back(pool.layers[l]);
  }
  registered_.insert(registered_.end(), registered.begin(), registered.end());
  pool_ = pool;
  compute_stream_ = compute_stream;
  return absl::OkStatus();
}

void KvtierConnector::BindConnectorMetadata(ConnectorMetadata metadata) {
  std::lock_guard<std::mutex> lock(mu_);
  metadata_ = std::move(metadata);
  step_loads_.clear();
  step_saves_.clear();
  next_save_layer_ = 0;
}

void KvtierConnector::ClearConnectorMetadata() {
  std::lock_guard<std::mutex> lock(mu_);
  metadata_.reset();
  step_loads_.clear();
  step_saves_.clear();
  next_save_layer_ = 0;
  ReapLocked();
}

absl::Status KvtierConnector::HandlePreemptions(const ConnectorMetadata& metadata) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status first;
  for (const std::string& id : metadata.preempted_req_ids) {
    auto it = in_flight_.find(id);
    if (it == in_flight_.end()) continue;
    // The pages go back to the pool: nothing of ours may still write (or read) them.
    for (Load& l : it->second.loads) first.Update(l.handle->Wait());
    for (auto& s : it->second.saves) first.Update(s->Wait());
    in_flight_.erase(it);
    delayed_.erase(id);
  }
  return first;
}

absl::Status KvtierConnector::StartLoadKv() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!pool_.has_value()) return absl::FailedPreconditionError("StartLoadKv: no RegisterKvCaches");
  if (!metadata_.has_value()) {
    return absl::FailedPreconditionError("StartLoadKv: no connector metadata bound");
  }
  for (const ReqMeta& r : metadata_->requests) {
    if (!r.load.has_value() || r.load->keys.empty()) continue;
    absl::Status s = LoadOneLocked(r);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status KvtierConnector::LoadOneLocked(const ReqMeta& r) {
  const LoadSpec& spec = *r.load;
  size_t n = spec.keys.size();
  for (int attempt = 0; attempt < 2; ++attempt) {
    kvtier::LoadRequest lr;
    lr.ns = options_.ns;
    lr.keys.assign(spec.keys.begin(), spec.keys.begin() + n);
    lr.buffers = KvBuffers::Paged(*pool_, {spec.block_ids.begin(), spec.block_ids.begin() + n});
    lr.layerwise = true;
    lr.after = compute_stream_;
    if (spec.expected_load_s > 0) {
      // Never wait much longer than the plan said: what misses the deadline is recomputed.
      lr.deadline =
          absl::Now() + std::max(options_.min_deadline,
                                 absl::Seconds(options_.deadline_slack * spec.expected_load_s));
    }
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Load(lr);
    if (h.ok()) {
      Load load{std::shared_ptr<TransferHandle>(std::move(*h)), spec.first_block,
                lr.buffers.pages()};
      in_flight_[r.request_id].loads.push_back(load);
      step_loads_.push_back(std::move(load));
      ++stats_.loads_started;
      stats_.blocks_loaded += n;
      if (n < spec.keys.size()) {
        LoadFailedLocked(r.request_id, spec.first_block + n,
                         absl::MakeConstSpan(spec.block_ids).subspan(n));
      }
      return absl::OkStatus();
    }
    if (!absl::IsNotFound(h.status())) return h.status();
    // A block was evicted between the scheduler's match and this load: load what is still
    // cached and have the engine recompute the rest.
    absl::StatusOr<kvtier::MatchResult> m = engine_->Match(options_.ns, spec.tokens, r.cache_salt);
    if (!m.ok()) return m.status();
    const size_t still = m->keys.size() > spec.first_block ? m->keys.size() - spec.first_block : 0;
    n = std::min(n, still);
    if (n == 0) break;
  }
  LoadFailedLocked(r.request_id, spec.first_block, spec.block_ids);
  return absl::OkStatus();
}

void KvtierConnector::LoadErrorsLocked(const std::string& request_id, const Load& load) {
  // Only the blocks that did not arrive (a deadline missed, a read that failed) are errors;
  // when the handle cannot say which, all of them are.
  absl::StatusOr<std::vector<size_t>> failed = load.handle->FailedBlocks();
  if (!failed.ok() || failed->empty()) {
    LoadFailedLocked(request_id, load.first_block, load.block_ids);
    return;
  }
  std::vector<uint32_t> pages;
  for (size_t i : *failed) {
    if (i < load.block_ids.size()) pages.push_back(load.block_ids[i]);
  }
  absl::Status wait = load.handle->Wait();
  if (absl::IsDeadlineExceeded(wait)) stats_.deadline_misses += pages.size();
  LoadFailedLocked(request_id, load.first_block + failed->front(), pages);
}

void KvtierConnector::LoadFailedLocked(const std::string& request_id, size_t first_block,
                                       absl::Span<const uint32_t> block_ids) {
  load_error_blocks_.insert(block_ids.begin(), block_ids.end());
  stats_.load_error_blocks += block_ids.size();
  // The recomputed blocks are not in kvtier: save them again once the engine recomputes them.
  // (Across processes this would travel back to the scheduler in KVConnectorOutput.)
  auto it = trackers_.find(request_id);
  if (it != trackers_.end()) it->second.saved_blocks = std::min(it->second.saved_blocks, first_block);
}

absl::Status KvtierConnector::WaitForLayerLoad(uint32_t layer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (layer >= geometry_.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "WaitForLayerLoad: layer %d out of range (%d layers)", layer, geometry_.num_layers));
  }
  for (Load& l : step_loads_) {
    absl::Status s = l.handle->WaitLayer(layer, *compute_stream_);
    if (!s.ok()) return s;
    ++stats_.layer_waits;
  }
  return absl::OkStatus();
}

absl::Status KvtierConnector::SaveKvLayer(uint32_t layer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (layer >= geometry_.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SaveKvLayer: layer %d out of range (%d layers)", layer, geometry_.num_layers));
  }
  if (!pool_.has_value() || !metadata_.has_value()) {
    return absl::FailedPreconditionError(
        "SaveKvLayer: needs RegisterKvCaches and bound connector metadata");
  }
  if (layer != next_save_layer_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "SaveKvLayer: layer %d out of order (expected layer %d this step)", layer,
        next_save_layer_));
  }
  ++next_save_layer_;
  if (layer + 1 < geometry_.num_layers) return absl::OkStatus();
  // Every layer of this step's KV is enqueued on the compute stream: store the full blocks.
  for (const ReqMeta& r : metadata_->requests) {
    if (!r.save.has_value() || r.save->block_ids.empty()) continue;
    absl::Status s = StoreOneLocked(r);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status KvtierConnector::StoreOneLocked(const ReqMeta& r) {
  const SaveSpec& spec = *r.save;
  kvtier::StoreRequest sr;
  sr.ns = options_.ns;
  sr.tokens = spec.tokens;
  sr.extra = r.cache_salt;
  sr.first_block = spec.first_block;
  sr.buffers = KvBuffers::Paged(*pool_, spec.block_ids);
  sr.after = compute_stream_;  // the copies read the pages after the step's compute wrote them
  absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_->Store(sr);
  if (!h.ok()) return h.status();
  std::shared_ptr<TransferHandle> handle(std::move(*h));
  in_flight_[r.request_id].saves.push_back(handle);
  step_saves_.push_back(std::move(handle));
  ++stats_.stores_started;
  return absl::OkStatus();
}

absl::Status KvtierConnector::WaitForSave() {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status first;
  for (auto& s : step_saves_) {
    first.Update(s->Wait());
    stats_.blocks_saved += s->blocks_moved();
    stats_.blocks_deduplicated += s->blocks_present();
  }
  step_saves_.clear();
  return first;
}

std::set<uint32_t> KvtierConnector::GetBlockIdsWithLoadErrors() {
  std::lock_guard<std::mutex> lock(mu_);
  // Loads are synchronous within a step: by the step's end they have landed; a failure
  // (a block that failed verification) makes its pages load errors.
  for (Load& l : step_loads_) (void)l.handle->Wait();
  ReapLocked();
  std::set<uint32_t> out;
  out.swap(load_error_blocks_);
  return out;
}

absl::StatusOr<FinishedRequests> KvtierConnector::GetFinished() {
  std::lock_guard<std::mutex> lock(mu_);
  ReapLocked();
  FinishedRequests out;
  for (auto it = delayed_.begin(); it != delayed_.end();) {
    if (!IdleLocked(it->first)) {
      ++it;
      continue;
    }
    if (it->second.saves) out.finished_sending.insert(it->first);
    if (it->second.loads) out.finished_recving.insert(it->first);
    in_flight_.erase(it->first);
    it = delayed_.erase(it);
  }
  return out;
}

void KvtierConnector::ReapLocked() {
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    InFlight& f = it->second;
    for (auto l = f.loads.begin(); l != f.loads.end();) {
      if (!l->handle->IsReady()) {
        ++l;
        continue;
      }
      if (!l->handle->Wait().ok()) LoadErrorsLocked(it->first, *l);
      l = f.loads.erase(l);
    }
    // A save's error is reported by WaitForSave, which every step calls.
    std::erase_if(f.saves, [](const std::shared_ptr<TransferHandle>& s) { return s->IsReady(); });
    if (f.loads.empty() && f.saves.empty() && !delayed_.contains(it->first)) {
      it = in_flight_.erase(it);
    } else {
      ++it;
    }
  }
}

bool KvtierConnector::IdleLocked(const std::string& request_id) const {
  auto it = in_flight_.find(request_id);
  return it == in_flight_.end() || (it->second.loads.empty() && it->second.saves.empty());
}

ConnectorStats KvtierConnector::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace kvtier_vllm
