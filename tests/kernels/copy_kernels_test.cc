// tests/kernels/copy_kernels_test.cc — the fill pattern's CPU reference: deterministic,
// seed-dependent, position-dependent, and the same whatever the buffer's length.

#include "kernels/copy_kernels.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(FillPattern, IsDeterministicAndDependsOnTheSeed) {
  std::vector<uint8_t> a(1000), b(1000), c(1000);
  FillPatternCpu(a.data(), a.size(), 5);
  FillPatternCpu(b.data(), b.size(), 5);
  FillPatternCpu(c.data(), c.size(), 6);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(FindPatternMismatch(a.data(), a.size(), 5), a.size());
  EXPECT_LT(FindPatternMismatch(c.data(), c.size(), 5), size_t{8});
}

TEST(FillPattern, AShorterFillIsAPrefixOfALongerOne) {
  std::vector<uint8_t> longer(4099), shorter(13);
  FillPatternCpu(longer.data(), longer.size(), 1);
  FillPatternCpu(shorter.data(), shorter.size(), 1);
  EXPECT_TRUE(std::equal(shorter.begin(), shorter.end(), longer.begin()));
}

TEST(FillPattern, WordsAreSplitmix64LeastSignificantByteFirst) {
  // splitmix64 with state 0: its first output is 0xe220a8397b1dcdaf.
  uint8_t bytes[8];
  FillPatternCpu(bytes, 8, 0);
  const uint8_t expected[8] = {0xaf, 0xcd, 0x1d, 0x7b, 0x39, 0xa8, 0x20, 0xe2};
  EXPECT_TRUE(std::equal(bytes, bytes + 8, expected));
}

TEST(FillPattern, MismatchReportsTheFirstWrongByte) {
  std::vector<uint8_t> data(100);
  FillPatternCpu(data.data(), data.size(), 3);
  data[37] ^= 1;
  data[90] ^= 1;
  EXPECT_EQ(FindPatternMismatch(data.data(), data.size(), 3), 37u);
  EXPECT_EQ(FindPatternMismatch(data.data(), 0, 3), 0u);
}

TEST(FillPattern, KernelLaunchHasACpuReferenceAndANameAndACudaPartOnlyWithCuda) {
  KernelLaunch kernel = MakeFillKernel(DevicePtr::FromAddress(0x1000), 64, 1);
  EXPECT_STREQ(kernel.name, "fill_pattern");
  EXPECT_TRUE(static_cast<bool>(kernel.cpu));
#if defined(KVTIER_HAVE_CUDA)
  EXPECT_TRUE(static_cast<bool>(kernel.cuda));
#else
  EXPECT_FALSE(static_cast<bool>(kernel.cuda));
#endif
  // The reference writes exactly the resolved range.
  std::vector<uint8_t> arena(80, 0xee);
  const KernelLaunch::Resolver resolve = [&arena](DevicePtr ptr, size_t bytes) -> void* {
    if (ptr.address() != 0x1000 || bytes != 64) return nullptr;
    return arena.data() + 8;
  };
  ASSERT_TRUE(kernel.cpu(resolve).ok());
  EXPECT_EQ(arena[7], 0xee);
  EXPECT_EQ(arena[72], 0xee);
  EXPECT_EQ(FindPatternMismatch(arena.data() + 8, 64, 1), 64u);
}

}  // namespace
}  // namespace kvtier
