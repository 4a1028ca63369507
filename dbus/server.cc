#include "dbus/server.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-id128.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/syscall.h"
#include "dbus/authorization.h"
#include "dbus/errors.h"
#include "dbus/message_codec.h"

namespace kbuild::dbus {
namespace {

constexpr const char* kBusPath = "/org/freedesktop/DBus";
constexpr const char* kBusInterface = "org.freedesktop.DBus";
constexpr int kExitStopped = 0;
constexpr int kExitIdle = 1;
// How long accepting pauses after accept4() failed for lack of fds or memory.
constexpr uint64_t kAcceptPauseUsec = 100'000;

struct BusUnref {
  void operator()(sd_bus* bus) const { sd_bus_close_unref(bus); }
};
struct MessageUnref {
  void operator()(sd_bus_message* message) const { sd_bus_message_unref(message); }
};
struct SourceUnref {
  void operator()(sd_event_source* source) const { sd_event_source_disable_unref(source); }
};
struct EventUnref {
  void operator()(sd_event* event) const { sd_event_unref(event); }
};
using BusPtr = std::unique_ptr<sd_bus, BusUnref>;
using MessagePtr = std::unique_ptr<sd_bus_message, MessageUnref>;
using SourcePtr = std::unique_ptr<sd_event_source, SourceUnref>;
using EventPtr = std::unique_ptr<sd_event, EventUnref>;

int check_bus(int r, const char* what) {
  if (r < 0) throw Error(ErrorKind::internal, std::string(what) + ": " + std::strerror(-r));
  return r;
}

// Appends a method's out arguments to its reply; runs on the loop thread.
using ReplyWriter = std::function<void(sd_bus_message*)>;
// A decoded method call: runs the handler on a worker thread, returns how to write the reply.
using Job = std::function<ReplyWriter(const CallContext&)>;

// How a call ended: a reply to write, or an error.
struct Outcome {
  ReplyWriter write;
  std::string error_name;
  std::string error_message;
};

Outcome run_job(const Job& job, const CallContext& context) noexcept {
  try {
    return Outcome{job(context), {}, {}};
  } catch (const Error& e) {
    return Outcome{nullptr, dbus_error_name(e.kind()), dbus_error_message(e)};
  } catch (const std::exception& e) {
    return Outcome{nullptr, dbus_error_name(ErrorKind::internal), e.what()};
  } catch (...) {
    return Outcome{nullptr, dbus_error_name(ErrorKind::internal), "unknown exception"};
  }
}

int reply_error(sd_bus_message* call, const std::string& name, const std::string& message) {
  return sd_bus_reply_method_errorf(call, name.c_str(), "%s", valid_utf8(message).c_str());
}

// Sends the method return `write` fills in, or an Internal error when that fails: the caller
// waits without a timeout, so it must hear something.
int send_reply(sd_bus_message* call, const ReplyWriter& write) {
  std::string failure;
  try {
    sd_bus_message* reply = nullptr;
    check_bus(sd_bus_message_new_method_return(call, &reply), "sd_bus_message_new_method_return");
    MessagePtr owner(reply);
    write(reply);
    int r = sd_bus_send(nullptr, reply, nullptr);
    if (r >= 0 || r == -ENOTCONN || r == -ECONNRESET) return r;
    failure = std::string("sd_bus_send: ") + std::strerror(-r);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  return reply_error(call, dbus_error_name(ErrorKind::internal), "writing the reply: " + failure);
}

}  // namespace

class Connection;

class Server::Impl {
 public:
  Impl(Listener listener, BuilderApi& api, ServerOptions options);
  ~Impl();

  Exit run();
  void stop() noexcept;
  sd_event* event() const { return event_.get(); }
  BuilderApi& api() const { return api_; }
  sd_id128_t id() const { return id_; }
  void log(const std::string& message) const;

  // Runs `task` on the loop thread soon. Callable from any thread.
  void post(std::function<void()> task);
  // Why a call of `uid` may not start now (too many in flight), or empty.
  std::string admission_refusal(uid_t uid) const;
  // Runs `job` on a thread of its own and hands its outcome to the connection's call `call_id`.
  void start_worker(std::weak_ptr<Connection> connection, uint64_t call_id, Job job, CallContext context);
  void remove_connection(uint64_t id);

 private:
  static int on_accept(sd_event_source* source, int fd, uint32_t events, void* userdata) noexcept;
  static int on_accept_resume(sd_event_source* source, uint64_t usec, void* userdata) noexcept;
  static int on_wakeup(sd_event_source* source, int fd, uint32_t events, void* userdata) noexcept;
  static int on_idle(sd_event_source* source, uint64_t usec, void* userdata) noexcept;
  void accept_connections();
  void add_connection(UniqueFd fd);
  void run_posted();
  void join_worker(uint64_t id);
  void update_idle_timer();

  Listener listener_;
  BuilderApi& api_;
  ServerOptions options_;
  sd_id128_t id_{};
  EventPtr event_;
  UniqueFd wakeup_fd_;
  SourcePtr accept_source_;
  SourcePtr accept_resume_source_;
  SourcePtr wakeup_source_;
  SourcePtr idle_source_;
  std::atomic<bool> stop_requested_{false};

  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;  // guarded by posted_mutex_

  // The rest belongs to the loop thread.
  std::map<uint64_t, std::shared_ptr<Connection>> connections_;
  struct Worker {
    std::thread thread;
    uid_t uid;
  };
  std::map<uint64_t, Worker> workers_;
  std::map<uid_t, std::size_t> workers_per_uid_;
  uint64_t next_connection_id_ = 1;
  uint64_t next_worker_id_ = 1;
};

// One accepted peer: its sd-bus server connection and the calls it has in flight.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server::Impl& server, uint64_t id, Caller caller, std::string refusal)
      : server_(server), id_(id), caller_(std::move(caller)), refusal_(std::move(refusal)) {}
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Speaks D-Bus on `fd`, as the server end, from the server's loop.
  void start(UniqueFd fd);
  // Keeps `call` to reply to it later and runs `job` on a worker thread.
  void start_call(sd_bus_message* call, Job job);
  // Replies to call `call_id`, unless the caller has gone.
  void finish_call(uint64_t call_id, const Outcome& outcome);
  // Stops the stop tokens of every call in flight.
  void cancel_calls();

  Server::Impl& server() const { return server_; }
  const Caller& caller() const { return caller_; }

 private:
  struct PendingCall {
    MessagePtr message;
    std::stop_source stop;
  };

  static int on_message(sd_bus_message* message, void* userdata, sd_bus_error* error) noexcept;
  static int on_hello(sd_bus_message* message, void* userdata, sd_bus_error* error) noexcept;
  static int on_match(sd_bus_message* message, void* userdata, sd_bus_error* error) noexcept;
  static int on_get_id(sd_bus_message* message, void* userdata, sd_bus_error* error) noexcept;
  static const sd_bus_vtable kBusVtable[];
  static const sd_bus_vtable kBuilderVtable[];
  void on_disconnected();
  // Whether an unauthorized caller may still send `message`: only the bus handshake.
  static bool is_bus_handshake(sd_bus_message* message);

  Server::Impl& server_;
  uint64_t id_;
  Caller caller_;
  std::string refusal_;  // why this caller may not call, or empty
  BusPtr bus_;
  std::map<uint64_t, PendingCall> calls_;
  uint64_t next_call_id_ = 1;
  bool disconnected_ = false;
};

namespace {

// The vtable handlers of org.kbuild.Builder1: each decodes its arguments on the loop thread
// (failing with InvalidArgs when it cannot) and returns the Job that calls the API.
template <typename Decode>
int dispatch(sd_bus_message* call, void* userdata, sd_bus_error* error, Decode decode) noexcept {
  auto* connection = static_cast<Connection*>(userdata);
  try {
    std::string refusal = connection->server().admission_refusal(connection->caller().uid);
    if (!refusal.empty()) return sd_bus_error_setf(error, kTooManyRequestsError, "%s", refusal.c_str());
    connection->start_call(call, decode(call, connection->server().api()));
  } catch (const Error& e) {
    // sd-bus checked the signature already; a message still unreadable is malformed.
    const char* name = e.kind() == ErrorKind::user ? SD_BUS_ERROR_INVALID_ARGS : dbus_error_name(e.kind());
    return sd_bus_error_setf(error, name, "%s", valid_utf8(e.what()).c_str());
  } catch (const std::exception& e) {
    return sd_bus_error_setf(error, dbus_error_name(ErrorKind::internal), "%s", valid_utf8(e.what()).c_str());
  }
  return 1;
}

ReplyWriter no_reply_arguments() {
  return [](sd_bus_message*) {};
}

int on_build(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    struct Arguments {
      Options options;
      UniqueFd context, progress, output;
    };
    auto args = std::make_shared<Arguments>();
    args->options = read_options(m);
    args->context = read_fd(m);
    args->progress = read_fd(m);
    args->output = read_fd(m);
    return [&api, args](const CallContext& context) -> ReplyWriter {
      Options result = api.build(context, args->options, std::move(args->context), std::move(args->progress),
                                 std::move(args->output));
      return [result = std::move(result)](sd_bus_message* reply) { append_options(reply, result); };
    };
  });
}

int on_list_images(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message*, BuilderApi& api) -> Job {
    return [&api](const CallContext& context) -> ReplyWriter {
      std::vector<Options> images = api.list_images(context);
      return [images = std::move(images)](sd_bus_message* reply) { append_options_list(reply, images); };
    };
  });
}

int on_remove_image(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    std::string reference = read_string(m);
    bool force = read_bool(m);
    return [&api, reference, force](const CallContext& context) -> ReplyWriter {
      std::vector<std::string> removed = api.remove_image(context, reference, force);
      return [removed = std::move(removed)](sd_bus_message* reply) { append_strings(reply, removed); };
    };
  });
}

int on_tag_image(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    std::string source = read_string(m);
    std::string target = read_string(m);
    return [&api, source, target](const CallContext& context) -> ReplyWriter {
      api.tag_image(context, source, target);
      return no_reply_arguments();
    };
  });
}

int on_save_images(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    struct Arguments {
      std::vector<std::string> references;
      UniqueFd output;
    };
    auto args = std::make_shared<Arguments>();
    args->references = read_strings(m);
    args->output = read_fd(m);
    return [&api, args](const CallContext& context) -> ReplyWriter {
      api.save_images(context, args->references, std::move(args->output));
      return no_reply_arguments();
    };
  });
}

int on_load_images(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    auto input = std::make_shared<UniqueFd>(read_fd(m));
    return [&api, input](const CallContext& context) -> ReplyWriter {
      std::vector<std::string> loaded = api.load_images(context, std::move(*input));
      return [loaded = std::move(loaded)](sd_bus_message* reply) { append_strings(reply, loaded); };
    };
  });
}

// PullImage and PushImage: (s reference, a{sv} options) -> as lines.
template <auto Method>
int on_image_transfer(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    struct Arguments {
      std::string reference;
      Options options;
    };
    auto args = std::make_shared<Arguments>();
    args->reference = read_string(m);
    args->options = read_options(m);
    return [&api, args](const CallContext& context) -> ReplyWriter {
      std::vector<std::string> lines = (api.*Method)(context, args->reference, args->options);
      return [lines = std::move(lines)](sd_bus_message* reply) { append_strings(reply, lines); };
    };
  });
}

int on_check_login(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    struct Arguments {
      std::string server;
      Options options;
    };
    auto args = std::make_shared<Arguments>();
    args->server = read_string(m);
    args->options = read_options(m);
    return [&api, args](const CallContext& context) -> ReplyWriter {
      Options result = api.check_login(context, args->server, args->options);
      return [result = std::move(result)](sd_bus_message* reply) { append_options(reply, result); };
    };
  });
}

// DiskUsage, Prune and PruneImages: (a{sv} options) -> a{sv} result.
template <auto Method>
int on_options_call(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message* m, BuilderApi& api) -> Job {
    auto options = std::make_shared<Options>(read_options(m));
    return [&api, options](const CallContext& context) -> ReplyWriter {
      Options result = (api.*Method)(context, *options);
      return [result = std::move(result)](sd_bus_message* reply) { append_options(reply, result); };
    };
  });
}

int on_info(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message*, BuilderApi& api) -> Job {
    return [&api](const CallContext& context) -> ReplyWriter {
      Options info = api.info(context);
      return [info = std::move(info)](sd_bus_message* reply) { append_options(reply, info); };
    };
  });
}

int on_reload(sd_bus_message* call, void* userdata, sd_bus_error* error) noexcept {
  return dispatch(call, userdata, error, [](sd_bus_message*, BuilderApi& api) -> Job {
    return [&api](const CallContext& context) -> ReplyWriter {
      Options result = api.reload(context);
      return [result = std::move(result)](sd_bus_message* reply) { append_options(reply, result); };
    };
  });
}

}  // namespace

// Must match dbus/org.kbuild.Builder1.xml; dbus_server_test holds the served introspection
// equal to it. Authorization is ours (see on_message), hence UNPRIVILEGED and a trusted bus.
const sd_bus_vtable Connection::kBuilderVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("Build", "a{sv}hhh",
                             SD_BUS_PARAM(options) SD_BUS_PARAM(context) SD_BUS_PARAM(progress)
                                 SD_BUS_PARAM(output),
                             "a{sv}", SD_BUS_PARAM(result), on_build, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("ListImages", "", , "aa{sv}", SD_BUS_PARAM(images), on_list_images,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("RemoveImage", "sb", SD_BUS_PARAM(reference) SD_BUS_PARAM(force), "as",
                             SD_BUS_PARAM(removed), on_remove_image, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("TagImage", "ss", SD_BUS_PARAM(source) SD_BUS_PARAM(target), "", ,
                             on_tag_image, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("SaveImages", "ash", SD_BUS_PARAM(references) SD_BUS_PARAM(output), "", ,
                             on_save_images, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("LoadImages", "h", SD_BUS_PARAM(input), "as", SD_BUS_PARAM(loaded),
                             on_load_images, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("PullImage", "sa{sv}", SD_BUS_PARAM(reference) SD_BUS_PARAM(options), "as",
                             SD_BUS_PARAM(lines), on_image_transfer<&BuilderApi::pull_image>,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("PushImage", "sa{sv}", SD_BUS_PARAM(reference) SD_BUS_PARAM(options), "as",
                             SD_BUS_PARAM(lines), on_image_transfer<&BuilderApi::push_image>,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("CheckLogin", "sa{sv}", SD_BUS_PARAM(server) SD_BUS_PARAM(options), "a{sv}",
                             SD_BUS_PARAM(result), on_check_login, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("DiskUsage", "a{sv}", SD_BUS_PARAM(options), "a{sv}", SD_BUS_PARAM(usage),
                             on_options_call<&BuilderApi::disk_usage>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Prune", "a{sv}", SD_BUS_PARAM(options), "a{sv}", SD_BUS_PARAM(result),
                             on_options_call<&BuilderApi::prune>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("PruneImages", "a{sv}", SD_BUS_PARAM(options), "a{sv}", SD_BUS_PARAM(result),
                             on_options_call<&BuilderApi::prune_images>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Info", "", , "a{sv}", SD_BUS_PARAM(info), on_info, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Reload", "", , "a{sv}", SD_BUS_PARAM(result), on_reload, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

// What a dbus-daemon would answer: bus clients say Hello and add matches before anything else.
const sd_bus_vtable Connection::kBusVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("Hello", "", "s", Connection::on_hello, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("AddMatch", "s", "", Connection::on_match, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("RemoveMatch", "s", "", Connection::on_match, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("GetId", "", "s", Connection::on_get_id, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

Connection::~Connection() {
  cancel_calls();
  calls_.clear();  // the messages hold references to the bus
  if (bus_) sd_bus_detach_event(bus_.get());
}

void Connection::start(UniqueFd fd) {
  sd_bus* bus = nullptr;
  check_bus(sd_bus_new(&bus), "sd_bus_new");
  bus_.reset(bus);
  check_bus(sd_bus_set_fd(bus, fd.get(), fd.get()), "sd_bus_set_fd");
  fd.release();  // the bus closes it now
  check_bus(sd_bus_set_server(bus, 1, server_.id()), "sd_bus_set_server");
  check_bus(sd_bus_negotiate_fds(bus, 1), "sd_bus_negotiate_fds");
  check_bus(sd_bus_set_trusted(bus, 1), "sd_bus_set_trusted");
  std::string description = "kbuild-peer-" + std::to_string(id_);
  check_bus(sd_bus_set_description(bus, description.c_str()), "sd_bus_set_description");
  check_bus(sd_bus_add_filter(bus, nullptr, on_message, this), "sd_bus_add_filter");
  check_bus(sd_bus_add_object_vtable(bus, nullptr, kBuilderObjectPath, kBuilderInterface, kBuilderVtable, this),
            "sd_bus_add_object_vtable");
  check_bus(sd_bus_add_object_vtable(bus, nullptr, kBusPath, kBusInterface, kBusVtable, this),
            "sd_bus_add_object_vtable");
  check_bus(sd_bus_start(bus), "sd_bus_start");
  check_bus(sd_bus_attach_event(bus, server_.event(), SD_EVENT_PRIORITY_NORMAL), "sd_bus_attach_event");
}

void Connection::start_call(sd_bus_message* call, Job job) {
  uint64_t call_id = next_call_id_++;
  PendingCall& pending = calls_[call_id];
  pending.message.reset(sd_bus_message_ref(call));
  CallContext context{caller_, pending.stop.get_token()};
  try {
    server_.start_worker(weak_from_this(), call_id, std::move(job), std::move(context));
  } catch (...) {
    calls_.erase(call_id);
    throw;
  }
}

void Connection::finish_call(uint64_t call_id, const Outcome& outcome) {
  auto it = calls_.find(call_id);
  if (it == calls_.end()) return;
  MessagePtr call = std::move(it->second.message);
  calls_.erase(it);
  if (disconnected_) return;

  int r = outcome.write ? send_reply(call.get(), outcome.write)
                        : reply_error(call.get(), outcome.error_name, outcome.error_message);
  if (r < 0 && r != -ENOTCONN && r != -ECONNRESET)
    server_.log("replying to " + std::string(sd_bus_message_get_member(call.get())) + " of connection " +
                std::to_string(id_) + ": " + std::strerror(-r));
}

void Connection::cancel_calls() {
  for (auto& [id, call] : calls_) call.stop.request_stop();
}

bool Connection::is_bus_handshake(sd_bus_message* message) {
  const char* path = sd_bus_message_get_path(message);
  const char* interface = sd_bus_message_get_interface(message);
  return path && std::strcmp(path, kBusPath) == 0 && (!interface || std::strcmp(interface, kBusInterface) == 0);
}

// Sees every message first: notices the peer going away, and refuses callers who may not call.
int Connection::on_message(sd_bus_message* message, void* userdata, sd_bus_error*) noexcept {
  auto* self = static_cast<Connection*>(userdata);
  if (sd_bus_message_is_signal(message, "org.freedesktop.DBus.Local", "Disconnected") > 0) {
    self->on_disconnected();
    return 0;
  }
  uint8_t type = 0;
  if (!self->refusal_.empty() && sd_bus_message_get_type(message, &type) >= 0 &&
      type == SD_BUS_MESSAGE_METHOD_CALL && !is_bus_handshake(message)) {
    int r = sd_bus_reply_method_errorf(message, SD_BUS_ERROR_ACCESS_DENIED, "%s", self->refusal_.c_str());
    return r < 0 ? r : 1;
  }
  return 0;
}

int Connection::on_hello(sd_bus_message* message, void* userdata, sd_bus_error*) noexcept {
  auto* self = static_cast<Connection*>(userdata);
  std::string name = ":1." + std::to_string(self->id_);
  return sd_bus_reply_method_return(message, "s", name.c_str());
}

// kbuildd sends no signals, so there is nothing to match: accept and forget.
int Connection::on_match(sd_bus_message* message, void*, sd_bus_error*) noexcept {
  return sd_bus_reply_method_return(message, "");
}

int Connection::on_get_id(sd_bus_message* message, void* userdata, sd_bus_error*) noexcept {
  auto* self = static_cast<Connection*>(userdata);
  char id[SD_ID128_STRING_MAX];
  return sd_bus_reply_method_return(message, "s", sd_id128_to_string(self->server_.id(), id));
}

void Connection::on_disconnected() {
  if (disconnected_) return;
  disconnected_ = true;
  cancel_calls();
  // Not from inside the bus's own callback: the bus goes away with the connection.
  server_.post([&server = server_, id = id_] { server.remove_connection(id); });
}

Server::Impl::Impl(Listener listener, BuilderApi& api, ServerOptions options)
    : listener_(std::move(listener)), api_(api), options_(std::move(options)) {
  check_bus(sd_id128_randomize(&id_), "sd_id128_randomize");
  sd_event* event = nullptr;
  check_bus(sd_event_new(&event), "sd_event_new");
  event_.reset(event);
  wakeup_fd_.reset(check(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd"));

  sd_event_source* source = nullptr;
  check_bus(sd_event_add_io(event, &source, listener_.fd(), EPOLLIN, on_accept, this), "sd_event_add_io");
  accept_source_.reset(source);
  check_bus(sd_event_add_io(event, &source, wakeup_fd_.get(), EPOLLIN, on_wakeup, this), "sd_event_add_io");
  wakeup_source_.reset(source);
  // Replies and removals first, so that a busy listener cannot starve them.
  check_bus(sd_event_source_set_priority(source, SD_EVENT_PRIORITY_IMPORTANT), "sd_event_source_set_priority");
  check_bus(sd_event_add_time_relative(event, &source, CLOCK_MONOTONIC, 0, 0, on_accept_resume, this),
            "sd_event_add_time_relative");
  accept_resume_source_.reset(source);
  check_bus(sd_event_source_set_enabled(source, SD_EVENT_OFF), "sd_event_source_set_enabled");
  check_bus(sd_event_add_time_relative(event, &source, CLOCK_MONOTONIC, 0, 0, on_idle, this),
            "sd_event_add_time_relative");
  idle_source_.reset(source);
  check_bus(sd_event_source_set_enabled(source, SD_EVENT_OFF), "sd_event_source_set_enabled");
}

Server::Impl::~Impl() {
  // The loop has stopped: no reply can go out any more, so cancel what runs and wait for it.
  for (auto& [id, connection] : connections_) connection->cancel_calls();
  for (auto& [id, worker] : workers_) worker.thread.join();
  workers_.clear();
  {
    std::lock_guard lock(posted_mutex_);
    posted_.clear();
  }
  connections_.clear();
  idle_source_.reset();
  accept_resume_source_.reset();
  accept_source_.reset();
  wakeup_source_.reset();
}

Server::Exit Server::Impl::run() {
  update_idle_timer();
  int r = sd_event_loop(event_.get());
  check_bus(r, "sd_event_loop");
  return r == kExitIdle ? Exit::idle : Exit::stopped;
}

void Server::Impl::stop() noexcept {
  stop_requested_.store(true);
  uint64_t one = 1;
  // Only async-signal-safe calls here; a full eventfd counter is as good as a wakeup.
  [[maybe_unused]] ssize_t written = ::write(wakeup_fd_.get(), &one, sizeof one);
}

void Server::Impl::log(const std::string& message) const {
  if (options_.log) {
    options_.log(message);
  } else {
    std::fprintf(stderr, "kbuildd: %s\n", message.c_str());
  }
}

void Server::Impl::post(std::function<void()> task) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(task));
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t written = ::write(wakeup_fd_.get(), &one, sizeof one);
}

void Server::Impl::run_posted() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(posted_mutex_);
    tasks.swap(posted_);
  }
  for (auto& task : tasks) {
    try {
      task();
    } catch (const std::exception& e) {
      log(e.what());
    }
  }
}

std::string Server::Impl::admission_refusal(uid_t uid) const {
  if (workers_.size() >= options_.max_calls) {
    return "too many calls in flight: kbuildd runs " + std::to_string(workers_.size()) + ", its limit is " +
           std::to_string(options_.max_calls) + "; try again when one ends";
  }
  auto it = workers_per_uid_.find(uid);
  if (it != workers_per_uid_.end() && it->second >= options_.max_calls_per_uid) {
    return "too many calls in flight: uid " + std::to_string(uid) + " has " + std::to_string(it->second) +
           " running, the limit per caller is " + std::to_string(options_.max_calls_per_uid) +
           "; try again when one ends";
  }
  return {};
}

void Server::Impl::start_worker(std::weak_ptr<Connection> connection, uint64_t call_id, Job job,
                                CallContext context) {
  uint64_t worker_id = next_worker_id_++;
  const uid_t uid = context.caller.uid;
  std::thread thread([this, connection = std::move(connection), call_id, worker_id, job = std::move(job),
                      context = std::move(context)]() mutable {
    Outcome outcome = run_job(job, context);
    job = nullptr;  // the handler's fds close before the reply goes out
    post([this, connection, call_id, worker_id, outcome = std::move(outcome)] {
      join_worker(worker_id);
      if (auto alive = connection.lock()) alive->finish_call(call_id, outcome);
    });
  });
  workers_.emplace(worker_id, Worker{std::move(thread), uid});
  ++workers_per_uid_[uid];
  update_idle_timer();
}

// The worker posted its outcome as the last thing it does, so this join is short.
void Server::Impl::join_worker(uint64_t id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  it->second.thread.join();
  auto count = workers_per_uid_.find(it->second.uid);
  if (count != workers_per_uid_.end() && --count->second == 0) workers_per_uid_.erase(count);
  workers_.erase(it);
  update_idle_timer();
}

void Server::Impl::remove_connection(uint64_t id) {
  connections_.erase(id);
  update_idle_timer();
}

void Server::Impl::update_idle_timer() {
  if (options_.idle_timeout.count() <= 0) return;
  bool idle = connections_.empty() && workers_.empty();
  if (idle) {
    auto usec = std::chrono::duration_cast<std::chrono::microseconds>(options_.idle_timeout).count();
    sd_event_source_set_time_relative(idle_source_.get(), static_cast<uint64_t>(usec));
    sd_event_source_set_enabled(idle_source_.get(), SD_EVENT_ONESHOT);
  } else {
    sd_event_source_set_enabled(idle_source_.get(), SD_EVENT_OFF);
  }
}

void Server::Impl::accept_connections() {
  for (;;) {
    int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK) return;
      if (error == EINTR || error == ECONNABORTED) continue;
      // Out of fds or memory: the socket stays readable, so pause instead of spinning.
      log(std::string("accept: ") + std::strerror(error));
      sd_event_source_set_enabled(accept_source_.get(), SD_EVENT_OFF);
      sd_event_source_set_time_relative(accept_resume_source_.get(), kAcceptPauseUsec);
      sd_event_source_set_enabled(accept_resume_source_.get(), SD_EVENT_ONESHOT);
      return;
    }
    try {
      add_connection(UniqueFd(fd));
    } catch (const std::exception& e) {
      log(std::string("setting up a connection: ") + e.what());
    }
  }
}

void Server::Impl::add_connection(UniqueFd fd) {
  Caller caller = peer_caller(fd.get());
  std::string refusal = access_refusal(caller, options_.group);
  uint64_t id = next_connection_id_++;
  auto connection = std::make_shared<Connection>(*this, id, std::move(caller), std::move(refusal));
  connection->start(std::move(fd));
  connections_.emplace(id, std::move(connection));
  update_idle_timer();
}

int Server::Impl::on_accept(sd_event_source*, int, uint32_t, void* userdata) noexcept {
  static_cast<Impl*>(userdata)->accept_connections();
  return 0;
}

int Server::Impl::on_accept_resume(sd_event_source*, uint64_t, void* userdata) noexcept {
  auto* self = static_cast<Impl*>(userdata);
  sd_event_source_set_enabled(self->accept_source_.get(), SD_EVENT_ON);
  return 0;
}

int Server::Impl::on_wakeup(sd_event_source*, int fd, uint32_t, void* userdata) noexcept {
  auto* self = static_cast<Impl*>(userdata);
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = ::read(fd, &count, sizeof count);
  self->run_posted();
  if (self->stop_requested_.load()) sd_event_exit(self->event_.get(), kExitStopped);
  return 0;
}

int Server::Impl::on_idle(sd_event_source*, uint64_t, void* userdata) noexcept {
  auto* self = static_cast<Impl*>(userdata);
  if (self->connections_.empty() && self->workers_.empty()) sd_event_exit(self->event_.get(), kExitIdle);
  return 0;
}

Server::Server(Listener listener, BuilderApi& api, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(listener), api, std::move(options))) {}

Server::~Server() = default;

Server::Exit Server::run() { return impl_->run(); }

void Server::stop() noexcept { impl_->stop(); }

sd_event* Server::event() const { return impl_->event(); }

}  // namespace kbuild::dbus
