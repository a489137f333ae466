// fuzz/fuzz_resp.cc — the RESP2 reply parser (remote/resp.h) on hostile bytes, as a server (or
// anything listening on its port) might send them.
//
// The stream is fed to two parsers: a reference one in a single piece, replies kept in
// memory; and one fed in fuzzer-chosen pieces, with a sink set before some replies (1 to 3
// ranges of fuzzer-chosen sizes, each its own exactly-sized heap allocation, so a write past
// a range is an ASan report) and the payload of a sunk bulk delivered the way a connection
// does: straight into DirectIovecs, reported with DirectConsumed. The properties checked:
//   * no crash, no read or write outside what was given, whatever the bytes;
//   * limits hold: no reply keeps more than RespLimits::max_reply_bytes in memory;
//   * the chunked parser produces the reference's replies, in order, while neither has failed
//     (types, integers, strings, array shapes);
//   * a sunk reply that did not overflow holds the reference's payload byte for byte in its
//     sink, and reports its length; one that overflowed never wrote past its ranges.
//
// Input: byte 0 seeds the piece sizes and sink choices (a small xorshift), the rest is the
// stream. Small limits (max_bulk 4096, max_reply_bytes 8192) keep executions fast and reach
// the limit checks.

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "remote/resp.h"

namespace {

using kvtier::remote::Reply;
using kvtier::remote::RespLimits;
using kvtier::remote::RespParser;

struct Rng {
  uint32_t s;
  uint32_t Next() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
  }
};

RespLimits SmallLimits() {
  RespLimits l;
  l.max_line = 256;
  l.max_bulk = 4096;
  l.max_array = 64;
  l.max_depth = 4;
  l.max_reply_bytes = 8192;
  return l;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_resp: %s\n", what);
    std::abort();
  }
}

size_t KeptBytes(const Reply& r) {
  size_t n = r.str.size();
  for (const Reply& e : r.elements) n += KeptBytes(e);
  return n;
}

// The same reply, except that `sunk` replies carry their payload in the sink, not in str.
void Same(const Reply& a, const Reply& b, bool top) {
  Check(a.type == b.type, "reply types differ");
  Check(a.integer == b.integer, "integers differ");
  if (!(top && b.sunk)) Check(a.str == b.str, "strings differ");
  Check(a.elements.size() == b.elements.size(), "array lengths differ");
  for (size_t i = 0; i < a.elements.size(); ++i) Same(a.elements[i], b.elements[i], false);
}

// Every reply a parser produces from `data`, fed whole.
std::vector<Reply> ParseWhole(const char* data, size_t n) {
  RespParser p(SmallLimits());
  std::vector<Reply> out;
  size_t at = 0;
  while (at < n) {
    absl::StatusOr<size_t> used = p.Feed(data + at, n - at);
    if (!used.ok()) break;
    at += *used;
    if (p.HasReply()) {
      out.push_back(p.TakeReply());
      continue;
    }
    if (*used == 0) break;  // needs bytes that are not there
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* input, size_t size) {
  if (size < 1) return 0;
  Rng rng{0x9e3779b9u ^ (static_cast<uint32_t>(input[0]) * 0x01000193u)};
  const char* data = reinterpret_cast<const char*>(input + 1);
  const size_t n = size - 1;
  const std::vector<Reply> reference = ParseWhole(data, n);

  RespParser p(SmallLimits());
  std::string pending;  // bytes fed but not consumed (an incomplete line), as a connection keeps
  size_t at = 0, produced = 0;
  std::vector<std::unique_ptr<char[]>> ranges;
  std::vector<iovec> sink;
  bool sink_for_next = false;
  auto choose_sink = [&] {
    ranges.clear();
    sink.clear();
    sink_for_next = rng.Next() % 2 == 0;
    if (!sink_for_next) return;
    const int count = 1 + static_cast<int>(rng.Next() % 3);
    for (int i = 0; i < count; ++i) {
      const size_t len = 1 + rng.Next() % 2048;
      ranges.push_back(std::make_unique<char[]>(len));
      sink.push_back(iovec{ranges.back().get(), len});
    }
    p.SetSink(sink.data(), sink.size());
  };
  choose_sink();
  while (p.error().ok()) {
    // Inside a sunk payload: deliver straight into the destination, as readv would.
    if (p.DirectRemaining() > 0 && pending.empty()) {
      iovec iov[4];
      const int k = p.DirectIovecs(iov, 4);
      size_t moved = 0;
      for (int i = 0; i < k && at < n; ++i) {
        const size_t take = std::min(iov[i].iov_len, n - at);
        std::memcpy(iov[i].iov_base, data + at, take);
        at += take;
        moved += take;
        if (take < iov[i].iov_len) break;
      }
      if (moved == 0) break;
      p.DirectConsumed(moved);
      continue;
    }
    if (at < n) {
      const size_t piece = std::min<size_t>(1 + rng.Next() % 64, n - at);
      pending.append(data + at, piece);
      at += piece;
    }
    absl::StatusOr<size_t> used = p.Feed(pending.data(), pending.size());
    if (!used.ok()) break;
    Check(*used <= pending.size(), "Feed consumed more than it was given");
    pending.erase(0, *used);
    if (p.HasReply()) {
      Reply r = p.TakeReply();
      Check(KeptBytes(r) <= SmallLimits().max_reply_bytes + SmallLimits().max_bulk,
            "a reply kept more than the limits allow");
      if (r.sunk) {
        Check(sink_for_next, "a reply was sunk without a sink");
        Check(r.type == Reply::Type::kBulk, "a sunk reply is not a bulk string");
      }
      if (produced < reference.size()) {
        Same(reference[produced], r, true);
        if (r.sunk && !r.overflow) {
          const std::string& want = reference[produced].str;
          Check(static_cast<int64_t>(want.size()) == r.bulk_length, "sunk length differs");
          size_t off = 0;
          for (const iovec& v : sink) {
            if (off >= want.size()) break;
            const size_t len = std::min(v.iov_len, want.size() - off);
            Check(std::memcmp(v.iov_base, want.data() + off, len) == 0, "sunk payload differs");
            off += len;
          }
          Check(off == want.size(), "the sink did not hold the whole payload");
        }
      }
      ++produced;
      choose_sink();
      continue;
    }
    if (*used == 0 && at >= n) break;  // needs bytes that are not there
  }
  return 0;
}
