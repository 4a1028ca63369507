// kbuild-exec: the single-threaded helper that turns a RunSpec into a confined process.
// Started by kbuildd with the fds run_spec.h lists; it waits for "go" (sent once the daemon
// has placed it in its cgroup or unit), enters new namespaces, forks the step's process as
// PID 1 of a new PID namespace and reports how it ended on the control socket.
#pragma once

namespace kbuild::sandbox {

// The helper's whole life; returns its exit status.
int exec_helper_main();

}  // namespace kbuild::sandbox
