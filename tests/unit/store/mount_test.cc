#include "engine/store/mount.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "common/error.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::store {
namespace {

bool is_mount_point(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    // "<id> <parent> <major:minor> <root> <mount point> ..."
    size_t at = 0;
    for (int field = 0; field < 4 && at != std::string::npos; ++field) at = line.find(' ', at + 1);
    if (at == std::string::npos) continue;
    const size_t end = line.find(' ', at + 1);
    if (line.substr(at + 1, end - at - 1) == path) return true;
  }
  return false;
}

class MountTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Mounts made here stay in a namespace of the test's own (still single-threaded here).
    if (::geteuid() == 0) enter_private_mount_namespace();
  }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: mounts";
    source_ = dir_.path() + "/source";
    target_ = dir_.path() + "/target";
    check(::mkdir(source_.c_str(), 0755), "mkdir", source_);
    check(::mkdir(target_.c_str(), 0755), "mkdir", target_);
    UniqueFd f(check(::open((source_ + "/f").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), "open", "f"));
  }

  // A child that opens target/f, says so, and keeps it open until it exits after `hold_ms`
  // (or is killed).
  pid_t child_holding_a_file(int hold_ms) {
    int ready[2];
    check(::pipe(ready), "pipe");
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open((target_ + "/f").c_str(), O_RDONLY);
      (void)!::write(ready[1], fd >= 0 ? "y" : "n", 1);
      ::usleep(static_cast<useconds_t>(hold_ms) * 1000);
      ::_exit(0);
    }
    char answer = 0;
    EXPECT_EQ(::read(ready[0], &answer, 1), 1);
    EXPECT_EQ(answer, 'y');
    ::close(ready[0]);
    ::close(ready[1]);
    return pid;
  }

  TempDir dir_;
  std::string source_, target_;
};

TEST_F(MountTest, UnmountWaitsForAChildThatBrieflyHoldsAFileInside) {
  Mount mount = Mount::bind(source_, target_, false);
  ASSERT_TRUE(is_mount_point(target_));
  const pid_t child = child_holding_a_file(100);
  EXPECT_NO_THROW(mount.unmount());
  EXPECT_FALSE(is_mount_point(target_));
  ::waitpid(child, nullptr, 0);
}

TEST_F(MountTest, UnmountDetachesAMountThatStaysBusy) {
  Mount mount = Mount::bind(source_, target_, false);
  const pid_t child = child_holding_a_file(60000);
  EXPECT_NO_THROW(mount.unmount());
  EXPECT_FALSE(is_mount_point(target_));
  EXPECT_EQ(::kill(child, 0), 0);  // still holding its file open
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}


TEST(OverlayMountOptions, NamesDaemonChosenLayersInOrder) {
  EXPECT_EQ(overlay_mount_options({"/s/2", "/s/1"}, "/s/up", "/s/work"),
            "lowerdir=/s/2:/s/1,upperdir=/s/up,workdir=/s/work,index=off,metacopy=off,redirect_dir=off");
  EXPECT_EQ(overlay_mount_options({"/s/2", "/s/1"}, "", ""), "lowerdir=/s/2:/s/1,index=off,metacopy=off,redirect_dir=off");
}

// A name with the option string's syntax in it would read as more layers or options
// ("x:/etc" as the host's /etc): it never gets there.
TEST(OverlayMountOptions, RefusesAPathWithOptionSyntax) {
  for (const char* bad : {"/ctx/x:/etc", "/ctx/a,upperdir=/etc", "/ctx/back\\slash", "/ctx/new\nline"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(overlay_mount_options({bad}, "", ""), Error);
    EXPECT_THROW(overlay_mount_options({"/s/1"}, bad, "/s/work"), Error);
    EXPECT_THROW(overlay_mount_options({"/s/1"}, "/s/up", bad), Error);
  }
}

// Both ways of mounting (the one a pre-6.8 kernel takes, forced here) give the same overlay.
TEST_F(MountTest, OverlayWorksThroughEitherMountApi) {
  for (OverlayApi api : {OverlayApi::automatic, OverlayApi::legacy}) {
    SCOPED_TRACE(api == OverlayApi::legacy ? "legacy" : "automatic");
    TempDir layers(dir_.path(), "layers-");
    std::string lower2 = layers.path() + "/lower2", upper = layers.path() + "/upper", work = layers.path() + "/work";
    for (const std::string& d : {lower2, upper, work}) check(::mkdir(d.c_str(), 0755), "mkdir", d);
    UniqueFd f(check(::open((lower2 + "/g").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), "open", "g"));
    {
      Mount mount = Mount::overlay({lower2, source_}, upper, work, target_, api);
      EXPECT_TRUE(is_mount_point(target_));
      EXPECT_EQ(::access((target_ + "/f").c_str(), F_OK), 0);
      EXPECT_EQ(::access((target_ + "/g").c_str(), F_OK), 0);
      UniqueFd made(check(::open((target_ + "/new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), "open", "new"));
      EXPECT_EQ(::access((upper + "/new").c_str(), F_OK), 0);
      mount.unmount();
    }
    EXPECT_FALSE(is_mount_point(target_));
  }
}

TEST_F(MountTest, CloneMountsWhatAnFdHoldsWithoutItsPath) {
  UniqueFd source(check(::open(source_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "open", source_));
  std::string renamed = dir_.path() + "/renamed:,x";
  check(::rename(source_.c_str(), renamed.c_str()), "rename", source_);
  Mount mount = Mount::clone(source.get(), target_);
  EXPECT_TRUE(is_mount_point(target_));
  EXPECT_EQ(::access((target_ + "/f").c_str(), F_OK), 0);
  mount.unmount();
  check(::rename(renamed.c_str(), source_.c_str()), "rename", renamed);
}

// A hundred layers with long paths would not fit one page of options named by path.
TEST_F(MountTest, LegacyOverlayTakesMoreLayersThanTheirPathsWouldFitInAPage) {
  std::vector<std::string> lowers;
  std::string long_name(100, 'l');
  for (int i = 0; i < 100; ++i) {
    lowers.push_back(dir_.path() + "/" + long_name + std::to_string(i));
    check(::mkdir(lowers.back().c_str(), 0755), "mkdir", lowers.back());
  }
  UniqueFd bottom(check(::open((lowers.back() + "/bottom").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), "open", "b"));
  Mount mount = Mount::overlay(lowers, "", "", target_, OverlayApi::legacy);
  EXPECT_EQ(::access((target_ + "/bottom").c_str(), F_OK), 0);
  mount.unmount();
}

// What a crashed daemon leaves: mounts stacked and nested below a dir, one with a space in its
// name (mountinfo escapes it); the dir itself, a mount too, stays.
TEST_F(MountTest, DetachMountsUnderTakesEveryMountBelowButNotTheDirItself) {
  std::string root = dir_.path() + "/root";
  check(::mkdir(root.c_str(), 0755), "mkdir", root);
  Mount root_mount = Mount::tmpfs(root, 0, "size=1m");
  std::string spaced = root + "/a space";
  check(::mkdir(spaced.c_str(), 0755), "mkdir", spaced);
  Mount::tmpfs(spaced, 0, "size=1m").release();
  Mount::tmpfs(spaced, 0, "size=1m").release();  // stacked on the first
  std::string outer = root + "/outer";
  std::string nested = outer + "/nested";
  check(::mkdir(outer.c_str(), 0755), "mkdir", outer);
  Mount::tmpfs(outer, 0, "size=1m").release();
  check(::mkdir(nested.c_str(), 0755), "mkdir", nested);
  Mount::bind(source_, nested, true).release();
  ASSERT_TRUE(is_mount_point(nested));

  EXPECT_EQ(detach_mounts_under(root), 4u);
  EXPECT_FALSE(is_mount_point(nested));
  EXPECT_FALSE(is_mount_point(outer));
  EXPECT_TRUE(is_mount_point(root));
  EXPECT_EQ(detach_mounts_under(root), 0u);  // the spaced one is gone too: nothing is left below
  root_mount.unmount();
}

}  // namespace
}  // namespace kbuild::store
