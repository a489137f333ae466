// tests/tiers/disk_tier_fixture.h — the disk tier test fixture: a tier in a fresh temporary
// directory on either I/O backend (the parameter: true = the thread pool), with synchronous
// write / read helpers and byte-level corruption of its data file, and `Heard`, a callback
// recorder. Shared by disk_tier_test.cc, disk_tier_read_test.cc,
// disk_tier_reservation_test.cc and quantized_disk_tier_test.cc.

#ifndef KVTIER_TESTS_TIERS_DISK_TIER_FIXTURE_H_
#define KVTIER_TESTS_TIERS_DISK_TIER_FIXTURE_H_

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "gtest/gtest.h"
#include "tiers/disk_tier.h"

namespace kvtier {

inline Geometry TestGeometry() { return Geometry{2, 2, 32, DType::kFloat16, 16}; }  // 8 KiB blocks

inline std::vector<char> Content(const BlockKey& key, size_t n) {
  std::vector<char> v(n);
  std::mt19937_64 rng(key.hi ^ key.lo);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t w = rng();
    std::memcpy(v.data() + i, &w, std::min<size_t>(8, n - i));
  }
  return v;
}

// What a test callback heard, and when.
struct Heard {
  std::mutex mu;
  std::vector<absl::Status> statuses;
  Notification first;

  absl::AnyInvocable<void(absl::Status)> Callback() {
    return [this](absl::Status s) {
      {
        std::lock_guard<std::mutex> l(mu);
        statuses.push_back(std::move(s));
      }
      if (!first.HasBeenNotified()) first.Notify();
    };
  }
  size_t count() {
    std::lock_guard<std::mutex> l(mu);
    return statuses.size();
  }
  absl::Status at(size_t i) {
    std::lock_guard<std::mutex> l(mu);
    return statuses.at(i);
  }
};

class DiskTierTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier-disk-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    tier_.reset();
    std::filesystem::remove_all(dir_);
  }

  DiskTierOptions Options() {
    DiskTierOptions o;
    o.directory = dir_ + "/cache";
    o.region_bytes = 64 * 1024;  // 7 records of 8 KiB + header each
    o.capacity_bytes = 4 * o.region_bytes;
    o.force_fallback_io = GetParam();
    o.staging_buffers = 8;
    return o;
  }

  absl::Status Open(DiskTierOptions o, Geometry g = TestGeometry()) {
    tier_.reset();
    recovered_.clear();
    auto t = DiskTier::Open(
        o, g,
        [this](const BlockKey& k, const std::string& ns, RecordId id) {
          recovered_[k] = {ns, id};
        },
        [this](std::vector<std::pair<BlockKey, RecordId>> d) {
          std::lock_guard<std::mutex> l(dropped_mu_);
          for (auto& p : d) dropped_.push_back(p.first);
        });
    if (!t.ok()) return t.status();
    tier_ = std::move(*t);
    return absl::OkStatus();
  }

  // Writes a block and waits for it; returns its id.
  RecordId WriteSync(const BlockKey& key, const std::string& ns = "default",
                     absl::Status* result = nullptr) {
    const std::vector<char> c = Content(key, tier_->block_bytes());
    absl::Status status;
    absl::StatusOr<RecordId> id =
        tier_->Write(key, ns, c.data(), [&](absl::Status s) { status = s; });
    EXPECT_TRUE(id.ok()) << id.status();
    tier_->Drain();
    if (result != nullptr) {
      *result = status;
    } else {
      EXPECT_TRUE(status.ok()) << status;
    }
    return id.ok() ? *id : 0;
  }

  absl::Status ReadSync(RecordId id, const BlockKey& key, std::vector<char>* out,
                        const std::string& ns = "default") {
    out->assign(tier_->block_bytes(), 'P');
    absl::Status status;
    absl::Status s = tier_->Read(id, key, ns, out->data(), [&](absl::Status st) { status = st; });
    if (!s.ok()) return s;
    tier_->Drain();
    return status;
  }

  // Overwrites bytes of the data file behind the tier's back (not O_DIRECT).
  void Corrupt(uint64_t offset, const std::string& bytes) {
    const int fd = ::open((dir_ + "/cache/data.kvt").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }

  // Inverts every bit of the byte at `offset`: a corruption whatever the byte held (writing a
  // fixed value is no corruption when the byte already had it — 1 in 256 for random data;
  // seed 14227515919804480003 hit it in CI).
  void FlipByte(uint64_t offset) {
    const int fd = ::open((dir_ + "/cache/data.kvt").c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char byte = 0;
    ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(offset)), 1);
    byte = static_cast<char>(~byte);
    ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
  }

  std::string dir_;
  std::unique_ptr<DiskTier> tier_;
  std::map<BlockKey, std::pair<std::string, RecordId>> recovered_;
  std::mutex dropped_mu_;
  std::vector<BlockKey> dropped_;
};

}  // namespace kvtier

#endif  // KVTIER_TESTS_TIERS_DISK_TIER_FIXTURE_H_
