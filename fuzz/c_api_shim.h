/* fuzz/c_api_shim.h — C API calls with enum arguments as ints (fuzz/c_api_shim.c says why). */

#ifndef KVTIER_FUZZ_C_API_SHIM_H_
#define KVTIER_FUZZ_C_API_SHIM_H_

#include "kvtier/c_api.h"

#ifdef __cplusplus
extern "C" {
#endif

kvtier_status_code kvtier_fuzz_set_geometry(kvtier_options* options, uint32_t num_layers,
                                            uint32_t num_kv_heads, uint32_t head_dim, int dtype,
                                            uint32_t block_tokens);
kvtier_status_code kvtier_fuzz_set_key_hash(kvtier_options* options, int hash);
kvtier_status_code kvtier_fuzz_set_device(kvtier_options* options, int kind, int cuda_ordinal,
                                          double emulated_copy_gbps);
void kvtier_fuzz_set_layout(kvtier_paged_pool* pool, int layout);
const char* kvtier_fuzz_status_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif /* KVTIER_FUZZ_C_API_SHIM_H_ */
