#include "service/build_secrets.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/error.h"
#include "common/syscall.h"

namespace kbuild::service {
namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISFIFO(mode)) return "a pipe or FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISLNK(mode)) return "a symlink";
  return "not a regular file";
}

bool is_memfd(int fd) {
  char link[64];
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
  return n > 0 && std::string_view(link, static_cast<size_t>(n)).starts_with("/memfd:");
}

void check_fd(int fd, const std::string& id) {
  auto refuse = [&](const std::string& what) { throw Error(ErrorKind::user, "secret " + id + ": the fd is " + what); };
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) refuse("not open");
  if (flags & O_PATH) refuse("an O_PATH fd");
  if ((flags & O_ACCMODE) == O_WRONLY) refuse("not open for reading");
  struct stat st {};
  check(::fstat(fd, &st), "stat", "secret " + id);
  if (!S_ISREG(st.st_mode)) refuse(kind_of(st.st_mode));
  if (is_memfd(fd)) {
    int seals = ::fcntl(fd, F_GET_SEALS);
    const int needed = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
    if (seals < 0 || (seals & needed) != needed) refuse("a memfd that is not sealed against writes");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxSecretBytes) {
    throw Error(ErrorKind::user, "secret " + id + " too big. max size 500KiB");
  }
}

}  // namespace

std::string read_secret_fd(int fd, const std::string& id) {
  check_fd(fd, id);
  // Read to one byte past the limit: a file that grew since fstat is refused, not cut.
  std::string value(kMaxSecretBytes + 1, '\0');
  size_t got = 0;
  while (got < value.size()) {
    ssize_t n = ::pread(fd, value.data() + got, value.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("reading secret", id);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > kMaxSecretBytes) throw Error(ErrorKind::user, "secret " + id + " too big. max size 500KiB");
  value.resize(got);
  return value;
}

}  // namespace kbuild::service
