// Who may call kbuildd: root, or members of one group (kbuild). Membership is root-equivalent,
// like the docker group's.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "dbus/builder_api.h"

namespace kbuild::dbus {

// The credentials of the process at the other end of a connected unix socket, as they were
// when it connected (SO_PEERCRED and SO_PEERGROUPS).
Caller peer_caller(int socket_fd);

// The gid of group `name`, or nullopt when there is no such group.
std::optional<gid_t> find_group(const std::string& name);

// Empty when `caller` may call: it is root, or `group` is its primary or a supplementary group.
// Otherwise why not: "access denied: uid 1000 is not root or a member of group kbuild".
std::string access_refusal(const Caller& caller, const std::string& group);

}  // namespace kbuild::dbus
