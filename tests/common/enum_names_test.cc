// tests/common/enum_names_test.cc — every public enum's Name/Parse pair: each name parses back
// to its value, and a name that is none of them fails with a message that names the accepted
// ones (common/enum_names.h phrases them all).

#include "common/enum_names.h"

#include <initializer_list>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvtier/block_key.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"
#include "kvtier/tier_kind.h"
#include "tiers/disk_record.h"

namespace kvtier {
namespace {

using ::testing::HasSubstr;

// Every value's name parses back to the value, and the names are distinct.
template <typename Enum>
void ExpectRoundTrips(std::initializer_list<Enum> values, const char* (*name)(Enum),
                      absl::StatusOr<Enum> (*parse)(absl::string_view)) {
  std::set<std::string> names;
  for (Enum v : values) {
    SCOPED_TRACE(name(v));
    EXPECT_TRUE(names.insert(name(v)).second) << "two values share a name";
    absl::StatusOr<Enum> back = parse(name(v));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, v);
  }
}

// A bad name is InvalidArgument, quoting it and listing what is accepted.
template <typename Enum>
void ExpectRejects(absl::StatusOr<Enum> (*parse)(absl::string_view), absl::string_view bad,
                   absl::string_view message) {
  absl::StatusOr<Enum> parsed = parse(bad);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(parsed.status().message(), message);
}

TEST(EnumNames, DeviceChoice) {
  ExpectRoundTrips({DeviceChoice::kAuto, DeviceChoice::kCuda, DeviceChoice::kEmulated},
                   DeviceChoiceName, ParseDeviceChoice);
  EXPECT_STREQ(DeviceChoiceName(DeviceChoice::kEmulated), "emulated");
  ExpectRejects(ParseDeviceChoice, "tpu", "unknown device 'tpu' (expected auto, cuda or emulated)");
  ExpectRejects(ParseDeviceChoice, "CUDA",
                "unknown device 'CUDA' (expected auto, cuda or emulated)");
}

TEST(EnumNames, DeviceKind) {
  ExpectRoundTrips({DeviceKind::kEmulated, DeviceKind::kCuda}, DeviceKindName, ParseDeviceKind);
  ExpectRejects(ParseDeviceKind, "auto", "unknown device kind 'auto' (expected emulated or cuda)");
}

TEST(EnumNames, CopyKind) {
  ExpectRoundTrips(
      {CopyOp::Kind::kHostToDevice, CopyOp::Kind::kDeviceToHost, CopyOp::Kind::kDeviceToDevice},
      CopyKindName, ParseCopyKind);
  EXPECT_STREQ(CopyKindName(CopyOp::Kind::kHostToDevice), "H2D");
  ExpectRejects(ParseCopyKind, "H2H", "unknown copy kind 'H2H' (expected H2D, D2H or D2D)");
}

TEST(EnumNames, KeyHash) {
  ExpectRoundTrips({KeyHash::kSha256, KeyHash::kXxh3}, KeyHashName, ParseKeyHash);
  ExpectRejects(ParseKeyHash, "md5", "unknown key hash 'md5' (expected sha256 or xxh3)");
}

TEST(EnumNames, PageLayoutIgnoresCase) {
  ExpectRoundTrips({PageLayout::kNhd, PageLayout::kHnd}, PageLayoutName, ParsePageLayout);
  EXPECT_EQ(*ParsePageLayout("hnd"), PageLayout::kHnd);
  EXPECT_EQ(*ParsePageLayout("Nhd"), PageLayout::kNhd);
  ExpectRejects(ParsePageLayout, "xyz", "unknown page layout 'xyz' (expected NHD or HND)");
}

TEST(EnumNames, TierKind) {
  ExpectRoundTrips({TierKind::kGpu, TierKind::kHost, TierKind::kDisk, TierKind::kRemote},
                   TierKindName, ParseTierKind);
  ExpectRejects(ParseTierKind, "ssd", "unknown tier 'ssd' (expected gpu, host, disk or remote)");
}

TEST(EnumNames, DTypeAndItsAliases) {
  ExpectRoundTrips({DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFp8E4m3,
                    DType::kFp8E5m2},
                   DTypeName, ParseDType);
  EXPECT_EQ(*ParseDType("half"), DType::kFloat16);
  EXPECT_EQ(*ParseDType("BFloat16"), DType::kBFloat16);
  EXPECT_EQ(*ParseDType("float8_e4m3fn"), DType::kFp8E4m3);  // torch's names
  EXPECT_EQ(*ParseDType("float8_e5m2"), DType::kFp8E5m2);
  ExpectRejects(ParseDType, "fp4",
                "unknown dtype 'fp4' (expected fp16, bf16, fp32, fp8_e4m3 or fp8_e5m2)");
  // A bare fp8 names no encoding: refused, naming both.
  ExpectRejects(ParseDType, "fp8",
                "dtype 'fp8' is ambiguous: name the encoding, fp8_e4m3 (what vLLM's 'fp8' means "
                "on CUDA) or fp8_e5m2");
}

TEST(EnumNames, Codec) {
  ExpectRoundTrips({Codec::kNone, Codec::kZstd, Codec::kZstdShuffle, Codec::kFp8, Codec::kInt8},
                   CodecName, ParseCodec);
  EXPECT_THAT(ParseCodec("lz5").status().message(),
              HasSubstr("none, zstd, zstd-shuffle, fp8, int8"));
}

enum class Color { kRed, kGreen };
const char* ColorName(Color c) { return c == Color::kRed ? "red" : "green"; }

TEST(EnumNames, ParseEnumNameListsTheNamesAndEscapesTheInput) {
  EXPECT_EQ(*ParseEnumName("green", "color", {Color::kRed, Color::kGreen}, ColorName),
            Color::kGreen);
  EXPECT_EQ(
      ParseEnumName("Red", "color", {Color::kRed, Color::kGreen}, ColorName).status().message(),
      "unknown color 'Red' (expected red or green)");
  EXPECT_EQ(*ParseEnumName("RED", "color", {Color::kRed, Color::kGreen}, ColorName,
                           NameCase::kIgnoreCase),
            Color::kRed);
  EXPECT_EQ(ParseEnumName("re\nd", "color", {Color::kRed}, ColorName).status().message(),
            "unknown color 're\\nd' (expected red)");
  EXPECT_EQ(ParseEnumName("", "color", {Color::kRed, Color::kGreen}, ColorName).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
