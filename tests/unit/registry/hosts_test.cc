#include "engine/registry/hosts.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace kbuild::registry {
namespace {

TEST(Hosts, LoopbackMayFallBackToPlainHttpOthersMayNot) {
  HostsConfig config;
  EXPECT_TRUE(endpoints_for("localhost:5000", config).back().plain_http_fallback);
  EXPECT_TRUE(endpoints_for("127.0.0.1:5000", config).back().plain_http_fallback);
  EXPECT_TRUE(endpoints_for("127.8.9.1", config).back().plain_http_fallback);
  EXPECT_TRUE(endpoints_for("[::1]:5000", config).back().plain_http_fallback);
  auto remote = endpoints_for("registry.example.com", config);
  ASSERT_EQ(remote.size(), 1u);
  EXPECT_EQ(remote[0].base_url, "https://registry.example.com");
  EXPECT_FALSE(remote[0].plain_http_fallback);
  EXPECT_TRUE(remote[0].tls.verify);
  // Loopback still verifies a certificate it is shown.
  EXPECT_TRUE(endpoints_for("127.0.0.1:5000", config).back().tls.verify);
}

TEST(Hosts, InsecureRegistriesByNameOrCidrSkipVerification) {
  HostsConfig config;
  config.insecure_registries = {"reg.local:5000", "10.0.0.0/8"};
  auto named = endpoints_for("reg.local:5000", config).back();
  EXPECT_FALSE(named.tls.verify);
  EXPECT_TRUE(named.plain_http_fallback);
  EXPECT_FALSE(endpoints_for("10.2.3.4:443", config).back().tls.verify);
  EXPECT_TRUE(endpoints_for("11.2.3.4:443", config).back().tls.verify);
  EXPECT_TRUE(endpoints_for("reg.local:5001", config).back().tls.verify);
}

TEST(Hosts, DockerHubGoesToItsRegistryAfterTheMirrors) {
  HostsConfig config;
  config.mirrors = {"https://mirror.example.com/", "http://127.0.0.1:5000"};
  auto endpoints = endpoints_for("docker.io", config);
  ASSERT_EQ(endpoints.size(), 3u);
  EXPECT_EQ(endpoints[0].base_url, "https://mirror.example.com");
  EXPECT_TRUE(endpoints[0].mirror);
  EXPECT_EQ(endpoints[1].base_url, "http://127.0.0.1:5000");
  EXPECT_EQ(endpoints[2].base_url, "https://registry-1.docker.io");
  EXPECT_EQ(endpoints_for("quay.io", config).size(), 1u);  // mirrors are for docker.io only
}

TEST(Hosts, CertsDirGivesCasAndClientCertificates) {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("kbuild-certs-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "reg.local:5000");
  for (const char* name : {"b.crt", "a.crt", "client.cert", "client.key", "notes.txt"}) {
    std::ofstream(dir / "reg.local:5000" / name) << "x";
  }
  HostsConfig config;
  config.certs_dir = dir.string();
  TlsConfig tls = endpoints_for("reg.local:5000", config).back().tls;
  EXPECT_EQ(tls.ca_files, (std::vector<std::string>{(dir / "reg.local:5000" / "a.crt").string(),
                                                     (dir / "reg.local:5000" / "b.crt").string()}));
  EXPECT_EQ(tls.client_cert, (dir / "reg.local:5000" / "client.cert").string());
  EXPECT_EQ(tls.client_key, (dir / "reg.local:5000" / "client.key").string());
  EXPECT_TRUE(endpoints_for("other:5000", config).back().tls.ca_files.empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kbuild::registry
