// kvtier/engine.h — the KV-cache storage engine an inference engine links.
//
// An Engine stores KV blocks by content address (BlockKey) in a hierarchy of tiers: a GPU
// tier (a pool of fixed-size slots in device memory, optional) and a host tier (slots in
// pinned host memory). A block may have a copy in several tiers at once; Match reports the
// fastest one. When a tier is full its eviction policy picks a victim that is not pinned,
// leased or in flight: a GPU copy with no host copy is demoted (copied device → host), any
// other copy is dropped; a host copy is dropped.
//
// Typical use by an inference engine:
//   1. Match(ns, prompt tokens)           -> how many tokens are cached, and their keys.
//   2. Load(keys into the engine's pages) -> handle; attention on layer i first calls
//      handle->WaitLayer(i, compute_stream), a stream wait that never blocks the host.
//   3. Store(new full blocks)             -> handle; the pages may be reused once
//      handle->Wait() (or IsReady()) says the copy is done.
//
// Promises:
//   * Every call is thread-safe and returns absl::Status / StatusOr; bad input yields
//     InvalidArgument / NotFound / FailedPrecondition naming what was wrong, and leaves the
//     engine unchanged.
//   * Nothing that moves bytes blocks the host: Store, Load and Prefetch enqueue copies on
//     the engine's own streams and return handles at once.
//   * Namespaces are part of every key: no call matches, returns or counts another
//     namespace's blocks.
//   * A block that is pinned (by an in-flight copy or a lease) is never evicted or
//     overwritten; leases expire after their timeout so a forgetful caller cannot leak a tier.

#ifndef KVTIER_ENGINE_H_
#define KVTIER_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kvtier/block_key.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"
#include "kvtier/load_plan.h"
#include "kvtier/stats.h"
#include "kvtier/tier_kind.h"

namespace kvtier {

// What a namespace (tenant) may be called: 1 to 128 bytes of [A-Za-z0-9._:@-], safe in file
// names, metric labels and log lines. InvalidArgument naming the offending byte otherwise.
absl::Status ValidateNamespaceName(absl::string_view name);

// The disk tier: a cache directory on local NVMe (docs/disk-format.md). Disabled when
// `directory` is empty. Reopening a directory recovers every block it holds.
struct DiskOptions {
  std::string directory;
  uint64_t capacity_bytes = 0;           // of the data file; >= 2 regions
  uint64_t region_bytes = 64ull << 20;   // unit of reclaim; multiple of 4096
  // How each record is stored (docs/disk-format.md, "Codecs"): "none" (default), "zstd",
  // "zstd-shuffle" (lossless), or "fp8" / "int8" (lossy, opt-in): the block quantized
  // (kernels/quantize.h: e4m3 or int8, one float scale per (layer, K/V, kv_head)), about half
  // the bytes of fp16/bf16 and a quarter of fp32 on disk. With a quantized codec a Load of a
  // block that went through the disk tier returns dequantized values, not the stored bytes:
  // error per element at most scale/2 (int8) or 2^-4 of the value plus scale·2^-10 (fp8),
  // scale = the head's max |x| / 127 or / 448, plus the dtype's own rounding; relative RMS
  // ~0.008 (int8) and ~0.026 (fp8) on gaussian KV (docs/benchmarks.md). The GPU and host tiers
  // always hold exact bytes of what was stored; a block read back from disk stays dequantized
  // there. Blocks whose quantized form would not save a 4 KiB page are stored exactly. The
  // codec is recorded per record, so a directory reopened with another codec reads its old
  // records as they were written.
  std::string codec = "none";
  int zstd_level = 1;
  std::string sync = "none";             // "none" (survives a process crash), "data", "full"
  uint32_t queue_depth = 64;
  bool force_fallback_io = false;        // thread-pool pread/pwrite instead of io_uring
  uint32_t staging_buffers = 32;         // pinned buffers for disk I/O in flight
  // Threads that encode records as they are written and verify and decode them as they are
  // read (checksums, copies, zstd, fp8 / int8); 0: min(4, hardware threads); at most 64.
  uint32_t codec_threads = 0;
  // Reads of uncompressed page-sized blocks go straight into their host slot (one readv, no
  // copy; the checksum is still verified). The host tier's memory is in huge pages where the
  // kernel has transparent huge pages, so the kernel pins a segment or two per read; with
  // them "never" it would pin every 4 KiB page, which cost more than the copy saved on the
  // dev VM (docs/benchmarks.md, "disk"): there (and on a kernel without them) the disk tier
  // reads through its staging buffers whatever this says, and logs so once at open.
  bool read_in_place = true;
  // Admission (engine/admission_policy.h): a block is written to disk only once it has been
  // seen (stored or hit) this many times, and within this write budget (MB/s, 0 = none).
  // Default 2: on the Mooncake trace it keeps the hit ratio of admitting everything while
  // writing 2.65x less to the SSD (docs/benchmarks.md, "admission").
  uint32_t admit_min_seen = 2;
  double write_budget_mbps = 0;
  // The directory is private: created 0700 with its files 0600, and an existing one that
  // other users may read or write (or another user owns) is refused, naming the chmod that
  // fixes it. true: 0750 / 0640 and a group-readable directory accepted (a group of trusted
  // service users, on purpose). Links in place of data.kvt or index/ are always refused, and
  // a new cache is only made in an empty or missing directory (docs/disk-format.md).
  bool group_access = false;
};

// The remote tier: a Redis Cluster (7.0+, or Valkey) shared by every engine of a fleet, below
// disk (docs/remote.md, docs/operations.md). Engines with the same model fingerprint, geometry
// and namespace see each other's blocks: Match asks the cluster for the part of a prompt's
// chain not cached locally (one pipelined round trip per master involved, bounded by
// match_timeout), and Load, LoadToGpuTier, Prefetch and hints read such blocks into a host
// slot (verified there) on their way up. Blocks are written to the cluster asynchronously.
// Each block is one key (spread over the cluster by hash slot) whose value is a
// self-verifying record (remote/remote_record.h): a missing, damaged, swapped, foreign or
// badly signed value is a miss, never wrong bytes. Disabled when `seeds` is empty.
struct RemoteOptions {
  std::vector<std::string> seeds;  // "host:port" of one or more cluster nodes
  std::string user;                // ACL user; empty = "default"
  std::string password;            // empty = no AUTH
  // TLS (OpenSSL). KV bytes are prompts in another form: between machines, use it.
  bool tls = false;
  std::string tls_ca_file;         // required with tls
  std::string tls_cert_file;       // client certificate (servers with tls-auth-clients)
  std::string tls_key_file;        // its private key: refused at Open if other users can read it
  std::string tls_server_name;     // hostname to verify; empty = the CA chain only
  absl::Duration connect_timeout = absl::Milliseconds(500);
  absl::Duration op_timeout = absl::Seconds(2);  // one GET or SET, queueing included
  // How long Match waits for the cluster before answering with the local part alone.
  absl::Duration match_timeout = absl::Milliseconds(50);
  uint32_t connections_per_node = 2;
  uint32_t io_threads = 2;
  // Writes (SETs) in flight, in value bytes, for the whole engine: a write beyond it is
  // dropped and counted (the tier is a cache; the caller never waits for it).
  size_t max_inflight_bytes = size_t{64} << 20;
  // When blocks are written: "write-through" (once a Store has landed: other nodes see a
  // prefix soon after it is computed), "on-evict" (when the block's last copy above disk leaves
  // the host tier) or "both".
  std::string write_policy = "write-through";
  // Admission, as the disk tier's (engine/admission_policy.h): a block is written once seen
  // this many times on this engine, within this budget (MB/s, 0 = none).
  uint32_t admit_min_seen = 1;
  double write_budget_mbps = 0;
  // Codec of the stored values: "none", "zstd", "zstd-shuffle", "fp8", "int8" (as the disk
  // tier's; quantized codecs are lossy and opt-in).
  std::string codec = "none";
  int zstd_level = 1;
  // Per-namespace HMAC-SHA256 secrets: a namespace listed here signs what it writes and treats
  // a value whose MAC does not verify (or that has none) as a miss, counted, so a peer that can
  // write to the cluster cannot poison its cache. Namespaces not listed are not signed.
  std::map<std::string, std::string> hmac_secrets;
  // When the cluster cannot be reached at Open: false = Open fails (Unavailable naming the
  // seeds); true = the engine opens without the remote tier answering (every remote lookup a
  // miss, counted and logged) and the client keeps trying to connect.
  bool allow_unreachable = false;
};

// What one namespace (tenant) may hold. Quotas are per tier, in bytes, rounded down to whole
// blocks (disk: whole records); 0 = no quota (the tier's size is the only limit). A store or
// promotion into a tier where the namespace is at its quota evicts one of that namespace's
// own blocks there (the tier's policy picks which); when none of them can go (all pinned or
// in flight) the block is refused, as for a full tier. The disk tier cannot evict single
// records, so a namespace at its disk quota has further blocks refused admission.
struct NamespaceLimits {
  size_t gpu_bytes = 0;
  size_t host_bytes = 0;
  size_t disk_bytes = 0;
  // Time to live: a block stored longer ago than this is gone: Match, Load, LoadToGpuTier
  // and hints no longer see it from that moment, and a background sweep (every ttl / 4,
  // between 10 ms and 1 s) removes it from every tier and from the disk index. Measured
  // from the Store that first cached it (for blocks recovered from disk, from the record's
  // creation time, so a restart does not extend it). InfiniteDuration = keep.
  absl::Duration ttl = absl::InfiniteDuration();
};

// Tensor parallelism: one engine per rank, each with its rank's geometry
// (Geometry::ForTensorParallelRank). Ranks whose geometries hold the same bytes (every rank's
// mla latent; a KV head replicated when size > the model's KV heads) share one fingerprint
// and so one set of keys: a block stored by one of them is a hit for the others through the
// shared remote tier. Only one rank of each such group writes the remote tier: the one whose
// index in its group is store_rank (modulo the group's size); the others count the blocks
// they skip (RemoteStats::writes_skipped_replica). Local tiers are each rank's own.
struct TensorParallelOptions {
  uint32_t rank = 0;
  uint32_t size = 1;
  uint32_t store_rank = 0;

  // OK, or InvalidArgument naming the field: rank and store_rank must be below size, and
  // with size > 1 a kind kv geometry must be the rank's shard (total_kv_heads set, and the
  // head range ForTensorParallelRank gives this rank).
  absl::Status Validate(const Geometry& geometry) const;
  // Whether this rank writes the shared remote tier. REQUIRES: Validate(geometry).ok().
  bool Stores(const Geometry& geometry) const;
};

struct EngineOptions {
  Geometry geometry;
  TensorParallelOptions tensor_parallel;
  // Identifies the model weights (name and revision). Part of every key: blocks of two
  // models never match. Required.
  std::string model_fingerprint;
  KeyHash key_hash = KeyHash::kSha256;
  DeviceOptions device;

  // Tier capacities in bytes. Each is rounded down to whole blocks. The GPU tier may be 0
  // (connector mode: the inference engine owns all GPU KV memory); the host tier must hold
  // at least one block.
  size_t gpu_tier_bytes = 0;
  size_t host_tier_bytes = 0;
  // Eviction policy per tier: "lru", "fifo", "clock", "sieve", "s3fifo", "arc", "tinylfu",
  // "lfu", "adaptive" (follows ARC or LFU with aging, learned online)
  // (engine/eviction/<name>_policy.h says what each does). The default, ARC, is at least
  // as good as LRU at every cache size on the shared Mooncake trace, within 0.005 of the best
  // policy at four of five sizes (LFU with aging leads by 0.012 at 1/4), and the best or
  // near it on the generated workloads, where LFU trails (bench/run eviction,
  // docs/benchmarks.md).
  std::string gpu_eviction = "arc";
  std::string host_eviction = "arc";
  // KV-specific refinements of any policy, applied among its `eviction_window` most
  // evictable candidates. Prefix-aware: evict the deepest block of a prompt first (a chain's
  // tail before its head: a block whose parent is gone is useless for prefix reuse, as radix
  // caches evict leaves first). Cost-aware: evict first a copy that another tier still
  // holds (losing it costs a reload, not a write to the tier below or a recompute).
  bool prefix_aware_eviction = false;
  bool cost_aware_eviction = false;
  uint32_t eviction_window = 8;
  // Host copies evicted with no other copy go to disk, if it admits them.
  DiskOptions disk;
  // The shared remote tier below disk (Redis Cluster); off when remote.seeds is empty.
  RemoteOptions remote;

  // Namespaces created at Open. More can be added with CreateNamespace.
  std::vector<std::string> namespaces = {"default"};
  // Limits by namespace name, applied when the namespace is created (at Open, by
  // CreateNamespace, or when a disk directory brings it back); SetNamespaceLimits changes
  // them later. Namespaces not listed have none.
  std::map<std::string, NamespaceLimits> namespace_limits;
  // Secure erase: a GPU or host slot is zeroed when its block leaves it (erased, expired,
  // evicted or demoted), before the slot is reused; an erased disk record is overwritten
  // with zeros and a reclaimed disk region is zeroed before reuse, so nothing erased or
  // evicted can be read back from memory the engine hands out again or from the raw cache
  // files. Costs a memset (host), a device copy (GPU) and extra disk writes.
  bool secure_erase = false;
  // How long a lease on managed GPU slots lives unless released.
  absl::Duration lease_timeout = absl::Seconds(30);
  // What reads of each tier are taken to cost until the engine has measured them
  // (TierStats::read_bytes_per_s / read_latency_ns; Engine::PlanLoad): GPU tier and host tier
  // into the caller's memory, disk and remote into a host slot. The measurements then move
  // away from these, and drift back to them after a minute without reads. 0 keeps the
  // engine's default (GPU 200 GB/s, host 10 GB/s, disk 1 GB/s, remote 1 GB/s; 10, 20, 200 and
  // 500 µs). Set what a tier is known to do: say, the NVMe's fio figure.
  struct ReadRate {
    double bytes_per_s = 0;
    absl::Duration latency = absl::ZeroDuration();
  };
  TierArray<ReadRate> read_rate_priors;
  // Paged pools (KvBuffers::Paged) ↔ host tier: an NHD page part (one layer's K or V of one
  // block) at least this large moves by DMA, one copy per part; smaller parts, and every HND
  // transfer, move through one zero-copy kernel that reads or writes the pinned host slots
  // directly. `bench/run gpu-copy` measures the crossover on a machine: on an H100 (PCIe
  // gen5 x16, 2026-11-22) the kernel moved 48-50 GB/s at 32 and 128 KiB parts against
  // DMA's 29-30, and DMA 52.3 against the kernel's 51.0 at 512 KiB.
  size_t paged_dma_min_part_bytes = size_t{512} << 10;
  // Look-ahead prefetch (Engine::Hint): the most bytes of blocks that hints may hold in the
  // top tier (GPU, or host without a GPU tier) while in flight or not yet used. Bounds how
  // much of the tier speculation can take from the blocks in use. 0 = half the top tier.
  // With a disk or remote tier, a hinted block read from below also takes a host slot, so
  // the budget in effect (PrefetchStats::budget_bytes) is at most half the host tier too:
  // hints never hold more of the host tier than they may hold of the GPU tier's.
  size_t prefetch_budget_bytes = 0;
  // Serves /metrics (Prometheus text format) and /stats (JSON) over HTTP on 127.0.0.1 only,
  // from the engine's own thread. 0 = off. Open fails with Unavailable if the port is taken.
  uint16_t metrics_port = 0;

  // Makes these options tensor-parallel rank `rank` of `size`: `geometry`, the whole model's,
  // becomes the rank's (Geometry::ForTensorParallelRank) and `tensor_parallel` is set. On an
  // error (InvalidArgument naming the field: rank or store_rank out of range, heads that do
  // not divide, a geometry already sharded) nothing changes.
  absl::Status ShardForTensorParallel(uint32_t rank, uint32_t size, uint32_t store_rank = 0);

  // OK, or InvalidArgument naming the bad field.
  absl::Status Validate() const;
};

// Where a caller's KV lives in device memory: either whole blocks in kvtier's layout, one
// pointer per block, or pages of a vLLM-style paged pool.
class KvBuffers {
 public:
  // One pointer per block, each block_bytes() long, in kvtier's layer-major layout.
  static KvBuffers Blocks(std::vector<DevicePtr> blocks);

  // A paged pool with one tensor per layer, [parts][num_pages][page] where a page is
  // [page_tokens][kv_heads][head_dim] (kNhd: vLLM's FlashAttention layout) or
  // [kv_heads][page_tokens][head_dim] (kHnd: FlashInfer's); page_tokens must equal the
  // geometry's block_tokens. parts is 2 (K, V: vLLM's [2, num_blocks, block_size, heads,
  // dim]) or, for an mla geometry, 1: vLLM's MLA [num_blocks, block_size, 576]. `pages[i]`
  // is the page that holds block i.
  struct PagedPool {
    std::vector<DevicePtr> layers;  // one base pointer per layer
    uint32_t num_pages = 0;
    PageLayout layout = PageLayout::kNhd;
  };
  static KvBuffers Paged(PagedPool pool, std::vector<uint32_t> pages);

  size_t num_blocks() const { return is_paged() ? pages_.size() : blocks_.size(); }
  bool is_paged() const { return paged_; }
  const std::vector<DevicePtr>& blocks() const { return blocks_; }
  const PagedPool& pool() const { return pool_; }
  const std::vector<uint32_t>& pages() const { return pages_; }

 private:
  bool paged_ = false;
  std::vector<DevicePtr> blocks_;
  PagedPool pool_;
  std::vector<uint32_t> pages_;
};

struct MatchResult {
  size_t matched_tokens = 0;
  // Keys of the matched prefix blocks, and the fastest tier holding each.
  std::vector<BlockKey> keys;
  std::vector<TierKind> tiers;
};

// Progress of one Store, Load or Prefetch. Thread-safe. Destroying a handle does not cancel
// or wait for the transfer. REQUIRES: handles are destroyed before their engine.
//
// A block loaded from disk is verified before it is copied on: if verification fails, its
// destination receives zeros (never another block's bytes) and Wait() returns DataLoss.
class TransferHandle {
 public:
  virtual ~TransferHandle() = default;

  // True when every copy has completed (successfully or not).
  virtual bool IsReady() = 0;
  // Blocks the host until every copy completes and the engine's bookkeeping for them is done;
  // returns the first error.
  virtual absl::Status Wait() = 0;
  // Makes `stream` wait (on the device, not the host) until layer `layer` of every block
  // has arrived. Load only. Returns InvalidArgument for a layer out of range.
  virtual absl::Status WaitLayer(uint32_t layer, Stream& stream) = 0;
  // Blocks the host until layer `layer` of every block has arrived.
  virtual absl::Status WaitLayerHost(uint32_t layer) = 0;

  // Waits as Wait() does, then lists the blocks (indices into the request's keys, ascending)
  // whose bytes did not arrive: a disk read abandoned at the Load's deadline, or one that
  // failed verification or vanished. Their destinations hold zeros, never another block's
  // bytes; the caller recomputes them. A block abandoned at the deadline stays cached where it
  // was (a later Load reads it again); one that failed verification is a miss. An error of the
  // copies themselves (the device) is returned instead; so is a failed read of a block that is not
  // the request's (a Prefetch's).
  virtual absl::StatusOr<std::vector<size_t>> FailedBlocks() = 0;

  // Store: blocks newly stored, already present (deduplicated), and not stored because
  // every slot was pinned. Load / Prefetch: blocks moved, already in place, and skipped.
  virtual size_t blocks_moved() const = 0;
  virtual size_t blocks_present() const = 0;
  virtual size_t blocks_rejected() const = 0;

  // Load into managed GPU slots only: the slot address of each requested block, valid
  // while the lease is held. Empty for other transfers.
  virtual absl::Span<const DevicePtr> slots() const = 0;
  // Releases the lease on managed GPU slots (idempotent). Other transfers: no-op.
  virtual absl::Status Release() = 0;
};

struct StoreRequest {
  absl::string_view ns;
  // The whole prompt so far: keys chain from its first token. Its length must be a multiple
  // of block_tokens.
  absl::Span<const int32_t> tokens;
  absl::string_view extra;  // extra key material (LoRA id, salt); same for every block
  // buffers holds blocks first_block .. first_block + buffers.num_blocks() - 1.
  size_t first_block = 0;
  KvBuffers buffers;
  // If set, the copies start only after the work already enqueued on this stream (the
  // compute that produced the KV). A stream wait: the host does not block.
  Stream* after = nullptr;
};

struct LoadRequest {
  absl::string_view ns;
  std::vector<BlockKey> keys;  // usually MatchResult::keys, or a prefix of them
  KvBuffers buffers;           // destination, one block per key
  // Copy layer by layer (one event per layer) so attention can start on layer 0 while later
  // layers are in flight. When false, whole blocks are copied and all layers complete at once.
  bool layerwise = true;
  Stream* after = nullptr;
  // Blocks whose disk reads have not delivered by `deadline` are abandoned: their
  // destinations get zeros, Wait() returns DeadlineExceeded and FailedBlocks() lists them, so
  // the caller recomputes them rather than waits. A read already in the device cannot be
  // called back: it settles later, and its slot is reused only then; where it reads in place
  // (into the host slot the copy reads from), the destination may get its own block's bytes,
  // in whole or in part, instead of zeros (never another block's). A wait on the handle
  // lasts past the deadline by the time to zero the abandoned slots and run the copies, and
  // when a slot's previous bytes are still being written to disk, until they are out (up to
  // DiskTier::kStagingWait, when the disk's writes stall); bench/run loadplan measured
  // 20-70 ms past it with the disk stalling mid-load (docs/benchmarks.md, "loadplan"). Reads from
  // the remote tier are not abandoned: their own operation timeout (RemoteOptions) bounds them.
  // InfiniteFuture: wait for every read.
  absl::Time deadline = absl::InfiniteFuture();
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Open(const EngineOptions& options);

  // Waits for in-flight transfers, then frees all tiers. REQUIRES: no other thread is inside
  // a call on this engine.
  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  virtual const EngineOptions& options() const = 0;
  // The device the engine moves bytes with. Store and Load accept buffers allocated here
  // (device().Allocate) or registered with RegisterDeviceMemory.
  virtual Device& device() = 0;

  // An inference engine's own device memory (its paged KV pool: on CUDA, a tensor its
  // allocator cudaMalloc'd; on the emulated device, host memory it owns, named by its host
  // address) becomes usable as Store and Load buffers: KvBuffers inside [base, base+bytes)
  // pass the buffer checks, which otherwise refuse every address kvtier did not allocate.
  // Forwards to Device::RegisterDeviceMemory, which says what is checked (InvalidArgument for
  // host memory, another GPU's memory, null, zero bytes, overlaps; AlreadyExists for a base
  // registered already). The engine never frees the memory.
  // REQUIRES: the memory stays valid until UnregisterDeviceMemory returns OK.
  virtual absl::Status RegisterDeviceMemory(DevicePtr base, size_t bytes) = 0;
  // Forgets a range RegisterDeviceMemory registered (`base` as registered; NotFound
  // otherwise); Store and Load refuse it again from then on. FailedPrecondition, and the range
  // stays registered, while a Store or Load whose buffers lie in it is in flight: wait for
  // their handles (Wait() or IsReady()) first, then unregister, then free the memory.
  // (Ranges registered on device() directly are not tracked: the caller must know that no
  // transfer uses them.)
  virtual absl::Status UnregisterDeviceMemory(DevicePtr base) = 0;

  virtual absl::Status CreateNamespace(absl::string_view ns) = 0;
  // Replaces the namespace's limits. Lowering a quota below what the namespace holds evicts
  // nothing at once: its next insertions into that tier evict its own blocks first. A
  // shorter TTL applies to blocks already stored. InvalidArgument for a quota smaller than one
  // block or a TTL that is not positive; NotFound for an unknown namespace.
  virtual absl::Status SetNamespaceLimits(absl::string_view ns, const NamespaceLimits& limits) = 0;
  virtual std::vector<std::string> ListNamespaces() const = 0;

  // Longest cached prefix of `tokens` in namespace `ns`. No I/O; a trailing partial block
  // is ignored.
  virtual absl::StatusOr<MatchResult> Match(absl::string_view ns, absl::Span<const int32_t> tokens,
                                            absl::string_view extra = "") = 0;

  // How much of `match` to load and how much to recompute (kvtier/load_plan.h): PlanLoad over
  // the tiers' read rates as this engine measures them now (TierStats::read_bytes_per_s and
  // read_latency_ns, with reads in flight as their queues) and the caller's `compute` model.
  // `prompt_tokens`: the request's tokens; `local_tokens`: its first tokens the caller holds
  // already (a multiple of block_tokens, at most the matched tokens): planning starts after
  // them. Load the plan's first load_blocks blocks after the local ones; recompute the rest.
  // InvalidArgument names a bad count or compute model.
  virtual absl::StatusOr<LoadPlan> PlanLoad(const MatchResult& match, size_t prompt_tokens,
                                            size_t local_tokens, const ComputeModel& compute,
                                            bool layerwise = true) = 0;

  // Copies full blocks from caller device memory into the host tier. Blocks already cached
  // are skipped. The caller may reuse its buffers when the handle is ready.
  virtual absl::StatusOr<std::unique_ptr<TransferHandle>> Store(const StoreRequest& request) = 0;

  // Copies cached blocks into caller device memory. All keys must be cached in `ns`
  // (NotFound names the first that is not); nothing is enqueued otherwise.
  virtual absl::StatusOr<std::unique_ptr<TransferHandle>> Load(const LoadRequest& request) = 0;

  // Brings cached blocks into the managed GPU tier and leases their slots to the caller until
  // Release() or the lease timeout (0 = the engine default). FailedPrecondition when the GPU
  // tier is disabled; ResourceExhausted when the GPU tier cannot hold them all unpinned.
  // Slots held only by copies in flight (prefetches, other loads, demotions) are waited for,
  // up to 10 s in all, before that answer; slots held by pins and leases are not.
  virtual absl::StatusOr<std::unique_ptr<TransferHandle>> LoadToGpuTier(
      absl::string_view ns, absl::Span<const BlockKey> keys, bool layerwise = true,
      absl::Duration lease_timeout = absl::ZeroDuration()) = 0;

  // Promotes cached blocks toward the GPU tier ahead of need, without leasing them. Blocks
  // that cannot be placed without evicting pinned data are skipped (counted as rejected).
  virtual absl::StatusOr<std::unique_ptr<TransferHandle>> Prefetch(
      absl::string_view ns, absl::Span<const BlockKey> keys) = 0;

  // Look-ahead: queues `keys`, in the order they will be needed, for the engine's
  // prefetcher, which promotes them disk → host → GPU tier (host tier without a GPU tier) in
  // the background, keeping at most prefetch_budget_bytes of hinted blocks in flight or
  // unused (and, with a disk or remote tier, at most half the host tier's), and never
  // evicting a pinned or leased block (or another hint's unused block) to make room. Keys
  // that are not cached when their turn comes are skipped. Returns an id for CancelHint.
  // Hints are served in the order given, across calls.
  virtual absl::StatusOr<uint64_t> Hint(absl::string_view ns, absl::Span<const BlockKey> keys) = 0;
  // Drops the hint's keys that the prefetcher has not started; returns how many. Blocks
  // already moving complete (and count as unused if never loaded). NotFound for an id Hint
  // never returned.
  virtual absl::StatusOr<size_t> CancelHint(uint64_t hint_id) = 0;

  // Removes blocks from every tier; returns how many were present. Pinned blocks disappear
  // from Match at once and free their slots when the last pin goes.
  virtual absl::StatusOr<size_t> Erase(absl::string_view ns, absl::Span<const BlockKey> keys) = 0;
  virtual absl::StatusOr<size_t> EraseNamespace(absl::string_view ns) = 0;

  // Waits until every transfer started so far, including background writes of evicted
  // blocks to disk, has landed. Returns the first error of the engine's own streams. Not for
  // the decode path: it blocks the host.
  virtual absl::Status Flush() = 0;

  // A snapshot of every statistic (kvtier/stats.h describes each one).
  virtual EngineStats Stats() = 0;

 protected:
  Engine() = default;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_H_
