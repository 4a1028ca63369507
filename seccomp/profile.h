// A seccomp profile in Docker's JSON format, as moby's profiles/seccomp package reads it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::seccomp {

// What a rule (or the profile's default) does with a matching system call: Docker's SCMP_ACT_*.
enum class Action { kill_thread, kill_process, trap, errno_ret, trace, allow, log, notify };

// Comparison of one system call argument: Docker's SCMP_CMP_*.
enum class CompareOp { not_equal, less, less_equal, equal, greater_equal, greater, masked_equal };

// One argument condition. For masked_equal, `value` is the mask and `value_two` the expected
// result of (argument & mask), as in libseccomp.
struct ArgCondition {
  unsigned index = 0;
  uint64_t value = 0;
  uint64_t value_two = 0;
  CompareOp op = CompareOp::equal;
};

// A host kernel version "<kernel>.<major>"; rules compare only these two numbers.
struct KernelVersion {
  unsigned kernel = 0;
  unsigned major = 0;
  auto operator<=>(const KernelVersion&) const = default;
};

// When a rule applies: capabilities (CAP_* names), architectures (Go names: amd64, x86, arm64...)
// and a minimum kernel. `includes` needs all of them, `excludes` drops the rule on any.
struct RuleCondition {
  std::vector<std::string> caps;
  std::vector<std::string> arches;
  std::optional<KernelVersion> min_kernel;
};

struct SyscallRule {
  std::vector<std::string> names;
  Action action = Action::allow;
  std::optional<uint32_t> errno_ret;  // for errno_ret and trace; EPERM when absent
  std::vector<ArgCondition> args;
  RuleCondition includes;
  RuleCondition excludes;
};

// An architecture (SCMP_ARCH_*) and the compat ones a process on it can also use.
struct ArchMapEntry {
  std::string architecture;
  std::vector<std::string> sub_architectures;
};

struct Profile {
  Action default_action = Action::errno_ret;
  std::optional<uint32_t> default_errno_ret;
  std::vector<std::string> architectures;  // the flat form; a profile has this or arch_map
  std::vector<ArchMapEntry> arch_map;
  std::vector<SyscallRule> syscalls;
};

// Parses a profile; a syntax error, an unknown action or operator, or a field of the wrong type
// throws one kbuild::Error(ErrorKind::user) that names `origin` (a path, "daemon.json"...).
Profile parse_profile(std::string_view json, std::string_view origin);

// Reads and parses the profile at `path` (daemon.json's `seccomp-profile`).
Profile read_profile(const std::string& path);

}  // namespace kbuild::seccomp
