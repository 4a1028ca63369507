// The version kbuild's programs report.
#pragma once

namespace kbuild {
inline constexpr const char* kVersion = KBUILD_VERSION;
}
