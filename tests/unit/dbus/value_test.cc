#include "dbus/value.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "dbus/errors.h"

namespace kbuild::dbus {
namespace {

TEST(Value, NamesItsDBusType) {
  EXPECT_STREQ(Value("x").signature(), "s");
  EXPECT_STREQ(Value(true).signature(), "b");
  EXPECT_STREQ(Value(std::int64_t{-1}).signature(), "x");
  EXPECT_STREQ(Value(std::uint64_t{1}).signature(), "t");
  EXPECT_STREQ(Value(std::vector<std::string>{"a"}).signature(), "as");
  EXPECT_STREQ(Value(StringMap{{"a", "b"}}).signature(), "a{ss}");
  EXPECT_STREQ(Value(std::vector<StringMap>{}).signature(), "aa{ss}");
  EXPECT_STREQ(Value(Bytes{1, 2}).signature(), "ay");
}

TEST(Value, StringLiteralIsAStringNotABool) {
  EXPECT_TRUE(Value("yes").holds<std::string>());
}

TEST(Value, OptionsAreReadWithTheirType) {
  Options options{{"target", "final"}, {"no-cache", true}};
  EXPECT_EQ(*find_option<std::string>(options, "target"), "final");
  EXPECT_EQ(find_option<std::string>(options, "platform"), nullptr);
  EXPECT_TRUE(option_or(options, "no-cache", false));
  EXPECT_EQ(option_or<std::string>(options, "platform", "linux/amd64"), "linux/amd64");
}

TEST(Value, OptionOfTheWrongTypeIsAUserError) {
  Options options{{"no-cache", "yes"}};
  try {
    option_or(options, "no-cache", false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_STREQ(e.what(), "option no-cache is s, expected b");
  }
}

TEST(DBusErrors, KindsRoundTripThroughErrorNames) {
  for (ErrorKind kind : {ErrorKind::user, ErrorKind::not_found, ErrorKind::permission, ErrorKind::canceled,
                         ErrorKind::internal})
    EXPECT_EQ(error_kind_for_dbus_name(dbus_error_name(kind)), kind);
  EXPECT_STREQ(dbus_error_name(ErrorKind::not_found), "org.kbuild.Error.NotFound");
  EXPECT_EQ(error_kind_for_dbus_name("org.freedesktop.DBus.Error.AccessDenied"), ErrorKind::permission);
  EXPECT_EQ(error_kind_for_dbus_name("org.freedesktop.DBus.Error.NoReply"), std::nullopt);
}

TEST(DBusErrors, MessagesAreMadeValidUtf8) {
  EXPECT_EQ(valid_utf8("plain ascii"), "plain ascii");
  EXPECT_EQ(valid_utf8("caf\xC3\xA9 \xF0\x9F\x90\xB3"), "caf\xC3\xA9 \xF0\x9F\x90\xB3");
  EXPECT_EQ(valid_utf8("bad \xFF byte"), "bad \xEF\xBF\xBD byte");
  EXPECT_EQ(valid_utf8("cut \xC3"), "cut \xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8("overlong \xC0\xAF"), "overlong \xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8("surrogate \xED\xA0\x80"), "surrogate \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8(std::string("nul\0here", 8)), "nulhere");
}

}  // namespace
}  // namespace kbuild::dbus
