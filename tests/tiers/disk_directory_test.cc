// A cache directory is kvtier's own (tiers/disk_directory.h): private modes on create, loose
// modes refused (group access only when asked), links in place of data.kvt or index/ refused
// with their targets untouched byte for byte, a foreign data file never adopted, an index
// without its data file or a truncated data file refused, a non-empty foreign directory
// refused, a directory of the format before superblocks still opened (and upgraded), and the
// superblock's encoding.

#include "tiers/disk_directory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tiers/disk_index.h"
#include "tiers/disk_tier.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

Geometry TestGeometry() { return Geometry{2, 2, 32, DType::kFloat16, 16}; }  // 8 KiB blocks

std::vector<char> Content(const BlockKey& key, size_t n) {
  std::vector<char> v(n);
  std::mt19937_64 rng(key.hi ^ key.lo);
  for (char& c : v) c = static_cast<char>(rng());
  return v;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

class DiskDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-dir-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    cache_ = root_ + "/cache";
  }
  void TearDown() override { fs::remove_all(root_); }

  DiskTierOptions Options() const {
    DiskTierOptions o;
    o.directory = cache_;
    o.region_bytes = 64 * 1024;
    o.capacity_bytes = 4 * o.region_bytes;
    o.force_fallback_io = true;
    o.staging_buffers = 4;
    return o;
  }

  absl::StatusOr<std::unique_ptr<DiskTier>> Open(DiskTierOptions o) {
    return DiskTier::Open(o, TestGeometry(), [this](const BlockKey&, const std::string&,
                                                    RecordId) { ++recovered_; },
                          nullptr);
  }
  absl::StatusOr<std::unique_ptr<DiskTier>> Open() { return Open(Options()); }

  // A cache with `n` blocks written and closed.
  void MakeCache(int n) {
    auto t = Open();
    ASSERT_TRUE(t.ok()) << t.status();
    for (int i = 0; i < n; ++i) {
      const BlockKey key{7, static_cast<uint64_t>(i)};
      const std::vector<char> c = Content(key, (*t)->block_bytes());
      absl::Status status;
      ASSERT_TRUE((*t)->Write(key, "default", c.data(), [&](absl::Status s) { status = s; }).ok());
      (*t)->Drain();
      ASSERT_TRUE(status.ok()) << status;
    }
  }

  uint64_t LayoutBytes() const { return Options().capacity_bytes; }
  std::string Data() const { return cache_ + "/data.kvt"; }
  std::string Index() const { return cache_ + "/index"; }

  std::string root_, cache_;
  int recovered_ = 0;
};

TEST_F(DiskDirectoryTest, ANewCacheIsPrivateWhateverTheUmask) {
  const mode_t old = ::umask(0);  // the most permissive umask: modes must not depend on it
  auto t = Open();
  ::umask(old);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(ModeOf(cache_), 0700u);
  EXPECT_EQ(ModeOf(Data()), 0600u);
  EXPECT_EQ(ModeOf(Index()), 0700u);
  struct stat st;
  ASSERT_EQ(::stat(Data().c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), LayoutBytes() + kSuperblockBytes);
}

TEST_F(DiskDirectoryTest, GroupAccessWhenAskedGivesGroupReadOnly) {
  DiskTierOptions o = Options();
  o.group_access = true;
  const mode_t old = ::umask(0);
  auto t = Open(o);
  ::umask(old);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(ModeOf(cache_), 0750u);
  EXPECT_EQ(ModeOf(Data()), 0640u);
  t->reset();
  // Without the option, the same directory is refused, naming the chmod that fixes it.
  auto refused = Open();
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("0750"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("chmod 700"));
  // Reopened with it: fine.
  EXPECT_TRUE(Open(o).ok());
}

TEST_F(DiskDirectoryTest, LooseModesAreRefusedNamingPathModeAndFix) {
  MakeCache(2);
  ASSERT_EQ(::chmod(cache_.c_str(), 0755), 0);
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.status())) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(cache_));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("0755"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("chmod 700"));
  ASSERT_EQ(::chmod(cache_.c_str(), 0700), 0);

  ASSERT_EQ(::chmod(Data().c_str(), 0644), 0);
  t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(Data()));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("chmod 600"));
  // Group write is refused even with group access.
  ASSERT_EQ(::chmod(Data().c_str(), 0660), 0);
  DiskTierOptions g = Options();
  g.group_access = true;
  EXPECT_FALSE(Open(g).ok());
  ASSERT_EQ(::chmod(Data().c_str(), 0600), 0);

  ASSERT_EQ(::chmod(Index().c_str(), 0777), 0);
  t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(Index()));
  ASSERT_EQ(::chmod(Index().c_str(), 0700), 0);

  t = Open();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(recovered_, 2);  // nothing was lost to the refusals
}

TEST_F(DiskDirectoryTest, ASymlinkedDataFileIsRefusedAndItsTargetUntouched) {
  MakeCache(1);
  // The victim: a file of the user's, 800 bytes.
  const std::string victim = root_ + "/victim";
  std::string bytes(800, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  WriteAll(victim, bytes);
  ASSERT_EQ(::chmod(victim.c_str(), 0600), 0);
  fs::remove(Data());
  fs::create_symlink(victim, Data());
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.status())) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("symbolic link"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(Data()));
  EXPECT_EQ(ReadAll(victim), bytes);  // not grown, not written
  EXPECT_EQ(fs::file_size(victim), 800u);
}

TEST_F(DiskDirectoryTest, ASymlinkedIndexDirectoryIsRefusedAndItsTargetUntouched) {
  MakeCache(1);
  const std::string elsewhere = root_ + "/elsewhere";
  fs::rename(Index(), elsewhere);
  fs::create_symlink(elsewhere, Index());
  std::vector<std::pair<std::string, std::string>> before;
  for (const auto& e : fs::directory_iterator(elsewhere)) {
    before.emplace_back(e.path().filename(), ReadAll(e.path()));
  }
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("symbolic link"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(Index()));
  std::vector<std::pair<std::string, std::string>> after;
  for (const auto& e : fs::directory_iterator(elsewhere)) {
    after.emplace_back(e.path().filename(), ReadAll(e.path()));
  }
  std::sort(before.begin(), before.end());
  std::sort(after.begin(), after.end());
  EXPECT_EQ(before, after);
}

TEST_F(DiskDirectoryTest, AForeignDataFileWithoutAnIndexIsRefusedAndUntouched) {
  ASSERT_EQ(::mkdir(cache_.c_str(), 0700), 0);
  const std::string foreign(800, 'F');
  WriteAll(Data(), foreign);
  ASSERT_EQ(::chmod(Data().c_str(), 0600), 0);
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.status())) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("no index"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("kvtier reset"));
  EXPECT_EQ(ReadAll(Data()), foreign);
  EXPECT_FALSE(fs::exists(Index()));
}

TEST_F(DiskDirectoryTest, ADataFileOfAnotherDirectoryIsRefusedAndUntouched) {
  MakeCache(2);
  // Another cache of the same layout: its data file put in place of ours.
  const std::string other = root_ + "/other";
  {
    DiskTierOptions o = Options();
    o.directory = other;
    auto t = Open(o);
    ASSERT_TRUE(t.ok()) << t.status();
  }
  fs::remove(Data());
  fs::copy_file(other + "/data.kvt", Data());
  ASSERT_EQ(::chmod(Data().c_str(), 0600), 0);
  const std::string before = ReadAll(Data());
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("another cache directory"));
  EXPECT_EQ(ReadAll(Data()), before);

  // A file that is not kvtier's at all, of the right size: no superblock magic.
  WriteAll(Data(), std::string(LayoutBytes() + kSuperblockBytes, 'x'));
  t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("magic"));
}

TEST_F(DiskDirectoryTest, AnIndexWithoutItsDataFileIsRefused) {
  MakeCache(2);
  fs::remove(Data());
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.status())) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("no data.kvt"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("kvtier reset"));
  EXPECT_FALSE(fs::exists(Data()));  // not recreated empty under the old index
}

TEST_F(DiskDirectoryTest, ACreationCutShortOpensAsANewCache) {
  MakeCache(0);  // an index that names no block
  // As if the process died before the data file was renamed into place.
  fs::rename(Data(), cache_ + "/" + kDataFileCreatingName);
  auto t = Open();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(fs::exists(cache_ + "/" + kDataFileCreatingName));
  EXPECT_EQ(fs::file_size(Data()), LayoutBytes() + kSuperblockBytes);
  EXPECT_EQ(ModeOf(Data()), 0600u);
}

TEST_F(DiskDirectoryTest, ATruncatedDataFileIsRefused) {
  MakeCache(3);
  ASSERT_EQ(::truncate(Data().c_str(), 64 * 1024), 0);
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.status())) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("truncated"));
  EXPECT_EQ(fs::file_size(Data()), 64u * 1024);  // not grown back silently
}

TEST_F(DiskDirectoryTest, ANonEmptyForeignDirectoryIsRefused) {
  ASSERT_EQ(::mkdir(cache_.c_str(), 0700), 0);
  WriteAll(cache_ + "/notes.txt", "mine");
  auto t = Open();
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.status())) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("not empty"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("notes.txt"));
  EXPECT_FALSE(fs::exists(Data()));
  EXPECT_FALSE(fs::exists(Index()));
  // An existing empty private directory is fine.
  fs::remove(cache_ + "/notes.txt");
  EXPECT_TRUE(Open().ok());
}

// A directory as the format before superblocks left it: data.kvt exactly the layout's size,
// no directory id in the index. Made from a current one by removing both.
TEST_F(DiskDirectoryTest, ADirectoryOfTheFormatBeforeSuperblocksOpensAndIsUpgraded) {
  MakeCache(3);
  ASSERT_EQ(::truncate(Data().c_str(), static_cast<off_t>(LayoutBytes())), 0);
  {
    auto index = DiskIndex::Open(cache_, DiskIndex::Mode::kReadWrite);
    ASSERT_TRUE(index.ok()) << index.status();
    ASSERT_TRUE((*index)->DeleteKeys({MetaIndexKey(kDirectoryIdMeta)}).ok());
  }
  auto t = Open();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(recovered_, 3);
  // Every block reads back exactly.
  for (int i = 0; i < 3; ++i) {
    const BlockKey key{7, static_cast<uint64_t>(i)};
    std::vector<char> out((*t)->block_bytes());
    absl::Status st;
    ASSERT_TRUE((*t)->Read(static_cast<RecordId>(i), key, "default", out.data(),
                           [&](absl::Status s) { st = s; })
                    .ok());
    (*t)->Drain();
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(out, Content(key, out.size()));
  }
  t->reset();
  // It now has a superblock whose id the index holds too.
  EXPECT_EQ(fs::file_size(Data()), LayoutBytes() + kSuperblockBytes);
  auto index = DiskIndex::Open(cache_, DiskIndex::Mode::kReadOnly);
  ASSERT_TRUE(index.ok());
  absl::StatusOr<std::string> id = (*index)->GetMeta(kDirectoryIdMeta);
  ASSERT_TRUE(id.ok()) << id.status();
  const int fd = ::open(Data().c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  absl::StatusOr<Superblock> sb =
      ReadSuperblock(fd, LayoutBytes() + kSuperblockBytes, 64 * 1024, 4);
  ::close(fd);
  ASSERT_TRUE(sb.ok()) << sb.status();
  EXPECT_EQ(sb->directory_id, *id);
}

TEST(SuperblockTest, RoundTripsAndRejectsDamage) {
  Superblock sb;
  sb.directory_id = "0123456789abcdef0123456789abcdef";
  sb.region_bytes = 64 << 20;
  sb.regions = 12;
  sb.record_format = 1;
  std::string buf(kSuperblockBytes, '\0');
  ASSERT_TRUE(EncodeSuperblock(sb, buf.data()).ok());
  absl::StatusOr<Superblock> back = DecodeSuperblock(buf);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, sb);

  for (size_t at : {size_t{0}, size_t{9}, size_t{20}, size_t{50}, size_t{4000}, size_t{4095}}) {
    std::string bad = buf;
    bad[at] = static_cast<char>(bad[at] ^ 0x20);
    EXPECT_TRUE(absl::IsDataLoss(DecodeSuperblock(bad).status())) << "byte " << at;
  }
  EXPECT_TRUE(absl::IsDataLoss(DecodeSuperblock(buf.substr(0, 100)).status()));
  sb.directory_id = "not hex";
  EXPECT_TRUE(absl::IsInvalidArgument(EncodeSuperblock(sb, buf.data())));
}

TEST(SuperblockTest, NewDirectoryIdsAreHexAndDiffer) {
  absl::StatusOr<std::string> a = NewDirectoryId(), b = NewDirectoryId();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, *b);
}

}  // namespace
}  // namespace kvtier
