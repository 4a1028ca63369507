#include "service/daemon_config.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::service {
namespace {

std::string error_of(std::string_view text) {
  try {
    parse_daemon_config(text, "/etc/docker/daemon.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DaemonConfig, DefaultsWhenEmpty) {
  DaemonConfig c = parse_daemon_config("{}", "daemon.json");
  EXPECT_TRUE(c.buildkit);
  EXPECT_TRUE(c.gc_enabled);
  EXPECT_EQ(c.max_concurrent_downloads, 3);
  EXPECT_FALSE(c.entitlement_security_insecure);
}

TEST(DaemonConfig, ReadsTheKeysItKnowsAndIgnoresOthers) {
  DaemonConfig c = parse_daemon_config(R"({
    "features": {"buildkit": false, "containerd-snapshotter": true},
    "builder": {"gc": {"enabled": true, "defaultKeepStorage": "20GB",
                       "policy": [{"keepStorage": "10GB", "filter": ["unused-for=2200h"]}, {"keepStorage": "50GB", "all": true}]},
                "entitlements": {"security-insecure": true}},
    "registry-mirrors": ["https://mirror.example"],
    "insecure-registries": ["127.0.0.1:5000"],
    "max-concurrent-downloads": 6,
    "seccomp-profile": "/etc/kbuild/seccomp.json",
    "proxies": {"http-proxy": "http://proxy:3128", "no-proxy": "localhost"},
    "log-driver": "journald"
  })", "daemon.json");
  EXPECT_FALSE(c.buildkit);
  EXPECT_EQ(c.gc_default_keep_storage, "20GB");
  ASSERT_EQ(c.gc_policies.size(), 2u);
  EXPECT_EQ(c.gc_policies[0].filters, (std::vector<std::string>{"unused-for=2200h"}));
  EXPECT_TRUE(c.gc_policies[1].all);
  EXPECT_TRUE(c.entitlement_security_insecure);
  EXPECT_EQ(c.registry_mirrors, (std::vector<std::string>{"https://mirror.example"}));
  EXPECT_EQ(c.insecure_registries, (std::vector<std::string>{"127.0.0.1:5000"}));
  EXPECT_EQ(c.max_concurrent_downloads, 6);
  EXPECT_EQ(c.seccomp_profile, "/etc/kbuild/seccomp.json");
  EXPECT_EQ(c.http_proxy, "http://proxy:3128");
  EXPECT_EQ(c.no_proxy, "localhost");
}

TEST(DaemonConfig, MalformedJsonIsReportedWithLineAndColumn) {
  std::string error = error_of("{\n  \"features\": {\n    \"buildkit\": tru\n  }\n}\n");
  EXPECT_EQ(error.rfind("/etc/docker/daemon.json:3:", 0), 0u) << error;
  EXPECT_NE(error.find("invalid JSON"), std::string::npos);
}

TEST(DaemonConfig, WrongTypesNameTheKeyAndWhereItsValueIs) {
  EXPECT_EQ(error_of(R"({"features": {"buildkit": "yes"}})"),
            "/etc/docker/daemon.json:1:27: features.buildkit must be a boolean");
  EXPECT_EQ(error_of("{\n  \"registry-mirrors\": \"x\"\n}"),
            "/etc/docker/daemon.json:2:23: registry-mirrors must be a list of strings");
  EXPECT_EQ(error_of(R"({"max-concurrent-downloads": -1})"),
            "/etc/docker/daemon.json:1:30: max-concurrent-downloads must be a whole number from 0 to 1024");
  EXPECT_EQ(error_of("[]"), "/etc/docker/daemon.json:1:1: the top level must be an object");
  EXPECT_EQ(error_of(R"({"features": 3})"), "/etc/docker/daemon.json:1:14: features must be an object");
}

TEST(DaemonConfig, AWrongItemInAListIsPointedAt) {
  EXPECT_EQ(error_of("{\"dns\": [\"1.1.1.1\",\n        8]}"), "/etc/docker/daemon.json:2:9: dns[1] must be a string");
  EXPECT_EQ(error_of(R"({"builder": {"gc": {"policy": [{"all": true}, {"keepStorage": 10}]}}})"),
            "/etc/docker/daemon.json:1:63: builder.gc.policy[1].keepStorage must be a string");
}

TEST(DaemonConfig, GcSettingsThatCannotBeAppliedAreRefusedWhereTheyAre) {
  EXPECT_EQ(error_of(R"({"builder": {"gc": {"defaultKeepStorage": "huge"}}})"),
            "/etc/docker/daemon.json:1:43: builder.gc.defaultKeepStorage must be a size such as \"10GB\"");
  EXPECT_EQ(error_of(R"({"builder": {"gc": {"policy": [{"keepStorage": "10 parsecs"}]}}})"),
            "/etc/docker/daemon.json:1:48: builder.gc.policy[0].keepStorage must be a size such as \"10GB\"");
  EXPECT_EQ(error_of(R"({"builder": {"gc": {"policy": [{"filter": ["colour=red"]}]}}})"),
            "/etc/docker/daemon.json:1:43: builder.gc.policy[0].filter must be a list of filters such as "
            "\"unused-for=2200h\" or \"type=exec.cachemount\" (invalid filter 'colour=red')");
}

TEST(DaemonConfig, ARepeatedKeyIsPointedAtWhereItsLastValueIs) {
  EXPECT_EQ(error_of(R"({"dns": [], "dns": 3})"), "/etc/docker/daemon.json:1:20: dns must be a list of strings");
}

TEST(DaemonConfig, ReadsDnsSettings) {
  DaemonConfig c = parse_daemon_config(
      R"({"dns": ["192.0.2.53"], "dns-search": ["corp.example"], "dns-opts": ["ndots:2"]})", "daemon.json");
  EXPECT_EQ(c.dns, (std::vector<std::string>{"192.0.2.53"}));
  EXPECT_EQ(c.dns_search, (std::vector<std::string>{"corp.example"}));
  EXPECT_EQ(c.dns_opts, (std::vector<std::string>{"ndots:2"}));
}

TEST(DaemonConfig, RemembersWhichSettingsTheFileGave) {
  DaemonConfig c = parse_daemon_config(R"({"registry-mirrors": ["https://m"], "dns": null,
                                           "builder": {"entitlements": {"network-host": false}}})",
                                       "/etc/docker/daemon.json");
  EXPECT_EQ(config_source(c, "registry-mirrors"), "/etc/docker/daemon.json");
  EXPECT_EQ(config_source(c, "builder.entitlements.network-host"), "/etc/docker/daemon.json");
  EXPECT_EQ(config_source(c, "dns"), "default");  // null means the default, as dockerd reads it
  EXPECT_EQ(config_source(c, "features.buildkit"), "default");
  EXPECT_TRUE(c.file_found);
}

TEST(DaemonConfig, BinfmtInstallIsAFeatureOffByDefault) {
  EXPECT_FALSE(parse_daemon_config("{}", "daemon.json").binfmt_install);
  DaemonConfig c = parse_daemon_config(R"({"features": {"binfmt-install": true, "buildkit": true}})", "daemon.json");
  EXPECT_TRUE(c.binfmt_install);
  EXPECT_EQ(config_source(c, "features.binfmt-install"), "daemon.json");
  EXPECT_EQ(describe_config(c).at("features.binfmt-install"), "true");
  EXPECT_THROW(parse_daemon_config(R"({"features": {"binfmt-install": "yes"}})", "daemon.json"), Error);
}

TEST(DaemonConfig, DescribesEverySettingAsJson) {
  DaemonConfig c = parse_daemon_config(R"({"registry-mirrors": ["https://m"],
      "builder": {"gc": {"policy": [{"keepStorage": "10GB", "all": true}]}}})", "daemon.json");
  std::map<std::string, std::string> shown = describe_config(c);
  EXPECT_EQ(shown.at("registry-mirrors"), R"(["https://m"])");
  EXPECT_EQ(shown.at("features.buildkit"), "true");
  EXPECT_EQ(shown.at("features.binfmt-install"), "false");
  EXPECT_EQ(shown.at("max-concurrent-uploads"), "5");
  EXPECT_EQ(shown.at("proxies.http-proxy"), R"("")");
  EXPECT_EQ(shown.at("builder.gc.policy"), R"([{"all":true,"keepStorage":"10GB"}])");
  EXPECT_EQ(shown.size(), 18u);
}

TEST(DaemonConfig, ChangedSettingsListsOnlyWhatDiffers) {
  DaemonConfig before = parse_daemon_config(R"({"insecure-registries": ["a:5000"]})", "daemon.json");
  DaemonConfig after = parse_daemon_config(
      R"({"insecure-registries": ["a:5000"], "builder": {"entitlements": {"network-host": false}}, "dns": ["192.0.2.1"]})",
      "daemon.json");
  EXPECT_EQ(changed_settings(before, after), (std::vector<std::string>{"builder.entitlements.network-host", "dns"}));
  EXPECT_TRUE(changed_settings(after, after).empty());
}

TEST(DaemonConfig, MissingFileMeansDefaults) {
  DaemonConfig c = load_daemon_config("/nonexistent/daemon.json");
  EXPECT_TRUE(c.buildkit);
  EXPECT_FALSE(c.file_found);
  EXPECT_EQ(config_source(c, "features.buildkit"), "default");
}

TEST(DaemonConfig, AnUnreadableFileIsAnError) {
  // A directory opens but does not read.
  EXPECT_THROW(load_daemon_config("/"), Error);
}

}  // namespace
}  // namespace kbuild::service
