#include "cli/error_excerpt.h"

#include <gtest/gtest.h>

namespace kbuild::cli {
namespace {

TEST(ErrorExcerpt, OneLineGetsContextAboveAndBelowAsBuildKitPrintsIt) {
  std::string text = "FROM busybox\nRUN a\nRUN b\nRUN exit 3\nRUN c\nRUN d\nRUN e\n";
  EXPECT_EQ(dockerfile_excerpt("Dockerfile", text, {4, 4}),
            "Dockerfile:4\n"
            "--------------------\n"
            "   2 |     RUN a\n"
            "   3 |     RUN b\n"
            "   4 | >>> RUN exit 3\n"
            "   5 |     RUN c\n"
            "   6 |     RUN d\n"
            "--------------------\n");
}

TEST(ErrorExcerpt, RangeAtTheStartMarksEveryLineOfIt) {
  std::string text = "RUN a \\\n  b\nFROM x\n";
  EXPECT_EQ(dockerfile_excerpt("Dockerfile", text, {1, 2}),
            "Dockerfile:1\n"
            "--------------------\n"
            "   1 | >>> RUN a \\\n"
            "   2 | >>>   b\n"
            "   3 |     FROM x\n"
            "--------------------\n");
}

TEST(ErrorExcerpt, OutOfRangeGivesNothing) {
  EXPECT_EQ(dockerfile_excerpt("Dockerfile", "FROM a\n", {0, 0}), "");
  EXPECT_EQ(dockerfile_excerpt("Dockerfile", "FROM a\n", {9, 9}), "");
}

}  // namespace
}  // namespace kbuild::cli
