#include "cli/image_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <iomanip>
#include <optional>
#include <ostream>

#include <CLI/CLI.hpp>

#include "cli/registry_auth.h"
#include "common/error.h"
#include "common/go_units.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "dbus/builder_client.h"
#include "dbus/listener.h"
#include "engine/image/reference.h"

namespace kbuild::cli {
namespace {

template <typename T>
T value_or(const dbus::Options& options, const std::string& key, T fallback) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  const T* value = it->second.get_if<T>();
  return value ? *value : fallback;
}

int list_images(dbus::BuilderClient& client, bool quiet, bool tree, std::ostream& out) {
  std::vector<dbus::Options> images = client.list_images();
  if (!quiet) out << std::left << std::setw(40) << "REPOSITORY" << std::setw(12) << "TAG" << std::setw(16) << "IMAGE ID"
                  << std::setw(20) << "CREATED" << "SIZE\n";
  for (const auto& image : images) {
    std::string id = value_or<std::string>(image, "id", "");
    std::string short_id = id.size() > 19 ? id.substr(7, 12) : id;
    if (quiet) {
      out << short_id << "\n";
      continue;
    }
    std::time_t created = static_cast<std::time_t>(value_or<int64_t>(image, "created", 0));
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::gmtime(&created));
    for (const std::string& name : value_or<std::vector<std::string>>(image, "names", {})) {
      std::string familiar = image::familiar_reference(name);
      size_t colon = familiar.rfind(':');
      out << std::left << std::setw(40) << familiar.substr(0, colon) << std::setw(12) << familiar.substr(colon + 1)
          << std::setw(16) << short_id << std::setw(20) << when << go_human_size(static_cast<double>(value_or<uint64_t>(image, "size", 0)), 3)
          << "\n";
      if (!tree) continue;
      std::vector<std::string> platforms = value_or<std::vector<std::string>>(image, "platforms", {});
      for (size_t i = 0; i < platforms.size(); ++i) {
        out << (i + 1 < platforms.size() ? "├─ " : "└─ ") << platforms[i] << "\n";
      }
    }
  }
  return 0;
}

// "localhost:5000", "https://index.docker.io/v1/" or nothing (docker.io) to a registry domain.
std::string login_domain(const std::vector<std::string>& references) {
  if (references.empty()) return "docker.io";
  return registry_domain_of_key(references[0]);
}

std::string read_config_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// docker login: the daemon checks the credentials with the registry, then they are kept in the
// caller's config.json; docker logout removes them.
int login_or_logout(const ImageCommands& c, dbus::BuilderClient& client, std::ostream& out) {
  std::string domain = login_domain(c.references);
  std::string path = docker_config_path();
  std::string config = read_config_text(path);
  std::string helper = credential_helper_of(config, domain);
  if (c.logout->parsed()) {
    bool removed = false;
    std::string text = with_login(config, path, domain, {}, &removed);
    if (!helper.empty()) {
      erase_from_credential_helper(helper, auths_key(domain));
      removed = true;
    }
    if (!removed) {
      out << "Not logged in to " << domain << "\n";
      return 0;
    }
    write_docker_config(path, text);
    out << "Removing login credentials for " << auths_key(domain) << "\n";
    return 0;
  }
  std::string password = c.password;
  if (c.password_stdin) {
    if (!c.password.empty()) throw Error(ErrorKind::user, "--password and --password-stdin are mutually exclusive");
    if (c.username.empty()) throw Error(ErrorKind::user, "Must provide --username with --password-stdin");
    std::getline(std::cin, password);
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  }
  if (c.username.empty() || password.empty()) {
    throw Error(ErrorKind::user, "kbuildctl login needs --username and --password or --password-stdin");
  }
  std::string auth = base64_credentials(c.username, password);
  dbus::Options checked = client.check_login(domain, {{"registry-auth", dbus::Value(dbus::StringMap{{domain, auth}})}});
  // As docker login: an identity token the registry gave is kept in place of the password.
  std::string identity_token = dbus::option_or(checked, "identity-token", std::string());
  bool token = !identity_token.empty();
  RegistryCredential kept = token ? RegistryCredential{base64_credentials(c.username, ""), identity_token}
                                  : RegistryCredential{auth, ""};
  if (!helper.empty()) {
    store_in_credential_helper(helper, auths_key(domain), token ? kIdentityTokenUsername : c.username,
                               token ? identity_token : password);
  }
  write_docker_config(path, with_login(config, path, domain, kept, nullptr, !helper.empty()));
  out << "Login Succeeded\n";
  return 0;
}

// Info's scalar values, one "key: value" line each, sorted; maps and lists are left out.
void print_scalars(const dbus::Options& values, std::ostream& out) {
  for (const auto& [key, value] : values) {
    std::visit(
        [&, &key = key](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, int64_t> || std::is_same_v<T, uint64_t>) {
            out << key << ": " << v << "\n";
          } else if constexpr (std::is_same_v<T, bool>) {
            out << key << ": " << (v ? "true" : "false") << "\n";
          }
        },
        value.variant());
  }
}

// What the service is, the platforms it can build, daemon.json's settings with where each
// came from, then what its store holds.
int show_info(dbus::BuilderClient& client, std::ostream& out) {
  dbus::Options info = client.info();
  const auto settings = dbus::option_or(info, "config", dbus::StringMap{});
  const auto sources = dbus::option_or(info, "config-sources", dbus::StringMap{});
  const bool found = dbus::option_or(info, "config-file-found", true);
  info.erase("config-file-found");
  if (!found && info.count("config-file")) {
    info["config-file"] = dbus::Value(dbus::option_or(info, "config-file", std::string()) + " (missing: defaults)");
  }
  print_scalars(info, out);
  if (info.count("platforms")) {
    std::string platforms;
    for (const std::string& p : dbus::option_or(info, "platforms", std::vector<std::string>{})) {
      platforms += (platforms.empty() ? "" : ", ") + p;
    }
    out << "platforms: " << platforms << "\n";
  }
  for (const auto& [platform, why] : dbus::option_or(info, "platforms-unusable", dbus::StringMap{})) {
    out << "platform " << platform << ": not usable: " << why << "\n";
  }
  for (const auto& [key, value] : settings) {
    auto source = sources.find(key);
    out << key << ": " << value;
    if (source != sources.end()) out << (source->second == "default" ? " (default)" : " (from " + source->second + ")");
    out << "\n";
  }
  dbus::Options usage;
  for (auto& [key, value] : client.disk_usage()) usage.emplace("disk." + key, std::move(value));
  print_scalars(usage, out);
  return 0;
}

// docker rmi: each name in turn; one the daemon could never take is refused here, in the words
// docker prints for it, and the others are still removed.
int remove_images(const ImageCommands& c, const std::string& socket, std::ostream& out, std::ostream& err) {
  std::optional<dbus::BuilderClient> client;
  int status = 0;
  for (const auto& reference : c.references) {
    try {
      image::check_image_reference(reference);
    } catch (const Error& e) {
      err << "Error response from daemon: " << e.what() << "\n";
      status = 1;
      continue;
    }
    if (!client) client.emplace(socket);
    try {
      for (const auto& line : client->remove_image(reference, c.force)) out << line << "\n";
    } catch (const Error& e) {
      err << "Error response from daemon: " << e.what() << "\n";
      status = 1;
    }
  }
  return status;
}

// The names tag, save, pull and push take, held to Docker's grammar before the daemon is
// asked (or a file opened), each refused in the words docker's client prints.
void check_image_names(const ImageCommands& c) {
  if (c.tag->parsed()) image::check_tag_names(c.references[0], c.references[1]);
  if (c.save->parsed()) {
    for (const auto& reference : c.references) image::check_image_reference(reference);
  }
  if (c.pull->parsed() || c.push->parsed()) {
    image::Reference ref = image::parse_reference(c.references.at(0));
    if (c.push->parsed() && !ref.digest.empty()) throw Error(ErrorKind::user, "cannot push a digest reference");
  }
}

}  // namespace

std::string socket_path_from_host(const std::string& host) {
  if (host.empty()) return dbus::kDefaultSocketPath;
  if (host.starts_with("unix://")) return host.substr(7);
  if (host.find("://") != std::string::npos) throw Error(ErrorKind::user, "unsupported host " + host + ": use unix://PATH");
  return host;
}

void add_image_commands(CLI::App& app, ImageCommands& c) {
  c.images = app.add_subcommand("images", "List images");
  c.images->add_flag("-q,--quiet", c.quiet, "Only show image IDs");
  c.images->add_flag("--tree", c.tree, "List the platforms of multi-platform images under them");
  c.rmi = app.add_subcommand("rmi", "Remove one or more images");
  c.rmi->add_option("IMAGE", c.references)->required();
  c.rmi->add_flag("-f,--force", c.force, "Force removal of the image");
  c.tag = app.add_subcommand("tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE");
  c.tag->add_option("NAMES", c.references)->required()->expected(2);
  c.save = app.add_subcommand("save", "Save one or more images to a tar archive");
  c.save->add_option("IMAGE", c.references)->required();
  c.save->add_option("-o,--output", c.file, "Write to a file, instead of STDOUT");
  c.load = app.add_subcommand("load", "Load an image from a tar archive or STDIN");
  c.load->add_option("-i,--input", c.file, "Read from tar archive file, instead of STDIN");
  c.load->add_flag("-q,--quiet", c.quiet, "Suppress the load output");
  c.pull = app.add_subcommand("pull", "Download an image from a registry");
  c.pull->add_option("NAME", c.references, "Image name[:tag|@digest]")->required()->expected(1);
  c.pull->add_option("--platform", c.platform, "Set platform if server is multi-platform capable");
  c.pull->add_flag("-q,--quiet", c.quiet, "Suppress verbose output");
  c.push = app.add_subcommand("push", "Upload an image to a registry");
  c.push->add_option("NAME", c.references, "Image name[:tag]")->required()->expected(1);
  c.push->add_flag("-q,--quiet", c.quiet, "Suppress verbose output");
  c.login = app.add_subcommand("login", "Log in to a registry");
  c.login->add_option("SERVER", c.references, "Registry (default: docker.io)")->expected(0, 1);
  c.login->add_option("-u,--username", c.username, "Username");
  c.login->add_option("-p,--password", c.password, "Password");
  c.login->add_flag("--password-stdin", c.password_stdin, "Take the password from stdin");
  c.logout = app.add_subcommand("logout", "Log out from a registry");
  c.logout->add_option("SERVER", c.references, "Registry (default: docker.io)")->expected(0, 1);
  c.info = app.add_subcommand("info", "Display information about the build service");
  c.reload = app.add_subcommand("reload", "Make the build service read its daemon.json again");
}

int run_image_commands(const ImageCommands& c, const std::string& socket, std::ostream& out, std::ostream& err) {
  if (c.rmi->parsed()) return remove_images(c, socket, out, err);
  check_image_names(c);
  dbus::BuilderClient client(socket);
  if (c.images->parsed()) return list_images(client, c.quiet, c.tree, out);
  if (c.tag->parsed()) {
    client.tag_image(c.references[0], c.references[1]);
    return 0;
  }
  if (c.save->parsed()) {
    UniqueFd output;
    if (c.file.empty()) {
      if (::isatty(STDOUT_FILENO)) {
        throw Error(ErrorKind::user, "cowardly refusing to save to a terminal. Use the -o flag or redirect");
      }
      output.reset(check(::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3), "dup stdout"));
    } else {
      output.reset(check(::open(c.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), "open", c.file));
    }
    client.save_images(c.references, output.get());
    return 0;
  }
  if (c.load->parsed()) {
    UniqueFd input(c.file.empty() ? check(::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3), "dup stdin")
                                  : check(::open(c.file.c_str(), O_RDONLY | O_CLOEXEC), "open", c.file));
    for (const auto& line : client.load_images(input.get())) {
      if (!c.quiet) out << line << "\n";
    }
    return 0;
  }
  if (c.pull->parsed() || c.push->parsed()) {
    const std::string& reference = c.references.at(0);
    dbus::Options options;
    add_registry_credentials(options, caller_credentials({image::parse_reference(reference).domain}));
    if (!c.platform.empty()) options["platform"] = dbus::Value(c.platform);
    std::vector<std::string> lines =
        c.pull->parsed() ? client.pull_image(reference, options) : client.push_image(reference, options);
    if (c.quiet && !lines.empty()) lines = {lines.back()};
    for (const auto& line : lines) out << line << "\n";
    return 0;
  }
  if (c.login->parsed() || c.logout->parsed()) return login_or_logout(c, client, out);
  if (c.info->parsed()) return show_info(client, out);
  if (c.reload->parsed()) {
    dbus::Options result = client.reload();
    const auto changed = dbus::option_or(result, "changed", std::vector<std::string>{});
    out << "Reloaded " << dbus::option_or(result, "config-file", std::string()) << ": ";
    if (changed.empty()) out << "nothing changed";
    for (size_t i = 0; i < changed.size(); ++i) out << (i ? ", " : "changed ") << changed[i];
    out << "\n";
    return 0;
  }
  return 0;
}

}  // namespace kbuild::cli
