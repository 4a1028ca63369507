#include "service/build_secrets.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <string>

#include "common/error.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::service {
namespace {

using namespace std::string_literals;

constexpr int kWriteSeals = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;

std::string refusal(int fd, const std::string& id = "s") {
  try {
    std::string value = read_secret_fd(fd, id);
    ADD_FAILURE() << "the fd was read (" << value.size() << " bytes)";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user) << e.what();
    return e.what();
  }
  return "";
}

class SecretFd : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }
  // A regular file holding `data`, opened with `flags`.
  UniqueFd file(const std::string& data, int flags = O_RDONLY, const std::string& name = "secret") {
    std::ofstream(path(name), std::ios::binary | std::ios::trunc) << data;
    return UniqueFd(::open(path(name).c_str(), flags | O_CLOEXEC));
  }
  TempDir dir_;
};

UniqueFd memfd(const std::string& data, int seals) {
  UniqueFd fd(::memfd_create("test-secret", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw std::runtime_error("memfd_create");
  if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    throw std::runtime_error("write");
  }
  if (seals && ::fcntl(fd.get(), F_ADD_SEALS, seals) != 0) throw std::runtime_error("F_ADD_SEALS");
  return fd;
}

TEST_F(SecretFd, ARegularFileIsReadWhole) {
  UniqueFd fd = file("line one\nline two\0with a NUL"s);
  ASSERT_TRUE(fd);
  EXPECT_EQ(read_secret_fd(fd.get(), "s"), "line one\nline two\0with a NUL"s);
}

TEST_F(SecretFd, AnEmptyFileIsAnEmptyValue) {
  UniqueFd fd = file("");
  EXPECT_EQ(read_secret_fd(fd.get(), "s"), "");
}

TEST_F(SecretFd, AFileOpenedForReadingAndWritingIsRead) {
  UniqueFd fd = file("rw", O_RDWR);
  EXPECT_EQ(read_secret_fd(fd.get(), "s"), "rw");
}

TEST_F(SecretFd, AFileIsReadFromItsStartWhateverItsOffsetAndTheOffsetStays) {
  UniqueFd fd = file("0123456789");
  ASSERT_EQ(::lseek(fd.get(), 7, SEEK_SET), 7);
  EXPECT_EQ(read_secret_fd(fd.get(), "s"), "0123456789");
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), 7) << "the caller's offset moved";
  ASSERT_EQ(::lseek(fd.get(), 0, SEEK_END), 10);
  EXPECT_EQ(read_secret_fd(fd.get(), "s"), "0123456789");
}

TEST_F(SecretFd, ADirectoryIsRefusedByName) {
  UniqueFd fd(::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  EXPECT_EQ(refusal(fd.get(), "dir-id"), "secret dir-id: the fd is a directory");
}

TEST_F(SecretFd, AnOPathFdIsRefusedByNameEvenOnARegularFile) {
  file("behind O_PATH");
  UniqueFd fd(::open(path("secret").c_str(), O_PATH | O_CLOEXEC));
  ASSERT_TRUE(fd);
  EXPECT_EQ(refusal(fd.get()), "secret s: the fd is an O_PATH fd");
  UniqueFd dir(::open(dir_.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  EXPECT_EQ(refusal(dir.get()), "secret s: the fd is an O_PATH fd");
}

TEST(SecretFdKinds, ASocketIsRefusedByName) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  ASSERT_EQ(::write(b.get(), "value", 5), 5);
  EXPECT_EQ(refusal(a.get()), "secret s: the fd is a socket");
}

TEST(SecretFdKinds, APipeIsRefusedByNameWithoutWaitingOnIt) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  // The write end stays open and silent: a read would block forever.
  EXPECT_EQ(refusal(read_end.get()), "secret s: the fd is a pipe or FIFO");
}

TEST_F(SecretFd, AFifoIsRefusedByName) {
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  UniqueFd fd(::open(path("fifo").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(fd);
  EXPECT_EQ(refusal(fd.get()), "secret s: the fd is a pipe or FIFO");
}

TEST(SecretFdKinds, ADeviceIsRefusedByName) {
  for (const char* device : {"/dev/null", "/dev/zero", "/dev/urandom"}) {
    UniqueFd fd(::open(device, O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << device;
    EXPECT_EQ(refusal(fd.get()), "secret s: the fd is a device") << device;
  }
}

TEST_F(SecretFd, AWriteOnlyFdIsRefused) {
  UniqueFd fd = file("cannot read me", O_WRONLY);
  ASSERT_TRUE(fd);
  EXPECT_EQ(refusal(fd.get()), "secret s: the fd is not open for reading");
}

TEST(SecretFdKinds, AClosedFdIsRefused) {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::close(fd);
  std::string message = refusal(fd);
  EXPECT_EQ(message.rfind("secret s: ", 0), 0u) << message;
}

TEST(SecretFdKinds, AMemfdSealedAgainstWritesIsRead) {
  UniqueFd sealed = memfd("sealed value", kWriteSeals | F_SEAL_SEAL);
  EXPECT_EQ(read_secret_fd(sealed.get(), "s"), "sealed value");
  UniqueFd without_seal_seal = memfd("also fine", kWriteSeals);
  EXPECT_EQ(read_secret_fd(without_seal_seal.get(), "s"), "also fine");
}

TEST(SecretFdKinds, AMemfdNotSealedAgainstEveryChangeIsRefused) {
  const std::string expected = "secret s: the fd is a memfd that is not sealed against writes";
  EXPECT_EQ(refusal(memfd("open to writes", 0).get()), expected);
  EXPECT_EQ(refusal(memfd("only write-sealed", F_SEAL_WRITE).get()), expected);
  EXPECT_EQ(refusal(memfd("may grow", F_SEAL_WRITE | F_SEAL_SHRINK).get()), expected);
  EXPECT_EQ(refusal(memfd("may shrink", F_SEAL_WRITE | F_SEAL_GROW).get()), expected);
  EXPECT_EQ(refusal(memfd("may be written", F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL).get()), expected);
  UniqueFd no_sealing(::memfd_create("unsealable", MFD_CLOEXEC));
  ASSERT_TRUE(no_sealing);
  EXPECT_EQ(refusal(no_sealing.get()), expected);
}

TEST(SecretFdKinds, ASealedMemfdIsReadFromItsStart) {
  UniqueFd fd = memfd("abcdef", kWriteSeals);
  ASSERT_EQ(::lseek(fd.get(), 4, SEEK_SET), 4);
  EXPECT_EQ(read_secret_fd(fd.get(), "s"), "abcdef");
}

TEST_F(SecretFd, AValueOf500KiBIsReadOneByteMoreIsRefused) {
  EXPECT_EQ(kMaxSecretBytes, 512000u);
  std::string at_limit(512000, 'x');
  at_limit.front() = 'A';
  at_limit.back() = 'Z';
  UniqueFd fd = file(at_limit);
  EXPECT_EQ(read_secret_fd(fd.get(), "s"), at_limit);
  UniqueFd over = file(std::string(512001, 'y'), O_RDONLY, "over");
  EXPECT_EQ(refusal(over.get(), "big"), "secret big too big. max size 500KiB");
  UniqueFd sealed_over = memfd(std::string(512001, 'm'), kWriteSeals);
  EXPECT_EQ(refusal(sealed_over.get(), "big"), "secret big too big. max size 500KiB");
  UniqueFd sealed_at = memfd(at_limit, kWriteSeals);
  EXPECT_EQ(read_secret_fd(sealed_at.get(), "s"), at_limit);
}

TEST_F(SecretFd, ASparseFileLargerThanTheLimitIsRefusedWithoutReadingIt) {
  UniqueFd fd = file("");
  UniqueFd rw(::open(path("secret").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_EQ(::ftruncate(rw.get(), off_t{1} << 40), 0);  // 1 TiB of holes
  EXPECT_EQ(refusal(fd.get()), "secret s too big. max size 500KiB");
}

}  // namespace
}  // namespace kbuild::service
