#include "engine/image/blob_pipe.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <thread>

#include "common/error.h"

namespace kbuild::image {
namespace {

std::string pattern(size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>(i * 31 + i / 7);
  return s;
}

TEST(BlobPipe, HandsEveryByteOverInOrderThroughASmallRing) {
  BlobPipe pipe(4096);
  const std::string input = pattern(3000017);
  std::thread writer([&] {
    size_t offset = 0;
    for (size_t step = 1; offset < input.size(); step = step * 5 % 9001 + 1) {
      size_t n = std::min(step, input.size() - offset);
      pipe.write(input.data() + offset, n);
      offset += n;
    }
    pipe.close();
  });
  std::string got;
  char buffer[1000];
  for (size_t n; (n = pipe.read(buffer, sizeof buffer)) != 0;) got.append(buffer, n);
  writer.join();
  EXPECT_EQ(got, input);
}

TEST(BlobPipe, TheWritersFailureReachesTheReader) {
  BlobPipe pipe(64);
  pipe.write("abc", 3);
  pipe.fail(std::make_exception_ptr(Error(ErrorKind::user, "layer changed")));
  char buffer[16];
  EXPECT_THROW(pipe.read(buffer, sizeof buffer), Error);
}

TEST(BlobPipe, AWriterBlockedOnAFullPipeStopsWhenTheReaderLeaves) {
  BlobPipe pipe(16);
  std::string error;
  std::thread writer([&] {
    try {
      std::string big(1000, 'x');
      pipe.write(big.data(), big.size());
    } catch (const Error& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  pipe.abandon();
  writer.join();
  EXPECT_EQ(error, "the upload stopped");
}

}  // namespace
}  // namespace kbuild::image
