// toy_engine.h — a minimal inference-engine loop with its own paged KV pool, driving
// KvtierConnector the way vLLM's scheduler and model runner drive a KV connector.
//
// The pool is vLLM's: the engine's own memory, not kvtier's (on the emulated device, host
// memory it allocates; the connector registers it with kvtier), one tensor per layer,
// [2 (K,V)][num_pages][page], a page being [block_size][kv_heads][head_dim] (NHD) or
// [kv_heads][block_size][head_dim] (HND); for an MLA model (kind mla) [num_pages][block_size]
// [576], vLLM's MLA layout (one latent per token, no K/V axis). With an fp8 KV cache the
// elements are single bytes; under tensor parallelism the pool holds the rank's heads. Pages are
// handed out from a free list; with prefix caching on, the full pages of finished requests stay
// findable by content (vLLM's own prefix cache) until the free list reuses them.
//
// The "model" is a deterministic function: a token's K and V for a layer are bytes derived
// from the hash of every token up to it (as real KV depends on the whole prefix), so equal
// prefixes have equal KV. Each step, attention reads back the KV already in the request's
// pages (local hits, loaded blocks, earlier steps) and Step() fails with DataLoss if any full
// block differs from what the model would have written: every load is checked byte for byte.
//
// Step() is one engine step, in vLLM's order:
//   schedule: preempt what was asked; admit waiting requests (local prefix hit, then
//             GetNumNewMatchedTokens, allocate pages, UpdateStateAfterAlloc); give each
//             running request up to max_tokens_per_step tokens; BuildConnectorMeta.
//   forward:  BindConnectorMetadata, HandlePreemptions, StartLoadKv; per layer
//             WaitForLayerLoad, attention (read the context back, write the new tokens' KV),
//             SaveKvLayer; WaitForSave; GetBlockIdsWithLoadErrors; ClearConnectorMetadata.
//   update:   sample a token for each request whose prompt is done; finish requests that
//             have all their tokens (RequestFinished; pages freed now or once GetFinished
//             reports them); roll back requests with load errors so their blocks are recomputed.
//
// Not thread-safe: one thread drives an engine, as in vLLM.

#ifndef KVTIER_EXAMPLES_VLLM_CONNECTOR_TOY_ENGINE_H_
#define KVTIER_EXAMPLES_VLLM_CONNECTOR_TOY_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"
#include "kvtier/geometry.h"
#include "kvtier_connector.h"

namespace kvtier_vllm {

// ---- The toy model ----

// Hash of a token prefix: PrefixHashes(t)[i] covers t[0..i]; `salt` seeds it (cache_salt).
std::vector<uint64_t> PrefixHashes(absl::Span<const int32_t> tokens, absl::string_view salt);
// Byte offset, in one layer tensor of a pool of `num_pages` pages, of the head_dim elements of
// (part, page, token within the page, head).
size_t PoolOffset(const kvtier::Geometry& g, kvtier::PageLayout layout, uint32_t num_pages,
                  kvtier::KvPart part, uint32_t page, uint32_t token, uint32_t head);
// The model's K or V of one token (prefix hash `h`) for one layer and head: head_dim elements.
void FillHeadRow(const kvtier::Geometry& g, uint64_t h, uint32_t layer, kvtier::KvPart part,
                 uint32_t head, uint8_t* out);
// What one layer of a page holding block `block` of a prompt with prefix hashes `hashes`
// must contain: K part then V part (2 * part_bytes), or the latent, in `layout`. REQUIRES: the
// block is full.
std::vector<uint8_t> ExpectedPage(const kvtier::Geometry& g, kvtier::PageLayout layout,
                                  absl::Span<const uint64_t> hashes, size_t block, uint32_t layer);
// The toy model's next token after a prefix with hash `h`.
int32_t SampleToken(uint64_t h);

// ---- The engine ----

struct ToyEngineOptions {
  kvtier::PageLayout layout = kvtier::PageLayout::kNhd;
  uint32_t num_pages = 64;
  size_t max_tokens_per_step = 64;  // per request: chunked prefill
  bool prefix_caching = true;       // keep finished requests' full pages findable
  // One line per event (admission, loads, saves, waits, finishes); null for silence.
  std::function<void(const std::string&)> log;
};

// What happened to one request, filled in as it runs.
struct RequestReport {
  std::string request_id;
  size_t prompt_tokens = 0;
  size_t local_hit_tokens = 0;  // from the engine's own prefix cache (last admission)
  size_t external_tokens = 0;   // loaded from kvtier (last admission)
  size_t computed_tokens = 0;   // run through the model, over all steps
  size_t load_error_blocks = 0;
  size_t preemptions = 0;
  bool delayed_free = false;    // RequestFinished asked to keep the pages a while
  bool finished = false;
  std::vector<int32_t> output;
};

class ToyEngine {
 public:
  // Allocates the pool (memory of its own, as an inference engine owns its KV caches) and
  // hands it to a new connector, which registers it with kvtier. REQUIRES: engine outlives
  // the ToyEngine.
  static absl::StatusOr<std::unique_ptr<ToyEngine>> Create(kvtier::Engine* engine,
                                                           ToyEngineOptions options,
                                                           ConnectorOptions connector_options = {});
  ~ToyEngine();
  ToyEngine(const ToyEngine&) = delete;
  ToyEngine& operator=(const ToyEngine&) = delete;

  // Queues a request that generates `max_tokens` tokens. InvalidArgument for an empty prompt
  // or id, AlreadyExists for an id in use.
  absl::Status AddRequest(Request request, size_t max_tokens);
  // The next step preempts the request: its pages go back to the pool, and it is admitted
  // again (matched again) after the requests already waiting. NotFound unless it is running.
  absl::Status Preempt(const std::string& request_id);

  // One engine step. Returns false when no request is waiting or running.
  absl::StatusOr<bool> Step();
  absl::Status RunToCompletion();

  // The pool's bytes of one layer of one page: K part then V part, as ExpectedPage.
  absl::StatusOr<std::vector<uint8_t>> ReadPage(uint32_t page, uint32_t layer);
  // A running request's page table; empty for others.
  std::vector<uint32_t> PageTable(const std::string& request_id) const;
  const RequestReport* report(const std::string& request_id) const;
  size_t free_pages() const { return free_.size(); }
  const kvtier::KvBuffers::PagedPool& pool() const { return pool_; }
  KvtierConnector& connector() { return *connector_; }
  // Called with a finished request's id and page table just before its pages are freed.
  void set_on_free(std::function<void(const std::string&, const std::vector<uint32_t>&)> f) {
    on_free_ = std::move(f);
  }

 private:
  struct Running {
    Request request;
    size_t max_tokens = 0;
    std::vector<int32_t> tokens;  // prompt, then sampled tokens
    size_t sent_tokens = 0;       // token ids the connector knows of
    size_t computed = 0;          // tokens whose KV is in the pages
    std::vector<uint32_t> pages;
  };

  ToyEngine(kvtier::Engine* engine, ToyEngineOptions options);
  void Log(const std::string& line) const;
  // Pages: allocation from the free list (dropping what the prefix cache knew of them).
  std::optional<uint32_t> AllocatePage();
  void FreePages(const std::vector<uint32_t>& pages, const Running* cacheable);
  absl::StatusOr<bool> Admit(Running& r);
  absl::Status Forward(const std::vector<Running*>& batch, const std::vector<size_t>& counts,
                       const ConnectorMetadata& meta);

  kvtier::Engine* const engine_;
  const ToyEngineOptions options_;
  const kvtier::Geometry g_;
  std::unique_ptr<KvtierConnector> connector_;
  std::unique_ptr<kvtier::Stream> compute_;
  kvtier::KvBuffers::PagedPool pool_;
  // The pool's memory: host memory this engine owns (emulated device), or, on a GPU, memory
  // from kvtier's device (this example has no CUDA of its own to cudaMalloc with).
  static constexpr size_t kPoolAlignment = 256;
  struct AlignedDelete {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(kPoolAlignment)); }
  };
  std::vector<std::unique_ptr<void, AlignedDelete>> host_pool_;
  std::vector<kvtier::DevicePtr> device_pool_;

  std::vector<uint32_t> refs_;              // per page
  std::vector<std::optional<uint64_t>> page_hash_;  // prefix-cache key of a cached page
  std::map<uint64_t, uint32_t> cached_;     // prefix-cache key → page
  std::deque<uint32_t> free_;               // refs_ == 0, least recently freed first

  std::deque<Running> waiting_;
  std::map<std::string, Running> running_;
  std::vector<std::string> to_preempt_;
  std::map<std::string, Running> delayed_free_;  // finished; pages kept until GetFinished
  std::map<std::string, RequestReport> reports_;
  std::function<void(const std::string&, const std::vector<uint32_t>&)> on_free_;
  uint64_t step_ = 0;
};

}  // namespace kvtier_vllm

#endif  // KVTIER_EXAMPLES_VLLM_CONNECTOR_TOY_ENGINE_H_
