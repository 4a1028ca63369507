#include "seccomp/seccomp.h"

namespace kbuild::seccomp {

// Written by embed_profile.py from seccomp/default.json.
extern const char* const default_profile_json;

const Profile& default_profile() {
  static const Profile profile = parse_profile(default_profile_json, "seccomp/default.json");
  return profile;
}

}  // namespace kbuild::seccomp
