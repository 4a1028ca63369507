#include "dbus/builder_client.h"

#include <fcntl.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <sdbus-c++/sdbus-c++.h>
#include <type_traits>

#include "common/error.h"
#include "common/syscall.h"
#include "dbus/builder1_proxy.h"
#include "dbus/errors.h"
#include "dbus/server.h"

namespace kbuild::dbus {
namespace {

using VariantMap = std::map<std::string, sdbus::Variant>;

// The D-Bus address of a unix socket path, escaped as the address syntax wants.
std::string unix_address(const std::string& path) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string address = "unix:path=";
  for (unsigned char c : path) {
    if (std::isalnum(c) || std::strchr("-_/.\\*", c)) {
      address += static_cast<char>(c);
    } else {
      address += '%';
      address += kHex[c >> 4];
      address += kHex[c & 0xF];
    }
  }
  return address;
}

// The errno an sdbus-c++ error stands for (it names errnos as D-Bus errors), or 0.
int errno_of(const sdbus::Error& error) {
  sd_bus_error bus_error = SD_BUS_ERROR_MAKE_CONST(error.getName().c_str(), error.getMessage().c_str());
  return sd_bus_error_get_errno(&bus_error);
}

[[noreturn]] void throw_connect_error(const std::string& path, int error, const std::string& detail) {
  std::string message = "cannot connect to kbuildd at " + path + ": ";
  message += error != 0 ? std::strerror(error) : detail;
  if (error == EACCES || error == EPERM) {
    throw Error(ErrorKind::permission, message + " (only root and members of group kbuild may use kbuildd)");
  }
  throw Error(ErrorKind::internal, message + " (is kbuild.socket running?)");
}

// The caller's fd for sending: sdbus-c++ would dup() it without O_CLOEXEC.
sdbus::UnixFd send_fd(int fd) {
  return sdbus::UnixFd(check(::fcntl(fd, F_DUPFD_CLOEXEC, 3), "fcntl F_DUPFD_CLOEXEC"), sdbus::adopt_fd);
}

Value to_value(const std::string& key, const sdbus::Variant& variant) {
  std::string type = variant.peekValueType();
  if (type == "s") return variant.get<std::string>();
  if (type == "b") return variant.get<bool>();
  if (type == "x") return variant.get<std::int64_t>();
  if (type == "t") return variant.get<std::uint64_t>();
  if (type == "as") return variant.get<std::vector<std::string>>();
  if (type == "a{ss}") return variant.get<StringMap>();
  if (type == "aa{ss}") return variant.get<std::vector<StringMap>>();
  if (type == "ay") return variant.get<Bytes>();
  if (type == "h") {
    sdbus::UnixFd fd = variant.get<sdbus::UnixFd>();
    return Fd(UniqueFd(check(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3), "fcntl F_DUPFD_CLOEXEC")));
  }
  throw Error(ErrorKind::internal, "kbuildd sent " + key + " of the unexpected type " + type);
}

Options to_options(const VariantMap& map) {
  Options options;
  for (const auto& [key, variant] : map) {
    // Newer daemons may send keys of types this client does not know: skip them.
    try {
      options.emplace(key, to_value(key, variant));
    } catch (const Error&) {
    }
  }
  return options;
}

VariantMap to_variants(const Options& options) {
  VariantMap map;
  for (const auto& [key, value] : options)
    std::visit(
        [&map, &key](const auto& v) {
          if constexpr (std::is_same_v<std::decay_t<decltype(v)>, Fd>) {
            map.emplace(key, sdbus::Variant(send_fd(v.get())));
          } else {
            map.emplace(key, sdbus::Variant(v));
          }
        },
        value.variant());
  return map;
}

}  // namespace

// Holds the connection, so that it is made before the proxy that uses it and outlives it.
class ConnectionHolder {
 protected:
  explicit ConnectionHolder(std::unique_ptr<sdbus::IConnection> connection) : connection_(std::move(connection)) {}
  std::unique_ptr<sdbus::IConnection> connection_;
};

class BuilderClient::Proxy : private ConnectionHolder,
                             public sdbus::ProxyInterfaces<org::kbuild::Builder1_proxy, sdbus::Introspectable_proxy> {
 public:
  explicit Proxy(std::unique_ptr<sdbus::IConnection> connection)
      : ConnectionHolder(std::move(connection)),
        ProxyInterfaces(*connection_, kBuilderInterface, kBuilderObjectPath) {
    registerProxy();
  }
  ~Proxy() { unregisterProxy(); }
};

namespace {

// Runs one call, turning sdbus-c++'s errors into kbuild::Error.
template <typename Call>
auto call_daemon(const char* method, Call call) -> decltype(call()) {
  try {
    return call();
  } catch (const sdbus::Error& e) {
    if (std::optional<ErrorKind> kind = error_kind_for_dbus_name(e.getName())) throw error_from_dbus(*kind, e.getMessage());
    int error = errno_of(e);
    if (error == ECONNRESET || error == ENOTCONN || error == EPIPE)
      throw Error(ErrorKind::internal, std::string("kbuildd closed the connection during ") + method);
    throw Error(ErrorKind::internal, std::string("calling kbuildd's ") + method + ": " + e.getName() + ": " + e.getMessage());
  }
}

}  // namespace

BuilderClient::BuilderClient(const std::string& socket_path) : socket_path_(socket_path) {
  // Connecting needs write permission on the socket. Checked first for the common failures
  // because sdbus-c++ 1.2 leaks its sd_bus when it cannot connect.
  if (::access(socket_path.c_str(), W_OK) != 0) throw_connect_error(socket_path, errno, "");
  std::unique_ptr<sdbus::IConnection> connection;
  try {
    connection = sdbus::createSessionBusConnectionWithAddress(unix_address(socket_path));
  } catch (const sdbus::Error& e) {
    throw_connect_error(socket_path, errno_of(e), e.getMessage());
  }
  // A build takes as long as it takes; the daemon answers or the connection breaks.
  connection->setMethodCallTimeout(UINT64_MAX);
  proxy_ = std::make_unique<Proxy>(std::move(connection));
}

BuilderClient::~BuilderClient() = default;

Options BuilderClient::build(const Options& options, int context_fd, int progress_fd, int output_fd) {
  VariantMap arguments = to_variants(options);
  sdbus::UnixFd context = send_fd(context_fd), progress = send_fd(progress_fd), output = send_fd(output_fd);
  return call_daemon("Build", [&] { return to_options(proxy_->Build(arguments, context, progress, output)); });
}

std::vector<Options> BuilderClient::list_images() {
  return call_daemon("ListImages", [&] {
    std::vector<Options> images;
    for (const VariantMap& image : proxy_->ListImages()) images.push_back(to_options(image));
    return images;
  });
}

std::vector<std::string> BuilderClient::remove_image(const std::string& reference, bool force) {
  return call_daemon("RemoveImage", [&] { return proxy_->RemoveImage(reference, force); });
}

void BuilderClient::tag_image(const std::string& source, const std::string& target) {
  call_daemon("TagImage", [&] { proxy_->TagImage(source, target); });
}

void BuilderClient::save_images(const std::vector<std::string>& references, int output_fd) {
  sdbus::UnixFd output = send_fd(output_fd);
  call_daemon("SaveImages", [&] { proxy_->SaveImages(references, output); });
}

std::vector<std::string> BuilderClient::load_images(int input_fd) {
  sdbus::UnixFd input = send_fd(input_fd);
  return call_daemon("LoadImages", [&] { return proxy_->LoadImages(input); });
}

std::vector<std::string> BuilderClient::pull_image(const std::string& reference, const Options& options) {
  VariantMap arguments = to_variants(options);
  return call_daemon("PullImage", [&] { return proxy_->PullImage(reference, arguments); });
}

std::vector<std::string> BuilderClient::push_image(const std::string& reference, const Options& options) {
  VariantMap arguments = to_variants(options);
  return call_daemon("PushImage", [&] { return proxy_->PushImage(reference, arguments); });
}

Options BuilderClient::check_login(const std::string& server, const Options& options) {
  VariantMap arguments = to_variants(options);
  return call_daemon("CheckLogin", [&] { return to_options(proxy_->CheckLogin(server, arguments)); });
}

Options BuilderClient::disk_usage(const Options& options) {
  VariantMap arguments = to_variants(options);
  return call_daemon("DiskUsage", [&] { return to_options(proxy_->DiskUsage(arguments)); });
}

Options BuilderClient::prune(const Options& options) {
  VariantMap arguments = to_variants(options);
  return call_daemon("Prune", [&] { return to_options(proxy_->Prune(arguments)); });
}

Options BuilderClient::prune_images(const Options& options) {
  VariantMap arguments = to_variants(options);
  return call_daemon("PruneImages", [&] { return to_options(proxy_->PruneImages(arguments)); });
}

Options BuilderClient::info() {
  return call_daemon("Info", [&] { return to_options(proxy_->Info()); });
}

Options BuilderClient::reload() {
  return call_daemon("Reload", [&] { return to_options(proxy_->Reload()); });
}

std::string BuilderClient::introspect() {
  return call_daemon("Introspect", [&] { return proxy_->Introspect(); });
}

}  // namespace kbuild::dbus
