// Cases from Go's path/filepath match_test.go (Unix), plus the wildcard helpers.
#include "common/go_match.h"

#include <gtest/gtest.h>

namespace kbuild::fileops {
namespace {

struct MatchCase {
  const char* pattern;
  const char* name;
  bool match;
  bool bad;
};

TEST(GoMatch, AgreesWithGosTable) {
  const MatchCase cases[] = {
      {"abc", "abc", true, false},
      {"*", "abc", true, false},
      {"*c", "abc", true, false},
      {"a*", "a", true, false},
      {"a*", "abc", true, false},
      {"a*", "ab/c", false, false},
      {"a*/b", "abc/b", true, false},
      {"a*/b", "a/c/b", false, false},
      {"a*b*c*d*e*/f", "axbxcxdxe/f", true, false},
      {"a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false},
      {"a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false},
      {"a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false},
      {"a*b?c*x", "abxbbxdbxebxczzx", true, false},
      {"a*b?c*x", "abxbbxdbxebxczzy", false, false},
      {"ab[c]", "abc", true, false},
      {"ab[b-d]", "abc", true, false},
      {"ab[e-g]", "abc", false, false},
      {"ab[^c]", "abc", false, false},
      {"ab[^b-d]", "abc", false, false},
      {"ab[^e-g]", "abc", true, false},
      {"a\\*b", "a*b", true, false},
      {"a\\*b", "ab", false, false},
      {"a?b", "a\xe2\x98\xba" "b", true, false},
      {"a[^a]b", "a\xe2\x98\xba" "b", true, false},
      {"a???b", "a\xe2\x98\xba" "b", false, false},
      {"a[^a][^a][^a]b", "a\xe2\x98\xba" "b", false, false},
      {"[a-\xce\xb6]*", "\xce\xb1", true, false},
      {"*[a-\xce\xb6]", "A", false, false},
      {"a?b", "a/b", false, false},
      {"a*b", "a/b", false, false},
      {"[\\]a]", "]", true, false},
      {"[\\-]", "-", true, false},
      {"[x\\-]", "x", true, false},
      {"[x\\-]", "-", true, false},
      {"[x\\-]", "z", false, false},
      {"[\\-x]", "x", true, false},
      {"[\\-x]", "-", true, false},
      {"[\\-x]", "a", false, false},
      {"[]a]", "]", false, true},
      {"[-]", "-", false, true},
      {"[x-]", "x", false, true},
      {"[x-]", "-", false, true},
      {"[x-]", "z", false, true},
      {"[-x]", "x", false, true},
      {"[-x]", "-", false, true},
      {"[-x]", "a", false, true},
      {"\\", "a", false, true},
      {"[a-b-c]", "a", false, true},
      {"[", "a", false, true},
      {"[^", "a", false, true},
      {"[^bc", "a", false, true},
      {"a[", "a", false, true},
      {"a[", "ab", false, true},
      {"a[", "x", false, true},
      {"a/b[", "x", false, true},
      {"*x", "xxx", true, false},
  };
  for (const MatchCase& c : cases) {
    bool bad = false;
    EXPECT_EQ(go_match(c.pattern, c.name, &bad), c.match) << c.pattern << " vs " << c.name;
    EXPECT_EQ(bad, c.bad) << c.pattern << " vs " << c.name;
  }
}

TEST(Wildcards, DetectionHonoursEscapes) {
  EXPECT_TRUE(contains_wildcards("a*"));
  EXPECT_TRUE(contains_wildcards("a/b?/c"));
  EXPECT_TRUE(contains_wildcards("arr[[]0].txt"));
  EXPECT_FALSE(contains_wildcards("plain/path"));
  EXPECT_FALSE(contains_wildcards("a\\*b"));
}

TEST(Wildcards, SplitBeforeTheFirstWildcardComponent) {
  WildcardSplit s = split_wildcards("/sub/*/dir2/foo");
  EXPECT_EQ(s.prefix, "/sub");
  EXPECT_EQ(s.pattern, "*/dir2/foo");
  s = split_wildcards("/*.go");
  EXPECT_EQ(s.prefix, "/");
  EXPECT_EQ(s.pattern, "*.go");
  s = split_wildcards("/a/b");
  EXPECT_EQ(s.prefix, "/a/b");
  EXPECT_EQ(s.pattern, "");
}

}  // namespace
}  // namespace kbuild::fileops
