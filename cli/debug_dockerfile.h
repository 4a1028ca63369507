// `kbuildctl debug dockerfile`: the stages and instructions of a Dockerfile after expansion, as
// JSON, without building anything.
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

// Turns --build-arg values into a map: "K=V" sets K; a bare "K" takes K from the caller's
// environment and is left out when unset, as docker build does.
std::map<std::string, std::string> parse_build_args(
    const std::vector<std::string>& values, const std::function<std::optional<std::string>(const std::string&)>& getenv);

}  // namespace kbuild::cli
