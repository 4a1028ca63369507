#include "engine/sandbox/mount.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::sandbox {
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

}  // namespace
}  // namespace kbuild::sandbox
