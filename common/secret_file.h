// common/secret_file.h — files that hold secrets (a TLS private key, an ACL password) must not
// be readable by other users, as ssh refuses a private key with loose modes.

#ifndef KVTIER_COMMON_SECRET_FILE_H_
#define KVTIER_COMMON_SECRET_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

// OK when `path` (followed if a link, as ssh does) is a regular file owned by this process's
// user or by root, that other users cannot read or write and the group cannot write (0600,
// 0400 and 0640 pass; 0644 and 0660 do not). `what` names the option in errors:
// FailedPrecondition naming the path, its mode and `chmod 600 PATH`; NotFound when missing.
absl::Status CheckSecretFile(const std::string& path, absl::string_view what);

// CheckSecretFile, then the file's contents without trailing CR/LF; InvalidArgument when
// empty.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what);

}  // namespace kvtier

#endif  // KVTIER_COMMON_SECRET_FILE_H_
