// What the classic (legacy) builder of Docker 20.10 refuses, in its own words: a Dockerfile
// feature or a build option that only BuildKit has.
#pragma once

#include <string>

#include "engine/dockerfile/instructions.h"

namespace kbuild::dockerfile {

// "the --mount option requires BuildKit. Refer to ...", as the classic builder says it of a
// flag it knows but cannot honour (RUN --mount, COPY --chmod) and as kbuild says it of the
// other BuildKit-only options (--secret, --ssh, --output, ...).
std::string requires_buildkit(const std::string& option);

// Throws kbuild::Error (user) for what the classic builder's parser does not know, as it says it
// of any stage of the file: flags it does not define (RUN --network, COPY --link, --parents,
// --exclude, ...) and heredocs.
void refuse_unknown_syntax(const Instruction& instruction);

// Throws kbuild::Error (user) for what it parses but cannot run, in a stage it builds: RUN
// --mount, COPY/ADD --chmod.
void refuse_buildkit_only(const Instruction& instruction);

// Throws kbuild::Error (user) in the classic builder's words unless a stage is named `target`
// (case-insensitively; it knows no stage by index).
void check_classic_target(const Dockerfile& dockerfile, const std::string& target);

}  // namespace kbuild::dockerfile
