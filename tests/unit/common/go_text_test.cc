// Go's text handling, held to what Go itself gives.
#include "common/go_text.h"

#include <gtest/gtest.h>

namespace kbuild {
namespace {

TEST(DecodeRune, ReadsOneInvalidByteAsRuneErrorOfWidthOne) {
  EXPECT_EQ(decode_rune("\xf0\x9f\x90\xb3").value, 0x1F433u);
  EXPECT_EQ(decode_rune("\xf0\x9f\x90\xb3").width, 4u);
  for (const char* bad : {"\xff", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x9c"}) {
    EXPECT_TRUE(decode_rune(bad).invalid()) << bad;
  }
  EXPECT_FALSE(decode_rune("\xef\xbf\xbd").invalid());  // a real U+FFFD
  EXPECT_EQ(decode_rune("", 0).width, 0u);
  EXPECT_EQ(decode_last_rune("a\xc3\xa9").value, 0xE9u);
  EXPECT_TRUE(decode_last_rune("a\xa9").invalid());
}

TEST(GoTrimSpace, TrimsUnicodeSpaceAndStopsAtInvalidBytes) {
  EXPECT_EQ(go_trim_space(" \t\n x y \r"), "x y");
  EXPECT_EQ(go_trim_space("\xc2\x85\xe3\x80\x80x\xe2\x80\x82"), "x");  // NEL, ideographic, en space
  EXPECT_EQ(go_trim_space("\xa0x"), "\xa0x");  // a lone 0xA0 byte is invalid, not NBSP
  EXPECT_EQ(go_trim_left_space("  x "), "x ");
  EXPECT_EQ(go_trim_right_space("  x "), "  x");
}

TEST(GoQuote, QuotesAsStrconvQuote) {
  EXPECT_EQ(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(go_quote("\a\b\f\n\r\t\v\x01\x7f"), "\"\\a\\b\\f\\n\\r\\t\\v\\x01\\x7f\"");
  EXPECT_EQ(go_quote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(go_quote("\xff"), "\"\\xff\"");
  EXPECT_EQ(go_quote("\xc2\xa0"), "\"\\u00a0\"");          // NBSP is not printable
  EXPECT_EQ(go_quote("\xe2\x80\x8b"), "\"\\u200b\"");      // zero width space
  EXPECT_EQ(go_quote("\xf3\xa0\x80\x81"), "\"\\U000e0001\"");  // a tag character
}

TEST(GoJsonQuote, EscapesStringsAsEncodingJsonDoes) {
  EXPECT_EQ(go_json_quote("RUN a && b > c < d"), R"("RUN a \u0026\u0026 b \u003e c \u003c d")");
  EXPECT_EQ(go_json_quote("quote \" backslash \\ / slash"), R"("quote \" backslash \\ / slash")");
  EXPECT_EQ(go_json_quote("\n\r\t\b\f\x01\x1f\x7f"), R"("\n\r\t\b\f\u0001\u001f)" "\x7f\"");
  EXPECT_EQ(go_json_quote("caf\xc3\xa9 \xe2\x9c\x93"), "\"caf\xc3\xa9 \xe2\x9c\x93\"");
  EXPECT_EQ(go_json_quote("\xe2\x80\xa8\xe2\x80\xa9"), R"("\u2028\u2029")");
  // Each byte of invalid UTF-8 becomes U+FFFD.
  EXPECT_EQ(go_json_quote("a\xff\xc3(\xed\xa0\x80"), R"("a\ufffd\ufffd(\ufffd\ufffd\ufffd")");
}

}  // namespace
}  // namespace kbuild
