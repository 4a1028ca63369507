#include "engine/network/resolv_conf.h"

#include <gtest/gtest.h>

namespace kbuild::network {
namespace {

TEST(StepResolvConf, LoopbackResolverIsReplacedByTheForwarder) {
  // systemd-resolved's stub file.
  StepResolvConf out = step_resolv_conf(
      "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\n"
      "search example.com\n",
      "169.254.1.1", true);
  EXPECT_TRUE(out.uses_forwarder);
  EXPECT_EQ(out.text,
            "# This is /run/systemd/resolve/stub-resolv.conf\noptions edns0 trust-ad\nsearch example.com\n"
            "nameserver 169.254.1.1\n");
}

TEST(StepResolvConf, NonLoopbackResolversAreKeptAsTheyAre) {
  std::string host = "search corp.example\nnameserver 10.0.0.2\nnameserver 2001:db8::53\noptions ndots:2\n";
  StepResolvConf out = step_resolv_conf(host, "169.254.1.1", true);
  EXPECT_FALSE(out.uses_forwarder);
  EXPECT_EQ(out.text, host);
}

TEST(StepResolvConf, LoopbackResolversAmongOthersAreDropped) {
  StepResolvConf out =
      step_resolv_conf("nameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver ::1\n", "10.0.2.3", true);
  EXPECT_FALSE(out.uses_forwarder);
  EXPECT_EQ(out.text, "nameserver 192.0.2.53\n");
}

TEST(StepResolvConf, EveryLoopbackFormCountsAsLoopback) {
  for (const char* address : {"127.0.0.53", "127.1.2.3", "::1", "::ffff:127.0.0.1", "  127.0.0.1"}) {
    StepResolvConf out = step_resolv_conf(std::string("nameserver ") + address + "\n", "10.0.2.3", true);
    EXPECT_TRUE(out.uses_forwarder) << address;
    EXPECT_EQ(out.text, "nameserver 10.0.2.3\n") << address;
  }
}

TEST(StepResolvConf, Ipv6ResolversAreDroppedWithoutIpv6) {
  StepResolvConf out = step_resolv_conf("nameserver 2001:db8::53\nnameserver 192.0.2.53\n", "10.0.2.3", false);
  EXPECT_EQ(out.text, "nameserver 192.0.2.53\n");
  out = step_resolv_conf("nameserver 2001:db8::53\n", "10.0.2.3", false);
  EXPECT_TRUE(out.uses_forwarder);
  EXPECT_EQ(out.text, "nameserver 10.0.2.3\n");
}

TEST(StepResolvConf, LinkLocalResolverWithAZoneIsDropped) {
  // The zone names a host interface, which the step does not have.
  StepResolvConf out = step_resolv_conf("nameserver fe80::1%eth1\n", "169.254.1.1", true);
  EXPECT_TRUE(out.uses_forwarder);
  EXPECT_EQ(out.text, "nameserver 169.254.1.1\n");
}

TEST(StepResolvConf, MissingOrEmptyHostFileGivesTheForwarder) {
  StepResolvConf out = step_resolv_conf("", "10.0.2.3", false);
  EXPECT_TRUE(out.uses_forwarder);
  EXPECT_EQ(out.text, "nameserver 10.0.2.3\n");
}

TEST(StepResolvConf, MalformedNameserverLinesAreDroppedAndTheLastLineGetsANewline) {
  StepResolvConf out = step_resolv_conf("nameserver\nnameserver not-an-address\nsearch a b", "10.0.2.3", true);
  EXPECT_TRUE(out.uses_forwarder);
  EXPECT_EQ(out.text, "search a b\nnameserver 10.0.2.3\n");
}

TEST(StepResolvConf, TabsSeparateFieldsToo) {
  StepResolvConf out = step_resolv_conf("nameserver\t127.0.0.53\nnameserver\t192.0.2.1\n", "10.0.2.3", true);
  EXPECT_FALSE(out.uses_forwarder);
  EXPECT_EQ(out.text, "nameserver\t192.0.2.1\n");
}

TEST(StepResolvConf, DaemonDnsSettingsReplaceTheHostsLines) {
  DnsSettings dns{{"192.0.2.53", "127.0.0.1"}, {"corp.example", "example"}, {"ndots:2"}};
  StepResolvConf out = step_resolv_conf("nameserver 198.51.100.1\nsearch home\ndomain home\noptions edns0\n# kept\n",
                                        "10.0.2.3", true, dns);
  EXPECT_FALSE(out.uses_forwarder);
  EXPECT_EQ(out.text, "# kept\nnameserver 192.0.2.53\nsearch corp.example example\noptions ndots:2\n");
}

TEST(StepResolvConf, DaemonDnsSettingsLeaveWhatTheyDoNotNameAlone) {
  DnsSettings dns;
  dns.search = {"corp.example"};
  StepResolvConf out = step_resolv_conf("nameserver 127.0.0.53\nsearch home\noptions edns0\n", "169.254.1.1", true, dns);
  EXPECT_TRUE(out.uses_forwarder);
  EXPECT_EQ(out.text, "options edns0\nsearch corp.example\nnameserver 169.254.1.1\n");
}

}  // namespace
}  // namespace kbuild::network
