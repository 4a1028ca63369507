#include "cli/build_secrets.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "engine/dockerfile/go_values.h"

namespace kbuild::cli {
namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// As Go's os.Stat error reads: "stat PATH: no such file or directory".
[[noreturn]] void fail_stat(const std::string& path, int error) {
  std::string text = std::strerror(error);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  throw Error(ErrorKind::user, "failed to stat " + path + ": stat " + path + ": " + text);
}

UniqueFd open_secret_file(const std::string& id, const std::string& path) {
  // O_NONBLOCK: a FIFO planted at the path must not hang the client before it is refused.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) fail_stat(path, errno);
    throw Error(ErrorKind::user, "secret " + id + ": cannot open " + path + ": " + std::strerror(errno));
  }
  UniqueFd file(fd);
  struct stat st {};
  check(::fstat(file.get(), &st), "stat", path);
  if (S_ISDIR(st.st_mode)) throw Error(ErrorKind::user, "secret " + id + ": " + path + " is a directory");
  if (!S_ISREG(st.st_mode)) throw Error(ErrorKind::user, "secret " + id + ": " + path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxSecretSize) {
    throw Error(ErrorKind::user, "secret " + id + " too big. max size 500KiB");
  }
  int flags = check(::fcntl(file.get(), F_GETFL), "fcntl", path);
  check(::fcntl(file.get(), F_SETFL, flags & ~O_NONBLOCK), "fcntl", path);
  return file;
}

// A variable's value in a memfd sealed against any change, so that what kbuildd reads is what
// the caller had.
UniqueFd sealed_value(const std::string& id, const std::string& value) {
  if (value.size() > kMaxSecretSize) throw Error(ErrorKind::user, "secret " + id + " too big. max size 500KiB");
  UniqueFd fd(check(::memfd_create("kbuild-secret", MFD_CLOEXEC | MFD_ALLOW_SEALING), "memfd_create"));
  write_all(fd.get(), value, "secret " + id);
  check(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL), "sealing secret");
  return fd;
}

}  // namespace

SecretFlag parse_secret_flag(const std::string& value) {
  SecretFlag secret;
  std::string type;
  // One CSV record, as buildx reads it: a quoted field may hold a comma.
  std::vector<std::string> fields;
  try {
    fields = dockerfile::parse_csv_fields(value);
  } catch (const Error& e) {
    throw Error(ErrorKind::user, std::string("failed to parse csv secret: ") + e.what());
  }
  for (const std::string& field : fields) {
    size_t eq = field.find('=');
    if (eq == std::string::npos) throw Error(ErrorKind::user, "invalid field '" + field + "' must be a key=value pair");
    std::string key = lower(field.substr(0, eq)), v = field.substr(eq + 1);
    if (key == "type") {
      if (v != "file" && v != "env") throw Error(ErrorKind::user, "unsupported secret type \"" + v + "\"");
      type = v;
    } else if (key == "id") {
      secret.id = v;
    } else if (key == "source" || key == "src") {
      secret.file = v;
    } else if (key == "env") {
      secret.env = v;
    } else {
      throw Error(ErrorKind::user, "unexpected key '" + key + "' in '" + field + "'");
    }
  }
  if (type == "env" && secret.env.empty()) {
    secret.env = secret.file;
    secret.file.clear();
  }
  return secret;
}

std::vector<SecretFd> open_secrets(const std::vector<SecretFlag>& flags,
                                   const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  std::vector<SecretFd> out;
  std::set<std::string> ids;
  for (SecretFlag flag : flags) {
    if (flag.id.empty()) throw Error(ErrorKind::user, "secret missing ID");
    if (!ids.insert(flag.id).second) throw Error(ErrorKind::user, "secret " + flag.id + " is given twice");
    if (flag.file.empty() && flag.env.empty()) {
      if (getenv(flag.id)) {
        flag.env = flag.id;
      } else {
        flag.file = flag.id;
      }
    }
    // As BuildKit: env wins over src when both are given; an unset variable is an empty value.
    UniqueFd fd = !flag.env.empty() ? sealed_value(flag.id, getenv(flag.env).value_or(""))
                                    : open_secret_file(flag.id, flag.file);
    out.push_back(SecretFd{flag.id, std::move(fd)});
  }
  return out;
}

}  // namespace kbuild::cli
