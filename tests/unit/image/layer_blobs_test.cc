#include "engine/image/layer_blobs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::image {
namespace {

class LayerBlobsTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = store::Store::open(root_.path() + "/store"); }

  store::SnapshotRecord snapshot_with(const std::string& name, const std::string& content) {
    auto prepared = store_->snapshots().prepare();
    const std::string path = prepared.diff_path() + "/" + name;
    UniqueFd fd(check(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), "open", path));
    EXPECT_EQ(::write(fd.get(), content.data(), content.size()), static_cast<ssize_t>(content.size()));
    return store_->snapshots().commit(std::move(prepared));
  }

  TempDir root_;
  std::unique_ptr<store::Store> store_;
};

TEST_F(LayerBlobsTest, JournalsAreOfferedNewestFirstWhileTheirSnapshotsExist) {
  LayerJournalCache cache;
  store::SnapshotRecord a = snapshot_with("a", "first");
  store::SnapshotRecord b = snapshot_with("b", "second");
  LayerRecord layer_a = layer_for_snapshot(*store_, a, std::nullopt, &cache);
  LayerRecord layer_b = layer_for_snapshot(*store_, b, std::nullopt, &cache);
  EXPECT_NE(layer_a.diff_id, layer_b.diff_id);

  LayerJournals usable = cache.usable(*store_);
  ASSERT_EQ(usable.size(), 2u);
  EXPECT_EQ(usable[0]->checkpoints.back().offset, layer_b.size);
  EXPECT_EQ(usable[1]->checkpoints.back().offset, layer_a.size);

  store_->snapshots().remove(b.id);
  usable = cache.usable(*store_);
  ASSERT_EQ(usable.size(), 1u);
  EXPECT_EQ(usable[0]->checkpoints.back().offset, layer_a.size);
}

TEST_F(LayerBlobsTest, AJournalledHashEqualsAPlainOne) {
  LayerJournalCache cache;
  store::SnapshotRecord a = snapshot_with("f", std::string(200000, 'x'));
  layer_for_snapshot(*store_, a, std::nullopt, &cache);
  store::SnapshotRecord b = snapshot_with("f", std::string(200000, 'x'));
  LayerRecord journalled = layer_for_snapshot(*store_, b, std::nullopt, &cache);

  const std::string diff = store_->snapshots().diff_path(b.id);
  UniqueFd dir(check(::open(diff.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", diff));
  NullSink nowhere;
  LayerOptions options;
  options.compression = Compression::none;
  LayerDigests plain = write_layer(dir.get(), nowhere, options);
  EXPECT_EQ(journalled.diff_id, plain.diff_id);
  EXPECT_EQ(journalled.size, plain.tar_size);
}

}  // namespace
}  // namespace kbuild::image
