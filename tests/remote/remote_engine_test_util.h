// Helpers for the remote tier's engine tests: engines on the emulated device pointed at a local
// Redis Cluster (remote/testing/local_cluster.h), and loads checked byte by byte.

#ifndef KVTIER_TESTS_REMOTE_REMOTE_ENGINE_TEST_UTIL_H_
#define KVTIER_TESTS_REMOTE_REMOTE_ENGINE_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvtier/engine.h"
#include "remote/testing/local_cluster.h"
#include "tests/api/engine_test_util.h"

namespace kvtier::testing {

// The shared cluster of this test binary, or a skip when there is no redis-server.
#define KVTIER_SHARED_CLUSTER_OR_SKIP(var)                                          \
  absl::StatusOr<::kvtier::remote::testing::LocalCluster*> var##_or =                \
      ::kvtier::remote::testing::LocalCluster::Shared();                             \
  if (!var##_or.ok() && absl::IsFailedPrecondition(var##_or.status())) {             \
    GTEST_SKIP() << var##_or.status();                                               \
  }                                                                                  \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status();                                   \
  ::kvtier::remote::testing::LocalCluster* var = *var##_or

// Options of an engine with a small geometry, `host_blocks` host slots, no GPU tier (unless
// gpu_blocks), namespaces `spaces`, and the cluster's seeds as its remote tier.
inline EngineOptions RemoteOptionsFor(const remote::testing::LocalCluster& cluster,
                                      std::vector<std::string> spaces, size_t host_blocks = 32,
                                      size_t gpu_blocks = 0) {
  EngineOptions o = SmallOptions(gpu_blocks, host_blocks);
  o.namespaces = std::move(spaces);
  o.remote.seeds = cluster.seeds();
  if (cluster.tls()) {
    o.remote.tls = true;
    o.remote.tls_ca_file = cluster.ca_file();
  }
  o.remote.op_timeout = absl::Seconds(2);
  o.remote.match_timeout = absl::Milliseconds(500);  // generous: the machine may be loaded
  return o;
}

struct LoadOutcome {
  absl::Status status;       // the handle's Wait()
  size_t right = 0;          // blocks whose bytes are the key's content
  size_t zero = 0;           // blocks that are all zeros (a miss reported as such)
  size_t wrong = 0;          // anything else: must never happen
};

// Loads `keys` of `ns` into fresh device buffers and classifies every block.
inline LoadOutcome LoadAndCheck(Engine& engine, absl::string_view ns,
                                const std::vector<BlockKey>& keys) {
  LoadOutcome out;
  const size_t bytes = engine.options().geometry.block_bytes();
  DeviceBlocks dst(engine.device(), keys.size(), bytes);
  Poison(engine.device(), dst.ptrs(), bytes);
  LoadRequest r;
  r.ns = ns;
  r.keys = keys;
  r.buffers = KvBuffers::Blocks(dst.ptrs());
  absl::StatusOr<std::unique_ptr<TransferHandle>> h = engine.Load(r);
  if (!h.ok()) {
    out.status = h.status();
    return out;
  }
  out.status = (*h)->Wait();
  const std::vector<uint8_t> zeros(bytes, 0);
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::vector<uint8_t> got = ReadDevice(engine.device(), dst[i], bytes);
    if (got == BlockContent(keys[i], bytes)) {
      ++out.right;
    } else if (got == zeros) {
      ++out.zero;
    } else {
      ++out.wrong;
    }
  }
  return out;
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTS_REMOTE_REMOTE_ENGINE_TEST_UTIL_H_
