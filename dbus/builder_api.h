// What kbuildd implements behind org.kbuild.Builder1: one C++ method per D-Bus method, called by
// the Server on a worker thread with the caller's credentials and its received fds.
#pragma once

#include <sys/types.h>

#include <stop_token>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "dbus/value.h"

namespace kbuild::dbus {

// Who is calling, as the kernel saw it when the peer connected (SO_PEERCRED, SO_PEERGROUPS).
struct Caller {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
};

// What a handler knows about its call besides the arguments.
struct CallContext {
  Caller caller;
  // Stops when the caller disconnects or the server shuts down. Callbacks registered on it
  // (std::stop_callback) run on the server's loop thread: they must be quick and must not throw.
  std::stop_token stop;
};

// The API, implemented by the daemon (and by fakes in tests). Each method may block: it runs on
// a thread of its own. Throw kbuild::Error to fail the call with org.kbuild.Error.<Kind>; any
// other exception becomes org.kbuild.Error.Internal. The fds are the handler's own duplicates
// (O_CLOEXEC); the copies in the D-Bus message are closed when the reply is sent.
class BuilderApi {
 public:
  virtual ~BuilderApi() = default;

  // Build(a{sv} options, h context, h progress, h output) -> a{sv} result
  virtual Options build(const CallContext& call, const Options& options, UniqueFd context,
                        UniqueFd progress, UniqueFd output) = 0;
  // ListImages() -> aa{sv} images
  virtual std::vector<Options> list_images(const CallContext& call) = 0;
  // RemoveImage(s reference, b force) -> as removed
  virtual std::vector<std::string> remove_image(const CallContext& call, const std::string& reference,
                                                bool force) = 0;
  // TagImage(s source, s target)
  virtual void tag_image(const CallContext& call, const std::string& source, const std::string& target) = 0;
  // SaveImages(as references, h output)
  virtual void save_images(const CallContext& call, const std::vector<std::string>& references,
                           UniqueFd output) = 0;
  // LoadImages(h input) -> as loaded
  virtual std::vector<std::string> load_images(const CallContext& call, UniqueFd input) = 0;
  // PullImage(s reference, a{sv} options) -> as lines
  virtual std::vector<std::string> pull_image(const CallContext& call, const std::string& reference,
                                              const Options& options) = 0;
  // PushImage(s reference, a{sv} options) -> as lines
  virtual std::vector<std::string> push_image(const CallContext& call, const std::string& reference,
                                              const Options& options) = 0;
  // CheckLogin(s server, a{sv} options) -> a{sv} result
  virtual Options check_login(const CallContext& call, const std::string& server, const Options& options) = 0;
  // DiskUsage(a{sv} options) -> a{sv} usage
  virtual Options disk_usage(const CallContext& call, const Options& options) = 0;
  // Prune(a{sv} options) -> a{sv} result
  virtual Options prune(const CallContext& call, const Options& options) = 0;
  // PruneImages(a{sv} options) -> a{sv} result
  virtual Options prune_images(const CallContext& call, const Options& options) = 0;
  // Info() -> a{sv} info
  virtual Options info(const CallContext& call) = 0;
  // Reload() -> a{sv} result
  virtual Options reload(const CallContext& call) = 0;
};

}  // namespace kbuild::dbus
