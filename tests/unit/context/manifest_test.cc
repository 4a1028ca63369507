#include "engine/context/manifest.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/context/hash_cache.h"

namespace kbuild::context {
namespace {

Entry file(std::string path, std::string content = "x") {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::regular;
  e.mode = 0644;
  e.size = static_cast<std::int64_t>(content.size());
  e.digest = store::Digest::of(content);
  return e;
}

Entry dir(std::string path) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::directory;
  e.mode = 0755;
  return e;
}

TEST(ContextPath, OrdersADirectorysEntriesRightAfterIt) {
  std::vector<std::string> paths = {"a.txt", "a/z", "a", "a/b/c", "a-b", "a/b"};
  std::sort(paths.begin(), paths.end(), path_less);
  EXPECT_EQ(paths, (std::vector<std::string>{"a", "a/b", "a/b/c", "a/z", "a-b", "a.txt"}));
}

TEST(ContextPath, AcceptsOnlyCleanRelativePaths) {
  for (const char* ok : {"a", "a/b", "a.b/c..d", ".hidden", "..."}) EXPECT_TRUE(is_valid_context_path(ok)) << ok;
  for (std::string bad : {"", "/a", "a/", "a//b", "./a", "a/./b", "..", "a/../b", "a/.."}) {
    EXPECT_FALSE(is_valid_context_path(bad)) << bad;
  }
  EXPECT_FALSE(is_valid_context_path(std::string("a\0b", 3)));
  EXPECT_FALSE(is_valid_context_path(std::string(4097, 'a')));
}

TEST(ContextManifest, FindsEntriesAndTheSubtreeBelowADirectory) {
  const Manifest m({file("b"), dir("a"), file("a/x"), dir("a/d"), file("a/d/y"), file("a.txt")});
  ASSERT_NE(m.find("a/d/y"), nullptr);
  EXPECT_EQ(m.find("a/d/z"), nullptr);
  std::vector<std::string> below;
  for (const Entry& e : m.below("a")) below.push_back(e.path);
  EXPECT_EQ(below, (std::vector<std::string>{"a/d", "a/d/y", "a/x"}));
  EXPECT_EQ(m.below("").size(), 6u);
  EXPECT_TRUE(m.below("b").empty());
}

TEST(ContextManifest, RefusesRepeatedOrInvalidPaths) {
  EXPECT_THROW(Manifest({file("a"), file("a")}), Error);
  EXPECT_THROW(Manifest({file("../a")}), Error);
}

TEST(ContextManifest, EncodesAndDecodesEveryField) {
  Entry link;
  link.path = "l";
  link.type = EntryType::symlink;
  link.mode = 0777;
  link.link_target = "/etc/passwd";
  Entry f = file("d/f", "content");
  f.uid = 1000;
  f.gid = 100;
  f.mtime_ns = 1700000000123456789;
  f.source = StatKey{1000, 2049, 123456, 7, 1700000000123456789, 1700000000223456789};
  Entry hl = f;
  hl.path = "d/g";
  hl.hardlink_to = "d/f";
  const Manifest m({dir("d"), f, hl, link});
  const std::string bytes = m.encode();
  EXPECT_EQ(Manifest::decode(bytes), m);
  EXPECT_THROW(Manifest::decode(bytes.substr(0, bytes.size() - 1)), Error);
  EXPECT_THROW(Manifest::decode("garbage"), Error);
  std::string bad_path = bytes;
  const auto at = bad_path.find("d/f");
  bad_path[at] = '/';
  EXPECT_THROW(Manifest::decode(bad_path), Error);
}

TEST(MemoryHashCache, RemembersDigestsByEveryPartOfTheKey) {
  MemoryHashCache cache;
  const StatKey key{1000, 1, 2, 3, 4, 5};
  cache.put({{key, store::Digest::of("a")}});
  EXPECT_EQ(cache.get(key), store::Digest::of("a"));
  for (StatKey other : {StatKey{0, 1, 2, 3, 4, 5}, StatKey{1000, 9, 2, 3, 4, 5}, StatKey{1000, 1, 9, 3, 4, 5},
                        StatKey{1000, 1, 2, 9, 4, 5}, StatKey{1000, 1, 2, 3, 9, 5}, StatKey{1000, 1, 2, 3, 4, 9}}) {
    EXPECT_FALSE(cache.get(other).has_value());
  }
}

}  // namespace
}  // namespace kbuild::context
