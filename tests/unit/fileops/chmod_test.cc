#include "engine/fileops/chmod.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/error.h"

namespace kbuild::fileops {
namespace {

std::string parse_error(const std::string& text) {
  try {
    Chmod::parse(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Chmod, OctalValuesUpTo07777) {
  EXPECT_EQ(Chmod::parse("755").apply(S_IFREG | 0600), 0755u);
  EXPECT_EQ(Chmod::parse("0644").apply(S_IFDIR | 0777), 0644u);
  EXPECT_EQ(Chmod::parse("4755").apply(S_IFREG), 04755u);
  EXPECT_EQ(Chmod::parse("0").apply(S_IFREG | 0777), 0u);
  EXPECT_EQ(Chmod::parse("7777").octal(), 07777u);
  EXPECT_TRUE(Chmod::parse("644").is_octal());
  EXPECT_EQ(Chmod::parse("4755").created_dir_mode(), 0755u);
  EXPECT_EQ(Chmod::parse("u+x").created_dir_mode(), 0755u);
}

TEST(Chmod, BuildKitsErrors) {
  EXPECT_EQ(parse_error("64a"), "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777");
  EXPECT_EQ(parse_error("10000"), "invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777");
  EXPECT_EQ(parse_error("99"), "invalid chmod parameter: '99'. it should be octal string and between 0 and 07777");
  EXPECT_EQ(parse_error("777777777777"),
            "invalid chmod parameter: '777777777777'. it should be octal string and between 0 and 07777");
  EXPECT_EQ(parse_error("abc"), "invalid syntax");
  EXPECT_EQ(parse_error("u"), "invalid syntax");
  EXPECT_EQ(parse_error("u+r,"), "invalid syntax");
  EXPECT_EQ(parse_error("u+r,g+w"), "");
}

struct SymbolicCase {
  const char* mode;
  mode_t before;
  mode_t after;
};

TEST(Chmod, SymbolicModesBehaveAsChmod1) {
  const SymbolicCase cases[] = {
      {"+x", S_IFREG | 0644, 0755},
      {"go-w", S_IFREG | 0666, 0644},
      {"go-w", S_IFDIR | 0124, 0104},
      {"a+X", S_IFREG | 0666, 0666},
      {"a+X", S_IFREG | 0766, 0777},
      {"a+X", S_IFDIR | 0124, 0135},
      {"u+rw,g+r,o-x,o+w", S_IFDIR | 0124, 0766},
      {"u=rw,g=r,o=r", S_IFREG | 0666, 0644},
      {"u=rwX,go=rX", S_IFDIR | 0700, 0755},
      {"u=rwX,go=rX", S_IFREG | 0600, 0644},
      {"u=rwX,go=rX", S_IFREG | 0700, 0755},
      {"g=u", S_IFREG | 0640, 0660},
      {"go=u-w", S_IFREG | 0750, 0755},
      {"go=", S_IFREG | 0777, 0700},
      {"=rw,+X", S_IFREG | 0100, 0777},
      {"=rw,+X", S_IFREG | 0000, 0666},
      {"u+s", S_IFREG | 0755, 04755},
      {"g+s", S_IFREG | 0755, 02755},
      {"o+s", S_IFREG | 0755, 0755},
      {"+t", S_IFDIR | 0777, 01777},
      {"o+t", S_IFDIR | 0777, 0777},
      {"a-rwx", S_IFREG | 04777, 04000},
      {"u+r-w", S_IFREG | 0200, 0400},
      {"a=", S_IFREG | 06777, 0},
  };
  for (const SymbolicCase& c : cases) {
    EXPECT_EQ(Chmod::parse(c.mode).apply(c.before), c.after) << c.mode << " on " << std::oct << c.before;
  }
}

}  // namespace
}  // namespace kbuild::fileops
