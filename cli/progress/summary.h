// What buildx prints after the progress display has closed: the warnings summary and, for a
// failed build, the error line. The caller prints, in this order: Renderer::finish() (last frame
// and the "------" blocks of failed steps), warnings_summary(), then for a failure the
// Dockerfile excerpt (cli/error_excerpt.h) and build_error_line().
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dbus/progress_events.h"

namespace kbuild::progress {

// Prints a warning's source for --debug; the caller's Dockerfile excerpt.
using WarningSourcePrinter = std::function<std::string(const SourceInfo&, const std::vector<Range>&)>;

// "\n " + yellow "1 warning found (use docker --debug to expand):\n" + " - <short>\n"... ;
// "" without warnings. With `debug`, each warning's detail lines, "More info: <url>" and source.
std::string warnings_summary(const std::vector<VertexWarning>& warnings, bool debug = false,
                             const WarningSourcePrinter& print_source = {});

// "ERROR: failed to build: failed to solve: <message>\n", buildx's last line for an error the
// daemon's solve returned (the message a failed vertex also carries in its `error`).
std::string build_error_line(std::string_view solve_error);

}  // namespace kbuild::progress
