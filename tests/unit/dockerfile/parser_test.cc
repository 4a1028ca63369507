#include "engine/dockerfile/parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kbuild::dockerfile {
namespace {

std::vector<std::string> dumps(const ParsedDockerfile& parsed) {
  std::vector<std::string> out;
  for (const Node& node : parsed.nodes) out.push_back(dump_node(node));
  return out;
}

// The error parse_dockerfile throws for the text; fails the test when it parses.
Error parse_error(std::string_view text) {
  try {
    parse_dockerfile(text);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "parsed without error: " << text;
  return Error(ErrorKind::internal, "no error");
}

using Lines = std::vector<std::string>;

// --- parser directives -------------------------------------------------------------------------

TEST(Parser, DirectivesAtTheTopAreRecordedWithTheirLines) {
  ParsedDockerfile parsed = parse_dockerfile(
      "# syntax=docker/dockerfile:1\n"
      "# escape=`\n"
      "#check=skip=JSONArgsRecommended;error=true\n"
      "FROM alpine\n");
  ASSERT_EQ(parsed.directives.size(), 3u);
  EXPECT_EQ(parsed.directives[0].name, "syntax");
  EXPECT_EQ(parsed.directives[0].value, "docker/dockerfile:1");
  EXPECT_EQ(parsed.directives[0].line, 1);
  EXPECT_EQ(parsed.directives[1].name, "escape");
  EXPECT_EQ(parsed.directives[1].line, 2);
  EXPECT_EQ(parsed.directives[2].name, "check");
  EXPECT_EQ(parsed.directives[2].value, "skip=JSONArgsRecommended;error=true");
  EXPECT_EQ(parsed.escape_token, '`');
  EXPECT_EQ(parsed.directive("check"), "skip=JSONArgsRecommended;error=true");
  EXPECT_EQ(parsed.directive("SYNTAX"), "docker/dockerfile:1");
  EXPECT_EQ(parsed.directive("nothing"), std::nullopt);
  EXPECT_TRUE(parsed.nodes.at(0).comments_before.empty());
}

TEST(Parser, DirectiveNamesAreCaseInsensitiveAndSpacesAroundTheEqualsSignAreAllowed) {
  ParsedDockerfile parsed = parse_dockerfile("#  EScape =  `  \nFROM `\n  image\n");
  ASSERT_EQ(parsed.directives.size(), 1u);
  EXPECT_EQ(parsed.directives[0].name, "escape");
  EXPECT_EQ(parsed.directives[0].value, "`");
  EXPECT_EQ(parsed.escape_token, '`');
  EXPECT_EQ(dumps(parsed), Lines{"from \"image\""});
}

TEST(Parser, DirectiveAfterAnInstructionIsAPlainComment) {
  ParsedDockerfile parsed = parse_dockerfile("FROM alpine\n# escape=`\nRUN a \\\n b\n");
  EXPECT_TRUE(parsed.directives.empty());
  EXPECT_EQ(parsed.escape_token, '\\');
  EXPECT_EQ(dumps(parsed), (Lines{"from \"alpine\"", "run \"a  b\""}));
  EXPECT_EQ(parsed.nodes[1].comments_before, Lines{"escape=`"});
}

TEST(Parser, DirectiveAfterABlankLineOrAnotherCommentIsIgnored) {
  EXPECT_TRUE(parse_dockerfile("\n# escape=`\nFROM x\n").directives.empty());
  EXPECT_TRUE(parse_dockerfile("# hello\n# escape=`\nFROM x\n").directives.empty());
  EXPECT_TRUE(parse_dockerfile("# unknown=1\n# escape=`\nFROM x\n").directives.empty());
}

TEST(Parser, DirectiveMayBeIndentedAndFollowAByteOrderMark) {
  ParsedDockerfile parsed = parse_dockerfile("\xEF\xBB\xBF  # escape=`\nFROM x\n");
  ASSERT_EQ(parsed.directives.size(), 1u);
  EXPECT_EQ(parsed.escape_token, '`');
}

TEST(Parser, RepeatedDirectiveIsAnError) {
  Error e = parse_error("# escape=`\n# ESCAPE=\\\nFROM x\n");
  EXPECT_STREQ(e.what(), "only one escape parser directive can be used");
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_EQ(e.where(), (SourceRange{2, 2}));
  EXPECT_STREQ(parse_error("# syntax=a\n# syntax=b\nFROM x\n").what(),
               "only one syntax parser directive can be used");
}

TEST(Parser, EscapeDirectiveAcceptsOnlyBacktickOrBackslash) {
  Error e = parse_error("# escape=x\nFROM x\n");
  EXPECT_STREQ(e.what(), "invalid escape token 'x' does not match ` or \\");
  EXPECT_EQ(e.where(), (SourceRange{1, 1}));
  EXPECT_EQ(parse_dockerfile("# escape=\\\nFROM x\n").escape_token, '\\');
}

// --- comments and continuations ----------------------------------------------------------------

TEST(Parser, CommentsAboveAnInstructionAreKeptWithoutTheHash) {
  ParsedDockerfile parsed = parse_dockerfile(
      "# first\n"
      "#second  \n"
      "\n"
      "  # indented\n"
      "FROM x\n"
      "# reset by\n"
      "#\n"
      "# the empty comment\n"
      "RUN a\n"
      "USER u\n");
  // BuildKit drops the line's first byte, so an indented comment keeps its "#".
  EXPECT_EQ(parsed.nodes[0].comments_before, (Lines{"first", "second", "# indented"}));
  EXPECT_EQ(parsed.nodes[1].comments_before, Lines{"the empty comment"});
  EXPECT_TRUE(parsed.nodes[2].comments_before.empty());
}

TEST(Parser, BacktickEscapeContinuesLinesAndLeavesBackslashesAlone) {
  ParsedDockerfile parsed = parse_dockerfile(
      "# escape=`\n"
      "FROM mcr.microsoft.com/windows\n"
      "COPY C:\\src\\ `\n"
      "     C:\\dest\\\n"
      "RUN echo a``\n"
      "RUN echo b\n");
  EXPECT_EQ(dumps(parsed), (Lines{"from \"mcr.microsoft.com/windows\"", "copy \"C:\\\\src\\\\\" \"C:\\\\dest\\\\\"",
                                  "run \"echo a``\"", "run \"echo b\""}));
  EXPECT_EQ(parsed.nodes[1].lines, (SourceRange{3, 4}));
}

TEST(Parser, EscapeFollowedByBlanksStillContinuesTheLine) {
  ParsedDockerfile parsed = parse_dockerfile("RUN a \\  \t\n  b\n");
  EXPECT_EQ(dumps(parsed), Lines{"run \"a   b\""});
}

TEST(Parser, EscapedEscapeAtTheEndDoesNotContinueTheLine) {
  ParsedDockerfile parsed = parse_dockerfile("ENV C trailing\\\\\nENV D next\n");
  EXPECT_EQ(dumps(parsed), (Lines{"env \"C\" \"trailing\\\\\\\\\" \"\"", "env \"D\" \"next\" \"\""}));
}

TEST(Parser, CommentsInsideAContinuationAreDropped) {
  ParsedDockerfile parsed = parse_dockerfile(
      "RUN one \\\n"
      "# a comment\n"
      "    # an indented comment\n"
      "  two\n");
  EXPECT_EQ(dumps(parsed), Lines{"run \"one   two\""});
  EXPECT_EQ(parsed.nodes[0].lines, (SourceRange{1, 4}));
  EXPECT_TRUE(parsed.warnings.empty());
}

TEST(Parser, EmptyContinuationLinesAreSkippedWithAWarning) {
  ParsedDockerfile parsed = parse_dockerfile(
      "FROM alpine:3.6\n"
      "\n"
      "RUN valid \\\n"
      "    continuation\n"
      "\n"
      "RUN something \\\n"
      "\n"
      "    following \\\n"
      "\n"
      "    more\n"
      "\n"
      "RUN another \\\n"
      "\n"
      "    thing\n");
  EXPECT_EQ(dumps(parsed)[2], "run \"something     following     more\"");
  ASSERT_EQ(parsed.warnings.size(), 2u);
  EXPECT_EQ(parsed.warnings[0].message, "Empty continuation line found in: RUN something     following     more");
  EXPECT_EQ(parsed.warnings[0].lines, (SourceRange{10, 10}));
  EXPECT_EQ(parsed.warnings[1].message, "Empty continuation line found in: RUN another     thing");
}

TEST(Parser, ContinuationAtTheEndOfTheFileEndsTheInstruction) {
  ParsedDockerfile parsed = parse_dockerfile("FROM a\nRUN something \\");
  EXPECT_EQ(dumps(parsed), (Lines{"from \"a\"", "run \"something\""}));
}

TEST(Parser, CarriageReturnsBeforeNewlinesAreIgnored) {
  ParsedDockerfile parsed = parse_dockerfile("FROM a\r\nRUN b \\\r\n c\r\n");
  EXPECT_EQ(dumps(parsed), (Lines{"from \"a\"", "run \"b  c\""}));
}

// --- heredocs --------------------------------------------------------------------------------

TEST(Parser, HeredocBodyIsAttachedToTheRunAndNotDumped) {
  ParsedDockerfile parsed = parse_dockerfile(
      "FROM alpine\n"
      "RUN <<EOF\n"
      "echo hello\n"
      "# not a comment\n"
      "EOF\n"
      "USER me\n");
  ASSERT_EQ(parsed.nodes.size(), 3u);
  const Node& run = parsed.nodes[1];
  EXPECT_EQ(dump_node(run), "run \"<<EOF\"");
  ASSERT_EQ(run.heredocs.size(), 1u);
  EXPECT_EQ(run.heredocs[0], (Heredoc{"EOF", "echo hello\n# not a comment\n", true, false}));
  EXPECT_EQ(run.lines, (SourceRange{2, 5}));
  EXPECT_EQ(parsed.nodes[2].lines, (SourceRange{6, 6}));
}

TEST(Parser, HeredocWithDashStripsLeadingTabsFromBodyAndTerminator) {
  ParsedDockerfile parsed = parse_dockerfile("RUN <<-EOT\n\tbaz\n\t\tquux\n  kept\n\tEOT\n");
  ASSERT_EQ(parsed.nodes[0].heredocs.size(), 1u);
  EXPECT_EQ(parsed.nodes[0].heredocs[0], (Heredoc{"EOT", "baz\nquux\n  kept\n", true, true}));
}

TEST(Parser, HeredocWithoutDashKeepsTabsAndNeedsAnExactTerminator) {
  ParsedDockerfile parsed = parse_dockerfile("RUN <<EOT\n\tfoo\n\tEOT\nEOT\n");
  EXPECT_EQ(parsed.nodes[0].heredocs.at(0).content, "\tfoo\n\tEOT\n");
}

TEST(Parser, HeredocWithQuotedDelimiterDisablesExpansion) {
  ParsedDockerfile parsed = parse_dockerfile(
      "RUN <<'NOEXPAND'\n$NAME\nNOEXPAND\n"
      "RUN <<\"DQ\"\nx\nDQ\n"
      "RUN <<eo'f'\nx\neof\n"
      "RUN <<EXPAND\n$NAME\nEXPAND\n");
  ASSERT_EQ(parsed.nodes.size(), 4u);
  EXPECT_EQ(parsed.nodes[0].heredocs.at(0), (Heredoc{"NOEXPAND", "$NAME\n", false, false}));
  EXPECT_EQ(parsed.nodes[1].heredocs.at(0).name, "DQ");
  EXPECT_FALSE(parsed.nodes[1].heredocs.at(0).expand);
  EXPECT_EQ(parsed.nodes[2].heredocs.at(0).name, "eof");
  EXPECT_FALSE(parsed.nodes[2].heredocs.at(0).expand);
  EXPECT_TRUE(parsed.nodes[3].heredocs.at(0).expand);
}

TEST(Parser, SeveralHeredocsOnOneCopyLineAreReadInOrder) {
  ParsedDockerfile parsed = parse_dockerfile(
      "COPY <<FILE1 <<FILE2 /dest\n"
      "content 1\n"
      "FILE1\n"
      "content 2\n"
      "FILE2\n"
      "COPY <<X <<Y /dest\n"
      "Y\n"
      "X\n"
      "X\n"
      "Y\n");
  ASSERT_EQ(parsed.nodes.size(), 2u);
  EXPECT_EQ(dump_node(parsed.nodes[0]), "copy \"<<FILE1\" \"<<FILE2\" \"/dest\"");
  EXPECT_EQ(parsed.nodes[0].heredocs,
            (std::vector<Heredoc>{{"FILE1", "content 1\n", true, false}, {"FILE2", "content 2\n", true, false}}));
  EXPECT_EQ(parsed.nodes[1].heredocs,
            (std::vector<Heredoc>{{"X", "Y\n", true, false}, {"Y", "X\n", true, false}}));
  EXPECT_EQ(parsed.nodes[1].lines, (SourceRange{6, 10}));
}

TEST(Parser, HeredocNamesFollowBuildKitsShellWordRules) {
  ParsedDockerfile parsed = parse_dockerfile(
      "RUN 3<<EMPTY2\nEMPTY2\n"
      "RUN <<eo\\'f\necho foo\neo'f\n"
      "RUN <<'e'o\\'f\necho foo\neo'f\n"
      "RUN <<'one two'\necho bar\none two\n"
      "RUN <<$EOF\n$EOF\n"
      "RUN <<  EOF  > foo\nEOF\n"
      "RUN --mount=type=cache,target=/foo <<MOUNT python3\necho hello\nMOUNT\n"
      "COPY <<file.txt /dest\nhello world\nfile.txt\n");
  std::vector<std::pair<std::string, bool>> names;
  for (const Node& node : parsed.nodes) {
    ASSERT_EQ(node.heredocs.size(), 1u) << node.original;
    names.emplace_back(node.heredocs[0].name, node.heredocs[0].expand);
  }
  EXPECT_EQ(names, (std::vector<std::pair<std::string, bool>>{{"EMPTY2", true},
                                                              {"eo'f", true},
                                                              {"eo'f", false},
                                                              {"one two", false},
                                                              {"$EOF", true},
                                                              {"EOF", true},
                                                              {"MOUNT", true},
                                                              {"file.txt", true}}));
}

TEST(Parser, HeredocsOnlyOpenInShellFormRunCopyAndAdd) {
  ParsedDockerfile parsed = parse_dockerfile(
      "FROM alpine\n"
      "USER <<INVALID\n"
      "INVALID\n"
      "RUN [\"<<EOF\"]\n"
      "RUN \"<<NOHEREDOC\"\n"
      "RUN echo a<<b\n"
      "ADD <<EOF /x\n"
      "y\n"
      "EOF\n");
  ASSERT_EQ(parsed.nodes.size(), 7u);
  EXPECT_EQ(dump_node(parsed.nodes[2]), "invalid \"\"");  // the body line is an instruction
  for (size_t i = 0; i < 6; ++i) EXPECT_TRUE(parsed.nodes[i].heredocs.empty()) << i;
  EXPECT_EQ(parsed.nodes[6].heredocs.size(), 1u);
}

TEST(Parser, HeredocInOnbuildIsReadForTheTriggerInstruction) {
  ParsedDockerfile parsed = parse_dockerfile("ONBUILD RUN <<EOF\necho hi\nEOF\nFROM x\n");
  ASSERT_EQ(parsed.nodes.size(), 2u);
  const Node& onbuild = parsed.nodes[0];
  EXPECT_EQ(dump_node(onbuild), "onbuild (run \"<<EOF\")");
  ASSERT_EQ(onbuild.heredocs.size(), 1u);
  EXPECT_EQ(onbuild.heredocs[0].content, "echo hi\n");
  EXPECT_EQ(onbuild.inner.at(0).heredocs, onbuild.heredocs);
}

TEST(Parser, UnterminatedHeredocIsAnErrorSpanningToTheEndOfTheFile) {
  Error e = parse_error("FROM a\nRUN <<EOF\necho hi\n\nRUN b\n");
  EXPECT_STREQ(e.what(), "unterminated heredoc");
  EXPECT_EQ(e.where(), (SourceRange{2, 5}));
}

TEST(Parser, HeredocWithUnbalancedQuoteIsNotAHeredoc) {
  ParsedDockerfile parsed = parse_dockerfile("RUN <<'EOF\nFROM x\n");
  EXPECT_TRUE(parsed.nodes[0].heredocs.empty());
  EXPECT_EQ(parsed.nodes.size(), 2u);
}

TEST(Parser, HeredocWordsAreRecognisedLikeBuildKitsParseHeredoc) {
  for (const char* word : {"<<EOF", "<<'EOF'", "<<\"EOF\"", "<<-EOF", "<<-'EOF'", "<<-\"EOF\"", "<<EO\"F\"", "<< EOF",
                           "<<- EOF"}) {
    auto heredoc = parse_heredoc_word(word);
    ASSERT_TRUE(heredoc) << word;
    EXPECT_EQ(heredoc->name, "EOF") << word;
  }
  for (const char* word : {"", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh", "<<'EOF", "<<EOF\""}) {
    EXPECT_FALSE(parse_heredoc_word(word)) << word;
  }
  EXPECT_TRUE(parse_heredoc_word("<<-EOF")->chomp);
  EXPECT_FALSE(parse_heredoc_word("<<'EOF'")->expand);
}

TEST(Parser, ChompRemovesLeadingTabsOfEveryLine) {
  EXPECT_EQ(chomp_heredoc_content("\thello\n\t\tworld\n x\t\n"), "hello\nworld\n x\t\n");
}

// --- arguments -------------------------------------------------------------------------------

TEST(Parser, JsonArrayArgumentsAreDecodedAndMarked) {
  ParsedDockerfile parsed = parse_dockerfile(
      "CMD [\"echo\", \"a \\\"b\\\"\", \"\\u00e9\\n\"]\n"
      "ENTRYPOINT []\n"
      "COPY [\"a b\", \"/c\"]\n");
  const Node& cmd = parsed.nodes[0];
  EXPECT_TRUE(cmd.json_form);
  EXPECT_EQ(cmd.args, (Lines{"echo", "a \"b\"", "\xC3\xA9\n"}));
  EXPECT_EQ(dump_node(cmd), "cmd \"echo\" \"a \\\"b\\\"\" \"\xC3\xA9\\n\"");
  EXPECT_TRUE(parsed.nodes[1].json_form);
  EXPECT_TRUE(parsed.nodes[1].args.empty());
  EXPECT_TRUE(parsed.nodes[2].json_form);
  EXPECT_EQ(parsed.nodes[2].args, (Lines{"a b", "/c"}));
}

TEST(Parser, ShellFormKeepsTheWholeTextAsOneArgument) {
  ParsedDockerfile parsed = parse_dockerfile("RUN   echo  \"a\"   b  \nCOPY a  b\tc\n");
  EXPECT_FALSE(parsed.nodes[0].json_form);
  EXPECT_EQ(parsed.nodes[0].args, Lines{"echo  \"a\"   b"});
  EXPECT_EQ(parsed.nodes[1].args, (Lines{"a", "b", "c"}));
}

TEST(Parser, InvalidJsonFallsBackToShellForm) {
  ParsedDockerfile parsed = parse_dockerfile(
      "CMD ['echo', 'hi']\n"
      "CMD [\"echo\", \"hi\"\n"
      "VOLUME [\"/a\", /b]\n"
      "CMD [\"a\", 1e999]\n");
  EXPECT_EQ(dumps(parsed), (Lines{"cmd \"['echo', 'hi']\"", "cmd \"[\\\"echo\\\", \\\"hi\\\"\"",
                                  "volume \"[\\\"/a\\\",\" \"/b]\"", "cmd \"[\\\"a\\\", 1e999]\""}));
  for (const Node& node : parsed.nodes) EXPECT_FALSE(node.json_form);
}

TEST(Parser, JsonArrayWithOtherThanStringsIsAnError) {
  Error e = parse_error("FROM x\nCMD [\"echo\", \\\n  1]\n");
  EXPECT_STREQ(e.what(), "when using JSON array syntax, arrays must be comprised of strings only");
  EXPECT_EQ(e.where(), (SourceRange{2, 3}));
  EXPECT_STREQ(parse_error("CMD [ \"echo\", [ \"nested json\" ] ]\n").what(),
               "when using JSON array syntax, arrays must be comprised of strings only");
}

TEST(Parser, FlagsAreExtractedUpToTheFirstOtherWordOrADoubleDash) {
  ParsedDockerfile parsed = parse_dockerfile(
      "COPY --from=build --chown=\"me:me\" a b\n"
      "COPY --doit=true -- --not-a-flag /tmp/\n"
      "RUN --mount=type=cache,target=/root/.cache echo --x\n"
      "CMD --doit -- [ ]\n"
      "FROM --platform=$BUILDPLATFORM alpine AS build\n");
  EXPECT_EQ(dumps(parsed), (Lines{"copy [\"--from=build\" \"--chown=me:me\"] \"a\" \"b\"",
                                  "copy [\"--doit=true\"] \"--not-a-flag\" \"/tmp/\"",
                                  "run [\"--mount=type=cache,target=/root/.cache\"] \"echo --x\"",
                                  "cmd [\"--doit\"]",
                                  "from [\"--platform=$BUILDPLATFORM\"] \"alpine\" \"AS\" \"build\""}));
  EXPECT_TRUE(parsed.nodes[3].json_form);
}

// BuildKit's extractBuilderFlags reads bytes as runes: each byte of a multi-byte character
// becomes the Latin-1 character of that value.
TEST(Parser, FlagBytesAreTakenOneByOneAsBuildKitDoes) {
  ParsedDockerfile parsed = parse_dockerfile("COPY --chown=\xC3\xA9 a b\n");
  EXPECT_EQ(parsed.nodes[0].flags, Lines{"--chown=\xC3\x83\xC2\xA9"});
}

TEST(Parser, EnvLegacyFormTakesTheRestOfTheLineAsTheValue) {
  ParsedDockerfile parsed = parse_dockerfile("ENV PATH  /usr/bin:$PATH  more\nLABEL maintainer docker <d@x.io>\n");
  EXPECT_EQ(parsed.nodes[0].args, (Lines{"PATH", "/usr/bin:$PATH  more", ""}));
  EXPECT_EQ(dump_node(parsed.nodes[1]), "label \"maintainer\" \"docker <d@x.io>\" \"\"");
}

TEST(Parser, EnvPairsKeepQuotesAndEscapesForTheInstructionLayer) {
  ParsedDockerfile parsed = parse_dockerfile("ENV a=1 b=\"x y\" c=x\\ y d='q\\' e=\n");
  EXPECT_EQ(parsed.nodes[0].args,
            (Lines{"a", "1", "=", "b", "\"x y\"", "=", "c", "x\\ y", "=", "d", "'q\\'", "=", "e", "", "="}));
}

TEST(Parser, EnvWithOneWordIsAnError) {
  Error e = parse_error("FROM busybox\n\nENV PATH\n");
  EXPECT_STREQ(e.what(), "ENV must have two arguments");
  EXPECT_EQ(e.where(), (SourceRange{3, 3}));
  EXPECT_STREQ(parse_error("LABEL x\n").what(), "LABEL must have two arguments");
}

TEST(Parser, EnvPairWithoutEqualsSignIsAnError) {
  EXPECT_STREQ(parse_error("ENV a=b c\n").what(),
               "Syntax error - can't find = in \"c\". Must be of the form: name=value");
}

TEST(Parser, EmptyEnvParsesAndIsLeftToTheInstructionLayer) {
  EXPECT_EQ(dumps(parse_dockerfile("ENV\n")), Lines{"env"});
}

TEST(Parser, ArgKeepsEachWordWhole) {
  ParsedDockerfile parsed = parse_dockerfile("ARG a b=1 c=\"x y\" d=\n");
  EXPECT_EQ(parsed.nodes[0].args, (Lines{"a", "b=1", "c=\"x y\"", "d="}));
}

TEST(Parser, HealthcheckSplitsTheTypeFromItsCommand) {
  ParsedDockerfile parsed = parse_dockerfile(
      "HEALTHCHECK NONE\n"
      "HEALTHCHECK --interval=5s CMD   curl -f http://x/ || exit 1\n"
      "HEALTHCHECK CMD [\"curl\", \"-f\"]\n"
      "HEALTHCHECK\n");
  EXPECT_EQ(parsed.nodes[0].args, Lines{"NONE"});
  EXPECT_EQ(parsed.nodes[1].args, (Lines{"CMD", "curl -f http://x/ || exit 1"}));
  EXPECT_EQ(parsed.nodes[1].flags, Lines{"--interval=5s"});
  EXPECT_EQ(parsed.nodes[2].args, (Lines{"CMD", "curl", "-f"}));
  EXPECT_TRUE(parsed.nodes[2].json_form);
  EXPECT_TRUE(parsed.nodes[3].args.empty());
}

TEST(Parser, OnbuildCarriesItsInstructionAsAnInnerNode) {
  ParsedDockerfile parsed = parse_dockerfile(
      "ONBUILD RUN [\"echo\", \"test\"]\n"
      "onbuild copy --from=x . /\n"
      "ONBUILD\n");
  const Node& first = parsed.nodes[0];
  EXPECT_EQ(first.keyword, "onbuild");
  EXPECT_TRUE(first.args.empty());
  ASSERT_EQ(first.inner.size(), 1u);
  EXPECT_EQ(first.inner[0].keyword, "run");
  EXPECT_TRUE(first.inner[0].json_form);
  EXPECT_EQ(first.inner[0].original, "RUN [\"echo\", \"test\"]");
  EXPECT_EQ(dumps(parsed), (Lines{"onbuild (run \"echo\" \"test\")", "onbuild (copy [\"--from=x\"] \".\" \"/\")",
                                  "onbuild"}));
}

TEST(Parser, NestedOnbuildParsesUpToALimitAndIsRejectedBeyondIt) {
  std::string chain;
  for (int i = 0; i < 64; ++i) chain += "ONBUILD ";
  ParsedDockerfile parsed = parse_dockerfile(chain + "RUN x\n");
  const Node* node = &parsed.nodes.at(0);
  int depth = 0;
  while (!node->inner.empty()) {
    node = &node->inner[0];
    ++depth;
  }
  EXPECT_EQ(depth, 64);
  EXPECT_EQ(node->original, "RUN x");
  EXPECT_TRUE(dump_node(parsed.nodes[0]).ends_with("(run \"x\")" + std::string(63, ')')));

  // BuildKit nests without bound, then its instruction layer rejects any chain with this message.
  Error e = parse_error("FROM a\n" + chain + "ONBUILD RUN x\n");
  EXPECT_STREQ(e.what(), "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  EXPECT_EQ(e.where(), (SourceRange{2, 2}));
}

TEST(Parser, DeeplyNestedSubstitutionInAHeredocLineDoesNotExhaustTheStack) {
  std::string word;
  for (int i = 0; i < 5000; ++i) word += "${a:-";
  word += std::string(5000, '}');
  ParsedDockerfile parsed = parse_dockerfile("RUN <<EOF " + word + "\nbody\nEOF\n");
  // Past 1000 levels the line no longer splits into words, so no heredoc opens (BuildKit, whose
  // Go stacks grow, would still find it); the rest parses as instructions.
  EXPECT_EQ(parsed.nodes.at(0).heredocs.size(), 0u);
  EXPECT_EQ(parsed.nodes.size(), 3u);
}

TEST(Parser, UnknownInstructionParsesWithOneEmptyArgument) {
  ParsedDockerfile parsed = parse_dockerfile("FROM x\nFROB --a=b nicate it\n");
  EXPECT_EQ(parsed.nodes[1].keyword, "frob");
  EXPECT_EQ(dump_node(parsed.nodes[1]), "frob [\"--a=b\"] \"\"");
}

TEST(Parser, KeywordIsLowerCasedAndOriginalKeepsTheJoinedLine) {
  ParsedDockerfile parsed = parse_dockerfile("   From  alpine \\\n  AS base\n");
  EXPECT_EQ(parsed.nodes[0].keyword, "from");
  EXPECT_EQ(parsed.nodes[0].original, "From  alpine   AS base");
  EXPECT_EQ(parsed.nodes[0].args, (Lines{"alpine", "AS", "base"}));
}

// --- lines and errors ------------------------------------------------------------------------

// BuildKit's testfile-line case (TestParseIncludesLineNumbers).
TEST(Parser, NodesCarryTheLinesTheySpan) {
  ParsedDockerfile parsed = parse_dockerfile(
      "# ESCAPE=\\\n\n\n\n"
      "FROM brimstone/ubuntu:14.04\n\n\n"
      "# TORUN -v /var/run/docker.sock:/var/run/docker.sock\n\n\n"
      "ENV GOPATH \\\n/go\n\n\n\n"
      "# Install the packages we need, clean up after them and us\n"
      "RUN apt-get update \\\n"
      "\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.clean \\\n\n\n"
      "    && apt-get --no-install-recommends install -y git golang ca-certificates \\\n"
      "    && apt-get clean \\\n"
      "    && rm -rf /var/lib/apt/lists \\\n\n"
      "\t&& go get -v github.com/brimstone/consuldock \\\n"
      "    && mv $GOPATH/bin/consuldock /usr/local/bin/consuldock \\\n\n"
      "\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.dirty \\\n"
      "\t&& apt-get remove --purge -y $(diff /tmp/dpkg.clean /tmp/dpkg.dirty | awk '/^>/ {print $2}') \\\n"
      "\t&& rm /tmp/dpkg.* \\\n"
      "\t&& rm -rf $GOPATH\n\n\n\n\n");
  ASSERT_EQ(parsed.nodes.size(), 3u);
  EXPECT_EQ(parsed.nodes[0].lines, (SourceRange{5, 5}));
  EXPECT_EQ(parsed.nodes[1].lines, (SourceRange{11, 12}));
  EXPECT_EQ(parsed.nodes[2].lines, (SourceRange{17, 31}));
  EXPECT_EQ(parsed.nodes[1].comments_before, Lines{"TORUN -v /var/run/docker.sock:/var/run/docker.sock"});
}

TEST(Parser, FileWithoutInstructionsIsAnError) {
  Error empty = parse_error("");
  EXPECT_STREQ(empty.what(), "file with no instructions");
  EXPECT_EQ(empty.kind(), ErrorKind::user);
  EXPECT_EQ(empty.where(), (SourceRange{1, 1}));
  Error comments = parse_error("# Hello\n# These are just comments\n\n");
  EXPECT_STREQ(comments.what(), "file with no instructions");
  EXPECT_EQ(comments.where(), (SourceRange{3, 3}));
  EXPECT_STREQ(parse_error("# syntax=x\n   \n\t\n").what(), "file with no instructions");
}

TEST(Parser, ErrorInAContinuedInstructionCoversAllItsLines) {
  Error e = parse_error("FROM x\n\nENV \\\n  # note\n  A\n");
  EXPECT_STREQ(e.what(), "ENV must have two arguments");
  EXPECT_EQ(e.where(), (SourceRange{3, 5}));
}

TEST(Parser, OverlongLineIsAnError) {
  std::string text = "FROM x\nLABEL a=" + std::string(70000, 'a') + "\n";
  Error e = parse_error(text);
  EXPECT_STREQ(e.what(), "dockerfile line greater than max allowed size of 65535");
  EXPECT_EQ(e.where(), (SourceRange{2, 2}));
}

// --- dump ------------------------------------------------------------------------------------

TEST(Parser, DumpQuotesArgumentsLikeGo) {
  Node node;
  node.keyword = "run";
  node.flags = {"--a=\"b\""};
  node.args = {std::string("tab\t nul\0 bell\a", 15), "\xE2\x99\xA5 \xC2\xA0 \xFF", "\\"};
  EXPECT_EQ(dump_node(node),
            "run [\"--a=\\\"b\\\"\"] \"tab\\t nul\\x00 bell\\a\" \"\xE2\x99\xA5 \\u00a0 \\xff\" \"\\\\\"");
}

// strings.ToLower: Unicode letters lower too, so KELVIN SIGN makes "HEALTHCHEC\u212A" a HEALTHCHECK.
TEST(Parser, KeywordIsLowerCasedAsGoDoes) {
  ParsedDockerfile parsed = parse_dockerfile("HEALTHCHEC\xE2\x84\xAA NONE\n\xC3\x89" "CHO x\n");
  EXPECT_EQ(parsed.nodes[0].keyword, "healthcheck");
  EXPECT_EQ(parsed.nodes[0].args, Lines{"NONE"});
  EXPECT_EQ(dump_node(parsed.nodes[1]), "\xC3\xA9" "cho \"\"");
}

// A lone continuation at the end of the file makes an instruction with no name; its dump is
// trimmed like BuildKit's.
TEST(Parser, LoneContinuationAtTheEndMakesAnEmptyInstruction) {
  ParsedDockerfile parsed = parse_dockerfile("FROM a\n\\\n");
  ASSERT_EQ(parsed.nodes.size(), 2u);
  EXPECT_EQ(parsed.nodes[1].keyword, "");
  EXPECT_EQ(dump_node(parsed.nodes[1]), "\"\"");
}

}  // namespace
}  // namespace kbuild::dockerfile
