#include "engine/solver/context.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "common/temp_dir.h"

namespace kbuild::solver {
namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

class ContextCacheTest : public ::testing::Test {
 protected:
  // A tree with one file, remembered for `key` as a build that read it would.
  std::string remember_tree(const std::string& key) {
    auto state = new_context_tree(root_.path());
    cache_.remember(key, state);
    std::string path = cache_.list().back().path;
    std::ofstream(path + "/file") << "data";
    return path;
  }

  TempDir root_{"/tmp", "kbuild-context-cache-test-"};
  ContextCache cache_;
};

TEST_F(ContextCacheTest, ListsRememberedTreesWithTheirUse) {
  std::string path = remember_tree("0:1:2");
  std::vector<store::LocalSources::Entry> entries = cache_.list();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].path, path);
  EXPECT_EQ(root_.path() + "/" + entries[0].id, path);
  EXPECT_EQ(entries[0].name, "context");
  EXPECT_EQ(entries[0].usage_count, 1u);
  EXPECT_FALSE(entries[0].in_use);
  // A build takes it (shared, as another build holds it) and uses it again.
  ContextCache::Previous held = cache_.take("0:1:2");
  ASSERT_TRUE(held.state);
  EXPECT_TRUE(held.exclusive);
  cache_.remember("0:1:2", held.state);
  entries = cache_.list();
  EXPECT_EQ(entries[0].usage_count, 2u);
  EXPECT_TRUE(entries[0].in_use);
  EXPECT_GE(entries[0].last_used, entries[0].created);
}

TEST_F(ContextCacheTest, RemoveForgetsAndDeletesATreeNoBuildHolds) {
  std::string path = remember_tree("0:1:2");
  std::string id = cache_.list()[0].id;
  EXPECT_TRUE(cache_.remove(id));
  EXPECT_FALSE(exists(path));  // gone when remove returns
  EXPECT_TRUE(cache_.list().empty());
  EXPECT_FALSE(cache_.take("0:1:2").state);  // the next build reads the whole context
  EXPECT_FALSE(cache_.remove(id));
}

TEST_F(ContextCacheTest, RemoveLeavesATreeABuildHolds) {
  std::string path = remember_tree("0:1:2");
  std::string id = cache_.list()[0].id;
  ContextCache::Previous held = cache_.take("0:1:2");
  cache_.remember("0:1:2", held.state);
  EXPECT_FALSE(cache_.remove(id));
  EXPECT_TRUE(exists(path + "/file"));
  held = {};  // the build ends
  EXPECT_TRUE(cache_.remove(id));
  EXPECT_FALSE(exists(path));
}

// Builds take the tree while GC removes it: a build gets it whole or not at all, and what a
// build holds stays.
TEST_F(ContextCacheTest, ABuildThatTakesATreeDuringItsRemovalGetsItWholeOrNone) {
  std::atomic<bool> stop{false};
  std::atomic<int> removed{0};
  std::thread gc([&] {
    while (!stop) {
      for (const auto& entry : cache_.list()) removed += cache_.remove(entry.id);
    }
  });
  int reused = 0;
  int fresh = 0;
  for (int i = 0; i < 2000 && !HasFailure(); ++i) {
    ContextCache::Previous previous = cache_.take("0:1:2");
    const bool taken = previous.state != nullptr;
    // A read of the context: into the taken tree, or a new one.
    std::shared_ptr<MaterializedContext::State> state = taken ? previous.state : new_context_tree(root_.path());
    cache_.remember("0:1:2", state);
    std::vector<store::LocalSources::Entry> entries = cache_.list();
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_TRUE(entries[0].in_use);
    if (taken) {
      ++reused;
      EXPECT_TRUE(exists(entries[0].path + "/file")) << "a taken tree was removed";
    } else {
      ++fresh;
      std::ofstream(entries[0].path + "/file") << "data";
    }
    std::this_thread::yield();
    EXPECT_TRUE(exists(entries[0].path + "/file")) << "a held tree was removed";
  }
  stop = true;
  gc.join();
  EXPECT_GT(reused, 0);
  EXPECT_GT(fresh, 0);
  EXPECT_GT(removed.load(), 0);
}

}  // namespace
}  // namespace kbuild::solver
