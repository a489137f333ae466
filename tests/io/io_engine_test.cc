// tests/io/io_engine_test.cc — the IoEngine contract, run against both backends: io_uring
// (skipped, saying why, where the kernel or a seccomp filter refuses it) and the pread /
// pwrite thread pool (Options::force_fallback).
//
// Files live in a fresh directory under $TMPDIR (default /tmp), opened with OpenPreallocated
// (O_DIRECT), so every test exercises the alignment rules for real.

#include "io/io_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/io_memory.h"
#include "common/mutex.h"
#include "gtest/gtest.h"
#include "tests/io/io_test_util.h"

namespace kvtier {
namespace {

using io_test::AlignedBuffer;
using io_test::Contains;
using io_test::MakeOp;
using io_test::TempDir;
using Result = std::optional<absl::StatusOr<size_t>>;

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * kKiB;
constexpr uint64_t kFileBytes = 64 * kMiB;
constexpr IoOp::Kind kRead = IoOp::Kind::kRead;
constexpr IoOp::Kind kWrite = IoOp::Kind::kWrite;

enum class Backend { kIoUring, kThreadPool };

std::string BackendName(const testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kIoUring ? "IoUring" : "ThreadPool";
}

class IoEngineTest : public testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok()) << "mkdtemp failed";
    absl::StatusOr<std::unique_ptr<IoEngine>> engine = NewEngine(IoEngine::Options{});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    if (GetParam() == Backend::kIoUring && !engine_->uses_io_uring()) {
      GTEST_SKIP() << "io_uring is not usable on this machine: " << engine_->backend();
    }
    absl::StatusOr<int> fd = OpenPreallocated(dir_.File("data"), kFileBytes);
    if (!fd.ok() && fd.status().code() == absl::StatusCode::kInvalidArgument) {
      GTEST_SKIP() << dir_.path() << " does not support O_DIRECT: " << fd.status();
    }
    ASSERT_TRUE(fd.ok()) << fd.status();
    fd_ = *fd;
    KVTIER_ASSERT_OK_AND_ASSIGN(file_, engine_->RegisterFile(fd_));
  }

  void TearDown() override {
    engine_.reset();
    for (int fd : extra_fds_) close(fd);
    if (fd_ >= 0) close(fd_);
  }

  absl::StatusOr<std::unique_ptr<IoEngine>> NewEngine(IoEngine::Options options) {
    options.force_fallback = GetParam() == Backend::kThreadPool;
    return IoEngine::Create(options);
  }

  // Submits one op and waits for it.
  absl::StatusOr<size_t> RunOne(IoOp::Kind kind, uint64_t offset, void* buffer, size_t length,
                                int file = -1) {
    Result result;
    IoOp op = MakeOp(kind, file < 0 ? file_ : file, offset, buffer, length, &result);
    if (absl::Status s = engine_->Submit({&op, 1}); !s.ok()) return s;
    engine_->Drain();
    if (!result.has_value()) return absl::InternalError("callback did not run");
    return *result;
  }

  // The file's bytes [offset, offset + length), read through the engine.
  std::vector<std::byte> ReadBack(uint64_t offset, size_t length) {
    AlignedBuffer buffer(length);
    absl::StatusOr<size_t> n = RunOne(kRead, offset, buffer.data(), length);
    EXPECT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(n.value_or(0), length);
    return std::vector<std::byte>(buffer.data(), buffer.data() + length);
  }

  int OpenExtra(const std::string& name, uint64_t size) {
    absl::StatusOr<int> fd = OpenPreallocated(dir_.File(name), size);
    EXPECT_TRUE(fd.ok()) << fd.status();
    if (!fd.ok()) return -1;
    extra_fds_.push_back(*fd);
    return *fd;
  }

  TempDir dir_;
  std::unique_ptr<IoEngine> engine_;
  int fd_ = -1;
  int file_ = -1;
  std::vector<int> extra_fds_;
};

// Whether this process may pin memory without limit (CAP_IPC_LOCK in its effective set).
bool HasCapIpcLock() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      return (std::stoull(line.substr(7), nullptr, 16) >> 14) & 1;  // CAP_IPC_LOCK = 14
    }
  }
  return false;
}

bool SameBytes(const std::byte* a, const std::byte* b, size_t n) {
  return std::memcmp(a, b, n) == 0;
}

TEST_P(IoEngineTest, BackendSaysWhatItIs) {
  if (GetParam() == Backend::kIoUring) {
    EXPECT_TRUE(engine_->uses_io_uring());
    EXPECT_TRUE(Contains(engine_->backend(), "io_uring (queue depth 64")) << engine_->backend();
  } else {
    EXPECT_FALSE(engine_->uses_io_uring());
    EXPECT_EQ(engine_->backend(), "thread pool (4)");
  }
}

TEST_P(IoEngineTest, WriteThenReadBackIsByteExact) {
  const std::vector<std::pair<uint64_t, size_t>> ranges = {{0, 4 * kKiB},
                                                           {4 * kKiB, 8 * kKiB},
                                                           {kMiB + 8 * kKiB, 64 * kKiB},
                                                           {kFileBytes - 12 * kKiB, 12 * kKiB}};
  uint64_t seed = 1;
  for (auto [offset, length] : ranges) {
    AlignedBuffer data(length);
    data.FillRandom(seed++);
    absl::StatusOr<size_t> n = RunOne(kWrite, offset, data.data(), length);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, length);
    std::vector<std::byte> back = ReadBack(offset, length);
    EXPECT_TRUE(SameBytes(back.data(), data.data(), length)) << "offset " << offset;
  }
}

TEST_P(IoEngineTest, ScatterReadSplitsOneRangeIntoTwoBuffers) {
  // 4 KiB + 64 KiB at an offset, the head into one buffer and the tail into another; then the
  // same read ending past end of file comes back short with what it got.
  AlignedBuffer data(68 * kKiB);
  data.FillRandom(11);
  ASSERT_TRUE(RunOne(kWrite, kMiB, data.data(), data.size()).ok());
  AlignedBuffer head(4 * kKiB), tail(64 * kKiB);
  Result result;
  IoOp op = MakeOp(kRead, file_, kMiB, head.data(), 4 * kKiB, &result);
  op.tail = tail.data();
  op.tail_length = 64 * kKiB;
  ASSERT_TRUE(engine_->Submit({&op, 1}).ok());
  engine_->Drain();
  ASSERT_TRUE(result.has_value() && result->ok());
  EXPECT_EQ(**result, 68 * kKiB);
  EXPECT_TRUE(SameBytes(head.data(), data.data(), 4 * kKiB));
  EXPECT_TRUE(SameBytes(tail.data(), data.data() + 4 * kKiB, 64 * kKiB));

  AlignedBuffer end_tail(64 * kKiB);
  Result at_end;
  IoOp past = MakeOp(kRead, file_, kFileBytes - 8 * kKiB, head.data(), 4 * kKiB, &at_end);
  past.tail = end_tail.data();
  past.tail_length = 64 * kKiB;
  ASSERT_TRUE(engine_->Submit({&past, 1}).ok());
  engine_->Drain();
  ASSERT_TRUE(at_end.has_value() && at_end->ok()) << (at_end ? at_end->status().ToString() : "");
  EXPECT_EQ(**at_end, 8 * kKiB);  // the file's last two pages: the head and one of the tail
}

TEST_P(IoEngineTest, BadScatterReadsAreRefusedNamingWhy) {
  AlignedBuffer head(4 * kKiB), tail(16 * kKiB);
  struct Case {
    const char* name;
    IoOp::Kind kind;
    void* tail;
    size_t tail_length;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"write", kWrite, tail.data(), 4096, "scatter reads only"},
      {"no tail buffer", kRead, nullptr, 4096, "tail_length 4096 without a tail buffer"},
      {"misaligned tail", kRead, tail.data() + 512, 4096, "is not 4096-aligned"},
      {"zero tail", kRead, tail.data(), 0, "tail_length 0 is not a positive multiple"},
      {"ragged tail", kRead, tail.data(), 4096 + 512, "tail_length 4608"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    IoOp op = MakeOp(c.kind, file_, 0, head.data(), 4096, nullptr);
    op.done = [](absl::StatusOr<size_t>) { ADD_FAILURE() << "a rejected op ran"; };
    op.tail = c.tail;
    op.tail_length = c.tail_length;
    absl::Status s = engine_->Submit({&op, 1});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(s.message(), c.expect)) << s;
  }
}

TEST_P(IoEngineTest, PluggedSubmitsWaitForUnplugAndThenAllRun) {
  AlignedBuffer data(16 * 4096);
  data.FillRandom(5);
  std::atomic<int> done{0};
  {
    IoPlug plug(*engine_);
    IoPlug nested(*engine_);  // plugs nest: only the outermost submits
    for (int i = 0; i < 16; ++i) {
      IoOp op = MakeOp(kWrite, file_, uint64_t(i) * 4096, data.data() + i * 4096, 4096, nullptr);
      op.done = [&](absl::StatusOr<size_t> r) {
        EXPECT_TRUE(r.ok()) << r.status();
        ++done;
      };
      ASSERT_TRUE(engine_->Submit({&op, 1}).ok());
    }
    // Held: nothing has reached the kernel, so nothing can have completed.
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_EQ(done.load(), 0);
  }
  engine_->Drain();
  EXPECT_EQ(done.load(), 16);
  std::vector<std::byte> back = ReadBack(0, 16 * 4096);
  EXPECT_TRUE(SameBytes(back.data(), data.data(), back.size()));
  // Another thread's submits are not held by this thread's plug.
  IoPlug plug(*engine_);
  std::atomic<bool> other_done{false};
  std::thread other([&] {
    IoOp op = MakeOp(kRead, file_, 0, data.data(), 4096, nullptr);
    op.done = [&](absl::StatusOr<size_t>) { other_done = true; };
    ASSERT_TRUE(engine_->Submit({&op, 1}).ok());
  });
  other.join();
  for (int i = 0; i < 2000 && !other_done.load(); ++i) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(other_done.load());
}

TEST_P(IoEngineTest, BatchOf64OpsLargerThanTheQueueRoundTrips) {
  // A queue depth of 8 makes most of each batch wait for room in the ring.
  IoEngine::Options options;
  options.queue_depth = 8;
  KVTIER_ASSERT_OK_AND_ASSIGN(engine_, NewEngine(options));
  KVTIER_ASSERT_OK_AND_ASSIGN(file_, engine_->RegisterFile(fd_));
  constexpr size_t kOps = 64, kOpBytes = 16 * kKiB;
  AlignedBuffer out(kOps * kOpBytes), in(kOps * kOpBytes);
  out.FillRandom(7);
  // Scattered, distinct offsets: op i goes to slot perm[i] of the file.
  std::vector<uint64_t> slot(kOps);
  for (size_t i = 0; i < kOps; ++i) slot[i] = i;
  std::shuffle(slot.begin(), slot.end(), std::mt19937(3));
  std::vector<Result> results(kOps);
  std::vector<IoOp> ops;
  for (size_t i = 0; i < kOps; ++i) {
    ops.push_back(MakeOp(kWrite, file_, slot[i] * 3 * kOpBytes, out.data() + i * kOpBytes, kOpBytes,
                         &results[i]));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  for (size_t i = 0; i < kOps; ++i) {
    ASSERT_TRUE(results[i].has_value());
    ASSERT_TRUE(results[i]->ok()) << results[i]->status();
    EXPECT_EQ(**results[i], kOpBytes);
  }
  ops.clear();
  for (size_t i = 0; i < kOps; ++i) {
    results[i].reset();
    ops.push_back(MakeOp(kRead, file_, slot[i] * 3 * kOpBytes, in.data() + i * kOpBytes, kOpBytes,
                         &results[i]));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  for (size_t i = 0; i < kOps; ++i) {
    ASSERT_TRUE(results[i].has_value() && results[i]->ok());
    EXPECT_EQ(**results[i], kOpBytes);
  }
  EXPECT_TRUE(SameBytes(in.data(), out.data(), out.size()));
}

TEST_P(IoEngineTest, TwoMiBOpsRoundTrip) {
  constexpr size_t kOps = 8, kOpBytes = 2 * kMiB;
  AlignedBuffer out(kOps * kOpBytes), in(kOps * kOpBytes);
  out.FillRandom(11);
  std::vector<Result> results(2 * kOps);
  std::vector<IoOp> ops;
  for (size_t i = 0; i < kOps; ++i) {
    ops.push_back(MakeOp(kWrite, file_, (kOps - i) * kOpBytes, out.data() + i * kOpBytes, kOpBytes,
                         &results[i]));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  ops.clear();
  for (size_t i = 0; i < kOps; ++i) {
    ops.push_back(MakeOp(kRead, file_, (kOps - i) * kOpBytes, in.data() + i * kOpBytes, kOpBytes,
                         &results[kOps + i]));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  for (const Result& r : results) {
    ASSERT_TRUE(r.has_value() && r->ok());
    EXPECT_EQ(**r, kOpBytes);
  }
  EXPECT_TRUE(SameBytes(in.data(), out.data(), out.size()));
}

TEST_P(IoEngineTest, FixedBufferRegionsAndPlainBuffersMixInOneBatch) {
  AlignedBuffer staging(4 * kMiB), small(64 * kKiB), plain(64 * kKiB);
  const std::pair<void*, size_t> regions[] = {{staging.data(), staging.size()},
                                              {small.data(), small.size()}};
  KVTIER_ASSERT_OK(engine_->RegisterBuffers(regions));
  if (GetParam() == Backend::kIoUring) {
    // Pinning counts against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK; where the
    // kernel refuses, the engine says so in the log and uses plain I/O, which must still work.
    rlimit memlock;
    const bool may_pin = HasCapIpcLock() || (getrlimit(RLIMIT_MEMLOCK, &memlock) == 0 &&
                                             memlock.rlim_cur >= 64 * kMiB);
    if (may_pin) {
      EXPECT_TRUE(Contains(engine_->backend(), "2 fixed buffer regions")) << engine_->backend();
    }
  }
  staging.FillRandom(21);
  small.FillRandom(22);
  plain.FillRandom(23);
  // Whole staging region, the tail of the small region, and an unregistered buffer.
  std::vector<Result> results(3);
  std::vector<IoOp> ops;
  ops.push_back(MakeOp(kWrite, file_, 0, staging.data(), staging.size(), &results[0]));
  ops.push_back(MakeOp(kWrite, file_, 8 * kMiB, small.data() + 32 * kKiB, 32 * kKiB, &results[1]));
  ops.push_back(MakeOp(kWrite, file_, 9 * kMiB, plain.data(), plain.size(), &results[2]));
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  for (const Result& r : results) ASSERT_TRUE(r.has_value() && r->ok()) << r->status();

  // Read into the registered regions (READ_FIXED on io_uring) and compare.
  std::vector<std::byte> expect_staging(staging.data(), staging.data() + staging.size());
  std::vector<std::byte> expect_small(small.data() + 32 * kKiB, small.data() + 64 * kKiB);
  staging.Fill(0);
  small.Fill(0);
  ops.clear();
  for (Result& r : results) r.reset();
  ops.push_back(MakeOp(kRead, file_, 0, staging.data(), staging.size(), &results[0]));
  ops.push_back(MakeOp(kRead, file_, 8 * kMiB, small.data(), 32 * kKiB, &results[1]));
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops.data(), 2)));
  engine_->Drain();
  ASSERT_TRUE(results[0].has_value() && results[0]->ok());
  ASSERT_TRUE(results[1].has_value() && results[1]->ok());
  EXPECT_TRUE(SameBytes(staging.data(), expect_staging.data(), staging.size()));
  EXPECT_TRUE(SameBytes(small.data(), expect_small.data(), 32 * kKiB));
  std::vector<std::byte> back = ReadBack(9 * kMiB, plain.size());
  EXPECT_TRUE(SameBytes(back.data(), plain.data(), plain.size()));
}

TEST_P(IoEngineTest, IoMemoryServesAsARegisteredRegionForReadsAndWrites) {
  // Not a multiple of the 2 MiB the mapping is rounded to: only size() bytes are registered.
  absl::StatusOr<IoMemory> memory = IoMemory::Allocate(2 * kMiB + 64 * kKiB);
  KVTIER_ASSERT_OK(memory.status());
  const std::pair<void*, size_t> region = {memory->data(), memory->size()};
  KVTIER_ASSERT_OK(engine_->RegisterBuffers({&region, 1}));
  auto* bytes = static_cast<std::byte*>(memory->data());
  std::mt19937_64 rng(31);
  for (size_t i = 0; i < memory->size(); ++i) bytes[i] = static_cast<std::byte>(rng());
  const std::vector<std::byte> expect(bytes, bytes + memory->size());
  std::vector<Result> results(1);
  std::vector<IoOp> ops;
  ops.push_back(MakeOp(kWrite, file_, 0, bytes, memory->size(), &results[0]));
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  ASSERT_TRUE(results[0].has_value() && results[0]->ok()) << results[0]->status();
  std::memset(bytes, 0, memory->size());
  ops.clear();
  results[0].reset();
  ops.push_back(MakeOp(kRead, file_, 0, bytes, memory->size(), &results[0]));
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  ASSERT_TRUE(results[0].has_value() && results[0]->ok()) << results[0]->status();
  EXPECT_TRUE(SameBytes(bytes, expect.data(), expect.size()));
}

TEST_P(IoEngineTest, RegisterBuffersIsOnceBeforeSubmitWithAlignedDisjointRegions) {
  AlignedBuffer a(64 * kKiB);
  {
    const std::pair<void*, size_t> misaligned[] = {{a.data(), 4096}, {a.data() + 8192 + 512, 4096}};
    absl::Status s = engine_->RegisterBuffers(misaligned);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(s.message(), "region 1")) << s;
  }
  {
    const std::pair<void*, size_t> overlapping[] = {{a.data(), 16 * kKiB},
                                                    {a.data() + 8 * kKiB, 16 * kKiB}};
    absl::Status s = engine_->RegisterBuffers(overlapping);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(s.message(), "overlap")) << s;
  }
  const std::pair<void*, size_t> good[] = {{a.data(), a.size()}};
  KVTIER_EXPECT_OK(engine_->RegisterBuffers(good));
  EXPECT_EQ(engine_->RegisterBuffers(good).code(), absl::StatusCode::kFailedPrecondition);

  // On an engine that has already submitted, registering is too late.
  KVTIER_ASSERT_OK_AND_ASSIGN(std::unique_ptr<IoEngine> other, NewEngine(IoEngine::Options{}));
  KVTIER_ASSERT_OK_AND_ASSIGN(int file, other->RegisterFile(fd_));
  Result r;
  IoOp op = MakeOp(kRead, file, 0, a.data(), 4096, &r);
  KVTIER_ASSERT_OK(other->Submit({&op, 1}));
  other->Drain();
  absl::Status s = other->RegisterBuffers(good);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(s.message(), "before the first Submit")) << s;
}

TEST_P(IoEngineTest, BadOpRejectsTheWholeBatchNamingIt) {
  AlignedBuffer good(8 * kKiB), other(8 * kKiB);
  good.Fill(0xab);
  struct Case {
    const char* name;
    IoOp op;
    const char* expect;
  };
  auto op = [&](uint64_t offset, void* buffer, size_t length, int file) {
    IoOp o;
    o.kind = kWrite;
    o.file = file;
    o.offset = offset;
    o.buffer = buffer;
    o.length = length;
    o.done = [](absl::StatusOr<size_t>) { ADD_FAILURE() << "a rejected op ran"; };
    return o;
  };
  std::vector<Case> cases;
  cases.push_back({"misaligned offset", op(4096 + 512, other.data(), 4096, file_), "offset 4608"});
  cases.push_back({"misaligned length", op(4096, other.data(), 4096 + 512, file_), "length 4608"});
  cases.push_back({"misaligned buffer", op(4096, other.data() + 512, 4096, file_), "buffer"});
  cases.push_back({"zero length", op(4096, other.data(), 0, file_), "length is 0"});
  cases.push_back({"null buffer", op(4096, nullptr, 4096, file_), "buffer is null"});
  cases.push_back({"unknown file", op(4096, other.data(), 4096, 99), "file 99 is not registered"});
  cases.push_back({"negative file", op(4096, other.data(), 4096, -1), "file -1 is not registered"});
  IoOp no_callback = op(4096, other.data(), 4096, file_);
  no_callback.done = nullptr;
  cases.push_back({"no callback", std::move(no_callback), "callback"});
  for (Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<IoOp> ops;
    ops.push_back(op(0, good.data(), 4096, file_));
    ops.push_back(op(8192, good.data() + 4096, 4096, file_));
    ops.push_back(std::move(c.op));
    absl::Status s = engine_->Submit(absl::MakeSpan(ops));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(s.message(), "op 2 of 3")) << s;
    EXPECT_TRUE(Contains(s.message(), c.expect)) << s;
    // Nothing was taken from the batch.
    EXPECT_TRUE(static_cast<bool>(ops[0].done));
    EXPECT_TRUE(static_cast<bool>(ops[1].done));
  }
  engine_->Drain();
  // Nothing was written: the file still holds zeros where the valid ops would have written.
  std::vector<std::byte> back = ReadBack(0, 12 * kKiB);
  for (std::byte b : back) ASSERT_EQ(b, std::byte{0});
}

TEST_P(IoEngineTest, InjectedEioFailsTheChosenReadOnlyAndNamesIt) {
  AlignedBuffer buffer(3 * 4096);
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kEio, /*skip=*/1, /*count=*/1});
  std::vector<Result> results(3);
  std::vector<IoOp> ops;
  for (int i = 0; i < 3; ++i) {
    ops.push_back(MakeOp(kRead, file_, i * 8192, buffer.data() + i * 4096, 4096, &results[i]));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  ASSERT_TRUE(results[0].has_value() && results[0]->ok());
  ASSERT_TRUE(results[2].has_value() && results[2]->ok());
  ASSERT_TRUE(results[1].has_value());
  const absl::Status s = results[1]->status();
  EXPECT_EQ(s.code(), absl::ErrnoToStatusCode(EIO)) << s;
  for (const char* part :
       {"read of file", "offset 8192", "length 4096", "injected fault", "Input/output error"}) {
    EXPECT_TRUE(Contains(s.message(), part)) << part << " missing from " << s;
  }
  // The fault was one-shot: later ops succeed.
  EXPECT_EQ(RunOne(kRead, 8192, buffer.data(), 4096).value_or(0), 4096u);
}

TEST_P(IoEngineTest, InjectedEioOnWriteLeavesTheFileUntouched) {
  AlignedBuffer data(8192);
  data.Fill(0x5a);
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kEio, 0, 1});
  absl::StatusOr<size_t> n = RunOne(kWrite, 16384, data.data(), data.size());
  EXPECT_EQ(n.status().code(), absl::ErrnoToStatusCode(EIO)) << n.status();
  EXPECT_TRUE(Contains(n.status().message(), "write of file")) << n.status();
  for (std::byte b : ReadBack(16384, 8192)) ASSERT_EQ(b, std::byte{0});
  EXPECT_EQ(RunOne(kWrite, 16384, data.data(), data.size()).value_or(0), 8192u);
  std::vector<std::byte> back = ReadBack(16384, 8192);
  EXPECT_TRUE(SameBytes(back.data(), data.data(), 8192));
}

TEST_P(IoEngineTest, InjectedEnospcHitsWritesOnly) {
  AlignedBuffer data(4096), scratch(4096);
  data.Fill(0x11);
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kEnospc, 0, 1});
  std::vector<Result> results(3);
  std::vector<IoOp> ops;
  ops.push_back(MakeOp(kRead, file_, 0, scratch.data(), 4096, &results[0]));  // not counted
  ops.push_back(MakeOp(kWrite, file_, 4096, data.data(), 4096, &results[1]));
  ops.push_back(MakeOp(kWrite, file_, 8192, data.data(), 4096, &results[2]));
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  ASSERT_TRUE(results[0].has_value() && results[0]->ok()) << results[0]->status();
  ASSERT_TRUE(results[1].has_value());
  EXPECT_EQ(results[1]->status().code(), absl::StatusCode::kResourceExhausted)
      << results[1]->status();
  EXPECT_TRUE(Contains(results[1]->status().message(), "No space left on device"));
  ASSERT_TRUE(results[2].has_value() && results[2]->ok()) << results[2]->status();
  for (std::byte b : ReadBack(4096, 4096)) ASSERT_EQ(b, std::byte{0});
  for (std::byte b : ReadBack(8192, 4096)) ASSERT_EQ(b, std::byte{0x11});
}

TEST_P(IoEngineTest, InjectedShortReadReportsHalfAndIsNotResubmitted) {
  AlignedBuffer data(16 * kKiB);
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kShortRead, 0, 1});
  EXPECT_EQ(RunOne(kWrite, 0, data.data(), data.size()).value_or(0), 16 * kKiB);  // not counted
  absl::StatusOr<size_t> n = RunOne(kRead, 0, data.data(), data.size());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 8 * kKiB);
  EXPECT_EQ(RunOne(kRead, 0, data.data(), data.size()).value_or(0), 16 * kKiB);
}

TEST_P(IoEngineTest, InjectedShortWriteTearsTheRangeAndFails) {
  AlignedBuffer old_data(16 * kKiB), new_data(16 * kKiB);
  old_data.Fill(0x0d);
  new_data.Fill(0x0e);
  ASSERT_EQ(RunOne(kWrite, 0, old_data.data(), old_data.size()).value_or(0), 16 * kKiB);
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kShortWrite, 0, 1});
  absl::StatusOr<size_t> n = RunOne(kWrite, 0, new_data.data(), new_data.size());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
  EXPECT_TRUE(Contains(n.status().message(), "short write")) << n.status();
  EXPECT_TRUE(Contains(n.status().message(), "wrote 8192 of 16384 bytes")) << n.status();
  // The first half is new, the second old: a torn write.
  std::vector<std::byte> back = ReadBack(0, 16 * kKiB);
  EXPECT_TRUE(SameBytes(back.data(), new_data.data(), 8 * kKiB));
  EXPECT_TRUE(SameBytes(back.data() + 8 * kKiB, old_data.data(), 8 * kKiB));
  EXPECT_EQ(RunOne(kWrite, 0, new_data.data(), new_data.size()).value_or(0), 16 * kKiB);
}

TEST_P(IoEngineTest, InjectedDelayMakesTheOpLateNotWrongAndLetsOthersPass) {
  AlignedBuffer data(2 * 4096), slow(4096), fast(4096);
  data.FillRandom(7);
  ASSERT_EQ(RunOne(kWrite, 0, data.data(), data.size()).value_or(0), 2 * 4096u);
  constexpr absl::Duration kDelay = absl::Milliseconds(300);
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 1, kDelay});
  Mutex mu;
  std::vector<int> order;  // which op completed when
  std::vector<Result> results(2);
  std::vector<IoOp> ops;
  void* buffers[2] = {slow.data(), fast.data()};
  for (int i = 0; i < 2; ++i) {
    ops.push_back(MakeOp(kRead, file_, i * 4096, buffers[i], 4096, &results[i]));
    ops.back().done = [&, i](absl::StatusOr<size_t> r) {
      results[i] = std::move(r);
      MutexLock lock(&mu);
      order.push_back(i);
    };
  }
  const absl::Time start = absl::Now();
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();  // waits for the held op too
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, kDelay);
  {
    MutexLock lock(&mu);
    EXPECT_EQ(order, (std::vector<int>{1, 0})) << "the op behind the slow one was held up";
  }
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(results[i].has_value() && results[i]->ok()) << i;
    EXPECT_EQ(**results[i], 4096u);
  }
  EXPECT_TRUE(SameBytes(slow.data(), data.data(), 4096));
  EXPECT_TRUE(SameBytes(fast.data(), data.data() + 4096, 4096));
  // One-shot: the next op is not held.
  const absl::Time again = absl::Now();
  EXPECT_EQ(RunOne(kRead, 0, slow.data(), 4096).value_or(0), 4096u);
  EXPECT_LT(absl::Now() - again, kDelay);
}

TEST_P(IoEngineTest, DelayedWriteLandsAndDestructorWaitsForIt) {
  AlignedBuffer data(4096), back(4096);
  data.Fill(0x3c);
  std::atomic<bool> done{false};
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kDelay, 0, 1, absl::Milliseconds(100)});
  IoOp op;
  op.kind = kWrite;
  op.file = file_;
  op.offset = 12 * 4096;
  op.buffer = data.data();
  op.length = 4096;
  op.done = [&done](absl::StatusOr<size_t> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    done = true;
  };
  KVTIER_ASSERT_OK(engine_->Submit({&op, 1}));
  engine_.reset();  // must not drop the held write
  EXPECT_TRUE(done);
  absl::StatusOr<std::unique_ptr<IoEngine>> engine = NewEngine(IoEngine::Options{});
  ASSERT_TRUE(engine.ok()) << engine.status();
  engine_ = *std::move(engine);
  KVTIER_ASSERT_OK_AND_ASSIGN(file_, engine_->RegisterFile(fd_));
  ASSERT_EQ(RunOne(kRead, 12 * 4096, back.data(), 4096).value_or(0), 4096u);
  EXPECT_TRUE(SameBytes(back.data(), data.data(), 4096));
}

TEST_P(IoEngineTest, FaultWithCountZeroLastsUntilClearFaults) {
  AlignedBuffer data(4096);
  engine_->InjectFault(FaultSpec{FaultSpec::Kind::kEio, 0, 0});
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(RunOne(kRead, 0, data.data(), 4096).status().code(), absl::ErrnoToStatusCode(EIO));
  }
  engine_->ClearFaults();
  EXPECT_EQ(RunOne(kRead, 0, data.data(), 4096).value_or(0), 4096u);
}

TEST_P(IoEngineTest, ReadPastEndOfFileReturnsAShortCount) {
  const int fd = OpenExtra("small", 3 * 4096);
  ASSERT_GE(fd, 0);
  KVTIER_ASSERT_OK_AND_ASSIGN(int small, engine_->RegisterFile(fd));
  AlignedBuffer data(8192);
  EXPECT_EQ(RunOne(kRead, 8192, data.data(), 8192, small).value_or(99), 4096u);
  EXPECT_EQ(RunOne(kRead, 3 * 4096, data.data(), 4096, small).value_or(99), 0u);
  EXPECT_EQ(RunOne(kRead, 10 * 4096, data.data(), 4096, small).value_or(99), 0u);

  // A file whose size is not a multiple of 4096: O_DIRECT returns the partial last page.
  const std::string path = dir_.File("odd");
  {
    const int wfd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(wfd, 0);
    std::vector<char> bytes(5000);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
    ASSERT_EQ(write(wfd, bytes.data(), bytes.size()), 5000);
    close(wfd);
  }
  const int rfd = open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(rfd, 0);
  extra_fds_.push_back(rfd);
  KVTIER_ASSERT_OK_AND_ASSIGN(int odd, engine_->RegisterFile(rfd));
  absl::StatusOr<size_t> n = RunOne(kRead, 0, data.data(), 8192, odd);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5000u);
  for (size_t i = 0; i < 5000; ++i) {
    ASSERT_EQ(static_cast<char>(data.data()[i]), static_cast<char>(i * 7)) << i;
  }
}

TEST_P(IoEngineTest, RealErrorNamesOpFileOffsetLengthAndErrno) {
  const std::string path = dir_.File("readonly");
  ASSERT_GE(OpenExtra("readonly", 8192), 0);
  const int rfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(rfd, 0);
  extra_fds_.push_back(rfd);
  KVTIER_ASSERT_OK_AND_ASSIGN(int ro, engine_->RegisterFile(rfd));
  AlignedBuffer data(4096);
  absl::StatusOr<size_t> n = RunOne(kWrite, 4096, data.data(), 4096, ro);
  ASSERT_FALSE(n.ok());
  const std::string expect_file = "write of file " + std::to_string(ro) + " at offset 4096";
  EXPECT_TRUE(Contains(n.status().message(), expect_file)) << n.status();
  EXPECT_TRUE(Contains(n.status().message(), "length 4096")) << n.status();
  EXPECT_TRUE(Contains(n.status().message(), "Bad file descriptor")) << n.status();
  EXPECT_FALSE(Contains(n.status().message(), "injected")) << n.status();
}

TEST_P(IoEngineTest, SubmitFromACallbackWorks) {
  // A chain: each read's callback submits the next; Drain waits for the whole chain.
  AlignedBuffer data(4096);
  constexpr int kChain = 50;
  std::atomic<int> completed{0};
  std::atomic<int> errors{0};
  std::function<void(int)> submit_next = [&](int i) {
    IoOp op;
    op.kind = kRead;
    op.file = file_;
    op.offset = static_cast<uint64_t>(i) * 4096;
    op.buffer = data.data();
    op.length = 4096;
    op.done = [&, i](absl::StatusOr<size_t> r) {
      if (!r.ok() || *r != 4096) errors.fetch_add(1);
      completed.fetch_add(1);
      if (i + 1 < kChain) submit_next(i + 1);
    };
    if (!engine_->Submit({&op, 1}).ok()) errors.fetch_add(1);
  };
  submit_next(0);
  engine_->Drain();
  EXPECT_EQ(completed.load(), kChain);
  EXPECT_EQ(errors.load(), 0);
}

TEST_P(IoEngineTest, DrainWaitsForCallbacksToReturn) {
  AlignedBuffer data(4096);
  std::atomic<bool> returned{false};
  IoOp op;
  op.kind = kRead;
  op.file = file_;
  op.buffer = data.data();
  op.length = 4096;
  op.done = [&](absl::StatusOr<size_t>) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    returned.store(true);
  };
  KVTIER_ASSERT_OK(engine_->Submit({&op, 1}));
  engine_->Drain();
  EXPECT_TRUE(returned.load());
}

TEST_P(IoEngineTest, DrainFromACallbackReturnsInsteadOfDeadlocking) {
  AlignedBuffer data(4096);
  std::atomic<bool> ran{false};
  IoOp op;
  op.kind = kRead;
  op.file = file_;
  op.buffer = data.data();
  op.length = 4096;
  op.done = [&](absl::StatusOr<size_t>) {
    engine_->Drain();
    ran.store(true);
  };
  KVTIER_ASSERT_OK(engine_->Submit({&op, 1}));
  engine_->Drain();
  EXPECT_TRUE(ran.load());
}

TEST_P(IoEngineTest, ManyThreadsSubmitConcurrently) {
  constexpr int kThreads = 8, kRounds = 16, kOpsPerRound = 4;
  constexpr size_t kOpBytes = 4096;
  // Thread t writes its own slots, filled with a byte naming the thread and slot.
  AlignedBuffer out(kThreads * kRounds * kOpsPerRound * kOpBytes);
  for (int slot = 0; slot < kThreads * kRounds * kOpsPerRound; ++slot) {
    std::memset(out.data() + slot * kOpBytes, slot % 251 + 1, kOpBytes);
  }
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        std::vector<IoOp> ops;
        for (int k = 0; k < kOpsPerRound; ++k) {
          const int slot = (t * kRounds + round) * kOpsPerRound + k;
          IoOp op;
          op.kind = kWrite;
          op.file = file_;
          op.offset = static_cast<uint64_t>(slot) * kOpBytes;
          op.buffer = out.data() + slot * kOpBytes;
          op.length = kOpBytes;
          op.done = [&](absl::StatusOr<size_t> r) {
            if (r.ok() && *r == kOpBytes) ok.fetch_add(1);
          };
          ops.push_back(std::move(op));
        }
        EXPECT_TRUE(engine_->Submit(absl::MakeSpan(ops)).ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();  // the threads exit with their ops still in flight
  engine_->Drain();
  EXPECT_EQ(ok.load(), kThreads * kRounds * kOpsPerRound);
  std::vector<std::byte> back = ReadBack(0, out.size());
  EXPECT_TRUE(SameBytes(back.data(), out.data(), out.size()));
}

TEST_P(IoEngineTest, DestructorCompletesOpsInFlight) {
  constexpr int kOps = 64;
  AlignedBuffer data(kOps * 64 * kKiB);
  data.FillRandom(5);
  std::atomic<int> ok{0};
  std::vector<IoOp> ops;
  for (int i = 0; i < kOps; ++i) {
    IoOp op;
    op.kind = kWrite;
    op.file = file_;
    op.offset = static_cast<uint64_t>(i) * 64 * kKiB;
    op.buffer = data.data() + i * 64 * kKiB;
    op.length = 64 * kKiB;
    op.done = [&](absl::StatusOr<size_t> r) {
      if (r.ok()) ok.fetch_add(1);
    };
    ops.push_back(std::move(op));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_.reset();
  EXPECT_EQ(ok.load(), kOps);
  KVTIER_ASSERT_OK_AND_ASSIGN(engine_, NewEngine(IoEngine::Options{}));
  KVTIER_ASSERT_OK_AND_ASSIGN(file_, engine_->RegisterFile(fd_));
  std::vector<std::byte> back = ReadBack(0, data.size());
  EXPECT_TRUE(SameBytes(back.data(), data.data(), data.size()));
}

TEST_P(IoEngineTest, UnregisterFileRefusesWhileOpsAreInFlightAndFreesTheIndex) {
  EXPECT_EQ(engine_->RegisterFile(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->UnregisterFile(42).code(), absl::StatusCode::kInvalidArgument);
  AlignedBuffer data(4096);
  std::optional<absl::Status> inside;
  IoOp op;
  op.kind = kRead;
  op.file = file_;
  op.buffer = data.data();
  op.length = 4096;
  // An op counts as in flight until its callback returns.
  op.done = [&](absl::StatusOr<size_t>) { inside = engine_->UnregisterFile(file_); };
  KVTIER_ASSERT_OK(engine_->Submit({&op, 1}));
  engine_->Drain();
  ASSERT_TRUE(inside.has_value());
  EXPECT_EQ(inside->code(), absl::StatusCode::kFailedPrecondition) << *inside;
  KVTIER_ASSERT_OK(engine_->UnregisterFile(file_));
  absl::StatusOr<size_t> n = RunOne(kRead, 0, data.data(), 4096);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(n.status().message(), "not registered")) << n.status();
  KVTIER_ASSERT_OK_AND_ASSIGN(int again, engine_->RegisterFile(fd_));
  EXPECT_EQ(again, file_);  // the freed index is reused
  EXPECT_EQ(RunOne(kRead, 0, data.data(), 4096).value_or(0), 4096u);
}

TEST_P(IoEngineTest, MoreFilesThanTheFixedFileTable) {
  constexpr int kFiles = 70;  // beyond io_uring's 64 fixed slots: the rest use plain fds
  AlignedBuffer data(kFiles * 4096), back(kFiles * 4096);
  data.FillRandom(9);
  std::vector<int> files;
  for (int i = 0; i < kFiles; ++i) {
    const int fd = OpenExtra("f" + std::to_string(i), 4096);
    ASSERT_GE(fd, 0);
    KVTIER_ASSERT_OK_AND_ASSIGN(int file, engine_->RegisterFile(fd));
    files.push_back(file);
  }
  std::vector<Result> results(2 * kFiles);
  std::vector<IoOp> ops;
  for (int i = 0; i < kFiles; ++i) {
    ops.push_back(MakeOp(kWrite, files[i], 0, data.data() + i * 4096, 4096, &results[i]));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  ops.clear();
  for (int i = 0; i < kFiles; ++i) {
    ops.push_back(MakeOp(kRead, files[i], 0, back.data() + i * 4096, 4096, &results[kFiles + i]));
  }
  KVTIER_ASSERT_OK(engine_->Submit(absl::MakeSpan(ops)));
  engine_->Drain();
  for (const Result& r : results) ASSERT_TRUE(r.has_value() && r->ok()) << r->status();
  EXPECT_TRUE(SameBytes(back.data(), data.data(), data.size()));
}

INSTANTIATE_TEST_SUITE_P(Backends, IoEngineTest,
                         testing::Values(Backend::kIoUring, Backend::kThreadPool), BackendName);

TEST(IoEngineOptions, ValidateChecksRanges) {
  IoEngine::Options o;
  EXPECT_TRUE(o.Validate().ok());
  o.queue_depth = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(o.Validate().message(), "queue_depth"));
  o.queue_depth = 4097;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o.queue_depth = 4096;
  EXPECT_TRUE(o.Validate().ok());
  o.fallback_threads = 0;
  EXPECT_TRUE(Contains(o.Validate().message(), "fallback_threads"));
  o.fallback_threads = 65;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IoEngine::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.fallback_threads = 64;
  EXPECT_TRUE(o.Validate().ok());
}

}  // namespace
}  // namespace kvtier
