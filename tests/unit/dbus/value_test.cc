#include "dbus/value.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

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
  EXPECT_STREQ(Value(Fd()).signature(), "h");
}

TEST(Value, FdsAreEqualWhenTheyReferToTheSameFile) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  Fd a(UniqueFd(::dup(read_end.get()))), b(UniqueFd(::dup(read_end.get()))), other(UniqueFd(::dup(write_end.get())));
  EXPECT_EQ(Value(a), Value(b));
  EXPECT_EQ(a, a);
  EXPECT_EQ(Fd(), Fd());
  EXPECT_FALSE(a == Fd());
  // A pipe's two ends are one inode: equality is about the file, as D-Bus can only preserve that.
  EXPECT_EQ(a, other);
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(a == Fd(std::move(null)));
}

TEST(Value, CopiesShareTheFdAndTheLastClosesIt) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    Options options{{"fd", Fd(UniqueFd(raw))}};
    Options copy = options;
    options.clear();
    EXPECT_EQ(find_option<Fd>(copy, "fd")->get(), raw);
    EXPECT_EQ(::fcntl(raw, F_GETFD) >= 0, true);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
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
