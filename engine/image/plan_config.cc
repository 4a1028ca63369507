#include "engine/image/plan_config.h"

namespace kbuild::image {

ContainerConfig to_container_config(const graph::ImageConfig& c) {
  ContainerConfig out;
  out.user = c.user;
  out.exposed_ports = c.exposed_ports;
  out.env = c.env;
  if (c.entrypoint) out.entrypoint = *c.entrypoint;
  if (c.cmd) out.cmd = *c.cmd;
  out.volumes = c.volumes;
  out.working_dir = c.working_dir;
  out.labels = c.labels;
  out.stop_signal = c.stop_signal;
  out.args_escaped = c.args_escaped;
  if (c.healthcheck) {
    const graph::Healthcheck& h = *c.healthcheck;
    out.healthcheck = HealthConfig{h.test, h.interval_ns, h.timeout_ns, h.start_period_ns, h.start_interval_ns, h.retries};
  }
  out.on_build = c.onbuild;
  out.shell = c.shell;
  return out;
}

graph::ImageConfig to_plan_config(const ImageConfig& config) {
  graph::ImageConfig out;
  const ContainerConfig& c = config.config;
  out.author = config.author;
  out.os = config.os;
  out.architecture = config.architecture;
  out.variant = config.variant;
  out.env = c.env;
  out.user = c.user;
  out.working_dir = c.working_dir;
  // A written config cannot tell an absent ENTRYPOINT or CMD from an empty one: both are omitted.
  if (!c.entrypoint.empty()) out.entrypoint = c.entrypoint;
  if (!c.cmd.empty()) out.cmd = c.cmd;
  out.shell = c.shell;
  out.labels = c.labels;
  out.exposed_ports = c.exposed_ports;
  out.volumes = c.volumes;
  if (c.healthcheck) {
    const HealthConfig& h = *c.healthcheck;
    out.healthcheck = graph::Healthcheck{h.test, h.interval, h.timeout, h.start_period, h.start_interval,
                                         static_cast<int>(h.retries)};
  }
  out.onbuild = c.on_build;
  out.stop_signal = c.stop_signal;
  out.args_escaped = c.args_escaped;
  for (const HistoryEntry& h : config.history) out.history.push_back({h.created_by, h.comment, h.empty_layer});
  return out;
}

}  // namespace kbuild::image
