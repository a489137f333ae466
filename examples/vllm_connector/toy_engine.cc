// toy_engine.cc — the toy model, pool, scheduler and model runner around KvtierConnector.

#include "toy_engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kvtier_vllm {

using kvtier::Geometry;
using kvtier::KvPart;
using kvtier::PageLayout;

namespace {

uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

size_t CeilDiv(size_t a, size_t b) { return (a + b - 1) / b; }

// "3..5" or "3" for a run of block indices.
std::string Blocks(size_t first, size_t count) {
  if (count == 1) return absl::StrFormat("%d", first);
  return absl::StrFormat("%d..%d", first, first + count - 1);
}

}  // namespace

// ---- The toy model ----

std::vector<uint64_t> PrefixHashes(absl::Span<const int32_t> tokens, absl::string_view salt) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : salt) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ULL;
  std::vector<uint64_t> out;
  out.reserve(tokens.size());
  for (int32_t t : tokens) {
    h = Mix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) * 0xff51afd7ed558ccdULL));
    out.push_back(h);
  }
  return out;
}

size_t PoolOffset(const Geometry& g, PageLayout layout, uint32_t num_pages, KvPart part,
                  uint32_t page, uint32_t token, uint32_t head) {
  const size_t row = size_t{g.head_dim} * g.element_bytes();
  const size_t base = (static_cast<size_t>(part) * num_pages + page) * g.part_bytes();
  const size_t index = layout == PageLayout::kNhd ? size_t{token} * g.num_kv_heads + head
                                                  : size_t{head} * g.block_tokens + token;
  return base + index * row;
}

void FillHeadRow(const Geometry& g, uint64_t h, uint32_t layer, KvPart part, uint32_t head,
                 uint8_t* out) {
  const size_t bytes = size_t{g.head_dim} * g.element_bytes();
  // The model's head index (a tensor-parallel rank holds heads from kv_head_begin on), so a
  // rank's KV is exactly its slice of the whole model's.
  const uint64_t model_head = uint64_t{g.kv_head_begin} + head;
  uint64_t seed =
      Mix(h ^ (uint64_t{layer} << 40) ^ (model_head << 20) ^ (static_cast<uint64_t>(part) << 60));
  for (size_t i = 0; i < bytes; i += 8) {
    const uint64_t z = Mix(seed + i);
    std::memcpy(out + i, &z, std::min<size_t>(8, bytes - i));
  }
}

std::vector<uint8_t> ExpectedPage(const Geometry& g, PageLayout layout,
                                  absl::Span<const uint64_t> hashes, size_t block,
                                  uint32_t layer) {
  std::vector<uint8_t> page(g.parts() * g.part_bytes());
  for (uint32_t p = 0; p < g.parts(); ++p) {
    const auto part = static_cast<KvPart>(p);
    for (uint32_t t = 0; t < g.block_tokens; ++t) {
      for (uint32_t head = 0; head < g.num_kv_heads; ++head) {
        FillHeadRow(g, hashes[block * g.block_tokens + t], layer, part, head,
                    page.data() + PoolOffset(g, layout, 1, part, 0, t, head));
      }
    }
  }
  return page;
}

int32_t SampleToken(uint64_t h) { return static_cast<int32_t>(Mix(h ^ 0x5eed) % 32000); }

// ---- The engine ----

ToyEngine::ToyEngine(kvtier::Engine* engine, ToyEngineOptions options)
    : engine_(engine), options_(std::move(options)), g_(engine->options().geometry) {}

absl::StatusOr<std::unique_ptr<ToyEngine>> ToyEngine::Create(kvtier::Engine* engine,
                                                             ToyEngineOptions options,
                                                             ConnectorOptions connector_options) {
  if (engine == nullptr) return absl::InvalidArgumentError("ToyEngine: engine is null");
  if (options.num_pages == 0 || options.max_tokens_per_step == 0) {
    return absl::InvalidArgumentError("ToyEngine: num_pages and max_tokens_per_step must be > 0");
  }
  std::unique_ptr<ToyEngine> e(new ToyEngine(engine, std::move(options)));
  absl::StatusOr<std::unique_ptr<KvtierConnector>> c =
      KvtierConnector::Create(engine, std::move(connector_options));
  if (!c.ok()) return c.status();
  e->connector_ = std::move(*c);
  absl::StatusOr<std::unique_ptr<kvtier::Stream>> s = engine->device().CreateStream();
  if (!s.ok()) return s.status();
  e->compute_ = std::move(*s);
  e->pool_.num_pages = e->options_.num_pages;
  e->pool_.layout = e->options_.layout;
  // The pool is this engine's own memory, as vLLM's KV caches are torch tensors from its own
  // allocator; the connector registers it with kvtier in RegisterKvCaches. On the emulated
  // device, device memory is host memory: the pool is host memory allocated here and named by
  // its address. On a GPU a real engine would cudaMalloc it; this example uses kvtier's
  // headers only (no CUDA), so there it takes the memory from kvtier's device instead.
  const size_t layer_bytes = size_t{e->g_.parts()} * e->options_.num_pages * e->g_.part_bytes();
  const bool host_pool = engine->device().kind() == kvtier::DeviceKind::kEmulated;
  for (uint32_t l = 0; l < e->g_.num_layers; ++l) {
    if (host_pool) {
      e->host_pool_.emplace_back(::operator new(layer_bytes, std::align_val_t(kPoolAlignment)));
      std::memset(e->host_pool_.back().get(), 0, layer_bytes);
      e->pool_.layers.push_back(kvtier::DevicePtr::FromAddress(
          reinterpret_cast<uintptr_t>(e->host_pool_.back().get())));
      continue;
    }
    absl::StatusOr<kvtier::DevicePtr> p = engine->device().Allocate(layer_bytes);
    if (!p.ok()) return p.status();
    e->device_pool_.push_back(*p);
    e->pool_.layers.push_back(*p);
  }
  e->refs_.assign(e->options_.num_pages, 0);
  e->page_hash_.assign(e->options_.num_pages, std::nullopt);
  for (uint32_t p = 0; p < e->options_.num_pages; ++p) e->free_.push_back(p);
  absl::Status r = e->connector_->RegisterKvCaches(e->pool_, e->compute_.get());
  if (!r.ok()) return r;
  return e;
}

ToyEngine::~ToyEngine() {
  // Waits for its loads and saves (they use the pool), then unregisters the pool.
  connector_.reset();
  if (compute_ != nullptr) (void)compute_->Synchronize();
  for (kvtier::DevicePtr p : device_pool_) (void)engine_->device().Free(p);
  host_pool_.clear();
}

void ToyEngine::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

absl::Status ToyEngine::AddRequest(Request request, size_t max_tokens) {
  if (request.request_id.empty() || request.prompt_token_ids.empty() || max_tokens == 0) {
    return absl::InvalidArgumentError("AddRequest: needs an id, a prompt and max_tokens > 0");
  }
  if (reports_.contains(request.request_id)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("AddRequest: request id '%s' already used", request.request_id));
  }
  RequestReport& rep = reports_[request.request_id];
  rep.request_id = request.request_id;
  rep.prompt_tokens = request.prompt_token_ids.size();
  Running r;
  r.tokens = request.prompt_token_ids;
  r.request = std::move(request);
  r.max_tokens = max_tokens;
  waiting_.push_back(std::move(r));
  return absl::OkStatus();
}

absl::Status ToyEngine::Preempt(const std::string& request_id) {
  if (!running_.contains(request_id)) {
    return absl::NotFoundError(absl::StrFormat("Preempt: '%s' is not running", request_id));
  }
  to_preempt_.push_back(request_id);
  return absl::OkStatus();
}

std::optional<uint32_t> ToyEngine::AllocatePage() {
  if (free_.empty()) return std::nullopt;
  const uint32_t page = free_.front();
  free_.pop_front();
  if (page_hash_[page].has_value()) {  // its old content leaves the prefix cache
    cached_.erase(*page_hash_[page]);
    page_hash_[page].reset();
  }
  refs_[page] = 1;
  return page;
}

void ToyEngine::FreePages(const std::vector<uint32_t>& pages, const Running* cacheable) {
  std::vector<uint64_t> hashes;
  size_t full = 0;
  if (cacheable != nullptr && options_.prefix_caching) {
    hashes = PrefixHashes(cacheable->tokens, cacheable->request.cache_salt);
    full = cacheable->computed / g_.block_tokens;
  }
  for (size_t b = 0; b < pages.size(); ++b) {
    const uint32_t page = pages[b];
    if (b < full && !page_hash_[page].has_value()) {
      const uint64_t key = hashes[(b + 1) * g_.block_tokens - 1];
      if (!cached_.contains(key)) {
        cached_[key] = page;
        page_hash_[page] = key;
      }
    }
    if (--refs_[page] == 0) free_.push_back(page);
  }
}

absl::StatusOr<bool> ToyEngine::Admit(Running& r) {
  const size_t bt = g_.block_tokens;
  Request q = r.request;
  q.prompt_token_ids = r.tokens;  // a resumed request is matched on all its tokens
  // The engine's own prefix cache first (never the whole prompt: the last token is computed).
  std::vector<uint32_t> local;
  if (options_.prefix_caching) {
    const std::vector<uint64_t> hashes = PrefixHashes(r.tokens, q.cache_salt);
    for (size_t b = 0; b < (r.tokens.size() - 1) / bt; ++b) {
      auto it = cached_.find(hashes[(b + 1) * bt - 1]);
      if (it == cached_.end()) break;
      local.push_back(it->second);
    }
  }
  const size_t need = CeilDiv(r.tokens.size(), bt) - local.size();
  size_t free_local = 0;
  for (uint32_t p : local) free_local += refs_[p] == 0;
  if (free_.size() - free_local < need) return false;

  absl::StatusOr<size_t> external = connector_->GetNumNewMatchedTokens(q, local.size() * bt);
  if (!external.ok()) return external.status();
  for (uint32_t p : local) {
    if (refs_[p]++ == 0) free_.erase(std::find(free_.begin(), free_.end(), p));
  }
  r.pages = local;
  for (size_t i = 0; i < need; ++i) r.pages.push_back(*AllocatePage());
  absl::Status s = connector_->UpdateStateAfterAlloc(q, r.pages, *external);
  if (!s.ok()) return s;
  r.computed = local.size() * bt + *external;
  r.sent_tokens = r.tokens.size();
  RequestReport& rep = reports_[q.request_id];
  rep.local_hit_tokens = local.size() * bt;
  rep.external_tokens = *external;
  Log(absl::StrFormat("  admit %-8s %4d tokens: %d in the pool (prefix cache), %d matched in "
                      "kvtier, %d to compute; pages [%s]",
                      q.request_id, r.tokens.size(), local.size() * bt, *external,
                      r.tokens.size() - r.computed, absl::StrJoin(r.pages, " ")));
  return true;
}

absl::StatusOr<bool> ToyEngine::Step() {
  const size_t bt = g_.block_tokens;
  if (waiting_.empty() && running_.empty()) return false;
  ++step_;
  Log(absl::StrFormat("step %d", step_));
  SchedulerOutput out;
  // Preemptions first: their pages go back to the free list for this step's admissions
  // (HandlePreemptions makes the worker drop its transfers on them before anything else).
  std::vector<Running> preempted;
  for (const std::string& id : to_preempt_) {
    auto it = running_.find(id);
    if (it == running_.end()) continue;
    Running r = std::move(it->second);
    running_.erase(it);
    FreePages(r.pages, nullptr);
    Log(absl::StrFormat("  preempt %s (%d tokens computed): pages [%s] back to the pool", id,
                        r.computed, absl::StrJoin(r.pages, " ")));
    r.pages.clear();
    r.computed = 0;
    r.sent_tokens = 0;
    ++reports_[id].preemptions;
    out.preempted_req_ids.push_back(id);
    preempted.push_back(std::move(r));
  }
  to_preempt_.clear();
  // As vLLM's scheduler: a step that preempts admits nothing new.
  while (preempted.empty() && !waiting_.empty()) {
    absl::StatusOr<bool> admitted = Admit(waiting_.front());
    if (!admitted.ok()) return admitted.status();
    if (!*admitted) break;
    std::string id = waiting_.front().request.request_id;
    running_.emplace(std::move(id), std::move(waiting_.front()));
    waiting_.pop_front();
  }
  for (Running& r : preempted) waiting_.push_back(std::move(r));
  if (running_.empty() && out.preempted_req_ids.empty()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "ToyEngine: request '%s' needs %d pages; %d of %d are free",
        waiting_.front().request.request_id, CeilDiv(waiting_.front().tokens.size(), bt),
        free_.size(), options_.num_pages));
  }

  std::vector<Running*> batch;
  std::vector<size_t> counts;
  for (auto& [id, r] : running_) {
    const size_t n = std::min(options_.max_tokens_per_step, r.tokens.size() - r.computed);
    if (n == 0) continue;
    while (r.pages.size() < CeilDiv(r.computed + n, bt)) {
      std::optional<uint32_t> p = AllocatePage();
      if (!p.has_value()) {
        return absl::ResourceExhaustedError(
            absl::StrFormat("ToyEngine: the pool of %d pages is full; preempt a request",
                            options_.num_pages));
      }
      r.pages.push_back(*p);
    }
    ScheduledRequest s;
    s.request_id = id;
    s.new_token_ids.assign(r.tokens.begin() + r.sent_tokens, r.tokens.end());
    s.block_ids = r.pages;
    s.num_computed_tokens = r.computed;
    s.num_scheduled_tokens = n;
    r.sent_tokens = r.tokens.size();
    out.scheduled.push_back(std::move(s));
    batch.push_back(&r);
    counts.push_back(n);
  }
  absl::StatusOr<ConnectorMetadata> meta = connector_->BuildConnectorMeta(out);
  if (!meta.ok()) return meta.status();
  for (size_t i = 0; i < batch.size(); ++i) {
    Log(absl::StrFormat("  run   %-8s tokens %d..%d", batch[i]->request.request_id,
                        batch[i]->computed, batch[i]->computed + counts[i] - 1));
  }
  for (const ReqMeta& m : meta->requests) {
    if (m.load.has_value()) {
      Log(absl::StrFormat("  load  %-8s blocks %s from kvtier into pages [%s], layer by layer",
                          m.request_id, Blocks(m.load->first_block, m.load->keys.size()),
                          absl::StrJoin(m.load->block_ids, " ")));
    }
    if (m.save.has_value()) {
      Log(absl::StrFormat("  save  %-8s blocks %s from pages [%s] (full blocks only)",
                          m.request_id, Blocks(m.save->first_block, m.save->block_ids.size()),
                          absl::StrJoin(m.save->block_ids, " ")));
    }
  }
  absl::Status f = Forward(batch, counts, *meta);
  if (!f.ok()) return f;

  // Update from the step's output: sample, finish, free.
  std::vector<std::string> finished;
  for (size_t i = 0; i < batch.size(); ++i) {
    Running& r = *batch[i];
    RequestReport& rep = reports_[r.request.request_id];
    rep.computed_tokens += counts[i];
    if (r.computed < r.tokens.size()) continue;  // chunked prefill, or blocks to recompute
    const std::vector<uint64_t> hashes = PrefixHashes(r.tokens, r.request.cache_salt);
    const int32_t next = SampleToken(hashes.back());
    r.tokens.push_back(next);
    rep.output.push_back(next);
    if (rep.output.size() >= r.max_tokens) finished.push_back(r.request.request_id);
  }
  for (const std::string& id : finished) {
    Running r = std::move(running_.at(id));
    running_.erase(id);
    RequestReport& rep = reports_[id];
    rep.finished = true;
    absl::StatusOr<bool> delay = connector_->RequestFinished(r.request, r.pages);
    if (!delay.ok()) return delay.status();
    if (*delay) {
      rep.delayed_free = true;
      Log(absl::StrFormat("  finish %s: a transfer still uses its pages; freed once "
                          "GetFinished reports it",
                          id));
      delayed_free_.emplace(id, std::move(r));
      continue;
    }
    Log(absl::StrFormat("  finish %s: %d output tokens; pages [%s] freed", id, rep.output.size(),
                        absl::StrJoin(r.pages, " ")));
    if (on_free_) on_free_(id, r.pages);
    FreePages(r.pages, &r);
  }
  absl::StatusOr<FinishedRequests> done = connector_->GetFinished();
  if (!done.ok()) return done.status();
  for (const auto* set : {&done->finished_sending, &done->finished_recving}) {
    for (const std::string& id : *set) {
      auto it = delayed_free_.find(id);
      if (it == delayed_free_.end()) continue;
      Log(absl::StrFormat("  free  %s: pages [%s] (its transfers are done)", id,
                          absl::StrJoin(it->second.pages, " ")));
      if (on_free_) on_free_(id, it->second.pages);
      FreePages(it->second.pages, &it->second);
      delayed_free_.erase(it);
    }
  }
  return true;
}

absl::Status ToyEngine::Forward(const std::vector<Running*>& batch,
                                const std::vector<size_t>& counts, const ConnectorMetadata& meta) {
  const size_t bt = g_.block_tokens;
  const size_t row = size_t{g_.head_dim} * g_.element_bytes();
  const size_t pb = g_.part_bytes();
  const ConnectorStats before = connector_->stats();
  connector_->BindConnectorMetadata(meta);
  absl::Status s = connector_->HandlePreemptions(meta);
  if (!s.ok()) return s;
  s = connector_->StartLoadKv();
  if (!s.ok()) return s;

  // Host memory the compute stream reads or writes must live until it is synchronized.
  std::deque<std::vector<uint8_t>> staging;
  struct Readback {
    Running* request;
    size_t block;
    uint32_t layer;
    std::vector<uint8_t> bytes;
  };
  std::deque<Readback> readbacks;
  std::vector<std::vector<uint64_t>> hashes;
  for (Running* r : batch) hashes.push_back(PrefixHashes(r->tokens, r->request.cache_salt));

  for (uint32_t l = 0; l < g_.num_layers; ++l) {
    // Attention on layer l may read the loaded KV only after this (a stream wait).
    s = connector_->WaitForLayerLoad(l);
    if (!s.ok()) return s;
    for (size_t i = 0; i < batch.size(); ++i) {
      Running& r = *batch[i];
      // "Attention": read back the full blocks of context already in the pages.
      for (size_t b = 0; b < r.computed / bt; ++b) {
        Readback& rb =
            readbacks.emplace_back(Readback{&r, b, l, std::vector<uint8_t>(g_.parts() * pb)});
        for (uint32_t p = 0; p < g_.parts(); ++p) {
          const auto part = static_cast<KvPart>(p);
          const size_t off = PoolOffset(g_, pool_.layout, pool_.num_pages, part, r.pages[b], 0, 0);
          s = compute_->CopyToHost(rb.bytes.data() + static_cast<size_t>(part) * pb,
                                   pool_.layers[l] + off, pb);
          if (!s.ok()) return s;
        }
      }
      // The new tokens' K and V for this layer, written into their pages.
      std::vector<uint8_t>& buf =
          staging.emplace_back(counts[i] * g_.parts() * g_.num_kv_heads * row);
      std::vector<kvtier::CopyOp> ops;
      size_t at = 0;
      for (size_t t = r.computed; t < r.computed + counts[i]; ++t) {
        for (uint32_t p = 0; p < g_.parts(); ++p) {
          const auto part = static_cast<KvPart>(p);
          for (uint32_t head = 0; head < g_.num_kv_heads; ++head) {
            FillHeadRow(g_, hashes[i][t], l, part, head, buf.data() + at);
            kvtier::CopyOp op;
            op.kind = kvtier::CopyOp::Kind::kHostToDevice;
            op.src_host = buf.data() + at;
            op.dst_device = pool_.layers[l] + PoolOffset(g_, pool_.layout, pool_.num_pages, part,
                                                         r.pages[t / bt], t % bt, head);
            op.bytes = row;
            ops.push_back(op);
            at += row;
          }
        }
      }
      s = compute_->CopyBatch(ops);
      if (!s.ok()) return s;
    }
    // Layer l's KV is enqueued: the connector may save it (ordered after this stream).
    s = connector_->SaveKvLayer(l);
    if (!s.ok()) return s;
  }
  // The pages must not change until the saves have read them.
  s = connector_->WaitForSave();
  if (!s.ok()) return s;
  s = compute_->Synchronize();
  if (!s.ok()) return s;
  const std::set<uint32_t> errors = connector_->GetBlockIdsWithLoadErrors();
  connector_->ClearConnectorMetadata();

  // Every full block of context attention read must be what the model would have written.
  for (const Readback& rb : readbacks) {
    const uint32_t page = rb.request->pages[rb.block];
    if (errors.contains(page)) continue;  // recomputed below
    const size_t i = std::find(batch.begin(), batch.end(), rb.request) - batch.begin();
    if (rb.bytes != ExpectedPage(g_, pool_.layout, hashes[i], rb.block, rb.layer)) {
      return absl::DataLossError(absl::StrFormat(
          "request %s: block %d (page %d) layer %d differs from the model's KV",
          rb.request->request.request_id, rb.block, page, rb.layer));
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Running& r = *batch[i];
    r.computed += counts[i];
    for (size_t b = 0; b < r.pages.size(); ++b) {
      if (!errors.contains(r.pages[b])) continue;
      // As vLLM does: the request resumes from the first block that failed to load.
      Log(absl::StrFormat("  load error %s: block %d (page %d) is gone from kvtier; recompute "
                          "from token %d",
                          r.request.request_id, b, r.pages[b], b * bt));
      size_t bad = 0;
      for (size_t c = b; c < r.pages.size(); ++c) bad += errors.contains(r.pages[c]);
      reports_[r.request.request_id].load_error_blocks += bad;
      r.computed = std::min(r.computed, b * bt);
      break;
    }
  }
  const ConnectorStats after = connector_->stats();
  Log(absl::StrFormat("  done  %d layers: %d per-layer load waits (stream waits), %d stores "
                      "waited for before the pages may change",
                      g_.num_layers, after.layer_waits - before.layer_waits,
                      after.stores_started - before.stores_started));
  return absl::OkStatus();
}

absl::Status ToyEngine::RunToCompletion() {
  while (true) {
    absl::StatusOr<bool> more = Step();
    if (!more.ok()) return more.status();
    if (!*more) break;
  }
  // Requests whose frees were delayed: their transfers finish on their own.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!delayed_free_.empty()) {
    absl::StatusOr<FinishedRequests> done = connector_->GetFinished();
    if (!done.ok()) return done.status();
    for (const auto* set : {&done->finished_sending, &done->finished_recving}) {
      for (const std::string& id : *set) {
        auto it = delayed_free_.find(id);
        if (it == delayed_free_.end()) continue;
        if (on_free_) on_free_(id, it->second.pages);
        FreePages(it->second.pages, &it->second);
        delayed_free_.erase(it);
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError("ToyEngine: delayed frees never completed");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> ToyEngine::ReadPage(uint32_t page, uint32_t layer) {
  if (page >= pool_.num_pages || layer >= g_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ReadPage: page %d / layer %d out of range", page, layer));
  }
  const size_t pb = g_.part_bytes();
  std::vector<uint8_t> out(g_.parts() * pb);
  for (uint32_t p = 0; p < g_.parts(); ++p) {
    const auto part = static_cast<KvPart>(p);
    absl::Status s = compute_->CopyToHost(
        out.data() + static_cast<size_t>(part) * pb,
        pool_.layers[layer] + PoolOffset(g_, pool_.layout, pool_.num_pages, part, page, 0, 0), pb);
    if (!s.ok()) return s;
  }
  absl::Status s = compute_->Synchronize();
  if (!s.ok()) return s;
  return out;
}

std::vector<uint32_t> ToyEngine::PageTable(const std::string& request_id) const {
  auto it = running_.find(request_id);
  return it == running_.end() ? std::vector<uint32_t>{} : it->second.pages;
}

const RequestReport* ToyEngine::report(const std::string& request_id) const {
  auto it = reports_.find(request_id);
  return it == reports_.end() ? nullptr : &it->second;
}

}  // namespace kvtier_vllm
