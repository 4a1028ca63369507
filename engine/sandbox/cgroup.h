// Where a step's processes live and what they may use: a cgroup per build holding one per step.
// Two backends share this interface: systemd transient units (a slice per build, a scope per
// step) and cgroups the daemon makes itself (v2, or the v1 memory, pids and cpu hierarchies).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace kbuild::sandbox {

struct ResourceLimits {
  std::optional<uint64_t> memory_bytes;  // memory.max / memory.limit_in_bytes / MemoryMax
  std::optional<double> cpus;            // CPU quota in cores (1.5 = 150% of one CPU)
  std::optional<uint64_t> pids;          // pids.max / TasksMax
};

// What the kernel did to a step's processes, read after they are gone.
struct StepUsage {
  bool oom_killed = false;       // the memory limit (the step's or the build's) killed a process
  bool pids_limit_hit = false;   // a fork failed because of a pids limit
};

class StepCgroup {
 public:
  virtual ~StepCgroup() = default;  // kills anything left, waits for it, removes the cgroup/unit
  // SIGKILL to every process of the step (cancel); does not wait.
  virtual void kill() = 0;
  virtual StepUsage usage() = 0;
};

class BuildCgroup {
 public:
  virtual ~BuildCgroup() = default;  // removes the build's cgroup/slice (its steps are gone by then)
  // Moves `pid` (a process that has not started the step yet) into a new cgroup for the step.
  // `step_name` is unique within the build and made of [A-Za-z0-9_-]; `description` is what
  // the step's unit shows, from step_description() (the direct backend has nowhere to show it).
  virtual std::unique_ptr<StepCgroup> add_step(pid_t pid, const std::string& step_name, const std::string& description,
                                               const ResourceLimits& limits) = 0;
};

class CgroupBackend {
 public:
  virtual ~CgroupBackend() = default;
  virtual std::string_view name() const = 0;  // "systemd" or "direct"
  // `build_name` is unique among live builds and made of [A-Za-z0-9_-]; `description` is what
  // its unit shows, from build_description().
  virtual std::unique_ptr<BuildCgroup> create_build(const std::string& build_name, const std::string& description,
                                                    const ResourceLimits& limits) = 0;
  // Removes what a crashed daemon left, called once at start before any build: every kbuild
  // cgroup or unit still there is a leftover, so its processes are killed and it is removed.
  virtual void sweep() = 0;
};

// "auto" picks systemd when PID 1 is systemd and the system bus answers, else direct.
// "systemd" and "direct" force one; anything else is a user error. `direct_parent` names the
// direct backend's group in each hierarchy: one per daemon (per store), since sweep()
// removes everything below it.
std::unique_ptr<CgroupBackend> make_cgroup_backend(std::string_view choice, const std::string& direct_parent = "kbuild");

// What a build's and a step's units show in `systemctl list-units 'kbuild-*'`, so that the list
// reads like the build's progress: "kbuild build 1a2b3c (uid 1000)" and
// "kbuild: [stage-1 2/5] RUN make". The step's name comes from a Dockerfile: it becomes one
// printable line (a newline cannot start a second one), cut to a length a listing can show.
std::string build_description(std::string_view build_name, uid_t caller_uid);
std::string step_description(std::string_view step_display_name);

// Shared by the two backends: reading and writing cgroup files.
namespace cgroupfs {

// Throws a user error unless `name` is 1-100 characters of [A-Za-z0-9_-].
void check_name(std::string_view name, std::string_view what);
// The file's contents, or nothing when it (or its cgroup) does not exist; other errors throw.
std::optional<std::string> read_text(const std::string& path);
// Writes `value` to a cgroup control file in one write(2); throws with the path and errno.
void write_text(const std::string& path, std::string_view value);
// The number after `key` in a flat-keyed file ("oom_kill 3" in memory.events), 0 if absent.
uint64_t counter(const std::string& path, std::string_view key);
// Whether `path` lies on a cgroup2 file system.
bool is_cgroup2(const std::string& path);
// OOM kills and pids-limit hits recorded in one cgroup: its directory on cgroup2, or its v1
// memory and pids directories (either may be empty). Missing files count as nothing happened.
StepUsage read_usage_v2(const std::string& dir);
StepUsage read_usage_v1(const std::string& memory_dir, const std::string& pids_dir);

}  // namespace cgroupfs

}  // namespace kbuild::sandbox
