// kvtier_connector.h — kvtier as a vLLM-style KV connector for an inference engine that owns
// its paged KV pool.
//
// KvtierConnector mirrors vLLM's KVConnectorBase_V1 (vllm/distributed/kv_transfer/kv_connector/
// v1/base.py) method for method, in C++, over kvtier's public API only (include/kvtier/*.h), so
// it builds out of tree against an installed kvtier. The engine's pool is one tensor per layer,
// [2 (K,V)][num_blocks][block_size][kv_heads][head_dim] (NHD, vLLM's FlashAttention layout) or
// [2][num_blocks][kv_heads][block_size][head_dim] (HND, FlashInfer's); a vLLM block is a page.
//
// One step of the engine calls, in this order (docs/integration.md, "vLLM-style connector",
// has the kvtier calls behind each and which stream they run on):
//
//   scheduler side                              worker side
//   GetNumNewMatchedTokens(request, local)      RegisterKvCaches(pool, compute_stream)  (once)
//   UpdateStateAfterAlloc(request, pages, n)    BindConnectorMetadata(meta)
//   BuildConnectorMeta(scheduler_output) -----> HandlePreemptions(meta)
//                                               StartLoadKv()
//                                               per layer: WaitForLayerLoad(l); attention;
//                                                          SaveKvLayer(l)
//                                               WaitForSave()
//                                               GetBlockIdsWithLoadErrors()
//                                               ClearConnectorMetadata()
//   RequestFinished(request, pages) -> delay?   GetFinished()
//
// Both roles live in one object sharing one kvtier Engine, as in a single-process vLLM; a
// multi-process deployment would forward GetNumNewMatchedTokens' Match to the worker.
//
// Promises:
//   * Only full blocks are stored; a trailing partial block is stored by the step that fills it.
//   * WaitForLayerLoad is a stream wait and SaveKvLayer enqueues copies ordered after the
//     compute stream: the host never blocks on them.
//     WaitForSave blocks the host until the pages it saved may be overwritten, as vLLM requires.
//   * A block evicted from kvtier between the scheduler's match and the worker's load, or one
//     that fails its disk checksum, is never read as wrong bytes: its page is reported by
//     GetBlockIdsWithLoadErrors for recompute, and saved again once recomputed.
//   * Pages a load or save is still using are not handed back early: RequestFinished returns
//     true ("delay the free") until GetFinished reports the request, and HandlePreemptions waits.
//   * Bad input (an unknown request id, a page table shorter than the tokens it must hold, a
//     layer out of range or out of order) returns InvalidArgument / NotFound /
//     FailedPrecondition naming it, and changes nothing.
//
// Thread safety: the methods are meant to be called from the engine's step loop, one at a time,
// as vLLM does; a mutex makes concurrent calls safe but not meaningful.
//
// REQUIRES: the Engine, the pool and the compute stream outlive the connector (the pool's
// memory may be freed once the connector is destroyed: it unregisters it first).

#ifndef KVTIER_EXAMPLES_VLLM_CONNECTOR_KVTIER_CONNECTOR_H_
#define KVTIER_EXAMPLES_VLLM_CONNECTOR_KVTIER_CONNECTOR_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/block_key.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"

namespace kvtier_vllm {

// What a connector reads of vLLM's Request.
struct Request {
  std::string request_id;
  std::vector<int32_t> prompt_token_ids;
  std::string cache_salt;  // kvtier extra key material (vLLM's cache_salt, a LoRA id)
};

// One request's entry in vLLM's SchedulerOutput (NewRequestData and CachedRequestData in one).
struct ScheduledRequest {
  std::string request_id;
  // Tokens appended since the request was last scheduled (sampled output tokens); empty the
  // first time, when the connector takes the prompt from the Request.
  std::vector<int32_t> new_token_ids;
  // The request's whole page table now (vLLM's block_ids): page i holds tokens
  // [i * block_size, (i + 1) * block_size).
  std::vector<uint32_t> block_ids;
  // Tokens whose KV is in the pages before this step (local prefix hits and external tokens).
  size_t num_computed_tokens = 0;
  // Tokens this step computes.
  size_t num_scheduled_tokens = 0;
};

struct SchedulerOutput {
  std::vector<ScheduledRequest> scheduled;
  // Requests preempted this step: their pages return to the pool and will be overwritten.
  std::vector<std::string> preempted_req_ids;
};

// Scheduler → worker, per request and step.
struct LoadSpec {
  std::vector<int32_t> tokens;      // the prompt prefix through the last block to load
  size_t first_block = 0;           // blocks below are already in the pool (local hits)
  std::vector<kvtier::BlockKey> keys;  // blocks first_block .. first_block + keys.size() - 1
  std::vector<uint32_t> block_ids;  // their pages
  // The plan's expected time to load them (Engine::PlanLoad); the load's deadline is this
  // times ConnectorOptions::deadline_slack. 0: no plan, no deadline.
  double expected_load_s = 0;
};
struct SaveSpec {
  std::vector<int32_t> tokens;      // the request's tokens through the last full block
  size_t first_block = 0;           // blocks below are already in kvtier
  std::vector<uint32_t> block_ids;  // pages of blocks first_block ..
};
struct ReqMeta {
  std::string request_id;
  std::string cache_salt;
  std::optional<LoadSpec> load;
  std::optional<SaveSpec> save;
};
struct ConnectorMetadata {
  std::vector<ReqMeta> requests;
  std::vector<std::string> preempted_req_ids;
};

// GetFinished's answer: requests whose asynchronous saves / loads have completed since
// RequestFinished returned true for them; their pages may now be freed.
struct FinishedRequests {
  std::set<std::string> finished_sending;
  std::set<std::string> finished_recving;
};

// What the connector has done, for the example's printout and tests.
struct ConnectorStats {
  uint64_t external_tokens = 0;  // the engine took from kvtier (UpdateStateAfterAlloc)
  uint64_t loads_started = 0;
  uint64_t blocks_loaded = 0;
  uint64_t load_error_blocks = 0;
  uint64_t stores_started = 0;
  uint64_t blocks_saved = 0;     // newly stored in kvtier
  uint64_t blocks_deduplicated = 0;
  uint64_t layer_waits = 0;      // WaitForLayerLoad stream waits enqueued
  uint64_t delayed_frees = 0;    // RequestFinished answers "true"
  // Load plans (ConnectorOptions::compute): matched tokens offered to the engine, and
  // matched tokens left to recompute because loading them would be slower.
  uint64_t planned_tokens = 0;
  uint64_t recompute_chosen_tokens = 0;
  // Blocks a load abandoned at its deadline (reported as load errors, recomputed).
  uint64_t deadline_misses = 0;
};

struct ConnectorOptions {
  std::string ns = "default";  // kvtier namespace (tenant) of every request
  // How fast the model prefills (kvtier/load_plan.h). With prefill_tokens_per_s > 0 every
  // match is planned (Engine::PlanLoad): GetNumNewMatchedTokens offers only the prefix worth
  // loading, and each load carries a deadline of deadline_slack times its expected time (at
  // least min_deadline); blocks that miss it become load errors, which vLLM recomputes
  // (kv_load_failure_policy = "recompute"). 0: offer every hit and wait for every load.
  kvtier::ComputeModel compute;
  double deadline_slack = 1.5;
  absl::Duration min_deadline = absl::Milliseconds(5);
};

class KvtierConnector {
 public:
  // REQUIRES: engine outlives the connector.
  static absl::StatusOr<std::unique_ptr<KvtierConnector>> Create(kvtier::Engine* engine,
                                                                  ConnectorOptions options);
  // Waits for every load and save still in flight (their pages stay valid meanwhile).
  ~KvtierConnector();
  KvtierConnector(const KvtierConnector&) = delete;
  KvtierConnector& operator=(const KvtierConnector&) = delete;

  // ---- Scheduler side ----

  // vLLM's get_num_new_matched_tokens: tokens of the prompt kvtier holds beyond the
  // `num_computed_tokens` already in the pool (a multiple of the block size). A full hit
  // reports one token fewer, so the engine still computes the last token's logits. No I/O;
  // may be called again for the same request (the last answer counts). Loads are
  // synchronous within a step, so vLLM's "load asynchronously" flag is always false.
  absl::StatusOr<size_t> GetNumNewMatchedTokens(const Request& request,
                                                size_t num_computed_tokens);

  // vLLM's update_state_after_alloc: the engine allocated `block_ids` (the whole page table)
  // for the request and will take `num_external_tokens` from the connector (0 or the last
  // GetNumNewMatchedTokens answer). NotFound for a request never matched; InvalidArgument
  // for a page table too short for the tokens to load.
  absl::Status UpdateStateAfterAlloc(const Request& request, absl::Span<const uint32_t> block_ids,
                                     size_t num_external_tokens);

  // vLLM's build_connector_meta: what the worker loads and saves this step. Saves every block
  // that becomes full this step and is not in kvtier yet. NotFound for a scheduled request
  // the connector was never told of; InvalidArgument for a page table that does not cover
  // the scheduled tokens, or more tokens scheduled than known. All or nothing.
  absl::StatusOr<ConnectorMetadata> BuildConnectorMeta(const SchedulerOutput& output);

  // vLLM's request_finished: forgets the request. True when a load or save of its pages is
  // still in flight: the engine must keep the pages until GetFinished reports the request.
  // NotFound for an unknown request.
  absl::StatusOr<bool> RequestFinished(const Request& request,
                                       absl::Span<const uint32_t> block_ids);

  // ---- Worker side ----

  // vLLM's register_kv_caches: the engine's pool, one tensor per layer, and the stream its
  // attention runs on (torch's current stream in vLLM). The pool is the inference engine's
  // own memory: each layer tensor is registered with kvtier (Engine::RegisterDeviceMemory)
  // unless kvtier already knows it, and unregistered when the connector is destroyed, after
  // its transfers have landed. InvalidArgument for a pool that does not fit the engine's
  // geometry, or whose tensors kvtier refuses to register (on CUDA: not memory of the
  // engine's GPU); nothing stays registered then.
  absl::Status RegisterKvCaches(const kvtier::KvBuffers::PagedPool& pool,
                                kvtier::Stream* compute_stream);

  void BindConnectorMetadata(ConnectorMetadata metadata);
  void ClearConnectorMetadata();

  // vLLM's handle_preemptions: blocks the host until no load or save still writes or reads
  // a preempted request's pages, so the engine may overwrite them.
  absl::Status HandlePreemptions(const ConnectorMetadata& metadata);

  // vLLM's start_load_kv: enqueues a layer-by-layer Load of each request's blocks into its
  // pages, after the work already on the compute stream. Returns at once.
  absl::Status StartLoadKv();
  // vLLM's wait_for_layer_load: the compute stream waits (on the device) for layer `layer` of
  // every load of this step. InvalidArgument for a layer out of range.
  absl::Status WaitForLayerLoad(uint32_t layer);
  // vLLM's save_kv_layer: layer `layer` of this step's KV is in the pages (enqueued on the
  // compute stream). kvtier stores whole blocks (all layers), so the last layer enqueues one
  // Store per request, ordered after the compute stream. Layers must come 0, 1, ...
  // (FailedPrecondition otherwise).
  absl::Status SaveKvLayer(uint32_t layer);
  // vLLM's wait_for_save: blocks the host until every save of this step has read its pages.
  absl::Status WaitForSave();

  // vLLM's get_block_ids_with_load_errors: pages whose block could not be loaded (evicted
  // since the match, or failed verification); the engine must recompute them. Clears the set.
  std::set<uint32_t> GetBlockIdsWithLoadErrors();
  // vLLM's get_finished: of the requests RequestFinished delayed, those whose transfers are
  // now complete (a failed load among them has made its pages load errors).
  absl::StatusOr<FinishedRequests> GetFinished();

  ConnectorStats stats() const;

 private:
  // Scheduler-side state of one request.
  struct Tracker {
    std::string cache_salt;
    std::vector<int32_t> tokens;  // prompt, then sampled tokens as they are scheduled
    std::vector<uint32_t> block_ids;
    size_t saved_blocks = 0;      // blocks 0 .. saved_blocks - 1 are in kvtier
    std::optional<LoadSpec> pending_load;
  };
  // The last GetNumNewMatchedTokens answer for a request.
  struct Matched {
    std::vector<int32_t> prompt;
    std::vector<kvtier::BlockKey> keys;
    size_t num_computed_tokens = 0;
    size_t external_tokens = 0;
    double expected_load_s = 0;  // the plan's (0: not planned)
  };
  // Worker-side transfers of one request still holding its pages.
  struct Load {
    std::shared_ptr<kvtier::TransferHandle> handle;
    size_t first_block = 0;
    std::vector<uint32_t> block_ids;  // reported as load errors if it fails
  };
  struct InFlight {
    std::vector<Load> loads;
    std::vector<std::shared_ptr<kvtier::TransferHandle>> saves;
  };
  // A request RequestFinished delayed, and what it was waiting for.
  struct Delayed {
    bool loads = false;
    bool saves = false;
  };

  KvtierConnector(kvtier::Engine* engine, ConnectorOptions options);

  absl::Status LoadOneLocked(const ReqMeta& req);
  absl::Status StoreOneLocked(const ReqMeta& req);
  // Records a load that could not run or failed: its pages must be recomputed, and saved again.
  // A load that failed: its failed blocks (or all of them) become load errors.
  void LoadErrorsLocked(const std::string& request_id, const Load& load);
  void LoadFailedLocked(const std::string& request_id, size_t first_block,
                        absl::Span<const uint32_t> block_ids);
  // Drops the completed transfers of every request (a failed load's pages become load
  // errors).
  void ReapLocked();
  bool IdleLocked(const std::string& request_id) const;

  kvtier::Engine* const engine_;
  const ConnectorOptions options_;
  const kvtier::Geometry geometry_;

  mutable std::mutex mu_;
  // Scheduler side.
  std::map<std::string, Matched> matched_;
  std::map<std::string, Tracker> trackers_;
  std::map<std::string, Delayed> delayed_;  // RequestFinished said true; not yet reported
  // Worker side.
  std::optional<kvtier::KvBuffers::PagedPool> pool_;
  // Layer tensors RegisterKvCaches registered with the engine (unregistered at destruction).
  std::vector<kvtier::DevicePtr> registered_;
  kvtier::Stream* compute_stream_ = nullptr;
  std::optional<ConnectorMetadata> metadata_;
  std::map<std::string, InFlight> in_flight_;
  std::vector<Load> step_loads_;  // this step's, shared with in_flight_
  std::vector<std::shared_ptr<kvtier::TransferHandle>> step_saves_;
  uint32_t next_save_layer_ = 0;
  std::set<uint32_t> load_error_blocks_;
  ConnectorStats stats_;
};

}  // namespace kvtier_vllm

#endif  // KVTIER_EXAMPLES_VLLM_CONNECTOR_KVTIER_CONNECTOR_H_
