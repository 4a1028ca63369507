#include "engine/store/snapshot_store.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <linux/magic.h>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"

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

void write_file(const std::string& path, const std::string& contents) { std::ofstream(path) << contents; }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `body` in a child process with a private mount namespace, so that its mounts vanish
// with it whatever happens; true if it exited 0.
bool in_private_mount_namespace(const std::function<int()>& body) {
  pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(90);
    int code = 91;
    try {
      code = body();
    } catch (...) {
    }
    _exit(code);
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string overlay_options(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work) {
  std::string options = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) options += (i ? ":" : "") + lowers[i];
  return options + ",upperdir=" + upper + ",workdir=" + work;
}

class SnapshotStoreTest : public ::testing::Test {
 protected:
  TempDir root_{"/tmp", "kbuild-snapshot-test-"};
  MetadataStore metadata_{root_.path() + "/metadata.db"};
  SnapshotStore store_{root_.path(), metadata_};
  std::string snapshots() const { return root_.path() + "/snapshots"; }

  size_t entries() const {
    size_t count = 0;
    for ([[maybe_unused]] const auto& entry : stdfs::directory_iterator(snapshots())) ++count;
    return count;
  }

  // Commits a snapshot holding `file` with `contents` on top of `parent`.
  std::string commit_with(const std::string& file, const std::string& contents,
                          std::optional<std::string> parent = {}) {
    auto prepared = store_.prepare(std::move(parent));
    write_file(prepared.diff_path() + "/" + file, contents);
    return store_.commit(std::move(prepared)).id;
  }
};

TEST_F(SnapshotStoreTest, PrepareMakesAnEmptyDiffAndWorkDirUnderATempName) {
  auto prepared = store_.prepare();
  EXPECT_TRUE(SnapshotStore::is_valid_id(prepared.id()));
  EXPECT_EQ(prepared.path(), snapshots() + "/tmp-" + prepared.id());
  EXPECT_TRUE(stdfs::is_empty(prepared.diff_path()));
  EXPECT_TRUE(stdfs::is_directory(prepared.work_path()));
  struct stat st {};
  ASSERT_EQ(::stat(prepared.diff_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);  // the mounted root directory's mode
  EXPECT_FALSE(metadata_.get_snapshot(prepared.id()));
}

TEST_F(SnapshotStoreTest, IdsAreRandomAndDistinct) {
  auto a = store_.prepare();
  auto b = store_.prepare();
  EXPECT_NE(a.id(), b.id());
  EXPECT_EQ(a.id().size(), 32u);
}

TEST_F(SnapshotStoreTest, CommitRenamesIntoPlaceAndRecordsTheSnapshot) {
  auto base = store_.prepare(std::nullopt, "context");
  std::string id = base.id();
  write_file(base.diff_path() + "/hello", std::string(10000, 'h'));
  SnapshotRecord record = store_.commit(std::move(base), Digest::of("tar"));
  EXPECT_EQ(record.id, id);
  EXPECT_EQ(record.kind, "context");
  EXPECT_EQ(record.diff_id, Digest::of("tar"));
  EXPECT_GE(record.size, 10000u);
  EXPECT_EQ(metadata_.get_snapshot(id), record);
  EXPECT_EQ(store_.path(id), snapshots() + "/" + id);
  EXPECT_EQ(read_file(store_.diff_path(id) + "/hello"), std::string(10000, 'h'));
  EXPECT_TRUE(stdfs::is_directory(store_.path(id) + "/work"));
  EXPECT_FALSE(stdfs::exists(snapshots() + "/tmp-" + id));
}

TEST_F(SnapshotStoreTest, SizeCountsHardLinkedFilesOnce) {
  auto prepared = store_.prepare();
  write_file(prepared.diff_path() + "/a", std::string(64 * 1024, 'a'));
  stdfs::create_hard_link(prepared.diff_path() + "/a", prepared.diff_path() + "/b");
  auto record = store_.commit(std::move(prepared));
  EXPECT_GE(record.size, 64u * 1024u);
  EXPECT_LT(record.size, 2u * 64u * 1024u);
}

TEST_F(SnapshotStoreTest, UncommittedSnapshotIsRemovedWhenDropped) {
  std::string path;
  {
    auto prepared = store_.prepare();
    path = prepared.path();
    write_file(prepared.diff_path() + "/file", "x");
  }
  EXPECT_FALSE(stdfs::exists(path));
  EXPECT_EQ(entries(), 0u);
}

TEST_F(SnapshotStoreTest, LowerChainListsDiffsFromTopToBase) {
  std::string base = commit_with("a", "1");
  std::string middle = commit_with("b", "2", base);
  std::string top = commit_with("c", "3", middle);
  EXPECT_EQ(store_.lower_chain(top),
            (std::vector<std::string>{store_.diff_path(top), store_.diff_path(middle), store_.diff_path(base)}));
  EXPECT_EQ(store_.lower_chain(base), std::vector<std::string>{store_.diff_path(base)});
  EXPECT_EQ(metadata_.get_snapshot(top)->parent, middle);
  EXPECT_EQ(error_of([&] { store_.lower_chain(std::string(32, '0')); }),
            "snapshot " + std::string(32, '0') + " not found");
}

TEST_F(SnapshotStoreTest, PrepareOnAnUnknownParentIsNotFound) {
  std::string unknown(32, 'e');
  EXPECT_EQ(error_of([&] { store_.prepare(unknown); }), "snapshot " + unknown + " not found");
  EXPECT_EQ(entries(), 0u);
}

TEST_F(SnapshotStoreTest, CommitThatCannotBeRecordedLeavesNothing) {
  std::string base = commit_with("a", "1");
  auto child = store_.prepare(base);
  std::string id = child.id();
  store_.remove(base);  // the parent goes away meanwhile
  EXPECT_THROW(store_.commit(std::move(child)), Error);
  EXPECT_FALSE(metadata_.get_snapshot(id));
  EXPECT_EQ(entries(), 0u);
}

TEST_F(SnapshotStoreTest, RemoveRefusesParentsAndRemovesLeaves) {
  std::string base = commit_with("a", "1");
  std::string child = commit_with("b", "2", base);
  metadata_.put_cache("key", CacheResult{child, "{}"});
  EXPECT_THROW(store_.remove(base), Error);
  EXPECT_TRUE(stdfs::exists(store_.path(base)));

  store_.remove(child);
  EXPECT_FALSE(stdfs::exists(store_.path(child)));
  EXPECT_FALSE(metadata_.get_snapshot(child));
  EXPECT_FALSE(metadata_.get_cache("key"));
  store_.remove(base);
  EXPECT_EQ(entries(), 0u);
  EXPECT_NO_THROW(store_.remove(base));
}

TEST_F(SnapshotStoreTest, InvalidIdsNeverBecomePaths) {
  std::vector<std::string> forged{"..", "../../etc", std::string(31, 'a') + "/", std::string(32, 'A'), ""};
  for (const auto& id : forged) {
    EXPECT_THROW(store_.path(id), Error) << id;
    EXPECT_THROW(store_.remove(id), Error) << id;
    EXPECT_THROW(store_.prepare(id), Error) << id;
  }
}

TEST_F(SnapshotStoreTest, SweepRemovesLeftoversButKeepsLiveAndRecordedSnapshots) {
  std::string kept = commit_with("a", "1");
  auto live = store_.prepare();
  stdfs::create_directories(snapshots() + "/tmp-" + std::string(32, '1') + "/diff");  // crashed prepare
  stdfs::create_directories(snapshots() + "/tmp-probe-abcdef/merged");                // crashed probe
  stdfs::create_directories(snapshots() + "/" + std::string(32, '2') + "/diff");      // renamed, never recorded
  stdfs::create_directories(snapshots() + "/not-ours");                               // left alone
  store_.sweep();
  std::set<std::string> names;
  for (const auto& entry : stdfs::directory_iterator(snapshots())) names.insert(entry.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{kept, "tmp-" + live.id(), "not-ours"}));
  EXPECT_EQ(store_.commit(std::move(live)).kind, "layer");
}

TEST_F(SnapshotStoreTest, DeferredCommitsBecomeDurableAtSyncAndOtherwiseGoAtTheNextSweep) {
  std::string synced_parent = commit_with("a", "1");
  auto prepared = store_.prepare(synced_parent);
  write_file(prepared.diff_path() + "/b", "2");
  std::string deferred = store_.commit_deferred(std::move(prepared)).id;
  auto child = store_.prepare(deferred);
  std::string deferred_child = store_.commit_deferred(std::move(child)).id;
  EXPECT_EQ(metadata_.unsynced_snapshots(), (std::vector<std::string>{deferred_child, deferred}));
  // A crash now: a new store over the same files sweeps what no sync covered.
  {
    SnapshotStore after_crash(root_.path(), metadata_);
    after_crash.sweep();
  }
  EXPECT_TRUE(metadata_.get_snapshot(synced_parent));
  EXPECT_FALSE(metadata_.get_snapshot(deferred));
  EXPECT_FALSE(metadata_.get_snapshot(deferred_child));
  EXPECT_FALSE(stdfs::exists(snapshots() + "/" + deferred));

  auto again = store_.prepare(synced_parent);
  std::string kept = store_.commit_deferred(std::move(again)).id;
  store_.sync();
  EXPECT_TRUE(metadata_.unsynced_snapshots().empty());
  store_.sweep();
  EXPECT_TRUE(metadata_.get_snapshot(kept));
}

TEST_F(SnapshotStoreTest, ConcurrentPrepareAndCommitFromThreads) {
  std::string base = commit_with("base", "b");
  std::vector<std::thread> threads;
  std::vector<std::string> errors(6);
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = 0; i < 5; ++i) {
          auto prepared = store_.prepare(base);
          write_file(prepared.diff_path() + "/f", std::to_string(t));
          std::string id = store_.commit(std::move(prepared)).id;
          if (i % 2 == 0) store_.remove(id);
        }
      } catch (const std::exception& error) {
        errors[t] = error.what();
      }
    });
  }
  std::thread sweeper([&] {
    for (int i = 0; i < 10; ++i) store_.sweep();
  });
  for (auto& thread : threads) thread.join();
  sweeper.join();
  for (const auto& error : errors) EXPECT_EQ(error, "");
  EXPECT_EQ(metadata_.children_of(base).size(), 12u);
  EXPECT_EQ(entries(), 13u);
}

TEST_F(SnapshotStoreTest, OverlayIsSupportedOnThisMachinesTmp) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting overlayfs needs root";
  struct statfs st {};
  ASSERT_EQ(::statfs("/tmp", &st), 0);
  if (st.f_type != EXT4_SUPER_MAGIC) GTEST_SKIP() << "/tmp is not ext4 here";
  EXPECT_TRUE(store_.overlay_supported()) << store_.overlay_unsupported_reason();
  EXPECT_EQ(store_.overlay_unsupported_reason(), "");
  EXPECT_TRUE(store_.overlay_supported());  // cached
  EXPECT_EQ(entries(), 0u);                 // the probe cleaned up
}

TEST_F(SnapshotStoreTest, OverlayProbeFailsWhenTheStoreIsOnOverlayfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting overlayfs needs root";
  std::string base = root_.path() + "/outer";
  bool ok = in_private_mount_namespace([&] {
    for (const char* dir : {"/l", "/u", "/w", "/m"}) stdfs::create_directories(base + dir);
    std::string options = overlay_options({base + "/l"}, base + "/u", base + "/w");
    if (::mount("overlay", (base + "/m").c_str(), "overlay", 0, options.c_str()) != 0) return 2;
    MetadataStore metadata(root_.path() + "/inner.db");
    SnapshotStore store(base + "/m/store", metadata);
    if (store.overlay_supported()) return 3;
    std::string reason = store.overlay_unsupported_reason();
    if (reason.find("overlayfs on overlayfs") == std::string::npos) return 4;
    return 0;
  });
  EXPECT_TRUE(ok);
}

TEST_F(SnapshotStoreTest, ChildSnapshotMountedOverItsParentRecordsWhiteoutsAndNewFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting overlayfs needs root";
  if (!store_.overlay_supported()) GTEST_SKIP() << store_.overlay_unsupported_reason();
  auto base = store_.prepare();
  write_file(base.diff_path() + "/deleted", "old");
  write_file(base.diff_path() + "/kept", "base");
  std::string base_id = store_.commit(std::move(base)).id;

  auto child = store_.prepare(base_id);
  std::string merged = root_.path() + "/merged";
  stdfs::create_directory(merged);
  std::string options = overlay_options(store_.lower_chain(base_id), child.diff_path(), child.work_path());
  bool ok = in_private_mount_namespace([&] {
    if (::mount("overlay", merged.c_str(), "overlay", 0, options.c_str()) != 0) return 2;
    if (read_file(merged + "/kept") != "base") return 3;
    if (::unlink((merged + "/deleted").c_str()) != 0) return 4;
    write_file(merged + "/added", "new");
    return ::umount(merged.c_str()) == 0 ? 0 : 5;
  });
  ASSERT_TRUE(ok);
  std::string child_id = store_.commit(std::move(child)).id;

  struct stat st {};
  ASSERT_EQ(::lstat((store_.diff_path(child_id) + "/deleted").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
  EXPECT_EQ(read_file(store_.diff_path(child_id) + "/added"), "new");
  EXPECT_FALSE(stdfs::exists(store_.diff_path(child_id) + "/kept"));
  EXPECT_EQ(read_file(store_.diff_path(base_id) + "/deleted"), "old");
}

}  // namespace
}  // namespace kbuild::store
