// The image config that travels beside the op graph: what a build's instructions set (ENV,
// CMD, LABEL, ...) and the history they leave, in the terms of the OCI image config.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace kbuild::graph {

struct Healthcheck {
  std::vector<std::string> test;
  int64_t interval_ns = 0, timeout_ns = 0, start_period_ns = 0, start_interval_ns = 0;
  int retries = 0;
  bool operator==(const Healthcheck&) const = default;
};

struct HistoryEntry {
  std::string created_by;
  std::string comment;
  bool empty_layer = false;
  bool operator==(const HistoryEntry&) const = default;
};

// The parts of an image config that Dockerfile instructions set.
struct ImageConfig {
  std::string author;
  std::string os = "linux";
  std::string architecture;
  std::string variant;
  std::vector<std::string> env;  // "K=V", in order
  std::string user;
  std::string working_dir;
  std::optional<std::vector<std::string>> entrypoint;
  std::optional<std::vector<std::string>> cmd;
  std::vector<std::string> shell;  // empty: the platform default, /bin/sh -c
  std::map<std::string, std::string> labels;
  std::set<std::string> exposed_ports;
  std::set<std::string> volumes;
  std::optional<Healthcheck> healthcheck;
  std::vector<std::string> onbuild;
  std::string stop_signal;
  bool args_escaped = false;
  std::vector<HistoryEntry> history;
  bool operator==(const ImageConfig&) const = default;
};

}  // namespace kbuild::graph
