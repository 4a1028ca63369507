// RUN --network=default: one network namespace per build, shared by its steps, with outbound
// TCP/UDP and DNS through a user-mode stack (pasta, or slirp4netns) run by the daemon. A step
// sees loopback and the stack's eth0; no host interface, and nothing on the host's loopback.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/network/resolv_conf.h"

namespace kbuild::network {

// Where the user-mode stacks are, for every build of a daemon. A name without '/' is looked up
// in PATH, a path is taken as it is; an empty one is not used. pasta is tried first.
struct NetworkConfig {
  std::string pasta = "pasta";
  std::string slirp4netns = "slirp4netns";
  std::string host_resolv_conf = "/etc/resolv.conf";
  DnsSettings dns;  // daemon.json's dns, dns-search, dns-opts
  std::chrono::milliseconds start_timeout{10000};
};

// The name of the interface a step sees, as in a Docker container.
constexpr const char* kInterface = "eth0";
// Where a step on pasta's network sends DNS queries when the host's resolvers are on its
// loopback (podman's choice of address); slirp4netns has its own, 10.0.2.3.
constexpr const char* kPastaDnsForwarder = "169.254.1.1";
constexpr const char* kSlirpDnsForwarder = "10.0.2.3";

class BuildNetwork {
 public:
  // Makes the namespace and starts a stack in it; waits until the stack has configured it.
  // `scratch_parent` holds the steps' resolv.conf while the network lives. Throws a user error
  // naming the package when neither stack is installed.
  static std::unique_ptr<BuildNetwork> create(const NetworkConfig& config, const std::string& scratch_parent);
  // Stops the stack and drops the daemon's hold on the namespace, which goes with its last step.
  ~BuildNetwork();
  BuildNetwork(const BuildNetwork&) = delete;
  BuildNetwork& operator=(const BuildNetwork&) = delete;

  int namespace_fd() const { return namespace_.get(); }  // O_RDONLY, for setns(CLONE_NEWNET)
  const std::string& resolv_conf() const { return resolv_conf_; }  // the file steps see
  const std::string& stack() const { return stack_; }  // the program that serves it
  pid_t stack_pid() const { return stack_pid_; }

 private:
  BuildNetwork() = default;
  void start_stack(const std::string& program, bool pasta, bool dns_forward, std::chrono::milliseconds timeout);
  void stop_stack();

  UniqueFd namespace_;
  std::optional<TempDir> scratch_;
  std::string resolv_conf_;
  std::string stack_;
  pid_t stack_pid_ = -1;
  // The stack is the child of this thread, which lives as long as the network: the stack's
  // parent-death signal follows the thread that forked it, so a daemon that dies takes it along.
  std::thread keeper_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

// The message a default-network step fails with where neither stack is installed.
extern const char* const kNoStackMessage;

}  // namespace kbuild::network
