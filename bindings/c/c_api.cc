// bindings/c/c_api.cc — the C ABI (include/kvtier/c_api.h) over kvtier::Engine.
//
// A binding like the Python module: it includes kvtier's public headers only (include/kvtier/)
// and Abseil, never the engine's internals.
//
// Each entry point checks its arguments (NULL pointers, zero or mismatched sizes, enum values)
// before touching the engine, turns absl::Status into a kvtier_status_code plus a thread-local
// message prefixed with the function's name, and catches every C++ exception (an allocation
// failure) so none crosses into C.

#include "kvtier/c_api.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kvtier/block_key.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"
#include "kvtier/geometry.h"
#include "kvtier/stats.h"
#include "stats_fill.h"  // bindings/c/stats_fill.h

struct kvtier_options {
  kvtier::EngineOptions options;
};

struct kvtier_engine {
  std::unique_ptr<kvtier::Engine> engine;
  // Handles alive; close refuses while any is, since a handle refers into the engine.
  std::atomic<int64_t> live_handles{0};
  // Buffers kvtier_buffer_alloc returned: kvtier_buffer_free frees only these, never the
  // engine's own tier memory.
  std::mutex buffers_mu;
  absl::flat_hash_set<uint64_t> buffers;  // guarded by buffers_mu
};

struct kvtier_handle {
  kvtier_engine* owner = nullptr;
  std::unique_ptr<kvtier::TransferHandle> transfer;
};

namespace {

thread_local std::string t_last_error;

kvtier_status_code Fail(absl::StatusCode code, std::string message) {
  t_last_error = std::move(message);
  return static_cast<kvtier_status_code>(code);
}

kvtier_status_code InvalidArgument(const char* fn, absl::string_view what) {
  return Fail(absl::StatusCode::kInvalidArgument, absl::StrCat(fn, ": ", what));
}

kvtier_status_code FromStatus(const char* fn, const absl::Status& status) {
  if (status.ok()) return KVTIER_OK;
  return Fail(status.code(), absl::StrCat(fn, ": ", status.message()));
}

// Runs `body` with the error cleared and no exception escaping.
template <typename Body>
kvtier_status_code Guarded(const char* fn, Body&& body) noexcept {
  t_last_error.clear();
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Fail(absl::StatusCode::kResourceExhausted, absl::StrCat(fn, ": out of host memory"));
  } catch (const std::exception& e) {
    return Fail(absl::StatusCode::kInternal, absl::StrCat(fn, ": ", e.what()));
  } catch (...) {
    return Fail(absl::StatusCode::kInternal, absl::StrCat(fn, ": unknown C++ exception"));
  }
}

#define KVTIER_REQUIRE_NONNULL(fn, arg)                                \
  do {                                                                 \
    if ((arg) == nullptr) return InvalidArgument(fn, #arg " is NULL"); \
  } while (0)

// A pointer/length pair: `ptr` may be NULL only when `count` is 0.
kvtier_status_code CheckArray(const char* fn, const void* ptr, const char* ptr_name, size_t count,
                              const char* count_name) {
  if (ptr == nullptr && count != 0) {
    return InvalidArgument(fn,
                           absl::StrFormat("%s is NULL but %s is %d", ptr_name, count_name, count));
  }
  return KVTIER_OK;
}

// The value a caller passed for a C enum, read as its underlying integer: a C caller (or an
// FFI binding) may pass any int, and loading a value outside the enumerators through the enum
// type would be undefined behaviour in C++.
template <typename Enum>
int64_t RawEnum(const Enum& value) {
  std::underlying_type_t<Enum> raw;
  static_assert(sizeof(raw) == sizeof(value));
  std::memcpy(&raw, &value, sizeof(raw));
  return static_cast<int64_t>(raw);
}

absl::string_view Extra(const void* extra, size_t extra_len) {
  return extra_len == 0 ? absl::string_view()
                        : absl::string_view(static_cast<const char*>(extra), extra_len);
}

std::vector<kvtier::BlockKey> ToKeys(const kvtier_block_key* keys, size_t n) {
  std::vector<kvtier::BlockKey> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = kvtier::BlockKey{keys[i].hi, keys[i].lo};
  return out;
}

std::vector<kvtier::DevicePtr> ToDevicePtrs(const kvtier_device_ptr* ptrs, size_t n) {
  std::vector<kvtier::DevicePtr> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = kvtier::DevicePtr::FromAddress(ptrs[i]);
  return out;
}

// Checks a paged pool's pointers and builds the KvBuffers (the engine checks the rest:
// layer count, addresses, page ranges).
kvtier_status_code PagedBuffers(const char* fn, const kvtier_paged_pool* pool,
                                const uint32_t* pages, size_t num_pages, kvtier::KvBuffers* out) {
  KVTIER_REQUIRE_NONNULL(fn, pool);
  if (pool->num_layers == 0) return InvalidArgument(fn, "pool->num_layers is 0");
  if (pool->layers == nullptr) return InvalidArgument(fn, "pool->layers is NULL");
  if (pool->num_pages == 0) return InvalidArgument(fn, "pool->num_pages is 0");
  const int64_t layout = RawEnum(pool->layout);
  if (layout != KVTIER_PAGE_NHD && layout != KVTIER_PAGE_HND) {
    return InvalidArgument(
        fn, absl::StrFormat("pool->layout %d is not KVTIER_PAGE_NHD or KVTIER_PAGE_HND", layout));
  }
  if (num_pages == 0) return InvalidArgument(fn, "num_pages is 0");
  KVTIER_REQUIRE_NONNULL(fn, pages);
  kvtier::KvBuffers::PagedPool p;
  p.layers = ToDevicePtrs(pool->layers, pool->num_layers);
  p.num_pages = pool->num_pages;
  p.layout = layout == KVTIER_PAGE_NHD ? kvtier::PageLayout::kNhd : kvtier::PageLayout::kHnd;
  *out = kvtier::KvBuffers::Paged(std::move(p), std::vector<uint32_t>(pages, pages + num_pages));
  return KVTIER_OK;
}

kvtier_status_code NewHandle(kvtier_engine* engine,
                             std::unique_ptr<kvtier::TransferHandle> transfer,
                             kvtier_handle** out) {
  auto handle = std::make_unique<kvtier_handle>();
  handle->owner = engine;
  handle->transfer = std::move(transfer);
  engine->live_handles.fetch_add(1, std::memory_order_relaxed);
  *out = handle.release();
  return KVTIER_OK;
}

// Store of KvBuffers: the common tail of kvtier_store and kvtier_store_paged.
kvtier_status_code DoStore(const char* fn, kvtier_engine* engine, const char* ns,
                           const int32_t* tokens, size_t num_tokens, const void* extra,
                           size_t extra_len, size_t first_block, kvtier::KvBuffers buffers,
                           std::unique_ptr<kvtier::TransferHandle>* out) {
  kvtier::StoreRequest request;
  request.ns = ns;
  request.tokens = absl::MakeConstSpan(tokens, num_tokens);
  request.extra = Extra(extra, extra_len);
  request.first_block = first_block;
  request.buffers = std::move(buffers);
  absl::StatusOr<std::unique_ptr<kvtier::TransferHandle>> handle = engine->engine->Store(request);
  if (!handle.ok()) return FromStatus(fn, handle.status());
  *out = *std::move(handle);
  return KVTIER_OK;
}

// The checks every store entry point shares.
kvtier_status_code CheckStoreArgs(const char* fn, kvtier_engine* engine, const char* ns,
                                  const int32_t* tokens, size_t num_tokens, const void* extra,
                                  size_t extra_len) {
  KVTIER_REQUIRE_NONNULL(fn, engine);
  KVTIER_REQUIRE_NONNULL(fn, ns);
  if (num_tokens == 0) return InvalidArgument(fn, "num_tokens is 0");
  if (kvtier_status_code c = CheckArray(fn, tokens, "tokens", num_tokens, "num_tokens")) return c;
  return CheckArray(fn, extra, "extra", extra_len, "extra_len");
}

kvtier_status_code CheckLoadArgs(const char* fn, kvtier_engine* engine, const char* ns,
                                 const kvtier_block_key* keys, size_t num_keys) {
  KVTIER_REQUIRE_NONNULL(fn, engine);
  KVTIER_REQUIRE_NONNULL(fn, ns);
  if (num_keys == 0) return InvalidArgument(fn, "num_keys is 0");
  KVTIER_REQUIRE_NONNULL(fn, keys);
  return KVTIER_OK;
}

kvtier_status_code DoLoad(const char* fn, kvtier_engine* engine, const char* ns,
                          const kvtier_block_key* keys, size_t num_keys, kvtier::KvBuffers buffers,
                          bool layerwise, std::unique_ptr<kvtier::TransferHandle>* out) {
  kvtier::LoadRequest request;
  request.ns = ns;
  request.keys = ToKeys(keys, num_keys);
  request.buffers = std::move(buffers);
  request.layerwise = layerwise;
  absl::StatusOr<std::unique_ptr<kvtier::TransferHandle>> handle = engine->engine->Load(request);
  if (!handle.ok()) return FromStatus(fn, handle.status());
  *out = *std::move(handle);
  return KVTIER_OK;
}

// A device buffer that frees itself: the staging area of the host-memory variants.
class StagingBuffer {
 public:
  explicit StagingBuffer(kvtier::Device& device) : device_(device) {}
  ~StagingBuffer() {
    if (!ptr_.is_null()) (void)device_.Free(ptr_);
  }
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;

  absl::Status Allocate(size_t bytes) {
    absl::StatusOr<kvtier::DevicePtr> p = device_.Allocate(bytes);
    if (!p.ok()) return p.status();
    ptr_ = *p;
    return absl::OkStatus();
  }
  kvtier::DevicePtr ptr() const { return ptr_; }

 private:
  kvtier::Device& device_;
  kvtier::DevicePtr ptr_;
};

// A synchronous copy between host memory and device memory on a stream of its own.
absl::Status CopySync(kvtier::Device& device, kvtier::DevicePtr device_ptr, void* host,
                      const void* host_src, size_t bytes) {
  absl::StatusOr<std::unique_ptr<kvtier::Stream>> stream = device.CreateStream();
  if (!stream.ok()) return stream.status();
  absl::Status s = host_src != nullptr ? (*stream)->CopyToDevice(device_ptr, host_src, bytes)
                                       : (*stream)->CopyToHost(host, device_ptr, bytes);
  if (!s.ok()) return s;
  return (*stream)->Synchronize();
}

// data_bytes must be num_blocks whole blocks.
kvtier_status_code CheckHostData(const char* fn, size_t block_bytes, size_t num_blocks,
                                 const void* data, size_t data_bytes) {
  if (data == nullptr) return InvalidArgument(fn, "data is NULL");
  if (num_blocks > SIZE_MAX / block_bytes || data_bytes != num_blocks * block_bytes) {
    return InvalidArgument(
        fn,
        absl::StrFormat("data_bytes is %d, expected %d blocks x %d bytes = %d", data_bytes,
                        num_blocks, block_bytes,
                        num_blocks > SIZE_MAX / block_bytes ? SIZE_MAX : num_blocks * block_bytes));
  }
  return KVTIER_OK;
}

std::vector<kvtier::DevicePtr> BlocksOf(kvtier::DevicePtr base, size_t num_blocks,
                                        size_t block_bytes) {
  std::vector<kvtier::DevicePtr> blocks(num_blocks);
  for (size_t i = 0; i < num_blocks; ++i) blocks[i] = base + i * block_bytes;
  return blocks;
}

// The C limits as kvtier's. Quotas against the geometry are the engine's to check.
absl::StatusOr<kvtier::NamespaceLimits> ToLimits(const kvtier_namespace_limits& in) {
  const struct {
    const char* name;
    uint64_t value;
  } quotas[] = {{"limits->gpu_bytes", in.gpu_bytes},
                {"limits->host_bytes", in.host_bytes},
                {"limits->disk_bytes", in.disk_bytes}};
  for (const auto& q : quotas) {
    if (q.value > SIZE_MAX) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s = %d exceeds this platform's size_t", q.name, q.value));
    }
  }
  // 2^62 ms is over a hundred million years: beyond it, only 0 (keep) makes sense.
  constexpr uint64_t kMaxTtlMs = uint64_t{1} << 62;
  if (in.ttl_ms > kMaxTtlMs) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "limits->ttl_ms = %d is too large (use 0 to keep blocks forever)", in.ttl_ms));
  }
  kvtier::NamespaceLimits out;
  out.gpu_bytes = static_cast<size_t>(in.gpu_bytes);
  out.host_bytes = static_cast<size_t>(in.host_bytes);
  out.disk_bytes = static_cast<size_t>(in.disk_bytes);
  out.ttl = in.ttl_ms == 0 ? absl::InfiniteDuration()
                           : absl::Milliseconds(static_cast<int64_t>(in.ttl_ms));
  return out;
}

// Checks one remote option the way kvtier_engine_open will, alone: `set` applies it to default
// RemoteOptions (with a placeholder seed, so the tier counts as enabled) inside options that
// are otherwise valid, and the engine's own validation runs. So a setter refuses what open
// would refuse, with the engine's message naming "remote.<field>", and an error is never
// blamed on another option set before. Checks that need the real options (a codec against
// the geometry's dtype, max_inflight_bytes against the block size, TLS files together) are
// left to kvtier_options_validate and kvtier_engine_open.
template <typename Set>
absl::Status CheckRemoteOption(Set&& set) {
  kvtier::EngineOptions probe;
  probe.geometry.num_layers = 1;
  probe.geometry.num_kv_heads = 1;
  probe.geometry.head_dim = 8;
  probe.geometry.dtype = kvtier::DType::kFloat16;
  probe.geometry.block_tokens = 1;
  probe.model_fingerprint = "probe";
  probe.host_tier_bytes = probe.geometry.block_bytes();
  probe.device.choice = kvtier::DeviceChoice::kEmulated;
  probe.remote.seeds = {"127.0.0.1:6379"};
  set(probe.remote);
  return probe.Validate();
}

// A timeout in milliseconds, as RemoteOptions takes it: 1 .. 10 minutes.
absl::StatusOr<absl::Duration> RemoteTimeout(const char* name, uint64_t ms) {
  constexpr uint64_t kMaxMs = 10 * 60 * 1000;
  if (ms == 0 || ms > kMaxMs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s = %d must be in 1..%d (milliseconds)", name, ms, kMaxMs));
  }
  return absl::Milliseconds(static_cast<int64_t>(ms));
}

}  // namespace

extern "C" {

// --------------------------------------------------------------------------------- errors

const char* kvtier_last_error(void) { return t_last_error.c_str(); }

const char* kvtier_status_code_name(kvtier_status_code code) {
  switch (RawEnum(code)) {
    case KVTIER_OK:
      return "OK";
    case KVTIER_CANCELLED:
      return "CANCELLED";
    case KVTIER_UNKNOWN:
      return "UNKNOWN";
    case KVTIER_INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case KVTIER_DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case KVTIER_NOT_FOUND:
      return "NOT_FOUND";
    case KVTIER_ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case KVTIER_PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case KVTIER_RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case KVTIER_FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case KVTIER_ABORTED:
      return "ABORTED";
    case KVTIER_OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case KVTIER_UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case KVTIER_INTERNAL:
      return "INTERNAL";
    case KVTIER_UNAVAILABLE:
      return "UNAVAILABLE";
    case KVTIER_DATA_LOSS:
      return "DATA_LOSS";
    case KVTIER_UNAUTHENTICATED:
      return "UNAUTHENTICATED";
  }
  return "UNKNOWN_CODE";
}

int kvtier_c_api_version(void) { return KVTIER_C_API_VERSION; }

// -------------------------------------------------------------------------------- options

kvtier_status_code kvtier_options_create(kvtier_options** out_options) {
  static constexpr char kFn[] = "kvtier_options_create";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, out_options);
    *out_options = new kvtier_options();
    return KVTIER_OK;
  });
}

// The destroy functions cannot fail and leave the last error alone, so a caller may clean up
// before reporting it.
void kvtier_options_destroy(kvtier_options* options) { delete options; }

static_assert(KVTIER_DTYPE_FLOAT16 == static_cast<int>(kvtier::DType::kFloat16) &&
              KVTIER_DTYPE_BFLOAT16 == static_cast<int>(kvtier::DType::kBFloat16) &&
              KVTIER_DTYPE_FLOAT32 == static_cast<int>(kvtier::DType::kFloat32) &&
              KVTIER_DTYPE_FP8_E4M3 == static_cast<int>(kvtier::DType::kFp8E4m3) &&
              KVTIER_DTYPE_FP8_E5M2 == static_cast<int>(kvtier::DType::kFp8E5m2));

kvtier_status_code kvtier_options_set_geometry(kvtier_options* options, uint32_t num_layers,
                                               uint32_t num_kv_heads, uint32_t head_dim,
                                               kvtier_dtype dtype, uint32_t block_tokens) {
  static constexpr char kFn[] = "kvtier_options_set_geometry";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    const int64_t raw_dtype = RawEnum(dtype);
    if (raw_dtype < KVTIER_DTYPE_FLOAT16 || raw_dtype > KVTIER_DTYPE_FP8_E5M2) {
      return InvalidArgument(kFn, absl::StrFormat("dtype %d is not a kvtier_dtype", raw_dtype));
    }
    kvtier::Geometry g;
    g.num_layers = num_layers;
    g.num_kv_heads = num_kv_heads;
    g.head_dim = head_dim;
    g.dtype = static_cast<kvtier::DType>(raw_dtype);
    g.block_tokens = block_tokens;
    if (kvtier_status_code c = FromStatus(kFn, g.Validate())) return c;
    options->options.geometry = g;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_latent(kvtier_options* options, uint32_t rope_dim) {
  static constexpr char kFn[] = "kvtier_options_set_latent";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    kvtier::Geometry g = options->options.geometry;
    if (g.num_layers == 0) {
      return InvalidArgument(kFn, "no geometry: call kvtier_options_set_geometry first");
    }
    g.kind = kvtier::KvKind::kLatent;
    g.rope_dim = rope_dim;
    if (kvtier_status_code c = FromStatus(kFn, g.Validate())) return c;
    options->options.geometry = g;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_tensor_parallel(kvtier_options* options, uint32_t rank,
                                                      uint32_t size, uint32_t store_rank) {
  static constexpr char kFn[] = "kvtier_options_set_tensor_parallel";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (options->options.geometry.num_layers == 0) {
      return InvalidArgument(kFn, "no geometry: call kvtier_options_set_geometry first");
    }
    return FromStatus(kFn, options->options.ShardForTensorParallel(rank, size, store_rank));
  });
}

kvtier_status_code kvtier_options_set_model_fingerprint(kvtier_options* options,
                                                        const char* fingerprint) {
  static constexpr char kFn[] = "kvtier_options_set_model_fingerprint";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, fingerprint);
    if (fingerprint[0] == '\0') return InvalidArgument(kFn, "fingerprint is empty");
    options->options.model_fingerprint = fingerprint;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_key_hash(kvtier_options* options, kvtier_key_hash hash) {
  static constexpr char kFn[] = "kvtier_options_set_key_hash";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    const int64_t raw_hash = RawEnum(hash);
    if (raw_hash != KVTIER_KEY_HASH_SHA256 && raw_hash != KVTIER_KEY_HASH_XXH3) {
      return InvalidArgument(kFn, absl::StrFormat("hash %d is not a kvtier_key_hash", raw_hash));
    }
    options->options.key_hash = static_cast<kvtier::KeyHash>(raw_hash);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_tier_bytes(kvtier_options* options, uint64_t gpu_tier_bytes,
                                                 uint64_t host_tier_bytes) {
  static constexpr char kFn[] = "kvtier_options_set_tier_bytes";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (host_tier_bytes == 0) {
      return InvalidArgument(kFn, "host_tier_bytes is 0 (the host tier must hold a block)");
    }
    if (gpu_tier_bytes > SIZE_MAX || host_tier_bytes > SIZE_MAX) {
      return InvalidArgument(kFn, "tier bytes exceed this platform's size_t");
    }
    options->options.gpu_tier_bytes = static_cast<size_t>(gpu_tier_bytes);
    options->options.host_tier_bytes = static_cast<size_t>(host_tier_bytes);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_disk(kvtier_options* options, const char* directory,
                                           uint64_t capacity_bytes) {
  static constexpr char kFn[] = "kvtier_options_set_disk";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, directory);
    if (directory[0] == '\0') return InvalidArgument(kFn, "directory is empty");
    if (capacity_bytes == 0) return InvalidArgument(kFn, "capacity_bytes is 0");
    options->options.disk.directory = directory;
    options->options.disk.capacity_bytes = capacity_bytes;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_disk_region_bytes(kvtier_options* options,
                                                        uint64_t region_bytes) {
  static constexpr char kFn[] = "kvtier_options_set_disk_region_bytes";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (region_bytes == 0 || region_bytes % 4096 != 0) {
      return InvalidArgument(
          kFn, absl::StrFormat("region_bytes %d is not a positive multiple of 4096", region_bytes));
    }
    options->options.disk.region_bytes = region_bytes;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_disk_group_access(kvtier_options* options, int enable) {
  static constexpr char kFn[] = "kvtier_options_set_disk_group_access";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    options->options.disk.group_access = enable != 0;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_disk_admit_min_seen(kvtier_options* options,
                                                          uint32_t min_seen) {
  static constexpr char kFn[] = "kvtier_options_set_disk_admit_min_seen";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (min_seen == 0) return InvalidArgument(kFn, "min_seen is 0 (1 admits every block)");
    options->options.disk.admit_min_seen = min_seen;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_device(kvtier_options* options, kvtier_device_kind kind,
                                             int cuda_ordinal, double emulated_copy_gbps) {
  static constexpr char kFn[] = "kvtier_options_set_device";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    kvtier::DeviceOptions d = options->options.device;
    const int64_t raw_kind = RawEnum(kind);
    switch (raw_kind) {
      case KVTIER_DEVICE_AUTO:
        d.choice = kvtier::DeviceChoice::kAuto;
        break;
      case KVTIER_DEVICE_CUDA:
        d.choice = kvtier::DeviceChoice::kCuda;
        break;
      case KVTIER_DEVICE_EMULATED:
        d.choice = kvtier::DeviceChoice::kEmulated;
        break;
      default:
        return InvalidArgument(kFn,
                               absl::StrFormat("kind %d is not a kvtier_device_kind", raw_kind));
    }
    d.cuda_ordinal = cuda_ordinal;
    d.emulated_copy_gbps = emulated_copy_gbps;
    if (kvtier_status_code c = FromStatus(kFn, d.Validate())) return c;
    options->options.device = d;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_eviction(kvtier_options* options, const char* gpu_policy,
                                               const char* host_policy) {
  static constexpr char kFn[] = "kvtier_options_set_eviction";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, gpu_policy);
    KVTIER_REQUIRE_NONNULL(kFn, host_policy);
    // Names are checked by kvtier_options_validate / kvtier_engine_open against the
    // engine's policy registry.
    options->options.gpu_eviction = gpu_policy;
    options->options.host_eviction = host_policy;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_namespaces(kvtier_options* options, const char* const* names,
                                                 size_t count) {
  static constexpr char kFn[] = "kvtier_options_set_namespaces";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (kvtier_status_code c = CheckArray(kFn, names, "names", count, "count")) return c;
    std::vector<std::string> list;
    list.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      if (names[i] == nullptr) return InvalidArgument(kFn, absl::StrFormat("names[%d] is NULL", i));
      list.emplace_back(names[i]);
    }
    options->options.namespaces = std::move(list);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_lease_timeout_ms(kvtier_options* options,
                                                       uint64_t timeout_ms) {
  static constexpr char kFn[] = "kvtier_options_set_lease_timeout_ms";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (timeout_ms == 0) return InvalidArgument(kFn, "timeout_ms is 0");
    options->options.lease_timeout = absl::Milliseconds(timeout_ms);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_namespace_limits(kvtier_options* options, const char* ns,
                                                       const kvtier_namespace_limits* limits) {
  static constexpr char kFn[] = "kvtier_options_set_namespace_limits";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    KVTIER_REQUIRE_NONNULL(kFn, limits);
    if (kvtier_status_code c = FromStatus(kFn, kvtier::ValidateNamespaceName(ns))) return c;
    absl::StatusOr<kvtier::NamespaceLimits> l = ToLimits(*limits);
    if (!l.ok()) return FromStatus(kFn, l.status());
    options->options.namespace_limits[ns] = *l;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_secure_erase(kvtier_options* options, int enable) {
  static constexpr char kFn[] = "kvtier_options_set_secure_erase";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    options->options.secure_erase = enable != 0;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_seeds(kvtier_options* options, const char* seeds) {
  static constexpr char kFn[] = "kvtier_options_set_remote_seeds";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, seeds);
    std::vector<std::string> list;
    for (absl::string_view seed : absl::StrSplit(seeds, ',')) {
      seed = absl::StripAsciiWhitespace(seed);
      if (seed.empty()) {
        return InvalidArgument(
            kFn,
            absl::StrFormat("seeds '%s': entry %d is empty (expected host:port[,host:port...])",
                            seeds, list.size() + 1));
      }
      list.emplace_back(seed);
    }
    if (kvtier_status_code c =
            FromStatus(kFn, CheckRemoteOption([&](kvtier::RemoteOptions& r) { r.seeds = list; }))) {
      return c;
    }
    options->options.remote.seeds = std::move(list);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_add_remote_seed(kvtier_options* options, const char* seed) {
  static constexpr char kFn[] = "kvtier_options_add_remote_seed";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, seed);
    if (seed[0] == '\0') return InvalidArgument(kFn, "seed is empty (expected host:port)");
    if (kvtier_status_code c = FromStatus(
            kFn, CheckRemoteOption([&](kvtier::RemoteOptions& r) { r.seeds = {seed}; }))) {
      return c;
    }
    options->options.remote.seeds.emplace_back(seed);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_auth(kvtier_options* options, const char* user,
                                                  const char* password) {
  static constexpr char kFn[] = "kvtier_options_set_remote_auth";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    options->options.remote.user = user != nullptr ? user : "";
    options->options.remote.password = password != nullptr ? password : "";
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_tls(kvtier_options* options, int enable,
                                                 const char* ca_file, const char* cert_file,
                                                 const char* key_file, const char* server_name) {
  static constexpr char kFn[] = "kvtier_options_set_remote_tls";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    kvtier::RemoteOptions& r = options->options.remote;
    if (enable == 0) {
      r.tls = false;
      r.tls_ca_file.clear();
      r.tls_cert_file.clear();
      r.tls_key_file.clear();
      r.tls_server_name.clear();
      return KVTIER_OK;
    }
    auto str = [](const char* s) { return std::string(s != nullptr ? s : ""); };
    if (str(ca_file).empty()) {
      return InvalidArgument(kFn,
                             "ca_file is NULL or empty: TLS needs the CA bundle the cluster's "
                             "certificates chain to");
    }
    if (str(cert_file).empty() != str(key_file).empty()) {
      return InvalidArgument(kFn, "cert_file and key_file go together: set both or neither");
    }
    r.tls = true;
    r.tls_ca_file = str(ca_file);
    r.tls_cert_file = str(cert_file);
    r.tls_key_file = str(key_file);
    r.tls_server_name = str(server_name);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_timeouts_ms(kvtier_options* options,
                                                         uint64_t connect_ms, uint64_t op_ms,
                                                         uint64_t match_ms) {
  static constexpr char kFn[] = "kvtier_options_set_remote_timeouts_ms";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    absl::StatusOr<absl::Duration> connect = RemoteTimeout("connect_ms", connect_ms);
    if (!connect.ok()) return FromStatus(kFn, connect.status());
    absl::StatusOr<absl::Duration> op = RemoteTimeout("op_ms", op_ms);
    if (!op.ok()) return FromStatus(kFn, op.status());
    absl::StatusOr<absl::Duration> match = RemoteTimeout("match_ms", match_ms);
    if (!match.ok()) return FromStatus(kFn, match.status());
    options->options.remote.connect_timeout = *connect;
    options->options.remote.op_timeout = *op;
    options->options.remote.match_timeout = *match;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_connections(kvtier_options* options,
                                                         uint32_t connections_per_node,
                                                         uint32_t io_threads) {
  static constexpr char kFn[] = "kvtier_options_set_remote_connections";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (kvtier_status_code c = FromStatus(kFn, CheckRemoteOption([&](kvtier::RemoteOptions& r) {
                                            r.connections_per_node = connections_per_node;
                                            r.io_threads = io_threads;
                                          }))) {
      return c;
    }
    options->options.remote.connections_per_node = connections_per_node;
    options->options.remote.io_threads = io_threads;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_max_inflight_bytes(kvtier_options* options,
                                                                uint64_t max_inflight_bytes) {
  static constexpr char kFn[] = "kvtier_options_set_remote_max_inflight_bytes";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (max_inflight_bytes == 0 || max_inflight_bytes > SIZE_MAX) {
      return InvalidArgument(
          kFn, absl::StrFormat("max_inflight_bytes = %d must be at least one block and fit in "
                               "this platform's size_t",
                               max_inflight_bytes));
    }
    options->options.remote.max_inflight_bytes = static_cast<size_t>(max_inflight_bytes);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_write_policy(kvtier_options* options,
                                                          const char* policy) {
  static constexpr char kFn[] = "kvtier_options_set_remote_write_policy";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, policy);
    if (kvtier_status_code c = FromStatus(
            kFn, CheckRemoteOption([&](kvtier::RemoteOptions& r) { r.write_policy = policy; }))) {
      return c;
    }
    options->options.remote.write_policy = policy;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_admission(kvtier_options* options, uint32_t min_seen,
                                                       double write_budget_mbps) {
  static constexpr char kFn[] = "kvtier_options_set_remote_admission";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    if (min_seen == 0) return InvalidArgument(kFn, "min_seen is 0 (1 admits every block)");
    if (kvtier_status_code c = FromStatus(kFn, CheckRemoteOption([&](kvtier::RemoteOptions& r) {
                                            r.admit_min_seen = min_seen;
                                            r.write_budget_mbps = write_budget_mbps;
                                          }))) {
      return c;
    }
    options->options.remote.admit_min_seen = min_seen;
    options->options.remote.write_budget_mbps = write_budget_mbps;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_codec(kvtier_options* options, const char* codec,
                                                   int zstd_level) {
  static constexpr char kFn[] = "kvtier_options_set_remote_codec";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, codec);
    if (kvtier_status_code c = FromStatus(kFn, CheckRemoteOption([&](kvtier::RemoteOptions& r) {
                                            r.codec = codec;
                                            r.zstd_level = zstd_level;
                                          }))) {
      return c;
    }
    options->options.remote.codec = codec;
    options->options.remote.zstd_level = zstd_level;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_add_remote_hmac_secret(kvtier_options* options, const char* ns,
                                                         const void* secret, size_t secret_len) {
  static constexpr char kFn[] = "kvtier_options_add_remote_hmac_secret";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    if (kvtier_status_code c = CheckArray(kFn, secret, "secret", secret_len, "secret_len")) {
      return c;
    }
    const std::string bytes =
        secret_len == 0 ? std::string() : std::string(static_cast<const char*>(secret), secret_len);
    if (kvtier_status_code c = FromStatus(kFn, CheckRemoteOption([&](kvtier::RemoteOptions& r) {
                                            r.hmac_secrets[ns] = bytes;
                                          }))) {
      return c;
    }
    options->options.remote.hmac_secrets[ns] = bytes;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_set_remote_allow_unreachable(kvtier_options* options, int allow) {
  static constexpr char kFn[] = "kvtier_options_set_remote_allow_unreachable";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    options->options.remote.allow_unreachable = allow != 0;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_options_validate(const kvtier_options* options) {
  static constexpr char kFn[] = "kvtier_options_validate";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    return FromStatus(kFn, options->options.Validate());
  });
}

// --------------------------------------------------------------------------------- engine

kvtier_status_code kvtier_engine_open(const kvtier_options* options, kvtier_engine** out_engine) {
  static constexpr char kFn[] = "kvtier_engine_open";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, options);
    KVTIER_REQUIRE_NONNULL(kFn, out_engine);
    absl::StatusOr<std::unique_ptr<kvtier::Engine>> engine = kvtier::Engine::Open(options->options);
    if (!engine.ok()) return FromStatus(kFn, engine.status());
    auto wrapper = std::make_unique<kvtier_engine>();
    wrapper->engine = *std::move(engine);
    *out_engine = wrapper.release();
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_engine_close(kvtier_engine* engine) {
  static constexpr char kFn[] = "kvtier_engine_close";
  return Guarded(kFn, [&] {
    if (engine == nullptr) return KVTIER_OK;
    const int64_t live = engine->live_handles.load(std::memory_order_acquire);
    if (live != 0) {
      return Fail(absl::StatusCode::kFailedPrecondition,
                  absl::StrFormat("%s: %d handles of this engine are still alive; destroy them "
                                  "first (kvtier_handle_destroy)",
                                  kFn, live));
    }
    // Transfers may still read or write caller buffers after their handles are gone: let them
    // land before the buffers are freed. (An error of theirs was the handles' to report.)
    (void)engine->engine->Flush();
    {
      std::lock_guard<std::mutex> lock(engine->buffers_mu);
      for (uint64_t address : engine->buffers) {
        (void)engine->engine->device().Free(kvtier::DevicePtr::FromAddress(address));
      }
      engine->buffers.clear();
    }
    delete engine;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_engine_block_bytes(const kvtier_engine* engine, size_t* out_bytes) {
  static constexpr char kFn[] = "kvtier_engine_block_bytes";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, out_bytes);
    *out_bytes = engine->engine->options().geometry.block_bytes();
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_engine_device_kind(const kvtier_engine* engine,
                                             kvtier_device_kind* out_kind) {
  static constexpr char kFn[] = "kvtier_engine_device_kind";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, out_kind);
    *out_kind = engine->engine->device().kind() == kvtier::DeviceKind::kCuda
                    ? KVTIER_DEVICE_CUDA
                    : KVTIER_DEVICE_EMULATED;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_create_namespace(kvtier_engine* engine, const char* ns) {
  static constexpr char kFn[] = "kvtier_create_namespace";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    return FromStatus(kFn, engine->engine->CreateNamespace(ns));
  });
}

kvtier_status_code kvtier_set_namespace_limits(kvtier_engine* engine, const char* ns,
                                               const kvtier_namespace_limits* limits) {
  static constexpr char kFn[] = "kvtier_set_namespace_limits";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    KVTIER_REQUIRE_NONNULL(kFn, limits);
    absl::StatusOr<kvtier::NamespaceLimits> l = ToLimits(*limits);
    if (!l.ok()) return FromStatus(kFn, l.status());
    return FromStatus(kFn, engine->engine->SetNamespaceLimits(ns, *l));
  });
}

// -------------------------------------------------------------------------------- buffers

kvtier_status_code kvtier_buffer_alloc(kvtier_engine* engine, size_t bytes,
                                       kvtier_device_ptr* out_ptr) {
  static constexpr char kFn[] = "kvtier_buffer_alloc";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, out_ptr);
    if (bytes == 0) return InvalidArgument(kFn, "bytes is 0");
    absl::StatusOr<kvtier::DevicePtr> p = engine->engine->device().Allocate(bytes);
    if (!p.ok()) return FromStatus(kFn, p.status());
    {
      std::lock_guard<std::mutex> lock(engine->buffers_mu);
      engine->buffers.insert(p->address());
    }
    *out_ptr = p->address();
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_buffer_free(kvtier_engine* engine, kvtier_device_ptr ptr) {
  static constexpr char kFn[] = "kvtier_buffer_free";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    if (ptr == 0) return InvalidArgument(kFn, "ptr is 0");
    {
      std::lock_guard<std::mutex> lock(engine->buffers_mu);
      if (engine->buffers.erase(ptr) == 0) {
        return InvalidArgument(
            kFn, absl::StrFormat("ptr 0x%x was not returned by kvtier_buffer_alloc on this "
                                 "engine (or was freed already)",
                                 ptr));
      }
    }
    return FromStatus(kFn, engine->engine->device().Free(kvtier::DevicePtr::FromAddress(ptr)));
  });
}

kvtier_status_code kvtier_buffer_write(kvtier_engine* engine, kvtier_device_ptr dst,
                                       const void* src, size_t bytes) {
  static constexpr char kFn[] = "kvtier_buffer_write";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    if (dst == 0) return InvalidArgument(kFn, "dst is 0");
    KVTIER_REQUIRE_NONNULL(kFn, src);
    if (bytes == 0) return InvalidArgument(kFn, "bytes is 0");
    return FromStatus(kFn, CopySync(engine->engine->device(), kvtier::DevicePtr::FromAddress(dst),
                                    nullptr, src, bytes));
  });
}

kvtier_status_code kvtier_buffer_read(kvtier_engine* engine, void* dst, kvtier_device_ptr src,
                                      size_t bytes) {
  static constexpr char kFn[] = "kvtier_buffer_read";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, dst);
    if (src == 0) return InvalidArgument(kFn, "src is 0");
    if (bytes == 0) return InvalidArgument(kFn, "bytes is 0");
    return FromStatus(kFn, CopySync(engine->engine->device(), kvtier::DevicePtr::FromAddress(src),
                                    dst, nullptr, bytes));
  });
}

kvtier_status_code kvtier_engine_register_device_memory(kvtier_engine* engine,
                                                        kvtier_device_ptr base, size_t bytes) {
  static constexpr char kFn[] = "kvtier_engine_register_device_memory";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    if (base == 0) return InvalidArgument(kFn, "base is 0");
    if (bytes == 0) return InvalidArgument(kFn, "bytes is 0");
    return FromStatus(
        kFn, engine->engine->RegisterDeviceMemory(kvtier::DevicePtr::FromAddress(base), bytes));
  });
}

kvtier_status_code kvtier_engine_unregister_device_memory(kvtier_engine* engine,
                                                          kvtier_device_ptr base) {
  static constexpr char kFn[] = "kvtier_engine_unregister_device_memory";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    if (base == 0) return InvalidArgument(kFn, "base is 0");
    return FromStatus(kFn,
                      engine->engine->UnregisterDeviceMemory(kvtier::DevicePtr::FromAddress(base)));
  });
}

// ---------------------------------------------------------------------------------- match

kvtier_status_code kvtier_match(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                size_t num_tokens, const void* extra, size_t extra_len,
                                size_t* out_matched_tokens, size_t* out_matched_blocks,
                                kvtier_block_key* keys, size_t keys_capacity, kvtier_tier* tiers) {
  static constexpr char kFn[] = "kvtier_match";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    if (kvtier_status_code c = CheckArray(kFn, tokens, "tokens", num_tokens, "num_tokens"))
      return c;
    if (kvtier_status_code c = CheckArray(kFn, extra, "extra", extra_len, "extra_len")) return c;
    KVTIER_REQUIRE_NONNULL(kFn, out_matched_tokens);
    KVTIER_REQUIRE_NONNULL(kFn, out_matched_blocks);
    if (kvtier_status_code c = CheckArray(kFn, keys, "keys", keys_capacity, "keys_capacity")) {
      return c;
    }
    absl::StatusOr<kvtier::MatchResult> m =
        engine->engine->Match(ns, absl::MakeConstSpan(tokens, num_tokens), Extra(extra, extra_len));
    if (!m.ok()) return FromStatus(kFn, m.status());
    const size_t n = std::min(keys_capacity, m->keys.size());
    for (size_t i = 0; i < n; ++i) {
      keys[i] = kvtier_block_key{m->keys[i].hi, m->keys[i].lo};
      if (tiers != nullptr) tiers[i] = static_cast<kvtier_tier>(m->tiers[i]);
    }
    *out_matched_tokens = m->matched_tokens;
    *out_matched_blocks = m->keys.size();
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_block_keys(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                     size_t num_tokens, const void* extra, size_t extra_len,
                                     kvtier_block_key* keys, size_t keys_capacity,
                                     size_t* out_num_keys) {
  static constexpr char kFn[] = "kvtier_block_keys";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    if (kvtier_status_code c = CheckArray(kFn, tokens, "tokens", num_tokens, "num_tokens"))
      return c;
    if (kvtier_status_code c = CheckArray(kFn, extra, "extra", extra_len, "extra_len")) return c;
    KVTIER_REQUIRE_NONNULL(kFn, out_num_keys);
    const kvtier::EngineOptions& o = engine->engine->options();
    const size_t n = num_tokens / o.geometry.block_tokens;
    if (keys_capacity < n) {
      return InvalidArgument(kFn, absl::StrFormat("keys_capacity is %d but the %d tokens hold %d "
                                                  "full blocks",
                                                  keys_capacity, num_tokens, n));
    }
    if (kvtier_status_code c = CheckArray(kFn, keys, "keys", n, "the number of blocks")) return c;
    bool known = false;
    for (const std::string& name : engine->engine->ListNamespaces()) known |= (name == ns);
    if (!known) {
      return Fail(absl::StatusCode::kNotFound,
                  absl::StrFormat("%s: namespace '%s' does not exist", kFn, ns));
    }
    const kvtier::KeyHasher hasher(o.key_hash, ns, o.model_fingerprint, o.geometry.Fingerprint());
    const std::vector<kvtier::BlockKey> computed = hasher.Keys(
        absl::MakeConstSpan(tokens, num_tokens), o.geometry.block_tokens, Extra(extra, extra_len));
    for (size_t i = 0; i < computed.size(); ++i) {
      keys[i] = kvtier_block_key{computed[i].hi, computed[i].lo};
    }
    *out_num_keys = computed.size();
    return KVTIER_OK;
  });
}

// ------------------------------------------------------------------------- store and load

kvtier_status_code kvtier_store(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                size_t num_tokens, const void* extra, size_t extra_len,
                                size_t first_block, const kvtier_device_ptr* blocks,
                                size_t num_blocks, kvtier_handle** out_handle) {
  static constexpr char kFn[] = "kvtier_store";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c =
            CheckStoreArgs(kFn, engine, ns, tokens, num_tokens, extra, extra_len)) {
      return c;
    }
    if (num_blocks == 0) return InvalidArgument(kFn, "num_blocks is 0");
    KVTIER_REQUIRE_NONNULL(kFn, blocks);
    KVTIER_REQUIRE_NONNULL(kFn, out_handle);
    std::unique_ptr<kvtier::TransferHandle> handle;
    if (kvtier_status_code c =
            DoStore(kFn, engine, ns, tokens, num_tokens, extra, extra_len, first_block,
                    kvtier::KvBuffers::Blocks(ToDevicePtrs(blocks, num_blocks)), &handle)) {
      return c;
    }
    return NewHandle(engine, std::move(handle), out_handle);
  });
}

kvtier_status_code kvtier_store_paged(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                      size_t num_tokens, const void* extra, size_t extra_len,
                                      size_t first_block, const kvtier_paged_pool* pool,
                                      const uint32_t* pages, size_t num_pages,
                                      kvtier_handle** out_handle) {
  static constexpr char kFn[] = "kvtier_store_paged";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c =
            CheckStoreArgs(kFn, engine, ns, tokens, num_tokens, extra, extra_len)) {
      return c;
    }
    kvtier::KvBuffers buffers;
    if (kvtier_status_code c = PagedBuffers(kFn, pool, pages, num_pages, &buffers)) return c;
    KVTIER_REQUIRE_NONNULL(kFn, out_handle);
    std::unique_ptr<kvtier::TransferHandle> handle;
    if (kvtier_status_code c = DoStore(kFn, engine, ns, tokens, num_tokens, extra, extra_len,
                                       first_block, std::move(buffers), &handle)) {
      return c;
    }
    return NewHandle(engine, std::move(handle), out_handle);
  });
}

kvtier_status_code kvtier_load(kvtier_engine* engine, const char* ns, const kvtier_block_key* keys,
                               size_t num_keys, const kvtier_device_ptr* blocks, int layerwise,
                               kvtier_handle** out_handle) {
  static constexpr char kFn[] = "kvtier_load";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c = CheckLoadArgs(kFn, engine, ns, keys, num_keys)) return c;
    KVTIER_REQUIRE_NONNULL(kFn, blocks);
    KVTIER_REQUIRE_NONNULL(kFn, out_handle);
    std::unique_ptr<kvtier::TransferHandle> handle;
    if (kvtier_status_code c = DoLoad(kFn, engine, ns, keys, num_keys,
                                      kvtier::KvBuffers::Blocks(ToDevicePtrs(blocks, num_keys)),
                                      layerwise != 0, &handle)) {
      return c;
    }
    return NewHandle(engine, std::move(handle), out_handle);
  });
}

kvtier_status_code kvtier_load_paged(kvtier_engine* engine, const char* ns,
                                     const kvtier_block_key* keys, size_t num_keys,
                                     const kvtier_paged_pool* pool, const uint32_t* pages,
                                     int layerwise, kvtier_handle** out_handle) {
  static constexpr char kFn[] = "kvtier_load_paged";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c = CheckLoadArgs(kFn, engine, ns, keys, num_keys)) return c;
    kvtier::KvBuffers buffers;
    if (kvtier_status_code c = PagedBuffers(kFn, pool, pages, num_keys, &buffers)) return c;
    KVTIER_REQUIRE_NONNULL(kFn, out_handle);
    std::unique_ptr<kvtier::TransferHandle> handle;
    if (kvtier_status_code c =
            DoLoad(kFn, engine, ns, keys, num_keys, std::move(buffers), layerwise != 0, &handle)) {
      return c;
    }
    return NewHandle(engine, std::move(handle), out_handle);
  });
}

kvtier_status_code kvtier_load_to_gpu_tier(kvtier_engine* engine, const char* ns,
                                           const kvtier_block_key* keys, size_t num_keys,
                                           int layerwise, uint64_t lease_timeout_ms,
                                           kvtier_handle** out_handle) {
  static constexpr char kFn[] = "kvtier_load_to_gpu_tier";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c = CheckLoadArgs(kFn, engine, ns, keys, num_keys)) return c;
    KVTIER_REQUIRE_NONNULL(kFn, out_handle);
    const std::vector<kvtier::BlockKey> list = ToKeys(keys, num_keys);
    absl::StatusOr<std::unique_ptr<kvtier::TransferHandle>> handle = engine->engine->LoadToGpuTier(
        ns, list, layerwise != 0, absl::Milliseconds(lease_timeout_ms));
    if (!handle.ok()) return FromStatus(kFn, handle.status());
    return NewHandle(engine, *std::move(handle), out_handle);
  });
}

kvtier_status_code kvtier_hint(kvtier_engine* engine, const char* ns, const kvtier_block_key* keys,
                               size_t num_keys, uint64_t* out_hint_id) {
  static constexpr char kFn[] = "kvtier_hint";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c = CheckLoadArgs(kFn, engine, ns, keys, num_keys)) return c;
    KVTIER_REQUIRE_NONNULL(kFn, out_hint_id);
    const std::vector<kvtier::BlockKey> list = ToKeys(keys, num_keys);
    absl::StatusOr<uint64_t> id = engine->engine->Hint(ns, list);
    if (!id.ok()) return FromStatus(kFn, id.status());
    *out_hint_id = *id;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_cancel_hint(kvtier_engine* engine, uint64_t hint_id,
                                      size_t* out_cancelled) {
  static constexpr char kFn[] = "kvtier_cancel_hint";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    absl::StatusOr<size_t> cancelled = engine->engine->CancelHint(hint_id);
    if (!cancelled.ok()) return FromStatus(kFn, cancelled.status());
    if (out_cancelled != nullptr) *out_cancelled = *cancelled;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_store_host(kvtier_engine* engine, const char* ns, const int32_t* tokens,
                                     size_t num_tokens, const void* extra, size_t extra_len,
                                     size_t first_block, size_t num_blocks, const void* data,
                                     size_t data_bytes, size_t* out_stored) {
  static constexpr char kFn[] = "kvtier_store_host";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c =
            CheckStoreArgs(kFn, engine, ns, tokens, num_tokens, extra, extra_len)) {
      return c;
    }
    if (num_blocks == 0) return InvalidArgument(kFn, "num_blocks is 0");
    const size_t block = engine->engine->options().geometry.block_bytes();
    if (kvtier_status_code c = CheckHostData(kFn, block, num_blocks, data, data_bytes)) return c;
    kvtier::Device& device = engine->engine->device();
    StagingBuffer staging(device);
    if (kvtier_status_code c = FromStatus(kFn, staging.Allocate(data_bytes))) return c;
    if (kvtier_status_code c =
            FromStatus(kFn, CopySync(device, staging.ptr(), nullptr, data, data_bytes))) {
      return c;
    }
    std::unique_ptr<kvtier::TransferHandle> handle;
    if (kvtier_status_code c = DoStore(
            kFn, engine, ns, tokens, num_tokens, extra, extra_len, first_block,
            kvtier::KvBuffers::Blocks(BlocksOf(staging.ptr(), num_blocks, block)), &handle)) {
      return c;
    }
    // The staging buffer is freed only after the copies out of it are done.
    if (kvtier_status_code c = FromStatus(kFn, handle->Wait())) return c;
    if (out_stored != nullptr) *out_stored = handle->blocks_moved();
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_load_host(kvtier_engine* engine, const char* ns,
                                    const kvtier_block_key* keys, size_t num_keys, void* data,
                                    size_t data_bytes) {
  static constexpr char kFn[] = "kvtier_load_host";
  return Guarded(kFn, [&] {
    if (kvtier_status_code c = CheckLoadArgs(kFn, engine, ns, keys, num_keys)) return c;
    const size_t block = engine->engine->options().geometry.block_bytes();
    if (kvtier_status_code c = CheckHostData(kFn, block, num_keys, data, data_bytes)) return c;
    kvtier::Device& device = engine->engine->device();
    StagingBuffer staging(device);
    if (kvtier_status_code c = FromStatus(kFn, staging.Allocate(data_bytes))) return c;
    std::unique_ptr<kvtier::TransferHandle> handle;
    if (kvtier_status_code c =
            DoLoad(kFn, engine, ns, keys, num_keys,
                   kvtier::KvBuffers::Blocks(BlocksOf(staging.ptr(), num_keys, block)),
                   /*layerwise=*/false, &handle)) {
      return c;
    }
    if (kvtier_status_code c = FromStatus(kFn, handle->Wait())) return c;
    return FromStatus(kFn, CopySync(device, staging.ptr(), data, nullptr, data_bytes));
  });
}

kvtier_status_code kvtier_erase(kvtier_engine* engine, const char* ns, const kvtier_block_key* keys,
                                size_t num_keys, size_t* out_erased) {
  static constexpr char kFn[] = "kvtier_erase";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    if (num_keys == 0) return InvalidArgument(kFn, "num_keys is 0");
    KVTIER_REQUIRE_NONNULL(kFn, keys);
    const std::vector<kvtier::BlockKey> list = ToKeys(keys, num_keys);
    absl::StatusOr<size_t> erased = engine->engine->Erase(ns, list);
    if (!erased.ok()) return FromStatus(kFn, erased.status());
    if (out_erased != nullptr) *out_erased = *erased;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_erase_namespace(kvtier_engine* engine, const char* ns,
                                          size_t* out_erased) {
  static constexpr char kFn[] = "kvtier_erase_namespace";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    absl::StatusOr<size_t> erased = engine->engine->EraseNamespace(ns);
    if (!erased.ok()) return FromStatus(kFn, erased.status());
    if (out_erased != nullptr) *out_erased = *erased;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_flush(kvtier_engine* engine) {
  static constexpr char kFn[] = "kvtier_flush";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    return FromStatus(kFn, engine->engine->Flush());
  });
}

// -------------------------------------------------------------------------------- handles

kvtier_status_code kvtier_handle_is_ready(kvtier_handle* handle, int* out_ready) {
  static constexpr char kFn[] = "kvtier_handle_is_ready";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, handle);
    KVTIER_REQUIRE_NONNULL(kFn, out_ready);
    *out_ready = handle->transfer->IsReady() ? 1 : 0;
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_handle_wait(kvtier_handle* handle) {
  static constexpr char kFn[] = "kvtier_handle_wait";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, handle);
    return FromStatus(kFn, handle->transfer->Wait());
  });
}

kvtier_status_code kvtier_handle_wait_layer(kvtier_handle* handle, uint32_t layer) {
  static constexpr char kFn[] = "kvtier_handle_wait_layer";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, handle);
    return FromStatus(kFn, handle->transfer->WaitLayerHost(layer));
  });
}

kvtier_status_code kvtier_handle_counts(kvtier_handle* handle, size_t* out_moved,
                                        size_t* out_present, size_t* out_rejected) {
  static constexpr char kFn[] = "kvtier_handle_counts";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, handle);
    if (out_moved != nullptr) *out_moved = handle->transfer->blocks_moved();
    if (out_present != nullptr) *out_present = handle->transfer->blocks_present();
    if (out_rejected != nullptr) *out_rejected = handle->transfer->blocks_rejected();
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_handle_slots(kvtier_handle* handle, kvtier_device_ptr* slots,
                                       size_t capacity, size_t* out_count) {
  static constexpr char kFn[] = "kvtier_handle_slots";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, handle);
    if (kvtier_status_code c = CheckArray(kFn, slots, "slots", capacity, "capacity")) return c;
    KVTIER_REQUIRE_NONNULL(kFn, out_count);
    const absl::Span<const kvtier::DevicePtr> all = handle->transfer->slots();
    const size_t n = std::min(capacity, all.size());
    for (size_t i = 0; i < n; ++i) slots[i] = all[i].address();
    *out_count = all.size();
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_handle_release(kvtier_handle* handle) {
  static constexpr char kFn[] = "kvtier_handle_release";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, handle);
    return FromStatus(kFn, handle->transfer->Release());
  });
}

void kvtier_handle_destroy(kvtier_handle* handle) {
  if (handle == nullptr) return;
  kvtier_engine* owner = handle->owner;
  delete handle;
  owner->live_handles.fetch_sub(1, std::memory_order_release);
}

// ---------------------------------------------------------------------------------- stats

kvtier_status_code kvtier_engine_stats(kvtier_engine* engine, kvtier_stats* out_stats) {
  static constexpr char kFn[] = "kvtier_engine_stats";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, out_stats);
    if (absl::Status s =
            kvtier::capi::CheckStructSize(out_stats->struct_size, KVTIER_STATS_SIZE_MIN,
                                          "out_stats->struct_size", "kvtier_stats");
        !s.ok()) {
      return FromStatus(kFn, s);
    }
    kvtier::EngineStats s = engine->engine->Stats();
    s.block_bytes = engine->engine->options().geometry.block_bytes();
    kvtier_stats full;
    kvtier::capi::FillStats(s, &full);
    kvtier::capi::CopyOut(&full, sizeof(full), out_stats);
    return KVTIER_OK;
  });
}

kvtier_status_code kvtier_namespace_stats_get(kvtier_engine* engine, const char* ns,
                                              kvtier_namespace_stats* out_stats) {
  static constexpr char kFn[] = "kvtier_namespace_stats_get";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, ns);
    KVTIER_REQUIRE_NONNULL(kFn, out_stats);
    if (absl::Status s =
            kvtier::capi::CheckStructSize(out_stats->struct_size, KVTIER_NAMESPACE_STATS_SIZE_MIN,
                                          "out_stats->struct_size", "kvtier_namespace_stats");
        !s.ok()) {
      return FromStatus(kFn, s);
    }
    const kvtier::EngineStats s = engine->engine->Stats();
    for (size_t i = 0; i < s.namespaces.size(); ++i) {
      if (s.namespaces[i].name != ns) continue;
      kvtier_namespace_stats full;
      kvtier::capi::FillNamespaceStats(s, i, &full);
      kvtier::capi::CopyOut(&full, sizeof(full), out_stats);
      return KVTIER_OK;
    }
    return Fail(absl::StatusCode::kNotFound,
                absl::StrFormat("%s: namespace '%s' does not exist", kFn, ns));
  });
}

kvtier_status_code kvtier_remote_node_stats_get(kvtier_engine* engine, size_t index,
                                                kvtier_remote_node_stats* out_stats) {
  static constexpr char kFn[] = "kvtier_remote_node_stats_get";
  return Guarded(kFn, [&] {
    KVTIER_REQUIRE_NONNULL(kFn, engine);
    KVTIER_REQUIRE_NONNULL(kFn, out_stats);
    if (absl::Status s =
            kvtier::capi::CheckStructSize(out_stats->struct_size, KVTIER_REMOTE_NODE_STATS_SIZE_MIN,
                                          "out_stats->struct_size", "kvtier_remote_node_stats");
        !s.ok()) {
      return FromStatus(kFn, s);
    }
    const kvtier::EngineStats s = engine->engine->Stats();
    const size_t count = s.remote.nodes.size();
    if (index >= count) {
      return Fail(
          absl::StatusCode::kOutOfRange,
          absl::StrFormat("%s: index %d is past the %d remote node(s) the engine knows%s", kFn,
                          index, count, s.remote.enabled == 0 ? " (it has no remote tier)" : ""));
    }
    kvtier_remote_node_stats full;
    kvtier::capi::FillRemoteNodeStats(s, index, &full);
    kvtier::capi::CopyOut(&full, sizeof(full), out_stats);
    return KVTIER_OK;
  });
}

}  // extern "C"
