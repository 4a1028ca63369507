// Transient systemd units over the system bus: a slice per build, a scope per step.
//
//   kbuild-<build>.slice              MemoryMax, MemorySwapMax=0, CPUQuota, TasksMax of the build
//   └ kbuild-<build>-<step>.scope     PIDs=[helper], the step's limits
//
// <build> and <step> are escaped as systemd escapes unit names ('-' becomes \x2d), so a build
// called "a-b" is kbuild-a\x2db.slice, a child of kbuild.slice and not of kbuild-a.slice.
// Units are started in mode "fail" and each call waits for its job's JobRemoved signal.
#pragma once

#include <memory>

#include "engine/sandbox/cgroup.h"

namespace kbuild::sandbox {

// True when PID 1 is systemd (/run/systemd/system exists) and its manager answers on the
// system bus.
bool systemd_is_available();

// Connects to the system bus; throws when systemd does not answer.
std::unique_ptr<CgroupBackend> make_systemd_backend();

// The unit names used, for tests and for `systemctl status` in messages.
std::string build_slice_name(const std::string& build_name);
std::string step_scope_name(const std::string& build_name, const std::string& step_name);

}  // namespace kbuild::sandbox
