// Mounts owned by objects: an overlayfs view of snapshot layers, unmounted (lazily, so a busy
// mount cannot leak) when the object goes away.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace kbuild::store {

// How overlays are mounted: the new mount API where the kernel takes lower layers one by one
// (6.8+), else mount(2) with an option string; `legacy` always takes the option string.
enum class OverlayApi { automatic, legacy };

// `automatic`, unless the environment says KBUILD_OVERLAY_API=legacy (to run an older kernel's
// code path on a newer one).
OverlayApi default_overlay_api();

// The option string of mount(2) for an overlay. A layer that holds ':', ',', '\' or a newline
// is refused, as it would read as other layers or options.
std::string overlay_mount_options(const std::vector<std::string>& lowers, const std::string& upper,
                                  const std::string& work);

class Mount {
 public:
  Mount() = default;
  ~Mount();
  Mount(Mount&& other) noexcept : target_(std::move(other.target_)) { other.target_.clear(); }
  Mount& operator=(Mount&& other) noexcept;
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  // An overlay at `target`: `lowers` top first; writable when `upper` and `work` are given,
  // read-only otherwise (which needs at least two lowers; one lower is bind-mounted read-only).
  static Mount overlay(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                       const std::string& target, OverlayApi api = default_overlay_api());
  // A bind mount of `source` at `target`, read-only if asked.
  static Mount bind(const std::string& source, const std::string& target, bool read_only);
  // A copy of the mount tree at `source_fd` (any fd of this mount namespace, O_PATH too) at
  // `target`: where the source's path is not to be trusted, it is never spelled.
  static Mount clone(int source_fd, const std::string& target);
  // A tmpfs at `target` with mount(2)'s `flags` (MS_NODEV, ...) and `options` ("size=...").
  static Mount tmpfs(const std::string& target, unsigned long flags, const std::string& options);

  const std::string& target() const { return target_; }
  // Unmounts now: waits up to half a second while the mount is busy, then detaches it;
  // throws if the kernel refuses otherwise.
  void unmount();
  // Leaves the mount in place for good (it goes away with its mount namespace).
  void release() { target_.clear(); }

 private:
  explicit Mount(std::string target) : target_(std::move(target)) {}
  std::string target_;
};

// Detaches every mount strictly below `dir` in the calling process's mount namespace, deepest
// first (`dir` itself stays, as a store root may be a mount of its own): what a crashed daemon
// left in a namespace this one shares, before anything walks or removes the dirs below.
// Returns how many it detached.
size_t detach_mounts_under(const std::string& dir);

// Moves the calling process into a mount namespace of its own whose mounts do not propagate
// back to the host, so every mount the daemon makes disappears with it. Call before any thread.
void enter_private_mount_namespace();

}  // namespace kbuild::store
