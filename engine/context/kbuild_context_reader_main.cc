#include <cstdio>
#include <cstring>

#include "common/version.h"
#include "engine/context/reader_program.h"

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "--version") == 0)) {
    if (std::strcmp(argv[1], "--version") == 0) {
      std::printf("kbuild-context-reader %s\n", kbuild::kVersion);
    } else {
      std::printf("kbuild-context-reader: reads a build context as its caller for kbuildd; not meant to be "
                  "started by hand.\n");
    }
    return 0;
  }
  return kbuild::context::context_reader_main();
}
