// tests/common/secret_file_test.cc — common/secret_file.h: a TLS key or password file others can
// read is refused naming the path, its mode and the chmod that fixes it (as ssh refuses a key);
// a private one is read, trailing newlines dropped.

#include "common/secret_file.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::testing::HasSubstr;

class SecretFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-secret-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/pw";
    std::ofstream(path_) << "s3cret\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(SecretFileTest, APrivateFileIsReadWithoutItsNewline) {
  for (mode_t mode : {0600, 0400, 0640}) {
    ASSERT_EQ(::chmod(path_.c_str(), mode), 0);
    absl::StatusOr<std::string> s = ReadSecretFile(path_, "--password-file");
    ASSERT_TRUE(s.ok()) << s.status() << " mode " << mode;
    EXPECT_EQ(*s, "s3cret");
  }
}

TEST_F(SecretFileTest, AFileOthersCanReadOrTheGroupCanWriteIsRefused) {
  for (mode_t mode : {0644, 0604, 0660, 0666}) {
    ASSERT_EQ(::chmod(path_.c_str(), mode), 0);
    absl::Status s = CheckSecretFile(path_, "tls.key_file");
    EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s << " mode " << mode;
    EXPECT_THAT(std::string(s.message()), HasSubstr("tls.key_file"));
    EXPECT_THAT(std::string(s.message()), HasSubstr(path_));
    EXPECT_THAT(std::string(s.message()), HasSubstr("chmod 600"));
  }
}

TEST_F(SecretFileTest, MissingEmptyAndNotAFileAreClearErrors) {
  EXPECT_TRUE(absl::IsNotFound(CheckSecretFile(dir_ + "/none", "x")));
  EXPECT_TRUE(absl::IsFailedPrecondition(CheckSecretFile(dir_, "x")));
  std::ofstream(path_, std::ios::trunc) << "\n";
  ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
  EXPECT_TRUE(absl::IsInvalidArgument(ReadSecretFile(path_, "x").status()));
}

}  // namespace
}  // namespace kvtier
