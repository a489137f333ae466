#include "tools/cli/json.h"

#include "common/json.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier::cli {

Json Json::Bool(bool b) {
  Json j;
  j.type_ = Type::kBool;
  j.bool_ = b;
  return j;
}
Json Json::Number(double v) {
  Json j;
  j.type_ = Type::kNumber;
  j.number_ = v;
  return j;
}
Json Json::String(std::string s) {
  Json j;
  j.type_ = Type::kString;
  j.string_ = std::move(s);
  return j;
}
Json Json::Array() {
  Json j;
  j.type_ = Type::kArray;
  return j;
}
Json Json::Object() {
  Json j;
  j.type_ = Type::kObject;
  return j;
}

Json& Json::Set(absl::string_view key, Json value) {
  for (auto& [k, v] : members_) {
    if (k == key) {
      v = std::move(value);
      return *this;
    }
  }
  members_.emplace_back(std::string(key), std::move(value));
  return *this;
}

Json& Json::Push(Json value) {
  items_.push_back(std::move(value));
  return *this;
}

const Json* Json::Find(absl::string_view key) const {
  for (const auto& [k, v] : members_) {
    if (k == key) return &v;
  }
  return nullptr;
}

const Json* Json::Path(absl::string_view path) const {
  const Json* at = this;
  while (at != nullptr && !path.empty()) {
    const size_t slash = path.find('/');
    const absl::string_view step = path.substr(0, slash);
    path = slash == absl::string_view::npos ? absl::string_view() : path.substr(slash + 1);
    if (at->is_array()) {
      char* end = nullptr;
      const std::string s(step);
      const unsigned long i = std::strtoul(s.c_str(), &end, 10);
      at = (end != s.c_str() && *end == '\0' && i < at->items_.size()) ? &at->items_[i] : nullptr;
    } else {
      at = at->Find(step);
    }
  }
  return at;
}

namespace {

void EscapeTo(std::string* out, absl::string_view s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

}  // namespace

void Json::DumpTo(std::string* out, int indent, int depth) const {
  auto newline = [&](int d) {
    if (indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(indent * d), ' ');
  };
  switch (type_) {
    case Type::kNull: out->append("null"); break;
    case Type::kBool: out->append(bool_ ? "true" : "false"); break;
    case Type::kNumber:
      if (!std::isfinite(number_)) {
        out->append("null");  // JSON has no NaN / Inf
      } else if (number_ == std::floor(number_) && std::fabs(number_) < 9.007199254740992e15) {
        absl::StrAppend(out, static_cast<int64_t>(number_));
      } else {
        absl::StrAppendFormat(out, "%.17g", number_);
      }
      break;
    case Type::kString: EscapeTo(out, string_); break;
    case Type::kArray:
      out->push_back('[');
      for (size_t i = 0; i < items_.size(); ++i) {
        if (i > 0) out->push_back(',');
        newline(depth + 1);
        items_[i].DumpTo(out, indent, depth + 1);
      }
      if (!items_.empty()) newline(depth);
      out->push_back(']');
      break;
    case Type::kObject:
      out->push_back('{');
      for (size_t i = 0; i < members_.size(); ++i) {
        if (i > 0) out->push_back(',');
        newline(depth + 1);
        EscapeTo(out, members_[i].first);
        out->append(indent < 0 ? ":" : ": ");
        members_[i].second.DumpTo(out, indent, depth + 1);
      }
      if (!members_.empty()) newline(depth);
      out->push_back('}');
      break;
  }
}

std::string Json::Dump(int indent) const {
  std::string out;
  DumpTo(&out, indent, 0);
  return out;
}

namespace {

// A common/json value as a Json tree (the reader is shared with the rest of kvtier; this
// type only adds building and printing).
absl::StatusOr<Json> Convert(const json::Value& v) {
  switch (v.type()) {
    case json::Type::kNull:
      return Json();
    case json::Type::kBool:
      return Json::Bool(v.bool_value());
    case json::Type::kNumber: {
      absl::StatusOr<double> d = v.GetDouble();
      if (!d.ok()) return d.status();
      return Json::Number(*d);
    }
    case json::Type::kString:
      return Json::String(std::string(v.string_value()));
    case json::Type::kArray: {
      Json out = Json::Array();
      for (json::Value item : v.children()) {
        absl::StatusOr<Json> c = Convert(item);
        if (!c.ok()) return c.status();
        out.Push(std::move(*c));
      }
      return out;
    }
    case json::Type::kObject: {
      Json out = Json::Object();
      for (json::Value member : v.children()) {
        absl::StatusOr<Json> c = Convert(member);
        if (!c.ok()) return c.status();
        out.Set(member.key(), std::move(*c));
      }
      return out;
    }
  }
  return absl::InternalError("unknown JSON type");
}

}  // namespace

absl::StatusOr<Json> Json::Parse(absl::string_view text) {
  json::Document doc;
  if (absl::Status s = doc.Parse(text); !s.ok()) return s;
  return Convert(doc.root());
}

}  // namespace kvtier::cli
