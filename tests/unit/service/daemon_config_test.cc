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

TEST(DaemonConfig, WrongTypesNameTheKey) {
  EXPECT_EQ(error_of(R"({"features": {"buildkit": "yes"}})"), "/etc/docker/daemon.json: features.buildkit must be a boolean");
  EXPECT_EQ(error_of(R"({"registry-mirrors": "x"})"), "/etc/docker/daemon.json: registry-mirrors must be a list of strings");
  EXPECT_EQ(error_of(R"({"max-concurrent-downloads": -1})"),
            "/etc/docker/daemon.json: max-concurrent-downloads must be a whole number from 0 to 1024");
  EXPECT_EQ(error_of("[]"), "/etc/docker/daemon.json: the top level must be an object");
  EXPECT_EQ(error_of(R"({"features": 3})"), "/etc/docker/daemon.json: features must be an object");
}

TEST(DaemonConfig, MissingFileMeansDefaults) {
  EXPECT_TRUE(load_daemon_config("/nonexistent/daemon.json").buildkit);
}

}  // namespace
}  // namespace kbuild::service
