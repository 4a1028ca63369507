#include "engine/context/path_filter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/go_match.h"
#include "engine/context/follow_links.h"

namespace kbuild::context {
namespace {

using Decision = PathFilter::Decision;

patterns::IgnoreMatcher rules(std::string_view text) {
  return patterns::IgnoreMatcher(patterns::parse_dockerignore(text));
}

Entry entry(std::string path, EntryType type = EntryType::regular) {
  Entry e;
  e.path = std::move(path);
  e.type = type;
  return e;
}

std::vector<std::string> selected(const std::vector<Entry>& entries, const PathFilter& filter, bool with_parents) {
  const Manifest m(entries);
  const std::vector<bool> kept = select_entries(m.entries(), filter, with_parents);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < kept.size(); ++i) {
    if (kept[i]) out.push_back(m.entries()[i].path);
  }
  return out;
}

TEST(GoMatch, MatchesOneNameAsFilepathMatchDoes) {
  EXPECT_TRUE(go_match("*.go", "main.go"));
  EXPECT_FALSE(go_match("*.go", "main.c"));
  EXPECT_TRUE(go_match("a?c", "abc"));
  EXPECT_TRUE(go_match("[a-c]x", "bx"));
  EXPECT_FALSE(go_match("[^a-c]x", "bx"));
  EXPECT_TRUE(go_match("\\*", "*"));
  EXPECT_FALSE(go_match("[", "["));  // malformed: matches nothing
  EXPECT_TRUE(go_match("a*b*c", "axxbyyc"));
}

TEST(PathFilter, SkipsAnIgnoredDirectoryWholeUnlessAnExclusionCouldReachInside) {
  const auto ignore = rules("build\n!build/keep\nnode_modules\n");
  const PathFilter filter({}, &ignore);
  EXPECT_EQ(filter.decide("build", true), Decision::skip);
  EXPECT_EQ(filter.decide("build/keep", false), Decision::keep);
  EXPECT_EQ(filter.decide("build/other", false), Decision::skip);
  EXPECT_EQ(filter.decide("node_modules", true), Decision::skip_subtree);
  EXPECT_EQ(filter.decide("src", true), Decision::keep);
}

TEST(PathFilter, PlainIncludePatternsSkipDirectoriesNoPatternReaches) {
  const PathFilter filter({"src/app", "docs/**"}, nullptr);
  EXPECT_EQ(filter.decide("vendor", true), Decision::skip_subtree);
  EXPECT_EQ(filter.decide("src", true), Decision::skip);
  EXPECT_EQ(filter.decide("src/app", true), Decision::keep);
  EXPECT_EQ(filter.decide("src/app/deep/x", false), Decision::keep);  // a matched directory takes its subtree
  EXPECT_EQ(filter.decide("src/other", true), Decision::skip_subtree);
  EXPECT_EQ(filter.decide("docs/a/b.md", false), Decision::keep);
}

TEST(PathFilter, GlobIncludePatternsWalkEverything) {
  const PathFilter filter({"src/app", "docs/*.md"}, nullptr);
  EXPECT_EQ(filter.decide("vendor", true), Decision::skip);
  EXPECT_EQ(filter.decide("docs", true), Decision::skip);
  EXPECT_EQ(filter.decide("docs/a.md", false), Decision::keep);
  EXPECT_EQ(filter.decide("docs/a.txt", false), Decision::skip);
}

TEST(PathFilter, IncludesComeBeforeIgnoreRules) {
  const auto ignore = rules("*.log\n");
  const PathFilter filter({"logs"}, &ignore);
  EXPECT_EQ(filter.decide("logs/a.txt", false), Decision::keep);
  EXPECT_EQ(filter.decide("logs/a.log", false), Decision::keep);  // the rule is "*.log", top level only
  EXPECT_EQ(filter.decide("a.log", false), Decision::skip);
}

TEST(SelectEntries, KeepsTheDirectoriesAboveAReincludedFile) {
  const auto ignore = rules("build\n!build/sub/keep\n");
  const PathFilter filter({}, &ignore);
  const std::vector<Entry> entries = {entry("build", EntryType::directory), entry("build/sub", EntryType::directory),
                                      entry("build/sub/keep"), entry("build/sub/drop"), entry("build/x"),
                                      entry("main.c")};
  EXPECT_EQ(selected(entries, filter, true), (std::vector<std::string>{"build", "build/sub", "build/sub/keep", "main.c"}));
  EXPECT_EQ(selected(entries, filter, false), (std::vector<std::string>{"build/sub/keep", "main.c"}));
}

TEST(SelectEntries, LeavesOutWhatIsBelowASkippedSubtree) {
  const auto ignore = rules("a\n");
  const PathFilter filter({}, &ignore);
  const std::vector<Entry> entries = {entry("a", EntryType::directory), entry("a/b"), entry("a.txt")};
  EXPECT_EQ(selected(entries, filter, true), (std::vector<std::string>{"a.txt"}));
}

}  // namespace
}  // namespace kbuild::context
