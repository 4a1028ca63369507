// Which frontend a Dockerfile asks for ("# syntax=" or the BUILDKIT_SYNTAX build arg). kbuild
// has one frontend, built in; it answers to docker/dockerfile's names and refuses the rest.
#pragma once

#include <map>
#include <string>

#include "engine/dockerfile/parser.h"

namespace kbuild::dockerfile {

struct FrontendChoice {
  std::string requested;  // the image reference as asked for; empty when none was
  std::string version;    // the tag asked for: "1", "1.7", "1.7.1", "labs", "1.7-labs"; empty = latest
  bool labs = false;      // a -labs channel: experimental features were asked for
};

// Throws kbuild::Error (user) naming the frontend when it is not docker/dockerfile.
FrontendChoice choose_frontend(const ParsedDockerfile& parsed, const std::map<std::string, std::string>& build_args);

// Checks one reference; exposed for tests.
FrontendChoice parse_frontend_reference(const std::string& reference);

}  // namespace kbuild::dockerfile
