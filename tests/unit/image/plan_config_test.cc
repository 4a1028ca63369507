#include "engine/image/plan_config.h"

#include <gtest/gtest.h>

namespace kbuild::image {
namespace {

// Everything a stage can set, as the converter leaves it.
graph::ImageConfig full_plan_config() {
  graph::ImageConfig c;
  c.author = "someone";
  c.architecture = "arm64";
  c.variant = "v8";
  c.env = {"PATH=/usr/bin", "A=1"};
  c.user = "app";
  c.working_dir = "/srv";
  c.entrypoint = std::vector<std::string>{"/bin/app"};
  c.cmd = std::vector<std::string>{"--serve"};
  c.shell = {"/bin/bash", "-c"};
  c.labels = {{"a", "1"}};
  c.exposed_ports = {"80/tcp"};
  c.volumes = {"/data"};
  c.healthcheck = graph::Healthcheck{{"CMD", "true"}, 1, 2, 3, 4, 5};
  c.onbuild = {"RUN true"};
  c.stop_signal = "SIGINT";
  c.args_escaped = true;
  c.history = {{"ADD x /", "", false}, {"USER app", "buildkit.dockerfile.v0", true}};
  return c;
}

TEST(PlanConfig, AStageFromAWrittenImageInheritsEverythingItSet) {
  graph::ImageConfig plan = full_plan_config();
  ImageConfig written;
  written.author = plan.author;
  written.architecture = plan.architecture;
  written.variant = plan.variant;
  written.os = plan.os;
  written.config = to_container_config(plan);
  for (const auto& h : plan.history) written.history.push_back({"", h.created_by, "", h.comment, h.empty_layer});
  EXPECT_EQ(to_plan_config(parse_config(serialize_config(written))), plan);
}

TEST(PlanConfig, AnEmptyEntrypointOrCmdReadsAsUnset) {
  graph::ImageConfig plan;
  plan.entrypoint = std::vector<std::string>{};
  plan.cmd = std::vector<std::string>{};
  ImageConfig written;
  written.config = to_container_config(plan);
  graph::ImageConfig read = to_plan_config(written);
  EXPECT_FALSE(read.entrypoint);
  EXPECT_FALSE(read.cmd);
}

}  // namespace
}  // namespace kbuild::image
