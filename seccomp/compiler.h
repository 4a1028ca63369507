// Compiles a profile into a classic BPF program with libseccomp, the way Docker and runc do.
#pragma once

#include "seccomp/capabilities.h"
#include "seccomp/filter.h"
#include "seccomp/profile.h"

namespace kbuild::seccomp {

// Compiles `profile` for the native architecture and its compat ones (x86_64: also x86 and x32),
// keeping the rules whose includes/excludes hold for `effective_caps`, the native architecture and
// the running kernel. System calls numbered above every one the profile names get ENOSYS.
Filter compile(const Profile& profile, Capabilities effective_caps);

}  // namespace kbuild::seccomp
