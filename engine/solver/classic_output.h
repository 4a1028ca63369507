// The text of Docker 20.10's classic builder, as its daemon streams it: "Step 2/4 : RUN ...",
// " ---> Running in 3f2a...", " ---> Using cache", "Successfully built ...". Pure formatting,
// plus the size of the context as docker's client counts it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/context/manifest.h"

namespace kbuild::solver::classic {

// Go's units.HumanSizeWithPrecision(bytes, 4): "2.048kB", "25.6kB", "512B".
std::string human_size(int64_t bytes);
// "Sending build context to Docker daemon  2.048kB\r\r\n" (the size right-aligned in 8 columns,
// the line ended as docker's client ends it).
std::string sending_context(int64_t bytes);
// The bytes of the tar docker's client would send of a context holding `manifest`: a 512-byte
// header per entry (a hard link after its first name is a header alone), file data rounded up
// to 512, a PAX header and its records for a name or link target ustar cannot hold, and the
// 1024 bytes that end a tar.
int64_t context_tar_size(const context::Manifest& manifest);

std::string step_line(size_t number, size_t total, std::string_view text);
// "abc123def456" of "sha256:abc123def456...": how Docker shows an id.
std::string short_id(std::string_view digest);
// A step's image id: the same parent, instruction and cache key give the same id, so a rebuild
// shows the ids the first build showed, as the classic builder's cache does.
std::string step_id(std::string_view parent, std::string_view text, std::string_view key);
// The id shown for the container a step "ran in", derived from the step's id.
std::string container_id(std::string_view step);
// "[Warning] One or more build-args [A B] were not consumed\n", names sorted; "" for none.
std::string unused_build_args(std::vector<std::string> names);
// A RUN's failure in the classic builder's words when `message` is the solver's exit-code
// failure ("The command '/bin/sh -c false' returned a non-zero code: 1"); else `message`.
std::string run_failure(const std::string& message, const std::vector<std::string>& argv);

}  // namespace kbuild::solver::classic
