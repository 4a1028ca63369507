// The daemon's receiver fed by a fake reader process: the reader runs as the user, on files the
// user controls, so whatever it sends must be checked before anything is written.
#include "engine/context/receiver.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/context/bytes.h"
#include "engine/context/wire.h"
#include "tests/unit/context/context_test_util.h"

namespace kbuild::context {
namespace {

using testing::exists;
using testing::make_dir;
using testing::open_dir;
using testing::read_file;
using testing::read_link;

wire::EntryHeader header(std::string path, EntryType type = EntryType::regular, std::int64_t size = 0) {
  wire::EntryHeader h;
  h.path = std::move(path);
  h.type = type;
  h.mode = type == EntryType::directory ? 0755 : 0644;
  h.size = size;
  h.nlink = 1;
  h.dev = 1;
  h.ino = 100;
  return h;
}

wire::EntryHeader symlink(std::string path, std::string target) {
  wire::EntryHeader h = header(std::move(path), EntryType::symlink);
  h.link_target = std::move(target);
  return h;
}

std::vector<std::string> list(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  while (struct dirent* e = ::readdir(d)) {
    if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..") out.push_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

class FakeReader : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    dest_ = work_.path() + "/dest";
    make_dir(dest_, 0700);
  }

  void entry(const wire::EntryHeader& h) { wire::append_entry(stream_, h); }
  void end() { wire::append_end(stream_, entries_sent()); }
  void content(std::uint32_t index, std::string_view bytes) {
    wire::ContentHeader c;
    c.index = index;
    c.size = static_cast<std::int64_t>(bytes.size());
    c.dev = 1;
    c.ino = 100 + index;
    wire::append_content_header(stream_, c);
    stream_.append(bytes);
  }
  std::uint64_t entries_sent() const {
    std::uint64_t n = 0;
    for (std::size_t at = 0; at + 8 <= stream_.size();) {
      ByteSource in(std::string_view(stream_).substr(at), "test");
      const auto kind = in.get<std::uint32_t>();
      const auto length = in.get<std::uint32_t>();
      if (kind == static_cast<std::uint32_t>(wire::FrameKind::entry)) ++n;
      at += 8 + length;
    }
    return n;
  }

  ContextReadResult receive() {
    int data[2];
    check(::pipe2(data, O_CLOEXEC), "pipe2", "");
    UniqueFd read_end(data[0]);
    UniqueFd write_end(data[1]);
    ::fcntl(write_end.get(), F_SETPIPE_SZ, 1 << 20);
    const std::string bytes = stream_;
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(write_end.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0) throw_errno("write", "fake stream");
      done += static_cast<std::size_t>(n);
    }
    write_end.reset();
    int requests[2];
    check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, requests), "socketpair", "");
    request_daemon_.reset(requests[0]);
    request_reader_.reset(requests[1]);
    UniqueFd dest = open_dir(dest_);
    ReceiveOptions options;
    options.dest_fd = dest.get();
    options.max_entries = 1000;
    return receive_context(read_end.get(), request_daemon_.get(), options);
  }

  // The stream is refused, and nothing was written beside the destination.
  std::string refused() {
    std::string message = "(accepted)";
    try {
      receive();
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_EQ(list(work_.path()), std::vector<std::string>{"dest"});
    stream_.clear();
    testing::remove_tree_contents(dest_);
    return message;
  }

  TempDir work_;
  std::string dest_;
  std::string stream_;
  UniqueFd request_daemon_;
  UniqueFd request_reader_;
};

TEST_F(FakeReader, AWellFormedStreamIsMaterialized) {
  entry(header("d", EntryType::directory));
  entry(header("d/f", EntryType::regular, 2));
  entry(symlink("l", "/etc/passwd"));
  end();
  content(1, "hi");
  const ContextReadResult result = receive();
  EXPECT_EQ(read_file(dest_ + "/d/f"), "hi");
  EXPECT_EQ(read_link(dest_ + "/l"), "/etc/passwd");
  EXPECT_EQ(result.stats.bytes_received, 2u);
  EXPECT_EQ(result.manifest.find("d/f")->digest, store::Digest::of("hi"));
}

TEST_F(FakeReader, PathsThatLeaveOrDodgeTheRootAreRefused) {
  const std::string outside = work_.path() + "/evil";
  for (std::string bad : {std::string("../evil"), outside, std::string("d/../../evil"), std::string("d//f"),
                          std::string("./f"), std::string("f/"), std::string("."), std::string(""),
                          std::string("a\0b", 3), std::string(5000, 'a')}) {
    entry(header("d", EntryType::directory));
    entry(header(bad, EntryType::regular, 4));
    end();
    content(1, "evil");
    EXPECT_NE(refused().find("invalid context stream"), std::string::npos) << bad;
  }
  EXPECT_FALSE(exists(outside));
}

TEST_F(FakeReader, NothingIsWrittenThroughASymlinkOrBelowAFile) {
  entry(symlink("l", work_.path()));
  entry(header("l/evil", EntryType::regular, 4));
  end();
  content(1, "evil");
  EXPECT_EQ(refused(), "invalid context stream: \"l/evil\": parent directory not sent first");
  entry(header("f"));
  entry(header("f/g"));
  end();
  EXPECT_EQ(refused(), "invalid context stream: \"f/g\": parent directory not sent first");
}

TEST_F(FakeReader, EntriesMustComeAfterTheirParentAndOnlyOnce) {
  entry(header("a/b"));
  end();
  EXPECT_EQ(refused(), "invalid context stream: \"a/b\": parent directory not sent first");
  entry(header("a"));
  entry(header("a"));
  end();
  EXPECT_EQ(refused(), "invalid context stream: \"a\" sent twice");
}

TEST_F(FakeReader, BadFieldsAreRefused) {
  wire::EntryHeader typed = header("f");
  typed.mode = 0100644;
  entry(typed);
  end();
  EXPECT_EQ(refused(), "invalid context stream: f: invalid mode");

  entry(header("f", static_cast<EntryType>(9)));
  end();
  EXPECT_EQ(refused(), "invalid context stream: entry of unknown type 9");

  entry(header("f", EntryType::regular, -1));
  end();
  EXPECT_EQ(refused(), "invalid context stream: f: negative size");

  entry(symlink("l", ""));
  end();
  EXPECT_EQ(refused(), "invalid context stream: l: invalid link target");

  entry(symlink("l", std::string("a\0b", 3)));
  end();
  EXPECT_EQ(refused(), "invalid context stream: l: invalid link target");

  wire::EntryHeader dir_with_target = header("d", EntryType::directory);
  dir_with_target.link_target = "x";
  entry(dir_with_target);
  end();
  EXPECT_EQ(refused(), "invalid context stream: d: link target on a directory");
}

TEST_F(FakeReader, MalformedFramesAreRefusedWithoutTrustingTheirLength) {
  ByteSink sink(stream_);
  sink.put(static_cast<std::uint32_t>(wire::FrameKind::entry));
  sink.put(static_cast<std::uint32_t>(0xFFFFFFF0));
  EXPECT_EQ(refused(), "invalid context stream: frame too large");

  ByteSink(stream_).put(static_cast<std::uint32_t>(77));
  ByteSink(stream_).put(static_cast<std::uint32_t>(0));
  EXPECT_EQ(refused(), "invalid context stream: unexpected frame 77");

  entry(header("f", EntryType::regular, 1));
  stream_.resize(stream_.size() - 3);
  EXPECT_EQ(refused(), "invalid context stream: stream ended early");

  entry(header("f"));
  wire::append_end(stream_, 5);
  EXPECT_EQ(refused(), "invalid context stream: entry count mismatch");

  entry(header("f", EntryType::regular, 1));
  content(0, "x");
  EXPECT_EQ(refused(), "invalid context stream: unexpected frame 3");
}

TEST_F(FakeReader, ContentMustBeWhatWasAskedForAndComplete) {
  entry(header("a", EntryType::regular, 1));
  entry(header("b", EntryType::regular, 1));
  end();
  content(1, "b");
  EXPECT_EQ(refused(), "invalid context stream: content of an entry that was not asked for");

  entry(header("a", EntryType::regular, 1));
  end();
  wire::ContentHeader c;
  c.index = 0;
  c.size = 1 << 20;
  wire::append_content_header(stream_, c);
  stream_.append("short");
  EXPECT_EQ(refused(), "invalid context stream: stream ended early");

  entry(header("a", EntryType::regular, 1));
  end();
  wire::append_end(stream_, 1);
  EXPECT_EQ(refused(), "invalid context stream: expected file content");

  entry(header("a", EntryType::regular, 1));
  end();
  content(0, "a");
  content(0, "a");
  EXPECT_EQ(refused(), "invalid context stream: unexpected frame 3 after the last file");
}

TEST_F(FakeReader, AFailureAfterTheLastFileIsStillReported) {
  entry(header("a", EntryType::regular, 4));
  end();
  content(0, std::string("abc\0", 4));  // padded: the file shrank while it was read
  wire::append_error(stream_, ErrorKind::user, "read a: file shrank while it was being read");
  EXPECT_EQ(refused(), "failed to read context: read a: file shrank while it was being read");
}

TEST_F(FakeReader, TheReadersErrorIsReportedWithItsKind) {
  entry(header("a"));
  wire::append_error(stream_, ErrorKind::permission, "open secret.txt: permission denied\n\x1b[31m");
  ErrorKind kind = ErrorKind::internal;
  try {
    receive();
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "failed to read context: open secret.txt: permission denied??[31m");
    kind = e.kind();
  }
  EXPECT_EQ(kind, ErrorKind::permission);
}

TEST_F(FakeReader, TooManyEntriesAreRefused) {
  for (int i = 0; i < 1001; ++i) entry(header("f" + std::to_string(i)));
  end();
  EXPECT_EQ(refused(), "invalid context stream: more than 1000 entries");
}

}  // namespace
}  // namespace kbuild::context
