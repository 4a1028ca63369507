// How deep a parsed JSON document nests, found without recursion: nlohmann's copy and dump
// recurse, so a document from a registry (a few MiB of "[[[[...") must be checked before it is
// copied or written out, or it overflows the daemon's stack.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace kbuild::image {

// Whether `value` has containers nested more than `limit` deep.
template <typename Json>
bool json_deeper_than(const Json& value, std::size_t limit) {
  std::vector<std::pair<const Json*, std::size_t>> pending{{&value, 1}};
  while (!pending.empty()) {
    auto [node, depth] = pending.back();
    pending.pop_back();
    if (!node->is_structured()) continue;
    if (depth > limit) return true;
    for (const auto& child : *node) pending.emplace_back(&child, depth + 1);
  }
  return false;
}

// The depth any document kbuild copies or writes out may have; far beyond what configs need.
inline constexpr std::size_t kJsonDepthLimit = 64;

}  // namespace kbuild::image
