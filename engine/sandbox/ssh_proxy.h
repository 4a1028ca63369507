// kbuildd's end of SSH agent forwarding for one step's `RUN --mount=type=ssh`: a listening socket
// that the step sees as its agent, each connection to it handed to kbuildctl over the ID's
// control socket (engine/sandbox/ssh_forward_protocol.h) and spliced with what kbuildctl sends
// back. kbuildd never sees a key nor speaks the agent protocol: it copies bytes.
//
// kbuildctl is treated as hostile: it can only end the forwarding (by closing the control socket
// or writing to it) or stall its own connections; neither holds a kbuildd thread past the
// proxy's destruction or the build's cancel fd.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/sandbox/ssh_forward_protocol.h"

namespace kbuild::sandbox {

// Who may connect to the agent socket inside the step: BuildKit's `mode`, `uid` and `gid` of an
// ssh mount, whose defaults these are.
struct SshSocketOwner {
  mode_t mode = 0600;
  uid_t uid = 0;
  gid_t gid = 0;
};

// One step's agent socket, forwarding to kbuildctl from construction to destruction.
class SshAgentProxy {
 public:
  // The connections a proxy splices at once; more are closed as they come.
  static constexpr std::size_t kConnectionLimit = 64;

  // `control`: kbuildd's end of the ID's control socket (an fd of the Build call), borrowed; it
  // must outlive the proxy, and several proxies (steps running at once) may share it. The socket
  // file is made in a new directory of mode 0700 under `parent_dir` with a random name, so its
  // path is not predictable and only root reaches it; `owner` sets its mode and owner.
  // `cancel_fd` (borrowed, -1 for none) turns readable when the build is canceled, which ends
  // forwarding. `id` is the ssh ID, for messages. Throws a user error when `control` is not an
  // AF_UNIX stream socket.
  SshAgentProxy(int control, const std::string& parent_dir, SshSocketOwner owner, int cancel_fd, std::string id);
  // Stops accepting, ends every spliced connection, joins every thread and removes the socket
  // file and its directory. Nothing the proxy started outlives it.
  ~SshAgentProxy();
  SshAgentProxy(const SshAgentProxy&) = delete;
  SshAgentProxy& operator=(const SshAgentProxy&) = delete;

  // The agent socket, to bind-mount at the step's target (/run/buildkit/ssh_agent.N).
  const std::string& socket_path() const { return socket_path_; }
  // An O_PATH fd of the same socket file, for a mount that should not go by path.
  int socket_file() const { return socket_file_.get(); }
  // What ended forwarding before destruction, if something did ("ssh agent default: kbuildctl
  // closed the SSH agent forwarding"); connections made after it fail at once. For a warning:
  // the step itself sees only that its agent refused it.
  std::optional<Error> failure() const;

 private:
  void run() noexcept;
  // Waits for the next event; false when the proxy is stopping or the build canceled.
  bool serve_next();
  void forward(UniqueFd connection);

  int control_;
  int cancel_fd_;
  std::string id_;
  TempDir dir_;
  std::string socket_path_;
  UniqueFd listener_;
  UniqueFd socket_file_;
  ssh_forward::ConnectionThreads connections_{kConnectionLimit};
  std::uint64_t forwarded_ = 0;
  mutable std::mutex mutex_;
  std::optional<Error> failure_;  // under mutex_
  std::thread thread_;
};

}  // namespace kbuild::sandbox
