#include "engine/gc/prune_policy.h"

#include <algorithm>
#include <map>
#include <set>
#include <string_view>

#include "common/error.h"
#include "engine/dockerfile/go_values.h"

namespace kbuild::gc {
namespace {

[[noreturn]] void invalid(const std::string& message) { throw Error(ErrorKind::user, message); }

bool any_of_values(const std::vector<std::string>& values, auto&& match) {
  return values.empty() || std::any_of(values.begin(), values.end(), match);
}

void parse_age(const std::string& key, const std::string& value, PruneOptions& options) {
  if (options.unused_for) invalid("\"" + key + "\" filter expects only one value");
  int64_t ns = 0;
  try {
    ns = dockerfile::parse_go_duration(value);
  } catch (const Error& e) {
    invalid("\"" + key + "\" filter expects a duration (e.g., '24h'): " + e.what());
  }
  if (ns < 0) invalid("\"" + key + "\" filter expects a duration (e.g., '24h'), not a negative one: " + value);
  options.unused_for = std::chrono::nanoseconds(ns);
}

// One filter: "key", "key=value", "key==value", "key!=value" or "key~=value".
void parse_filter(const std::string& text, PruneOptions& options, std::set<std::string>& age_keys) {
  size_t eq = text.find('=');
  std::string key = text.substr(0, eq);
  std::string value = eq == std::string::npos ? "" : text.substr(eq + 1);
  std::string op = "==";
  if (!value.empty() && value[0] == '=') value.erase(0, 1);  // "key==value"
  if (key.ends_with('!') || key.ends_with('~')) {
    op = std::string(1, key.back()) + "=";
    key.pop_back();
  }
  RecordFilter& filter = options.filter;
  const bool bare = eq == std::string::npos;
  if (bare) {
    if (key == "inuse" || key == "idle") {
      filter.in_use = key == "inuse";
    } else if (key == "mutable" || key == "immutable") {
      filter.mutable_ = key == "mutable";
    } else if (key == "shared" || key == "private") {
      filter.shared = key == "shared";
    } else {
      invalid("bad format of filter (expected name=value)");
    }
    return;
  }
  if (value.empty()) invalid("bad format of filter (expected name=value)");
  if ((key == "until" || key == "unused-for") && op == "==") {
    age_keys.insert(key);
    if (age_keys.size() > 1) invalid("conflicting filters \"until\" and \"unused-for\"");
    parse_age(key, value, options);
  } else if (key == "type" && op == "==") {
    filter.types.push_back(value);
  } else if (key == "type" && op == "!=") {
    filter.not_types.push_back(value);
  } else if (key == "id" && (op == "==" || op == "~=")) {
    filter.ids.push_back(value);
  } else if (key == "description" && (op == "==" || op == "~=")) {
    filter.descriptions.push_back(value);
  } else {
    invalid("invalid filter '" + text + "'");
  }
}

// BuildKit's order for deletion: the least recently used first, then the least used.
bool delete_before(const UsageRecord& a, const UsageRecord& b) {
  if (a.last_activity() != b.last_activity()) return a.last_activity() < b.last_activity();
  if (a.usage_count != b.usage_count) return a.usage_count < b.usage_count;
  return a.id < b.id;
}

}  // namespace

bool RecordFilter::matches(const UsageRecord& record) const {
  if (!any_of_values(types, [&](const std::string& t) { return record.type == t; })) return false;
  if (std::find(not_types.begin(), not_types.end(), record.type) != not_types.end()) return false;
  if (!any_of_values(ids, [&](const std::string& id) { return record.id.starts_with(id); })) return false;
  auto in_description = [&](const std::string& part) { return record.description.find(part) != std::string::npos; };
  if (!any_of_values(descriptions, in_description)) return false;
  if (in_use && *in_use != record.in_use) return false;
  if (mutable_ && *mutable_ != record.mutable_) return false;
  if (shared && *shared != record.shared) return false;
  return true;
}

bool RecordFilter::empty() const {
  return types.empty() && not_types.empty() && ids.empty() && descriptions.empty() && !in_use && !mutable_ &&
         !shared;
}

void parse_filters(const std::vector<std::string>& filters, PruneOptions& options) {
  std::set<std::string> age_keys;
  for (const std::string& text : filters) {
    if (text.empty()) invalid("bad format of filter (expected name=value)");
    parse_filter(text, options, age_keys);
  }
}

std::vector<size_t> select_for_prune(const std::vector<UsageRecord>& records, const PruneOptions& options,
                                     Clock::time_point now) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < records.size(); ++i) index.emplace(records[i].id, i);
  // How many remaining records need each one.
  std::vector<size_t> needed_by(records.size(), 0);
  // As BuildKit counts it for keep-storage: what tagged images share is not the cache's.
  uint64_t total = 0;
  for (const UsageRecord& record : records) {
    if (!record.shared) total += record.size;
    for (const std::string& need : record.needs) {
      if (auto it = index.find(need); it != index.end()) ++needed_by[it->second];
    }
  }
  auto candidate = [&](const UsageRecord& r) {
    if (r.in_use || r.shared || (r.image && !options.all)) return false;
    if (options.unused_for && now - r.last_activity() < *options.unused_for) return false;
    return options.filter.matches(r);
  };
  std::vector<size_t> chosen;
  std::vector<bool> removed(records.size(), false);
  while (options.keep_storage == 0 || total > options.keep_storage) {
    std::vector<size_t> ready;
    for (size_t i = 0; i < records.size(); ++i) {
      if (!removed[i] && needed_by[i] == 0 && candidate(records[i])) ready.push_back(i);
    }
    if (ready.empty()) break;
    std::sort(ready.begin(), ready.end(), [&](size_t a, size_t b) { return delete_before(records[a], records[b]); });
    // Under a storage limit one at a time: a removal may make an older record removable.
    if (options.keep_storage != 0) ready.resize(1);
    for (size_t i : ready) {
      removed[i] = true;
      chosen.push_back(i);
      total -= records[i].size;
      for (const std::string& need : records[i].needs) {
        if (auto it = index.find(need); it != index.end()) --needed_by[it->second];
      }
    }
  }
  return chosen;
}

}  // namespace kbuild::gc
