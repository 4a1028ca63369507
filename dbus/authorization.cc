#include "dbus/authorization.h"

#include <grp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "common/syscall.h"

namespace kbuild::dbus {

Caller peer_caller(int socket_fd) {
  ucred credentials{};
  socklen_t length = sizeof credentials;
  check(::getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length), "getsockopt SO_PEERCRED");
  Caller caller{credentials.pid, credentials.uid, credentials.gid, {}};

  // SO_PEERGROUPS fails with ERANGE and the needed length when the buffer is too small.
  std::vector<gid_t> groups(32);
  for (;;) {
    length = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &length) == 0) break;
    if (errno != ERANGE || length <= groups.size() * sizeof(gid_t)) throw_errno("getsockopt SO_PEERGROUPS");
    groups.resize(length / sizeof(gid_t));
  }
  groups.resize(length / sizeof(gid_t));
  caller.groups = std::move(groups);
  return caller;
}

std::optional<gid_t> find_group(const std::string& name) {
  if (name.empty()) return std::nullopt;
  std::vector<char> buffer(4096);
  for (;;) {
    group entry{};
    group* found = nullptr;
    int error = ::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (error == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (error != 0 || found == nullptr) return std::nullopt;
    return found->gr_gid;
  }
}

std::string access_refusal(const Caller& caller, const std::string& group) {
  if (caller.uid == 0) return {};
  if (std::optional<gid_t> gid = find_group(group)) {
    if (caller.gid == *gid) return {};
    if (std::find(caller.groups.begin(), caller.groups.end(), *gid) != caller.groups.end()) return {};
  }
  return "access denied: uid " + std::to_string(caller.uid) + " is not root or a member of group " + group;
}

}  // namespace kbuild::dbus
