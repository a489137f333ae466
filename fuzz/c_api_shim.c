/* fuzz/c_api_shim.c — calls into the C API with enum arguments given as plain ints, compiled
 * as C: what a C, ctypes or FFI caller really does. In C any int converts to an enum type, so
 * out-of-range values (an unknown dtype, layout 2) reach kvtier exactly as they would from
 * such a caller; making them in the C++ harness would be undefined behaviour of its own. */

#include "fuzz/c_api_shim.h"

kvtier_status_code kvtier_fuzz_set_geometry(kvtier_options* options, uint32_t num_layers,
                                            uint32_t num_kv_heads, uint32_t head_dim, int dtype,
                                            uint32_t block_tokens) {
  return kvtier_options_set_geometry(options, num_layers, num_kv_heads, head_dim,
                                     (kvtier_dtype)dtype, block_tokens);
}

kvtier_status_code kvtier_fuzz_set_key_hash(kvtier_options* options, int hash) {
  return kvtier_options_set_key_hash(options, (kvtier_key_hash)hash);
}

kvtier_status_code kvtier_fuzz_set_device(kvtier_options* options, int kind, int cuda_ordinal,
                                          double emulated_copy_gbps) {
  return kvtier_options_set_device(options, (kvtier_device_kind)kind, cuda_ordinal,
                                   emulated_copy_gbps);
}

void kvtier_fuzz_set_layout(kvtier_paged_pool* pool, int layout) {
  pool->layout = (kvtier_page_layout)layout;
}

const char* kvtier_fuzz_status_code_name(int code) {
  return kvtier_status_code_name((kvtier_status_code)code);
}
