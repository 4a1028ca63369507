#include "engine/image/oci.h"

#include "engine/image/json_depth.h"

#include <ctime>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/image/go_json.h"

namespace kbuild::image {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// --- writing: members in Go struct order, omitempty where the struct tag says so -------------

void put_string(ordered_json& o, const char* key, const std::string& value, bool omitempty = true) {
  if (!omitempty || !value.empty()) o[key] = value;
}

void put_strings(ordered_json& o, const char* key, const std::vector<std::string>& values) {
  if (!values.empty()) o[key] = values;
}

void put_string_map(ordered_json& o, const char* key, const std::map<std::string, std::string>& values) {
  if (values.empty()) return;
  ordered_json m = ordered_json::object();
  for (const auto& [k, v] : values) m[k] = v;  // std::map order is Go's sorted map-key order
  o[key] = std::move(m);
}

// map[string]struct{}: {"80/tcp":{}}
void put_empty_struct_map(ordered_json& o, const char* key, const std::set<std::string>& keys) {
  if (keys.empty()) return;
  ordered_json m = ordered_json::object();
  for (const auto& k : keys) m[k] = ordered_json::object();
  o[key] = std::move(m);
}

ordered_json platform_json(const Platform& p) {
  ordered_json o = ordered_json::object();
  o["architecture"] = p.architecture;
  o["os"] = p.os;
  put_string(o, "os.version", p.os_version);
  put_strings(o, "os.features", p.os_features);
  put_string(o, "variant", p.variant);
  return o;
}

ordered_json descriptor_json(const Descriptor& d) {
  ordered_json o = ordered_json::object();
  o["mediaType"] = d.media_type;
  o["digest"] = d.digest.str();
  o["size"] = d.size;
  put_strings(o, "urls", d.urls);
  put_string_map(o, "annotations", d.annotations);
  put_string(o, "data", d.data);
  if (d.platform) o["platform"] = platform_json(*d.platform);
  put_string(o, "artifactType", d.artifact_type);
  return o;
}

ordered_json descriptors_json(const std::vector<Descriptor>& descriptors) {
  ordered_json a = ordered_json::array();
  for (const auto& d : descriptors) a.push_back(descriptor_json(d));
  return a;
}

ordered_json container_config_json(const ContainerConfig& c) {
  ordered_json o = ordered_json::object();
  put_string(o, "User", c.user);
  put_empty_struct_map(o, "ExposedPorts", c.exposed_ports);
  put_strings(o, "Env", c.env);
  put_strings(o, "Entrypoint", c.entrypoint);
  put_strings(o, "Cmd", c.cmd);
  put_empty_struct_map(o, "Volumes", c.volumes);
  put_string(o, "WorkingDir", c.working_dir);
  put_string_map(o, "Labels", c.labels);
  put_string(o, "StopSignal", c.stop_signal);
  if (c.args_escaped) o["ArgsEscaped"] = true;
  if (c.healthcheck) {
    const HealthConfig& h = *c.healthcheck;
    ordered_json hc = ordered_json::object();
    put_strings(hc, "Test", h.test);
    if (h.interval) hc["Interval"] = h.interval;
    if (h.timeout) hc["Timeout"] = h.timeout;
    if (h.start_period) hc["StartPeriod"] = h.start_period;
    if (h.start_interval) hc["StartInterval"] = h.start_interval;
    if (h.retries) hc["Retries"] = h.retries;
    o["Healthcheck"] = std::move(hc);
  }
  put_strings(o, "OnBuild", c.on_build);
  put_strings(o, "Shell", c.shell);
  return o;
}

// --- reading: tolerant of absent members and nulls, strict about types ----------------------

[[noreturn]] void invalid(std::string_view what, const std::string& why) {
  throw Error(ErrorKind::user, "invalid " + std::string(what) + ": " + why);
}

json parse_json(std::string_view text, std::string_view what) {
  try {
    json j = json::parse(text);
    if (!j.is_object()) invalid(what, "not a JSON object");
    return j;
  } catch (const json::exception& e) {
    invalid(what, e.what());
  }
}

const json* member(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string get_string(const json& o, const char* key) {
  const json* v = member(o, key);
  if (!v) return {};
  if (!v->is_string()) invalid("document", std::string("\"") + key + "\" is not a string");
  return v->get<std::string>();
}

std::vector<std::string> get_strings(const json& o, const char* key) {
  const json* v = member(o, key);
  if (!v) return {};
  if (!v->is_array()) invalid("document", std::string("\"") + key + "\" is not an array");
  std::vector<std::string> out;
  for (const auto& e : *v) {
    if (!e.is_string()) invalid("document", std::string("\"") + key + "\" holds a non-string");
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::map<std::string, std::string> get_string_map(const json& o, const char* key) {
  const json* v = member(o, key);
  if (!v) return {};
  if (!v->is_object()) invalid("document", std::string("\"") + key + "\" is not an object");
  std::map<std::string, std::string> out;
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it.value().is_string()) invalid("document", std::string("\"") + key + "\" holds a non-string");
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

std::set<std::string> get_key_set(const json& o, const char* key) {
  const json* v = member(o, key);
  if (!v) return {};
  if (!v->is_object()) invalid("document", std::string("\"") + key + "\" is not an object");
  std::set<std::string> out;
  for (auto it = v->begin(); it != v->end(); ++it) out.insert(it.key());
  return out;
}

int64_t get_int(const json& o, const char* key) {
  const json* v = member(o, key);
  if (!v) return 0;
  if (!v->is_number_integer()) invalid("document", std::string("\"") + key + "\" is not an integer");
  return v->get<int64_t>();
}

bool get_bool(const json& o, const char* key) {
  const json* v = member(o, key);
  if (!v) return false;
  if (!v->is_boolean()) invalid("document", std::string("\"") + key + "\" is not a boolean");
  return v->get<bool>();
}

const json* get_object(const json& o, const char* key) {
  const json* v = member(o, key);
  if (v && !v->is_object()) invalid("document", std::string("\"") + key + "\" is not an object");
  return v;
}

Platform platform_from(const json& o) {
  Platform p;
  p.architecture = get_string(o, "architecture");
  p.os = get_string(o, "os");
  p.os_version = get_string(o, "os.version");
  p.os_features = get_strings(o, "os.features");
  p.variant = get_string(o, "variant");
  return p;
}

Descriptor descriptor_from(const json& o) {
  if (!o.is_object()) invalid("descriptor", "not an object");
  Descriptor d;
  d.media_type = get_string(o, "mediaType");
  d.digest = store::Digest::parse(get_string(o, "digest"));
  d.size = get_int(o, "size");
  if (d.size < 0) invalid("descriptor", "negative size");
  d.urls = get_strings(o, "urls");
  d.annotations = get_string_map(o, "annotations");
  d.data = get_string(o, "data");
  if (const json* p = get_object(o, "platform")) d.platform = platform_from(*p);
  d.artifact_type = get_string(o, "artifactType");
  return d;
}

std::vector<Descriptor> descriptors_from(const json& o, const char* key) {
  const json* v = member(o, key);
  if (!v) return {};
  if (!v->is_array()) invalid("document", std::string("\"") + key + "\" is not an array");
  std::vector<Descriptor> out;
  for (const auto& e : *v) out.push_back(descriptor_from(e));
  return out;
}

ContainerConfig container_config_from(const json& o) {
  ContainerConfig c;
  c.user = get_string(o, "User");
  c.exposed_ports = get_key_set(o, "ExposedPorts");
  c.env = get_strings(o, "Env");
  c.entrypoint = get_strings(o, "Entrypoint");
  c.cmd = get_strings(o, "Cmd");
  c.volumes = get_key_set(o, "Volumes");
  c.working_dir = get_string(o, "WorkingDir");
  c.labels = get_string_map(o, "Labels");
  c.stop_signal = get_string(o, "StopSignal");
  c.args_escaped = get_bool(o, "ArgsEscaped");
  if (const json* h = get_object(o, "Healthcheck")) {
    HealthConfig hc;
    hc.test = get_strings(*h, "Test");
    hc.interval = get_int(*h, "Interval");
    hc.timeout = get_int(*h, "Timeout");
    hc.start_period = get_int(*h, "StartPeriod");
    hc.start_interval = get_int(*h, "StartInterval");
    hc.retries = get_int(*h, "Retries");
    c.healthcheck = std::move(hc);
  }
  c.on_build = get_strings(o, "OnBuild");
  c.shell = get_strings(o, "Shell");
  return c;
}

// Runs a parse with the document's name in front of any error it throws.
template <typename F>
auto parsing(std::string_view what, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    throw e.with_context("parsing " + std::string(what));
  } catch (const json::exception& e) {
    invalid(what, e.what());
  }
}

}  // namespace

bool is_manifest_type(std::string_view t) {
  return t == media_type::oci_manifest || t == media_type::docker_manifest;
}

bool is_index_type(std::string_view t) {
  return t == media_type::oci_index || t == media_type::docker_manifest_list;
}

bool is_layer_type(std::string_view t) {
  return t == media_type::oci_layer || t == media_type::oci_layer_gzip || t == media_type::oci_layer_zstd ||
         t == media_type::docker_layer || t == media_type::docker_layer_gzip;
}

std::string serialize_config(const ImageConfig& c) {
  // BuildKit's exporter re-marshals the config as map[string]json.RawMessage, so the top-level
  // keys come out sorted; "rootfs" and "history" are always set (null when empty).
  ordered_json o = ordered_json::object();
  o["architecture"] = c.architecture;
  put_string(o, "author", c.author);
  o["config"] = container_config_json(c.config);
  put_string(o, "created", c.created);
  if (c.history.empty()) {
    o["history"] = nullptr;
  } else {
    ordered_json history = ordered_json::array();
    for (const auto& h : c.history) {
      ordered_json e = ordered_json::object();
      put_string(e, "created", h.created);
      put_string(e, "created_by", h.created_by);
      put_string(e, "author", h.author);
      put_string(e, "comment", h.comment);
      if (h.empty_layer) e["empty_layer"] = true;
      history.push_back(std::move(e));
    }
    o["history"] = std::move(history);
  }
  if (!c.kbuild_cache.empty()) o["kbuild.cache.v1"] = ordered_json::parse(c.kbuild_cache);
  o["os"] = c.os;
  put_strings(o, "os.features", c.os_features);
  put_string(o, "os.version", c.os_version);
  ordered_json rootfs = ordered_json::object();
  rootfs["type"] = c.rootfs.type;
  if (c.rootfs.diff_ids.empty()) {
    rootfs["diff_ids"] = nullptr;
  } else {
    ordered_json ids = ordered_json::array();
    for (const auto& d : c.rootfs.diff_ids) ids.push_back(d.str());
    rootfs["diff_ids"] = std::move(ids);
  }
  o["rootfs"] = std::move(rootfs);
  put_string(o, "variant", c.variant);
  return go_marshal(o);
}

ImageConfig parse_config(std::string_view text) {
  return parsing("image config", [&] {
    json o = parse_json(text, "image config");
    ImageConfig c;
    c.created = get_string(o, "created");
    c.author = get_string(o, "author");
    c.architecture = get_string(o, "architecture");
    c.os = get_string(o, "os");
    c.os_version = get_string(o, "os.version");
    c.os_features = get_strings(o, "os.features");
    c.variant = get_string(o, "variant");
    if (const json* cc = get_object(o, "config")) c.config = container_config_from(*cc);
    if (const json* r = get_object(o, "rootfs")) {
      c.rootfs.type = get_string(*r, "type");
      for (const auto& id : get_strings(*r, "diff_ids")) c.rootfs.diff_ids.push_back(store::Digest::parse(id));
    }
    if (const json* h = member(o, "history")) {
      if (!h->is_array()) invalid("image config", "\"history\" is not an array");
      for (const auto& e : *h) {
        if (!e.is_object()) invalid("image config", "a history entry is not an object");
        HistoryEntry entry;
        entry.created = get_string(e, "created");
        entry.created_by = get_string(e, "created_by");
        entry.author = get_string(e, "author");
        entry.comment = get_string(e, "comment");
        entry.empty_layer = get_bool(e, "empty_layer");
        c.history.push_back(std::move(entry));
      }
    }
    if (const json* cache = member(o, "kbuild.cache.v1"); cache && cache->is_object()) {
      // Kept as text, so it is written out: not if it nests deeper than a cache ever does.
      if (!json_deeper_than(*cache, kJsonDepthLimit)) c.kbuild_cache = cache->dump();
    }
    return c;
  });
}

std::string serialize_manifest(const Manifest& m) {
  ordered_json o = ordered_json::object();
  o["schemaVersion"] = m.schema_version;
  put_string(o, "mediaType", m.media_type);
  put_string(o, "artifactType", m.artifact_type);
  o["config"] = descriptor_json(m.config);
  o["layers"] = descriptors_json(m.layers);
  if (m.subject) o["subject"] = descriptor_json(*m.subject);
  put_string_map(o, "annotations", m.annotations);
  return go_marshal_indent(o);
}

Manifest parse_manifest(std::string_view text) {
  return parsing("image manifest", [&] {
    json o = parse_json(text, "image manifest");
    Manifest m;
    m.schema_version = static_cast<int>(get_int(o, "schemaVersion"));
    m.media_type = get_string(o, "mediaType");
    m.artifact_type = get_string(o, "artifactType");
    const json* config = get_object(o, "config");
    if (!config) invalid("image manifest", "no \"config\"");
    m.config = descriptor_from(*config);
    m.layers = descriptors_from(o, "layers");
    if (const json* s = get_object(o, "subject")) m.subject = descriptor_from(*s);
    m.annotations = get_string_map(o, "annotations");
    return m;
  });
}

std::string serialize_index(const Index& index, JsonStyle style) {
  ordered_json o = ordered_json::object();
  o["schemaVersion"] = index.schema_version;
  put_string(o, "mediaType", index.media_type);
  put_string(o, "artifactType", index.artifact_type);
  o["manifests"] = descriptors_json(index.manifests);
  if (index.subject) o["subject"] = descriptor_json(*index.subject);
  put_string_map(o, "annotations", index.annotations);
  return style == JsonStyle::indented ? go_marshal_indent(o) : go_marshal(o);
}

Index parse_index(std::string_view text) {
  return parsing("image index", [&] {
    json o = parse_json(text, "image index");
    Index index;
    index.schema_version = static_cast<int>(get_int(o, "schemaVersion"));
    index.media_type = get_string(o, "mediaType");
    index.artifact_type = get_string(o, "artifactType");
    index.manifests = descriptors_from(o, "manifests");
    if (const json* s = get_object(o, "subject")) index.subject = descriptor_from(*s);
    index.annotations = get_string_map(o, "annotations");
    return index;
  });
}

std::string serialize_descriptor(const Descriptor& d) { return go_marshal(descriptor_json(d)); }

Descriptor parse_descriptor(std::string_view text) {
  return parsing("descriptor", [&] { return descriptor_from(parse_json(text, "descriptor")); });
}

std::string document_media_type(std::string_view text) {
  return parsing("document", [&] { return get_string(parse_json(text, "document"), "mediaType"); });
}

std::string serialize_docker_archive_manifest(const std::vector<DockerArchiveEntry>& entries) {
  // containerd's struct has no omitempty: an image without tags has "RepoTags":null.
  ordered_json a = ordered_json::array();
  for (const auto& e : entries) {
    ordered_json o = ordered_json::object();
    o["Config"] = e.config;
    o["RepoTags"] = e.repo_tags.empty() ? ordered_json(nullptr) : ordered_json(e.repo_tags);
    o["Layers"] = e.layers.empty() ? ordered_json(nullptr) : ordered_json(e.layers);
    a.push_back(std::move(o));
  }
  return go_marshal(a);
}

std::vector<DockerArchiveEntry> parse_docker_archive_manifest(std::string_view text) {
  return parsing("manifest.json", [&] {
    json a = json::parse(text);
    if (!a.is_array()) invalid("manifest.json", "not a JSON array");
    std::vector<DockerArchiveEntry> out;
    for (const auto& o : a) {
      if (!o.is_object()) invalid("manifest.json", "an entry is not an object");
      DockerArchiveEntry e;
      e.config = get_string(o, "Config");
      e.repo_tags = get_strings(o, "RepoTags");
      e.layers = get_strings(o, "Layers");
      out.push_back(std::move(e));
    }
    return out;
  });
}

std::string format_time(int64_t unix_seconds, int32_t nanoseconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buffer[64];
  strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buffer;
  if (nanoseconds > 0) {
    char fraction[16];
    snprintf(fraction, sizeof fraction, ".%09d", nanoseconds);
    std::string f = fraction;
    while (f.back() == '0') f.pop_back();
    out += f;
  }
  return out + "Z";
}

int64_t parse_time(std::string_view text) {
  auto fail = [&]() -> int64_t { throw Error(ErrorKind::user, "invalid time \"" + std::string(text) + "\""); };
  auto digits = [&](size_t at, size_t n) -> int {
    if (at + n > text.size()) fail();
    int v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (text[i] < '0' || text[i] > '9') fail();
      v = v * 10 + (text[i] - '0');
    }
    return v;
  };
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' || (text[10] != 'T' && text[10] != 't') ||
      text[13] != ':' || text[16] != ':') {
    fail();
  }
  struct tm tm {};
  tm.tm_year = digits(0, 4) - 1900;
  tm.tm_mon = digits(5, 2) - 1;
  tm.tm_mday = digits(8, 2);
  tm.tm_hour = digits(11, 2);
  tm.tm_min = digits(14, 2);
  tm.tm_sec = digits(17, 2);
  size_t i = 19;
  if (i < text.size() && text[i] == '.') {
    ++i;
    size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    if (i == start) fail();
  }
  int64_t offset = 0;
  if (i < text.size() && (text[i] == 'Z' || text[i] == 'z')) {
    ++i;
  } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
    if (i + 6 != text.size() || text[i + 3] != ':') fail();
    offset = (digits(i + 1, 2) * 60 + digits(i + 4, 2)) * 60;
    if (text[i] == '-') offset = -offset;
    i += 6;
  } else {
    fail();
  }
  if (i != text.size()) fail();
  return static_cast<int64_t>(timegm(&tm)) - offset;
}

Descriptor describe(std::string_view media_type, const store::Digest& digest, int64_t size) {
  Descriptor d;
  d.media_type = media_type;
  d.digest = digest;
  d.size = size;
  return d;
}

}  // namespace kbuild::image
