#include "service/garbage_collector.h"

#include <gtest/gtest.h>

namespace kbuild::service {
namespace {

TEST(GcPolicies, WithoutRulesBuildKitsDefaultsForTheKeepStorage) {
  DaemonConfig config;
  config.gc_default_keep_storage = "2GB";
  std::vector<gc::PruneOptions> policies = gc_policies(config, 123);
  ASSERT_EQ(policies.size(), 4u);
  EXPECT_EQ(policies[0].filter.types, (std::vector<std::string>{"source.local", "exec.cachemount", "source.git.checkout"}));
  EXPECT_EQ(policies[0].unused_for, std::chrono::hours(48));
  EXPECT_EQ(policies[0].keep_storage, 512ull << 20);
  EXPECT_EQ(policies[1].unused_for, std::chrono::hours(24 * 60));
  EXPECT_EQ(policies[2].keep_storage, 2ull << 30);
  EXPECT_FALSE(policies[2].all);
  EXPECT_TRUE(policies[3].all);
  EXPECT_EQ(policies[3].keep_storage, 2ull << 30);
  // Unset: the default given (a tenth of the store's file system), and a smaller first rule.
  EXPECT_EQ(gc_policies(DaemonConfig{}, 123)[3].keep_storage, 123u);
  EXPECT_EQ(gc_policies(DaemonConfig{}, 123)[0].keep_storage, 123u);
}

TEST(GcPolicies, RulesApplyInOrderWithTheirOwnFiltersAndLimits) {
  DaemonConfig config;
  config.gc_default_keep_storage = "1GB";
  config.gc_policies = {GcPolicy{"10GB", {"unused-for=2200h", "type=exec.cachemount"}, false, ""},
                        GcPolicy{"", {}, true, "24h"}};
  std::vector<gc::PruneOptions> policies = gc_policies(config, 123);
  ASSERT_EQ(policies.size(), 2u);
  EXPECT_EQ(policies[0].keep_storage, 10ull << 30);
  EXPECT_EQ(policies[0].unused_for, std::chrono::hours(2200));
  EXPECT_EQ(policies[0].filter.types, (std::vector<std::string>{"exec.cachemount"}));
  EXPECT_FALSE(policies[0].all);
  EXPECT_EQ(policies[1].keep_storage, 1ull << 30);  // none of its own: defaultKeepStorage
  EXPECT_EQ(policies[1].unused_for, std::chrono::hours(24));
  EXPECT_TRUE(policies[1].all);
}

}  // namespace
}  // namespace kbuild::service
