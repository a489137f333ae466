// engine/eviction/ghost_list.cc — a bounded list of key hashes (see ghost_list.h).

#include "engine/eviction/ghost_list.h"

namespace kvtier {
namespace policy_internal {

GhostList::GhostList(uint32_t capacity)
    : capacity_(capacity), key_(capacity), newer_(capacity, kNil), older_(capacity, kNil) {
  free_.reserve(capacity);
  for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
  index_.reserve(capacity);
}

void GhostList::Unlink(uint32_t node) {
  const uint32_t n = newer_[node];
  const uint32_t o = older_[node];
  if (n != kNil)
    older_[n] = o;
  else
    front_ = o;
  if (o != kNil)
    newer_[o] = n;
  else
    back_ = n;
  newer_[node] = older_[node] = kNil;
}

bool GhostList::Remove(uint64_t key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  const uint32_t node = it->second;
  index_.erase(it);
  Unlink(node);
  free_.push_back(node);
  return true;
}

void GhostList::PopBack() {
  if (back_ != kNil) Remove(key_[back_]);
}

void GhostList::PushFront(uint64_t key) {
  if (capacity_ == 0) return;
  Remove(key);  // a key is on the list at most once
  if (free_.empty()) PopBack();
  const uint32_t node = free_.back();
  free_.pop_back();
  key_[node] = key;
  newer_[node] = kNil;
  older_[node] = front_;
  if (front_ != kNil)
    newer_[front_] = node;
  else
    back_ = node;
  front_ = node;
  index_.emplace(key, node);
}

}  // namespace policy_internal
}  // namespace kvtier
