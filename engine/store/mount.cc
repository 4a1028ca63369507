#include "engine/store/mount.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>
#include <thread>

#include "common/error.h"
#include "common/syscall.h"
#include "common/unique_fd.h"

namespace kbuild::store {
namespace {

// The new mount API takes lower layers one at a time ("lowerdir+", Linux 6.8), so the
// number of layers is not bounded by the one-page option string of mount(2). Older kernels
// refuse the key, or (6.1, where overlayfs still parses a legacy option string) accept it and
// fail to create: either way the caller falls back.
bool overlay_with_fsconfig(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                           const std::string& target) {
  UniqueFd fs(::fsopen("overlay", FSOPEN_CLOEXEC));
  if (!fs) return false;
  for (const std::string& lower : lowers) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "lowerdir+", lower.c_str(), 0) != 0) return false;
  }
  if (!upper.empty()) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "upperdir", upper.c_str(), 0) != 0) return false;
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "workdir", work.c_str(), 0) != 0) return false;
  }
  // Layers must hold their own content to be exported: no index, no metadata-only copies,
  // no redirected directories.
  for (const char* option : {"index", "metacopy", "redirect_dir"}) {
    ::fsconfig(fs.get(), FSCONFIG_SET_STRING, option, "off", 0);
  }
  if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) return false;
  UniqueFd mnt(check(::fsmount(fs.get(), FSMOUNT_CLOEXEC, upper.empty() ? MOUNT_ATTR_RDONLY : 0), "fsmount", target));
  check(::move_mount(mnt.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH), "move_mount", target);
  return true;
}

// Each layer goes into the one-page option string as /proc/self/fd/N of an fd opened here: a
// short name whatever the store's paths are (about 250 layers fit, not 40), and the layers'
// own names never reach the string at all.
void overlay_with_mount(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                        const std::string& target) {
  std::vector<UniqueFd> held;
  auto by_fd = [&](const std::string& path) {
    held.emplace_back(check(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "opening overlay layer", path));
    return "/proc/self/fd/" + std::to_string(held.back().get());
  };
  std::vector<std::string> lower_names;
  for (const std::string& lower : lowers) lower_names.push_back(by_fd(lower));
  std::string upper_name = upper.empty() ? "" : by_fd(upper);
  std::string work_name = upper.empty() ? "" : by_fd(work);
  check(::mount("overlay", target.c_str(), "overlay", upper.empty() ? MS_RDONLY : 0,
                overlay_mount_options(lower_names, upper_name, work_name).c_str()),
        "mounting overlay at", target);
}

OverlayApi overlay_api_from_environment() {
  const char* forced = std::getenv("KBUILD_OVERLAY_API");
  return forced && std::string_view(forced) == "legacy" ? OverlayApi::legacy : OverlayApi::automatic;
}

}  // namespace

Mount::~Mount() {
  if (target_.empty()) return;
  ::umount2(target_.c_str(), MNT_DETACH);
}

Mount& Mount::operator=(Mount&& other) noexcept {
  if (this != &other) {
    if (!target_.empty()) ::umount2(target_.c_str(), MNT_DETACH);
    target_ = std::move(other.target_);
    other.target_.clear();
  }
  return *this;
}

std::string overlay_mount_options(const std::vector<std::string>& lowers, const std::string& upper,
                                  const std::string& work) {
  // ':' separates lower layers, ',' options, and '\' escapes either: a path holding one would
  // be read as other layers or options.
  auto checked = [](const std::string& path) -> const std::string& {
    if (path.find_first_of(":,\\\n") != std::string::npos) {
      throw Error(ErrorKind::internal, "the overlay layer " + path + " cannot be named in mount options");
    }
    return path;
  };
  std::string options = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) options += (i ? ":" : "") + checked(lowers[i]);
  if (!upper.empty()) options += ",upperdir=" + checked(upper) + ",workdir=" + checked(work);
  return options + ",index=off,metacopy=off,redirect_dir=off";
}

OverlayApi default_overlay_api() {
  static const OverlayApi api = overlay_api_from_environment();
  return api;
}

Mount Mount::overlay(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                     const std::string& target, OverlayApi api) {
  if (lowers.empty()) throw Error(ErrorKind::internal, "overlay at " + target + " needs a lower layer");
  if (upper.empty() && lowers.size() == 1) return bind(lowers.front(), target, true);
  if (api == OverlayApi::legacy || !overlay_with_fsconfig(lowers, upper, work, target)) {
    overlay_with_mount(lowers, upper, work, target);
  }
  return Mount(target);
}

Mount Mount::bind(const std::string& source, const std::string& target, bool read_only) {
  check(::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr), "bind-mounting " + source + " at",
        target);
  Mount mount(target);
  if (read_only) {
    check(::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, nullptr),
          "remounting read-only", target);
  }
  return mount;
}

Mount Mount::tmpfs(const std::string& target, unsigned long flags, const std::string& options) {
  check(::mount("tmpfs", target.c_str(), "tmpfs", flags, options.c_str()), "mounting tmpfs at", target);
  return Mount(target);
}

Mount Mount::clone(int source_fd, const std::string& target) {
  UniqueFd tree(check(::open_tree(source_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE),
                      "open_tree", target));
  check(::move_mount(tree.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH), "move_mount", target);
  return Mount(target);
}

void Mount::unmount() {
  if (target_.empty()) return;
  // A child the daemon forks or spawns holds copies of all its fds until it closes them, for
  // microseconds to milliseconds; one inside this mount makes it busy meanwhile. Wait that out,
  // as containerd does, then detach it: nothing writes to it any more.
  constexpr int kBusyRetries = 50;
  for (int attempt = 0;; ++attempt) {
    if (::umount2(target_.c_str(), 0) == 0) break;
    if (errno != EBUSY) throw_errno("unmounting", target_);
    if (attempt == kBusyRetries) {
      check(::umount2(target_.c_str(), MNT_DETACH), "unmounting", target_);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  target_.clear();
}

namespace {

// mountinfo escapes space, tab, newline and backslash in paths as \ooo.
std::string unescape_mount_path(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size()) {
      out.push_back(static_cast<char>(((text[i + 1] - '0') << 6) | ((text[i + 2] - '0') << 3) | (text[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// Mount points strictly below `dir`, longest (deepest) first.
std::vector<std::string> mount_points_below(const std::string& dir) {
  std::string prefix = dir.ends_with('/') ? dir : dir + "/";
  std::vector<std::string> points;
  std::ifstream mountinfo("/proc/self/mountinfo");
  if (!mountinfo) throw_errno("open", "/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    // "36 35 98:0 /mnt1 /mnt/parent rw,... - ext3 /dev/root rw": the fifth field is the point.
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    if (!(fields >> id >> parent >> device >> root >> point)) continue;
    point = unescape_mount_path(point);
    if (point.starts_with(prefix)) points.push_back(std::move(point));
  }
  std::sort(points.begin(), points.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  return points;
}

}  // namespace

size_t detach_mounts_under(const std::string& dir) {
  size_t detached = 0;
  // Mounts stacked on one point come off one per pass.
  for (int pass = 0; pass < 16; ++pass) {
    std::vector<std::string> points = mount_points_below(dir);
    if (points.empty()) return detached;
    for (const std::string& point : points) {
      if (::umount2(point.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
        ++detached;
      } else if (errno != EINVAL && errno != ENOENT) {
        // EINVAL, ENOENT: gone with a mount above it already.
        throw_errno("unmounting what a crash left at", point);
      }
    }
  }
  throw Error(ErrorKind::internal, "mounts below " + dir + " keep coming back");
}

void enter_private_mount_namespace() {
  check(::unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)");
  check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "making / private");
}

}  // namespace kbuild::store
