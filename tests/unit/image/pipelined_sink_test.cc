#include "engine/image/pipelined_sink.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"

namespace kbuild::image {
namespace {

// Records the bytes and the thread that took them.
class RecordingSink : public ByteSink {
 public:
  void write(const void* data, size_t size) override {
    bytes.append(static_cast<const char*>(data), size);
    if (std::this_thread::get_id() != caller) other_thread_writes++;
    if (fail_after && bytes.size() >= fail_after) throw Error(ErrorKind::internal, "disk full");
  }
  std::string bytes;
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> other_thread_writes{0};
  size_t fail_after = 0;
};

std::string pattern(size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return s;
}

TEST(PipelinedSink, PassesEveryByteOnInOrder) {
  RecordingSink down;
  const std::string input = pattern(1000003);
  {
    PipelinedSink sink(down, 4096, 2);
    // Uneven writes: some smaller than a chunk, some spanning several.
    size_t at = 0, step = 1;
    while (at < input.size()) {
      size_t n = std::min(step, input.size() - at);
      sink.write(input.data() + at, n);
      at += n;
      step = step * 3 % 20011 + 1;
    }
    sink.finish();
  }
  EXPECT_EQ(down.bytes, input);
  EXPECT_GT(down.other_thread_writes.load(), 0);
}

TEST(PipelinedSink, MarksRunWhenTheBytesBeforeThemHaveBeenPassedOn) {
  RecordingSink down;
  const std::string input = pattern(50000);
  std::vector<size_t> seen_at;  // how much downstream had at each mark, in mark order
  std::vector<size_t> wanted;
  {
    PipelinedSink sink(down, 1000, 2);
    for (size_t at = 0; at < input.size(); at += 777) {
      size_t n = std::min<size_t>(777, input.size() - at);
      sink.write(input.data() + at, n);
      wanted.push_back(at + n);
      sink.mark([&] { seen_at.push_back(down.bytes.size()); });
    }
    sink.finish();
  }
  EXPECT_EQ(seen_at, wanted);
  EXPECT_EQ(down.bytes, input);
}

TEST(PipelinedSink, SmallStreamStaysOnTheCallingThread) {
  RecordingSink down;
  PipelinedSink sink(down, 4096, 2);
  sink.write("hello", 5);
  EXPECT_EQ(down.bytes, "");  // held until finish
  sink.finish();
  EXPECT_EQ(down.bytes, "hello");
  EXPECT_EQ(down.other_thread_writes.load(), 0);
}

TEST(PipelinedSink, DownstreamErrorReachesTheWriter) {
  RecordingSink down;
  down.fail_after = 10000;
  const std::string input = pattern(100000);
  PipelinedSink sink(down, 1024, 2);
  EXPECT_THROW(
      {
        for (size_t at = 0; at < input.size(); at += 100) sink.write(input.data() + at, 100);
        sink.finish();
      },
      Error);
  EXPECT_LT(down.bytes.size(), input.size());
}

TEST(PipelinedSink, DroppedWithoutFinishStopsTheWorker) {
  RecordingSink down;
  const std::string input = pattern(50000);
  {
    PipelinedSink sink(down, 1024, 2);
    sink.write(input.data(), input.size());
  }  // destroyed mid-stream, as when the walk throws: the worker is joined, nothing hangs
  EXPECT_LE(down.bytes.size(), input.size());
  EXPECT_EQ(down.bytes, input.substr(0, down.bytes.size()));
}

}  // namespace
}  // namespace kbuild::image
