#include "engine/context/tar_context.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/context/context_digest.h"
#include "tests/unit/context/context_test_util.h"

namespace kbuild::context {
namespace {

using testing::exists;
using testing::lstat_of;
using testing::make_dir;
using testing::open_dir;
using testing::read_file;
using testing::read_link;

// Writes tar members exactly as given, hostile names included.
class TarBuilder {
 public:
  explicit TarBuilder(bool gzip = false) : a_(archive_write_new()) {
    archive_write_set_format_pax(a_);
    if (gzip) archive_write_add_filter_gzip(a_);
    archive_write_set_bytes_in_last_block(a_, 1);
    archive_write_open(a_, &out_, nullptr, &TarBuilder::append, nullptr);
  }
  ~TarBuilder() { archive_write_free(a_); }

  // The members added after this carry these owners (0:0 until then).
  TarBuilder& owner(int uid, int gid) {
    uid_ = uid;
    gid_ = gid;
    return *this;
  }
  TarBuilder& file(const std::string& path, const std::string& content, int mode = 0644) {
    return add(path, AE_IFREG, mode, content, "", "");
  }
  TarBuilder& dir(const std::string& path, int mode = 0755) { return add(path, AE_IFDIR, mode, "", "", ""); }
  TarBuilder& symlink(const std::string& path, const std::string& target) { return add(path, AE_IFLNK, 0777, "", target, ""); }
  TarBuilder& hardlink(const std::string& path, const std::string& target) { return add(path, AE_IFREG, 0644, "", "", target); }
  TarBuilder& device(const std::string& path) { return add(path, AE_IFCHR, 0666, "", "", ""); }

  std::string finish() {
    archive_write_close(a_);
    return out_;
  }

 private:
  static la_ssize_t append(struct archive*, void* data, const void* buffer, size_t size) {
    static_cast<std::string*>(data)->append(static_cast<const char*>(buffer), size);
    return static_cast<la_ssize_t>(size);
  }

  TarBuilder& add(const std::string& path, unsigned type, int mode, const std::string& content, const std::string& symlink,
                  const std::string& hardlink) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, path.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, static_cast<mode_t>(mode));
    archive_entry_set_uid(e, uid_);
    archive_entry_set_gid(e, gid_);
    archive_entry_set_mtime(e, 1600000000, 500);
    archive_entry_set_size(e, static_cast<la_int64_t>(content.size()));
    if (!symlink.empty()) archive_entry_set_symlink(e, symlink.c_str());
    if (!hardlink.empty()) {
      archive_entry_set_hardlink(e, hardlink.c_str());
      archive_entry_set_size(e, 0);
    }
    archive_write_header(a_, e);
    if (!content.empty()) archive_write_data(a_, content.data(), content.size());
    archive_entry_free(e);
    return *this;
  }

  struct archive* a_;
  std::string out_;
  int uid_ = 0;
  int gid_ = 0;
};

std::vector<std::string> paths_of(const Manifest& m) {
  std::vector<std::string> out;
  for (const Entry& e : m.entries()) out.push_back(e.path);
  return out;
}

class TarContext : public ::testing::Test {
 protected:
  void SetUp() override {
    dest_ = work_.path() + "/dest";
    make_dir(dest_, 0700);
  }

  TarContextResult unpack(const std::string& tar, TarContextRequest request = {}) {
    UniqueFd fd(::memfd_create("ctx.tar", MFD_CLOEXEC));
    testing::write_file("/proc/self/fd/" + std::to_string(fd.get()), tar);
    UniqueFd dest = open_dir(dest_);
    request.tar_fd = fd.get();
    request.dest_fd = dest.get();
    return read_tar_context(request);
  }

  std::string refused(const std::string& tar) {
    std::string message = "(accepted)";
    try {
      unpack(tar);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::user);
      message = e.what();
    }
    std::vector<std::string> beside;
    DIR* d = ::opendir(work_.path().c_str());
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') beside.push_back(e->d_name);
    }
    ::closedir(d);
    EXPECT_EQ(beside, std::vector<std::string>{"dest"});
    testing::remove_tree_contents(dest_);
    return message;
  }

  TempDir work_;
  std::string dest_;
};

TEST_F(TarContext, UnpacksFilesDirectoriesAndLinksWithTheirMetadata) {
  const std::string tar = TarBuilder()
                              .dir("./")
                              .owner(1000, 100)
                              .file("./a/b/c.txt", "deep", 0640)
                              .owner(0, 0)
                              .dir("src", 0750)
                              .file("src/main.c", "int main;", 04755)
                              .symlink("src/link", "/etc/passwd")
                              .hardlink("src/again", "src/main.c")
                              .device("dev")
                              .finish();
  const TarContextResult result = unpack(tar);
  EXPECT_EQ(paths_of(result.manifest),
            (std::vector<std::string>{"a", "a/b", "a/b/c.txt", "src", "src/again", "src/link", "src/main.c"}));
  EXPECT_EQ(read_file(dest_ + "/a/b/c.txt"), "deep");
  const struct stat deep = lstat_of(dest_ + "/a/b/c.txt");
  EXPECT_EQ(deep.st_uid, 0u);  // the tar's owners are reset (see ResetsOwners...)
  EXPECT_EQ(deep.st_gid, 0u);
  EXPECT_EQ(deep.st_mode & 07777, 0640u);
  EXPECT_EQ(deep.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(deep.st_mtim.tv_nsec, 500);
  EXPECT_EQ(lstat_of(dest_ + "/a").st_mode & 07777, 0755u);  // implied parent
  EXPECT_EQ(lstat_of(dest_ + "/src").st_mode & 07777, 0750u);
  EXPECT_EQ(lstat_of(dest_ + "/src/main.c").st_mode & 07777, 04755u);
  EXPECT_EQ(read_link(dest_ + "/src/link"), "/etc/passwd");
  EXPECT_EQ(lstat_of(dest_ + "/src/again").st_ino, lstat_of(dest_ + "/src/main.c").st_ino);
  EXPECT_EQ(result.manifest.find("src/again")->digest, store::Digest::of("int main;"));
  EXPECT_EQ(result.manifest.find("src/again")->hardlink_to, "src/main.c");
  EXPECT_FALSE(exists(dest_ + "/dev"));
}

// As for a context directory: whoever made the tar, the same files give the same cache keys.
TEST_F(TarContext, ResetsOwnersSoTheSameFilesGiveTheSameDigestWhoeverMadeTheTar) {
  const auto tar_owned_by = [](int uid, int gid) {
    return TarBuilder()
        .owner(uid, gid)
        .dir("src")
        .file("src/a.txt", "a\n")
        .symlink("src/link", "a.txt")
        .hardlink("src/again", "src/a.txt")
        .finish();
  };
  const TarContextResult first = unpack(tar_owned_by(1000, 1000));
  testing::remove_tree_contents(dest_);
  const TarContextResult second = unpack(tar_owned_by(2000, 2001));

  EXPECT_EQ(second.manifest, first.manifest);
  EXPECT_EQ(selection_digest(second.manifest, {}), selection_digest(first.manifest, {}));
  for (const Entry& e : second.manifest.entries()) {
    EXPECT_EQ(e.uid, 0u) << e.path;
    EXPECT_EQ(e.gid, 0u) << e.path;
    const struct stat st = lstat_of(dest_ + "/" + e.path);
    EXPECT_EQ(st.st_uid, 0u) << e.path;
    EXPECT_EQ(st.st_gid, 0u) << e.path;
  }
}

TEST_F(TarContext, AppliesTheDockerignoreTheTarCarries) {
  const std::string tar = TarBuilder()
                              .file("Dockerfile", "FROM scratch\n")
                              .file("build/out.o", "o")
                              .file("build/keep.txt", "k")
                              .file("app.log", "l")
                              .file("main.c", "m")
                              .file(".dockerignore", "build\n!build/keep.txt\n*.log\nDockerfile\n")
                              .finish();
  TarContextRequest request;
  request.capture = {"Dockerfile"};
  const TarContextResult result = unpack(tar, request);
  EXPECT_EQ(result.ignore_file, ".dockerignore");
  EXPECT_EQ(paths_of(result.manifest), (std::vector<std::string>{".dockerignore", "build", "build/keep.txt", "main.c"}));
  EXPECT_FALSE(exists(dest_ + "/build/out.o"));
  EXPECT_FALSE(exists(dest_ + "/app.log"));
  EXPECT_FALSE(exists(dest_ + "/Dockerfile"));
  // Ignored, yet the build reads it, as BuildKit does.
  EXPECT_EQ(result.captured.at("Dockerfile"), "FROM scratch\n");
}

TEST_F(TarContext, TheDockerfilesOwnIgnoreFileWins) {
  const std::string tar = TarBuilder()
                              .file(".dockerignore", "a\n")
                              .file("sub/Dockerfile", "FROM scratch\n")
                              .file("sub/Dockerfile.dockerignore", "b\n")
                              .file("a", "a")
                              .file("b", "b")
                              .finish();
  TarContextRequest request;
  request.dockerfile_path = "sub/Dockerfile";
  const TarContextResult result = unpack(tar, request);
  EXPECT_EQ(result.ignore_file, "sub/Dockerfile.dockerignore");
  EXPECT_EQ(paths_of(result.manifest),
            (std::vector<std::string>{".dockerignore", "a", "sub", "sub/Dockerfile", "sub/Dockerfile.dockerignore"}));
}

TEST_F(TarContext, IncludePatternsKeepOnlyWhatTheBuildNeeds) {
  const std::string tar = TarBuilder().file("src/a.c", "a").file("src/b.h", "b").file("docs/x", "x").finish();
  TarContextRequest request;
  request.include_patterns = {"src/*.c"};
  EXPECT_EQ(paths_of(unpack(tar, request).manifest), (std::vector<std::string>{"src", "src/a.c"}));
}

TEST_F(TarContext, HostileMembersAreRefused) {
  EXPECT_EQ(refused(TarBuilder().file("../evil", "x").finish()), "invalid tar context: \"../evil\": path leaves the context");
  EXPECT_EQ(refused(TarBuilder().file("a/../../evil", "x").finish()),
            "invalid tar context: \"a/../../evil\": path leaves the context");
  EXPECT_EQ(refused(TarBuilder().file("/etc/evil", "x").finish()), "invalid tar context: \"/etc/evil\": absolute path");
  EXPECT_EQ(refused(TarBuilder().symlink("l", work_.path()).file("l/evil", "x").finish()),
            "\"l/evil\": parent is a symlink, not a directory");
  EXPECT_EQ(refused(TarBuilder().symlink("l", "/").file("l/etc/evil", "x").finish()),
            "\"l\": is not a directory but has entries below it");
  EXPECT_EQ(refused(TarBuilder().hardlink("h", "../../etc/passwd").finish()),
            "invalid tar context: \"../../etc/passwd\": path leaves the context");
  EXPECT_EQ(refused(TarBuilder().hardlink("h", "/etc/passwd").finish()), "invalid tar context: \"/etc/passwd\": absolute path");
  EXPECT_EQ(refused(TarBuilder().hardlink("h", "missing").finish()), "\"h\": hard link target \"missing\" is not an earlier file");
  EXPECT_EQ(refused(TarBuilder().dir("d").hardlink("h", "d").finish()), "\"h\": hard link target \"d\" is not an earlier file");
  EXPECT_EQ(refused(TarBuilder().symlink("l", "/etc").hardlink("l/passwd", "x").finish()),
            "\"l/passwd\": hard link target \"x\" is not an earlier file");
  EXPECT_NE(refused("this is not a tar stream at all, just some text").find("invalid tar context"), std::string::npos);
}

TEST_F(TarContext, ALaterMemberReplacesAnEarlierOne) {
  const std::string tar = TarBuilder()
                              .file("f", "first")
                              .file("f", "second")
                              .file("d/x", "x")
                              .file("d", "now a file")
                              .symlink("s", "a")
                              .dir("s")
                              .file("s/y", "y")
                              .finish();
  const TarContextResult result = unpack(tar);
  EXPECT_EQ(read_file(dest_ + "/f"), "second");
  EXPECT_EQ(read_file(dest_ + "/d"), "now a file");
  EXPECT_EQ(read_file(dest_ + "/s/y"), "y");
  EXPECT_EQ(paths_of(result.manifest), (std::vector<std::string>{"d", "f", "s", "s/y"}));
}

TEST_F(TarContext, AHardLinkOutlivesTheIgnoredFileItSharesAnInodeWith) {
  const std::string tar = TarBuilder()
                              .file("ignored/orig", "shared")
                              .hardlink("kept", "ignored/orig")
                              .hardlink("kept2", "ignored/orig")
                              .file(".dockerignore", "ignored\n")
                              .finish();
  const TarContextResult result = unpack(tar);
  EXPECT_EQ(read_file(dest_ + "/kept"), "shared");
  EXPECT_EQ(result.manifest.find("kept")->hardlink_to, "");
  EXPECT_EQ(result.manifest.find("kept2")->hardlink_to, "kept");
  EXPECT_FALSE(exists(dest_ + "/ignored"));
}

TEST_F(TarContext, CompressedStreamsAreRead) {
  const std::string tar = TarBuilder(true).file("a", std::string(100000, 'a')).finish();
  const TarContextResult result = unpack(tar);
  EXPECT_EQ(result.manifest.find("a")->digest, store::Digest::of(std::string(100000, 'a')));
}

}  // namespace
}  // namespace kbuild::context
