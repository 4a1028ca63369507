// Go's path.Clean, as BuildKit cleans Dockerfile, pattern and context paths.
#include "common/go_path.h"

#include <gtest/gtest.h>

namespace kbuild {
namespace {

TEST(GoCleanPath, MatchesGoPathClean) {
  EXPECT_EQ(go_clean_path(""), ".");
  EXPECT_EQ(go_clean_path("/"), "/");
  EXPECT_EQ(go_clean_path("a//b/./c/"), "a/b/c");
  EXPECT_EQ(go_clean_path("/../a/.."), "/");
  EXPECT_EQ(go_clean_path("../../x"), "../../x");
  EXPECT_EQ(go_clean_path("a/../../b"), "../b");
  EXPECT_EQ(go_clean_path("/a/b/../../../c/."), "/c");
}

TEST(GoCleanPath, CleansDotsAndSlashesAsGoDoes) {
  EXPECT_EQ(go_clean_path(""), ".");
  EXPECT_EQ(go_clean_path("a//b/./c/.."), "a/b");
  EXPECT_EQ(go_clean_path("/../a"), "/a");
  EXPECT_EQ(go_clean_path("../../a/../b"), "../../b");
  EXPECT_EQ(go_clean_path("a/../.."), "..");
  EXPECT_EQ(go_clean_path("./"), ".");
  EXPECT_EQ(go_clean_path("/"), "/");
  EXPECT_EQ(go_clean_path("abc/def/../../.."), "..");
}

}  // namespace
}  // namespace kbuild
