// The direct cgroup backend against this machine's real cgroups (needs root).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/sandbox/cgroup.h"
#include "engine/sandbox/direct_backend.h"
#include "tests/unit/sandbox/cgroup_test_util.h"

namespace kbuild::sandbox {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

using testing::Child;
using testing::kMiB;
using testing::sleep_forever;

class DirectCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to make cgroups";
    parent_name_ = "kbuild-test-" + std::to_string(::getpid());
    backend_ = std::make_unique<DirectBackend>(DirectBackendOptions{parent_name_});
  }

  // The group's directory in the hierarchy of `controller` (any for v2).
  std::string dir(std::string_view controller, const std::string& relative) const {
    for (const CgroupHierarchy& h : backend_->hierarchies()) {
      if (backend_->unified() || h.controller == controller) return h.parent_dir + "/" + relative;
    }
    ADD_FAILURE() << "no " << controller << " hierarchy";
    return {};
  }

  std::vector<std::string> controllers() const {
    if (backend_->unified()) return {""};
    std::vector<std::string> names;
    for (const CgroupHierarchy& h : backend_->hierarchies()) names.push_back(h.controller);
    return names;
  }

  std::string parent_name_;
  std::unique_ptr<DirectBackend> backend_;
};

TEST_F(DirectCgroup, PlacesStepInsideItsBuildGroupWithTheLimits) {
  ResourceLimits build_limits{256 * kMiB, 2.0, 64};
  ResourceLimits step_limits{64 * kMiB, 0.5, 16};
  auto build = backend_->create_build("b1", "", build_limits);
  Child child(sleep_forever);
  auto step = build->add_step(child.pid(), "step-7", "", step_limits);

  std::string cgroups = read_file("/proc/" + std::to_string(child.pid()) + "/cgroup");
  std::string suffix = "/" + parent_name_ + "/kbuild-b1/step-7";
  for (const std::string& controller : controllers()) {
    std::string prefix = backend_->unified() ? "0::" : ":" + controller + ":";
    size_t line_start = cgroups.find(prefix);
    ASSERT_NE(line_start, std::string::npos) << cgroups;
    std::string line = cgroups.substr(line_start, cgroups.find('\n', line_start) - line_start);
    EXPECT_TRUE(line.ends_with(suffix)) << line;
  }

  if (backend_->unified()) {
    EXPECT_EQ(read_file(dir("memory", "kbuild-b1/memory.max")), std::to_string(256 * kMiB));
    EXPECT_EQ(read_file(dir("memory", "kbuild-b1/step-7/memory.max")), std::to_string(64 * kMiB));
    EXPECT_EQ(read_file(dir("cpu", "kbuild-b1/step-7/cpu.max")), "50000 100000");
    EXPECT_EQ(read_file(dir("cpu", "kbuild-b1/cpu.max")), "200000 100000");
  } else {
    EXPECT_EQ(read_file(dir("memory", "kbuild-b1/memory.limit_in_bytes")), std::to_string(256 * kMiB));
    EXPECT_EQ(read_file(dir("memory", "kbuild-b1/step-7/memory.limit_in_bytes")), std::to_string(64 * kMiB));
    EXPECT_EQ(read_file(dir("cpu", "kbuild-b1/step-7/cpu.cfs_quota_us")), "50000");
    EXPECT_EQ(read_file(dir("cpu", "kbuild-b1/step-7/cpu.cfs_period_us")), "100000");
    EXPECT_EQ(read_file(dir("cpu", "kbuild-b1/cpu.cfs_quota_us")), "200000");
  }
  EXPECT_EQ(read_file(dir("pids", "kbuild-b1/pids.max")), "64");
  EXPECT_EQ(read_file(dir("pids", "kbuild-b1/step-7/pids.max")), "16");

  child.release();
  step->kill();
  EXPECT_EQ(WTERMSIG(child.wait()), SIGKILL);
  StepUsage usage = step->usage();
  EXPECT_FALSE(usage.oom_killed);
  EXPECT_FALSE(usage.pids_limit_hit);
}

TEST_F(DirectCgroup, StepOverItsMemoryLimitIsOomKilled) {
  auto build = backend_->create_build("oom", "", {});
  Child child([] {
    size_t size = 256 * kMiB;
    auto* memory = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (memory == MAP_FAILED) return 2;
    for (size_t i = 0; i < size; i += 4096) memory[i] = 1;
    return 0;
  });
  auto step = build->add_step(child.pid(), "hog", "", {32 * kMiB, std::nullopt, std::nullopt});
  child.release();
  int status = child.wait();
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  StepUsage usage = step->usage();
  EXPECT_TRUE(usage.oom_killed);
  EXPECT_FALSE(usage.pids_limit_hit);
}

TEST_F(DirectCgroup, BuildMemoryLimitCountsAsTheStepsOomKill) {
  auto build = backend_->create_build("oom-build", "", {32 * kMiB, std::nullopt, std::nullopt});
  Child child([] {
    size_t size = 256 * kMiB;
    auto* memory = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (memory == MAP_FAILED) return 2;
    for (size_t i = 0; i < size; i += 4096) memory[i] = 1;
    return 0;
  });
  auto step = build->add_step(child.pid(), "hog", "", {});
  child.release();
  EXPECT_EQ(WTERMSIG(child.wait()), SIGKILL);
  EXPECT_TRUE(step->usage().oom_killed);
}

TEST_F(DirectCgroup, ForksBeyondThePidsLimitFail) {
  auto build = backend_->create_build("pids", "", {});
  Child child([] {
    std::vector<pid_t> children;
    int result = 1;
    for (int i = 0; i < 64; ++i) {
      pid_t pid = ::fork();
      if (pid == 0) {
        ::pause();
        ::_exit(0);
      }
      if (pid < 0) {
        result = errno == EAGAIN ? 0 : 3;
        break;
      }
      children.push_back(pid);
    }
    for (pid_t pid : children) ::kill(pid, SIGKILL);
    for (pid_t pid : children) ::waitpid(pid, nullptr, 0);
    return result;
  });
  auto step = build->add_step(child.pid(), "forker", "", {std::nullopt, std::nullopt, 8});
  child.release();
  int status = child.wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "fork did not fail with EAGAIN";
  StepUsage usage = step->usage();
  EXPECT_TRUE(usage.pids_limit_hit);
  EXPECT_FALSE(usage.oom_killed);
}

TEST_F(DirectCgroup, KillEndsASleepingStep) {
  auto build = backend_->create_build("cancel", "", {});
  Child child(sleep_forever);
  auto step = build->add_step(child.pid(), "sleeper", "", {});
  child.release();
  auto start = std::chrono::steady_clock::now();
  step->kill();
  int status = child.wait();
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST_F(DirectCgroup, NothingRemainsAfterDestruction) {
  std::vector<std::string> parents;
  for (const CgroupHierarchy& h : backend_->hierarchies()) parents.push_back(h.parent_dir);
  {
    auto build = backend_->create_build("gone", "", {64 * kMiB, 1.0, 32});
    Child child(sleep_forever);
    auto step = build->add_step(child.pid(), "s", "", {});
    child.release();
    for (const std::string& parent : parents) EXPECT_TRUE(exists(parent + "/kbuild-gone/s")) << parent;
    // Destroyed with its process still running: the destructor kills it.
    step.reset();
    EXPECT_EQ(WTERMSIG(child.wait()), SIGKILL);
    for (const std::string& parent : parents) EXPECT_FALSE(exists(parent + "/kbuild-gone/s")) << parent;
  }
  for (const std::string& parent : parents) EXPECT_FALSE(exists(parent + "/kbuild-gone")) << parent;
  backend_.reset();
  for (const std::string& parent : parents) EXPECT_FALSE(exists(parent)) << parent;
}

TEST_F(DirectCgroup, SweepRemovesALeftoverGroupAndItsProcesses) {
  Child child(sleep_forever);
  {
    // A crashed daemon: its groups stay, with a process in them.
    auto build = backend_->create_build("crashed", "", {});
    auto step = build->add_step(child.pid(), "s", "", {});
    static_cast<void>(step.release());
    static_cast<void>(build.release());
  }
  child.release();
  auto fresh = std::make_unique<DirectBackend>(DirectBackendOptions{parent_name_});
  fresh->sweep();
  EXPECT_EQ(WTERMSIG(child.wait()), SIGKILL);
  for (const CgroupHierarchy& h : fresh->hierarchies()) EXPECT_FALSE(exists(h.parent_dir + "/kbuild-crashed"));
}

TEST_F(DirectCgroup, RejectsNamesThatAreNotPlainWords) {
  EXPECT_THROW(backend_->create_build("../escape", "", {}), Error);
  EXPECT_THROW(backend_->create_build("", "", {}), Error);
  auto build = backend_->create_build("names", "", {});
  EXPECT_THROW(build->add_step(::getpid(), "a/b", "", {}), Error);
  EXPECT_THROW(build->add_step(::getpid(), "cgroup.procs", "", {}), Error);
}

TEST(CgroupBackendChoice, UnknownNameIsAUserError) {
  try {
    make_cgroup_backend("lxc");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::user);
  }
}

}  // namespace
}  // namespace kbuild::sandbox
