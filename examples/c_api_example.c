/* kvtier_c_api_example — the C API (kvtier/c_api.h) end to end, as a C program (or any
 * language's FFI) would use it: open an engine, store a prompt's KV blocks, ask how much of a
 * longer prompt is cached, load the cached blocks back and check them byte for byte, print
 * the engine's statistics.
 *
 *   kvtier_c_api_example [--device=auto|cuda|emulated] [--disk=DIR]
 *
 * It runs on a GPU when one works and on the emulated device otherwise; the host-memory calls
 * (kvtier_store_host / kvtier_load_host) stage through device memory either way. Exits 1 if
 * anything fails or comes back wrong. */

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier/c_api.h"

/* Prints the failed call and the thread's last error, then returns 1 from main's helper. */
#define TRY(call)                                                                   \
  do {                                                                              \
    kvtier_status_code code_ = (call);                                              \
    if (code_ != KVTIER_OK) {                                                       \
      fprintf(stderr, "%s failed: %s: %s\n", #call, kvtier_status_code_name(code_), \
              kvtier_last_error());                                                 \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

enum { kLayers = 4, kKvHeads = 2, kHeadDim = 64, kBlockTokens = 16, kPromptBlocks = 8 };

static int Run(kvtier_device_kind device, const char* disk_dir) {
  kvtier_options* options = NULL;
  TRY(kvtier_options_create(&options));
  TRY(kvtier_options_set_geometry(options, kLayers, kKvHeads, kHeadDim, KVTIER_DTYPE_BFLOAT16,
                                  kBlockTokens));
  TRY(kvtier_options_set_model_fingerprint(options, "example-model@1"));
  TRY(kvtier_options_set_device(options, device, 0, 0.0));
  TRY(kvtier_options_set_tier_bytes(options, 0, 64u << 20)); /* connector mode: no GPU tier */
  if (disk_dir != NULL) TRY(kvtier_options_set_disk(options, disk_dir, 256u << 20));
  kvtier_engine* engine = NULL;
  const kvtier_status_code opened = kvtier_engine_open(options, &engine);
  kvtier_options_destroy(options);
  TRY(opened);

  kvtier_device_kind kind = KVTIER_DEVICE_AUTO;
  size_t block_bytes = 0;
  TRY(kvtier_engine_device_kind(engine, &kind));
  TRY(kvtier_engine_block_bytes(engine, &block_bytes));
  printf("engine open on the %s device, %zu bytes per block\n",
         kind == KVTIER_DEVICE_CUDA ? "CUDA" : "emulated", block_bytes);

  /* Turn 1: a prompt of kPromptBlocks full blocks; its KV (here: made-up bytes) is stored. */
  int32_t tokens[(kPromptBlocks + 2) * kBlockTokens];
  for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); ++i) tokens[i] = (int32_t)(i * 7 + 1);
  const size_t kv_bytes = kPromptBlocks * block_bytes;
  uint8_t* kv = malloc(kv_bytes);
  uint8_t* loaded = malloc(kv_bytes);
  if (kv == NULL || loaded == NULL) return 1;
  for (size_t i = 0; i < kv_bytes; ++i) kv[i] = (uint8_t)(i * 2654435761u >> 24);
  size_t stored = 0;
  TRY(kvtier_store_host(engine, "default", tokens, kPromptBlocks * kBlockTokens, NULL, 0, 0,
                        kPromptBlocks, kv, kv_bytes, &stored));
  printf("turn 1: stored %zu blocks\n", stored);

  /* Turn 2: the same prompt plus two more blocks. How much is cached? */
  kvtier_block_key keys[kPromptBlocks + 2];
  size_t matched_tokens = 0, matched_blocks = 0;
  TRY(kvtier_match(engine, "default", tokens, (kPromptBlocks + 2) * kBlockTokens, NULL, 0,
                   &matched_tokens, &matched_blocks, keys, kPromptBlocks + 2, NULL));
  printf("turn 2: %zu of %zu tokens cached (%zu blocks)\n", matched_tokens,
         (size_t)(kPromptBlocks + 2) * kBlockTokens, matched_blocks);
  if (matched_blocks != kPromptBlocks) {
    fprintf(stderr, "expected %d cached blocks\n", kPromptBlocks);
    return 1;
  }
  TRY(kvtier_load_host(engine, "default", keys, matched_blocks, loaded, kv_bytes));
  if (memcmp(loaded, kv, kv_bytes) != 0) {
    fprintf(stderr, "loaded bytes differ from the stored bytes\n");
    return 1;
  }
  printf("turn 2: loaded %zu blocks, bytes identical\n", matched_blocks);

  /* Stats structs are versioned: say how large yours is (kvtier fills what fits). */
  kvtier_stats stats;
  memset(&stats, 0, sizeof(stats));
  stats.struct_size = sizeof(stats);
  TRY(kvtier_engine_stats(engine, &stats));
  printf(
      "stats: stored %llu, loaded %llu, host tier %llu of %llu blocks used, %llu match calls "
      "(%.1f us in Match on average)\n",
      (unsigned long long)stats.stored_blocks, (unsigned long long)stats.loaded_blocks,
      (unsigned long long)stats.tiers[KVTIER_TIER_HOST].used_blocks,
      (unsigned long long)stats.tiers[KVTIER_TIER_HOST].capacity_blocks,
      (unsigned long long)stats.match_latency.count,
      stats.match_latency.count == 0
          ? 0.0
          : (double)stats.match_latency.sum_ns / 1e3 / (double)stats.match_latency.count);
  free(kv);
  free(loaded);
  TRY(kvtier_engine_close(engine));
  return 0;
}

int main(int argc, char** argv) {
  kvtier_device_kind device = KVTIER_DEVICE_AUTO;
  const char* disk_dir = NULL;
  /* getopt_long: --device=X and --device X, unknown options named. */
  static const struct option kOptions[] = {
      {"device", required_argument, NULL, 'd'},
      {"disk", required_argument, NULL, 'k'},
      {NULL, 0, NULL, 0}};
  for (int c; (c = getopt_long(argc, argv, "", kOptions, NULL)) != -1;) {
    if (c == 'k') {
      disk_dir = optarg;
    } else if (c == 'd' && strcmp(optarg, "auto") == 0) {
      device = KVTIER_DEVICE_AUTO;
    } else if (c == 'd' && strcmp(optarg, "cuda") == 0) {
      device = KVTIER_DEVICE_CUDA;
    } else if (c == 'd' && strcmp(optarg, "emulated") == 0) {
      device = KVTIER_DEVICE_EMULATED;
    } else {
      if (c == 'd') fprintf(stderr, "%s: unknown device '%s'\n", argv[0], optarg);
      fprintf(stderr, "usage: %s [--device=auto|cuda|emulated] [--disk=DIR]\n", argv[0]);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
    return 2;
  }
  return Run(device, disk_dir);
}
