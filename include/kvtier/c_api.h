/* kvtier/c_api.h — a stable C ABI over kvtier::Engine, for FFI from any language.
 *
 * The same engine as kvtier/engine.h (one shared library, libkvtier.so), behind opaque
 * handles and plain C types, so Python (ctypes / cffi), Rust, Go or C callers can use it
 * without a C++ compiler. Everything here is C99/C11 and C++ compatible.
 *
 * Errors. Every function but the void destroy functions returns a kvtier_status_code
 * (KVTIER_OK = 0; the other values are absl::StatusCode's, so KVTIER_INVALID_ARGUMENT = 3
 * everywhere). A failing call also leaves a message in a thread-local buffer:
 * kvtier_last_error() returns it until the next status-returning kvtier_* call on the same
 * thread, which replaces it ("" after a success); the destroy functions leave it alone. Copy it
 * if you need it longer. Messages name what was wrong, e.g. "kvtier_store: tokens is NULL but
 * num_tokens is 32". Bad arguments (NULL pointers, zero sizes, lengths that disagree with the
 * geometry, unknown enum values) are always an error, never a crash; a failed call leaves its
 * out-parameters and the engine unchanged.
 *
 * Device memory is named by uint64_t addresses (kvtier_device_ptr). The engine checks every
 * address against the memory of its own device, so buffers passed to store and load come
 * from kvtier_buffer_alloc (cudaMalloc'd memory of the engine's CUDA device on a GPU, the
 * emulated device's arena without one) or lie in memory registered with
 * kvtier_engine_register_device_memory (an inference engine's own KV pool); other addresses
 * are INVALID_ARGUMENT ("not device memory of ..."). kvtier_buffer_write / kvtier_buffer_read
 * move bytes between host memory and such buffers; kvtier_store_host / kvtier_load_host do a
 * whole store or load from / to plain host memory in one synchronous call.
 *
 * Thread safety: every function may be called from any thread, concurrently, on the same
 * engine and handles, except that kvtier_engine_close, kvtier_handle_destroy and
 * kvtier_options_destroy must not race with other calls on the object they destroy.
 *
 * Lifetimes: handles must be destroyed before their engine; kvtier_engine_close refuses
 * (KVTIER_FAILED_PRECONDITION) while any handle of the engine is alive, and leaves the engine
 * open. Strings passed in are copied; the caller keeps ownership of every buffer.
 */

#ifndef KVTIER_C_API_H_
#define KVTIER_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: device memory registration, namespace limits, secure erase.
 * 3: the stats structs begin with struct_size and grow by appending fields (see "stats");
 *    kvtier_tier_stats has misses; kvtier_stats and kvtier_namespace_stats have every figure
 *    of kvtier/stats.h but the device name and the tiers' used_bytes.
 * 4: the remote tier (Redis Cluster): KVTIER_TIER_REMOTE, KVTIER_NUM_TIERS 4, the
 *    kvtier_options_set_remote_* options, the remote figures appended to kvtier_stats and
 *    kvtier_remote_node_stats_get. NOT binary compatible with version 3: every array indexed
 *    by tier grew from 3 to 4 entries, so the fields after them moved and the structs grew.
 *    A program built against a header before version 4 must be rebuilt; its kvtier_stats /
 *    kvtier_namespace_stats are smaller than the smallest struct_size this library accepts,
 *    so its stats calls fail with INVALID_ARGUMENT (never misplaced figures). Compare
 *    kvtier_c_api_version() with KVTIER_C_API_VERSION at start-up to find out sooner.
 * 5: kvtier_options_set_disk_group_access and the fp8 dtypes KVTIER_DTYPE_FP8_E4M3 / _E5M2
 *    (added; binary compatible with 4). Cache
 *    directories are private by default (0700 / 0600; loose modes, links and foreign files
 *    refused at open, see kvtier::DiskOptions::group_access).
 * 6: MLA latents and tensor-parallel shards: kvtier_options_set_latent and
 *    kvtier_options_set_tensor_parallel, and kvtier_stats.remote_writes_skipped_replica
 *    appended (binary compatible with 5).
 * 7: load plans and deadlines: kvtier_stats.tier_read_bytes_per_s / _latency_ns / _samples
 *    and blocks_abandoned appended (binary compatible with 6). */
#define KVTIER_C_API_VERSION 7

/* Mirrors absl::StatusCode. */
typedef enum kvtier_status_code {
  KVTIER_OK = 0,
  KVTIER_CANCELLED = 1,
  KVTIER_UNKNOWN = 2,
  KVTIER_INVALID_ARGUMENT = 3,
  KVTIER_DEADLINE_EXCEEDED = 4,
  KVTIER_NOT_FOUND = 5,
  KVTIER_ALREADY_EXISTS = 6,
  KVTIER_PERMISSION_DENIED = 7,
  KVTIER_RESOURCE_EXHAUSTED = 8,
  KVTIER_FAILED_PRECONDITION = 9,
  KVTIER_ABORTED = 10,
  KVTIER_OUT_OF_RANGE = 11,
  KVTIER_UNIMPLEMENTED = 12,
  KVTIER_INTERNAL = 13,
  KVTIER_UNAVAILABLE = 14,
  KVTIER_DATA_LOSS = 15,
  KVTIER_UNAUTHENTICATED = 16
} kvtier_status_code;

typedef enum kvtier_dtype {
  KVTIER_DTYPE_FLOAT16 = 1,
  KVTIER_DTYPE_BFLOAT16 = 2,
  KVTIER_DTYPE_FLOAT32 = 3,
  /* One byte per element, stored and moved as bytes (kvtier::DType::kFp8E4m3 / kFp8E5m2);
   * the quantizing codecs refuse them. Since C API version 5. */
  KVTIER_DTYPE_FP8_E4M3 = 4,
  KVTIER_DTYPE_FP8_E5M2 = 5
} kvtier_dtype;

typedef enum kvtier_device_kind {
  KVTIER_DEVICE_AUTO = 0,    /* CUDA when a working GPU exists, else emulated */
  KVTIER_DEVICE_CUDA = 1,    /* CUDA or an error saying why not */
  KVTIER_DEVICE_EMULATED = 2 /* always the emulated device */
} kvtier_device_kind;

typedef enum kvtier_key_hash {
  KVTIER_KEY_HASH_SHA256 = 1,
  KVTIER_KEY_HASH_XXH3 = 2
} kvtier_key_hash;

/* KVTIER_TIER_REMOTE: the shared remote tier (kvtier_options_set_remote_seeds), below disk. */
typedef enum kvtier_tier {
  KVTIER_TIER_GPU = 0,
  KVTIER_TIER_HOST = 1,
  KVTIER_TIER_DISK = 2,
  KVTIER_TIER_REMOTE = 3
} kvtier_tier;
/* 3 before C API version 4. */
#define KVTIER_NUM_TIERS 4

/* Paged pools: kvtier/geometry.h, PageLayout. */
typedef enum kvtier_page_layout { KVTIER_PAGE_NHD = 0, KVTIER_PAGE_HND = 1 } kvtier_page_layout;

/* A 128-bit content address of a block (kvtier/block_key.h). */
typedef struct kvtier_block_key {
  uint64_t hi;
  uint64_t lo;
} kvtier_block_key;

typedef uint64_t kvtier_device_ptr;

typedef struct kvtier_options kvtier_options;
typedef struct kvtier_engine kvtier_engine;
typedef struct kvtier_handle kvtier_handle;

/* ------------------------------------------------------------------------------ errors */

/* The message of the last failed kvtier_* call on this thread; "" after a success. Valid
 * until the next status-returning kvtier_* call on this thread. Never NULL. */
const char* kvtier_last_error(void);
/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN_CODE" for a value outside the enum. */
const char* kvtier_status_code_name(kvtier_status_code code);
/* KVTIER_C_API_VERSION of the library (compare with the header's at run time). */
int kvtier_c_api_version(void);

/* ----------------------------------------------------------------------------- options */

/* Defaults as kvtier::EngineOptions: no geometry (required), namespaces {"default"}, auto
 * device, no GPU tier, no host tier (required), no disk tier, no remote tier. */
kvtier_status_code kvtier_options_create(kvtier_options** out_options);
/* NULL is a no-op. */
void kvtier_options_destroy(kvtier_options* options);

kvtier_status_code kvtier_options_set_geometry(kvtier_options* options, uint32_t num_layers,
                                               uint32_t num_kv_heads, uint32_t head_dim,
                                               kvtier_dtype dtype, uint32_t block_tokens);
/* Makes the geometry set above an MLA latent (kvtier::KvKind::kLatent; DeepSeek-V2/V3/R1,
 * Kimi K2): one part per layer of head_dim elements (the latent and its rope part: 576 =
 * 512 + 64 in DeepSeek-V3), of which the last rope_dim are the rope part. num_kv_heads must
 * be 1. Call after kvtier_options_set_geometry, which resets it. Since version 6. */
kvtier_status_code kvtier_options_set_latent(kvtier_options* options, uint32_t rope_dim);
/* This engine is tensor-parallel rank `rank` of `size` (one engine per rank). With size > 1 a
 * K/V geometry set above, the whole model's, becomes the rank's shard
 * (kvtier::Geometry::ForTensorParallelRank: its KV heads, part of every key); an MLA latent is
 * the same on every rank, and of the ranks holding the same bytes only the one whose index
 * among them is store_rank writes the remote tier. Call after kvtier_options_set_geometry
 * and kvtier_options_set_latent. INVALID_ARGUMENT naming the field when rank or store_rank is
 * not below size, no geometry is set, or the heads do not divide. Since version 6. */
kvtier_status_code kvtier_options_set_tensor_parallel(kvtier_options* options, uint32_t rank,
                                                      uint32_t size, uint32_t store_rank);
/* Identifies the model weights; part of every key. Required. */
kvtier_status_code kvtier_options_set_model_fingerprint(kvtier_options* options,
                                                        const char* fingerprint);
kvtier_status_code kvtier_options_set_key_hash(kvtier_options* options, kvtier_key_hash hash);
/* GPU tier may be 0 (connector mode); the host tier must hold at least one block. */
kvtier_status_code kvtier_options_set_tier_bytes(kvtier_options* options, uint64_t gpu_tier_bytes,
                                                 uint64_t host_tier_bytes);
/* Enables the disk tier in `directory` (created if missing; reopening recovers its blocks).
 * capacity_bytes must hold at least two regions (region: 64 MiB unless set below). */
kvtier_status_code kvtier_options_set_disk(kvtier_options* options, const char* directory,
                                           uint64_t capacity_bytes);
/* enable != 0: the cache directory is created 0750 with its files 0640, and an existing one the
 * group may read is accepted (kvtier::DiskOptions::group_access). Default 0: 0700 / 0600, and
 * a directory or data file that the group or other users may read or write is refused at
 * open (FAILED_PRECONDITION naming the path, its mode and the chmod that fixes it). */
kvtier_status_code kvtier_options_set_disk_group_access(kvtier_options* options, int enable);
/* A multiple of 4096. */
kvtier_status_code kvtier_options_set_disk_region_bytes(kvtier_options* options,
                                                        uint64_t region_bytes);
/* Blocks are written to disk once seen this many times (default 2; 1 = every demotion). */
kvtier_status_code kvtier_options_set_disk_admit_min_seen(kvtier_options* options,
                                                          uint32_t min_seen);
/* emulated_copy_gbps: the emulated device's per-direction bandwidth (0 = unthrottled);
 * ignored on CUDA. cuda_ordinal: ignored on the emulated device. */
kvtier_status_code kvtier_options_set_device(kvtier_options* options, kvtier_device_kind kind,
                                             int cuda_ordinal, double emulated_copy_gbps);
/* "lru", "fifo", "clock", "sieve", "s3fifo", "arc", "tinylfu", "lfu", "adaptive". */
kvtier_status_code kvtier_options_set_eviction(kvtier_options* options, const char* gpu_policy,
                                               const char* host_policy);
/* Replaces the namespaces created at open (default {"default"}); count may be 0. */
kvtier_status_code kvtier_options_set_namespaces(kvtier_options* options, const char* const* names,
                                                 size_t count);
kvtier_status_code kvtier_options_set_lease_timeout_ms(kvtier_options* options,
                                                       uint64_t timeout_ms);

/* What one namespace (tenant) may hold (kvtier::NamespaceLimits). Quotas are per tier, in
 * bytes, rounded down to whole blocks (disk: whole records); 0 = no quota, else at least one
 * block. A store or promotion into a tier where the namespace is at its quota evicts one of
 * its own blocks there; when none can go, the block is refused as for a full tier (the disk
 * tier refuses admission). ttl_ms: a block stored longer ago than this is gone (match, load
 * and hints no longer see it; a background sweep frees it); 0 = keep forever. */
typedef struct kvtier_namespace_limits {
  uint64_t gpu_bytes;
  uint64_t host_bytes;
  uint64_t disk_bytes;
  uint64_t ttl_ms;
} kvtier_namespace_limits;

/* Limits for namespace `ns`, applied when the engine creates it (at open, by
 * kvtier_create_namespace, or when a disk directory brings it back); replaces limits set
 * for `ns` before. The name need not be among kvtier_options_set_namespaces'. The name is
 * checked here; quotas against the geometry's block size by kvtier_options_validate and
 * kvtier_engine_open (INVALID_ARGUMENT for a quota below one block). */
kvtier_status_code kvtier_options_set_namespace_limits(kvtier_options* options, const char* ns,
                                                       const kvtier_namespace_limits* limits);
/* enable != 0: a GPU or host slot is zeroed when its block leaves it (erased, expired, evicted
 * or demoted), and erased or reclaimed disk space is overwritten with zeros, so nothing
 * erased or evicted can be read back from memory or files kvtier reuses
 * (kvtier::EngineOptions::secure_erase). Default off. */
kvtier_status_code kvtier_options_set_secure_erase(kvtier_options* options, int enable);

/* The remote tier (kvtier::RemoteOptions, docs/remote.md): a Redis Cluster shared by every
 * engine of a fleet, below disk. Engines with the same model fingerprint, geometry and
 * namespace see each other's blocks: kvtier_match reports KVTIER_TIER_REMOTE for blocks only
 * the cluster holds, and loads bring them up through a host slot, verified. Off until seeds
 * are set. Each setter checks its own arguments (INVALID_ARGUMENT naming the field, options
 * unchanged); what depends on other options (TLS files together, a codec against the dtype,
 * max_inflight_bytes against the block size) is checked by kvtier_options_validate and
 * kvtier_engine_open, naming the field as "remote.<field>". Unreachable seeds are an error at
 * kvtier_engine_open (UNAVAILABLE naming them) unless allow_unreachable is set. */

/* Replaces the seed nodes with `seeds`: "host:port" entries separated by commas (spaces
 * around them ignored), e.g. "10.0.0.5:7000,10.0.0.6:7000". One reachable seed is enough;
 * the client learns the rest of the cluster from it. */
kvtier_status_code kvtier_options_set_remote_seeds(kvtier_options* options, const char* seeds);
/* Appends one "host:port" seed. */
kvtier_status_code kvtier_options_add_remote_seed(kvtier_options* options, const char* seed);
/* Redis ACL user and password (AUTH user password). user NULL or "" = "default"; password
 * NULL or "" = no AUTH. */
kvtier_status_code kvtier_options_set_remote_auth(kvtier_options* options, const char* user,
                                                  const char* password);
/* enable != 0: every connection is TLS (OpenSSL), the servers' certificates verified against
 * ca_file (required); cert_file and key_file (both or neither; NULL or "" = neither) are the
 * client certificate for servers with tls-auth-clients; server_name (NULL or "" = the CA chain
 * only) is the hostname to verify. enable == 0: plain TCP (the default), the other arguments
 * ignored and any TLS files set before forgotten. */
kvtier_status_code kvtier_options_set_remote_tls(kvtier_options* options, int enable,
                                                 const char* ca_file, const char* cert_file,
                                                 const char* key_file, const char* server_name);
/* Each in 1..600000 ms. connect: one connection attempt (default 500); op: one GET or SET,
 * queueing included (default 2000); match: how long kvtier_match waits for the cluster before
 * answering with the local part alone (default 50). */
kvtier_status_code kvtier_options_set_remote_timeouts_ms(kvtier_options* options,
                                                         uint64_t connect_ms, uint64_t op_ms,
                                                         uint64_t match_ms);
/* Connections per cluster node and epoll I/O threads, each in 1..16 (default 2 and 2). */
kvtier_status_code kvtier_options_set_remote_connections(kvtier_options* options,
                                                         uint32_t connections_per_node,
                                                         uint32_t io_threads);
/* Writes in flight, in value bytes, for the whole engine (default 64 MiB); a write beyond it
 * is dropped and counted. At least one block plus its 256-byte header (checked at open). */
kvtier_status_code kvtier_options_set_remote_max_inflight_bytes(kvtier_options* options,
                                                                uint64_t max_inflight_bytes);
/* When blocks are written to the cluster: "write-through" (default: once a store lands),
 * "on-evict" (when the last copy above disk leaves the host tier) or "both". */
kvtier_status_code kvtier_options_set_remote_write_policy(kvtier_options* options,
                                                          const char* policy);
/* Admission, as the disk tier's: a block is written once seen min_seen times (>= 1, default
 * 1), within write_budget_mbps (MB/s, 0 = no budget, the default). */
kvtier_status_code kvtier_options_set_remote_admission(kvtier_options* options, uint32_t min_seen,
                                                       double write_budget_mbps);
/* Codec of the stored values: "none" (default), "zstd", "zstd-shuffle", or the lossy, opt-in
 * "fp8" / "int8" (fp16 / bf16 geometries); zstd_level in 1..19 (default 1). */
kvtier_status_code kvtier_options_set_remote_codec(kvtier_options* options, const char* codec,
                                                   int zstd_level);
/* An HMAC-SHA256 secret for namespace `ns` (replacing one set before): the namespace signs
 * what it writes and a value whose MAC does not verify is a miss, counted. `secret` is
 * secret_len raw bytes (at least 16; they may contain zeros). */
kvtier_status_code kvtier_options_add_remote_hmac_secret(kvtier_options* options, const char* ns,
                                                         const void* secret, size_t secret_len);
/* allow != 0: an engine whose cluster cannot be reached at open opens anyway (every remote
 * lookup a miss, counted) and keeps trying to connect. Default 0: kvtier_engine_open fails. */
kvtier_status_code kvtier_options_set_remote_allow_unreachable(kvtier_options* options,
                                                               int allow);
/* OK, or INVALID_ARGUMENT naming the bad field (kvtier_engine_open validates too). */
kvtier_status_code kvtier_options_validate(const kvtier_options* options);

/* ------------------------------------------------------------------------------ engine */

/* The options are copied; destroy them whenever convenient. */
kvtier_status_code kvtier_engine_open(const kvtier_options* options, kvtier_engine** out_engine);
/* Waits for in-flight transfers and frees every tier. NULL is a no-op (KVTIER_OK).
 * FAILED_PRECONDITION (engine left open) while handles of this engine are alive. */
kvtier_status_code kvtier_engine_close(kvtier_engine* engine);

/* Bytes of one block of the engine's geometry (layer-major [layer][part][token][head][dim]; the
 * parts are K and V, or one MLA latent). */
kvtier_status_code kvtier_engine_block_bytes(const kvtier_engine* engine, size_t* out_bytes);
/* KVTIER_DEVICE_CUDA or KVTIER_DEVICE_EMULATED: the device the engine actually opened. */
kvtier_status_code kvtier_engine_device_kind(const kvtier_engine* engine,
                                             kvtier_device_kind* out_kind);

kvtier_status_code kvtier_create_namespace(kvtier_engine* engine, const char* ns);
/* Replaces the limits of an existing namespace (kvtier_namespace_limits). Lowering a quota
 * evicts nothing at once: the namespace's next insertions into that tier evict its own blocks
 * first. A shorter TTL applies to blocks already stored. NOT_FOUND for an unknown namespace. */
kvtier_status_code kvtier_set_namespace_limits(kvtier_engine* engine, const char* ns,
                                               const kvtier_namespace_limits* limits);

/* Device buffers of the engine's device: the memory kvtier_store / kvtier_load accept (on
 * CUDA, cudaMalloc'd memory of the engine's GPU). Freed by kvtier_buffer_free or at close.
 * kvtier_buffer_write / _read block until the copy is done. */
kvtier_status_code kvtier_buffer_alloc(kvtier_engine* engine, size_t bytes,
                                       kvtier_device_ptr* out_ptr);
kvtier_status_code kvtier_buffer_free(kvtier_engine* engine, kvtier_device_ptr ptr);
kvtier_status_code kvtier_buffer_write(kvtier_engine* engine, kvtier_device_ptr dst,
                                       const void* src, size_t bytes);
kvtier_status_code kvtier_buffer_read(kvtier_engine* engine, void* dst, kvtier_device_ptr src,
                                      size_t bytes);

/* Device memory the caller allocated itself (an inference engine's KV pool: on a GPU, memory
 * its allocator cudaMalloc'd, e.g. a torch tensor's data_ptr()) becomes usable by
 * kvtier_store / kvtier_load and their paged variants, and by kvtier_buffer_write / _read:
 * addresses inside [base, base + bytes) pass the engine's checks. kvtier never frees it.
 * On CUDA the first and last byte must be device (or managed) memory of the engine's GPU;
 * host memory or another GPU's memory is INVALID_ARGUMENT saying so. On the emulated device
 * (KVTIER_DEVICE_EMULATED), whose "device" memory is host memory, `base` is the address of
 * host memory the caller owns, e.g. (kvtier_device_ptr)(uintptr_t)malloc(bytes): stores read
 * it and loads write it in place. INVALID_ARGUMENT for base 0, bytes 0, or a range that
 * overlaps kvtier_buffer_alloc memory or another registration; ALREADY_EXISTS for a base
 * registered already. The memory must stay valid until it is unregistered. */
kvtier_status_code kvtier_engine_register_device_memory(kvtier_engine* engine,
                                                        kvtier_device_ptr base, size_t bytes);
/* Forgets a registered range (`base` as registered; NOT_FOUND otherwise); stores and loads
 * refuse it again from then on. FAILED_PRECONDITION, and the range stays registered, while a
 * store or load whose buffers lie in it is in flight: wait for its handle first (then
 * unregister, then free the memory). Ranges still registered at kvtier_engine_close are
 * forgotten there (never freed). */
kvtier_status_code kvtier_engine_unregister_device_memory(kvtier_engine* engine,
                                                          kvtier_device_ptr base);

/* --------------------------------------------------------------------------- match */

/* Longest cached prefix of `tokens` in `ns` (no I/O; a trailing partial block is ignored).
 * `extra` (extra key material: a LoRA id, a salt) may be NULL when extra_len is 0.
 * Writes the number of matched tokens and blocks; the first min(matched blocks,
 * keys_capacity) keys go to `keys` and their fastest tiers to `tiers` (either may be NULL
 * when keys_capacity is 0, `tiers` may always be NULL). */
kvtier_status_code kvtier_match(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                size_t num_tokens, const void* extra, size_t extra_len,
                                size_t* out_matched_tokens, size_t* out_matched_blocks,
                                kvtier_block_key* keys, size_t keys_capacity, kvtier_tier* tiers);

/* Keys of the full blocks of `tokens` in `ns`, as Match and Store compute them, whether
 * cached or not. `keys_capacity` must be at least num_tokens / block_tokens. */
kvtier_status_code kvtier_block_keys(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                     size_t num_tokens, const void* extra, size_t extra_len,
                                     kvtier_block_key* keys, size_t keys_capacity,
                                     size_t* out_num_keys);

/* ------------------------------------------------------------------ store and load */

/* A vLLM-style paged pool (kvtier::KvBuffers::PagedPool): one device tensor per layer,
 * [parts][num_pages][page], page = [block_tokens][kv_heads][head_dim] (NHD) or
 * [kv_heads][block_tokens][head_dim] (HND); parts is 2 (K, V) or 1 for an mla geometry
 * (vLLM's MLA [num_blocks, block_size, 576]). */
typedef struct kvtier_paged_pool {
  const kvtier_device_ptr* layers; /* num_layers base addresses */
  uint32_t num_layers;             /* must equal the geometry's */
  uint32_t num_pages;
  kvtier_page_layout layout;
} kvtier_paged_pool;

/* Stores blocks first_block .. first_block + num_blocks - 1 of the prompt `tokens` (whole
 * prompt so far, a multiple of block_tokens) from device memory: `blocks[i]` holds block
 * first_block + i, block_bytes long. Returns at once with a handle; the caller may reuse the
 * buffers once the handle is ready. */
kvtier_status_code kvtier_store(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                size_t num_tokens, const void* extra, size_t extra_len,
                                size_t first_block, const kvtier_device_ptr* blocks,
                                size_t num_blocks, kvtier_handle** out_handle);
/* As kvtier_store, from pages of a paged pool: pages[i] holds block first_block + i. */
kvtier_status_code kvtier_store_paged(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                      size_t num_tokens, const void* extra, size_t extra_len,
                                      size_t first_block, const kvtier_paged_pool* pool,
                                      const uint32_t* pages, size_t num_pages,
                                      kvtier_handle** out_handle);

/* Loads cached blocks (every key must be cached in `ns`; NOT_FOUND names the first that is
 * not, and nothing is copied) into device memory, `blocks[i]` receiving keys[i]. layerwise
 * != 0: one event per layer, so kvtier_handle_wait_layer(h, 0) returns before later layers
 * land. Returns at once with a handle. */
kvtier_status_code kvtier_load(kvtier_engine* engine, const char* ns, const kvtier_block_key* keys,
                               size_t num_keys, const kvtier_device_ptr* blocks, int layerwise,
                               kvtier_handle** out_handle);
kvtier_status_code kvtier_load_paged(kvtier_engine* engine, const char* ns,
                                     const kvtier_block_key* keys, size_t num_keys,
                                     const kvtier_paged_pool* pool, const uint32_t* pages,
                                     int layerwise, kvtier_handle** out_handle);

/* Managed-pool mode: brings cached blocks into the engine's GPU tier and leases their slots
 * to the caller until kvtier_handle_release (or the lease timeout; 0 = the engine's
 * default). kvtier_handle_slots gives each block's slot address. FAILED_PRECONDITION when the
 * GPU tier is disabled (gpu_tier_bytes 0); RESOURCE_EXHAUSTED when it cannot hold them all. */
kvtier_status_code kvtier_load_to_gpu_tier(kvtier_engine* engine, const char* ns,
                                           const kvtier_block_key* keys, size_t num_keys,
                                           int layerwise, uint64_t lease_timeout_ms,
                                           kvtier_handle** out_handle);

/* Look-ahead prefetch: queues `keys`, in the order they will be needed, for the engine's
 * background prefetcher (disk -> host -> GPU tier, within the prefetch budget). *out_hint_id
 * identifies the hint for kvtier_cancel_hint, which drops the keys not yet started and
 * writes how many (NOT_FOUND for an id kvtier_hint never returned). */
kvtier_status_code kvtier_hint(kvtier_engine* engine, const char* ns, const kvtier_block_key* keys,
                               size_t num_keys, uint64_t* out_hint_id);
kvtier_status_code kvtier_cancel_hint(kvtier_engine* engine, uint64_t hint_id,
                                      size_t* out_cancelled);

/* Synchronous host-memory variants, for callers without device pointers (tests, CPU
 * inference, other languages' arrays). `data` holds num_blocks whole blocks back to back;
 * data_bytes must be exactly num_blocks * block_bytes. The bytes are staged through a
 * temporary device buffer; the call returns when the store (or load) is complete.
 * out_stored (may be NULL) receives the number of blocks newly stored. */
kvtier_status_code kvtier_store_host(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                     size_t num_tokens, const void* extra, size_t extra_len,
                                     size_t first_block, size_t num_blocks, const void* data,
                                     size_t data_bytes, size_t* out_stored);
kvtier_status_code kvtier_load_host(kvtier_engine* engine, const char* ns,
                                    const kvtier_block_key* keys, size_t num_keys, void* data,
                                    size_t data_bytes);

/* Removes blocks from every tier; out_erased (may be NULL) gets how many were present. */
kvtier_status_code kvtier_erase(kvtier_engine* engine, const char* ns, const kvtier_block_key* keys,
                                size_t num_keys, size_t* out_erased);
kvtier_status_code kvtier_erase_namespace(kvtier_engine* engine, const char* ns,
                                          size_t* out_erased);
/* Waits until every transfer started so far (including writes of evicted blocks to disk)
 * has landed. Blocks the host. */
kvtier_status_code kvtier_flush(kvtier_engine* engine);

/* ----------------------------------------------------------------------------- handles */

/* *out_ready = 1 when every copy of the transfer has completed (successfully or not). */
kvtier_status_code kvtier_handle_is_ready(kvtier_handle* handle, int* out_ready);
/* Blocks until every copy completes; returns the transfer's first error (DATA_LOSS for a
 * block that failed verification: its destination holds zeros, never other bytes). */
kvtier_status_code kvtier_handle_wait(kvtier_handle* handle);
/* Blocks until layer `layer` of every block of a load has arrived. */
kvtier_status_code kvtier_handle_wait_layer(kvtier_handle* handle, uint32_t layer);
/* Store: blocks newly stored, already present, rejected (every slot pinned). Load: moved,
 * already in place, skipped. Any out pointer may be NULL. */
kvtier_status_code kvtier_handle_counts(kvtier_handle* handle, size_t* out_moved,
                                        size_t* out_present, size_t* out_rejected);
/* kvtier_load_to_gpu_tier only: the GPU-tier slot address of each block (valid while the
 * lease is held). Writes min(count, capacity) addresses and the count; other transfers have
 * none (count 0). `slots` may be NULL when capacity is 0. */
kvtier_status_code kvtier_handle_slots(kvtier_handle* handle, kvtier_device_ptr* slots,
                                       size_t capacity, size_t* out_count);
/* Releases the lease of kvtier_load_to_gpu_tier (idempotent; a no-op for other transfers). */
kvtier_status_code kvtier_handle_release(kvtier_handle* handle);
/* Frees the handle; does not cancel or wait for the transfer. NULL is a no-op. */
void kvtier_handle_destroy(kvtier_handle* handle);

/* ------------------------------------------------------------------------------- stats */

/* Versioned structs. kvtier_stats, kvtier_namespace_stats and kvtier_remote_node_stats begin
 * with `struct_size`: the caller sets it to sizeof the struct as it was compiled (the header's
 * sizeof, or at least the struct's _SIZE_MIN), and kvtier fills the fields that lie wholly
 * within that many bytes, sets the bytes after them up to struct_size to zero (fields a newer
 * header has and this library does not), and writes back into struct_size how many bytes it
 * filled: min(struct_size, the library's sizeof). From version 4 on, new fields are only ever
 * appended, so a caller built against a version-4 or later header keeps working with a newer
 * library and the reverse. (Version 4 itself moved fields: see KVTIER_C_API_VERSION. Callers
 * built against earlier headers are refused by the _SIZE_MIN check below.) A struct_size
 * below the struct's _SIZE_MIN, or above KVTIER_STATS_MAX_SIZE (an uninitialised field), or
 * not a multiple of 8, is INVALID_ARGUMENT naming struct_size, and nothing is written. Zero
 * the struct and set struct_size:
 *
 *     kvtier_stats stats;
 *     memset(&stats, 0, sizeof(stats));
 *     stats.struct_size = sizeof(stats);
 *     kvtier_engine_stats(engine, &stats);
 *
 * The figures are those of kvtier/stats.h, by the same names (kvtier_stats' prefetch_* are
 * PrefetchStats' fields, remote_* RemoteStats'); its comments say what each counts. */
#define KVTIER_STATS_MAX_SIZE 65536

/* One tier's figures: fixed, since kvtier_stats holds an array of them; later per-tier
 * figures are appended to kvtier_stats as arrays of their own. */
typedef struct kvtier_tier_stats {
  uint64_t capacity_blocks;
  uint64_t used_blocks;
  uint64_t pinned_blocks;
  uint64_t hits;
  uint64_t bytes_in;
  uint64_t bytes_out;
  uint64_t evictions;
  uint64_t demotions;
  uint64_t promotions;
  uint64_t admissions_rejected;
  uint64_t checksum_failures;
  uint64_t write_failures;
  uint64_t misses;
} kvtier_tier_stats;

/* Latency of one kind of call (kvtier/stats.h, LatencyStats): bucket i < 23 counts calls that
 * took less than 2^i microseconds, the last bucket the rest. */
#define KVTIER_LATENCY_BUCKETS 24
typedef struct kvtier_latency_stats {
  uint64_t count;
  uint64_t sum_ns;
  uint64_t buckets[KVTIER_LATENCY_BUCKETS];
} kvtier_latency_stats;

/* A snapshot of kvtier::EngineStats (per-namespace figures: kvtier_namespace_stats). */
typedef struct kvtier_stats {
  uint64_t struct_size; /* in: sizeof(kvtier_stats) as compiled; out: bytes filled */
  kvtier_tier_stats tiers[KVTIER_NUM_TIERS]; /* indexed by kvtier_tier */
  uint64_t namespaces;                       /* how many the engine has */
  uint64_t match_calls;
  uint64_t matched_blocks;
  uint64_t missed_blocks;
  uint64_t stored_blocks;
  uint64_t deduplicated_blocks;
  uint64_t rejected_blocks;
  uint64_t loaded_blocks;
  uint64_t leases_held;
  uint64_t leases_expired;
  uint64_t prefetch_hinted;
  uint64_t prefetch_issued;
  uint64_t prefetch_in_time;
  uint64_t prefetch_late;
  uint64_t prefetch_unused;
  uint64_t block_bytes;
  uint64_t stall_ns;
  uint64_t stalled_waits;
  uint64_t prefetch_present;
  uint64_t prefetch_skipped;
  uint64_t prefetch_cancelled;
  uint64_t prefetch_queued;
  uint64_t prefetch_outstanding_bytes;
  uint64_t prefetch_budget_bytes;
  kvtier_latency_stats match_latency;
  kvtier_latency_stats store_latency;
  kvtier_latency_stats load_latency;
  /* KVTIER_STATS_SIZE_MIN ends here: the figures above, in the version-4 layout. */
  /* The remote tier (C API version 4): kvtier/stats.h's RemoteStats, each field named
   * remote_<field>; all zero when the engine has no remote tier. Its lookups, bytes and hit
   * ratio are in tiers[KVTIER_TIER_REMOTE]. */
  uint64_t remote_enabled;
  uint64_t remote_lookups;
  uint64_t remote_lookup_hits;
  uint64_t remote_lookup_errors;
  uint64_t remote_reads;
  uint64_t remote_read_hits;
  uint64_t remote_read_misses;
  uint64_t remote_read_errors;
  uint64_t remote_read_corrupt;
  uint64_t remote_read_wrong_block;
  uint64_t remote_read_bad_mac;
  uint64_t remote_writes;
  uint64_t remote_writes_failed;
  uint64_t remote_writes_dropped;
  uint64_t remote_writes_rejected;
  uint64_t remote_bytes_written;
  uint64_t remote_bytes_read;
  uint64_t remote_erased_keys;
  uint64_t remote_slot_map_refreshes;
  uint64_t remote_errors_connect;
  uint64_t remote_errors_timeout;
  uint64_t remote_errors_cluster_down;
  uint64_t remote_errors_no_perm;
  uint64_t remote_errors_breaker_open;
  uint64_t remote_errors_protocol;
  uint64_t remote_redirects;
  kvtier_latency_stats remote_get_latency;
  kvtier_latency_stats remote_set_latency;
  uint64_t remote_nodes; /* cluster nodes the client knows: kvtier_remote_node_stats_get */
  /* C API version 6. */
  uint64_t remote_writes_skipped_replica; /* left to the tensor-parallel store_rank */
  /* C API version 7: the tiers' measured read rates (kvtier/stats.h TierStats::read_*),
   * indexed by kvtier_tier (kvtier_tier_stats' size is fixed), and load deadlines. */
  uint64_t tier_read_bytes_per_s[KVTIER_NUM_TIERS];
  uint64_t tier_read_latency_ns[KVTIER_NUM_TIERS];
  uint64_t tier_read_samples[KVTIER_NUM_TIERS];
  uint64_t blocks_abandoned; /* disk reads Loads abandoned at their deadline */
  /* Append new fields here. */
} kvtier_stats;
/* The smallest struct_size kvtier_engine_stats accepts: every figure before the remote tier's,
 * laid out as in version 4. Every struct_size a program built against a header before version
 * 4 passes is smaller, so such a program gets INVALID_ARGUMENT, not figures in wrong places. */
#define KVTIER_STATS_SIZE_MIN (offsetof(kvtier_stats, remote_enabled))

typedef struct kvtier_namespace_stats {
  uint64_t struct_size; /* in: sizeof(kvtier_namespace_stats) as compiled; out: bytes filled */
  uint64_t blocks;
  uint64_t blocks_per_tier[KVTIER_NUM_TIERS];
  uint64_t matched_blocks;
  uint64_t missed_blocks;
  uint64_t stored_blocks;
  uint64_t loaded_blocks;
  uint64_t hits_per_tier[KVTIER_NUM_TIERS];
  uint64_t misses_per_tier[KVTIER_NUM_TIERS];
  uint64_t stall_ns;
  uint64_t stalled_waits;
  uint64_t quota_blocks[KVTIER_NUM_TIERS];
  uint64_t quota_evictions;
  uint64_t quota_rejections;
  uint64_t expired_blocks;
  /* Append new fields here (KVTIER_NAMESPACE_STATS_SIZE_MIN is the size up to here). */
} kvtier_namespace_stats;
/* The smallest struct_size kvtier_namespace_stats_get accepts: the whole struct of version 4
 * (every size a program built against an earlier header passes is smaller, and refused). */
#define KVTIER_NAMESPACE_STATS_SIZE_MIN (offsetof(kvtier_namespace_stats, expired_blocks) + 8)

/* One node of the remote tier's cluster, as the engine's client sees it (kvtier/stats.h,
 * RemoteNodeStats). Versioned as the structs above: set struct_size. */
#define KVTIER_REMOTE_ADDRESS_MAX 264
typedef struct kvtier_remote_node_stats {
  uint64_t struct_size; /* in: sizeof(kvtier_remote_node_stats) as compiled; out: bytes filled */
  char address[KVTIER_REMOTE_ADDRESS_MAX]; /* "host:port", NUL-terminated (truncated to fit) */
  uint64_t master;       /* 1 = serves hash slots */
  uint64_t connected;    /* 1 = at least one connection is up */
  uint64_t breaker_open; /* 1 = its circuit breaker fails its operations at once */
  uint64_t slots;
  uint64_t ops;
  uint64_t errors;
  /* Append new fields here (KVTIER_REMOTE_NODE_STATS_SIZE_MIN is the size up to here). */
} kvtier_remote_node_stats;
#define KVTIER_REMOTE_NODE_STATS_SIZE_MIN (offsetof(kvtier_remote_node_stats, errors) + 8)

/* REQUIRES: out_stats->struct_size set as above. */
kvtier_status_code kvtier_engine_stats(kvtier_engine* engine, kvtier_stats* out_stats);
/* REQUIRES: out_stats->struct_size set as above. NOT_FOUND for a namespace the engine does
 * not have. */
kvtier_status_code kvtier_namespace_stats_get(kvtier_engine* engine, const char* ns,
                                              kvtier_namespace_stats* out_stats);
/* The figures of node `index` of the remote tier's cluster, 0 <= index < kvtier_stats'
 * remote_nodes (the list is read anew by each call: a slot-map refresh between calls may
 * reorder it; the address says which node it is). OUT_OF_RANGE naming the count for an index
 * past the end (always, when the engine has no remote tier).
 * REQUIRES: out_stats->struct_size set as above. */
kvtier_status_code kvtier_remote_node_stats_get(kvtier_engine* engine, size_t index,
                                                kvtier_remote_node_stats* out_stats);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KVTIER_C_API_H_ */
