#include "engine/gc/prune_policy.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::gc {
namespace {

using std::chrono::hours;

const Clock::time_point kNow = Clock::time_point(std::chrono::seconds(1'800'000'000));

UsageRecord record(std::string id, uint64_t size, hours unused, uint64_t uses = 0) {
  UsageRecord r;
  r.id = std::move(id);
  r.size = size;
  r.created = kNow - hours(1000);
  r.last_used = kNow - unused;
  r.usage_count = uses;
  return r;
}

std::vector<std::string> ids(const std::vector<UsageRecord>& records, const std::vector<size_t>& chosen) {
  std::vector<std::string> out;
  for (size_t i : chosen) out.push_back(records[i].id);
  return out;
}

std::vector<std::string> pruned(const std::vector<UsageRecord>& records, const PruneOptions& options = {}) {
  return ids(records, select_for_prune(records, options, kNow));
}

PruneOptions with_filters(std::vector<std::string> filters) {
  PruneOptions options;
  parse_filters(filters, options);
  return options;
}

std::string filter_error(std::vector<std::string> filters) {
  try {
    with_filters(std::move(filters));
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    return e.what();
  }
  return "<no error>";
}

TEST(PrunePolicy, RemovesLeastRecentlyUsedFirstThenLeastUsed) {
  std::vector<UsageRecord> records{record("a", 1, hours(1)), record("b", 1, hours(5), 3), record("c", 1, hours(5), 1)};
  EXPECT_EQ(pruned(records), (std::vector<std::string>{"c", "b", "a"}));
}

TEST(PrunePolicy, NeverRemovesWhatIsInUseOrSharedByATaggedImage) {
  std::vector<UsageRecord> records{record("held", 1, hours(9)), record("tagged", 1, hours(9)), record("free", 1, hours(1))};
  records[0].in_use = true;
  records[1].shared = true;
  EXPECT_EQ(pruned(records), (std::vector<std::string>{"free"}));
}

TEST(PrunePolicy, RemovesAChildBeforeWhatItNeeds) {
  // The parent is older, but stays until its child has gone.
  std::vector<UsageRecord> records{record("parent", 1, hours(9)), record("child", 1, hours(1))};
  records[1].needs = {"parent"};
  EXPECT_EQ(pruned(records), (std::vector<std::string>{"child", "parent"}));
}

TEST(PrunePolicy, KeepsWhatARecordInUseNeeds) {
  std::vector<UsageRecord> records{record("parent", 1, hours(9)), record("child", 1, hours(1)), record("blob", 1, hours(9))};
  records[1].needs = {"parent", "blob"};
  records[1].in_use = true;
  EXPECT_TRUE(pruned(records).empty());
}

TEST(PrunePolicy, KeepStorageStopsOnceTheCacheFits) {
  std::vector<UsageRecord> records{record("old", 100, hours(9)), record("mid", 100, hours(5)), record("new", 100, hours(1)),
                                   record("image", 1000, hours(99))};
  records[3].shared = true;  // not counted: the image's, not the cache's
  PruneOptions options;
  options.keep_storage = 150;
  EXPECT_EQ(pruned(records, options), (std::vector<std::string>{"old", "mid"}));
  options.keep_storage = 300;
  EXPECT_TRUE(pruned(records, options).empty());
}

TEST(PrunePolicy, KeepStorageTakesAParentOnceItsChildIsGone) {
  std::vector<UsageRecord> records{record("parent", 100, hours(9)), record("child", 100, hours(8)),
                                   record("other", 100, hours(5))};
  records[1].needs = {"parent"};
  PruneOptions options;
  options.keep_storage = 100;
  EXPECT_EQ(pruned(records, options), (std::vector<std::string>{"child", "parent"}));
}

TEST(PrunePolicy, LayersOfUnnamedImagesOnlyWithAll) {
  std::vector<UsageRecord> records{record("dangling", 1, hours(9)), record("cache", 1, hours(1))};
  records[0].image = true;
  EXPECT_EQ(pruned(records), (std::vector<std::string>{"cache"}));
  PruneOptions all;
  all.all = true;
  EXPECT_EQ(pruned(records, all), (std::vector<std::string>{"dangling", "cache"}));
}

TEST(PrunePolicy, UntilKeepsWhatWasUsedMoreRecently) {
  std::vector<UsageRecord> records{record("old", 1, hours(30)), record("recent", 1, hours(2))};
  records.push_back(record("never-used", 1, hours(0)));
  records.back().last_used.reset();  // its making (1000 hours ago) counts
  EXPECT_EQ(pruned(records, with_filters({"until=24h"})), (std::vector<std::string>{"never-used", "old"}));
  EXPECT_EQ(pruned(records, with_filters({"unused-for=1h"})), (std::vector<std::string>{"never-used", "old", "recent"}));
}

TEST(PrunePolicy, TypeFiltersSelectAndExclude) {
  std::vector<UsageRecord> records{record("layer", 1, hours(1)), record("mount", 1, hours(2))};
  records[1].type = kTypeCacheMount;
  records[1].mutable_ = true;
  EXPECT_EQ(pruned(records, with_filters({"type=exec.cachemount"})), (std::vector<std::string>{"mount"}));
  EXPECT_EQ(pruned(records, with_filters({"type==exec.cachemount"})), (std::vector<std::string>{"mount"}));
  EXPECT_EQ(pruned(records, with_filters({"type!=exec.cachemount"})), (std::vector<std::string>{"layer"}));
  EXPECT_EQ(pruned(records, with_filters({"type=regular", "type=exec.cachemount"})),
            (std::vector<std::string>{"mount", "layer"}));
  EXPECT_EQ(pruned(records, with_filters({"mutable"})), (std::vector<std::string>{"mount"}));
  EXPECT_EQ(pruned(records, with_filters({"id=lay"})), (std::vector<std::string>{"layer"}));
}

TEST(PrunePolicy, BadFiltersGetDockersErrors) {
  EXPECT_EQ(filter_error({"color=red"}), "invalid filter 'color=red'");
  EXPECT_EQ(filter_error({"bogus"}), "bad format of filter (expected name=value)");
  EXPECT_EQ(filter_error({"type="}), "bad format of filter (expected name=value)");
  EXPECT_EQ(filter_error({"until=soon"}),
            "\"until\" filter expects a duration (e.g., '24h'): time: invalid duration \"soon\"");
  EXPECT_EQ(filter_error({"until=1h", "unused-for=2h"}), "conflicting filters \"until\" and \"unused-for\"");
  EXPECT_EQ(filter_error({"until=1h", "until=2h"}), "\"until\" filter expects only one value");
  EXPECT_EQ(filter_error({"until=1h", "type=regular", "inuse"}), "<no error>");
}

}  // namespace
}  // namespace kbuild::gc
