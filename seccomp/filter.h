// A compiled seccomp program: what the daemon hands kbuild-exec through an fd and the helper
// loads before execve. Apart from the compiler, so the helper links no libseccomp.
#pragma once

#include <linux/filter.h>

#include <string>
#include <string_view>
#include <vector>

namespace kbuild::seccomp {

// A compiled seccomp program, ready for seccomp(SECCOMP_SET_MODE_FILTER).
struct Filter {
  std::vector<sock_filter> program;
};

// Loads `filter` into the calling thread with seccomp(SECCOMP_SET_MODE_FILTER, 0). Sets
// PR_SET_NO_NEW_PRIVS first only when the caller lacks CAP_SYS_ADMIN, as the kernel requires.
void install(const Filter& filter);

// The program as raw sock_filter bytes, to pass it from the daemon to the helper through an fd.
std::string serialize(const Filter& filter);
// The inverse of serialize; throws kbuild::Error(internal) unless `bytes` is a plausible program
// (whole instructions, at least one, at most the kernel's BPF_MAXINSNS).
Filter deserialize(std::string_view bytes);

}  // namespace kbuild::seccomp
