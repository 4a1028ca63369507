// kbuildctl's image management: images, rmi, tag, save, load, pull, push, info, as the docker commands
// of the same names print them; and reload, which has the service read its daemon.json again.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kbuild::cli {

struct ImageCommands {
  CLI::App* images = nullptr;
  CLI::App* rmi = nullptr;
  CLI::App* tag = nullptr;
  CLI::App* save = nullptr;
  CLI::App* load = nullptr;
  CLI::App* info = nullptr;
  CLI::App* reload = nullptr;
  CLI::App* pull = nullptr;
  CLI::App* push = nullptr;
  CLI::App* login = nullptr;
  CLI::App* logout = nullptr;
  std::string username, password;  // login
  bool password_stdin = false;
  std::string platform;  // pull --platform
  std::vector<std::string> references;
  bool force = false;
  bool quiet = false;
  bool tree = false;  // images --tree: each platform of an index under it
  std::string file;  // save -o / load -i
};

// Declares the commands on `app`, binding their flags to `commands`, which must outlive parsing.
void add_image_commands(CLI::App& app, ImageCommands& commands);

// Runs whichever of the commands was parsed; returns the exit code.
int run_image_commands(const ImageCommands& commands, const std::string& socket, std::ostream& out, std::ostream& err);

// "unix:///run/x.sock" or a plain path to the socket's path; empty means the default.
std::string socket_path_from_host(const std::string& host);

}  // namespace kbuild::cli
