// common/xxhash.h: XXH3 through the x86 dispatcher gives the library's own values (records and
// keys written by a build without the dispatcher read back with it, and the other way), one-shot
// and streamed, at sizes on both sides of XXH3's short-input paths and stripe boundaries.

#include "common/xxhash.h"

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier {
namespace {

std::vector<unsigned char> Bytes(size_t n, uint64_t seed) {
  std::vector<unsigned char> v(n);
  std::mt19937_64 rng(seed);
  for (unsigned char& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

TEST(XxhashTest, KnownValueOfTheEmptyInput) {
  // XXH3-64 of no bytes, seed 0 (xxHash's reference value): whichever path computes it.
  EXPECT_EQ(XXH3_64bits("", 0), 0x2D06800538D394C2ULL);
}

TEST(XxhashTest, StreamedInChunksEqualsOneShot) {
  for (size_t n : {size_t{1}, size_t{240}, size_t{1025}, size_t{262144}, size_t{262147}}) {
    const std::vector<unsigned char> v = Bytes(n, n);
    XXH3_state_t* state = XXH3_createState();
    ASSERT_NE(state, nullptr);
    ASSERT_EQ(XXH3_64bits_reset(state), XXH_OK);
    for (size_t at = 0; at < n; at += 65536) {
      const size_t len = n - at < 65536 ? n - at : 65536;
      ASSERT_EQ(XXH3_64bits_update(state, v.data() + at, len), XXH_OK);
    }
    EXPECT_EQ(XXH3_64bits_digest(state), XXH3_64bits(v.data(), n)) << n;
    XXH3_freeState(state);
  }
}

#if defined(KVTIER_XXH_X86_DISPATCH)
TEST(XxhashTest, TheDispatcherGivesTheLibrarysDefaultValues) {
#undef XXH3_64bits  // the library's own (SSE2) entry point, for comparison
  for (size_t n :
       {size_t{0}, size_t{1}, size_t{3}, size_t{16}, size_t{17}, size_t{128}, size_t{129},
        size_t{240}, size_t{241}, size_t{1024}, size_t{4096}, size_t{262144}, size_t{262144 + 3}}) {
    const std::vector<unsigned char> v = Bytes(n, 7 * n + 1);
    EXPECT_EQ(XXH3_64bits_dispatch(v.data(), n), XXH3_64bits(v.data(), n)) << n;
  }
}
#else
TEST(XxhashTest, TheDispatcherGivesTheLibrarysDefaultValues) {
  GTEST_SKIP() << "libxxhash has no x86 dispatcher here (KVTIER_XXH_X86_DISPATCH unset)";
}
#endif

}  // namespace
}  // namespace kvtier
