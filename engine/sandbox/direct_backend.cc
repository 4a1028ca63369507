#include "engine/sandbox/direct_backend.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/syscall.h"

namespace kbuild::sandbox {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kCgroupRoot = "/sys/fs/cgroup";
constexpr const char* kV1Controllers[] = {"memory", "pids", "cpu"};
constexpr int64_t kCpuPeriodUs = 100000;
// How long teardown waits for killed processes to leave a group before giving up on it.
constexpr auto kTeardownTimeout = std::chrono::seconds(10);

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    size_t end = text.find(separator);
    parts.push_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return parts;
}

std::string join_path(const std::string& base, std::string_view relative) {
  std::string path = base;
  for (std::string_view part : split(relative, '/')) {
    if (part.empty()) continue;
    path += '/';
    path += part;
  }
  return path;
}

// mountinfo escapes spaces and the like as \ooo.
std::string unescape_mount_path(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size()) {
      int value = 0;
      auto [ptr, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 4, value, 8);
      if (ec == std::errc() && ptr == text.data() + i + 4) {
        out += static_cast<char>(value);
        i += 3;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", path);
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::vector<pid_t> read_pids(const std::string& dir) {
  std::vector<pid_t> pids;
  std::optional<std::string> text;
  try {
    text = cgroupfs::read_text(dir + "/cgroup.procs");
  } catch (const Error&) {
    return pids;
  }
  if (!text) return pids;
  for (std::string_view line : split(*text, '\n')) {
    pid_t pid = 0;
    if (std::from_chars(line.data(), line.data() + line.size(), pid).ec == std::errc() && pid > 0) pids.push_back(pid);
  }
  return pids;
}

std::vector<std::string> subdirectories(const std::string& dir) {
  std::vector<std::string> names;
  DIR* stream = ::opendir(dir.c_str());
  if (stream == nullptr) return names;
  while (dirent* entry = ::readdir(stream)) {
    std::string_view name = entry->d_name;
    if (entry->d_type == DT_DIR && name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(stream);
  return names;
}

// SIGKILL to every process in `dir`. cgroup.kill (Linux 5.14, v2) does it atomically; otherwise
// processes are killed one by one, again while a pass finds processes not seen before (a fork
// racing with the kill). Does not wait for them to exit.
void kill_group(const std::string& dir) {
  if (exists(dir + "/cgroup.kill")) {
    try {
      cgroupfs::write_text(dir + "/cgroup.kill", "1");
      return;
    } catch (const Error&) {
      // Fall back to signals.
    }
  }
  std::set<pid_t> seen;
  for (int pass = 0; pass < 100; ++pass) {
    bool found_new = false;
    for (pid_t pid : read_pids(dir)) {
      if (seen.insert(pid).second) found_new = true;
      ::kill(pid, SIGKILL);
    }
    if (!found_new) return;
  }
}

// Kills what is in `dir` and waits until it is empty, killing again now and then. False on timeout.
bool empty_group(const std::string& dir, Clock::time_point deadline) {
  kill_group(dir);
  auto pause = std::chrono::microseconds(200);
  for (int round = 0; !read_pids(dir).empty(); ++round) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
    if (round % 8 == 7) kill_group(dir);
  }
  return true;
}

// Removes `dir` and every group below it, killing their processes first. Never throws.
void destroy_tree(const std::string& dir, Clock::time_point deadline) {
  for (const std::string& child : subdirectories(dir)) destroy_tree(dir + "/" + child, deadline);
  empty_group(dir, deadline);
  // An emptied group can report EBUSY for a moment while its last tasks finish exiting.
  while (::rmdir(dir.c_str()) != 0 && errno == EBUSY && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

int64_t cpu_quota_us(double cpus) {
  if (!(cpus > 0) || !std::isfinite(cpus)) {
    throw Error(ErrorKind::user, "CPU limit must be a positive number of CPUs, not " + std::to_string(cpus));
  }
  // The kernel refuses quotas under 1 ms.
  return std::max<int64_t>(1000, std::llround(cpus * kCpuPeriodUs));
}

// The same logical group (the build's, or a step's) in every hierarchy.
struct GroupDirs {
  bool unified = false;
  std::vector<CgroupHierarchy> dirs;  // parent_dir here is the group's own directory

  std::string dir_of(std::string_view controller) const {
    for (const CgroupHierarchy& h : dirs) {
      if (unified || h.controller == controller) return h.parent_dir;
    }
    return {};
  }

  GroupDirs child(const std::string& name) const {
    GroupDirs result{unified, dirs};
    for (CgroupHierarchy& h : result.dirs) h.parent_dir += "/" + name;
    return result;
  }

  void make() const {
    for (const CgroupHierarchy& h : dirs) make_dir(h.parent_dir);
  }

  void destroy() const noexcept {
    Clock::time_point deadline = Clock::now() + kTeardownTimeout;
    for (const CgroupHierarchy& h : dirs) {
      try {
        destroy_tree(h.parent_dir, deadline);
      } catch (...) {
        // Teardown is best effort; sweep() at the next start removes what is left.
      }
    }
  }

  std::string required_dir(std::string_view controller) const {
    std::string dir = dir_of(controller);
    if (dir.empty()) {
      throw Error(ErrorKind::internal,
                  "cannot apply a " + std::string(controller) + " limit: the " + std::string(controller) +
                      " cgroup controller is not mounted");
    }
    return dir;
  }

  // `cap` bounds the CPU quota: v1 refuses a child quota above its parent's.
  void apply(const ResourceLimits& limits, std::optional<double> cpu_cap) const {
    using cgroupfs::write_text;
    if (limits.memory_bytes) {
      std::string dir = required_dir("memory");
      std::string bytes = std::to_string(*limits.memory_bytes);
      if (unified) {
        write_text(dir + "/memory.max", bytes);
        // Without swap the limit is the limit (docker run --memory without --memory-swap allows as
        // much swap again; BuildKit sets none).
        if (exists(dir + "/memory.swap.max")) write_text(dir + "/memory.swap.max", "0");
      } else {
        write_text(dir + "/memory.limit_in_bytes", bytes);
        if (exists(dir + "/memory.memsw.limit_in_bytes")) write_text(dir + "/memory.memsw.limit_in_bytes", bytes);
      }
    }
    if (limits.cpus) {
      std::string dir = required_dir("cpu");
      double cpus = cpu_cap && !unified ? std::min(*limits.cpus, *cpu_cap) : *limits.cpus;
      int64_t quota = cpu_quota_us(cpus);
      if (unified) {
        write_text(dir + "/cpu.max", std::to_string(quota) + " " + std::to_string(kCpuPeriodUs));
      } else {
        write_text(dir + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs));
        write_text(dir + "/cpu.cfs_quota_us", std::to_string(quota));
      }
    }
    if (limits.pids) {
      write_text(required_dir("pids") + "/pids.max", std::to_string(*limits.pids));
    }
  }

  StepUsage usage() const {
    if (unified) return cgroupfs::read_usage_v2(dirs.front().parent_dir);
    return cgroupfs::read_usage_v1(dir_of("memory"), dir_of("pids"));
  }
};

void enable_v2_controllers(const std::string& dir) {
  cgroupfs::write_text(dir + "/cgroup.subtree_control", "+memory +pids +cpu");
}

class DirectStep : public StepCgroup {
 public:
  DirectStep(GroupDirs build, GroupDirs step) : build_(std::move(build)), step_(std::move(step)) {}
  ~DirectStep() override { step_.destroy(); }

  void kill() override {
    for (const CgroupHierarchy& h : step_.dirs) {
      try {
        kill_group(h.parent_dir);
      } catch (...) {
      }
    }
  }

  StepUsage usage() override {
    // A kill is counted in the group of the killed process (v1) and its ancestors (v2), so the
    // step's group sees kills caused by the build's limit too. A pids limit hit is counted where
    // the limit is, so the build's group is read as well.
    StepUsage step = step_.usage();
    StepUsage build = build_.usage();
    return {step.oom_killed, step.pids_limit_hit || build.pids_limit_hit};
  }

 private:
  GroupDirs build_;
  GroupDirs step_;
};

class DirectBuild : public BuildCgroup {
 public:
  DirectBuild(GroupDirs dirs, ResourceLimits limits) : dirs_(std::move(dirs)), limits_(limits) {}
  ~DirectBuild() override { dirs_.destroy(); }

  std::unique_ptr<StepCgroup> add_step(pid_t pid, const std::string& step_name, const std::string& /*description*/,
                                       const ResourceLimits& limits) override {
    cgroupfs::check_name(step_name, "step");
    GroupDirs step_dirs = dirs_.child(step_name);
    for (const CgroupHierarchy& h : step_dirs.dirs) {
      if (exists(h.parent_dir)) throw Error(ErrorKind::internal, "step cgroup " + h.parent_dir + " already exists");
    }
    auto step = std::make_unique<DirectStep>(dirs_, step_dirs);
    try {
      step_dirs.make();
      step_dirs.apply(limits, limits_.cpus);
      for (const CgroupHierarchy& h : step_dirs.dirs) {
        cgroupfs::write_text(h.parent_dir + "/cgroup.procs", std::to_string(pid));
      }
    } catch (const Error& error) {
      throw error.with_context("placing step " + step_name + " in its cgroup");
    }
    return step;
  }

 private:
  GroupDirs dirs_;
  ResourceLimits limits_;
};

// /proc/self/cgroup: "0::/path" on v2, "4:memory:/path" or "2:cpu,cpuacct:/path" on v1.
std::map<std::string, std::string> own_cgroups() {
  std::map<std::string, std::string> paths;
  std::optional<std::string> text = cgroupfs::read_text("/proc/self/cgroup");
  if (!text) return paths;
  for (std::string_view line : split(*text, '\n')) {
    size_t first = line.find(':');
    size_t second = first == std::string_view::npos ? first : line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    std::string_view controllers = line.substr(first + 1, second - first - 1);
    std::string path(line.substr(second + 1));
    if (controllers.empty()) {
      paths[""] = path;
      continue;
    }
    for (std::string_view controller : split(controllers, ',')) paths[std::string(controller)] = path;
  }
  return paths;
}

struct V1Mount {
  std::string mount_point;
  std::string root;
};

// v1 hierarchies by controller, from /proc/self/mountinfo.
std::map<std::string, V1Mount> v1_mounts() {
  std::map<std::string, V1Mount> mounts;
  std::optional<std::string> text = cgroupfs::read_text("/proc/self/mountinfo");
  if (!text) return mounts;
  for (std::string_view line : split(*text, '\n')) {
    size_t dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    std::vector<std::string_view> fields = split(line.substr(0, dash), ' ');
    std::vector<std::string_view> tail = split(line.substr(dash + 3), ' ');
    if (fields.size() < 5 || tail.size() < 3 || tail[0] != "cgroup") continue;
    for (std::string_view option : split(tail[2], ',')) {
      mounts.try_emplace(std::string(option), V1Mount{unescape_mount_path(fields[4]), unescape_mount_path(fields[3])});
    }
  }
  return mounts;
}

// The directory of `own` (a path in the hierarchy) under its mount, which may show only a
// sub-tree (a container's view).
std::string dir_in_mount(const V1Mount& mount, const std::string& own) {
  std::string relative = own;
  if (mount.root != "/" && relative.starts_with(mount.root)) relative = relative.substr(mount.root.size());
  return join_path(mount.mount_point, relative);
}

bool has_v2_controllers(const std::string& dir) {
  std::optional<std::string> controllers = cgroupfs::read_text(dir + "/cgroup.controllers");
  if (!controllers) return false;
  std::set<std::string_view> available;
  for (std::string_view word : split(*controllers, ' ')) {
    if (!word.empty() && word.back() == '\n') word.remove_suffix(1);
    available.insert(word);
  }
  return available.contains("memory") && available.contains("pids") && available.contains("cpu");
}

// Enables the controllers below the daemon's own v2 cgroup. A non-root group that holds
// processes refuses (EBUSY): the daemon then moves itself into the leaf `daemon` and retries.
void prepare_v2_own_group(const std::string& own_dir) {
  try {
    enable_v2_controllers(own_dir);
    return;
  } catch (const Error&) {
  }
  std::string leaf = own_dir + "/daemon";
  make_dir(leaf);
  cgroupfs::write_text(leaf + "/cgroup.procs", std::to_string(::getpid()));
  try {
    enable_v2_controllers(own_dir);
  } catch (const Error& error) {
    throw error.with_context(
        "enabling cgroup controllers below " + own_dir +
        " (it must hold no process but kbuildd's; under systemd give kbuild.service Delegate=yes)");
  }
}

}  // namespace

DirectBackend::DirectBackend(DirectBackendOptions options) {
  cgroupfs::check_name(options.parent_name, "cgroup parent");
  std::map<std::string, std::string> own = own_cgroups();
  if (cgroupfs::is_cgroup2(kCgroupRoot)) {
    std::string own_dir = join_path(kCgroupRoot, own.count("") ? own[""] : "/");
    if (!has_v2_controllers(own_dir)) {
      throw Error(ErrorKind::internal, "cgroup " + own_dir +
                                           " does not offer the memory, pids and cpu controllers (under systemd, give "
                                           "kbuild.service Delegate=yes or use the systemd backend)");
    }
    prepare_v2_own_group(own_dir);
    unified_ = true;
    std::string parent = own_dir + "/" + options.parent_name;
    make_dir(parent);
    enable_v2_controllers(parent);
    hierarchies_.push_back({"", parent});
    return;
  }
  std::map<std::string, V1Mount> mounts = v1_mounts();
  for (const char* controller : kV1Controllers) {
    auto mount = mounts.find(controller);
    if (mount == mounts.end()) continue;
    std::string own_path = own.count(controller) ? own[controller] : "/";
    std::string parent = dir_in_mount(mount->second, own_path) + "/" + options.parent_name;
    make_dir(parent);
    hierarchies_.push_back({controller, parent});
  }
  if (hierarchies_.empty()) {
    throw Error(ErrorKind::internal, "no usable cgroup hierarchy: /sys/fs/cgroup is neither cgroup2 with the memory, "
                                     "pids and cpu controllers nor has the v1 memory, pids or cpu hierarchy");
  }
}

DirectBackend::~DirectBackend() {
  for (const CgroupHierarchy& h : hierarchies_) ::rmdir(h.parent_dir.c_str());
}

std::unique_ptr<BuildCgroup> DirectBackend::create_build(const std::string& build_name, const std::string& /*description*/,
                                                        const ResourceLimits& limits) {
  cgroupfs::check_name(build_name, "build");
  // Someone may have removed an empty parent since the start.
  for (const CgroupHierarchy& h : hierarchies_) make_dir(h.parent_dir);
  GroupDirs dirs{unified_, hierarchies_};
  dirs = dirs.child("kbuild-" + build_name);
  for (const CgroupHierarchy& h : dirs.dirs) {
    if (exists(h.parent_dir)) throw Error(ErrorKind::internal, "build cgroup " + h.parent_dir + " already exists");
  }
  auto build = std::make_unique<DirectBuild>(dirs, limits);
  try {
    dirs.make();
    dirs.apply(limits, std::nullopt);
    if (unified_) enable_v2_controllers(dirs.dirs.front().parent_dir);
  } catch (const Error& error) {
    throw error.with_context("making the cgroup of build " + build_name);
  }
  return build;
}

void DirectBackend::sweep() {
  Clock::time_point deadline = Clock::now() + kTeardownTimeout;
  for (const CgroupHierarchy& h : hierarchies_) {
    for (const std::string& name : subdirectories(h.parent_dir)) {
      if (name.starts_with("kbuild-")) destroy_tree(h.parent_dir + "/" + name, deadline);
    }
  }
}

std::unique_ptr<CgroupBackend> make_direct_backend(DirectBackendOptions options) {
  return std::make_unique<DirectBackend>(std::move(options));
}

}  // namespace kbuild::sandbox
