#include <cstdio>
#include <cstring>

#include "common/version.h"
#include "engine/sandbox/exec_helper.h"

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "--version") == 0)) {
    if (std::strcmp(argv[1], "--version") == 0) {
      std::printf("kbuild-exec %s\n", kbuild::kVersion);
    } else {
      std::printf("kbuild-exec: runs one build step for kbuildd; not meant to be started by hand.\n");
    }
    return 0;
  }
  return kbuild::sandbox::exec_helper_main();
}
