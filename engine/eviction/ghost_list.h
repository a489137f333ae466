// engine/eviction/ghost_list.h — the identity of blocks no longer cached (S3-FIFO's ghost
// queue, ARC's B1 and B2).
//
// A bounded list of key hashes (a ghost: the identity of blocks no longer cached), front the
// newest. Adding at capacity drops the oldest; adding a key already present moves it to the
// front. Nodes come from a pool sized at construction. Not thread-safe.

#ifndef KVTIER_ENGINE_EVICTION_GHOST_LIST_H_
#define KVTIER_ENGINE_EVICTION_GHOST_LIST_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace kvtier {
namespace policy_internal {

class GhostList {
 public:
  explicit GhostList(uint32_t capacity);

  bool Contains(uint64_t key) const { return index_.contains(key); }
  bool Remove(uint64_t key);  // false when absent
  void PushFront(uint64_t key);
  void PopBack();
  uint32_t size() const { return static_cast<uint32_t>(index_.size()); }

 private:
  void Unlink(uint32_t node);

  static constexpr uint32_t kNil = UINT32_MAX;
  uint32_t capacity_;
  std::vector<uint64_t> key_;
  std::vector<uint32_t> newer_;
  std::vector<uint32_t> older_;
  std::vector<uint32_t> free_;
  uint32_t front_ = kNil;
  uint32_t back_ = kNil;
  absl::flat_hash_map<uint64_t, uint32_t> index_;
};

}  // namespace policy_internal
}  // namespace kvtier

#endif  // KVTIER_ENGINE_EVICTION_GHOST_LIST_H_
