#include "engine/sandbox/systemd_backend.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <sdbus-c++/sdbus-c++.h>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace kbuild::sandbox {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Property = sdbus::Struct<std::string, sdbus::Variant>;
using Properties = std::vector<Property>;
using AuxUnits = std::vector<sdbus::Struct<std::string, Properties>>;
// ListUnitsByPatterns: name, description, load, active, sub, following, path, job id, job type, job path.
using UnitRow = sdbus::Struct<std::string, std::string, std::string, std::string, std::string, std::string,
                              sdbus::ObjectPath, uint32_t, std::string, sdbus::ObjectPath>;

constexpr const char* kService = "org.freedesktop.systemd1";
constexpr const char* kManagerPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";
constexpr const char* kProperties = "org.freedesktop.DBus.Properties";
constexpr const char* kCgroupRoot = "/sys/fs/cgroup";
constexpr auto kJobTimeout = 30s;
constexpr auto kGoneTimeout = 5s;

bool is_no_such_unit(const sdbus::Error& error) {
  return error.getName() == "org.freedesktop.systemd1.NoSuchUnit" ||
         error.getName() == "org.freedesktop.systemd1.LoadFailed";
}

[[noreturn]] void throw_bus_error(const std::string& context, const sdbus::Error& error) {
  throw Error(ErrorKind::internal, context + ": " + error.getMessage() + " (" + error.getName() + ")");
}

// systemd's unit name escaping for names made of [A-Za-z0-9_-]: '-' separates slice levels.
std::string escape_unit_part(const std::string& name) {
  std::string escaped;
  for (char c : name) {
    if (c == '-') {
      escaped += "\\x2d";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

// What a cgroup (a path below the cgroup root, as systemd's ControlGroup property gives it)
// recorded: OOM kills of its processes and pids-limit hits.
struct Counters {
  uint64_t oom_kills = 0;
  uint64_t pids_max = 0;
};

Counters read_counters(const std::string& control_group) {
  Counters counters;
  if (control_group.empty()) return counters;
  try {
    if (cgroupfs::is_cgroup2(kCgroupRoot)) {
      std::string dir = kCgroupRoot + control_group;
      counters.oom_kills = cgroupfs::counter(dir + "/memory.events", "oom_kill");
      counters.pids_max = cgroupfs::counter(dir + "/pids.events", "max");
    } else {
      counters.oom_kills =
          cgroupfs::counter(std::string(kCgroupRoot) + "/memory" + control_group + "/memory.oom_control", "oom_kill");
      counters.pids_max = cgroupfs::counter(std::string(kCgroupRoot) + "/pids" + control_group + "/pids.events", "max");
    }
  } catch (const Error&) {
    // The group went away while being read: nothing more to learn from it.
  }
  return counters;
}

Properties limit_properties(const ResourceLimits& limits) {
  Properties properties;
  // Accounting on, so memory.events and pids.events exist even without a limit.
  properties.push_back({"MemoryAccounting", sdbus::Variant(true)});
  properties.push_back({"TasksAccounting", sdbus::Variant(true)});
  if (limits.memory_bytes) {
    properties.push_back({"MemoryMax", sdbus::Variant(static_cast<uint64_t>(*limits.memory_bytes))});
    properties.push_back({"MemorySwapMax", sdbus::Variant(static_cast<uint64_t>(0))});
  }
  if (limits.cpus) {
    if (!(*limits.cpus > 0)) throw Error(ErrorKind::user, "CPU limit must be a positive number of CPUs");
    auto per_second = static_cast<uint64_t>(*limits.cpus * 1e6);
    properties.push_back({"CPUQuotaPerSecUSec", sdbus::Variant(std::max<uint64_t>(per_second, 10000))});
  }
  if (limits.pids) properties.push_back({"TasksMax", sdbus::Variant(static_cast<uint64_t>(*limits.pids))});
  return properties;
}

// OOM kills of a v1 memory cgroup that systemd may remove before they are read.
//
// systemd removes a scope's cgroup as soon as its last process is gone, and on v1 the kernel
// counts an OOM kill only in the victim's group (memory.oom_control "oom_kill"), so by the time
// the step's helper has been reaped the count may be gone with the group. An eventfd registered
// through cgroup.event_control on memory.oom_control keeps counting: +1 for each OOM in the
// group, and +1 when the group is removed. A second eventfd on an unreachable usage threshold
// fires only on removal, and is registered first so that the kernel signals it after the OOM
// one: once it has fired, the OOM eventfd's count minus one is the number of OOMs.
class V1OomWatch {
 public:
  explicit V1OomWatch(const std::string& memory_dir) : dir_(memory_dir) {
    removal_ = register_event("memory.usage_in_bytes", " 9223372036854775807");
    oom_ = register_event("memory.oom_control", "");
  }

  bool oom_killed() {
    if (!oom_) return false;
    if (::access(dir_.c_str(), F_OK) == 0) {
      return cgroupfs::counter(dir_ + "/memory.oom_control", "oom_kill") > 0 || read_count(oom_) > 0;
    }
    bool removed = false;
    if (removal_) {
      pollfd fd{removal_.get(), POLLIN, 0};
      removed = ::poll(&fd, 1, 1000) == 1;
    }
    uint64_t events = read_count(oom_);
    return events > (removed ? 1u : 0u);
  }

 private:
  UniqueFd register_event(const std::string& file, const std::string& arguments) {
    UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    UniqueFd target(::open((dir_ + "/" + file).c_str(), O_RDONLY | O_CLOEXEC));
    if (!event || !target) return {};
    try {
      cgroupfs::write_text(dir_ + "/cgroup.event_control",
                           std::to_string(event.get()) + " " + std::to_string(target.get()) + arguments);
    } catch (const Error&) {
      return {};
    }
    return event;
  }

  static uint64_t read_count(const UniqueFd& fd) {
    uint64_t count = 0;
    if (::read(fd.get(), &count, sizeof count) != sizeof count) return 0;
    return count;
  }

  std::string dir_;
  UniqueFd removal_;
  UniqueFd oom_;
};

// The system manager over one bus connection, with JobRemoved results collected by the
// connection's event loop thread.
class SystemdManager {
 public:
  SystemdManager() {
    try {
      connection_ = sdbus::createSystemBusConnection();
      proxy_ = sdbus::createProxy(*connection_, kService, kManagerPath);
      proxy_->uponSignal("JobRemoved")
          .onInterface(kManager)
          .call([this](uint32_t, const sdbus::ObjectPath& job, const std::string& unit, const std::string& result) {
            if (!unit.starts_with("kbuild-")) return;
            std::lock_guard lock(mutex_);
            finished_jobs_[job] = result;
            // Jobs systemd queued itself (a slice's stop stopping its scopes) are never waited
            // for: forget the oldest results rather than keep them all.
            finish_order_.push_back(job);
            if (finish_order_.size() > 4096) {
              finished_jobs_.erase(finish_order_.front());
              finish_order_.pop_front();
            }
            jobs_changed_.notify_all();
          });
      proxy_->finishRegistration();
      connection_->enterEventLoopAsync();
      // systemd sends unit and job signals only to clients that subscribed.
      proxy_->callMethod("Subscribe").onInterface(kManager);
    } catch (const sdbus::Error& error) {
      throw_bus_error("connecting to systemd on the system bus", error);
    }
  }

  ~SystemdManager() {
    try {
      connection_->leaveEventLoop();
    } catch (...) {
    }
  }

  SystemdManager(const SystemdManager&) = delete;
  SystemdManager& operator=(const SystemdManager&) = delete;

  // Starts a transient unit and waits until its start job is done.
  void start_transient(const std::string& unit, const Properties& properties) {
    sdbus::ObjectPath job;
    try {
      proxy_->callMethod("StartTransientUnit")
          .onInterface(kManager)
          .withArguments(unit, std::string("fail"), properties, AuxUnits{})
          .storeResultsTo(job);
    } catch (const sdbus::Error& error) {
      throw_bus_error("starting " + unit, error);
    }
    std::string result = wait_job(job);
    if (result != "done") {
      throw Error(ErrorKind::internal, "starting " + unit + ": its job finished with \"" + result +
                                           "\" (see journalctl -u " + unit + ")");
    }
  }

  // Stops a unit (missing is fine), waits for the stop job, and forgets its failed state.
  void stop(const std::string& unit) {
    try {
      sdbus::ObjectPath job;
      proxy_->callMethod("StopUnit").onInterface(kManager).withArguments(unit, std::string("replace")).storeResultsTo(job);
      wait_job(job);
    } catch (const sdbus::Error& error) {
      if (!is_no_such_unit(error)) throw_bus_error("stopping " + unit, error);
    }
    reset_failed(unit);
  }

  void reset_failed(const std::string& unit) {
    try {
      proxy_->callMethod("ResetFailedUnit").onInterface(kManager).withArguments(unit);
    } catch (const sdbus::Error&) {
      // Not failed, or already gone.
    }
  }

  // SIGKILL to every process of the unit; a unit that is gone already is fine.
  void kill_all(const std::string& unit) {
    try {
      proxy_->callMethod("KillUnit").onInterface(kManager).withArguments(unit, std::string("all"), int32_t{SIGKILL});
    } catch (const sdbus::Error& error) {
      if (is_no_such_unit(error) || error.getName() == "org.freedesktop.systemd1.NoSuchProcess") return;
      throw_bus_error("killing the processes of " + unit, error);
    }
  }

  // The unit's object path, or nothing when systemd has no such unit loaded.
  std::optional<sdbus::ObjectPath> unit_path(const std::string& unit) {
    sdbus::ObjectPath path;
    try {
      proxy_->callMethod("GetUnit").onInterface(kManager).withArguments(unit).storeResultsTo(path);
    } catch (const sdbus::Error& error) {
      if (is_no_such_unit(error)) return std::nullopt;
      throw_bus_error("looking up " + unit, error);
    }
    return path;
  }

  // A property of a loaded unit, or nothing when the unit is gone.
  std::optional<sdbus::Variant> unit_property(const std::string& unit, const std::string& interface,
                                              const std::string& name) {
    std::optional<sdbus::ObjectPath> path = unit_path(unit);
    if (!path) return std::nullopt;
    try {
      auto unit_proxy = sdbus::createProxy(*connection_, kService, *path);
      sdbus::Variant value;
      unit_proxy->callMethod("Get").onInterface(kProperties).withArguments(interface, name).storeResultsTo(value);
      return value;
    } catch (const sdbus::Error& error) {
      if (is_no_such_unit(error) || error.getName() == "org.freedesktop.DBus.Error.UnknownObject") return std::nullopt;
      throw_bus_error("reading " + name + " of " + unit, error);
    }
  }

  std::string control_group(const std::string& unit, const std::string& interface) {
    std::optional<sdbus::Variant> value = unit_property(unit, interface, "ControlGroup");
    return value ? value->get<std::string>() : std::string();
  }

  // Waits until systemd has unloaded the unit (an inactive transient unit is collected at once).
  void wait_gone(const std::string& unit) {
    Clock::time_point deadline = Clock::now() + kGoneTimeout;
    auto pause = 1ms;
    while (unit_path(unit) && Clock::now() < deadline) {
      reset_failed(unit);
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, 50ms);
    }
  }

  std::vector<std::string> list_units(const std::vector<std::string>& patterns) {
    std::vector<UnitRow> rows;
    try {
      proxy_->callMethod("ListUnitsByPatterns")
          .onInterface(kManager)
          .withArguments(std::vector<std::string>{}, patterns)
          .storeResultsTo(rows);
    } catch (const sdbus::Error& error) {
      throw_bus_error("listing kbuild units", error);
    }
    std::vector<std::string> names;
    for (const UnitRow& row : rows) names.push_back(row.get<0>());
    return names;
  }

 private:
  std::string wait_job(const sdbus::ObjectPath& job) {
    std::unique_lock lock(mutex_);
    bool done = jobs_changed_.wait_for(lock, kJobTimeout, [&] { return finished_jobs_.contains(job); });
    if (!done) return "timeout";
    std::string result = finished_jobs_[job];
    finished_jobs_.erase(job);
    return result;
  }

  std::unique_ptr<sdbus::IConnection> connection_;
  std::unique_ptr<sdbus::IProxy> proxy_;
  std::mutex mutex_;
  std::condition_variable jobs_changed_;
  // Results of finished jobs of kbuild units, by job path, until their waiter takes them: a job
  // can finish before StartTransientUnit's reply has been read.
  std::map<std::string, std::string> finished_jobs_;
  std::deque<std::string> finish_order_;
};

class SystemdStep : public StepCgroup {
 public:
  SystemdStep(std::shared_ptr<SystemdManager> manager, std::string scope, std::string slice_cgroup)
      : manager_(std::move(manager)), scope_(std::move(scope)), slice_cgroup_(std::move(slice_cgroup)) {}

  // Called once the scope runs: where to read its counters from, and the slice's counters now.
  void started() {
    // A scope's group is its slice's plus its own name (kbuild's names need no cgroup
    // escaping): no round trip to systemd on every step for it.
    scope_cgroup_ = slice_cgroup_.empty() ? manager_->control_group(scope_, "org.freedesktop.systemd1.Scope")
                                          : slice_cgroup_ + "/" + scope_;
    slice_before_ = read_counters(slice_cgroup_);
    if (!scope_cgroup_.empty() && !cgroupfs::is_cgroup2(kCgroupRoot)) {
      v1_oom_.emplace(std::string(kCgroupRoot) + "/memory" + scope_cgroup_);
    }
  }

  ~SystemdStep() override {
    try {
      manager_->kill_all(scope_);
    } catch (...) {
    }
    try {
      manager_->stop(scope_);
      manager_->wait_gone(scope_);
    } catch (...) {
      // sweep() at the next start stops what is left.
    }
  }

  void kill() override { manager_->kill_all(scope_); }

  StepUsage usage() override {
    StepUsage usage;
    // systemd (on cgroup v2) marks a scope whose process the kernel OOM-killed as failed with
    // result "oom-kill"; a failed unit stays loaded until reset, so it can be read here.
    std::optional<sdbus::Variant> result = manager_->unit_property(scope_, "org.freedesktop.systemd1.Scope", "Result");
    if (result && result->get<std::string>() == "oom-kill") usage.oom_killed = true;
    // The scope's own group, while systemd has not removed it yet.
    Counters scope = read_counters(scope_cgroup_);
    // The slice outlives the step: on v2 its memory.events counts the kills below it, and a
    // TasksMax hit of the build's is counted there.
    Counters slice = read_counters(slice_cgroup_);
    usage.oom_killed = usage.oom_killed || scope.oom_kills > 0 || slice.oom_kills > slice_before_.oom_kills;
    if (!usage.oom_killed && v1_oom_) usage.oom_killed = v1_oom_->oom_killed();
    usage.pids_limit_hit = scope.pids_max > 0 || slice.pids_max > slice_before_.pids_max;
    return usage;
  }

 private:
  std::shared_ptr<SystemdManager> manager_;
  std::string scope_;
  std::string slice_cgroup_;
  std::string scope_cgroup_;
  Counters slice_before_;
  std::optional<V1OomWatch> v1_oom_;
};

class SystemdBuild : public BuildCgroup {
 public:
  SystemdBuild(std::shared_ptr<SystemdManager> manager, std::string build_name)
      : manager_(std::move(manager)), build_name_(std::move(build_name)), slice_(build_slice_name(build_name_)) {}

  void start(const std::string& description, const ResourceLimits& limits) {
    Properties properties = limit_properties(limits);
    properties.push_back({"Description", sdbus::Variant(description)});
    manager_->start_transient(slice_, properties);
    slice_cgroup_ = manager_->control_group(slice_, "org.freedesktop.systemd1.Slice");
  }

  ~SystemdBuild() override {
    try {
      manager_->stop(slice_);
      manager_->wait_gone(slice_);
    } catch (...) {
    }
  }

  std::unique_ptr<StepCgroup> add_step(pid_t pid, const std::string& step_name, const std::string& description,
                                       const ResourceLimits& limits) override {
    cgroupfs::check_name(step_name, "step");
    std::string scope = step_scope_name(build_name_, step_name);
    Properties properties = limit_properties(limits);
    properties.push_back({"PIDs", sdbus::Variant(std::vector<uint32_t>{static_cast<uint32_t>(pid)})});
    properties.push_back({"Slice", sdbus::Variant(slice_)});
    properties.push_back({"Description", sdbus::Variant(description)});
    // Stopping a step kills at once, as a cancel does.
    properties.push_back({"KillSignal", sdbus::Variant(int32_t{SIGKILL})});
    auto step = std::make_unique<SystemdStep>(manager_, scope, slice_cgroup_);
    manager_->start_transient(scope, properties);
    step->started();
    return step;
  }

 private:
  std::shared_ptr<SystemdManager> manager_;
  std::string build_name_;
  std::string slice_;
  std::string slice_cgroup_;
};

class SystemdBackend : public CgroupBackend {
 public:
  SystemdBackend() : manager_(std::make_shared<SystemdManager>()) {}

  std::string_view name() const override { return "systemd"; }

  std::unique_ptr<BuildCgroup> create_build(const std::string& build_name, const std::string& description,
                                            const ResourceLimits& limits) override {
    cgroupfs::check_name(build_name, "build");
    auto build = std::make_unique<SystemdBuild>(manager_, build_name);
    build->start(description, limits);
    return build;
  }

  void sweep() override {
    // Scopes first: stopping a slice would stop them too, but with their own jobs to wait for.
    for (const char* pattern : {"kbuild-*.scope", "kbuild-*.slice"}) {
      for (const std::string& unit : manager_->list_units({pattern})) {
        manager_->kill_all(unit);
        manager_->stop(unit);
        manager_->wait_gone(unit);
      }
    }
  }

 private:
  std::shared_ptr<SystemdManager> manager_;
};

}  // namespace

std::string build_slice_name(const std::string& build_name) {
  return "kbuild-" + escape_unit_part(build_name) + ".slice";
}

std::string step_scope_name(const std::string& build_name, const std::string& step_name) {
  return "kbuild-" + escape_unit_part(build_name) + "-" + escape_unit_part(step_name) + ".scope";
}

bool systemd_is_available() {
  if (::access("/run/systemd/system", F_OK) != 0) return false;
  try {
    auto connection = sdbus::createSystemBusConnection();
    auto proxy = sdbus::createProxy(*connection, kService, kManagerPath);
    sdbus::Variant version;
    proxy->callMethod("Get")
        .onInterface(kProperties)
        .withTimeout(2s)
        .withArguments(std::string(kManager), std::string("Version"))
        .storeResultsTo(version);
    return true;
  } catch (const sdbus::Error&) {
    return false;
  }
}

std::unique_ptr<CgroupBackend> make_systemd_backend() { return std::make_unique<SystemdBackend>(); }

}  // namespace kbuild::sandbox
