#include <iostream>

#include "cli/kbuildctl.h"

int main(int argc, char** argv) { return kbuild::cli::run_kbuildctl(argc, argv, std::cin, std::cout, std::cerr); }
