#include "engine/context/context_digest.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kbuild::context {
namespace {

Entry file(std::string path, std::string content, std::uint32_t mode = 0644) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::regular;
  e.mode = mode;
  e.size = static_cast<std::int64_t>(content.size());
  e.digest = store::Digest::of(content);
  e.mtime_ns = 1;
  return e;
}

Entry dir(std::string path) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::directory;
  e.mode = 0755;
  return e;
}

TEST(EntryDigest, LeavesOutMtimeAndStatDataButNotMetadataOrContent) {
  const Entry base = file("a", "hello");
  Entry touched = base;
  touched.mtime_ns = 999;
  touched.source = StatKey{1, 2, 3, 4, 5, 6};
  EXPECT_EQ(entry_digest(touched), entry_digest(base));
  // The name is the selection's business, not the entry's.
  Entry renamed = base;
  renamed.path = "b";
  EXPECT_EQ(entry_digest(renamed), entry_digest(base));

  Entry other = base;
  other.digest = store::Digest::of("world");
  EXPECT_NE(entry_digest(other), entry_digest(base));
  other = base;
  other.mode = 0755;
  EXPECT_NE(entry_digest(other), entry_digest(base));
  other = base;
  other.uid = 1000;
  EXPECT_NE(entry_digest(other), entry_digest(base));
  other = base;
  other.gid = 1000;
  EXPECT_NE(entry_digest(other), entry_digest(base));
}

TEST(EntryDigest, SymlinksCountByTargetNotMode) {
  Entry link;
  link.path = "l";
  link.type = EntryType::symlink;
  link.link_target = "a";
  link.mode = 0777;
  Entry other_mode = link;
  other_mode.mode = 0755;
  EXPECT_EQ(entry_digest(other_mode), entry_digest(link));
  Entry other_target = link;
  other_target.link_target = "b";
  EXPECT_NE(entry_digest(other_target), entry_digest(link));
}

TEST(SelectionDigest, DependsOnlyOnWhatTheSelectionTakes) {
  const Manifest m({dir("src"), file("src/a", "A"), file("src/b", "B"), file("README", "r")});
  const store::Digest src = selection_digest(m, {{"src"}, {}});
  const Manifest readme_changed({dir("src"), file("src/a", "A"), file("src/b", "B"), file("README", "changed")});
  EXPECT_EQ(selection_digest(readme_changed, {{"src"}, {}}), src);
  const Manifest renamed({dir("src"), file("src/a", "A"), file("src/c", "B"), file("README", "r")});
  EXPECT_NE(selection_digest(renamed, {{"src"}, {}}), src);
  EXPECT_NE(selection_digest(m, {{"src"}, {"src/b"}}), src);
  EXPECT_EQ(selection_digest(m, {{"src/a"}, {}}), selection_digest(m, {{"src/a"}, {"src/b"}}));
  EXPECT_EQ(selection_digest(m, {{"missing"}, {}}), store::Digest::of(""));
  EXPECT_NE(selection_digest(m, {{}, {}}), src);  // everything
}

}  // namespace
}  // namespace kbuild::context
