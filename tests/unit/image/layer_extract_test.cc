#include "engine/image/layer_extract.h"

#include <archive.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "engine/image/layer_tar.h"
#include "tests/unit/image/image_test_util.h"

namespace kbuild::image {
namespace {

using testing::open_dir;
using testing::read_file;
using testing::TarBuilder;
using testing::write_file;

bool is_root() { return ::geteuid() == 0; }

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  check(::lstat(path.c_str(), &st), "lstat", path);
  return st;
}

std::string xattr(const std::string& path, const char* name) {
  char buffer[256];
  ssize_t n = ::lgetxattr(path.c_str(), name, buffer, sizeof buffer);
  return n < 0 ? std::string() : std::string(buffer, static_cast<size_t>(n));
}

std::string compress(const std::string& data, int (*add_filter)(struct archive*)) {
  std::string out;
  struct archive* a = archive_write_new();
  add_filter(a);
  archive_write_set_format_raw(a);
  archive_write_set_bytes_per_block(a, 0);
  archive_write_open2(
      a, &out, nullptr,
      [](struct archive*, void* self, const void* d, size_t n) -> la_ssize_t {
        static_cast<std::string*>(self)->append(static_cast<const char*>(d), n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr, nullptr);
  archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  archive_write_header(a, e);
  archive_write_data(a, data.data(), data.size());
  archive_entry_free(e);
  archive_write_free(a);
  return out;
}

std::string zstd_compress(const std::string& data) { return compress(data, archive_write_add_filter_zstd); }

class LayerExtractTest : public ::testing::Test {
 protected:
  std::string root() const { return work_.path() + "/root"; }
  std::string outside() const { return work_.path() + "/outside"; }

  void SetUp() override {
    check(::mkdir(root().c_str(), 0755), "mkdir");
    check(::mkdir(outside().c_str(), 0755), "mkdir");
  }

  ExtractResult extract(const std::string& blob, ExtractOptions options = {}) {
    std::string path = work_.path() + "/layer";
    write_file(path, blob);
    UniqueFd fd = testing::open_read(path);
    UniqueFd dir = open_dir(root());
    if (!is_root()) options.set_owners = false;
    return extract_layer(fd.get(), dir.get(), options);
  }

  // The error message of an extraction that must fail.
  std::string failure(const std::string& blob, ExtractOptions options = {}) {
    try {
      extract(blob, options);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  bool outside_is_empty() const {
    std::string listing;
    testing::run("ls -A " + outside(), &listing);
    return listing.empty();
  }

  TempDir work_;
};

TEST_F(LayerExtractTest, RoundTripsALayerIntoOverlayUpperForm) {
  if (!is_root()) GTEST_SKIP() << "needs root: mknod, chown, trusted.* xattrs";
  TempDir upper;
  const std::string& u = upper.path();
  check(::mkdir((u + "/etc").c_str(), 0755), "mkdir");
  write_file(u + "/etc/hosts", "hosts");
  write_file(u + "/caf\xc3\xa9-" + std::string(150, 'n'), "utf8 and long");
  write_file(u + "/etc/shadow", "secret", 0640);
  check(::chown((u + "/etc/shadow").c_str(), 0, 42), "chown");
  write_file(u + "/etc/tool", "tool", 04711);
  check(::link((u + "/etc/tool").c_str(), (u + "/etc/tool2").c_str()), "link");
  check(::symlink("hosts", (u + "/etc/alias").c_str()), "symlink");
  check(::mknod((u + "/etc/gone").c_str(), S_IFCHR, makedev(0, 0)), "mknod");
  check(::mkdir((u + "/var").c_str(), 0700), "mkdir");
  check(::setxattr((u + "/var").c_str(), "trusted.overlay.opaque", "y", 1, 0), "setxattr");
  check(::mkfifo((u + "/var/pipe").c_str(), 0600), "mkfifo");
  struct timespec ts[2] = {{1600000000, 0}, {1600000000, 0}};
  check(::utimensat(AT_FDCWD, (u + "/etc").c_str(), ts, 0), "utimensat");

  StringSink layer;
  UniqueFd fd = open_dir(u);
  LayerDigests digests = write_layer(fd.get(), layer);
  ExtractOptions options;
  options.expected_diff_id = digests.diff_id;
  ExtractResult result = extract(layer.bytes(), options);
  EXPECT_EQ(result.diff_id, digests.diff_id);
  EXPECT_EQ(result.blob_digest, digests.blob_digest);
  EXPECT_EQ(result.compression, Compression::gzip);

  const std::string r = root();
  EXPECT_EQ(read_file(r + "/etc/hosts"), "hosts");
  EXPECT_EQ(read_file(r + "/caf\xc3\xa9-" + std::string(150, 'n')), "utf8 and long");
  EXPECT_EQ(lstat_of(r + "/etc/shadow").st_mode & 07777, 0640u);
  EXPECT_EQ(lstat_of(r + "/etc/shadow").st_gid, 42u);
  EXPECT_EQ(lstat_of(r + "/etc/tool").st_mode & 07777, 04711u);
  EXPECT_EQ(lstat_of(r + "/etc/tool").st_ino, lstat_of(r + "/etc/tool2").st_ino);
  char target[64] = {};
  ASSERT_GT(::readlink((r + "/etc/alias").c_str(), target, sizeof target), 0);
  EXPECT_STREQ(target, "hosts");
  struct stat gone = lstat_of(r + "/etc/gone");
  EXPECT_TRUE(S_ISCHR(gone.st_mode));
  EXPECT_EQ(gone.st_rdev, makedev(0, 0));
  EXPECT_FALSE(exists(r + "/etc/.wh.gone"));
  EXPECT_EQ(xattr(r + "/var", "trusted.overlay.opaque"), "y");
  EXPECT_FALSE(exists(r + "/var/.wh..wh..opq"));
  EXPECT_TRUE(S_ISFIFO(lstat_of(r + "/var/pipe").st_mode));
  EXPECT_EQ(lstat_of(r + "/var").st_mode & 07777, 0700u);
  EXPECT_EQ(lstat_of(r + "/etc").st_mtim.tv_sec, 1600000000) << "directory times are set after their contents";

  // And back again: the extracted upper dir makes the same layer.
  StringSink again;
  UniqueFd extracted = open_dir(r);
  EXPECT_EQ(write_layer(extracted.get(), again).diff_id, digests.diff_id);
}

TEST_F(LayerExtractTest, AppliesWhiteoutsOnAFlattenedRootfs) {
  const std::string r = root();
  write_file(r + "/old", "lower");
  write_file(r + "/keep", "lower");
  check(::mkdir((r + "/dir").c_str(), 0755), "mkdir");
  write_file(r + "/dir/lower-file", "lower");
  check(::mkdir((r + "/dir/lower-sub").c_str(), 0755), "mkdir");
  write_file(r + "/dir/lower-sub/f", "lower");
  std::string tar = TarBuilder()
                        .file(".wh.old", "")
                        .dir("dir/")
                        .file("dir/new", "upper")
                        .file("dir/.wh..wh..opq", "")
                        .file(".wh.missing", "")
                        .finish();
  ExtractOptions options;
  options.whiteouts = WhiteoutMode::apply;
  extract(tar, options);
  EXPECT_FALSE(exists(r + "/old"));
  EXPECT_EQ(read_file(r + "/keep"), "lower");
  EXPECT_FALSE(exists(r + "/dir/lower-file"));
  EXPECT_FALSE(exists(r + "/dir/lower-sub"));
  EXPECT_EQ(read_file(r + "/dir/new"), "upper") << "an opaque marker hides lower layers only, whatever its position";
}

TEST_F(LayerExtractTest, ConvertsWhiteoutsToOverlayForm) {
  if (!is_root()) GTEST_SKIP() << "needs root: mknod and trusted.* xattrs";
  std::string tar = TarBuilder().dir("a/").file("a/.wh..wh..opq", "").file("a/.wh.b", "").file(".wh.c", "").finish();
  extract(tar);
  EXPECT_EQ(xattr(root() + "/a", "trusted.overlay.opaque"), "y");
  EXPECT_TRUE(S_ISCHR(lstat_of(root() + "/a/b").st_mode));
  EXPECT_EQ(lstat_of(root() + "/c").st_rdev, makedev(0, 0));
}

TEST_F(LayerExtractTest, RejectsDotDotEscapes) {
  ExtractOptions named;
  named.layer_name = "sha256:abc";
  std::string message = failure(TarBuilder().file("../../etc/passwd", "pwned").finish(), named);
  EXPECT_EQ(message, "layer sha256:abc: entry ../../etc/passwd escapes the root");
  EXPECT_NE(failure(TarBuilder().file("a/../../x", "pwned").finish()).find("escapes the root"), std::string::npos);
  EXPECT_TRUE(outside_is_empty());
  EXPECT_FALSE(exists(work_.path() + "/x"));
}

TEST_F(LayerExtractTest, TakesAbsolutePathsRelativeToTheRoot) {
  std::string evil = outside() + "/abs";
  extract(TarBuilder().file(evil, "inside").file("a/./b/../c", "clean").finish());
  EXPECT_TRUE(outside_is_empty());
  EXPECT_EQ(read_file(root() + evil), "inside");
  EXPECT_EQ(read_file(root() + "/a/c"), "clean");
}

TEST_F(LayerExtractTest, NamesWithMountOptionAndControlCharactersAreFilesLikeAnyOther) {
  extract(TarBuilder().file("a:b", "1").file("c,d", "2").file("e\\f", "3").file("g\nh", "4").finish());
  EXPECT_TRUE(outside_is_empty());
  EXPECT_EQ(read_file(root() + "/a:b"), "1");
  EXPECT_EQ(read_file(root() + "/c,d"), "2");
  EXPECT_EQ(read_file(root() + "/e\\f"), "3");
  EXPECT_EQ(read_file(root() + "/g\nh"), "4");
}

TEST_F(LayerExtractTest, DoesNotWriteThroughSymlinksOutOfTheRoot) {
  std::string depth = "../../../../../../../../../..";
  for (const std::string& target : {outside(), depth + outside()}) {
    std::string message = failure(TarBuilder().symlink("evil", target).file("evil/pwned", "x").finish());
    EXPECT_TRUE(outside_is_empty()) << target << ": " << message;
  }
  // Resolved inside the root, a symlinked parent is followed as the image would see it.
  check(::mkdir((root() + "/real").c_str(), 0755), "mkdir");
  extract(TarBuilder().symlink("jump", "/real").file("jump/f", "ok").finish());
  EXPECT_EQ(read_file(root() + "/real/f"), "ok");
}

TEST_F(LayerExtractTest, AParentSymlinkToNoDirectoryOfTheLayerIsNamedWithItsTarget) {
  // Debian's /var/run -> /run, in a layer without /run: the host's /run is not looked at.
  std::string message = failure(TarBuilder().dir("var/").symlink("var/run", "/run").file("var/run/x", "x").finish());
  EXPECT_EQ(message, "layer: entry var/run/x has a parent, var/run, that is not a directory: a symlink to /run, "
                     "which is no directory in this layer");
  EXPECT_FALSE(exists(root() + "/run"));
  extract(TarBuilder().dir("run/").finish());
  extract(TarBuilder().dir("var/").symlink("var/run", "../run").file("var/run/x", "x").finish());
  EXPECT_EQ(read_file(root() + "/run/x"), "x");
}

TEST_F(LayerExtractTest, ReplacesASymlinkRatherThanWritingThroughIt) {
  write_file(outside() + "/target", "original");
  extract(TarBuilder().symlink("f", outside() + "/target").file("f", "new").finish());
  EXPECT_EQ(read_file(outside() + "/target"), "original");
  EXPECT_EQ(read_file(root() + "/f"), "new");
  EXPECT_TRUE(S_ISREG(lstat_of(root() + "/f").st_mode));
}

TEST_F(LayerExtractTest, DirectoryReplacedBySymlinkDoesNotLeadOut) {
  std::string message = failure(TarBuilder().dir("d/").symlink("d", outside()).file("d/f", "x").finish());
  EXPECT_TRUE(outside_is_empty()) << message;
}

TEST_F(LayerExtractTest, RefusesHardlinksOutOfTheRoot) {
  struct stat shadow {};
  bool have_shadow = ::stat("/etc/shadow", &shadow) == 0;
  std::string message = failure(TarBuilder().hardlink("stolen", "/etc/shadow").finish());
  EXPECT_NE(message.find("hardlink target etc/shadow"), std::string::npos) << message;
  message = failure(TarBuilder().hardlink("stolen", "../../../etc/shadow").finish());
  EXPECT_NE(message.find("outside the root"), std::string::npos) << message;
  message = failure(TarBuilder().symlink("link", "/etc").hardlink("stolen", "link/shadow").finish());
  EXPECT_NE(message.find("hardlink target"), std::string::npos) << message;
  if (have_shadow) {
    EXPECT_EQ(shadow.st_nlink, lstat_of("/etc/shadow").st_nlink);
  }
  EXPECT_FALSE(exists(root() + "/stolen"));
}

TEST_F(LayerExtractTest, HardlinkToASymlinkLinksTheSymlinkItself) {
  write_file(outside() + "/secret", "s");
  extract(TarBuilder().symlink("s", outside() + "/secret").hardlink("h", "s").finish());
  EXPECT_TRUE(S_ISLNK(lstat_of(root() + "/h").st_mode));
  EXPECT_EQ(lstat_of(outside() + "/secret").st_nlink, 1u);
}

TEST_F(LayerExtractTest, SymlinkLoopsFailCleanly) {
  std::string message = failure(TarBuilder().symlink("a", "b").symlink("b", "a").file("a/x", "x").finish());
  EXPECT_NE(message.find("entry a/x"), std::string::npos) << message;
  EXPECT_TRUE(outside_is_empty());
}

TEST_F(LayerExtractTest, DeviceNodesFollowThePolicy) {
  std::string tar = TarBuilder().chardev("dev/null", 1, 3).file("ok", "ok").finish();
  EXPECT_NE(failure(tar).find("entry dev/null is a device node"), std::string::npos);
  ExtractOptions skip;
  skip.devices = DeviceNodes::skip;
  extract(tar, skip);
  EXPECT_FALSE(exists(root() + "/dev/null"));
  EXPECT_EQ(read_file(root() + "/ok"), "ok");
  if (!is_root()) return;
  ExtractOptions create;
  create.devices = DeviceNodes::create;
  extract(tar, create);
  EXPECT_EQ(lstat_of(root() + "/dev/null").st_rdev, makedev(1, 3));
}

TEST_F(LayerExtractTest, RefusesBadWhiteoutNames) {
  EXPECT_NE(failure(TarBuilder().file("a/.wh...", "").finish()).find("is not a valid whiteout"), std::string::npos);
}

TEST_F(LayerExtractTest, VerifiesTheDiffId) {
  std::string tar = TarBuilder().file("f", "content").finish();
  ExtractOptions good;
  good.expected_diff_id = store::Digest::of(tar);
  ExtractResult result = extract(tar, good);
  EXPECT_EQ(result.compression, Compression::none);
  EXPECT_EQ(result.tar_size, tar.size());
  ExtractOptions bad;
  bad.layer_name = "sha256:abc";
  bad.expected_diff_id = store::Digest::of("something else");
  EXPECT_NE(failure(tar, bad).find("layer sha256:abc: content does not match: expected diff_id"), std::string::npos);
}

TEST_F(LayerExtractTest, DetectsZstd) {
  std::string tar = TarBuilder().file("z", "zstd content").finish();
  std::string blob = zstd_compress(tar);
  ExtractResult result = extract(blob);
  EXPECT_EQ(result.compression, Compression::zstd);
  EXPECT_EQ(result.diff_id, store::Digest::of(tar));
  EXPECT_EQ(result.blob_digest, store::Digest::of(blob));
  EXPECT_EQ(read_file(root() + "/z"), "zstd content");
}

TEST_F(LayerExtractTest, WritesZerosAsHolesAndReadsBackTheSame) {
  std::string content = std::string(5000, 'a') + std::string(4 << 20, '\0') + std::string(3000, 'b') +
                        std::string(1 << 20, '\0') + std::string(100, '\0');
  std::string zeros(3 << 20, '\0');
  std::string tar = TarBuilder().file("zeros", content).file("all-zeros", zeros).finish();
  // Uncompressed and gzip'd: the data comes in pieces of other sizes, unaligned to the file's blocks.
  for (const std::string& blob : {tar, compress(tar, archive_write_add_filter_gzip)}) {
    testing::run("rm -rf " + root() + "/*");
    ExtractOptions options;
    options.expected_diff_id = store::Digest::of(tar);
    EXPECT_EQ(extract(blob, options).diff_id, store::Digest::of(tar));
    EXPECT_EQ(read_file(root() + "/zeros"), content);
    EXPECT_EQ(read_file(root() + "/all-zeros"), zeros);
    struct stat st = lstat_of(root() + "/zeros");
    EXPECT_EQ(st.st_size, static_cast<off_t>(content.size()));
    // Only the blocks with data: 5000 bytes, then 3000 across at most two blocks.
    EXPECT_LE(st.st_blocks * 512, 5 * 4096) << "the 5 MiB of zeros take disk";
    st = lstat_of(root() + "/all-zeros");
    EXPECT_EQ(st.st_size, static_cast<off_t>(zeros.size()));
    EXPECT_EQ(st.st_blocks, 0);
  }
}

TEST_F(LayerExtractTest, StopsWhenCanceled) {
  std::string tar = TarBuilder().file("first", "x").file("big", std::string(32 << 20, 'z')).finish();
  int asked = 0;
  ExtractOptions options;
  options.layer_name = "sha256:abc";
  options.canceled = [&asked] { return ++asked > 3; };
  std::string path = work_.path() + "/layer";
  write_file(path, tar);
  UniqueFd fd = testing::open_read(path);
  UniqueFd dir = open_dir(root());
  if (!is_root()) options.set_owners = false;
  try {
    extract_layer(fd.get(), dir.get(), options);
    ADD_FAILURE() << "not canceled";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::canceled);
    EXPECT_EQ(std::string(e.what()), "layer sha256:abc: extraction canceled");
  }
  EXPECT_LT(lstat_of(root() + "/big").st_size, 32 << 20) << "the data after the cancel was written";

  // Asked before the first entry, too.
  options.canceled = [] { return true; };
  EXPECT_NE(failure(tar, options).find("extraction canceled"), std::string::npos);
}

// A GNU tar header block: `name`, `type`, `size`, with its checksum, and what `fill` puts in.
std::string gnu_header(const std::string& name, char type, uint64_t size,
                       const std::function<void(char*)>& fill = {}) {
  std::string block(512, '\0');
  std::memcpy(block.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(block.data() + 100, 8, "%07o", 0644);
  std::snprintf(block.data() + 108, 8, "%07o", 0);
  std::snprintf(block.data() + 116, 8, "%07o", 0);
  std::snprintf(block.data() + 124, 12, "%011llo", static_cast<unsigned long long>(size));
  std::snprintf(block.data() + 136, 12, "%011o", 0);
  block[156] = type;
  std::memcpy(block.data() + 257, "ustar  ", 8);
  if (fill) fill(block.data());
  std::memset(block.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : block) sum += c;
  std::snprintf(block.data() + 148, 8, "%06o", sum);
  return block;
}

TEST_F(LayerExtractTest, RefusesAnEntryWhoseHeadersTakeMegabytes) {
  // An old GNU sparse file whose map goes on for 8 MiB of extension blocks, 21 extents each:
  // libarchive would keep every extent in memory, and the blocks compress to almost nothing.
  auto extent = [](char* at) {
    std::snprintf(at, 12, "%011o", 0);
    std::snprintf(at + 12, 12, "%011o", 1);
  };
  std::string tar = gnu_header("sparse", 'S', 0, [&](char* h) {
    for (int i = 0; i < 4; ++i) extent(h + 386 + 24 * i);
    h[482] = 1;  // isextended
  });
  std::string extension(512, '\0');
  for (int i = 0; i < 21; ++i) extent(extension.data() + 24 * i);
  extension[504] = 1;
  for (int i = 0; i < (8 << 20) / 512; ++i) tar += extension;
  ExtractOptions named;
  named.layer_name = "sha256:abc";
  EXPECT_EQ(failure(tar, named), "layer sha256:abc: malformed layer: an entry's headers take more than 4 MiB");

  // A pax header of 900 KiB (libarchive's limit is 1 MiB) is read.
  std::string value(900 << 10, 'v');
  std::string record = " comment=" + value + "\n";
  record = std::to_string(record.size() + 6) + record;
  ASSERT_EQ(record.size(), std::stoul(record));
  std::string big = gnu_header("pax", 'x', record.size()) + record;
  big.append((512 - record.size() % 512) % 512, '\0');
  big += gnu_header("big", '0', 2) + "ok" + std::string(510, '\0') + std::string(1024, '\0');
  extract(big);
  EXPECT_EQ(read_file(root() + "/big"), "ok");
}

TEST_F(LayerExtractTest, RefusesNamesLongerThanPathMaxWithoutQuotingThem) {
  std::string name = "d/" + std::string(100000, 'n');
  std::string tar = gnu_header("././@LongLink", 'L', name.size() + 1) + name + std::string(1, '\0');
  tar.append((512 - (name.size() + 1) % 512) % 512, '\0');
  tar += gnu_header("short", '0', 0) + std::string(1024, '\0');
  std::string message = failure(tar);
  EXPECT_NE(message.find("has a name longer than 4095 bytes"), std::string::npos) << message.substr(0, 300);
  EXPECT_LT(message.size(), 300u);
  EXPECT_TRUE(outside_is_empty());
}

TEST_F(LayerExtractTest, RejectsGarbage) {
  EXPECT_NE(failure("this is not a tar archive at all, not even close").find("malformed layer"), std::string::npos);
  EXPECT_NE(failure("").find("malformed layer"), std::string::npos);
}

}  // namespace
}  // namespace kbuild::image
