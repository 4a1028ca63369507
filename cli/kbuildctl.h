// The kbuildctl command line: flags and subcommands, kept out of main() so tests can run it.
#pragma once

#include <iosfwd>

namespace kbuild::cli {

// Runs kbuildctl with the given arguments; returns the process exit code.
int run_kbuildctl(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace kbuild::cli
