// Untrusted text made into one safe line.
#include "common/printable_text.h"

#include <gtest/gtest.h>

namespace kbuild {
namespace {

TEST(PrintableText, KeepsOrdinaryTextAsItIs) {
  EXPECT_EQ(printable_text("[stage-1 2/5] RUN make -C src \\\n  all", 200), "[stage-1 2/5] RUN make -C src \\\\n  all");
  EXPECT_EQ(printable_text("RUN echo 'héllo' 🐳", 200), "RUN echo 'héllo' 🐳");
  EXPECT_EQ(printable_text("", 10), "");
}

TEST(PrintableText, EscapesControlCharactersSoNoSecondLineOrFieldAppears) {
  EXPECT_EQ(printable_text("RUN a\nKBUILD_RESULT=success", 200), "RUN a\\nKBUILD_RESULT=success");
  EXPECT_EQ(printable_text("a\rb\tc\x1b[31md\x7f", 200), "a\\rb\\tc\\x1b[31md\\x7f");
  EXPECT_EQ(printable_text(std::string("a\0b", 3), 200), "a\\x00b");
  // NEL, the line separator and a right-to-left override are no line breaks or reordering either.
  EXPECT_EQ(printable_text("a\xc2\x85" "b\xe2\x80\xa8" "c\xe2\x80\xae" "d", 200), "a\\u0085b\\u2028c\\u202ed");
}

TEST(PrintableText, EscapesEachByteOfInvalidUtf8) {
  EXPECT_EQ(printable_text("a\xff\xc3(b", 200), "a\\xff\\xc3(b");
  EXPECT_EQ(printable_text("\xed\xa0\x80", 200), "\\xed\\xa0\\x80");  // a surrogate
}

TEST(PrintableText, CutsLongTextAtACharacterAndSaysSo) {
  EXPECT_EQ(printable_text("abcdefghij", 10), "abcdefghij");
  EXPECT_EQ(printable_text("abcdefghijk", 10), "abcdefg...");
  // é is two bytes: never half of it.
  EXPECT_EQ(printable_text("abcdeéfghij", 9), "abcde...");
  EXPECT_EQ(printable_text("abcdeéfghij", 10), "abcdeé...");
  // Never half an escape either.
  EXPECT_EQ(printable_text("abcde\nfghij", 9), "abcde...");
  EXPECT_EQ(printable_text("abcde\nfghij", 10), "abcde\\n...");
  EXPECT_EQ(printable_text(std::string(5000, 'x'), 100).size(), 100u);
}

TEST(RedactSecrets, TakesOutEveryOccurrenceOfEachValue) {
  std::map<std::string, std::string> secrets = {{"a", "s3cr3t"}, {"b", "tok"}, {"empty", ""}};
  EXPECT_EQ(redact_secrets("x=s3cr3t y=tok z=s3cr3ts3cr3t", secrets), "x=**** y=**** z=********");
  EXPECT_EQ(redact_secrets("nothing here", secrets), "nothing here");
  EXPECT_EQ(redact_secrets("****", {{"a", "**"}}), "********");
}

}  // namespace
}  // namespace kbuild
