#include "seccomp/filter.h"

#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "common/error.h"
#include "common/syscall.h"

namespace kbuild::seccomp {
namespace {

// capget(2) directly: the helper needs one bit and no libcap.
bool has_effective_sys_admin() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  check(static_cast<int>(::syscall(SYS_capget, &header, data)), "capget");
  return data[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32));
}

}  // namespace

void install(const Filter& filter) {
  // Without CAP_SYS_ADMIN the kernel only accepts a filter under no_new_privs.
  if (!has_effective_sys_admin()) check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)");
  sock_fprog prog{static_cast<unsigned short>(filter.program.size()),
                  const_cast<sock_filter*>(filter.program.data())};
  check(static_cast<int>(::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)),
        "seccomp(SECCOMP_SET_MODE_FILTER)");
}

std::string serialize(const Filter& filter) {
  std::string bytes(filter.program.size() * sizeof(sock_filter), '\0');
  std::memcpy(bytes.data(), filter.program.data(), bytes.size());
  return bytes;
}

Filter deserialize(std::string_view bytes) {
  size_t count = bytes.size() / sizeof(sock_filter);
  if (bytes.size() % sizeof(sock_filter) != 0 || count == 0 || count > BPF_MAXINSNS)
    throw Error(ErrorKind::internal,
                "seccomp: a filter of " + std::to_string(bytes.size()) + " bytes is not a program");
  Filter filter;
  filter.program.resize(count);
  std::memcpy(filter.program.data(), bytes.data(), bytes.size());
  return filter;
}

}  // namespace kbuild::seccomp
