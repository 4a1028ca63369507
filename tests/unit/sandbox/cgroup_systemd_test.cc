// The systemd cgroup backend against a real systemd. Skips unless PID 1 is systemd; run inside
// a booted container by tests/system/run.sh.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/sandbox/cgroup.h"
#include "engine/sandbox/systemd_backend.h"
#include "tests/unit/sandbox/cgroup_test_util.h"

namespace kbuild::sandbox {
namespace {

// `systemctl show` of a unit, as key → value.
std::map<std::string, std::string> show(const std::string& unit) {
  std::map<std::string, std::string> properties;
  std::string command = "systemctl show --no-pager '" + unit + "'";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return properties;
  char line[4096];
  while (std::fgets(line, sizeof line, pipe) != nullptr) {
    std::string text = line;
    if (!text.empty() && text.back() == '\n') text.pop_back();
    size_t equals = text.find('=');
    if (equals != std::string::npos) properties[text.substr(0, equals)] = text.substr(equals + 1);
  }
  ::pclose(pipe);
  return properties;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Whether systemd has the unit loaded. (`systemctl show` would load a missing slice, which
// needs no unit file, and report it "loaded".)
bool loaded(const std::string& unit) {
  std::string command = "systemctl list-units --all --plain --no-legend --no-pager '" + unit + "'";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return false;
  char line[4096];
  bool found = false;
  while (std::fgets(line, sizeof line, pipe) != nullptr) found = found || std::string(line).find(unit) != std::string::npos;
  ::pclose(pipe);
  return found;
}

using testing::Child;
using testing::kMiB;
using testing::sleep_forever;

int allocate_256_mib() {
  size_t size = 256 * kMiB;
  auto* memory = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (memory == MAP_FAILED) return 2;
  for (size_t i = 0; i < size; i += 4096) memory[i] = 1;
  return 0;
}

class SystemdCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    bool under_systemd = ::access("/run/systemd/system", F_OK) == 0;
    // tests/system/nspawn.sh sets KBUILD_SYSTEM_TEST: there a skip would hide a broken harness.
    if (!under_systemd && std::getenv("KBUILD_SYSTEM_TEST") != nullptr) FAIL() << "PID 1 is not systemd";
    if (!under_systemd) GTEST_SKIP() << "PID 1 is not systemd";
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to start system units";
    backend_ = make_systemd_backend();
    build_ = "t" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }

  std::unique_ptr<CgroupBackend> backend_;
  std::string build_;
};

TEST_F(SystemdCgroup, SliceAndScopeCarryTheLimitsWhileTheStepRuns) {
  EXPECT_EQ(backend_->name(), "systemd");
  auto build = backend_->create_build(build_, build_description("1a2b3c", 1000), {256 * kMiB, 2.0, 64});
  std::string slice = build_slice_name(build_);
  std::string scope = step_scope_name(build_, "step-7");
  Child child(sleep_forever);
  auto step = build->add_step(child.pid(), "step-7", step_description("[stage-1 2/5] RUN make\nX=1"),
                              {64 * kMiB, 0.5, 16});

  auto slice_properties = show(slice);
  EXPECT_EQ(slice_properties["ActiveState"], "active");
  EXPECT_EQ(slice_properties["MemoryMax"], std::to_string(256 * kMiB));
  EXPECT_EQ(slice_properties["TasksMax"], "64");
  EXPECT_EQ(slice_properties["CPUQuotaPerSecUSec"], "2s");
  EXPECT_EQ(slice_properties["Description"], "kbuild build 1a2b3c (uid 1000)");
  auto scope_properties = show(scope);
  EXPECT_EQ(scope_properties["ActiveState"], "active");
  EXPECT_EQ(scope_properties["Slice"], slice);
  EXPECT_EQ(scope_properties["MemoryMax"], std::to_string(64 * kMiB));
  EXPECT_EQ(scope_properties["TasksMax"], "16");
  EXPECT_EQ(scope_properties["CPUQuotaPerSecUSec"], "500ms");
  EXPECT_EQ(scope_properties["Description"], "kbuild: [stage-1 2/5] RUN make\\nX=1");
  EXPECT_NE(read_file("/proc/" + std::to_string(child.pid()) + "/cgroup").find("/" + slice + "/" + scope),
            std::string::npos);

  child.release();
  step->kill();
  EXPECT_EQ(WTERMSIG(child.wait()), SIGKILL);
  EXPECT_FALSE(step->usage().oom_killed);
  step.reset();
  EXPECT_FALSE(loaded(scope));
  EXPECT_TRUE(loaded(slice));
  build.reset();
  EXPECT_FALSE(loaded(slice));
}

TEST_F(SystemdCgroup, AutoChoosesSystemd) { EXPECT_EQ(make_cgroup_backend("auto")->name(), "systemd"); }

TEST_F(SystemdCgroup, StepOverItsMemoryMaxIsOomKilled) {
  auto build = backend_->create_build(build_, "", {});
  Child child(allocate_256_mib);
  auto step = build->add_step(child.pid(), "hog", "", {32 * kMiB, std::nullopt, std::nullopt});
  child.release();
  int status = child.wait();
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_TRUE(step->usage().oom_killed);
}

// The forked processes stay until usage() has been read: on cgroup v1 (and kernels whose
// pids.events is not hierarchical) the hit is counted only in the scope's own group, which
// systemd removes as soon as the scope is empty.
TEST_F(SystemdCgroup, ForksBeyondTasksMaxFail) {
  auto build = backend_->create_build(build_, "", {});
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
    return result;
  });
  auto step = build->add_step(child.pid(), "forker", "", {std::nullopt, std::nullopt, 8});
  child.release();
  int status = child.wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "fork did not fail with EAGAIN";
  EXPECT_TRUE(step->usage().pids_limit_hit);
  step->kill();
}

TEST_F(SystemdCgroup, DestroyingARunningStepKillsItAndRemovesTheScope) {
  auto build = backend_->create_build(build_, "", {});
  Child child(sleep_forever);
  auto step = build->add_step(child.pid(), "s", "", {});
  child.release();
  step.reset();
  EXPECT_EQ(WTERMSIG(child.wait()), SIGKILL);
  EXPECT_FALSE(loaded(step_scope_name(build_, "s")));
}

TEST_F(SystemdCgroup, SweepStopsLeftoverUnitsAndTheirProcesses) {
  Child child(sleep_forever);
  auto build = backend_->create_build(build_, "", {});
  auto step = build->add_step(child.pid(), "s", "", {});
  // A crashed daemon: its units stay, with a process in them.
  static_cast<void>(step.release());
  static_cast<void>(build.release());
  child.release();
  make_systemd_backend()->sweep();
  EXPECT_EQ(WTERMSIG(child.wait()), SIGKILL);
  EXPECT_FALSE(loaded(step_scope_name(build_, "s")));
  EXPECT_FALSE(loaded(build_slice_name(build_)));
}

}  // namespace
}  // namespace kbuild::sandbox
