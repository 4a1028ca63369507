// kbuildctl's end of SSH agent forwarding (`--ssh ID[=PATH[,PATH...]]`): the agent, or the key
// files, are the user's, so kbuildctl connects to them and serves the connections kbuildd hands
// over the ID's control socket (engine/sandbox/ssh_forward_protocol.h). Keys are decrypted here,
// never in kbuildd.
//
// As BuildKit's sshprovider does, the agent a step reaches is read-only: it may list keys and
// sign, but a request to add, remove, lock or unlock keys (or any other) is answered with
// SSH_AGENT_FAILURE and never reaches the user's agent.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "engine/sandbox/ssh_forward_protocol.h"

namespace kbuild::cli {

// One --ssh flag: an ID (`RUN --mount=type=ssh,id=ID`) and the agent socket or key files.
struct SshSpec {
  std::string id;
  std::vector<std::string> paths;
  bool operator==(const SshSpec&) const = default;
};

// One --ssh value split as buildx does: "ID" or "ID=PATH[,PATH...]", paths kept as written
// (empty ones too: "default=" is the default agent). No defaults applied, never throws.
SshSpec parse_ssh_flag(const std::string& value);

// BuildKit's defaults for one spec: an empty ID is "default"; no path (or one empty path) is
// `auth_sock`, the value of $SSH_AUTH_SOCK (nullptr when unset). Throws the user error "invalid
// empty ssh agent socket: make sure SSH_AUTH_SOCK is set" when that leaves the path empty.
SshSpec resolve_ssh_spec(SshSpec spec, const char* auth_sock);

// Every --ssh value, parsed and resolved, in order; a second spec for an ID throws the user
// error "invalid duplicate ID ID", as BuildKit's NewSSHAgentProvider does.
std::vector<SshSpec> parse_ssh_flags(const std::vector<std::string>& values, const char* auth_sock);

// Serves one --ssh ID for the length of a Build call, on threads of its own.
class SshAgentForwarder {
 public:
  // A problem with one connection (the agent refused it, a step sent a malformed request); the
  // build goes on, and the step sees its agent connection closed. Called from the connections'
  // threads, several at once.
  using ConnectionErrorSink = std::function<void(const Error&)>;
  // The connections served at once; more are closed as they come.
  static constexpr std::size_t kConnectionLimit = 128;

  // Checks `spec` (resolved: see resolve_ssh_spec) the way BuildKit's toAgentSource does: its
  // paths are one agent socket, or key files. Key files are loaded with ssh-add into a private
  // ssh-agent started for this forwarder (a passphrase is asked on the terminal, if there is
  // one), which the destructor kills. Throws a user error before anything is served: a missing
  // path, a second socket, keys and a socket together, a path that is neither socket nor
  // regular file, a key ssh-add refuses. Then serves kbuildd's connections on `control`
  // (kbuildctl's end of the socketpair whose other end goes with the Build call) until kbuildd
  // closes its end. `on_error` gets each connection's error; by default it is printed to stderr.
  // The private agent is also sent SIGTERM when the constructing thread ends (PR_SET_PDEATHSIG,
  // so that a killed kbuildctl leaves no agent behind): construct it on the thread that keeps it.
  SshAgentForwarder(SshSpec spec, UniqueFd control, ConnectionErrorSink on_error = {});
  // Stops serving, ends open connections, joins every thread, kills the private agent and
  // removes its directory. Never throws.
  ~SshAgentForwarder();
  SshAgentForwarder(const SshAgentForwarder&) = delete;
  SshAgentForwarder& operator=(const SshAgentForwarder&) = delete;

  // Stops as the destructor does (call it once Build returned) and throws the error that ended
  // serving early, if one did: kbuildd sent a malformed frame.
  void finish();

  const std::string& id() const { return spec_.id; }
  // The socket connections go to: the user's agent, or the private one.
  const std::string& agent_socket() const { return agent_socket_; }

 private:
  class PrivateAgent;

  void serve() noexcept;
  void stop() noexcept;

  SshSpec spec_;
  UniqueFd control_;
  ConnectionErrorSink on_error_;
  std::unique_ptr<PrivateAgent> private_agent_;  // outlives the connections that use it
  std::string agent_socket_;
  sandbox::ssh_forward::ConnectionThreads connections_{kConnectionLimit};
  std::exception_ptr error_;  // written by the thread before it ends
  std::thread thread_;
};

}  // namespace kbuild::cli
