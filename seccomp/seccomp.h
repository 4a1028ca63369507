// seccomp for build steps: Docker's profile format, kbuild's default profile, compiled once per
// daemon and handed to the single-threaded `kbuild-exec` helper, which installs it before execve.
#pragma once

#include <string>
#include <string_view>

#include "seccomp/capabilities.h"
#include "seccomp/compiler.h"
#include "seccomp/profile.h"

namespace kbuild::seccomp {

// kbuild's default profile (seccomp/default.json, embedded at build time). It gives every system
// call the same verdict as Docker's default profile. daemon.json's `seccomp-profile` replaces it.
const Profile& default_profile();

// Loads `filter` into the calling thread with seccomp(SECCOMP_SET_MODE_FILTER, 0). Sets
// PR_SET_NO_NEW_PRIVS first only when the caller lacks CAP_SYS_ADMIN, as the kernel requires.
void install(const Filter& filter);

// The program as raw sock_filter bytes, to pass it from the daemon to the helper through an fd.
std::string serialize(const Filter& filter);
// The inverse of serialize; throws kbuild::Error(internal) unless `bytes` is a plausible program.
Filter deserialize(std::string_view bytes);

}  // namespace kbuild::seccomp
