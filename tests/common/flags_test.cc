// tests/common/flags_test.cc — common/flags.h: how every kvtier program reads its command line
// (both `--flag=value` and `--flag value`, --help exits 0, a bad argument exits 2 with a
// message naming the flag) and the shared flag definitions.

#include "common/flags.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier::flags {
namespace {

using ::testing::HasSubstr;

// Runs Parse over `args` (the program name comes first); `err` gets what it printed to stderr.
std::optional<int> ParseArgs(CLI::App& app, std::vector<std::string> args,
                             std::string* err = nullptr) {
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  std::optional<int> exit_code = Parse(app, static_cast<int>(argv.size()), argv.data());
  const std::string printed_err = ::testing::internal::GetCapturedStderr();
  (void)::testing::internal::GetCapturedStdout();
  if (err != nullptr) *err = printed_err;
  return exit_code;
}

struct Program {
  CLI::App app{"a test program", "prog"};
  int runs = 7;
  DeviceChoice device = DeviceChoice::kAuto;
  double gbps = 8;
  uint64_t seed = 1;
  size_t blocks = 512;
  DType dtype = DType::kFloat16;

  Program() {
    AddRuns(app, &runs);
    AddDevice(app, &device);
    AddCopyGbps(app, &gbps, "link bandwidth");
    AddSeed(app, &seed);
    AddBlocks(app, "--host-blocks", &blocks, 128, "host tier blocks");
    AddParsed(app, "--dtype", &dtype, ParseDType, DTypeName, "fp16|bf16|fp32", "element type");
  }
};

TEST(Flags, BothSpellingsOfAValueParse) {
  Program p;
  EXPECT_EQ(ParseArgs(p.app, {"--runs=3", "--device", "emulated", "--copy-gbps", "0.5", "--seed=9",
                              "--host-blocks", "200", "--dtype=bf16"}),
            std::nullopt);
  EXPECT_EQ(p.runs, 3);
  EXPECT_EQ(p.device, DeviceChoice::kEmulated);
  EXPECT_DOUBLE_EQ(p.gbps, 0.5);
  EXPECT_EQ(p.seed, 9u);
  EXPECT_EQ(p.blocks, 200u);
  EXPECT_EQ(p.dtype, DType::kBFloat16);
}

TEST(Flags, DefaultsStayWhenFlagsAreAbsent) {
  Program p;
  EXPECT_EQ(ParseArgs(p.app, {}), std::nullopt);
  EXPECT_EQ(p.runs, 7);
  EXPECT_EQ(p.device, DeviceChoice::kAuto);
  EXPECT_EQ(p.dtype, DType::kFloat16);
}

TEST(Flags, HelpExitsZeroAndListsFlagsWithDefaults) {
  Program p;
  ::testing::internal::CaptureStdout();
  std::vector<std::string> args = {"prog", "--help"};
  std::vector<char*> argv = {args[0].data(), args[1].data()};
  EXPECT_EQ(Parse(p.app, 2, argv.data()), 0);
  const std::string help = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(help, HasSubstr("--runs"));
  EXPECT_THAT(help, HasSubstr("--device TEXT:auto|cuda|emulated=auto"));
  EXPECT_THAT(help, HasSubstr("--dtype TEXT:fp16|bf16|fp32=fp16"));
  EXPECT_THAT(help, HasSubstr("--host-blocks UINT:>= 128=512"));
}

TEST(Flags, BadArgumentsExitTwoNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--bogus=1"}, "--bogus"},
           {{"--runs=0"}, "--runs: must be at least 1, not 0"},
           {{"--runs=x"}, "--runs: 'x' is not a number"},
           {{"--runs"}, "--runs"},
           {{"--device=tpu"}, "--device: unknown device 'tpu' (expected auto, cuda or emulated)"},
           {{"--copy-gbps=-1"}, "--copy-gbps: must be at least 0, not -1"},
           {{"--host-blocks=127"}, "--host-blocks: must be at least 128, not 127"},
           {{"--dtype=fp4"}, "--dtype: unknown dtype 'fp4'"},
           {{"--dtype=fp8"}, "--dtype: dtype 'fp8' is ambiguous"},
           {{"stray"}, "stray"},
       }) {
    SCOPED_TRACE(c.args[0]);
    Program p;
    std::string err;
    EXPECT_EQ(ParseArgs(p.app, c.args, &err), 2);
    EXPECT_THAT(err, HasSubstr(c.message));
  }
}

TEST(Flags, ChecksAcrossFlagsFailLikeAnyBadArgument) {
  CLI::App app{"a test program", "prog"};
  int tokens = 0, block = 16;
  app.add_option("--tokens", tokens);
  app.add_option("--block-tokens", block);
  app.final_callback([&] {
    if (tokens < block) throw CLI::ValidationError("--tokens", "must be at least --block-tokens");
  });
  std::string err;
  EXPECT_EQ(ParseArgs(app, {"--tokens=4"}, &err), 2);
  EXPECT_THAT(err, HasSubstr("--tokens: must be at least --block-tokens"));
  EXPECT_EQ(ParseArgs(app, {"--tokens=64"}), std::nullopt);
}

TEST(Flags, AtLeastChecksNumbers) {
  CLI::Validator at_least_8 = AtLeast<size_t>(8);
  std::string v = "8";
  EXPECT_EQ(at_least_8(v), "");
  v = "7";
  EXPECT_EQ(at_least_8(v), "must be at least 8, not 7");
  v = "eight";
  EXPECT_EQ(at_least_8(v), "'eight' is not a number");
  CLI::Validator at_least_tenth = AtLeast(0.1);
  v = "0.05";
  EXPECT_EQ(at_least_tenth(v), "must be at least 0.1, not 0.05");
}

}  // namespace
}  // namespace kvtier::flags
