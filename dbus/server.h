// kbuildd's D-Bus endpoint: peer-to-peer D-Bus (libsystemd's sd-bus in server mode) on every
// connection accepted from a Listener, serving org.kbuild.Builder1 at /org/kbuild/Builder1 and
// enough of org.freedesktop.DBus (Hello, AddMatch, RemoveMatch, GetId) for bus clients such as
// busctl --address=... and sdbus-c++.
//
// Everything runs on one sd_event loop thread, the one that calls run(); each method call runs
// on a thread of its own and its reply goes back through the loop, so a long Build blocks
// neither its connection nor any other. A caller that disconnects stops its calls' stop tokens.
// How many calls run at once is capped (ServerOptions), so that no caller can take every thread.
#pragma once

#include <systemd/sd-event.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "dbus/builder_api.h"
#include "dbus/listener.h"

namespace kbuild::dbus {

inline constexpr const char* kBuilderObjectPath = "/org/kbuild/Builder1";
inline constexpr const char* kBuilderInterface = "org.kbuild.Builder1";

struct ServerOptions {
  // Members of this group may call, besides root; others get AccessDenied on every call.
  std::string group = "kbuild";
  // Calls in flight at once, in all and per caller uid; beyond, a call fails at once with
  // org.kbuild.Error.TooManyRequests saying which limit it hit.
  std::size_t max_calls = 64;
  std::size_t max_calls_per_uid = 8;
  // run() returns after this long without connections or calls; zero never does.
  std::chrono::milliseconds idle_timeout{0};
  // Where the server reports what it cannot tell a caller (accept failures, lost replies);
  // stderr ("kbuildd: ...") when empty. Called on the loop thread.
  std::function<void(const std::string&)> log;
};

class Server {
 public:
  enum class Exit { stopped, idle };

  // Takes the listener; serves `api`, which must outlive the Server.
  Server(Listener listener, BuilderApi& api, ServerOptions options = {});
  // Cancels the calls still running and waits for their threads. Call it after run() returned
  // (or when run() never ran), not while run() is running on another thread.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves until stop() or until idle_timeout passes idle. Call it once.
  Exit run();
  // Makes run() return soon. Callable from any thread, and from a signal handler.
  void stop() noexcept;
  // The loop run() runs, for the daemon's own sources (signals, watchdog, notifications).
  // Use it only before run() or from the loop thread.
  sd_event* event() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kbuild::dbus
