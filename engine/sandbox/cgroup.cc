#include "engine/sandbox/cgroup.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <filesystem>

#include "common/error.h"
#include "common/printable_text.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "engine/sandbox/direct_backend.h"
#include "engine/sandbox/systemd_backend.h"

namespace kbuild::sandbox {

std::unique_ptr<CgroupBackend> make_cgroup_backend(std::string_view choice, const std::string& direct_parent) {
  DirectBackendOptions direct;
  direct.parent_name = direct_parent;
  if (choice == "direct") return make_direct_backend(direct);
  if (choice == "systemd") return make_systemd_backend();
  if (choice != "auto") {
    throw Error(ErrorKind::user, "unknown cgroup backend \"" + std::string(choice) + "\" (auto, systemd or direct)");
  }
  if (systemd_is_available()) return make_systemd_backend();
  return make_direct_backend(direct);
}

std::string build_description(std::string_view build_name, uid_t caller_uid) {
  return "kbuild build " + printable_text(build_name, 64) + " (uid " + std::to_string(caller_uid) + ")";
}

std::string step_description(std::string_view step_display_name) {
  // systemctl cuts the column to the terminal anyway; the unit keeps enough to tell steps apart.
  return "kbuild: " + printable_text(step_display_name, 200);
}

namespace cgroupfs {

void check_name(std::string_view name, std::string_view what) {
  bool ok = !name.empty() && name.size() <= 100;
  for (char c : name) {
    bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    ok = ok && allowed;
  }
  if (!ok) {
    throw Error(ErrorKind::user,
                std::string(what) + " name \"" + std::string(name) + "\" must be 1-100 characters of [A-Za-z0-9_-]");
  }
}

std::optional<std::string> read_text(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENODEV) return std::nullopt;
    throw_errno("open", path);
  }
  std::string text;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    // A cgroup removed while we read it reports ENODEV.
    if (n < 0 && errno == ENODEV) return std::nullopt;
    check(n, "read", path);
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  return text;
}

void write_text(const std::string& path, std::string_view value) {
  UniqueFd fd(check(::open(path.c_str(), O_WRONLY | O_CLOEXEC), "open", path));
  ssize_t n;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) throw_errno("writing \"" + std::string(value) + "\" to", path);
}

uint64_t counter(const std::string& path, std::string_view key) {
  std::optional<std::string> text = read_text(path);
  if (!text) return 0;
  std::string_view rest = *text;
  while (!rest.empty()) {
    size_t end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ' ') {
      uint64_t value = 0;
      std::string_view number = line.substr(key.size() + 1);
      std::from_chars(number.data(), number.data() + number.size(), value);
      return value;
    }
  }
  return 0;
}

bool is_cgroup2(const std::string& path) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) return false;
  return fs.f_type == CGROUP2_SUPER_MAGIC;
}

StepUsage read_usage_v2(const std::string& dir) {
  StepUsage usage;
  usage.oom_killed = counter(dir + "/memory.events", "oom_kill") > 0;
  usage.pids_limit_hit = counter(dir + "/pids.events", "max") > 0;
  return usage;
}

StepUsage read_usage_v1(const std::string& memory_dir, const std::string& pids_dir) {
  StepUsage usage;
  // memory.oom_control counts kills of this group's processes ("oom_kill N", since Linux 4.13);
  // memory.failcnt would also count limit hits that reclaim resolved.
  if (!memory_dir.empty()) usage.oom_killed = counter(memory_dir + "/memory.oom_control", "oom_kill") > 0;
  if (!pids_dir.empty()) usage.pids_limit_hit = counter(pids_dir + "/pids.events", "max") > 0;
  return usage;
}

}  // namespace cgroupfs
}  // namespace kbuild::sandbox
