#include "engine/patterns/dockerignore.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace kbuild::patterns {
namespace {

IgnoreMatcher matcher_for(std::initializer_list<std::string_view> lines) {
  std::string text;
  for (std::string_view line : lines) {
    text += line;
    text += '\n';
  }
  return IgnoreMatcher(parse_dockerignore(text));
}

bool ignores(std::initializer_list<std::string_view> lines, std::string_view path) {
  return matcher_for(lines).ignored(path);
}

template <typename Fn>
std::string user_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    return e.what();
  }
  return "(no error)";
}

std::string parse_error_of(std::string_view text) {
  return user_error_of([&] { parse_dockerignore(text); });
}

// --- Reading the file ------------------------------------------------------------------------

TEST(DockerIgnore, CommentsAndBlankLinesAreSkipped) {
  const auto patterns = parse_dockerignore("# build output\n\nbin\n   \n#!keep\nobj\n");
  EXPECT_EQ(patterns, (std::vector<IgnorePattern>{{"bin", false}, {"obj", false}}));
}

TEST(DockerIgnore, HashIsACommentOnlyInTheFirstColumn) {
  const auto patterns = parse_dockerignore("  # not a comment\n");
  EXPECT_EQ(patterns, (std::vector<IgnorePattern>{{"# not a comment", false}}));
}

TEST(DockerIgnore, WhitespaceAroundPatternsAndAfterTheBangIsTrimmed) {
  const auto patterns = parse_dockerignore("  docs  \n\t!  docs/README.md \t\n");
  EXPECT_EQ(patterns,
            (std::vector<IgnorePattern>{{"docs", false}, {"docs/README.md", true}}));
}

TEST(DockerIgnore, PatternsAreCleanedAndMadeRelative) {
  const auto patterns =
      parse_dockerignore("/a/b/../c/\n./x\n//y//z/.\n! /inverted/abs/path\n../up\n/\n");
  EXPECT_EQ(patterns, (std::vector<IgnorePattern>{{"a/c", false},
                                                  {"x", false},
                                                  {"y/z", false},
                                                  {"inverted/abs/path", true},
                                                  {"../up", false},
                                                  {"/", false}}));
}

TEST(DockerIgnore, ByteOrderMarkIsDroppedFromTheFirstLine) {
  const auto patterns = parse_dockerignore("\xEF\xBB\xBF# comment\n\xEF\xBB\xBF" "a\n");
  // On a later line the mark is part of the pattern, as in BuildKit.
  EXPECT_EQ(patterns, (std::vector<IgnorePattern>{{"\xEF\xBB\xBF" "a", false}}));
}

TEST(DockerIgnore, CrlfLineEndingsAreAccepted) {
  const auto patterns = parse_dockerignore("#c\r\nbin\r\n!bin/keep\r\n");
  EXPECT_EQ(patterns, (std::vector<IgnorePattern>{{"bin", false}, {"bin/keep", true}}));
}

TEST(DockerIgnore, LoneBangIsRejectedWithBuildKitsMessage) {
  EXPECT_EQ(parse_error_of("a\n!\n"),
            "invalid excludepatterns: [a !]: illegal exclusion pattern: \"!\"");
  // "!/" cleans down to "!" as well.
  EXPECT_EQ(parse_error_of("!/\n"),
            "invalid excludepatterns: [!/]: illegal exclusion pattern: \"!\"");
}

TEST(DockerIgnore, MalformedGlobsAreRejectedWithBuildKitsMessage) {
  EXPECT_EQ(parse_error_of("ok\n[\n"), "invalid excludepatterns: [ok []: syntax error in pattern");
  EXPECT_EQ(parse_error_of("bin\\\nobj\\\n"),
            "invalid excludepatterns: [bin\\ obj\\]: syntax error in pattern");
  for (std::string_view bad : {"[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]",
                               "*[", "a*[b"}) {
    EXPECT_NE(parse_error_of(bad).find("syntax error in pattern"), std::string::npos) << bad;
  }
}

TEST(DockerIgnore, WellFormedBracketsAndEscapesAreAccepted) {
  for (std::string_view good : {"[\\]a]", "[\\-]", "[x\\-]", "[\\-x]", "a\\*b", "[*]", "a]"}) {
    EXPECT_NO_THROW(parse_dockerignore(good)) << good;
  }
}

TEST(DockerIgnore, LineLongerThanGoScannerLimitIsRejected) {
  EXPECT_NO_THROW(parse_dockerignore(std::string(65535, 'a') + "\n"));
  EXPECT_EQ(parse_error_of(std::string(65536, 'a')),
            "failed parsing .dockerignore: bufio.Scanner: token too long");
  EXPECT_EQ(user_error_of([] { parse_dockerignore(std::string(70000, 'a'), "app.dockerignore"); }),
            "failed parsing app.dockerignore: bufio.Scanner: token too long");
}

TEST(DockerIgnore, MatcherRejectsAnEmptyException) {
  EXPECT_EQ(user_error_of([] { IgnoreMatcher({{"", true}}); }),
            "invalid excludepatterns: [!]: illegal exclusion pattern: \"!\"");
}

// --- Wildcards ----------------------------------------------------------------------------------

TEST(DockerIgnore, StarMatchesWithinOnePathSegment) {
  EXPECT_TRUE(ignores({"*"}, "fileutils.go"));
  EXPECT_TRUE(ignores({"*.go"}, "fileutils.go"));
  EXPECT_TRUE(ignores({"a*"}, "a"));
  EXPECT_FALSE(ignores({"*.go"}, "cmd/main.go"));
  EXPECT_FALSE(ignores({"a*b"}, "a/b"));
  EXPECT_TRUE(ignores({"a*/b"}, "abc/b"));
  EXPECT_FALSE(ignores({"a*/b"}, "a/c/b"));
  EXPECT_TRUE(ignores({"a*b*c*d*e*/f"}, "axbxcxdxexxx/f"));
  EXPECT_FALSE(ignores({"a*b*c*d*e*/f"}, "axbxcxdxe/xxx/f"));
  EXPECT_TRUE(ignores({"a*b?c*x"}, "abxbbxdbxebxczzx"));
  EXPECT_FALSE(ignores({"a*b?c*x"}, "abxbbxdbxebxczzy"));
  EXPECT_TRUE(ignores({"*x"}, "xxx"));
}

TEST(DockerIgnore, QuestionMarkMatchesOneCharacterButNotSlash) {
  EXPECT_TRUE(ignores({"abc?def"}, "abcZdef"));
  EXPECT_FALSE(ignores({"abc?def"}, "abcdef"));
  EXPECT_FALSE(ignores({"a?b"}, "a/b"));
  EXPECT_TRUE(ignores({"a?b"}, "a\xE2\x98\xBA" "b"));  // one character, three bytes
  EXPECT_FALSE(ignores({"a???b"}, "a\xE2\x98\xBA" "b"));
}

TEST(DockerIgnore, BracketExpressionsMatchOneCharacter) {
  EXPECT_TRUE(ignores({"a[b-d]e"}, "ace"));
  EXPECT_FALSE(ignores({"a[b-d]e"}, "ae"));
  EXPECT_FALSE(ignores({"a[b-d]e"}, "aae"));
  EXPECT_TRUE(ignores({"a[^b-d]e"}, "aze"));
  EXPECT_FALSE(ignores({"ab[^c]"}, "abc"));
  EXPECT_TRUE(ignores({"ab[^e-g]"}, "abc"));
  EXPECT_TRUE(ignores({"[\\]a]"}, "]"));
  EXPECT_TRUE(ignores({"[x\\-]"}, "-"));
  EXPECT_FALSE(ignores({"[x\\-]"}, "z"));
  EXPECT_TRUE(ignores({"a[^a]b"}, "a\xE2\x98\xBA" "b"));
  EXPECT_TRUE(ignores({"[a-\xCE\xB6]*"}, "\xCE\xB1"));  // [a-ζ]* matches α
  EXPECT_FALSE(ignores({"*[a-\xCE\xB6]"}, "A"));
}

TEST(DockerIgnore, NegatedBracketAlsoMatchesSlashAsInBuildKit) {
  // patternmatcher hands "[^x]" to Go's regexp unchanged, where it matches '/' too.
  EXPECT_TRUE(ignores({"a[^x]b"}, "a/b"));
}

TEST(DockerIgnore, EscapedWildcardIsLiteral) {
  EXPECT_TRUE(ignores({"a\\*b"}, "a*b"));
  EXPECT_FALSE(ignores({"a\\*b"}, "axb"));
  EXPECT_FALSE(ignores({"a\\*b"}, "ab"));
  EXPECT_TRUE(ignores({"a\\\\"}, "a\\"));
  EXPECT_TRUE(ignores({"\\!important"}, "!important"));
  EXPECT_TRUE(ignores({"\\#notes"}, "#notes"));
}

TEST(DockerIgnore, RegexpPunctuationInPatternsIsLiteral) {
  EXPECT_TRUE(ignores({"abc.def"}, "abc.def"));
  EXPECT_FALSE(ignores({"abc.def"}, "abcZdef"));
  EXPECT_FALSE(ignores({".*"}, "foo"));
  EXPECT_TRUE(ignores({".*"}, ".foo"));
  EXPECT_TRUE(ignores({"a(b)c/def"}, "a(b)c/def"));
  EXPECT_FALSE(ignores({"a(b)c/def"}, "a(b)c/xyz"));
  EXPECT_TRUE(ignores({"a.|)$(}+{bc"}, "a.|)$(}+{bc"));
  const std::string_view wheel = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";
  EXPECT_TRUE(ignores({wheel}, wheel));
  EXPECT_TRUE(ignores({"dist/*.whl"}, wheel));
  EXPECT_TRUE(ignores({"dist/*+g08acad9*"}, wheel));
}

// patternmatcher's escape table drops '|', '{' and '}', so a pattern that also has a wildcard
// is a Go regexp in which they keep their regexp meaning. Odd, but it is what BuildKit sends.
TEST(DockerIgnore, PipeInWildcardPatternActsAsRegexpAlternation) {
  // Becomes ^[^/]*\.js|[^/]*\.ts$: the first branch is not anchored at the end, the second
  // not at the start.
  EXPECT_TRUE(ignores({"*.js|*.ts"}, "app.js"));
  EXPECT_TRUE(ignores({"*.js|*.ts"}, "app.jsx"));
  EXPECT_TRUE(ignores({"*.js|*.ts"}, "src/app.ts"));
  EXPECT_FALSE(ignores({"*.js|*.ts"}, "src/app.css"));
  // Without a wildcard the pattern is compared as plain text.
  EXPECT_TRUE(ignores({"a|b"}, "a|b"));
  EXPECT_FALSE(ignores({"a|b"}, "a"));
}

TEST(DockerIgnore, BracesAreLiteralUnlessTheyFormARegexpCount) {
  EXPECT_TRUE(ignores({"*.{js,ts}"}, "app.{js,ts}"));
  EXPECT_FALSE(ignores({"*.{js,ts}"}, "app.js"));
  EXPECT_TRUE(ignores({"a{2}*"}, "aab"));
  EXPECT_FALSE(ignores({"a{2}*"}, "a{2}b"));
}

TEST(DockerIgnore, BackslashLetterInWildcardPatternIsARegexpEscape) {
  EXPECT_TRUE(ignores({"v\\d*"}, "v1.2"));
  EXPECT_FALSE(ignores({"v\\d*"}, "vd"));
}

// --- Double star --------------------------------------------------------------------------------

TEST(DockerIgnore, DoubleStarAloneMatchesEverything) {
  for (std::string_view pattern : {"**", "**/", "**/**"}) {
    EXPECT_TRUE(ignores({pattern}, "file")) << pattern;
    EXPECT_TRUE(ignores({pattern}, "dir/file")) << pattern;
    EXPECT_TRUE(ignores({pattern}, "dir/sub/file")) << pattern;
  }
}

TEST(DockerIgnore, DoubleStarAtStartMatchesAtAnyDepth) {
  EXPECT_TRUE(ignores({"**/dir"}, "dir"));
  EXPECT_TRUE(ignores({"**/dir"}, "dir/file"));
  EXPECT_TRUE(ignores({"**/foo/bar"}, "foo/bar"));
  EXPECT_TRUE(ignores({"**/foo/bar"}, "dir/dir2/foo/bar"));
  EXPECT_TRUE(ignores({"**/.foo"}, ".foo"));
  EXPECT_FALSE(ignores({"**/.foo"}, "bar.foo"));
  EXPECT_TRUE(ignores({"**/*.txt"}, "file.txt"));
  EXPECT_TRUE(ignores({"**/**/*.txt"}, "dir/dir/file.txt"));
  EXPECT_FALSE(ignores({"**/**/*.txt2"}, "dir/dir/file.txt"));
  EXPECT_TRUE(ignores({"**/file*.txt*"}, "dir/dir/file.txt"));
  EXPECT_TRUE(ignores({"**/dir2/*"}, "dir/dir2/file"));
  EXPECT_TRUE(ignores({"**/dir2/**"}, "dir/dir2/dir3/file"));
}

TEST(DockerIgnore, DoubleStarWithoutSlashIsASuffixMatch) {
  EXPECT_TRUE(ignores({"**file"}, "file"));
  EXPECT_TRUE(ignores({"**file"}, "dir/dir/file"));
  EXPECT_TRUE(ignores({"**file"}, "dir/myfile"));
}

TEST(DockerIgnore, DoubleStarAtEndMatchesEverythingBelowButNotTheDirItself) {
  EXPECT_FALSE(ignores({"abc/**"}, "abc"));
  EXPECT_TRUE(ignores({"abc/**"}, "abc/def"));
  EXPECT_TRUE(ignores({"abc/**"}, "abc/def/ghi"));
  EXPECT_TRUE(ignores({"a/*.txt**"}, "a/file.txt"));
}

TEST(DockerIgnore, DoubleStarInTheMiddleMatchesZeroOrMoreDirectories) {
  EXPECT_TRUE(ignores({"a/**/b"}, "a/b"));
  EXPECT_TRUE(ignores({"a/**/b"}, "a/x/b"));
  EXPECT_TRUE(ignores({"a/**/b"}, "a/x/y/b"));
  EXPECT_FALSE(ignores({"a/**/b"}, "a/xb"));
  EXPECT_TRUE(ignores({"a**/*.txt"}, "a/dir/dir/file.txt"));
  EXPECT_FALSE(ignores({"a/*.txt"}, "a/dir/file.txt"));
}

// --- Directories, order and exceptions ---------------------------------------------------------

TEST(DockerIgnore, PatternMatchingADirectoryIgnoresEverythingInside) {
  EXPECT_TRUE(ignores({"docs"}, "docs/README.md"));
  EXPECT_TRUE(ignores({"docs/"}, "docs/api/index.md"));
  EXPECT_TRUE(ignores({"*/temp*"}, "somedir/temporary/file.txt"));
  EXPECT_FALSE(ignores({"docs"}, "documents/x"));
}

TEST(DockerIgnore, LeadingSlashAndDotSlashMeanTheContextRoot) {
  EXPECT_TRUE(ignores({"/docs"}, "docs/README.md"));
  EXPECT_TRUE(ignores({"./docs"}, "docs/README.md"));
  EXPECT_FALSE(ignores({"/docs"}, "sub/docs"));
}

TEST(DockerIgnore, RootIsNeverIgnored) {
  EXPECT_FALSE(ignores({"**"}, ""));
  EXPECT_FALSE(ignores({"*"}, "."));
}

TEST(DockerIgnore, LaterRulesWin) {
  EXPECT_FALSE(ignores({"*.go", "!fileutils.go"}, "fileutils.go"));
  EXPECT_TRUE(ignores({"!fileutils.go", "*.go"}, "fileutils.go"));
  EXPECT_TRUE(ignores({"*.md", "!README.md", "README*"}, "README.md"));
}

TEST(DockerIgnore, ExceptionReincludesFileInsideExcludedDir) {
  for (std::string_view dir : {"docs", "docs/", "docs/*"}) {
    const IgnoreMatcher matcher = matcher_for({dir, "!docs/README.md"});
    EXPECT_FALSE(matcher.ignored("docs/README.md")) << dir;
    EXPECT_TRUE(matcher.ignored("docs/other.md")) << dir;
  }
}

TEST(DockerIgnore, ExceptionForADirectoryReincludesItsWholeSubtree) {
  EXPECT_FALSE(ignores({"**", "!util/docker/web"}, "util/docker/web/foo"));
  EXPECT_TRUE(ignores({"**", "!util/docker/web"}, "util/docker/other"));
  EXPECT_TRUE(ignores({"**", "!util/docker/web", "util/docker/web/foo"}, "util/docker/web/foo"));
  EXPECT_FALSE(ignores({"**", "!dist/*.whl"},
                       "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"));
}

TEST(DockerIgnore, ExceptionsUseWildcardsToo) {
  const IgnoreMatcher matcher = matcher_for({"*", "!**/*.rs", "!Cargo.toml", "target/*"});
  EXPECT_FALSE(matcher.ignored("src/main.rs"));
  EXPECT_FALSE(matcher.ignored("Cargo.toml"));
  EXPECT_TRUE(matcher.ignored("README.md"));
  EXPECT_TRUE(matcher.ignored("target/build.rs"));
}

// BuildKit's walker hands each entry the per-pattern results of its parent directory, so an
// exception that was skipped for "foo" (nothing was ignored yet) is later tried only against the
// deeper path itself. A plain "matches the path or a parent" check would keep foo/bar here.
TEST(DockerIgnore, ExceptionSkippedForAParentIsNotReappliedBelowIt) {
  const IgnoreMatcher matcher = matcher_for({"foo/bar", "!foo"});
  EXPECT_FALSE(matcher.ignored("foo"));
  EXPECT_TRUE(matcher.ignored("foo/bar"));
  EXPECT_TRUE(matcher.ignored("foo/bar/baz"));
  EXPECT_FALSE(matcher.ignored("foo/other"));
}

TEST(DockerIgnore, TrailingSlashOnTheQueriedPathIsIgnored) {
  EXPECT_TRUE(ignores({"docs"}, "docs/"));
}

// --- Patterns that only fail once used ---------------------------------------------------------

TEST(DockerIgnore, PatternValidAsGlobButNotAsRegexpFailsWhenConsulted) {
  // Go's filepath.Match accepts the range l-O; the translated regexp does not.
  const IgnoreMatcher matcher(parse_dockerignore("[Local-Only]/\n"));
  EXPECT_EQ(user_error_of([&] { (void)matcher.ignored("x"); }),
            "failed to match excludepatterns: syntax error in pattern");
}

TEST(DockerIgnore, BrokenExceptionIsHarmlessWhileNothingIsIgnored) {
  // An exception is only tried on paths an earlier rule ignored, as in BuildKit.
  const IgnoreMatcher matcher = matcher_for({"build", "![z-a]"});
  EXPECT_FALSE(matcher.ignored("src/main.c"));
  EXPECT_EQ(user_error_of([&] { (void)matcher.ignored("build"); }),
            "failed to match excludepatterns: syntax error in pattern");
}

TEST(DockerIgnore, UnicodeClassEscapeIsReportedAsUnsupported) {
  const std::string message = user_error_of([] { matcher_for({"\\pL*"}); });
  EXPECT_NE(message.find("not supported"), std::string::npos) << message;
}

// --- Skipping ignored directories ----------------------------------------------------------------

TEST(DockerIgnore, IgnoredDirWithoutExceptionsIsSkipped) {
  const IgnoreMatcher matcher = matcher_for({"node_modules", "*.log"});
  EXPECT_FALSE(matcher.has_exclusions());
  EXPECT_FALSE(matcher.may_reinclude_below("node_modules"));
}

TEST(DockerIgnore, ExceptionInsideIgnoredDirRequiresDescending) {
  const IgnoreMatcher matcher = matcher_for({"foo*", "!foo/bar2"});
  EXPECT_TRUE(matcher.has_exclusions());
  EXPECT_TRUE(matcher.may_reinclude_below("foo"));
  EXPECT_FALSE(matcher.may_reinclude_below("foo2"));
  EXPECT_FALSE(matcher.may_reinclude_below("fo"));
}

TEST(DockerIgnore, ExceptionAboveIgnoredDirDoesNotRequireDescending) {
  EXPECT_FALSE(matcher_for({"foo/bar", "!foo"}).may_reinclude_below("foo/bar"));
}

TEST(DockerIgnore, TrailingStarsOfAnExceptionCountAsItsDirectory) {
  const IgnoreMatcher matcher = matcher_for({"build", "!build/keep/**"});
  EXPECT_TRUE(matcher.may_reinclude_below("build"));
  EXPECT_TRUE(matcher.may_reinclude_below("build/keep"));
  EXPECT_FALSE(matcher.may_reinclude_below("build/other"));
}

TEST(DockerIgnore, WildcardExceptionRequiresDescendingEverywhere) {
  const IgnoreMatcher matcher = matcher_for({"vendor", "!**/*.md"});
  EXPECT_TRUE(matcher.may_reinclude_below("vendor"));
  EXPECT_TRUE(matcher.may_reinclude_below("vendor/a/b"));
}

// A walker that skips what may_reinclude_below rules out sends what fsutil's walker sends
// (fsutil's TestWalkerExclude).
TEST(DockerIgnore, WalkerKeepsReincludedFileInsideExcludedDir) {
  struct Entry {
    std::string path;
    bool dir;
  };
  const std::vector<Entry> tree = {
      {"bar", false}, {"foo", true}, {"foo/bar2", false}, {"foo/sub", true},
      {"foo/sub/x", false}, {"foo2", false}};
  const IgnoreMatcher matcher = matcher_for({"foo*", "!foo/bar2"});
  std::vector<std::string> kept;
  std::vector<std::string> skipped_dirs;
  for (const Entry& entry : tree) {
    bool below_skipped = false;
    for (const std::string& dir : skipped_dirs) below_skipped |= entry.path.starts_with(dir + "/");
    if (below_skipped) continue;
    if (!matcher.ignored(entry.path)) {
      kept.push_back(entry.path);
    } else if (entry.dir && !matcher.may_reinclude_below(entry.path)) {
      skipped_dirs.push_back(entry.path);
    }
  }
  EXPECT_EQ(kept, (std::vector<std::string>{"bar", "foo/bar2"}));
  // "foo" is read for the sake of "foo/bar2"; nothing below "foo/sub" can come back.
  EXPECT_EQ(skipped_dirs, (std::vector<std::string>{"foo/sub"}));
}

// --- Which file applies -------------------------------------------------------------------------

TEST(DockerIgnore, DockerfileSpecificIgnoreFileWins) {
  std::vector<std::string> asked;
  const auto exists = [&](std::string_view path) {
    asked.emplace_back(path);
    return true;
  };
  EXPECT_EQ(dockerignore_path_for("build/app.Dockerfile", exists),
            "build/app.Dockerfile.dockerignore");
  EXPECT_EQ(asked, (std::vector<std::string>{"build/app.Dockerfile.dockerignore"}));
}

TEST(DockerIgnore, ContextRootIgnoreFileIsTheFallback) {
  EXPECT_EQ(dockerignore_path_for("Dockerfile", [](std::string_view) { return false; }),
            ".dockerignore");
}

}  // namespace
}  // namespace kbuild::patterns
