#include "cli/disk_commands.h"

#include <gtest/gtest.h>

namespace kbuild::cli {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

const std::chrono::system_clock::time_point kNow{seconds(1'800'000'000)};

std::string ns(std::chrono::system_clock::time_point time) {
  return std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count());
}

TEST(DiskCommands, SizesAreGoUnitsHumanSizes) {
  EXPECT_EQ(human_size(0), "0B");
  EXPECT_EQ(human_size(999), "999B");
  EXPECT_EQ(human_size(1057000), "1.057MB");
  EXPECT_EQ(human_size(1234567890), "1.235GB");
  EXPECT_EQ(human_size(4096), "4.096kB");
}

TEST(DiskCommands, DurationsAreGoUnitsHumanDurations) {
  EXPECT_EQ(human_duration(std::chrono::milliseconds(300)), "Less than a second");
  EXPECT_EQ(human_duration(seconds(1)), "1 second");
  EXPECT_EQ(human_duration(seconds(42)), "42 seconds");
  EXPECT_EQ(human_duration(seconds(90)), "About a minute");
  EXPECT_EQ(human_duration(minutes(15)), "15 minutes");
  EXPECT_EQ(human_duration(minutes(70)), "About an hour");
  EXPECT_EQ(human_duration(hours(5)), "5 hours");
  EXPECT_EQ(human_duration(hours(24 * 3)), "3 days");
  EXPECT_EQ(human_duration(hours(24 * 21)), "3 weeks");
  EXPECT_EQ(human_duration(hours(24 * 90)), "3 months");
  EXPECT_EQ(human_duration(hours(24 * 365 * 3)), "3 years");
}

TEST(DiskCommands, CellsArePaddedWithTabsAsTabwriterPadsThem) {
  EXPECT_EQ(tab_align({{"Reclaimable:", "1B"}, {"Total:", "2B"}}), "Reclaimable:\t1B\nTotal:\t\t2B\n");
  EXPECT_EQ(tab_align({{"Total:", "0B"}}), "Total:\t0B\n");
}

TEST(DiskCommands, TheTableMarksMutableAndSharedRecordsAsBuildxDoes) {
  std::vector<dbus::StringMap> records{
      {{"id", "mount1"}, {"mutable", "true"}, {"in-use", "true"}, {"shared", "false"}, {"size", "2000"},
       {"last-used", ns(kNow - minutes(5))}},
      {{"id", "layer1"}, {"mutable", "false"}, {"in-use", "false"}, {"shared", "true"}, {"size", "1057000"}}};
  std::string table = format_usage_table(records, kNow);
  EXPECT_EQ(table,
            "ID\t\t\t\t\t\tRECLAIMABLE\tSIZE\t\tLAST ACCESSED\n"
            "mount1*                                 \tfalse\t\t2kB       \t5 minutes ago\n"
            "layer1                                  \ttrue \t\t1.057MB*  \t\n");
  EXPECT_EQ(format_usage_summary(records),
            "Shared:\t\t1.057MB\nPrivate:\t2kB\nReclaimable:\t1.057MB\nTotal:\t\t1.059MB\n");
}

TEST(DiskCommands, VerboseListsEveryFieldOfARecord) {
  std::vector<dbus::StringMap> records{{{"id", "abc"}, {"parents", "def"}, {"created", "1700000000123000000"},
                                        {"mutable", "false"}, {"in-use", "false"}, {"shared", "false"},
                                        {"size", "4096"}, {"description", "layer of a build step"},
                                        {"usage-count", "3"}, {"last-used", ns(kNow - hours(2))}, {"type", "regular"}}};
  EXPECT_EQ(format_usage_verbose(records, kNow),
            "ID:\t\tabc\nParent:\t\tdef\nCreated at:\t2023-11-14 22:13:20.123 +0000 UTC\nMutable:\tfalse\n"
            "Reclaimable:\ttrue\nShared:\t\tfalse\nSize:\t\t4.096kB\nDescription:\tlayer of a build step\n"
            "Usage count:\t3\nLast used:\t2 hours ago\nType:\t\tregular\n\n");
}

}  // namespace
}  // namespace kbuild::cli
