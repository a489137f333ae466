// tiers/disk_directory.h — a cache directory is kvtier's own: private, never adopted, never
// written through a link (docs/disk-format.md, "Cache directory").
//
// KV blocks are prompts in another form and the directory holds every tenant's, so:
//   * Private: the directory is created 0700 and the data file 0600 (0750 / 0640 when the user
//     asks for group access), set with chmod/fchmod after creation so the umask cannot widen
//     them. An existing directory or data file that others (or, without group access, the
//     group) may read or write, or that another user owns, is refused with an error naming the
//     path, its mode and the chmod that fixes it.
//   * Never through a link: data.kvt and index/ are looked at with lstat and data.kvt is opened
//     with O_NOFOLLOW; a symbolic link in their place is refused (its target is not touched).
//     The cache directory itself may be reached through a link (a mount elsewhere); its owner
//     and mode are checked on what the link points at.
//   * Never adopted: data.kvt ends with a superblock (magic, version, the directory id the
//     index's metadata also holds, and the layout). It sits after the last region, so record
//     offsets are what they were before it existed and a truncated file loses it. A new cache
//     is made only in an empty or missing directory; a data file without an index, an index
//     without its data file, a data file of another directory or one shorter than its layout
//     is refused, saying which and what to do (`kvtier reset DIR`).
//   * A directory written before the superblock existed (its index holds the format metadata
//     but no directory id, and data.kvt is exactly its layout's size) gets a superblock and an
//     id on its first read-write open.

#ifndef KVTIER_TIERS_DISK_DIRECTORY_H_
#define KVTIER_TIERS_DISK_DIRECTORY_H_

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

inline constexpr size_t kSuperblockBytes = 4096;
inline constexpr char kSuperblockMagic[] = "KVTIERSB";  // 8 bytes on disk, no NUL
inline constexpr uint32_t kSuperblockVersion = 1;
// The data file while it is being created (renamed to data.kvt once complete).
inline constexpr char kDataFileCreatingName[] = "data.kvt.creating";
// The index's metadata name for the directory id.
inline constexpr char kDirectoryIdMeta[] = "directory_id";

struct Superblock {
  uint32_t version = kSuperblockVersion;
  std::string directory_id;  // 32 lowercase hex digits
  uint64_t region_bytes = 0;
  uint64_t regions = 0;
  uint32_t record_format = 0;  // kRecordFormatVersion of the records written

  friend bool operator==(const Superblock&, const Superblock&) = default;
};

// Where the superblock is: right after the last region.
inline uint64_t SuperblockOffset(uint64_t region_bytes, uint64_t regions) {
  return region_bytes * regions;
}
// Writes `sb` into out[0, kSuperblockBytes) (zero padded, XXH3 checksum at the end).
// InvalidArgument when directory_id is not 32 hex digits.
absl::Status EncodeSuperblock(const Superblock& sb, char* out);
// Decodes a superblock; DataLoss naming what is wrong (size, magic, version, checksum, id).
// Never reads outside `bytes`.
absl::StatusOr<Superblock> DecodeSuperblock(absl::string_view bytes);

// Whether `id` is a directory id: 32 lowercase hex digits.
bool IsDirectoryId(absl::string_view id);
// A fresh directory id: 16 bytes from getrandom, as 32 hex digits.
absl::StatusOr<std::string> NewDirectoryId();

// What to tell a user whose directory is refused: `kvtier reset DIR --yes`, or another one.
std::string ResetAdvice(const std::string& dir);

// "0755" — a mode's permission bits in octal.
std::string ModeText(mode_t mode);
// OK when `st` (of `path`, a directory when `is_dir`) is owned by this process's user and
// grants nothing to others (nor to the group unless `allow_group`, and never group write).
// FailedPrecondition naming the path, its mode and the chmod that fixes it; PermissionDenied
// for a path owned by another user.
absl::Status CheckPrivate(const std::string& path, const struct stat& st, bool is_dir,
                          bool allow_group);

// What a cache directory holds, as far as names go.
enum class DirectoryState {
  kEmpty,  // created now, or existing and empty: a new cache goes here
  kCache,  // data.kvt and index/ are there (their contents are checked by the opener)
  // index/ without data.kvt: a creation cut short when the index names no block (the opener
  // creates the data file), lost data when it names some (the opener refuses)
  kIndexOnly,
};
// Creates `dir` when missing (0700, or 0750 with `allow_group`), checks its owner and mode,
// refuses links for data.kvt and index/, removes a data.kvt.creating left by a creation cut
// short, and classifies it. FailedPrecondition, saying what to do, for: not a directory;
// data.kvt without index/ ("not adopted"); a non-empty directory with neither (not a kvtier
// cache).
absl::StatusOr<DirectoryState> PrepareCacheDirectory(const std::string& dir, bool allow_group);

// Creates the index directory when missing and sets its mode (0700 / 0750), before RocksDB
// opens it (RocksDB would create it by the umask).
absl::Status RestrictIndexDirectory(const std::string& dir, bool allow_group);

// Creates `<dir>/data.kvt` (O_EXCL | O_NOFOLLOW | O_DIRECT, mode 0600 or 0640) sized to the
// layout plus its superblock: made and synced as data.kvt.creating, then renamed (never over
// an existing data.kvt). Returns the descriptor.
absl::StatusOr<int> CreateDataFile(const std::string& dir, const Superblock& sb, bool allow_group);

// Opens an existing `<dir>/data.kvt` (O_NOFOLLOW | O_DIRECT, never created), checks it is a
// regular file of ours with a private mode, and that its superblock belongs with the index:
//   * `index_id` non-empty: the superblock must be present, valid, carry that id and the
//     layout `want` (region_bytes, regions); the file must hold the whole layout.
//   * `index_id` empty (the index has no id): a file of exactly the layout's size is a
//     directory of the format before superblocks: it is extended and given one with a new id;
//     a file with a valid superblock of this layout (a creation cut short before the index
//     recorded the id) keeps its id. `*id_out` receives the id to record in the index.
// FailedPrecondition naming the file and what to do on any mismatch.
absl::StatusOr<int> OpenDataFile(const std::string& dir, const Superblock& want,
                                 const std::string& index_id, bool allow_group,
                                 std::string* id_out);

// Reads the superblock of an open data file of `file_bytes` bytes laid out as (region_bytes,
// regions), with plain reads (no O_DIRECT needed): NotFound when the file is exactly the
// layout's size (a directory of the format before superblocks), DataLoss when it is shorter
// or the bytes are not a superblock.
absl::StatusOr<Superblock> ReadSuperblock(int fd, uint64_t file_bytes, uint64_t region_bytes,
                                          uint64_t regions);

}  // namespace kvtier

#endif  // KVTIER_TIERS_DISK_DIRECTORY_H_
