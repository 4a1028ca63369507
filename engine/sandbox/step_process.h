// One step's process, seen from the daemon: kbuild-exec spawned with exactly the fds the step
// needs, placed in its cgroup before it does anything, its output streamed as it comes.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
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
  std::string description;          // what its unit shows: step_description()
  ResourceLimits limits;
};

struct StepOutcome {
  StepExit exit;
  StepUsage usage;
  bool canceled = false;
};

// Tears down steps that ended well in the background: the kernel takes milliseconds to drop
// a step's mount namespace, and the next step need not wait for it. Destroy it before the
// build's cgroup: its destructor waits for every step it holds.
class StepReaper {
 public:
  StepReaper() = default;
  ~StepReaper();
  StepReaper(const StepReaper&) = delete;
  StepReaper& operator=(const StepReaper&) = delete;
  // Waits for `helper` to exit, then destroys `step`.
  void adopt(pid_t helper, std::unique_ptr<StepCgroup> step);

 private:
  struct Entry {
    pid_t helper;
    std::unique_ptr<StepCgroup> step;
  };
  void run();
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Entry> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

// Runs the step to its end. `output(stream, bytes)` gets stdout (1) and stderr (2) as they
// come; `canceled()` is polled and, once true, the step's processes are killed.
// With a reaper, a step that succeeded returns as soon as its output and result are in.
StepOutcome run_step_process(StepLaunch& launch, BuildCgroup& cgroup,
                             const std::function<void(int stream, std::string_view data)>& output,
                             const std::function<bool()>& canceled, StepReaper* reaper = nullptr);

}  // namespace kbuild::sandbox
