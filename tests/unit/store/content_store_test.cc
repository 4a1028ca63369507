#include "engine/store/content_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"

namespace kbuild::store {
namespace {

// The message and kind of the kbuild::Error `action` throws.
template <typename Action>
std::pair<std::string, ErrorKind> error_of(Action action) {
  try {
    action();
  } catch (const Error& error) {
    return {error.what(), error.kind()};
  }
  return {"<no error>", ErrorKind::internal};
}

size_t entries_in(const std::string& dir) {
  size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir)) ++count;
  return count;
}

std::string read_fd(int fd) {
  std::string bytes;
  char buffer[4096];
  ssize_t got;
  while ((got = ::read(fd, buffer, sizeof buffer)) > 0) bytes.append(buffer, static_cast<size_t>(got));
  return bytes;
}

std::string pattern(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return bytes;
}

class ContentStoreTest : public ::testing::Test {
 protected:
  TempDir root_{"/tmp", "kbuild-content-test-"};
  ContentStore store_{root_.path()};
  std::string temp_dir() const { return root_.path() + "/blobs/tmp"; }
};

TEST_F(ContentStoreTest, PutStoresBlobUnderItsDigest) {
  Digest digest = store_.put("hello");
  EXPECT_EQ(digest, Digest::of("hello"));
  EXPECT_TRUE(store_.has(digest));
  EXPECT_EQ(store_.size(digest), 5u);
  EXPECT_EQ(store_.read_small(digest, 100), "hello");
  EXPECT_EQ(store_.path(digest), root_.path() + "/blobs/sha256/" + std::string(digest.hex()));
  EXPECT_TRUE(std::filesystem::is_regular_file(store_.path(digest)));
  UniqueFd fd = store_.open(digest);
  EXPECT_EQ(read_fd(fd.get()), "hello");
  EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(entries_in(temp_dir()), 0u);
}

TEST_F(ContentStoreTest, PutOfAStoredBlobIsANoOp) {
  Digest first = store_.put("same");
  Digest second = store_.put("same");
  EXPECT_EQ(first, second);
  EXPECT_EQ(store_.list(), std::vector<Digest>{first});
}

TEST_F(ContentStoreTest, AWriterTellsWhetherTheStoreHadItsBlobAlready) {
  ContentStore::Writer first = store_.writer();
  first.write("bytes");
  first.commit();
  EXPECT_FALSE(first.found_stored());
  ContentStore::Writer second = store_.writer();
  second.write("bytes");
  EXPECT_EQ(second.commit(), Digest::of("bytes"));
  EXPECT_TRUE(second.found_stored());
  EXPECT_EQ(entries_in(temp_dir()), 0u);
}

TEST_F(ContentStoreTest, MissingBlobIsNotFound) {
  Digest digest = Digest::of("absent");
  EXPECT_FALSE(store_.has(digest));
  auto [message, kind] = error_of([&] { store_.open(digest); });
  EXPECT_EQ(message, "blob " + digest.str() + " not found");
  EXPECT_EQ(kind, ErrorKind::not_found);
  EXPECT_EQ(error_of([&] { store_.size(digest); }).second, ErrorKind::not_found);
  EXPECT_EQ(error_of([&] { store_.read_small(digest, 10); }).second, ErrorKind::not_found);
}

TEST_F(ContentStoreTest, WriterStreamsLargeBlobsInPieces) {
  std::string bytes = pattern(3 * 1024 * 1024 + 17);
  auto writer = store_.writer();
  // Pieces smaller and larger than the writer's buffer.
  size_t offset = 0;
  for (size_t piece : {1ul, 100ul, 4096ul, 1024ul * 1024ul, 7ul, 300000ul}) {
    writer.write(bytes.data() + offset, piece);
    offset += piece;
  }
  writer.write(bytes.data() + offset, bytes.size() - offset);
  EXPECT_EQ(writer.size(), bytes.size());
  Digest digest = writer.commit(Digest::of(bytes));
  EXPECT_EQ(digest, Digest::of(bytes));
  EXPECT_EQ(store_.size(digest), bytes.size());
  UniqueFd fd = store_.open(digest);
  EXPECT_EQ(read_fd(fd.get()) == bytes, true);
  EXPECT_EQ(entries_in(temp_dir()), 0u);
}

TEST_F(ContentStoreTest, StoredBlobsAreReadOnly) {
  Digest digest = store_.put("frozen");
  struct stat st {};
  ASSERT_EQ(::stat(store_.path(digest).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
}

TEST_F(ContentStoreTest, InterruptedWriteLeavesNoBlob) {
  Digest digest = Digest::of("partial data");
  {
    auto writer = store_.writer();
    writer.write("partial ");
    EXPECT_EQ(entries_in(temp_dir()), 1u);
  }  // dropped without commit
  EXPECT_FALSE(store_.has(digest));
  EXPECT_TRUE(store_.list().empty());
  EXPECT_EQ(entries_in(temp_dir()), 0u);
}

TEST_F(ContentStoreTest, CrashedWriterProcessLeavesOnlyATempFileThatSweepRemoves) {
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A daemon that dies mid-write: no destructor, no commit.
    ContentStore store(root_.path());
    auto writer = store.writer();
    writer.write(pattern(1 << 20));
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_TRUE(store_.list().empty());
  EXPECT_EQ(entries_in(temp_dir()), 1u);
  store_.sweep_temp();
  EXPECT_EQ(entries_in(temp_dir()), 0u);
  EXPECT_TRUE(store_.list().empty());
}

TEST_F(ContentStoreTest, DigestMismatchLeavesNothing) {
  Digest wrong = Digest::of("something else");
  auto writer = store_.writer();
  writer.write("actual bytes");
  auto [message, kind] = error_of([&] { writer.commit(wrong); });
  EXPECT_EQ(message, "digest mismatch: expected " + wrong.str() + ", got " + Digest::of("actual bytes").str());
  EXPECT_FALSE(store_.has(wrong));
  EXPECT_FALSE(store_.has(Digest::of("actual bytes")));
  EXPECT_EQ(entries_in(temp_dir()), 0u);
  // The writer is finished either way.
  EXPECT_THROW(writer.write("more"), Error);
  EXPECT_THROW(writer.commit(), Error);
}

TEST_F(ContentStoreTest, ConcurrentWritersOfTheSameBlobAllSucceed) {
  std::string bytes = pattern(512 * 1024);
  Digest expected = Digest::of(bytes);
  constexpr int kWriters = 8;
  std::vector<Digest> results(kWriters);
  std::vector<std::string> errors(kWriters);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWriters; ++i) {
    threads.emplace_back([&, i] {
      try {
        auto writer = store_.writer();
        for (size_t offset = 0; offset < bytes.size(); offset += 1000) {
          writer.write(bytes.data() + offset, std::min<size_t>(1000, bytes.size() - offset));
        }
        results[i] = writer.commit(expected);
      } catch (const std::exception& error) {
        errors[i] = error.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < kWriters; ++i) {
    EXPECT_EQ(errors[i], "");
    EXPECT_EQ(results[i], expected);
  }
  EXPECT_EQ(store_.list(), std::vector<Digest>{expected});
  EXPECT_EQ(store_.read_small(expected, bytes.size()) == bytes, true);
  EXPECT_EQ(entries_in(temp_dir()), 0u);
}

TEST_F(ContentStoreTest, ConcurrentWritersOfDifferentBlobsAllLand) {
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 20; ++j) store_.put("blob " + std::to_string(i) + "/" + std::to_string(j));
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(store_.list().size(), 160u);
  EXPECT_TRUE(store_.has(Digest::of("blob 7/19")));
}

TEST_F(ContentStoreTest, SweepKeepsTheTempFilesOfOpenWriters) {
  auto writer = store_.writer();
  writer.write("in progress");
  std::ofstream(temp_dir() + "/leftover-of-a-crash") << "junk";
  std::filesystem::create_directory(temp_dir() + "/stray-dir");
  std::ofstream(temp_dir() + "/stray-dir/file") << "junk";
  store_.sweep_temp();
  EXPECT_EQ(entries_in(temp_dir()), 1u);
  Digest digest = writer.commit();
  EXPECT_EQ(digest, Digest::of("in progress"));
  EXPECT_TRUE(store_.has(digest));
}

TEST_F(ContentStoreTest, ReadSmallRefusesBlobsOverTheLimit) {
  Digest digest = store_.put(std::string(1000, 'x'));
  EXPECT_EQ(store_.read_small(digest, 1000).size(), 1000u);
  auto [message, kind] = error_of([&] { store_.read_small(digest, 999); });
  EXPECT_EQ(message, "blob " + digest.str() + " is 1000 bytes, more than the limit of 999");
}

TEST_F(ContentStoreTest, ReadSmallDetectsACorruptBlob) {
  Digest digest = Digest::of("original");
  std::ofstream(root_.path() + "/blobs/sha256/" + std::string(digest.hex())) << "tampered";
  auto [message, kind] = error_of([&] { store_.read_small(digest, 100); });
  EXPECT_EQ(message, "blob " + digest.str() + " is corrupt");
}

TEST_F(ContentStoreTest, ListReturnsSortedDigestsAndIgnoresStrayFiles) {
  Digest a = store_.put("a");
  Digest b = store_.put("b");
  Digest c = store_.put("c");
  std::ofstream(root_.path() + "/blobs/sha256/not-a-digest") << "x";
  std::ofstream(root_.path() + "/blobs/sha256/" + std::string(64, 'A')) << "x";
  std::vector<Digest> expected{a, b, c};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(store_.list(), expected);
}

TEST_F(ContentStoreTest, RemoveDeletesABlobAndToleratesAMissingOne) {
  Digest digest = store_.put("doomed");
  store_.remove(digest);
  EXPECT_FALSE(store_.has(digest));
  EXPECT_NO_THROW(store_.remove(digest));
  // A reader that opened it before keeps reading.
  Digest kept = store_.put("kept open");
  UniqueFd fd = store_.open(kept);
  store_.remove(kept);
  EXPECT_EQ(read_fd(fd.get()), "kept open");
}

TEST_F(ContentStoreTest, ADigestCannotBeForgedFromDotDot) {
  EXPECT_THROW(Digest::parse("sha256:../../../../etc/passwd"), Error);
  EXPECT_THROW(Digest::from_hex("../" + std::string(61, 'a')), Error);
  EXPECT_THROW(Digest::from_hex(std::string(63, 'a') + "/"), Error);
  // A default-constructed (empty) digest names no file either.
  auto [message, kind] = error_of([&] { store_.has(Digest()); });
  EXPECT_EQ(message, "content store: empty digest");
  EXPECT_THROW(store_.open(Digest()), Error);
  EXPECT_THROW(store_.remove(Digest()), Error);
}

TEST_F(ContentStoreTest, ReopeningSeesCommittedBlobs) {
  Digest digest = store_.put("persistent");
  ContentStore again(root_.path());
  EXPECT_TRUE(again.has(digest));
  EXPECT_EQ(again.read_small(digest, 100), "persistent");
}

TEST_F(ContentStoreTest, EmptyBlobIsABlobToo) {
  auto writer = store_.writer();
  Digest digest = writer.commit();
  EXPECT_EQ(digest, Digest::of(""));
  EXPECT_EQ(store_.size(digest), 0u);
  EXPECT_EQ(store_.read_small(digest, 0), "");
}

TEST_F(ContentStoreTest, MovedWriterCommitsOnce) {
  auto first = store_.writer();
  first.write("moved ");
  ContentStore::Writer second = std::move(first);
  second.write("along");
  EXPECT_EQ(second.commit(), Digest::of("moved along"));
  EXPECT_EQ(entries_in(temp_dir()), 0u);
}

}  // namespace
}  // namespace kbuild::store
