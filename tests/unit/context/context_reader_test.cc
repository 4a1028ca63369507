#include "engine/context/context_reader.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/context/context_digest.h"
#include "tests/unit/context/context_test_util.h"

namespace kbuild::context {
namespace {

using namespace std::chrono_literals;
using testing::exists;
using testing::lstat_of;
using testing::make_dir;
using testing::open_dir;
using testing::read_file;
using testing::read_link;
using testing::remove_tree_contents;
using testing::write_file;

constexpr uid_t kNobody = 65534;

// kbuild-context-reader, or one of its probe builds, as meson's test environment names them.
std::string program(const char* variable) {
  const char* path = std::getenv(variable);
  return path ? path : "";
}

Credentials nobody() { return Credentials{kNobody, kNobody, {kNobody}}; }

patterns::IgnoreMatcher ignore_rules(std::string_view text) {
  return patterns::IgnoreMatcher(patterns::parse_dockerignore(text));
}

std::vector<std::string> paths_of(const Manifest& m) {
  std::vector<std::string> out;
  for (const Entry& e : m.entries()) out.push_back(e.path);
  return out;
}

std::string error_of(const std::function<void()>& fn, ErrorKind* kind = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "(no error)";
}

// Runs as root: the reader drops to the caller's credentials, which needs the privilege to.
class ContextRead : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch credentials";
    ASSERT_FALSE(program("KBUILD_CONTEXT_READER").empty()) << "KBUILD_CONTEXT_READER is not set";
    ::signal(SIGPIPE, SIG_IGN);
    check(::chmod(work_.path().c_str(), 0755), "chmod", work_.path());
    ctx_ = work_.path() + "/ctx";
    make_dir(ctx_, 0755);
    store_ = work_.path() + "/store";
    make_dir(store_, 0700);
  }

  std::string new_dest() {
    std::string path = store_ + "/dest" + std::to_string(dests_++);
    make_dir(path, 0700);
    return path;
  }

  ContextReadResult read(ContextReadRequest request, const std::string& dest) {
    UniqueFd ctx = open_dir(ctx_);
    UniqueFd out = open_dir(dest);
    request.context_fd = ctx.get();
    request.dest_fd = out.get();
    if (request.reader_program.empty()) request.reader_program = program("KBUILD_CONTEXT_READER");
    return read_context(request);
  }

  ContextReadResult read_as_nobody(const std::string& dest) {
    ContextReadRequest request;
    request.caller = nobody();
    return read(request, dest);
  }

  std::string c(const std::string& rel) const { return ctx_ + "/" + rel; }

  TempDir work_;
  std::string ctx_;
  std::string store_;
  int dests_ = 0;
};

TEST_F(ContextRead, CopiesFilesDirectoriesAndSymlinksWithTheirMetadata) {
  make_dir(c("src"), 0750);
  write_file(c("src/main.c"), "int main() {}\n", 0644);
  write_file(c("tool"), "#!/bin/sh\n", 04755);
  check(::chown(c("tool").c_str(), 1234, 5678), "chown", "tool");
  check(::chmod(c("tool").c_str(), 04755), "chmod", "tool");
  check(::chmod(c("src").c_str(), 0755), "chmod", "src");
  check(::symlink("main.c", c("src/link").c_str()), "symlink", "link");
  check(::lchown(c("src/link").c_str(), 42, 43), "lchown", "link");
  check(::mkfifo(c("pipe").c_str(), 0640), "mkfifo", "pipe");
  // Device nodes are not materialized in the daemon's store.
  check(::mknod(c("null").c_str(), S_IFCHR | 0666, makedev(1, 3)), "mknod", "null");
  const struct timespec times[2] = {{1600000000, 123456789}, {1600000000, 123456789}};
  check(::utimensat(AT_FDCWD, c("src/main.c").c_str(), times, 0), "utimensat", "main.c");
  check(::utimensat(AT_FDCWD, c("src/link").c_str(), times, AT_SYMLINK_NOFOLLOW), "utimensat", "link");
  check(::utimensat(AT_FDCWD, c("src").c_str(), times, 0), "utimensat", "src");

  const std::string dest = new_dest();
  const ContextReadResult result = read_as_nobody(dest);

  EXPECT_EQ(paths_of(result.manifest), (std::vector<std::string>{"pipe", "src", "src/link", "src/main.c", "tool"}));
  EXPECT_EQ(read_file(dest + "/src/main.c"), "int main() {}\n");
  const struct stat tool = lstat_of(dest + "/tool");
  EXPECT_EQ(tool.st_mode & 07777, 04755u);
  // Owners are reset to root, as BuildKit's client does (see OwnersAreResetToRoot...).
  EXPECT_EQ(tool.st_uid, 0u);
  EXPECT_EQ(tool.st_gid, 0u);
  const struct stat main_c = lstat_of(dest + "/src/main.c");
  EXPECT_EQ(main_c.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(main_c.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(main_c.st_mode & 07777, 0644u);
  const struct stat src = lstat_of(dest + "/src");
  EXPECT_TRUE(S_ISDIR(src.st_mode));
  EXPECT_EQ(src.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(src.st_mode & 07777, 0755u);
  const struct stat link = lstat_of(dest + "/src/link");
  EXPECT_TRUE(S_ISLNK(link.st_mode));
  EXPECT_EQ(link.st_uid, 0u);
  EXPECT_EQ(link.st_gid, 0u);
  EXPECT_EQ(link.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(read_link(dest + "/src/link"), "main.c");
  EXPECT_TRUE(S_ISFIFO(lstat_of(dest + "/pipe").st_mode));
  EXPECT_FALSE(exists(dest + "/null"));

  const Entry* e = result.manifest.find("src/main.c");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->digest, store::Digest::of("int main() {}\n"));
  EXPECT_EQ(e->size, 14);
  EXPECT_EQ(e->mtime_ns, 1600000000123456789);
}

// The client's owners are the caller's, not the build's: a CI runner (uid 1001) and a laptop
// (uid 1000) must get the same cache keys for the same files, and a RUN bind mount of the
// context sees root's files, as with BuildKit.
TEST_F(ContextRead, OwnersAreResetToRootSoTheSameFilesGiveTheSameDigestWhoeverOwnsThem) {
  make_dir(c("src"), 0755);
  write_file(c("src/a.txt"), "a\n", 0644);
  check(::symlink("a.txt", c("src/link").c_str()), "symlink", "link");
  check(::mkfifo(c("pipe").c_str(), 0644), "mkfifo", "pipe");
  const auto own_all = [&](uid_t uid, gid_t gid) {
    for (const char* rel : {"src", "src/a.txt", "src/link", "pipe"}) {
      check(::lchown(c(rel).c_str(), uid, gid), "lchown", rel);
    }
  };
  own_all(1000, 1000);
  const ContextReadResult first = read_as_nobody(new_dest());
  own_all(2000, 2001);
  const std::string tree = new_dest();
  const ContextReadResult second = read_as_nobody(tree);

  EXPECT_EQ(paths_of(second.manifest), (std::vector<std::string>{"pipe", "src", "src/a.txt", "src/link"}));
  EXPECT_EQ(selection_digest(second.manifest, {}), selection_digest(first.manifest, {}));
  EXPECT_EQ(selection_digest(second.manifest, {{"src/a.txt"}, {}}), selection_digest(first.manifest, {{"src/a.txt"}, {}}));
  for (const Entry& e : second.manifest.entries()) {
    EXPECT_EQ(e.uid, 0u) << e.path;
    EXPECT_EQ(e.gid, 0u) << e.path;
    const struct stat st = lstat_of(tree + "/" + e.path);
    EXPECT_EQ(st.st_uid, 0u) << e.path;
    EXPECT_EQ(st.st_gid, 0u) << e.path;
  }
}

TEST_F(ContextRead, NeverFollowsASymlinkOutOfTheContext) {
  check(::symlink("/etc/passwd", c("passwd").c_str()), "symlink", "passwd");
  check(::symlink("/etc", c("etc-dir").c_str()), "symlink", "etc-dir");
  check(::symlink("../../../../../../etc/shadow", c("up").c_str()), "symlink", "up");
  const std::string dest = new_dest();

  ContextReadRequest request;
  request.caller = nobody();
  // BuildKit's FollowPaths resolve symlinks into include patterns, but only inside the context.
  request.follow_paths = {"etc-dir/passwd", "passwd", "up"};
  const ContextReadResult result = read(request, dest);

  EXPECT_EQ(paths_of(result.manifest), (std::vector<std::string>{"etc-dir", "passwd", "up"}));
  EXPECT_TRUE(S_ISLNK(lstat_of(dest + "/passwd").st_mode));
  EXPECT_EQ(read_link(dest + "/passwd"), "/etc/passwd");
  EXPECT_EQ(read_link(dest + "/etc-dir"), "/etc");
  EXPECT_EQ(read_link(dest + "/up"), "../../../../../../etc/shadow");
  EXPECT_FALSE(exists(dest + "/etc"));
}

TEST_F(ContextRead, FollowPathsTakeTheTargetOfALinkInsideTheContext) {
  make_dir(c("real"));
  write_file(c("real/a.txt"), "a");
  write_file(c("other.txt"), "o");
  check(::symlink("real", c("alias").c_str()), "symlink", "alias");
  const std::string dest = new_dest();
  ContextReadRequest request;
  request.caller = nobody();
  request.follow_paths = {"alias"};
  const ContextReadResult result = read(request, dest);
  EXPECT_EQ(paths_of(result.manifest), (std::vector<std::string>{"alias", "real", "real/a.txt"}));
}

TEST_F(ContextRead, AppliesDockerignoreWithReincludesInsideIgnoredDirectories) {
  make_dir(c("build"));
  make_dir(c("build/keep"));
  write_file(c("build/out.o"), "o");
  write_file(c("build/keep/me.txt"), "me");
  write_file(c("build/readme.md"), "r");
  write_file(c("app.log"), "log");
  write_file(c("main.go"), "go");
  make_dir(c("node_modules"));
  write_file(c("node_modules/x.js"), "x");
  const auto ignore = ignore_rules("build\n!build/keep/me.txt\n!build/*.md\n*.log\nnode_modules\n");

  const std::string dest = new_dest();
  ContextReadRequest request;
  request.caller = nobody();
  request.ignore = &ignore;
  const ContextReadResult result = read(request, dest);

  EXPECT_EQ(paths_of(result.manifest),
            (std::vector<std::string>{"build", "build/keep", "build/keep/me.txt", "build/readme.md", "main.go"}));
  EXPECT_EQ(read_file(dest + "/build/keep/me.txt"), "me");
  EXPECT_FALSE(exists(dest + "/build/out.o"));
  EXPECT_FALSE(exists(dest + "/node_modules"));
}

TEST_F(ContextRead, IncludePatternsSendOnlyWhatTheBuildNeeds) {
  make_dir(c("src"));
  make_dir(c("docs"));
  write_file(c("src/a.c"), "a");
  write_file(c("src/b.h"), "b");
  write_file(c("docs/index.md"), "d");
  write_file(c("go.mod"), "m");
  const std::string dest = new_dest();
  ContextReadRequest request;
  request.caller = nobody();
  request.include_patterns = {"src/*.c", "go.mod"};
  const ContextReadResult result = read(request, dest);
  EXPECT_EQ(paths_of(result.manifest), (std::vector<std::string>{"go.mod", "src", "src/a.c"}));
}

TEST_F(ContextRead, UnreadableFileFailsWithAPermissionErrorNamingIt) {
  write_file(c("public.txt"), "hello");
  write_file(c("secret.txt"), "root only", 0600);
  const std::string dest = new_dest();
  ErrorKind kind = ErrorKind::internal;
  const std::string message = error_of([&] { read_as_nobody(dest); }, &kind);
  EXPECT_EQ(message, "failed to read context: open secret.txt: permission denied");
  EXPECT_EQ(kind, ErrorKind::permission);

  // Ignored, it is neither read nor a reason to fail.
  const auto ignore = ignore_rules("secret.txt\n");
  ContextReadRequest request;
  request.caller = nobody();
  request.ignore = &ignore;
  EXPECT_EQ(paths_of(read(request, new_dest()).manifest), (std::vector<std::string>{"public.txt"}));
  // Root as the caller reads what root may read.
  request.ignore = nullptr;
  request.caller = Credentials{0, 0, {}};
  EXPECT_EQ(paths_of(read(request, new_dest()).manifest), (std::vector<std::string>{"public.txt", "secret.txt"}));
}

TEST_F(ContextRead, UnreadableFileFailsEvenWhenItsHashIsCached) {
  write_file(c("secret.txt"), "root only", 0644);
  std::this_thread::sleep_for(60ms);
  MemoryHashCache cache;
  ContextReadRequest request;
  request.caller = nobody();
  request.hash_cache = &cache;
  read(request, new_dest());
  ASSERT_EQ(cache.size(), 1u);
  // The key changes with chmod, but the check must not depend on that.
  check(::chmod(c("secret.txt").c_str(), 0600), "chmod", "secret.txt");
  EXPECT_EQ(error_of([&] { read(request, new_dest()); }), "failed to read context: open secret.txt: permission denied");
}

TEST_F(ContextRead, UnreadableDirectoryFailsUnlessIgnored) {
  make_dir(c("private"), 0700);
  write_file(c("private/key"), "k", 0600);
  write_file(c("ok.txt"), "ok");
  EXPECT_EQ(error_of([&] { read_as_nobody(new_dest()); }), "failed to read context: open private: permission denied");

  const auto ignore = ignore_rules("private\n");
  ContextReadRequest request;
  request.caller = nobody();
  request.ignore = &ignore;
  const ContextReadResult result = read(request, new_dest());
  EXPECT_EQ(paths_of(result.manifest), (std::vector<std::string>{"ok.txt"}));
  // Walked into for a possible re-include, its permission error is not one (fsutil).
  const auto reinclude = ignore_rules("private\n!private/*.pub\n");
  request.ignore = &reinclude;
  EXPECT_EQ(paths_of(read(request, new_dest()).manifest), (std::vector<std::string>{"ok.txt"}));
}

TEST_F(ContextRead, ReaderRunsAsTheCallerWithNoCapabilitiesAndOnlyItsOwnFds) {
  // Something of the daemon's that must not reach the reader's environment.
  ::setenv("KBUILD_DAEMON_SECRET", "daemon-secret-marker", 1);
  write_file(c("a"), "a");
  // fds the daemon has open without O_CLOEXEC must not reach the reader.
  UniqueFd leaked(::open("/etc/hostname", O_RDONLY));
  UniqueFd leaked_dir(::open("/", O_RDONLY | O_DIRECTORY));
  ASSERT_TRUE(leaked && leaked_dir);

  ContextReadRequest request;
  request.caller = Credentials{kNobody, kNobody, {kNobody, 100}};
  // A probe build of the reader throws a report of its own state from where the walk begins.
  request.reader_program = program("KBUILD_CONTEXT_READER_REPORT");
  const std::string message = error_of([&] { read(request, new_dest()); });
  EXPECT_EQ(message,
            "failed to read context: fds=0,1,2,3,4,5, Uid: 65534 65534 65534 65534 Gid: 65534 65534 65534 65534 "
            "Groups: 100 65534  CapPrm: 0000000000000000 CapEff: 0000000000000000 CapAmb: 0000000000000000 "
            "NoNewPrivs: 1 dumpable=0 environ=0 exe=kbuild-context-reader-report");
  ::unsetenv("KBUILD_DAEMON_SECRET");
}

TEST_F(ContextRead, HashCacheSparesTheContentOfUnchangedFiles) {
  make_dir(c("d"));
  for (int i = 0; i < 20; ++i) write_file(c("d/f" + std::to_string(i)), std::string(1000 + i, 'x'));
  write_file(c("big"), std::string(300 * 1024, 'b'));
  std::this_thread::sleep_for(60ms);  // older than the timestamp granularity: trusted (racy git)
  MemoryHashCache cache;
  ContextReadRequest request;
  request.caller = nobody();
  request.hash_cache = &cache;

  const std::string first_dest = new_dest();
  const ContextReadResult first = read(request, first_dest);
  EXPECT_EQ(first.stats.files_received, 21u);
  EXPECT_EQ(first.stats.bytes_received, 300u * 1024 + 20 * 1000 + 190);
  EXPECT_EQ(cache.size(), 21u);

  // Nothing changed: the previous tree is the context, and not one byte is read.
  UniqueFd first_fd = open_dir(first_dest);
  request.previous = PreviousContext{first_fd.get(), &first.manifest};
  const std::string unchanged_dest = new_dest();
  const ContextReadResult second = read(request, unchanged_dest);
  EXPECT_TRUE(second.unchanged);
  EXPECT_EQ(second.stats.bytes_received, 0u);
  EXPECT_EQ(second.manifest, first.manifest);

  // One file changed: only it is read; the others are linked from the previous tree.
  write_file(c("d/f3"), "changed");
  const std::string third_dest = new_dest();
  const ContextReadResult third = read(request, third_dest);
  EXPECT_FALSE(third.unchanged);
  EXPECT_EQ(third.stats.files_received, 1u);
  EXPECT_EQ(third.stats.bytes_received, 7u);
  EXPECT_EQ(third.stats.files_linked, 20u);
  EXPECT_EQ(read_file(third_dest + "/d/f3"), "changed");
  EXPECT_EQ(read_file(third_dest + "/big"), std::string(300 * 1024, 'b'));
  EXPECT_EQ(lstat_of(third_dest + "/big").st_ino, lstat_of(first_dest + "/big").st_ino);
  // The changed file is too recent to be trusted: it is read again next time, and so is
  // nothing else.
  UniqueFd third_fd = open_dir(third_dest);
  request.previous = PreviousContext{third_fd.get(), &third.manifest};
  const ContextReadResult fourth = read(request, new_dest());
  EXPECT_EQ(fourth.stats.files_received, 1u);
  EXPECT_EQ(fourth.stats.bytes_received, 7u);

  // Without a previous tree the cached digests have no content to go with: all is read.
  request.previous.reset();
  const ContextReadResult fresh = read(request, new_dest());
  EXPECT_EQ(fresh.stats.files_received, 21u);
  EXPECT_EQ(fresh.stats.hash_cache_hits, 20u);
}

TEST_F(ContextRead, ManyFilesAreWrittenWithTheirContentAndMetadata) {
  // Enough files that they are created on a second thread ahead of their contents.
  for (int d = 0; d < 7; ++d) {
    make_dir(c("d" + std::to_string(d)));
    for (int f = 0; f < 40; ++f) {
      write_file(c("d" + std::to_string(d) + "/f" + std::to_string(f)), std::string(f * 37 + d, 'a' + d), 0644 + f % 2);
    }
  }
  const std::string dest = new_dest();
  const ContextReadResult result = read_as_nobody(dest);
  EXPECT_EQ(result.stats.files_received, 280u);
  for (int d = 0; d < 7; ++d) {
    for (int f = 0; f < 40; ++f) {
      const std::string path = "d" + std::to_string(d) + "/f" + std::to_string(f);
      const std::string content(f * 37 + d, 'a' + d);
      EXPECT_EQ(read_file(dest + "/" + path), content);
      const struct stat st = lstat_of(dest + "/" + path);
      EXPECT_EQ(st.st_mode & 07777, 0644u + f % 2) << path;
      EXPECT_EQ(st.st_mtim.tv_nsec, lstat_of(c(path)).st_mtim.tv_nsec) << path;
      EXPECT_EQ(result.manifest.find(path)->digest, store::Digest::of(content)) << path;
    }
  }
}

TEST_F(ContextRead, UpdatingThePreviousTreeReplacesChangedFilesWithNewInodes) {
  make_dir(c("d"));
  for (int i = 0; i < 5; ++i) write_file(c("d/f" + std::to_string(i)), "file " + std::to_string(i));
  write_file(c("big"), std::string(9 << 20, 'b'));  // hashed on a second thread
  make_dir(c("gone"));
  write_file(c("gone/x"), "x");
  write_file(c("one"), "shared");
  check(::link(c("one").c_str(), c("two").c_str()), "link", "two");
  check(::symlink("d/f0", c("ln").c_str()), "symlink", "ln");
  std::this_thread::sleep_for(60ms);
  MemoryHashCache cache;
  ContextReadRequest request;
  request.caller = nobody();
  request.hash_cache = &cache;
  const std::string tree = new_dest();
  const ContextReadResult first = read(request, tree);
  EXPECT_EQ(read_file(tree + "/big"), std::string(9 << 20, 'b'));
  // A layer shares inodes with the tree: what it holds must never change.
  const std::string layer = new_dest();
  for (const char* name : {"f2", "f3"}) {
    check(::link((tree + "/d/" + name).c_str(), (layer + "/" + name).c_str()), "link", name);
  }
  const ino_t unchanged = lstat_of(tree + "/d/f1").st_ino;
  const ino_t shared = lstat_of(tree + "/one").st_ino;

  write_file(c("d/f3"), "changed");
  check(::chmod(c("d/f2").c_str(), 0604), "chmod", "f2");  // same content: copied, not read
  remove_tree_contents(c("gone"));
  check(::rmdir(c("gone").c_str()), "rmdir", "gone");
  make_dir(c("new"));
  write_file(c("new/n.txt"), "new");
  check(::unlink(c("ln").c_str()), "unlink", "ln");
  check(::symlink("d/f1", c("ln").c_str()), "symlink", "ln");
  std::this_thread::sleep_for(60ms);
  read(request, new_dest());  // another read learned the new stat data of d/f2

  UniqueFd ctx = open_dir(ctx_);
  UniqueFd tree_fd = open_dir(tree);
  request.context_fd = ctx.get();
  request.previous = PreviousContext{tree_fd.get(), &first.manifest};
  request.update_previous = true;
  request.reader_program = program("KBUILD_CONTEXT_READER");
  bool touched = false;
  request.previous_touched = &touched;
  const ContextReadResult updated = read_context(request);
  EXPECT_TRUE(updated.updated_previous);
  EXPECT_TRUE(touched);
  EXPECT_EQ(updated.stats.files_received, 2u);  // d/f3 and new/n.txt: too recent to trust
  EXPECT_EQ(updated.stats.files_copied, 1u);    // d/f2: its new stat data has a digest
  EXPECT_EQ(read_file(tree + "/d/f3"), "changed");
  EXPECT_EQ(read_file(layer + "/f3"), "file 3");
  EXPECT_EQ(lstat_of(tree + "/d/f2").st_mode & 07777, 0604u);
  EXPECT_EQ(lstat_of(layer + "/f2").st_mode & 07777, 0644u);
  EXPECT_EQ(read_file(tree + "/d/f2"), "file 2");
  EXPECT_EQ(lstat_of(tree + "/d/f1").st_ino, unchanged);
  EXPECT_EQ(lstat_of(tree + "/one").st_ino, shared);
  EXPECT_EQ(lstat_of(tree + "/two").st_ino, shared);
  EXPECT_FALSE(exists(tree + "/gone"));
  EXPECT_EQ(read_file(tree + "/new/n.txt"), "new");
  EXPECT_EQ(read_link(tree + "/ln"), "d/f1");
  EXPECT_EQ(read_file(tree + "/big"), std::string(9 << 20, 'b'));

  // The same as a read into an empty tree, in the manifest and on disk.
  request.previous.reset();
  request.update_previous = false;
  const std::string fresh_tree = new_dest();
  const ContextReadResult fresh = read(request, fresh_tree);
  ASSERT_EQ(updated.manifest.size(), fresh.manifest.size());
  for (std::size_t i = 0; i < fresh.manifest.size(); ++i) {
    EXPECT_EQ(updated.manifest.entries()[i], fresh.manifest.entries()[i]) << fresh.manifest.entries()[i].path;
  }
  for (const Entry& e : fresh.manifest.entries()) {
    const struct stat a = lstat_of(tree + "/" + e.path);
    const struct stat b = lstat_of(fresh_tree + "/" + e.path);
    EXPECT_EQ(a.st_mode, b.st_mode) << e.path;
    EXPECT_EQ(a.st_uid, b.st_uid) << e.path;
    EXPECT_EQ(a.st_mtim.tv_sec, b.st_mtim.tv_sec) << e.path;
    EXPECT_EQ(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec) << e.path;
  }
}

TEST_F(ContextRead, AFailedUpdateBeforeAnyChangeLeavesThePreviousTreeAsItWas) {
  write_file(c("a.txt"), "a");
  ContextReadRequest request;
  request.caller = nobody();
  const std::string tree = new_dest();
  const ContextReadResult first = read(request, tree);
  write_file(c("secret.txt"), "secret", 0600);
  UniqueFd ctx = open_dir(ctx_);
  UniqueFd tree_fd = open_dir(tree);
  request.context_fd = ctx.get();
  request.previous = PreviousContext{tree_fd.get(), &first.manifest};
  request.update_previous = true;
  request.reader_program = program("KBUILD_CONTEXT_READER");
  bool touched = false;
  request.previous_touched = &touched;
  ErrorKind kind{};
  EXPECT_EQ(error_of([&] { read_context(request); }, &kind),
            "failed to read context: open secret.txt: permission denied");
  EXPECT_EQ(kind, ErrorKind::permission);
  EXPECT_FALSE(touched);
  EXPECT_FALSE(exists(tree + "/secret.txt"));
  EXPECT_EQ(read_file(tree + "/a.txt"), "a");
}

TEST_F(ContextRead, CachedDigestCopiesContentFromAnyPathOfThePreviousTree) {
  write_file(c("a.txt"), "same bytes");
  std::this_thread::sleep_for(60ms);
  MemoryHashCache cache;
  ContextReadRequest request;
  request.caller = nobody();
  request.hash_cache = &cache;
  read(request, new_dest());

  // A previous tree from another client directory that holds the same bytes elsewhere.
  Entry other;
  other.path = "elsewhere/b.txt";
  other.type = EntryType::regular;
  other.mode = 0600;
  other.size = 10;
  other.digest = store::Digest::of("same bytes");
  Entry dir;
  dir.path = "elsewhere";
  dir.type = EntryType::directory;
  const std::string previous_dir = new_dest();
  make_dir(previous_dir + "/elsewhere");
  write_file(previous_dir + "/elsewhere/b.txt", "same bytes", 0600);
  const Manifest previous({dir, other});
  UniqueFd previous_fd = open_dir(previous_dir);
  request.previous = PreviousContext{previous_fd.get(), &previous};

  const std::string dest = new_dest();
  const ContextReadResult result = read(request, dest);
  EXPECT_EQ(result.stats.bytes_received, 0u);
  EXPECT_EQ(result.stats.files_copied, 1u);
  EXPECT_EQ(read_file(dest + "/a.txt"), "same bytes");
  EXPECT_EQ(lstat_of(dest + "/a.txt").st_mode & 07777, 0644u);
}

TEST_F(ContextRead, HardLinksStayHardLinksAndAreReadOnce) {
  write_file(c("one"), "shared");
  check(::link(c("one").c_str(), c("two").c_str()), "link", "two");
  const std::string dest = new_dest();
  const ContextReadResult result = read_as_nobody(dest);
  EXPECT_EQ(result.stats.files_received, 1u);
  EXPECT_EQ(lstat_of(dest + "/one").st_ino, lstat_of(dest + "/two").st_ino);
  EXPECT_EQ(result.manifest.find("two")->hardlink_to, "one");
  EXPECT_EQ(result.manifest.find("two")->digest, store::Digest::of("shared"));
}

TEST_F(ContextRead, ContextDigestIgnoresMtimeButNotContentOrMode) {
  make_dir(c("src"));
  write_file(c("src/a"), "alpha");
  write_file(c("src/b"), "beta");
  write_file(c("other"), "o");
  const Selection src{{"src"}, {}};
  const auto digest = [&] { return selection_digest(read_as_nobody(new_dest()).manifest, src); };
  const store::Digest before = digest();

  const struct timespec later[2] = {{1700000000, 0}, {1700000000, 0}};
  check(::utimensat(AT_FDCWD, c("src/a").c_str(), later, 0), "utimensat", "a");
  check(::utimensat(AT_FDCWD, c("src").c_str(), later, 0), "utimensat", "src");
  write_file(c("other"), "changed outside the selection");
  EXPECT_EQ(digest(), before);

  write_file(c("src/a"), "ALPHA");
  const store::Digest content_changed = digest();
  EXPECT_NE(content_changed, before);

  check(::chmod(c("src/b").c_str(), 0755), "chmod", "b");
  EXPECT_NE(digest(), content_changed);
}

TEST_F(ContextRead, CancelStopsAWaitingRead) {
  write_file(c("a"), "a");
  UniqueFd cancel(::eventfd(0, EFD_CLOEXEC));
  ContextReadRequest request;
  request.caller = nobody();
  request.cancel_fd = cancel.get();
  request.reader_program = program("KBUILD_CONTEXT_READER_STALL");  // sleeps 30 s before the walk
  std::thread canceler([&] {
    std::this_thread::sleep_for(100ms);
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(cancel.get(), &one, sizeof(one));
  });
  const auto start = std::chrono::steady_clock::now();
  ErrorKind kind = ErrorKind::internal;
  error_of([&] { read(request, new_dest()); }, &kind);
  canceler.join();
  EXPECT_EQ(kind, ErrorKind::canceled);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST_F(ContextRead, ClientFdOpenedWithOPathWorks) {
  write_file(c("a"), "a");
  UniqueFd ctx(::open(ctx_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  const std::string dest = new_dest();
  UniqueFd out = open_dir(dest);
  ContextReadRequest request;
  request.caller = nobody();
  request.context_fd = ctx.get();
  request.dest_fd = out.get();
  request.reader_program = program("KBUILD_CONTEXT_READER");
  EXPECT_EQ(paths_of(read_context(request).manifest), (std::vector<std::string>{"a"}));
}

}  // namespace
}  // namespace kbuild::context
