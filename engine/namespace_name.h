// engine/namespace_name.h — what a namespace (tenant) may be called.
//
// 1 to 128 bytes of [A-Za-z0-9._:@-]: safe in file names, metric labels and log lines.

#ifndef KVTIER_ENGINE_NAMESPACE_NAME_H_
#define KVTIER_ENGINE_NAMESPACE_NAME_H_

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace kvtier {

inline absl::Status ValidateNamespaceName(absl::string_view name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrFormat("namespace name must be 1 to 128 bytes long, got %d bytes", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "namespace name '%s' contains '%c'; allowed are letters, digits and . _ : @ -",
          absl::CHexEscape(name), c));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier

#endif  // KVTIER_ENGINE_NAMESPACE_NAME_H_
