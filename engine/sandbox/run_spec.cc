#include "engine/sandbox/run_spec.h"

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace kbuild::sandbox {

using nlohmann::json;

namespace {

const char* network_name(NetworkMode mode) {
  switch (mode) {
    case NetworkMode::none:
      return "none";
    case NetworkMode::join:
      return "join";
    case NetworkMode::host:
      break;
  }
  return "host";
}

NetworkMode network_mode(const std::string& name) {
  if (name == "none") return NetworkMode::none;
  if (name == "join") return NetworkMode::join;
  return NetworkMode::host;
}

}  // namespace

std::string serialize_spec(const RunSpec& spec) {
  json mounts = json::array();
  for (const MountSpec& m : spec.mounts) {
    json entry = {{"kind", m.kind == MountSpec::Kind::bind ? "bind" : "tmpfs"},
                  {"target", m.target},
                  {"fd", m.fd},
                  {"read_only", m.read_only},
                  {"is_file", m.is_file},
                  {"exact", m.exact}};
    if (m.size) entry["size"] = *m.size;
    if (m.mode) entry["mode"] = *m.mode;
    mounts.push_back(std::move(entry));
  }
  json out = {{"argv", spec.argv},
              {"env", spec.env},
              {"cwd", spec.cwd},
              {"uid", spec.uid},
              {"gid", spec.gid},
              {"groups", spec.groups},
              {"hostname", spec.hostname},
              {"network", network_name(spec.network)},
              {"netns_fd", spec.netns_fd},
              {"rootfs",
               {{"lowers", spec.rootfs.lowers},
                {"upper", spec.rootfs.upper},
                {"work", spec.rootfs.work},
                {"mountpoint", spec.rootfs.mountpoint}}},
              {"mounts", mounts},
              {"capabilities", spec.capabilities},
              {"devices", spec.devices},
              {"seccomp_fd", spec.seccomp_fd}};
  return out.dump();
}

RunSpec parse_spec(std::string_view text) {
  try {
    json in = json::parse(text);
    RunSpec spec;
    spec.argv = in.at("argv").get<std::vector<std::string>>();
    spec.env = in.at("env").get<std::vector<std::string>>();
    spec.cwd = in.at("cwd").get<std::string>();
    spec.uid = in.at("uid").get<uid_t>();
    spec.gid = in.at("gid").get<gid_t>();
    spec.groups = in.at("groups").get<std::vector<gid_t>>();
    spec.hostname = in.at("hostname").get<std::string>();
    spec.network = network_mode(in.at("network").get<std::string>());
    spec.netns_fd = in.value("netns_fd", -1);
    if (spec.network == NetworkMode::join && spec.netns_fd < 0) {
      throw Error(ErrorKind::internal, "run spec joins a network namespace without its fd");
    }
    const json& rootfs = in.at("rootfs");
    spec.rootfs.lowers = rootfs.at("lowers").get<std::vector<std::string>>();
    spec.rootfs.upper = rootfs.at("upper").get<std::string>();
    spec.rootfs.work = rootfs.at("work").get<std::string>();
    spec.rootfs.mountpoint = rootfs.at("mountpoint").get<std::string>();
    for (const json& m : in.at("mounts")) {
      MountSpec mount;
      mount.kind = m.at("kind").get<std::string>() == "tmpfs" ? MountSpec::Kind::tmpfs : MountSpec::Kind::bind;
      mount.target = m.at("target").get<std::string>();
      mount.fd = m.at("fd").get<int>();
      mount.read_only = m.at("read_only").get<bool>();
      mount.is_file = m.at("is_file").get<bool>();
      mount.exact = m.at("exact").get<bool>();
      if (m.contains("size")) mount.size = m["size"].get<uint64_t>();
      if (m.contains("mode")) mount.mode = m["mode"].get<uint32_t>();
      spec.mounts.push_back(std::move(mount));
    }
    spec.capabilities = in.at("capabilities").get<uint64_t>();
    spec.devices = in.at("devices").get<bool>();
    spec.seccomp_fd = in.at("seccomp_fd").get<int>();
    if (spec.argv.empty()) throw Error(ErrorKind::internal, "run spec without a command");
    return spec;
  } catch (const json::exception& e) {
    throw Error(ErrorKind::internal, std::string("reading run spec: ") + e.what());
  }
}

namespace {

// Bytes as JSON carries them: JSON strings hold UTF-8 text only.
std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}
std::string unhex(std::string_view text) {
  auto nibble = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw Error(ErrorKind::internal, "reading the step's result from kbuild-exec: bad hex in exec_header");
  };
  std::string out;
  for (size_t i = 0; i + 1 < text.size(); i += 2) out += static_cast<char>(nibble(text[i]) * 16 + nibble(text[i + 1]));
  return out;
}

}  // namespace

std::string serialize_exit(const StepExit& exit) {
  return json{{"exit_code", exit.exit_code}, {"signal", exit.signal}, {"error", exit.error}, {"exec_header", hex(exit.exec_header)}}
      .dump();
}

StepExit parse_exit(std::string_view text) {
  try {
    json in = json::parse(text);
    return StepExit{in.at("exit_code").get<int>(), in.at("signal").get<int>(), in.at("error").get<std::string>(),
                    unhex(in.value("exec_header", std::string()))};
  } catch (const json::exception& e) {
    throw Error(ErrorKind::internal, std::string("reading the step's result from kbuild-exec: ") + e.what());
  }
}

}  // namespace kbuild::sandbox
