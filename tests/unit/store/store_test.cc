#include "engine/store/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/store/mount.h"

namespace kbuild::store {
namespace {

namespace stdfs = std::filesystem;

template <typename Action>
std::string error_of(Action action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "<no error>";
}

size_t entries_in(const std::string& dir) {
  size_t count = 0;
  for ([[maybe_unused]] const auto& entry : stdfs::directory_iterator(dir)) ++count;
  return count;
}

class StoreTest : public ::testing::Test {
 protected:
  TempDir parent_{"/tmp", "kbuild-store-test-"};
  std::string root_ = parent_.path() + "/var/lib/kbuild";
};

TEST_F(StoreTest, OpenCreatesAPrivateRootWithItsParts) {
  auto store = Store::open(root_);
  EXPECT_EQ(store->root(), root_);
  struct stat st {};
  ASSERT_EQ(::stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_TRUE(stdfs::is_directory(root_ + "/blobs/sha256"));
  EXPECT_TRUE(stdfs::is_directory(root_ + "/blobs/tmp"));
  EXPECT_TRUE(stdfs::is_directory(root_ + "/snapshots"));
  EXPECT_TRUE(stdfs::is_regular_file(root_ + "/metadata.db"));
  EXPECT_TRUE(stdfs::is_regular_file(root_ + "/lock"));

  Digest digest = store->content().put("config");
  auto prepared = store->snapshots().prepare();
  std::string id = store->snapshots().commit(std::move(prepared)).id;
  store->metadata().put_cache("key", CacheResult{id, "{}"});
  EXPECT_TRUE(store->content().has(digest));
  EXPECT_EQ(store->metadata().get_cache("key")->snapshot_id, id);
}

TEST_F(StoreTest, SecondOpenOfTheSameRootFailsEvenInOneProcess) {
  auto first = Store::open(root_);
  EXPECT_EQ(error_of([&] { Store::open(root_); }),
            "store " + root_ + " is in use by another kbuildd (pid " + std::to_string(::getpid()) + ")");
  // A trailing slash names the same root.
  EXPECT_NE(error_of([&] { Store::open(root_ + "/"); }), "<no error>");
  // The failed opens did not disturb the first.
  EXPECT_NO_THROW(first->content().put("still works"));
}

TEST_F(StoreTest, ClosingReleasesTheLock) {
  Store::open(root_).reset();
  EXPECT_NO_THROW(Store::open(root_));
}

TEST_F(StoreTest, AnotherProcessHoldingTheRootIsNamedByPid) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = Store::open(root_);
    char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) _exit(1);
    ::pause();
    _exit(0);
  }
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  EXPECT_EQ(error_of([&] { Store::open(root_); }),
            "store " + root_ + " is in use by another kbuildd (pid " + std::to_string(child) + ")");
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  // The holder died without cleaning up: the lock went with it.
  EXPECT_NO_THROW(Store::open(root_));
}

TEST_F(StoreTest, OpenAfterACrashSweepsLeftoversAndKeepsCommittedState) {
  Digest committed;
  std::string snapshot_id;
  {
    auto store = Store::open(root_);
    committed = store->content().put("committed blob");
    auto prepared = store->snapshots().prepare();
    snapshot_id = store->snapshots().commit(std::move(prepared)).id;
    store->metadata().set_image_name("docker.io/library/x:latest", ImageRecord{committed, committed, Clock::now()});
  }
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A daemon killed in the middle of a blob write and of a step.
    auto store = Store::open(root_);
    auto writer = store->content().writer();
    writer.write(std::string(100000, 'p'));
    auto prepared = store->snapshots().prepare(snapshot_id);
    std::ofstream(prepared.diff_path() + "/half-written") << "x";
    ::kill(::getpid(), SIGKILL);
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(entries_in(root_ + "/blobs/tmp"), 1u);
  EXPECT_EQ(entries_in(root_ + "/snapshots"), 2u);

  auto store = Store::open(root_);
  EXPECT_EQ(entries_in(root_ + "/blobs/tmp"), 0u);
  EXPECT_EQ(entries_in(root_ + "/snapshots"), 1u);
  EXPECT_EQ(store->content().list(), std::vector<Digest>{committed});
  EXPECT_EQ(store->content().read_small(committed, 100), "committed blob");
  EXPECT_TRUE(store->metadata().image_by_name("docker.io/library/x:latest"));
  EXPECT_EQ(store->snapshots().lower_chain(snapshot_id).size(), 1u);
}

// A power cut can roll back the last transactions while files they removed stay removed: at
// start, no record may point at what is not there.
TEST_F(StoreTest, OpenDropsRecordsOfWhatIsNoLongerThere) {
  std::string parent, child, kept;
  Digest layer_blob, manifest, config;
  {
    auto store = Store::open(root_);
    parent = store->snapshots().commit(store->snapshots().prepare()).id;
    child = store->snapshots().commit(store->snapshots().prepare(parent)).id;
    kept = store->snapshots().commit(store->snapshots().prepare()).id;
    store->metadata().put_cache("on child", CacheResult{child, "{}"});
    layer_blob = store->content().put("layer");
    store->metadata().put_layer_blob(Digest::of("diff"), LayerBlob{layer_blob, "application/vnd.oci.image.layer.v1.tar"});
    manifest = store->content().put("manifest");
    config = store->content().put("config");
    store->metadata().set_image_name("docker.io/library/gone:latest", ImageRecord{manifest, config, Clock::now()});
    store->metadata().set_image_name("docker.io/library/kept:latest", ImageRecord{config, config, Clock::now()});
    stdfs::remove_all(root_ + "/snapshots/" + parent);
    stdfs::remove(store->content().path(layer_blob));
    stdfs::remove(store->content().path(manifest));
  }
  auto store = Store::open(root_);
  // The snapshot, its child (whose chain is broken) and the cache entry on it.
  EXPECT_FALSE(store->metadata().get_snapshot(parent));
  EXPECT_FALSE(store->metadata().get_snapshot(child));
  EXPECT_FALSE(stdfs::exists(root_ + "/snapshots/" + child));
  EXPECT_FALSE(store->metadata().get_cache("on child"));
  EXPECT_TRUE(store->metadata().get_snapshot(kept));
  EXPECT_FALSE(store->metadata().get_layer_blob(Digest::of("diff")));
  EXPECT_FALSE(store->metadata().image_by_name("docker.io/library/gone:latest"));
  EXPECT_TRUE(store->metadata().image_by_name("docker.io/library/kept:latest"));
  EXPECT_EQ(store->recovery_notes(),
            std::vector<std::string>{"image docker.io/library/gone:latest lost its blob " + manifest.str() +
                                     "; its name is removed"});
}

// A layer imported from a cache keeps its exporter's date, older than the local parent it was
// put on: the start after a crash before sync() still removes the child before its parent.
TEST_F(StoreTest, OpenAfterACrashRemovesUnsyncedChildrenDatedBeforeTheirParents) {
  std::string parent, child;
  {
    auto store = Store::open(root_);
    parent = store->snapshots().commit_deferred(store->snapshots().prepare()).id;
    auto imported = store->snapshots().prepare(parent);
    store->snapshots().set_created(imported, Clock::now() - std::chrono::hours(24));
    child = store->snapshots().commit_deferred(std::move(imported)).id;
  }
  auto store = Store::open(root_);
  EXPECT_FALSE(store->metadata().get_snapshot(child));
  EXPECT_FALSE(store->metadata().get_snapshot(parent));
  EXPECT_EQ(entries_in(root_ + "/snapshots"), 0u);
}

bool is_mount_point(const std::string& path) {
  struct stat here {}, above {};
  return ::stat(path.c_str(), &here) == 0 && ::stat((path + "/..").c_str(), &above) == 0 &&
         here.st_dev != above.st_dev;
}

// Mounts of a crashed daemon (its namespace shared, or inherited) come off before anything is
// swept through them; a file system mounted at the root itself is the administrator's.
TEST_F(StoreTest, OpenDetachesLeftoverMountsWhereTheDaemonMountsOnly) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: mounts";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // In a mount namespace of its own, so nothing leaks into the test's.
    enter_private_mount_namespace();
    stdfs::create_directories(root_);
    Mount::tmpfs(root_, 0, "size=4m").release();
    std::string step = root_ + "/mounts/step-x";
    std::string probe = root_ + "/snapshots/tmp-probe-y/merged";
    stdfs::create_directories(step);
    stdfs::create_directories(probe);
    Mount::tmpfs(step, 0, "size=1m").release();
    Mount::bind(parent_.path(), probe, true).release();
    std::ofstream(parent_.path() + "/not-the-store") << "x";
    auto store = Store::open(root_);
    bool ok = is_mount_point(root_) && !is_mount_point(step) && !stdfs::exists(probe) &&
              stdfs::exists(parent_.path() + "/not-the-store");
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(StoreTest, RootMustBeAnAbsolutePath) {
  EXPECT_EQ(error_of([] { Store::open("var/lib/kbuild"); }),
            "store root must be an absolute path, not \"var/lib/kbuild\"");
}

}  // namespace
}  // namespace kbuild::store
