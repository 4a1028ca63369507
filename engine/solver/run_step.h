// Exec ops: a command in the sandbox, on an overlay of its parent's layers whose upper dir
// becomes the step's layer.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/printable_text.h"
#include "common/unique_fd.h"
#include "engine/graph/op.h"
#include "engine/network/build_network.h"
#include "engine/sandbox/cgroup.h"
#include "engine/sandbox/emulation.h"
#include "engine/sandbox/step_process.h"
#include "engine/solver/worker.h"

namespace kbuild::solver {

struct OpContext;

// What RUN steps need from the daemon; one for all builds.
struct SandboxConfig {
  std::string helper_path;                   // kbuild-exec
  sandbox::CgroupBackend* cgroups = nullptr;  // null: RUN steps are refused, for this reason:
  std::string unavailable_reason;
  std::string seccomp_program;               // raw sock_filter program for default steps
  sandbox::ResourceLimits step_limits;       // the daemon's defaults per step
  bool allow_insecure = false;               // the security.insecure entitlement
  bool allow_network_host = true;            // the network.host entitlement
  network::NetworkConfig network;            // RUN --network=default's user-mode stacks
  // What the host runs under emulation, for the hint of a program it cannot run; null: none.
  const sandbox::Emulation* emulation = nullptr;
  bool binfmt_install = false;               // features.binfmt-install, which the hint mentions
};

// The per-build side of RUN: the build's cgroup and network (each made at its first RUN that
// needs it), step names.
class BuildSandbox {
 public:
  // `description` is what the build's unit shows (sandbox::build_description).
  BuildSandbox(const SandboxConfig& config, std::string build_name, std::string description,
               sandbox::ResourceLimits limits, std::set<std::string> allowed,
               std::map<std::string, std::string> secrets = {}, std::map<std::string, int> ssh_agents = {});
  ~BuildSandbox();
  const SandboxConfig& config() const { return config_; }
  sandbox::BuildCgroup& cgroup();
  // The build's network namespace; `scratch_parent` is where its files go.
  network::BuildNetwork& network(const std::string& scratch_parent);
  std::string next_step_name() { return "step-" + std::to_string(++steps_); }
  bool allowed(const std::string& entitlement) const { return allowed_.count(entitlement) != 0; }
  const sandbox::ResourceLimits& build_limits() const { return limits_; }
  sandbox::StepReaper& reaper() { return reaper_; }
  // The control socket of the build's SSH agent of this id (--ssh), or -1; whether it has any.
  int ssh_agent(const std::string& id) const {
    auto it = ssh_agents_.find(id);
    return it == ssh_agents_.end() ? -1 : it->second.get();
  }
  bool has_ssh_agents() const { return !ssh_agents_.empty(); }
  // The build's secret of this id (--secret), or null. Held in memory only.
  const std::string* secret(const std::string& id) const {
    auto it = secrets_.find(id);
    return it == secrets_.end() ? nullptr : &it->second;
  }
  // Text for outside the build (a unit's description) with each secret's value taken out.
  std::string without_secrets(std::string_view text) const { return redact_secrets(text, secrets_); }

 private:
  const SandboxConfig& config_;
  std::string build_name_;
  std::string description_;
  sandbox::ResourceLimits limits_;
  std::set<std::string> allowed_;
  std::map<std::string, std::string> secrets_;
  // Duplicates of the Build call's fds: a step shared with another build may run after the call
  // that passed them has returned and closed its own.
  std::map<std::string, UniqueFd> ssh_agents_;
  std::mutex mutex_;
  std::unique_ptr<sandbox::BuildCgroup> cgroup_;
  std::mutex network_mutex_;  // its own: starting the stack must not hold up steps' cgroups
  std::unique_ptr<network::BuildNetwork> network_;
  sandbox::StepReaper reaper_;  // after cgroup_: its steps go before the build's cgroup does
  std::atomic<int> steps_{0};
};

// Runs an exec op in the sandbox on an overlay of its rootfs, and commits the changes as a layer.
Ref execute_exec_op(OpContext& context, const graph::ExecOp& op);

// "512MiB", as the limit appears in messages.
std::string format_bytes_binary(uint64_t bytes);

}  // namespace kbuild::solver
