// ADD's archives: detection by content, every compression, extraction semantics, and hostile
// archives that try to leave the destination.
#include "engine/fileops/tar_extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include <sys/xattr.h>

#include "common/error.h"
#include "tests/unit/fileops/tar_builder.h"
#include "tests/unit/fileops/test_tree.h"

namespace kbuild::fileops {
namespace {

using ::testing::HasSubstr;
using testing::compress;
using testing::TarBuilder;
using testing::Tree;

class Archive : public ::testing::Test {
 protected:
  // Writes `bytes` to a file in `src` and opens it.
  UniqueFd archive_file(const std::string& bytes, const std::string& name = "a.tar") {
    src.file(name, bytes);
    return UniqueFd(::open(src.path(name).c_str(), O_RDONLY | O_CLOEXEC));
  }
  void extract(const std::string& bytes, std::optional<Owner> owner = std::nullopt) {
    UniqueFd fd = archive_file(bytes);
    Compression compression = Compression::none;
    ASSERT_TRUE(is_tar_archive(fd.get(), &compression));
    CopyStats stats;
    extract_tar(fd.get(), compression, dest.fd(), owner, stats);
  }
  std::string extract_error(const std::string& bytes) {
    try {
      extract(bytes);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  Tree src;
  Tree outer;  // what a naive extractor would reach with "../"
  Tree dest;
};

TEST_F(Archive, DetectionByContent) {
  const std::string tar = TarBuilder().file("hello.txt", "hi").finish();
  for (Compression c : {Compression::none, Compression::gzip, Compression::bzip2, Compression::xz, Compression::zstd}) {
    UniqueFd fd = archive_file(compress(tar, c));
    Compression detected = Compression::none;
    EXPECT_TRUE(is_tar_archive(fd.get(), &detected)) << static_cast<int>(c);
    EXPECT_EQ(detected, c);
  }
  EXPECT_FALSE(is_tar_archive(archive_file("", "empty.tar.gz").get()));
  EXPECT_FALSE(is_tar_archive(archive_file("just some text\n", "text").get()));
  EXPECT_FALSE(is_tar_archive(archive_file(compress("just some text\n", Compression::gzip)).get()));
  EXPECT_FALSE(is_tar_archive(archive_file(std::string(1024, '\0')).get()));
  std::string corrupt = tar;
  corrupt[10] = 'X';  // checksum no longer matches
  EXPECT_FALSE(is_tar_archive(archive_file(corrupt).get()));
  EXPECT_FALSE(is_tar_archive(archive_file(std::string("\x1f\x8b\x08garbage-after-magic")).get()));
}

TEST_F(Archive, ExtractsEntriesWithTheirMetadata) {
  extract(compress(TarBuilder()
                       .dir("dir/", 0750, 1400000000)
                       .file("dir/file", "content", 0604, 1000, 1001, 1450000000)
                       .file("implied/parent/file", "x")
                       .symlink("dir/link", "file")
                       .file("dir/other", "o")
                       .hardlink("dir/hard", "dir/other")
                       .finish(),
                   Compression::gzip));
  EXPECT_EQ(dest.read("dir/file"), "content");
  EXPECT_EQ(dest.mode("dir/file"), 0604u);
  EXPECT_EQ(dest.lstat("dir/file").st_uid, 1000u);
  EXPECT_EQ(dest.lstat("dir/file").st_gid, 1001u);
  EXPECT_EQ(dest.lstat("dir/file").st_mtime, 1450000000);
  EXPECT_EQ(dest.mode("dir"), 0750u);
  EXPECT_EQ(dest.lstat("dir").st_mtime, 1400000000);  // set after its files were written
  EXPECT_EQ(dest.mode("implied"), 0755u);
  EXPECT_EQ(dest.readlink("dir/link"), "file");
  EXPECT_EQ(dest.lstat("dir/hard").st_ino, dest.lstat("dir/other").st_ino);
}

// A pax archive of one file carrying the given xattrs, written by libarchive.
std::string archive_with_xattrs(const std::vector<std::pair<std::string, std::string>>& xattrs) {
  struct archive* a = archive_write_new();
  archive_write_set_format_pax(a);
  std::string out(65536, '\0');
  size_t used = 0;
  archive_write_open_memory(a, out.data(), out.size(), &used);
  struct archive_entry* entry = archive_entry_new();
  archive_entry_set_pathname(entry, "f");
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_perm(entry, 0644);
  archive_entry_set_size(entry, 1);
  for (const auto& [name, value] : xattrs) archive_entry_xattr_add_entry(entry, name.c_str(), value.data(), value.size());
  archive_write_header(a, entry);
  archive_write_data(a, "x", 1);
  archive_entry_free(entry);
  archive_write_close(a);
  archive_write_free(a);
  out.resize(used);
  return out;
}

TEST_F(Archive, AppliesOnlyTheXattrsALayerMayCarry) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: trusted.* xattrs";
  extract(archive_with_xattrs({{"trusted.overlay.opaque", "y"},
                               {"trusted.overlay.redirect", "/etc"},
                               {"trusted.other", "t"},
                               {"user.overlay.opaque", "y"},
                               {"user.kept", "kept"}}));
  char value[64];
  for (const char* dropped : {"trusted.overlay.opaque", "trusted.overlay.redirect", "trusted.other",
                              "user.overlay.opaque"}) {
    EXPECT_LT(::lgetxattr(dest.path("f").c_str(), dropped, value, sizeof value), 0) << dropped;
  }
  ssize_t n = ::lgetxattr(dest.path("f").c_str(), "user.kept", value, sizeof value);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(value, static_cast<size_t>(n)), "kept");
}

TEST_F(Archive, ChownOverridesHeadersButNotImpliedDirectories) {
  extract(TarBuilder().file("a/b", "x", 0644, 1000, 1000).finish(), Owner{7, 8});
  EXPECT_EQ(dest.lstat("a/b").st_uid, 7u);
  EXPECT_EQ(dest.lstat("a/b").st_gid, 8u);
  EXPECT_EQ(dest.lstat("a").st_uid, 0u);
}

TEST_F(Archive, ReplacesFilesAndMergesDirectories) {
  dest.file("keep/old", "o");
  dest.file("replace", "old");
  dest.mkdir("dir-to-file/inner");
  extract(TarBuilder().dir("keep/").file("keep/new", "n").file("replace", "new").file("dir-to-file", "f").finish());
  EXPECT_EQ(dest.read("keep/old"), "o");
  EXPECT_EQ(dest.read("keep/new"), "n");
  EXPECT_EQ(dest.read("replace"), "new");
  EXPECT_EQ(dest.read("dir-to-file"), "f");
}

TEST_F(Archive, DotDotAndAbsoluteNamesLandInsideTheDestination) {
  extract(TarBuilder().file("../../escape", "1").file("/abs/path", "2").file("a/../../../b", "3").finish());
  EXPECT_EQ(dest.read("escape"), "1");
  EXPECT_EQ(dest.read("abs/path"), "2");
  EXPECT_EQ(dest.read("b"), "3");
  EXPECT_FALSE(outer.exists("escape"));
  struct stat st;
  EXPECT_NE(::lstat("/abs/path", &st), 0);
}

TEST_F(Archive, SymlinksInTheArchiveCannotLeadOut) {
  const std::string host_dir = outer.path();
  extract(TarBuilder()
              .symlink("evil", "/")
              .file("evil/etc/x", "through-root-link")
              .symlink("up", "../../../../..")
              .file("up/y", "through-relative-link")
              .finish());
  EXPECT_EQ(dest.read("etc/x"), "through-root-link");
  EXPECT_EQ(dest.read("y"), "through-relative-link");
  EXPECT_EQ(dest.readlink("evil"), "/");
  // A link to the host's path of a real directory: inside the destination that path does not
  // exist, so writing through it fails as it does in BuildKit's chroot.
  EXPECT_THAT(extract_error(TarBuilder().symlink("host", host_dir).file("host/z", "through-host-path").finish()),
              HasSubstr("no such file or directory"));
  EXPECT_FALSE(outer.exists("z"));
}

TEST_F(Archive, ExistingSymlinksInTheDestinationResolveInsideIt) {
  dest.symlink(outer.path(), "preexisting");
  EXPECT_THAT(extract_error(TarBuilder().file("preexisting/file", "inside").finish()),
              HasSubstr("no such file or directory"));
  dest.mkdir(outer.path().substr(1));
  extract(TarBuilder().file("preexisting/file", "inside").finish());
  EXPECT_FALSE(outer.exists("file"));
  EXPECT_EQ(dest.read(outer.path().substr(1) + "/file"), "inside");
}

TEST_F(Archive, HardlinksMustPointInside) {
  outer.file("secret", "s");
  const std::string error = extract_error(TarBuilder().hardlink("stolen", "../" + std::string("secret")).finish());
  EXPECT_THAT(error, HasSubstr("no such file or directory"));
  EXPECT_FALSE(dest.exists("stolen"));
  EXPECT_EQ(outer.lstat("secret").st_nlink, 1u);
  extract(TarBuilder().file("etc/passwd", "p").hardlink("hl", "../../etc/passwd").finish());
  EXPECT_EQ(dest.lstat("hl").st_ino, dest.lstat("etc/passwd").st_ino);
}

TEST_F(Archive, TheDestinationItselfCannotBeReplaced) {
  EXPECT_THAT(extract_error(TarBuilder().file("..", "x").finish()), HasSubstr("cannot replace the destination"));
  const mode_t before = dest.mode("");
  extract(TarBuilder().dir("./", 0711).finish());
  EXPECT_EQ(dest.mode(""), before);  // "." is skipped
  extract(TarBuilder().dir("/", 0711).finish());
  EXPECT_EQ(dest.mode(""), 0711u);   // but "/" re-applies its metadata, as archive.Unpack does
}

TEST_F(Archive, DamagedArchivesFail) {
  std::string tar = TarBuilder().file("a", std::string(2000, 'x')).finish();
  tar.resize(700);
  EXPECT_THAT(extract_error(tar), HasSubstr("extracting archive"));
}

}  // namespace
}  // namespace kbuild::fileops
