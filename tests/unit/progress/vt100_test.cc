#include "cli/progress/vt100.h"

#include <gtest/gtest.h>

namespace kbuild::progress {
namespace {

std::vector<std::string> screen(const Vt100& term) {
  std::vector<std::string> rows;
  for (int y = 0; y < term.height(); ++y) rows.push_back(term.row(y));
  return rows;
}

TEST(Vt100, WritesLinesAndWrapsAtTheWidth) {
  Vt100 term(3, 6);
  term.write("abc\ndefghij\n");
  EXPECT_EQ(screen(term), (std::vector<std::string>{"abc   ", "defghi", "j     "}));
  EXPECT_EQ(term.used_height(), 3);
}

TEST(Vt100, ScrollsOnlyWhenACharacterLandsBelowTheLastRow) {
  Vt100 term(2, 6);
  term.write("one\ntwo\n");
  EXPECT_EQ(screen(term), (std::vector<std::string>{"one   ", "two   "}));
  term.write("three\n\n\nfour");
  EXPECT_EQ(screen(term), (std::vector<std::string>{"three ", "four  "}));
}

TEST(Vt100, CarriageReturnOverwritesAndBackspaceMovesBack) {
  Vt100 term(1, 12);
  term.write("50%\r100%");
  EXPECT_EQ(term.row(0), "100%        ");
  term.write("\b\bXY");
  EXPECT_EQ(term.row(0), "10XY        ");
}

TEST(Vt100, AppliesCursorAndEraseEscapesAndIgnoresColours) {
  Vt100 term(3, 8);
  term.write("\x1b[31mred\x1b[0m\nline2\n");
  EXPECT_EQ(screen(term), (std::vector<std::string>{"red     ", "line2   ", "        "}));
  term.write("\x1b[2A\x1b[2Kup");
  EXPECT_EQ(screen(term), (std::vector<std::string>{"up      ", "line2   ", "        "}));
  term.write("\x1b[2;3Hx\x1b[J");
  EXPECT_EQ(screen(term), (std::vector<std::string>{"up      ", "        ", "        "}));
  term.write("\x1b[?25l\x1b[1;1Hz");  // private modes are not understood: nothing but the "z"
  EXPECT_EQ(term.row(0), "zp      ");
}

TEST(Vt100, ALineOfExactlyTheWidthThenANewlineSkipsARow) {
  // The cursor wraps after the last column, and the newline moves it down once more.
  Vt100 term(3, 4);
  term.write("abcd\nef");
  EXPECT_EQ(screen(term), (std::vector<std::string>{"abcd", "    ", "ef  "}));
}

TEST(Vt100, IgnoresTabsAndOtherControlCharacters) {
  Vt100 term(1, 8);
  term.write("a\tb\x07" "c");
  EXPECT_EQ(term.row(0), "abc     ");
}

TEST(Vt100, KeepsACharacterSplitAcrossWritesOnlyAtTheEndOfAShortChunk) {
  Vt100 term(1, 8);
  term.write("\xe2\x9c");
  term.write("\x93!");
  // The emulator drops the bad lead byte and keeps one byte, which is not a character either.
  EXPECT_EQ(term.row(0), "        ");
  Vt100 whole(1, 8);
  whole.write("ok \xe2\x9c\x93");
  EXPECT_EQ(whole.row(0), "ok \xe2\x9c\x93    ");
}

TEST(Vt100, ResizesWithinMinimums) {
  Vt100 term(2, 8);
  term.write("abcdefg\nxy");
  term.resize(1, 3);
  EXPECT_EQ(term.height(), 1);
  EXPECT_EQ(term.width(), 6);
  EXPECT_EQ(term.row(0), "abcdef");
  term.resize(3, 7);
  EXPECT_EQ(screen(term), (std::vector<std::string>{"abcdef ", "       ", "       "}));
}

}  // namespace
}  // namespace kbuild::progress
