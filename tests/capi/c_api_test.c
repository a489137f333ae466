/* Tests of the C API (include/kvtier/c_api.h), written in C11 against libkvtier.so.
 *
 *   kvtier_c_api_test CASE      runs one case: round_trip, match_counts, bad_arguments,
 *                               gpu_tier_lease, disk_reopen, threads, device_memory,
 *                               namespace_limits, stats_struct_size, remote_options,
 *                               remote_off; exits 0 if it passes. (The remote tier against
 *                               a real cluster: c_api_remote_test.cc.)
 *
 * Every case runs on the emulated device, so it needs no GPU. Each block's bytes are derived
 * from its index, so a load that returns another block's bytes fails the byte comparison. */

#define _POSIX_C_SOURCE 200809L

#include "kvtier/c_api.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#define CHECK_OK(call)                                                          \
  do {                                                                          \
    kvtier_status_code code_ = (call);                                          \
    if (code_ != KVTIER_OK) {                                                   \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call, \
              kvtier_status_code_name(code_), kvtier_last_error());             \
      exit(1);                                                                  \
    }                                                                           \
    CHECK(kvtier_last_error()[0] == '\0');                                      \
  } while (0)

/* `call` fails with `code` and a message that contains `needle` (the bad argument's name). */
#define CHECK_ERROR(call, code, needle)                                                         \
  do {                                                                                          \
    kvtier_status_code code_ = (call);                                                          \
    if (code_ != (code) || strstr(kvtier_last_error(), (needle)) == NULL) {                     \
      fprintf(stderr, "%s:%d: %s: expected %s naming '%s', got %s: '%s'\n", __FILE__, __LINE__, \
              #call, kvtier_status_code_name(code), (needle), kvtier_status_code_name(code_),   \
              kvtier_last_error());                                                             \
      exit(1);                                                                                  \
    }                                                                                           \
  } while (0)

enum { kLayers = 2, kHeads = 2, kHeadDim = 8, kBlockTokens = 4 };

static kvtier_options* SmallOptions(uint64_t host_blocks) {
  kvtier_options* o = NULL;
  CHECK_OK(kvtier_options_create(&o));
  CHECK_OK(kvtier_options_set_geometry(o, kLayers, kHeads, kHeadDim, KVTIER_DTYPE_FLOAT16,
                                       kBlockTokens));
  CHECK_OK(kvtier_options_set_model_fingerprint(o, "c-api-test@1"));
  CHECK_OK(kvtier_options_set_device(o, KVTIER_DEVICE_EMULATED, 0, 0.0));
  /* fp16: 2 layers x (K,V) x 4 tokens x 2 heads x 8 dims x 2 bytes = 512 bytes a block */
  CHECK_OK(kvtier_options_set_tier_bytes(o, 0, host_blocks * 512));
  const char* names[] = {"default", "tenant-b"};
  CHECK_OK(kvtier_options_set_namespaces(o, names, 2));
  return o;
}

static kvtier_engine* OpenSmall(uint64_t host_blocks) {
  kvtier_options* o = SmallOptions(host_blocks);
  kvtier_engine* e = NULL;
  CHECK_OK(kvtier_engine_open(o, &e));
  kvtier_options_destroy(o);
  size_t block = 0;
  CHECK_OK(kvtier_engine_block_bytes(e, &block));
  CHECK(block == 512);
  kvtier_device_kind kind = KVTIER_DEVICE_AUTO;
  CHECK_OK(kvtier_engine_device_kind(e, &kind));
  CHECK(kind == KVTIER_DEVICE_EMULATED);
  return e;
}

static void Tokens(int32_t seed, int32_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = seed * 1000 + (int32_t)i;
}

/* Block `index` of prompt `seed`: bytes no other block has. */
static void Fill(int32_t seed, size_t index, uint8_t* out, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out[i] = (uint8_t)(seed * 31 + index * 7 + i * 13 + (i >> 8));
}

static void RoundTrip(void) {
  kvtier_engine* e = OpenSmall(64);
  enum { kBlocks = 4, kBytes = 512 };
  int32_t tokens[kBlocks * kBlockTokens];
  Tokens(1, tokens, kBlocks * kBlockTokens);

  /* Caller "GPU" buffers on the emulated device, filled from host memory. */
  uint8_t host[kBlocks][kBytes];
  kvtier_device_ptr src[kBlocks], dst[kBlocks];
  for (size_t i = 0; i < kBlocks; ++i) {
    Fill(1, i, host[i], kBytes);
    CHECK_OK(kvtier_buffer_alloc(e, kBytes, &src[i]));
    CHECK_OK(kvtier_buffer_alloc(e, kBytes, &dst[i]));
    CHECK_OK(kvtier_buffer_write(e, src[i], host[i], kBytes));
  }

  kvtier_handle* h = NULL;
  CHECK_OK(
      kvtier_store(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, 0, src, kBlocks, &h));
  CHECK_OK(kvtier_handle_wait(h));
  int ready = 0;
  CHECK_OK(kvtier_handle_is_ready(h, &ready));
  CHECK(ready == 1);
  size_t moved = 0, present = 0, rejected = 0;
  CHECK_OK(kvtier_handle_counts(h, &moved, &present, &rejected));
  CHECK(moved == kBlocks && present == 0 && rejected == 0);
  size_t slot_count = 99;
  CHECK_OK(kvtier_handle_slots(h, NULL, 0, &slot_count));
  CHECK(slot_count == 0); /* only GPU-tier leases have slots */
  kvtier_handle_destroy(h);

  /* Storing again deduplicates. */
  CHECK_OK(
      kvtier_store(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, 0, src, kBlocks, &h));
  CHECK_OK(kvtier_handle_wait(h));
  CHECK_OK(kvtier_handle_counts(h, &moved, &present, NULL));
  CHECK(moved == 0 && present == kBlocks);
  kvtier_handle_destroy(h);

  size_t matched_tokens = 0, matched_blocks = 0;
  kvtier_block_key keys[kBlocks];
  kvtier_tier tiers[kBlocks];
  CHECK_OK(kvtier_match(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, keys, kBlocks, tiers));
  CHECK(matched_tokens == kBlocks * kBlockTokens && matched_blocks == kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) CHECK(tiers[i] == KVTIER_TIER_HOST);
  /* Match's keys are the keys kvtier_block_keys computes. */
  kvtier_block_key computed[kBlocks];
  size_t num_keys = 0;
  CHECK_OK(kvtier_block_keys(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, computed,
                             kBlocks, &num_keys));
  CHECK(num_keys == kBlocks);
  CHECK(memcmp(keys, computed, sizeof(keys)) == 0);

  /* Load in reverse order, layer by layer, and compare bytes. */
  kvtier_block_key reversed[kBlocks];
  for (size_t i = 0; i < kBlocks; ++i) reversed[i] = keys[kBlocks - 1 - i];
  CHECK_OK(kvtier_load(e, "default", reversed, kBlocks, dst, 1, &h));
  for (uint32_t layer = 0; layer < kLayers; ++layer) CHECK_OK(kvtier_handle_wait_layer(h, layer));
  CHECK_OK(kvtier_handle_wait(h));
  CHECK_OK(kvtier_handle_release(h)); /* no lease: a no-op */
  kvtier_handle_destroy(h);
  for (size_t i = 0; i < kBlocks; ++i) {
    uint8_t back[kBytes];
    CHECK_OK(kvtier_buffer_read(e, back, dst[i], kBytes));
    CHECK(memcmp(back, host[kBlocks - 1 - i], kBytes) == 0);
  }

  /* The host-memory variants: store two blocks of another prompt, load them back. */
  int32_t other[2 * kBlockTokens];
  Tokens(2, other, 2 * kBlockTokens);
  uint8_t data[2 * kBytes], loaded[2 * kBytes];
  Fill(2, 0, data, kBytes);
  Fill(2, 1, data + kBytes, kBytes);
  size_t stored = 0;
  CHECK_OK(kvtier_store_host(e, "tenant-b", other, 2 * kBlockTokens, "salt", 4, 0, 2, data,
                             sizeof(data), &stored));
  CHECK(stored == 2);
  kvtier_block_key other_keys[2];
  CHECK_OK(kvtier_match(e, "tenant-b", other, 2 * kBlockTokens, "salt", 4, &matched_tokens,
                        &matched_blocks, other_keys, 2, NULL));
  CHECK(matched_blocks == 2);
  memset(loaded, 0, sizeof(loaded));
  CHECK_OK(kvtier_load_host(e, "tenant-b", other_keys, 2, loaded, sizeof(loaded)));
  CHECK(memcmp(loaded, data, sizeof(data)) == 0);

  kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.stored_blocks == kBlocks + 2);
  CHECK(stats.deduplicated_blocks == kBlocks);
  CHECK(stats.loaded_blocks == kBlocks + 2);
  CHECK(stats.tiers[KVTIER_TIER_HOST].used_blocks == kBlocks + 2);
  CHECK(stats.tiers[KVTIER_TIER_HOST].capacity_blocks == 64);
  CHECK(stats.namespaces == 2);
  kvtier_namespace_stats ns_stats = {.struct_size = sizeof(kvtier_namespace_stats)};
  CHECK_OK(kvtier_namespace_stats_get(e, "tenant-b", &ns_stats));
  CHECK(ns_stats.blocks == 2 && ns_stats.stored_blocks == 2 && ns_stats.loaded_blocks == 2);

  /* Erase one block, then the namespace. */
  size_t erased = 0;
  CHECK_OK(kvtier_erase(e, "default", &keys[3], 1, &erased));
  CHECK(erased == 1);
  CHECK_OK(kvtier_match(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_blocks == 3);
  CHECK_OK(kvtier_erase_namespace(e, "tenant-b", &erased));
  CHECK(erased == 2);
  CHECK_OK(kvtier_flush(e));

  for (size_t i = 0; i < kBlocks; ++i) {
    CHECK_OK(kvtier_buffer_free(e, src[i]));
    CHECK_OK(kvtier_buffer_free(e, dst[i]));
  }
  CHECK_OK(kvtier_engine_close(e));
}

static void MatchCounts(void) {
  kvtier_engine* e = OpenSmall(64);
  enum { kBytes = 512 };
  int32_t tokens[4 * kBlockTokens + 3]; /* 4 full blocks and a partial one */
  Tokens(3, tokens, 4 * kBlockTokens + 3);
  uint8_t data[2 * kBytes];
  Fill(3, 0, data, kBytes);
  Fill(3, 1, data + kBytes, kBytes);
  /* Store the first two blocks only. */
  CHECK_OK(kvtier_store_host(e, "default", tokens, 4 * kBlockTokens, NULL, 0, 0, 2, data,
                             sizeof(data), NULL));

  size_t matched_tokens = 99, matched_blocks = 99;
  CHECK_OK(kvtier_match(e, "default", tokens, 4 * kBlockTokens + 3, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_tokens == 2 * kBlockTokens && matched_blocks == 2);

  /* A buffer for fewer keys than matched gets the first ones; the rest is untouched. */
  kvtier_block_key keys[2] = {{0, 0}, {7, 7}};
  CHECK_OK(kvtier_match(e, "default", tokens, 4 * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, keys, 1, NULL));
  CHECK(matched_blocks == 2);
  CHECK(keys[0].hi != 0 || keys[0].lo != 0);
  CHECK(keys[1].hi == 7 && keys[1].lo == 7);

  /* A prompt that diverges inside block 1 matches block 0 only. */
  int32_t diverged[4 * kBlockTokens];
  memcpy(diverged, tokens, sizeof(diverged));
  diverged[kBlockTokens + 1] += 1;
  CHECK_OK(kvtier_match(e, "default", diverged, 4 * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_tokens == kBlockTokens && matched_blocks == 1);

  /* Fewer tokens than a block, no tokens, other extra key material, another namespace: 0. */
  CHECK_OK(kvtier_match(e, "default", tokens, kBlockTokens - 1, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_tokens == 0 && matched_blocks == 0);
  CHECK_OK(kvtier_match(e, "default", NULL, 0, NULL, 0, &matched_tokens, &matched_blocks, NULL, 0,
                        NULL));
  CHECK(matched_blocks == 0);
  CHECK_OK(kvtier_match(e, "default", tokens, 4 * kBlockTokens, "lora-7", 6, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_blocks == 0);
  CHECK_OK(kvtier_match(e, "tenant-b", tokens, 4 * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_blocks == 0);
  CHECK_ERROR(kvtier_match(e, "nobody", tokens, 4 * kBlockTokens, NULL, 0, &matched_tokens,
                           &matched_blocks, NULL, 0, NULL),
              KVTIER_NOT_FOUND, "nobody");

  /* A namespace created later matches nothing until it stores. */
  CHECK_OK(kvtier_create_namespace(e, "tenant-c"));
  CHECK_ERROR(kvtier_create_namespace(e, "tenant-c"), KVTIER_ALREADY_EXISTS, "tenant-c");
  CHECK_OK(kvtier_match(e, "tenant-c", tokens, 4 * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_blocks == 0);

  kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.match_calls >= 8);
  CHECK(stats.matched_blocks == 2 + 2 + 1);
  CHECK_OK(kvtier_engine_close(e));
}

static void BadArguments(void) {
  kvtier_engine* e = OpenSmall(8);
  int32_t tokens[2 * kBlockTokens];
  Tokens(4, tokens, 2 * kBlockTokens);
  kvtier_device_ptr buf = 0;
  CHECK_OK(kvtier_buffer_alloc(e, 512, &buf));
  kvtier_handle* h = NULL;
  size_t n = 0, m = 0;
  uint8_t data[512];
  memset(data, 1, sizeof(data));
  kvtier_block_key key = {1, 2};

  /* Options. */
  CHECK_ERROR(kvtier_options_create(NULL), KVTIER_INVALID_ARGUMENT, "out_options");
  kvtier_options* o = NULL;
  CHECK_OK(kvtier_options_create(&o));
  CHECK_ERROR(kvtier_options_set_geometry(NULL, 2, 2, 8, KVTIER_DTYPE_FLOAT16, 4),
              KVTIER_INVALID_ARGUMENT, "options");
  CHECK_ERROR(kvtier_options_set_geometry(o, 2, 2, 8, (kvtier_dtype)9, 4), KVTIER_INVALID_ARGUMENT,
              "dtype");
  CHECK_ERROR(kvtier_options_set_geometry(o, 2, 2, 8, (kvtier_dtype)6, 4), KVTIER_INVALID_ARGUMENT,
              "dtype");
  CHECK_ERROR(kvtier_options_set_geometry(o, 2, 2, 8, (kvtier_dtype)0, 4), KVTIER_INVALID_ARGUMENT,
              "dtype");
  /* fp8 KV caches (version 5): accepted (on other options: `o` stays without a geometry). */
  {
    kvtier_options* fp8 = NULL;
    CHECK_OK(kvtier_options_create(&fp8));
    CHECK_OK(kvtier_options_set_geometry(fp8, 2, 2, 8, KVTIER_DTYPE_FP8_E4M3, 4));
    CHECK_OK(kvtier_options_set_geometry(fp8, 2, 2, 8, KVTIER_DTYPE_FP8_E5M2, 4));
    kvtier_options_destroy(fp8);
  }
  CHECK_ERROR(kvtier_options_set_geometry(o, 0, 2, 8, KVTIER_DTYPE_FLOAT16, 4),
              KVTIER_INVALID_ARGUMENT, "num_layers");
  CHECK_ERROR(kvtier_options_set_geometry(o, 2, 2, 8, KVTIER_DTYPE_FLOAT16, 0),
              KVTIER_INVALID_ARGUMENT, "block_tokens");
  CHECK_ERROR(kvtier_options_set_model_fingerprint(o, NULL), KVTIER_INVALID_ARGUMENT,
              "fingerprint");
  CHECK_ERROR(kvtier_options_set_tier_bytes(o, 0, 0), KVTIER_INVALID_ARGUMENT, "host_tier_bytes");
  CHECK_ERROR(kvtier_options_set_disk(o, NULL, 1 << 20), KVTIER_INVALID_ARGUMENT, "directory");
  CHECK_ERROR(kvtier_options_set_disk(o, "/tmp/x", 0), KVTIER_INVALID_ARGUMENT, "capacity_bytes");
  CHECK_ERROR(kvtier_options_set_disk_region_bytes(o, 1000), KVTIER_INVALID_ARGUMENT,
              "region_bytes");
  CHECK_ERROR(kvtier_options_set_device(o, (kvtier_device_kind)7, 0, 0), KVTIER_INVALID_ARGUMENT,
              "kind");
  CHECK_ERROR(kvtier_options_set_device(o, KVTIER_DEVICE_EMULATED, -1, 0), KVTIER_INVALID_ARGUMENT,
              "cuda_ordinal");
  CHECK_ERROR(kvtier_options_set_device(o, KVTIER_DEVICE_EMULATED, 0, -2.0),
              KVTIER_INVALID_ARGUMENT, "emulated_copy_gbps");
  CHECK_ERROR(kvtier_options_set_key_hash(o, (kvtier_key_hash)0), KVTIER_INVALID_ARGUMENT, "hash");
  CHECK_ERROR(kvtier_options_set_eviction(o, "lru", NULL), KVTIER_INVALID_ARGUMENT, "host_policy");
  const char* names[] = {"a", NULL};
  CHECK_ERROR(kvtier_options_set_namespaces(o, names, 2), KVTIER_INVALID_ARGUMENT, "names[1]");
  CHECK_ERROR(kvtier_options_set_namespaces(o, NULL, 2), KVTIER_INVALID_ARGUMENT, "names");
  CHECK_ERROR(kvtier_options_set_lease_timeout_ms(o, 0), KVTIER_INVALID_ARGUMENT, "timeout_ms");
  /* A geometry is required: open names the field. */
  kvtier_engine* never = NULL;
  CHECK_ERROR(kvtier_engine_open(o, &never), KVTIER_INVALID_ARGUMENT, "geometry");
  CHECK(never == NULL);
  CHECK_ERROR(kvtier_options_validate(o), KVTIER_INVALID_ARGUMENT, "geometry");
  CHECK_OK(kvtier_options_set_geometry(o, 2, 2, 8, KVTIER_DTYPE_FLOAT16, 4));
  CHECK_OK(kvtier_options_set_model_fingerprint(o, "m"));
  CHECK_OK(kvtier_options_set_tier_bytes(o, 0, 4096));
  CHECK_OK(kvtier_options_set_eviction(o, "lru", "no-such-policy"));
  CHECK_ERROR(kvtier_engine_open(o, &never), KVTIER_INVALID_ARGUMENT, "no-such-policy");
  CHECK_ERROR(kvtier_engine_open(NULL, &never), KVTIER_INVALID_ARGUMENT, "options");
  CHECK_ERROR(kvtier_engine_open(o, NULL), KVTIER_INVALID_ARGUMENT, "out_engine");
  kvtier_options_destroy(o);
  kvtier_options_destroy(NULL);

  /* Engine queries. */
  CHECK_ERROR(kvtier_engine_block_bytes(NULL, &n), KVTIER_INVALID_ARGUMENT, "engine");
  CHECK_ERROR(kvtier_engine_block_bytes(e, NULL), KVTIER_INVALID_ARGUMENT, "out_bytes");
  CHECK_ERROR(kvtier_create_namespace(e, NULL), KVTIER_INVALID_ARGUMENT, "ns");
  CHECK_ERROR(kvtier_create_namespace(e, "bad name!"), KVTIER_INVALID_ARGUMENT, "bad name!");

  /* Buffers. */
  kvtier_device_ptr p = 0;
  CHECK_ERROR(kvtier_buffer_alloc(e, 0, &p), KVTIER_INVALID_ARGUMENT, "bytes");
  CHECK_ERROR(kvtier_buffer_alloc(e, 512, NULL), KVTIER_INVALID_ARGUMENT, "out_ptr");
  CHECK_ERROR(kvtier_buffer_free(e, 0), KVTIER_INVALID_ARGUMENT, "ptr");
  CHECK_ERROR(kvtier_buffer_free(e, buf + 256), KVTIER_INVALID_ARGUMENT, "kvtier_buffer_alloc");
  CHECK_ERROR(kvtier_buffer_write(e, buf, NULL, 512), KVTIER_INVALID_ARGUMENT, "src");
  CHECK_ERROR(kvtier_buffer_write(e, 0, data, 512), KVTIER_INVALID_ARGUMENT, "dst");
  CHECK_ERROR(kvtier_buffer_write(e, buf, data, 0), KVTIER_INVALID_ARGUMENT, "bytes");
  CHECK_ERROR(kvtier_buffer_read(e, NULL, buf, 512), KVTIER_INVALID_ARGUMENT, "dst");
  /* A copy past the end of the allocation is refused by the device, not performed. */
  CHECK(kvtier_buffer_write(e, buf, data, 1024) != KVTIER_OK);
  CHECK(strstr(kvtier_last_error(), "kvtier_buffer_write") != NULL);

  /* Match. */
  CHECK_ERROR(kvtier_match(e, "default", NULL, 8, NULL, 0, &n, &m, NULL, 0, NULL),
              KVTIER_INVALID_ARGUMENT, "tokens");
  CHECK_ERROR(kvtier_match(e, "default", tokens, 8, NULL, 3, &n, &m, NULL, 0, NULL),
              KVTIER_INVALID_ARGUMENT, "extra");
  CHECK_ERROR(kvtier_match(e, "default", tokens, 8, NULL, 0, NULL, &m, NULL, 0, NULL),
              KVTIER_INVALID_ARGUMENT, "out_matched_tokens");
  CHECK_ERROR(kvtier_match(e, "default", tokens, 8, NULL, 0, &n, NULL, NULL, 0, NULL),
              KVTIER_INVALID_ARGUMENT, "out_matched_blocks");
  CHECK_ERROR(kvtier_match(e, "default", tokens, 8, NULL, 0, &n, &m, NULL, 2, NULL),
              KVTIER_INVALID_ARGUMENT, "keys");
  CHECK_ERROR(kvtier_match(e, NULL, tokens, 8, NULL, 0, &n, &m, NULL, 0, NULL),
              KVTIER_INVALID_ARGUMENT, "ns");
  kvtier_block_key one_key[1];
  CHECK_ERROR(kvtier_block_keys(e, "default", tokens, 8, NULL, 0, one_key, 1, &n),
              KVTIER_INVALID_ARGUMENT, "keys_capacity");

  /* Store. */
  CHECK_ERROR(kvtier_store(NULL, "default", tokens, 8, NULL, 0, 0, &buf, 1, &h),
              KVTIER_INVALID_ARGUMENT, "engine");
  CHECK_ERROR(kvtier_store(e, "default", NULL, 8, NULL, 0, 0, &buf, 1, &h), KVTIER_INVALID_ARGUMENT,
              "tokens");
  CHECK_ERROR(kvtier_store(e, "default", tokens, 0, NULL, 0, 0, &buf, 1, &h),
              KVTIER_INVALID_ARGUMENT, "num_tokens");
  CHECK_ERROR(kvtier_store(e, "default", tokens, 8, NULL, 0, 0, NULL, 1, &h),
              KVTIER_INVALID_ARGUMENT, "blocks");
  CHECK_ERROR(kvtier_store(e, "default", tokens, 8, NULL, 0, 0, &buf, 0, &h),
              KVTIER_INVALID_ARGUMENT, "num_blocks");
  CHECK_ERROR(kvtier_store(e, "default", tokens, 8, NULL, 0, 0, &buf, 1, NULL),
              KVTIER_INVALID_ARGUMENT, "out_handle");
  CHECK_ERROR(kvtier_store(e, "default", tokens, 7, NULL, 0, 0, &buf, 1, &h),
              KVTIER_INVALID_ARGUMENT, "multiple of block_tokens");
  CHECK_ERROR(kvtier_store(e, "default", tokens, 8, NULL, 0, 2, &buf, 1, &h),
              KVTIER_INVALID_ARGUMENT, "hold only 2 blocks");
  kvtier_device_ptr host_address = (kvtier_device_ptr)(uintptr_t)data;
  CHECK_ERROR(kvtier_store(e, "default", tokens, 8, NULL, 0, 0, &host_address, 1, &h),
              KVTIER_INVALID_ARGUMENT, "not device memory");
  CHECK_ERROR(kvtier_store(e, "nobody", tokens, 8, NULL, 0, 0, &buf, 1, &h), KVTIER_NOT_FOUND,
              "nobody");
  CHECK(h == NULL);
  kvtier_paged_pool pool = {NULL, kLayers, 4, KVTIER_PAGE_NHD};
  uint32_t page = 0;
  CHECK_ERROR(kvtier_store_paged(e, "default", tokens, 8, NULL, 0, 0, NULL, &page, 1, &h),
              KVTIER_INVALID_ARGUMENT, "pool");
  CHECK_ERROR(kvtier_store_paged(e, "default", tokens, 8, NULL, 0, 0, &pool, &page, 1, &h),
              KVTIER_INVALID_ARGUMENT, "pool->layers");
  kvtier_device_ptr layers[kLayers] = {buf, buf};
  pool.layers = layers;
  pool.layout = (kvtier_page_layout)5;
  CHECK_ERROR(kvtier_store_paged(e, "default", tokens, 8, NULL, 0, 0, &pool, &page, 1, &h),
              KVTIER_INVALID_ARGUMENT, "pool->layout");
  pool.layout = KVTIER_PAGE_HND;
  CHECK_ERROR(kvtier_store_paged(e, "default", tokens, 8, NULL, 0, 0, &pool, NULL, 1, &h),
              KVTIER_INVALID_ARGUMENT, "pages");
  CHECK_ERROR(kvtier_store_paged(e, "default", tokens, 8, NULL, 0, 0, &pool, &page, 0, &h),
              KVTIER_INVALID_ARGUMENT, "num_pages");
  /* 4 pages of 2 x 128 bytes per layer do not fit in a 512-byte buffer: the engine says so. */
  CHECK_ERROR(kvtier_store_paged(e, "default", tokens, 8, NULL, 0, 0, &pool, &page, 1, &h),
              KVTIER_INVALID_ARGUMENT, "paged pool layer 0");
  CHECK_ERROR(kvtier_store_host(e, "default", tokens, 8, NULL, 0, 0, 1, NULL, 512, NULL),
              KVTIER_INVALID_ARGUMENT, "data");
  CHECK_ERROR(kvtier_store_host(e, "default", tokens, 8, NULL, 0, 0, 1, data, 511, NULL),
              KVTIER_INVALID_ARGUMENT, "data_bytes is 511");
  CHECK_ERROR(kvtier_store_host(e, "default", tokens, 8, NULL, 0, 0, SIZE_MAX, data, 512, NULL),
              KVTIER_INVALID_ARGUMENT, "data_bytes");

  /* Load. */
  CHECK_ERROR(kvtier_load(e, "default", NULL, 1, &buf, 1, &h), KVTIER_INVALID_ARGUMENT, "keys");
  CHECK_ERROR(kvtier_load(e, "default", &key, 0, &buf, 1, &h), KVTIER_INVALID_ARGUMENT, "num_keys");
  CHECK_ERROR(kvtier_load(e, "default", &key, 1, NULL, 1, &h), KVTIER_INVALID_ARGUMENT, "blocks");
  CHECK_ERROR(kvtier_load(e, "default", &key, 1, &buf, 1, NULL), KVTIER_INVALID_ARGUMENT,
              "out_handle");
  CHECK_ERROR(kvtier_load(e, "default", &key, 1, &buf, 1, &h), KVTIER_NOT_FOUND,
              "00000000000000010000000000000002");
  CHECK_ERROR(kvtier_load_paged(e, "default", &key, 1, NULL, &page, 1, &h), KVTIER_INVALID_ARGUMENT,
              "pool");
  CHECK_ERROR(kvtier_load_host(e, "default", &key, 1, data, 100), KVTIER_INVALID_ARGUMENT,
              "data_bytes");
  CHECK_ERROR(kvtier_load_host(e, "default", &key, 1, NULL, 512), KVTIER_INVALID_ARGUMENT, "data");
  CHECK_ERROR(kvtier_load_host(e, "default", &key, 1, data, 512), KVTIER_NOT_FOUND, "default");

  /* Erase, flush, stats. */
  CHECK_ERROR(kvtier_erase(e, "default", NULL, 1, &n), KVTIER_INVALID_ARGUMENT, "keys");
  CHECK_ERROR(kvtier_erase(e, "default", &key, 0, &n), KVTIER_INVALID_ARGUMENT, "num_keys");
  CHECK_ERROR(kvtier_erase_namespace(e, NULL, &n), KVTIER_INVALID_ARGUMENT, "ns");
  CHECK_ERROR(kvtier_flush(NULL), KVTIER_INVALID_ARGUMENT, "engine");
  CHECK_ERROR(kvtier_engine_stats(e, NULL), KVTIER_INVALID_ARGUMENT, "out_stats");
  kvtier_namespace_stats ns_stats = {.struct_size = sizeof(kvtier_namespace_stats)};
  CHECK_ERROR(kvtier_namespace_stats_get(e, "nobody", &ns_stats), KVTIER_NOT_FOUND, "nobody");

  /* Handles: a real one, then the checks; close refuses while it lives. */
  CHECK_OK(kvtier_buffer_write(e, buf, data, 512));
  CHECK_OK(kvtier_store(e, "default", tokens, 8, NULL, 0, 1, &buf, 1, &h));
  CHECK(h != NULL);
  CHECK_ERROR(kvtier_handle_wait(NULL), KVTIER_INVALID_ARGUMENT, "handle");
  CHECK_ERROR(kvtier_handle_is_ready(h, NULL), KVTIER_INVALID_ARGUMENT, "out_ready");
  CHECK_ERROR(kvtier_handle_counts(NULL, &n, &m, NULL), KVTIER_INVALID_ARGUMENT, "handle");
  CHECK_ERROR(kvtier_engine_close(e), KVTIER_FAILED_PRECONDITION, "1 handles");
  CHECK_OK(kvtier_handle_wait(h));
  kvtier_handle_destroy(h);
  kvtier_handle_destroy(NULL);

  /* Messages: kept by the destroy functions, replaced by the next call, cleared by a
   * success; names for every code. */
  CHECK(kvtier_flush(NULL) != KVTIER_OK);
  CHECK(kvtier_last_error()[0] != '\0');
  kvtier_handle_destroy(NULL);
  kvtier_options_destroy(NULL);
  CHECK(strstr(kvtier_last_error(), "kvtier_flush: engine is NULL") != NULL);
  CHECK_OK(kvtier_flush(e));
  CHECK(strcmp(kvtier_status_code_name(KVTIER_DATA_LOSS), "DATA_LOSS") == 0);
  CHECK(strcmp(kvtier_status_code_name((kvtier_status_code)99), "UNKNOWN_CODE") == 0);
  CHECK(kvtier_c_api_version() == KVTIER_C_API_VERSION);

  /* Close frees buffers still allocated (buf); a NULL engine is a no-op. */
  CHECK_OK(kvtier_engine_close(e));
  CHECK_OK(kvtier_engine_close(NULL));
}

/* Managed-pool mode: blocks leased in GPU-tier slots, and look-ahead hints. */
static void GpuTierLease(void) {
  kvtier_options* o = SmallOptions(64);
  CHECK_OK(kvtier_options_set_tier_bytes(o, 8 * 512, 64 * 512));
  CHECK_OK(kvtier_options_set_lease_timeout_ms(o, 60000));
  kvtier_engine* e = NULL;
  CHECK_OK(kvtier_engine_open(o, &e));
  kvtier_options_destroy(o);
  enum { kBlocks = 3, kBytes = 512 };
  int32_t tokens[kBlocks * kBlockTokens];
  Tokens(7, tokens, kBlocks * kBlockTokens);
  uint8_t data[kBlocks * kBytes];
  for (size_t i = 0; i < kBlocks; ++i) Fill(7, i, data + i * kBytes, kBytes);
  CHECK_OK(kvtier_store_host(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, 0, kBlocks,
                             data, sizeof(data), NULL));
  kvtier_block_key keys[kBlocks];
  size_t matched_tokens = 0, matched_blocks = 0;
  CHECK_OK(kvtier_match(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, keys, kBlocks, NULL));
  CHECK(matched_blocks == kBlocks);

  kvtier_handle* h = NULL;
  CHECK_OK(kvtier_load_to_gpu_tier(e, "default", keys, kBlocks, 1, 0, &h));
  CHECK_OK(kvtier_handle_wait(h));
  kvtier_device_ptr slots[kBlocks];
  size_t count = 0;
  CHECK_OK(kvtier_handle_slots(h, slots, kBlocks, &count));
  CHECK(count == kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) {
    uint8_t back[kBytes];
    CHECK_OK(kvtier_buffer_read(e, back, slots[i], kBytes));
    CHECK(memcmp(back, data + i * kBytes, kBytes) == 0);
  }
  /* The engine's own slots are not the caller's to free. */
  CHECK_ERROR(kvtier_buffer_free(e, slots[0]), KVTIER_INVALID_ARGUMENT, "kvtier_buffer_alloc");
  kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.leases_held == 1);
  CHECK(stats.tiers[KVTIER_TIER_GPU].used_blocks == kBlocks);
  CHECK(stats.tiers[KVTIER_TIER_GPU].capacity_blocks == 8);
  CHECK_ERROR(kvtier_handle_slots(h, NULL, 1, &count), KVTIER_INVALID_ARGUMENT, "slots");
  CHECK_ERROR(kvtier_handle_slots(h, slots, 1, NULL), KVTIER_INVALID_ARGUMENT, "out_count");
  CHECK_OK(kvtier_handle_release(h));
  CHECK_OK(kvtier_handle_release(h)); /* idempotent */
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.leases_held == 0);
  kvtier_handle_destroy(h);

  /* Look-ahead hints: queued, counted, cancellable; an unknown id is NOT_FOUND. */
  uint64_t hint = 0;
  CHECK_OK(kvtier_hint(e, "default", keys, kBlocks, &hint));
  size_t cancelled = 0;
  CHECK_OK(kvtier_cancel_hint(e, hint, &cancelled));
  CHECK(cancelled <= kBlocks);
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.prefetch_hinted == kBlocks);
  CHECK_ERROR(kvtier_cancel_hint(e, hint + 1000, NULL), KVTIER_NOT_FOUND, "kvtier_cancel_hint");
  CHECK_ERROR(kvtier_hint(e, "default", keys, kBlocks, NULL), KVTIER_INVALID_ARGUMENT,
              "out_hint_id");
  CHECK_ERROR(kvtier_hint(e, "default", NULL, kBlocks, &hint), KVTIER_INVALID_ARGUMENT, "keys");

  CHECK_OK(kvtier_engine_close(e));

  /* Without a GPU tier there is nothing to lease. */
  e = OpenSmall(8);
  CHECK_ERROR(kvtier_load_to_gpu_tier(e, "default", keys, kBlocks, 1, 0, &h),
              KVTIER_FAILED_PRECONDITION, "kvtier_load_to_gpu_tier");
  CHECK_ERROR(kvtier_load_to_gpu_tier(e, "default", keys, kBlocks, 1, 0, NULL),
              KVTIER_INVALID_ARGUMENT, "out_handle");
  CHECK_OK(kvtier_engine_close(e));
}

/* Blocks demoted to the disk tier survive closing and reopening the engine. */
static void DiskReopen(void) {
  char dir[] = "/tmp/kvtier_c_api_test_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  enum { kBlocks = 4, kBytes = 512 };
  int32_t tokens[kBlocks * kBlockTokens], filler[2 * kBlockTokens];
  Tokens(5, tokens, kBlocks * kBlockTokens);
  Tokens(6, filler, 2 * kBlockTokens);
  uint8_t data[kBlocks * kBytes], loaded[kBlocks * kBytes];
  for (size_t i = 0; i < kBlocks; ++i) Fill(5, i, data + i * kBytes, kBytes);
  kvtier_block_key keys[kBlocks];

  for (int round = 0; round < 2; ++round) {
    kvtier_options* o = SmallOptions(/*host_blocks=*/2);
    CHECK_OK(kvtier_options_set_disk(o, dir, 16 * 65536));
    CHECK_OK(kvtier_options_set_disk_region_bytes(o, 65536));
    CHECK_OK(kvtier_options_set_disk_admit_min_seen(o, 1));
    kvtier_engine* e = NULL;
    CHECK_OK(kvtier_engine_open(o, &e));
    kvtier_options_destroy(o);
    size_t matched_tokens = 0, matched_blocks = 0;
    if (round == 0) {
      /* The host tier holds 2 blocks: storing 4, two at a time, then 2 others, demotes the 4
       * to disk. */
      for (size_t first = 0; first < kBlocks; first += 2) {
        size_t stored = 0;
        CHECK_OK(kvtier_store_host(e, "default", tokens, (first + 2) * kBlockTokens, NULL, 0, first,
                                   2, data + first * kBytes, 2 * kBytes, &stored));
        CHECK(stored == 2);
      }
      uint8_t other[2 * kBytes];
      memset(other, 0x5a, sizeof(other));
      CHECK_OK(kvtier_store_host(e, "default", filler, 2 * kBlockTokens, NULL, 0, 0, 2, other,
                                 sizeof(other), NULL));
      CHECK_OK(kvtier_flush(e));
      kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
      CHECK_OK(kvtier_engine_stats(e, &stats));
      CHECK(stats.tiers[KVTIER_TIER_DISK].used_blocks >= kBlocks);
      CHECK(stats.tiers[KVTIER_TIER_HOST].demotions >= kBlocks);
    }
    kvtier_tier tiers[kBlocks];
    CHECK_OK(kvtier_match(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                          &matched_blocks, keys, kBlocks, tiers));
    CHECK(matched_blocks == kBlocks);
    for (size_t i = 0; i < kBlocks; ++i) CHECK(tiers[i] == KVTIER_TIER_DISK);
    /* Disk blocks are read through host slots: two at a time fit. */
    memset(loaded, 0, sizeof(loaded));
    for (size_t first = 0; first < kBlocks; first += 2) {
      CHECK_OK(
          kvtier_load_host(e, "default", keys + first, 2, loaded + first * kBytes, 2 * kBytes));
    }
    CHECK(memcmp(loaded, data, sizeof(data)) == 0);
    if (round == 1) {
      kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
      CHECK_OK(kvtier_engine_stats(e, &stats));
      CHECK(stats.tiers[KVTIER_TIER_DISK].hits >= kBlocks);
      size_t erased = 0;
      CHECK_OK(kvtier_erase_namespace(e, "default", &erased));
      CHECK(erased >= kBlocks);
    }
    CHECK_OK(kvtier_engine_close(e));
  }
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
}

/* A cache directory is private and kvtier's own: created 0700 / 0600; a loose mode, a symlinked
 * data file (its target untouched) or a non-empty foreign directory is FAILED_PRECONDITION with
 * a message naming the path; group access on request. */
static kvtier_status_code OpenDisk(const char* dir, int group, kvtier_engine** e) {
  kvtier_options* o = SmallOptions(/*host_blocks=*/2);
  CHECK_OK(kvtier_options_set_disk(o, dir, 2 * 65536));
  CHECK_OK(kvtier_options_set_disk_region_bytes(o, 65536));
  CHECK_OK(kvtier_options_set_disk_group_access(o, group));
  const kvtier_status_code c = kvtier_engine_open(o, e);
  kvtier_options_destroy(o);
  return c;
}

static mode_t ModeOf(const char* path) {
  struct stat st;
  CHECK(lstat(path, &st) == 0);
  return st.st_mode & 07777;
}

static void DiskDirectoryRules(void) {
  char root[] = "/tmp/kvtier_c_api_dir_XXXXXX";
  CHECK(mkdtemp(root) != NULL);
  char dir[128], data[160], victim[160], notes[200];
  snprintf(dir, sizeof(dir), "%s/cache", root);
  snprintf(data, sizeof(data), "%s/data.kvt", dir);
  snprintf(victim, sizeof(victim), "%s/victim", root);
  kvtier_engine* e = NULL;
  const mode_t old = umask(0);
  CHECK_OK(OpenDisk(dir, 0, &e));
  umask(old);
  CHECK_OK(kvtier_engine_close(e));
  CHECK(ModeOf(dir) == 0700);
  CHECK(ModeOf(data) == 0600);

  CHECK(chmod(dir, 0755) == 0);
  CHECK(OpenDisk(dir, 0, &e) == KVTIER_FAILED_PRECONDITION);
  CHECK(strstr(kvtier_last_error(), "0755") != NULL);
  CHECK(strstr(kvtier_last_error(), "chmod 700") != NULL);
  CHECK(chmod(dir, 0750) == 0);
  CHECK(OpenDisk(dir, 0, &e) == KVTIER_FAILED_PRECONDITION);
  CHECK_OK(OpenDisk(dir, 1, &e)); /* group access asked for: a group-readable dir is fine */
  CHECK_OK(kvtier_engine_close(e));
  CHECK(chmod(dir, 0700) == 0);

  /* data.kvt replaced by a link to the user's file: refused, the file untouched. */
  FILE* f = fopen(victim, "wb");
  CHECK(f != NULL);
  for (int i = 0; i < 800; ++i) fputc(i & 0xff, f);
  fclose(f);
  CHECK(unlink(data) == 0);
  CHECK(symlink(victim, data) == 0);
  CHECK(OpenDisk(dir, 0, &e) == KVTIER_FAILED_PRECONDITION);
  CHECK(strstr(kvtier_last_error(), "symbolic link") != NULL);
  struct stat st;
  CHECK(stat(victim, &st) == 0 && st.st_size == 800);

  /* A non-empty directory that is not a cache. */
  char other[160];
  snprintf(other, sizeof(other), "%s/other", root);
  CHECK(mkdir(other, 0700) == 0);
  snprintf(notes, sizeof(notes), "%s/notes.txt", other);
  f = fopen(notes, "w");
  CHECK(f != NULL);
  fputs("mine", f);
  fclose(f);
  CHECK(OpenDisk(other, 0, &e) == KVTIER_FAILED_PRECONDITION);
  CHECK(strstr(kvtier_last_error(), "not empty") != NULL);

  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
  CHECK(system(cmd) == 0);
}

/* An inference engine's own KV memory, registered: on the emulated device that is host memory
 * the caller owns, named by its address. Stores read it and loads write it in place, in block
 * and in paged form; before registration and after unregistration it is refused. */
static void DeviceMemory(void) {
  kvtier_engine* e = OpenSmall(64);
  enum { kBlocks = 4, kBytes = 512, kPages = 4 };
  /* fp16 part (one layer's K or V of a block): 4 tokens x 2 heads x 8 dims x 2 bytes. */
  enum { kPartBytes = 128, kLayerTensor = 2 * kPages * kPartBytes };
  int32_t tokens[kBlocks * kBlockTokens];
  Tokens(7, tokens, kBlocks * kBlockTokens);

  void* raw = NULL;
  CHECK(posix_memalign(&raw, 256, 2 * kBlocks * kBytes) == 0);
  uint8_t* pool = (uint8_t*)raw;
  const kvtier_device_ptr base = (kvtier_device_ptr)(uintptr_t)pool;
  kvtier_device_ptr src[kBlocks], dst[kBlocks];
  for (size_t i = 0; i < kBlocks; ++i) {
    Fill(7, i, pool + i * kBytes, kBytes);
    memset(pool + (kBlocks + i) * kBytes, 0xA5, kBytes);
    src[i] = base + i * kBytes;
    dst[i] = base + (kBlocks + i) * kBytes;
  }
  kvtier_handle* h = NULL;
  CHECK_ERROR(kvtier_store(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, 0, src, kBlocks,
                           &h),
              KVTIER_INVALID_ARGUMENT, "RegisterDeviceMemory");

  CHECK_ERROR(kvtier_engine_register_device_memory(NULL, base, 16), KVTIER_INVALID_ARGUMENT,
              "engine is NULL");
  CHECK_ERROR(kvtier_engine_register_device_memory(e, 0, 16), KVTIER_INVALID_ARGUMENT,
              "base is 0");
  CHECK_ERROR(kvtier_engine_register_device_memory(e, base, 0), KVTIER_INVALID_ARGUMENT,
              "bytes is 0");
  CHECK_OK(kvtier_engine_register_device_memory(e, base, 2 * kBlocks * kBytes));
  CHECK_ERROR(kvtier_engine_register_device_memory(e, base, 16), KVTIER_ALREADY_EXISTS,
              "registered already");
  CHECK_ERROR(kvtier_engine_register_device_memory(e, base + 8, 16), KVTIER_INVALID_ARGUMENT,
              "overlaps");
  /* kvtier's own buffers need no registration. */
  kvtier_device_ptr own = 0;
  CHECK_OK(kvtier_buffer_alloc(e, kBytes, &own));
  CHECK_ERROR(kvtier_engine_register_device_memory(e, own, kBytes), KVTIER_INVALID_ARGUMENT,
              "needs no registration");

  /* Blocks: store from the first half, load in reverse order into the second. */
  CHECK_OK(
      kvtier_store(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, 0, src, kBlocks, &h));
  CHECK_OK(kvtier_handle_wait(h));
  kvtier_handle_destroy(h);
  kvtier_block_key keys[kBlocks], reversed[kBlocks];
  size_t matched_tokens = 0, matched_blocks = 0;
  CHECK_OK(kvtier_match(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, keys, kBlocks, NULL));
  CHECK(matched_blocks == kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) reversed[i] = keys[kBlocks - 1 - i];
  CHECK_OK(kvtier_load(e, "default", reversed, kBlocks, dst, /*layerwise=*/1, &h));
  CHECK_OK(kvtier_handle_wait(h));
  kvtier_handle_destroy(h);
  for (size_t i = 0; i < kBlocks; ++i) {
    uint8_t want[kBytes];
    Fill(7, kBlocks - 1 - i, want, kBytes);
    CHECK(memcmp(pool + (kBlocks + i) * kBytes, want, kBytes) == 0);
  }
  /* kvtier_buffer_read reads registered memory as any device memory. */
  uint8_t back[kBytes];
  CHECK_OK(kvtier_buffer_read(e, back, dst[0], kBytes));
  CHECK(memcmp(back, pool + kBlocks * kBytes, kBytes) == 0);

  /* Paged: a second registered pool of kPages pages per layer. Load the blocks into pages
   * {2, 0, 3, 1}, store them from there into tenant-b, and read them back as host memory. */
  void* raw_paged = NULL;
  CHECK(posix_memalign(&raw_paged, 256, kLayers * kLayerTensor) == 0);
  memset(raw_paged, 0, kLayers * kLayerTensor);
  const kvtier_device_ptr paged_base = (kvtier_device_ptr)(uintptr_t)raw_paged;
  kvtier_device_ptr layers[kLayers];
  for (size_t l = 0; l < kLayers; ++l) layers[l] = paged_base + l * kLayerTensor;
  const kvtier_paged_pool paged = {layers, kLayers, kPages, KVTIER_PAGE_HND};
  const uint32_t pages[kBlocks] = {2, 0, 3, 1};
  CHECK_ERROR(kvtier_load_paged(e, "default", keys, kBlocks, &paged, pages, 0, &h),
              KVTIER_INVALID_ARGUMENT, "paged pool layer 0");
  CHECK_OK(kvtier_engine_register_device_memory(e, paged_base, kLayers * kLayerTensor));
  CHECK_OK(kvtier_load_paged(e, "default", keys, kBlocks, &paged, pages, 1, &h));
  CHECK_OK(kvtier_handle_wait(h));
  kvtier_handle_destroy(h);
  CHECK_OK(kvtier_store_paged(e, "tenant-b", tokens, kBlocks * kBlockTokens, NULL, 0, 0, &paged,
                              pages, kBlocks, &h));
  CHECK_OK(kvtier_handle_wait(h));
  kvtier_handle_destroy(h);
  kvtier_block_key b_keys[kBlocks];
  CHECK_OK(kvtier_match(e, "tenant-b", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, b_keys, kBlocks, NULL));
  CHECK(matched_blocks == kBlocks);
  uint8_t loaded[kBlocks * kBytes];
  CHECK_OK(kvtier_load_host(e, "tenant-b", b_keys, kBlocks, loaded, sizeof(loaded)));
  CHECK(memcmp(loaded, pool, kBlocks * kBytes) == 0);

  /* Unregistered, the memory is refused again. */
  CHECK_OK(kvtier_engine_unregister_device_memory(e, base));
  CHECK_ERROR(kvtier_engine_unregister_device_memory(e, base), KVTIER_NOT_FOUND, "not the start");
  CHECK_ERROR(kvtier_engine_unregister_device_memory(e, 0), KVTIER_INVALID_ARGUMENT, "base is 0");
  CHECK_ERROR(kvtier_load(e, "default", keys, kBlocks, dst, 0, &h), KVTIER_INVALID_ARGUMENT,
              "buffer 0");
  CHECK_OK(kvtier_buffer_free(e, own));
  /* The paged pool stays registered: close forgets it, and never frees it. */
  CHECK_OK(kvtier_engine_close(e));
  free(raw_paged);
  free(raw);
}

/* Namespace limits (a host quota, a time to live) and secure erase, set through the options
 * and on the open engine. */
static void NamespaceLimits(void) {
  enum { kBytes = 512, kBlocks = 8 };
  kvtier_options* o = SmallOptions(64);
  const kvtier_namespace_limits quota = {0, 4 * kBytes, 0, 0}; /* 4 host blocks */
  const kvtier_namespace_limits none = {0, 0, 0, 0};
  const kvtier_namespace_limits tiny = {0, 100, 0, 0}; /* less than a block */
  CHECK_ERROR(kvtier_options_set_namespace_limits(NULL, "default", &quota),
              KVTIER_INVALID_ARGUMENT, "options is NULL");
  CHECK_ERROR(kvtier_options_set_namespace_limits(o, NULL, &quota), KVTIER_INVALID_ARGUMENT,
              "ns is NULL");
  CHECK_ERROR(kvtier_options_set_namespace_limits(o, "default", NULL), KVTIER_INVALID_ARGUMENT,
              "limits is NULL");
  CHECK_ERROR(kvtier_options_set_namespace_limits(o, "has space", &quota),
              KVTIER_INVALID_ARGUMENT, "namespace name");
  const kvtier_namespace_limits forever = {0, 0, 0, UINT64_MAX};
  CHECK_ERROR(kvtier_options_set_namespace_limits(o, "default", &forever),
              KVTIER_INVALID_ARGUMENT, "ttl_ms");
  CHECK_OK(kvtier_options_set_namespace_limits(o, "tenant-b", &tiny));
  CHECK_ERROR(kvtier_options_validate(o), KVTIER_INVALID_ARGUMENT, "smaller than one block");
  CHECK_OK(kvtier_options_set_namespace_limits(o, "tenant-b", &none));
  CHECK_OK(kvtier_options_set_namespace_limits(o, "default", &quota));
  CHECK_ERROR(kvtier_options_set_secure_erase(NULL, 1), KVTIER_INVALID_ARGUMENT,
              "options is NULL");
  CHECK_OK(kvtier_options_set_secure_erase(o, 1));
  CHECK_OK(kvtier_options_validate(o));
  kvtier_engine* e = NULL;
  CHECK_OK(kvtier_engine_open(o, &e));
  kvtier_options_destroy(o);

  /* 8 blocks into each namespace: "default" keeps at most its quota of 4 host blocks. */
  int32_t tokens[kBlocks * kBlockTokens];
  uint8_t data[kBlocks * kBytes];
  Tokens(8, tokens, kBlocks * kBlockTokens);
  for (size_t i = 0; i < kBlocks; ++i) Fill(8, i, data + i * kBytes, kBytes);
  for (size_t first = 0; first < kBlocks; first += 2) {
    CHECK_OK(kvtier_store_host(e, "default", tokens, (first + 2) * kBlockTokens, NULL, 0, first,
                               2, data + first * kBytes, 2 * kBytes, NULL));
    CHECK_OK(kvtier_store_host(e, "tenant-b", tokens, (first + 2) * kBlockTokens, NULL, 0, first,
                               2, data + first * kBytes, 2 * kBytes, NULL));
  }
  kvtier_namespace_stats limited = {.struct_size = sizeof(kvtier_namespace_stats)};
  kvtier_namespace_stats free_ns = {.struct_size = sizeof(kvtier_namespace_stats)};
  CHECK_OK(kvtier_namespace_stats_get(e, "default", &limited));
  CHECK_OK(kvtier_namespace_stats_get(e, "tenant-b", &free_ns));
  CHECK(limited.blocks_per_tier[KVTIER_TIER_HOST] == 4);
  CHECK(free_ns.blocks_per_tier[KVTIER_TIER_HOST] == kBlocks);

  /* Lifting the quota lets "default" grow again. */
  CHECK_OK(kvtier_set_namespace_limits(e, "default", &none));
  CHECK_OK(kvtier_store_host(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, 0, kBlocks,
                             data, sizeof(data), NULL));
  CHECK_OK(kvtier_namespace_stats_get(e, "default", &limited));
  CHECK(limited.blocks_per_tier[KVTIER_TIER_HOST] == kBlocks);

  /* A time to live of 50 ms: tenant-b's blocks are gone soon after. */
  const kvtier_namespace_limits ttl = {0, 0, 0, 50};
  CHECK_OK(kvtier_set_namespace_limits(e, "tenant-b", &ttl));
  size_t matched_tokens = 0, matched_blocks = 0;
  for (int i = 0; i < 100; ++i) {
    CHECK_OK(kvtier_match(e, "tenant-b", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                          &matched_blocks, NULL, 0, NULL));
    if (matched_blocks == 0) break;
    const struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  CHECK(matched_blocks == 0);
  CHECK_OK(kvtier_match(e, "default", tokens, kBlocks * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_blocks == kBlocks);

  CHECK_ERROR(kvtier_set_namespace_limits(e, "nope", &quota), KVTIER_NOT_FOUND, "nope");
  CHECK_ERROR(kvtier_set_namespace_limits(e, "default", &tiny), KVTIER_INVALID_ARGUMENT,
              "smaller than one block");
  CHECK_ERROR(kvtier_set_namespace_limits(e, "default", NULL), KVTIER_INVALID_ARGUMENT,
              "limits is NULL");
  CHECK_ERROR(kvtier_set_namespace_limits(NULL, "default", &quota), KVTIER_INVALID_ARGUMENT,
              "engine is NULL");
  /* With secure erase on, erasing still works as before. */
  size_t erased = 0;
  CHECK_OK(kvtier_erase_namespace(e, "default", &erased));
  CHECK(erased == kBlocks);
  CHECK_OK(kvtier_engine_close(e));
}

/* Several threads store, match and load at once on one engine; each thread's errors stay
 * its own (the thread-local message). */
enum { kThreads = 4, kRounds = 20 };

struct WorkerArgs {
  kvtier_engine* engine;
  int32_t seed;
};

static void* Worker(void* arg) {
  const struct WorkerArgs* a = (const struct WorkerArgs*)arg;
  kvtier_engine* e = a->engine;
  const int32_t seed = a->seed;
  for (int r = 0; r < kRounds; ++r) {
    int32_t tokens[2 * kBlockTokens];
    Tokens(seed * 100 + r, tokens, 2 * kBlockTokens);
    uint8_t data[2 * 512], back[2 * 512];
    Fill(seed + r, 0, data, 512);
    Fill(seed + r, 1, data + 512, 512);
    CHECK_OK(kvtier_store_host(e, "default", tokens, 2 * kBlockTokens, NULL, 0, 0, 2, data,
                               sizeof(data), NULL));
    size_t matched_tokens = 0, matched_blocks = 0;
    kvtier_block_key keys[2];
    CHECK_OK(kvtier_match(e, "default", tokens, 2 * kBlockTokens, NULL, 0, &matched_tokens,
                          &matched_blocks, keys, 2, NULL));
    CHECK(matched_blocks == 2);
    CHECK_OK(kvtier_load_host(e, "default", keys, 2, back, sizeof(back)));
    CHECK(memcmp(back, data, sizeof(data)) == 0);
    CHECK_ERROR(
        kvtier_match(e, NULL, tokens, 1, NULL, 0, &matched_tokens, &matched_blocks, NULL, 0, NULL),
        KVTIER_INVALID_ARGUMENT, "ns is NULL");
  }
  return NULL;
}

static void Threads(void) {
  kvtier_engine* e = OpenSmall(kThreads * kRounds * 2);
  pthread_t threads[kThreads];
  struct WorkerArgs args[kThreads];
  for (int i = 0; i < kThreads; ++i) {
    args[i].engine = e;
    args[i].seed = 100 + i;
    CHECK(pthread_create(&threads[i], NULL, Worker, &args[i]) == 0);
  }
  for (int i = 0; i < kThreads; ++i) CHECK(pthread_join(threads[i], NULL) == 0);
  kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.loaded_blocks == kThreads * kRounds * 2);
  CHECK_OK(kvtier_engine_close(e));
}

/* The stats structs' struct_size: a caller compiled against an older, shorter struct gets its
 * prefix filled and nothing past it; a caller with a longer (newer) struct gets the fields this
 * library has and zeros after them; sizes that are no version of the struct are refused and
 * write nothing. */
static void StatsStructSize(void) {
  kvtier_engine* e = OpenSmall(16);
  int32_t tokens[2 * kBlockTokens];
  Tokens(7, tokens, 2 * kBlockTokens);
  uint8_t data[2 * 512];
  Fill(7, 0, data, 512);
  Fill(7, 1, data + 512, 512);
  CHECK_OK(kvtier_store_host(e, "tenant-b", tokens, 2 * kBlockTokens, NULL, 0, 0, 2, data,
                             sizeof(data), NULL));
  size_t matched_tokens = 0, matched_blocks = 0;
  CHECK_OK(kvtier_match(e, "tenant-b", tokens, 2 * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_blocks == 2);

  /* The whole struct: the fields after the first version are filled too. */
  kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.struct_size == sizeof(kvtier_stats));
  CHECK(stats.stored_blocks == 2 && stats.matched_blocks == 2);
  CHECK(stats.block_bytes == 512);
  CHECK(stats.match_latency.count == 1 && stats.store_latency.count == 1);
  CHECK(stats.tiers[KVTIER_TIER_HOST].used_blocks == 2);

  /* An older caller: only the first version's bytes. Past them, nothing is written. */
  union {
    kvtier_stats s;
    unsigned char bytes[sizeof(kvtier_stats) + 64];
  } buf;
  memset(buf.bytes, 0xAB, sizeof(buf.bytes));
  buf.s.struct_size = KVTIER_STATS_SIZE_MIN;
  CHECK_OK(kvtier_engine_stats(e, &buf.s));
  CHECK(buf.s.struct_size == KVTIER_STATS_SIZE_MIN);
  CHECK(buf.s.stored_blocks == 2 && buf.s.matched_blocks == 2 && buf.s.namespaces == 2);
  CHECK(buf.s.tiers[KVTIER_TIER_HOST].used_blocks == 2);
  for (size_t i = KVTIER_STATS_SIZE_MIN; i < sizeof(buf.bytes); ++i) CHECK(buf.bytes[i] == 0xAB);

  /* A newer caller, with fields this library does not know: those come back zero, and
   * struct_size says how much was filled. */
  memset(buf.bytes, 0xAB, sizeof(buf.bytes));
  buf.s.struct_size = sizeof(buf.bytes);
  CHECK_OK(kvtier_engine_stats(e, &buf.s));
  CHECK(buf.s.struct_size == sizeof(kvtier_stats));
  CHECK(buf.s.block_bytes == 512 && buf.s.stored_blocks == 2);
  for (size_t i = sizeof(kvtier_stats); i < sizeof(buf.bytes); ++i) CHECK(buf.bytes[i] == 0);

  /* Not a size of any version: refused, naming struct_size, and nothing written. */
  const uint64_t bad[] = {0, 8, KVTIER_STATS_SIZE_MIN - 8, KVTIER_STATS_SIZE_MIN + 4,
                          KVTIER_STATS_MAX_SIZE + 8, UINT64_MAX};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
    memset(buf.bytes, 0xAB, sizeof(buf.bytes));
    buf.s.struct_size = bad[i];
    CHECK_ERROR(kvtier_engine_stats(e, &buf.s), KVTIER_INVALID_ARGUMENT, "struct_size");
    CHECK(buf.s.struct_size == bad[i]);
    for (size_t j = sizeof(uint64_t); j < sizeof(buf.bytes); ++j) CHECK(buf.bytes[j] == 0xAB);
  }

  /* The same for one namespace's figures. */
  kvtier_namespace_stats ns = {.struct_size = sizeof(kvtier_namespace_stats)};
  CHECK_OK(kvtier_namespace_stats_get(e, "tenant-b", &ns));
  CHECK(ns.struct_size == sizeof(kvtier_namespace_stats));
  CHECK(ns.stored_blocks == 2 && ns.blocks_per_tier[KVTIER_TIER_HOST] == 2);
  CHECK(ns.matched_blocks == 2 && ns.hits_per_tier[KVTIER_TIER_HOST] == 0);
  union {
    kvtier_namespace_stats s;
    unsigned char bytes[sizeof(kvtier_namespace_stats) + 64];
  } nbuf;
  memset(nbuf.bytes, 0xAB, sizeof(nbuf.bytes));
  nbuf.s.struct_size = KVTIER_NAMESPACE_STATS_SIZE_MIN;
  CHECK_OK(kvtier_namespace_stats_get(e, "tenant-b", &nbuf.s));
  CHECK(nbuf.s.struct_size == KVTIER_NAMESPACE_STATS_SIZE_MIN);
  CHECK(nbuf.s.stored_blocks == 2 && nbuf.s.blocks == 2);
  for (size_t i = KVTIER_NAMESPACE_STATS_SIZE_MIN; i < sizeof(nbuf.bytes); ++i) {
    CHECK(nbuf.bytes[i] == 0xAB);
  }
  memset(nbuf.bytes, 0xAB, sizeof(nbuf.bytes));
  nbuf.s.struct_size = sizeof(nbuf.bytes);
  CHECK_OK(kvtier_namespace_stats_get(e, "tenant-b", &nbuf.s));
  CHECK(nbuf.s.struct_size == sizeof(kvtier_namespace_stats));
  for (size_t i = sizeof(kvtier_namespace_stats); i < sizeof(nbuf.bytes); ++i) {
    CHECK(nbuf.bytes[i] == 0);
  }
  nbuf.s.struct_size = KVTIER_NAMESPACE_STATS_SIZE_MIN - 8;
  CHECK_ERROR(kvtier_namespace_stats_get(e, "tenant-b", &nbuf.s), KVTIER_INVALID_ARGUMENT,
              "struct_size");
  /* The size is checked before the namespace is looked up. */
  CHECK_ERROR(kvtier_namespace_stats_get(e, "nobody", &nbuf.s), KVTIER_INVALID_ARGUMENT,
              "struct_size");
  CHECK_OK(kvtier_engine_close(e));
}

/* The remote tier's options: each setter takes what kvtier_engine_open takes and refuses the
 * rest, naming the field, and leaves the options as they were. */
static void RemoteOptions(void) {
  kvtier_options* o = SmallOptions(16);
  CHECK(kvtier_c_api_version() == KVTIER_C_API_VERSION && KVTIER_C_API_VERSION == 7);
  CHECK(KVTIER_NUM_TIERS == 4 && KVTIER_TIER_REMOTE == 3);

  /* Seeds: a comma-separated list (spaces ignored), or one at a time. */
  CHECK_OK(kvtier_options_set_remote_seeds(o, "127.0.0.1:7000, 127.0.0.1:7001"));
  CHECK_OK(kvtier_options_add_remote_seed(o, "localhost:7002"));
  CHECK_OK(kvtier_options_add_remote_seed(o, "[::1]:7003"));
  CHECK_ERROR(kvtier_options_set_remote_seeds(o, NULL), KVTIER_INVALID_ARGUMENT, "seeds");
  CHECK_ERROR(kvtier_options_set_remote_seeds(o, ""), KVTIER_INVALID_ARGUMENT, "empty");
  CHECK_ERROR(kvtier_options_set_remote_seeds(o, "127.0.0.1:7000,,127.0.0.1:7001"),
              KVTIER_INVALID_ARGUMENT, "entry 2 is empty");
  CHECK_ERROR(kvtier_options_set_remote_seeds(o, "127.0.0.1"), KVTIER_INVALID_ARGUMENT,
              "remote.seeds");
  CHECK_ERROR(kvtier_options_set_remote_seeds(o, "127.0.0.1:7000,127.0.0.1:70000"),
              KVTIER_INVALID_ARGUMENT, "70000");
  CHECK_ERROR(kvtier_options_add_remote_seed(o, "127.0.0.1:0"), KVTIER_INVALID_ARGUMENT,
              "remote.seeds");
  CHECK_ERROR(kvtier_options_add_remote_seed(o, "127.0.0.1:port"), KVTIER_INVALID_ARGUMENT,
              "no port number");
  CHECK_ERROR(kvtier_options_add_remote_seed(o, ""), KVTIER_INVALID_ARGUMENT, "seed is empty");

  CHECK_OK(kvtier_options_set_remote_auth(o, "app", "secret"));
  CHECK_OK(kvtier_options_set_remote_auth(o, NULL, NULL));
  CHECK_ERROR(kvtier_options_set_remote_auth(NULL, "app", "pw"), KVTIER_INVALID_ARGUMENT,
              "options");

  /* TLS: a CA is required, a client certificate comes with its key. */
  CHECK_OK(kvtier_options_set_remote_tls(o, 1, "/etc/ca.pem", NULL, NULL, NULL));
  CHECK_OK(kvtier_options_set_remote_tls(o, 1, "/etc/ca.pem", "c.pem", "c.key", "redis.local"));
  CHECK_ERROR(kvtier_options_set_remote_tls(o, 1, NULL, NULL, NULL, NULL), KVTIER_INVALID_ARGUMENT,
              "ca_file");
  CHECK_ERROR(kvtier_options_set_remote_tls(o, 1, "/etc/ca.pem", "c.pem", NULL, NULL),
              KVTIER_INVALID_ARGUMENT, "key_file");
  CHECK_OK(kvtier_options_set_remote_tls(o, 0, NULL, NULL, NULL, NULL));

  CHECK_OK(kvtier_options_set_remote_timeouts_ms(o, 500, 2000, 50));
  CHECK_ERROR(kvtier_options_set_remote_timeouts_ms(o, 0, 2000, 50), KVTIER_INVALID_ARGUMENT,
              "connect_ms");
  CHECK_ERROR(kvtier_options_set_remote_timeouts_ms(o, 500, 600001, 50), KVTIER_INVALID_ARGUMENT,
              "op_ms");
  CHECK_ERROR(kvtier_options_set_remote_timeouts_ms(o, 500, 2000, UINT64_MAX),
              KVTIER_INVALID_ARGUMENT, "match_ms");

  CHECK_OK(kvtier_options_set_remote_connections(o, 4, 2));
  CHECK_ERROR(kvtier_options_set_remote_connections(o, 0, 2), KVTIER_INVALID_ARGUMENT,
              "remote.connections_per_node");
  CHECK_ERROR(kvtier_options_set_remote_connections(o, 2, 17), KVTIER_INVALID_ARGUMENT,
              "remote.io_threads");
  CHECK_OK(kvtier_options_set_remote_max_inflight_bytes(o, 16u << 20));
  CHECK_ERROR(kvtier_options_set_remote_max_inflight_bytes(o, 0), KVTIER_INVALID_ARGUMENT,
              "max_inflight_bytes");

  CHECK_OK(kvtier_options_set_remote_write_policy(o, "on-evict"));
  CHECK_OK(kvtier_options_set_remote_write_policy(o, "both"));
  CHECK_OK(kvtier_options_set_remote_write_policy(o, "write-through"));
  CHECK_ERROR(kvtier_options_set_remote_write_policy(o, "write-back"), KVTIER_INVALID_ARGUMENT,
              "remote.write_policy");
  CHECK_ERROR(kvtier_options_set_remote_write_policy(o, NULL), KVTIER_INVALID_ARGUMENT, "policy");

  CHECK_OK(kvtier_options_set_remote_admission(o, 2, 100.0));
  CHECK_ERROR(kvtier_options_set_remote_admission(o, 0, 0.0), KVTIER_INVALID_ARGUMENT,
              "min_seen");
  CHECK_ERROR(kvtier_options_set_remote_admission(o, 1, -5.0), KVTIER_INVALID_ARGUMENT, "budget");

  CHECK_OK(kvtier_options_set_remote_codec(o, "zstd", 3));
  CHECK_ERROR(kvtier_options_set_remote_codec(o, "lz4", 1), KVTIER_INVALID_ARGUMENT,
              "remote.codec");
  CHECK_ERROR(kvtier_options_set_remote_codec(o, "zstd", 0), KVTIER_INVALID_ARGUMENT,
              "remote.zstd_level");
  CHECK_OK(kvtier_options_set_remote_codec(o, "none", 1));

  /* HMAC secrets: raw bytes, zeros allowed, at least 16 of them, for a valid namespace. */
  const unsigned char secret[20] = {0, 1, 2, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 1};
  CHECK_OK(kvtier_options_add_remote_hmac_secret(o, "default", secret, sizeof(secret)));
  CHECK_ERROR(kvtier_options_add_remote_hmac_secret(o, "default", secret, 8),
              KVTIER_INVALID_ARGUMENT, "remote.hmac_secrets");
  CHECK_ERROR(kvtier_options_add_remote_hmac_secret(o, "bad name", secret, sizeof(secret)),
              KVTIER_INVALID_ARGUMENT, "remote.hmac_secrets");
  CHECK_ERROR(kvtier_options_add_remote_hmac_secret(o, "default", NULL, 16),
              KVTIER_INVALID_ARGUMENT, "secret is NULL");
  CHECK_OK(kvtier_options_set_remote_allow_unreachable(o, 0));

  /* Everything set so far (the failed calls changed nothing) validates as a whole. */
  CHECK_OK(kvtier_options_validate(o));

  /* What needs the other options is checked as a whole, naming the field: the in-flight cap
   * against the block size (512 bytes + a 256-byte header), a quantized codec against fp16. */
  CHECK_OK(kvtier_options_set_remote_max_inflight_bytes(o, 700));
  CHECK_ERROR(kvtier_options_validate(o), KVTIER_INVALID_ARGUMENT, "remote.max_inflight_bytes");
  CHECK_OK(kvtier_options_set_remote_max_inflight_bytes(o, 1u << 20));
  CHECK_OK(kvtier_options_validate(o));

  /* Unreachable seeds: open fails saying so, unless allow_unreachable. Port 1 on loopback
   * refuses connections at once. */
  CHECK_OK(kvtier_options_set_remote_seeds(o, "127.0.0.1:1"));
  CHECK_OK(kvtier_options_set_remote_timeouts_ms(o, 200, 500, 50));
  kvtier_engine* e = NULL;
  CHECK_ERROR(kvtier_engine_open(o, &e), KVTIER_UNAVAILABLE, "127.0.0.1:1");
  CHECK(e == NULL);
  CHECK_OK(kvtier_options_set_remote_allow_unreachable(o, 1));
  CHECK_OK(kvtier_engine_open(o, &e));
  /* Degraded: a match finds nothing remote and says so in the remote figures. */
  int32_t tokens[2 * kBlockTokens];
  Tokens(11, tokens, 2 * kBlockTokens);
  size_t matched_tokens = 9, matched_blocks = 9;
  CHECK_OK(kvtier_match(e, "default", tokens, 2 * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, NULL, 0, NULL));
  CHECK(matched_blocks == 0);
  kvtier_stats stats = {.struct_size = sizeof(kvtier_stats)};
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.remote_enabled == 1);
  CHECK(stats.tiers[KVTIER_TIER_REMOTE].hits == 0);
  CHECK_OK(kvtier_engine_close(e));
  kvtier_options_destroy(o);
}

/* An engine without a remote tier reports it off: zeros, no nodes. */
static void RemoteOff(void) {
  kvtier_engine* e = OpenSmall(16);
  int32_t tokens[2 * kBlockTokens];
  Tokens(12, tokens, 2 * kBlockTokens);
  uint8_t data[2 * 512];
  Fill(12, 0, data, 512);
  Fill(12, 1, data + 512, 512);
  CHECK_OK(kvtier_store_host(e, "default", tokens, 2 * kBlockTokens, NULL, 0, 0, 2, data,
                             sizeof(data), NULL));
  kvtier_stats stats;
  memset(&stats, 0xAB, sizeof(stats));
  stats.struct_size = sizeof(stats);
  CHECK_OK(kvtier_engine_stats(e, &stats));
  CHECK(stats.tiers[KVTIER_TIER_HOST].used_blocks == 2);
  CHECK(stats.tiers[KVTIER_TIER_REMOTE].used_blocks == 0);
  CHECK(stats.tiers[KVTIER_TIER_REMOTE].capacity_blocks == 0);
  CHECK(stats.remote_enabled == 0 && stats.remote_writes == 0 && stats.remote_nodes == 0);
  CHECK(stats.remote_get_latency.count == 0);
  kvtier_remote_node_stats node = {.struct_size = sizeof(node)};
  CHECK_ERROR(kvtier_remote_node_stats_get(e, 0, &node), KVTIER_OUT_OF_RANGE,
              "no remote tier");
  node.struct_size = 8;
  CHECK_ERROR(kvtier_remote_node_stats_get(e, 0, &node), KVTIER_INVALID_ARGUMENT, "struct_size");
  CHECK_ERROR(kvtier_remote_node_stats_get(e, 0, NULL), KVTIER_INVALID_ARGUMENT, "out_stats");
  CHECK_OK(kvtier_engine_close(e));
}

/* An MLA latent (one part per layer) and tensor-parallel shards through the C API: block sizes,
 * exact round trips, keys that differ between ranks of different heads and agree between ranks
 * of the same bytes, and the bad arguments named. */
static void ModelShapes(void) {
  kvtier_options* o = NULL;
  CHECK_OK(kvtier_options_create(&o));
  CHECK_ERROR(kvtier_options_set_latent(o, 16), KVTIER_INVALID_ARGUMENT, "no geometry");
  CHECK_ERROR(kvtier_options_set_tensor_parallel(o, 0, 2, 0), KVTIER_INVALID_ARGUMENT,
              "no geometry");
  /* 2 layers x 4 tokens x 48 (32 latent + 16 rope) x bf16 = 768 bytes: no K/V factor. */
  CHECK_OK(kvtier_options_set_geometry(o, 2, 1, 48, KVTIER_DTYPE_BFLOAT16, kBlockTokens));
  CHECK_ERROR(kvtier_options_set_latent(o, 48), KVTIER_INVALID_ARGUMENT, "rope_dim = 48");
  CHECK_ERROR(kvtier_options_set_latent(NULL, 16), KVTIER_INVALID_ARGUMENT, "options");
  CHECK_OK(kvtier_options_set_latent(o, 16));
  CHECK_OK(kvtier_options_set_tensor_parallel(o, 1, 2, 0)); /* the latent: every rank's */
  CHECK_OK(kvtier_options_set_model_fingerprint(o, "c-api-mla@1"));
  CHECK_OK(kvtier_options_set_device(o, KVTIER_DEVICE_EMULATED, 0, 0.0));
  CHECK_OK(kvtier_options_set_tier_bytes(o, 0, 8 * 768));
  kvtier_engine* e = NULL;
  CHECK_OK(kvtier_engine_open(o, &e));
  kvtier_options_destroy(o);
  size_t block = 0;
  CHECK_OK(kvtier_engine_block_bytes(e, &block));
  CHECK(block == 768);
  int32_t tokens[2 * kBlockTokens];
  Tokens(9, tokens, 2 * kBlockTokens);
  uint8_t data[2 * 768], loaded[2 * 768];
  for (size_t i = 0; i < 2; ++i) Fill(9, i, data + i * 768, 768);
  size_t stored = 0;
  CHECK_OK(kvtier_store_host(e, "default", tokens, 2 * kBlockTokens, NULL, 0, 0, 2, data,
                             sizeof(data), &stored));
  CHECK(stored == 2);
  kvtier_block_key keys[2];
  kvtier_tier tiers[2];
  size_t matched_tokens = 0, matched_blocks = 0;
  CHECK_OK(kvtier_match(e, "default", tokens, 2 * kBlockTokens, NULL, 0, &matched_tokens,
                        &matched_blocks, keys, 2, tiers));
  CHECK(matched_blocks == 2);
  memset(loaded, 0, sizeof(loaded));
  CHECK_OK(kvtier_load_host(e, "default", keys, 2, loaded, sizeof(loaded)));
  CHECK(memcmp(loaded, data, sizeof(data)) == 0);
  CHECK_OK(kvtier_engine_close(e));

  /* GQA, 4 KV heads at TP = 2: each rank holds 2 heads, half the block, under its own keys. */
  kvtier_block_key rank_keys[2][2];
  for (uint32_t rank = 0; rank < 2; ++rank) {
    CHECK_OK(kvtier_options_create(&o));
    CHECK_OK(kvtier_options_set_geometry(o, 2, 4, 8, KVTIER_DTYPE_FP8_E4M3, kBlockTokens));
    CHECK_ERROR(kvtier_options_set_tensor_parallel(o, 2, 2, 0), KVTIER_INVALID_ARGUMENT,
                "tp_rank = 2");
    CHECK_ERROR(kvtier_options_set_tensor_parallel(o, 0, 3, 0), KVTIER_INVALID_ARGUMENT,
                "not divisible by tp_size = 3");
    CHECK_ERROR(kvtier_options_set_tensor_parallel(o, 0, 2, 2), KVTIER_INVALID_ARGUMENT,
                "store_rank = 2");
    CHECK_ERROR(kvtier_options_set_latent(o, 0), KVTIER_INVALID_ARGUMENT, "num_kv_heads = 4");
    CHECK_OK(kvtier_options_set_tensor_parallel(o, rank, 2, 0));
    CHECK_ERROR(kvtier_options_set_tensor_parallel(o, rank, 2, 0), KVTIER_INVALID_ARGUMENT,
                "already a shard");
    CHECK_OK(kvtier_options_set_model_fingerprint(o, "c-api-tp@1"));
    CHECK_OK(kvtier_options_set_device(o, KVTIER_DEVICE_EMULATED, 0, 0.0));
    /* fp8: 2 layers x (K,V) x 4 tokens x 2 heads x 8 dims x 1 byte = 256 bytes */
    CHECK_OK(kvtier_options_set_tier_bytes(o, 0, 8 * 256));
    CHECK_OK(kvtier_engine_open(o, &e));
    kvtier_options_destroy(o);
    CHECK_OK(kvtier_engine_block_bytes(e, &block));
    CHECK(block == 256);
    CHECK_OK(
        kvtier_store_host(e, "default", tokens, 2 * kBlockTokens, NULL, 0, 0, 2, data, 512, NULL));
    CHECK_OK(kvtier_match(e, "default", tokens, 2 * kBlockTokens, NULL, 0, &matched_tokens,
                          &matched_blocks, rank_keys[rank], 2, tiers));
    CHECK(matched_blocks == 2);
    CHECK_OK(kvtier_engine_close(e));
  }
  CHECK(memcmp(rank_keys[0], rank_keys[1], sizeof(rank_keys[0])) != 0);
}

int main(int argc, char** argv) {
  static const struct {
    const char* name;
    void (*run)(void);
  } kCases[] = {{"round_trip", RoundTrip},
                {"match_counts", MatchCounts},
                {"bad_arguments", BadArguments},
                {"gpu_tier_lease", GpuTierLease},
                {"disk_reopen", DiskReopen},
                {"disk_directory_rules", DiskDirectoryRules},
                {"threads", Threads},
                {"device_memory", DeviceMemory},
                {"namespace_limits", NamespaceLimits},
                {"stats_struct_size", StatsStructSize},
                {"remote_options", RemoteOptions},
                {"remote_off", RemoteOff},
                {"model_shapes", ModelShapes}};
  if (argc != 2) {
    fprintf(stderr, "usage: %s CASE\n", argv[0]);
    return 2;
  }
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); ++i) {
    if (strcmp(argv[1], kCases[i].name) == 0) {
      kCases[i].run();
      printf("%s: passed\n", argv[1]);
      return 0;
    }
  }
  fprintf(stderr, "unknown case '%s'\n", argv[1]);
  return 2;
}
