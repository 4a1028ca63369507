// `kbuildctl debug dockerfile` and `debug plan`: what a Dockerfile says after expansion, and the
// op graph it converts to, as JSON, without building anything.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace kbuild::cli {

struct DebugDockerfileRequest {
  std::string dockerfile_text;
  std::string target;
  std::map<std::string, std::string> build_args;
  std::string platform;  // --platform; empty = native
};

// The JSON view of a Dockerfile. Throws kbuild::Error for a Dockerfile that does not parse or
// resolve, with BuildKit's message.
nlohmann::json describe_dockerfile(const DebugDockerfileRequest& request);

// The op graph the Dockerfile converts to, as JSON: each op the target needs with its digest,
// kind, definition (inputs by digest) and vertex name, inputs first, then the image config.
// Base images are not looked up (the client has no store): their sources carry no pinned
// digest, so their ops' digests differ from the daemon's. The same input gives the same text.
nlohmann::json describe_plan(const DebugDockerfileRequest& request);

// Turns --build-arg values into a map: "K=V" sets K; a bare "K" takes K from the caller's
// environment and is left out when unset, as docker build does.
std::map<std::string, std::string> parse_build_args(
    const std::vector<std::string>& values, const std::function<std::optional<std::string>(const std::string&)>& getenv);

}  // namespace kbuild::cli
