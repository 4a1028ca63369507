// seccomp for build steps: Docker's profile format, kbuild's default profile, compiled once per
// daemon and handed to the single-threaded `kbuild-exec` helper, which installs it before execve.
#pragma once

#include <string>
#include <string_view>

#include "seccomp/capabilities.h"
#include "seccomp/compiler.h"
#include "seccomp/filter.h"
#include "seccomp/profile.h"

namespace kbuild::seccomp {

// kbuild's default profile (seccomp/default.json, embedded at build time). It gives every system
// call the same verdict as Docker's default profile. daemon.json's `seccomp-profile` replaces it.
const Profile& default_profile();

}  // namespace kbuild::seccomp
