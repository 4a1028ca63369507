#include "seccomp/compiler.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "common/error.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "seccomp/enosys.h"

namespace kbuild::seccomp {
namespace {

struct ContextRelease {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Context = std::unique_ptr<void, ContextRelease>;

// libseccomp returns -errno.
void check_scmp(int rc, const std::string& what) {
  if (rc < 0) throw Error(ErrorKind::internal, "seccomp: " + what + ": " + std::strerror(-rc));
}

// What the rules are compiled for: moby filters rules by the native architecture's Go name, the
// container's bounding capabilities and the host kernel.
struct Target {
  uint32_t native_arch = 0;
  std::string go_arch;
  Capabilities caps = 0;
  KernelVersion kernel;
};

// libseccomp's architecture tokens, by the names profiles use and Go's names (moby's
// nativeToSeccomp/goToNative); loongarch64 is unknown to libseccomp 2.5 and resolves to 0.
struct ArchName {
  const char* profile_name;
  const char* go_name;
};
constexpr ArchName kArchNames[] = {
    {"SCMP_ARCH_X86", "x86"},           {"SCMP_ARCH_X86_64", "amd64"},
    {"SCMP_ARCH_X32", "x32"},           {"SCMP_ARCH_ARM", "arm"},
    {"SCMP_ARCH_AARCH64", "arm64"},     {"SCMP_ARCH_MIPS", "mips"},
    {"SCMP_ARCH_MIPS64", "mips64"},     {"SCMP_ARCH_MIPS64N32", "mips64n32"},
    {"SCMP_ARCH_MIPSEL", "mipsle"},     {"SCMP_ARCH_MIPSEL64", "mipsel64"},
    {"SCMP_ARCH_MIPSEL64N32", "mips3l64n32"}, {"SCMP_ARCH_PPC", "ppc"},
    {"SCMP_ARCH_PPC64", "ppc64"},       {"SCMP_ARCH_PPC64LE", "ppc64le"},
    {"SCMP_ARCH_S390", "s390"},         {"SCMP_ARCH_S390X", "s390x"},
    {"SCMP_ARCH_RISCV64", "riscv64"},   {"SCMP_ARCH_LOONGARCH64", "loong64"},
};

// "SCMP_ARCH_X86_64" -> SCMP_ARCH_X86_64's token, or 0 when libseccomp does not know it.
uint32_t arch_token(const std::string& profile_name) {
  std::string_view prefix = "SCMP_ARCH_";
  if (!profile_name.starts_with(prefix)) return 0;
  std::string name = profile_name.substr(prefix.size());
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return seccomp_arch_resolve_name(name.c_str());
}

std::string go_arch_name(uint32_t token) {
  for (const ArchName& arch : kArchNames)
    if (arch_token(arch.profile_name) == token) return arch.go_name;
  return {};
}

// Kernel and major revision of the running kernel; "6.1.0-18-amd64" is 6.1.
KernelVersion running_kernel() {
  utsname uts{};
  check(::uname(&uts), "uname");
  KernelVersion version;
  if (std::sscanf(uts.release, "%u.%u", &version.kernel, &version.major) != 2)
    throw Error(ErrorKind::internal, std::string("seccomp: cannot parse kernel release ") + uts.release);
  return version;
}

bool holds(Capabilities caps, const std::string& name) {
  auto number = capability_from_name(name);
  return number && (caps >> *number & 1);
}

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// moby's setupSeccomp: an exclude drops the rule on any match, an include needs every condition.
bool excluded(const RuleCondition& c, const Target& t) {
  if (contains(c.arches, t.go_arch)) return true;
  if (std::any_of(c.caps.begin(), c.caps.end(), [&](auto& cap) { return holds(t.caps, cap); }))
    return true;
  return c.min_kernel && t.kernel >= *c.min_kernel;
}

bool included(const RuleCondition& c, const Target& t) {
  if (!c.arches.empty() && !contains(c.arches, t.go_arch)) return false;
  if (!std::all_of(c.caps.begin(), c.caps.end(), [&](auto& cap) { return holds(t.caps, cap); }))
    return false;
  return !c.min_kernel || t.kernel >= *c.min_kernel;
}

bool applies_to_arch(const SyscallRule& rule, const Target& t) {
  return !contains(rule.excludes.arches, t.go_arch) &&
         (rule.includes.arches.empty() || contains(rule.includes.arches, t.go_arch));
}

// runc's getAction: ERRNO and TRACE default to EPERM.
uint32_t scmp_action(Action action, std::optional<uint32_t> errno_ret) {
  uint32_t code = errno_ret.value_or(EPERM);
  switch (action) {
    case Action::kill_thread: return SCMP_ACT_KILL_THREAD;
    case Action::kill_process: return SCMP_ACT_KILL_PROCESS;
    case Action::trap: return SCMP_ACT_TRAP;
    case Action::errno_ret: return SCMP_ACT_ERRNO(code);
    case Action::trace: return SCMP_ACT_TRACE(code);
    case Action::allow: return SCMP_ACT_ALLOW;
    case Action::log: return SCMP_ACT_LOG;
    case Action::notify: break;
  }
  // A notify listener needs an agent the daemon does not run.
  throw Error(ErrorKind::user, "seccomp profile: SCMP_ACT_NOTIFY is not supported");
}

scmp_compare scmp_op(CompareOp op) {
  switch (op) {
    case CompareOp::not_equal: return SCMP_CMP_NE;
    case CompareOp::less: return SCMP_CMP_LT;
    case CompareOp::less_equal: return SCMP_CMP_LE;
    case CompareOp::equal: return SCMP_CMP_EQ;
    case CompareOp::greater_equal: return SCMP_CMP_GE;
    case CompareOp::greater: return SCMP_CMP_GT;
    case CompareOp::masked_equal: return SCMP_CMP_MASKED_EQ;
  }
  return SCMP_CMP_EQ;
}

// The architectures the filter covers: the flat list, or the native archMap entry with its
// compat architectures. Names libseccomp does not know are skipped.
std::vector<uint32_t> filter_arches(const Profile& profile, uint32_t native) {
  std::vector<std::string> names = profile.architectures;
  for (const ArchMapEntry& entry : profile.arch_map) {
    if (arch_token(entry.architecture) != native) continue;
    names.push_back(entry.architecture);
    names.insert(names.end(), entry.sub_architectures.begin(), entry.sub_architectures.end());
    break;
  }
  std::vector<uint32_t> tokens = {native};
  for (const std::string& name : names) {
    uint32_t token = arch_token(name);
    if (token != 0 && !std::count(tokens.begin(), tokens.end(), token)) tokens.push_back(token);
  }
  return tokens;
}

// runc's matchCall: conditions on distinct arguments are ANDed in one rule; when an argument
// has two conditions (which libseccomp cannot AND), each condition becomes a rule of its own.
void add_rule(scmp_filter_ctx ctx, uint32_t action, int nr, const SyscallRule& rule,
              const std::string& name) {
  std::vector<scmp_arg_cmp> conds;
  bool repeated_index = false;
  for (const ArgCondition& arg : rule.args) {
    for (const scmp_arg_cmp& seen : conds) repeated_index |= seen.arg == arg.index;
    conds.push_back({arg.index, scmp_op(arg.op), arg.value, arg.value_two});
  }
  std::string what = "adding the rule for " + name;
  if (!repeated_index) {
    check_scmp(seccomp_rule_add_array(ctx, action, nr, conds.size(), conds.data()), what);
    return;
  }
  for (const scmp_arg_cmp& cond : conds) check_scmp(seccomp_rule_add_array(ctx, action, nr, 1, &cond), what);
}

void add_rules(scmp_filter_ctx ctx, const Profile& profile, uint32_t default_action, const Target& t) {
  for (const SyscallRule& rule : profile.syscalls) {
    if (excluded(rule.excludes, t) || !included(rule.includes, t)) continue;
    uint32_t action = scmp_action(rule.action, rule.errno_ret);
    if (action == default_action) continue;  // libseccomp refuses such rules; they change nothing
    for (const std::string& name : rule.names) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) continue;  // unknown to libseccomp: skipped, as Docker does
      add_rule(ctx, action, nr, rule, name);
    }
  }
}

// The highest number the profile names on each architecture of the filter (ignoring capability
// and kernel conditions: a call the profile knows is never "newer than the profile").
std::vector<ArchLimit> arch_limits(const Profile& profile, const std::vector<uint32_t>& arches,
                                   const Target& t) {
  std::vector<ArchLimit> limits;
  for (uint32_t arch : arches) {
    ArchLimit limit{arch, 0};
    for (const SyscallRule& rule : profile.syscalls) {
      if (!applies_to_arch(rule, t)) continue;
      for (const std::string& name : rule.names) {
        int nr = seccomp_syscall_resolve_name_arch(arch, name.c_str());
        if (nr >= 0) limit.max_syscall = std::max(limit.max_syscall, static_cast<uint32_t>(nr));
      }
    }
    if (limit.max_syscall > 0) limits.push_back(limit);
  }
  return limits;
}

std::vector<sock_filter> export_program(scmp_filter_ctx ctx) {
  UniqueFd fd(check(::memfd_create("kbuild-seccomp", MFD_CLOEXEC), "memfd_create"));
  check_scmp(seccomp_export_bpf(ctx, fd.get()), "exporting the filter");
  off_t size = check(::lseek(fd.get(), 0, SEEK_END), "lseek");
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  size_t bytes = program.size() * sizeof(sock_filter);
  if (check(::pread(fd.get(), program.data(), bytes, 0), "pread") != static_cast<ssize_t>(bytes))
    throw Error(ErrorKind::internal, "seccomp: short read of the exported filter");
  return program;
}

size_t name_count(const Profile& profile) {
  size_t count = 0;
  for (const SyscallRule& rule : profile.syscalls) count += rule.names.size();
  return count;
}

// With an allowing default, a new system call is allowed anyway: no ENOSYS prologue (as runc).
bool wants_enosys(uint32_t default_action) {
  return default_action != SCMP_ACT_ALLOW && default_action != SCMP_ACT_LOG &&
         (default_action & SCMP_ACT_TRACE(0)) != SCMP_ACT_TRACE(0) &&
         default_action != SCMP_ACT_ERRNO(ENOSYS);
}

}  // namespace

Filter compile(const Profile& profile, Capabilities effective_caps) {
  Target target{seccomp_arch_native(), {}, effective_caps, running_kernel()};
  target.go_arch = go_arch_name(target.native_arch);
  uint32_t default_action = scmp_action(profile.default_action, profile.default_errno_ret);

  Context ctx(seccomp_init(default_action));
  if (!ctx) throw Error(ErrorKind::internal, "seccomp: seccomp_init failed");
  std::vector<uint32_t> arches = filter_arches(profile, target.native_arch);
  for (uint32_t arch : arches) {
    int rc = seccomp_arch_add(ctx.get(), arch);
    if (rc != -EEXIST) check_scmp(rc, "adding an architecture");
  }
  // runc's choice: a binary tree search pays off for long rule sets (and libseccomp 2.5.4
  // misbehaves with it on empty ones).
  if (name_count(profile) > 32) seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);
  add_rules(ctx.get(), profile, default_action, target);

  Filter filter{export_program(ctx.get())};
  if (wants_enosys(default_action))
    filter.program = prepend_enosys(filter.program, arch_limits(profile, arches, target));
  if (filter.program.size() > BPF_MAXINSNS)
    throw Error(ErrorKind::user, "seccomp profile: its filter has " + std::to_string(filter.program.size()) +
                                     " instructions, more than the kernel's " + std::to_string(BPF_MAXINSNS));
  return filter;
}

}  // namespace kbuild::seccomp
