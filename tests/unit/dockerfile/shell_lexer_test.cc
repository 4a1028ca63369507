#include "engine/dockerfile/shell_lexer.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/error.h"

namespace kbuild::dockerfile {
namespace {

using Env = std::map<std::string, std::string>;
using Words = std::vector<std::string>;

VariableLookup lookup_in(const Env& env) {
  return [&env](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

std::string expand(std::string_view word, const Env& env = {}, const ShellLexer& lexer = ShellLexer()) {
  return lexer.expand_word(word, lookup_in(env));
}

Words split(std::string_view word, const Env& env = {}, const ShellLexer& lexer = ShellLexer()) {
  return lexer.expand_words(word, lookup_in(env));
}

// The message expansion fails with, or "" when it does not fail.
std::string failure(std::string_view word, const Env& env = {}, const ShellLexer& lexer = ShellLexer()) {
  try {
    lexer.expand_word(word, lookup_in(env));
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    return e.what();
  }
  return "";
}

// ---- variables ----

TEST(ShellLexer, PlainAndBracedVariablesExpand) {
  const Env env = {{"v", "val"}, {"under_score1", "u"}};
  EXPECT_EQ(expand("a$v/b", env), "aval/b");
  EXPECT_EQ(expand("a${v}b", env), "avalb");
  EXPECT_EQ(expand("$under_score1.x", env), "u.x");
  EXPECT_EQ(expand("$vx", env), "");
}

TEST(ShellLexer, UnsetVariableExpandsToNothing) {
  EXPECT_EQ(expand("a${nope}b$nope"), "ab");
}

TEST(ShellLexer, DollarWithoutNameStaysLiteral) {
  EXPECT_EQ(expand("$."), "$.");
  EXPECT_EQ(expand("cost: 5$"), "cost: 5$");
  EXPECT_EQ(expand("a$/b"), "a$/b");
}

TEST(ShellLexer, PositionalAndSpecialParametersAreNeverSet) {
  EXPECT_EQ(expand("he$1x"), "hex");
  EXPECT_EQ(expand("$999aaa"), "aaa");
  EXPECT_EQ(expand("$@@@"), "@@");
  EXPECT_EQ(expand("${#}${?}${$}${!}${0}${-}x"), "x");
  EXPECT_EQ(expand("${1:-one}"), "one");
}

TEST(ShellLexer, NamesMayHoldNonAsciiLetters) {
  const Env env = {{"KOREAN", "한국어"}, {"KOREAN님", "x"}};
  EXPECT_EQ(expand("안녕$KOREAN", env), "안녕한국어");
  // Like Go's unicode.IsLetter, a Korean syllable continues the name.
  EXPECT_EQ(expand("$KOREAN님", env), "x");
  EXPECT_EQ(expand("${KOREAN}님", env), "한국어님");
}

// ---- ${v-w} ${v:-w} ${v+w} ${v:+w} ${v?m} ${v:?m} ----

TEST(ShellLexer, DefaultValueAppliesOnlyWhenUnsetWithoutColon) {
  const Env env = {{"set", "x"}, {"empty", ""}};
  EXPECT_EQ(expand("${set-d}", env), "x");
  EXPECT_EQ(expand("${empty-d}", env), "");
  EXPECT_EQ(expand("${unset-d}", env), "d");
}

TEST(ShellLexer, DefaultValueWithColonAppliesWhenUnsetOrEmpty) {
  const Env env = {{"set", "x"}, {"empty", ""}};
  EXPECT_EQ(expand("${set:-d}", env), "x");
  EXPECT_EQ(expand("${empty:-d}", env), "d");
  EXPECT_EQ(expand("${unset:-d}", env), "d");
  EXPECT_EQ(expand("${unset:-}", env), "");
}

TEST(ShellLexer, AlternativeValueWithoutColonAppliesWhenSetEvenIfEmpty) {
  const Env env = {{"set", "x"}, {"empty", ""}};
  EXPECT_EQ(expand("${set+alt}", env), "alt");
  EXPECT_EQ(expand("${empty+alt}", env), "alt");
  EXPECT_EQ(expand("${unset+alt}", env), "");
}

TEST(ShellLexer, AlternativeValueWithColonAppliesOnlyWhenNotEmpty) {
  const Env env = {{"set", "x"}, {"empty", ""}};
  EXPECT_EQ(expand("${set:+alt}", env), "alt");
  EXPECT_EQ(expand("${empty:+alt}", env), "");
  EXPECT_EQ(expand("${unset:+alt}", env), "");
}

TEST(ShellLexer, RequiredVariableWithoutColonAcceptsEmpty) {
  const Env env = {{"set", "x"}, {"empty", ""}};
  EXPECT_EQ(expand("${set?}", env), "x");
  EXPECT_EQ(expand("${empty?}", env), "");
  EXPECT_EQ(failure("${unset?}", env), R"(failed to process "${unset?}": unset: is not allowed to be unset)");
}

TEST(ShellLexer, RequiredVariableWithColonRejectsEmptyAndUnset) {
  const Env env = {{"set", "x"}, {"empty", ""}};
  EXPECT_EQ(expand("${set:?}", env), "x");
  EXPECT_EQ(failure("${empty:?}", env), R"(failed to process "${empty:?}": empty: is not allowed to be empty)");
  EXPECT_EQ(failure("${v:?}", env), R"(failed to process "${v:?}": v: is not allowed to be unset)");
}

TEST(ShellLexer, RequiredVariableMessageIsExpanded) {
  const Env env = {{"ARG", "x"}, {"VAR", ""}};
  EXPECT_EQ(failure("${VAR:?message here$ARG}", env),
            R"(failed to process "${VAR:?message here$ARG}": VAR: message herex)");
  EXPECT_EQ(failure("${NONE?set NONE}", env), R"(failed to process "${NONE?set NONE}": NONE: set NONE)");
}

TEST(ShellLexer, NestedExpansionsInDefaultAndAlternative) {
  const Env env = {{"b", "B"}, {"empty", ""}};
  EXPECT_EQ(expand("${a:-${b}}", env), "B");
  EXPECT_EQ(expand("${a:-${c:-${b}x}}y", env), "Bxy");
  EXPECT_EQ(expand("${b:+[${b}]}", env), "[B]");
  EXPECT_EQ(expand("${a:-'q ${b}' \"${b}\"}", env), "q ${b} B");
  EXPECT_EQ(expand("${a:-\\${b}}", env), "${b}");
  EXPECT_EQ(expand("${b:+${empty}:}", env), ":");
}

TEST(ShellLexer, OtherModifiersAreUnsupported) {
  EXPECT_EQ(failure("${v=x}"), R"(failed to process "${v=x}": unsupported modifier (=) in substitution)");
  EXPECT_EQ(failure("${v:=x}"), R"(failed to process "${v:=x}": unsupported modifier (:=) in substitution)");
  EXPECT_EQ(failure("${v:x}"), R"(failed to process "${v:x}": unsupported modifier (:x) in substitution)");
  EXPECT_EQ(failure("${.}"), R"(failed to process "${.}": unsupported modifier (.) in substitution)");
  EXPECT_EQ(failure("${v:#x}"), R"(failed to process "${v:#x}": unsupported modifier (:#) in substitution)");
  EXPECT_EQ(failure("${v:%x}"), R"(failed to process "${v:%x}": unsupported modifier (:%) in substitution)");
}

TEST(ShellLexer, MalformedBracesAreSyntaxErrors) {
  EXPECT_EQ(failure("${}"), R"(failed to process "${}": syntax error: bad substitution)");
  EXPECT_EQ(failure("${{a}"), R"(failed to process "${{a}": syntax error: bad substitution)");
  EXPECT_EQ(failure("${:-a}"), R"(failed to process "${:-a}": syntax error: bad substitution)");
  EXPECT_EQ(failure("${"), R"(failed to process "${": syntax error: missing '}')");
  EXPECT_EQ(failure("${a:-b ${c}"), R"(failed to process "${a:-b ${c}": syntax error: missing '}')");
  EXPECT_EQ(failure("${v/a"), R"(failed to process "${v/a": syntax error: missing '/' in ${})");
  EXPECT_EQ(failure("${v/a/b"), R"(failed to process "${v/a/b": syntax error: missing '}')");
  // BuildKit reads the end of the word as the modifier, shown as U+FFFD.
  EXPECT_EQ(failure("${abc"), "failed to process \"${abc\": unsupported modifier (\uFFFD) in substitution");
}

TEST(ShellLexer, NestingDepthIsBoundedToProtectTheStack) {
  auto nested = [](int depth) {
    std::string word;
    for (int i = 0; i < depth; ++i) word += "${a:-";
    word += "x";
    for (int i = 0; i < depth; ++i) word += "}";
    return word;
  };
  EXPECT_EQ(expand(nested(128)), "x");
  EXPECT_NE(failure(nested(10000)).find("syntax error: more than 128 nested ${}"), std::string::npos);
}

TEST(ShellLexer, ClosingBraceOutsideExpansionIsText) {
  EXPECT_EQ(expand("${a:-b}}"), "b}");
  EXPECT_EQ(expand("${a:-b {c}"), "b {c");
}

// ---- ${v#p} ${v##p} ${v%p} ${v%%p} ----

TEST(ShellLexer, PrefixRemovalTakesShortestOrLongestMatch) {
  const Env env = {{"path", "/usr/local/bin"}};
  EXPECT_EQ(expand("${path#*/}", env), "usr/local/bin");
  EXPECT_EQ(expand("${path##*/}", env), "bin");
  EXPECT_EQ(expand("${path#/usr}", env), "/local/bin");
  EXPECT_EQ(expand("${path#local}", env), "/usr/local/bin");
  EXPECT_EQ(expand("${path#}", env), "/usr/local/bin");
}

TEST(ShellLexer, SuffixRemovalTakesShortestOrLongestMatch) {
  const Env env = {{"file", "archive.tar.gz"}};
  EXPECT_EQ(expand("${file%.*}", env), "archive.tar");
  EXPECT_EQ(expand("${file%%.*}", env), "archive");
  EXPECT_EQ(expand("${file%.gz}", env), "archive.tar");
  EXPECT_EQ(expand("${file%tar}", env), "archive.tar.gz");
  EXPECT_EQ(expand("${nope%.*}x", env), "x");
}

TEST(ShellLexer, QuestionMarkInPatternMatchesOneCharacter) {
  const Env env = {{"v", "abcabc"}};
  EXPECT_EQ(expand("${v#??}", env), "cabc");
  EXPECT_EQ(expand("${v%?c}", env), "abca");
  EXPECT_EQ(expand("${v#?x}", env), "abcabc");
}

TEST(ShellLexer, EscapedWildcardsInPatternAreLiteral) {
  EXPECT_EQ(expand("${v%%\\**}", {{"v", "xx**"}}), "xx");
  EXPECT_EQ(expand("${v#?\\?}", {{"v", "???y"}}), "?y");
  EXPECT_EQ(expand("${v#\\\\}", {{"v", "\\x"}}), "x");
  EXPECT_EQ(expand("${v#a\\}b}", {{"v", "a}bc"}}), "c");
}

TEST(ShellLexer, BracketsInPatternAreLiteralAsInBuildKit) {
  // BuildKit has no bracket expressions: `[ab]` matches the four characters `[ab]` only.
  EXPECT_EQ(expand("${v#[ab]}", {{"v", "abc"}}), "abc");
  EXPECT_EQ(expand("${v#[ab]}", {{"v", "[ab]c"}}), "c");
  EXPECT_EQ(expand("${v#()[]{\\}^$.\\*\\?|\\\\}", {{"v", "()[]{}^$.*?|\\x"}}), "x");
}

TEST(ShellLexer, PatternWildcardsDoNotMatchNewlines) {
  const Env env = {{"v", "one\ntwo"}};
  EXPECT_EQ(expand("${v##*o}", env), "ne\ntwo");
  EXPECT_EQ(expand("${v#???\?}", env), "one\ntwo");
}

TEST(ShellLexer, PatternComesFromExpansion) {
  const Env env = {{"v", "xxyy"}, {"p", "x"}, {"pp", "#x"}};
  EXPECT_EQ(expand("${v#$p}", env), "xyy");
  // The doubled operator is recognised after expansion, as BuildKit does.
  EXPECT_EQ(expand("${v#$pp}", env), "xyy");
  EXPECT_EQ(expand("${v#${p}*}", env), "xyy");
}

TEST(ShellLexer, InvalidEscapeInPatternIsAnError) {
  EXPECT_EQ(failure("${v#\\x}", {{"v", "a"}}),
            R"(failed to process "${v#\\x}": invalid pattern (\x) in substitution: invalid escape '\x')");
  // For % the pattern is reversed first, and the message shows it reversed.
  EXPECT_EQ(failure("${v%a\\x}", {{"v", "a"}}),
            R"(failed to process "${v%a\\x}": invalid pattern (\xa) in substitution: invalid escape '\x')");
}

// ---- ${v/p/r} ${v//p/r} ----

TEST(ShellLexer, ReplacementChangesFirstOrEveryMatch) {
  const Env env = {{"v", "/tmp/tmp/bar.txt"}};
  EXPECT_EQ(expand("${v/tmp/var}", env), "/var/tmp/bar.txt");
  EXPECT_EQ(expand("${v//tmp/var}", env), "/var/var/bar.txt");
  EXPECT_EQ(expand("${v//tmp/}", env), "///bar.txt");
  EXPECT_EQ(expand("${v/nothing/x}", env), "/tmp/tmp/bar.txt");
  EXPECT_EQ(expand("${unset/a/b}x", env), "x");
}

TEST(ShellLexer, ReplacementPatternIsAGreedyGlob) {
  const Env env = {{"v", "/a/foo/b/c.txt"}, {"needle", "/?/"}};
  EXPECT_EQ(expand("${v/$needle//}", env), "/foo/b/c.txt");
  EXPECT_EQ(expand("${v//$needle//}", env), "/foo/c.txt");
  EXPECT_EQ(expand("${v/f*\\//X}", env), "/a/Xc.txt");
}

TEST(ShellLexer, ReplacementKeepsEscapedSlashes) {
  // The escape before `/` leaves the pattern, but stays in the replacement, as in BuildKit.
  EXPECT_EQ(expand("${v//\\//\\/}", {{"v", "/tmp/foo.txt"}}), "\\/tmp\\/foo.txt");
}

TEST(ShellLexer, EmptyReplacementPatternMatchesEverywhere) {
  EXPECT_EQ(expand("${v/$none/ww}", {{"v", "xy"}}), "wwxy");
  EXPECT_EQ(expand("${v//$none/-}", {{"v", "xy"}}), "-x-y-");
  EXPECT_EQ(expand("${v///}", {{"v", "xy"}}), "xy");
}

TEST(ShellLexer, ReplaceAllExpandsDollarZeroAsGoTemplatesDo) {
  // BuildKit hands `//` replacements to Go's regexp template expansion: $0 is the match, other
  // names are empty, $$ is $. A single replacement is pasted in literally.
  const Env env = {{"v", "abab"}, {"r", "[$0]"}, {"other", "$x$$"}};
  EXPECT_EQ(expand("${v//b/$r}", env), "a[b]a[b]");
  EXPECT_EQ(expand("${v/b/$r}", env), "a[$0]ab");
  EXPECT_EQ(expand("${v//b/$other}", env), "a$a$");
}

// ---- quoting and escapes ----

TEST(ShellLexer, SingleQuotesKeepEverythingLiteral) {
  const Env env = {{"PWD", "/home"}};
  EXPECT_EQ(expand("'$PWD \\n \"x\"'", env), "$PWD \\n \"x\"");
  EXPECT_EQ(expand("he'll'o"), "hello");
  EXPECT_EQ(expand("'hello\\'"), "hello\\");
}

TEST(ShellLexer, DoubleQuotesExpandVariables) {
  const Env env = {{"PWD", "/home"}};
  EXPECT_EQ(expand("\"he'$PWD'\"", env), "he'/home'");
  EXPECT_EQ(expand("\"''\""), "''");
}

TEST(ShellLexer, EscapeInDoubleQuotesOnlyEscapesQuoteDollarAndItself) {
  const Env env = {{"PWD", "/home"}};
  EXPECT_EQ(expand(R"("a\"b")"), "a\"b");
  EXPECT_EQ(expand(R"("he\$PWD")", env), "he$PWD");
  EXPECT_EQ(expand(R"("he\\$PWD")", env), "he\\/home");
  EXPECT_EQ(expand(R"("abc\tdef")"), "abc\\tdef");
  EXPECT_EQ(expand(R"("a\`b")"), "a\\`b");
}

TEST(ShellLexer, EscapeOutsideQuotesEscapesAnyCharacter) {
  const Env env = {{"PWD", "/home"}};
  EXPECT_EQ(expand(R"(abc\tdef)"), "abctdef");
  EXPECT_EQ(expand(R"(he\'llo)"), "he'llo");
  EXPECT_EQ(expand(R"(he\$PWD)", env), "he$PWD");
  EXPECT_EQ(expand(R"(he\\$PWD)", env), "he\\/home");
  EXPECT_EQ(expand(R"(\${})"), "${}");
}

TEST(ShellLexer, TrailingEscapeIsDropped) {
  EXPECT_EQ(expand("hello\\"), "hello");
  EXPECT_EQ(expand("hello\\\\"), "hello\\");
}

TEST(ShellLexer, UnterminatedQuotesAreErrors) {
  EXPECT_EQ(failure("he'llo"),
            R"(failed to process "he'llo": unexpected end of statement while looking for matching single-quote)");
  EXPECT_EQ(failure("\"hello\\\""),
            R"(failed to process "\"hello\\\"": unexpected end of statement while looking for matching double-quote)");
}

TEST(ShellLexer, BacktickEscapeTokenReplacesBackslash) {
  const ShellLexer lexer('`');
  const Env env = {{"v", "x"}};
  EXPECT_EQ(expand(R"(C:\path\$v)", env, lexer), "C:\\path\\x");
  EXPECT_EQ(expand("a`$v` b", env, lexer), "a$v b");
  EXPECT_EQ(expand("\"q`\"`$v``\"", env, lexer), "q\"$v`");
  EXPECT_EQ(expand("\"a\\\"", env, lexer), "a\\");
  EXPECT_EQ(split("a` b c", env, lexer), (Words{"a b", "c"}));
}

TEST(ShellLexer, RawQuotesKeepQuoteCharacters) {
  ShellLexer lexer;
  lexer.set_raw_quotes(true);
  const Env env = {{"v", "x"}};
  EXPECT_EQ(expand("'a $v'\"b $v\"", env, lexer), "'a $v'\"b x\"");
  EXPECT_EQ(split("<<'EOF'", env, lexer), (Words{"<<'EOF'"}));
}

TEST(ShellLexer, RawEscapesKeepEscapeCharacters) {
  ShellLexer lexer;
  lexer.set_raw_escapes(true);
  const Env env = {{"v", "x"}};
  EXPECT_EQ(expand(R"(a\$v\ b "\"c\$v")", env, lexer), R"(a\$v\ b \"c\$v)");
  EXPECT_EQ(split(R"(a\ b c)", env, lexer), (Words{"a\\ b", "c"}));
}

TEST(ShellLexer, SkipProcessQuotesTreatsQuotesAsText) {
  ShellLexer lexer;
  lexer.set_skip_process_quotes(true);
  const Env env = {{"v", "x"}};
  EXPECT_EQ(expand("'$v' \"$v\" it's", env, lexer), "'x' \"x\" it's");
}

TEST(ShellLexer, SkipUnsetLeavesUnsetReferencesAsWritten) {
  ShellLexer lexer;
  lexer.set_skip_unset(true);
  const Env env = {{"v", "x"}};
  EXPECT_EQ(expand("$v $u ${u} ${u:-d} ${u#p} ${v:-d}", env, lexer), "x $u ${u} ${u:-d} ${u#p} x");
  // BuildKit drops the second slash of `//` here.
  EXPECT_EQ(expand("${u//a/b}", env, lexer), "${u/a/b}");
}

// ---- splitting into words ----

TEST(ShellLexer, WordsSplitOnUnquotedWhitespace) {
  EXPECT_EQ(split("  a \t b\nc  "), (Words{"a", "b", "c"}));
  EXPECT_EQ(split("a\\ b 'c d' \"e f\"g"), (Words{"a b", "c d", "e fg"}));
  EXPECT_EQ(split(""), Words{});
  EXPECT_EQ(split("a \"\" b"), (Words{"a", "b"}));
}

TEST(ShellLexer, UnquotedVariableValuesAreSplit) {
  const Env env = {{"space", "abc  def"}, {"leading", "  ab c"}, {"trailing", "ab c   "}};
  EXPECT_EQ(split("hello${space}bye", env), (Words{"helloabc", "defbye"}));
  EXPECT_EQ(split("hello\"${space}\"bye", env), (Words{"helloabc  defbye"}));
  EXPECT_EQ(split("hello${leading}", env), (Words{"hello", "ab", "c"}));
  EXPECT_EQ(split("hello${trailing}d", env), (Words{"helloab", "c", "d"}));
}

TEST(ShellLexer, ExpandWordKeepsWhitespace) {
  EXPECT_EQ(expand("a  b", {}), "a  b");
  EXPECT_EQ(expand("$v", {{"v", " x  y "}}), " x  y ");
}

TEST(ShellLexer, HeredocMarkerStaysWithItsWord) {
  EXPECT_EQ(split("cat <<  EOF x"), (Words{"cat", "<<  EOF", "x"}));
  EXPECT_EQ(split("a < b"), (Words{"a", "<", "b"}));
}

TEST(ShellLexer, SplitDropsTextBeforeANestedExpansionAsBuildKitDoes) {
  // BuildKit's nested ${v:-w} resets the shared word buffer: the split words lose "abc", while
  // the unsplit result keeps it.
  EXPECT_EQ(split("abc${x:-def}ghi jkl"), (Words{"defghi", "jkl"}));
  EXPECT_EQ(expand("abc${x:-def}ghi jkl"), "abcdefghi jkl");
}

// ---- tracking ----

TEST(ShellLexer, ExpansionReportsUsedAndUnsetVariables) {
  const ShellLexer lexer;
  const Env env = {{"FOO", "xxx"}, {"BAR", ""}};
  const Expansion e = lexer.expand("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc} $FOO", lookup_in(env), false);
  EXPECT_EQ(e.words, Words{"xxx  ccc xxx"});
  EXPECT_EQ(e.used, (std::set<std::string>{"BAR", "FOO"}));
  EXPECT_EQ(e.unset, (std::set<std::string>{"BAZ"}));
}

TEST(ShellLexer, TrackingIncludesNestedAndPatternVariables) {
  const ShellLexer lexer;
  const Env env = {{"FOO", "xxyy"}, {"P", "x"}};
  const Expansion e = lexer.expand("${A:-${B:-$P}} ${FOO#$P} ${FOO/$Q/r} '$SQ'", lookup_in(env), true);
  EXPECT_EQ(e.words, (Words{"x", "xyy", "rxxyy", "$SQ"}));
  EXPECT_EQ(e.used, (std::set<std::string>{"FOO", "P"}));
  EXPECT_EQ(e.unset, (std::set<std::string>{"A", "B", "Q"}));
}

TEST(ShellLexer, TextWithoutVariablesReportsNone) {
  const Expansion e = ShellLexer().expand("x \\$y '$z'", lookup_in({}), false);
  EXPECT_EQ(e.words, Words{"x $y $z"});
  EXPECT_TRUE(e.used.empty());
  EXPECT_TRUE(e.unset.empty());
}

// ---- error text ----

TEST(ShellLexer, ErrorQuotesTheWordAsGoDoes) {
  EXPECT_EQ(failure("a\tb${"), R"(failed to process "a\tb${": syntax error: missing '}')");
  EXPECT_EQ(failure("안녕${"), R"(failed to process "안녕${": syntax error: missing '}')");
}

}  // namespace
}  // namespace kbuild::dockerfile
