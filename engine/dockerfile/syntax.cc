#include "engine/dockerfile/syntax.h"

#include <regex>

#include "common/error.h"

namespace kbuild::dockerfile {

FrontendChoice parse_frontend_reference(const std::string& reference) {
  // [docker.io/][library-less] docker/dockerfile[-upstream][:tag][@sha256:digest]
  static const std::regex builtin(
      R"(^(?:(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)/)?docker/dockerfile(?:-upstream)?)"
      R"((?::((?:1(?:\.\d+){0,2})(?:-labs)?|labs|latest))?(?:@sha256:[0-9a-f]{64})?$)");
  std::smatch m;
  if (!std::regex_match(reference, m, builtin)) {
    throw Error(ErrorKind::user,
                "unsupported frontend \"" + reference +
                    "\": kbuild builds with its built-in Dockerfile frontend and answers only to docker/dockerfile "
                    "(for example \"# syntax=docker/dockerfile:1\"); remove the syntax line or point it there");
  }
  FrontendChoice choice;
  choice.requested = reference;
  choice.version = m[1].matched && m[1].str() != "latest" ? m[1].str() : "";
  choice.labs = choice.version.find("labs") != std::string::npos;
  return choice;
}

FrontendChoice choose_frontend(const ParsedDockerfile& parsed, const std::map<std::string, std::string>& build_args) {
  std::string reference;
  if (auto it = build_args.find("BUILDKIT_SYNTAX"); it != build_args.end() && !it->second.empty()) {
    reference = it->second;
  } else if (auto directive = parsed.directive("syntax")) {
    reference = *directive;
  }
  if (reference.empty()) return {};
  return parse_frontend_reference(reference);
}

}  // namespace kbuild::dockerfile
