// Linux capability sets as bit masks, and their CAP_* names as seccomp profiles spell them.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kbuild::seccomp {

// Bit N set = capability N (CAP_CHOWN is bit 0, CAP_SYS_ADMIN bit 21).
using Capabilities = uint64_t;

// Docker's default set for containers: CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW,
// SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE.
Capabilities docker_default_capabilities();

// Every capability this code knows (up to CAP_CHECKPOINT_RESTORE): `--privileged`.
Capabilities all_capabilities();

// "CAP_SYS_ADMIN" -> 21; nullopt for a name this code does not know.
std::optional<unsigned> capability_from_name(std::string_view name);

}  // namespace kbuild::seccomp
