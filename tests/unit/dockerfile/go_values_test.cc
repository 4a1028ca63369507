#include "engine/dockerfile/go_values.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::dockerfile {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GoValues, DurationsSumTheirParts) {
  EXPECT_EQ(parse_go_duration("0"), 0);
  EXPECT_EQ(parse_go_duration("5s"), 5'000'000'000);
  EXPECT_EQ(parse_go_duration("1m30s"), 90'000'000'000);
  EXPECT_EQ(parse_go_duration("1.5h"), 5'400'000'000'000);
  EXPECT_EQ(parse_go_duration("300ms"), 300'000'000);
  EXPECT_EQ(parse_go_duration("2us"), 2'000);
  EXPECT_EQ(parse_go_duration("-1s"), -1'000'000'000);
}

TEST(GoValues, BadDurationsReportLikeGo) {
  EXPECT_EQ(error_of([] { parse_go_duration("5"); }), "time: missing unit in duration \"5\"");
  EXPECT_EQ(error_of([] { parse_go_duration("5x"); }), "time: unknown unit \"x\" in duration \"5x\"");
  EXPECT_EQ(error_of([] { parse_go_duration("abc"); }), "time: invalid duration \"abc\"");
  EXPECT_EQ(error_of([] { parse_go_duration(""); }), "time: invalid duration \"\"");
}

TEST(GoValues, IntegersRejectJunkAndOverflow) {
  EXPECT_EQ(parse_go_int("42", 32), 42);
  EXPECT_EQ(parse_go_int("-3", 32), -3);
  EXPECT_EQ(error_of([] { parse_go_int("x1", 32); }), "strconv.ParseInt: parsing \"x1\": invalid syntax");
  EXPECT_EQ(error_of([] { parse_go_int("2147483648", 32); }),
            "strconv.ParseInt: parsing \"2147483648\": value out of range");
}

TEST(GoValues, UnsignedParsesInTheGivenBase) {
  EXPECT_EQ(parse_go_uint("0755", 8, 32), 0755u);
  EXPECT_EQ(parse_go_uint("1000", 10, 32), 1000u);
  EXPECT_FALSE(parse_go_uint("8", 8, 32));
  EXPECT_FALSE(parse_go_uint("-1", 10, 32));
  EXPECT_FALSE(parse_go_uint("4294967296", 10, 32));
}

TEST(GoValues, BooleansAcceptGoSpellingsOnly) {
  EXPECT_EQ(parse_go_bool("TRUE"), true);
  EXPECT_EQ(parse_go_bool("t"), true);
  EXPECT_EQ(parse_go_bool("0"), false);
  EXPECT_FALSE(parse_go_bool("yes"));
  EXPECT_FALSE(parse_go_bool("tRUE"));
}

TEST(GoValues, RamSizesAreBinaryMultiples) {
  EXPECT_EQ(parse_ram_in_bytes("512"), 512);
  EXPECT_EQ(parse_ram_in_bytes("64m"), 64LL << 20);
  EXPECT_EQ(parse_ram_in_bytes("1GiB"), 1LL << 30);
  EXPECT_EQ(parse_ram_in_bytes("1.5k"), 1536);
  EXPECT_FALSE(parse_ram_in_bytes("ten"));
  EXPECT_FALSE(parse_ram_in_bytes("-1m"));
}

TEST(GoValues, CsvFieldsHonourQuotes) {
  EXPECT_EQ(parse_csv_fields("type=cache,target=/x"), (std::vector<std::string>{"type=cache", "target=/x"}));
  EXPECT_EQ(parse_csv_fields("\"target=/a,b\",ro"), (std::vector<std::string>{"target=/a,b", "ro"}));
  EXPECT_EQ(parse_csv_fields("a,,b"), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(parse_csv_fields("\"say \"\"hi\"\"\""), (std::vector<std::string>{"say \"hi\""}));
  EXPECT_THROW(parse_csv_fields("a\"b"), Error);
  EXPECT_THROW(parse_csv_fields("\"open"), Error);
}

TEST(GoValues, QuoteEscapesLikeStrconvQuote) {
  EXPECT_EQ(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
  EXPECT_EQ(go_quote(std::string("\x01", 1)), "\"\\x01\"");
  EXPECT_EQ(go_quote("♥"), "\"♥\"");
}

}  // namespace
}  // namespace kbuild::dockerfile
