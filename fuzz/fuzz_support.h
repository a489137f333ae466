// fuzz/fuzz_support.h — what every kvtier fuzz target shares: a cursor that reads typed values
// from the fuzzer's bytes (zeros once they run out, so every input is a valid program), and a
// check that aborts with a message, so a broken property is a crash libFuzzer saves and
// reports like any other.

#ifndef KVTIER_FUZZ_FUZZ_SUPPORT_H_
#define KVTIER_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/string_view.h"

namespace kvtier::fuzz {

// Aborts (a crash to libFuzzer) with `what` when `condition` is false. Unlike assert it is
// never compiled out: a fuzz target that checks nothing finds nothing but crashes.
#define KVTIER_FUZZ_CHECK(condition, what)                                              \
  do {                                                                                  \
    if (!(condition)) {                                                                 \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s: %s\n", __FILE__, __LINE__,    \
                   #condition, std::string(what).c_str());                             \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

// Reads the fuzzer's input front to back.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t remaining() const { return size_ - pos_; }
  bool empty() const { return pos_ == size_; }

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(Uint(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Uint(4)); }
  uint64_t U64() { return Uint(8); }
  bool Bool() { return (U8() & 1) != 0; }
  // A value in [0, n); 0 when n is 0.
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(U32() % n); }

  // Up to `n` bytes (fewer when the input runs out).
  absl::string_view Bytes(size_t n) {
    n = n < remaining() ? n : remaining();
    absl::string_view out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }
  // Everything left.
  absl::string_view Rest() { return Bytes(remaining()); }

 private:
  uint64_t Uint(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{U8()} << (8 * i);
    return v;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace kvtier::fuzz

#endif  // KVTIER_FUZZ_FUZZ_SUPPORT_H_
