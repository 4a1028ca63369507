// What the build's and steps' units show: one printable line whatever the Dockerfile says.
#include <gtest/gtest.h>

#include "engine/sandbox/cgroup.h"

namespace kbuild::sandbox {
namespace {

TEST(UnitDescription, NamesTheBuildAndItsCaller) {
  EXPECT_EQ(build_description("1a2b3c", 1000), "kbuild build 1a2b3c (uid 1000)");
}

TEST(UnitDescription, ShowsTheStepAsProgressDoes) {
  EXPECT_EQ(step_description("[stage-1 2/5] RUN make"), "kbuild: [stage-1 2/5] RUN make");
}

TEST(UnitDescription, EscapesWhatWouldStartAnotherLineOrProperty) {
  EXPECT_EQ(step_description("[1/2] RUN a\nDescription=forged\r\x1b[2J"),
            "kbuild: [1/2] RUN a\\nDescription=forged\\r\\x1b[2J");
  // D-Bus strings must be UTF-8: invalid bytes are escaped, not sent.
  EXPECT_EQ(step_description("[1/2] RUN echo \xff\xfe"), "kbuild: [1/2] RUN echo \\xff\\xfe");
}

TEST(UnitDescription, CutsALongStepToAListingsLength) {
  std::string description = step_description("[1/2] RUN " + std::string(10000, 'x'));
  EXPECT_LE(description.size(), 208u);
  EXPECT_TRUE(description.starts_with("kbuild: [1/2] RUN xxx"));
  EXPECT_TRUE(description.ends_with("x..."));
}

}  // namespace
}  // namespace kbuild::sandbox
