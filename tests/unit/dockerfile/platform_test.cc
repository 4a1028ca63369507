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

TEST(Platform, NativeIsALinuxPlatform) { EXPECT_EQ(Platform::native().os, "linux"); }

}  // namespace
}  // namespace kbuild::dockerfile
