#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "seccomp/seccomp.h"

namespace kbuild::seccomp {
namespace {

// Exit codes of the child, one per check, so a failure says which check failed.
enum ChildResult { ok = 0, install_failed = 10, unshare_not_eperm, getpid_broken, new_syscall_not_enosys };

ChildResult run_confined(const Filter& filter, long newer_than_profile) {
  try {
    install(filter);
  } catch (...) {
    return install_failed;
  }
  if (::unshare(CLONE_NEWUSER) != -1 || errno != EPERM) return unshare_not_eperm;
  if (::getpid() <= 0 || ::syscall(SYS_getpid) != ::getpid()) return getpid_broken;
  if (::syscall(newer_than_profile) != -1 || errno != ENOSYS) return new_syscall_not_enosys;
  return ok;
}

// Without the ENOSYS prologue this number would get the default EPERM: seccomp runs before the
// kernel looks the number up.
long number_newer_than_default_profile() {
  long max = 0;
  for (const SyscallRule& rule : default_profile().syscalls)
    for (const std::string& name : rule.names)
      max = std::max<long>(max, seccomp_syscall_resolve_name(name.c_str()));
  return std::max<long>(max + 1, 1000);
}

TEST(SeccompInstall, ConfinedChildCannotCreateUserNamespaceButRunsAndGetsEnosysForNewSyscalls) {
  // Compiled before fork, so the child only installs it.
  Filter filter = compile(default_profile(), docker_default_capabilities());
  long newer = number_newer_than_default_profile();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(run_confined(filter, newer));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), ok);
}

}  // namespace
}  // namespace kbuild::seccomp
