#include "cli/build_command.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <set>
#include <iostream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/build_secrets.h"
#include "cli/cache_layout.h"
#include "cli/ssh_forward.h"
#include "cli/debug_dockerfile.h"
#include "cli/error_excerpt.h"
#include "cli/progress/renderer.h"
#include "cli/progress/summary.h"
#include "cli/registry_auth.h"
#include "common/go_text.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "dbus/builder_client.h"
#include "engine/dockerfile/convert.h"
#include "engine/image/layer_extract.h"
#include "engine/image/reference.h"
#include "engine/patterns/dockerignore.h"

namespace kbuild::cli {
namespace {

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw Error(ErrorKind::not_found, "failed to read " + what + ": open " + path + ": no such file or directory");
  }
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

bool exists(std::string_view path) {
  struct stat st;
  return ::stat(std::string(path).c_str(), &st) == 0;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (!value) return std::nullopt;
  return std::string(value);
}

std::map<std::string, std::string> parse_labels(const std::vector<std::string>& values) {
  std::map<std::string, std::string> labels;
  for (const auto& value : values) {
    size_t eq = value.find('=');
    labels[value.substr(0, eq)] = eq == std::string::npos ? "" : value.substr(eq + 1);
  }
  return labels;
}

// Where a stream output goes on the client: a file written as the user, stdout, or a directory
// the tar stream is unpacked into.
struct OutputSink {
  UniqueFd daemon_end;  // passed to the daemon
  std::thread unpacker;
  std::shared_ptr<std::optional<Error>> unpack_error = std::make_shared<std::optional<Error>>();
};

OutputSink open_output(const OutputFlag& output) {
  OutputSink sink;
  auto dest = output.attributes.find("dest");
  if (output.type == "local") {
    if (dest == output.attributes.end()) throw Error(ErrorKind::user, "dest is required for local output");
    std::string dir = dest->second;
    // With its parents, as buildx makes it (MkdirAll).
    for (size_t slash = dir.find('/', 1); ; slash = dir.find('/', slash + 1)) {
      std::string part = dir.substr(0, slash);
      if (!part.empty() && ::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", part);
      if (slash == std::string::npos) break;
    }
    int fds[2];
    check(::pipe2(fds, O_CLOEXEC), "pipe2");
    UniqueFd read_end(fds[0]);
    sink.daemon_end.reset(fds[1]);
    UniqueFd root(check(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", dir));
    sink.unpacker = std::thread([error = sink.unpack_error, read = std::move(read_end), root = std::move(root)]() mutable {
      try {
        image::ExtractOptions options;
        options.whiteouts = image::WhiteoutMode::apply;
        options.devices = image::DeviceNodes::skip;
        options.set_owners = ::geteuid() == 0;
        options.layer_name = "local output";
        image::extract_layer(read.get(), root.get(), options);
      } catch (const Error& e) {
        *error = e;
      }
    });
    return sink;
  }
  if (dest == output.attributes.end() || dest->second == "-") {
    if (::isatty(STDOUT_FILENO)) {
      throw Error(ErrorKind::user, "dest file is required for " + output.type + " exporter when stdout is a terminal");
    }
    sink.daemon_end.reset(check(::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3), "dup stdout"));
    return sink;
  }
  sink.daemon_end.reset(
      check(::open(dest->second.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), "open", dest->second));
  return sink;
}

bool looks_like_archive(const std::string& head) {
  auto starts = [&](std::string_view magic) { return head.compare(0, magic.size(), magic) == 0; };
  if (starts("\x1f\x8b") || starts("BZh") || starts("\xfd" "7zXZ") || starts("\x28\xb5\x2f\xfd")) return true;
  return head.size() >= 262 && head.compare(257, 5, "ustar") == 0;
}

std::string read_some(int fd, size_t limit) {
  std::string data(limit, '\0');
  size_t got = 0;
  while (got < limit) {
    ssize_t n = ::read(fd, data.data() + got, limit - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read", "stdin");
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  data.resize(got);
  return data;
}

// `kbuildctl build -`: stdin is a context tar (maybe compressed) with its own Dockerfile, or
// a Dockerfile alone. The daemon gets a pipe that replays what was read to tell which.
struct StdinContext {
  UniqueFd daemon_end;
  std::thread feeder;
  std::string dockerfile;  // set when stdin was a Dockerfile
};

StdinContext stdin_context() {
  StdinContext context;
  std::string head = read_some(STDIN_FILENO, 512);
  int fds[2];
  check(::pipe2(fds, O_CLOEXEC), "pipe2");
  UniqueFd write_end(fds[1]);
  context.daemon_end.reset(fds[0]);
  if (!looks_like_archive(head)) {
    context.dockerfile = head;
    for (std::string more; !(more = read_some(STDIN_FILENO, 1 << 16)).empty();) context.dockerfile += more;
    // An empty context: a tar of nothing (two zero blocks), which fits in the pipe's buffer.
    const std::string empty_tar(1024, '\0');
    check(::write(write_end.get(), empty_tar.data(), empty_tar.size()), "write", "context pipe");
    return context;
  }
  context.feeder = std::thread([head, out = std::move(write_end)] {
    std::string chunk = head;
    do {
      size_t done = 0;
      while (done < chunk.size()) {
        ssize_t n = ::write(out.get(), chunk.data() + done, chunk.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // the daemon stopped reading; its error tells why
        done += static_cast<size_t>(n);
      }
      chunk = read_some(STDIN_FILENO, 1 << 16);
    } while (!chunk.empty());
  });
  return context;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw Error(ErrorKind::user, "failed to write " + path);
  file << text;
}

// The registries a build reads base images from, as far as the client can tell: the image
// sources of the Dockerfile's graph for the target. A Dockerfile that does not convert here
// gets no credentials; the daemon reports what is wrong with it.
std::set<std::string> registries_read(const std::string& dockerfile, const BuildFlags& flags) {
  std::set<std::string> domains;
  try {
    dockerfile::ConvertOptions options;
    options.resolve.target = flags.target;
    options.resolve.build_args = parse_build_args(flags.build_args, [](const std::string& n) { return env(n.c_str()); });
    std::vector<std::optional<dockerfile::Platform>> platforms;
    for (auto& platform : dockerfile::parse_platform_list(flags.platform)) platforms.emplace_back(std::move(platform));
    if (platforms.empty()) platforms.emplace_back(std::nullopt);
    // Each platform's graph: a base image may differ by platform (FROM img-$TARGETARCH).
    for (const auto& platform : platforms) {
      options.resolve.target_platform = platform;
      graph::Definition definition = dockerfile::convert_dockerfile(dockerfile, options);
      for (const graph::Op& op : definition.graph.ops()) {
        const auto* source = std::get_if<graph::SourceOp>(&op.body);
        if (source && source->kind == graph::SourceOp::Kind::image) domains.insert(image::parse_reference(source->name).domain);
      }
    }
  } catch (const Error&) {
  }
  return domains;
}

// DOCKER_BUILDKIT as docker's client reads it (Go's strconv.ParseBool); unset or empty: the
// daemon's choice (features.buildkit).
std::optional<bool> buildkit_from_env() {
  std::optional<std::string> value = env("DOCKER_BUILDKIT");
  if (!value || value->empty()) return std::nullopt;
  static const std::set<std::string> yes = {"1", "t", "T", "TRUE", "true", "True"};
  static const std::set<std::string> no = {"0", "f", "F", "FALSE", "false", "False"};
  if (yes.count(*value)) return true;
  if (no.count(*value)) return false;
  throw Error(ErrorKind::user, "DOCKER_BUILDKIT environment variable expects boolean value: strconv.ParseBool: parsing " +
                                   go_quote(*value) + ": invalid syntax");
}

}  // namespace

uint64_t parse_memory_bytes(const std::string& value) {
  auto invalid = [&] { return Error(ErrorKind::user, "invalid argument \"" + value + "\" for \"-m, --memory\" flag: invalid size: '" + value + "'"); };
  size_t end = 0;
  while (end < value.size() && (std::isdigit(static_cast<unsigned char>(value[end])) || value[end] == '.')) ++end;
  if (end == 0) throw invalid();
  double number = 0;
  try {
    number = std::stod(value.substr(0, end));
  } catch (const std::exception&) {
    throw invalid();
  }
  std::string unit = value.substr(end);
  if (!unit.empty() && unit[0] == ' ') unit.erase(0, 1);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit.back() == 'b') unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'i') unit.pop_back();
  static const std::string units = "kmgtp";
  double multiplier = 1;
  if (!unit.empty()) {
    if (unit.size() != 1) throw invalid();
    if (unit == "b") {
      multiplier = 1;
    } else {
      size_t index = units.find(unit[0]);
      if (index == std::string::npos) throw invalid();
      for (size_t i = 0; i <= index; ++i) multiplier *= 1024;
    }
  }
  return static_cast<uint64_t>(number * multiplier);
}

OutputFlag parse_output_flag(const std::string& value) {
  OutputFlag output;
  if (value == "-") return OutputFlag{"tar", {{"dest", "-"}}};
  if (value.find('=') == std::string::npos) return OutputFlag{"local", {{"dest", value}}};
  std::stringstream fields(value);
  for (std::string field; std::getline(fields, field, ',');) {
    size_t eq = field.find('=');
    if (eq == std::string::npos) throw Error(ErrorKind::user, "invalid value " + field + " in --output " + value);
    std::string key = field.substr(0, eq), v = field.substr(eq + 1);
    if (key == "type") {
      output.type = v;
    } else {
      output.attributes[key] = v;
    }
  }
  if (output.type.empty()) {
    if (output.attributes.count("dest")) {
      output.type = "local";
    } else {
      throw Error(ErrorKind::user, "type is required for output");
    }
  }
  static const std::vector<std::string> types = {"local", "tar", "oci", "docker", "image", "registry"};
  if (std::find(types.begin(), types.end(), output.type) == types.end()) {
    throw Error(ErrorKind::user, "unsupported output type " + output.type);
  }
  return output;
}

CacheFlag parse_cache_flag(const std::string& value) {
  CacheFlag cache;
  // A bare name is a registry ref, as buildx takes it.
  if (value.find('=') == std::string::npos) return CacheFlag{"registry", {{"ref", value}}};
  std::stringstream fields(value);
  for (std::string field; std::getline(fields, field, ',');) {
    size_t eq = field.find('=');
    if (eq == std::string::npos) throw Error(ErrorKind::user, "invalid value " + field);
    std::string key = field.substr(0, eq), v = field.substr(eq + 1);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
    if (key == "type") {
      cache.type = v;
    } else {
      cache.attributes[key] = v;
    }
  }
  if (cache.type.empty()) throw Error(ErrorKind::user, "type required form> \"" + value + "\"");
  return cache;
}

void check_image_names(const BuildFlags& flags) {
  for (const std::string& tag : flags.tags) image::check_build_tag(tag);
  for (const std::string& value : flags.outputs) {
    OutputFlag output = parse_output_flag(value);
    auto name = output.attributes.find("name");
    if (name == output.attributes.end()) continue;
    for (const std::string& one : image::output_image_names(output.type, name->second)) image::check_build_tag(one);
  }
  for (const auto& [key, values] : {std::pair{"cache-from", &flags.cache_from}, std::pair{"cache-to", &flags.cache_to}}) {
    for (const std::string& value : *values) {
      CacheFlag cache = parse_cache_flag(value);
      auto ref = cache.attributes.find("ref");
      if (cache.type != "registry" || ref == cache.attributes.end()) continue;
      try {
        image::parse_reference(ref->second);
      } catch (const Error& e) {
        throw e.with_context(std::string(key) + ": invalid ref \"" + ref->second + "\"");
      }
    }
  }
}

int run_build(const BuildFlags& flags, const std::string& socket, std::ostream& out, std::ostream& err) {
  // Image names first: a bad one stops the build before any file is opened or the daemon asked.
  check_image_names(flags);
  // Secrets are opened first: a bad one stops the build before anything is sent.
  std::vector<SecretFlag> secret_flags;
  for (const std::string& value : flags.secrets) secret_flags.push_back(parse_secret_flag(value));
  std::vector<SecretFd> secrets = open_secrets(secret_flags, [](const std::string& name) { return env(name.c_str()); });
  // And the SSH agents (or key files) checked and, for keys, loaded into an agent of ours.
  std::vector<SshSpec> ssh_specs = parse_ssh_flags(flags.ssh, std::getenv("SSH_AUTH_SOCK"));
  auto ssh_errors = std::make_shared<std::pair<std::mutex, std::vector<std::string>>>();
  std::vector<std::unique_ptr<SshAgentForwarder>> ssh_forwarders;
  std::vector<UniqueFd> ssh_daemon_ends;
  for (const SshSpec& spec : ssh_specs) {
    int pair[2];
    check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), "socketpair");
    ssh_daemon_ends.emplace_back(pair[0]);
    // A connection's trouble is told after the build, not into the progress display.
    ssh_forwarders.push_back(std::make_unique<SshAgentForwarder>(spec, UniqueFd(pair[1]), [ssh_errors](const Error& e) {
      std::lock_guard lock(ssh_errors->first);
      if (ssh_errors->second.size() < 20) ssh_errors->second.push_back(e.what());
    }));
  }
  progress::DisplayChoice display = progress::choose_display_mode(flags.progress, flags.quiet, ::isatty(STDERR_FILENO),
                                                                  env("BUILDKIT_PROGRESS"));
  std::string dockerfile, dockerfile_name;
  std::vector<std::string> ignore_lines;
  UniqueFd context;
  std::optional<StdinContext> from_stdin;
  if (flags.context == "-" && flags.file == "-") {
    throw Error(ErrorKind::user, "invalid argument: can't use stdin for both build context and dockerfile");
  }
  if (flags.context == "-") {
    from_stdin = stdin_context();
    context = std::move(from_stdin->daemon_end);
    dockerfile = from_stdin->dockerfile;
    dockerfile_name = flags.file.empty() ? "Dockerfile" : flags.file;
  } else {
    std::string dockerfile_path = flags.file.empty() ? flags.context + "/Dockerfile" : flags.file;
    if (flags.file == "-") {
      // -f -: the Dockerfile comes from stdin; the context's own .dockerignore applies.
      std::ostringstream text;
      text << std::cin.rdbuf();
      dockerfile = text.str();
      dockerfile_path = flags.context + "/Dockerfile";
    } else {
      dockerfile = read_file(dockerfile_path, "dockerfile");
    }
    dockerfile_name = dockerfile_path.substr(dockerfile_path.rfind('/') + 1);
    std::string ignore_path = patterns::dockerignore_path_for(dockerfile_path, exists);
    if (ignore_path == ".dockerignore") ignore_path = flags.context + "/.dockerignore";
    if (exists(ignore_path)) ignore_lines = split_lines(read_file(ignore_path, "dockerignore"));
    context.reset(check(::open(flags.context.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open context", flags.context));
  }

  std::vector<OutputFlag> outputs;
  for (const auto& value : flags.outputs) outputs.push_back(parse_output_flag(value));
  if (outputs.size() > 1) throw Error(ErrorKind::user, "multiple outputs are not supported yet");
  std::optional<OutputSink> sink;
  for (const auto& output : outputs) {
    if (output.type != "image" && output.type != "registry") sink = open_output(output);
  }
  UniqueFd output_fd = sink ? std::move(sink->daemon_end)
                            : UniqueFd(check(::open("/dev/null", O_WRONLY | O_CLOEXEC), "open", "/dev/null"));

  dbus::Options options;
  options["dockerfile"] = dbus::Value(dbus::Bytes(dockerfile.begin(), dockerfile.end()));
  options["dockerfile-name"] = dbus::Value(dockerfile_name);
  options["dockerignore"] = dbus::Value(ignore_lines);
  options["context-type"] = dbus::Value(std::string(from_stdin ? "tar" : "dir"));
  options["target"] = dbus::Value(flags.target);
  options["build-args"] = dbus::Value(dbus::StringMap(parse_build_args(flags.build_args, [](const std::string& n) {
    return env(n.c_str());
  })));
  options["labels"] = dbus::Value(dbus::StringMap(parse_labels(flags.labels)));
  options["tags"] = dbus::Value(flags.tags);
  options["no-cache"] = dbus::Value(flags.no_cache);
  options["no-cache-filter"] = dbus::Value(flags.no_cache_filter);
  options["platform"] = dbus::Value(flags.platform);
  std::vector<dbus::StringMap> output_maps;
  for (const auto& o : outputs) {
    dbus::StringMap m = o.attributes;
    m["type"] = o.type;
    m.erase("dest");
    output_maps.push_back(m);
  }
  options["outputs"] = dbus::Value(output_maps);
  if (!ssh_specs.empty()) {
    std::vector<std::string> ids;
    for (size_t i = 0; i < ssh_specs.size(); ++i) {
      options["ssh-fd-" + std::to_string(i)] = dbus::Value(dbus::Fd(std::move(ssh_daemon_ends[i])));
      ids.push_back(ssh_specs[i].id);
    }
    options["ssh"] = dbus::Value(ids);
  }
  if (!secrets.empty()) {
    std::vector<std::string> ids;
    for (SecretFd& secret : secrets) {
      options["secret-fd-" + std::to_string(ids.size())] = dbus::Value(dbus::Fd(std::move(secret.fd)));
      ids.push_back(secret.id);
    }
    options["secrets"] = dbus::Value(ids);
  }
  std::set<std::string> cache_domains;
  // A local cache directory is read and written here, as the user: kbuildd reaches it through
  // a socket this process serves for the length of the build.
  std::vector<std::unique_ptr<CacheLayoutServer>> cache_dirs;
  for (const auto& [key, values] : {std::pair{"cache-from", &flags.cache_from}, std::pair{"cache-to", &flags.cache_to}}) {
    std::vector<dbus::StringMap> maps;
    for (const std::string& value : *values) {
      CacheFlag cache = parse_cache_flag(value);
      if (cache.type == "registry" && cache.attributes.count("ref")) {
        cache_domains.insert(image::parse_reference(cache.attributes["ref"]).domain);
      }
      if (cache.type == "local") {
        const char* dir_key = std::string_view(key) == "cache-to" ? "dest" : "src";
        auto dir = cache.attributes.find(dir_key);
        if (dir == cache.attributes.end() || dir->second.empty()) {
          throw Error(ErrorKind::user, std::string(dir_key) + " is required for local cache " +
                                           (std::string_view(key) == "cache-to" ? "exporter" : "importer"));
        }
        int pair[2];
        check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), "socketpair");
        std::string index = std::to_string(cache_dirs.size());
        options["cache-fd-" + index] = dbus::Value(dbus::Fd(UniqueFd(pair[0])));
        cache.attributes["fd"] = index;
        cache_dirs.push_back(std::make_unique<CacheLayoutServer>(UniqueFd(pair[1]), dir->second));
      }
      dbus::StringMap m = cache.attributes;
      m["type"] = cache.type;
      maps.push_back(std::move(m));
    }
    if (!maps.empty()) options[key] = dbus::Value(maps);
  }
  if (auto epoch = env("SOURCE_DATE_EPOCH")) options["source-date-epoch"] = dbus::Value(*epoch);
  if (!flags.allow.empty()) options["allow"] = dbus::Value(flags.allow);
  if (!flags.memory.empty()) options["memory"] = dbus::Value(static_cast<uint64_t>(parse_memory_bytes(flags.memory)));
  if (!flags.cpus.empty()) options["cpus"] = dbus::Value(flags.cpus);
  if (flags.pids_limit > 0) options["pids-limit"] = dbus::Value(static_cast<uint64_t>(flags.pids_limit));
  std::optional<bool> buildkit = buildkit_from_env();
  if (buildkit) options["buildkit"] = dbus::Value(*buildkit);
  if (flags.pull) options["pull"] = dbus::Value(true);
  bool push = flags.push;
  for (const auto& o : outputs) {
    auto attribute = o.attributes.find("push");
    if (o.type == "registry" || (attribute != o.attributes.end() && attribute->second == "true")) push = true;
  }
  if (flags.push) options["push"] = dbus::Value(true);
  std::set<std::string> domains = registries_read(dockerfile, flags);
  domains.insert(cache_domains.begin(), cache_domains.end());
  if (push) {
    for (const auto& tag : flags.tags) domains.insert(image::parse_reference(tag).domain);
  }
  add_registry_credentials(options, caller_credentials(domains));

  int fds[2];
  check(::pipe2(fds, O_CLOEXEC), "pipe2");
  UniqueFd progress_read(fds[0]), progress_write(fds[1]);
  std::unique_ptr<progress::Renderer> renderer =
      progress::make_renderer(display.mode, err, progress::display_options_from_env([](const char* n) { return env(n); }),
                              progress::system_clock(), [] { return progress::terminal_size_of(STDERR_FILENO); });
  // A classic build (DOCKER_BUILDKIT=0, or the daemon's features.buildkit=false) streams the
  // classic builder's text: printed as it comes, on stdout as docker's client prints it.
  std::atomic<bool> classic = buildkit == false;
  auto print_classic = [&](const progress::SolveStatus& status) {
    bool diverted = false;
    for (const progress::VertexLog& log : status.logs) {
      if (log.vertex != progress::kClassicOutputVertex) continue;
      classic = diverted = true;
      if (!flags.quiet) out << log.data << std::flush;
    }
    return diverted;
  };
  std::thread display_thread([&] {
    progress::ProgressReader reader(std::move(progress_read));
    try {
      progress::run_display(reader, *renderer, std::chrono::milliseconds(150), print_classic);
    } catch (const Error&) {
      // A garbled stream ends the display; the build's own result still decides the exit.
    }
  });

  std::optional<Error> failure;
  dbus::Options result;
  try {
    dbus::BuilderClient client(socket);
    result = client.build(options, context.get(), progress_write.get(), output_fd.get());
  } catch (const Error& e) {
    failure = e;
  }
  progress_write.reset();
  output_fd.reset();
  for (auto& dir : cache_dirs) {
    try {
      dir->finish();
    } catch (const Error& e) {
      if (!failure) failure = e;
    }
  }
  for (auto& forwarder : ssh_forwarders) {
    try {
      forwarder->finish();
    } catch (const Error& e) {
      if (!failure) failure = e;
    }
  }
  options.clear();  // our ends of the cache and agent sockets
  context.reset();
  if (from_stdin && from_stdin->feeder.joinable()) from_stdin->feeder.join();
  display_thread.join();
  if (sink && sink->unpacker.joinable()) sink->unpacker.join();
  if (!failure && sink && *sink->unpack_error) failure = **sink->unpack_error;
  if (classic && failure) {
    err << failure->what() << "\n";  // the classic builder's error, as docker prints it
    return 1;
  }
  if (!classic) renderer->finish();
  if (display.print_warnings) err << progress::warnings_summary(renderer->warnings());
  for (const std::string& line : ssh_errors->second) err << "WARNING: ssh agent: " << line << "\n";

  if (failure) {
    if (failure->where() && !dockerfile.empty()) err << dockerfile_excerpt(dockerfile_name, dockerfile, *failure->where());
    err << progress::build_error_line(failure->what());
    return 1;
  }
  auto text = [&](const char* key) {
    auto it = result.find(key);
    const std::string* s = it == result.end() ? nullptr : it->second.get_if<std::string>();
    return s ? *s : std::string();
  };
  if (!flags.iidfile.empty()) write_text_file(flags.iidfile, text("image-id"));
  if (!flags.metadata_file.empty()) {
    // The keys BuildKit writes (buildx.build.ref names a buildx builder: kbuild has none).
    nlohmann::json metadata = {{"containerimage.config.digest", text("containerimage.config.digest")},
                               {"containerimage.digest", text("containerimage.digest")}};
    auto size = result.find("containerimage.descriptor.size");
    const int64_t* bytes = size == result.end() ? nullptr : size->second.get_if<int64_t>();
    if (bytes && !text("containerimage.digest").empty()) {
      metadata["containerimage.descriptor"] = {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                                               {"digest", text("containerimage.digest")},
                                               {"size", *bytes}};
    }
    if (!text("image.name").empty()) metadata["image.name"] = text("image.name");
    write_text_file(flags.metadata_file, metadata.dump(2) + "\n");
  }
  if (display.print_image_id) out << text("image-id") << "\n";
  return 0;
}

}  // namespace kbuild::cli
