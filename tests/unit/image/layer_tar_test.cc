#include "engine/image/layer_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tests/unit/image/image_test_util.h"

namespace kbuild::image {
namespace {

using testing::open_dir;
using testing::run;
using testing::write_file;

// security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2, effective).
const std::string kCapability("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);

struct Entry {
  std::string name;
  mode_t type = 0;
  mode_t perm = 0;
  int64_t uid = 0;
  int64_t size = 0;
  int64_t mtime = 0;
  std::string symlink;
  std::string hardlink;
  std::string uname;
  unsigned rdev_major = 0;
  std::map<std::string, std::string> xattrs;
  std::string content;
};

std::vector<Entry> read_entries(const std::string& tar) {
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_support_filter_gzip(a);
  EXPECT_EQ(archive_read_open_memory(a, tar.data(), tar.size()), ARCHIVE_OK);
  std::vector<Entry> out;
  archive_entry* e;
  for (;;) {
    // ARCHIVE_WARN: a UTF-8 name the C locale cannot show; its UTF-8 form is still there.
    int rc = archive_read_next_header(a, &e);
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) break;
    Entry x;
    const char* name = archive_entry_pathname_utf8(e);
    x.name = name ? name : archive_entry_pathname(e);
    x.type = archive_entry_filetype(e);
    x.perm = archive_entry_perm(e);
    x.uid = archive_entry_uid(e);
    x.size = archive_entry_size(e);
    x.mtime = archive_entry_mtime(e);
    if (archive_entry_symlink(e)) x.symlink = archive_entry_symlink(e);
    if (archive_entry_hardlink(e)) x.hardlink = archive_entry_hardlink(e);
    if (archive_entry_uname(e)) x.uname = archive_entry_uname(e);
    x.rdev_major = archive_entry_rdevmajor(e);
    archive_entry_xattr_reset(e);
    const char* key;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &key, &value, &size) == ARCHIVE_OK) {
      x.xattrs[key] = std::string(static_cast<const char*>(value), size);
    }
    char buffer[4096];
    la_ssize_t n;
    while ((n = archive_read_data(a, buffer, sizeof buffer)) > 0) x.content.append(buffer, static_cast<size_t>(n));
    out.push_back(x);
  }
  archive_read_free(a);
  return out;
}

LayerOptions opts(Compression compression, std::optional<int64_t> epoch = {}) {
  LayerOptions o;
  o.compression = compression;
  o.source_date_epoch = epoch;
  return o;
}

void set_mtime(const std::string& path, int64_t seconds) {
  struct timespec ts[2] = {{seconds, 500}, {seconds, 500}};
  check(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), "utimensat", path);
}

// An upper dir with every kind of entry; the root-only ones when running as root.
class LayerTarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::geteuid() == 0;
    const std::string& d = dir_.path();
    check(::mkdir((d + "/etc").c_str(), 0755), "mkdir");
    write_file(d + "/etc/hosts", "127.0.0.1 localhost\n");
    write_file(d + "/etc/secret", "s", 0600);
    check(::mkdir((d + "/bin").c_str(), 0755), "mkdir");
    write_file(d + "/bin/tool", std::string(100000, 'x'), 04755);
    check(::link((d + "/bin/tool").c_str(), (d + "/bin/tool-link").c_str()), "link");
    check(::symlink("../etc/hosts", (d + "/bin/hosts").c_str()), "symlink");
    check(::mkfifo((d + "/fifo").c_str(), 0640), "mkfifo");
    check(::mkdir((d + "/opaque").c_str(), 0750), "mkdir");
    write_file(d + "/opaque/kept", "k");
    if (root_) {
      check(::mknod((d + "/etc/removed").c_str(), S_IFCHR, makedev(0, 0)), "mknod");
      check(::mknod((d + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), "mknod");
      check(::chmod((d + "/null").c_str(), 0666), "chmod");
      check(::setxattr((d + "/opaque").c_str(), "trusted.overlay.opaque", "y", 1, 0), "setxattr");
      check(::setxattr((d + "/bin/tool").c_str(), "security.capability", kCapability.data(), kCapability.size(), 0),
            "setxattr");
      check(::chown((d + "/etc/secret").c_str(), 1000, 1000), "chown");
    }
    for (const char* p : {"/etc/hosts", "/etc/secret", "/bin/tool", "/bin/hosts", "/fifo", "/opaque/kept", "/opaque",
                          "/bin", "/etc"}) {
      set_mtime(d + p, 1700000000);
    }
  }

  LayerDigests write(std::string& tar, const LayerOptions& options) {
    StringSink sink;
    UniqueFd fd = open_dir(dir_.path());
    LayerDigests digests = write_layer(fd.get(), sink, options);
    tar = sink.bytes();
    return digests;
  }

  TempDir dir_;
  bool root_ = false;
};

TEST_F(LayerTarTest, WritesEntriesInWalkOrderWithContainerdHeaders) {
  std::string tar;
  LayerDigests digests = write(tar, opts(Compression::none));
  EXPECT_EQ(digests.diff_id, store::Digest::of(tar));
  EXPECT_EQ(digests.blob_digest, digests.diff_id);
  EXPECT_EQ(digests.tar_size, tar.size());
  EXPECT_EQ(tar.size() % 512, 0u);

  std::vector<Entry> entries = read_entries(tar);
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  std::vector<std::string> expected = {"bin/", "bin/hosts", "bin/tool", "bin/tool-link", "etc/", "etc/hosts"};
  if (root_) expected.push_back("etc/.wh.removed");
  expected.push_back("etc/secret");
  expected.push_back("fifo");
  if (root_) expected.push_back("null");
  expected.push_back("opaque/");
  if (root_) expected.push_back("opaque/.wh..wh..opq");
  expected.push_back("opaque/kept");
  EXPECT_EQ(names, expected);

  std::map<std::string, Entry> by_name;
  for (const auto& e : entries) by_name[e.name] = e;
  EXPECT_EQ(by_name["bin/"].type, AE_IFDIR);
  EXPECT_EQ(by_name["bin/hosts"].type, AE_IFLNK);
  EXPECT_EQ(by_name["bin/hosts"].symlink, "../etc/hosts");
  EXPECT_EQ(by_name["bin/tool"].perm, 04755u);
  EXPECT_EQ(by_name["bin/tool"].content, std::string(100000, 'x'));
  EXPECT_EQ(by_name["bin/tool-link"].hardlink, "bin/tool");
  EXPECT_EQ(by_name["bin/tool-link"].size, 0);
  EXPECT_EQ(by_name["etc/secret"].perm, 0600u);
  EXPECT_EQ(by_name["fifo"].type, AE_IFIFO);
  EXPECT_EQ(by_name["etc/hosts"].mtime, 1700000000);
  for (const auto& e : entries) EXPECT_EQ(e.uname, "") << e.name << ": owners are numeric only";
  if (root_) {
    EXPECT_EQ(by_name["etc/secret"].uid, 1000);
    EXPECT_EQ(by_name["etc/.wh.removed"].type, AE_IFREG);
    EXPECT_EQ(by_name["etc/.wh.removed"].size, 0);
    EXPECT_EQ(by_name["etc/.wh.removed"].mtime, 0);
    EXPECT_EQ(by_name["null"].type, AE_IFCHR);
    EXPECT_EQ(by_name["null"].rdev_major, 1u);
    EXPECT_EQ(by_name["opaque/.wh..wh..opq"].perm, 0750u);
    EXPECT_EQ(by_name["bin/tool"].xattrs["security.capability"], kCapability);
    EXPECT_TRUE(by_name["opaque/"].xattrs.empty()) << "overlay xattrs never go into a layer";
  }
}

TEST_F(LayerTarTest, GnuTarListsTheLayer) {
  if (!testing::have_tool("tar")) GTEST_SKIP() << "tar not installed";
  std::string tar;
  write(tar, opts(Compression::gzip));
  std::string path = dir_.path() + "/../layer-" + std::to_string(::getpid()) + ".tar.gz";
  write_file(path, tar);
  std::string listing;
  EXPECT_EQ(run("tar -tvzf " + path + " 2>&1", &listing), 0) << listing;
  ::unlink(path.c_str());
  std::string owner = std::to_string(::geteuid()) + "/" + std::to_string(::getegid());
  EXPECT_NE(listing.find("-rwsr-xr-x " + owner), std::string::npos) << listing << "owners are numeric";
  EXPECT_NE(listing.find("bin/tool-link link to bin/tool"), std::string::npos) << listing;
  EXPECT_NE(listing.find("bin/hosts -> ../etc/hosts"), std::string::npos) << listing;
  EXPECT_NE(listing.find("prw-r-----"), std::string::npos) << listing;
  if (root_) {
    EXPECT_NE(listing.find("opaque/.wh..wh..opq"), std::string::npos) << listing;
    EXPECT_NE(listing.find("crw-rw-rw- 0/0"), std::string::npos) << listing;
  }
}

TEST_F(LayerTarTest, GzipBlobHasGoHeaderAndDecompressesToTheTar) {
  std::string plain;
  LayerDigests uncompressed = write(plain, opts(Compression::none));
  std::string gz;
  LayerDigests compressed = write(gz, opts(Compression::gzip));
  EXPECT_EQ(compressed.diff_id, uncompressed.diff_id);
  EXPECT_EQ(compressed.tar_size, plain.size());
  EXPECT_EQ(compressed.blob_digest, store::Digest::of(gz));
  EXPECT_EQ(compressed.blob_size, gz.size());
  EXPECT_LT(gz.size(), plain.size());
  EXPECT_EQ(gz.substr(0, 10), std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", 10));
  std::vector<Entry> entries = read_entries(gz);
  EXPECT_EQ(entries.size(), read_entries(plain).size());
}

TEST_F(LayerTarTest, ABlobLeftToTheSinkToHashIsTheSameBytes) {
  std::string hashed, left;
  LayerDigests with = write(hashed, opts(Compression::gzip));
  LayerOptions options = opts(Compression::gzip);
  options.hash_blob = false;
  LayerDigests without = write(left, options);
  EXPECT_EQ(left, hashed);
  EXPECT_EQ(without.diff_id, with.diff_id);
  EXPECT_EQ(without.blob_size, with.blob_size);
  EXPECT_EQ(without.blob_digest, store::Digest());
}

TEST_F(LayerTarTest, SameTreeGivesSameDigests) {
  std::string a, b;
  LayerDigests first = write(a, {});
  LayerDigests second = write(b, {});
  EXPECT_EQ(first.diff_id, second.diff_id);
  EXPECT_EQ(first.blob_digest, second.blob_digest);
}

TEST_F(LayerTarTest, SourceDateEpochClampsLaterMtimes) {
  std::string tar;
  LayerOptions options = opts(Compression::none, 1600000000);
  LayerDigests before = write(tar, options);
  for (const auto& e : read_entries(tar)) {
    if (e.name.find(".wh.") == std::string::npos) {
      EXPECT_EQ(e.mtime, 1600000000) << e.name;
    }
  }
  // Touching files later than the epoch changes nothing.
  set_mtime(dir_.path() + "/etc/hosts", 1800000000);
  set_mtime(dir_.path() + "/bin", 1800000001);
  EXPECT_EQ(write(tar, options).diff_id, before.diff_id);
  // Without the epoch the change shows.
  std::string plain;
  EXPECT_NE(write(plain, opts(Compression::none)).diff_id, before.diff_id);
  // Times before the epoch are kept.
  LayerOptions late = opts(Compression::none, 1750000000);
  write(tar, late);
  for (const auto& e : read_entries(tar)) {
    if (e.name == "etc/hosts") {
      EXPECT_EQ(e.mtime, 1750000000);
    }
    if (e.name == "etc/secret") {
      EXPECT_EQ(e.mtime, 1700000000);
    }
  }
}

TEST_F(LayerTarTest, LongAndNonAsciiNamesSurvive) {
  std::string deep = dir_.path() + "/" + std::string(120, 'd');
  check(::mkdir(deep.c_str(), 0755), "mkdir");
  write_file(deep + "/" + std::string(150, 'f'), "long");
  write_file(dir_.path() + "/caf\xc3\xa9", "utf8");
  std::string tar;
  write(tar, opts(Compression::none));
  bool long_found = false, utf8_found = false;
  for (const auto& e : read_entries(tar)) {
    if (e.name == std::string(120, 'd') + "/" + std::string(150, 'f')) long_found = e.content == "long";
    if (e.name == "caf\xc3\xa9") utf8_found = e.content == "utf8";
  }
  EXPECT_TRUE(long_found);
  EXPECT_TRUE(utf8_found);
}

// containerd's ChangeWriter in a few lines of Go: the reference our bytes must equal.
constexpr std::string_view kGoReference = R"GO(// The layer containerd's ChangeWriter writes for an overlay upper dir (reference for tests).
package main

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	root := os.Args[1]
	var epoch *time.Time
	if len(os.Args) > 2 {
		s, _ := strconv.ParseInt(os.Args[2], 10, 64)
		t := time.Unix(s, 0)
		epoch = &t
	}
	tw := tar.NewWriter(os.Stdout)
	links := map[uint64]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		name, _ := filepath.Rel(root, p)
		if name == "." {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&os.ModeCharDevice != 0 && st.Rdev == 0 {
			t := time.Unix(0, 0).UTC()
			dir, base := filepath.Split(name)
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dir + ".wh." + base, ModTime: t, AccessTime: t, ChangeTime: t})
		}
		if fi.Mode()&os.ModeSocket != 0 {
			return nil
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if epoch != nil && hdr.ModTime.After(*epoch) {
			hdr.ModTime = *epoch
		}
		hdr.ModTime = hdr.ModTime.Truncate(time.Second)
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		if fi.IsDir() && !strings.HasSuffix(name, "/") {
			name += "/"
		}
		hdr.Name = name
		if fi.Mode()&os.ModeDevice != 0 {
			hdr.Devmajor = int64((st.Rdev >> 8) & 0xfff)
			hdr.Devminor = int64((st.Rdev & 0xff) | ((st.Rdev >> 12) & 0xfff00))
		}
		if !fi.IsDir() && st.Nlink > 1 {
			if src, ok := links[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, src, 0
			} else {
				links[st.Ino] = name
			}
		}
		buf := make([]byte, 256)
		if n, err := syscall.Getxattr(p, "security.capability", buf); err == nil && n > 0 {
			hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(buf[:n])}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.IsDir() {
			if n, err := syscall.Getxattr(p, "trusted.overlay.opaque", buf); err == nil && n == 1 && buf[0] == 'y' {
				wo := &tar.Header{Typeflag: tar.TypeReg, Mode: hdr.Mode & int64(os.ModePerm), Name: name + ".wh..wh..opq", Uid: hdr.Uid, Gid: hdr.Gid}
				if err := tw.WriteHeader(wo); err != nil {
					return err
				}
			}
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
}
)GO";

// Builds the Go reference writer once; "" when Go is not installed.
std::string go_reference_writer() {
  static std::string binary = [] {
    if (!testing::have_tool("go")) return std::string();
    static TempDir dir;
    write_file(dir.path() + "/main.go", std::string(kGoReference));
    std::string out;
    int rc = run("cd " + dir.path() + " && HOME=" + dir.path() + " GOCACHE=" + dir.path() +
                     "/cache GO111MODULE=off GOFLAGS= go build -o gotar main.go 2>&1",
                 &out);
    EXPECT_EQ(rc, 0) << out;
    return rc == 0 ? dir.path() + "/gotar" : std::string();
  }();
  return binary;
}

TEST_F(LayerTarTest, MatchesGoArchiveTarByteForByte) {
  std::string go = go_reference_writer();
  if (go.empty()) GTEST_SKIP() << "Go not installed (golang-go)";
  std::string deep = dir_.path() + "/" + std::string(99, 'd');
  check(::mkdir(deep.c_str(), 0755), "mkdir");
  write_file(deep + "/" + std::string(150, 'f'), "long");
  write_file(dir_.path() + "/caf\xc3\xa9", "utf8");
  check(::symlink(std::string(120, 't').c_str(), (dir_.path() + "/long-link").c_str()), "symlink");
  for (std::optional<int64_t> epoch : {std::optional<int64_t>(), std::optional<int64_t>(1650000000)}) {
    std::string mine;
    write(mine, opts(Compression::none, epoch));
    std::string theirs;
    ASSERT_EQ(run(go + " " + dir_.path() + (epoch ? " " + std::to_string(*epoch) : "") + " 2>/dev/null", &theirs), 0);
    ASSERT_EQ(mine.size(), theirs.size());
    EXPECT_TRUE(mine == theirs) << "first difference at byte "
                                << std::distance(mine.begin(),
                                                 std::mismatch(mine.begin(), mine.end(), theirs.begin()).first);
  }
}

TEST(LayerTar, RefusesOverlayMetacopyFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: trusted.* xattrs";
  TempDir dir;
  write_file(dir.path() + "/f", "");
  check(::setxattr((dir.path() + "/f").c_str(), "trusted.overlay.metacopy", "", 0, 0), "setxattr");
  StringSink sink;
  UniqueFd fd = open_dir(dir.path());
  EXPECT_THROW(write_layer(fd.get(), sink, opts(Compression::none)), Error);
}

TEST(LayerTar, EmptyDirectoryIsJustTheEndBlocks) {
  TempDir dir;
  StringSink sink;
  UniqueFd fd = open_dir(dir.path());
  LayerDigests digests = write_layer(fd.get(), sink, opts(Compression::none));
  EXPECT_EQ(sink.bytes(), std::string(1024, '\0'));
  EXPECT_EQ(digests.diff_id.str(), "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef");
}

// --- hash_layer and its journals -------------------------------------------------------------

std::string filler(size_t size, char seed) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>(seed + (i * 131 + i / 7) % 97);
  return s;
}

// A tree whose tar has a big file early and enough small files after it for several checkpoints.
void make_tree(const std::string& root) {
  check(::mkdir((root + "/src").c_str(), 0755), "mkdir");
  write_file(root + "/src/a.txt", "first\n");
  write_file(root + "/src/big.bin", filler(300 << 10, 'b'));
  check(::mkdir((root + "/src/z").c_str(), 0755), "mkdir");
  for (int i = 0; i < 120; ++i) write_file(root + "/src/z/f" + std::to_string(1000 + i), filler(3000 + i, 'a' + i % 20));
}

// The tree again, every file a hard link to the first one's (as COPY from the context makes it).
void link_tree(const std::string& from, const std::string& to) {
  ASSERT_EQ(run("cp -a --link " + from + "/src " + to + "/src"), 0);
}

LayerDigests full_hash(const std::string& root, std::optional<int64_t> epoch = std::nullopt) {
  NullSink sink;
  UniqueFd fd = open_dir(root);
  LayerOptions options = opts(Compression::none);
  options.source_date_epoch = epoch;
  return write_layer(fd.get(), sink, options);
}

LayerHash journaled_hash(const std::string& root, const LayerJournals& earlier, std::optional<int64_t> epoch = std::nullopt) {
  UniqueFd fd = open_dir(root);
  return hash_layer(fd.get(), epoch, earlier);
}

// How many checkpoints, from the first, the second journal took over from the first.
size_t shared_checkpoints(const LayerHashJournal& earlier, const LayerHashJournal& later) {
  size_t n = 0;
  while (n < earlier.checkpoints.size() && n < later.checkpoints.size() &&
         earlier.checkpoints[n].state == later.checkpoints[n].state) {
    ++n;
  }
  return n;
}

TEST(LayerHash, WithoutJournalsEqualsTheWrittenTar) {
  TempDir dir;
  make_tree(dir.path());
  LayerHash hashed = journaled_hash(dir.path(), {});
  LayerDigests full = full_hash(dir.path());
  EXPECT_EQ(hashed.digests.diff_id, full.diff_id);
  EXPECT_EQ(hashed.digests.tar_size, full.tar_size);
  ASSERT_TRUE(hashed.journal);
  ASSERT_GE(hashed.journal->checkpoints.size(), 4u);
  EXPECT_EQ(hashed.journal->checkpoints.back().offset, full.tar_size);
  for (const auto& c : hashed.journal->checkpoints) EXPECT_TRUE(c.state);
}

TEST(LayerHash, ChangeAfterABigFileResumesAfterIt) {
  TempDir a, b;
  make_tree(a.path());
  LayerHash first = journaled_hash(a.path(), {});
  link_tree(a.path(), b.path());
  const std::string changed = b.path() + "/src/z/f1100";
  check(::unlink(changed.c_str()), "unlink");
  write_file(changed, "changed\n");

  LayerHash second = journaled_hash(b.path(), {first.journal});
  EXPECT_EQ(second.digests.diff_id, full_hash(b.path()).diff_id);
  EXPECT_NE(second.digests.diff_id, first.digests.diff_id);
  // The checkpoints up to past big.bin came from the first journal: it was not read again.
  const size_t shared = shared_checkpoints(*first.journal, *second.journal);
  ASSERT_GT(shared, 0u);
  EXPECT_GT(second.journal->checkpoints[shared - 1].offset, uint64_t{300 << 10});
  EXPECT_LT(shared, second.journal->checkpoints.size());
}

TEST(LayerHash, SameTreeIsRecognisedToTheEnd) {
  TempDir a, b;
  make_tree(a.path());
  LayerHash first = journaled_hash(a.path(), {});
  link_tree(a.path(), b.path());
  LayerHash second = journaled_hash(b.path(), {first.journal});
  EXPECT_EQ(second.digests.diff_id, first.digests.diff_id);
  EXPECT_EQ(second.digests.tar_size, first.digests.tar_size);
  EXPECT_EQ(shared_checkpoints(*first.journal, *second.journal), first.journal->checkpoints.size());
}

TEST(LayerHash, ADifferentInodeIsReadEvenWithTheSameSizeAndTime) {
  TempDir a, b;
  make_tree(a.path());
  LayerHash first = journaled_hash(a.path(), {});
  link_tree(a.path(), b.path());
  // New content in a new inode, with big.bin's size, mode and mtime.
  const std::string big = b.path() + "/src/big.bin";
  struct stat st {};
  check(::stat(big.c_str(), &st), "stat");
  check(::unlink(big.c_str()), "unlink");
  write_file(big, filler(300 << 10, 'c'));
  const struct timespec times[2] = {st.st_mtim, st.st_mtim};
  check(::utimensat(AT_FDCWD, big.c_str(), times, 0), "utimensat");

  LayerHash second = journaled_hash(b.path(), {first.journal});
  EXPECT_EQ(second.digests.diff_id, full_hash(b.path()).diff_id);
  EXPECT_NE(second.digests.diff_id, first.digests.diff_id);
}

TEST(LayerHash, ChangeBeforeTheBigFileReadsEverything) {
  TempDir a, b;
  make_tree(a.path());
  LayerHash first = journaled_hash(a.path(), {});
  link_tree(a.path(), b.path());
  const std::string changed = b.path() + "/src/a.txt";
  check(::unlink(changed.c_str()), "unlink");
  write_file(changed, "other\n");
  LayerHash second = journaled_hash(b.path(), {first.journal});
  EXPECT_EQ(second.digests.diff_id, full_hash(b.path()).diff_id);
  EXPECT_EQ(shared_checkpoints(*first.journal, *second.journal), 0u);
}

TEST(LayerHash, UnrelatedOrOtherEpochJournalsDoNotMislead) {
  TempDir a, b, c;
  make_tree(a.path());
  link_tree(a.path(), b.path());
  write_file(c.path() + "/only", "x");
  LayerHash unrelated = journaled_hash(c.path(), {});
  LayerHash other_epoch = journaled_hash(a.path(), {}, 1000);
  LayerHash first = journaled_hash(a.path(), {});
  // Appending a file at the end: everything before it is shared with `first`. The directory's
  // new mtime is put back: it is in src/'s header, the first entry, and would differ whenever
  // the clock ticked over a second since make_tree.
  write_file(b.path() + "/src/zz", "appended");
  ASSERT_EQ(run("touch -r " + a.path() + "/src " + b.path() + "/src"), 0);
  LayerHash second = journaled_hash(b.path(), {unrelated.journal, other_epoch.journal, first.journal});
  EXPECT_EQ(second.digests.diff_id, full_hash(b.path()).diff_id);
  EXPECT_GT(shared_checkpoints(*first.journal, *second.journal), 1u);
  LayerHash with_epoch = journaled_hash(b.path(), {first.journal, other_epoch.journal}, 1000);
  EXPECT_EQ(with_epoch.digests.diff_id, full_hash(b.path(), 1000).diff_id);
}

TEST(LayerHash, AWalkThatFailsMidwayThrowsAndStopsItsWorker) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: trusted.* xattrs";
  TempDir a, b;
  make_tree(a.path());
  LayerHash first = journaled_hash(a.path(), {});
  link_tree(a.path(), b.path());
  // Enough new bytes that the worker is hashing (with checkpoints queued) when the walk fails.
  write_file(b.path() + "/src/m.bin", filler(3 << 20, 'm'));
  write_file(b.path() + "/src/zz", "");
  check(::setxattr((b.path() + "/src/zz").c_str(), "trusted.overlay.metacopy", "", 0, 0), "setxattr");
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW(journaled_hash(b.path(), {first.journal}), Error);
    EXPECT_THROW(journaled_hash(b.path(), {}), Error);
  }
}

TEST(LayerTar, MediaTypes) {
  EXPECT_EQ(layer_media_type(Compression::gzip, true), "application/vnd.oci.image.layer.v1.tar+gzip");
  EXPECT_EQ(layer_media_type(Compression::gzip, false), "application/vnd.docker.image.rootfs.diff.tar.gzip");
  EXPECT_EQ(layer_media_type(Compression::none, false), "application/vnd.docker.image.rootfs.diff.tar");
}

}  // namespace
}  // namespace kbuild::image
