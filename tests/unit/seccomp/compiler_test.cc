#include "seccomp/compiler.h"

#include <linux/audit.h>
#include <linux/sched.h>
#include <seccomp.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <gtest/gtest.h>
#include <set>
#include <sstream>
#include <string>

#include "common/error.h"
#include "seccomp/seccomp.h"
#include "tests/unit/seccomp/bpf_interpreter.h"

namespace kbuild::seccomp {
namespace {

using testing::run_filter;

constexpr uint32_t kAllow = SECCOMP_RET_ALLOW;
constexpr uint32_t kEperm = SECCOMP_RET_ERRNO | EPERM;
constexpr uint32_t kEnosys = SECCOMP_RET_ERRNO | ENOSYS;
constexpr uint64_t kAfVsock = 40;
constexpr uint64_t kAfInet = 2;
constexpr uint64_t kSigchld = 17;

// One architecture as a process sees it: libseccomp's token for name lookups, the kernel's
// AUDIT_ARCH_* value in seccomp_data.
struct Arch {
  const char* name;
  uint32_t token;
  uint32_t audit;
};
const Arch kX86_64{"x86_64", SCMP_ARCH_X86_64, AUDIT_ARCH_X86_64};
const Arch kX86{"x86", SCMP_ARCH_X86, AUDIT_ARCH_I386};
const Arch kX32{"x32", SCMP_ARCH_X32, AUDIT_ARCH_X86_64};  // numbers carry __X32_SYSCALL_BIT
const Arch kArches[] = {kX86_64, kX86, kX32};

Profile reference_profile() {
  const char* path = std::getenv("KBUILD_SECCOMP_REFERENCE_PROFILE");
  if (!path) throw std::runtime_error("KBUILD_SECCOMP_REFERENCE_PROFILE is not set");
  return read_profile(path);
}

int syscall_number(const Arch& arch, const std::string& name) {
  return seccomp_syscall_resolve_name_arch(arch.token, name.c_str());
}

seccomp_data call(const Arch& arch, int nr, std::vector<uint64_t> args = {}) {
  seccomp_data data{};
  data.nr = nr;
  data.arch = arch.audit;
  std::copy(args.begin(), args.end(), data.args);
  return data;
}

uint32_t verdict(const Filter& filter, const Arch& arch, const std::string& name,
                 std::vector<uint64_t> args = {}) {
  int nr = syscall_number(arch, name);
  if (nr < 0) throw std::runtime_error(name + " has no number on " + arch.name);
  return run_filter(filter.program, call(arch, nr, std::move(args)));
}

std::set<std::string> names_of(const Profile& profile) {
  std::set<std::string> names;
  for (const SyscallRule& rule : profile.syscalls) names.insert(rule.names.begin(), rule.names.end());
  return names;
}

// Argument values that cross every condition of Docker's profile: personas, clone namespace flags
// (alone, mixed, with thread flags), socket families around AF_VSOCK, the reference's own values
// and their neighbours, and values with high bits set.
std::vector<uint64_t> interesting_values(const Profile& reference) {
  constexpr uint64_t thread_flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
                                    CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
  std::set<uint64_t> values = {
      0, 1, kAfInet, 8, 10, 16, 0x20000, 0x20008, 0xffffffff, 0x0400000, 0xffffffffffffffff, 0x100000000,
      0x100000008, kSigchld, CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUTS,
      CLONE_NEWIPC, CLONE_NEWCGROUP, CLONE_NEWUSER | kSigchld, CLONE_NEWNS | CLONE_NEWNET,
      CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | kSigchld, thread_flags, thread_flags | CLONE_NEWNET,
      kAfVsock, 37, 38, 39, 41, 45};
  for (const SyscallRule& rule : reference.syscalls)
    for (const ArgCondition& arg : rule.args)
      for (uint64_t v : {arg.value, arg.value - 1, arg.value + 1, arg.value_two, arg.value | arg.value_two})
        values.insert(v);
  return {values.begin(), values.end()};
}

// Every argument vector tried per system call: all zero, then each interesting value in each of
// the first three positions (clone's flags are the first argument on x86, the second on s390).
std::vector<std::vector<uint64_t>> argument_variations(const Profile& reference) {
  std::vector<std::vector<uint64_t>> out = {{0, 0, 0, 0, 0, 0}};
  for (uint64_t value : interesting_values(reference))
    for (size_t position = 0; position < 3; ++position) {
      std::vector<uint64_t> args(6, 0);
      args[position] = value;
      out.push_back(args);
    }
  return out;
}

std::string describe(const Arch& arch, const std::string& name, const std::vector<uint64_t>& args,
                     uint32_t ours, uint32_t theirs) {
  std::ostringstream out;
  out << arch.name << " " << name << "(" << std::hex;
  for (uint64_t a : args) out << "0x" << a << ",";
  out << "): ours 0x" << ours << ", reference 0x" << theirs;
  return out.str();
}

// Runs the default profile's filter and the reference's on the same calls, every argument
// variation each, and keeps the first differences.
struct VerdictComparison {
  VerdictComparison(const Profile& reference, Capabilities caps)
      : ours(compile(default_profile(), caps)),
        theirs(compile(reference, caps)),
        variations(argument_variations(reference)) {}

  void operator()(const Arch& arch, int nr, const std::string& label) {
    for (const auto& args : variations) {
      seccomp_data data = call(arch, nr, args);
      uint32_t a = run_filter(ours.program, data), b = run_filter(theirs.program, data);
      ++compared;
      if (a != b && mismatches.size() < 20) mismatches.push_back(describe(arch, label, args, a, b));
    }
  }

  Filter ours, theirs;
  std::vector<std::vector<uint64_t>> variations;
  size_t compared = 0;
  std::vector<std::string> mismatches;
};

class SeccompVerdicts : public ::testing::TestWithParam<Capabilities> {};

TEST_P(SeccompVerdicts, DefaultProfileMatchesDockerForEverySyscallTheReferenceNames) {
  Profile reference = reference_profile();
  VerdictComparison compare(reference, GetParam());
  for (const std::string& name : names_of(reference))
    for (const Arch& arch : kArches) {
      int nr = syscall_number(arch, name);
      if (nr >= 0) compare(arch, nr, name);  // else not a call of this arch (or unknown to libseccomp)
    }
  EXPECT_GT(compare.compared, 100000u);
  EXPECT_TRUE(compare.mismatches.empty()) << ::testing::PrintToString(compare.mismatches);
}

// Also numbers no name resolves to (x86's direct socket calls, which libseccomp files under
// socketcall, holes in the tables) up to past the ENOSYS limit.
TEST_P(SeccompVerdicts, DefaultProfileMatchesDockerForEveryNumberUpToPastTheLimit) {
  VerdictComparison compare(reference_profile(), GetParam());
  for (const Arch& arch : kArches) {
    uint32_t first = arch.token == SCMP_ARCH_X32 ? 0x40000000 : 0;
    for (uint32_t nr = first; nr < first + 600; ++nr)
      compare(arch, static_cast<int>(nr), "#" + std::to_string(nr - first));
  }
  EXPECT_TRUE(compare.mismatches.empty()) << ::testing::PrintToString(compare.mismatches);
}

TEST_P(SeccompVerdicts, DefaultProfileNamesTheSameSyscallsAsTheReference) {
  // Same names, so the same "newer than the profile" limit for ENOSYS.
  EXPECT_EQ(names_of(default_profile()), names_of(reference_profile()));
}

INSTANTIATE_TEST_SUITE_P(DockerDefaultAndAllCapabilities, SeccompVerdicts,
                         ::testing::Values(docker_default_capabilities(), all_capabilities()),
                         [](const auto& info) {
                           return info.param == all_capabilities() ? "AllCaps" : "DockerDefaultCaps";
                         });

TEST(SeccompCapabilities, DockerDefaultSetIsDockersFourteen) {
  EXPECT_EQ(docker_default_capabilities(), 0xa80425fbu);
  EXPECT_EQ(capability_from_name("CAP_SYS_ADMIN"), 21u);
  EXPECT_EQ(capability_from_name("CAP_NOT_A_CAP"), std::nullopt);
}

// The highest number any name of the default profile has on `arch`.
uint32_t highest_named(const Arch& arch) {
  uint32_t max = 0;
  for (const std::string& name : names_of(default_profile())) {
    int nr = syscall_number(arch, name);
    if (nr >= 0) max = std::max(max, static_cast<uint32_t>(nr));
  }
  return max;
}

TEST(SeccompCompiler, SyscallNewerThanTheProfileFailsWithEnosysOnEveryArch) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  for (const Arch& arch : kArches) {
    uint32_t max = highest_named(arch);
    ASSERT_GT(max, 0u) << arch.name;
    for (uint32_t nr : {max + 1, max + 100})
      EXPECT_EQ(run_filter(filter.program, call(arch, static_cast<int>(nr))), kEnosys) << arch.name << " " << nr;
  }
  EXPECT_GT(1000u, highest_named(kX86_64));
  EXPECT_EQ(run_filter(filter.program, call(kX86_64, 1000)), kEnosys);
}

TEST(SeccompCompiler, KnownButUnlistedSyscallGetsTheDefaultEperm) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  for (const Arch& arch : kArches) EXPECT_EQ(verdict(filter, arch, "kexec_load"), kEperm) << arch.name;
}

TEST(SeccompCompiler, UnknownArchitectureIsKilled) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  seccomp_data data = call(kX86_64, 0);
  data.arch = 0x12345678;
  EXPECT_EQ(run_filter(filter.program, data), SECCOMP_RET_KILL_THREAD);
}

TEST(SeccompCompiler, PrivilegedSyscallsAreDeniedWithDockerDefaultCaps) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  for (const char* name : {"mount", "umount2", "unshare", "setns", "keyctl", "reboot", "init_module",
                           "finit_module", "bpf", "perf_event_open", "open_by_handle_at", "pivot_root",
                           "settimeofday", "sethostname", "kcmp", "iopl"})
    for (const Arch& arch : kArches)
      if (syscall_number(arch, name) >= 0) {
        EXPECT_EQ(verdict(filter, arch, name), kEperm) << arch.name << " " << name;
      }
}

TEST(SeccompCompiler, PrivilegedSyscallsAreAllowedWithAllCaps) {
  Filter filter = compile(default_profile(), all_capabilities());
  for (const char* name : {"mount", "unshare", "setns", "reboot", "init_module", "bpf", "clone3", "sethostname"})
    EXPECT_EQ(verdict(filter, kX86_64, name), kAllow) << name;
}

// Docker allows ptrace from Linux 4.8 on, where it can no longer be used to bypass seccomp.
TEST(SeccompCompiler, PtraceIsAllowedWithDefaultCapsOnLinux48AndLater) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  EXPECT_EQ(verdict(filter, kX86_64, "ptrace"), kAllow);
}

TEST(SeccompCompiler, CloneMayNotCreateNamespacesWithoutSysAdmin) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  for (const Arch& arch : {kX86_64, kX86}) {
    EXPECT_EQ(verdict(filter, arch, "clone", {kSigchld}), kAllow) << arch.name;
    for (uint64_t ns : {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID | CLONE_NEWUTS})
      EXPECT_EQ(verdict(filter, arch, "clone", {ns | kSigchld}), kEperm) << arch.name << " " << ns;
  }
  EXPECT_EQ(verdict(filter, kX86_64, "clone3"), kEnosys);  // libc falls back to clone()
}

TEST(SeccompCompiler, VsockAndAlgSocketsAreDenied) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  EXPECT_EQ(verdict(filter, kX86_64, "socket", {kAfInet}), kAllow);
  EXPECT_EQ(verdict(filter, kX86_64, "socket", {kAfVsock}), kEperm);
  EXPECT_EQ(verdict(filter, kX86_64, "socket", {38}), kEperm);
}

TEST(SeccompCompiler, PersonalityAllowsOnlyDockersPersonas) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  for (uint64_t persona : {0x0ull, 0x8ull, 0x20000ull, 0x20008ull, 0xffffffffull})
    EXPECT_EQ(verdict(filter, kX86_64, "personality", {persona}), kAllow) << persona;
  EXPECT_EQ(verdict(filter, kX86_64, "personality", {0x0400000}), kEperm);  // READ_IMPLIES_EXEC
}

TEST(SeccompCompiler, AllowingDefaultActionGetsNoEnosysPrologue) {
  Profile profile = parse_profile(R"({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]})", "test");
  Filter filter = compile(profile, 0);
  EXPECT_EQ(verdict(filter, kX86_64, "mount"), kEperm);
  EXPECT_EQ(run_filter(filter.program, call(kX86_64, 1000)), kAllow);
}

TEST(SeccompCompiler, NamesUnknownToLibseccompAreSkipped) {
  Profile profile = parse_profile(R"({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [{"names": ["getpid", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"}]})", "test");
  Filter filter = compile(profile, 0);
  EXPECT_EQ(verdict(filter, kX86_64, "getpid"), kAllow);
}

TEST(SeccompCompiler, SerializedFilterRoundTrips) {
  Filter filter = compile(default_profile(), docker_default_capabilities());
  Filter copy = deserialize(serialize(filter));
  ASSERT_EQ(copy.program.size(), filter.program.size());
  EXPECT_EQ(serialize(copy), serialize(filter));
  EXPECT_THROW(deserialize("abc"), Error);
  EXPECT_THROW(deserialize(""), Error);
}

}  // namespace
}  // namespace kbuild::seccomp
