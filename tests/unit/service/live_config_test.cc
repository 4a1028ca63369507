#include "service/live_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "common/error.h"
#include "common/temp_dir.h"

namespace kbuild::service {
namespace {

class LiveConfigTest : public ::testing::Test {
 protected:
  void write_config(const std::string& text) { std::ofstream(path_) << text; }

  LiveConfig& live() {
    if (!live_) live_ = std::make_unique<LiveConfig>(builder_, solver::SandboxConfig{}, "", load_daemon_config(path_));
    return *live_;
  }

  TempDir dir_;
  std::string path_ = dir_.path() + "/daemon.json";
  std::unique_ptr<store::Store> store_ = store::Store::open(dir_.path() + "/store");
  solver::Builder builder_{*store_};
  std::unique_ptr<LiveConfig> live_;
};

TEST_F(LiveConfigTest, StartAppliesTheFileToTheBuilder) {
  write_config(R"({"registry-mirrors": ["https://m.example"], "max-concurrent-downloads": 9})");
  EXPECT_EQ(live().current()->registry_mirrors, (std::vector<std::string>{"https://m.example"}));
  EXPECT_EQ(builder_.registry()->hosts.mirrors, (std::vector<std::string>{"https://m.example"}));
  EXPECT_EQ(builder_.registry()->max_concurrent_downloads, 9);
}

TEST_F(LiveConfigTest, ReloadAppliesTheNewFileAndSaysWhatChanged) {
  write_config(R"({"insecure-registries": ["a:5000"]})");
  std::shared_ptr<const DaemonConfig> before = live().current();
  std::shared_ptr<const solver::RegistrySettings> registry_before = builder_.registry();
  write_config(R"({"insecure-registries": ["b:5000"], "max-concurrent-uploads": 1})");
  ReloadResult result = live().reload();
  EXPECT_EQ(result.path, path_);
  EXPECT_EQ(result.changed, (std::vector<std::string>{"insecure-registries", "max-concurrent-uploads"}));
  EXPECT_EQ(builder_.registry()->hosts.insecure_registries, (std::vector<std::string>{"b:5000"}));
  // What was taken before stays as it was: a build keeps the settings it started with.
  EXPECT_EQ(before->insecure_registries, (std::vector<std::string>{"a:5000"}));
  EXPECT_EQ(registry_before->hosts.insecure_registries, (std::vector<std::string>{"a:5000"}));
}

TEST_F(LiveConfigTest, AFailedReloadKeepsTheConfigurationInUse) {
  write_config(R"({"registry-mirrors": ["https://a.example"]})");
  live();
  write_config("{\"registry-mirrors\": [\"https://b.example\"],\n \"dns\": \"192.0.2.1\"}");
  try {
    live().reload();
    FAIL() << "a wrong type was taken";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path_ + ":2:9: dns must be a list of strings");
  }
  EXPECT_EQ(live().current()->registry_mirrors, (std::vector<std::string>{"https://a.example"}));
  EXPECT_EQ(builder_.registry()->hosts.mirrors, (std::vector<std::string>{"https://a.example"}));
}

TEST_F(LiveConfigTest, ASeccompProfileThatDoesNotLoadFailsTheReload) {
  write_config("{}");
  live();
  write_config(R"({"seccomp-profile": "/nonexistent/profile.json"})");
  EXPECT_THROW(live().reload(), Error);
  EXPECT_EQ(live().current()->seccomp_profile, "");
}

TEST_F(LiveConfigTest, ARemovedFileMeansTheDefaults) {
  write_config(R"({"builder": {"entitlements": {"network-host": false}}})");
  EXPECT_FALSE(live().current()->entitlement_network_host);
  std::remove(path_.c_str());
  EXPECT_EQ(live().reload().changed, (std::vector<std::string>{"builder.entitlements.network-host"}));
  EXPECT_TRUE(live().current()->entitlement_network_host);
  EXPECT_FALSE(live().current()->file_found);
}

}  // namespace
}  // namespace kbuild::service
