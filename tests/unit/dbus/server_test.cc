#include "dbus/server.h"

#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-bus.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <set>
#include <thread>
#include <sstream>

#include "dbus/authorization.h"
#include "dbus/builder_client.h"
#include "tests/unit/dbus/dbus_test_support.h"

extern char** environ;

namespace kbuild::dbus {
namespace {

using testing::FakeBuilder;
using testing::Pipe;
using testing::read_all;
using testing::run_as;
using testing::TestServer;
using testing::write_all;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// --- Introspection XML, reduced to what the API is: members and their arguments. ---

struct Arg {
  std::string name, type, direction;
  bool operator==(const Arg&) const = default;
};
std::ostream& operator<<(std::ostream& out, const Arg& arg) {
  return out << arg.direction << " " << arg.type << " " << arg.name;
}

// "method Build" -> its args, "signal X" -> ..., "property Y" -> {type, access} of interface `name`.
using Members = std::map<std::string, std::vector<Arg>>;

// name="value" pairs of a tag; introspection XML quotes with double quotes.
std::map<std::string, std::string> attributes(std::string_view text) {
  std::map<std::string, std::string> result;
  for (;;) {
    size_t equals = text.find('=');
    if (equals == std::string_view::npos) break;
    size_t open = text.find('"', equals);
    size_t close = open == std::string_view::npos ? open : text.find('"', open + 1);
    if (close == std::string_view::npos) break;
    std::string_view name = text.substr(0, equals);
    size_t first = name.find_first_not_of(" \t\r\n");
    size_t last = name.find_last_not_of(" \t\r\n");
    if (first != std::string_view::npos)
      result[std::string(name.substr(first, last - first + 1))] = std::string(text.substr(open + 1, close - open - 1));
    text.remove_prefix(close + 1);
  }
  return result;
}

// The members of interface `name` in an introspection document; enough XML for the
// introspection DTD, which has no text content, CDATA or entities that matter here.
Members interface_members(std::string xml, const std::string& name) {
  for (size_t start; (start = xml.find("<!--")) != std::string::npos;) {
    size_t end = xml.find("-->", start);
    xml.erase(start, end == std::string::npos ? std::string::npos : end + 3 - start);
  }
  Members members;
  bool inside = false;
  std::string member;
  for (size_t open = xml.find('<'); open != std::string::npos; open = xml.find('<', open + 1)) {
    size_t close = xml.find('>', open);
    if (close == std::string::npos) break;
    std::string_view body(xml.data() + open + 1, close - open - 1);
    bool closing = body.starts_with('/');
    if (closing) body.remove_prefix(1);
    bool self_closing = body.ends_with('/');
    if (self_closing) body.remove_suffix(1);
    size_t name_end = body.find_first_of(" \t\r\n");
    std::string tag(body.substr(0, name_end));
    auto attrs = attributes(name_end == std::string_view::npos ? std::string_view() : body.substr(name_end));
    if (tag == "interface") {
      inside = !closing && !self_closing && attrs["name"] == name;
    } else if (!inside) {
      continue;
    } else if ((tag == "method" || tag == "signal" || tag == "property") && !closing) {
      member = tag + " " + attrs["name"];
      members[member];
      if (tag == "property") members[member].push_back({"", attrs["type"], attrs["access"]});
      if (self_closing) member.clear();
    } else if (tag == "method" || tag == "signal" || tag == "property") {
      member.clear();
    } else if (tag == "arg" && !member.empty()) {
      std::string direction = attrs.count("direction") ? attrs["direction"] : member.starts_with("signal") ? "out" : "in";
      members[member].push_back({attrs["name"], attrs["type"], direction});
    }
  }
  return members;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// --- Running busctl. ---

struct CommandResult {
  int status = -1;
  std::string output;  // stdout and stderr
};

CommandResult run_command(const std::vector<std::string>& argv) {
  Pipe out;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), 2);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int r = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  CommandResult result;
  if (r != 0) {
    result.output = "cannot run " + argv[0];
    return result;
  }
  out.write.reset();
  result.output = read_all(out.read.get());
  int status = 0;
  waitpid(pid, &status, 0);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

CommandResult busctl(const TestServer& server, std::vector<std::string> args) {
  std::vector<std::string> argv{"busctl", "--address=" + server.address(), "--timeout=10"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv);
}

// --- A raw sd-bus client, for what BuilderClient cannot do: hang up mid-call. ---

struct RawBus {
  sd_bus* bus = nullptr;
  explicit RawBus(const std::string& address) {
    EXPECT_GE(sd_bus_new(&bus), 0);
    EXPECT_GE(sd_bus_set_address(bus, address.c_str()), 0);
    EXPECT_GE(sd_bus_set_bus_client(bus, 1), 0);
    EXPECT_GE(sd_bus_negotiate_fds(bus, 1), 0);
    EXPECT_GE(sd_bus_start(bus), 0);
  }
  ~RawBus() { sd_bus_close_unref(bus); }
};

class ServerTest : public ::testing::Test {
 protected:
  FakeBuilder fake;
};

TEST_F(ServerTest, ServesEveryMethodThroughTheClient) {
  TestServer server(fake);
  BuilderClient client(server.path());

  Options info = client.info();
  EXPECT_EQ(info.at("version"), Value("test"));
  EXPECT_EQ(info.at("caller-uid"), Value(static_cast<std::int64_t>(getuid())));
  EXPECT_EQ(info.at("caller-gid"), Value(static_cast<std::int64_t>(getgid())));
  EXPECT_EQ(info.at("caller-pid"), Value(static_cast<std::int64_t>(getpid())));

  std::vector<Options> images = client.list_images();
  ASSERT_EQ(images.size(), 2u);
  EXPECT_EQ(images[0].at("names"), Value(std::vector<std::string>{"alpine:3.20", "a:b"}));
  EXPECT_EQ(images[0].at("created"), Value(std::int64_t{1700000000}));
  EXPECT_EQ(images[0].at("size"), Value(std::uint64_t{1234567}));
  EXPECT_EQ(images[1].at("names"), Value(std::vector<std::string>{}));
  EXPECT_EQ(images[1].at("created"), Value(std::int64_t{-1}));

  EXPECT_EQ(client.remove_image("alpine:3.20", false), (std::vector<std::string>{"Untagged: alpine:3.20"}));
  EXPECT_EQ(client.remove_image("x", true), (std::vector<std::string>{"Untagged: x", "Deleted: sha256:aaaa"}));

  client.tag_image("alpine:3.20", "mine:latest");
  EXPECT_EQ(fake.tags(), (std::vector<std::pair<std::string, std::string>>{{"alpine:3.20", "mine:latest"}}));

  Options usage = client.disk_usage();
  EXPECT_EQ(usage.at("images"), Value(std::uint64_t{2}));
  EXPECT_EQ(usage.at("images-size"), Value(std::uint64_t{1234567}));
  EXPECT_FALSE(usage.contains("records"));
  usage = client.disk_usage({{"records", true}});
  EXPECT_EQ(usage.at("records"), Value(std::vector<StringMap>{{{"id", "r1"}}}));
  EXPECT_EQ(client.prune({{"all", true}}).at("reclaimed"), Value(std::uint64_t{2000}));
  EXPECT_EQ(client.prune_images({}).at("deleted"), Value(std::vector<std::string>{"deleted: sha256:abc"}));

  Pipe saved;
  client.save_images({"a:1", "b:2"}, saved.write.get());
  saved.write.reset();
  EXPECT_EQ(read_all(saved.read.get()), "saved a:1 b:2");

  Pipe archive;
  write_all(archive.write.get(), "tar bytes");
  archive.write.reset();
  EXPECT_EQ(client.load_images(archive.read.get()), (std::vector<std::string>{"Loaded image: tar bytes"}));

  EXPECT_EQ(client.pull_image("alpine", {{"platform", "linux/arm64"}}),
            (std::vector<std::string>{"pulled alpine for linux/arm64"}));
  EXPECT_EQ(client.push_image("localhost:5000/a:1", {{"registry-auth", StringMap{{"localhost:5000", "dTpw"}}}}),
            (std::vector<std::string>{"pushed localhost:5000/a:1"}));
  EXPECT_EQ(option_or(client.check_login("good.io", {{"registry-auth", StringMap{{"good.io", "dTpw"}}}}),
                      "identity-token", std::string()),
            "refresh-good.io");
  EXPECT_THROW(client.check_login("bad.io", {}), Error);
  try {
    client.push_image("missing", {});
    FAIL() << "pushing a missing image succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
    EXPECT_STREQ(e.what(), "No such image: missing");
  }
}

TEST_F(ServerTest, BuildCarriesEveryOptionTypeAndTheFds) {
  TestServer server(fake);
  BuilderClient client(server.path());
  Options options{
      {"dockerfile", Bytes{'F', 'R', 'O', 'M', ' ', 'a', 0, 0xff}},
      {"dockerfile-name", "Dockerfile"},
      {"dockerignore", std::vector<std::string>{"*.o", "!keep.o"}},
      {"build-args", StringMap{{"A", "1"}, {"B", ""}}},
      {"no-cache", true},
      {"source-date-epoch", std::int64_t{-5}},
      {"size", std::uint64_t{1} << 63},
      {"outputs", std::vector<StringMap>{{{"type", "oci"}, {"dest", "-"}}, {{"type", "image"}}}},
  };
  Pipe context, progress, output, cache;
  options["write-to"] = Fd(UniqueFd(::dup(cache.write.get())));
  write_all(context.write.get(), "context tar");
  context.write.reset();

  Options result = client.build(options, context.read.get(), progress.write.get(), output.write.get());
  progress.write.reset();
  output.write.reset();

  EXPECT_EQ(result.at("image-id"), Value("sha256:1234"));
  EXPECT_EQ(result.at("context"), Value("context tar"));
  for (const auto& [key, value] : options) EXPECT_EQ(result.at(key), value) << key;
  EXPECT_EQ(read_all(progress.read.get()), "{\"vertex\":\"step 1\"}\n");
  EXPECT_EQ(read_all(output.read.get()), "output of the build");

  // The fd went to the daemon and came back in the result: a duplicate of the same pipe, close-on-exec.
  const Fd* returned = find_option<Fd>(result, "write-to");
  ASSERT_NE(returned, nullptr);
  EXPECT_NE(returned->get(), options.at("write-to").get_if<Fd>()->get());
  EXPECT_NE(::fcntl(returned->get(), F_GETFD) & FD_CLOEXEC, 0);
  write_all(returned->get(), ", then by the client");
  options.erase("write-to");
  result.clear();
  cache.write.reset();
  EXPECT_EQ(read_all(cache.read.get()), "written by the daemon, then by the client");
}

TEST_F(ServerTest, FdOptionsArriveAsTypeH) {
  TestServer server(fake);
  Pipe context, progress, output, cache;
  context.write.reset();
  RawBus raw(server.address());
  sd_bus_message* reply = nullptr;
  sd_bus_error error = SD_BUS_ERROR_NULL;
  int r = sd_bus_call_method(raw.bus, kBuilderInterface, kBuilderObjectPath, kBuilderInterface, "Build", &error,
                             &reply, "a{sv}hhh", 1, "write-to", "h", cache.write.get(), context.read.get(),
                             progress.write.get(), output.write.get());
  ASSERT_GE(r, 0) << (error.message ? error.message : "");
  sd_bus_error_free(&error);
  sd_bus_message_unref(reply);
  cache.write.reset();
  EXPECT_EQ(read_all(cache.read.get()), "written by the daemon");
}

TEST_F(ServerTest, ErrorsKeepTheirKindAndMessage) {
  TestServer server(fake);
  BuilderClient client(server.path());
  Pipe context, progress, output;
  context.write.reset();
  for (ErrorKind kind : {ErrorKind::user, ErrorKind::not_found, ErrorKind::permission, ErrorKind::canceled,
                         ErrorKind::internal}) {
    std::string name = error_kind_name(kind);
    try {
      client.build({{"fail", name}}, context.read.get(), progress.write.get(), output.write.get());
      ADD_FAILURE() << "no error for " << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind);
      EXPECT_EQ(std::string(e.what()), "failed as " + name);
    }
  }
  try {
    client.build({{"fail", "std"}}, context.read.get(), progress.write.get(), output.write.get());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::internal);
    EXPECT_EQ(std::string(e.what()), "something broke");
  }
  try {
    client.build({{"fail", "bad-utf8"}}, context.read.get(), progress.write.get(), output.write.get());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_EQ(std::string(e.what()), "file \xEF\xBF\xBD\xEF\xBF\xBD is missing");
  }
  try {
    client.tag_image("missing", "x");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
    EXPECT_EQ(std::string(e.what()), "No such image: missing");
  }
  // An option of the wrong type is the caller's mistake, said with the key.
  try {
    client.build({{"wait", "yes"}}, context.read.get(), progress.write.get(), output.write.get());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_EQ(std::string(e.what()), "option wait is s, expected b");
  }
}

TEST_F(ServerTest, SlowBuildLeavesOtherConnectionsServed) {
  TestServer server(fake);
  Pipe context, progress, output;
  context.write.reset();
  auto build = std::async(std::launch::async, [&] {
    BuilderClient client(server.path());
    return client.build({{"wait", true}}, context.read.get(), progress.write.get(), output.write.get());
  });
  ASSERT_TRUE(fake.wait_started());

  BuilderClient other(server.path());
  EXPECT_EQ(other.info().at("version"), Value("test"));
  EXPECT_EQ(other.list_images().size(), 2u);
  EXPECT_EQ(build.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);

  fake.release();
  EXPECT_EQ(build.get().at("image-id"), Value("sha256:1234"));
}

TEST_F(ServerTest, ManyCallersAtOnceAreAllServed) {
  TestServer server(fake);
  std::vector<std::future<int>> callers;
  for (int i = 0; i < 8; ++i) {
    callers.push_back(std::async(std::launch::async, [&] {
      BuilderClient client(server.path());
      int served = 0;
      for (int call = 0; call < 25; ++call) {
        if (client.info().at("version") == Value("test")) ++served;
        if (client.list_images().size() == 2) ++served;
      }
      return served;
    }));
  }
  for (auto& caller : callers) EXPECT_EQ(caller.get(), 50);
}

TEST_F(ServerTest, CallsBeyondTheLimitsAreRefusedSayingWhichLimit) {
  for (bool per_caller : {true, false}) {
    FakeBuilder builder;
    ServerOptions options;
    options.max_calls = per_caller ? 8 : 2;
    options.max_calls_per_uid = per_caller ? 2 : 8;
    TestServer server(builder, options);
    Pipe context, progress, output;
    context.write.reset();
    std::vector<std::future<Options>> builds;
    for (int i = 0; i < 2; ++i) {
      builds.push_back(std::async(std::launch::async, [&] {
        BuilderClient client(server.path());
        return client.build({{"wait", true}}, context.read.get(), progress.write.get(), output.write.get());
      }));
    }
    ASSERT_TRUE(builder.wait_started());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // both are in flight

    BuilderClient client(server.path());
    try {
      client.info();
      ADD_FAILURE() << "a call beyond the limit was let in";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::user);
      const std::string expected = per_caller ? "too many calls in flight: uid " + std::to_string(::getuid()) +
                                                    " has 2 running, the limit per caller is 2; try again when one ends"
                                              : "too many calls in flight: kbuildd runs 2, its limit is 2; try "
                                                "again when one ends";
      EXPECT_EQ(std::string(e.what()), expected);
    }
    builder.release();
    for (auto& build : builds) EXPECT_EQ(build.get().at("image-id"), Value("sha256:1234"));
    // The calls that ended left room for new ones (their threads are joined through the loop).
    bool served = false;
    for (int attempt = 0; attempt < 50 && !served; ++attempt) {
      try {
        served = client.info().at("version") == Value("test");
      } catch (const Error&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    EXPECT_TRUE(served);
  }
}

TEST_F(ServerTest, DisconnectCancelsTheCall) {
  TestServer server(fake);
  Pipe context, progress, output;
  context.write.reset();
  {
    RawBus raw(server.address());
    sd_bus_message* call = nullptr;
    ASSERT_GE(sd_bus_message_new_method_call(raw.bus, &call, kBuilderInterface, kBuilderObjectPath,
                                             kBuilderInterface, "Build"),
              0);
    ASSERT_GE(sd_bus_message_append(call, "a{sv}hhh", 1, "wait", "b", 1, context.read.get(), progress.write.get(),
                                    output.write.get()),
              0);
    sd_bus_slot* slot = nullptr;
    ASSERT_GE(sd_bus_call_async(raw.bus, &slot, call, nullptr, nullptr, 0), 0);
    sd_bus_message_unref(call);
    ASSERT_GE(sd_bus_flush(raw.bus), 0);
    ASSERT_TRUE(fake.wait_started());
    EXPECT_FALSE(fake.wait_canceled(std::chrono::milliseconds(50)));
    sd_bus_slot_unref(slot);
  }  // hangs up
  EXPECT_TRUE(fake.wait_canceled());

  BuilderClient client(server.path());
  EXPECT_EQ(client.info().at("version"), Value("test"));
}

TEST_F(ServerTest, StoppingTheServerCancelsCallsAndClosesConnections) {
  auto server = std::make_unique<TestServer>(fake);
  Pipe context, progress, output;
  context.write.reset();
  auto build = std::async(std::launch::async, [&] {
    BuilderClient client(server->path());
    return client.build({{"wait", true}}, context.read.get(), progress.write.get(), output.write.get());
  });
  ASSERT_TRUE(fake.wait_started());
  server->destroy();
  EXPECT_TRUE(fake.wait_canceled());
  try {
    build.get();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "kbuildd closed the connection during Build");
  }
}

TEST_F(ServerTest, IntrospectionEqualsTheXml) {
  TestServer server(fake);
  BuilderClient client(server.path());
  Members served = interface_members(client.introspect(), kBuilderInterface);
  Members defined = interface_members(read_file(KBUILD_BUILDER1_XML), kBuilderInterface);
  ASSERT_EQ(defined.size(), 14u);
  EXPECT_EQ(defined.at("method Reload"), (std::vector<Arg>{{"result", "a{sv}", "out"}}));
  EXPECT_EQ(defined.at("method PullImage"), (std::vector<Arg>{{"reference", "s", "in"}, {"options", "a{sv}", "in"}, {"lines", "as", "out"}}));
  EXPECT_EQ(defined.at("method Build").size(), 5u);
  EXPECT_EQ(defined.at("method Build")[4], (Arg{"result", "a{sv}", "out"}));
  EXPECT_EQ(defined.at("method DiskUsage"), (std::vector<Arg>{{"options", "a{sv}", "in"}, {"usage", "a{sv}", "out"}}));
  EXPECT_EQ(defined.at("method Prune"), (std::vector<Arg>{{"options", "a{sv}", "in"}, {"result", "a{sv}", "out"}}));
  EXPECT_EQ(served, defined);
}

TEST_F(ServerTest, ReloadReturnsWhatTheServiceSays) {
  TestServer server(fake);
  BuilderClient client(server.path());
  Options result = client.reload();
  EXPECT_EQ(option_or(result, "config-file", std::string()), "/etc/docker/daemon.json");
  EXPECT_EQ(option_or(result, "changed", std::vector<std::string>{}), (std::vector<std::string>{"dns"}));
}

TEST_F(ServerTest, BusctlIntrospectShowsTheMethods) {
  TestServer server(fake);
  CommandResult result = busctl(server, {"introspect", kBuilderInterface, kBuilderObjectPath});
  ASSERT_EQ(result.status, 0) << result.output;
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(result.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    rows.emplace_back(std::istream_iterator<std::string>(words), std::istream_iterator<std::string>());
  }
  auto has_row = [&](const std::vector<std::string>& row) {
    return std::any_of(rows.begin(), rows.end(), [&](const auto& r) { return std::equal(row.begin(), row.end(), r.begin(), r.end()); });
  };
  EXPECT_TRUE(has_row({".Build", "method", "a{sv}hhh", "a{sv}", "-"})) << result.output;
  EXPECT_TRUE(has_row({".RemoveImage", "method", "sb", "as", "-"})) << result.output;
  EXPECT_TRUE(has_row({".TagImage", "method", "ss", "-", "-"})) << result.output;
}

TEST_F(ServerTest, BusctlCallsWithWrongArgumentsGetInvalidArgs) {
  TestServer server(fake);
  const std::string iface = kBuilderInterface, path = kBuilderObjectPath;
  CommandResult result = busctl(server, {"call", iface, path, iface, "RemoveImage", "s", "alpine"});
  EXPECT_NE(result.status, 0);
  EXPECT_NE(result.output.find("Invalid arguments 's' to call org.kbuild.Builder1.RemoveImage(), expecting 'sb'"),
            std::string::npos)
      << result.output;

  result = busctl(server, {"call", iface, path, iface, "Build", "a{sv}", "1", "wait", "b", "true"});
  EXPECT_NE(result.status, 0);
  EXPECT_NE(result.output.find("Invalid arguments"), std::string::npos) << result.output;

  result = busctl(server, {"call", iface, path, iface, "NoSuchMethod"});
  EXPECT_NE(result.status, 0);
  EXPECT_NE(result.output.find("Unknown method"), std::string::npos) << result.output;

  result = busctl(server, {"call", iface, path, iface, "TagImage", "ss", "alpine", "mine"});
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_EQ(fake.tags().size(), 1u);

  result = busctl(server, {"call", iface, path, iface, "RemoveImage", "sb", "missing", "false"});
  EXPECT_NE(result.status, 0);
  EXPECT_NE(result.output.find("No such image: missing"), std::string::npos) << result.output;

  BuilderClient client(server.path());
  EXPECT_EQ(client.info().at("version"), Value("test"));
}

TEST_F(ServerTest, OptionsOfUnknownTypesAreSkipped) {
  TestServer server(fake);
  Pipe context, progress, output;
  context.write.reset();
  RawBus raw(server.address());
  sd_bus_message* reply = nullptr;
  sd_bus_error error = SD_BUS_ERROR_NULL;
  int r = sd_bus_call_method(raw.bus, kBuilderInterface, kBuilderObjectPath, kBuilderInterface, "Build", &error,
                             &reply, "a{sv}hhh", 3, "target", "s", "final", "answer", "i", 42, "nested", "v", "s",
                             "x", context.read.get(), progress.write.get(), output.write.get());
  ASSERT_GE(r, 0) << (error.message ? error.message : "");
  sd_bus_error_free(&error);
  std::set<std::string> keys;
  ASSERT_GE(sd_bus_message_enter_container(reply, 'a', "{sv}"), 0);
  while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
    const char* key = nullptr;
    ASSERT_GE(sd_bus_message_read(reply, "s", &key), 0);
    keys.insert(key);
    ASSERT_GE(sd_bus_message_skip(reply, "v"), 0);
    ASSERT_GE(sd_bus_message_exit_container(reply), 0);
  }
  sd_bus_message_unref(reply);
  EXPECT_EQ(keys, (std::set<std::string>{"caller-uid", "context", "image-id", "target"}));
}

TEST_F(ServerTest, HelloGivesEachConnectionAUniqueName) {
  TestServer server(fake);
  RawBus first(server.address()), second(server.address());
  const char* first_name = nullptr;
  const char* second_name = nullptr;
  ASSERT_GE(sd_bus_get_unique_name(first.bus, &first_name), 0);
  ASSERT_GE(sd_bus_get_unique_name(second.bus, &second_name), 0);
  EXPECT_TRUE(std::string(first_name).starts_with(":1.")) << first_name;
  EXPECT_NE(std::string(first_name), std::string(second_name));
}

TEST_F(ServerTest, UnprivilegedCallerIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  TestServer server(fake);
  std::string result = run_as(kNobody, kNogroup, [&] {
    BuilderClient client(server.path());
    client.info();
    return std::string("allowed");
  });
  EXPECT_EQ(result, "error permission: access denied: uid 65534 is not root or a member of group kbuild");

  // Not a single method gets through, whatever the interface.
  result = run_as(kNobody, kNogroup, [&] {
    BuilderClient client(server.path());
    client.introspect();
    return std::string("allowed");
  });
  EXPECT_EQ(result, "error permission: access denied: uid 65534 is not root or a member of group kbuild");
  EXPECT_TRUE(fake.tags().empty());
}

TEST_F(ServerTest, MembersOfTheGroupMayCall) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  std::optional<gid_t> group = find_group("nogroup");
  if (!group) GTEST_SKIP() << "no group nogroup";
  ServerOptions options;
  options.group = "nogroup";
  TestServer server(fake, options);
  std::string result = run_as(kNobody, *group, [&] {
    BuilderClient client(server.path());
    return std::get<std::int64_t>(client.info().at("caller-uid").variant()) == kNobody ? "allowed" : "wrong uid";
  });
  EXPECT_EQ(result, "allowed");
  result = run_as(kNobody, *group - 1, [&] {
    BuilderClient client(server.path());
    client.info();
    return std::string("allowed");
  });
  EXPECT_EQ(result, "error permission: access denied: uid 65534 is not root or a member of group nogroup");
}

TEST_F(ServerTest, RunReturnsAfterIdleTimeout) {
  ServerOptions options;
  options.idle_timeout = std::chrono::milliseconds(200);
  TestServer server(fake, options);
  {
    BuilderClient client(server.path());
    EXPECT_EQ(client.info().at("version"), Value("test"));
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    EXPECT_FALSE(server.exit()) << "exited with a connection open";
  }
  ASSERT_TRUE(server.wait_exit(std::chrono::seconds(10)));
  EXPECT_EQ(server.exit(), Server::Exit::idle);
}

TEST_F(ServerTest, StopEndsRun) {
  TestServer server(fake);
  server.stop();
  EXPECT_EQ(server.exit(), Server::Exit::stopped);
}

TEST_F(ServerTest, GarbageOnTheSocketLeavesTheServerServing) {
  TestServer server(fake);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", server.path().c_str());
  ASSERT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  timeval timeout{0, 200'000};
  ASSERT_EQ(setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout), 0);
  write_all(fd.get(), std::string("\0GARBAGE\r\nMORE\r\n", 16));
  char buffer[256];
  EXPECT_GT(read(fd.get(), buffer, sizeof buffer), 0) << "no answer to garbage";
  BuilderClient client(server.path());
  EXPECT_EQ(client.info().at("version"), Value("test"));
}

}  // namespace
}  // namespace kbuild::dbus
