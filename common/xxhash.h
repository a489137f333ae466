// common/xxhash.h — XXH3 at the widest vectors the CPU has.
//
// Include this instead of <xxhash.h> where a hash sits on a data path (record checksums on the
// disk and remote tiers, prefix keys). Where libxxhash carries its x86 dispatcher (Debian's
// does; CMake checks and defines KVTIER_XXH_X86_DISPATCH), XXH3_64bits and
// XXH3_64bits_update resolve to the *_dispatch entry points, which pick SSE2, AVX2 or AVX-512
// once at run time: on the dev VM (AVX-512) 256 KiB in cache hashes at 66 GB/s against 16 with
// the library's SSE2 default. The hash values are the same on every path (xxHash's guarantee,
// and tests/tiers/disk_record_test.cc checks a known value), so records written either way
// read back either way.

#ifndef KVTIER_COMMON_XXHASH_H_
#define KVTIER_COMMON_XXHASH_H_

#if defined(KVTIER_XXH_X86_DISPATCH)
#include "xxh_x86dispatch.h"  // includes xxhash.h, then maps XXH3_* to XXH3_*_dispatch
#else
#include "xxhash.h"
#endif

#endif  // KVTIER_COMMON_XXHASH_H_
