// kbuildctl's end of org.kbuild.Builder1: typed calls over the sdbus-c++ proxy generated from
// dbus/org.kbuild.Builder1.xml. Every failure is a kbuild::Error: the daemon's own errors keep
// their kind and message, AccessDenied is a permission error, the rest say what went wrong.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dbus/listener.h"
#include "dbus/value.h"

namespace kbuild::dbus {

class BuilderClient {
 public:
  // Connects to kbuildd; throws "cannot connect to kbuildd at PATH: REASON (HINT)".
  explicit BuilderClient(const std::string& socket_path = kDefaultSocketPath);
  ~BuilderClient();
  BuilderClient(const BuilderClient&) = delete;
  BuilderClient& operator=(const BuilderClient&) = delete;

  // The fds are borrowed: the call sends duplicates. Calls wait as long as the daemon works;
  // close the connection (end the process) to cancel.
  Options build(const Options& options, int context_fd, int progress_fd, int output_fd);
  std::vector<Options> list_images();
  std::vector<std::string> remove_image(const std::string& reference, bool force);
  void tag_image(const std::string& source, const std::string& target);
  void save_images(const std::vector<std::string>& references, int output_fd);
  std::vector<std::string> load_images(int input_fd);
  std::vector<std::string> pull_image(const std::string& reference, const Options& options);
  std::vector<std::string> push_image(const std::string& reference, const Options& options);
  Options check_login(const std::string& server, const Options& options);
  Options disk_usage(const Options& options = {});
  Options prune(const Options& options);
  Options prune_images(const Options& options);
  Options info();
  Options reload();

  // The daemon's introspection XML of /org/kbuild/Builder1.
  std::string introspect();

 private:
  class Proxy;
  std::string socket_path_;
  std::unique_ptr<Proxy> proxy_;
};

}  // namespace kbuild::dbus
