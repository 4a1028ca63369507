#include "engine/fileops/root_path.h"

#include <gmock/gmock.h>
#include <dirent.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/unit/fileops/test_tree.h"

namespace kbuild::fileops {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Tree;

TEST(RootPath, ResolvesSymlinksInsideTheRoot) {
  Tree t;
  t.mkdir("out/sub");
  t.symlink("/out/sub", "abs");
  t.symlink("out/sub", "rel");
  t.symlink("../../../../out", "climb");
  const RootedPath abs = resolve_in_root(t.fd(), "/abs/file");
  EXPECT_THAT(abs.parts, ElementsAre("out", "sub", "file"));
  EXPECT_EQ(abs.existing, 2u);
  EXPECT_FALSE(abs.exists());
  EXPECT_THAT(resolve_in_root(t.fd(), "rel").parts, ElementsAre("out", "sub"));
  EXPECT_THAT(resolve_in_root(t.fd(), "climb/sub").parts, ElementsAre("out", "sub"));
  EXPECT_TRUE(resolve_in_root(t.fd(), "climb/sub").exists());
}

TEST(RootPath, FinalSymlinkCanBeLeftAlone) {
  Tree t;
  t.mkdir("dir");
  t.symlink("dir", "link");
  const RootedPath kept = resolve_in_root(t.fd(), "link", false);
  EXPECT_THAT(kept.parts, ElementsAre("link"));
  EXPECT_TRUE(kept.exists());
  EXPECT_THAT(resolve_in_root(t.fd(), "link/x", false).parts, ElementsAre("dir", "x"));
}

TEST(RootPath, DotDotStopsAtTheRootAndAfterMissingParts) {
  Tree t;
  t.mkdir("a/b");
  t.symlink("../../../../..", "a/b/up");
  EXPECT_THAT(resolve_in_root(t.fd(), "a/b/up/a").parts, ElementsAre("a"));
  t.symlink("missing/../a", "viamissing");
  const RootedPath through = resolve_in_root(t.fd(), "viamissing/b");
  EXPECT_THAT(through.parts, ElementsAre("a", "b"));
  EXPECT_TRUE(through.exists());
}

TEST(RootPath, LoopsAndFilesOnThePathAreErrors) {
  Tree t;
  t.symlink("/loop", "loop");
  EXPECT_THROW(resolve_in_root(t.fd(), "loop/x"), Error);
  t.file("file", "x");
  try {
    resolve_in_root(t.fd(), "file/x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "lstat /file/x: not a directory");
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
}

TEST(RootPath, OpenDirPartsRefusesSymlinks) {
  Tree t;
  t.mkdir("real/dir");
  t.symlink("real", "link");
  EXPECT_TRUE(open_dir_parts(t.fd(), {"real", "dir"}, 2).valid());
  EXPECT_THROW(open_dir_parts(t.fd(), {"link", "dir"}, 2), Error);
  EXPECT_THROW(open_dir_parts(t.fd(), {"real", "missing"}, 2), Error);
}

TEST(RootPath, MakeDirsCreatesWithModeAndOwner) {
  Tree t;
  t.mkdir("a");
  const RootedPath path = resolve_in_root(t.fd(), "a/b/c");
  const MadeDirs made = make_dirs(t.fd(), path, path.parts.size(), 0750, Owner{7, 8});
  EXPECT_EQ(made.created, 2u);
  EXPECT_EQ(t.mode("a/b/c"), 0750u);
  EXPECT_EQ(t.lstat("a/b").st_uid, 7u);
  EXPECT_EQ(t.lstat("a").st_uid, 0u);
  t.file("f", "x");
  try {
    make_dirs(t.fd(), resolve_in_root(t.fd(), "f"), 1, 0755, std::nullopt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "mkdir /f: not a directory");
  }
}

TEST(RootPath, RemoveAllDoesNotFollowSymlinks) {
  Tree outside;
  outside.file("keep", "k");
  Tree t;
  t.file("dir/a/b", "x");
  t.symlink(outside.path(), "dir/link");
  remove_all_at(t.fd(), "dir", "/dir");
  EXPECT_FALSE(t.exists("dir"));
  EXPECT_EQ(outside.read("keep"), "k");
}

TEST(RootPath, ListDirIsSorted) {
  Tree t;
  for (const char* name : {"b", "a", "C", "aa"}) t.file(name, "");
  t.mkdir("d");
  std::vector<std::string> names;
  for (const DirEntry& entry : list_directory(t.fd(), "/")) names.push_back(entry.name);
  EXPECT_THAT(names, ElementsAre("C", "a", "aa", "b", "d"));
  EXPECT_EQ(list_directory(t.fd(), "/").back().type, DT_DIR);
}

}  // namespace
}  // namespace kbuild::fileops
