// BlockDeviceSampler (io/block_device_sampler.h): samples the device under a directory, reads
// what the device read meanwhile, and reports its own thread's CPU time; a path with no block
// device under it gives -1 everywhere.

#include "io/block_device_sampler.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(BlockDeviceSampler, SamplesTheDeviceUnderADirectoryAndItsOwnCpu) {
  char dir[] = "/tmp/kvtier-sampler-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  BlockDeviceSampler sampler(dir);
  absl::SleepFor(absl::Milliseconds(30));
  const BlockDeviceSampler::Figures f = sampler.Stop();
  std::filesystem::remove_all(dir);
  if (f.samples == 0) {
    // /tmp is not on a block device here (tmpfs, overlay): nothing is known.
    EXPECT_EQ(f.busy_fraction, -1);
    EXPECT_EQ(f.mean_in_flight, -1);
    GTEST_SKIP() << "no block device under /tmp";
  }
  // One sample per 200 us at most, and a sleeping thread's CPU is far below its wall time.
  EXPECT_LE(f.samples, 30000 / 200 + 1);
  EXPECT_GE(f.busy_fraction, 0);
  EXPECT_LE(f.busy_fraction, 1);
  EXPECT_GE(f.mean_in_flight, 0);
  EXPECT_GT(f.cpu_seconds, 0);
  EXPECT_LT(f.cpu_seconds, 0.03);
  EXPECT_GE(f.device_read_bytes, 0);
  // Stop again: the same figures, no second join.
  const BlockDeviceSampler::Figures again = sampler.Stop();
  EXPECT_EQ(again.samples, f.samples);
}

TEST(BlockDeviceSampler, KnowsNothingWithoutABlockDevice) {
  for (const std::string path : {"/nonexistent/kvtier", "/proc"}) {
    BlockDeviceSampler sampler(path);
    const BlockDeviceSampler::Figures f = sampler.Stop();
    EXPECT_EQ(f.samples, 0u) << path;
    EXPECT_EQ(f.busy_fraction, -1) << path;
    EXPECT_EQ(f.mean_in_flight, -1) << path;
    EXPECT_EQ(f.device_read_bytes, -1) << path;
    EXPECT_EQ(f.cpu_seconds, 0) << path;
  }
}

}  // namespace
}  // namespace kvtier
