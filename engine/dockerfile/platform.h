// Target and build platforms ("linux/amd64", "linux/arm/v7"), as containerd's platforms package
// parses and formats them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kbuild::dockerfile {

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;

  // The platform this program was built for.
  static Platform native();
  // Parses and normalizes "os[/arch[/variant]]" or "arch"; throws kbuild::Error (user).
  static Platform parse(std::string_view spec);
  // "linux/amd64", "linux/arm/v7".
  std::string format() const;
  bool operator==(const Platform&) const = default;
};

// A --platform value: platforms separated by commas ("linux/amd64,linux/arm64"), each parsed
// and normalized, repeats dropped (first kept), in the order given; empty text: none. Throws
// kbuild::Error (user) naming the one that does not parse.
std::vector<Platform> parse_platform_list(std::string_view specs);

}  // namespace kbuild::dockerfile
