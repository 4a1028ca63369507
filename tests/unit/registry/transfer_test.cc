#include "engine/registry/transfer.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::registry {
namespace {

TEST(PullOptions, APlatformNamesOsArchitectureAndVariant) {
  PullOptions arm = pull_options_for("linux/arm64/v8");
  EXPECT_EQ(arm.os, "linux");
  EXPECT_EQ(arm.architecture, "arm64");
  EXPECT_EQ(arm.variant, "v8");
  PullOptions amd = pull_options_for("linux/amd64");
  EXPECT_EQ(amd.architecture, "amd64");
  EXPECT_EQ(amd.variant, "");
  for (const char* bad : {"linux", "linux/", "/amd64", "linux/arm/v7/x"}) {
    EXPECT_THROW(pull_options_for(bad), Error) << bad;
  }
}

TEST(PullOptions, NoPlatformIsThisMachines) {
  PullOptions native = pull_options_for("");
  EXPECT_EQ(native.os, "linux");
  EXPECT_FALSE(native.architecture.empty());
#if defined(__x86_64__)
  EXPECT_EQ(native.architecture, "amd64");
#endif
}

}  // namespace
}  // namespace kbuild::registry
