// Probe builds of kbuild-context-reader for context_reader_test: the real program's body with a
// check that runs where the walk would begin, after the switch to the caller's credentials.
// KBUILD_PROBE_REPORT fails the read with a report of the process's state; KBUILD_PROBE_STALL
// sleeps, as a reader stuck on a slow filesystem would.
#include <dirent.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/context/reader_program.h"

namespace {

[[maybe_unused]] void report() {
  std::string report = "fds=";
  DIR* dir = ::opendir("/proc/self/fd");
  std::vector<int> fds;
  while (struct dirent* d = ::readdir(dir)) {
    if (d->d_name[0] == '.') continue;
    const int fd = std::atoi(d->d_name);
    if (fd != ::dirfd(dir)) fds.push_back(fd);
  }
  ::closedir(dir);
  std::sort(fds.begin(), fds.end());
  for (int fd : fds) report += std::to_string(fd) + ",";
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    for (const char* key : {"Uid:", "Gid:", "Groups:", "CapEff:", "CapPrm:", "CapAmb:", "NoNewPrivs:"}) {
      if (line.starts_with(key)) report += " " + line;
    }
  }
  report += " dumpable=" + std::to_string(::prctl(PR_GET_DUMPABLE));
  std::ifstream environ("/proc/self/environ");
  const std::string env((std::istreambuf_iterator<char>(environ)), std::istreambuf_iterator<char>());
  report += " environ=" + std::to_string(env.size());
  char exe[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  const std::string path(exe, n > 0 ? static_cast<size_t>(n) : 0);
  report += " exe=" + path.substr(path.rfind('/') + 1);
  std::replace(report.begin(), report.end(), '\t', ' ');
  throw kbuild::Error(kbuild::ErrorKind::user, report);
}

}  // namespace

int main() {
#if defined(KBUILD_PROBE_REPORT)
  return kbuild::context::context_reader_main(report);
#elif defined(KBUILD_PROBE_STALL)
  return kbuild::context::context_reader_main([] { ::sleep(30); });
#endif
}
