// COPY/ADD semantics, case by case as BuildKit's integration tests pin them
// (frontend/dockerfile/dockerfile_copy_test.go, dockerfile_parents_test.go,
// exclude_patterns_test.go), plus escape attempts through symlinks in both trees.
#include "engine/fileops/fileops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "common/error.h"
#include "tests/unit/fileops/tar_builder.h"
#include "tests/unit/fileops/test_tree.h"

namespace kbuild::fileops {
namespace {

using ::testing::HasSubstr;
using testing::compress;
using testing::TarBuilder;
using testing::Tree;

class Copy : public ::testing::Test {
 protected:
  CopyStats copy(std::vector<std::string> sources, std::string dest, CopyRequest request = {}) {
    request.sources = std::move(sources);
    request.dest = std::move(dest);
    return copy_files(src.fd(), dst.fd(), request);
  }
  // The error a copy throws, or "" when it succeeds.
  std::string copy_error(std::vector<std::string> sources, std::string dest, CopyRequest request = {}) {
    try {
      copy(std::move(sources), std::move(dest), std::move(request));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  Tree src;
  Tree dst;
};

// --- destinations ---------------------------------------------------------------------------

TEST_F(Copy, FileToNewPathWritesAFile) {
  src.file("foo", "foo-contents", 0600);
  copy({"foo"}, "/bar");
  EXPECT_EQ(dst.read("bar"), "foo-contents");
  EXPECT_EQ(dst.mode("bar"), 0600u);
}

TEST_F(Copy, FileToTrailingSlashCreatesTheDirectory) {
  src.file("testfile", "contents0");
  copy({"testfile"}, "/sample/");
  EXPECT_TRUE(dst.is_dir("sample"));
  EXPECT_EQ(dst.read("sample/testfile"), "contents0");
  EXPECT_EQ(dst.mode("sample"), 0755u);
}

TEST_F(Copy, FileToExistingDirectoryWithoutSlashGoesInside) {
  src.file("foo", "x");
  dst.mkdir("existing");
  copy({"foo"}, "/existing");
  EXPECT_EQ(dst.read("existing/foo"), "x");
}

TEST_F(Copy, FileOverExistingFileReplacesIt) {
  src.file("files/foo.go", "new");
  dst.file("dest/foo.go", "old-and-longer");
  copy({"files/foo.go"}, "dest/foo.go");
  EXPECT_EQ(dst.read("dest/foo.go"), "new");
  copy({"files/foo.go"}, "dest/foo.go");
  EXPECT_EQ(dst.read("dest/foo.go"), "new");
}

TEST_F(Copy, MissingParentDirectoriesAreCreated0755) {
  src.file("foo", "x");
  copy({"foo"}, "/a/b/c");
  EXPECT_EQ(dst.read("a/b/c"), "x");
  EXPECT_EQ(dst.mode("a"), 0755u);
  EXPECT_EQ(dst.mode("a/b"), 0755u);
}

TEST_F(Copy, DirectoryCopiesItsContentsNotItself) {
  src.file("sub/dir1/dir2/foo", "foo-contents");
  for (const char* source : {"sub/dir1/", "sub/dir1/.", "sub/dir1"}) {
    const std::string dest = std::string("dest-") + std::to_string(std::string(source).size());
    copy({source}, dest);
    EXPECT_EQ(dst.read(dest + "/dir2/foo"), "foo-contents") << source;
    EXPECT_FALSE(dst.exists(dest + "/dir1")) << source;
  }
}

TEST_F(Copy, DirectoryMergesIntoExistingDirectory) {
  src.file("dir/new", "n");
  src.file("dir/sub/both", "from-source");
  dst.file("target/old", "o");
  dst.file("target/sub/both", "from-dest");
  dst.file("target/sub/keep", "k");
  copy({"dir"}, "/target");
  EXPECT_EQ(dst.read("target/new"), "n");
  EXPECT_EQ(dst.read("target/old"), "o");
  EXPECT_EQ(dst.read("target/sub/both"), "from-source");
  EXPECT_EQ(dst.read("target/sub/keep"), "k");
}

TEST_F(Copy, DirectoryOntoAFileFails) {
  src.file("dir/x", "x");
  dst.file("target", "file");
  EXPECT_EQ(copy_error({"dir"}, "/target"), "cannot copy to non-directory: /target");
}

TEST_F(Copy, FileOntoADirectoryInsideACopiedTreeFails) {
  src.file("dir/x", "x");
  dst.mkdir("target/x");
  EXPECT_EQ(copy_error({"dir"}, "/target"), "cannot replace to directory /target/x with file");
}

TEST_F(Copy, DestinationUnderAFileFails) {
  src.file("foo", "x");
  dst.file("file", "f");
  EXPECT_EQ(copy_error({"foo"}, "/file/"), "mkdir /file: not a directory");
  EXPECT_EQ(copy_error({"foo"}, "/file/x/y"), "lstat /file/x: not a directory");
}

TEST_F(Copy, RelativeDestinationIsRelativeToWorkdir) {
  src.file("foo", "hello");
  CopyRequest request;
  request.workdir = "/test1/test2";
  copy({"foo"}, "./", request);
  EXPECT_EQ(dst.read("test1/test2/foo"), "hello");
  copy({"foo"}, "./bar/baz", request);
  EXPECT_EQ(dst.read("test1/test2/bar/baz"), "hello");
  request.workdir = "/test5/test6";
  copy({"foo"}, "../", request);
  EXPECT_EQ(dst.read("test5/foo"), "hello");
  request.workdir = "/var/www";
  copy({"foo"}, "", request);  // COPY testfile $empty
  EXPECT_EQ(dst.read("var/www/foo"), "hello");
  copy({"foo"}, ".", request);
  EXPECT_EQ(dst.read("var/www/foo"), "hello");
}

TEST_F(Copy, NormalizeDestKeepsTheDirectoryMarkers) {
  EXPECT_EQ(normalize_dest("/abs", "/w"), "/abs");
  EXPECT_EQ(normalize_dest("/abs/", "/w"), "/abs/");
  EXPECT_EQ(normalize_dest("/abs/.", "/w"), "/abs/.");
  EXPECT_EQ(normalize_dest("rel", "/w"), "/w/rel");
  EXPECT_EQ(normalize_dest("", "/w"), "/w/");
  EXPECT_EQ(normalize_dest(".", "/w"), "/w/");
  EXPECT_EQ(normalize_dest("../..//x/", "/w"), "/x/");
  EXPECT_EQ(normalize_dest("/", "/w"), "/");
  EXPECT_EQ(normalize_dest("/.", "/w"), "/.");
}

// --- sources ---------------------------------------------------------------------------------

TEST_F(Copy, MissingSourceIsNotFoundWithBuildKitsText) {
  src.file("foo", "x");
  try {
    copy({"foo", "missing"}, "/dest/");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
    EXPECT_STREQ(e.what(), "\"/missing\": not found");
  }
  // The checksum fails before anything is copied.
  EXPECT_FALSE(dst.exists("dest"));
  EXPECT_EQ(copy_error({"sub/../../missing"}, "/"), "\"/missing\": not found");
}

TEST_F(Copy, ParentNavigationInSourcesStaysInTheContext) {
  src.file("something", "inside");
  copy({"../../../something"}, "/out");
  EXPECT_EQ(dst.read("out"), "inside");
  copy({"/something"}, "/out2");
  EXPECT_EQ(dst.read("out2"), "inside");
}

TEST_F(Copy, Wildcards) {
  src.file("foo.go", "foo-contents");
  src.file("bar.go", "bar-contents");
  src.file("sub/dir1/dir2/foo", "foo-contents");
  copy({"*.go"}, "/gofiles/");
  EXPECT_EQ(dst.read("gofiles/foo.go"), "foo-contents");
  EXPECT_EQ(dst.read("gofiles/bar.go"), "bar-contents");
  copy({"f*.go"}, "foo2.go");
  EXPECT_EQ(dst.read("foo2.go"), "foo-contents");
  copy({"sub/*"}, "/subdest/");
  EXPECT_EQ(dst.read("subdest/dir2/foo"), "foo-contents");
  copy({"sub/*/dir2/foo"}, "/subdest2/");
  EXPECT_EQ(dst.read("subdest2/foo"), "foo-contents");
  copy({"sub/*/dir2/foo"}, "/subdest3/bar");
  EXPECT_EQ(dst.read("subdest3/bar"), "foo-contents");
  copy({"."}, "all/");
  EXPECT_EQ(dst.read("all/foo.go"), "foo-contents");
  EXPECT_EQ(dst.read("all/sub/dir1/dir2/foo"), "foo-contents");
}

TEST_F(Copy, BracketsMatchLiterallyWhenEscaped) {
  src.file("arr[0].txt", "zero");
  copy({"arr[[]0].txt"}, "/dest/");
  EXPECT_EQ(dst.read("dest/arr[0].txt"), "zero");
}

TEST_F(Copy, EmptyWildcardIsNotAnError) {
  src.file("foo", "contents0");
  copy({"foo", "nomatch*"}, "/");
  EXPECT_EQ(dst.read("foo"), "contents0");
}

TEST_F(Copy, WildcardBelowAMissingDirectoryFailsLikeTheWalk) {
  EXPECT_EQ(copy_error({"nodir/*.txt"}, "/x/"), "lstat /nodir: no such file or directory");
}

TEST_F(Copy, MultipleSourcesWithoutSlashCopyOneAfterAnother) {
  // BuildKit has no "must end with a /" check: each source is copied to the same path in turn.
  src.file("a", "A");
  src.file("b", "B");
  copy({"a", "b"}, "/dest");
  EXPECT_EQ(dst.read("dest"), "B");
  src.file("d1/x", "x");
  src.file("d2/y", "y");
  copy({"d1", "d2"}, "/merged");
  EXPECT_EQ(dst.read("merged/x"), "x");
  EXPECT_EQ(dst.read("merged/y"), "y");
}

TEST_F(Copy, LegacyBuilderWantsASlashForSeveralSources) {
  src.file("a", "A");
  src.file("b", "B");
  CopyRequest request;
  request.legacy_builder = true;
  EXPECT_EQ(copy_error({"a", "b"}, "/dest", request),
            "When using COPY with more than one source file, the destination must be a directory and end with a /");
  EXPECT_EQ(copy_error({"[ab]"}, "/dest", request),
            "When using COPY with more than one source file, the destination must be a directory and end with a /");
  EXPECT_EQ(copy_error({"nomatch*"}, "/dest/", request), "no source files were specified");
  copy({"a", "b"}, "/dest/", request);
  EXPECT_EQ(dst.read("dest/a"), "A");
}

TEST_F(Copy, UrlsAndGitRefsAreRefused) {
  EXPECT_EQ(copy_error({"https://example.com/x.tar"}, "/"), "source can't be a URL for COPY");
  CopyRequest add;
  add.instruction = "ADD";
  EXPECT_EQ(copy_error({"http://example.com/x"}, "/", add), "ADD from a URL is not supported yet");
  EXPECT_EQ(copy_error({"git@github.com:moby/buildkit.git"}, "/", add),
            "ADD from a Git repository is not supported yet");
  EXPECT_EQ(copy_error({"git@github.com:moby/buildkit.git"}, "/"), "source can't be a git ref for COPY");
}

// --- symlinks ---------------------------------------------------------------------------------

TEST_F(Copy, NamedSymlinkSourceIsFollowed) {
  src.file("bar", "bar-contents");
  src.symlink("bar", "foo");
  copy({"foo"}, "/");
  EXPECT_TRUE(dst.is_file("foo"));
  EXPECT_EQ(dst.read("foo"), "bar-contents");
}

TEST_F(Copy, SymlinkedDirectoryOnTheSourcePathIsFollowed) {
  src.file("sub/foo", "contents");
  src.symlink("sub", "link");
  copy({"link/foo"}, ".");
  EXPECT_EQ(dst.read("foo"), "contents");
}

TEST_F(Copy, AbsoluteSymlinkSourceResolvesInsideTheSourceRoot) {
  src.file("etc/passwd", "context-passwd");
  src.symlink("/etc/passwd", "pw");
  src.symlink("/out/sub", "sub");
  src.file("out/sub/foo", "data");
  copy({"pw"}, "/copied");
  EXPECT_EQ(dst.read("copied"), "context-passwd");
  copy({"sub/foo"}, "/foo");
  EXPECT_EQ(dst.read("foo"), "data");
}

TEST_F(Copy, WildcardMatchesThatAreSymlinksAreFollowed) {
  src.file("sub/lfile", "lfile-contents");
  src.symlink("subfile", "sub/l0");
  src.file("sub/subfile", "subfile-contents");
  src.symlink("second", "sub/l1");
  src.symlink("baz", "sub/second");
  src.file("sub/baz", "baz-contents");
  copy({"sub/l*"}, "alllinks/");
  EXPECT_EQ(dst.read("alllinks/l0"), "subfile-contents");
  EXPECT_EQ(dst.read("alllinks/lfile"), "lfile-contents");
  EXPECT_EQ(dst.read("alllinks/l1"), "baz-contents");
  EXPECT_TRUE(dst.is_file("alllinks/l1"));
}

TEST_F(Copy, SymlinksInsideADirectoryAreCopiedAsLinks) {
  src.file("bar", "bar-contents");
  src.symlink("../bar", "foo/sub");
  src.symlink("/nowhere", "foo/dangling");
  copy({"foo"}, "/");
  EXPECT_EQ(dst.readlink("sub"), "../bar");
  EXPECT_EQ(dst.readlink("dangling"), "/nowhere");
  copy({"foo/sub"}, "bar");
  EXPECT_EQ(dst.read("bar"), "bar-contents");
}

TEST_F(Copy, DanglingNamedSymlinkIsNotFound) {
  src.symlink("nowhere", "dangling");
  EXPECT_EQ(copy_error({"dangling"}, "/x"), "\"/dangling\": not found");
}

// --- escapes ---------------------------------------------------------------------------------

TEST_F(Copy, DestinationThroughAnAbsoluteSymlinkStaysInTheRoot) {
  src.file("x", "payload");
  dst.mkdir("real_etc");
  dst.symlink("/real_etc", "etc");
  copy({"x"}, "/etc/x");
  EXPECT_EQ(dst.read("real_etc/x"), "payload");
  EXPECT_TRUE(dst.is_symlink("etc"));
}

TEST_F(Copy, SymlinkToHostEtcNeverReachesTheHost) {
  src.file("x", "payload");
  dst.symlink("/etc", "etc");  // inside the root this points at itself
  EXPECT_THAT(copy_error({"x"}, "/etc/kbuild-escape-test"), HasSubstr("too many links"));
  struct stat st;
  EXPECT_NE(::lstat("/etc/kbuild-escape-test", &st), 0);
}

TEST_F(Copy, RelativeSymlinkClimbingOutIsClampedAtTheRoot) {
  src.file("x", "payload");
  dst.symlink("../../../../../../tmp", "up");
  copy({"x"}, "/up/kbuild-escape-x");
  EXPECT_EQ(dst.read("tmp/kbuild-escape-x"), "payload");
  struct stat st;
  EXPECT_NE(::lstat("/tmp/kbuild-escape-x", &st), 0);
}

TEST_F(Copy, DanglingDestinationSymlinkIsWrittenThroughInsideTheRoot) {
  src.file("x", "payload");
  dst.symlink("/nonexist/file", "dest");
  copy({"x"}, "/dest");
  EXPECT_EQ(dst.read("nonexist/file"), "payload");
  EXPECT_TRUE(dst.is_symlink("dest"));
}

TEST_F(Copy, SymlinkInTheDestinationWhereTheSourceHasADirectoryFails) {
  src.file("tree/lib/x", "x");
  dst.mkdir("usr/lib");
  dst.symlink("/usr/lib", "lib");
  EXPECT_EQ(copy_error({"tree"}, "/"), "cannot copy to non-directory: /lib");
  EXPECT_FALSE(dst.exists("usr/lib/x"));
}

TEST_F(Copy, SourceSymlinksToTheHostReadTheSourceRoot) {
  src.symlink("/etc/hostname", "h");
  EXPECT_EQ(copy_error({"h"}, "/h"), "\"/h\": not found");
  src.symlink("../../../../../../etc", "e");
  EXPECT_EQ(copy_error({"e/hostname"}, "/h"), "\"/e/hostname\": not found");
}

// --- metadata ---------------------------------------------------------------------------------

TEST_F(Copy, ModesTimesAndOwnersArePreservedWithoutChown) {
  src.file("dir/file", "x", 0640);
  src.mkdir("dir/sub", 0700);
  src.chown("dir/file", 102, 202);
  src.chown("dir/sub", 101, 201);
  src.chown("dir", 100, 200);
  src.mtime("dir/file", 1000000);
  src.mtime("dir/sub", 2000000);
  src.mtime("dir", 3000000);
  copy({"dir"}, "/dir");
  EXPECT_EQ(dst.mode("dir/file"), 0640u);
  EXPECT_EQ(dst.mode("dir/sub"), 0700u);
  EXPECT_EQ(dst.lstat("dir/file").st_uid, 102u);
  EXPECT_EQ(dst.lstat("dir/file").st_gid, 202u);
  EXPECT_EQ(dst.lstat("dir/sub").st_uid, 101u);
  EXPECT_EQ(dst.lstat("dir/file").st_mtime, 1000000);
  EXPECT_EQ(dst.lstat("dir/sub").st_mtime, 2000000);
  // The target directory is made like a parent (0755, root) but takes the source's times.
  EXPECT_EQ(dst.lstat("dir").st_uid, 0u);
  EXPECT_EQ(dst.mode("dir"), 0755u);
  EXPECT_EQ(dst.lstat("dir").st_mtime, 3000000);
}

TEST_F(Copy, ExistingDestinationDirectoryKeepsItsOwnerAndMode) {
  src.file("dir/file", "x");
  src.chown("dir", 100, 200);
  dst.mkdir("existingdir", 0700);
  dst.chown("existingdir", 500, 600);
  dst.file("existingdir/existingfile", "e");
  dst.chown("existingdir/existingfile", 501, 601);
  copy({"dir/."}, "/existingdir");
  EXPECT_EQ(dst.lstat("existingdir").st_uid, 500u);
  EXPECT_EQ(dst.mode("existingdir"), 0700u);
  EXPECT_EQ(dst.lstat("existingdir/existingfile").st_uid, 501u);
}

TEST_F(Copy, ContextSourcesAreOwnedByRoot) {
  src.file("dir/file", "x");
  src.chown("dir/file", 1000, 1000);
  CopyRequest request;
  request.source_owner_is_root = true;
  copy({"dir"}, "/out", request);
  EXPECT_EQ(dst.lstat("out/file").st_uid, 0u);
  EXPECT_EQ(dst.lstat("out/file").st_gid, 0u);
}

TEST_F(Copy, ChownAppliesToEverythingCopiedAndCreated) {
  src.file("dir/sub/file", "x");
  src.symlink("file", "dir/sub/link");
  dst.mkdir("existingdir", 0755);
  dst.chown("existingdir", 500, 600);
  CopyRequest request;
  request.owner = Owner{300, 400};
  copy({"dir"}, "/a/b/", request);
  for (const char* path : {"a", "a/b", "a/b/sub", "a/b/sub/file", "a/b/sub/link"}) {
    EXPECT_EQ(dst.lstat(path).st_uid, 300u) << path;
    EXPECT_EQ(dst.lstat(path).st_gid, 400u) << path;
  }
  copy({"dir/."}, "/existingdir", request);
  EXPECT_EQ(dst.lstat("existingdir").st_uid, 500u);
  EXPECT_EQ(dst.lstat("existingdir/sub").st_uid, 300u);
}

TEST_F(Copy, ChownByNameReadsTheDestinationsPasswd) {
  dst.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n");
  dst.file("etc/group", "root:x:0:\nnobody:x:65534:\n");
  src.file("foo", "x");
  CopyRequest request;
  request.owner = resolve_chown("daemon", dst.fd());
  copy({"foo"}, "/", request);
  EXPECT_EQ(dst.lstat("foo").st_uid, 1u);
  EXPECT_EQ(dst.lstat("foo").st_gid, 1u);
  request.owner = resolve_chown("1000:nobody", dst.fd());
  copy({"foo"}, "/baz", request);
  EXPECT_EQ(dst.lstat("baz").st_uid, 1000u);
  EXPECT_EQ(dst.lstat("baz").st_gid, 65534u);
}

TEST_F(Copy, OctalChmodAppliesToFilesDirectoriesAndCreatedParents) {
  src.file("foo", "foo-contents", 0600);
  src.file("bar", "bar-contents", 0700);
  src.file("dir/sub/f", "f", 0600);
  CopyRequest request;
  request.chmod = Chmod::parse("0644");
  copy({"foo"}, "/", request);
  EXPECT_EQ(dst.mode("foo"), 0644u);
  request.chmod = Chmod::parse("777");
  copy({"bar"}, "/baz", request);
  EXPECT_EQ(dst.mode("baz"), 0777u);
  request.chmod = Chmod::parse("0");
  copy({"foo"}, "/foobis", request);
  EXPECT_EQ(dst.mode("foobis"), 0u);
  request.chmod = Chmod::parse("777");
  copy({"foo"}, "/parent/foo", request);
  EXPECT_EQ(dst.mode("parent"), 0777u);
  request.chmod = Chmod::parse("770");
  copy({"foo"}, "/parent/sub/foo", request);
  EXPECT_EQ(dst.mode("parent/sub"), 0770u);
  request.chmod = Chmod::parse("4755");
  copy({"dir"}, "/d", request);
  EXPECT_EQ(dst.mode("d"), 0755u);  // made on the way: rwx bits only
  EXPECT_EQ(dst.mode("d/sub"), 04755u);
  EXPECT_EQ(dst.mode("d/sub/f"), 04755u);
}

TEST_F(Copy, SymbolicChmodMatchesChmod1) {
  src.file("input/file", "", 0666);
  src.mkdir("input/dirs/d1/d1", 0124);
  struct Case {
    const char* mode;
    mode_t file;
    mode_t dir;
  };
  for (const Case& c : {Case{"go-w", 0644, 0104}, Case{"a+X", 0666, 0135}, Case{"u+rw,g+r,o-x,o+w", 0666, 0766},
                        Case{"u=rw,g=r,o=r", 0644, 0644}}) {
    CopyRequest request;
    request.chmod = Chmod::parse(c.mode);
    copy({"input/file"}, "/f", request);
    copy({"input/dirs/d1"}, "/", request);
    EXPECT_EQ(dst.mode("f"), c.file) << c.mode;
    EXPECT_EQ(dst.mode("d1"), c.dir) << c.mode;
    ::rmdir(dst.path("d1").c_str());
  }
}

TEST_F(Copy, HardlinksInsideACopiedTreeStayLinked) {
  src.file("dir/a", "shared");
  ASSERT_EQ(::link(src.path("dir/a").c_str(), src.path("dir/b").c_str()), 0);
  const CopyStats stats = copy({"dir"}, "/out");
  EXPECT_EQ(dst.lstat("out/a").st_ino, dst.lstat("out/b").st_ino);
  EXPECT_EQ(stats.hardlinks, 1u);
  EXPECT_EQ(stats.files, 1u);
}

TEST_F(Copy, SocketsBecomeEmptyRegularFiles) {
  src.mkdir("dir");
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  const std::string path = src.path("dir/socket.sock");
  ASSERT_LT(path.size(), sizeof(address.sun_path));
  std::strcpy(address.sun_path, path.c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)), 0);
  ::close(sock);
  copy({"dir"}, "/");
  EXPECT_TRUE(dst.is_file("socket.sock"));
  EXPECT_EQ(dst.lstat("socket.sock").st_size, 0);
}

TEST_F(Copy, FifosAreRecreated) {
  src.mkdir("dir");
  ASSERT_EQ(::mkfifo(src.path("dir/pipe").c_str(), 0640), 0);
  copy({"dir"}, "/");
  EXPECT_TRUE(S_ISFIFO(dst.lstat("pipe").st_mode));
  EXPECT_EQ(dst.mode("pipe"), 0640u);
}

TEST_F(Copy, LargeFileContentIsCopiedExactly) {
  std::string big(3 * 1024 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919) % 251);
  src.file("big", big);
  const CopyStats stats = copy({"big"}, "/big");
  EXPECT_EQ(dst.read("big"), big);
  EXPECT_EQ(stats.bytes, big.size());
}

TEST_F(Copy, ManyFilesGoThroughWorkersWithDirectoryMetadataLast) {
  // Enough files for the worker threads; every directory's times and mode must still be the
  // source's once its last file is written.
  for (int d = 0; d < 12; ++d) {
    const std::string dir = "tree/d" + std::to_string(d);
    for (int f = 0; f < 20; ++f) src.file(dir + "/sub/f" + std::to_string(f), std::string(static_cast<std::size_t>(f * 100), 'a' + static_cast<char>(d)), 0640);
    src.mkdir(dir + "/sub", 0750);
    src.mtime(dir + "/sub", 1111111 + d);
    src.mtime(dir, 2222222 + d);
  }
  src.mtime("tree", 3333333);
  CopyRequest request;
  request.owner = Owner{11, 12};
  const CopyStats stats = copy({"tree"}, "/out/", request);
  EXPECT_EQ(stats.files, 240u);
  for (int d = 0; d < 12; ++d) {
    const std::string dir = "out/d" + std::to_string(d);
    for (int f = 0; f < 20; ++f) {
      const std::string file = dir + "/sub/f" + std::to_string(f);
      ASSERT_EQ(dst.read(file), std::string(static_cast<std::size_t>(f * 100), 'a' + static_cast<char>(d))) << file;
      EXPECT_EQ(dst.mode(file), 0640u);
      EXPECT_EQ(dst.lstat(file).st_uid, 11u);
    }
    EXPECT_EQ(dst.lstat(dir + "/sub").st_mtime, 1111111 + d);
    EXPECT_EQ(dst.mode(dir + "/sub"), 0750u);
    EXPECT_EQ(dst.lstat(dir).st_mtime, 2222222 + d);
  }
  EXPECT_EQ(dst.lstat("out").st_mtime, 3333333);
}

TEST_F(Copy, RootsMayBeOPathDescriptors) {
  src.file("dir/file", "x");
  UniqueFd source(::open(src.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  UniqueFd dest(::open(dst.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  CopyRequest request;
  request.sources = {"dir"};
  request.dest = "/";
  copy_files(source.get(), dest.get(), request);
  EXPECT_EQ(dst.read("file"), "x");
}

// --- --parents ----------------------------------------------------------------------------------

TEST_F(Copy, ParentsKeepTheSourceDirectories) {
  src.file("foo1/foo2/bar", "testing");
  src.file("foo1/foo2/baz", "testing2");
  src.file("x/a.txt", "xa");
  src.file("y/a.txt", "ya");
  CopyRequest request;
  request.parents = true;
  copy({"foo1/foo2/bar"}, "/", request);
  EXPECT_EQ(dst.read("foo1/foo2/bar"), "testing");
  EXPECT_FALSE(dst.exists("foo1/foo2/baz"));
  request.workdir = "/test";
  copy({"foo1/foo2/ba*"}, ".", request);
  EXPECT_EQ(dst.read("test/foo1/foo2/bar"), "testing");
  EXPECT_EQ(dst.read("test/foo1/foo2/baz"), "testing2");
  copy({"./x/a.txt", "./y/a.txt"}, "/parents/", request);
  EXPECT_EQ(dst.read("parents/x/a.txt"), "xa");
  EXPECT_EQ(dst.read("parents/y/a.txt"), "ya");
}

class CopyParents : public Copy {
 protected:
  void SetUp() override {
    for (const char* d : {"test/a/b/c/d/e", "test/a/b2/c/d/e", "test/a/b/c2/d/e", "test/a/b/c2/d/e2"}) src.mkdir(d);
    for (const char* f : {"test/a/b/c/d/foo", "test/a/b/c/d/e/bay", "test/a/b2/c/d/e/bar", "test/a/b/c2/d/e/baz",
                          "test/a/b/c2/d/e2/baz"}) {
      src.file(f, "");
    }
    request.parents = true;
  }
  CopyRequest request;
};

TEST_F(CopyParents, PivotKeepsOnlyWhatFollowsIt) {
  copy({"/test/a/b/./c/d"}, "/out/", request);
  EXPECT_TRUE(dst.is_dir("out/c/d/e"));
  EXPECT_TRUE(dst.is_file("out/c/d/foo"));
  EXPECT_FALSE(dst.exists("out/a"));
  EXPECT_FALSE(dst.exists("out/e"));
}

TEST_F(CopyParents, TrailingDotOrNoPivotKeepsEverything) {
  copy({"/test/a/b/c/d/."}, "/end/", request);
  EXPECT_TRUE(dst.is_dir("end/test/a/b/c/d/e"));
  EXPECT_TRUE(dst.is_file("end/test/a/b/c/d/foo"));
  copy({"./test/a/b/c/d"}, "/start/", request);
  EXPECT_TRUE(dst.is_file("start/test/a/b/c/d/e/bay"));
}

TEST_F(CopyParents, TheFirstPivotCounts) {
  copy({"/test/a/./b/./c"}, "/out/", request);
  EXPECT_TRUE(dst.is_dir("out/b/c/d/e"));
  EXPECT_TRUE(dst.is_file("out/b/c/d/foo"));
}

TEST_F(CopyParents, WildcardsBeforeAndAfterThePivot) {
  copy({"/test/a/./*/c"}, "/w/", request);
  EXPECT_TRUE(dst.is_dir("w/b/c/d/e"));
  EXPECT_TRUE(dst.is_file("w/b2/c/d/e/bar"));
  copy({"/test/a/b*/./c/**/e"}, "/dw/", request);
  EXPECT_TRUE(dst.is_dir("dw/c/d/e"));
  EXPECT_TRUE(dst.is_file("dw/c/d/e/bay"));
  EXPECT_TRUE(dst.is_file("dw/c/d/e/bar"));
  copy({"/test/a/b/c*/./d/**/baz", "/test/a/b*/./c/**/bar"}, "/di/", request);
  EXPECT_TRUE(dst.is_file("di/d/e/baz"));
  EXPECT_FALSE(dst.exists("di/d/e/bay"));
  EXPECT_TRUE(dst.is_file("di/d/e2/baz"));
  EXPECT_TRUE(dst.is_file("di/c/d/e/bar"));
}

TEST_F(CopyParents, MissingPathsAndEmptyWildcards) {
  EXPECT_EQ(copy_error({"/test/nonexistent-file"}, "/out/", request), "\"/test/nonexistent-file\": not found");
  copy({"/test/a/b3*/c"}, "/wn/", request);
  EXPECT_TRUE(dst.is_dir("wn"));
  EXPECT_FALSE(dst.exists("wn/a"));
  copy({"/test/a/b/./c2*"}, "/wa/", request);
  EXPECT_TRUE(dst.is_dir("wa"));
  EXPECT_TRUE(dst.is_file("wa/c2/d/e/baz"));
  EXPECT_FALSE(dst.exists("wa/a"));
}

// --- --exclude -----------------------------------------------------------------------------------

class CopyExclude : public Copy {
 protected:
  void SetUp() override {
    src.file("dir1/file-101.png", "2");
    src.file("dir1/file-102.txt", "3");
    src.file("dir1/file-103.jpeg", "4");
    src.file("dir2/file-201.pdf", "6");
    src.file("dir2/file-202.jpeg", "7");
    src.file("dir2/file-203.png", "8");
    src.file("dir3/file-301.mp3", "9");
    src.file("dir3/file-302.mpeg", "10");
    src.file("dir4/file-401.txt", "11");
    src.symlink("file-401.txt", "dir4/file-402.txt");
    src.symlink("file-404.txt", "dir4/file-403.txt");
  }
  CopyRequest excluding(std::vector<std::string> patterns, bool add = false) {
    CopyRequest request;
    request.excludes = std::move(patterns);
    if (add) {
      request.instruction = "ADD";
      request.unpack = true;
    }
    return request;
  }
};

TEST_F(CopyExclude, PatternsAreRelativeToTheCopiedDirectory) {
  copy({"."}, "/1", excluding({"*/*.png", "*/*.jpeg"}));
  EXPECT_FALSE(dst.exists("1/dir1/file-101.png"));
  EXPECT_EQ(dst.read("1/dir1/file-102.txt"), "3");
  EXPECT_FALSE(dst.exists("1/dir2/file-202.jpeg"));
  EXPECT_EQ(dst.read("1/dir2/file-201.pdf"), "6");
  EXPECT_EQ(dst.readlink("1/dir4/file-402.txt"), "file-401.txt");
  EXPECT_EQ(dst.readlink("1/dir4/file-403.txt"), "file-404.txt");

  copy({"."}, "/2", excluding({"*/*.pdf", "*/*.txt"}));
  EXPECT_EQ(dst.read("2/dir1/file-101.png"), "2");
  EXPECT_FALSE(dst.exists("2/dir1/file-102.txt"));
  EXPECT_FALSE(dst.exists("2/dir4/file-401.txt"));
  EXPECT_FALSE(dst.exists("2/dir4/file-402.txt"));
  EXPECT_TRUE(dst.is_dir("2/dir4"));

  copy({"dir3/"}, "/3/", excluding({"*.mp3"}, true));
  EXPECT_FALSE(dst.exists("3/file-301.mp3"));
  EXPECT_EQ(dst.read("3/file-302.mpeg"), "10");
}

TEST_F(CopyExclude, WithWildcardSources) {
  copy({"dir*"}, "/4/", excluding({"*.mp3", "*.jpeg", "*.png", "*.pdf", "*.txt"}));
  EXPECT_EQ(dst.read("4/file-302.mpeg"), "10");
  for (const char* gone : {"4/file-101.png", "4/file-102.txt", "4/file-301.mp3", "4/file-401.txt", "4/dir4"}) {
    EXPECT_FALSE(dst.exists(gone)) << gone;
  }
  copy({"dir*"}, "/5", excluding({"*.mp*", "*.jpeg", "*.png", "*.pdf"}, true));
  EXPECT_EQ(dst.read("5/file-102.txt"), "3");
  EXPECT_EQ(dst.read("5/file-401.txt"), "11");
  EXPECT_EQ(dst.readlink("5/file-402.txt"), "file-401.txt");
  EXPECT_FALSE(dst.exists("5/file-302.mpeg"));
  copy({"dir*"}, "/6", excluding({"*"}, true));
  EXPECT_TRUE(dst.is_dir("6"));
  EXPECT_FALSE(dst.exists("6/file-102.txt"));
}

TEST_F(CopyExclude, ExclusionsReincludeBelowExcludedDirectories) {
  copy({"."}, "/r", excluding({"dir2", "!dir2/file-203.png"}));
  EXPECT_EQ(dst.read("r/dir2/file-203.png"), "8");
  EXPECT_FALSE(dst.exists("r/dir2/file-201.pdf"));
  EXPECT_EQ(dst.read("r/dir1/file-101.png"), "2");
}

TEST_F(CopyExclude, ANamedFileIsNotMatchedAgainstItsOwnName) {
  copy({"dir1/file-102.txt"}, "/n/", excluding({"*.txt"}));
  EXPECT_EQ(dst.read("n/file-102.txt"), "3");
}

TEST_F(CopyExclude, BadPatternsAreRejected) {
  EXPECT_THAT(copy_error({"."}, "/x", excluding({"a["})), HasSubstr("invalid excludepatterns"));
  EXPECT_THAT(copy_error({"."}, "/x", excluding({"!"})), HasSubstr("illegal exclusion pattern"));
}

// --- ADD -----------------------------------------------------------------------------------------

class Add : public Copy {
 protected:
  void SetUp() override {
    src.file("app.tar.gz", compress(TarBuilder().dir("app/").file("app/main", "binary", 0755).finish(),
                                    Compression::gzip));
    request.instruction = "ADD";
    request.unpack = true;
  }
  CopyRequest request;
};

TEST_F(Add, ExtractsLocalArchivesIntoTheDestinationDirectory) {
  const CopyStats stats = copy({"app.tar.gz"}, "/opt/", request);
  EXPECT_EQ(dst.read("opt/app/main"), "binary");
  EXPECT_EQ(stats.archives, 1u);
  // Without a trailing slash the destination is still the directory to extract into.
  copy({"app.tar.gz"}, "/x", request);
  EXPECT_EQ(dst.read("x/app/main"), "binary");
}

TEST_F(Add, UnpackFalseAndCopyKeepTheArchive) {
  request.unpack = false;
  copy({"app.tar.gz"}, "/keep/", request);
  EXPECT_EQ(dst.read("keep/app.tar.gz"), src.read("app.tar.gz"));
  CopyRequest plain;
  copy({"app.tar.gz"}, "/copy/", plain);
  EXPECT_TRUE(dst.is_file("copy/app.tar.gz"));
}

TEST_F(Add, NonArchivesAreCopied) {
  src.file("empty.tar.gz", "");
  src.file("notes.tar", "not really a tar");
  copy({"empty.tar.gz", "notes.tar"}, "/d/", request);
  EXPECT_TRUE(dst.is_file("d/empty.tar.gz"));
  EXPECT_EQ(dst.read("d/notes.tar"), "not really a tar");
}

TEST_F(Add, ArchivesFoundThroughSymlinksAndWildcardsAreExtracted) {
  src.symlink("app.tar.gz", "link.tgz");
  copy({"link.tgz"}, "/l/", request);
  EXPECT_EQ(dst.read("l/app/main"), "binary");
  copy({"*.tar.gz"}, "/w/", request);
  EXPECT_EQ(dst.read("w/app/main"), "binary");
}

TEST_F(Add, ArchivesInsideACopiedDirectoryStayArchives) {
  src.file("dir/inner.tar", TarBuilder().file("x", "x").finish());
  copy({"dir"}, "/d/", request);
  EXPECT_TRUE(dst.is_file("d/inner.tar"));
}

TEST_F(Add, ChownAppliesButChmodDoesNot) {
  request.owner = Owner{5, 6};
  request.chmod = Chmod::parse("600");
  copy({"app.tar.gz"}, "/c/", request);
  EXPECT_EQ(dst.lstat("c").st_uid, 5u);
  EXPECT_EQ(dst.lstat("c/app/main").st_uid, 5u);
  EXPECT_EQ(dst.mode("c/app/main"), 0755u);
  EXPECT_EQ(dst.mode("c"), 0755u);
}

TEST_F(Add, ExtractionThroughADestinationSymlinkStaysInTheRoot) {
  dst.mkdir("real");
  dst.symlink("/real", "opt");
  copy({"app.tar.gz"}, "/opt/", request);
  EXPECT_EQ(dst.read("real/app/main"), "binary");
}

TEST_F(Add, ADestinationThatIsAFileFails) {
  dst.file("x", "file");
  EXPECT_EQ(copy_error({"app.tar.gz"}, "/x", request), "mkdir /x: not a directory");
}

}  // namespace
}  // namespace kbuild::fileops

// --- sharing files with an immutable source ---------------------------------------------------

namespace kbuild::fileops {
namespace {

ino_t inode_of(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST_F(Copy, UnchangedFilesAreLinkedWhenAsked) {
  src.file("dir/a", "shared", 0644);
  CopyRequest request;
  request.link_unchanged_files = true;
  request.owner = Owner{::geteuid(), ::getegid()};
  copy({"dir"}, "/d/", request);
  EXPECT_EQ(dst.read("d/a"), "shared");
  EXPECT_EQ(inode_of(dst.path() + "/d/a"), inode_of(src.path() + "/dir/a"));
}

TEST_F(Copy, FilesWhoseCopyWouldDifferAreNotLinked) {
  src.file("a", "changed mode", 0644);
  src.file("b", "changed owner", 0644);
  CopyRequest chmod_request;
  chmod_request.link_unchanged_files = true;
  chmod_request.chmod = Chmod::parse("0600");
  copy({"a"}, "/a", chmod_request);
  EXPECT_NE(inode_of(dst.path() + "/a"), inode_of(src.path() + "/a"));
  EXPECT_EQ(dst.mode("a"), 0600u);
  CopyRequest chown_request;
  chown_request.link_unchanged_files = true;
  chown_request.owner = Owner{::geteuid() + 1, ::getegid()};
  copy({"b"}, "/b", chown_request);
  EXPECT_NE(inode_of(dst.path() + "/b"), inode_of(src.path() + "/b"));
}

TEST_F(Copy, FilesAreCopiedUnlessLinkingIsAsked) {
  src.file("a", "own copy", 0644);
  copy({"a"}, "/a");
  EXPECT_NE(inode_of(dst.path() + "/a"), inode_of(src.path() + "/a"));
}

}  // namespace
}  // namespace kbuild::fileops
