// examples/long_context_demo_session.h — the long-context demo's streaming session (one
// sequence: its tokens, its KV in kvtier per layer, attention streamed over it chunk by chunk
// through the managed GPU tier) and the small helpers it shares with the demo's driver
// (examples/long_context_demo.cc, which says what the demo does).

#ifndef KVTIER_EXAMPLES_LONG_CONTEXT_DEMO_SESSION_H_
#define KVTIER_EXAMPLES_LONG_CONTEXT_DEMO_SESSION_H_

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "examples/llm/attention.h"
#include "examples/llm/decoder.h"
#include "examples/llm/model.h"
#include "kvtier/engine.h"

namespace kvtier::demo {

// ------------------------------------------------------------------------------ helpers

inline double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

// A progress bar on stderr, drawn only on a terminal and never in --json mode.
class Progress {
 public:
  Progress(bool enabled, std::string label, size_t total)
      : enabled_(enabled && isatty(STDERR_FILENO)), label_(std::move(label)), total_(total) {}
  void Update(size_t done, const std::string& note = "") {
    if (!enabled_) return;
    const int width = 32;
    const int filled = total_ == 0 ? width : static_cast<int>(width * done / total_);
    std::fprintf(stderr, "\r  %-10s [%s%s] %3d%% %s\033[K", label_.c_str(),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 total_ == 0 ? 100 : static_cast<int>(100 * done / total_), note.c_str());
    if (done >= total_) std::fprintf(stderr, "\n");
  }

 private:
  bool enabled_;
  std::string label_;
  size_t total_;
};

// Device memory freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Make(Device& device, size_t bytes) {
    absl::StatusOr<DevicePtr> p = device.Allocate(std::max<size_t>(bytes, 256));
    if (!p.ok()) return p.status();
    DeviceBuffer b;
    b.device_ = &device;
    b.ptr_ = *p;
    b.bytes_ = bytes;
    return b;
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(device_, o.device_);
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (device_ != nullptr) (void)device_->Free(ptr_);
  }
  DevicePtr ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  Device* device_ = nullptr;
  DevicePtr ptr_;
  size_t bytes_ = 0;
};

#define DEMO_RETURN_IF_ERROR(expr)                     \
  do {                                                 \
    if (absl::Status _s = (expr); !_s.ok()) return _s; \
  } while (0)

#define DEMO_ASSIGN_OR_RETURN(lhs, expr)                                              \
  auto DEMO_CONCAT(_or_, __LINE__) = (expr);                                          \
  if (!DEMO_CONCAT(_or_, __LINE__).ok()) return DEMO_CONCAT(_or_, __LINE__).status(); \
  lhs = std::move(*DEMO_CONCAT(_or_, __LINE__))
#define DEMO_CONCAT_INNER(a, b) a##b
#define DEMO_CONCAT(a, b) DEMO_CONCAT_INNER(a, b)

// What one phase (prefill, a decode run, a turn) measured.
struct PhaseStats {
  double seconds = 0;
  double stall_seconds = 0;  // host waits for streamed KV chunks
  size_t tokens = 0;
  size_t chunks = 0;
  EngineStats before, after;
};

// ------------------------------------------------------------------------------ session

// One sequence: its tokens, its KV in kvtier (full blocks, per layer) and in device memory
// (the block being filled and the current chunk's blocks), and the streamed attention.
class StreamingSession {
 public:
  StreamingSession(const llm::Decoder& model, Engine& engine, Stream& compute, std::string ns,
                   uint32_t stream_blocks)
      : model_(model),
        engine_(engine),
        device_(engine.device()),
        compute_(compute),
        ns_(std::move(ns)),
        g_(engine.options().geometry),
        hasher_(engine.options().key_hash, ns_, engine.options().model_fingerprint,
                g_.Fingerprint()),
        stream_blocks_(stream_blocks) {}

  // Allocates device memory for steps of up to max_tokens tokens.
  absl::Status Init(uint32_t max_tokens) {
    const llm::ModelConfig& c = model_.config();
    fresh_slots_ = max_tokens / g_.block_tokens + 2;
    layers_.resize(c.num_layers);
    for (LayerState& l : layers_) {
      DEMO_ASSIGN_OR_RETURN(l.fresh, DeviceBuffer::Make(device_, fresh_slots_ * g_.block_bytes()));
      l.host.assign(fresh_slots_ * g_.block_bytes(), 0);
    }
    const size_t rows = size_t{max_tokens} * c.num_heads;
    DEMO_ASSIGN_OR_RETURN(q_dev_, DeviceBuffer::Make(device_, rows * c.head_dim * 2));
    DEMO_ASSIGN_OR_RETURN(acc_out_, DeviceBuffer::Make(device_, rows * c.head_dim * 4));
    DEMO_ASSIGN_OR_RETURN(acc_lse_, DeviceBuffer::Make(device_, rows * 4));
    for (Slot& s : slots_) {
      DEMO_ASSIGN_OR_RETURN(s.out, DeviceBuffer::Make(device_, rows * c.head_dim * 4));
      DEMO_ASSIGN_OR_RETURN(s.lse, DeviceBuffer::Make(device_, rows * 4));
      const size_t table_entries = size_t{max_tokens} * std::max(stream_blocks_, fresh_slots_);
      DEMO_ASSIGN_OR_RETURN(s.table, DeviceBuffer::Make(device_, table_entries * 4));
      DEMO_ASSIGN_OR_RETURN(s.lens, DeviceBuffer::Make(device_, size_t{max_tokens} * 4));
      DEMO_ASSIGN_OR_RETURN(s.workspace, DeviceBuffer::Make(device_, WorkspaceBytes(max_tokens)));
      absl::StatusOr<std::unique_ptr<Event>> e = device_.CreateEvent();
      if (!e.ok()) return e.status();
      s.done = std::move(*e);
    }
    max_tokens_ = max_tokens;
    return absl::OkStatus();
  }

  // Continues from `prefix` whose full blocks are all cached in kvtier for every layer
  // (multi-turn reuse): nothing is recomputed for them. `prefix` must be block-aligned.
  void ResumeAfter(absl::Span<const int32_t> prefix) {
    tokens_.assign(prefix.begin(), prefix.end());
  }

  // Runs `tokens` through the model at the next positions; returns the last logits.
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> tokens, bool hint,
                                             PhaseStats* stats) {
    if (tokens.empty() || tokens.size() > max_tokens_) {
      return absl::InvalidArgumentError("Forward: 1..max_tokens tokens per step");
    }
    const llm::ModelConfig& c = model_.config();
    const uint32_t pos = static_cast<uint32_t>(tokens_.size());
    const uint32_t first_fresh = pos / g_.block_tokens;  // the block being filled
    // Keys of the full blocks before the fresh ones, per layer, and the hint for them.
    std::vector<std::vector<BlockKey>> old_keys(c.num_layers);
    std::vector<BlockKey> order;
    for (uint32_t l = 0; l < c.num_layers; ++l) {
      old_keys[l] = hasher_.Keys(absl::MakeConstSpan(tokens_).first(first_fresh * g_.block_tokens),
                                 g_.block_tokens, LayerExtra(l));
      order.insert(order.end(), old_keys[l].begin(), old_keys[l].end());
    }
    std::optional<uint64_t> hint_id;
    if (hint && !order.empty()) {
      absl::StatusOr<uint64_t> h = engine_.Hint(ns_, order);
      if (!h.ok()) return h.status();
      hint_id = *h;
    }
    tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
    const uint32_t T = static_cast<uint32_t>(tokens.size());
    absl::StatusOr<std::vector<float>> h = model_.Embed(tokens);
    if (!h.ok()) return h.status();
    std::vector<float> hidden = std::move(*h);
    for (uint32_t l = 0; l < c.num_layers; ++l) {
      DEMO_ASSIGN_OR_RETURN(llm::Model::QkvOut qkv, model_.Qkv(l, hidden, pos));
      DEMO_RETURN_IF_ERROR(AppendFresh(l, pos, T, qkv));
      absl::StatusOr<std::vector<float>> attn = Attend(l, pos, T, qkv.q, old_keys[l], stats);
      if (!attn.ok()) return attn.status();
      DEMO_RETURN_IF_ERROR(model_.FinishLayer(l, *attn, &hidden));
      DEMO_RETURN_IF_ERROR(StoreFullFresh(l, pos, T));
    }
    if (hint_id.has_value()) (void)engine_.CancelHint(*hint_id);
    stats->tokens += T;
    return model_.Logits(absl::MakeConstSpan(hidden).last(c.d_model));
  }

  const std::vector<int32_t>& tokens() const { return tokens_; }

  // Waits for every store still copying out of the fresh buffers.
  absl::Status Drain() {
    for (LayerState& l : layers_) {
      if (l.store != nullptr) DEMO_RETURN_IF_ERROR(l.store->Wait());
      l.store.reset();
    }
    return compute_.Synchronize();
  }

 private:
  struct LayerState {
    DeviceBuffer fresh;                     // slots: block first_fresh, first_fresh + 1, ...
    std::vector<uint8_t> host;              // the same bytes on the host (fp16 K/V rows)
    std::unique_ptr<TransferHandle> store;  // last Store out of `fresh`
  };
  // One in-flight streamed chunk: its lease, and device scratch its kernels use.
  struct Slot {
    DeviceBuffer out, lse, table, lens, workspace;
    std::vector<uint32_t> host_table, host_lens;
    std::unique_ptr<Event> done;
    std::unique_ptr<TransferHandle> lease;
    bool busy = false;
  };

  static std::string LayerExtra(uint32_t l) { return absl::StrFormat("layer=%u", l); }

  // The most workspace any step needs: the automatic split count depends on the number of
  // queries, so take the maximum over the sizes a step can have.
  size_t WorkspaceBytes(uint32_t max_tokens) const {
    size_t most = 0;
    for (uint32_t seqs = 1;; seqs = std::min(2 * seqs, max_tokens)) {
      for (uint32_t width : {1u, stream_blocks_, fresh_slots_}) {
        most = std::max(most, DecodeAttentionWorkspaceBytes(BaseParams(seqs, width)));
      }
      if (seqs == max_tokens) break;
    }
    return most;
  }

  DecodeAttentionParams BaseParams(uint32_t seqs, uint32_t table_width) const {
    const llm::ModelConfig& c = model_.config();
    DecodeAttentionParams p;
    p.dtype = DType::kFloat16;
    p.num_seqs = seqs;
    p.num_q_heads = c.num_heads;
    p.num_kv_heads = c.num_kv_heads;
    p.head_dim = c.head_dim;
    p.block_tokens = g_.block_tokens;
    p.block_stride = g_.block_bytes();
    p.k_offset = g_.Offset(0, KvPart::kKey);
    p.v_offset = g_.Offset(0, KvPart::kValue);
    p.max_blocks_per_seq = table_width;
    return p;
  }

  // Writes the step's K/V rows (fp16, rounded as the reference rounds them) into the fresh
  // blocks and uploads the touched slots.
  absl::Status AppendFresh(uint32_t l, uint32_t pos, uint32_t T, const llm::Model::QkvOut& qkv) {
    LayerState& st = layers_[l];
    if (st.store != nullptr) {  // its copies still read `fresh`
      DEMO_RETURN_IF_ERROR(st.store->Wait());
      st.store.reset();
    }
    const uint32_t first_fresh = pos / g_.block_tokens;
    const size_t row = g_.token_bytes();
    const std::vector<uint16_t> k = llm::RoundToHalfBits(qkv.k);
    const std::vector<uint16_t> v = llm::RoundToHalfBits(qkv.v);
    for (uint32_t t = 0; t < T; ++t) {
      const uint32_t x = pos + t;
      const size_t slot = x / g_.block_tokens - first_fresh;
      const uint32_t r = x % g_.block_tokens;
      uint8_t* block = st.host.data() + slot * g_.block_bytes();
      std::memcpy(block + g_.Offset(0, KvPart::kKey, r), k.data() + size_t{t} * row / 2, row);
      std::memcpy(block + g_.Offset(0, KvPart::kValue, r), v.data() + size_t{t} * row / 2, row);
    }
    const size_t slots = (pos + T - 1) / g_.block_tokens - first_fresh + 1;
    return compute_.CopyToDevice(st.fresh.ptr(), st.host.data(), slots * g_.block_bytes());
  }

  // Stores the fresh blocks that are now full, then moves a partial last block to slot 0.
  absl::Status StoreFullFresh(uint32_t l, uint32_t pos, uint32_t T) {
    LayerState& st = layers_[l];
    const uint32_t first_fresh = pos / g_.block_tokens;
    const uint32_t end = pos + T;
    const uint32_t full_end = end / g_.block_tokens;  // blocks [first_fresh, full_end) full
    if (full_end > first_fresh) {
      std::vector<DevicePtr> ptrs;
      for (uint32_t b = first_fresh; b < full_end; ++b) {
        ptrs.push_back(st.fresh.ptr() + size_t{b - first_fresh} * g_.block_bytes());
      }
      StoreRequest r;
      r.ns = ns_;
      const std::string extra = LayerExtra(l);
      r.extra = extra;
      r.tokens = absl::MakeConstSpan(tokens_).first(size_t{full_end} * g_.block_tokens);
      r.first_block = first_fresh;
      r.buffers = KvBuffers::Blocks(std::move(ptrs));
      r.after = &compute_;  // after the upload of the rows
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine_.Store(r);
      if (!h.ok()) return h.status();
      st.store = std::move(*h);
    }
    if (end % g_.block_tokens != 0 && full_end > first_fresh) {
      // The partial block becomes slot 0 for the next step (host side; uploaded next step).
      std::memmove(st.host.data(),
                   st.host.data() + size_t{full_end - first_fresh} * g_.block_bytes(),
                   g_.block_bytes());
    }
    return absl::OkStatus();
  }

  // Waits until `slot` is free: its kernels done, its lease released.
  absl::Status Retire(Slot& slot) {
    if (!slot.busy) return absl::OkStatus();
    DEMO_RETURN_IF_ERROR(slot.done->Synchronize());
    if (slot.lease != nullptr) DEMO_RETURN_IF_ERROR(slot.lease->Release());
    slot.lease.reset();
    slot.busy = false;
    return absl::OkStatus();
  }

  // Enqueues attention of the T queries over one pool of slots and its merge into the
  // accumulator. `first_token`: the context position of the pool's first slot's row 0.
  absl::Status EnqueueChunk(Slot& slot, DevicePtr pool, const std::vector<uint32_t>& slot_ids,
                            uint32_t first_token, uint32_t chunk_tokens, uint32_t pos, uint32_t T) {
    const llm::ModelConfig& c = model_.config();
    const uint32_t width = static_cast<uint32_t>(slot_ids.size());
    slot.host_table.clear();
    slot.host_lens.clear();
    for (uint32_t t = 0; t < T; ++t) {
      slot.host_table.insert(slot.host_table.end(), slot_ids.begin(), slot_ids.end());
      // Causal: query t (position pos + t) sees context positions <= pos + t.
      const int64_t visible = int64_t{pos} + t + 1 - first_token;
      slot.host_lens.push_back(
          static_cast<uint32_t>(std::clamp<int64_t>(visible, 0, chunk_tokens)));
    }
    DEMO_RETURN_IF_ERROR(compute_.CopyToDevice(slot.table.ptr(), slot.host_table.data(),
                                               slot.host_table.size() * 4));
    DEMO_RETURN_IF_ERROR(
        compute_.CopyToDevice(slot.lens.ptr(), slot.host_lens.data(), slot.host_lens.size() * 4));
    DecodeAttentionParams p = BaseParams(T, width);
    p.q = q_dev_.ptr();
    p.kv_pool = pool;
    p.block_table = slot.table.ptr();
    p.context_lens = slot.lens.ptr();
    p.out = slot.out.ptr();
    p.lse = slot.lse.ptr();
    p.workspace = slot.workspace.ptr();
    if (DecodeAttentionWorkspaceBytes(p) > slot.workspace.bytes()) {
      return absl::InternalError("attention workspace too small");
    }
    DEMO_RETURN_IF_ERROR(compute_.Launch(MakeDecodeAttentionKernel(p)));
    MergeAttentionParams m;
    m.rows = T * c.num_heads;
    m.head_dim = c.head_dim;
    m.out_acc = acc_out_.ptr();
    m.lse_acc = acc_lse_.ptr();
    m.out_part = slot.out.ptr();
    m.lse_part = slot.lse.ptr();
    DEMO_RETURN_IF_ERROR(compute_.Launch(MakeMergeAttentionKernel(m)));
    DEMO_RETURN_IF_ERROR(compute_.Record(*slot.done));
    slot.busy = true;
    return absl::OkStatus();
  }

  // Attention of the T queries of layer l over positions [0, pos + T).
  absl::StatusOr<std::vector<float>> Attend(uint32_t l, uint32_t pos, uint32_t T,
                                            const std::vector<float>& q,
                                            const std::vector<BlockKey>& old_keys,
                                            PhaseStats* stats) {
    const llm::ModelConfig& c = model_.config();
    const size_t rows = size_t{T} * c.num_heads;
    q_host_ = llm::RoundToHalfBits(q);
    acc_init_out_.assign(rows * c.head_dim, 0.0f);
    acc_init_lse_.assign(rows, -std::numeric_limits<float>::infinity());
    // The compute stream is idle here (the last layer synchronized), so host buffers are free.
    DEMO_RETURN_IF_ERROR(compute_.CopyToDevice(q_dev_.ptr(), q_host_.data(), q_host_.size() * 2));
    DEMO_RETURN_IF_ERROR(
        compute_.CopyToDevice(acc_out_.ptr(), acc_init_out_.data(), rows * c.head_dim * 4));
    DEMO_RETURN_IF_ERROR(compute_.CopyToDevice(acc_lse_.ptr(), acc_init_lse_.data(), rows * 4));

    const uint32_t first_fresh = pos / g_.block_tokens;
    size_t next = 0;  // round-robin over pipeline slots
    // Older blocks: streamed through the GPU tier, stream_blocks_ at a time.
    for (size_t b0 = 0; b0 < old_keys.size(); b0 += stream_blocks_) {
      const size_t n = std::min<size_t>(stream_blocks_, old_keys.size() - b0);
      Slot& slot = slots_[next++ % slots_.size()];
      DEMO_RETURN_IF_ERROR(Retire(slot));
      const std::vector<BlockKey> keys(old_keys.begin() + b0, old_keys.begin() + b0 + n);
      // The stall clock starts before the call: LoadToGpuTier itself may wait (for GPU slots
      // whose copies are landing, for host slots a disk read needs).
      const absl::Time wait_start = absl::Now();
      absl::StatusOr<std::unique_ptr<TransferHandle>> lease =
          engine_.LoadToGpuTier(ns_, keys, /*layerwise=*/false);
      if (!lease.ok()) return lease.status();
      DEMO_RETURN_IF_ERROR((*lease)->Wait());
      stats->stall_seconds += Seconds(wait_start);
      ++stats->chunks;
      absl::Span<const DevicePtr> ptrs = (*lease)->slots();
      const DevicePtr base =
          *std::min_element(ptrs.begin(), ptrs.end(),
                            [](DevicePtr a, DevicePtr b) { return a.address() < b.address(); });
      std::vector<uint32_t> ids;
      for (DevicePtr p : ptrs) {
        ids.push_back(static_cast<uint32_t>((p.address() - base.address()) / g_.block_bytes()));
      }
      slot.lease = std::move(*lease);
      DEMO_RETURN_IF_ERROR(EnqueueChunk(slot, base, ids,
                                        static_cast<uint32_t>(b0 * g_.block_tokens),
                                        static_cast<uint32_t>(n * g_.block_tokens), pos, T));
    }
    // The fresh blocks, from device memory.
    {
      Slot& slot = slots_[next++ % slots_.size()];
      DEMO_RETURN_IF_ERROR(Retire(slot));
      const uint32_t n = (pos + T - 1) / g_.block_tokens - first_fresh + 1;
      std::vector<uint32_t> ids(n);
      for (uint32_t i = 0; i < n; ++i) ids[i] = i;
      DEMO_RETURN_IF_ERROR(EnqueueChunk(slot, layers_[l].fresh.ptr(), ids,
                                        first_fresh * g_.block_tokens, n * g_.block_tokens, pos,
                                        T));
    }
    std::vector<float> out(rows * c.head_dim);
    DEMO_RETURN_IF_ERROR(compute_.CopyToHost(out.data(), acc_out_.ptr(), out.size() * 4));
    DEMO_RETURN_IF_ERROR(compute_.Synchronize());
    for (Slot& s : slots_) DEMO_RETURN_IF_ERROR(Retire(s));
    return out;
  }

  const llm::Decoder& model_;
  Engine& engine_;
  Device& device_;
  Stream& compute_;
  const std::string ns_;
  const Geometry g_;
  const KeyHasher hasher_;
  const uint32_t stream_blocks_;
  uint32_t fresh_slots_ = 0;
  uint32_t max_tokens_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<LayerState> layers_;
  DeviceBuffer q_dev_, acc_out_, acc_lse_;
  std::vector<uint16_t> q_host_;
  std::vector<float> acc_init_out_, acc_init_lse_;
  std::array<Slot, 3> slots_;
};

}  // namespace kvtier::demo

#endif  // KVTIER_EXAMPLES_LONG_CONTEXT_DEMO_SESSION_H_
