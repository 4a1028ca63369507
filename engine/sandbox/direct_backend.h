// Cgroups the daemon makes itself, for hosts without systemd as PID 1 (containers, CI).
//
// Where the groups live: below the daemon's own cgroup, in a parent group `kbuild`:
//   <own>/kbuild/kbuild-<build>/<step>
// - cgroup v2 (/sys/fs/cgroup is cgroup2 and the daemon's cgroup offers memory, pids and cpu):
//   one tree. The no-internal-processes rule forbids enabling controllers for the children of a
//   cgroup that holds processes, so when <own> is not the root the daemon first moves itself
//   into a leaf <own>/daemon (as runc and dockerd-in-docker do with "init"). Under systemd this
//   needs `Delegate=yes` in kbuild.service: <own> is /system.slice/kbuild.service and systemd then
//   leaves its sub-tree alone.
// - cgroup v1: the memory, pids and cpu hierarchies, each found through /proc/self/mountinfo
//   and /proc/self/cgroup (name=systemd and a controller-less cgroup2 are left alone). v1 has no
//   internal-process rule, so the groups sit right below the daemon's cgroup in each hierarchy
//   (/sys/fs/cgroup/memory/<own>/kbuild/..., /sys/fs/cgroup/pids/kbuild/... when own is /).
// Staying below the daemon's own cgroup keeps every limit that confines the daemon (a
// container's, a service's) over its steps too.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/sandbox/cgroup.h"

namespace kbuild::sandbox {

struct DirectBackendOptions {
  // The parent group made in each hierarchy. Tests use their own so that their sweep() does
  // not touch a running daemon's groups.
  std::string parent_name = "kbuild";
};

// One cgroup hierarchy the backend writes into.
struct CgroupHierarchy {
  std::string controller;  // "memory", "pids", "cpu" on v1; "" for the single v2 tree
  std::string parent_dir;  // absolute path of the `kbuild` parent group in it
};

class DirectBackend : public CgroupBackend {
 public:
  // Finds the hierarchies and makes the parent groups; throws when none is usable.
  explicit DirectBackend(DirectBackendOptions options = {});
  // Removes the parent groups when they are empty.
  ~DirectBackend() override;
  DirectBackend(const DirectBackend&) = delete;
  DirectBackend& operator=(const DirectBackend&) = delete;

  std::string_view name() const override { return "direct"; }
  std::unique_ptr<BuildCgroup> create_build(const std::string& build_name, const std::string& description,
                                            const ResourceLimits& limits) override;
  void sweep() override;

  bool unified() const { return unified_; }
  const std::vector<CgroupHierarchy>& hierarchies() const { return hierarchies_; }

 private:
  bool unified_ = false;
  std::vector<CgroupHierarchy> hierarchies_;
};

std::unique_ptr<CgroupBackend> make_direct_backend(DirectBackendOptions options = {});

}  // namespace kbuild::sandbox
