// Helpers for engine API tests: an engine on the emulated device with a small geometry, caller
// "GPU" buffers, and block content derived from the block's key, so that any mix-up of blocks,
// layers or offsets shows as a byte mismatch.

#ifndef KVTIER_TESTS_API_ENGINE_TEST_UTIL_H_
#define KVTIER_TESTS_API_ENGINE_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kvtier/engine.h"

namespace kvtier::testing {

inline Geometry SmallGeometry() {
  // 4 layers x 2 kv heads x 16 dim x fp16 x 16 tokens = 8 KiB per block.
  return Geometry{4, 2, 16, DType::kFloat16, 16};
}

// The device the engine suites run on: the emulated device, unless KVTIER_TEST_DEVICE=cuda
// (scripts/gpu-check.sh sets it on a GPU machine, so the same suites drive real CUDA copies,
// streams and events; where no GPU is present Engine::Open then fails, saying so).
inline DeviceChoice TestDeviceChoice() {
  const char* env = std::getenv("KVTIER_TEST_DEVICE");
  if (env != nullptr && std::strcmp(env, "cuda") == 0) return DeviceChoice::kCuda;
  return DeviceChoice::kEmulated;
}

// For tests whose assertions need what only the emulated device has: a throttled link (to
// catch a transfer in flight), device fault injection, kernels with a CPU body only. They
// stay on it under KVTIER_TEST_DEVICE=cuda; everything else runs on the real GPU there.
inline void UseEmulatedDevice(EngineOptions& o) { o.device.choice = DeviceChoice::kEmulated; }

inline EngineOptions SmallOptions(size_t gpu_blocks, size_t host_blocks) {
  EngineOptions o;
  o.geometry = SmallGeometry();
  o.model_fingerprint = "test-model@1";
  o.device.choice = TestDeviceChoice();
  o.gpu_tier_bytes = gpu_blocks * o.geometry.block_bytes();
  o.host_tier_bytes = host_blocks * o.geometry.block_bytes();
  o.namespaces = {"default", "tenant-b"};
  return o;
}

inline uint64_t SplitMix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The bytes a block with this key holds in every test.
inline std::vector<uint8_t> BlockContent(const BlockKey& key, size_t bytes) {
  std::vector<uint8_t> out(bytes);
  uint64_t state = key.hi ^ (key.lo * 3);
  for (size_t i = 0; i < bytes; i += 8) {
    const uint64_t w = SplitMix(state);
    std::memcpy(out.data() + i, &w, std::min<size_t>(8, bytes - i));
  }
  return out;
}

// A prompt of n_blocks full blocks; different seeds give different prompts.
inline std::vector<int32_t> Prompt(size_t n_blocks, int32_t seed, uint32_t block_tokens = 16) {
  std::vector<int32_t> t(n_blocks * block_tokens);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>(seed * 100003 + i);
  return t;
}

inline std::vector<BlockKey> KeysOf(const Engine& e, absl::string_view ns,
                                    const std::vector<int32_t>& tokens,
                                    absl::string_view extra = "") {
  const EngineOptions& o = e.options();
  KeyHasher h(o.key_hash, ns, o.model_fingerprint, o.geometry.Fingerprint());
  return h.Keys(tokens, o.geometry.block_tokens, extra);
}

// n device buffers of one block each, freed with the fixture.
class DeviceBlocks {
 public:
  DeviceBlocks(Device& device, size_t n, size_t block_bytes) : device_(device) {
    for (size_t i = 0; i < n; ++i) {
      absl::StatusOr<DevicePtr> p = device.Allocate(block_bytes);
      EXPECT_TRUE(p.ok()) << p.status();
      ptrs_.push_back(*p);
    }
  }
  ~DeviceBlocks() {
    for (DevicePtr p : ptrs_) EXPECT_TRUE(device_.Free(p).ok());
  }
  const std::vector<DevicePtr>& ptrs() const { return ptrs_; }
  DevicePtr operator[](size_t i) const { return ptrs_[i]; }

 private:
  Device& device_;
  std::vector<DevicePtr> ptrs_;
};

inline void WriteDevice(Device& device, DevicePtr dst, const std::vector<uint8_t>& bytes) {
  auto stream = device.CreateStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  ASSERT_TRUE((*stream)->CopyToDevice(dst, bytes.data(), bytes.size()).ok());
  ASSERT_TRUE((*stream)->Synchronize().ok());
}

inline std::vector<uint8_t> ReadDevice(Device& device, DevicePtr src, size_t bytes) {
  std::vector<uint8_t> out(bytes, 0xEE);
  auto stream = device.CreateStream();
  EXPECT_TRUE(stream.ok()) << stream.status();
  EXPECT_TRUE((*stream)->CopyToHost(out.data(), src, bytes).ok());
  EXPECT_TRUE((*stream)->Synchronize().ok());
  return out;
}

// Fills buffers[i] with the content of keys[i].
inline void FillBlocks(Device& device, const std::vector<DevicePtr>& buffers,
                       const std::vector<BlockKey>& keys, size_t block_bytes) {
  for (size_t i = 0; i < buffers.size(); ++i) {
    WriteDevice(device, buffers[i], BlockContent(keys[i], block_bytes));
  }
}

// Poisons buffers so a load that writes nothing cannot pass.
inline void Poison(Device& device, const std::vector<DevicePtr>& buffers, size_t block_bytes) {
  for (DevicePtr p : buffers) WriteDevice(device, p, std::vector<uint8_t>(block_bytes, 0xA5));
}

// Stores every full block of `tokens` in `ns` (content derived from each key) and waits;
// returns the keys.
inline std::vector<BlockKey> StoreBlocks(Engine& engine, absl::string_view ns,
                                         const std::vector<int32_t>& tokens) {
  const size_t bytes = engine.options().geometry.block_bytes();
  const std::vector<BlockKey> keys = KeysOf(engine, ns, tokens);
  DeviceBlocks src(engine.device(), keys.size(), bytes);
  FillBlocks(engine.device(), src.ptrs(), keys, bytes);
  StoreRequest r;
  r.ns = ns;
  r.tokens = tokens;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto h = engine.Store(r);
  EXPECT_TRUE(h.ok()) << h.status();
  if (h.ok()) {
    EXPECT_TRUE((*h)->Wait().ok());
  }
  return keys;
}

// Stores blocks [first, first + n) of `tokens` (contents from FillBlocks) and waits; each
// must be moved (stored, not already present).
inline void StoreBlockRange(Engine& engine, absl::string_view ns,
                            const std::vector<int32_t>& tokens, size_t first, size_t n) {
  const size_t bytes = engine.options().geometry.block_bytes();
  const std::vector<BlockKey> keys = KeysOf(engine, ns, tokens);
  ASSERT_LE(first + n, keys.size());
  DeviceBlocks src(engine.device(), n, bytes);
  FillBlocks(engine.device(), src.ptrs(),
             std::vector<BlockKey>(keys.begin() + first, keys.begin() + first + n), bytes);
  StoreRequest r;
  r.ns = ns;
  r.tokens = tokens;
  r.first_block = first;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto h = engine.Store(r);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->Wait().ok());
  ASSERT_EQ((*h)->blocks_moved(), n);
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTS_API_ENGINE_TEST_UTIL_H_
