// The ENOSYS prologue: system calls newer than a profile fail with ENOSYS, not the default
// action, so libc's fallbacks (clone3 -> clone, faccessat2 -> faccessat) keep working. This is
// the idea of runc's libcontainer/seccomp/patchbpf.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <vector>

namespace kbuild::seccomp {

// The highest system call number a profile names on one libseccomp architecture (SCMP_ARCH_*).
// For SCMP_ARCH_X32 the number includes __X32_SYSCALL_BIT.
struct ArchLimit {
  uint32_t scmp_arch = 0;
  uint32_t max_syscall = 0;
};

// Returns `program` behind a prologue that answers ERRNO(ENOSYS) for a known architecture's
// system calls above its limit and hands every other call to `program` unchanged.
std::vector<sock_filter> prepend_enosys(const std::vector<sock_filter>& program,
                                        const std::vector<ArchLimit>& limits);

}  // namespace kbuild::seccomp
