// fuzz/fuzz_c_api.cc — the C API (include/kvtier/c_api.h) driven by a fuzzer-written program.
//
// The input is a sequence of calls with fuzzer-chosen arguments: NULL pointers, zero and
// mismatched lengths, namespaces that exist, do not, or are not valid names, keys that were
// never stored, device addresses off the end of or inside buffers, layers past the last,
// handles in every state. Each input runs on an engine of its own (emulated device,
// unthrottled, a tiny geometry and tiers of a few blocks, no disk), so an input replays
// alone.
//
// The properties checked on every call:
//   * it returns a kvtier_status_code inside the enum, never crashes (ASan + UBSan watch);
//   * kvtier_last_error() is "" after KVTIER_OK and a message naming the function otherwise;
//   * a call with a NULL required pointer, or a zero count where one is required, fails with
//     KVTIER_INVALID_ARGUMENT;
//   * data round trips are byte-exact: every block the harness stores holds bytes derived
//     from its key, so a load (host memory, device buffers, or managed GPU-tier slots) that
//     succeeds must return exactly those bytes, and never blocks of another namespace;
//   * kvtier_engine_close refuses while handles are alive, and succeeds once they are gone.
//
// Also device memory the caller registers (host memory on the emulated device), namespace
// limits (quotas and TTLs, at open and on a live engine) and secure erase.
//
// Options: the opened engine's options come from a small, valid range chosen by the input,
// then setter calls with arbitrary arguments; when those make kvtier_engine_open fail it must
// say why, and the harness opens a baseline engine instead. Setters given arguments the
// emulated machine could not honour (tier sizes of terabytes, a disk directory) are applied
// to a second options object that is only validated, never opened: allocating a terabyte, or
// creating directories at fuzzer-chosen paths, would test the machine, not kvtier.

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/c_api_shim.h"
#include "kvtier/c_api.h"

namespace {

using kvtier::fuzz::Input;

// The geometry's block size is capped so that host copies of a few blocks stay small.
constexpr size_t kMaxBlockBytes = 4096;
constexpr size_t kMaxBlocksPerCall = 6;
constexpr size_t kMaxTokens = 40;
constexpr int kMaxOps = 48;

// Names the fuzzer picks from: existing ones, valid but not created, and invalid ones.
const char* const kNamespaces[] = {
    "default", "a", "b", "tenant-x", "",
    "has space", "new.ns@1", "zz",
    ("0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
     "890123456789012345678901234567890123456789x")};  // 130 bytes: too long
constexpr size_t kNumNamespaces = sizeof(kNamespaces) / sizeof(kNamespaces[0]);
const char* const kPolicies[] = {"lru",     "fifo", "clock",    "sieve", "s3fifo", "arc",
                                 "tinylfu", "lfu",  "adaptive", "",      "nope"};
constexpr size_t kNumPolicies = sizeof(kPolicies) / sizeof(kPolicies[0]);

// KVTIER_FUZZ_TRACE=1 prints every call and its result (to read what an input does).
const bool kTrace = std::getenv("KVTIER_FUZZ_TRACE") != nullptr;

// Checks the error-reporting contract of one call's result; returns it.
kvtier_status_code Checked(kvtier_status_code c, const char* fn) {
  if (kTrace) {
    std::fprintf(stderr, "%10.6f %s -> %s %s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
                     .count(),
                 fn, kvtier_status_code_name(c), kvtier_last_error());
  }
  KVTIER_FUZZ_CHECK(c >= KVTIER_OK && c <= KVTIER_UNAUTHENTICATED,
                    absl::StrCat(fn, " returned ", static_cast<int>(c)));
  const std::string message = kvtier_last_error();
  if (c == KVTIER_OK) {
    KVTIER_FUZZ_CHECK(message.empty(), absl::StrCat(fn, " succeeded but left '", message, "'"));
  } else {
    KVTIER_FUZZ_CHECK(absl::StrContains(message, fn),
                      absl::StrCat(fn, " failed (", kvtier_status_code_name(c),
                                   ") with a message that does not name it: '", message, "'"));
  }
  return c;
}
#define CALL(fn, ...) Checked(fn(__VA_ARGS__), #fn)

// A failed call whose argument error the harness knows about must say InvalidArgument.
void ExpectInvalid(kvtier_status_code c, bool bad_argument, const char* what) {
  if (bad_argument) {
    KVTIER_FUZZ_CHECK(c == KVTIER_INVALID_ARGUMENT,
                      absl::StrCat(what, ": bad argument accepted or misreported as ",
                                   kvtier_status_code_name(c), ": ", kvtier_last_error()));
  }
}

// The bytes of a block are a function of its key: a load that returns another block's bytes,
// or stale bytes, cannot match.
void FillBlock(const kvtier_block_key& key, uint8_t* out, size_t bytes) {
  uint64_t x = key.hi ^ (key.lo * 0x9E3779B97F4A7C15ULL);
  for (size_t i = 0; i < bytes; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<uint8_t>(x);
  }
}
bool BlockMatches(const kvtier_block_key& key, const uint8_t* data, size_t bytes) {
  std::vector<uint8_t> expected(bytes);
  FillBlock(key, expected.data(), bytes);
  return std::memcmp(expected.data(), data, bytes) == 0;
}

struct KnownKey {
  kvtier_block_key key;
  std::string ns;  // the namespace it was computed for
};

struct Buffer {
  kvtier_device_ptr ptr;
  size_t bytes;
  // Memory the harness owns and registered (kvtier_engine_register_device_memory), not
  // memory from kvtier_buffer_alloc.
  bool registered = false;
};

class Harness {
 public:
  explicit Harness(Input& in) : in_(in) {}

  ~Harness() {
    for (kvtier_handle* h : handles_) kvtier_handle_destroy(h);
    handles_.clear();
    if (engine_ != nullptr) {
      const kvtier_status_code c = CALL(kvtier_engine_close, engine_);
      KVTIER_FUZZ_CHECK(c == KVTIER_OK, "close with no handles alive failed");
    }
    kvtier_options_destroy(scratch_);
  }

  void Run() {
    OpenFromInput();
    for (int op = 0; op < kMaxOps && !in_.empty(); ++op) Step();
  }

 private:
  // ------------------------------------------------------------------ argument choices

  const char* Namespace() {
    const uint8_t pick = in_.U8();
    if (pick % 16 == 15) return nullptr;
    return kNamespaces[pick % kNumNamespaces];
  }
  // Tokens of a small alphabet (so prompts share prefixes) or NULL.
  std::vector<int32_t> Tokens() {
    const size_t n = in_.Below(kMaxTokens + 1);
    std::vector<int32_t> t(n);
    const int32_t alphabet = 1 + static_cast<int32_t>(in_.U8() % 4);
    for (int32_t& v : t) v = static_cast<int32_t>(in_.U8()) % alphabet;
    return t;
  }
  kvtier_block_key AnyKey() {
    if (!known_.empty() && in_.U8() % 4 != 0) return known_[in_.Below(known_.size())].key;
    return kvtier_block_key{in_.U64(), in_.U64()};
  }
  std::vector<kvtier_block_key> Keys() {
    std::vector<kvtier_block_key> keys(in_.Below(kMaxBlocksPerCall + 1));
    for (auto& k : keys) k = AnyKey();
    return keys;
  }
  // A device address: a buffer's start, somewhere inside or past it, or junk.
  kvtier_device_ptr Address() {
    const uint8_t pick = in_.U8() % 8;
    if (pick < 5 && !buffers_.empty()) {
      const Buffer& b = buffers_[in_.Below(buffers_.size())];
      return pick < 3 ? b.ptr : b.ptr + in_.Below(b.bytes + 64);
    }
    if (pick == 5) return 0;
    return in_.U64();
  }
  kvtier_handle* AnyHandle() {
    if (handles_.empty() || in_.U8() % 8 == 0) return nullptr;
    return handles_[in_.Below(handles_.size())];
  }

  // ------------------------------------------------------------------------- options

  void SetBaseline(kvtier_options* o, uint32_t layers, uint32_t heads, uint32_t dim,
                   uint32_t block_tokens, uint64_t host_blocks, uint64_t gpu_blocks) {
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_set_geometry, o, layers, heads, dim,
                           KVTIER_DTYPE_FLOAT16, block_tokens) == KVTIER_OK,
                      "baseline geometry");
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_set_model_fingerprint, o, "fuzz@1") == KVTIER_OK,
                      "baseline fingerprint");
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_set_device, o, KVTIER_DEVICE_EMULATED, 0, 0.0) ==
                          KVTIER_OK,
                      "baseline device");
    const uint64_t block = uint64_t{layers} * 2 * heads * dim * 2 * block_tokens;
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_set_tier_bytes, o, gpu_blocks * block,
                           host_blocks * block) == KVTIER_OK,
                      "baseline tiers");
    const char* names[] = {"default", "a", "b"};
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_set_namespaces, o, names, 3) == KVTIER_OK,
                      "baseline namespaces");
  }

  // One setter with fuzzer arguments. `wild` sends arguments the machine could not honour
  // to the scratch options (validated, never opened).
  void SetOption(kvtier_options* opened) {
    const uint8_t which = in_.U8() % 15;
    const bool wild = in_.U8() % 4 == 0;
    kvtier_options* o = in_.U8() % 16 == 0 ? nullptr : (wild ? scratch_ : opened);
    kvtier_status_code c = KVTIER_OK;
    switch (which) {
      case 0: {
        const uint32_t layers = wild ? in_.U32() : in_.U8() % 5;
        const uint32_t heads = wild ? in_.U32() : in_.U8() % 3;
        const uint32_t dim = wild ? in_.U32() : in_.U8() % 17;
        const int dtype = in_.U8() % 7;  // 1..5 are kvtier_dtype values (4, 5: fp8)
        const uint32_t bt = wild ? in_.U32() : in_.U8() % 9;
        c = Checked(kvtier_fuzz_set_geometry(o, layers, heads, dim, dtype, bt),
                    "kvtier_options_set_geometry");
        ExpectInvalid(c, o == nullptr || layers == 0 || heads == 0 || dim == 0 || bt == 0 ||
                             dtype == 0 || dtype == 6,
                      "set_geometry");
        break;
      }
      case 1: {
        const uint8_t pick = in_.U8() % 3;
        c = CALL(kvtier_options_set_model_fingerprint, o,
                 pick == 0 ? nullptr : pick == 1 ? "" : "model@2");
        ExpectInvalid(c, o == nullptr || pick < 2, "set_model_fingerprint");
        break;
      }
      case 2: {
        const int hash = in_.U8() % 4;
        c = Checked(kvtier_fuzz_set_key_hash(o, hash), "kvtier_options_set_key_hash");
        ExpectInvalid(c, o == nullptr || hash == 0 || hash == 3, "set_key_hash");
        break;
      }
      case 3: {
        const uint64_t gpu = wild ? in_.U64() : in_.U16();
        const uint64_t host = wild ? in_.U64() : in_.U16();
        c = CALL(kvtier_options_set_tier_bytes, o, gpu, host);
        ExpectInvalid(c, o == nullptr || host == 0, "set_tier_bytes");
        break;
      }
      case 4: {
        // Always the scratch options: opening would create the directory.
        const uint8_t pick = in_.U8() % 3;
        kvtier_options* s = o == nullptr ? nullptr : scratch_;
        const uint64_t capacity = in_.U64();
        c = CALL(kvtier_options_set_disk, s,
                 pick == 0 ? nullptr : pick == 1 ? "" : "/nonexistent/kvtier-fuzz", capacity);
        ExpectInvalid(c, s == nullptr || pick < 2 || capacity == 0, "set_disk");
        break;
      }
      case 5: {
        kvtier_options* s = o == nullptr ? nullptr : scratch_;
        const uint64_t region = in_.Bool() ? in_.U64() : uint64_t{in_.U8()} * 4096;
        c = CALL(kvtier_options_set_disk_region_bytes, s, region);
        ExpectInvalid(c, s == nullptr || region == 0 || region % 4096 != 0, "set_disk_region");
        break;
      }
      case 6: {
        const uint32_t seen = in_.U8() % 4;
        c = CALL(kvtier_options_set_disk_admit_min_seen, o, seen);
        ExpectInvalid(c, o == nullptr || seen == 0, "set_disk_admit_min_seen");
        // Group access: any int is a valid flag; only a null options is refused.
        c = CALL(kvtier_options_set_disk_group_access, o, static_cast<int>(in_.U8()) - 128);
        ExpectInvalid(c, o == nullptr, "set_disk_group_access");
        break;
      }
      case 7: {
        const int kind = in_.U8() % 4;
        const double gbps_choices[] = {0.0, -1.0, std::nan(""),
                                       std::numeric_limits<double>::infinity(), 1000.0};
        const double gbps = gbps_choices[in_.U8() % 5];
        // Only the emulated device is opened: a throttle or CUDA goes to the scratch options.
        kvtier_options* target =
            o == nullptr ? nullptr : (kind == KVTIER_DEVICE_EMULATED && gbps == 0.0 ? o : scratch_);
        c = Checked(kvtier_fuzz_set_device(target, kind, static_cast<int>(in_.U8()) - 1, gbps),
                    "kvtier_options_set_device");
        ExpectInvalid(c, target == nullptr || kind == 3, "set_device");
        break;
      }
      case 8: {
        const char* gpu = in_.U8() % 8 == 0 ? nullptr : kPolicies[in_.U8() % kNumPolicies];
        const char* host = in_.U8() % 8 == 0 ? nullptr : kPolicies[in_.U8() % kNumPolicies];
        c = CALL(kvtier_options_set_eviction, o, gpu, host);
        ExpectInvalid(c, o == nullptr || gpu == nullptr || host == nullptr, "set_eviction");
        break;
      }
      case 9: {
        std::vector<const char*> names(in_.U8() % 4);
        for (const char*& n : names) n = Namespace();
        const bool null_array = in_.U8() % 8 == 0;
        bool has_null = false;
        for (const char* n : names) has_null |= n == nullptr;
        c = CALL(kvtier_options_set_namespaces, o, null_array ? nullptr : names.data(),
                 names.size());
        ExpectInvalid(c, o == nullptr || (null_array && !names.empty()) || (!null_array && has_null),
                      "set_namespaces");
        break;
      }
      case 10: {
        const uint64_t ms = in_.U8() % 3 == 0 ? in_.U64() : in_.U8();
        c = CALL(kvtier_options_set_lease_timeout_ms, o, ms);
        if (c == KVTIER_OK && o == opened && ms < 600000) short_leases_ = true;
        ExpectInvalid(c, o == nullptr || ms == 0, "set_lease_timeout_ms");
        break;
      }
      case 11:
        c = CALL(kvtier_options_validate, o);
        ExpectInvalid(c, o == nullptr, "validate");
        break;
      case 12: {
        // Quotas below one block make the open fail (and the harness open its baseline).
        const char* ns = Namespace();
        const kvtier_namespace_limits limits = Limits();
        const bool null_limits = in_.U8() % 8 == 0;
        c = CALL(kvtier_options_set_namespace_limits, o, ns, null_limits ? nullptr : &limits);
        ExpectInvalid(c, o == nullptr || ns == nullptr || null_limits,
                      "options_set_namespace_limits");
        break;
      }
      case 13:
        c = CALL(kvtier_options_set_secure_erase, o, static_cast<int>(in_.U8() % 3));
        ExpectInvalid(c, o == nullptr, "set_secure_erase");
        break;
      case 14:
        // Model shapes: an MLA latent (valid only for a one-head geometry, rope_dim below
        // head_dim) or a tensor-parallel rank (shards a K/V geometry; refused once sharded).
        if (in_.Bool()) {
          const uint32_t rope = wild ? in_.U32() : in_.U8() % 20;
          c = CALL(kvtier_options_set_latent, o, rope);
          ExpectInvalid(c, o == nullptr, "set_latent");
        } else {
          const uint32_t size = wild ? in_.U32() : in_.U8() % 5;
          const uint32_t rank = wild ? in_.U32() : in_.U8() % 5;
          const uint32_t store = in_.U8() % 5;
          c = CALL(kvtier_options_set_tensor_parallel, o, rank, size, store);
          ExpectInvalid(c, o == nullptr || size == 0 || rank >= size || store >= size,
                        "set_tensor_parallel");
        }
        break;
    }
  }

  // Namespace limits: no limit, whole blocks, arbitrary small or huge byte counts; a TTL of
  // none, a few milliseconds (blocks expire under the harness) or anything.
  kvtier_namespace_limits Limits() {
    auto quota = [&]() -> uint64_t {
      switch (in_.U8() % 4) {
        case 0:
          return 0;
        case 1:
          return uint64_t{block_bytes_ == 0 ? 64 : block_bytes_} * (1 + in_.U8() % 8);
        case 2:
          return in_.U16();
        default:
          return in_.U64();
      }
    };
    kvtier_namespace_limits limits;
    limits.gpu_bytes = quota();
    limits.host_bytes = quota();
    limits.disk_bytes = quota();
    const uint8_t ttl = in_.U8() % 4;
    limits.ttl_ms = ttl == 0 ? 0 : ttl == 1 ? 1 + in_.U8() : ttl == 2 ? in_.U32() : in_.U64();
    return limits;
  }

  void OpenFromInput() {
    kvtier_options_destroy(scratch_);  // a reopen starts from fresh scratch options too
    scratch_ = nullptr;
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_create, &scratch_) == KVTIER_OK, "options_create");
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_create, nullptr) == KVTIER_INVALID_ARGUMENT,
                      "options_create(NULL)");
    kvtier_options* o = nullptr;
    KVTIER_FUZZ_CHECK(CALL(kvtier_options_create, &o) == KVTIER_OK, "options_create");
    const uint32_t layers = 1 + in_.U8() % 3;
    const uint32_t heads = 1 + in_.U8() % 2;
    const uint32_t dim = 1 + in_.U8() % 8;
    const uint32_t block_tokens = 1 + in_.U8() % 4;
    const uint64_t host_blocks = 1 + in_.U8() % 8;
    const uint64_t gpu_blocks = in_.U8() % 4;
    SetBaseline(o, layers, heads, dim, block_tokens, host_blocks, gpu_blocks);
    const int setters = in_.U8() % 4;
    for (int i = 0; i < setters; ++i) SetOption(o);
    kvtier_status_code c = CALL(kvtier_engine_open, o, &engine_);
    if (c != KVTIER_OK) {
      KVTIER_FUZZ_CHECK(engine_ == nullptr, "a failed open wrote its out-parameter");
      kvtier_options_destroy(o);
      KVTIER_FUZZ_CHECK(CALL(kvtier_options_create, &o) == KVTIER_OK, "options_create");
      SetBaseline(o, layers, heads, dim, block_tokens, host_blocks, gpu_blocks);
      c = CALL(kvtier_engine_open, o, &engine_);
      KVTIER_FUZZ_CHECK(c == KVTIER_OK, absl::StrCat("baseline open failed: ", kvtier_last_error()));
    }
    KVTIER_FUZZ_CHECK(CALL(kvtier_engine_open, o, nullptr) == KVTIER_INVALID_ARGUMENT,
                      "open(NULL out)");
    kvtier_options_destroy(o);  // the engine copied them
    KVTIER_FUZZ_CHECK(CALL(kvtier_engine_block_bytes, engine_, &block_bytes_) == KVTIER_OK,
                      "block_bytes");
    KVTIER_FUZZ_CHECK(block_bytes_ > 0, "block_bytes is 0");
  }

  // Reads `count` bytes from the device into host memory; false when the read fails.
  bool ReadDevice(kvtier_device_ptr src, uint8_t* dst, size_t count) {
    return CALL(kvtier_buffer_read, engine_, dst, src, count) == KVTIER_OK;
  }

  // -------------------------------------------------------------------------- operations

  void Step() {
    switch (in_.U8() % 23) {
      case 0:
        return OpCreateNamespace();
      case 1:
        return OpBufferAlloc();
      case 2:
        return OpBufferFree();
      case 3:
        return OpBufferWriteRead();
      case 4:
        return OpBlockKeys();
      case 5:
        return OpMatch();
      case 6:
      case 7:
        return OpStoreHost();
      case 8:
      case 9:
        return OpLoadHost();
      case 10:
        return OpStoreDevice();
      case 11:
        return OpLoadDevice();
      case 12:
        return OpLoadToGpuTier();
      case 13:
        return OpPaged();
      case 14:
        return OpHint();
      case 15:
        return OpErase();
      case 16:
        return OpHandle();
      case 17:
        return OpStats();
      case 18:
        return OpFlushOrClose();
      case 19:
        return OpNullEngine();
      case 20:
        return OpRegisterMemory();
      case 21:
        return OpUnregisterMemory();
      case 22:
        return OpSetNamespaceLimits();
    }
  }

  // Host memory of the harness registered as device memory (the emulated device's device
  // memory is host memory), or bad arguments: address 0, no bytes, a range overlapping a
  // buffer or an earlier registration, a base registered already. Registered ranges join
  // buffers_, so stores, loads and buffer reads and writes use them like allocated buffers.
  void OpRegisterMemory() {
    const uint8_t pick = in_.U8() % 8;
    if (pick == 0 || pick == 1) {
      const kvtier_status_code c = CALL(kvtier_engine_register_device_memory, engine_,
                                        pick == 0 ? 0 : in_.U64() | 1, pick == 0 ? 64 : 0);
      ExpectInvalid(c, true, "register_device_memory(0 base or 0 bytes)");
      return;
    }
    if (pick == 2 && !buffers_.empty()) {
      const Buffer& b = buffers_[in_.Below(buffers_.size())];
      const kvtier_device_ptr base = b.ptr + in_.Below(b.bytes);
      const size_t bytes = 1 + in_.Below(2 * b.bytes);
      const kvtier_status_code c =
          CALL(kvtier_engine_register_device_memory, engine_, base, bytes);
      KVTIER_FUZZ_CHECK(c == KVTIER_INVALID_ARGUMENT || c == KVTIER_ALREADY_EXISTS,
                        absl::StrCat("registering a range that overlaps a buffer gave ",
                                     kvtier_status_code_name(c)));
      KVTIER_FUZZ_CHECK(c != KVTIER_ALREADY_EXISTS || (b.registered && base == b.ptr),
                        "ALREADY_EXISTS for a base that was not registered");
      return;
    }
    if (owned_.size() >= 8) return;
    const size_t bytes = block_bytes_ * (1 + in_.Below(kMaxBlocksPerCall)) + in_.U8() % 3;
    auto memory = std::make_unique<uint8_t[]>(bytes);
    const kvtier_device_ptr base = reinterpret_cast<uintptr_t>(memory.get());
    owned_.push_back(std::move(memory));
    kvtier_status_code c = CALL(kvtier_engine_register_device_memory, engine_, base, bytes);
    KVTIER_FUZZ_CHECK(c == KVTIER_OK, absl::StrCat("registering fresh memory failed: ",
                                                   kvtier_last_error()));
    buffers_.push_back({base, bytes, /*registered=*/true});
    if (in_.Bool()) {
      c = CALL(kvtier_engine_register_device_memory, engine_, base, bytes);
      KVTIER_FUZZ_CHECK(c == KVTIER_ALREADY_EXISTS, "registering the same base twice");
    }
  }

  // A registered base (OK, or FAILED_PRECONDITION while a transfer in it is in flight), or
  // another address (refused).
  void OpUnregisterMemory() {
    std::vector<size_t> registered;
    for (size_t i = 0; i < buffers_.size(); ++i) {
      if (buffers_[i].registered) registered.push_back(i);
    }
    const kvtier_device_ptr base = !registered.empty() && in_.U8() % 4 != 0
                                       ? buffers_[registered[in_.Below(registered.size())]].ptr
                                       : Address();
    if (!registered.empty() && in_.U8() % 4 == 0) {
      // Settle every transfer first, so the unregistration cannot be refused as in flight.
      for (kvtier_handle* h : handles_) (void)CALL(kvtier_handle_wait, h);
    }
    const kvtier_status_code c = CALL(kvtier_engine_unregister_device_memory, engine_, base);
    for (size_t i : registered) {
      if (buffers_[i].ptr != base) continue;
      KVTIER_FUZZ_CHECK(c == KVTIER_OK || c == KVTIER_FAILED_PRECONDITION,
                        absl::StrCat("unregistering a registered base gave ",
                                     kvtier_status_code_name(c), ": ", kvtier_last_error()));
      if (c == KVTIER_OK) buffers_.erase(buffers_.begin() + static_cast<ptrdiff_t>(i));
      return;
    }
    KVTIER_FUZZ_CHECK(c != KVTIER_OK, "unregistering an address never registered succeeded");
  }

  void OpSetNamespaceLimits() {
    const char* ns = Namespace();
    const kvtier_namespace_limits limits = Limits();
    const bool null_limits = in_.U8() % 8 == 0;
    const kvtier_status_code c =
        CALL(kvtier_set_namespace_limits, engine_, ns, null_limits ? nullptr : &limits);
    ExpectInvalid(c, ns == nullptr || null_limits, "set_namespace_limits");
  }

  void OpCreateNamespace() {
    const char* ns = Namespace();
    const kvtier_status_code c = CALL(kvtier_create_namespace, engine_, ns);
    ExpectInvalid(c, ns == nullptr, "create_namespace");
  }

  void OpBufferAlloc() {
    const size_t bytes = in_.Bool() ? block_bytes_ * in_.Below(kMaxBlocksPerCall + 1)
                                    : in_.Below(3 * kMaxBlockBytes);
    kvtier_device_ptr p = 0;
    const bool null_out = in_.U8() % 16 == 0;
    const kvtier_status_code c =
        CALL(kvtier_buffer_alloc, engine_, bytes, null_out ? nullptr : &p);
    ExpectInvalid(c, bytes == 0 || null_out, "buffer_alloc");
    if (c == KVTIER_OK) {
      KVTIER_FUZZ_CHECK(p != 0, "buffer_alloc returned address 0");
      buffers_.push_back({p, bytes});
    }
  }

  void OpBufferFree() {
    const bool known = !buffers_.empty() && in_.U8() % 4 != 0;
    const size_t index = known ? in_.Below(buffers_.size()) : 0;
    const kvtier_device_ptr p = known ? buffers_[index].ptr : Address();
    const kvtier_status_code c = CALL(kvtier_buffer_free, engine_, p);
    if (known && buffers_[index].registered) {
      ExpectInvalid(c, true, "buffer_free of registered memory");
    } else if (known) {
      KVTIER_FUZZ_CHECK(c == KVTIER_OK, "freeing a live buffer failed");
      buffers_.erase(buffers_.begin() + static_cast<ptrdiff_t>(index));
    } else {
      bool live = false;
      for (const Buffer& b : buffers_) live |= b.ptr == p && !b.registered;
      if (live) {
        for (size_t i = 0; i < buffers_.size(); ++i) {
          if (buffers_[i].ptr == p && !buffers_[i].registered) {
            KVTIER_FUZZ_CHECK(c == KVTIER_OK, "freeing a live buffer failed");
            buffers_.erase(buffers_.begin() + static_cast<ptrdiff_t>(i));
            break;
          }
        }
      } else {
        ExpectInvalid(c, true, "buffer_free of an address never allocated");
      }
    }
  }

  // Writes fuzzer bytes to some address and reads them back: byte-exact when both succeed
  // on a range inside one buffer; refused when the range is not inside one.
  void OpBufferWriteRead() {
    const kvtier_device_ptr dst = Address();
    const size_t bytes = in_.Below(2 * kMaxBlockBytes);
    std::vector<uint8_t> src(bytes + 1);
    for (size_t i = 0; i < bytes; ++i) src[i] = static_cast<uint8_t>(i * 31 + dst);
    const bool null_src = in_.U8() % 16 == 0;
    kvtier_status_code c =
        CALL(kvtier_buffer_write, engine_, dst, null_src ? nullptr : src.data(), bytes);
    ExpectInvalid(c, dst == 0 || null_src || bytes == 0, "buffer_write");
    bool inside = false;
    for (const Buffer& b : buffers_) {
      inside |= dst >= b.ptr && dst - b.ptr <= b.bytes && bytes <= b.bytes - (dst - b.ptr);
    }
    if (!inside && c == KVTIER_OK) {
      KVTIER_FUZZ_CHECK(false, "buffer_write outside every buffer succeeded");
    }
    if (c != KVTIER_OK) return;
    std::vector<uint8_t> back(bytes, 0);
    c = CALL(kvtier_buffer_read, engine_, back.data(), dst, bytes);
    KVTIER_FUZZ_CHECK(c == KVTIER_OK, "reading back what was just written failed");
    KVTIER_FUZZ_CHECK(std::memcmp(back.data(), src.data(), bytes) == 0,
                      "buffer write/read round trip changed bytes");
  }

  // The keys of a prompt, remembered for later calls. Returns the keys (empty on failure).
  std::vector<kvtier_block_key> ComputeKeys(const char* ns, const std::vector<int32_t>& tokens,
                                            bool remember) {
    if (ns == nullptr) return {};
    std::vector<kvtier_block_key> keys(tokens.size() + 1);
    size_t n = 0;
    const kvtier_status_code c = CALL(kvtier_block_keys, engine_, ns, tokens.data(),
                                      tokens.size(), nullptr, 0, keys.data(), keys.size(), &n);
    if (c != KVTIER_OK) return {};
    keys.resize(n);
    if (remember) {
      for (const kvtier_block_key& k : keys) known_.push_back({k, ns});
      if (known_.size() > 256) known_.erase(known_.begin(), known_.begin() + 128);
    }
    return keys;
  }

  void OpBlockKeys() {
    const char* ns = Namespace();
    const std::vector<int32_t> tokens = Tokens();
    const bool null_tokens = !tokens.empty() && in_.U8() % 8 == 0;
    const size_t capacity = in_.Below(tokens.size() + 2);
    std::vector<kvtier_block_key> keys(capacity + 1);
    size_t n = 0;
    const bool null_out = in_.U8() % 16 == 0;
    const kvtier_status_code c =
        CALL(kvtier_block_keys, engine_, ns, null_tokens ? nullptr : tokens.data(), tokens.size(),
             nullptr, 0, keys.data(), capacity, null_out ? nullptr : &n);
    ExpectInvalid(c, ns == nullptr || null_tokens || null_out, "block_keys");
    if (c == KVTIER_OK) {
      KVTIER_FUZZ_CHECK(n <= capacity, "block_keys wrote more keys than its capacity");
      for (size_t i = 0; i < n; ++i) known_.push_back({keys[i], ns});
    }
  }

  void OpMatch() {
    const char* ns = Namespace();
    const std::vector<int32_t> tokens = Tokens();
    const bool null_tokens = !tokens.empty() && in_.U8() % 8 == 0;
    const size_t capacity = in_.Below(kMaxBlocksPerCall + 1);
    std::vector<kvtier_block_key> keys(capacity);
    std::vector<kvtier_tier> tiers(capacity);
    const std::string extra(in_.U8() % 3, 'e');
    size_t matched_tokens = 0, matched_blocks = 0;
    const kvtier_status_code c =
        CALL(kvtier_match, engine_, ns, null_tokens ? nullptr : tokens.data(), tokens.size(),
             extra.empty() ? nullptr : extra.data(), extra.size(), &matched_tokens,
             &matched_blocks, capacity == 0 ? nullptr : keys.data(), capacity,
             in_.Bool() ? nullptr : tiers.data());
    ExpectInvalid(c, ns == nullptr || null_tokens, "match");
    if (c != KVTIER_OK) return;
    KVTIER_FUZZ_CHECK(matched_tokens <= tokens.size(), "matched more tokens than given");
    if (!extra.empty()) return;
    // Matched keys are the prompt's keys, of this namespace.
    const std::vector<kvtier_block_key> expected = ComputeKeys(ns, tokens, false);
    KVTIER_FUZZ_CHECK(matched_blocks <= expected.size(), "matched more blocks than the prompt has");
    for (size_t i = 0; i < std::min(matched_blocks, capacity); ++i) {
      KVTIER_FUZZ_CHECK(keys[i].hi == expected[i].hi && keys[i].lo == expected[i].lo,
                        "match returned a key that is not the prompt's");
    }
  }

  // Blocks first..first+n-1 of a prompt, from host memory, their bytes derived from their keys.
  void OpStoreHost() {
    const char* ns = Namespace();
    const std::vector<int32_t> tokens = Tokens();
    const std::vector<kvtier_block_key> keys = ComputeKeys(ns, tokens, true);
    const size_t first = in_.Below(keys.size() + 2);
    size_t num = in_.Below(kMaxBlocksPerCall + 1);
    const int mangle = in_.U8() % 8;  // 0: NULL data, 1: wrong data_bytes, 2: NULL tokens
    std::vector<uint8_t> data(num * block_bytes_ + 1);
    for (size_t i = 0; i < num && first + i < keys.size(); ++i) {
      FillBlock(keys[first + i], data.data() + i * block_bytes_, block_bytes_);
    }
    const size_t data_bytes = num * block_bytes_ + (mangle == 1 ? 1 : 0);
    size_t stored = 0;
    const bool null_tokens = mangle == 2 && !tokens.empty();
    const kvtier_status_code c =
        CALL(kvtier_store_host, engine_, ns, null_tokens ? nullptr : tokens.data(), tokens.size(),
             nullptr, 0, first, num, mangle == 0 ? nullptr : data.data(), data_bytes, &stored);
    ExpectInvalid(c, ns == nullptr || tokens.empty() || null_tokens || num == 0 || mangle == 0 ||
                         mangle == 1,
                  "store_host");
    if (c == KVTIER_OK) {
      KVTIER_FUZZ_CHECK(first + num <= keys.size(), "stored blocks past the prompt's end");
      KVTIER_FUZZ_CHECK(stored <= num, "stored more blocks than given");
    }
  }

  void MarkUnverifiable(const std::vector<kvtier_block_key>& keys, size_t first, size_t num) {
    for (size_t i = first; i < first + num && i < keys.size(); ++i) unverifiable_.push_back(keys[i]);
  }

  // Checks loaded blocks against their keys' bytes and namespaces.
  void CheckLoaded(const char* ns, const std::vector<kvtier_block_key>& keys, const uint8_t* data,
                   const char* how) {
    for (size_t i = 0; i < keys.size(); ++i) {
      bool same_ns = true;
      for (const KnownKey& k : known_) {
        if (k.key.hi == keys[i].hi && k.key.lo == keys[i].lo) same_ns &= k.ns == ns;
      }
      KVTIER_FUZZ_CHECK(same_ns, absl::StrCat(how, ": loaded a block of another namespace"));
      bool unknown_bytes = false;
      for (const kvtier_block_key& k : unverifiable_) {
        unknown_bytes |= k.hi == keys[i].hi && k.lo == keys[i].lo;
      }
      if (unknown_bytes) continue;
      KVTIER_FUZZ_CHECK(BlockMatches(keys[i], data + i * block_bytes_, block_bytes_),
                        absl::StrCat(how, ": block ", i, " came back with other bytes"));
    }
  }

  void OpLoadHost() {
    const char* ns = Namespace();
    const std::vector<kvtier_block_key> keys = Keys();
    const int mangle = in_.U8() % 8;  // 0: NULL data, 1: short data_bytes, 2: NULL keys
    const size_t data_bytes = keys.size() * block_bytes_ - (mangle == 1 && !keys.empty() ? 1 : 0);
    std::vector<uint8_t> data(keys.size() * block_bytes_ + 1, 0xEE);
    const bool null_keys = mangle == 2;
    const kvtier_status_code c =
        CALL(kvtier_load_host, engine_, ns, null_keys ? nullptr : keys.data(), keys.size(),
             mangle == 0 ? nullptr : data.data(), data_bytes);
    ExpectInvalid(c, ns == nullptr || keys.empty() || null_keys || mangle == 0 || mangle == 1,
                  "load_host");
    if (c == KVTIER_OK) CheckLoaded(ns, keys, data.data(), "load_host");
  }

  // kvtier_store from device blocks at fuzzer-chosen addresses (mostly a fresh buffer filled
  // with the right bytes).
  void OpStoreDevice() {
    const char* ns = Namespace();
    const std::vector<int32_t> tokens = Tokens();
    const std::vector<kvtier_block_key> keys = ComputeKeys(ns, tokens, true);
    const size_t first = in_.Below(keys.size() + 1);
    const size_t num = in_.Below(kMaxBlocksPerCall + 1);
    std::vector<kvtier_device_ptr> blocks(num);
    kvtier_device_ptr staging = 0;
    if (num > 0 && CALL(kvtier_buffer_alloc, engine_, num * block_bytes_, &staging) == KVTIER_OK) {
      staging_.push_back(staging);  // not in buffers_: nothing may write it while stored from
      std::vector<uint8_t> data(num * block_bytes_);
      for (size_t i = 0; i < num && first + i < keys.size(); ++i) {
        FillBlock(keys[first + i], data.data() + i * block_bytes_, block_bytes_);
      }
      KVTIER_FUZZ_CHECK(CALL(kvtier_buffer_write, engine_, staging, data.data(), data.size()) ==
                            KVTIER_OK,
                        "buffer_write of a fresh buffer failed");
    }
    bool exact = staging != 0;
    for (size_t i = 0; i < num; ++i) {
      if (in_.U8() % 8 != 0) {
        blocks[i] = staging + i * block_bytes_;
      } else {
        blocks[i] = Address();
        exact = false;
      }
    }
    kvtier_handle* h = nullptr;
    const bool null_out = in_.U8() % 16 == 0;
    const kvtier_status_code c =
        CALL(kvtier_store, engine_, ns, tokens.data(), tokens.size(), nullptr, 0, first,
             num == 0 ? nullptr : blocks.data(), num, null_out ? nullptr : &h);
    ExpectInvalid(c, ns == nullptr || tokens.empty() || num == 0 || null_out, "store");
    if (c != KVTIER_OK) {
      KVTIER_FUZZ_CHECK(h == nullptr, "a failed store wrote a handle");
      return;
    }
    KVTIER_FUZZ_CHECK(h != nullptr, "store returned no handle");
    if (!exact) MarkUnverifiable(keys, first, num);
    handles_.push_back(h);
    if (in_.Bool()) (void)CALL(kvtier_handle_wait, h);
  }

  void OpLoadDevice() {
    const char* ns = Namespace();
    const std::vector<kvtier_block_key> keys = Keys();
    kvtier_device_ptr target = 0;
    if (!keys.empty() &&
        CALL(kvtier_buffer_alloc, engine_, keys.size() * block_bytes_, &target) == KVTIER_OK) {
      buffers_.push_back({target, keys.size() * block_bytes_});
    }
    std::vector<kvtier_device_ptr> blocks(keys.size());
    bool exact = target != 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (in_.U8() % 8 != 0) {
        blocks[i] = target + i * block_bytes_;
      } else {
        blocks[i] = Address();
        exact = false;
      }
    }
    const bool layerwise = in_.Bool();
    kvtier_handle* h = nullptr;
    const bool null_blocks = in_.U8() % 16 == 0;
    const kvtier_status_code c =
        CALL(kvtier_load, engine_, ns, keys.empty() ? nullptr : keys.data(), keys.size(),
             null_blocks ? nullptr : blocks.data(), layerwise ? 1 : 0, &h);
    ExpectInvalid(c, ns == nullptr || keys.empty() || null_blocks, "load");
    if (c != KVTIER_OK) return;
    handles_.push_back(h);
    if (layerwise && in_.Bool()) (void)CALL(kvtier_handle_wait_layer, h, in_.U8() % 6);
    if (CALL(kvtier_handle_wait, h) != KVTIER_OK || !exact) return;
    std::vector<uint8_t> data(keys.size() * block_bytes_);
    KVTIER_FUZZ_CHECK(ReadDevice(target, data.data(), data.size()), "reading a loaded buffer");
    CheckLoaded(ns, keys, data.data(), "load");
  }

  void OpLoadToGpuTier() {
    const char* ns = Namespace();
    const std::vector<kvtier_block_key> keys = Keys();
    kvtier_handle* h = nullptr;
    const uint64_t lease_ms = in_.U8() % 4 == 0 ? 1 : 0;
    const kvtier_status_code c =
        CALL(kvtier_load_to_gpu_tier, engine_, ns, keys.empty() ? nullptr : keys.data(),
             keys.size(), in_.Bool() ? 1 : 0, lease_ms, &h);
    ExpectInvalid(c, ns == nullptr || keys.empty(), "load_to_gpu_tier");
    if (c != KVTIER_OK) return;
    handles_.push_back(h);
    if (CALL(kvtier_handle_wait, h) != KVTIER_OK) return;
    std::vector<kvtier_device_ptr> slots(keys.size() + 1);
    size_t count = 0;
    KVTIER_FUZZ_CHECK(CALL(kvtier_handle_slots, h, slots.data(), slots.size(), &count) == KVTIER_OK,
                      "handle_slots of a GPU-tier load");
    KVTIER_FUZZ_CHECK(count == keys.size(), "one slot per key");
    if (lease_ms != 0 || short_leases_) return;  // a short lease may be gone already
    std::vector<uint8_t> data(keys.size() * block_bytes_);
    for (size_t i = 0; i < count; ++i) {
      KVTIER_FUZZ_CHECK(ReadDevice(slots[i], data.data() + i * block_bytes_, block_bytes_),
                        "reading a leased GPU-tier slot");
    }
    CheckLoaded(ns, keys, data.data(), "load_to_gpu_tier");
    if (in_.Bool()) KVTIER_FUZZ_CHECK(CALL(kvtier_handle_release, h) == KVTIER_OK, "release");
  }

  // Paged store and load with fuzzer-shaped pools: page counts, layer counts, layouts and page
  // indices in and out of range. Only the error contract is checked here (the round trip of
  // paged layouts is the unit tests').
  void OpPaged() {
    const char* ns = Namespace();
    const bool store = in_.Bool();
    std::vector<kvtier_device_ptr> layers(in_.U8() % 4);
    for (kvtier_device_ptr& p : layers) p = Address();
    kvtier_paged_pool pool;
    pool.layers = layers.empty() || in_.U8() % 8 == 0 ? nullptr : layers.data();
    pool.num_layers = static_cast<uint32_t>(layers.size());
    pool.num_pages = in_.U8() % 8;
    const int layout = in_.U8() % 3;
    kvtier_fuzz_set_layout(&pool, layout);
    std::vector<uint32_t> pages(in_.Below(kMaxBlocksPerCall + 1));
    for (uint32_t& p : pages) p = in_.U8() % 10;
    const bool null_pool = in_.U8() % 16 == 0;
    const bool null_pages = in_.U8() % 16 == 0;
    const bool bad_pool = null_pool || pool.num_layers == 0 || pool.layers == nullptr ||
                          pool.num_pages == 0 || layout == 2;
    kvtier_handle* h = nullptr;
    kvtier_status_code c;
    if (store) {
      const std::vector<int32_t> tokens = Tokens();
      const std::vector<kvtier_block_key> keys = ComputeKeys(ns, tokens, true);
      const size_t first = in_.Below(4);
      c = CALL(kvtier_store_paged, engine_, ns, tokens.data(), tokens.size(), nullptr, 0, first,
               null_pool ? nullptr : &pool, null_pages ? nullptr : pages.data(), pages.size(),
               &h);
      if (c == KVTIER_OK) MarkUnverifiable(keys, first, pages.size());
      ExpectInvalid(c, ns == nullptr || tokens.empty() || bad_pool || pages.empty() || null_pages,
                    "store_paged");
    } else {
      std::vector<kvtier_block_key> keys(pages.size());
      for (auto& k : keys) k = AnyKey();
      c = CALL(kvtier_load_paged, engine_, ns, keys.empty() ? nullptr : keys.data(), keys.size(),
               null_pool ? nullptr : &pool, null_pages ? nullptr : pages.data(), in_.Bool(), &h);
      ExpectInvalid(c, ns == nullptr || keys.empty() || bad_pool || null_pages, "load_paged");
    }
    if (c == KVTIER_OK) {
      handles_.push_back(h);
      (void)CALL(kvtier_handle_wait, h);
    }
  }

  void OpHint() {
    if (in_.Bool()) {
      const char* ns = Namespace();
      const std::vector<kvtier_block_key> keys = Keys();
      uint64_t id = 0;
      const bool null_out = in_.U8() % 16 == 0;
      const kvtier_status_code c =
          CALL(kvtier_hint, engine_, ns, keys.empty() ? nullptr : keys.data(), keys.size(),
               null_out ? nullptr : &id);
      ExpectInvalid(c, ns == nullptr || keys.empty() || null_out, "hint");
      if (c == KVTIER_OK) hints_.push_back(id);
    } else {
      const uint64_t id = !hints_.empty() && in_.Bool() ? hints_[in_.Below(hints_.size())]
                                                        : in_.U64();
      size_t cancelled = 0;
      (void)CALL(kvtier_cancel_hint, engine_, id, in_.Bool() ? nullptr : &cancelled);
    }
  }

  void OpErase() {
    const char* ns = Namespace();
    size_t erased = 0;
    if (in_.U8() % 4 == 0) {
      const kvtier_status_code c =
          CALL(kvtier_erase_namespace, engine_, ns, in_.Bool() ? nullptr : &erased);
      ExpectInvalid(c, ns == nullptr, "erase_namespace");
      return;
    }
    const std::vector<kvtier_block_key> keys = Keys();
    const kvtier_status_code c =
        CALL(kvtier_erase, engine_, ns, keys.empty() ? nullptr : keys.data(), keys.size(),
             in_.Bool() ? nullptr : &erased);
    ExpectInvalid(c, ns == nullptr || keys.empty(), "erase");
    if (c == KVTIER_OK) KVTIER_FUZZ_CHECK(erased <= keys.size(), "erased more than asked");
  }

  void OpHandle() {
    kvtier_handle* h = AnyHandle();
    kvtier_status_code c = KVTIER_OK;
    switch (in_.U8() % 7) {
      case 0: {
        int ready = -1;
        const bool null_out = in_.U8() % 8 == 0;
        c = CALL(kvtier_handle_is_ready, h, null_out ? nullptr : &ready);
        ExpectInvalid(c, h == nullptr || null_out, "handle_is_ready");
        if (c == KVTIER_OK) KVTIER_FUZZ_CHECK(ready == 0 || ready == 1, "ready is not 0 or 1");
        break;
      }
      case 1:
        c = CALL(kvtier_handle_wait, h);
        ExpectInvalid(c, h == nullptr, "handle_wait");
        break;
      case 2:
        c = CALL(kvtier_handle_wait_layer, h, in_.Bool() ? in_.U32() : in_.U8() % 5);
        ExpectInvalid(c, h == nullptr, "handle_wait_layer");
        break;
      case 3: {
        size_t moved = 0, present = 0, rejected = 0;
        const bool null_moved = in_.Bool(), null_present = in_.Bool(), null_rejected = in_.Bool();
        c = CALL(kvtier_handle_counts, h, null_moved ? nullptr : &moved,
                 null_present ? nullptr : &present, null_rejected ? nullptr : &rejected);
        ExpectInvalid(c, h == nullptr, "handle_counts");
        break;
      }
      case 4: {
        const size_t capacity = in_.U8() % 4;
        std::vector<kvtier_device_ptr> slots(capacity);
        const bool null_slots = capacity > 0 && in_.U8() % 4 == 0;
        size_t count = 0;
        c = CALL(kvtier_handle_slots, h, null_slots || capacity == 0 ? nullptr : slots.data(),
                 capacity, &count);
        ExpectInvalid(c, h == nullptr || null_slots, "handle_slots");
        break;
      }
      case 5:
        c = CALL(kvtier_handle_release, h);
        ExpectInvalid(c, h == nullptr, "handle_release");
        break;
      case 6: {
        // Destroy cannot fail and leaves the thread's last error as it was.
        const std::string before = kvtier_last_error();
        kvtier_handle_destroy(h);
        KVTIER_FUZZ_CHECK(before == kvtier_last_error(), "handle_destroy changed the last error");
        for (size_t i = 0; i < handles_.size(); ++i) {
          if (handles_[i] == h) {
            handles_.erase(handles_.begin() + static_cast<ptrdiff_t>(i));
            break;
          }
        }
        break;
      }
    }
  }

  void OpStats() {
    kvtier_stats stats;
    std::memset(&stats, 0, sizeof(stats));
    // struct_size: this header's, or any value up to it (a larger valid one would let the
    // library write past `stats`); refused unless a multiple of 8 from KVTIER_STATS_SIZE_MIN.
    stats.struct_size = in_.Bool() ? sizeof(stats) : in_.Below(sizeof(stats) + 1);
    const uint64_t asked = stats.struct_size;
    const bool bad_size = asked < KVTIER_STATS_SIZE_MIN || asked % 8 != 0;
    const bool null_out = in_.U8() % 8 == 0;
    kvtier_status_code c = CALL(kvtier_engine_stats, engine_, null_out ? nullptr : &stats);
    ExpectInvalid(c, null_out || bad_size, "engine_stats");
    if (c == KVTIER_OK) {
      KVTIER_FUZZ_CHECK(stats.struct_size == asked, "engine_stats filled another size than asked");
      for (const kvtier_tier_stats& t : stats.tiers) {
        KVTIER_FUZZ_CHECK(t.used_blocks <= t.capacity_blocks || t.capacity_blocks == 0,
                          "a tier holds more blocks than it has room for");
      }
    }
    const char* ns = Namespace();
    kvtier_namespace_stats ns_stats;
    std::memset(&ns_stats, 0, sizeof(ns_stats));
    ns_stats.struct_size = in_.Bool() ? sizeof(ns_stats) : KVTIER_NAMESPACE_STATS_SIZE_MIN;
    c = CALL(kvtier_namespace_stats_get, engine_, ns, in_.U8() % 8 == 0 ? nullptr : &ns_stats);
    if (ns == nullptr) ExpectInvalid(c, true, "namespace_stats_get");
    kvtier_device_kind kind;
    c = CALL(kvtier_engine_device_kind, engine_, &kind);
    KVTIER_FUZZ_CHECK(c == KVTIER_OK && kind == KVTIER_DEVICE_EMULATED, "device kind");
    const int code = static_cast<int>(in_.U8()) - 1;
    const std::string name = kvtier_fuzz_status_code_name(code);
    KVTIER_FUZZ_CHECK((code >= 0 && code <= 16) == (name != "UNKNOWN_CODE") && !name.empty(),
                      "status code name");
    KVTIER_FUZZ_CHECK(kvtier_c_api_version() == KVTIER_C_API_VERSION,
                      "the library's C API version is not the header's");
  }

  // Flush; or try to close: refused while handles live, else closed and opened again.
  void OpFlushOrClose() {
    if (in_.Bool()) {
      (void)CALL(kvtier_flush, engine_);
      return;
    }
    if (!handles_.empty()) {
      KVTIER_FUZZ_CHECK(CALL(kvtier_engine_close, engine_) == KVTIER_FAILED_PRECONDITION,
                        "close with live handles did not refuse");
      return;
    }
    KVTIER_FUZZ_CHECK(CALL(kvtier_engine_close, engine_) == KVTIER_OK, "close failed");
    engine_ = nullptr;
    buffers_.clear();  // freed by close; registrations forgotten (owned_ stays)
    staging_.clear();
    hints_.clear();
    OpenFromInput();
  }

  // Every engine entry point with a NULL engine.
  void OpNullEngine() {
    const int32_t tokens[4] = {1, 2, 3, 4};
    const kvtier_block_key key{1, 2};
    size_t n = 0;
    kvtier_device_ptr p = 0;
    kvtier_handle* h = nullptr;
    uint8_t byte = 0;
    ExpectInvalid(CALL(kvtier_engine_block_bytes, nullptr, &n), true, "block_bytes(NULL)");
    ExpectInvalid(CALL(kvtier_create_namespace, nullptr, "a"), true, "create_namespace(NULL)");
    ExpectInvalid(CALL(kvtier_buffer_alloc, nullptr, 64, &p), true, "buffer_alloc(NULL)");
    ExpectInvalid(CALL(kvtier_buffer_read, nullptr, &byte, 1, 1), true, "buffer_read(NULL)");
    ExpectInvalid(CALL(kvtier_match, nullptr, "a", tokens, 4, nullptr, 0, &n, &n, nullptr, 0,
                       nullptr),
                  true, "match(NULL)");
    ExpectInvalid(CALL(kvtier_store_host, nullptr, "a", tokens, 4, nullptr, 0, 0, 1, &byte, 1,
                       nullptr),
                  true, "store_host(NULL)");
    ExpectInvalid(CALL(kvtier_load, nullptr, "a", &key, 1, &p, 0, &h), true, "load(NULL)");
    ExpectInvalid(CALL(kvtier_erase, nullptr, "a", &key, 1, &n), true, "erase(NULL)");
    ExpectInvalid(CALL(kvtier_flush, nullptr), true, "flush(NULL)");
    ExpectInvalid(CALL(kvtier_cancel_hint, nullptr, 1, &n), true, "cancel_hint(NULL)");
    KVTIER_FUZZ_CHECK(CALL(kvtier_engine_close, nullptr) == KVTIER_OK, "close(NULL) is a no-op");
    ExpectInvalid(CALL(kvtier_flush, nullptr), true, "flush(NULL)");
    const std::string before = kvtier_last_error();
    kvtier_options_destroy(nullptr);
    kvtier_handle_destroy(nullptr);
    KVTIER_FUZZ_CHECK(before == kvtier_last_error(), "destroy(NULL) changed the last error");
  }

  Input& in_;
  kvtier_options* scratch_ = nullptr;
  kvtier_engine* engine_ = nullptr;
  size_t block_bytes_ = 0;
  std::vector<kvtier_handle*> handles_;
  std::vector<Buffer> buffers_;
  std::vector<KnownKey> known_;
  std::vector<uint64_t> hints_;
  // Keys stored from bytes the harness did not write (a fuzzer-chosen device address or page):
  // their content is unknown, so loads of them are checked for errors and namespaces only.
  std::vector<kvtier_block_key> unverifiable_;
  // Set when the input shortened the lease timeout: a leased GPU-tier slot may then be
  // reused (by the prefetcher) before the harness reads it.
  bool short_leases_ = false;
  std::vector<kvtier_device_ptr> staging_;  // store sources, never handed to other ops
  // Memory registered with the engine: freed after the engine is closed (members go after
  // the destructor's body), whether or not it is still registered.
  std::vector<std::unique_ptr<uint8_t[]>> owned_;
};

}  // namespace

// The engine logs every open at info level; a fuzzer opens thousands a second.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("KVTIER_LOG_LEVEL", "error", /*overwrite=*/0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Harness harness(in);
  harness.Run();
  return 0;
}
