#include "cli/progress/units.h"
#include "common/go_text.h"

#include <gtest/gtest.h>

namespace kbuild::progress {
namespace {

TEST(FormatBytes, PrintsWholeBytesBelowOneKilobyte) {
  EXPECT_EQ(format_bytes(0), "0B");
  EXPECT_EQ(format_bytes(2), "2B");
  EXPECT_EQ(format_bytes(227), "227B");
  EXPECT_EQ(format_bytes(999), "999B");
}

TEST(FormatBytes, PrintsDecimalUnitsWithTwoDecimals) {
  EXPECT_EQ(format_bytes(1000), "1.00kB");
  EXPECT_EQ(format_bytes(1234), "1.23kB");
  EXPECT_EQ(format_bytes(3'400'000), "3.40MB");
  EXPECT_EQ(format_bytes(48'500'000), "48.50MB");
  EXPECT_EQ(format_bytes(1'200'000'000), "1.20GB");
  EXPECT_EQ(format_bytes(5'000'000'000'000), "5.00TB");
  // The unit is chosen before rounding, as tonistiigi/units does.
  EXPECT_EQ(format_bytes(999'999), "1000.00kB");
  EXPECT_EQ(format_bytes(-1500), "-1.50kB");
}

TEST(FormatFixed, RoundsAsGoFmtDoes) {
  EXPECT_EQ(format_fixed(0.345, 3), "0.345");
  EXPECT_EQ(format_fixed(0.05, 1), "0.1");
  EXPECT_EQ(format_fixed(0.25, 1), "0.2");  // exact binary tie: to even
  EXPECT_EQ(format_fixed(12.3456, 2), "12.35");
}

TEST(PadRight, PadsToAWidthInRunes) {
  EXPECT_EQ(pad_right("ab", 4), "ab  ");
  EXPECT_EQ(pad_right("caf\xc3\xa9", 5), "caf\xc3\xa9 ");
  EXPECT_EQ(pad_right("abcdef", 3), "abcdef");
  EXPECT_EQ(pad_right("ab", -4), "ab  ");  // Go treats a negative width as its absolute value
}

TEST(RuneCount, CountsEachInvalidByteAsOneRune) {
  EXPECT_EQ(rune_count(""), 0u);
  EXPECT_EQ(rune_count("caf\xc3\xa9 \xe2\x9c\x93"), 6u);
  EXPECT_EQ(rune_count("\xe2\x9c"), 2u);
  EXPECT_EQ(decode_rune("\xf0\x9f\x90\xb3", 0).value, 0x1F433u);
  EXPECT_EQ(decode_rune("\xf0\x9f\x90\xb3", 0).width, 4u);
  EXPECT_TRUE(decode_rune("\xed\xa0\x80", 0).invalid());  // a surrogate
}

}  // namespace
}  // namespace kbuild::progress
