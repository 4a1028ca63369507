#include "cli/build_secrets.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"

namespace kbuild::cli {
namespace {

using Env = std::map<std::string, std::string>;

// A getenv over a fixed environment, so that the tests do not depend on the process's own.
std::function<std::optional<std::string>(const std::string&)> env_of(Env env) {
  return [env = std::move(env)](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

std::string user_error(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error was thrown";
  return "";
}

std::string parse_error(const std::string& value) {
  return user_error([&] { parse_secret_flag(value); });
}

std::string open_error(const std::vector<SecretFlag>& flags, Env env = {}) {
  return user_error([&] { open_secrets(flags, env_of(std::move(env))); });
}

// Everything the fd holds, from its start.
std::string contents(int fd) {
  std::string out;
  char buf[65536];
  for (off_t at = 0;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n < 0) throw std::runtime_error(std::string("pread: ") + std::strerror(errno));
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    at += n;
  }
}

void write_file(const std::string& path, const std::string& data, mode_t mode = 0600) {
  std::ofstream(path, std::ios::binary) << data;
  ::chmod(path.c_str(), mode);
}

// Runs `body` in a forked child and returns what it wrote to its pipe, or nullopt when it did
// not finish within `limit` (it is killed then): a call that blocks fails the test, never
// hangs it. The child exits with _exit, so no destructor of the parent's objects runs twice.
std::optional<std::string> in_child(const std::function<std::string()>& body,
                                    std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::close(fds[0]);
    std::string said;
    try {
      said = body();
    } catch (const std::exception& e) {
      said = std::string("exception: ") + e.what();
    }
    (void)!::write(fds[1], said.data(), said.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string said;
  auto deadline = std::chrono::steady_clock::now() + limit;
  bool finished = false;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) {
      finished = true;
      break;
    }
    said.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (!finished) ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  if (!finished) return std::nullopt;
  return said;
}

// A directory every user may enter, for files other users are to be refused.
class SecretFiles : public ::testing::Test {
 protected:
  void SetUp() override { ::chmod(dir_.path().c_str(), 0755); }
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }
  TempDir dir_;
};

// -- parse_secret_flag ---------------------------------------------------------------------------

TEST(ParseSecretFlag, IdAndSrcOrSourceNameAFile) {
  SecretFlag flag = parse_secret_flag("id=npmrc,src=/home/me/.npmrc");
  EXPECT_EQ(flag.id, "npmrc");
  EXPECT_EQ(flag.file, "/home/me/.npmrc");
  EXPECT_EQ(flag.env, "");
  flag = parse_secret_flag("source=relative/file,id=x");
  EXPECT_EQ(flag.id, "x");
  EXPECT_EQ(flag.file, "relative/file");
  EXPECT_EQ(flag.env, "");
}

TEST(ParseSecretFlag, EnvNamesAVariable) {
  SecretFlag flag = parse_secret_flag("id=token,env=GITHUB_TOKEN");
  EXPECT_EQ(flag.id, "token");
  EXPECT_EQ(flag.env, "GITHUB_TOKEN");
  EXPECT_EQ(flag.file, "");
}

TEST(ParseSecretFlag, TypeFileKeepsSrcAsAFile) {
  SecretFlag flag = parse_secret_flag("type=file,id=a,src=/run/a");
  EXPECT_EQ(flag.file, "/run/a");
  EXPECT_EQ(flag.env, "");
}

TEST(ParseSecretFlag, TypeEnvTurnsSrcIntoTheVariable) {
  for (const std::string value : {"type=env,id=a,src=VAR", "id=a,src=VAR,type=env", "id=a,source=VAR,type=env"}) {
    SecretFlag flag = parse_secret_flag(value);
    EXPECT_EQ(flag.id, "a") << value;
    EXPECT_EQ(flag.env, "VAR") << value;
    EXPECT_EQ(flag.file, "") << value;
  }
}

TEST(ParseSecretFlag, TypeEnvWithEnvGivenKeepsBoth) {
  SecretFlag flag = parse_secret_flag("type=env,id=a,env=FROM_ENV,src=/a/file");
  EXPECT_EQ(flag.env, "FROM_ENV");
  EXPECT_EQ(flag.file, "/a/file");
}

TEST(ParseSecretFlag, ShorthandIsAnIdAlone) {
  SecretFlag flag = parse_secret_flag("id=MY_TOKEN");
  EXPECT_EQ(flag.id, "MY_TOKEN");
  EXPECT_EQ(flag.file, "");
  EXPECT_EQ(flag.env, "");
}

TEST(ParseSecretFlag, KeysAreCaseInsensitiveValuesAreNot) {
  SecretFlag flag = parse_secret_flag("ID=Mixed,SRC=/Path/File,Type=file");
  EXPECT_EQ(flag.id, "Mixed");
  EXPECT_EQ(flag.file, "/Path/File");
  flag = parse_secret_flag("Id=e,ENV=Some_Var");
  EXPECT_EQ(flag.env, "Some_Var");
}

TEST(ParseSecretFlag, AValueKeepsEveryEqualsSignAfterTheFirst) {
  SecretFlag flag = parse_secret_flag("id=a=b,src=/x=y");
  EXPECT_EQ(flag.id, "a=b");
  EXPECT_EQ(flag.file, "/x=y");
}

// buildx reads the value with encoding/csv: a quoted field may hold a comma.
TEST(ParseSecretFlag, AQuotedFieldMayHoldACommaAsBuildxCsvReads) {
  SecretFlag flag = parse_secret_flag(R"(id=a,"src=/tmp/with,comma")");
  EXPECT_EQ(flag.id, "a");
  EXPECT_EQ(flag.file, "/tmp/with,comma");
}

TEST(ParseSecretFlag, AFieldWithoutEqualsIsRefusedInBuildxWords) {
  EXPECT_EQ(parse_error("id=a,x"), "invalid field 'x' must be a key=value pair");
  EXPECT_EQ(parse_error("mysecret"), "invalid field 'mysecret' must be a key=value pair");
}

TEST(ParseSecretFlag, AnUnknownKeyIsRefusedLowercasedWithItsField) {
  EXPECT_EQ(parse_error("id=a,foo=bar"), "unexpected key 'foo' in 'foo=bar'");
  EXPECT_EQ(parse_error("id=a,Target=/x"), "unexpected key 'target' in 'Target=/x'");
}

TEST(ParseSecretFlag, OnlyTheFileAndEnvTypesAreTaken) {
  EXPECT_EQ(parse_error("id=a,type=blob"), "unsupported secret type \"blob\"");
  EXPECT_EQ(parse_error("type=FILE,id=a"), "unsupported secret type \"FILE\"");
}

// -- open_secrets --------------------------------------------------------------------------------

TEST(OpenSecrets, AnIdIsRequired) {
  EXPECT_EQ(open_error({SecretFlag{"", "/etc/hostname", ""}}), "secret missing ID");
  EXPECT_EQ(open_error({SecretFlag{"", "", "HOME"}}, {{"HOME", "/root"}}), "secret missing ID");
}

TEST_F(SecretFiles, AnIdGivenTwiceIsRefused) {
  write_file(path("a"), "one");
  std::string message = open_error({SecretFlag{"dup", path("a"), ""}, SecretFlag{"dup", "", "V"}}, {{"V", "x"}});
  EXPECT_NE(message.find("dup"), std::string::npos) << message;
  EXPECT_NE(message.find("twice"), std::string::npos) << message;
}

TEST_F(SecretFiles, AFileIsOpenedReadOnlyCloseOnExecAndBlocking) {
  write_file(path("token"), "file value\n");
  std::vector<SecretFd> fds = open_secrets({SecretFlag{"t", path("token"), ""}}, env_of({}));
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(fds[0].id, "t");
  EXPECT_EQ(contents(fds[0].fd.get()), "file value\n");
  int flags = ::fcntl(fds[0].fd.get(), F_GETFL);
  EXPECT_EQ(flags & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(flags & O_NONBLOCK, 0) << "the fd kbuildd reads is left non-blocking";
  EXPECT_TRUE(::fcntl(fds[0].fd.get(), F_GETFD) & FD_CLOEXEC);
  struct stat st {};
  ASSERT_EQ(::fstat(fds[0].fd.get(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST_F(SecretFiles, ASymlinkToAFileIsFollowedAsOsStatDoes) {
  write_file(path("real"), "through a link");
  ASSERT_EQ(::symlink(path("real").c_str(), path("link").c_str()), 0);
  std::vector<SecretFd> fds = open_secrets({SecretFlag{"l", path("link"), ""}}, env_of({}));
  EXPECT_EQ(contents(fds[0].fd.get()), "through a link");
}

TEST_F(SecretFiles, SecretsComeBackInTheOrderGiven) {
  write_file(path("f"), "F");
  std::vector<SecretFd> fds = open_secrets(
      {SecretFlag{"zeta", path("f"), ""}, SecretFlag{"alpha", "", "A"}, SecretFlag{"mid", path("f"), ""}},
      env_of({{"A", "from A"}}));
  ASSERT_EQ(fds.size(), 3u);
  EXPECT_EQ(fds[0].id, "zeta");
  EXPECT_EQ(fds[1].id, "alpha");
  EXPECT_EQ(fds[2].id, "mid");
  EXPECT_EQ(contents(fds[1].fd.get()), "from A");
}

TEST(OpenSecrets, AnEnvValueIsASealedMemfd) {
  std::vector<SecretFd> fds = open_secrets({SecretFlag{"tok", "", "TOKEN"}}, env_of({{"TOKEN", "s3cr3t value"}}));
  ASSERT_EQ(fds.size(), 1u);
  int fd = fds[0].fd.get();
  EXPECT_EQ(contents(fd), "s3cr3t value");
  int seals = ::fcntl(fd, F_GET_SEALS);
  ASSERT_GE(seals, 0) << "not a memfd that takes seals: " << std::strerror(errno);
  for (int seal : {F_SEAL_WRITE, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL}) {
    EXPECT_TRUE(seals & seal) << "seal " << seal << " missing from " << seals;
  }
  EXPECT_LT(::pwrite(fd, "x", 1, 0), 0);
  EXPECT_NE(::ftruncate(fd, 0), 0);
  EXPECT_EQ(contents(fd), "s3cr3t value");
  EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
  char link[128] = {};
  ASSERT_GT(::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), link, sizeof link - 1), 0);
  EXPECT_EQ(std::string(link).rfind("/memfd:", 0), 0u) << link;
}

TEST_F(SecretFiles, EnvWinsOverSrcWhenBothAreGiven) {
  write_file(path("file"), "from the file");
  std::vector<SecretFd> fds = open_secrets({SecretFlag{"both", path("file"), "V"}}, env_of({{"V", "from V"}}));
  EXPECT_EQ(contents(fds[0].fd.get()), "from V");
}

TEST(OpenSecrets, AnUnsetVariableIsAnEmptyValue) {
  std::vector<SecretFd> fds = open_secrets({SecretFlag{"e", "", "NOT_SET"}}, env_of({}));
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(contents(fds[0].fd.get()), "");
  EXPECT_GE(::fcntl(fds[0].fd.get(), F_GET_SEALS), 0);
}

TEST_F(SecretFiles, ShorthandIsTheVariableWhenSetElseTheFile) {
  // The file of the shorthand is the id as a path, relative to the working directory.
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(::chdir(dir_.path().c_str()), 0);
  write_file(path("SHORT"), "from the file SHORT");
  std::vector<SecretFd> as_env = open_secrets({SecretFlag{"SHORT", "", ""}}, env_of({{"SHORT", "from $SHORT"}}));
  std::vector<SecretFd> as_file = open_secrets({SecretFlag{"SHORT", "", ""}}, env_of({}));
  // Set but empty is set (os.LookupEnv): the variable, not the file.
  std::vector<SecretFd> as_empty_env = open_secrets({SecretFlag{"SHORT", "", ""}}, env_of({{"SHORT", ""}}));
  std::string missing = open_error({SecretFlag{"NO_SUCH_ONE", "", ""}});
  ASSERT_EQ(::chdir(cwd), 0);
  EXPECT_EQ(contents(as_env[0].fd.get()), "from $SHORT");
  EXPECT_GE(::fcntl(as_env[0].fd.get(), F_GET_SEALS), 0);
  EXPECT_EQ(contents(as_file[0].fd.get()), "from the file SHORT");
  EXPECT_LT(::fcntl(as_file[0].fd.get(), F_GET_SEALS), 0) << "the file's fd is not the file";
  EXPECT_EQ(contents(as_empty_env[0].fd.get()), "");
  EXPECT_EQ(missing, "failed to stat NO_SUCH_ONE: stat NO_SUCH_ONE: no such file or directory");
}

TEST_F(SecretFiles, AMissingFileIsRefusedAsGoStatSaysIt) {
  std::string p = path("absent");
  EXPECT_EQ(open_error({SecretFlag{"s", p, ""}}),
            "failed to stat " + p + ": stat " + p + ": no such file or directory");
  write_file(path("plain"), "x");
  std::string under_file = path("plain") + "/below";
  EXPECT_EQ(open_error({SecretFlag{"s", under_file, ""}}),
            "failed to stat " + under_file + ": stat " + under_file + ": not a directory");
}

TEST_F(SecretFiles, ADirectoryIsRefused) {
  std::string message = open_error({SecretFlag{"s", dir_.path(), ""}});
  EXPECT_NE(message.find("secret s"), std::string::npos) << message;
  EXPECT_NE(message.find(dir_.path()), std::string::npos) << message;
  EXPECT_NE(message.find("directory"), std::string::npos) << message;
}

TEST_F(SecretFiles, AFifoIsRefusedWithoutWaitingForAWriter) {
  std::string fifo = path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::optional<std::string> said = in_child(
      [&] {
        try {
          open_secrets({SecretFlag{"s", fifo, ""}}, env_of({}));
          return std::string("accepted");
        } catch (const Error& e) {
          return std::string(e.what());
        }
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(said.has_value()) << "open_secrets still waited on the FIFO after 5 s";
  EXPECT_NE(said->find("secret s"), std::string::npos) << *said;
  EXPECT_NE(said->find("not a regular file"), std::string::npos) << *said;
}

TEST(OpenSecrets, ACharacterDeviceIsRefused) {
  std::string message = open_error({SecretFlag{"s", "/dev/null", ""}});
  EXPECT_NE(message.find("/dev/null"), std::string::npos) << message;
  EXPECT_NE(message.find("not a regular file"), std::string::npos) << message;
}

TEST_F(SecretFiles, AFileOf500KiBIsTakenOneByteMoreIsRefused) {
  std::string at_limit(512000, 'a');
  at_limit.back() = 'z';
  write_file(path("limit"), at_limit);
  write_file(path("over"), std::string(512001, 'b'));
  std::vector<SecretFd> fds = open_secrets({SecretFlag{"s", path("limit"), ""}}, env_of({}));
  EXPECT_EQ(contents(fds[0].fd.get()), at_limit);
  EXPECT_EQ(open_error({SecretFlag{"s", path("over"), ""}}), "secret s too big. max size 500KiB");
  EXPECT_EQ(kMaxSecretSize, 512000u);
}

TEST(OpenSecrets, AnEnvValueOf500KiBIsTakenOneByteMoreIsRefused) {
  std::string at_limit(512000, 'e');
  std::vector<SecretFd> fds = open_secrets({SecretFlag{"v", "", "BIG"}}, env_of({{"BIG", at_limit}}));
  EXPECT_EQ(contents(fds[0].fd.get()), at_limit);
  EXPECT_EQ(open_error({SecretFlag{"v", "", "BIG"}}, {{"BIG", at_limit + "e"}}), "secret v too big. max size 500KiB");
}

// The file is opened as the caller: one it may not read is refused before anything is sent.
// As root every file is readable, so the check runs in a child that has become nobody.
TEST_F(SecretFiles, AFileTheCallerCannotReadIsRefused) {
  std::string p = path("root-only");
  write_file(p, "only root reads this", 0600);
  if (::geteuid() == 0) ASSERT_EQ(::chown(p.c_str(), 0, 0), 0);
  else ASSERT_EQ(::chmod(p.c_str(), 0000), 0);
  std::optional<std::string> said = in_child([&] {
    if (::geteuid() == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
          ::setresuid(65534, 65534, 65534) != 0) {
        return std::string("could not become nobody: ") + std::strerror(errno);
      }
    }
    try {
      std::vector<SecretFd> fds = open_secrets({SecretFlag{"s", p, ""}}, env_of({}));
      return "accepted: " + contents(fds[0].fd.get());
    } catch (const Error& e) {
      return std::string(e.what());
    }
  });
  ASSERT_TRUE(said.has_value());
  EXPECT_EQ(said->find("could not become nobody"), std::string::npos) << *said;
  EXPECT_EQ(said->find("accepted"), std::string::npos) << *said;
  EXPECT_NE(said->find("secret s"), std::string::npos) << *said;
  EXPECT_NE(said->find(p), std::string::npos) << *said;
  EXPECT_NE(said->find("Permission denied"), std::string::npos) << *said;
  EXPECT_EQ(said->find("only root reads this"), std::string::npos) << *said;
}

TEST_F(SecretFiles, NothingIsOpenedWhenOneSecretOfSeveralIsBad) {
  write_file(path("good"), "good");
  auto open_count = [] {
    int n = 0;
    for (int fd = 0; fd < 1024; ++fd) n += ::fcntl(fd, F_GETFD) >= 0;
    return n;
  };
  int before = open_count();
  open_error({SecretFlag{"g", path("good"), ""}, SecretFlag{"e", "", "V"}, SecretFlag{"b", path("absent"), ""}},
             {{"V", "v"}});
  EXPECT_EQ(open_count(), before) << "the secrets opened before the bad one are still open";
}

}  // namespace
}  // namespace kbuild::cli
