#include "engine/solver/exec_user.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <fstream>
#include <map>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/solver/run_step.h"

namespace kbuild::solver {
namespace {

const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "builder:x:1000:1001:Builder:/home/builder:/bin/sh\n"
    "nohome:x:1002:1002::/:/bin/sh\n";
const char* kGroup =
    "root:x:0:\n"
    "builders:x:1001:\n"
    "wheel:x:10:builder,other\n"
    "audio:x:29:builder\n";

RootfsFileReader reader(std::map<std::string, std::string> files) {
  return [files](const std::string& path) -> std::optional<std::string> {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ExecUser, EmptyUserIsRootWithItsHome) {
  ExecUser user = resolve_exec_user("", reader({{"/etc/passwd", kPasswd}}));
  EXPECT_EQ(user.uid, 0u);
  EXPECT_EQ(user.gid, 0u);
  EXPECT_EQ(user.home, "/root");
}

TEST(ExecUser, NameTakesIdsHomeAndSupplementaryGroupsFromTheImage) {
  ExecUser user = resolve_exec_user("builder", reader({{"/etc/passwd", kPasswd}, {"/etc/group", kGroup}}));
  EXPECT_EQ(user.uid, 1000u);
  EXPECT_EQ(user.gid, 1001u);
  EXPECT_EQ(user.home, "/home/builder");
  EXPECT_EQ(user.groups, (std::vector<gid_t>{10, 29}));
}

TEST(ExecUser, NumericUserNeedsNoPasswdAndGetsGroupZero) {
  ExecUser user = resolve_exec_user("1000", reader({{"/etc/passwd", kPasswd}}));
  EXPECT_EQ(user.uid, 1000u);
  EXPECT_EQ(user.gid, 0u);
  EXPECT_TRUE(user.groups.empty());
  EXPECT_EQ(user.home, "/home/builder");
  ExecUser unknown = resolve_exec_user("4242:4343", reader({}));
  EXPECT_EQ(unknown.uid, 4242u);
  EXPECT_EQ(unknown.gid, 4343u);
  EXPECT_EQ(unknown.home, "/");
}

TEST(ExecUser, NamedGroupReplacesThePrimaryGroup) {
  ExecUser user = resolve_exec_user("builder:wheel", reader({{"/etc/passwd", kPasswd}, {"/etc/group", kGroup}}));
  EXPECT_EQ(user.uid, 1000u);
  EXPECT_EQ(user.gid, 10u);
  EXPECT_EQ(user.groups, (std::vector<gid_t>{10}));
}

TEST(ExecUser, UnknownNamesFailWithBuildKitsText) {
  try {
    resolve_exec_user("nobody", reader({{"/etc/passwd", kPasswd}}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unable to find user nobody: no matching entries in passwd file");
  }
  try {
    resolve_exec_user("builder:staff", reader({{"/etc/passwd", kPasswd}, {"/etc/group", kGroup}}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unable to find group staff: no matching entries in group file");
  }
}

void write(const std::string& path, const std::string& data) {
  std::ofstream(path) << data;
}

TEST(LayerFiles, TopmostLayerWinsAndWhiteoutsHideLowerOnes) {
  TempDir dir("/tmp", "layers-");
  std::string top = dir.path() + "/top", middle = dir.path() + "/middle", bottom = dir.path() + "/bottom";
  for (const auto& layer : {top, middle, bottom}) {
    ASSERT_EQ(::mkdir(layer.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((layer + "/etc").c_str(), 0755), 0);
  }
  write(bottom + "/etc/passwd", "bottom");
  write(middle + "/etc/passwd", "middle");
  write(bottom + "/etc/group", "group");
  EXPECT_EQ(read_file_from_layers({top, middle, bottom}, "/etc/passwd"), "middle");
  EXPECT_EQ(read_file_from_layers({top, middle, bottom}, "/etc/group"), "group");
  ASSERT_EQ(::mknod((top + "/etc/group").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
  EXPECT_EQ(read_file_from_layers({top, middle, bottom}, "/etc/group"), std::nullopt);
  EXPECT_EQ(read_file_from_layers({top, middle, bottom}, "/etc/missing"), std::nullopt);
}

TEST(LayerFiles, OpaqueDirectoryHidesWhatIsBelowIt) {
  TempDir dir("/tmp", "layers-");
  std::string top = dir.path() + "/top", bottom = dir.path() + "/bottom";
  for (const auto& layer : {top, bottom}) {
    ASSERT_EQ(::mkdir(layer.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((layer + "/etc").c_str(), 0755), 0);
  }
  write(bottom + "/etc/passwd", "bottom");
  ASSERT_EQ(::setxattr((top + "/etc").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  EXPECT_EQ(read_file_from_layers({top, bottom}, "/etc/passwd"), std::nullopt);
  EXPECT_TRUE(lookup_in_layers({top, bottom}, "/etc"));
}

TEST(LayerFiles, SymlinksAreNotFollowed) {
  TempDir dir("/tmp", "layers-");
  std::string layer = dir.path() + "/layer";
  ASSERT_EQ(::mkdir(layer.c_str(), 0755), 0);
  ASSERT_EQ(::symlink("/etc", (layer + "/etc").c_str()), 0);
  EXPECT_EQ(read_file_from_layers({layer}, "/etc/passwd"), std::nullopt);
}

TEST(RunStep, LimitsReadAsBinaryUnits) {
  EXPECT_EQ(format_bytes_binary(512u << 20), "512MiB");
  EXPECT_EQ(format_bytes_binary(1536u << 20), "1.5GiB");
  EXPECT_EQ(format_bytes_binary(100), "100B");
}

}  // namespace
}  // namespace kbuild::solver
