// Both ends of a local cache over a real socketpair: kbuildctl's server (cli/cache_layout.h)
// on a thread against a temp directory, kbuildd's LayoutChannel in the test. Where kbuildctl
// must misbehave, the test plays it with raw frames.
#include "engine/remotecache/layout_channel.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/cache_layout.h"
#include "common/client_stream.h"
#include "common/directory.h"
#include "common/temp_dir.h"
#include "engine/remotecache/cache_config.h"

namespace kbuild::remotecache {
namespace {

using layout::FieldReader;
using layout::FieldWriter;
using layout::Frame;
using layout::FrameStream;
using layout::FrameType;
using ::testing::HasSubstr;

constexpr const char* kManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kLayerType = "application/vnd.oci.image.layer.v1.tar+gzip";

struct SocketPair {
  UniqueFd daemon, client;
  SocketPair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw Error(ErrorKind::internal, "socketpair");
    daemon.reset(fds[0]);
    client.reset(fds[1]);
  }
};

image::Descriptor blob_of(std::string_view bytes) {
  return image::describe(kLayerType, store::Digest::of(bytes), static_cast<int64_t>(bytes.size()));
}

// Bytes in pieces that do not line up with the protocol's chunks.
std::function<size_t(char*, size_t)> reader_of(const std::string& bytes) {
  auto offset = std::make_shared<size_t>(0);
  return [&bytes, offset](char* out, size_t size) {
    size_t n = std::min({size, bytes.size() - *offset, size_t{50000}});
    std::copy_n(bytes.data() + *offset, n, out);
    *offset += n;
    return n;
  };
}

std::string blob_bytes(CacheSource& source, const image::Descriptor& blob) {
  std::string bytes;
  source.blob(blob, [&](std::string_view chunk) { bytes.append(chunk); });
  return bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// A manifest naming `layers`, as a cache's root document.
std::string manifest_of(const std::vector<image::Descriptor>& layers) {
  nlohmann::ordered_json doc = {
      {"schemaVersion", 2}, {"mediaType", kManifestType}, {"layers", nlohmann::ordered_json::array()}};
  for (const auto& layer : layers)
    doc["layers"].push_back({{"mediaType", layer.media_type}, {"digest", layer.digest.str()}, {"size", layer.size}});
  return doc.dump();
}

// The error `f` throws, checked to be of `kind`.
std::string error_of(const std::function<void()>& f, ErrorKind kind) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

class LayoutChannelTest : public ::testing::Test {
 protected:
  // A channel to a kbuildctl server for dir_ (the server stops when the test ends).
  std::unique_ptr<LayoutChannel> connect(const std::string& tag = "") {
    SocketPair pair;
    std::lock_guard lock(mutex_);
    servers_.push_back(std::make_unique<cli::CacheLayoutServer>(std::move(pair.client), dir_));
    return std::make_unique<LayoutChannel>(std::move(pair.daemon), tag, cancel_.fd(), "local " + dir_);
  }
  // A channel whose kbuildctl end is `client`, run on a thread with raw frames.
  std::unique_ptr<LayoutChannel> connect_fake(std::function<void(FrameStream&)> client) {
    SocketPair pair;
    fakes_.emplace_back([fd = std::make_shared<UniqueFd>(std::move(pair.client)), client = std::move(client)] {
      FrameStream stream(fd->get(), -1, "kbuildd");
      try {
        client(stream);
      } catch (const Error&) {
      }
    });
    return std::make_unique<LayoutChannel>(std::move(pair.daemon), "", cancel_.fd(), "local fake");
  }
  void TearDown() override {
    for (auto& t : fakes_) t.join();
  }

  nlohmann::json index_json() { return nlohmann::json::parse(read_file(dir_ + "/index.json")); }
  std::vector<std::string> tags() {
    std::vector<std::string> names;
    const nlohmann::json index = index_json();
    for (const auto& entry : index["manifests"])
      names.push_back(entry["annotations"]["org.opencontainers.image.ref.name"]);
    return names;
  }
  // Files in blobs/sha256 that are not blobs: temp files left behind.
  std::vector<std::string> stray_files() {
    std::vector<std::string> stray;
    UniqueFd fd(::open((dir_ + "/blobs/sha256").c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
    if (!fd) return stray;
    for (const DirEntry& entry : list_directory(fd.get(), dir_))
      if (entry.name.starts_with('.')) stray.push_back(entry.name);
    return stray;
  }

  TempDir temp_;
  std::string dir_ = temp_.path() + "/cache";
  CancelSignal cancel_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<cli::CacheLayoutServer>> servers_;
  std::vector<std::thread> fakes_;
};

// --- Through kbuildctl's server ---------------------------------------------------------------

TEST_F(LayoutChannelTest, ExportedCacheImportsBack) {
  const std::string small = "small layer", big(300 << 10, 'x');
  const image::Descriptor a = blob_of(small), b = blob_of(big);
  const std::string manifest = manifest_of({a, b});
  {
    auto target = connect();
    EXPECT_FALSE(target->has_blob(a.digest));
    target->put_blob(a, reader_of(small));
    target->put_blob(b, reader_of(big));
    EXPECT_TRUE(target->has_blob(a.digest));
    target->put_root(kManifestType, manifest);
  }
  EXPECT_EQ(read_file(dir_ + "/oci-layout"), R"({"imageLayoutVersion":"1.0.0"})");
  EXPECT_EQ(read_file(dir_ + "/blobs/sha256/" + std::string(b.digest.hex())), big);
  EXPECT_EQ(tags(), std::vector<std::string>{"latest"});
  EXPECT_EQ(index_json()["manifests"][0]["digest"], store::Digest::of(manifest).str());
  EXPECT_EQ(index_json()["manifests"][0]["mediaType"], kManifestType);
  EXPECT_TRUE(stray_files().empty());

  auto source = connect("latest");
  RootDocument root = source->root();
  EXPECT_EQ(root.media_type, kManifestType);
  EXPECT_EQ(root.bytes, manifest);
  EXPECT_EQ(blob_bytes(*source, a), small);
  EXPECT_EQ(blob_bytes(*source, b), big);
}

TEST_F(LayoutChannelTest, TwoExportsToOneDirectoryKeepBothTagsAndTheTagSelects) {
  const std::string first = manifest_of({blob_of("one")}), second = manifest_of({blob_of("two")});
  connect("first")->put_root(kManifestType, first);
  connect("second")->put_root(kManifestType, second);
  EXPECT_EQ(tags(), (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(connect("first")->root().bytes, first);
  EXPECT_EQ(connect("second")->root().bytes, second);

  // Exporting a tag again replaces its entry where it stands.
  const std::string third = manifest_of({blob_of("three")});
  connect("first")->put_root(kManifestType, third);
  EXPECT_EQ(tags(), (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(connect("first")->root().bytes, third);
}

TEST_F(LayoutChannelTest, ExportsRunningAtOnceKeepEveryTag) {
  std::vector<std::future<void>> exports;
  for (int i = 0; i < 8; ++i) {
    exports.push_back(std::async(std::launch::async, [this, i] {
      connect("tag" + std::to_string(i))->put_root(kManifestType, manifest_of({blob_of(std::to_string(i))}));
    }));
  }
  for (auto& e : exports) e.get();
  EXPECT_EQ(tags().size(), 8u);
}

TEST_F(LayoutChannelTest, MissingDirectoryIndexOrTagIsNotFound) {
  EXPECT_THAT(error_of([&] { connect()->root(); }, ErrorKind::not_found), HasSubstr("local " + dir_ + ": "));
  ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
  EXPECT_THAT(error_of([&] { connect()->root(); }, ErrorKind::not_found), HasSubstr("index.json not found"));
  connect("other")->put_root(kManifestType, manifest_of({}));
  EXPECT_THAT(error_of([&] { connect("latest")->root(); }, ErrorKind::not_found), HasSubstr("no cache tagged latest"));
  const image::Descriptor missing = blob_of("missing");
  EXPECT_THAT(error_of([&] { blob_bytes(*connect(), missing); }, ErrorKind::not_found),
              HasSubstr("blob " + missing.digest.str() + " not found"));
}

TEST_F(LayoutChannelTest, BlobWhoseContentDiffersIsAnErrorAndTheChannelGoesOn) {
  const image::Descriptor blob = blob_of("the real content");
  auto channel = connect();
  channel->put_blob(blob_of("x"), reader_of("x"));
  write_file(dir_ + "/blobs/sha256/" + std::string(blob.digest.hex()), "a forged content");
  EXPECT_THAT(error_of([&] { blob_bytes(*channel, blob); }, ErrorKind::user), HasSubstr("has the digest"));
  EXPECT_EQ(blob_bytes(*channel, blob_of("x")), "x");
}

TEST_F(LayoutChannelTest, ExportedBlobThatDiffersFromItsDigestIsNotStored) {
  const image::Descriptor blob = blob_of("promised");
  auto channel = connect();
  std::string forged = "forged!!";
  EXPECT_THAT(error_of([&] { channel->put_blob(blob, reader_of(forged)); }, ErrorKind::user),
              HasSubstr("has the digest"));
  EXPECT_FALSE(channel->has_blob(blob.digest));
  EXPECT_TRUE(stray_files().empty());
}

TEST_F(LayoutChannelTest, SourceThatFailsMidBlobLeavesNothingAndTheChannelGoesOn) {
  const std::string big(400 << 10, 'y');
  const image::Descriptor blob = blob_of(big);
  auto channel = connect();
  auto read = reader_of(big);
  size_t calls = 0;
  auto failing = [&](char* out, size_t size) -> size_t {
    if (++calls == 3) throw Error(ErrorKind::internal, "disk read failed");
    return read(out, size);
  };
  EXPECT_EQ(error_of([&] { channel->put_blob(blob, failing); }, ErrorKind::internal),
            "local " + dir_ + ": disk read failed");
  EXPECT_FALSE(channel->has_blob(blob.digest));
  EXPECT_TRUE(stray_files().empty());
  channel->put_blob(blob, reader_of(big));
  EXPECT_TRUE(channel->has_blob(blob.digest));
}

TEST_F(LayoutChannelTest, SinkThatFailsMidBlobLeavesTheChannelUsable) {
  const std::string big(400 << 10, 'z');
  const image::Descriptor blob = blob_of(big);
  auto channel = connect();
  channel->put_blob(blob, reader_of(big));
  auto failing = [](std::string_view) { throw Error(ErrorKind::internal, "store full"); };
  EXPECT_THAT(error_of([&] { channel->blob(blob, failing); }, ErrorKind::internal), HasSubstr("store full"));
  EXPECT_EQ(blob_bytes(*channel, blob), big);
}

TEST_F(LayoutChannelTest, ManyThreadsShareOneChannel) {
  auto channel = connect();
  std::vector<std::string> contents;
  for (int i = 0; i < 6; ++i) contents.push_back(std::string(100000 + i, static_cast<char>('a' + i)));
  for (const auto& c : contents) channel->put_blob(blob_of(c), reader_of(c));
  std::vector<std::future<bool>> reads;
  for (int round = 0; round < 4; ++round)
    for (const auto& c : contents)
      reads.push_back(std::async(std::launch::async, [&] { return blob_bytes(*channel, blob_of(c)) == c; }));
  for (auto& r : reads) EXPECT_TRUE(r.get());
}

TEST_F(LayoutChannelTest, IndexEntryWhoseDigestClimbsOutIsRefused) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
  write_file(dir_ + "/index.json",
             R"({"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:../../../etc/passwd","size":10,)"
             R"("annotations":{"org.opencontainers.image.ref.name":"latest"}}]})");
  EXPECT_THAT(error_of([&] { connect()->root(); }, ErrorKind::user), HasSubstr("index.json's entry for tag latest"));
}

TEST_F(LayoutChannelTest, IndexEntryOverTheRootLimitIsRefused) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
  write_file(dir_ + "/index.json",
             R"({"manifests":[{"mediaType":"x","digest":"sha256:)" + std::string(64, 'a') +
                 R"(","size":5000000,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]})");
  EXPECT_THAT(error_of([&] { connect()->root(); }, ErrorKind::user), HasSubstr("not within 0 and 4194304"));
}

TEST_F(LayoutChannelTest, RootOverTheLimitIsNotSent) {
  EXPECT_THAT(error_of([&] { connect()->put_root(kManifestType, std::string(kCacheConfigLimit + 1, ' ')); },
                       ErrorKind::internal),
              HasSubstr("more than 4194304"));
}

TEST_F(LayoutChannelTest, ServerEndsWhenTheDaemonClosesItsEnd) {
  SocketPair pair;
  auto served = std::async(std::launch::async, [&, fd = pair.client.get()] { cli::serve_cache_layout(fd, dir_, -1); });
  {
    LayoutChannel channel(std::move(pair.daemon), "", -1, "local");
    EXPECT_FALSE(channel.has_blob(blob_of("x").digest));
  }
  EXPECT_EQ(served.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  served.get();
}

// --- kbuildctl's server against a misbehaving kbuildd ------------------------------------------

TEST_F(LayoutChannelTest, DigestsWithPathsAreRefusedByTheServer) {
  SocketPair pair;
  cli::CacheLayoutServer server(std::move(pair.client), dir_);
  FrameStream daemon(pair.daemon.get(), -1, "kbuildctl");
  daemon.send(FrameType::put_blob, FieldWriter().string("sha256:../../escape").u64(3).payload());
  daemon.send(FrameType::data, "abc");
  daemon.send(FrameType::end);
  Frame answer = daemon.receive(layout::kFrameLimit);
  ASSERT_EQ(answer.type, FrameType::error);
  EXPECT_EQ(FrameStream::error_in(answer).kind(), ErrorKind::user);

  daemon.send(FrameType::blob, FieldWriter().string("sha256:../index.json").u64(3).payload());
  EXPECT_EQ(daemon.receive(layout::kFrameLimit).type, FrameType::error);
  pair.daemon.reset();
  server.finish();
  struct stat st {};
  EXPECT_NE(::stat((temp_.path() + "/escape").c_str(), &st), 0);
}

TEST_F(LayoutChannelTest, GarbageFromTheDaemonEndsTheServerWithAnError) {
  SocketPair pair;
  ASSERT_EQ(::write(pair.daemon.get(), "\x42garbage", 8), 8);
  pair.daemon.reset();
  EXPECT_EQ(error_of([&] { cli::serve_cache_layout(pair.client.get(), dir_, -1); }, ErrorKind::internal),
            "kbuildd sent a malformed frame: unknown frame type 66");
}

TEST_F(LayoutChannelTest, DaemonThatClosesMidRequestEndsTheServerWithAnError) {
  SocketPair pair;
  FrameStream daemon(pair.daemon.get(), -1, "kbuildctl");
  daemon.send(FrameType::put_blob, FieldWriter().string(blob_of("abc").digest.str()).u64(3).payload());
  daemon.send(FrameType::data, "ab");
  pair.daemon.reset();
  EXPECT_EQ(error_of([&] { cli::serve_cache_layout(pair.client.get(), dir_, -1); }, ErrorKind::internal),
            "kbuildd closed the connection");
  EXPECT_TRUE(stray_files().empty());
}

// --- LayoutChannel against a misbehaving kbuildctl ---------------------------------------------

TEST_F(LayoutChannelTest, FdThatIsNoSocketIsRefused) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  EXPECT_EQ(error_of([&] { LayoutChannel(std::move(read_end), "", -1, "local x"); }, ErrorKind::user),
            "local x: the cache's fd is not a socket");
}

// A client that answers with `bytes` whatever it is asked, then hangs up.
std::future<void> answer_raw(UniqueFd client, std::string bytes) {
  return std::async(std::launch::async, [fd = std::make_shared<UniqueFd>(std::move(client)), bytes] {
    // The whole request frame first: one read(2) may return only its header, and hanging up
    // while the daemon still writes the rest fails its write (EPIPE), not its read of the answer.
    FrameStream(fd->get(), -1, "kbuildd").receive(layout::kFrameLimit);
    [[maybe_unused]] ssize_t w = ::write(fd->get(), bytes.data(), bytes.size());
    fd->reset();
  });
}

TEST_F(LayoutChannelTest, GarbageFromTheClientIsOneClearErrorAndBreaksTheChannel) {
  SocketPair pair;
  LayoutChannel channel(std::move(pair.daemon), "", -1, "local fake");
  auto client = answer_raw(std::move(pair.client), "\x99not a frame at all");
  EXPECT_EQ(error_of([&] { channel.has_blob(blob_of("x").digest); }, ErrorKind::internal),
            "local fake: kbuildctl sent a malformed frame: unknown frame type 153");
  EXPECT_EQ(error_of([&] { channel.has_blob(blob_of("x").digest); }, ErrorKind::internal),
            "local fake: the connection to kbuildctl failed earlier");
}

TEST_F(LayoutChannelTest, AnswerWithoutItsFieldsIsMalformed) {
  auto channel = connect_fake([](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    stream.send(FrameType::ok);
  });
  EXPECT_EQ(error_of([&] { channel->has_blob(blob_of("x").digest); }, ErrorKind::internal),
            "local fake: kbuildctl sent a malformed frame: a field runs past the end of its frame");
}

TEST_F(LayoutChannelTest, UnknownFrameTypeIsMalformed) {
  auto channel = connect_fake([](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    stream.send(static_cast<FrameType>(7));
  });
  EXPECT_EQ(error_of([&] { channel->root(); }, ErrorKind::internal),
            "local fake: kbuildctl sent a malformed frame: unknown frame type 7");
}

TEST_F(LayoutChannelTest, RootAnswerOverTheLimitIsRefusedUnread) {
  auto channel = connect_fake([](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    stream.send(FrameType::ok, std::string(layout::kFrameLimit + 1, 'm'));
  });
  EXPECT_THAT(
      error_of([&] { channel->root(); }, ErrorKind::internal),
      HasSubstr("kbuildctl sent a malformed frame: a frame of " + std::to_string(layout::kFrameLimit + 1) + " bytes"));
}

TEST_F(LayoutChannelTest, RootThatDiffersFromItsDigestIsRefused) {
  auto channel = connect_fake([](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    stream.send(FrameType::ok,
                FieldWriter().string(kManifestType).string(store::Digest::of("a").str()).string("b").payload());
  });
  EXPECT_THAT(error_of([&] { channel->root(); }, ErrorKind::user), HasSubstr("does not match its digest"));
}

TEST_F(LayoutChannelTest, ClientThatClosesMidBlobIsOneClearError) {
  const image::Descriptor blob = blob_of(std::string(1000, 'q'));
  auto channel = connect_fake([](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    stream.send(FrameType::ok);
    stream.send(FrameType::data, std::string(10, 'q'));
  });
  EXPECT_EQ(error_of([&] { blob_bytes(*channel, blob); }, ErrorKind::internal),
            "local fake: kbuildctl closed the connection");
}

TEST_F(LayoutChannelTest, ClientThatClosesMidFrameIsOneClearError) {
  SocketPair pair;
  LayoutChannel channel(std::move(pair.daemon), "", -1, "local fake");
  auto client = answer_raw(std::move(pair.client), std::string("\x80\x00\x00", 3));  // half a header
  EXPECT_EQ(error_of([&] { channel.has_blob(blob_of("x").digest); }, ErrorKind::internal),
            "local fake: kbuildctl closed the connection in the middle of a frame");
}

TEST_F(LayoutChannelTest, BlobLongerThanItsDescriptorIsRefused) {
  const image::Descriptor blob = blob_of("four");
  auto channel = connect_fake([](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    stream.send(FrameType::ok);
    stream.send(FrameType::data, "four and more");
    stream.send(FrameType::end);
  });
  EXPECT_THAT(error_of([&] { blob_bytes(*channel, blob); }, ErrorKind::internal),
              HasSubstr("is longer than its 4 bytes"));
}

TEST_F(LayoutChannelTest, ErrorFromTheClientCannotClaimCancellation) {
  auto channel = connect_fake([](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    stream.send(FrameType::error, FrameStream::error_payload(Error(ErrorKind::canceled, "stop")));
  });
  EXPECT_EQ(error_of([&] { channel->root(); }, ErrorKind::internal), "local fake: stop");
}

TEST_F(LayoutChannelTest, CancelEndsAWaitForTheClient) {
  std::promise<void> done;
  std::shared_future<void> finished = done.get_future().share();
  auto channel = connect_fake([finished](FrameStream& stream) {
    stream.receive(layout::kFrameLimit);
    finished.wait();  // never answers until the test is over
  });
  std::thread canceler([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancel_.cancel();
  });
  EXPECT_THAT(error_of([&] { channel->root(); }, ErrorKind::canceled), HasSubstr("canceled"));
  canceler.join();
  done.set_value();
}

}  // namespace
}  // namespace kbuild::remotecache
