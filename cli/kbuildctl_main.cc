#include <csignal>
#include <iostream>

#include "cli/kbuildctl.h"

int main(int argc, char** argv) {
  // A daemon that stops reading a stream we feed it must not kill us: its error says why.
  std::signal(SIGPIPE, SIG_IGN);
  return kbuild::cli::run_kbuildctl(argc, argv, std::cin, std::cout, std::cerr);
}
