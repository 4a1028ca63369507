#include "engine/dockerfile/platform.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::dockerfile {
namespace {

TEST(Platform, ParsesAndNormalizesAliases) {
  EXPECT_EQ(Platform::parse("linux/amd64").format(), "linux/amd64");
  EXPECT_EQ(Platform::parse("linux/x86_64").format(), "linux/amd64");
  EXPECT_EQ(Platform::parse("Linux/AARCH64").format(), "linux/arm64");
  EXPECT_EQ(Platform::parse("linux/arm64/v8").format(), "linux/arm64");
  EXPECT_EQ(Platform::parse("linux/arm").format(), "linux/arm/v7");
  EXPECT_EQ(Platform::parse("linux/armhf").format(), "linux/arm/v7");
  EXPECT_EQ(Platform::parse("arm64").format(), "linux/arm64");
  EXPECT_EQ(Platform::parse("linux"), Platform::native());
}

TEST(Platform, RejectsUnknownOrMalformedSpecs) {
  EXPECT_THROW(Platform::parse("linux/nonsense"), Error);
  EXPECT_THROW(Platform::parse("plan10/amd64"), Error);
  EXPECT_THROW(Platform::parse("linux//amd64"), Error);
  EXPECT_THROW(Platform::parse("a/b/c/d"), Error);
  EXPECT_THROW(Platform::parse("linux/*"), Error);
}

TEST(PlatformList, SplitsOnCommasNormalizesAndDropsRepeats) {
  std::vector<std::string> formatted;
  for (const Platform& p : parse_platform_list("linux/amd64, linux/arm64,aarch64,linux/arm/v7,armhf")) {
    formatted.push_back(p.format());
  }
  EXPECT_EQ(formatted, (std::vector<std::string>{"linux/amd64", "linux/arm64", "linux/arm/v7"}));
  EXPECT_TRUE(parse_platform_list("").empty());
}

TEST(PlatformList, NamesTheOneThatDoesNotParse) {
  for (const char* specs : {"linux/amd64,linux/nope", "linux/amd64,", ",linux/amd64", "linux/amd64,,linux/arm64"}) {
    try {
      parse_platform_list(specs);
      ADD_FAILURE() << specs << " parsed";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::user) << specs;
      EXPECT_NE(std::string(e.what()).find("failed to parse platform"), std::string::npos) << e.what();
    }
  }
}

TEST(Platform, NativeIsALinuxPlatform) { EXPECT_EQ(Platform::native().os, "linux"); }

}  // namespace
}  // namespace kbuild::dockerfile
