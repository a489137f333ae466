// remote/resp.cc — see resp.h.

#include "remote/resp.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvtier::remote {

std::string Reply::ToText() const {
  switch (type) {
    case Type::kSimple:
    case Type::kError:
    case Type::kBulk:
      return str;
    case Type::kInteger:
      return absl::StrCat(integer);
    case Type::kNil:
    case Type::kNilArray:
      return "(nil)";
    case Type::kArray: {
      std::string out;
      for (size_t i = 0; i < elements.size(); ++i) {
        if (i > 0) out.push_back('\n');
        out += elements[i].ToText();
      }
      return out;
    }
  }
  return "";
}

void AppendArrayHeader(std::string* out, size_t n) { absl::StrAppend(out, "*", n, "\r\n"); }
void AppendBulkHeader(std::string* out, size_t len) { absl::StrAppend(out, "$", len, "\r\n"); }
void AppendBulk(std::string* out, absl::string_view arg) {
  AppendBulkHeader(out, arg.size());
  out->append(arg.data(), arg.size());
  out->append("\r\n");
}
void AppendCommand(std::string* out, const std::vector<std::string>& args) {
  AppendArrayHeader(out, args.size());
  for (const std::string& a : args) AppendBulk(out, a);
}

void RespParser::SetSink(const iovec* dest, size_t count) {
  sink_.assign(dest, dest + count);
  sink_index_ = 0;
  sink_offset_ = 0;
  sink_set_ = true;
}

void RespParser::AbandonSink() {
  sink_.clear();
  sink_index_ = 0;
  sink_offset_ = 0;
  if (state_ != State::kLine && bulk_to_sink_) {
    bulk_drain_ = true;
    pending_bulk_.overflow = true;
  }
}

absl::Status RespParser::Fail(absl::string_view what) {
  error_ = absl::DataLossError(absl::StrCat("RESP protocol error: ", what));
  return error_;
}

void RespParser::Complete(Reply value) {
  if (stack_.empty()) {
    root_ = std::move(value);
    has_reply_ = true;
    return;
  }
  stack_.back().array->elements.push_back(std::move(value));
  // An element of the innermost array is done; arrays that are now full are done too.
  while (!stack_.empty()) {
    if (--stack_.back().remaining > 0) return;
    stack_.pop_back();
  }
  has_reply_ = true;
}

Reply RespParser::TakeReply() {
  has_reply_ = false;
  Reply out = std::move(root_);
  root_ = Reply();
  reply_bytes_ = 0;
  sink_set_ = false;
  sink_.clear();
  sink_index_ = sink_offset_ = 0;
  return out;
}

absl::StatusOr<size_t> RespParser::FeedLine(const char* data, size_t n) {
  const size_t scan = std::min(n, limits_.max_line + 2);
  const char* nl = static_cast<const char*>(std::memchr(data, '\n', scan));
  if (nl == nullptr) {
    if (n >= limits_.max_line + 2) return Fail("line longer than max_line");
    return 0;
  }
  const size_t nl_at = static_cast<size_t>(nl - data);
  if (nl_at < 2 || data[nl_at - 1] != '\r') return Fail("line not ended by CRLF, or empty");
  const char type = data[0];
  const absl::string_view body(data + 1, nl_at - 2);
  const size_t used = nl_at + 1;
  auto account = [&](size_t bytes) -> bool {
    reply_bytes_ += bytes;
    return reply_bytes_ <= limits_.max_reply_bytes;
  };
  switch (type) {
    case '+':
    case '-': {
      if (!account(sizeof(Reply) + body.size())) return Fail("reply larger than max_reply_bytes");
      Reply r;
      r.type = type == '+' ? Reply::Type::kSimple : Reply::Type::kError;
      r.str = std::string(body);
      Complete(std::move(r));
      return used;
    }
    case ':': {
      Reply r;
      r.type = Reply::Type::kInteger;
      if (body.empty() || !absl::SimpleAtoi(body, &r.integer)) return Fail("bad integer");
      if (!account(sizeof(Reply))) return Fail("reply larger than max_reply_bytes");
      Complete(std::move(r));
      return used;
    }
    case '$': {
      int64_t len = 0;
      if (body.empty() || !absl::SimpleAtoi(body, &len)) return Fail("bad bulk length");
      if (!account(sizeof(Reply))) return Fail("reply larger than max_reply_bytes");
      if (len == -1) {
        Complete(Reply());  // kNil
        return used;
      }
      if (len < 0 || len > limits_.max_bulk) return Fail("bulk length out of range");
      pending_bulk_ = Reply();
      pending_bulk_.type = Reply::Type::kBulk;
      pending_bulk_.bulk_length = len;
      bulk_left_ = len;
      bulk_to_sink_ = stack_.empty() && sink_set_;
      bulk_drain_ = false;
      if (bulk_to_sink_) {
        size_t capacity = 0;
        for (const iovec& v : sink_) capacity += v.iov_len;
        pending_bulk_.sunk = true;
        if (static_cast<uint64_t>(len) > capacity) {
          pending_bulk_.overflow = true;
          bulk_drain_ = true;
        }
      } else {
        if (!account(static_cast<size_t>(len))) return Fail("reply larger than max_reply_bytes");
        pending_bulk_.str.reserve(static_cast<size_t>(std::min<int64_t>(len, 1 << 20)));
      }
      state_ = len > 0 ? State::kBulkPayload : State::kBulkCrlf;
      return used;
    }
    case '*': {
      int64_t count = 0;
      if (body.empty() || !absl::SimpleAtoi(body, &count)) return Fail("bad array length");
      if (!account(sizeof(Reply))) return Fail("reply larger than max_reply_bytes");
      if (count == -1) {
        Reply r;
        r.type = Reply::Type::kNilArray;
        Complete(std::move(r));
        return used;
      }
      if (count < 0 || count > limits_.max_array) return Fail("array length out of range");
      Reply r;
      r.type = Reply::Type::kArray;
      if (count == 0) {
        Complete(std::move(r));
        return used;
      }
      if (static_cast<int>(stack_.size()) >= limits_.max_depth) {
        return Fail("arrays nested deeper than max_depth");
      }
      r.elements.reserve(static_cast<size_t>(std::min<int64_t>(count, 16)));
      if (stack_.empty()) {
        root_ = std::move(r);
        stack_.push_back({&root_, count});
      } else {
        // The parent only grows again once this array is complete (and popped), so the pointer
        // stays valid while it is on the stack.
        Reply* parent = stack_.back().array;
        parent->elements.push_back(std::move(r));
        stack_.push_back({&parent->elements.back(), count});
      }
      return used;
    }
    default:
      return Fail(absl::StrCat("unknown reply type byte ", static_cast<int>(
                                                               static_cast<unsigned char>(type))));
  }
}

void RespParser::CopyToSink(const char* data, size_t n) {
  while (n > 0 && sink_index_ < sink_.size()) {
    const iovec& v = sink_[sink_index_];
    const size_t room = v.iov_len - sink_offset_;
    const size_t take = std::min(room, n);
    std::memcpy(static_cast<char*>(v.iov_base) + sink_offset_, data, take);
    data += take;
    n -= take;
    sink_offset_ += take;
    if (sink_offset_ == v.iov_len) {
      ++sink_index_;
      sink_offset_ = 0;
    }
  }
}

absl::StatusOr<size_t> RespParser::Feed(const char* data, size_t n) {
  if (!error_.ok()) return error_;
  size_t pos = 0;
  while (pos < n && !has_reply_) {
    switch (state_) {
      case State::kLine: {
        absl::StatusOr<size_t> used = FeedLine(data + pos, n - pos);
        if (!used.ok()) return used.status();
        if (*used == 0) return pos;
        pos += *used;
        break;
      }
      case State::kBulkPayload: {
        const size_t take = static_cast<size_t>(std::min<int64_t>(bulk_left_, n - pos));
        if (bulk_to_sink_) {
          if (!bulk_drain_) CopyToSink(data + pos, take);
        } else {
          pending_bulk_.str.append(data + pos, take);
        }
        pos += take;
        bulk_left_ -= static_cast<int64_t>(take);
        if (bulk_left_ == 0) state_ = State::kBulkCrlf;
        break;
      }
      case State::kBulkCrlf: {
        if (n - pos < 2) return pos;
        if (data[pos] != '\r' || data[pos + 1] != '\n') return Fail("bulk not ended by CRLF");
        pos += 2;
        state_ = State::kLine;
        Complete(std::move(pending_bulk_));
        pending_bulk_ = Reply();
        break;
      }
    }
  }
  return pos;
}

size_t RespParser::DirectRemaining() const {
  if (state_ != State::kBulkPayload || !bulk_to_sink_ || bulk_drain_ || !error_.ok()) return 0;
  return static_cast<size_t>(bulk_left_);
}

int RespParser::DirectIovecs(iovec* out, int max) const {
  size_t left = DirectRemaining();
  int count = 0;
  size_t index = sink_index_, offset = sink_offset_;
  while (left > 0 && count < max && index < sink_.size()) {
    const size_t len = std::min(sink_[index].iov_len - offset, left);
    out[count].iov_base = static_cast<char*>(sink_[index].iov_base) + offset;
    out[count].iov_len = len;
    ++count;
    left -= len;
    ++index;
    offset = 0;
  }
  return count;
}

void RespParser::DirectConsumed(size_t n) {
  bulk_left_ -= static_cast<int64_t>(n);
  while (n > 0 && sink_index_ < sink_.size()) {
    const size_t take = std::min(sink_[sink_index_].iov_len - sink_offset_, n);
    n -= take;
    sink_offset_ += take;
    if (sink_offset_ == sink_[sink_index_].iov_len) {
      ++sink_index_;
      sink_offset_ = 0;
    }
  }
  if (bulk_left_ == 0) state_ = State::kBulkCrlf;
}

}  // namespace kvtier::remote
