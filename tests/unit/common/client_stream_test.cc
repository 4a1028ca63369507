#include "common/client_stream.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "common/error.h"

namespace kbuild {
namespace {

using namespace std::chrono_literals;

struct Pipe {
  UniqueFd read, write;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    read.reset(fds[0]);
    write.reset(fds[1]);
  }
};

ErrorKind kind_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.kind();
  }
  return ErrorKind::internal;
}

TEST(ClientStream, AWriteToAPipeNobodyReadsEndsWhenCanceled) {
  Pipe pipe;
  CancelSignal cancel;
  ClientStream stream(pipe.write.get(), ClientStream::Direction::write, cancel.fd(), "output");
  std::thread canceler([&] {
    std::this_thread::sleep_for(100ms);
    cancel.cancel();
  });
  const std::string big(1 << 20, 'x');
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(kind_of([&] { stream.write_all(big.data(), big.size()); }), ErrorKind::canceled);
  canceler.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(ClientStream, AReadFromAPipeNobodyWritesEndsWhenCanceled) {
  Pipe pipe;
  CancelSignal cancel;
  ClientStream stream(pipe.read.get(), ClientStream::Direction::read, cancel.fd(), "archive");
  std::thread canceler([&] {
    std::this_thread::sleep_for(100ms);
    cancel.cancel();
  });
  char buffer[16];
  EXPECT_EQ(kind_of([&] { stream.read_some(buffer, sizeof buffer); }), ErrorKind::canceled);
  canceler.join();
  EXPECT_TRUE(cancel.canceled());
}

TEST(ClientStream, LeavesTheClientsFileDescriptionBlocking) {
  Pipe pipe;
  ClientStream stream(pipe.write.get(), ClientStream::Direction::write, -1, "output");
  stream.write_all("hello", 5);
  EXPECT_EQ(::fcntl(pipe.write.get(), F_GETFL) & O_NONBLOCK, 0);
  char buffer[8];
  EXPECT_EQ(::read(pipe.read.get(), buffer, sizeof buffer), 5);
}

TEST(ClientStream, WriteSomeTimesOutOnAFullPipe) {
  Pipe pipe;
  ClientStream stream(pipe.write.get(), ClientStream::Direction::write, -1, "progress");
  const std::string big(1 << 20, 'x');
  size_t written = stream.write_some(big.data(), big.size(), 50ms);
  EXPECT_GT(written, 0u);
  EXPECT_LT(written, big.size());
  EXPECT_EQ(stream.write_some(big.data(), big.size(), 50ms), 0u);
}

TEST(ClientStream, AGoneReaderIsAnErrorNotASignal) {
  Pipe pipe;
  ClientStream stream(pipe.write.get(), ClientStream::Direction::write, -1, "output");
  pipe.read.reset();
  EXPECT_EQ(kind_of([&] { stream.write_all("x", 1); }), ErrorKind::canceled);
  // A pipe whose reader left before the stream was made.
  Pipe gone;
  gone.read.reset();
  EXPECT_EQ(kind_of([&] {
              ClientStream late(gone.write.get(), ClientStream::Direction::write, -1, "output");
              late.write_all("x", 1);
            }),
            ErrorKind::canceled);
}

TEST(ClientStream, SocketsAndRegularFilesWork) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  ClientStream writer(a.get(), ClientStream::Direction::write, -1, "socket");
  ClientStream reader(b.get(), ClientStream::Direction::read, -1, "socket");
  writer.write_all("abc", 3);
  char buffer[8];
  EXPECT_EQ(reader.read_some(buffer, sizeof buffer), 3u);
  a.reset();
  EXPECT_EQ(reader.read_some(buffer, sizeof buffer), 0u);

  char path[] = "/tmp/client-stream-XXXXXX";
  UniqueFd file(::mkostemp(path, O_CLOEXEC));
  ASSERT_TRUE(file);
  ::unlink(path);
  ClientStream out(file.get(), ClientStream::Direction::write, -1, "file");
  out.write_all("data", 4);
  EXPECT_EQ(::lseek(file.get(), 0, SEEK_CUR), 4);
}

}  // namespace
}  // namespace kbuild
