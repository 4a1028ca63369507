// One step's process, seen from the daemon: kbuild-exec spawned with exactly the fds the step
// needs, placed in its cgroup before it does anything, its output streamed as it comes.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "engine/sandbox/cgroup.h"
#include "engine/sandbox/run_spec.h"

namespace kbuild::sandbox {

struct StepLaunch {
  std::string helper_path;          // kbuild-exec
  RunSpec spec;
  std::vector<UniqueFd> extra_fds;  // the spec's fd indexes point here
  std::string step_name;            // unique within the build, [A-Za-z0-9_-]
  ResourceLimits limits;
};

struct StepOutcome {
  StepExit exit;
  StepUsage usage;
  bool canceled = false;
};

// Runs the step to its end. `output(stream, bytes)` gets stdout (1) and stderr (2) as they
// come; `canceled()` is polled and, once true, the step's processes are killed.
StepOutcome run_step_process(StepLaunch& launch, BuildCgroup& cgroup,
                             const std::function<void(int stream, std::string_view data)>& output,
                             const std::function<bool()>& canceled);

}  // namespace kbuild::sandbox
