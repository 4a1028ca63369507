#include "common/go_units.h"

#include <gtest/gtest.h>

namespace kbuild {
namespace {

TEST(GoUnits, HumanSizeHasFourSignificantDigitsInPowersOf1000) {
  EXPECT_EQ(go_human_size(0), "0B");
  EXPECT_EQ(go_human_size(999), "999B");
  EXPECT_EQ(go_human_size(1000), "1kB");
  EXPECT_EQ(go_human_size(2048), "2.048kB");
  EXPECT_EQ(go_human_size(25600), "25.6kB");
  EXPECT_EQ(go_human_size(1234567890), "1.235GB");
  EXPECT_EQ(go_human_size(1e24), "1YB");
  EXPECT_EQ(go_human_size(3e27), "3000YB");  // no unit past YB: the number grows instead
  EXPECT_EQ(go_human_size(3e28, 3), "3e+04YB");
}

TEST(GoUnits, HumanSizeTakesItsPrecision) {
  EXPECT_EQ(go_human_size(1234567890, 3), "1.23GB");
  EXPECT_EQ(go_human_size(204800, 3), "205kB");
}

}  // namespace
}  // namespace kbuild
